/* test_vit.c — ViT backbones and NN ops vs PyTorch references committed under
 * tests/fixtures/vit/ (tools/make_vit_fixtures.py): tiny random DINOv2, DINOv2 with
 * registers, CLIP (full CLIPModel checkpoint) and OpenCLIP towers at a non-native
 * input size (position embeddings resized), F16 / BF16 checkpoints, and each op alone;
 * and the real DINOv2 ViT-S/14 of `make weights` (weights/dinov2_small_imgfocus) against
 * the ONNX model it was converted from, run by onnxruntime (tools/make_real_vit_fixture.py):
 * checked only when the weights are present, a SKIP otherwise. */
#include "io/safetensors.h"
#include "nn/ops.h"
#include "patchead.h"
#include "testlib.h"

#include <stdint.h>
#include <sys/stat.h>

/* Minimal .npy reader for the fixtures ('<f4', C order): keeps this test independent
 * of the library's npy code. Returns malloc'd data and the element count. */
static float *npy(const char *path, int64_t shape[4], int *ndim)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char pre[10];
    float *data = NULL;
    if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6)) goto out;
    size_t hl = pre[8] | pre[9] << 8;
    char hdr[512];
    if (hl >= sizeof hdr || fread(hdr, 1, hl, f) != hl) goto out;
    hdr[hl] = 0;
    if (!strstr(hdr, "'<f4'") || strstr(hdr, "'fortran_order': True")) goto out;
    char *p = strchr(strstr(hdr, "'shape'"), '(') + 1;
    int64_t n = 1;
    *ndim = 0;
    while (*p && *p != ')') {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p) break;
        shape[(*ndim)++] = v;
        n *= v;
        p = end;
        while (*p == ',' || *p == ' ') p++;
    }
    data = malloc((size_t)n * sizeof *data + 1);
    if (data && fread(data, sizeof *data, (size_t)n, f) != (size_t)n) {
        free(data);
        data = NULL;
    }
out:
    fclose(f);
    return data;
}

static int64_t numel(const int64_t *shape, int ndim)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

/* max |a - b| / max |b| */
static double rel_diff(const float *a, const float *b, int64_t n)
{
    double d = 0, m = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]);
        if (!(e <= d)) d = e; /* NaN propagates as a failure */
        if (fabs(b[i]) > m) m = fabs(b[i]);
    }
    return m > 0 ? d / m : d;
}

/* ------------------------------------------------------------------ ops */

static void test_ops_resize_bicubic(void)
{
    int64_t gs[4], rs[4];
    int gn, rn;
    float *grid = npy(FIXTURE("vit/ops/grid.npy"), gs, &gn);
    CHECK(grid && gn == 3);
    if (!grid) return;
    int sizes[4][2] = {{7, 9}, {3, 2}, {4, 6}, {10, 3}};
    for (int s = 0; s < 4; s++)
        for (int aa = 0; aa < 2; aa++) {
            char path[256];
            snprintf(path, sizeof path, "tests/fixtures/vit/ops/resize_%dx%d_aa%d.npy", sizes[s][0],
                     sizes[s][1], aa);
            float *ref = npy(path, rs, &rn);
            CHECK_MSG(ref != NULL, "%s missing", path);
            if (!ref) continue;
            float *out = malloc((size_t)numel(rs, rn) * sizeof *out);
            CHECK(op_resize_bicubic(out, grid, (int)gs[2], (int)gs[0], (int)gs[1], sizes[s][0],
                                    sizes[s][1], aa) == 0);
            double d = rel_diff(out, ref, numel(rs, rn));
            CHECK_MSG(d < 1e-6, "%s: rel diff %g", path, d);
            free(out);
            free(ref);
        }
    free(grid);
}

