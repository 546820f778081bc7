/* test_image.c — decoding (every PNG / JPEG / BMP flavour vs PIL's convert('RGB')), bad
 * inputs, PNG output, and resize vs PIL's Image.resize(BICUBIC). References come from
 * tools/make_image_fixtures.py (the .txt lists in tests/fixtures/images name them). */
#include "core/internal.h"
#include "testlib.h"

#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DIR "tests/fixtures/images/"

static char *path_of(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, DIR "%s", name);
    return buf;
}

static int max_abs_diff(const uint8_t *a, const uint8_t *b, size_t n)
{
    int m = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        if (d > m) m = d;
    }
    return m;
}

/* A failed call must leave no image behind and say which file, on one line. */
static int error_is_clean(const pe_image *img, const char *name)
{
    const char *msg = pe_last_error();
    return img->rgb == NULL && img->width == 0 && img->height == 0 && strstr(msg, name) &&
           !strchr(msg, '\n');
}

static void test_decode_vs_pil(void)
{
    FILE *list = fopen(DIR "decode.txt", "r");
    CHECK(list != NULL);
    if (!list) return;
    char line[512], file[256], status[32], path[512];
    int w, h, tol, files = 0, errors = 0;
    int worst[3] = {0, 0, 0}; /* png, jpeg, bmp */
    while (fgets(line, sizeof line, list)) {
        if (line[0] == '#') continue;
        if (sscanf(line, "%255s %d %d %31s %d", file, &w, &h, status, &tol) != 5) continue;
        pe_image img;
        pe_status s = pe_image_load(path_of(path, sizeof path, file), &img);
        if (strcmp(status, "ok") != 0) { /* a bad input: the expected error, cleanly */
            errors++;
            CHECK_MSG(strcmp(pe_status_name(s), status) == 0, "%s: got %s (%s), want %s", file,
                      pe_status_name(s), pe_last_error(), status);
            CHECK_MSG(error_is_clean(&img, file), "%s: message '%s'", file, pe_last_error());
            continue;
        }
        files++;
        CHECK_MSG(s == PE_OK, "%s: %s", file, pe_last_error());
        if (s != PE_OK) continue;
        CHECK_MSG(img.width == w && img.height == h, "%s: %dx%d, want %dx%d", file, img.width,
                  img.height, w, h);
        char ref_name[300], ref_path[600];
        snprintf(ref_name, sizeof ref_name, "%s.rgb", file);
        uint8_t *ref;
        size_t n;
        CHECK(pe_read_file(path_of(ref_path, sizeof ref_path, ref_name), &ref, &n) == PE_OK);
        if (img.width == w && img.height == h && n == (size_t)w * h * 3) {
            int d = max_abs_diff(img.rgb, ref, n);
            CHECK_MSG(d <= tol, "%s: max abs diff %d vs PIL (tolerance %d)", file, d, tol);
            int kind = file[0] == 'p' ? 0 : file[0] == 'j' ? 1 : 2;
            if (d > worst[kind]) worst[kind] = d;
        }
        free(ref);
        /* pe_image_decode from memory gives the same pixels */
        uint8_t *bytes;
        CHECK(pe_read_file(path, &bytes, &n) == PE_OK);
        pe_image mem;
        CHECK(pe_image_decode(bytes, n, file, &mem) == PE_OK);
        CHECK(mem.width == img.width && mem.height == img.height &&
              memcmp(mem.rgb, img.rgb, (size_t)w * h * 3) == 0);
        pe_image_free(&mem);
        free(bytes);
        pe_image_free(&img);
        CHECK(img.rgb == NULL);
    }
    fclose(list);
    CHECK(files >= 40 && errors >= 20);
    printf("# decode: %d images, %d bad files; max abs diff vs PIL: png %d, jpeg %d, bmp %d\n",
           files, errors, worst[0], worst[1], worst[2]);
}

static void test_decode_bad_paths(void)
{
    pe_image img;
    CHECK(pe_image_load("tests/fixtures/images/no_such_file.png", &img) == PE_ERR_IO);
    CHECK(error_is_clean(&img, "no_such_file.png"));
    CHECK(pe_image_load("tests/fixtures/images", &img) == PE_ERR_IO);
    CHECK(error_is_clean(&img, "tests/fixtures/images"));
    CHECK(strstr(pe_last_error(), "directory") != NULL);
    CHECK(pe_image_decode(NULL, 0, "nothing", &img) == PE_ERR_FORMAT);
    CHECK(error_is_clean(&img, "nothing"));
    /* every prefix of a PNG and a JPEG fails cleanly (or, for the JPEG, decodes) */
    const char *files[] = {DIR "png_rgb8_adam7.png", DIR "jpg_progressive.jpg",
                           DIR "bmp_pal4.bmp"};
    for (int f = 0; f < 3; f++) {
        uint8_t *bytes;
        size_t n;
        CHECK(pe_read_file(files[f], &bytes, &n) == PE_OK);
        for (size_t cut = 0; cut < n; cut += 1 + cut / 8) {
            pe_status s = pe_image_decode(bytes, cut, "cut", &img);
            CHECK_MSG(s == PE_ERR_FORMAT, "%s cut at %zu of %zu: %s", files[f], cut, n,
                      pe_status_name(s));
            CHECK(error_is_clean(&img, "cut"));
        }
        /* flipped bytes anywhere: an error or an image, never a crash or a leak */
        for (size_t i = 0; i < n; i += 7) {
            uint8_t saved = bytes[i];
            bytes[i] ^= 0xA5;
            if (pe_image_decode(bytes, n, "flip", &img) == PE_OK) pe_image_free(&img);
            else CHECK(error_is_clean(&img, "flip"));
            bytes[i] = saved;
        }
        free(bytes);
    }
}

