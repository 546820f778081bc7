#!/usr/bin/env python3
"""Reference models for the newer ViT families (DINOv3, EVA-02, Perception Encoder
spatial, MAE, BEiT v2, SigLIP, SigLIP 2 NaFlex), shared by tools/parity_vit.py
(full size) and tools/make_vit_fixtures.py (tiny fixtures).

make(family, shape, seed) -> Ref with
    ref.save(dir)   write the hub layout patchead loads (model.safetensors + config.json)
    ref.run(x)      x: (1, 3, H, W) normalised input -> dict of numpy arrays:
                    patch (G, D)  the family's patch features (rule in docs/BACKBONES.md)
                    layer1 (G, D) block 1 output + the same final norm
                    attn (G,)     CLS -> patch attention of the last block, mean over heads
                                  (SigLIP: the pooling head's probe attention)
Weights are random but not trivial (make_vit_fixtures.randomise). `shape` is
(width, layers, heads, mlp) or None for the full-size model.
"""
import json
import os

import numpy as np
import torch
from safetensors.torch import save_file

from make_vit_fixtures import randomise

FULL = {  # family: (constructor args) at full size, native input size
    "dinov3-vits16": dict(kind="dinov3", width=384, layers=12, heads=6, mlp=1536, native=224),
    "dinov3-vitb16": dict(kind="dinov3", width=768, layers=12, heads=12, mlp=3072, native=224),
    "dinov3-vitl16": dict(kind="dinov3", width=1024, layers=24, heads=16, mlp=4096, native=224),
    "eva02_base_patch14_224": dict(kind="timm", native=224),
    "vit_pe_spatial_small_patch16_512": dict(kind="timm", native=512),
    "vit_pe_spatial_base_patch16_512": dict(kind="timm", native=512),
    "vit_small_patch16_dinov3": dict(kind="timm", native=256),
    "vit_base_patch16_dinov3": dict(kind="timm", native=256),
    "vit-mae-base": dict(kind="mae", width=768, layers=12, heads=12, mlp=3072, native=224),
    "beitv2-base-patch16": dict(kind="beit", width=768, layers=12, heads=12, mlp=3072, native=224),
    "siglip-base-patch16-224": dict(kind="siglip", width=768, layers=12, heads=12, mlp=3072, patch=16,
                                    native=224),
    # 384 px is 27 patches of 14 plus 6 px the stride-14 conv drops: native grid 27 x 27 = 378 px
    "siglip-so400m-patch14-384": dict(kind="siglip", width=1152, layers=27, heads=16, mlp=4304,
                                      patch=14, native=378),
    "siglip2-base-patch16-naflex": dict(kind="siglip2", width=768, layers=12, heads=12, mlp=3072,
                                        patch=16, native=256),
    "siglip2-so400m-patch16-naflex": dict(kind="siglip2", width=1152, layers=27, heads=16, mlp=4304,
                                          patch=16, native=256),
}


def np32(t):
    return np.ascontiguousarray(t.detach().float().numpy(), dtype=np.float32)


class HFRef:
    """transformers model: save_pretrained layout, eager attention, output_attentions."""

    def __init__(self, model, prefix_tokens, final_norm, call):
        self.model, self.prefix, self.final_norm, self.call = model, prefix_tokens, final_norm, call

    def save(self, d):
        os.makedirs(d, exist_ok=True)
        self.model.save_pretrained(d)
        for f in os.listdir(d):
            if f not in ("model.safetensors", "config.json"):
                os.remove(os.path.join(d, f))

    def run(self, x):
        with torch.no_grad():
            o = self.call(self.model, x)
            P = self.prefix
            patch = o.last_hidden_state[0, P:]
            layer1 = self.final_norm(o.hidden_states[1])[0, P:]
            if P:
                attn = o.attentions[-1][0, :, 0, P:].mean(0)
            else:  # SigLIP: the attention-pooling head's probe attention over the tokens
                head = self.model.head
                lh = o.last_hidden_state
                _, w = head.attention(head.probe, lh, lh, need_weights=True, average_attn_weights=True)
                attn = w[0, 0]
        return dict(patch=np32(patch), layer1=np32(layer1), attn=np32(attn))


def hf_dinov3(width, layers, heads, mlp, registers=4, patch=16, **extra):
    from transformers import DINOv3ViTConfig, DINOv3ViTModel
    cfg = DINOv3ViTConfig(hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                          intermediate_size=mlp, patch_size=patch, num_register_tokens=registers,
                          image_size=224, **extra)
    m = DINOv3ViTModel(cfg)
    m.set_attn_implementation("eager")
    return HFRef(m, 1 + registers, m.norm,
                 lambda m, x: m(pixel_values=x, output_hidden_states=True, output_attentions=True))


