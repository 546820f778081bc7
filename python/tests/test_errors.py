"""Bad inputs raise the documented patchead.Error subclass, with a message naming the
thing and the problem; nothing crashes."""
import numpy as np
import pytest

import patchead
from conftest import TEST, TRAIN

IMAGE = TEST / "good" / "good_000.jpg"


def test_hierarchy():
    classes = [patchead.IoError, patchead.FormatError, patchead.ShapeError,
               patchead.UnsupportedError, patchead.NoMemoryError, patchead.ArgumentError,
               patchead.MismatchError, patchead.LimitError]
    assert [c.status for c in classes] == list(range(1, 9))
    for c in classes:
        assert issubclass(c, patchead.Error)
    assert issubclass(patchead.IoError, OSError)
    assert issubclass(patchead.ArgumentError, ValueError)
    assert issubclass(patchead.NoMemoryError, MemoryError)


def test_version():
    header = (TRAIN.parents[3] / "include" / "patchead.h").read_text()
    assert '#define PE_VERSION "%s"' % patchead.__version__ in header


def test_missing_model(tmp_path):
    with pytest.raises(patchead.IoError, match=str(tmp_path / "nope")):
        patchead.Model(tmp_path / "nope")


def test_corrupt_model(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    with pytest.raises(patchead.FormatError, match="bad.safetensors"):
        patchead.Model(tmp_path / "bad.safetensors")


def test_bad_model_arguments(mobilenet_path):
    with pytest.raises(patchead.ArgumentError, match="size"):
        patchead.Model(mobilenet_path, size=16)
    with pytest.raises(patchead.ArgumentError, match="threads"):
        patchead.Model(mobilenet_path, threads=0)


def test_image_arrays(mobilenet):
    good = patchead.load_image(IMAGE)
    with pytest.raises(patchead.ArgumentError, match="dtype uint8"):
        mobilenet.features(good.astype(np.float32))
    with pytest.raises(patchead.ShapeError, match=r"\(H, W, 3\)"):
        mobilenet.features(good[:, :, 0])
    with pytest.raises(patchead.ShapeError, match=r"\(H, W, 3\)"):
        mobilenet.features(np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(patchead.ArgumentError, match="C-contiguous"):
        mobilenet.features(good[:, ::2])
    with pytest.raises(patchead.ArgumentError, match="expects a path"):
        mobilenet.features(12)
    with pytest.raises(patchead.LimitError, match="exceeds"):
        mobilenet.features(np.zeros((16385, 1, 3), np.uint8))


def test_image_files(mobilenet, tmp_path):
    with pytest.raises(patchead.FormatError):
        mobilenet.features(b"this is not an image")
    (tmp_path / "cut.png").write_bytes(IMAGE.read_bytes()[:0] + b"\x89PNG\r\n\x1a\n\0\0")
    with pytest.raises(patchead.FormatError, match="cut.png"):
        mobilenet.features(tmp_path / "cut.png")
    with pytest.raises(patchead.IoError, match="missing.png"):
        mobilenet.features(tmp_path / "missing.png")
    with pytest.raises(patchead.IoError, match="no such file"):
        patchead.Bank.fit(mobilenet, tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    with pytest.raises(patchead.ArgumentError, match="no images"):
        patchead.Bank.fit(mobilenet, tmp_path / "empty")


def test_attention_on_cnn(mobilenet):
    with pytest.raises(patchead.UnsupportedError, match="no CLS attention"):
        mobilenet.attention(IMAGE)
    with pytest.raises(patchead.UnsupportedError, match="attention"):
        patchead.Bank.fit(mobilenet, TRAIN, mask=True)


def test_bad_scoring_options(mobilenet):
    with pytest.raises(patchead.ArgumentError, match="preset"):
        patchead.Bank.fit(mobilenet, TRAIN, preset="nope")
    with pytest.raises(patchead.ArgumentError, match="k"):
        patchead.Bank.fit(mobilenet, TRAIN, k=0)
    with pytest.raises(patchead.ArgumentError, match="top"):
        patchead.Bank.fit(mobilenet, TRAIN, top="150%")
    with pytest.raises(patchead.ArgumentError, match="order"):
        patchead.Bank.fit(mobilenet, TRAIN, order="middle")
    with pytest.raises(patchead.ArgumentError, match="shots: 9 requested but only 3"):
        patchead.Bank.fit(mobilenet, TRAIN, shots=9)
    with pytest.raises(patchead.ArgumentError, match="at least 2"):
        patchead.zeroshot(mobilenet, [IMAGE])
    with pytest.raises(patchead.ArgumentError, match="patchead.Model"):
        patchead.Bank.fit("weights", TRAIN)


def test_bank_files(mobilenet, tiny_cnn, tmp_path):
    with pytest.raises(patchead.IoError, match="missing.pead"):
        patchead.Bank.load(tmp_path / "missing.pead")
    bank = patchead.Bank.fit(tiny_cnn, TRAIN)
    bank.save(tmp_path / "b.pead")
    data = (tmp_path / "b.pead").read_bytes()
    (tmp_path / "cut.pead").write_bytes(data[: len(data) // 2])
    with pytest.raises(patchead.FormatError, match="cut.pead"):
        patchead.Bank.load(tmp_path / "cut.pead")
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    (tmp_path / "flip.pead").write_bytes(bytes(flipped))
    with pytest.raises(patchead.FormatError, match="flip.pead"):
        patchead.Bank.load(tmp_path / "flip.pead")
    with pytest.raises(patchead.MismatchError):
        patchead.Bank.load(tmp_path / "b.pead", model=mobilenet)
    with pytest.raises(patchead.MismatchError):
        bank.predict(IMAGE, model=mobilenet)
    with pytest.raises(patchead.IoError):
        bank.save(tmp_path / "no" / "such" / "dir" / "b.pead")
    assert not (tmp_path / "no").exists()


def test_heatmap_arguments(mobilenet):
    [r] = patchead.Bank.fit(mobilenet, TRAIN, size=224).predict(IMAGE)
    with pytest.raises(patchead.ArgumentError, match="float32"):
        patchead.heatmap(IMAGE, r.map.astype(np.float64), 0, 1)
    with pytest.raises(patchead.ShapeError, match="map"):
        patchead.heatmap(IMAGE, r.map[:10].copy(), 0, 1)
