/* test_vecmath.c — the element-wise kernels (vecmath.h) against double-precision
 * references, and their AVX-512 copies against the AVX2 ones: bit for bit, on tails of
 * every length, for exp, GELU, softmax, the bf16 rounding and a whole attention. */
#include "compute/engine.h"
#include "nn/ops.h"
#include "testlib.h"
#include "compute/vecmath.h"

#include <stdint.h>

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float urand(float lo, float hi) /* uniform in [lo, hi) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return lo + (hi - lo) * (float)((rng >> 40) * (1.0 / 16777216.0));
}

static int both_variants(void) { return vec_set_avx512(1), vec_avx512(); }

/* run fn(x, n) on a copy of src with the chosen copy of the kernels */
static void run_variant(int avx512, void (*fn)(float *, size_t), const float *src, float *dst,
                        size_t n)
{
    int prev = vec_set_avx512(avx512);
    memcpy(dst, src, n * sizeof *dst);
    fn(dst, n);
    vec_set_avx512(prev);
}

static void check_map(void (*fn)(float *, size_t), double (*ref)(double), float lo, float hi,
                      double rel_tol, double abs_tol)
{
    enum { N = 5000 };
    static float src[N], a[N], b[N];
    for (int i = 0; i < N; i++) src[i] = urand(lo, hi);
    const int two = both_variants();
    /* every tail length 1..40, then a long run */
    for (size_t n = 1; n <= N; n = n < 40 ? n + 1 : n < N ? N : N + 1) {
        run_variant(0, fn, src, a, n);
        for (size_t i = 0; i < n; i++) {
            double r = ref(src[i]);
            CHECK_MSG(fabs(a[i] - r) <= rel_tol * fabs(r) + abs_tol, "n %zu x %.9g: %.9g vs %.9g",
                      n, src[i], a[i], r);
        }
        if (two) {
            run_variant(1, fn, src, b, n);
            CHECK_MSG(!memcmp(a, b, n * sizeof *a), "AVX-512 and AVX2 copies differ at n = %zu", n);
        }
    }
}

static double gelu_ref(double x) { return 0.5 * x * (1.0 + erf(x / sqrt(2.0))); }

static double gelu_tanh_ref(double x)
{
    return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}
static void test_gelu_tanh(void)
{
    check_map(op_gelu_tanh, gelu_tanh_ref, -8.0f, 8.0f, 2e-6, 3e-7);
}

static void test_exp(void) { check_map(op_exp, exp, -80.0f, 80.0f, 3e-7, 0.0); }
static void test_gelu(void) { check_map(op_gelu, gelu_ref, -8.0f, 8.0f, 2e-6, 3e-7); }

static void test_softmax(void)
{
    enum { R = 7, C = 1037 };
    static float src[R * C], a[R * C], b[R * C];
    for (int i = 0; i < R * C; i++) src[i] = urand(-30.0f, 30.0f);
    for (int cols = 1; cols <= C; cols = cols < 33 ? cols + 1 : cols < C ? C : C + 1) {
        memcpy(a, src, sizeof a);
        int prev = vec_set_avx512(0);
        op_softmax_rows(a, R, cols, C);
        vec_set_avx512(prev);
        for (int r = 0; r < R; r++) {
            const float *x = src + (size_t)r * C;
            double mx = -INFINITY, sum = 0;
            for (int j = 0; j < cols; j++) mx = x[j] > mx ? x[j] : mx;
            for (int j = 0; j < cols; j++) sum += exp(x[j] - mx);
            for (int j = 0; j < cols; j++)
                CHECK_NEAR(a[(size_t)r * C + j], exp(x[j] - mx) / sum, 1e-6);
        }
        if (both_variants()) {
            memcpy(b, src, sizeof b);
            op_softmax_rows(b, R, cols, C);
            CHECK_MSG(!memcmp(a, b, sizeof a), "AVX-512 and AVX2 softmax differ at cols %d", cols);
        }
    }
}

/* bf16 rounding: ties to even, carries into the exponent, inf, NaN, subnormals */
static void test_bf16(void)
{
    enum { N = 4096 };
    static float src[N];
    static bf16_t a[N], b[N];
    const uint32_t special[] = {0x3f808000u, 0x3f818000u, 0x3f80ffffu, 0x7f7fffffu, 0x7f800000u,
                                0xff800000u, 0x7fc00000u, 0x7f800001u, 0xffc12345u, 0x00000001u,
                                0x807fffffu, 0x00008000u, 0x00018000u, 0x80000000u, 0x0u};
    const int ns = (int)(sizeof special / sizeof special[0]);
    for (int i = 0; i < N; i++) {
        if (i < ns) memcpy(&src[i], &special[i], 4);
        else src[i] = urand(-1e4f, 1e4f) * (i % 3 ? 1.0f : 1e-30f);
    }
    for (size_t n = 1; n <= N; n = n < 40 ? n + 1 : n < N ? N : N + 1) {
        int prev = vec_set_avx512(0);
        eng_to_bf16(a, src, n);
        vec_set_avx512(prev);
        for (size_t i = 0; i < n; i++) {
            const float want = eng_round_bf16(src[i]), got = eng_bf16_to_f32(a[i]);
            if (want != want) CHECK_MSG(got != got, "NaN at %zu not kept", i);
            else CHECK_MSG(!memcmp(&want, &got, 4), "x %a: %a vs %a", src[i], got, want);
        }
        if (both_variants()) {
            eng_to_bf16(b, src, n);
            CHECK_MSG(!memcmp(a, b, n * sizeof *a), "AVX-512 and AVX2 bf16 differ at n = %zu", n);
        }
    }
}