static void test_ops_activations(void)
{
    int64_t s[4], s2[4];
    int n, n2;
    float *x = npy(FIXTURE("vit/ops/x.npy"), s, &n);
    CHECK(x && n == 2);
    if (!x) return;
    int rows = (int)s[0], cols = (int)s[1];
    size_t N = (size_t)rows * cols;
    float *y = malloc(N * sizeof *y);
    const char *names[] = {"gelu", "quick_gelu", "softmax"};
    for (int k = 0; k < 3; k++) {
        char path[128];
        snprintf(path, sizeof path, "tests/fixtures/vit/ops/%s.npy", names[k]);
        float *ref = npy(path, s2, &n2);
        CHECK(ref != NULL);
        if (!ref) continue;
        memcpy(y, x, N * sizeof *y);
        if (k == 0) op_gelu(y, N);
        else if (k == 1) op_quick_gelu(y, N);
        else op_softmax_rows(y, rows, cols, cols);
        /* error budget: 2e-6 relative plus 1e-6 absolute (erf/exp approximations are
         * ~1.5e-7 absolute, so tiny negative GELU outputs are only absolutely accurate) */
        double worst = 0;
        for (size_t i = 0; i < N; i++) {
            double e = fabs(y[i] - ref[i]) / (2e-6 * fabs(ref[i]) + 1e-6);
            if (!(e <= worst)) worst = e;
        }
        CHECK_MSG(worst <= 1.0, "%s: error %g x the budget", names[k], worst);
        free(ref);
    }
    /* fused bias + GELU == add bias then GELU */
    float *bias = calloc((size_t)cols, sizeof *bias), *z = malloc(N * sizeof *z);
    for (int i = 0; i < cols; i++) bias[i] = 0.1f * i - 1.0f;
    memcpy(y, x, N * sizeof *y);
    memcpy(z, x, N * sizeof *z);
    op_bias_gelu(y, bias, rows, cols);
    op_add_bias(z, bias, rows, cols);
    op_gelu(z, N);
    CHECK(memcmp(y, z, N * sizeof *y) == 0);
    free(bias);
    free(z);
    free(y);
    free(x);
}

static void test_ops_layernorm(void)
{
    int64_t s[4];
    int n;
    float *x = npy(FIXTURE("vit/ops/x_ln.npy"), s, &n);
    float *g = npy(FIXTURE("vit/ops/ln_gamma.npy"), s, &n);
    float *b = npy(FIXTURE("vit/ops/ln_beta.npy"), s, &n);
    float *ref = npy(FIXTURE("vit/ops/layernorm.npy"), s, &n);
    CHECK(x && g && b && ref);
    if (x && g && b && ref) {
        size_t N = (size_t)s[0] * s[1];
        float *y = malloc(N * sizeof *y);
        op_layernorm(y, x, g, b, (int)s[0], (int)s[1], 1e-6f);
        double d = rel_diff(y, ref, (int64_t)N);
        CHECK_MSG(d < 2e-5, "layernorm rel diff %g", d);
        /* in place gives the same */
        op_layernorm(x, x, g, b, (int)s[0], (int)s[1], 1e-6f);
        CHECK(memcmp(x, y, N * sizeof *y) == 0);
        free(y);
    }
    free(x);
    free(g);
    free(b);
    free(ref);
}

static void test_ops_linear(void)
{
    /* out (2, 3) = in (2, 4) . W^T (W is (3, 4)) + b, computed by hand */
    const float in[8] = {1, 2, 3, 4, -1, 0, 2, 0.5f};
    const float w[12] = {1, 0, 0, 0, 0, 1, 0, 0, 1, 1, 1, 1};
    const float b[3] = {0.5f, -1, 2};
    float out[6];
    op_linear(out, in, w, b, 2, 4, 3);
    const float want[6] = {1.5f, 1, 12, -0.5f, -1, 3.5f};
    for (int i = 0; i < 6; i++) CHECK_NEAR(out[i], want[i], 1e-6);
}

/* ------------------------------------------------------------------ models */

typedef struct {
    const char *dir;     /* fixture folder */
    const char *input;   /* folder holding input.npy */
    const char *family;
    const char *dtype;
    double tol;          /* relative max-abs tolerance */
} vit_case;

static const vit_case cases[] = {
    {"dinov2", "dinov2", "dinov2", "F32", 1e-4},
    {"dinov2_reg", "dinov2_reg", "dinov2_reg", "F32", 1e-4},
    {"clip", "clip", "clip", "F32", 1e-4},
    {"openclip", "openclip", "openclip", "F32", 1e-4},
    {"dinov2_f16", "dinov2", "dinov2", "F16", 1e-3},
    {"clip_bf16", "clip", "clip", "BF16", 1e-3},
};

