"""The package's numbers equal the CLI's on the bundled tire examples, for the same inputs:
scores (as the CLI prints them, %.7g), anomaly maps and heatmaps bit for bit, features
bit for bit; banks written by either side are read by the other with the same results."""
import csv

import numpy as np
import pytest

import patchead
from conftest import TEST, TRAIN, stem


def read_scores(path):
    with open(path, newline="") as f:
        return {row["path"].rsplit("/", 1)[-1]: row for row in csv.DictReader(f)}


def check_against_cli_output(results, out_dir):
    """scores.csv, maps/*.npy and heatmaps/*.png of a CLI run equal the results."""
    rows = read_scores(out_dir / "scores.csv")
    assert len(rows) == len(results)
    lo = min(float(r.patch_scores.min()) for r in results)  # the CLI's run-wide colour scale
    hi = max(float(r.patch_scores.max()) for r in results)
    for r in results:
        row = rows[r.path.rsplit("/", 1)[-1]]
        assert "%.7g" % r.score == row["score"], r.path
        if "is_anomalous" in row:
            assert int(r.is_anomalous) == int(row["is_anomalous"]), r.path
        cli_map = np.load(out_dir / "maps" / ("%s.npy" % stem(r.path)))
        assert cli_map.dtype == np.float32 and cli_map.shape == r.map.shape
        assert np.array_equal(cli_map, r.map), "%s: map differs (max |diff| %g)" % (
            r.path, np.abs(cli_map - r.map).max())
        cli_heat = patchead.load_image(out_dir / "heatmaps" / ("%s.png" % stem(r.path)))
        assert np.array_equal(cli_heat, r.heatmap(lo, hi)), r.path


def test_predict_equals_cli(cli, mobilenet, mobilenet_path, tmp_path):
    cli("fit", "--quiet", "--model", mobilenet_path, "-o", tmp_path / "cli.pead", TRAIN)
    cli("predict", "--quiet", "--bank", tmp_path / "cli.pead", "--out", tmp_path / "out", TEST)
    bank = patchead.Bank.fit(mobilenet, str(TRAIN))
    results = bank.predict(str(TEST))
    assert [r.path.rsplit("/", 1)[-1] for r in results] == \
        ["contamination_000.jpg", "hole_000.jpg", "good_000.jpg", "good_001.jpg"]
    check_against_cli_output(results, tmp_path / "out")


def test_zeroshot_equals_cli(cli, mobilenet, mobilenet_path, tmp_path):
    cli("zeroshot", "--quiet", "--model", mobilenet_path, "--size", 224, "--preset", "musc",
        "--threshold", 0.2, "--out", tmp_path / "out", TEST)
    results = patchead.zeroshot(mobilenet, TEST, size=224, preset="musc", threshold=0.2)
    check_against_cli_output(results, tmp_path / "out")


def test_options_equal_cli(cli, mobilenet, mobilenet_path, tmp_path):
    """--k / --top / --order / --sigma / --size and --shots / --seed sampling as the CLI."""
    cli("fit", "--quiet", "--model", mobilenet_path, "--size", 320, "--k", "2", "--top", "5%",
        "--order", "highest", "--sigma", 2, "--shots", 2, "--seed", 7, "-o", tmp_path / "b.pead",
        TRAIN)
    cli("predict", "--quiet", "--bank", tmp_path / "b.pead", "--out", tmp_path / "out", TEST)
    bank = patchead.Bank.fit(mobilenet, TRAIN, size=320, k=2, top="5%", order="highest",
                             sigma=2, shots=2, seed=7)
    check_against_cli_output(bank.predict(TEST), tmp_path / "out")


