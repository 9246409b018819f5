"""The completion region is explicit (issue 15, "No lung class"): a data set without a lung class
must say region = lesion | whole | threshold, and completion, synthesis folders, metric rows and
report name the region actually used; region metrics are refused where there is no region."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from synthbench.cli.main import build_app
from synthbench.data.prepare import PrepareOptions, prepare, resolve_source
from synthbench.data.prepared import PreparedDataset
from synthbench.data.preprocess import threshold_lung
from synthbench.data.spec import DatasetSpec, make_classes
from synthbench.errors import SynthbenchError
from synthbench.synthesis import synthesize

NO_LUNG = [["background", "background"], ["ground_glass", "lesion"], ["consolidation", "lesion"]]


def _spec(region=None, classes=NO_LUNG, intensity="scaled"):
    return DatasetSpec("t", make_classes([(n, r) for n, r in classes]), intensity=intensity, region=region)


def test_spec_region_is_explicit():
    with pytest.raises(SynthbenchError, match="no class has the role 'lung'.*region = 'lesion'.*'whole'.*'threshold'"):
        _spec()
    lesion = _spec("lesion")
    assert lesion.region_ids == (1, 2) and lesion.region_key == "lesion" and "lesion" in lesion.region_label
    whole = _spec("whole")
    assert whole.region_ids == (0, 1, 2) and whole.region_key is None
    with pytest.raises(SynthbenchError, match="region 'threshold' derives the lung from Hounsfield units"):
        _spec("threshold")
    with pytest.raises(SynthbenchError, match="region 'lung' needs a class with the role 'lung'"):
        _spec("lung")
    threshold = _spec("threshold", intensity="hu").with_threshold_lung()
    assert threshold.class_names[-1] == "lung" and threshold.region_ids == (1, 2, 3) and threshold.region_key == "lung"
    paper = _spec(classes=[["background", "background"], ["lung", "lung"], ["lesion", "lesion"]])
    assert paper.region == "lung" and DatasetSpec.from_dict(paper.to_dict()) == paper
    old = lesion.to_dict()
    del old["region"]  # a manifest written before regions were explicit, without a lung class
    with pytest.raises(SynthbenchError, match="no class has the role 'lung'"):
        DatasetSpec.from_dict(old)


def test_threshold_lung_is_air_inside_the_body():
    spec = _spec("threshold", intensity="hu")
    hu = np.full((1, 40, 40), -1000.0, np.float32)
    hu[0, 5:35, 4:36] = 40.0  # body
    hu[0, 10:30, 8:18] = -850.0  # right lung
    hu[0, 10:30, 22:32] = -850.0  # left lung
    hu[0, 37:39, :] = 60.0  # scanner table: tissue, but not the body
    hu[0, 14:17, 10:13] = -500.0  # ground-glass lesion (below -320 HU too)
    label = np.zeros(hu.shape, np.uint8)
    label[0, 14:17, 10:13] = 1
    out = threshold_lung(hu, label, spec, lung_id=3)
    assert (out[0, 10:30, 22:32] == 3).all() and (out[0, 14:17, 10:13] == 1).all()  # lesion label kept
    assert (out[0, :5] == 0).all() and (out[0, 36] == 0).all()  # air outside the body stays background
    assert (out == 3).sum() == 2 * 20 * 10 - 9


def _folder(root, region: str | None, n: int = 6):
    (root / "img").mkdir(parents=True)
    (root / "lab").mkdir()
    for i in range(n):
        rng = np.random.default_rng(i)
        img = rng.integers(0, 60, (32, 32)).astype(np.uint8)
        lab = np.zeros((32, 32), np.uint8)
        lab[8:14, 6:12] = 1
        lab[18:22, 20:26] = 2
        img[lab > 0] = 180
        Image.fromarray(img).save(root / "img" / f"{i}.png")
        Image.fromarray(lab).save(root / "lab" / f"{i}.png")
    cfg = {"intensity": "scaled", "images": "img", "labels": "lab", "classes": NO_LUNG,
           "patients": {"mode": "blocks", "count": 3}}
    if region:
        cfg["region"] = region
    (root / "synthbench-data.json").write_text(json.dumps(cfg))
    return root


def _untrained(ds):
    from synthbench.plugins import get_registry

    cls = get_registry().synthesizer("pix2pix")
    return cls(ds.num_classes, ds.size, options=dict(cls.reduced_options))


def _prepared(tmp_path, region):
    root = _folder(tmp_path / f"src-{region}", region)
    prepare(resolve_source(str(root), 32, 0), tmp_path / f"p-{region}", PrepareOptions(size=32, train_factor=0, test_factor=0))
    return PreparedDataset(tmp_path / f"p-{region}")


def test_no_lung_class_without_region_is_refused(tmp_path):
    root = _folder(tmp_path / "src", None)
    with pytest.raises(SynthbenchError, match="synthbench-data.json: invalid data config: .*no class has the role 'lung'"):
        resolve_source(str(root), 32, 0)


def test_lesion_region_is_named_in_folders_rows_and_completion(tmp_path):
    ds = _prepared(tmp_path, "lesion")
    assert ds.manifest["source"]["region"]["region"] == "lesion"
    out = tmp_path / "run" / "synthesis" / "test"
    record = synthesize(None, ds.root, out, split="test", show_progress=False, synth=_untrained(ds))
    assert record["region"]["key"] == "lesion"
    assert (out / "lesion_real").is_dir() and (out / "lesion_fake").is_dir() and not (out / "lung_real").exists()
    for name in sorted(p.name for p in (out / "label").iterdir()):
        label = np.asarray(Image.open(out / "label" / name))
        real, comp = (np.asarray(Image.open(out / v / name)) for v in ("real", "complete"))
        mask = np.asarray(Image.open(out / "mask" / name)) > 0
        assert np.array_equal(mask, label > 0)  # the region is the lesions, nothing else
        assert np.array_equal(comp[~mask], real[~mask])
    result = CliRunner().invoke(build_app(), ["evaluate", str(tmp_path / "run"), "--metrics", "psnr,rmse", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["results"]
    assert {r["setting"] for r in rows} == {"complete", "lesion"}
    table = CliRunner().invoke(build_app(), ["evaluate", str(out), "--metrics", "psnr", "--out", str(tmp_path / "e")])
    assert "lesion-only" in table.stdout and "lung" not in table.stdout


def test_whole_region_has_no_region_metrics_and_says_why(tmp_path):
    ds = _prepared(tmp_path, "whole")
    out = tmp_path / "syn"
    synthesize(None, ds.root, out, split="test", show_progress=False, synth=_untrained(ds))
    assert not (out / "mask").exists() and not (out / "lung_real").exists()
    name = sorted(p.name for p in (out / "fake").iterdir())[0]
    assert np.array_equal(np.asarray(Image.open(out / "complete" / name)), np.asarray(Image.open(out / "fake" / name)))
    result = CliRunner().invoke(build_app(), ["evaluate", str(out), "--metrics", "psnr"])
    assert result.exit_code == 0, result.output
    assert "Region 'whole'" in result.stderr and "no region-only metrics" in result.stderr


def test_old_synthesis_without_region_and_without_lung_class_is_refused(tmp_path):
    ds = _prepared(tmp_path, "lesion")
    out = tmp_path / "syn"
    synthesize(None, ds.root, out, split="test", show_progress=False, synth=_untrained(ds))
    record = json.loads((out / "synthesis.json").read_text())
    del record["region"], record["spec"]["region"]  # as written before regions were explicit
    (out / "synthesis.json").write_text(json.dumps(record))
    result = CliRunner().invoke(build_app(), ["evaluate", str(out), "--metrics", "psnr"])
    assert result.exit_code == 2 and "mask/ holds lesions only" in result.output


@pytest.mark.slow
def test_compare_report_names_the_region_and_shows_manifest_warnings(tmp_path):
    from synthbench.compare import CompareConfig, MethodSpec, run_comparison

    root = _folder(tmp_path / "src", "lesion", n=16)
    cfg = json.loads((root / "synthbench-data.json").read_text())
    cfg["patients"] = {"mode": "blocks", "count": 2}
    (root / "synthbench-data.json").write_text(json.dumps(cfg))
    prepare(resolve_source(str(root), 32, 0), tmp_path / "p",
            PrepareOptions(size=32, train_factor=0, test_factor=1, slice_split=True))
    outcome = run_comparison(CompareConfig(
        methods=[MethodSpec("pix2pix")], out_dir=tmp_path / "cmp", data=str(tmp_path / "p"), protocol="smoke",
        protocol_overrides={"max_steps": 1}, experiments=(), metrics=("psnr",), device="cpu", show_progress=False,
        method_options={"pix2pix": {"ngf": 8, "ndf": 8}}))
    notes = outcome.results.notes
    assert any("slice-level split" in n for n in notes) and any("lesion classes only" in n for n in notes)
    assert set(outcome.results.image_quality["setting"]) == {"complete", "lesion"}
    html = (outcome.report_dir / "report.html").read_text()
    assert "slice-level split" in html and "Lesion-only images" in html


def test_threshold_region_derives_the_lung_class_at_prepare(tmp_path):
    import nibabel as nib

    root = tmp_path / "src"
    (root / "ct").mkdir(parents=True)
    (root / "seg").mkdir()
    for p in range(3):
        ct = np.full((32, 32, 4), -1000.0, np.float32)
        ct[3:29, 4:28] = 40.0
        ct[6:14, 8:24] = -850.0
        ct[18:26, 8:24] = -850.0
        seg = np.zeros(ct.shape, np.uint8)
        seg[8:11, 10:13] = 1  # ground-glass inside the right lung
        ct[8:11, 10:13] = -450.0
        nib.save(nib.Nifti1Image(ct, np.eye(4)), str(root / "ct" / f"{p}.nii.gz"))
        nib.save(nib.Nifti1Image(seg, np.eye(4)), str(root / "seg" / f"{p}.nii.gz"))
    (root / "synthbench-data.json").write_text(json.dumps({
        "intensity": "hu", "images": "ct", "labels": "seg", "region": "threshold",
        "classes": [["background", "background"], ["ground_glass", "lesion"]]}))
    prepare(resolve_source(str(root), 32, 0), tmp_path / "p", PrepareOptions(size=32, train_factor=0, test_factor=0))
    ds = PreparedDataset(tmp_path / "p")
    assert ds.spec.class_names == ["background", "ground_glass", "lung"] and ds.spec.region == "threshold"
    label = np.asarray(ds.split("train").label[0])
    assert (label == 2).sum() == 2 * 8 * 16 - 9 and (label == 1).sum() == 9  # both lungs, lesion kept
    assert "HU" in ds.manifest["source"]["region"]["label"]
