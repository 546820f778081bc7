/* test_int8.c — the accuracy gate of `--precision int8` (docs/ENGINE.md, "int8").
 *
 * Every ViT parity fixture (tests/fixtures/vit/<case>: each family and weight layout, at
 * its rectangular non-native size) runs in fp32 and in int8 on the same input; every
 * patch's int8 feature must point the way of its fp32 one: worst patch cosine >= 0.99
 * (the scoring uses only directions). A family that cannot pass must refuse int8 at load
 * (PE_ERR_UNSUPPORTED naming the family): the gate then checks the refusal instead. The
 * same for the real DINOv2 ViT-S/14 of `make weights` on the bundled tire image (SKIP
 * without it). The table is printed (family, case, worst and mean cosine). The int8
 * linear itself is checked in test_engine.c; the detection gate (tire I-AUROC) in
 * tests/cli_int8.sh.
 *
 * On a CPU without oneDNN's int8 brgemm kernels (AVX2, AVX-512 without VNNI; here also
 * DNNL_MAX_CPU_ISA=AVX2) int8 falls back as documented: the linears run in fp32, so int8
 * must not differ from fp32 there beyond the unfused GELU / LayerScale passes (max |diff| /
 * max |fp32| <= 1e-5) where the attention is fp32 too (no bf16 kernels), and must still
 * pass the gate where the attention runs in bf16 (AVX-512 without VNNI). */
#include "compute/engine.h"
#include "io/safetensors.h"
#include "patchead.h"
#include "testlib.h"

#include <math.h>
#include <sys/stat.h>

/* worst and mean cosine over the n rows (dim) of a against b */
static void cosines(const float *a, const float *b, int64_t n, int dim, double *worst, double *mean)
{
    *worst = 1.0;
    *mean = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double dot = 0, na = 0, nb = 0;
        for (int k = 0; k < dim; k++) {
            const double x = a[i * dim + k], y = b[i * dim + k];
            dot += x * y, na += x * x, nb += y * y;
        }
        const double c = na > 0 && nb > 0 ? dot / sqrt(na * nb) : (na == nb ? 1.0 : 0.0);
        if (c < *worst || c != c) *worst = c;
        *mean += c / (double)n;
    }
}

/* What an int8 model runs here: 1 int8 linears (oneDNN brgemm); 0 the fp32 fallback with
 * fp32 attention; -1 the fp32 fallback with bf16 attention (bf16 kernels but no int8 ones) */
static int int8_mode(void)
{
    static int mode = 2; /* not asked yet */
    if (mode != 2) return mode;
    if (!strncmp(eng_impl_name(PE_PRECISION_INT8, 1025, 1536, 384), "brg", 3)) return mode = 1;
    eng_ctx *c = eng_ctx_create(PE_PRECISION_INT8);
    const int attn_bf16 = c && eng_attention_bf16(c);
    eng_ctx_free(c);
    return mode = attn_bf16 ? -1 : 0;
}

/* max |a - b| / max |b| over n values */
static double rel_diff(const float *a, const float *b, size_t n)
{
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        const double e = fabs((double)a[i] - b[i]);
        if (!(e <= d)) d = e;
        if (fabs(b[i]) > m) m = fabs(b[i]);
    }
    return m > 0 ? d / m : d;
}

/* fp32 and int8 features of `dir` on input (3, H, W); returns the worst cosine, or 2 when
 * int8 was refused for the family (checked to say so), -1 on failure. */
static double gate_one(const char *dir, const char *label, const float *input, int H, int W)
{
    pe_features f[2] = {{0}};
    pe_model_info info = {0};
    for (int p = 0; p < 2; p++) {
        pe_model_params mp = pe_model_default_params();
        mp.precision = p ? PE_PRECISION_INT8 : PE_PRECISION_FP32;
        pe_model *m = NULL;
        const pe_status s = pe_model_load(dir, &mp, &m);
        if (p && s == PE_ERR_UNSUPPORTED) { /* refused: the message names the family */
            CHECK_MSG(strstr(pe_last_error(), info.family) && strstr(pe_last_error(), "int8"),
                      "%s: refusal does not name the family: %s", label, pe_last_error());
            printf("  %-12s %-22s int8 refused: %s\n", info.family, label, pe_last_error());
            pe_features_free(&f[0]);
            return 2.0;
        }
        CHECK_MSG(s == PE_OK, "load %s (%s): %s", dir, p ? "int8" : "fp32", pe_last_error());
        if (s) break;
        pe_model_get_info(m, &info);
        CHECK(info.precision == mp.precision);
        CHECK_MSG(pe_model_forward(m, input, H, W, NULL, &f[p]) == PE_OK, "%s forward: %s", label,
                  pe_last_error());
        pe_model_free(m);
    }
    double worst = -1, mean = 0;
    if (f[0].data && f[1].data && f[0].dim == f[1].dim && f[0].grid_h == f[1].grid_h &&
        f[0].grid_w == f[1].grid_w) {
        const size_t n = (size_t)f[0].grid_h * f[0].grid_w * f[0].dim;
        cosines(f[1].data, f[0].data, (int64_t)f[0].grid_h * f[0].grid_w, f[0].dim, &worst, &mean);
        const int mode = int8_mode();
        if (mode == 1)
            CHECK_MSG(memcmp(f[0].data, f[1].data, n * sizeof(float)),
                      "%s: int8 identical to fp32 (int8 path not taken?)", label);
        const double rd = rel_diff(f[1].data, f[0].data, n);
        if (mode == 0) /* the documented fallback: fp32 linears, fp32 attention */
            CHECK_MSG(rd <= 1e-5, "%s: no int8 kernels here, yet int8 differs from fp32 by rel %g",
                      label, rd);
        printf("  %-12s %-22s patches %4d dim %3d  worst cosine %.5f  mean %.6f%s\n", info.family,
               label, f[0].grid_h * f[0].grid_w, f[0].dim, worst, mean,
               mode == 1   ? ""
               : mode == 0 ? "  (fp32 fallback)"
                           : "  (fp32 linears, bf16 attention)");
        if (mode != 1 && !strcmp(label, "dinov2"))
            printf("# no int8 kernels here (%s): int8's linears run in fp32 (attention %s); vs "
                   "fp32 rel %.3g\n",
                   eng_impl_name(PE_PRECISION_INT8, 1025, 1536, 384), mode ? "bf16" : "fp32", rd);
        CHECK_MSG(worst >= 0.99, "%s (%s): int8 worst patch cosine %.5f < 0.99", label, info.family,
                  worst);
    }
    pe_features_free(&f[0]);
    pe_features_free(&f[1]);
    return worst;
}

