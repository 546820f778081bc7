/* image.c — image input and output: PNG (libpng), JPEG (libjpeg-turbo) and BMP (own reader)
 * decoded to 8-bit RGB exactly as PIL's Image.open(f).convert('RGB') does, PNG output, and
 * PIL's antialiased bicubic resize bit for bit.
 *
 * Every decoder checks the declared size against PE_MAX_IMAGE_SIDE / PE_MAX_IMAGE_PIXELS
 * before it allocates pixel memory, turns library errors into one-line PE_ERR_FORMAT
 * messages (libpng and libjpeg never print to stderr: both get error managers that
 * longjmp back here), and leaves *out empty on failure. */
#include "core/internal.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <string.h>
#include <sys/stat.h>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* ------------------------------------------------------------------ common */

static pe_status check_size(const char *name, const char *format, int64_t w, int64_t h)
{
    if (w <= 0 || h <= 0)
        return pe_fail(PE_ERR_LIMIT, "%s: %s image has zero size (%lld x %lld pixels)", name,
                       format, (long long)w, (long long)h);
    if (w > PE_MAX_IMAGE_SIDE || h > PE_MAX_IMAGE_SIDE || w * h > (int64_t)PE_MAX_IMAGE_PIXELS)
        return pe_fail(PE_ERR_LIMIT,
                       "%s: %s image of %lld x %lld pixels exceeds the limit (%d per side, %u "
                       "in all)",
                       name, format, (long long)w, (long long)h, PE_MAX_IMAGE_SIDE,
                       PE_MAX_IMAGE_PIXELS);
    return PE_OK;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}
static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[1] << 8 | p[0]); }

void pe_image_free(pe_image *img)
{
    if (!img) return;
    free(img->rgb);
    img->rgb = NULL;
    img->width = img->height = 0;
}

/* ------------------------------------------------------------------ PNG */

typedef struct {
    const uint8_t *bytes;
    size_t size, pos;
    char message[200]; /* libpng's error text */
} png_source;

static void png_read_bytes(png_structp png, png_bytep dst, size_t len)
{
    png_source *src = png_get_io_ptr(png);
    if (len > src->size - src->pos) png_error(png, "unexpected end of file");
    memcpy(dst, src->bytes + src->pos, len);
    src->pos += len;
}

static void png_on_error(png_structp png, png_const_charp msg)
{
    png_source *src = png_get_error_ptr(png);
    snprintf(src->message, sizeof src->message, "%s", msg);
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg)
{
    (void)png; /* warnings (bad ancillary chunks, odd sRGB profiles) are not errors */
    (void)msg;
}

/* One decoded row (after libpng's transforms) -> RGB, the way PIL's unpackers and
 * convert('RGB') treat each layout. */
static void png_row_to_rgb(const uint8_t *row, int width, int channels, int depth, uint8_t *rgb)
{
    if (channels == 1 && depth == 16) {
        /* 16-bit gray is PIL mode "I;16"; its convert('RGB') clamps the value at 255 rather
         * than taking the high byte (checked against Pillow: 1000 -> 255, 100 -> 100). */
        for (int x = 0; x < width; x++) {
            unsigned v = (unsigned)row[2 * x] << 8 | row[2 * x + 1];
            uint8_t g = (uint8_t)(v > 255 ? 255 : v);
            rgb[3 * x] = rgb[3 * x + 1] = rgb[3 * x + 2] = g;
        }
    } else if (channels == 1 || channels == 2) { /* gray, gray + alpha: alpha dropped */
        for (int x = 0; x < width; x++) {
            uint8_t g = row[channels * x];
            rgb[3 * x] = rgb[3 * x + 1] = rgb[3 * x + 2] = g;
        }
    } else if (channels == 3) {
        memcpy(rgb, row, (size_t)width * 3);
    } else { /* RGBA: alpha dropped, colours kept as stored */
        for (int x = 0; x < width; x++) {
            rgb[3 * x] = row[4 * x];
            rgb[3 * x + 1] = row[4 * x + 1];
            rgb[3 * x + 2] = row[4 * x + 2];
        }
    }
}

