"""The GIL is released while the library computes, and one model used from several
threads gives the same results as one thread (calls on a model are serialised)."""
import threading
import time

import patchead
from conftest import TEST, TRAIN


def test_gil_released(mobilenet_path):
    model = patchead.Model(mobilenet_path, size=448)
    images = [patchead.load_image(p) for p in sorted(TEST.glob("*/*.jpg"))] * 2
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.001)

    t = threading.Thread(target=ticker)
    t.start()
    time.sleep(0.02)
    t0 = time.monotonic()
    patchead.zeroshot(model, images)  # one long library call
    t1 = time.monotonic()
    stop.set()
    t.join()
    during = [x for x in ticks if t0 <= x <= t1]
    gaps = [b - a for a, b in zip(during, during[1:])]
    # Held GIL: the ticker would be frozen for the whole call (no ticks, one big gap).
    assert t1 - t0 > 0.1, "call too short to tell (%.3fs)" % (t1 - t0)
    assert len(during) > 10 and max(gaps) < 0.5 * (t1 - t0), \
        "ticker starved: %d ticks in %.3fs, largest gap %.3fs" % (len(during), t1 - t0,
                                                                  max(gaps, default=t1 - t0))


def test_threads_same_results(mobilenet_path):
    model = patchead.Model(mobilenet_path, size=224)
    bank = patchead.Bank.fit(model, TRAIN)
    paths = [str(p) for p in sorted(TEST.glob("*/*.jpg"))]
    want = [r.score for r in bank.predict(paths)]
    got = {}

    def work(k):
        got[k] = [r.score for r in bank.predict(paths)]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(got[k] == want for k in range(4))
