/* test_cnn.c — CNN backbones (src/nn/cnn.c, src/nn/conv.c) against PyTorch.
 *
 * Fixtures (tools/make_cnn_fixtures.py): tests/fixtures/cnn/<name>/ holds a reduced-width
 * network built from the reference PyTorch classes with random weights and BN statistics
 * (model.safetensors + config.json) and io.safetensors with an input (3, H, W) and the
 * PyTorch patch features (G, D). real_<name>.safetensors hold the reference features of the
 * real weights from `make weights` (checked only when weights/ is present). */
#include "testlib.h"

#include "patchead.h"
#include "io/safetensors.h"

#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    float *input, *expected;
    int height, width, grid_h, grid_w, patches, dim;
} io_fixture;

static int load_io(const char *path, io_fixture *io)
{
    memset(io, 0, sizeof *io);
    st_file *f = NULL;
    if (st_open(path, &f)) return 0;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    float *grid = NULL;
    int ok = !st_load_f32_any(f, "input", &io->input, &ndim, shape) && ndim == 3 && shape[0] == 3;
    io->height = (int)shape[1], io->width = (int)shape[2];
    ok = ok && !st_load_f32_any(f, "features", &io->expected, &ndim, shape) && ndim == 2;
    io->patches = (int)shape[0], io->dim = (int)shape[1];
    ok = ok && !st_load_f32_any(f, "grid", &grid, &ndim, shape) && ndim == 1 && shape[0] == 2;
    if (ok) io->grid_h = (int)grid[0], io->grid_w = (int)grid[1];
    free(grid);
    st_close(f);
    return ok;
}

static void free_io(io_fixture *io)
{
    free(io->input);
    free(io->expected);
}

/* max |a - b| / max |b| */
static double rel_diff(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num = tl_worse(num, fabs((double)a[i] - b[i]));
        den = fmax(den, fabs((double)b[i]));
    }
    return den > 0 ? num / den : num;
}

/* Load model `dir`, run the fixture input, compare with the PyTorch features. */
static void check_parity(const char *model_dir, const char *io_path, const char *family, int threads)
{
    io_fixture io;
    CHECK_MSG(load_io(io_path, &io), "%s: %s", io_path, pe_last_error());
    if (!io.input) return;
    pe_model_params mp = pe_model_default_params();
    mp.threads = threads;
    pe_model *m = NULL;
    pe_status s = pe_model_load(model_dir, &mp, &m);
    CHECK_MSG(s == PE_OK, "%s: %s", model_dir, pe_last_error());
    if (s) {
        free_io(&io);
        return;
    }
    pe_model_info info;
    CHECK(pe_model_get_info(m, &info) == PE_OK);
    CHECK_MSG(!strcmp(info.family, family), "family %s, expected %s", info.family, family);
    CHECK(info.is_vit == 0 && info.has_attention == 0 && info.patch_size == 8);
    CHECK(info.default_size == 448 && info.hidden_dim == 0 && info.num_params > 0);
    CHECK_MSG(info.feature_dim == io.dim, "feature_dim %d, reference D %d", info.feature_dim, io.dim);
    pe_features feat;
    s = pe_model_forward(m, io.input, io.height, io.width, NULL, &feat);
    CHECK_MSG(s == PE_OK, "forward: %s", pe_last_error());
    if (!s) {
        CHECK_MSG(feat.grid_h == io.grid_h && feat.grid_w == io.grid_w && feat.dim == io.dim,
                  "grid %dx%d D %d, expected %dx%d D %d", feat.grid_h, feat.grid_w, feat.dim, io.grid_h,
                  io.grid_w, io.dim);
        CHECK(feat.attn == NULL);
        if (feat.grid_h * feat.grid_w == io.patches && feat.dim == io.dim) {
            double rel = rel_diff(feat.data, io.expected, (size_t)io.patches * io.dim);
            CHECK_MSG(rel <= 1e-4, "%s: rel max abs diff %.3g > 1e-4", model_dir, rel);
            printf("# %s: %dx%d -> %dx%dx%d, rel max abs diff %.2g (%d threads)\n", model_dir, io.height,
                   io.width, feat.grid_h, feat.grid_w, feat.dim, rel, threads);
        }
        /* A second call reuses the scratch buffers: same answer. */
        pe_features again;
        if (pe_model_forward(m, io.input, io.height, io.width, NULL, &again) == PE_OK) {
            CHECK(!memcmp(again.data, feat.data, sizeof(float) * io.patches * io.dim));
            pe_features_free(&again);
        }
        pe_features_free(&feat);
    }
    pe_model_free(m);
    free_io(&io);
}

