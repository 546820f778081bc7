#!/usr/bin/env python3
"""make_align_fixtures.py — reference output of pe_align_warp from PyTorch.

pe_align_warp maps every output pixel q (pixel centres at integer coordinates) to the
reference point r = R(angle)^T (q - t) and samples it bilinearly with a replicate
border. That is exactly torch.nn.functional.grid_sample(mode="bilinear",
padding_mode="border", align_corners=True), where normalised -1 / +1 are the centres
of the first / last pixel. Writes tests/fixtures/align/warp_ref.bin:

  char[8]  "PEWARP1\\0"
  int32    w_in, h_in, w_out, h_out, n_cases         (little endian)
  uint8    image[h_in][w_in][3]                       (the reference image)
  n_cases x { float64 angle_deg, tx, ty; float32 out[h_out][w_out][3] }  (unrounded)

Usage: python3 tools/make_align_fixtures.py   (from the repository root)
"""
import math
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F

W_IN, H_IN, W_OUT, H_OUT = 48, 40, 44, 36
CASES = [  # angle_deg, tx, ty
    (0.0, 0.0, 0.0),
    (0.0, 3.25, -2.5),
    (30.0, 5.5, -3.2),
    (-135.0, 50.0, 20.0),
    (180.0, 47.0, 39.0),
    (7.3, -10.25, 60.0),
    (90.0, 30.0, -4.0),
]


def warp(img: np.ndarray, angle_deg: float, tx: float, ty: float) -> np.ndarray:
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    ys, xs = torch.meshgrid(torch.arange(H_OUT, dtype=torch.float64),
                            torch.arange(W_OUT, dtype=torch.float64), indexing="ij")
    qx, qy = xs - tx, ys - ty
    rx = c * qx + s * qy   # R^T (q - t)
    ry = -s * qx + c * qy
    grid = torch.stack([2 * rx / (W_IN - 1) - 1, 2 * ry / (H_IN - 1) - 1], dim=-1)[None]
    src = torch.from_numpy(img.astype(np.float64)).permute(2, 0, 1)[None]
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out[0].permute(1, 2, 0).numpy().astype(np.float32)


def main() -> None:
    rng = np.random.default_rng(20240611)
    img = rng.integers(0, 256, size=(H_IN, W_IN, 3), dtype=np.uint8)
    os.makedirs("tests/fixtures/align", exist_ok=True)
    path = "tests/fixtures/align/warp_ref.bin"
    with open(path, "wb") as f:
        f.write(b"PEWARP1\0")
        f.write(struct.pack("<5i", W_IN, H_IN, W_OUT, H_OUT, len(CASES)))
        f.write(img.tobytes())
        for angle, tx, ty in CASES:
            f.write(struct.pack("<3d", angle, tx, ty))
            f.write(np.ascontiguousarray(warp(img, angle, tx, ty), dtype="<f4").tobytes())
    print(f"wrote {path} ({os.path.getsize(path)} bytes, {len(CASES)} cases)")


if __name__ == "__main__":
    main()