/* libpng and libjpeg print nothing: every bad file, with stderr sent to a file. Also the
 * warnings-only files (a JPEG with junk before a marker still decodes, silently). */
static void test_no_library_noise(void)
{
    const char *log = "/tmp/pe_test_image_stderr.txt";
    fflush(stderr);
    int saved = dup(2);
    FILE *sink = fopen(log, "w");
    CHECK(saved >= 0 && sink != NULL);
    if (saved < 0 || !sink) return;
    dup2(fileno(sink), 2);
    const char *bad[] = {"bad_truncated.png", "bad_crc.png", "bad_depth.png", "bad_truncated.jpg",
                         "bad_header_only.jpg", "bad_corrupt.jpg", "bad_zero.jpg",
                         "bad_truncated.bmp", "bad_random.bin"};
    char path[512];
    pe_image img;
    int failures = 0;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        failures += pe_image_load(path_of(path, sizeof path, bad[i]), &img) != PE_OK;
    /* extraneous bytes between JPEG segments: a libjpeg warning, not an error */
    uint8_t *bytes;
    size_t n;
    int junk_ok = 0;
    if (pe_read_file(DIR "jpg_rgb420.jpg", &bytes, &n) == PE_OK) {
        uint8_t *junk = malloc(n + 3);
        size_t sos = 2;
        while (sos + 1 < n && !(bytes[sos] == 0xFF && bytes[sos + 1] == 0xDA)) sos++;
        memcpy(junk, bytes, sos);
        memcpy(junk + sos, "\x01\x02\x03", 3);
        memcpy(junk + sos + 3, bytes + sos, n - sos);
        pe_image a, b;
        if (pe_image_decode(junk, n + 3, "junk", &a) == PE_OK) {
            junk_ok = pe_image_decode(bytes, n, "clean", &b) == PE_OK &&
                      memcmp(a.rgb, b.rgb, (size_t)a.width * a.height * 3) == 0;
            pe_image_free(&b);
            pe_image_free(&a);
        }
        free(junk);
        free(bytes);
    }
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    fclose(sink);
    uint8_t *text;
    CHECK(pe_read_file(log, &text, &n) == PE_OK);
    CHECK_MSG(n == 0, "libraries wrote to stderr: %.200s", n ? (char *)text : "");
    free(text);
    remove(log);
    CHECK(failures == (int)(sizeof bad / sizeof bad[0]));
    CHECK(junk_ok);
}

/* PE_ERR_LIMIT comes from the header alone: a 100000 x 100000 PNG of 57 bytes fails with
 * LIMIT (a decoder that allocated first would fail on the missing pixels as FORMAT, or
 * trip ASan's allocation limit). */
static void test_limits_before_allocation(void)
{
    pe_image img;
    CHECK(pe_image_load(DIR "bad_huge.png", &img) == PE_ERR_LIMIT);
    CHECK(strstr(pe_last_error(), "100000 x 100000") != NULL);
    CHECK(pe_image_load(DIR "bad_huge.jpg", &img) == PE_ERR_LIMIT);
    CHECK(strstr(pe_last_error(), "60000 x 60000") != NULL);
    CHECK(pe_image_load(DIR "bad_huge.bmp", &img) == PE_ERR_LIMIT);
    CHECK(pe_image_load(DIR "bad_zero.png", &img) == PE_ERR_LIMIT);
    CHECK(strstr(pe_last_error(), "zero size") != NULL);
}

static int load_png(const char *name, pe_image *img)
{
    char path[512];
    pe_status s = pe_image_load(path_of(path, sizeof path, name), img);
    CHECK_MSG(s == PE_OK, "%s: %s", name, pe_last_error());
    return s == PE_OK;
}

static void test_resize_vs_pil(void)
{
    FILE *list = fopen(DIR "resize.txt", "r");
    CHECK(list != NULL);
    if (!list) return;
    char line[512], src_name[256], ref_name[256];
    int ow, oh, cases = 0, worst = 0;
    while (fgets(line, sizeof line, list)) {
        if (line[0] == '#') continue;
        if (sscanf(line, "%255s %d %d %255s", src_name, &ow, &oh, ref_name) != 4) continue;
        pe_image src, ref, out;
        if (!load_png(src_name, &src)) continue;
        if (load_png(ref_name, &ref)) {
            pe_status s = pe_image_resize(&src, ow, oh, &out);
            CHECK_MSG(s == PE_OK, "%s: %s", ref_name, pe_last_error());
            if (s == PE_OK) {
                CHECK(out.width == ow && out.height == oh && ref.width == ow && ref.height == oh);
                int d = max_abs_diff(out.rgb, ref.rgb, (size_t)ow * oh * 3);
                CHECK_MSG(d == 0, "%s: max abs diff %d vs PIL (exact expected)", ref_name, d);
                if (d > worst) worst = d;
                cases++;
                pe_image_free(&out);
            }
            pe_image_free(&ref);
        }
        pe_image_free(&src);
    }
    fclose(list);
    CHECK(cases >= 10);
    printf("# resize: %d size pairs, max abs diff vs PIL %d\n", cases, worst);
}