static pe_status decode_png(const uint8_t *bytes, size_t n, const char *name, pe_image *out)
{
    /* IHDR must come first, at a fixed offset: check the declared size before libpng
     * allocates anything for it. */
    if (n >= 24 && memcmp(bytes + 12, "IHDR", 4) == 0) {
        pe_status s = check_size(name, "PNG", be32(bytes + 16), be32(bytes + 20));
        if (s != PE_OK) return s;
    }
    png_source src = {bytes, n, 0, ""};
    png_structp png =
        png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_on_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return pe_fail(PE_ERR_NOMEM, "%s: out of memory starting the PNG decoder", name);
    }
    /* Written after setjmp and needed after a longjmp: volatile. */
    uint8_t *volatile rgb = NULL;
    uint8_t *volatile decoded = NULL;   /* rows after libpng's transforms, if not RGB */
    png_bytep *volatile rows = NULL;
    volatile pe_status status = PE_ERR_FORMAT;
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        free(rows);
        free(decoded);
        free(rgb);
        if (status != PE_ERR_FORMAT) return status; /* error already recorded */
        return pe_fail(PE_ERR_FORMAT, "%s: corrupt or truncated PNG (%s)", name, src.message);
    }
    png_set_read_fn(png, &src, png_read_bytes);
    png_set_user_limits(png, PE_MAX_IMAGE_SIDE, PE_MAX_IMAGE_SIDE);
    png_read_info(png, info);

    png_uint_32 width, height;
    int depth, color_type, interlace;
    png_get_IHDR(png, info, &width, &height, &depth, &color_type, &interlace, NULL, NULL);
    if (check_size(name, "PNG", width, height) != PE_OK) {
        status = PE_ERR_LIMIT;
        png_longjmp(png, 1);
    }
    /* Transforms to 8-bit samples as PIL unpacks them: palettes expanded (to RGBA when a
     * tRNS chunk exists; alpha dropped below), 1/2/4-bit gray scaled to 0..255 (x255, x85,
     * x17, as PIL's "L;2"/"L;4" unpackers), 16-bit colour reduced to its high byte (PIL's
     * ";16B" unpackers). 16-bit gray stays 16-bit: PIL clamps it (png_row_to_rgb). */
    if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color_type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16 && color_type != PNG_COLOR_TYPE_GRAY) png_set_strip_16(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);

    int channels = png_get_channels(png, info);
    int out_depth = png_get_bit_depth(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    if (channels < 1 || channels > 4 || rowbytes < (size_t)width * channels * (out_depth / 8)) {
        snprintf(src.message, sizeof src.message, "unexpected layout after decoding");
        png_longjmp(png, 1);
    }
    int direct = channels == 3 && out_depth == 8; /* decode straight into the output */
    rgb = pe_alloc((size_t)width * height, 3, name);
    decoded = direct ? NULL : pe_alloc(rowbytes, height, name);
    rows = pe_alloc(height, sizeof *rows, name);
    if (!rgb || (!direct && !decoded) || !rows) {
        status = PE_ERR_NOMEM;
        png_longjmp(png, 1);
    }
    for (png_uint_32 y = 0; y < height; y++)
        rows[y] = direct ? rgb + (size_t)y * width * 3 : decoded + (size_t)y * rowbytes;
    png_read_image(png, rows);
    png_read_end(png, NULL); /* checks the chunks after the image data up to IEND */

    if (!direct)
        for (png_uint_32 y = 0; y < height; y++)
            png_row_to_rgb(rows[y], (int)width, channels, out_depth, rgb + (size_t)y * width * 3);
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    free(decoded);
    out->width = (int)width;
    out->height = (int)height;
    out->rgb = rgb;
    return PE_OK;
}

/* ------------------------------------------------------------------ JPEG */

typedef struct {
    struct jpeg_error_mgr base; /* first: libjpeg hands back a pointer to it */
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
} jpeg_error;

static void jpeg_on_error(j_common_ptr cinfo)
{
    jpeg_error *err = (jpeg_error *)cinfo->err;
    cinfo->err->format_message(cinfo, err->message);
    longjmp(err->jump, 1);
}

/* Warnings are ignored (PIL ignores them too) except those that say the data ended early:
 * libjpeg then pads the image with grey and carries on, which would hide a truncated
 * file. Those become errors. Nothing is ever printed. */
static void jpeg_on_message(j_common_ptr cinfo, int level)
{
    if (level < 0 && (cinfo->err->msg_code == JWRN_JPEG_EOF ||
                      cinfo->err->msg_code == JWRN_HIT_MARKER))
        jpeg_on_error(cinfo);
}

static void jpeg_no_output(j_common_ptr cinfo) { (void)cinfo; }

/* A progressive JPEG may declare thousands of tiny scans, each a full pass over the
 * coefficients (a CPU bomb). Real encoders use about 10; stop far above that. */
static void jpeg_on_progress(j_common_ptr cinfo)
{
    j_decompress_ptr d = (j_decompress_ptr)cinfo;
    if (d->input_scan_number > 1000) {
        jpeg_error *err = (jpeg_error *)cinfo->err;
        snprintf(err->message, sizeof err->message, "more than 1000 scans");
        longjmp(err->jump, 1);
    }
}

/* PIL's MULDIV255: a * b / 255 rounded, in integers. */
static inline uint8_t muldiv255(unsigned a, unsigned b)
{
    unsigned t = a * b + 128;
    return (uint8_t)(((t >> 8) + t) >> 8);
}

