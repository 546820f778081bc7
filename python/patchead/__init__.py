"""patchead: training-free visual anomaly detection (PatchEAD) over the patchead C library.

    import patchead
    model = patchead.Model("weights/mobilenet_v2")            # a backbone (ViT or CNN)
    bank = patchead.Bank.fit(model, "examples/tire/train/good")
    for r in bank.predict("examples/tire/test"):
        print(r.path, r.score, r.is_anomalous)                 # r.map: float32 (H, W)

Images may be a path (str / os.PathLike), the bytes of a PNG / JPEG / BMP file, or an
(H, W, 3) uint8 C-contiguous array. Folders are walked recursively in sorted order, as
the CLI does. Every call releases the GIL while the library computes. Errors raise a
patchead.Error subclass (IoError, FormatError, ShapeError, UnsupportedError,
NoMemoryError, ArgumentError, MismatchError, LimitError) with the library's message.
Results equal the CLI's (`patchead fit / predict / zeroshot / eval`) for the same inputs.
"""
import math
import os

import numpy as np

# As the CLI does for itself (cli/main.c): OpenMP threads that spin only briefly
# (GOMP_SPINCOUNT=10000) and then sleep between parallel regions. libgomp's default long
# spin took the cores from other processes (on a busy machine a predict call became ~100x
# slower); no spin at all costs a wake-up per region (ViT-S/14 at 448: 76 vs 71 ms). libgomp
# reads these when it is loaded, i.e. by the import of _core just below; a caller's own
# setting wins.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "passive"
    os.environ["GOMP_SPINCOUNT"] = "10000"

from . import _core  # noqa: E402  (after the OpenMP settings above)
from ._errors import (BY_STATUS, ArgumentError, Error, FormatError, IoError, LimitError,
                      MismatchError, NoMemoryError, ShapeError, UnsupportedError)
from ._inputs import (collect_images, count_or_fraction, image_source, sample_shots,
                      check_size, check_sigma)

_core._register_errors(BY_STATUS)

__version__ = _core.version
__all__ = ["Model", "Bank", "Result", "zeroshot", "evaluate", "load_image", "heatmap",
           "set_threads", "get_threads", "Error", "IoError", "FormatError", "ShapeError",
           "UnsupportedError", "NoMemoryError", "ArgumentError", "MismatchError", "LimitError",
           "__version__"]


def set_threads(n=None):
    """Worker threads of the library (OpenMP + BLAS), process-wide; None = all cores."""
    _core.set_threads(0 if n is None else int(n))


def get_threads():
    return _core.get_threads()


def load_image(image):
    """Decode an image (path, bytes or array) as the library does: (H, W, 3) uint8."""
    rgb, w, h = _core.load_image(image_source(image))
    return np.frombuffer(rgb, np.uint8).reshape(h, w, 3)


def heatmap(image, anomaly_map, vmin, vmax):
    """The CLI's heatmap PNG as an array: the map (H, W) in [vmin, vmax] through patchead's
    colour ramp over the image, with a colour bar on the right: (H, W + bar, 3) uint8."""
    amap = np.asarray(anomaly_map)
    if amap.dtype != np.float32:
        raise ArgumentError("map: expects dtype float32, got %s" % amap.dtype)
    if not amap.flags.c_contiguous:
        raise ArgumentError("map: array is not C-contiguous; pass np.ascontiguousarray(map)")
    src = image_source(image)
    rgb, w, h = _core.heatmap(src, amap, float(vmin), float(vmax))
    return np.frombuffer(rgb, np.uint8).reshape(h, w, 3)


