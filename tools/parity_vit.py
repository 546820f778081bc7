#!/usr/bin/env python3
"""Full-size ViT parity: patchead vs PyTorch (transformers / open_clip) with random weights.

For each family a full-size model is randomly initialised (non-trivially: LayerNorm
gains/biases, LayerScale and embeddings randomised, see make_vit_fixtures.randomise),
saved in its hub layout, run by PyTorch and by `patchead features --input-npy` on the
same normalised (3, 448, 448) tensor -- a non-native size for all of them, so the
position embeddings are resized (DINOv2 518 -> 448 down, CLIP 224 -> 448 up,
OpenCLIP 240 -> 448 up). One line per family:
    family size max_abs_diff rel_diff PASS|FAIL      (rel_diff = max_abs_diff / max|ref|)
with the CLS attention's rel_diff under it. The newer families (tools/vit_refs.py: DINOv3,
EVA-02, PE, MAE, BEiT, SigLIP, SigLIP 2) get two rows each: their native size and one other.
Usage (or `make parity`):
    python3 tools/parity_vit.py --patchead build/patchead [--only dinov2-small,...] [--tol 1e-4]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_vit_fixtures import randomise  # noqa: E402
import vit_refs  # noqa: E402

SIZE = 448


def dinov2(name, width, layers, heads, registers):
    from transformers import (Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig,
                              Dinov2WithRegistersModel)
    common = dict(hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                  mlp_ratio=4, patch_size=14, image_size=518, layerscale_value=1.0)
    if registers:
        m = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(num_register_tokens=registers, **common))
    else:
        m = Dinov2Model(Dinov2Config(**common))
    m.set_attn_implementation("eager")
    return m


def run_hf(name, model, registers, out_dir, x):
    randomise(model, seed=sum(name.encode()))
    model.eval()
    model.save_pretrained(out_dir)
    with torch.no_grad():
        if hasattr(model, "vision_model"):
            o = model.vision_model(pixel_values=x, output_attentions=True, interpolate_pos_encoding=True)
            patch = o.last_hidden_state[0, 1:]
        else:
            o = model(pixel_values=x, output_attentions=True)
            patch = o.last_hidden_state[0, 1 + registers:]
        attn = o.attentions[-1][0, :, 0, 1 + registers:].mean(0)
    return patch.numpy(), attn.numpy()


def clip_b16():
    from transformers import CLIPConfig, CLIPModel
    cfg = CLIPConfig(vision_config=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                        intermediate_size=3072, patch_size=16, image_size=224),
                     text_config=dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=128, vocab_size=1000,
                                      max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                                      pad_token_id=1),
                     projection_dim=512)
    m = CLIPModel(cfg)
    m.set_attn_implementation("eager")
    return m


def run_openclip(out_dir, x):
    import open_clip
    from open_clip.model import resize_pos_embed
    from safetensors.torch import save_file
    name = "ViT-B-16-plus-240"
    cfg = open_clip.get_model_config(name)
    model = open_clip.create_model(name, pretrained=None)
    randomise(model, seed=240)
    model.eval()
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(out_dir, "open_clip_model.safetensors"))
    with open(os.path.join(out_dir, "open_clip_config.json"), "w") as f:
        json.dump({"model_cfg": cfg, "preprocess_cfg": {}}, f)
    # the reference at 448: force_image_size semantics (resize_pos_embed on load)
    big = open_clip.create_model(name, pretrained=None, force_image_size=SIZE)
    sd2 = dict(sd)
    resize_pos_embed(sd2, big)
    big.load_state_dict(sd2)
    big.eval()
    vis = big.visual
    vis.output_tokens = True
    got = {}
    blk = vis.transformer.resblocks[-1]
    blk.ln_1.register_forward_hook(lambda m, i, o: got.__setitem__("h", o))
    with torch.no_grad():
        _, tokens = vis(x)
        h = got["h"]
        q = h if blk.attn.batch_first else h.transpose(0, 1)
        _, w = blk.attn(q, q, q, need_weights=True, average_attn_weights=True)
        attn = w[0, 0, 1:]
    return tokens[0].numpy(), attn.numpy()


CASES = {
    "dinov2-small": lambda: (dinov2("s", 384, 12, 6, 0), 0),
    "dinov2-base": lambda: (dinov2("b", 768, 12, 12, 0), 0),
    "dinov2-with-registers-small": lambda: (dinov2("rs", 384, 12, 6, 4), 4),
    "dinov2-with-registers-base": lambda: (dinov2("rb", 768, 12, 12, 4), 4),
    "clip-vit-base-patch16": lambda: (clip_b16(), 0),
    "openclip-vit-b-16-plus-240": None,
}
# Newer families (tools/vit_refs.py): each at its native size and at one other size.
NEW_CASES = list(vit_refs.FULL)


def compare(name, size, ref, d, x, a):
    """Run patchead on x, print one row against ref; returns 1 if it failed."""
    np.save(os.path.join(d, "x.npy"), x[0].numpy())
    cmd = [a.patchead, "features", "--model", d, "--input-npy", os.path.join(d, "x.npy"),
           "-o", os.path.join(d, "f.npy"), "--attn", os.path.join(d, "a.npy")]
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print("%-28s %5d %13s %10s  FAIL (%s)" % (name, size, "-", "-", r.stderr.strip()))
        return 1
    got = np.load(os.path.join(d, "f.npy"))
    got_attn = np.load(os.path.join(d, "a.npy")).reshape(-1)
    diff = float(np.abs(got - ref["patch"]).max()) if got.shape == ref["patch"].shape else float("inf")
    rel = diff / float(np.abs(ref["patch"]).max())
    ra = ref["attn"]
    adiff = float(np.abs(got_attn - ra).max()) if got_attn.shape == ra.shape else float("inf")
    arel = adiff / float(np.abs(ra).max())
    ok = rel <= a.tol and arel <= a.tol
    print("%-28s %5d %13.3e %10.3e  %s" % (name, size, diff, rel, "PASS" if ok else "FAIL"))
    print("%-28s %5s %13.3e %10.3e  (attention for --mask)" % ("", "", adiff, arel))
    sys.stdout.flush()
    return 0 if ok else 1


def run_new(name, a):
    native = vit_refs.FULL[name]["native"]
    sizes = [native, 448 if native != 448 else 224]
    failed = 0
    ref = vit_refs.make(name, seed=sum(name.encode()))
    with tempfile.TemporaryDirectory() as d:
        ref.save(d)
        for size in sizes:
            x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(size))
            failed += compare(name, size, ref.run(x), d, x, a)
    return failed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--patchead", default="build/patchead")
    ap.add_argument("--only", default="",
                    help="comma-separated subset of: " + ", ".join(list(CASES) + NEW_CASES))
    ap.add_argument("--tol", type=float, default=1e-4, help="max rel_diff for PASS")
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(max(1, a.threads) if a.threads else torch.get_num_threads())
    names = [n for n in list(CASES) + NEW_CASES if not a.only or n in a.only.split(",")]
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    failed = 0
    print("%-28s %5s %13s %10s  %s" % ("family", "size", "max_abs_diff", "rel_diff", "result"))
    for name in names:
        if name in NEW_CASES:
            failed += run_new(name, a)
            continue
        with tempfile.TemporaryDirectory() as d:
            if name.startswith("openclip"):
                ref, ref_attn = run_openclip(d, x)
            else:
                model, registers = CASES[name]()
                ref, ref_attn = run_hf(name, model, registers, d, x)
                del model
            failed += compare(name, SIZE, {"patch": ref, "attn": ref_attn}, d, x, a)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
