"""Per-image time of the Python binding vs the CLI on the bundled tire examples.

    build/pyvenv/bin/python bench/python_binding.py [--size 448] [--repeat 10] [--rounds 5]
                                                    [--threads N]

Both sides do the same work per image: decode the JPEG, extract features, score against
the same 3-reference bank (maps not computed). The CLI's own figure is the one `patchead
predict` prints ("... ms/image", its predict loop only, model load excluded); the Python
figure times bank.predict() over the same list of paths. Each is the median of --rounds
runs. Prints the CPU, the load average and both figures; the difference is the binding's
overhead (argument conversion, result objects, GIL release)."""
import argparse
import os
import re
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import patchead

ROOT = Path(__file__).resolve().parents[1]


def cpu_name():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=448)
    ap.add_argument("--repeat", type=int, default=10, help="passes over the 4 test images per run")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="both sides; 0 = all cores")
    ap.add_argument("--model", default=str(ROOT / "weights" / "mobilenet_v2"))
    ap.add_argument("--patchead", default=str(ROOT / "build" / "patchead"))
    a = ap.parse_args()
    test = ROOT / "examples" / "tire" / "test"
    paths = [str(p) for p in sorted(test.glob("*/*.jpg"))] * a.repeat
    threads = a.threads or os.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        bank_path = Path(tmp) / "b.pead"
        subprocess.run([a.patchead, "fit", "--quiet", "--model", a.model, "--size", str(a.size),
                        "-o", str(bank_path), str(ROOT / "examples" / "tire" / "train" / "good")],
                       check=True)
        def cli_cpu(images):
            """CPU seconds (user + sys, all threads) of one `patchead predict` run."""
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run([a.patchead, "predict", "--quiet", "--bank", str(bank_path), "--no-maps",
                            "--threads", str(threads), "--out", str(Path(tmp) / "out"), *images],
                           check=True)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime

        # CPU time is what a crowded machine inflates least; the fixed cost (model load)
        # cancels in the difference of a long and a short run.
        cli_cpu_ms = [1000 * (cli_cpu(paths) - cli_cpu(paths[:4])) / (len(paths) - 4)
                      for _ in range(a.rounds)]
        cli_ms = []
        for _ in range(a.rounds):
            p = subprocess.run([a.patchead, "predict", "--bank", str(bank_path), "--no-maps",
                                "--threads", str(threads),
                                "--out", str(Path(tmp) / "out"), *paths],
                               capture_output=True, text=True, check=True)
            cli_ms.append(float(re.search(r"\(([\d.]+) ms/image\)", p.stderr).group(1)))
        model = patchead.Model(a.model, size=a.size, threads=threads)
        bank = patchead.Bank.load(bank_path, model=model)
        bank.predict(paths[:4])  # warm-up, as the CLI's first image warms its buffers
        py_ms, py_cpu_ms = [], []
        for _ in range(a.rounds):
            t, c0 = time.perf_counter(), time.process_time()
            bank.predict(paths)
            py_ms.append(1000 * (time.perf_counter() - t) / len(paths))
            py_cpu_ms.append(1000 * (time.process_time() - c0) / len(paths))
    c, p = statistics.median(cli_ms), statistics.median(py_ms)
    print("CPU %s, %d threads, load average %s" % (cpu_name(), threads,
                                                   " ".join("%.2f" % x for x in os.getloadavg())))
    print("size %d, %d images per run, median of %d runs" % (a.size, len(paths), a.rounds))
    print("CLI     %.1f ms/image   (runs: %s)" % (c, " ".join("%.0f" % x for x in cli_ms)))
    print("Python  %.1f ms/image   (runs: %s)" % (p, " ".join("%.1f" % x for x in py_ms)))
    print("binding overhead %+.1f ms/image (%+.1f%%) wall" % (p - c, 100 * (p - c) / c))
    cc, pc = statistics.median(cli_cpu_ms), statistics.median(py_cpu_ms)
    print("CPU time: CLI %.1f ms/image, Python %.1f ms/image, overhead %+.1f ms (%+.1f%%)"
          % (cc, pc, pc - cc, 100 * (pc - cc) / cc))


if __name__ == "__main__":
    main()