static void test_resize_args(void)
{
    uint8_t px[3 * 4] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    pe_image src = {2, 2, px}, out;
    CHECK(pe_image_resize(&src, 0, 5, &out) == PE_ERR_ARG && out.rgb == NULL);
    CHECK(pe_image_resize(&src, 5, -1, &out) == PE_ERR_ARG && out.rgb == NULL);
    CHECK(pe_image_resize(&src, PE_MAX_IMAGE_SIDE + 1, 5, &out) == PE_ERR_LIMIT);
    pe_image empty = {0, 0, NULL};
    CHECK(pe_image_resize(&empty, 5, 5, &out) == PE_ERR_ARG);
    /* a constant image stays constant at any size (weights sum to one) */
    uint8_t flat[5 * 3 * 3];
    memset(flat, 77, sizeof flat);
    pe_image f = {5, 3, flat};
    CHECK(pe_image_resize(&f, 13, 2, &out) == PE_OK);
    int all = 1;
    for (int i = 0; i < 13 * 2 * 3; i++) all &= out.rgb[i] == 77;
    CHECK(all);
    pe_image_free(&out);
}

static void test_save_png(void)
{
    pe_image src, back;
    if (!load_png("jpg_61x45_420.jpg", &src)) return;
    const char *path = "/tmp/pe_test_image_save.png";
    remove(path);
    CHECK(pe_image_save_png(path, &src) == PE_OK);
    CHECK(pe_image_load(path, &back) == PE_OK);
    CHECK(back.width == src.width && back.height == src.height &&
          memcmp(back.rgb, src.rgb, (size_t)src.width * src.height * 3) == 0);
    pe_image_free(&back);
    remove(path);
    /* unwritable destination: IO error, nothing left behind */
    CHECK(pe_image_save_png("/nonexistent_dir/x.png", &src) == PE_ERR_IO);
    CHECK(strstr(pe_last_error(), "/nonexistent_dir/x.png") != NULL);
    pe_image none = {0, 0, NULL};
    CHECK(pe_image_save_png(path, &none) == PE_ERR_ARG);
    CHECK(access(path, F_OK) != 0);
    pe_image_free(&src);
}

/* Real dataset images (under $PATCHEAD_DATA): PIL's decode and its 448 / 224 bicubic
 * resize, compared through FNV-1a hashes of the bytes. */
static void test_real_data(void)
{
    char rootbuf[4096];
    const char *root = test_data_path("", rootbuf, sizeof rootbuf);
    if (!root) {
        SKIP("PATCHEAD_DATA not set (optional MVTec data)");
        return;
    }
    FILE *list = fopen(DIR "real.txt", "r");
    CHECK(list != NULL);
    if (!list) return;
    char line[512], rel[256], path[4400];
    unsigned long long decode_hash, resize_hash;
    int w, h, size, checked = 0;
    while (fgets(line, sizeof line, list)) {
        if (line[0] == '#') continue;
        if (sscanf(line, "%255s %d %d %llx %d %llx", rel, &w, &h, &decode_hash, &size,
                   &resize_hash) != 6)
            continue;
        snprintf(path, sizeof path, "%s/%s", root, rel);
        pe_image img, out;
        pe_status s = pe_image_load(path, &img);
        CHECK_MSG(s == PE_OK, "%s", pe_last_error());
        if (s != PE_OK) continue;
        CHECK(img.width == w && img.height == h);
        uint64_t got = pe_fnv1a(PE_FNV_SEED, img.rgb, (size_t)img.width * img.height * 3);
        CHECK_MSG(got == decode_hash, "%s: decoded bytes differ from PIL's", rel);
        CHECK(pe_image_resize(&img, size, size, &out) == PE_OK);
        got = pe_fnv1a(PE_FNV_SEED, out.rgb, (size_t)size * size * 3);
        CHECK_MSG(got == resize_hash, "%s: %dx%d resize differs from PIL's", rel, size, size);
        pe_image_free(&out);
        pe_image_free(&img);
        checked++;
    }
    fclose(list);
    CHECK(checked >= 3);
    printf("# real data: %d decode + resize checks identical to PIL\n", checked);
}

int main(void)
{
    RUN(test_decode_vs_pil);
    RUN(test_decode_bad_paths);
    RUN(test_no_library_noise);
    RUN(test_limits_before_allocation);
    RUN(test_resize_vs_pil);
    RUN(test_resize_args);
    RUN(test_save_png);
    RUN(test_real_data);
    return test_summary();
}
