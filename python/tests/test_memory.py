"""Memory stays flat over 1,000 predict calls (Python objects via tracemalloc, the whole
process, C allocations included, via RSS). The small committed MobileNetV2 fixture at
size 128 keeps it a few seconds: the binding's memory, not the backbone's, is tested."""
import gc
import tracemalloc

import patchead
from conftest import ROOT, TEST, TRAIN


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_predict_memory_flat():
    model = patchead.Model(ROOT / "tests" / "fixtures" / "cnn" / "mobilenet_v2_025", size=128)
    bank = patchead.Bank.fit(model, TRAIN)
    image = patchead.load_image(TEST / "defect" / "hole_000.jpg")
    path = str(TEST / "good" / "good_000.jpg")

    def one(i):
        [r] = bank.predict(image if i % 2 else path)
        if i % 10 == 0:
            r.map, r.heatmap()  # the lazily computed arrays too
        return r.score

    first = [one(i) for i in range(50)]  # warm-up: scratch buffers, allocator arenas
    gc.collect()
    tracemalloc.start()
    py_before = tracemalloc.get_traced_memory()[0]
    rss_before = rss_bytes()
    scores = [one(i) for i in range(1000)]
    gc.collect()
    py_after = tracemalloc.get_traced_memory()[0]
    rss_after = rss_bytes()
    tracemalloc.stop()
    assert scores[:50] == first  # deterministic
    # 1000 floats kept in `scores` are ~32 KiB; a leaked result (map 400x300 float32 =
    # 480 KiB) or patch-score array would show many MiB.
    assert py_after - py_before < 256 * 1024, "Python heap grew by %d bytes" % (py_after - py_before)
    assert rss_after - rss_before < 8 * 1024 * 1024, "RSS grew by %d bytes" % (rss_after - rss_before)
