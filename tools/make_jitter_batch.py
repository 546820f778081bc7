#!/usr/bin/env python3
"""Build a large zero-shot batch for scale measurements (docs/SCALE.md): N JPEG images
made by repeating the images found under the given folders with light jitter: a random
shift of up to 8 pixels (edges replicated), a brightness factor in [0.95, 1.05] and JPEG
quality 90. Deterministic (numpy seed 0). The output is not shipped (data licence).

Run: python3 tools/make_jitter_batch.py OUT_DIR N SRC_DIR...   (numpy + Pillow)
"""
import os
import sys

import numpy as np
from PIL import Image


def main():
    out, n, srcs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    files = sorted(os.path.join(d, f) for s in srcs for d, _, fs in os.walk(s) for f in fs
                   if f.lower().endswith((".jpg", ".jpeg", ".png")) and "ground_truth" not in d)
    if not files:
        sys.exit("no images under " + " ".join(srcs))
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        img = np.asarray(Image.open(files[i % len(files)]).convert("RGB"), dtype=np.float32)
        dy, dx = rng.integers(-8, 9, size=2)
        img = np.pad(img, ((8, 8), (8, 8), (0, 0)), mode="edge")
        h, w = img.shape[0] - 16, img.shape[1] - 16
        img = img[8 + dy:8 + dy + h, 8 + dx:8 + dx + w] * rng.uniform(0.95, 1.05)
        Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8)).save(
            os.path.join(out, "%05d.jpg" % i), quality=90)
    print("wrote %d images from %d sources into %s" % (n, len(files), out))


if __name__ == "__main__":
    main()