static void test_resnet_basic(void)
{
    check_parity(FIXTURE("cnn/resnet_basic"), FIXTURE("cnn/resnet_basic/io.safetensors"), "resnet", 1);
    check_parity(FIXTURE("cnn/resnet_basic"), FIXTURE("cnn/resnet_basic/io.safetensors"), "resnet", 2);
}

static void test_resnet_wide_bottleneck(void)
{
    check_parity(FIXTURE("cnn/resnet_wide"), FIXTURE("cnn/resnet_wide/io.safetensors"), "resnet", 2);
}

static void test_mobilenet_v2(void)
{
    check_parity(FIXTURE("cnn/mobilenet_v2_025"), FIXTURE("cnn/mobilenet_v2_025/io.safetensors"),
                 "mobilenet_v2", 1);
    check_parity(FIXTURE("cnn/mobilenet_v2_025"), FIXTURE("cnn/mobilenet_v2_025/io.safetensors"),
                 "mobilenet_v2", 2);
}

static void test_efficientnet_lite_same_padding(void)
{
    check_parity(FIXTURE("cnn/efficientnet_lite"), FIXTURE("cnn/efficientnet_lite/io.safetensors"),
                 "efficientnet_lite0", 2);
}

/* ---------------------------------------------------------------- bad input */

static char tmpdir[64];

static int copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    int ok = in && out;
    char buf[65536];
    size_t n;
    while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0) ok = fwrite(buf, 1, n, out) == n;
    if (in) fclose(in);
    if (out) ok = (fclose(out) == 0) && ok;
    return ok;
}

static int write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f) return 0;
    fputs(text, f);
    return fclose(f) == 0;
}

/* tmpdir/model.safetensors = fixture's weights, tmpdir/config.json = `config` (none if NULL). */
static int stage(const char *fixture, const char *config)
{
    char from[256], to[256];
    snprintf(from, sizeof from, "tests/fixtures/cnn/%s/model.safetensors", fixture);
    snprintf(to, sizeof to, "%s/model.safetensors", tmpdir);
    if (!copy_file(from, to)) return 0;
    snprintf(to, sizeof to, "%s/config.json", tmpdir);
    unlink(to);
    return config ? write_text(to, config) : 1;
}

static void test_family_from_tensor_names(void)
{
    /* No config.json: ResNet and MobileNetV2 families found from the tensor names. */
    CHECK(stage("resnet_basic", NULL));
    check_parity(tmpdir, FIXTURE("cnn/resnet_basic/io.safetensors"), "resnet", 2);
    /* MobileNetV2 0.25 without config: 17 blocks, so the standard strides apply. */
    CHECK(stage("mobilenet_v2_025", NULL));
    check_parity(tmpdir, FIXTURE("cnn/mobilenet_v2_025/io.safetensors"), "mobilenet_v2", 2);
}

static void expect_load_error(const char *fixture, const char *config, pe_status want, const char *needle)
{
    CHECK(stage(fixture, config));
    pe_model *m = NULL;
    pe_status s = pe_model_load(tmpdir, NULL, &m);
    CHECK_MSG(s == want, "status %d (%s), expected %d", s, pe_last_error(), want);
    CHECK(m == NULL);
    CHECK_MSG(strstr(pe_last_error(), needle) != NULL, "message '%s' lacks '%s'", pe_last_error(), needle);
    CHECK(strchr(pe_last_error(), '\n') == NULL);
    pe_model_free(m);
}

static void test_bad_configs(void)
{
    expect_load_error("mobilenet_v2_025", "{\"architecture\": \"mobilenet_v2\", \"block_strides\": [1, 2]}",
                      PE_ERR_FORMAT, "block_strides");
    expect_load_error("mobilenet_v2_025",
                      "{\"architecture\": \"mobilenet_v2\", \"block_strides\": "
                      "[1,3,1,2,1,1,2,1,1,1,1,1,1,2,1,1,1]}",
                      PE_ERR_FORMAT, "block_strides");
    /* All stride 1: no stride-8 / stride-16 stage. */
    expect_load_error("mobilenet_v2_025",
                      "{\"architecture\": \"mobilenet_v2\", \"block_strides\": "
                      "[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]}",
                      PE_ERR_UNSUPPORTED, "stride 8");
    /* Architecture says EfficientNet, tensors are MobileNetV2. */
    expect_load_error("mobilenet_v2_025", "{\"architecture\": \"efficientnet_lite0\"}", PE_ERR_FORMAT,
                      "_conv_stem.weight");
    /* EfficientNet-Lite blocks with non-standard count and no strides given. */
    expect_load_error("efficientnet_lite", "{\"architecture\": \"efficientnet_lite0\", \"block_strides\": 5}",
                      PE_ERR_FORMAT, "block_strides");
    expect_load_error("resnet_basic", "{\"architecture\": \"resnet\", \"std\": [0.2, 0, 0.2]}", PE_ERR_FORMAT,
                      "std");
}