/* the layer norm (op_layernorm, op_layernorm_bf16): against double, and the AVX2 and
 * AVX-512 copies bit for bit, for widths that leave every tail of the 4-vector loop */
static void test_layernorm_variants(void)
{
    enum { R = 3, DMAX = 1100 };
    static float x[R * DMAX], g[DMAX], b[DMAX], y2[R * DMAX], y5[R * DMAX];
    static bf16_t h2[R * DMAX], h5[R * DMAX];
    const int dims[] = {1, 15, 16, 17, 64, 80, 384, 768, 1100};
    for (size_t c = 0; c < sizeof dims / sizeof *dims; c++) {
        const int dim = dims[c];
        for (int i = 0; i < R * dim; i++) x[i] = urand(-3.0f, 5.0f); /* a mean and a spread */
        for (int i = 0; i < dim; i++) g[i] = urand(0.5f, 1.5f), b[i] = urand(-1.0f, 1.0f);
        int prev = vec_set_avx512(0);
        op_layernorm(y2, x, g, b, R, dim, 1e-6f);
        op_layernorm_bf16(h2, x, g, b, R, dim, 1e-6f);
        vec_set_avx512(prev);
        double worst = 0;
        for (int r = 0; r < R; r++) {
            const float *xr = x + (size_t)r * dim;
            double mean = 0, var = 0;
            for (int i = 0; i < dim; i++) mean += xr[i];
            mean /= dim;
            for (int i = 0; i < dim; i++) var += (xr[i] - mean) * (xr[i] - mean);
            const double inv = 1.0 / sqrt(var / dim + 1e-6);
            for (int i = 0; i < dim; i++) {
                const double want = (xr[i] - mean) * inv * g[i] + b[i];
                worst = tl_worse(worst, fabs(y2[(size_t)r * dim + i] - want) / (1.0 + fabs(want)));
                CHECK_MSG(eng_bf16_to_f32(h2[(size_t)r * dim + i]) ==
                              eng_round_bf16(y2[(size_t)r * dim + i]),
                          "dim %d: the bf16 row is not the fp32 row rounded", dim);
            }
        }
        CHECK_MSG(worst <= 2e-6, "layernorm dim %d: error %g", dim, worst);
        if (both_variants()) {
            op_layernorm(y5, x, g, b, R, dim, 1e-6f);
            op_layernorm_bf16(h5, x, g, b, R, dim, 1e-6f);
            CHECK_MSG(!memcmp(y2, y5, (size_t)R * dim * sizeof *y2) &&
                          !memcmp(h2, h5, (size_t)R * dim * sizeof *h2),
                      "layernorm dim %d: AVX2 and AVX-512 differ", dim);
        }
    }
}

/* a whole multi-head attention (T = 257: one key block with a tail) in both precisions */
static void test_attention_variants(void)
{
    if (!both_variants()) {
        printf("# test_attention_variants: this CPU has no AVX-512, one copy of the kernels\n");
        return;
    }
    enum { T = 257, D = 96, H = 3 };
    static float qkv[T * 3 * D], a[T * D], b[T * D];
    for (int i = 0; i < T * 3 * D; i++) qkv[i] = urand(-2.0f, 2.0f);
    for (int prec = 0; prec < 2; prec++) {
        eng_ctx *ctx = eng_ctx_create(prec ? PE_PRECISION_BF16 : PE_PRECISION_FP32);
        eng_ctx *prev_ctx = eng_set_current(ctx);
        int prev = vec_set_avx512(0);
        CHECK(op_attention(a, qkv, T, D, H, 0.2f, NULL, 1, NULL, 0) == 0);
        vec_set_avx512(1);
        CHECK(op_attention(b, qkv, T, D, H, 0.2f, NULL, 1, NULL, 0) == 0);
        vec_set_avx512(prev);
        eng_set_current(prev_ctx);
        eng_ctx_free(ctx);
        CHECK_MSG(!memcmp(a, b, sizeof a), "attention (%s) differs between the copies",
                  prec ? "bf16" : "fp32");
    }
}

int main(void)
{
    RUN(test_layernorm_variants);
    printf("# element-wise kernels: %s copy by default on this CPU\n", vec_isa_name());
    RUN(test_exp);
    RUN(test_gelu);
    RUN(test_gelu_tanh);
    RUN(test_softmax);
    RUN(test_bf16);
    RUN(test_attention_variants);
    return test_summary();
}
