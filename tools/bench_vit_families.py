#!/usr/bin/env python3
"""Speed of every newer ViT family at one input size (default 448), fp32 or bf16.

For each family a full-size random-weight model is written in its hub layout
(tools/vit_refs.py; needs torch, transformers, timm) and timed by
`patchead bench --model DIR --size S --threads T --reps R` (one warm-up, best of R,
peak RSS of that process). GFLOP/s uses this family's exact FLOP count (multiply-add
= 2): patch embedding 2 G 3p^2 D, per block 2 T D (3D + D) + MLP (2 T D M x 2, or x 3
when gated) + attention 4 T^2 D, T = tokens (CLS + registers + G patches).
Prints: family size threads ms/image GFLOP GFLOP/s RSS_MB. Usage:
    python3 tools/bench_vit_families.py --patchead build/patchead [--only a,b] [--size 448]
        [--precision fp32|bf16]
"""
import argparse
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vit_refs  # noqa: E402


def flops(ref, size):
    m = ref.model
    if hasattr(m, "patch_embed"):  # timm Eva
        D, p, L = m.embed_dim, m.patch_embed.patch_size[0], len(m.blocks)
        mlp = m.blocks[0].mlp
        gated = hasattr(mlp, "fc1_g") or type(mlp).__name__ == "GluMlp"
        M = mlp.fc2.in_features
        prefix = m.num_prefix_tokens
    else:
        c = m.config
        D, p, L, M = c.hidden_size, c.patch_size, c.num_hidden_layers, c.intermediate_size
        gated = bool(getattr(c, "use_gated_mlp", False))
        prefix = {"dinov3_vit": 1 + getattr(c, "num_register_tokens", 0), "siglip_vision_model": 0,
                  "siglip2_vision_model": 0}.get(c.model_type, 1)
    G = (size // p) ** 2
    T = G + prefix
    per_block = 2 * T * D * 4 * D + 2 * T * D * M * (3 if gated else 2) + 4 * T * T * D
    return 2 * G * 3 * p * p * D + L * per_block


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--patchead", default="build/patchead")
    ap.add_argument("--only", default="")
    ap.add_argument("--size", type=int, default=448)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"])
    a = ap.parse_args()
    names = [n for n in vit_refs.FULL if not a.only or n in a.only.split(",")]
    print("# precision %s" % a.precision)
    print("%-32s %5s %3s %9s %7s %8s %7s" % ("family", "size", "thr", "ms/image", "GFLOP", "GFLOP/s",
                                            "RSS MB"))
    for name in names:
        f = vit_refs.FULL[name]
        size = a.size - a.size % (f.get("patch") or (14 if "patch14" in name else 16))
        ref = vit_refs.make(name, seed=1)
        fl = flops(ref, size)
        with tempfile.TemporaryDirectory() as d:
            ref.save(d)
            del ref
            # through a small shell that forks patchead: a child exec'd straight from this
            # (large) Python process would inherit its peak RSS (Linux keeps ru_maxrss over exec)
            cmd = [a.patchead, "bench", "--model", d, "--size", str(size), "--threads", str(a.threads),
                   "--reps", str(a.reps), "--precision", a.precision]
            r = subprocess.run(["sh", "-c", '"$@" & wait $!', "sh"] + cmd, capture_output=True, text=True)
        if r.returncode != 0:
            print("%-32s FAIL %s" % (name, r.stderr.strip()))
            continue
        kv = r.stdout.split()
        ms = float(kv[kv.index("ms_best") + 1])
        rss = float(kv[kv.index("peak_rss_mb") + 1])
        print("%-32s %5d %3d %9.1f %7.1f %8.1f %7.0f" % (name, size, a.threads, ms, fl * 1e-9,
                                                         fl * 1e-9 / (ms * 1e-3), rss))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