class Model:
    """A frozen backbone: Model(path, size=448, threads=None).

    path: a .safetensors file or a hub-layout folder (see the repository README).
    size: the square input side used by features(), Bank.fit() and zeroshot() unless they
          are given another; None = the model's default.
    threads: worker threads (process-wide setting of the library); None = all cores.
    """

    def __init__(self, path, size=448, threads=None):
        if size is not None:
            check_size(size)
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or threads < 1):
            raise ArgumentError("threads: expects a positive integer or None, got %r" % (threads,))
        self.path = os.fspath(path)
        self._core = _core.Model(self.path, threads or 0)
        self.info = self._core.info()
        self.size = size if size is not None else self.info["default_size"]

    def __repr__(self):
        return "patchead.Model(%r, size=%d)  # %s, %s" % (self.path, self.size, self.info["name"],
                                                         self.info["weights_hash"])

    def _extract(self, image, size, layer, attn):
        size = self.size if size is None else check_size(size)
        return self._core.extract(image_source(image), size=size, layer=int(layer), attn=attn)

    def features(self, image, size=None, layer=0):
        """Patch features of one image: (grid_h, grid_w, D) float32.
        layer: ViT block (1-based) whose output is used; 0 = the last."""
        data, gh, gw, dim, _ = self._extract(image, size, layer, False)
        return np.frombuffer(data, np.float32).reshape(gh, gw, dim)

    def attention(self, image, size=None, layer=0):
        """CLS -> patch attention of the last block, mean over heads: (grid_h, grid_w)
        float32 (ViT backbones only; UnsupportedError for CNNs)."""
        if not self.info["has_attention"]:
            raise UnsupportedError("%s: %s has no CLS attention (a ViT backbone is needed)"
                                   % (self.path, self.info["name"]))
        _, gh, gw, _, attn = self._extract(image, size, layer, True)
        return np.frombuffer(attn, np.float32).reshape(gh, gw)


class Result:
    """The result for one image: .score (Eq. 4), .is_anomalous (None without a threshold),
    .patch_scores (grid_h, grid_w) float32, .map (H, W) float32 at the image's size
    (bilinear + Gaussian sigma, computed on first use), .heatmap()."""

    __slots__ = ("path", "score", "is_anomalous", "patch_scores", "width", "height", "aligned",
                 "align_failed", "sigma", "_source", "_map")

    def __init__(self, raw, source, sigma, threshold):
        score, gh, gw, patches, aligned, align_failed, width, height = raw
        self.score = score
        self.patch_scores = np.frombuffer(patches, np.float32).reshape(gh, gw)
        self.aligned, self.align_failed = aligned, align_failed
        self.width, self.height = width, height
        self.sigma = sigma
        self._source = source
        self.path = source if isinstance(source, str) else None
        self.is_anomalous = None if threshold is None or math.isnan(threshold) else score > threshold
        self._map = None

    def __repr__(self):
        return "patchead.Result(path=%r, score=%.7g, is_anomalous=%s)" % (self.path, self.score,
                                                                          self.is_anomalous)

    @property
    def map(self):
        """Anomaly map at the image's size: (height, width) float32."""
        if self._map is None:
            gh, gw = self.patch_scores.shape
            buf = _core.result_map(self.patch_scores, gh, gw, self.width, self.height, self.sigma)
            self._map = np.frombuffer(buf, np.float32).reshape(self.height, self.width)
        return self._map

    def heatmap(self, vmin=None, vmax=None, image=None):
        """The map over the image as (H, W + bar, 3) uint8 RGB, with a colour bar on the
        right; what the CLI writes to heatmaps/<stem>.png. vmin / vmax default to this
        result's patch-score range (the CLI uses the range of the whole run: pass
        min / max over all results to get its picture). image: the pixels to draw on
        (default: the image this result was computed from)."""
        lo = float(self.patch_scores.min()) if vmin is None else vmin
        hi = float(self.patch_scores.max()) if vmax is None else vmax
        return heatmap(self._source if image is None else image, self.map, lo, hi)


def _detect_params(zeroshot, model, preset, order, k, top, size, layer, align, mask, sigma):
    """The dict _core reads into pe_detect_params (preset first, then the overrides)."""
    p = {"zeroshot": int(zeroshot), "preset": preset, "align": int(bool(align)),
         "mask": int(bool(mask)), "size": check_size(size) if size is not None else model.size,
         "layer": int(layer)}
    if not isinstance(preset, str):
        raise ArgumentError("preset: expects a name (patchead, anomalydino, musc), got %r" % (preset,))
    if order is not None:
        if order not in ("lowest", "highest"):
            raise ArgumentError("order: expects 'lowest' or 'highest', got %r" % (order,))
        p["order"] = order
    if k is not None:
        p["k_count"], p["k_fraction"] = count_or_fraction("k", k)
    if top is not None:
        p["top_count"], p["top_fraction"] = count_or_fraction("top", top)
    if sigma is not None:
        p["sigma"] = check_sigma(sigma)
    return p


