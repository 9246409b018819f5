"""Performance benchmark CLI (issue 9): a thin front end of :mod:`synthbench.perf`.

Examples::

    # GPU, the defaults: every method at 256 and 512, fp32 and bf16, with/without channels_last
    python benchmarks/perf.py run --out benchmarks/perf_results --name h100
    # CPU, CI-sized
    OMP_NUM_THREADS=1 python benchmarks/perf.py run --sizes 64 --batch-size 4 --precisions fp32 \\
        --warmup 1 --reps 2 --no-flops --name cpu
    # SDM's sampling on a CPU: fewer DDIM steps than its default 1000 DDPM steps (recorded per row)
    python benchmarks/perf.py run --methods sdm --sizes 64 --method-options '{"sdm": {"sampling_steps": 10, "sampler": "ddim"}}'
    # merge several partial runs (same hardware) into one table
    python benchmarks/perf.py combine benchmarks/perf_results/a.json benchmarks/perf_results/b.json --name cpu
    # side by side with the official pix2pixHD, SPADE and SEAN code (fetched outside the repository)
    python benchmarks/fetch_official.py --out /tmp/synthbench-official
    python benchmarks/perf.py official --official-dir /tmp/synthbench-official --sizes 64,128 --reps 3

Each run writes ``OUT/NAME.csv``, ``OUT/NAME.md`` and ``OUT/NAME.json`` (the raw result that
``combine`` reads); ``official`` writes ``OUT/NAME.md`` and ``OUT/NAME.json`` (default name
``official_cpu``; how it measures: ``benchmarks/official.py``). Errors the user can fix print one
line and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent / "perf_results"


def _bools(text: str) -> list[bool]:
    table = {"on": True, "off": False, "true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}
    try:
        return [table[t.strip().lower()] for t in text.split(",") if t.strip()]
    except KeyError as exc:
        raise argparse.ArgumentTypeError(f"expected a comma list of on/off, got {text!r}") from exc


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in _csv(text)]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers, got {text!r}") from exc


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"expected JSON, got {text!r} ({exc.msg})") from exc
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise argparse.ArgumentTypeError('expected a JSON object {"method": {"option": value}}')
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="benchmarks/perf.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="measure throughput, memory, loader ratio, FLOPs, paper cost")
    run.add_argument("--methods", type=_csv, default=None, help="comma list (default: every registered synthesizer)")
    run.add_argument("--sizes", type=_ints, default=[256, 512])
    run.add_argument("--batch-size", type=int, default=16, help="paper: 16")
    run.add_argument("--precisions", type=_csv, default=["fp32", "bf16"], help="fp32,bf16 (bf16 = autocast)")
    run.add_argument("--channels-last", type=_bools, default=[False, True], help="comma list of on/off")
    run.add_argument("--compile", action="store_true", help="also measure torch.compile'd networks")
    run.add_argument("--warmup", type=int, default=2, help="warm-up iterations, excluded from timing")
    run.add_argument("--reps", type=int, default=5, help="timed repetitions")
    run.add_argument("--steps-per-rep", type=int, default=2, help="iterations per timed repetition")
    run.add_argument("--device", default="auto")
    run.add_argument("--data", type=Path, default=None,
                     help="prepared data set (default: a phantom is prepared per size in a temp dir)")
    run.add_argument("--split", default="auto")
    run.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    run.add_argument("--loader-batches", type=int, default=20, help="batches per timed loader repetition")
    run.add_argument("--no-inference", action="store_true")
    run.add_argument("--no-flops", action="store_true", help="skip the FLOP count")
    run.add_argument("--flops-method", default="ours")
    run.add_argument("--flops-size", type=int, default=512)
    run.add_argument("--flops-precision", default="bf16")
    run.add_argument("--flops-batch-size", type=int, default=None, help="default: --batch-size")
    run.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--method-options", type=_json_object, default={},
                     help='per-method options, e.g. \'{"sdm": {"sampling_steps": 50}}\' (default: published)')
    run.add_argument("--out", type=Path, default=DEFAULT_OUT)
    run.add_argument("--name", default=None, help="output file stem (default: cpu or the GPU's name)")
    fl = sub.add_parser("flops", help="only the FLOP count of one method (e.g. ours at 512 on a slow machine)")
    fl.add_argument("--method", default="ours")
    fl.add_argument("--size", type=int, default=512)
    fl.add_argument("--precision", default="bf16")
    fl.add_argument("--batch-size", type=int, default=1, help="FLOPs are per image; 1 keeps CPU counting cheap")
    fl.add_argument("--device", default="auto")
    fl.add_argument("--data", type=Path, default=None)
    fl.add_argument("--threads", type=int, default=None)
    fl.add_argument("--out", type=Path, default=DEFAULT_OUT)
    fl.add_argument("--name", required=True)
    comb = sub.add_parser("combine", help="merge result JSON files of one machine into one CSV + Markdown")
    comb.add_argument("inputs", type=Path, nargs="+")
    comb.add_argument("--out", type=Path, default=DEFAULT_OUT)
    comb.add_argument("--name", required=True)
    off = sub.add_parser("official", help="CPU time of a training iteration: official pix2pixHD/SPADE/SEAN vs synthbench")
    off.add_argument("--official-dir", type=Path, required=True, help="folder written by benchmarks/fetch_official.py")
    off.add_argument("--methods", type=_csv, default=["pix2pixhd", "spade", "sean"])
    off.add_argument("--sizes", type=_ints, default=[64, 128])
    off.add_argument("--batch-size", type=int, default=4)
    off.add_argument("--warmup", type=int, default=1, help="untimed iterations per side")
    off.add_argument("--reps", type=int, default=3, help="timed iterations per side, interleaved")
    off.add_argument("--threads", type=int, default=1,
                     help="torch threads (1: CPU time is not inflated by idle OpenMP threads spinning)")
    off.add_argument("--out", type=Path, default=DEFAULT_OUT)
    off.add_argument("--name", default="official_cpu")
    return parser


def cmd_official(args: argparse.Namespace) -> None:
    import os

    import torch

    if str(Path(__file__).resolve().parent) not in sys.path:  # benchmarks/official.py, when imported as a module
        sys.path.insert(0, str(Path(__file__).resolve().parent))
    import official

    from synthbench.errors import SynthbenchError
    from synthbench.io import atomic_write_json, atomic_write_text
    from synthbench.perf import hardware_info

    unknown = sorted(set(args.methods) - set(official.METHODS))
    if unknown:
        raise SynthbenchError(f"no official code known for {unknown} (known: {', '.join(official.METHODS)})")
    hardware = hardware_info(torch.device("cpu"))
    hardware["load_before"] = round(os.getloadavg()[0], 2)
    rows = official.run(args.official_dir.resolve(), args.methods, args.sizes, args.batch_size, args.warmup,
                        args.reps, args.threads)
    hardware["load_after"] = round(os.getloadavg()[0], 2)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / f"{args.name}.json", {"hardware": hardware, "rows": rows})
    atomic_write_text(args.out / f"{args.name}.md", official.markdown(rows, hardware))
    print(f"wrote {args.out / (args.name + '.md')} and {args.out / (args.name + '.json')}")


def _default_name(result: dict) -> str:
    gpu = result["hardware"].get("gpu")
    return "cpu" if not gpu else "".join(c if c.isalnum() else "-" for c in gpu.lower()).strip("-")


def _write(result: dict, out: Path, name: str) -> None:
    from synthbench.io import atomic_write_json
    from synthbench.perf import write_results

    csv_path, md_path = write_results(result, out, name)
    atomic_write_json(out / f"{name}.json", result)
    print(f"wrote {csv_path}, {md_path} and {out / (name + '.json')}")


def cmd_run(args: argparse.Namespace) -> None:
    import torch

    from synthbench.perf import PerfConfig, run_benchmark
    from synthbench.plugins import get_registry

    if args.threads:
        torch.set_num_threads(args.threads)
    methods = args.methods or sorted(get_registry().synthesizers)
    cfg = PerfConfig(
        methods=methods, sizes=args.sizes, batch_size=args.batch_size, precisions=args.precisions,
        channels_last=args.channels_last, compile=[False, True] if args.compile else [False], warmup=args.warmup,
        reps=args.reps, steps_per_rep=args.steps_per_rep, device=args.device, data_dir=args.data, split=args.split,
        workers=args.workers, loader_batches=args.loader_batches, inference=not args.no_inference,
        flops=not args.no_flops, flops_method=args.flops_method, flops_size=args.flops_size,
        flops_precision=args.flops_precision, flops_batch_size=args.flops_batch_size, seed=args.seed,
        method_options=args.method_options,
    )
    result = run_benchmark(cfg, show_progress=True)
    _write(result, args.out, args.name or _default_name(result))


def cmd_flops(args: argparse.Namespace) -> None:
    import tempfile

    import torch

    from synthbench.perf import PerfConfig, flops_result

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = PerfConfig(methods=[args.method], sizes=[args.size], batch_size=args.batch_size, precisions=[args.precision],
                     device=args.device, data_dir=args.data, flops_method=args.method, flops_size=args.size,
                     flops_precision=args.precision, flops_batch_size=args.batch_size).validate()
    with tempfile.TemporaryDirectory(prefix="synthbench-flops-") as tmp:
        result = flops_result(cfg, Path(tmp))
    _write(result, args.out, args.name)


def cmd_combine(args: argparse.Namespace) -> None:
    from synthbench.errors import SynthbenchError
    from synthbench.perf import add_loader_ratios, attach_flops_throughput

    results = []
    for path in args.inputs:
        try:
            results.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise SynthbenchError(f"cannot read benchmark result: {exc}", path) from exc
        if not {"hardware", "config", "rows"} <= set(results[-1]):
            raise SynthbenchError("not a benchmarks/perf.py result (needs hardware, config, rows)", path)
    keys = ("cpu", "gpu", "torch", "device")
    for path, r in zip(args.inputs[1:], results[1:], strict=True):
        if any(r["hardware"].get(k) != results[0]["hardware"].get(k) for k in keys):
            raise SynthbenchError(f"hardware differs from {args.inputs[0]} ({', '.join(keys)})", path)
    merged = {"hardware": results[0]["hardware"], "config": dict(results[0]["config"]), "rows": []}
    for key in ("precisions", "channels_last", "compile", "methods"):
        merged["config"][key] = [json.loads(v) for v in sorted({json.dumps(v) for r in results for v in r["config"][key]})]
    for r in results:
        merged["rows"].extend(row for row in r["rows"] if row["kind"] != "loader" or not merged["rows"]
                              or all(x["kind"] != "loader" or x["size"] != row["size"] for x in merged["rows"]))
    add_loader_ratios(merged["rows"])
    attach_flops_throughput(merged["rows"], merged["rows"], merged["hardware"].get("gpu"))
    _write(merged, args.out, args.name)


def main(argv: list[str] | None = None) -> int:
    from synthbench.errors import SynthbenchError

    args = build_parser().parse_args(argv)
    try:
        {"run": cmd_run, "flops": cmd_flops, "combine": cmd_combine, "official": cmd_official}[args.command](args)
    except SynthbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
