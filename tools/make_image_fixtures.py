#!/usr/bin/env python3
"""make_image_fixtures.py — writes tests/fixtures/images/: small images in every PNG, JPEG
and BMP flavour patchead decodes, PIL's decoding of each (Image.open(f).convert('RGB')),
PIL bicubic resize references, .npy files written by numpy, and corrupt / hostile files.

    python3 tools/make_image_fixtures.py [--out tests/fixtures/images] [--shared /work/shared]

Outputs (all deterministic for a given Pillow/numpy):
  decode.txt   one line per file: "<file> <width> <height> <status> <max_diff>"; status is
               pe_status_name() of the expected result; for "ok" files <file>.rgb holds PIL's
               RGB bytes (height x width x 3). max_diff is the allowed per-channel difference.
  resize.txt   "<source.png> <out_w> <out_h> <expected.png>": PIL's
               Image.open(source).convert('RGB').resize((out_w, out_h), Image.BICUBIC).
  real.txt     "<path under shared/data> <w> <h> <fnv1a64 of PIL RGB> <S> <fnv1a64 of PIL resize SxS>"
               for a few real dataset images (tests skip them when the data is absent).
  npy_*.npy    arrays saved by numpy; npy.txt lists "<file> <dtype> <shape> <sum>" for them.

PNG flavours PIL cannot write (2/4-bit gray, 16-bit RGB/RGBA/LA, Adam7 interlace, crafted
IHDRs) come from a minimal PNG writer below; BMP flavours PIL cannot write (top-down, 16-bit,
1/4-bit, 32-bit, V5 header, OS/2 core header) from a minimal BMP writer. PIL reads every one
of them back, and its reading is the reference.
"""
import argparse
import io
import os
import struct
import warnings
import zlib

import numpy as np
from PIL import Image

W, H = 37, 23  # odd sizes exercise row padding, chroma subsampling edges, bit packing


# ------------------------------------------------------------------ helpers

def fnv1a64(data: bytes) -> int:
    """64-bit FNV-1a (same as pe_fnv1a), vectorised enough for a few MB."""
    h = 0xCBF29CE484222325
    prime = 0x100000001B3
    mask = 0xFFFFFFFFFFFFFFFF
    for b in data:
        h = ((h ^ b) * prime) & mask
    return h


def png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def pack_row(samples: np.ndarray, bit_depth: int) -> bytes:
    """samples: (w * channels,) ints -> packed PNG scanline bytes (no filter byte)."""
    if bit_depth == 16:
        return samples.astype(">u2").tobytes()
    if bit_depth == 8:
        return samples.astype(np.uint8).tobytes()
    per_byte = 8 // bit_depth
    out = bytearray((len(samples) * bit_depth + 7) // 8)
    for i, v in enumerate(samples):
        shift = 8 - bit_depth * (i % per_byte + 1)
        out[i // per_byte] |= (int(v) & ((1 << bit_depth) - 1)) << shift
    return bytes(out)


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def png_bytes(samples, color_type, bit_depth, plte=None, trns=None, interlace=False):
    """samples: (h, w, channels) array of raw sample values."""
    h, w, c = samples.shape
    raw = bytearray()
    passes = ADAM7 if interlace else [(0, 0, 1, 1)]
    for x0, y0, dx, dy in passes:
        sub = samples[y0::dy, x0::dx]
        if sub.shape[0] == 0 or sub.shape[1] == 0:
            continue
        for row in sub:
            raw += b"\x00" + pack_row(row.reshape(-1), bit_depth)
    out = b"\x89PNG\r\n\x1a\n"
    out += png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0,
                                          1 if interlace else 0))
    if plte is not None:
        out += png_chunk(b"PLTE", bytes(np.asarray(plte, np.uint8).reshape(-1)))
    if trns is not None:
        out += png_chunk(b"tRNS", trns)
    out += png_chunk(b"IDAT", zlib.compress(bytes(raw), 9))
    out += png_chunk(b"IEND", b"")
    return out


def png_header_only(w, h, bit_depth=8, color_type=2):
    """A PNG signature + IHDR (valid CRC) declaring w x h, followed by IEND: tiny file."""
    return (b"\x89PNG\r\n\x1a\n"
            + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0))
            + png_chunk(b"IEND", b""))