static pe_status decode_jpeg(const uint8_t *bytes, size_t n, const char *name, pe_image *out)
{
    struct jpeg_decompress_struct cinfo;
    struct jpeg_progress_mgr progress = {.progress_monitor = jpeg_on_progress};
    jpeg_error err;
    cinfo.err = jpeg_std_error(&err.base);
    err.base.error_exit = jpeg_on_error;
    err.base.emit_message = jpeg_on_message;
    err.base.output_message = jpeg_no_output;
    err.message[0] = '\0';
    uint8_t *volatile rgb = NULL;
    uint8_t *volatile row = NULL;
    volatile pe_status status = PE_ERR_FORMAT;
    if (setjmp(err.jump)) {
        int code = err.base.msg_code;
        jpeg_destroy_decompress(&cinfo);
        free(rgb);
        free(row);
        if (status != PE_ERR_FORMAT) return status;
        if (code == JERR_EMPTY_IMAGE)
            return pe_fail(PE_ERR_LIMIT, "%s: JPEG image has zero size", name);
        if (code == JERR_BAD_PRECISION)
            return pe_fail(PE_ERR_UNSUPPORTED, "%s: unsupported JPEG (%s)", name, err.message);
        return pe_fail(PE_ERR_FORMAT, "%s: corrupt or truncated JPEG (%s)", name, err.message);
    }
    jpeg_create_decompress(&cinfo);
    cinfo.progress = &progress;
    jpeg_mem_src(&cinfo, bytes, (unsigned long)n);
    jpeg_read_header(&cinfo, TRUE);
    if (check_size(name, "JPEG", cinfo.image_width, cinfo.image_height) != PE_OK) {
        status = PE_ERR_LIMIT;
        longjmp(err.jump, 1);
    }
    /* Output colour spaces as PIL asks for them (mode from the component count). PIL
     * leaves libjpeg's defaults otherwise (ISLOW IDCT, fancy upsampling), and so do we:
     * same library, same settings, same pixels. */
    int components = cinfo.num_components;
    if (components == 1) cinfo.out_color_space = JCS_GRAYSCALE;
    else if (components == 3) cinfo.out_color_space = JCS_RGB;
    else if (components == 4) cinfo.out_color_space = JCS_CMYK; /* YCCK -> CMYK in libjpeg */
    else {
        status = pe_fail(PE_ERR_UNSUPPORTED, "%s: JPEG with %d colour components", name,
                         components);
        longjmp(err.jump, 1);
    }
    jpeg_start_decompress(&cinfo);
    int width = (int)cinfo.output_width, height = (int)cinfo.output_height;
    rgb = pe_alloc((size_t)width * height, 3, name);
    row = pe_alloc((size_t)width, (size_t)components, name);
    if (!rgb || !row) {
        status = PE_ERR_NOMEM;
        longjmp(err.jump, 1);
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        uint8_t *dst = rgb + (size_t)cinfo.output_scanline * width * 3;
        JSAMPROW target = components == 3 ? dst : row;
        if (jpeg_read_scanlines(&cinfo, &target, 1) != 1) {
            snprintf(err.message, sizeof err.message, "no scanline returned");
            longjmp(err.jump, 1);
        }
        if (components == 1) {
            for (int x = 0; x < width; x++) dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = row[x];
        } else if (components == 4) {
            /* PIL assumes Adobe's inverted CMYK for every CMYK JPEG ("CMYK;I": c = 255 -
             * stored), then convert('RGB') computes r = (255 - c)(255 - k) / 255, i.e.
             * stored_c * stored_k / 255 with its MULDIV255 rounding. */
            for (int x = 0; x < width; x++) {
                const uint8_t *p = row + 4 * x;
                dst[3 * x] = muldiv255(p[0], p[3]);
                dst[3 * x + 1] = muldiv255(p[1], p[3]);
                dst[3 * x + 2] = muldiv255(p[2], p[3]);
            }
        }
    }
    jpeg_finish_decompress(&cinfo); /* reads up to EOI: a truncated tail is an error too */
    jpeg_destroy_decompress(&cinfo);
    free(row);
    out->width = width;
    out->height = height;
    out->rgb = rgb;
    return PE_OK;
}

/* ------------------------------------------------------------------ BMP */

/* One channel of a BITFIELDS / 16-bit / 32-bit pixel: where it sits and how to widen it. */
typedef struct {
    uint32_t mask;
    int shift, bits;
} bmp_channel;

static int bmp_channel_init(bmp_channel *c, uint32_t mask)
{
    c->mask = mask;
    c->shift = c->bits = 0;
    if (!mask) return 1;
    while (!((mask >> c->shift) & 1)) c->shift++;
    uint32_t m = mask >> c->shift;
    while (m & 1) {
        c->bits++;
        m >>= 1;
    }
    return m == 0; /* contiguous */
}

