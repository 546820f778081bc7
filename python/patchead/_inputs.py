"""Argument checks and input lists: what the CLI's option parsing and file walking do,
for Python callers (same rules, so the same inputs give the same results)."""
import os

import numpy as np

from ._errors import ArgumentError, IoError, ShapeError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")


def check_size(size):
    """Square input side: an integer in 32..4096 (the CLI's --size range)."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 32 <= size <= 4096:
        raise ArgumentError("size: expects an integer in 32..4096, got %r" % (size,))
    return int(size)


def check_sigma(sigma):
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not 0 <= sigma <= 1000:
        raise ArgumentError("sigma: expects a number in 0..1000, got %r" % (sigma,))
    return float(sigma)


def count_or_fraction(name, value):
    """The CLI's --k / --top values: 3 -> (count 3, -), 0.3 or "30%" -> (-, fraction 0.3).
    Returns (count, fraction) with the unused one 0."""
    if isinstance(value, str):
        text = value.strip()
        try:
            if text.endswith("%"):
                v = float(text[:-1])
                if not 1e-9 <= v <= 100:
                    raise ValueError
                return 0, v / 100
            if any(c in text for c in ".eE"):
                value = float(text)
            else:
                value = int(text)
        except ValueError:
            raise ArgumentError("%s: expects a count or a fraction, got %r" % (name, value)) from None
    if isinstance(value, bool):
        raise ArgumentError("%s: expects a count or a fraction, got %r" % (name, value))
    if isinstance(value, (int, np.integer)):
        if not 1 <= value <= 1 << 30:
            raise ArgumentError("%s: a count must be in 1..%d, got %d" % (name, 1 << 30, value))
        return int(value), 0.0
    if isinstance(value, (float, np.floating)) and 1e-9 <= value <= 1:
        return 0, float(value)
    raise ArgumentError("%s: expects a count (int >= 1) or a fraction in (0, 1], got %r" % (name, value))


def image_source(image):
    """What _core accepts for one image: a path str, bytes of an encoded file, or a
    checked (H, W, 3) uint8 C-contiguous ndarray."""
    if isinstance(image, str):
        return image
    if isinstance(image, os.PathLike):
        return os.fspath(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if not isinstance(image, np.ndarray):
        if not hasattr(image, "__array_interface__") and not hasattr(image, "__array__"):
            raise ArgumentError("image: expects a path, the bytes of an image file or an (H, W, 3) "
                                "uint8 array, got %s" % type(image).__name__)
        image = np.asarray(image)  # e.g. a PIL image
    if image.dtype != np.uint8:
        raise ArgumentError("image: expects dtype uint8 (8-bit RGB), got %s" % image.dtype)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ShapeError("image: expects an (H, W, 3) RGB array, got shape %s" % (image.shape,))
    if not image.flags.c_contiguous:
        raise ArgumentError("image: array is not C-contiguous; pass np.ascontiguousarray(image)")
    return image


def _walk(folder, out):
    """The CLI's folder walk: names sorted by bytes (strcmp), dot files skipped,
    sub-folders recursed, files with an image extension kept."""
    try:
        names = os.listdir(folder)
    except OSError as e:
        raise IoError("%s: cannot open folder (%s)" % (folder, e.strerror)) from None
    for name in sorted(names, key=os.fsencode):
        if name.startswith("."):
            continue
        full = folder + "/" + name
        if os.path.isdir(full):
            _walk(full, out)
        elif os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
            out.append(full)


def collect_images(images, what):
    """One image, a folder, or a sequence of them -> a flat list of sources (folders
    expanded, paths as str); as `patchead fit / predict / zeroshot` collect their inputs."""
    single = isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview, np.ndarray))
    items = [images] if single else list(images)
    out = []
    for item in items:
        if isinstance(item, (str, os.PathLike)):
            path = os.fspath(item)
            if not os.path.exists(path):
                raise IoError("%s: no such file or directory" % path)
            if os.path.isdir(path):
                _walk(path.rstrip("/") or "/", out)
            else:
                out.append(path)
        else:
            out.append(item)
    if not out:
        raise ArgumentError("%s: no images found" % what)
    return out


def sample_shots(sources, shots, seed):
    """`patchead fit --shots N --seed X`: the library's seeded order (pe_sample_refs) of the
    collected list; its first N entries (the same picks as the CLI for the same list)."""
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise ArgumentError("shots: expects a positive integer, got %r" % (shots,))
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ArgumentError("seed: expects an integer, got %r" % (seed,))
    n = len(sources)
    if shots > n:
        raise ArgumentError("shots: %d requested but only %d reference images" % (shots, n))
    from . import _core  # the library's sampler (pe_sample_refs), the CLI's rule
    perm = _core.sample_refs(seed & 0xFFFFFFFFFFFFFFFF, n)
    items = [sources[k] for k in perm]
    return items[:shots]