def bmp_bytes(width, height, bpp, rows, palette=None, top_down=False, header=40,
              compression=0, masks=None):
    """rows: list of `height` packed pixel rows (top row first), without padding.
    palette: list of (r, g, b). header: 12 (OS/2 core), 40 (INFO), 108 (V4), 124 (V5)."""
    stride = ((width * bpp + 31) // 32) * 4
    stored = rows if top_down else rows[::-1]
    pixels = b"".join(r + b"\x00" * (stride - len(r)) for r in stored)
    entry = 3 if header == 12 else 4
    pal = b""
    if palette is not None:
        for r, g, b in palette:
            pal += bytes([b, g, r]) + (b"\x00" if entry == 4 else b"")
    extra = b""
    if header == 12:
        info = struct.pack("<IHHHH", 12, width, height, 1, bpp)
    else:
        info = struct.pack("<IiiHHIIiiII", header, width, -height if top_down else height, 1,
                           bpp, compression, len(pixels), 2835, 2835,
                           len(palette) if palette is not None else 0, 0)
        if header >= 52 and masks is not None:
            info += struct.pack("<IIII", *masks)
        elif header == 40 and masks is not None:
            extra = struct.pack("<III", *masks[:3])  # masks follow a 40-byte header
        info += b"\x00" * (header - len(info))
    offset = 14 + len(info) + len(extra) + len(pal)
    head = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    return head + info + extra + pal + pixels


def test_pattern(w, h, seed):
    """Gradients + hard edges + noise: exercises every rounding path."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.float64)
    img[..., 0] = 255.0 * x / max(w - 1, 1)
    img[..., 1] = 255.0 * y / max(h - 1, 1)
    img[..., 2] = 127.5 + 127.5 * np.sin(x * 0.7) * np.cos(y * 0.5)
    img[(x // 5 + y // 4) % 2 == 0] *= 0.5  # checker edges
    img += rng.normal(0, 20, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def scene(w, h, seed):
    """A larger, mostly smooth synthetic image (compresses well as PNG) with edges and a
    noise patch, for realistic resize sizes."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3))
    img[..., 0] = 128 + 100 * np.sin(x / 37.0) * np.cos(y / 53.0)
    img[..., 1] = 255 * (x + y) / (w + h)
    img[..., 2] = 60 + 120 * ((x - w / 2) ** 2 + (y - h / 2) ** 2 < (min(w, h) / 3) ** 2)
    for _ in range(12):  # hard-edged rectangles
        x0, y0 = rng.integers(0, w - 20), rng.integers(0, h - 20)
        img[y0:y0 + rng.integers(5, 80), x0:x0 + rng.integers(5, 80)] = rng.integers(0, 256, 3)
    n = min(64, w - 10, h - 10)
    img[10:10 + n, 10:10 + n] = rng.integers(0, 256, (n, n, 3))  # worst case for rounding
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------ main

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/images")
    ap.add_argument("--shared", default="/work/shared")
    args = ap.parse_args()
    # PIL warns that a palette image with tRNS "should be converted to RGBA"; convert('RGB')
    # is exactly what we mean, so the warning is noise here.
    warnings.filterwarnings("ignore", message="Palette images with Transparency")
    out = args.out
    os.makedirs(out, exist_ok=True)
    for f in os.listdir(out):
        os.remove(os.path.join(out, f))

    decode_lines = []

    def put(name, data):
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)

    def ok(name, data, max_diff=0):
        """Write an image file and PIL's decoding of it."""
        put(name, data)
        im = Image.open(io.BytesIO(data))
        rgb = np.asarray(im.convert("RGB"))
        put(name + ".rgb", rgb.tobytes())
        decode_lines.append(f"{name} {rgb.shape[1]} {rgb.shape[0]} ok {max_diff}")

    def bad(name, data, status):
        put(name, data)
        decode_lines.append(f"{name} 0 0 {status} 0")

    def pil_save(im, fmt, **kw):
        b = io.BytesIO()
        im.save(b, fmt, **kw)
        return b.getvalue()

    rgb = test_pattern(W, H, 1)
    rng = np.random.default_rng(2)
    alpha = rng.integers(0, 256, (H, W, 1), dtype=np.uint8)
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    im_rgb = Image.fromarray(rgb)

    # ---------------- PNG via PIL (adaptive filters, zlib level 6)
    ok("png_rgb8.png", pil_save(im_rgb, "PNG"))
    ok("png_rgba8.png", pil_save(Image.fromarray(np.concatenate([rgb, alpha], 2), "RGBA"), "PNG"))
    ok("png_gray8.png", pil_save(Image.fromarray(gray), "PNG"))
    ok("png_la8.png", pil_save(Image.fromarray(np.stack([gray, alpha[..., 0]], 2), "LA"), "PNG"))
    ok("png_gray1.png", pil_save(Image.fromarray(gray).convert("1"), "PNG"))
    pal_im = im_rgb.quantize(colors=200, method=Image.Quantize.MEDIANCUT)
    ok("png_pal8.png", pil_save(pal_im, "PNG"))
    ok("png_pal8_trns.png", pil_save(pal_im, "PNG", transparency=bytes(range(0, 200, 3))))
    pal16 = im_rgb.quantize(colors=16, method=Image.Quantize.MEDIANCUT)
    ok("png_pal4.png", pil_save(pal16, "PNG", bits=4))
    ok("png_gray8_trns.png", pil_save(Image.fromarray(gray), "PNG", transparency=17))
    ok("png_rgb8_trns.png", pil_save(im_rgb, "PNG", transparency=(1, 2, 3)))
    g16 = (gray.astype(np.uint16) * 257 + rng.integers(0, 257, gray.shape)).astype(np.uint16)
    g16[0, :8] = [0, 1, 2, 100, 255, 256, 1000, 65535]  # PIL clamps I;16 -> 8 bit at 255
    ok("png_gray16.png", pil_save(Image.fromarray(g16), "PNG"))

    # ---------------- PNG via the minimal writer
    ok("png_gray2.png", png_bytes((gray[..., None] >> 6), 0, 2))
    ok("png_gray4.png", png_bytes((gray[..., None] >> 4), 0, 4))
    ok("png_pal2_short.png", png_bytes(rng.integers(0, 3, (H, W, 1)), 3, 2,
                                       plte=[(255, 0, 0), (0, 255, 0), (9, 8, 7)]))
    rgb16 = (rgb.astype(np.uint16) * 256 + rng.integers(0, 256, rgb.shape)).astype(np.uint16)
    ok("png_rgb16.png", png_bytes(rgb16, 2, 16))
    a16 = rng.integers(0, 65536, (H, W, 1)).astype(np.uint16)
    ok("png_rgba16.png", png_bytes(np.concatenate([rgb16, a16], 2), 6, 16))
    ok("png_la16.png", png_bytes(np.concatenate([g16[..., None], a16], 2), 4, 16))
    ok("png_rgb16_trns.png", png_bytes(rgb16, 2, 16, trns=struct.pack(">HHH", 1, 2, 3)))
    ok("png_rgb8_adam7.png", png_bytes(rgb, 2, 8, interlace=True))
    ok("png_pal4_adam7.png", png_bytes(np.asarray(pal16)[..., None], 3, 4,
                                       plte=np.asarray(pal16.getpalette()[:48]).reshape(16, 3),
                                       interlace=True))
    ok("png_1x1.png", png_bytes(rgb[:1, :1], 2, 8))

    # ---------------- JPEG via PIL (PIL decodes with libjpeg-turbo, ISLOW IDCT, fancy upsampling)
    ok("jpg_rgb420.jpg", pil_save(im_rgb, "JPEG", quality=90))
    ok("jpg_rgb422.jpg", pil_save(im_rgb, "JPEG", quality=90, subsampling=1))
    ok("jpg_rgb444.jpg", pil_save(im_rgb, "JPEG", quality=95, subsampling=0))
    ok("jpg_rgb_q20.jpg", pil_save(im_rgb, "JPEG", quality=20))
    ok("jpg_progressive.jpg", pil_save(im_rgb, "JPEG", quality=85, progressive=True))
    ok("jpg_optimized_restart.jpg", pil_save(im_rgb, "JPEG", quality=85, optimize=True,
                                             restart_marker_blocks=2))
    ok("jpg_keep_rgb.jpg", pil_save(im_rgb, "JPEG", quality=90, keep_rgb=True))  # Adobe RGB
    ok("jpg_gray.jpg", pil_save(Image.fromarray(gray), "JPEG", quality=90))
    cmyk = np.concatenate([255 - rgb, rng.integers(0, 128, (H, W, 1), dtype=np.uint8)], 2)
    ok("jpg_cmyk.jpg", pil_save(Image.frombytes("CMYK", (W, H), cmyk.tobytes()), "JPEG",
                                quality=90))
    # YCCK: PIL cannot write it, but a YCCK file is a 4-component JPEG whose Adobe marker
    # says transform 2 and whose first three components hold YCbCr of what libjpeg is to
    # output inverted. libjpeg outputs the stored (Adobe-inverted) CMYK, 255 - cmyk, so
    # YCbCr of cmyk itself goes in, and K is stored as 255 - k. Encode those planes as a
    # plain CMYK JPEG (transform 0) and patch the marker; the result decodes to the same
    # picture as jpg_cmyk.jpg up to JPEG loss.
    c = cmyk[..., :3].astype(np.float64)
    ycc = np.stack([0.299 * c[..., 0] + 0.587 * c[..., 1] + 0.114 * c[..., 2],
                    128 - 0.168736 * c[..., 0] - 0.331264 * c[..., 1] + 0.5 * c[..., 2],
                    128 + 0.5 * c[..., 0] - 0.418688 * c[..., 1] - 0.081312 * c[..., 2]], 2)
    stored = np.concatenate([np.clip(np.rint(ycc), 0, 255).astype(np.uint8),
                             255 - cmyk[..., 3:]], 2)
    # PIL writes CMYK inverted ("CMYK;I"): hand it 255 - stored to get stored in the file
    raw = bytearray(pil_save(Image.frombytes("CMYK", (W, H), (255 - stored).tobytes()), "JPEG",
                             quality=90))
    adobe = raw.find(b"Adobe")
    assert adobe > 0 and raw[adobe + 11] == 0
    raw[adobe + 11] = 2
    ok("jpg_ycck.jpg", bytes(raw))
    # CMYK without an Adobe marker: PIL still assumes Adobe's inverted polarity
    raw = pil_save(Image.frombytes("CMYK", (W, H), cmyk.tobytes()), "JPEG", quality=90)
    app14 = raw.find(b"\xff\xee")
    seg_len = struct.unpack(">H", raw[app14 + 2: app14 + 4])[0]
    ok("jpg_cmyk_no_adobe.jpg", raw[:app14] + raw[app14 + 2 + seg_len:])
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: PIL's convert('RGB') ignores it, so do we
    ok("jpg_exif_rot.jpg", pil_save(im_rgb, "JPEG", quality=90, exif=exif.tobytes()))
    big = scene(61, 45, 3)
    ok("jpg_61x45_420.jpg", pil_save(Image.fromarray(big), "JPEG", quality=75))

    # ---------------- BMP via PIL and the minimal writer
    ok("bmp_rgb24.bmp", pil_save(im_rgb, "BMP"))
    ok("bmp_gray8.bmp", pil_save(Image.fromarray(gray), "BMP"))
    ok("bmp_pal8.bmp", pil_save(pal_im, "BMP"))
    ok("bmp_1bit_pil.bmp", pil_save(Image.fromarray(gray).convert("1"), "BMP"))
    bgr_rows = [rgb[y, :, ::-1].tobytes() for y in range(H)]
    ok("bmp_rgb24_topdown.bmp", bmp_bytes(W, H, 24, bgr_rows, top_down=True))
    ok("bmp_rgb24_core.bmp", bmp_bytes(W, H, 24, bgr_rows, header=12))
    bgrx_rows = [np.concatenate([rgb[y, :, ::-1], alpha[y]], 1).tobytes() for y in range(H)]
    ok("bmp_rgb32.bmp", bmp_bytes(W, H, 32, bgrx_rows))
    ok("bmp_rgba32_v5.bmp", bmp_bytes(W, H, 32, bgrx_rows, header=124, compression=3,
                                      masks=(0xFF0000, 0xFF00, 0xFF, 0xFF000000)))
    ok("bmp_xbgr32_bitfields.bmp",
       bmp_bytes(W, H, 32, [np.concatenate([alpha[y], rgb[y, :, ::-1]], 1).tobytes()
                            for y in range(H)],
                 compression=3, masks=(0xFF000000, 0xFF0000, 0xFF00, 0)))
    r5, g5, b5 = (rgb[..., 0] >> 3).astype(np.uint16), (rgb[..., 1] >> 3).astype(np.uint16), \
        (rgb[..., 2] >> 3).astype(np.uint16)
    p555 = (r5 << 10) | (g5 << 5) | b5
    ok("bmp_rgb555.bmp", bmp_bytes(W, H, 16, [p555[y].astype("<u2").tobytes() for y in range(H)]))
    p565 = (r5 << 11) | ((rgb[..., 1] >> 2).astype(np.uint16) << 5) | b5
    ok("bmp_rgb565.bmp", bmp_bytes(W, H, 16, [p565[y].astype("<u2").tobytes() for y in range(H)],
                                   compression=3, masks=(0xF800, 0x7E0, 0x1F, 0)))
    pal16_rgb = [tuple(c) for c in np.asarray(pal16.getpalette()[:48]).reshape(16, 3)]
    idx16 = np.asarray(pal16)
    ok("bmp_pal4.bmp", bmp_bytes(W, H, 4, [pack_row(idx16[y], 4) for y in range(H)],
                                 palette=pal16_rgb))
    ok("bmp_pal4_topdown_v4.bmp", bmp_bytes(W, H, 4, [pack_row(idx16[y], 4) for y in range(H)],
                                            palette=pal16_rgb, top_down=True, header=108))
    bits = (gray > 128).astype(np.uint8)
    ok("bmp_pal1.bmp", bmp_bytes(W, H, 1, [pack_row(bits[y], 1) for y in range(H)],
                                 palette=[(200, 10, 10), (10, 10, 200)]))
    idx8 = np.asarray(pal_im)
    ok("bmp_pal8_core.bmp", bmp_bytes(W, H, 8, [idx8[y].tobytes() for y in range(H)],
                                      palette=[tuple(c) for c in np.asarray(
                                          pal_im.getpalette()).reshape(-1, 3)], header=12))

    # ---------------- bad inputs (status = pe_status_name of the expected error)
    good_png = pil_save(im_rgb, "PNG")
    good_jpg = pil_save(Image.fromarray(big), "JPEG", quality=90)
    good_bmp = pil_save(im_rgb, "BMP")
    bad("bad_empty.png", b"", "format")
    rnd = bytes(np.random.default_rng(9).integers(0, 256, 300, dtype=np.uint8))
    bad("bad_random.bin", b"\x01" + rnd, "format")
    bad("bad_truncated.png", good_png[: len(good_png) * 6 // 10], "format")
    crc = bytearray(good_png)
    idat = crc.find(b"IDAT")
    crc[idat + 20] ^= 0x55  # flips a data byte: IDAT CRC no longer matches
    bad("bad_crc.png", bytes(crc), "format")
    bad("bad_signature_only.png", good_png[:8], "format")
    bad("bad_huge.png", png_header_only(100000, 100000), "limit")
    bad("bad_side.png", png_header_only(PE_MAX_SIDE + 1, 2), "limit")
    bad("bad_pixels.png", png_header_only(10000, 10000), "limit")
    bad("bad_zero.png", png_header_only(0, 5), "limit")
    bad("bad_depth.png", png_header_only(4, 4, bit_depth=3, color_type=0), "format")
    bad("bad_truncated.jpg", good_jpg[: len(good_jpg) * 6 // 10], "format")
    sos = good_jpg.find(b"\xff\xda")
    bad("bad_header_only.jpg", good_jpg[: sos + 4], "format")
    dht = good_jpg.find(b"\xff\xc4")
    cor = bytearray(good_jpg)
    cor[dht + 5: dht + 21] = b"\xff" * 16  # Huffman code counts that overflow: bogus table
    bad("bad_corrupt.jpg", bytes(cor), "format")
    sof = good_jpg.find(b"\xff\xc0")
    huge = bytearray(good_jpg)
    huge[sof + 5: sof + 9] = struct.pack(">HH", 60000, 60000)  # height, width
    bad("bad_huge.jpg", bytes(huge), "limit")
    zero = bytearray(good_jpg)
    zero[sof + 7: sof + 9] = struct.pack(">H", 0)  # width 0
    bad("bad_zero.jpg", bytes(zero), "limit")
    bad("bad_truncated.bmp", good_bmp[: len(good_bmp) - 100], "format")
    bad("bad_huge.bmp", b"BM" + struct.pack("<IHHI", 54, 0, 0, 54)
        + struct.pack("<IiiHHIIiiII", 40, 50000, 50000, 1, 24, 0, 0, 0, 0, 0, 0), "limit")
    bad("bad_zero.bmp", bmp_bytes(0, 3, 24, [b""] * 3), "limit")
    rle = bytearray(pil_save(Image.fromarray(gray), "BMP"))
    struct.pack_into("<I", rle, 30, 1)  # BI_RLE8
    bad("bad_rle8.bmp", bytes(rle), "unsupported")
    bad("bad_gif.gif", pil_save(im_rgb, "GIF"), "unsupported")
    with open(os.path.join(out, "decode.txt"), "w") as f:
        f.write("# <file> <width> <height> <status> <max_diff>  (generated by "
                "tools/make_image_fixtures.py)\n")
        f.write("\n".join(decode_lines) + "\n")

    # ---------------- resize references
    resize_lines = []
    sources = {
        "rs_37x23.png": test_pattern(37, 23, 11),
        "rs_7x5.png": test_pattern(7, 5, 12),
        "rs_100x80.png": test_pattern(100, 80, 13),
        "rs_63x115.png": test_pattern(63, 115, 16),
        "rs_600x800.png": scene(600, 800, 14),
        "rs_1024x1024.png": scene(1024, 1024, 15),
    }
    pairs = {
        "rs_37x23.png": [(16, 40), (37, 50), (20, 23), (224, 224), (37, 23), (1, 1), (74, 46)],
        "rs_7x5.png": [(448, 448), (3, 2)],
        # Pillow 13 runs the vertical pass first when the height loses more than twice as
        # many pixels as the width: 100x80 -> 90x60 is the tie (horizontal first), 91x60
        # just past it (vertical first).
        "rs_100x80.png": [(33, 17), (251, 3), (99, 81), (90, 60), (91, 60), (100, 7)],
        "rs_63x115.png": [(85, 72), (20, 100)],
        "rs_600x800.png": [(448, 448), (224, 224)],
        "rs_1024x1024.png": [(224, 224), (448, 448)],
    }
    for name, arr in sources.items():
        put(name, pil_save(Image.fromarray(arr), "PNG", optimize=True))
        src = Image.open(os.path.join(out, name)).convert("RGB")
        for ow, oh in pairs[name]:
            ref = src.resize((ow, oh), Image.BICUBIC)
            ref_name = f"{name[:-4]}_to_{ow}x{oh}.png"
            put(ref_name, pil_save(ref, "PNG", optimize=True))
            resize_lines.append(f"{name} {ow} {oh} {ref_name}")
    with open(os.path.join(out, "resize.txt"), "w") as f:
        f.write("# <source.png> <out_w> <out_h> <PIL Image.resize(BICUBIC) result>\n")
        f.write("\n".join(resize_lines) + "\n")

    # ---------------- real dataset images (hashes only: the data is not copied here)
    real = ["mvtec3d_tire/test/combined/000.jpg", "mvtec3d_tire/train/good/t000.jpg",
            "mvtec3d_tire/ground_truth/combined/000_mask.png",
            "mvtec_leather_subset/test/cut/000.jpg"]
    data_root = os.path.join(args.shared, "data")
    real_lines = []
    for rel in real:
        path = os.path.join(data_root, rel)
        if not os.path.exists(path):
            print(f"warning: {path} missing; real.txt entry skipped")
            continue
        im = Image.open(path).convert("RGB")
        for size in (448, 224):
            real_lines.append(f"{rel} {im.width} {im.height} "
                              f"{fnv1a64(im.tobytes()):016x} {size} "
                              f"{fnv1a64(im.resize((size, size), Image.BICUBIC).tobytes()):016x}")
            if size == 448 and "leather" not in rel:
                break
    with open(os.path.join(out, "real.txt"), "w") as f:
        f.write("# <path under shared/data> <w> <h> <fnv1a64 PIL RGB> <S> "
                "<fnv1a64 PIL resize SxS BICUBIC>\n")
        f.write("\n".join(real_lines) + "\n")

    # ---------------- .npy written by numpy (read by pe_npy_load; pe_npy_save must match bytes)
    npy_lines = []
    arrays = {
        "npy_f4_2x3.npy": np.arange(6, dtype=np.float32).reshape(2, 3) * 0.25 - 0.5,
        "npy_f4_1d.npy": np.linspace(-1, 1, 7, dtype=np.float32),
        "npy_f4_4d.npy": np.random.default_rng(5).standard_normal((2, 3, 4, 5)).astype(np.float32),
        "npy_f4_scalar.npy": np.array(3.5, np.float32),
        "npy_f4_empty.npy": np.zeros((0, 3), np.float32),
        "npy_f8_3x2.npy": np.array([[1e-3, -2.5], [12345.678, 7.0], [np.pi, -0.0]], np.float64),
        "npy_f4_big_dim0.npy": np.ones((1234567, 0), np.float32),
    }
    for name, arr in arrays.items():
        np.save(os.path.join(out, name), arr)
        shape = "x".join(str(d) for d in arr.shape) if arr.ndim else "scalar"
        flat = arr.astype(np.float64).reshape(-1)
        weighted = float(np.sum(flat * (np.arange(flat.size) % 7 + 1)))
        npy_lines.append(f"{name} {arr.dtype.str} {shape} {weighted:.17g}")
    # hostile .npy files
    put("npy_bad_be.npy", _npy(np.ones(3, ">f4")))
    put("npy_bad_i4.npy", _npy(np.ones(3, np.int32)))
    put("npy_bad_fortran.npy", _npy(np.asfortranarray(np.ones((2, 3), np.float32))))
    put("npy_bad_short.npy", _npy(np.ones(10, np.float32))[:-4])
    put("npy_bad_long.npy", _npy(np.ones(10, np.float32)) + b"\0\0\0\0")
    put("npy_bad_magic.npy", b"\x93NUMPZ" + _npy(np.ones(3, np.float32))[6:])
    put("npy_bad_5d.npy", _npy(np.ones((1, 1, 1, 1, 2), np.float32)))
    put("npy_bad_header.npy", _npy_raw("{'descr': '<f4', 'fortran_order': False, "
                                       "'shape': (3,,), }", b"\0" * 12))
    put("npy_bad_overflow.npy", _npy_raw("{'descr': '<f4', 'fortran_order': False, "
                                         "'shape': (4611686018427387904, 4), }"))
    with open(os.path.join(out, "npy.txt"), "w") as f:
        f.write("# <file> <dtype> <shape> <sum of x[i] * (i % 7 + 1) over the flat array, float64>\n")
        f.write("\n".join(npy_lines) + "\n")

    total = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print(f"{len(os.listdir(out))} files, {total / 1024:.0f} KiB in {out}")


def _npy(arr) -> bytes:
    b = io.BytesIO()
    np.save(b, arr)
    return b.getvalue()


def _npy_raw(header: str, payload: bytes = b"") -> bytes:
    """A v1.0 .npy with a hand-written header dict (padded as numpy pads)."""
    text = header.encode("latin1")
    pad = 64 - (10 + len(text) + 1) % 64
    text += b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + payload


PE_MAX_SIDE = 16384

if __name__ == "__main__":
    main()
