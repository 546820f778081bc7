/* test_serve_lib.c — the library pieces `patchead serve` / `watch` rely on: PNG encoding
 * in memory (same bytes as the file writer, decodes back to the same pixels), the heatmap
 * overlay in memory (same pixels as the saved heatmap PNG) and pe_bank_hash (the .pead
 * file's own checksum, read from the file's last 8 bytes here). */
#include "testlib.h"

#include "patchead.h"

#include <stdint.h>
#include <unistd.h>

static pe_image gradient(int w, int h)
{
    pe_image img = {w, h, malloc((size_t)w * h * 3)};
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = img.rgb + ((size_t)y * w + x) * 3;
            p[0] = (uint8_t)(x * 7 + y), p[1] = (uint8_t)(y * 13), p[2] = (uint8_t)(x ^ y);
        }
    return img;
}

static uint8_t *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(len > 0 ? (size_t)len : 1);
    *n = fread(b, 1, (size_t)len, f);
    fclose(f);
    return b;
}

static void test_png_encode_memory(void)
{
    pe_image img = gradient(37, 23);
    uint8_t *png = NULL;
    size_t n = 0;
    CHECK(pe_image_encode_png(&img, &png, &n) == PE_OK);
    CHECK(n > 8 && !memcmp(png, "\x89PNG\r\n\x1a\n", 8));
    pe_image back = {0};
    CHECK(pe_image_decode(png, n, "mem.png", &back) == PE_OK);
    CHECK(back.width == 37 && back.height == 23);
    CHECK(back.rgb && !memcmp(back.rgb, img.rgb, (size_t)37 * 23 * 3));
    /* the file writer writes exactly these bytes */
    char path[] = "/tmp/pe_serve_lib_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    CHECK(pe_image_save_png(path, &img) == PE_OK);
    size_t fn = 0;
    uint8_t *file = read_all(path, &fn);
    CHECK(file && fn == n && !memcmp(file, png, n));
    remove(path);
    free(file);
    free(png);
    pe_image_free(&back);
    /* bad input: a clear error, no output */
    pe_image none = {0};
    png = (uint8_t *)1;
    CHECK(pe_image_encode_png(&none, &png, &n) == PE_ERR_ARG && png == NULL && n == 0);
    CHECK(strstr(pe_last_error(), "no image") != NULL);
    pe_image_free(&img);
}

static void test_heatmap_render_matches_file(void)
{
    pe_image img = gradient(40, 30);
    float *map = malloc(sizeof(float) * 40 * 30);
    for (int i = 0; i < 40 * 30; i++) map[i] = (float)(i % 40) / 39.0f;
    pe_image heat = {0};
    CHECK(pe_heatmap_render(&img, map, 0.0f, 1.0f, &heat) == PE_OK);
    CHECK(heat.height == 30 && heat.width == 40 + 4 + 8); /* overlay + gap + colour bar */
    /* left edge: map 0 -> darkest ramp colour (20, 20, 100) blended 50% over the image */
    uint8_t expect = (uint8_t)(0.5f * img.rgb[2] + 0.5f * 100 + 0.5f);
    CHECK(heat.rgb[2] == expect);
    char path[] = "/tmp/pe_serve_heat_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    CHECK(pe_save_heatmap_png(path, &img, map, 0.0f, 1.0f) == PE_OK);
    pe_image saved = {0};
    CHECK(pe_image_load(path, &saved) == PE_OK);
    CHECK(saved.width == heat.width && saved.height == heat.height);
    CHECK(saved.rgb && !memcmp(saved.rgb, heat.rgb, (size_t)heat.width * heat.height * 3));
    remove(path);
    pe_image_free(&heat);
    CHECK(pe_heatmap_render(&img, NULL, 0, 1, &heat) == PE_ERR_ARG && heat.rgb == NULL);
    pe_image_free(&saved);
    pe_image_free(&img);
    free(map);
}

static void test_bank_hash_is_file_checksum(void)
{
    /* two references of 2x2 patches, dim 3; no model (features only) */
    float f0[12] = {1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 0};
    float f1[12] = {0, 1, 0, 1, 0, 0, 0, 1, 1, 1, 0, 1};
    pe_features refs[2] = {{2, 2, 3, f0, NULL}, {2, 2, 3, f1, NULL}};
    pe_detect_params p = pe_detect_default_params(0);
    pe_bank *bank = NULL;
    CHECK(pe_bank_fit_features(NULL, refs, 2, &p, &bank) == PE_OK);
    if (!bank) return;
    CHECK(strcmp(pe_bank_hash(bank), "") == 0); /* built in memory */
    char path[] = "/tmp/pe_serve_bank_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    CHECK(pe_bank_save(bank, path) == PE_OK);
    pe_bank_free(bank);
    bank = NULL;
    CHECK(pe_bank_load(path, NULL, &bank) == PE_OK);
    size_t n = 0;
    uint8_t *file = read_all(path, &n);
    CHECK(file && n > 8);
    if (bank && file && n > 8) {
        uint64_t stored = 0;
        for (int i = 0; i < 8; i++) stored |= (uint64_t)file[n - 8 + i] << (8 * i);
        char want[17];
        snprintf(want, sizeof want, "%016llx", (unsigned long long)stored);
        CHECK_MSG(!strcmp(pe_bank_hash(bank), want), "hash %s, file %s", pe_bank_hash(bank), want);
    }
    free(file);
    remove(path);
    pe_bank_free(bank);
}

int main(void)
{
    RUN(test_png_encode_memory);
    RUN(test_heatmap_render_matches_file);
    RUN(test_bank_hash_is_file_checksum);
    return test_summary();
}
