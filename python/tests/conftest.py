"""Shared fixtures: the repository (found from this file), the CLI binary to compare with
($PATCHEAD, else build/patchead), the real MobileNetV2 weights (`make weights`) and the
tiny committed ViT fixture. Tests that need something absent are skipped, saying why."""
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "tire"
TRAIN = EXAMPLES / "train" / "good"
TEST = EXAMPLES / "test"


@pytest.fixture(scope="session")
def root():
    return ROOT


@pytest.fixture(scope="session")
def cli():
    exe = Path(os.environ.get("PATCHEAD", ROOT / "build" / "patchead"))
    if not exe.is_absolute():
        exe = ROOT / exe
    if not os.access(exe, os.X_OK):
        pytest.skip("%s missing: run make first" % exe)

    def run(*args, timeout=300):
        p = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True,
                           timeout=timeout, cwd=ROOT)
        if p.returncode != 0:
            raise AssertionError("patchead %s failed (%d): %s" % (args[0], p.returncode, p.stderr))
        return p
    return run


@pytest.fixture(scope="session")
def mobilenet_path():
    path = ROOT / "weights" / "mobilenet_v2"
    if not (path / "model.safetensors").is_file():
        pytest.skip("weights/mobilenet_v2 missing: run make weights")
    return path


@pytest.fixture(scope="session")
def mobilenet(mobilenet_path):
    import patchead
    return patchead.Model(mobilenet_path)


@pytest.fixture(scope="session")
def tiny_vit():
    """A 2-block random-weight DINOv2 (tests/fixtures/vit/dinov2): has CLS attention."""
    import patchead
    return patchead.Model(ROOT / "tests" / "fixtures" / "vit" / "dinov2", size=224)


@pytest.fixture(scope="session")
def tiny_cnn():
    """Another backbone (a 0.25-width MobileNetV2 fixture): for mismatch checks."""
    import patchead
    return patchead.Model(ROOT / "tests" / "fixtures" / "cnn" / "mobilenet_v2_025", size=224)


def stem(path):
    return Path(path).stem