def _as_model(model):
    if not isinstance(model, Model):
        raise ArgumentError("model: expects a patchead.Model, got %s" % type(model).__name__)
    return model


class Bank:
    """A few-shot reference bank (the .pead file of `patchead fit`).

    Bank.fit(model, refs, ...) builds one; Bank.load(path) reads one; bank.save(path)
    writes it (atomically); bank.threshold is the label-free threshold found at fit time
    (leave-one-out over the references; NaN with a single reference), settable;
    bank.predict(images) scores images."""

    def __init__(self, core, model=None):
        self._core = core
        self._model = model

    @classmethod
    def fit(cls, model, refs, shots=None, seed=0, preset="patchead", align=False, mask=False,
            size=None, layer=0, k=None, top=None, order=None, sigma=None):
        """Fit on normal reference images (paths, folders, bytes or arrays; folders are
        walked recursively in sorted order). shots: use N references drawn from refs with
        `seed` (the sampler of `patchead fit --shots N --seed X`). The other keywords are
        the CLI's options (--preset, --align, --mask, --size, --layer, --k, --top,
        --order, --sigma)."""
        model = _as_model(model)
        params = _detect_params(False, model, preset, order, k, top, size, layer, align, mask,
                                sigma)
        sources = collect_images(refs, "refs")
        if shots is not None:
            sources = sample_shots(sources, shots, seed)
        names = [s if isinstance(s, str) else None for s in sources]
        core = _core.bank_fit(model._core, [image_source(s) for s in sources], names, params)
        core.model_path = model.path
        return cls(core, model)

    @classmethod
    def load(cls, path, model=None):
        """Read a .pead file. model: the backbone to use (checked: same weights); None =
        load the model path recorded in the bank on first predict()."""
        if model is not None:
            model = _as_model(model)
        core = _core.bank_load(os.fspath(path), model._core if model else None)
        return cls(core, model)

    def save(self, path):
        self._core.save(os.fspath(path))

    @property
    def threshold(self):
        return self._core.threshold

    @threshold.setter
    def threshold(self, value):
        self._core.threshold = float(value)

    @property
    def num_refs(self):
        return self._core.num_refs

    @property
    def model_path(self):
        return self._core.model_path

    @property
    def params(self):
        """The detection parameters recorded in the bank (dict)."""
        return self._core.params()

    @property
    def model(self):
        """The backbone used by predict() (loaded from model_path when none was given)."""
        if self._model is None:
            if not self.model_path:
                raise ArgumentError("bank: records no model path; pass model= to Bank.load")
            model = Model(self.model_path, size=None)
            self._core.check_model(model._core)
            self._model = model
        return self._model

    def predict(self, images, model=None, threshold=None):
        """Score images (one image, a folder, or a list of them) -> list of Result.
        threshold: is_anomalous = score > threshold (default: the bank's)."""
        if model is not None:
            model = _as_model(model)
            self._core.check_model(model._core)
        else:
            model = self.model
        th = self.threshold if threshold is None else float(threshold)
        sigma = self.params["sigma"]
        out = []
        for s in collect_images(images, "images"):
            raw = self._core.predict(model._core, image_source(s))
            out.append(Result(raw, s, sigma, th))
        return out


def zeroshot(model, images, preset="patchead", align=False, mask=False, size=None, layer=0,
             k=None, top=None, order=None, sigma=None, threshold=None):
    """Batch zero-shot (`patchead zeroshot`): each image is scored against all the others
    (at least 2 images) -> list of Result, in input order."""
    model = _as_model(model)
    params = _detect_params(True, model, preset, order, k, top, size, layer, align, mask, sigma)
    sources = collect_images(images, "images")
    raws = _core.zeroshot(model._core, [image_source(s) for s in sources], params)
    sig = params.get("sigma", 4.0)
    th = None if threshold is None else float(threshold)
    return [Result(raw, s, sig, th) for raw, s in zip(raws, sources)]


def evaluate(model, data_root, shots=None, seeds=3, zeroshot=False, **options):
    """Run `patchead eval` from Python; returns a dict mirroring results.json (see
    patchead._evaluate for the options)."""
    from ._evaluate import evaluate as _evaluate
    return _evaluate(model, data_root, shots=shots, seeds=seeds, zeroshot=zeroshot, **options)
