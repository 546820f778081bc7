#!/usr/bin/env python3
"""PyTorch reference timings of the CNN backbones for bench/run.sh: the same real weights
(weights/<name> from `make weights`) in the packages' own PyTorch classes, the same work as
patchead's pe_model_forward — the network up to its stride-16 stage (a hook stops the forward
there, so PyTorch does not run the layers patchead skips), then the PatchCore-style features
(3x3 average pooling of the stride-8 and stride-16 maps, bilinear upsampling, concatenation).

    python tools/bench_torch_cnn.py [--models mobilenet_v2,efficientnet_lite0] [--sizes 448]
                                    [--threads 2] [--reps 7] [--precisions fp32,bf16]

bf16 is torch.autocast("cpu", bfloat16) (oneDNN/AMX kernels where the CPU has them).
One line per configuration, in cnn_bench's format:
    torch-<name> size S threads T ms_best X ms_median Y precision P
"""
import argparse
import contextlib
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_cnn_fixtures import features_from_stages, load_real, stage_indices  # noqa: E402


class Stop(Exception):
    pass


def stages(family, model):
    if family == "mobilenet_v2":
        blocks = list(model.features)[1:-1]
        i8, i16 = stage_indices([b.stride for b in blocks], 2)
    else:
        blocks = list(model._blocks)
        i8, i16 = stage_indices([b._depthwise_conv.stride[0] for b in blocks], 2)
    return blocks[i8], blocks[i16]


def forward_features(model, m8, m16, x):
    outs = {}

    def grab8(mod, inp, out):
        outs[8] = out

    def grab16(mod, inp, out):
        outs[16] = out
        raise Stop  # the rest of the network is not part of the features

    hooks = [m8.register_forward_hook(grab8), m16.register_forward_hook(grab16)]
    try:
        model(x)
    except Stop:
        pass
    finally:
        for h in hooks:
            h.remove()
    return features_from_stages(outs[8].float(), outs[16].float())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mobilenet_v2,efficientnet_lite0")
    ap.add_argument("--sizes", default="448")
    ap.add_argument("--threads", default="2")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--precisions", default="fp32,bf16")
    a = ap.parse_args()
    for name in a.models.split(","):
        family, model = load_real(name)
        m8, m16 = stages(family, model)
        for size in (int(s) for s in a.sizes.split(",")):
            x = torch.randn(1, 3, size, size)
            for prec in a.precisions.split(","):
                for t in (int(s) for s in a.threads.split(",")):
                    torch.set_num_threads(t)
                    ctx = (torch.autocast("cpu", dtype=torch.bfloat16) if prec == "bf16"
                           else contextlib.nullcontext())
                    times = []
                    with torch.inference_mode(), ctx:
                        for r in range(a.reps + 1):  # the first run is a warm-up
                            t0 = time.perf_counter()
                            forward_features(model, m8, m16, x)
                            if r:
                                times.append((time.perf_counter() - t0) * 1e3)
                    times.sort()
                    print("torch-%s size %d threads %d ms_best %.1f ms_median %.1f precision %s"
                          % (name, size, t, times[0], times[len(times) // 2], prec), flush=True)


if __name__ == "__main__":
    main()