/* Value of the channel in 0..255: PIL widens 5- and 6-bit fields as v * 255 / max
 * (truncating, "BGR;15"/"BGR;16"), keeps 8-bit fields, and we take the top 8 of wider ones. */
static inline uint8_t bmp_channel_get(const bmp_channel *c, uint32_t pixel)
{
    if (!c->mask) return 0;
    uint32_t v = (pixel & c->mask) >> c->shift;
    if (c->bits == 8) return (uint8_t)v;
    if (c->bits < 8) return (uint8_t)(v * 255u / ((1u << c->bits) - 1u));
    return (uint8_t)(v >> (c->bits - 8));
}

static pe_status decode_bmp(const uint8_t *bytes, size_t n, const char *name, pe_image *out)
{
    if (n < 26) return pe_fail(PE_ERR_FORMAT, "%s: truncated BMP header", name);
    uint32_t data_offset = le32(bytes + 10);
    uint32_t header_size = le32(bytes + 14);
    int64_t width, height;
    int bpp, top_down = 0, palette_entry = 4;
    uint32_t compression = 0, colors_used = 0;
    uint32_t masks[3] = {0, 0, 0};
    size_t palette_offset = 14 + (size_t)header_size;
    if (header_size == 12) { /* OS/2 1.x / BITMAPCOREHEADER: 16-bit sizes, BGR palette */
        width = le16(bytes + 18);
        height = le16(bytes + 20);
        bpp = le16(bytes + 24);
        palette_entry = 3;
    } else if (header_size == 40 || header_size == 52 || header_size == 56 ||
               header_size == 64 || header_size == 108 || header_size == 124) {
        if (n < 14 + (size_t)header_size)
            return pe_fail(PE_ERR_FORMAT, "%s: truncated BMP header", name);
        width = (int32_t)le32(bytes + 18);
        height = (int32_t)le32(bytes + 22);
        bpp = le16(bytes + 28);
        compression = le32(bytes + 30);
        colors_used = le32(bytes + 46);
        if (height < 0) { /* negative height: rows stored top-down */
            top_down = 1;
            height = -height;
        }
        if (compression == 3) { /* BI_BITFIELDS: masks in the header, or right after it */
            if (header_size >= 52) {
                for (int i = 0; i < 3; i++) masks[i] = le32(bytes + 54 + 4 * i);
            } else {
                if (n < 66) return pe_fail(PE_ERR_FORMAT, "%s: truncated BMP header", name);
                for (int i = 0; i < 3; i++) masks[i] = le32(bytes + 54 + 4 * i);
                palette_offset += 12;
            }
        } else if (compression == 1 || compression == 2) {
            return pe_fail(PE_ERR_UNSUPPORTED, "%s: run-length encoded BMP is not supported",
                           name);
        } else if (compression != 0) {
            return pe_fail(PE_ERR_UNSUPPORTED, "%s: BMP compression %u is not supported", name,
                           compression);
        }
    } else {
        return pe_fail(PE_ERR_FORMAT, "%s: unknown BMP header size %u", name, header_size);
    }
    pe_status s = check_size(name, "BMP", width, height);
    if (s != PE_OK) return s;
    if (bpp != 1 && bpp != 4 && bpp != 8 && bpp != 16 && bpp != 24 && bpp != 32)
        return pe_fail(PE_ERR_UNSUPPORTED, "%s: BMP with %d bits per pixel is not supported", name,
                       bpp);
    if (compression == 3 && bpp != 16 && bpp != 24 && bpp != 32)
        return pe_fail(PE_ERR_FORMAT, "%s: BMP bit fields with %d bits per pixel", name, bpp);

    /* Palette (1/4/8 bits): entries as (r, g, b); indices past the stored ones are black. */
    uint8_t palette[256][3];
    memset(palette, 0, sizeof palette);
    if (bpp <= 8) {
        uint32_t count = colors_used ? colors_used : 1u << bpp;
        if (count > 1u << bpp) count = 1u << bpp; /* only the addressable ones matter */
        if (palette_offset + (size_t)count * palette_entry > n)
            return pe_fail(PE_ERR_FORMAT, "%s: truncated BMP palette", name);
        for (uint32_t i = 0; i < count; i++) {
            const uint8_t *p = bytes + palette_offset + (size_t)i * palette_entry;
            palette[i][0] = p[2];
            palette[i][1] = p[1];
            palette[i][2] = p[0];
        }
    }
    bmp_channel chan[3];
    if (bpp == 16 || bpp == 32) {
        if (compression != 3) { /* BI_RGB defaults: X1R5G5B5 and X8R8G8B8 */
            masks[0] = bpp == 16 ? 0x7C00 : 0xFF0000;
            masks[1] = bpp == 16 ? 0x03E0 : 0x00FF00;
            masks[2] = bpp == 16 ? 0x001F : 0x0000FF;
        }
        for (int i = 0; i < 3; i++)
            if (!bmp_channel_init(&chan[i], masks[i]) || (bpp == 16 && masks[i] > 0xFFFF))
                return pe_fail(PE_ERR_FORMAT, "%s: bad BMP bit field mask 0x%x", name, masks[i]);
    }
    int use_masks = (bpp == 16 || bpp == 32 || compression == 3);
    if (bpp == 24 && compression == 3)
        for (int i = 0; i < 3; i++)
            if (!bmp_channel_init(&chan[i], masks[i]) || masks[i] > 0xFFFFFF)
                return pe_fail(PE_ERR_FORMAT, "%s: bad BMP bit field mask 0x%x", name, masks[i]);

    size_t stride = (((size_t)width * bpp + 31) / 32) * 4; /* rows padded to 4 bytes */
    if (data_offset > n || stride * (size_t)height > n - data_offset)
        return pe_fail(PE_ERR_FORMAT,
                       "%s: corrupt or truncated BMP (pixel data needs %zu bytes at offset %u, "
                       "file has %zu)",
                       name, stride * (size_t)height, data_offset, n);

    uint8_t *rgb = pe_alloc((size_t)width * height, 3, name);
    if (!rgb) return PE_ERR_NOMEM;
    int w = (int)width, h = (int)height;
    for (int y = 0; y < h; y++) {
        const uint8_t *src = bytes + data_offset + stride * (size_t)(top_down ? y : h - 1 - y);
        uint8_t *dst = rgb + (size_t)y * w * 3;
        if (bpp == 24 && !use_masks) {
            for (int x = 0; x < w; x++) { /* stored B, G, R */
                dst[3 * x] = src[3 * x + 2];
                dst[3 * x + 1] = src[3 * x + 1];
                dst[3 * x + 2] = src[3 * x];
            }
        } else if (use_masks) {
            int bytes_pp = bpp / 8;
            for (int x = 0; x < w; x++) {
                const uint8_t *p = src + (size_t)x * bytes_pp;
                uint32_t pixel = p[0] | (uint32_t)p[1] << 8;
                if (bytes_pp >= 3) pixel |= (uint32_t)p[2] << 16;
                if (bytes_pp == 4) pixel |= (uint32_t)p[3] << 24;
                for (int c = 0; c < 3; c++) dst[3 * x + c] = bmp_channel_get(&chan[c], pixel);
            }
        } else { /* 1, 4, 8 bits: palette indices, most significant bits first */
            int per_byte = 8 / bpp, mask = (1 << bpp) - 1;
            for (int x = 0; x < w; x++) {
                int shift = 8 - bpp * (x % per_byte + 1);
                int index = (src[x / per_byte] >> shift) & mask;
                memcpy(dst + 3 * x, palette[index], 3);
            }
        }
    }
    out->width = w;
    out->height = h;
    out->rgb = rgb;
    return PE_OK;
}

