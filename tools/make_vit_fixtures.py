#!/usr/bin/env python3
"""Tiny random ViTs of every supported family + PyTorch reference outputs.

Writes tests/fixtures/vit/<case>/ with the hub layout patchead loads
(model.safetensors + config.json, or open_clip_model.safetensors +
open_clip_config.json) and the references for one fixed normalised input:
  input.npy   (3, H, W) float32, at a NON-native size so position embeddings are resized
  patch.npy   (G, D) last block + final norm (family rule, see src/nn/vit.c)
  layer1.npy  (G, D) block 1 output + final norm
  attn.npy    (G,)   last block CLS->patch attention, mean over heads
plus tests/fixtures/vit/ops/*.npy for the ops checked on their own (bicubic resize
with and without antialias, GELU, QuickGELU, LayerNorm, softmax).

Weights are random but not trivial (LayerNorm gains/biases, LayerScale, embeddings
all randomised) so a wrong key, transpose or norm shows up. Usage:
  python3 tools/make_vit_fixtures.py [--out tests/fixtures/vit]
"""
import argparse
import json
import os
import shutil

import numpy as np
import torch
import torch.nn.functional as F

W, LAYERS, HEADS, MLP = 64, 2, 4, 128


def randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                fan_in = int(np.prod(p.shape[1:]))
                std = 0.5 if ("embed" in name or "token" in name) else 1.0 / np.sqrt(fan_in)
                p.copy_(torch.randn(p.shape, generator=g) * std)
            elif name.endswith("lambda1") or ".ls_" in name or "gamma" in name:
                p.copy_(0.5 + 0.3 * torch.randn(p.shape, generator=g))
            elif "norm" in name.lower() or ".ln" in name or "ln_" in name:
                if name.endswith("weight"):
                    p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(0.2 * torch.randn(p.shape, generator=g))
            else:  # biases, class embedding, logit scale
                p.copy_(0.3 * torch.randn(p.shape, generator=g))


def save_np(path, a):
    np.save(path, np.ascontiguousarray(np.asarray(a, dtype=np.float32)))


