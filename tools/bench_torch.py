#!/usr/bin/env python3
"""PyTorch reference timings for bench/run.sh: transformers Dinov2Model (random weights,
the default attention implementation) on the same input sizes and thread counts.

    python3 tools/bench_torch.py [--models small,base] [--sizes 224,448] [--threads 1,2] [--reps 3]
                                 [--precisions fp32,bf16]

fp32 is plain inference; bf16 is the same model under torch.autocast("cpu", bfloat16)
(PyTorch's own bf16 path: oneDNN/AMX kernels where the CPU has them).
One line per configuration, in the format of `patchead bench --model`:
    model dinov2-small size 448 threads 1 ms_best X ms_median Y precision fp32
"""
import contextlib
import argparse
import time

import torch

DIMS = {"small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="small,base")
    ap.add_argument("--sizes", default="224,448")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--precisions", default="fp32")
    a = ap.parse_args()
    from transformers import Dinov2Config, Dinov2Model
    for name in a.models.split(","):
        w, layers, heads = DIMS[name]
        model = Dinov2Model(Dinov2Config(hidden_size=w, num_hidden_layers=layers,
                                         num_attention_heads=heads, patch_size=14, image_size=518))
        model.eval()
        for size in (int(s) for s in a.sizes.split(",")):
            x = torch.randn(1, 3, size, size)
            for prec in a.precisions.split(","):
                for t in (int(s) for s in a.threads.split(",")):
                    torch.set_num_threads(t)
                    times = []
                    ctx = (torch.autocast("cpu", dtype=torch.bfloat16) if prec == "bf16"
                           else contextlib.nullcontext())
                    with torch.inference_mode(), ctx:
                        for r in range(a.reps + 1):  # first run is a warm-up
                            t0 = time.perf_counter()
                            model(pixel_values=x)
                            if r:
                                times.append((time.perf_counter() - t0) * 1e3)
                    times.sort()
                    print("model dinov2-%s size %d threads %d ms_best %.1f ms_median %.1f precision %s"
                          % (name, size, t, times[0], times[len(times) // 2], prec), flush=True)


if __name__ == "__main__":
    main()