/* ------------------------------------------------------------------ decode / load */

pe_status pe_image_decode(const uint8_t *bytes, size_t n, const char *name, pe_image *out)
{
    if (!out) return pe_fail(PE_ERR_ARG, "pe_image_decode: out is NULL");
    memset(out, 0, sizeof *out);
    if (!name) name = "<memory>";
    if (!bytes && n) return pe_fail(PE_ERR_ARG, "%s: no data", name);
    if (n == 0) return pe_fail(PE_ERR_FORMAT, "%s: empty file", name);
    if (n >= 8 && memcmp(bytes, "\x89PNG\r\n\x1a\n", 8) == 0) return decode_png(bytes, n, name, out);
    if (n >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF)
        return decode_jpeg(bytes, n, name, out);
    if (n >= 2 && bytes[0] == 'B' && bytes[1] == 'M') return decode_bmp(bytes, n, name, out);
    const char *other = NULL;
    if (n >= 4 && memcmp(bytes, "GIF8", 4) == 0) other = "GIF";
    else if (n >= 4 && (memcmp(bytes, "II*\0", 4) == 0 || memcmp(bytes, "MM\0*", 4) == 0))
        other = "TIFF";
    else if (n >= 12 && memcmp(bytes, "RIFF", 4) == 0 && memcmp(bytes + 8, "WEBP", 4) == 0)
        other = "WebP";
    if (other)
        return pe_fail(PE_ERR_UNSUPPORTED, "%s: %s images are not supported (use PNG, JPEG or BMP)",
                       name, other);
    return pe_fail(PE_ERR_FORMAT, "%s: not a PNG, JPEG or BMP image", name);
}