def round_weights(model, dtype):
    """Round every parameter through `dtype` (what a F16/BF16 checkpoint holds)."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(dtype).to(torch.float32))


def hf_case(out, kind, dtype=None):
    from transformers import (CLIPConfig, CLIPModel, Dinov2Config, Dinov2Model,
                              Dinov2WithRegistersConfig, Dinov2WithRegistersModel)
    if kind in ("dinov2", "dinov2_reg"):
        common = dict(hidden_size=W, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                      mlp_ratio=MLP // W, patch_size=14, image_size=56, layerscale_value=1.0)
        if kind == "dinov2":
            model = Dinov2Model(Dinov2Config(**common))
        else:
            model = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(num_register_tokens=4, **common))
        H, Wd, R, p = 70, 84, (4 if kind == "dinov2_reg" else 0), 14
    else:
        cfg = CLIPConfig(
            vision_config=dict(hidden_size=W, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                               intermediate_size=MLP, patch_size=16, image_size=64),
            text_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=64, vocab_size=64, max_position_embeddings=8,
                             bos_token_id=0, eos_token_id=1, pad_token_id=1),
            projection_dim=32)
        model = CLIPModel(cfg)
        H, Wd, R, p = 80, 96, 0, 16
    model.set_attn_implementation("eager")
    model.eval()
    randomise(model, seed={"dinov2": 1, "dinov2_reg": 2, "clip": 3}[kind])
    if dtype is not None:
        round_weights(model, dtype)
    os.makedirs(out, exist_ok=True)
    save_model = model if dtype is None else model.to(dtype)
    save_model.save_pretrained(out)
    model = model.to(torch.float32)
    for f in os.listdir(out):
        if f not in ("model.safetensors", "config.json"):
            os.remove(os.path.join(out, f))

    x = torch.randn(1, 3, H, Wd, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        if kind == "clip":
            o = model.vision_model(pixel_values=x, output_hidden_states=True, output_attentions=True,
                                   interpolate_pos_encoding=True)
            patch = o.last_hidden_state[0, 1:]          # no post_layernorm (transformers' rule)
            layer1 = o.hidden_states[1][0, 1:]
        else:
            o = model(pixel_values=x, output_hidden_states=True, output_attentions=True)
            patch = o.last_hidden_state[0, 1 + R:]      # layernorm applied
            layer1 = model.layernorm(o.hidden_states[1])[0, 1 + R:]
        attn = o.attentions[-1][0, :, 0, 1 + R:].mean(0)
    if dtype is None:  # the F16/BF16 variants share their base family's input.npy
        save_np(os.path.join(out, "input.npy"), x[0])
    save_np(os.path.join(out, "patch.npy"), patch)
    save_np(os.path.join(out, "layer1.npy"), layer1)
    save_np(os.path.join(out, "attn.npy"), attn)
    tower = model.vision_model if kind == "clip" else model
    write_meta(out, kind, sum(p.numel() for p in tower.parameters()), R)
    print(out, tuple(patch.shape), "max|ref|=%.3g" % patch.abs().max())


def openclip_case(out):
    import open_clip
    from open_clip.model import CLIP, resize_pos_embed
    from safetensors.torch import save_file
    vision = dict(image_size=64, layers=LAYERS, width=W, head_width=W // HEADS, mlp_ratio=MLP / W,
                  patch_size=16)
    text = dict(context_length=8, vocab_size=64, width=32, heads=2, layers=1)
    model = CLIP(embed_dim=32, vision_cfg=vision, text_cfg=text)
    randomise(model, seed=4)
    model.eval()
    os.makedirs(out, exist_ok=True)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(out, "open_clip_model.safetensors"))
    with open(os.path.join(out, "open_clip_config.json"), "w") as f:
        json.dump({"model_cfg": {"embed_dim": 32, "vision_cfg": vision, "text_cfg": text},
                   "preprocess_cfg": {"mean": list(open_clip.OPENAI_DATASET_MEAN),
                                      "std": list(open_clip.OPENAI_DATASET_STD)}}, f, indent=1)

    # Reference at another size: what open_clip does for force_image_size -> resize_pos_embed.
    H, Wd = 80, 96
    big = CLIP(embed_dim=32, vision_cfg=dict(vision, image_size=(H, Wd)), text_cfg=text)
    sd2 = dict(sd)
    resize_pos_embed(sd2, big)
    big.load_state_dict(sd2)
    big.eval()
    vis = big.visual
    vis.output_tokens = True
    captured = {}
    blocks = vis.transformer.resblocks
    blocks[0].register_forward_hook(lambda m, i, o: captured.__setitem__("l1", o))
    blocks[-1].ln_1.register_forward_hook(lambda m, i, o: captured.__setitem__("ln1", o))
    x = torch.randn(1, 3, H, Wd, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        _, tokens = vis(x)
        l1 = captured["l1"]
        l1 = l1 if l1.shape[0] == 1 else l1.transpose(0, 1)
        layer1 = vis.ln_post(l1)[0, 1:]
        h = captured["ln1"]
        h = h if h.shape[0] == 1 else h.transpose(0, 1)   # (1, T, D)
        attn_mod = blocks[-1].attn
        q = h if attn_mod.batch_first else h.transpose(0, 1)
        _, w = attn_mod(q, q, q, need_weights=True, average_attn_weights=True)
        attn = w[0, 0, 1:]
    save_np(os.path.join(out, "input.npy"), x[0])
    save_np(os.path.join(out, "patch.npy"), tokens[0])
    save_np(os.path.join(out, "layer1.npy"), layer1)
    save_np(os.path.join(out, "attn.npy"), attn)
    write_meta(out, "openclip", sum(p.numel() for p in model.visual.parameters()), 0)
    print(out, tuple(tokens[0].shape), "max|ref|=%.3g" % tokens.abs().max())


def write_meta(out, family, num_params, registers):
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump({"family": family, "num_params": int(num_params), "registers": registers}, f)


def safetensors_case(out):
    """A file written by the reference safetensors writer: each low-precision tensor
    has an F32 twin holding the values PyTorch converts it to."""
    from safetensors.torch import save_file
    os.makedirs(out, exist_ok=True)
    g = torch.Generator().manual_seed(5)
    v = torch.cat([torch.randn(60, generator=g) * 100,
                   torch.tensor([0.0, -0.0, 1e-7, -3e-6, 6e-8, 65504.0, 1e5, -1e5,
                                 float("inf"), float("-inf"), 1e-40, 3.0e38])])
    half, bf = v.to(torch.float16), v.to(torch.bfloat16)
    save_file({"f16": half.reshape(8, 9), "f16_as_f32": half.float().reshape(8, 9),
               "bf16": bf.reshape(2, 4, 9), "bf16_as_f32": bf.float().reshape(2, 4, 9),
               "f32": v.reshape(72), "i64": torch.arange(5, dtype=torch.int64)},
              os.path.join(out, "mixed.safetensors"), metadata={"format": "pt"})
    print(out, "safetensors")


def ops_case(out):
    os.makedirs(out, exist_ok=True)
    g = torch.Generator().manual_seed(11)
    grid = torch.randn(1, 5, 4, 6, generator=g)  # (1, C=5, H=4, W=6)
    save_np(os.path.join(out, "grid.npy"), grid[0].permute(1, 2, 0))  # channels-last (H, W, C)
    for (oh, ow) in [(7, 9), (3, 2), (4, 6), (10, 3)]:
        for aa in (0, 1):
            r = F.interpolate(grid, size=(oh, ow), mode="bicubic", align_corners=False,
                              antialias=bool(aa))
            save_np(os.path.join(out, "resize_%dx%d_aa%d.npy" % (oh, ow, aa)), r[0].permute(1, 2, 0))
    x = torch.randn(6, 37, generator=g) * 4
    x[0, :5] = torch.tensor([-30.0, -9.0, 0.0, 9.0, 30.0])
    save_np(os.path.join(out, "x.npy"), x)
    save_np(os.path.join(out, "gelu.npy"), F.gelu(x))
    save_np(os.path.join(out, "quick_gelu.npy"), x * torch.sigmoid(1.702 * x))
    save_np(os.path.join(out, "softmax.npy"), torch.softmax(x, dim=-1))
    gamma = 1 + 0.3 * torch.randn(37, generator=g)
    beta = 0.2 * torch.randn(37, generator=g)
    save_np(os.path.join(out, "ln_gamma.npy"), gamma)
    save_np(os.path.join(out, "ln_beta.npy"), beta)
    save_np(os.path.join(out, "layernorm.npy"), F.layer_norm(x + 100.0, (37,), gamma, beta, eps=1e-6))
    save_np(os.path.join(out, "x_ln.npy"), x + 100.0)  # offset mean: tests a stable variance
    print(out, "ops")


# Newer families (tools/vit_refs.py), tiny: width 32, 2 blocks, 2 heads (head dim 16),
# MLP 64, at a rectangular non-native input so every position rule is exercised.
NEW_FIXTURES = [  # (folder, vit_refs family, (H, W), extra config)
    ("dinov3", "dinov3-vits16", (64, 96), {}),
    ("dinov3_glu", "dinov3-vits16", (64, 96), {"use_gated_mlp": True, "hidden_act": "silu"}),
    ("eva02", "eva02_base_patch14_224", (70, 84), {}),
    ("pe_spatial", "vit_pe_spatial_small_patch16_512", (64, 96), {"img_size": 128}),
    ("mae", "vit-mae-base", (64, 96), {}),
    ("beit", "beitv2-base-patch16", (64, 96), {}),
    ("siglip", "siglip-base-patch16-224", (64, 96), {}),
    ("siglip2", "siglip2-base-patch16-naflex", (64, 96), {}),
    ("dinov3_timm", "vit_small_patch16_dinov3", (64, 96), {}),
    ("beit_shared", "beitv2-base-patch16", (64, 96),
     {"use_relative_position_bias": False, "use_shared_relative_position_bias": True}),
]


def new_family_case(out, family, hw, extra, seed):
    import vit_refs
    from safetensors import safe_open
    ref = vit_refs.make(family, shape=(32, 2, 2, 64), seed=seed, extra=extra)
    if os.path.isdir(out):
        shutil.rmtree(out)
    ref.save(out)
    x = torch.randn(1, 3, hw[0], hw[1], generator=torch.Generator().manual_seed(7))
    r = ref.run(x)
    save_np(os.path.join(out, "input.npy"), x[0])
    for k in ("patch", "layer1", "attn"):
        save_np(os.path.join(out, k + ".npy"), r[k])
    with safe_open(os.path.join(out, "model.safetensors"), "pt") as f:  # every tensor of the tower
        n = sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump({"family": family, "num_params": n, "patch": vit_refs.patch_size(ref),
                   "size": list(hw)}, f)
    print(out, r["patch"].shape, "max|ref|=%.3g" % np.abs(r["patch"]).max())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/vit")
    a = ap.parse_args()
    torch.manual_seed(0)
    if os.path.isdir(a.out):
        shutil.rmtree(a.out)
    hf_case(os.path.join(a.out, "dinov2"), "dinov2")
    hf_case(os.path.join(a.out, "dinov2_reg"), "dinov2_reg")
    hf_case(os.path.join(a.out, "clip"), "clip")
    openclip_case(os.path.join(a.out, "openclip"))
    hf_case(os.path.join(a.out, "dinov2_f16"), "dinov2", dtype=torch.float16)
    hf_case(os.path.join(a.out, "clip_bf16"), "clip", dtype=torch.bfloat16)
    ops_case(os.path.join(a.out, "ops"))
    for i, (folder, family, hw, extra) in enumerate(NEW_FIXTURES):
        new_family_case(os.path.join(a.out, folder), family, hw, extra, seed=20 + i)
    safetensors_case(os.path.join(os.path.dirname(a.out.rstrip("/")), "safetensors"))


if __name__ == "__main__":
    main()