def hf_mae(width, layers, heads, mlp, patch=16, image=224):
    from transformers import ViTMAEConfig, ViTMAEModel
    cfg = ViTMAEConfig(hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                       intermediate_size=mlp, patch_size=patch, image_size=image, mask_ratio=0.0)
    m = ViTMAEModel(cfg)
    m.set_attn_implementation("eager")

    def call(m, x):
        G = (x.shape[2] // patch) * (x.shape[3] // patch)
        noise = torch.arange(G, dtype=torch.float32)[None]  # identity "shuffle": patches in order
        return m(pixel_values=x, noise=noise, interpolate_pos_encoding=True, output_hidden_states=True,
                 output_attentions=True)
    return HFRef(m, 1, m.layernorm, call)


def hf_beit(width, layers, heads, mlp, patch=16, image=224, **extra):
    from transformers import BeitConfig, BeitModel
    # BEiT v2 base: per-block relative position bias, no absolute table, LayerScale 0.1,
    # mean pooling (so no final layernorm on the tokens)
    args = dict(use_relative_position_bias=True, use_absolute_position_embeddings=False,
                use_shared_relative_position_bias=False, layer_scale_init_value=0.1,
                use_mean_pooling=True)
    args.update(extra)
    cfg = BeitConfig(hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=mlp, patch_size=patch, image_size=image, **args)
    m = BeitModel(cfg, add_pooling_layer=True)
    m.set_attn_implementation("eager")
    return HFRef(m, 1, m.layernorm,
                 lambda m, x: m(pixel_values=x, output_hidden_states=True, output_attentions=True))


def hf_siglip(width, layers, heads, mlp, patch, image):
    from transformers import SiglipVisionConfig, SiglipVisionModel
    cfg = SiglipVisionConfig(hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                             intermediate_size=mlp, patch_size=patch, image_size=image)
    m = SiglipVisionModel(cfg)
    m.set_attn_implementation("eager")
    return HFRef(m, 0, m.post_layernorm,
                 lambda m, x: m(pixel_values=x, output_hidden_states=True, output_attentions=True,
                                interpolate_pos_encoding=True))


def hf_siglip2(width, layers, heads, mlp, patch, num_patches):
    from transformers import Siglip2VisionConfig, Siglip2VisionModel
    cfg = Siglip2VisionConfig(hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                              intermediate_size=mlp, patch_size=patch, num_patches=num_patches)
    m = Siglip2VisionModel(cfg)
    m.set_attn_implementation("eager")

    def call(m, x):  # NaFlex input: patchified (1, G, p*p*3) in (ky, kx, c) order + its grid
        _, C, H, W = x.shape
        gh, gw = H // patch, W // patch
        pv = x[0].reshape(C, gh, patch, gw, patch).permute(1, 3, 2, 4, 0).reshape(1, gh * gw, -1)
        mask = torch.ones(1, gh * gw, dtype=torch.int64)
        return m(pixel_values=pv, pixel_attention_mask=mask, spatial_shapes=torch.tensor([[gh, gw]]),
                 output_hidden_states=True, output_attentions=True)
    return HFRef(m, 0, m.post_layernorm, call)


class TimmRef:
    """timm Eva (EVA-02, PE): state_dict + config.json as the timm hub layout; any input
    size through dynamic_img_size=True (pos_embed resampled, RoPE rebuilt per grid)."""

    def __init__(self, arch, **kw):
        import timm
        self.arch, self.kw = arch, kw
        self.model = timm.create_model(arch, pretrained=False, num_classes=0, dynamic_img_size=True, **kw)
        self.model.eval()
        last = self.model.blocks[-1].attn
        last.fused_attn = False  # so the softmaxed attention passes through attn_drop
        self.got = {}
        last.attn_drop.register_forward_hook(lambda mod, i, o: self.got.__setitem__("attn", o))
        self.model.blocks[0].register_forward_hook(lambda mod, i, o: self.got.__setitem__("l1", o))

    def save(self, d):
        os.makedirs(d, exist_ok=True)
        sd = {k: v.contiguous() for k, v in self.model.state_dict().items()}
        save_file(sd, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
        pc = self.model.pretrained_cfg
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump({"architecture": self.arch, "num_classes": 0, "num_features": self.model.num_features,
                       "pretrained_cfg": {"mean": list(pc["mean"]), "std": list(pc["std"])},
                       **({"model_args": self.kw} if self.kw else {})}, f, indent=1)

    def run(self, x):
        P = self.model.num_prefix_tokens
        with torch.no_grad():
            out = self.model.forward_features(x)
            layer1 = self.model.norm(self.got["l1"])
            attn = self.got["attn"][0, :, 0, P:].mean(0)
        return dict(patch=np32(out[0, P:]), layer1=np32(layer1[0, P:]), attn=np32(attn))


def patch_size(ref):
    m = ref.model
    if hasattr(m, "patch_embed"):
        return int(m.patch_embed.patch_size[0])
    return int(m.config.patch_size)


def make(family, shape=None, seed=0, extra=None):
    """Reference for `family` (a FULL key); `shape` = (width, layers, heads, mlp) for a tiny one;
    `extra`: more config keys (transformers config or timm model args)."""
    extra = extra or {}
    f = dict(FULL[family])
    if shape:
        f.update(width=shape[0], layers=shape[1], heads=shape[2], mlp=shape[3])
    kind = f["kind"]
    if kind == "dinov3":
        ref = hf_dinov3(f["width"], f["layers"], f["heads"], f["mlp"], **extra)
    elif kind == "mae":
        ref = hf_mae(f["width"], f["layers"], f["heads"], f["mlp"])
    elif kind == "beit":
        ref = hf_beit(f["width"], f["layers"], f["heads"], f["mlp"], **extra)
    elif kind == "siglip":
        ref = hf_siglip(f["width"], f["layers"], f["heads"], f["mlp"], f["patch"], f["native"])
    elif kind == "siglip2":
        ref = hf_siglip2(f["width"], f["layers"], f["heads"], f["mlp"], f["patch"],
                         (f["native"] // f["patch"]) ** 2)
    else:
        kw = {}
        if shape:
            kw = dict(embed_dim=shape[0], depth=shape[1], num_heads=shape[2], **extra)
        ref = TimmRef(family, **kw)
    randomise(ref.model, seed=seed)
    ref.model.eval()
    return ref