pe_status pe_image_load(const char *path, pe_image *out)
{
    if (!out) return pe_fail(PE_ERR_ARG, "pe_image_load: out is NULL");
    memset(out, 0, sizeof *out);
    if (!path) return pe_fail(PE_ERR_ARG, "pe_image_load: path is NULL");
    struct stat st;
    if (stat(path, &st) != 0) return pe_fail(PE_ERR_IO, "%s: cannot open (%s)", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) return pe_fail(PE_ERR_IO, "%s: is a directory, not an image", path);
    uint8_t *bytes;
    size_t n;
    pe_status s = pe_read_file(path, &bytes, &n);
    if (s != PE_OK) return s;
    s = pe_image_decode(bytes, n, path, out);
    free(bytes);
    return s;
}

/* ------------------------------------------------------------------ PNG output */

typedef struct {
    char message[200];
} png_sink;

static void png_write_error(png_structp png, png_const_charp msg)
{
    png_sink *sink = png_get_error_ptr(png);
    snprintf(sink->message, sizeof sink->message, "%s", msg);
    png_longjmp(png, 1);
}

/* Growing output buffer for libpng's write callback. */
typedef struct {
    uint8_t *data;
    size_t len, cap;
} png_buffer;

static void png_buffer_write(png_structp png, png_bytep src, size_t n)
{
    png_buffer *b = png_get_io_ptr(png);
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 65536;
        while (cap - b->len < n) {
            if (cap > SIZE_MAX / 2) png_error(png, "PNG too large");
            cap *= 2;
        }
        uint8_t *grown = realloc(b->data, cap);
        if (!grown) png_error(png, "out of memory");
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, src, n);
    b->len += n;
}

static void png_buffer_flush(png_structp png) { (void)png; }

pe_status pe_image_encode_png(const pe_image *img, uint8_t **bytes, size_t *len)
{
    if (!bytes || !len) return pe_fail(PE_ERR_ARG, "pe_image_encode_png: NULL output");
    *bytes = NULL;
    *len = 0;
    if (!img || !img->rgb || img->width <= 0 || img->height <= 0)
        return pe_fail(PE_ERR_ARG, "pe_image_encode_png: no image to encode");
    png_sink sink = {""};
    png_buffer buf = {NULL, 0, 0};
    png_structp png =
        png_create_write_struct(PNG_LIBPNG_VER_STRING, &sink, png_write_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        return pe_fail(PE_ERR_NOMEM, "PNG encoder: out of memory");
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(buf.data);
        return pe_fail(PE_ERR_NOMEM, "PNG encoder: %s", sink.message);
    }
    png_set_write_fn(png, &buf, png_buffer_write, png_buffer_flush);
    /* zlib level 1 + the SUB filter: outputs here are heatmaps and masks written once per
     * image in a run; level 6 with adaptive filtering took ~250 ms for an 800x600 heatmap. */
    png_set_compression_level(png, 1);
    png_set_filter(png, PNG_FILTER_TYPE_BASE, PNG_FILTER_SUB);
    png_set_IHDR(png, info, (png_uint_32)img->width, (png_uint_32)img->height, 8,
                 PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < img->height; y++)
        png_write_row(png, img->rgb + (size_t)y * img->width * 3);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    *bytes = buf.data;
    *len = buf.len;
    return PE_OK;
}

pe_status pe_image_save_png(const char *path, const pe_image *img)
{
    if (!path || !img || !img->rgb || img->width <= 0 || img->height <= 0)
        return pe_fail(PE_ERR_ARG, "%s: no image to save", path ? path : "pe_image_save_png");
    uint8_t *bytes;
    size_t len;
    pe_status s = pe_image_encode_png(img, &bytes, &len);
    if (s) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", pe_last_error()); /* pe_fail overwrites it */
        return pe_fail(s, "%s: %s", path, msg);
    }
    s = pe_atomic_write(path, bytes, len); /* temp + fsync + rename: never a partial PNG */
    free(bytes);
    return s;
}

/* ------------------------------------------------------------------ resize */

/* PIL's fixed point for 8-bit resampling: 22 fraction bits, so that 255 x (sum of |weights|
 * in fixed point) stays inside int32. */
#define RESIZE_BITS 22

/* The taps of one 1-D pass: output pixel o reads inputs first[o] .. first[o] + count[o] - 1
 * with weights coeff[o * ksize + k] (fixed point). */
typedef struct {
    int ksize;
    int *first, *count;
    int32_t *coeff;
} resize_taps;

/* Keys' cubic convolution kernel with a = -0.5, as PIL's bicubic filter (support 2).
 * Written in PIL's order of operations so that the doubles, and hence the rounded fixed-
 * point weights, come out identical. */