static int64_t meta_params(const char *dir)
{
    char path[256], buf[512] = {0};
    snprintf(path, sizeof path, "tests/fixtures/vit/%s/meta.json", dir);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strstr(buf, "\"num_params\":");
    return p ? strtoll(p + 13, NULL, 10) : -1;
}

static void run_case(const vit_case *c)
{
    char path[256];
    int64_t is[4], rs[4];
    int in_n, rn;
    snprintf(path, sizeof path, "tests/fixtures/vit/%s/input.npy", c->input);
    float *input = npy(path, is, &in_n);
    CHECK_MSG(input && in_n == 3 && is[0] == 3, "%s unreadable", path);
    if (!input) return;
    snprintf(path, sizeof path, "tests/fixtures/vit/%s", c->dir);
    pe_model *m = NULL;
    pe_status s = pe_model_load(path, NULL, &m);
    CHECK_MSG(s == PE_OK, "load %s: %s", path, pe_last_error());
    if (s) {
        free(input);
        return;
    }
    pe_model_info info;
    CHECK(pe_model_get_info(m, &info) == PE_OK);
    CHECK_MSG(!strcmp(info.family, c->family), "family %s", info.family);
    CHECK_MSG(!strcmp(info.dtype, c->dtype), "dtype %s", info.dtype);
    CHECK(info.is_vit && info.has_attention && info.feature_dim == 64 && info.hidden_dim == 64);
    CHECK(info.num_layers == 2 && info.default_size == 448);
    CHECK(info.patch_size == (strstr(c->family, "dinov2") ? 14 : 16));
    CHECK_MSG(info.num_params == meta_params(c->dir), "num_params %lld vs %lld",
              (long long)info.num_params, (long long)meta_params(c->dir));
    CHECK(strlen(info.weights_hash) == 16);
    CHECK(strstr(c->family, "dinov2") ? fabsf(info.mean[0] - 0.485f) < 1e-6f
                                      : fabsf(info.mean[0] - 0.48145466f) < 1e-6f);

    const int H = (int)is[1], W = (int)is[2];
    pe_extract_params ep = pe_extract_default_params();
    ep.want_attn = 1;
    pe_features f;
    s = pe_model_forward(m, input, H, W, &ep, &f);
    CHECK_MSG(s == PE_OK, "forward: %s", pe_last_error());
    if (s == PE_OK) {
        CHECK(f.grid_h == H / info.patch_size && f.grid_w == W / info.patch_size && f.dim == 64);
        snprintf(path, sizeof path, "tests/fixtures/vit/%s/patch.npy", c->dir);
        float *ref = npy(path, rs, &rn);
        CHECK(ref && rs[0] == (int64_t)f.grid_h * f.grid_w && rs[1] == f.dim);
        if (ref) {
            double d = rel_diff(f.data, ref, rs[0] * rs[1]);
            printf("  %-11s patch rel diff %.3g\n", c->dir, d);
            CHECK_MSG(d <= c->tol, "%s patch tokens: rel diff %g > %g", c->dir, d, c->tol);
        }
        free(ref);
        snprintf(path, sizeof path, "tests/fixtures/vit/%s/attn.npy", c->dir);
        ref = npy(path, rs, &rn);
        CHECK(ref && f.attn && rs[0] == (int64_t)f.grid_h * f.grid_w);
        if (ref && f.attn) {
            double d = rel_diff(f.attn, ref, rs[0]);
            printf("  %-11s attn  rel diff %.3g\n", c->dir, d);
            CHECK_MSG(d <= c->tol, "%s attention: rel diff %g", c->dir, d);
        }
        free(ref);
        pe_features_free(&f);
    }
    /* intermediate layer: block 1 + final norm; without attention (early exit) and with */
    for (int want_attn = 0; want_attn < 2; want_attn++) {
        ep.layer = 1;
        ep.want_attn = want_attn;
        s = pe_model_forward(m, input, H, W, &ep, &f);
        CHECK_MSG(s == PE_OK, "forward layer 1: %s", pe_last_error());
        if (s) continue;
        snprintf(path, sizeof path, "tests/fixtures/vit/%s/layer1.npy", c->dir);
        float *ref = npy(path, rs, &rn);
        CHECK(ref != NULL);
        if (ref) {
            double d = rel_diff(f.data, ref, rs[0] * rs[1]);
            CHECK_MSG(d <= c->tol, "%s layer 1: rel diff %g", c->dir, d);
        }
        free(ref);
        pe_features_free(&f);
    }
    /* bad arguments */
    ep.layer = 3;
    CHECK(pe_model_forward(m, input, H, W, &ep, &f) == PE_ERR_ARG);
    CHECK(f.data == NULL);
    ep.layer = 0;
    CHECK(pe_model_forward(m, input, H - 1, W, &ep, &f) == PE_ERR_SHAPE);
    pe_model_free(m);
    free(input);
}

