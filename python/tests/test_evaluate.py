"""patchead.evaluate() gives the metrics of `patchead eval` (results.json) for the same
run: on the bundled tire examples (image metrics), and on the MVTec 3D-AD tire category
with masks (pixel AUROC and PRO too) when $PATCHEAD_DATA has it."""
import json
import os
from pathlib import Path

import pytest

import patchead
from conftest import EXAMPLES

KEYS = ("i_auroc", "i_ap", "f1_max", "p_auroc", "pro", "p_auroc_bound", "pro_bound")


def same(a, b):
    """results.json holds cJSON's text: 15 significant digits (17 only when 15 do not
    read back within cJSON's tolerance), so compare at 15 digits; None = n/a."""
    if a is None or b is None:
        return a is None and b is None
    return "%.15g" % a == "%.15g" % b


def compare(cli_json, py):
    assert [s["name"] for s in cli_json["settings"]] == [s["name"] for s in py["settings"]]
    for a, b in zip(cli_json["settings"], py["settings"]):
        assert len(a["results"]) == len(b["results"]) > 0
        for ra, rb in zip(a["results"], b["results"]):
            assert (ra["category"], ra["seed"]) == (rb["category"], rb["seed"])
            for k in KEYS:
                assert same(ra[k], rb[k]), (a["name"], ra["seed"], k, ra[k], rb[k])
        for k, v in a["mean"].items():
            assert same(v["mean"], b["mean"][k]["mean"]) and same(v["std"], b["mean"][k]["std"]), k
    for key in ("layout", "size", "max_test", "pixel_bins"):
        assert cli_json["parameters"][key] == py["parameters"][key], key
    assert [c["name"] for c in cli_json["categories"]] == [c["name"] for c in py["categories"]]
    assert set(cli_json) <= set(py)


def test_evaluate_examples(cli, mobilenet_path, tmp_path):
    cli("eval", "--quiet", "--model", mobilenet_path, "--data", EXAMPLES, "--size", 224,
        "--shots", "1,2", "--seeds", 2, "--zeroshot", "--out", tmp_path)
    model = patchead.Model(mobilenet_path, size=224)
    py = patchead.evaluate(model, EXAMPLES, shots=[1, 2], seeds=2, zeroshot=True)
    compare(json.loads((tmp_path / "results.json").read_text()), py)
    assert len(py["scores"]) == (2 * 2 + 1) * 4


def test_evaluate_tire_pixel_metrics(cli, mobilenet_path, tmp_path):
    data = os.environ.get("PATCHEAD_DATA")
    if not data or not (Path(data) / "mvtec3d_tire").is_dir():
        pytest.skip("PATCHEAD_DATA/mvtec3d_tire not available")
    root = Path(data) / "mvtec3d_tire"
    cli("eval", "--quiet", "--model", mobilenet_path, "--data", root, "--size", 224, "--shots", 1,
        "--seeds", 2, "--zeroshot", "--max-test", 12, "--out", tmp_path, timeout=600)
    model = patchead.Model(mobilenet_path, size=224)
    py = patchead.evaluate(model, root, shots=1, seeds=2, zeroshot=True, max_test=12)
    cli_json = json.loads((tmp_path / "results.json").read_text())
    compare(cli_json, py)
    assert py["settings"][0]["results"][0]["p_auroc"] is not None


def test_evaluate_bad_arguments(mobilenet):
    with pytest.raises(patchead.ArgumentError, match="shots and/or zeroshot"):
        patchead.evaluate(mobilenet, EXAMPLES)
    with pytest.raises(patchead.ArgumentError, match="categories: nope not in"):
        patchead.evaluate(mobilenet, EXAMPLES, shots=1, categories=["nope"])
    with pytest.raises(patchead.IoError):
        patchead.evaluate(mobilenet, EXAMPLES / "missing", shots=1)