static double bicubic_kernel(double x)
{
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

static void resize_taps_free(resize_taps *t)
{
    free(t->first);
    free(t->count);
    free(t->coeff);
    t->first = t->count = NULL;
    t->coeff = NULL;
}

/* Weights for in_size -> out_size. Downscaling stretches the kernel by the scale factor
 * (antialiasing); each output's weights are normalised to sum to 1, then rounded to fixed
 * point (round half away from zero). */
static pe_status resize_taps_make(int in_size, int out_size, resize_taps *t)
{
    double scale = (double)in_size / out_size;
    double filter_scale = scale < 1.0 ? 1.0 : scale;
    double support = 2.0 * filter_scale;
    t->ksize = (int)ceil(support) * 2 + 1;
    t->first = pe_alloc((size_t)out_size, sizeof(int), "resize taps");
    t->count = pe_alloc((size_t)out_size, sizeof(int), "resize taps");
    t->coeff = pe_alloc((size_t)out_size * t->ksize, sizeof(int32_t), "resize taps");
    double *w = pe_alloc((size_t)t->ksize, sizeof(double), "resize taps");
    if (!t->first || !t->count || !t->coeff || !w) {
        resize_taps_free(t);
        free(w);
        return PE_ERR_NOMEM;
    }
    double inv = 1.0 / filter_scale;
    for (int o = 0; o < out_size; o++) {
        double center = (o + 0.5) * scale;
        int lo = (int)(center - support + 0.5); /* truncation, as PIL rounds */
        if (lo < 0) lo = 0;
        int hi = (int)(center + support + 0.5);
        if (hi > in_size) hi = in_size;
        int n = hi - lo;
        double sum = 0.0;
        for (int k = 0; k < n; k++) {
            w[k] = bicubic_kernel((k + lo - center + 0.5) * inv);
            sum += w[k];
        }
        int32_t *c = t->coeff + (size_t)o * t->ksize;
        for (int k = 0; k < t->ksize; k++) {
            double v = k < n && sum != 0.0 ? w[k] / sum : 0.0;
            c[k] = (int32_t)(v < 0 ? -0.5 + v * (1 << RESIZE_BITS) : 0.5 + v * (1 << RESIZE_BITS));
        }
        t->first[o] = lo;
        t->count[o] = n;
    }
    free(w);
    return PE_OK;
}

/* Fixed-point sum -> 8 bits: drop the fraction (floor), clamp to 0..255 (PIL's clip8). */
static inline uint8_t clip8(int32_t v)
{
    v >>= RESIZE_BITS;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* Horizontal pass: rows [row0, row0 + rows) of src (src_w wide) -> dst (out_w wide). */
static void resize_horizontal(const uint8_t *src, int src_w, int row0, int rows, uint8_t *dst,
                              int out_w, const resize_taps *t)
{
    const int ksize = t->ksize;
#pragma omp parallel for schedule(static) if ((int64_t)rows * out_w * ksize > 200000)
    for (int y = 0; y < rows; y++) {
        const uint8_t *in = src + (size_t)(row0 + y) * src_w * 3;
        uint8_t *o = dst + (size_t)y * out_w * 3;
        for (int x = 0; x < out_w; x++) {
            const uint8_t *p = in + (size_t)t->first[x] * 3;
            const int32_t *c = t->coeff + (size_t)x * ksize;
            int32_t r = 1 << (RESIZE_BITS - 1), g = r, b = r; /* + 0.5: round */
            for (int k = 0, n = t->count[x]; k < n; k++) {
                r += p[3 * k] * c[k];
                g += p[3 * k + 1] * c[k];
                b += p[3 * k + 2] * c[k];
            }
            o[3 * x] = clip8(r);
            o[3 * x + 1] = clip8(g);
            o[3 * x + 2] = clip8(b);
        }
    }
}

/* Vertical pass: src rows (row index relative to row0) -> out_h rows, each a weighted sum of
 * whole source rows; the inner loops run along the row (omp simd: GCC's -O2 cost model
 * would leave them scalar). acc is scratch of
 * threads x (width * 3) int32. */
static void resize_vertical(const uint8_t *src, int row0, int width, uint8_t *dst, int out_h,
                            const resize_taps *t, int32_t *acc, int threads)
{
    const int n3 = width * 3;
    const int ksize = t->ksize;
#pragma omp parallel for schedule(static) num_threads(threads) \
    if ((int64_t)out_h * n3 * ksize > 200000)
    for (int y = 0; y < out_h; y++) {
#ifdef _OPENMP
        int32_t *sum = acc + (size_t)omp_get_thread_num() * n3;
#else
        int32_t *sum = acc;
#endif
#pragma omp simd
        for (int i = 0; i < n3; i++) sum[i] = 1 << (RESIZE_BITS - 1);
        const int32_t *c = t->coeff + (size_t)y * ksize;
        for (int k = 0, n = t->count[y]; k < n; k++) {
            const uint8_t *in = src + (size_t)(t->first[y] - row0 + k) * n3;
            const int32_t w = c[k];
#pragma omp simd
            for (int i = 0; i < n3; i++) sum[i] += in[i] * w;
        }
        uint8_t *o = dst + (size_t)y * n3;
#pragma omp simd
        for (int i = 0; i < n3; i++) o[i] = clip8(sum[i]);
    }
}

/* src (in_w x in_h) -> dst (out_w x out_h), sizes differing in at least one direction.
 * Two 1-D passes with an 8-bit intermediate, in the order Pillow 13 uses: horizontal first,
 * unless the height shrinks by more than twice as many pixels as the width (then vertical
 * first, so the horizontal pass has fewer rows). Earlier Pillows always went horizontal
 * first; the order changes results by a few levels near edges, so this follows the Pillow
 * that the reference tools use. A pass whose size does not change is skipped, as in PIL. */
static pe_status resample(const pe_image *src, int out_w, int out_h, uint8_t *dst)
{
    const int in_w = src->width, in_h = src->height;
    const int need_h = in_w != out_w, need_v = in_h != out_h;
    const int vertical_first = in_h - out_h > 0 && in_h - out_h > 2 * (in_w - out_w);
    resize_taps th = {0}, tv = {0};
    uint8_t *tmp = NULL;
    int32_t *acc = NULL;
    pe_status s = PE_ERR_NOMEM;
    if ((need_h && resize_taps_make(in_w, out_w, &th) != PE_OK) ||
        (need_v && resize_taps_make(in_h, out_h, &tv) != PE_OK))
        goto cleanup;
#ifdef _OPENMP
    int threads = omp_get_max_threads();
#else
    int threads = 1;
#endif
    if (!need_v) {
        resize_horizontal(src->rgb, in_w, 0, in_h, dst, out_w, &th);
    } else if (vertical_first || !need_h) {
        /* vertical over the full source width, then (if needed) horizontal on out_h rows */
        uint8_t *vdst = dst;
        if (need_h && !(vdst = tmp = pe_alloc((size_t)in_w * out_h, 3, "resize scratch")))
            goto cleanup;
        if (!(acc = pe_alloc((size_t)threads * in_w * 3, sizeof(int32_t), "resize scratch")))
            goto cleanup;
        resize_vertical(src->rgb, 0, in_w, vdst, out_h, &tv, acc, threads);
        if (need_h) resize_horizontal(tmp, in_w, 0, out_h, dst, out_w, &th);
    } else {
        /* horizontal over only the source rows the vertical pass reads, then vertical */
        int row0 = tv.first[0];
        int row1 = tv.first[out_h - 1] + tv.count[out_h - 1];
        if (!(tmp = pe_alloc((size_t)(row1 - row0) * out_w, 3, "resize scratch"))) goto cleanup;
        if (!(acc = pe_alloc((size_t)threads * out_w * 3, sizeof(int32_t), "resize scratch")))
            goto cleanup;
        resize_horizontal(src->rgb, in_w, row0, row1 - row0, tmp, out_w, &th);
        resize_vertical(tmp, row0, out_w, dst, out_h, &tv, acc, threads);
    }
    s = PE_OK;
cleanup:
    resize_taps_free(&th);
    resize_taps_free(&tv);
    free(tmp);
    free(acc);
    return s;
}

pe_status pe_image_resize(const pe_image *src, int out_w, int out_h, pe_image *out)
{
    if (!out) return pe_fail(PE_ERR_ARG, "pe_image_resize: out is NULL");
    memset(out, 0, sizeof *out);
    if (!src || !src->rgb || src->width <= 0 || src->height <= 0)
        return pe_fail(PE_ERR_ARG, "pe_image_resize: empty source image");
    if (out_w <= 0 || out_h <= 0)
        return pe_fail(PE_ERR_ARG, "pe_image_resize: bad output size %d x %d", out_w, out_h);
    pe_status s = check_size("pe_image_resize", "output", out_w, out_h);
    if (s != PE_OK) return s;
    uint8_t *rgb = pe_alloc((size_t)out_w * out_h, 3, "resized image");
    if (!rgb) return PE_ERR_NOMEM;
    if (src->width == out_w && src->height == out_h) /* PIL returns a copy */
        memcpy(rgb, src->rgb, (size_t)out_w * out_h * 3);
    else if ((s = resample(src, out_w, out_h, rgb)) != PE_OK) {
        free(rgb);
        return s;
    }
    out->width = out_w;
    out->height = out_h;
    out->rgb = rgb;
    return PE_OK;
}