def test_bank_roundtrip_cli_to_python(cli, mobilenet, mobilenet_path, tmp_path):
    cli("fit", "--quiet", "--model", mobilenet_path, "--size", 256, "-o", tmp_path / "cli.pead", TRAIN)
    cli("predict", "--quiet", "--bank", tmp_path / "cli.pead", "--out", tmp_path / "out", TEST)
    bank = patchead.Bank.load(tmp_path / "cli.pead")  # the model comes from the bank's path
    assert bank.num_refs == 3 and bank.params["size"] == 256
    assert bank.model_path == str(mobilenet_path)
    check_against_cli_output(bank.predict(TEST), tmp_path / "out")
    again = patchead.Bank.load(tmp_path / "cli.pead", model=mobilenet)
    assert again.threshold == bank.threshold


def test_bank_roundtrip_python_to_cli(cli, mobilenet, tmp_path):
    bank = patchead.Bank.fit(mobilenet, TRAIN, size=256, preset="anomalydino")
    bank.threshold = 0.15
    bank.save(tmp_path / "py.pead")
    cli("predict", "--quiet", "--bank", tmp_path / "py.pead", "--out", tmp_path / "out", TEST)
    results = bank.predict(TEST)
    check_against_cli_output(results, tmp_path / "out")
    assert [r.is_anomalous for r in results] == [r.score > 0.15 for r in results]
    loaded = patchead.Bank.load(tmp_path / "py.pead", model=mobilenet)
    assert loaded.threshold == np.float32(0.15)
    assert loaded.params == bank.params


def test_features_equal_cli(cli, mobilenet, mobilenet_path, tmp_path):
    image = TEST / "defect" / "hole_000.jpg"
    cli("features", "--model", mobilenet_path, "--size", 224, image, "-o", tmp_path / "f.npy")
    want = np.load(tmp_path / "f.npy")
    got = mobilenet.features(image, size=224)
    assert got.shape == (28, 28, 128) and got.dtype == np.float32
    assert np.array_equal(got.reshape(-1, 128), want)


def test_attention_equals_cli(cli, tiny_vit, root, tmp_path):
    image = TEST / "good" / "good_000.jpg"
    model = root / "tests" / "fixtures" / "vit" / "dinov2"
    cli("features", "--model", model, "--size", 224, image, "-o", tmp_path / "f.npy",
        "--attn", tmp_path / "a.npy")
    attn = tiny_vit.attention(image)
    assert attn.shape == (16, 16)
    assert np.array_equal(attn, np.load(tmp_path / "a.npy"))
    assert np.array_equal(tiny_vit.features(image).reshape(256, -1), np.load(tmp_path / "f.npy"))


def test_mask_and_align_equal_cli(cli, tiny_vit, root, tmp_path):
    """PatchEAD+ (--plus) through the binding: alignment and attention masking."""
    model = root / "tests" / "fixtures" / "vit" / "dinov2"
    cli("fit", "--quiet", "--model", model, "--size", 224, "--plus", "-o", tmp_path / "b.pead", TRAIN)
    cli("predict", "--quiet", "--bank", tmp_path / "b.pead", "--out", tmp_path / "out", TEST)
    bank = patchead.Bank.fit(tiny_vit, TRAIN, align=True, mask=True)
    results = bank.predict(TEST)
    check_against_cli_output(results, tmp_path / "out")
    assert sum(r.aligned + r.align_failed for r in results) == 3 * len(results)


@pytest.mark.parametrize("kind", ["array", "bytes", "pathlike"])
def test_image_inputs_equal_paths(mobilenet, kind):
    bank = patchead.Bank.fit(mobilenet, TRAIN, size=224)
    path = TEST / "defect" / "contamination_000.jpg"
    if kind == "array":
        src = patchead.load_image(path)
        assert src.shape == (400, 300, 3) and src.dtype == np.uint8
    elif kind == "bytes":
        src = path.read_bytes()
    else:
        src = path
    [a] = bank.predict(str(path))
    [b] = bank.predict(src)
    assert a.score == b.score and np.array_equal(a.map, b.map)
    assert np.array_equal(a.heatmap(), b.heatmap())
    assert b.path == (str(path) if kind == "pathlike" else None)