static void test_forward_shapes_and_limits(void)
{
    pe_model *m = NULL;
    if (pe_model_load(FIXTURE("cnn/resnet_wide"), NULL, &m) != PE_OK) {
        CHECK_MSG(0, "%s", pe_last_error());
        return;
    }
    /* Odd, non-square sizes: grid = ceil(side / 8) for every stride-2 layer rounding up. */
    const int sizes[][2] = {{33, 17}, {8, 8}, {1, 1}, {97, 130}};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        int h = sizes[i][0], w = sizes[i][1];
        float *x = calloc((size_t)3 * h * w, sizeof(float));
        for (int j = 0; j < 3 * h * w; j++) x[j] = (float)((j * 7919) % 101) / 50.0f - 1.0f;
        pe_features f;
        pe_status s = pe_model_forward(m, x, h, w, NULL, &f);
        CHECK_MSG(s == PE_OK, "%dx%d: %s", h, w, pe_last_error());
        if (!s) {
            CHECK_MSG(f.grid_h == (h + 7) / 8 && f.grid_w == (w + 7) / 8, "%dx%d -> grid %dx%d", h, w,
                      f.grid_h, f.grid_w);
            int finite = 1;
            for (int j = 0; j < f.grid_h * f.grid_w * f.dim; j++) finite &= isfinite(f.data[j]);
            CHECK(finite);
            pe_features_free(&f);
        }
        free(x);
    }
    pe_extract_params ep = pe_extract_default_params();
    ep.want_attn = 1;
    float x[3 * 16 * 16] = {0};
    pe_features f;
    CHECK(pe_model_forward(m, x, 16, 16, &ep, &f) == PE_ERR_UNSUPPORTED);
    CHECK(pe_model_forward(m, x, 20000, 16, NULL, &f) == PE_ERR_LIMIT);
    pe_model_free(m);
}

/* ---------------------------------------------------------------- real weights */

static void check_real(const char *name, const char *family, int dim)
{
    char dir[128], io_path[160];
    snprintf(dir, sizeof dir, "weights/%s", name);
    snprintf(io_path, sizeof io_path, "tests/fixtures/cnn/real_%s.safetensors", name);
    struct stat st;
    char weights[160];
    snprintf(weights, sizeof weights, "%s/model.safetensors", dir);
    if (stat(weights, &st) != 0) {
        SKIP("weights/ absent (run `make weights`)");
        return;
    }
    pe_model *m = NULL;
    if (pe_model_load(dir, NULL, &m) != PE_OK) {
        CHECK_MSG(0, "%s", pe_last_error());
        return;
    }
    pe_model_info info;
    pe_model_get_info(m, &info);
    CHECK(!strcmp(info.family, family) && !strcmp(info.name, family));
    CHECK_MSG(info.feature_dim == dim, "%s: feature_dim %d, expected %d", name, info.feature_dim, dim);
    CHECK(!strcmp(info.dtype, "F32"));
    pe_model_free(m);
    check_parity(dir, io_path, family, 2);
}

static void test_real_mobilenet_v2(void)
{
    check_real("mobilenet_v2", "mobilenet_v2", 32 + 96);
}

static void test_real_efficientnet_lite0(void)
{
    check_real("efficientnet_lite0", "efficientnet_lite0", 40 + 112);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/pe_test_cnn.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_resnet_basic);
    RUN(test_resnet_wide_bottleneck);
    RUN(test_mobilenet_v2);
    RUN(test_efficientnet_lite_same_padding);
    RUN(test_family_from_tensor_names);
    RUN(test_bad_configs);
    RUN(test_forward_shapes_and_limits);
    RUN(test_real_mobilenet_v2);
    RUN(test_real_efficientnet_lite0);
    char path[128];
    snprintf(path, sizeof path, "%s/model.safetensors", tmpdir);
    unlink(path);
    snprintf(path, sizeof path, "%s/config.json", tmpdir);
    unlink(path);
    rmdir(tmpdir);
    return test_summary();
}