static void test_vit_dinov2(void) { run_case(&cases[0]); }
static void test_vit_dinov2_reg(void) { run_case(&cases[1]); }
static void test_vit_clip(void) { run_case(&cases[2]); }
static void test_vit_openclip(void) { run_case(&cases[3]); }
static void test_vit_dinov2_f16(void) { run_case(&cases[4]); }
static void test_vit_clip_bf16(void) { run_case(&cases[5]); }

/* Scratch grows and shrinks safely: large, small, large again give identical results;
 * the weights file given directly (not the folder) loads the same model. */
static void test_vit_scratch_reuse(void)
{
    pe_model *m = NULL, *m2 = NULL;
    CHECK(pe_model_load("tests/fixtures/vit/dinov2_reg", NULL, &m) == PE_OK);
    CHECK(pe_model_load("tests/fixtures/vit/dinov2_reg/model.safetensors", NULL, &m2) == PE_OK);
    if (!m || !m2) {
        pe_model_free(m);
        pe_model_free(m2);
        return;
    }
    const int big = 98, small = 42;
    float *in = malloc(3 * big * big * sizeof *in);
    for (int i = 0; i < 3 * big * big; i++) in[i] = sinf(0.37f * i) * 1.5f;
    pe_extract_params ep = pe_extract_default_params();
    ep.want_attn = 1;
    pe_features a, b, c, d;
    CHECK(pe_model_forward(m, in, big, big, &ep, &a) == PE_OK);
    CHECK(pe_model_forward(m, in, small, small, &ep, &b) == PE_OK);
    CHECK(pe_model_forward(m, in, big, big, &ep, &c) == PE_OK);
    CHECK(pe_model_forward(m2, in, big, big, &ep, &d) == PE_OK);
    CHECK(a.grid_h == 7 && b.grid_h == 3 && c.grid_w == 7);
    size_t n = (size_t)a.grid_h * a.grid_w * a.dim;
    if (a.data && c.data && d.data) {
        CHECK(memcmp(a.data, c.data, n * sizeof(float)) == 0);
        CHECK(memcmp(a.data, d.data, n * sizeof(float)) == 0);
        CHECK(memcmp(a.attn, c.attn, 49 * sizeof(float)) == 0);
    }
    /* attention is a distribution over patches + CLS + registers: sums to < 1 */
    if (a.attn) {
        double sum = 0;
        for (int i = 0; i < 49; i++) sum += a.attn[i];
        CHECK(sum > 0 && sum < 1.0 + 1e-5);
    }
    pe_features_free(&a);
    pe_features_free(&b);
    pe_features_free(&c);
    pe_features_free(&d);
    free(in);
    pe_model_free(m);
    pe_model_free(m2);
}

/* The real weights: one bundled tire image, 98 x 126 px (a 7 x 9 grid, far from the export's
 * 37 x 37 position grid), fp32 vs onnxruntime's last_hidden_state (CLS dropped); bf16 must
 * keep every patch's direction (cosine >= 0.99: the scoring uses only directions). */
