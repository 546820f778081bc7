#!/usr/bin/env python3
"""Regenerate the committed seed corpora of the fuzz targets (fuzz/corpus/<target>/).

Standard library only (struct, json): any python3 runs it. Seeds are tiny on purpose
(libFuzzer's default -max_len is the largest seed):
  image: a few small PNG/JPEG/BMP test fixtures, copied.
  npy:   small .npy test fixtures, copied, plus a float32 2x3 array written here.
  model: a 1-block DINOv2 (hidden 4, patch 8, image 16) and its config, in the target's
         input layout (2-byte config length, config.json, model.safetensors).
  bank:  a bank fit by build/patchead with that tiny model on two fixture images
         (skipped with a note when build/patchead is missing).
  serve: raw HTTP requests, as a client sends them on one connection (fuzz_serve serves
         the bank "tiny": the first bank seed, embedded at build time): the GET endpoints,
         predict with a raw PNG, multipart/form-data, chunked, query options, a bad
         method, a bad bank name, pipelined requests, garbage.
Usage: python3 tools/make_fuzz_seeds.py [--patchead build/patchead]
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
IMAGES = os.path.join(ROOT, "tests", "fixtures", "images")


def copy_seeds(target, names):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    for n in names:
        shutil.copy(os.path.join(IMAGES, n), os.path.join(d, n))


def npy_bytes(shape, values):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }" % (
        ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else ""))
    pad = 64 - (10 + len(header) + 1) % 64
    header = header + " " * pad + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + \
        struct.pack("<%df" % len(values), *values)


def safetensors_bytes(tensors):
    """tensors: list of (name, shape, values) float32."""
    header, data = {}, b""
    for name, shape, values in tensors:
        raw = struct.pack("<%df" % len(values), *values)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + data


def tiny_dinov2():
    H, M, P, N = 4, 8, 8, 5  # hidden, mlp, patch, positions (2x2 patches + CLS)
    config = {"architectures": ["Dinov2Model"], "model_type": "dinov2", "hidden_size": H,
              "num_attention_heads": 1, "num_hidden_layers": 1, "mlp_ratio": 2, "patch_size": P,
              "image_size": 16, "layer_norm_eps": 1e-6, "hidden_act": "gelu", "qkv_bias": True,
              "use_swiglu_ffn": False, "layerscale_value": 1.0, "num_channels": 3}

    def t(name, shape):
        n = 1
        for s in shape:
            n *= s
        return (name, shape, [((i * 7919) % 13 - 6) / 10.0 for i in range(n)])
    L = "encoder.layer.0."
    tensors = [t("embeddings.cls_token", [1, 1, H]), t("embeddings.mask_token", [1, H]),
               t("embeddings.patch_embeddings.projection.bias", [H]),
               t("embeddings.patch_embeddings.projection.weight", [H, 3, P, P]),
               t("embeddings.position_embeddings", [1, N, H])]
    for part in ("key", "query", "value"):
        tensors += [t(L + "attention.attention.%s.bias" % part, [H]),
                    t(L + "attention.attention.%s.weight" % part, [H, H])]
    tensors += [t(L + "attention.output.dense.bias", [H]), t(L + "attention.output.dense.weight", [H, H]),
                t(L + "layer_scale1.lambda1", [H]), t(L + "layer_scale2.lambda1", [H]),
                t(L + "mlp.fc1.bias", [M]), t(L + "mlp.fc1.weight", [M, H]),
                t(L + "mlp.fc2.bias", [H]), t(L + "mlp.fc2.weight", [H, M]),
                t(L + "norm1.bias", [H]), t(L + "norm1.weight", [H]),
                t(L + "norm2.bias", [H]), t(L + "norm2.weight", [H]),
                t("layernorm.bias", [H]), t("layernorm.weight", [H])]
    return json.dumps(config, indent=1).encode(), safetensors_bytes(tensors)


def http(method, path, body=b"", headers=(), length=True):
    head = ["%s %s HTTP/1.1" % (method, path), "Host: fuzz"] + list(headers)
    if length and body:
        head.append("Content-Length: %d" % len(body))
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def serve_seeds():
    with open(os.path.join(IMAGES, "png_1x1.png"), "rb") as f:
        png = f.read()
    with open(os.path.join(IMAGES, "rs_7x5_to_3x2.png"), "rb") as f:
        png2 = f.read()
    predict = "/v1/banks/tiny/predict"
    boundary = "XfuzzX"
    form = ("--%s\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n"
            "--%s\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
            "Content-Type: image/png\r\n\r\n" % (boundary, boundary)).encode() + png2 + \
        ("\r\n--%s--\r\n" % boundary).encode()
    chunked = b"".join(b"%x\r\n" % len(png[i:i + 32]) + png[i:i + 32] + b"\r\n"
                       for i in range(0, len(png), 32)) + b"0\r\n\r\n"
    return {
        "get_health": http("GET", "/healthz"),
        "get_metrics": http("GET", "/metrics"),
        "get_banks": http("GET", "/v1/banks"),
        "get_page": http("HEAD", "/"),
        "predict_png": http("POST", predict, png, ["Content-Type: image/png"]),
        "predict_heatmap": http("POST", predict + "?heatmap=png&threshold=0.5", png2,
                                ["Content-Type: image/png"]),
        "predict_multipart": http("POST", predict, form,
                                  ["Content-Type: multipart/form-data; boundary=" + boundary]),
        "predict_chunked": http("POST", predict, chunked,
                                ["Content-Type: application/octet-stream",
                                 "Transfer-Encoding: chunked"], length=False),
        "predict_not_image": http("POST", predict, b"GIF89a....", ["Content-Type: image/gif"]),
        "bad_method": http("DELETE", predict) + http("PUT", "/metrics", b"x"),
        "bad_bank": http("POST", "/v1/banks/../predict", png) + http("POST", "/v1/banks/nope/predict", png),
        "pipelined": http("GET", "/healthz") + http("POST", predict + "?threshold=x", png) +
        http("GET", "/nowhere"),
        "garbage": b"\x00\xffGET /\r\n\r\n\x16\x03\x01 not http",
    }


def main():
    patchead = "build/patchead"
    if len(sys.argv) == 3 and sys.argv[1] == "--patchead":
        patchead = sys.argv[2]
    copy_seeds("image", ["png_1x1.png", "rs_7x5_to_3x2.png", "bmp_pal4.bmp", "bmp_1bit_pil.bmp",
                         "jpg_rgb_q20.jpg", "jpg_gray.jpg"])
    copy_seeds("npy", ["npy_f4_scalar.npy", "npy_f4_empty.npy", "npy_bad_5d.npy"])
    with open(os.path.join(CORPUS, "npy", "f4_2x3.npy"), "wb") as f:
        f.write(npy_bytes((2, 3), [1, 2, 3, 4, 5, 6]))

    config, weights = tiny_dinov2()
    os.makedirs(os.path.join(CORPUS, "model"), exist_ok=True)
    with open(os.path.join(CORPUS, "model", "dinov2_tiny"), "wb") as f:
        f.write(struct.pack("<H", len(config)) + config + weights)

    os.makedirs(os.path.join(CORPUS, "serve"), exist_ok=True)
    for name, data in serve_seeds().items():
        with open(os.path.join(CORPUS, "serve", name), "wb") as f:
            f.write(data)

    os.makedirs(os.path.join(CORPUS, "bank"), exist_ok=True)
    exe = os.path.join(ROOT, patchead)
    if not os.access(exe, os.X_OK):
        print("make_fuzz_seeds: %s missing, bank seed not regenerated" % patchead)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        mdir = os.path.join(tmp, "tiny")
        os.mkdir(mdir)
        with open(os.path.join(mdir, "config.json"), "wb") as f:
            f.write(config)
        with open(os.path.join(mdir, "model.safetensors"), "wb") as f:
            f.write(weights)
        refs = [os.path.join(IMAGES, n) for n in ("rs_7x5_to_3x2.png", "png_1x1.png")]
        for name, extra in (("tiny.pead", []), ("tiny_align.pead", ["--align"])):
            out = os.path.join(CORPUS, "bank", name)
            subprocess.run([exe, "fit", "--quiet", "--model", mdir, "--size", "32", "-o", out] + extra + refs,
                           check=True)
            # the model path recorded is a temporary folder: keep it but it is never opened
    return 0


if __name__ == "__main__":
    sys.exit(main())