static void test_gate_fixtures(void)
{
    static const char *cases[] = {"dinov2",     "dinov2_reg", "dinov2_f16",  "clip",
                                  "clip_bf16",  "openclip",   "siglip",      "siglip2",
                                  "dinov3",     "dinov3_glu", "dinov3_timm", "eva02",
                                  "pe_spatial", "mae",        "beit",        "beit_shared"};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char path[256];
        float *input = NULL;
        int nd;
        int64_t is[4];
        /* the f16 / bf16 weight files share the input of the model they were made from */
        const char *in = !strcmp(cases[i], "dinov2_f16")  ? "dinov2"
                         : !strcmp(cases[i], "clip_bf16") ? "clip"
                                                          : cases[i];
        snprintf(path, sizeof path, FIXTURE("vit/%s/input.npy"), in);
        CHECK_MSG(pe_npy_load(path, &input, &nd, is) == PE_OK && nd == 3 && is[0] == 3, "%s: %s",
                  path, pe_last_error());
        if (!input) continue;
        snprintf(path, sizeof path, FIXTURE("vit/%s"), cases[i]);
        gate_one(path, cases[i], input, (int)is[1], (int)is[2]);
        free(input);
    }
}

/* the real weights on the bundled tire image (98 x 126 px) */
static void test_gate_real_dinov2(void)
{
    struct stat st;
    if (stat("weights/dinov2_small_imgfocus/model.safetensors", &st) != 0) {
        SKIP("weights/dinov2_small_imgfocus absent (run `make weights`)");
        return;
    }
    st_file *f = NULL;
    float *input = NULL;
    int nd;
    int64_t sh[ST_MAX_DIMS];
    int ok = st_open(FIXTURE("vit/real_dinov2_small_imgfocus.safetensors"), &f) == PE_OK;
    ok = ok && !st_load_f32_any(f, "input", &input, &nd, sh) && nd == 3 && sh[0] == 3;
    st_close(f);
    CHECK_MSG(ok, "fixture: %s", pe_last_error());
    if (ok)
        gate_one("weights/dinov2_small_imgfocus", "real ViT-S/14 (tire)", input, (int)sh[1],
                 (int)sh[2]);
    /* and at 224 x 224 (the detection gate's size): the image tiled */
    if (ok) {
        const int S = 224, h = (int)sh[1], w = (int)sh[2];
        float *big = malloc((size_t)3 * S * S * sizeof *big);
        for (int c = 0; big && c < 3; c++)
            for (int y = 0; y < S; y++)
                for (int x = 0; x < S; x++)
                    big[((size_t)c * S + y) * S + x] = input[((size_t)c * h + y % h) * w + x % w];
        if (big) gate_one("weights/dinov2_small_imgfocus", "real ViT-S/14 (224 px)", big, S, S);
        free(big);
    }
    free(input);
}

/* CNN backbones refuse int8 with a message naming the model */
static void test_cnn_refuses(void)
{
    struct stat st;
    if (stat("weights/mobilenet_v2/model.safetensors", &st) != 0) {
        SKIP("weights/mobilenet_v2 absent (run `make weights`)");
        return;
    }
    pe_model_params mp = pe_model_default_params();
    mp.precision = PE_PRECISION_INT8;
    pe_model *m = NULL;
    CHECK(pe_model_load("weights/mobilenet_v2", &mp, &m) == PE_ERR_UNSUPPORTED && !m);
    CHECK_MSG(strstr(pe_last_error(), "int8") && strstr(pe_last_error(), "CNN"), "%s",
              pe_last_error());
}

int main(void)
{
    pe_set_threads(2);
    RUN(test_gate_fixtures);
    RUN(test_gate_real_dinov2);
    RUN(test_cnn_refuses);
    return test_summary();
}