static void test_vit_real_dinov2_small(void)
{
    const char *dir = "weights/dinov2_small_imgfocus";
    struct stat st;
    if (stat("weights/dinov2_small_imgfocus/model.safetensors", &st) != 0) {
        SKIP("weights/dinov2_small_imgfocus absent (run `make weights`)");
        return;
    }
    st_file *f = NULL;
    float *input = NULL, *expected = NULL, *grid = NULL;
    int nd_in, nd_f, nd_g;
    int64_t sh_in[ST_MAX_DIMS], sh_f[ST_MAX_DIMS], sh_g[ST_MAX_DIMS];
    int ok = st_open(FIXTURE("vit/real_dinov2_small_imgfocus.safetensors"), &f) == PE_OK;
    ok = ok && !st_load_f32_any(f, "input", &input, &nd_in, sh_in) && nd_in == 3 && sh_in[0] == 3;
    ok = ok && !st_load_f32_any(f, "features", &expected, &nd_f, sh_f) && nd_f == 2;
    ok = ok && !st_load_f32_any(f, "grid", &grid, &nd_g, sh_g) && nd_g == 1 && sh_g[0] == 2;
    st_close(f);
    CHECK_MSG(ok, "fixture: %s", pe_last_error());
    for (int prec = 0; ok && prec < 2; prec++) {
        pe_model_params mp = pe_model_default_params();
        mp.precision = prec ? PE_PRECISION_BF16 : PE_PRECISION_FP32;
        pe_model *m = NULL;
        CHECK_MSG(pe_model_load(dir, &mp, &m) == PE_OK, "%s: %s", dir, pe_last_error());
        if (!m) break;
        pe_model_info info;
        CHECK(pe_model_get_info(m, &info) == PE_OK);
        CHECK(!strcmp(info.family, "dinov2") && info.feature_dim == 384 && info.patch_size == 14);
        CHECK(info.num_params == 22056576);
        pe_features feat;
        pe_status s = pe_model_forward(m, input, (int)sh_in[1], (int)sh_in[2], NULL, &feat);
        CHECK_MSG(s == PE_OK, "forward: %s", pe_last_error());
        if (!s) {
            CHECK(feat.grid_h == (int)grid[0] && feat.grid_w == (int)grid[1] && feat.dim == 384);
            const int64_t n = (int64_t)feat.grid_h * feat.grid_w;
            if (n == sh_f[0] && feat.dim == sh_f[1]) {
                if (!prec) {
                    double rel = rel_diff(feat.data, expected, n * feat.dim);
                    printf("  real dinov2-small fp32 vs onnxruntime: rel max abs diff %.3g\n", rel);
                    CHECK_MSG(rel <= 1e-4, "fp32: rel max abs diff %.3g > 1e-4", rel);
                } else {
                    double worst = 1;
                    for (int64_t i = 0; i < n; i++) {
                        double dot = 0, na = 0, nb = 0;
                        for (int k = 0; k < feat.dim; k++) {
                            double a = feat.data[i * feat.dim + k], b = expected[i * feat.dim + k];
                            dot += a * b, na += a * a, nb += b * b;
                        }
                        double cs = dot / sqrt(na * nb);
                        worst = cs < worst || cs != cs ? cs : worst;
                    }
                    printf("  real dinov2-small bf16 vs onnxruntime: worst patch cosine %.5f\n", worst);
                    CHECK_MSG(worst >= 0.99, "bf16: worst patch cosine %.5f < 0.99", worst);
                }
            }
            pe_features_free(&feat);
        }
        pe_model_free(m);
    }
    free(input);
    free(expected);
    free(grid);
}

int main(void)
{
    pe_set_threads(2);
    RUN(test_ops_resize_bicubic);
    RUN(test_ops_activations);
    RUN(test_ops_layernorm);
    RUN(test_ops_linear);
    RUN(test_vit_dinov2);
    RUN(test_vit_dinov2_reg);
    RUN(test_vit_clip);
    RUN(test_vit_openclip);
    RUN(test_vit_dinov2_f16);
    RUN(test_vit_clip_bf16);
    RUN(test_vit_scratch_reuse);
    RUN(test_vit_real_dinov2_small);
    return test_summary();
}
