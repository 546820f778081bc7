/* test_engine.c — the compute engine (src/compute/engine.c, src/nn/attention.c) against plain
 * double-precision references computed here, in fp32 and bf16; GEMMs run concurrently
 * on several threads; the precision API; and bf16 parity of the ViT fixtures against
 * PyTorch fp32 (tests/fixtures/vit, tools/make_vit_fixtures.py) with its own bound.
 *
 * Bounds (max |diff| / max |ref|):
 *   fp32 GEMM / attention vs double ........................ 1e-5
 *   bf16 GEMM vs double on the bf16-rounded operands ....... 1e-5 (fp32 accumulation)
 *   bf16 GEMM / attention vs double on fp32 operands ....... 2e-2 (8-bit mantissa)
 *   bf16 ViT fixtures vs PyTorch fp32 ...................... 5e-2 (reported per fixture)
 *   int8 linear vs double on the same quantized operands ... 1e-5 (int32 sums exact)
 *   int8 linear vs double on fp32 operands ................. 2e-2 (7-bit levels per row)
 *   (the int8 accuracy gate of whole models: tests/test_int8.c)
 * On a CPU without oneDNN's int8 brgemm kernels (AVX2, AVX-512 without VNNI; here also
 * DNNL_MAX_CPU_ISA=AVX2) the int8 checks assert the documented fallback instead: an int8
 * context's linears give fp32's bits, its fused variants refuse (-1, output untouched) so
 * the caller runs them unfused. LayerScale's fused sum is likewise refused below
 * AVX-512-BF16 where oneDNN would only run its reference kernel (docs/ENGINE.md). */
#include "compute/engine.h"
#include "nn/ops.h"
#include "testlib.h"

#include <omp.h>

static uint64_t rng = 0x243f6a8885a308d3ULL;
static float frand(void) /* uniform in [-1, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)(rng >> 40) * (2.0f / 16777216.0f) - 1.0f;
}
static float *rand_buf(size_t n)
{
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = frand();
    return x;
}

/* max |a - b| / max |b| */
static double rel(const float *a, const double *b, size_t n)
{
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs(a[i] - b[i]);
        if (!(e <= d)) d = e;
        if (fabs(b[i]) > m) m = fabs(b[i]);
    }
    return m > 0 ? d / m : d;
}

/* C (M, N) = alpha A . op(B) + beta C0 + bias, in double; `round` rounds A, B to bf16 first */
static void ref_gemm(int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                     const float *B, int ldb, float beta, const float *C0, int ldc,
                     const float *bias, int round, double *out)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < K; k++) {
                float a = A[(size_t)i * lda + k];
                float b = trans_b ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                if (round) {
                    a = eng_round_bf16(a);
                    b = eng_round_bf16(b);
                }
                s += (double)a * b;
            }
            out[(size_t)i * N + j] =
                alpha * s + (beta != 0 ? beta * C0[(size_t)i * ldc + j] : 0) + (bias ? bias[j] : 0);
        }
}

static void test_precision_api(void)
{
    pe_precision p;
    CHECK(pe_precision_parse("int8", &p) == PE_OK && p == PE_PRECISION_INT8);
    CHECK(!strcmp(pe_precision_name(PE_PRECISION_INT8), "int8"));
    CHECK(pe_precision_resolve(PE_PRECISION_INT8) == PE_PRECISION_INT8);
    CHECK(pe_precision_resolve(PE_PRECISION_AUTO) != PE_PRECISION_INT8);
    CHECK(pe_precision_parse("fp32", &p) == PE_OK && p == PE_PRECISION_FP32);
    CHECK(pe_precision_parse("BF16", &p) == PE_OK && p == PE_PRECISION_BF16);
    CHECK(pe_precision_parse("auto", &p) == PE_OK && p == PE_PRECISION_AUTO);
    CHECK(pe_precision_parse("fp16", &p) == PE_ERR_ARG && strstr(pe_last_error(), "fp16"));
    CHECK(pe_precision_parse(NULL, &p) == PE_ERR_ARG);
    CHECK(!strcmp(pe_precision_name(PE_PRECISION_BF16), "bf16"));
    CHECK(pe_precision_resolve(PE_PRECISION_FP32) == PE_PRECISION_FP32);
    CHECK(pe_precision_resolve(PE_PRECISION_BF16) == PE_PRECISION_BF16);
    CHECK(pe_precision_resolve(PE_PRECISION_AUTO) ==
          (eng_native_bf16() ? PE_PRECISION_BF16 : PE_PRECISION_FP32));
    CHECK(strlen(pe_engine_isa()) > 0 && strcmp(pe_engine_isa(), "unknown"));
    printf("  engine ISA %s, native bf16 %d\n", pe_engine_isa(), eng_native_bf16());
    /* rounding: nearest even on the 16 dropped bits; specials kept */
    CHECK(eng_round_bf16(1.0f) == 1.0f);
    CHECK(eng_round_bf16(1.0f + 1.0f / 256) == 1.0f);              /* tie -> even (down) */
    CHECK(eng_round_bf16(1.0f + 3.0f / 256) == 1.0f + 4.0f / 256); /* tie -> even (up) */
    CHECK(isinf(eng_round_bf16(INFINITY)) && isnan(eng_round_bf16(NAN)));
    bf16_t h[3];
    const float x[3] = {1.0f + 3.0f / 256, -2.5f, NAN};
    eng_to_bf16(h, x, 3);
    CHECK(eng_bf16_to_f32(h[0]) == eng_round_bf16(x[0]) && eng_bf16_to_f32(h[1]) == -2.5f);
    CHECK(isnan(eng_bf16_to_f32(h[2])));
}

static void test_gemm(void)
{
    /* shapes with odd sizes, strided operands, both B layouts, alpha/beta/bias */
    static const int shapes[][3] = {{1, 1, 1}, {7, 13, 5}, {65, 33, 129}, {257, 96, 64}};
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        const int M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
        const int lda = K + 3, ldc = N + 2;
        for (int tb = 0; tb < 2; tb++)
            for (int variant = 0; variant < 3; variant++) {
                const int ldb = (tb ? K : N) + 1;
                float alpha = variant == 2 ? 0.125f : 1.0f, beta = variant == 1 ? 1.0f : 0.0f;
                float *A = rand_buf((size_t)M * lda), *B = rand_buf((size_t)(tb ? N : K) * ldb);
                float *C0 = rand_buf((size_t)M * ldc),
                      *bias = variant == 1 ? rand_buf((size_t)N) : NULL;
                float *C = malloc((size_t)M * ldc * sizeof *C);
                double *ref = malloc((size_t)M * N * sizeof *ref),
                       *ref16 = malloc((size_t)M * N * sizeof *ref);
                float *got = malloc((size_t)M * N * sizeof *got);
                ref_gemm(tb, M, N, K, alpha, A, lda, B, ldb, beta, C0, ldc, bias, 0, ref);
                ref_gemm(tb, M, N, K, alpha, A, lda, B, ldb, beta, C0, ldc, bias, 1, ref16);
                for (int prec = 0; prec < 2; prec++) {
                    memcpy(C, C0, (size_t)M * ldc * sizeof *C);
                    int rc = eng_gemm(prec ? PE_PRECISION_BF16 : PE_PRECISION_FP32, tb, M, N, K,
                                      alpha, A, lda, B, ldb, beta, C, ldc, bias);
                    CHECK_MSG(rc == 0, "eng_gemm %dx%dx%d failed", M, N, K);
                    for (int i = 0; i < M; i++)
                        memcpy(got + (size_t)i * N, C + (size_t)i * ldc, N * sizeof *got);
                    double d = rel(got, prec ? ref16 : ref, (size_t)M * N);
                    CHECK_MSG(d <= 1e-5, "%s %dx%dx%d trans_b %d variant %d: rel %g",
                              prec ? "bf16" : "fp32", M, N, K, tb, variant, d);
                    if (prec) {
                        double d32 = rel(got, ref, (size_t)M * N);
                        CHECK_MSG(d32 <= 2e-2, "bf16 vs fp32 reference %dx%dx%d: rel %g", M, N, K,
                                  d32);
                    }
                    /* the row padding of C is left alone */
                    for (int i = 0; i < M; i++)
                        for (int j = N; j < ldc; j++)
                            CHECK(C[(size_t)i * ldc + j] == C0[(size_t)i * ldc + j]);
                }
                free(A), free(B), free(C0), free(bias), free(C), free(ref), free(ref16), free(got);
            }
    }
}

/* eng_linear: weights reordered once per context; several row counts share one weight;
 * beta = 1 accumulates (residual projection). */
static void test_linear(void)
{
    const int N = 96, K = 80;
    float *W = rand_buf((size_t)N * K), *bias = rand_buf(N);
    for (int prec = 0; prec < 2; prec++) {
        eng_ctx *ctx = eng_ctx_create(prec ? PE_PRECISION_BF16 : PE_PRECISION_FP32);
        CHECK(ctx && eng_ctx_precision(ctx) == (prec ? PE_PRECISION_BF16 : PE_PRECISION_FP32));
        const int rows[] = {37, 200, 37};
        for (int r = 0; r < 3; r++) {
            const int M = rows[r];
            float *A = rand_buf((size_t)M * K), *C = rand_buf((size_t)M * N);
            float *C0 = malloc((size_t)M * N * sizeof *C0);
            memcpy(C0, C, (size_t)M * N * sizeof *C);
            double *ref = malloc((size_t)M * N * sizeof *ref);
            for (int beta = 0; beta < 2; beta++) {
                if (beta) memcpy(C, C0, (size_t)M * N * sizeof *C);
                CHECK(eng_linear(ctx, M, N, K, A, K, W, (float)beta, C, N, bias) == 0);
                ref_gemm(1, M, N, K, 1.0f, A, K, W, K, (float)beta, C0, N, bias, prec, ref);
                double d = rel(C, ref, (size_t)M * N);
                CHECK_MSG(d <= 1e-5, "linear %s M %d beta %d: rel %g", prec ? "bf16" : "fp32", M,
                          beta, d);
            }
            free(A), free(C), free(C0), free(ref);
        }
        /* op_linear picks the current context's precision */
        eng_ctx *prev = eng_set_current(ctx);
        CHECK(eng_current() == ctx);
        float *A = rand_buf((size_t)5 * K), *out = malloc((size_t)5 * N * sizeof *out);
        double *ref = malloc((size_t)5 * N * sizeof *ref);
        op_linear(out, A, W, bias, 5, K, N);
        ref_gemm(1, 5, N, K, 1.0f, A, K, W, K, 0, NULL, N, bias, prec, ref);
        CHECK(rel(out, ref, (size_t)5 * N) <= 1e-5);
        eng_set_current(prev);
        free(A), free(out), free(ref);
        eng_ctx_free(ctx);
    }
    free(W), free(bias);
}

/* The int8 linear (INT8 contexts): against a double reference of the quantized
 * arithmetic (W's rows and A's rows quantized by eng_quantize_s8, the int32 sums exact,
 * then scaled: 1e-5, only the fp32 epilogue rounds) and against the fp32 product (2e-2),
 * on ragged shapes (a single row, K not a multiple of 4, M over several row chunks), into
 * a strided C, with beta 1, a fused activation, LayerScale, a zero row and a NaN row;
 * and a smoothed weight (a layer norm's gamma / beta given: eng_int8_norm_input) still
 * within the fp32 bound. */
/* 1 where oneDNN has int8 brgemm kernels (AMX, AVX-512-VNNI): the only ones the engine
 * takes for int8; elsewhere an int8 context's linears run in fp32 (docs/ENGINE.md, "int8") */
static int int8_kernels(void)
{
    return !strncmp(eng_impl_name(PE_PRECISION_INT8, 1025, 1536, 384), "brg", 3);
}

/* LayerScale's fused sum (eng_linear_scaled_add): refused (-1, X untouched) where its
 * oneDNN kernel would be the reference one, documented for AVX2 and AVX-512 without
 * bf16; it must run where the CPU has native bf16. rc 0: X holds the product (checked by
 * the caller); returns 1 when the refusal was accepted (X checked untouched). */
static int scaled_add_refused(int rc, const float *X, const float *X0, size_t n, const char *what)
{
    if (rc == 0) return 0;
    CHECK_MSG(!eng_native_bf16(), "%s: eng_linear_scaled_add refused on a CPU with native bf16",
              what);
    CHECK_MSG(rc == -1 && !memcmp(X, X0, n * sizeof *X), "%s: refused (%d) but X was written", what,
              rc);
    return 1;
}

static void test_linear_int8(void)
{
    static const int shapes[][3] = {{1, 7, 5}, {37, 96, 80}, {300, 130, 77}, {129, 64, 1536}};
    const int native = int8_kernels();
    if (!native)
        printf("# no int8 kernels here (%s, ISA %s): an int8 context's linears must be fp32's\n",
               eng_impl_name(PE_PRECISION_INT8, 1025, 1536, 384), eng_isa_name());
    for (int sh = 0; sh < 4; sh++) {
        const int M = shapes[sh][0], N = shapes[sh][1], K = shapes[sh][2], ldc = N + 3;
        float *W = rand_buf((size_t)N * K), *bias = rand_buf(N), *A = rand_buf((size_t)M * K);
        float *ls = rand_buf(N);
        for (int i = 0; i < M; i++) /* a few outlier channels, as after a layer norm */
            for (int k = 0; k < K; k += 17) A[(size_t)i * K + k] *= 12.0f;
        if (M > 2) memset(A + K, 0, (size_t)K * sizeof *A); /* row 1: zeros */
        int8_t *qw = malloc((size_t)N * K), *qa = malloc((size_t)M * K);
        float *cw = malloc((size_t)N * sizeof *cw), *ra = malloc((size_t)M * sizeof *ra);
        for (int n = 0; n < N; n++)
            cw[n] = eng_quantize_s8(qw + (size_t)n * K, W + (size_t)n * K, K);
        for (int i = 0; i < M; i++)
            ra[i] = eng_quantize_s8(qa + (size_t)i * K, A + (size_t)i * K, K);
        double *q = malloc((size_t)M * N * sizeof *q), *f = malloc((size_t)M * N * sizeof *f);
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                double sq = 0, sf = 0;
                for (int k = 0; k < K; k++) {
                    sq += (double)qa[(size_t)i * K + k] * qw[(size_t)j * K + k];
                    sf += (double)A[(size_t)i * K + k] * W[(size_t)j * K + k];
                }
                q[(size_t)i * N + j] = sq * ra[i] * cw[j] + bias[j];
                f[(size_t)i * N + j] = sf + bias[j];
            }
        eng_ctx *ctx = eng_ctx_create(PE_PRECISION_INT8);
        CHECK(ctx && eng_ctx_precision(ctx) == PE_PRECISION_INT8);
        float *C = malloc((size_t)M * ldc * sizeof *C), *C0 = rand_buf((size_t)M * ldc);
        double *want = malloc((size_t)M * N * sizeof *want);
        float *got = malloc((size_t)M * N * sizeof *got);
        for (int v = 0; v < 4; v++) { /* plain, beta 1, GELU, LayerScale + sum */
            memcpy(C, C0, (size_t)M * ldc * sizeof *C);
            int rc;
            if (v == 0) rc = eng_linear(ctx, M, N, K, A, K, W, 0.0f, C, ldc, bias);
            else if (v == 1) rc = eng_linear(ctx, M, N, K, A, K, W, 1.0f, C, ldc, bias);
            else if (v == 2)
                rc = eng_linear_act_f32(ctx, M, N, K, A, K, W, bias, ENG_ACT_GELU, C, ldc);
            else rc = eng_linear_scaled_add(ctx, M, N, K, A, 0, W, bias, ls, C, ldc);
            if (!native) {
                /* the fallback: the plain linear is the fp32 one, bit for bit; the fused
                 * variants refuse and leave C alone (the model runs them unfused) */
                if (v >= 2) {
                    CHECK_MSG(rc == -1 && !memcmp(C, C0, (size_t)M * ldc * sizeof *C),
                              "int8 fallback %dx%dx%d variant %d: rc %d, C %s", M, N, K, v, rc,
                              memcmp(C, C0, (size_t)M * ldc * sizeof *C) ? "written" : "kept");
                    continue;
                }
                eng_ctx *fp = eng_ctx_create(PE_PRECISION_FP32);
                float *Cf = malloc((size_t)M * ldc * sizeof *Cf);
                memcpy(Cf, C0, (size_t)M * ldc * sizeof *Cf);
                CHECK(eng_linear(fp, M, N, K, A, K, W, (float)v, Cf, ldc, bias) == 0);
                CHECK_MSG(rc == 0 && !memcmp(C, Cf, (size_t)M * ldc * sizeof *C),
                          "int8 fallback %dx%dx%d variant %d: rc %d, not fp32's bits", M, N, K, v,
                          rc);
                eng_ctx_free(fp);
                free(Cf);
                continue;
            }
            CHECK_MSG(rc == 0, "int8 linear %dx%dx%d variant %d failed", M, N, K, v);
            for (int ref = 0; ref < 2; ref++) {
                const double *base = ref ? f : q;
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < N; j++) {
                        const double y = base[(size_t)i * N + j], c0 = C0[(size_t)i * ldc + j];
                        want[(size_t)i * N + j] = v == 0   ? y
                                                  : v == 1 ? c0 + y
                                                  : v == 2 ? tl_act_ref(ENG_ACT_GELU, y)
                                                           : c0 + ls[j] * y;
                        got[(size_t)i * N + j] = C[(size_t)i * ldc + j];
                    }
                const double d = rel(got, want, (size_t)M * N);
                CHECK_MSG(d <= (ref ? 2e-2 : 1e-5), "int8 %dx%dx%d variant %d vs %s: rel %g", M, N,
                          K, v, ref ? "fp32" : "quantized", d);
                if (v == 0)
                    printf("  int8 %4dx%4dx%4d vs %-9s rel %.3g\n", M, N, K,
                           ref ? "fp32" : "quantized", d);
            }
            for (int i = 0; i < M; i++) /* the padding between rows is not written */
                for (int j = N; j < ldc; j++)
                    CHECK(C[(size_t)i * ldc + j] == C0[(size_t)i * ldc + j]);
        }
        if (M > 2) { /* a NaN in a row: that row's outputs are not finite, the others are */
            const float keep = A[(size_t)2 * K];
            A[(size_t)2 * K] = NAN;
            CHECK(eng_linear(ctx, M, N, K, A, K, W, 0.0f, C, ldc, bias) == 0);
            CHECK(!isfinite(C[(size_t)2 * ldc]) && isfinite(C[0]) &&
                  isfinite(C[(size_t)M * ldc - 4]));
            A[(size_t)2 * K] = keep;
        }
        eng_ctx_free(ctx);
        /* smoothed: rows as a layer norm writes them, n * gamma + beta (gamma spread over
         * 0.1 .. 12 by channel), the norm's gamma / beta given for W; and unsmoothed for
         * comparison */
        float *gamma = rand_buf(K), *beta = rand_buf(K);
        for (int k = 0; k < K; k++) gamma[k] = k % 17 ? 0.1f + fabsf(gamma[k]) : 12.0f;
        for (int i = 0; i < M; i++)
            for (int k = 0; k < K; k++)
                A[(size_t)i * K + k] = frand() * 1.7f * gamma[k] + 0.2f * beta[k];
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                double sf = 0;
                for (int k = 0; k < K; k++)
                    sf += (double)A[(size_t)i * K + k] * W[(size_t)j * K + k];
                f[(size_t)i * N + j] = sf + bias[j];
            }
        double ds[2];
        for (int sm = 0; sm < 2; sm++) {
            ctx = eng_ctx_create(PE_PRECISION_INT8);
            if (sm) eng_int8_norm_input(ctx, W, gamma, beta, K);
            CHECK(eng_linear(ctx, M, N, K, A, K, W, 0.0f, C, N, bias) == 0);
            ds[sm] = rel(C, f, (size_t)M * N);
            eng_ctx_free(ctx);
        }
        printf("  int8 %4dx%4dx%4d norm-like rows vs fp32: rel %.3g, smoothed %.3g\n", M, N, K,
               ds[0], ds[1]);
        if (native)
            CHECK_MSG(ds[1] <= 2e-2 && ds[1] < ds[0],
                      "int8 smoothed %dx%dx%d vs fp32: rel %g (unsmoothed %g)", M, N, K, ds[1],
                      ds[0]);
        else /* fp32 either way: the smoothing has nothing to act on */
            CHECK_MSG(ds[0] == ds[1] && ds[0] <= 1e-5,
                      "int8 fallback %dx%dx%d vs fp32: rel %g (with the norm's input %g)", M, N, K,
                      ds[0], ds[1]);
        free(gamma), free(beta);
        free(W), free(bias), free(A), free(ls), free(qw), free(qa), free(cw), free(ra), free(q),
            free(f);
        free(C), free(C0), free(want), free(got);
    }
    /* a weight quantized exactly (integers, each row reaching 127) times rows of integers
     * reaching 127: the int8 product is the exact fp32 one */
    const int M = 40, N = 24, K = 33;
    float *W = malloc((size_t)N * K * sizeof *W), *A = malloc((size_t)M * K * sizeof *A);
    for (int i = 0; i < N * K; i++) W[i] = (float)((i * 37) % 255 - 127);
    for (int i = 0; i < M * K; i++) A[i] = (float)((i * 53) % 255 - 127);
    for (int n = 0; n < N; n++) W[(size_t)n * K] = 127.0f;
    for (int i = 0; i < M; i++) A[(size_t)i * K] = -127.0f;
    float *C = malloc((size_t)M * N * sizeof *C);
    double *ref = malloc((size_t)M * N * sizeof *ref);
    eng_ctx *ctx = eng_ctx_create(PE_PRECISION_INT8);
    CHECK(eng_linear(ctx, M, N, K, A, K, W, 0.0f, C, N, NULL) == 0);
    ref_gemm(1, M, N, K, 1.0f, A, K, W, K, 0.0f, NULL, N, NULL, 0, ref);
    CHECK_MSG(rel(C, ref, (size_t)M * N) <= 1e-6, "int8 on exact levels: rel %g",
              rel(C, ref, (size_t)M * N));
    printf("  int8 impl: %s\n", eng_impl_name(PE_PRECISION_INT8, 1025, 1536, 384));
    eng_ctx_free(ctx);
    free(W), free(A), free(C), free(ref);
}

/* Fused activations: eng_linear_act_f32 (fp32) against double. The bf16 block path: op_layernorm_bf16 stores exactly op_layernorm's rows rounded to
 * bf16; eng_linear_bf16 writes act(A W^T + b) as bf16 for every activation (vs double on
 * the rounded operands: the output's own bf16 rounding, 2^-8, bounds it), or fp32 with
 * beta 0 / 1; contexts in fp32 refuse it (the caller's fp32 path then runs). */

/* Large products with a prepared weight run as row chunks taken by the threads
 * dynamically (run_matmul_chunked): the same values as the product whole, for every
 * entry point that reaches it (bf16 linears into fp32 and, with an activation, into bf16;
 * LayerScale's scaled sum), with a short last chunk. fp32 (weights used in place) keeps
 * oneDNN's own split: checked to give the same values with the setting either way. */
static void test_chunked_rows(void)
{
    const int M = 1000, N = 96, K = 80;
    float *A = rand_buf((size_t)M * K), *W = rand_buf((size_t)N * K), *bias = rand_buf(N);
    float *ls = rand_buf(N), *X0 = rand_buf((size_t)M * N);
    float *out[2], *x[2];
    bf16_t *a16 = malloc((size_t)M * K * sizeof *a16), *h[2];
    eng_to_bf16(a16, A, (size_t)M * K);
    omp_set_num_threads(2); /* (chunks need two threads; also on a one-core machine) */
    for (int prec = 0; prec < 2; prec++) {
        eng_ctx *c = eng_ctx_create(prec ? PE_PRECISION_BF16 : PE_PRECISION_FP32);
        if (prec && !eng_bf16_direct(c)) {
            printf("# test_chunked_rows: no bf16 kernels here, fp32 only\n");
            eng_ctx_free(c);
            break;
        }
        for (int v = 0; v < 2;
             v++) { /* v = 0: whole, v = 1: chunks of 110 rows (the last 10 join the 9th) */
            const int before = eng_set_chunk_rows(v ? 110 : 0);
            out[v] = malloc((size_t)M * N * sizeof(float));
            h[v] = calloc((size_t)M * N, sizeof(bf16_t));
            x[v] = malloc((size_t)M * N * sizeof(float));
            memcpy(x[v], X0, (size_t)M * N * sizeof(float));
            if (prec) {
                CHECK(eng_linear_bf16(c, M, N, K, a16, W, bias, ENG_ACT_NONE, 0.0f, out[v], N,
                                      NULL) == 0);
                CHECK(eng_linear_bf16(c, M, N, K, a16, W, bias, ENG_ACT_GELU, 0.0f, NULL, 0,
                                      h[v]) == 0);
                scaled_add_refused(eng_linear_scaled_add(c, M, N, K, a16, 1, W, bias, ls, x[v], N),
                                   x[v], X0, (size_t)M * N, "bf16 chunked rows");
            } else {
                CHECK(eng_linear(c, M, N, K, A, K, W, 0.0f, out[v], N, bias) == 0);
                scaled_add_refused(eng_linear_scaled_add(c, M, N, K, A, 0, W, bias, ls, x[v], N),
                                   x[v], X0, (size_t)M * N, "fp32 chunked rows");
            }
            eng_set_chunk_rows(before);
        }
        const size_t n = (size_t)M * N;
        CHECK_MSG(!memcmp(out[0], out[1], n * sizeof(float)), "%s linear: chunks differ",
                  prec ? "bf16" : "fp32");
        CHECK_MSG(!memcmp(h[0], h[1], n * sizeof(bf16_t)), "bf16 GELU output: chunks differ");
        CHECK_MSG(!memcmp(x[0], x[1], n * sizeof(float)), "%s scaled sum: chunks differ",
                  prec ? "bf16" : "fp32");
        for (int v = 0; v < 2; v++) free(out[v]), free(h[v]), free(x[v]);
        eng_ctx_free(c);
    }
    omp_set_num_threads(pe_get_threads());
    free(A), free(W), free(bias), free(ls), free(X0), free(a16);
}

static void test_linear_fused(void)
{
    const int M = 77, N = 96, K = 80;
    float *A = rand_buf((size_t)M * K), *W = rand_buf((size_t)N * K), *bias = rand_buf(N);
    float *gamma = rand_buf(K), *beta = rand_buf(K);
    for (int i = 0; i < M * K; i++) A[i] *= 3.0f; /* rows with a mean and a spread */
    eng_ctx *fp = eng_ctx_create(PE_PRECISION_FP32), *bf = eng_ctx_create(PE_PRECISION_BF16);
    bf16_t *a16 = malloc((size_t)M * K * sizeof *a16), *o16 = malloc((size_t)M * N * sizeof *o16);
    float *ln = malloc((size_t)M * K * sizeof *ln), *C = rand_buf((size_t)M * N);
    float *C0 = malloc((size_t)M * N * sizeof *C0), *a_r = malloc((size_t)M * K * sizeof *a_r);
    double *ref = malloc((size_t)M * N * sizeof *ref);
    memcpy(C0, C, (size_t)M * N * sizeof *C);
    /* the norm: the same rows as op_layernorm's, rounded once */
    op_layernorm_bf16(a16, A, gamma, beta, M, K, 1e-6f);
    op_layernorm(ln, A, gamma, beta, M, K, 1e-6f);
    int same = 1;
    for (int i = 0; i < M * K; i++) {
        same &= eng_bf16_to_f32(a16[i]) == eng_round_bf16(ln[i]);
        a_r[i] = eng_bf16_to_f32(a16[i]);
    }
    CHECK_MSG(same, "op_layernorm_bf16 differs from op_layernorm rounded to bf16");
    CHECK(eng_linear_bf16(fp, M, N, K, a16, W, bias, ENG_ACT_NONE, 0.0f, C, N, NULL) == -1);
    /* fp32: the activation fused into the fp32 GEMM (A as given, not rounded) */
    for (int act = ENG_ACT_GELU; act <= ENG_ACT_SILU; act++) {
        CHECK(eng_linear_act_f32(fp, M, N, K, A, K, W, bias, act, C, N) == 0);
        ref_gemm(1, M, N, K, 1.0f, A, K, W, K, 0.0f, NULL, N, bias, 0, ref);
        for (int i = 0; i < M * N; i++) ref[i] = tl_act_ref(act, ref[i]);
        CHECK_MSG(rel(C, ref, (size_t)M * N) <= 1e-5, "fp32 act %d: rel %g", act,
                  rel(C, ref, (size_t)M * N));
    }
    CHECK(eng_linear_act_f32(bf, M, N, K, A, K, W, bias, ENG_ACT_GELU, C, N) == -1);
    /* LayerScale's scaled residual add: X += scale * (A W^T + b), fp32 and (below) bf16 */
    float *scale = rand_buf(N);
    memcpy(C, C0, (size_t)M * N * sizeof *C);
    if (!scaled_add_refused(eng_linear_scaled_add(fp, M, N, K, A, 0, W, bias, scale, C, N), C, C0,
                            (size_t)M * N, "fp32 scaled add")) {
        ref_gemm(1, M, N, K, 1.0f, A, K, W, K, 0.0f, NULL, N, bias, 0, ref);
        for (int i = 0; i < M * N; i++) ref[i] = C0[i] + scale[i % N] * ref[i];
        CHECK_MSG(rel(C, ref, (size_t)M * N) <= 1e-5, "fp32 scaled add: rel %g",
                  rel(C, ref, (size_t)M * N));
    }
    CHECK(eng_linear_scaled_add(fp, M, N, K, a16, 1, W, bias, scale, C, N) == -1);
    CHECK(eng_linear_scaled_add(fp, M, N, K, A, 0, W, bias, NULL, C, N) == -1);
    CHECK(eng_linear_act_f32(fp, M, N, K, A, K, W, bias, ENG_ACT_NONE, C, N) == -1);
    if (!eng_bf16_direct(bf)) {
        printf("# no bf16 kernels here: eng_linear_bf16 refuses (checked above for fp32)\n");
        CHECK(eng_linear_bf16(bf, M, N, K, a16, W, bias, ENG_ACT_NONE, 0.0f, C, N, NULL) == -1);
    } else {
        for (int act = ENG_ACT_NONE; act <= ENG_ACT_SILU; act++) {
            CHECK(eng_linear_bf16(bf, M, N, K, a16, W, bias, act, 0.0f, NULL, 0, o16) == 0);
            ref_gemm(1, M, N, K, 1.0f, a_r, K, W, K, 0.0f, NULL, N, bias, 1, ref);
            double d = 0, mx = 0;
            for (int i = 0; i < M * N; i++) {
                const double want = tl_act_ref(act, ref[i]);
                d = tl_worse(d, fabs(eng_bf16_to_f32(o16[i]) - want));
                mx = fmax(mx, fabs(want));
            }
            CHECK_MSG(d <= 8e-3 * mx, "bf16 out, act %d: max diff %g of %g", act, d, mx);
        }
        for (int b = 0; b < 2; b++) {
            memcpy(C, C0, (size_t)M * N * sizeof *C);
            CHECK(eng_linear_bf16(bf, M, N, K, a16, W, bias, ENG_ACT_NONE, (float)b, C, N, NULL) ==
                  0);
            ref_gemm(1, M, N, K, 1.0f, a_r, K, W, K, (float)b, C0, N, bias, 1, ref);
            CHECK_MSG(rel(C, ref, (size_t)M * N) <= 1e-5, "fp32 out, beta %d: rel %g", b,
                      rel(C, ref, (size_t)M * N));
            /* into a column block of wider rows (ldc = N + 40; through a dense buffer):
             * the same values, the other columns untouched */
            const int ldw = N + 40;
            float *wide = malloc((size_t)M * ldw * sizeof *wide);
            for (int i = 0; i < M; i++)
                for (int j = 0; j < ldw; j++)
                    wide[(size_t)i * ldw + j] = j < N ? C0[(size_t)i * N + j] : (float)j;
            CHECK(eng_linear_bf16(bf, M, N, K, a16, W, bias, ENG_ACT_NONE, (float)b, wide, ldw,
                                  NULL) == 0);
            int exact = 1;
            for (int i = 0; i < M; i++)
                for (int j = 0; j < ldw; j++)
                    exact &= wide[(size_t)i * ldw + j] == (j < N ? C[(size_t)i * N + j] : (float)j);
            CHECK_MSG(exact, "fp32 out with ldc %d, beta %d: differs from the dense output", ldw,
                      b);
            free(wide);
        }
        for (int from16 = 0; from16 < 2; from16++) { /* bf16 rows, or fp32 rounded inside */
            memcpy(C, C0, (size_t)M * N * sizeof *C);
            if (scaled_add_refused(eng_linear_scaled_add(
                                       bf, M, N, K, from16 ? (const void *)a16 : (const void *)a_r,
                                       from16, W, bias, scale, C, N),
                                   C, C0, (size_t)M * N, "bf16 scaled add"))
                continue;
            ref_gemm(1, M, N, K, 1.0f, a_r, K, W, K, 0.0f, NULL, N, bias, 1, ref);
            for (int i = 0; i < M * N; i++) ref[i] = C0[i] + scale[i % N] * ref[i];
            CHECK_MSG(rel(C, ref, (size_t)M * N) <= 1e-5, "bf16 scaled add (%s rows): rel %g",
                      from16 ? "bf16" : "fp32", rel(C, ref, (size_t)M * N));
        }
        /* not offered: an activation into fp32, beta with a bf16 output */
        CHECK(eng_linear_bf16(bf, M, N, K, a16, W, bias, ENG_ACT_GELU, 0.0f, C, N, NULL) == -1);
        CHECK(eng_linear_bf16(bf, M, N, K, a16, W, bias, ENG_ACT_NONE, 1.0f, NULL, 0, o16) == -1);
    }
    eng_ctx_free(fp), eng_ctx_free(bf);
    free(A), free(W), free(bias), free(gamma), free(beta), free(a16), free(o16), free(ln);
    free(C), free(C0), free(a_r), free(ref), free(scale);
}

/* The same primitive run on 4 threads at once (as scoring and attention do) gives each
 * thread the serial result. */
static void test_concurrent(void)
{
    const int M = 150, N = 300, K = 128, THREADS = 4;
    float *A = rand_buf((size_t)THREADS * M * K), *B = rand_buf((size_t)N * K);
    float *serial = malloc((size_t)THREADS * M * N * sizeof *serial);
    float *par = malloc((size_t)THREADS * M * N * sizeof *par);
    for (int prec = 0; prec < 2; prec++) {
        pe_precision p = prec ? PE_PRECISION_BF16 : PE_PRECISION_FP32;
        for (int t = 0; t < THREADS; t++)
            CHECK(eng_gemm(p, 1, M, N, K, 1.0f, A + (size_t)t * M * K, K, B, K, 0.0f,
                           serial + (size_t)t * M * N, N, NULL) == 0);
        int failed = 0;
        for (int rep = 0; rep < 5; rep++) {
#pragma omp parallel for num_threads(THREADS) reduction(| : failed)
            for (int t = 0; t < THREADS; t++)
                failed |= eng_gemm(p, 1, M, N, K, 1.0f, A + (size_t)t * M * K, K, B, K, 0.0f,
                                   par + (size_t)t * M * N, N, NULL);
            double worst = 0;
            for (size_t i = 0; i < (size_t)THREADS * M * N; i++) {
                double e = fabs(par[i] - serial[i]) / (fabs(serial[i]) + 1);
                if (!(e <= worst)) worst = e;
            }
            CHECK_MSG(worst <= 1e-5, "%s concurrent vs serial: %g", prec ? "bf16" : "fp32", worst);
        }
        CHECK(!failed);
    }
    free(A), free(B), free(serial), free(par);
}

/* Naive attention in double: ctx and the CLS row (mean over heads, keys >= first). */
static void ref_attention(const float *qkv, int T, int D, int H, float scale, int first,
                          double *ctx, double *cls)
{
    const int dh = D / H, ld = 3 * D;
    double *p = malloc((size_t)T * sizeof *p);
    for (int j = first; j < T; j++) cls[j - first] = 0;
    for (int h = 0; h < H; h++)
        for (int i = 0; i < T; i++) {
            double mx = -INFINITY, sum = 0;
            for (int j = 0; j < T; j++) {
                double s = 0;
                for (int k = 0; k < dh; k++)
                    s += (double)qkv[(size_t)i * ld + h * dh + k] *
                         qkv[(size_t)j * ld + D + h * dh + k];
                p[j] = s * scale;
                if (p[j] > mx) mx = p[j];
            }
            for (int j = 0; j < T; j++) sum += p[j] = exp(p[j] - mx);
            for (int k = 0; k < dh; k++) {
                double a = 0;
                for (int j = 0; j < T; j++) a += p[j] * qkv[(size_t)j * ld + 2 * D + h * dh + k];
                ctx[(size_t)i * D + h * dh + k] = a / sum;
            }
            if (i == 0)
                for (int j = first; j < T; j++) cls[j - first] += p[j] / sum / H;
        }
    free(p);
}

/* op_attention_bf16 (the block's bf16 path) reads qkv16 as (T, 3D) rows [q | k | v] or,
 * planar, as q, k, v (T, D) one after another (separate q/k/v weights, one GEMM each):
 * both layouts of the same values give bit-identical rows, close to the reference. */
static void attention_bf16_layouts(const float *qkv, int T, int D, int H, float scale,
                                   const double *ref)
{
    const size_t n = (size_t)T * 3 * D;
    uint16_t *rows = malloc(n * sizeof *rows), *planar = malloc(n * sizeof *planar);
    uint16_t *c_rows = malloc((size_t)T * D * sizeof *c_rows),
             *c_planar = malloc((size_t)T * D * sizeof *c_planar);
    float *ctx = malloc((size_t)T * D * sizeof *ctx);
    eng_to_bf16(rows, qkv, n);
    for (int t = 0; t < T; t++)
        for (int part = 0; part < 3; part++)
            memcpy(planar + ((size_t)part * T + t) * D, rows + (size_t)t * 3 * D + (size_t)part * D,
                   (size_t)D * sizeof *rows);
    CHECK(op_attention_bf16(c_rows, rows, 0, T, D, H, scale) == 0);
    CHECK(op_attention_bf16(c_planar, planar, 1, T, D, H, scale) == 0);
    CHECK_MSG(!memcmp(c_rows, c_planar, (size_t)T * D * sizeof *c_rows),
              "bf16 attention: planar and row layouts differ");
    for (size_t i = 0; i < (size_t)T * D; i++) ctx[i] = eng_bf16_to_f32(c_planar[i]);
    double d = rel(ctx, ref, (size_t)T * D);
    CHECK_MSG(d <= 2e-2, "bf16 attention (planar qkv) rel %g", d);
    free(rows), free(planar), free(c_rows), free(c_planar), free(ctx);
}

/* Blocked attention with online softmax, T not a multiple of the 128-query blocks;
 * large logits so the running maximum matters. T = 700: one key block (bf16: K and V
 * packed once per head); T = 2300: two key blocks of 1152 (attention.c caps a block at
 * 2048 keys), so the online rescaling between blocks runs. */
static void attention_case(int T, int D, int H)
{
    const int first = 1;
    const float scale = 1.0f / sqrtf((float)(D / H));
    float *qkv = rand_buf((size_t)T * 3 * D);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < D; i++) qkv[(size_t)t * 3 * D + i] *= 4.0f; /* sharper softmax */
    double *ref = malloc((size_t)T * D * sizeof *ref), *rcls = malloc((size_t)T * sizeof *rcls);
    ref_attention(qkv, T, D, H, scale, first, ref, rcls);
    float *ctx = malloc((size_t)T * D * sizeof *ctx), *cls = malloc((size_t)T * sizeof *cls);
    for (int prec = 0; prec < 2; prec++) {
        eng_ctx *e = eng_ctx_create(prec ? PE_PRECISION_BF16 : PE_PRECISION_FP32);
        eng_ctx *prev = eng_set_current(e);
        for (int threads = 1; threads <= 2; threads++) {
            omp_set_num_threads(threads);
            CHECK(op_attention(ctx, qkv, T, D, H, scale, cls, first, NULL, 0) == 0);
            double d = rel(ctx, ref, (size_t)T * D), dc = rel(cls, rcls, (size_t)(T - first));
            if (threads == 1)
                printf("  attention %s T=%d: ctx rel %.3g, CLS rel %.3g\n", prec ? "bf16" : "fp32",
                       T, d, dc);
            CHECK_MSG(d <= (prec ? 2e-2 : 1e-5), "%s attention rel %g", prec ? "bf16" : "fp32", d);
            CHECK_MSG(dc <= 1e-5, "CLS attention must stay exact: rel %g", dc); /* fp32 in both */
            /* the caller's work memory for the heads' copies (as vit.c passes its free xn):
             * the same bits; one byte short of the largest need and the thread's own
             * buffer serves instead */
            const size_t need = (size_t)3 * H * T * (D / H) * sizeof(float);
            for (int shortby = 0; shortby < 2; shortby++) {
                float *work = malloc(need), *ctx2 = malloc((size_t)T * D * sizeof *ctx2);
                memset(work, 0xff, need);
                CHECK(op_attention(ctx2, qkv, T, D, H, scale, NULL, first, work,
                                   need - (size_t)shortby) == 0);
                CHECK_MSG(!memcmp(ctx, ctx2, (size_t)T * D * sizeof *ctx),
                          "%s attention with the caller's work memory differs",
                          prec ? "bf16" : "fp32");
                free(work), free(ctx2);
            }
        }
        if (prec) attention_bf16_layouts(qkv, T, D, H, scale, ref);
        eng_set_current(prev);
        eng_ctx_free(e);
    }
    omp_set_num_threads(pe_get_threads());
    free(qkv), free(ref), free(rcls), free(ctx), free(cls);
}

static void test_attention(void)
{
    attention_case(700, 64, 2);
    attention_case(2300, 32, 1);
    /* 5 heads, 9 query blocks: fp32 copies the heads in rounds (1 head per round on 1
     * thread, 2 + 2 + 1 on 2 threads), so each round's head offsets are checked */
    attention_case(1100, 160, 5);
}

/* Scoring in bf16 stays close to fp32, and the threaded tiles equal one thread. */
static void test_scoring_precision(void)
{
    const int B = 4, G = 300, D = 48;
    float *f = rand_buf((size_t)B * G * D);
    const float *feats[4];
    for (int b = 0; b < B; b++) feats[b] = f + (size_t)b * G * D;
    float s32[4 * 300], s16[4 * 300], s1[4 * 300], img32[4], img16[4];
    pe_score_params p = pe_score_default_params("patchead", 1);
    p.tile = 64; /* several tiles per pair */
    CHECK(pe_score_batch(feats, B, G, D, &p, s32, img32) == PE_OK);
    omp_set_num_threads(1);
    CHECK(pe_score_batch(feats, B, G, D, &p, s1, NULL) == PE_OK);
    omp_set_num_threads(pe_get_threads());
    double worst = 0;
    for (int i = 0; i < B * G; i++) worst = tl_worse(worst, fabs(s1[i] - s32[i]));
    CHECK_MSG(worst <= 1e-6, "threads vs 1 thread: %g", worst);
    p.precision = PE_PRECISION_BF16;
    CHECK(pe_score_batch(feats, B, G, D, &p, s16, img16) == PE_OK);
    worst = 0;
    for (int i = 0; i < B * G; i++) worst = tl_worse(worst, fabs(s16[i] - s32[i]));
    printf("  zero-shot patch scores bf16 vs fp32: max |diff| %.3g (scores ~%.2f)\n", worst,
           s32[0]);
    CHECK_MSG(worst <= 2e-2, "bf16 scores differ by %g", worst);
    /* few-shot */
    float q32[300], q16[300], i32, i16;
    const int gp[3] = {G, G, G};
    p = pe_score_default_params("patchead", 0);
    p.tile = 50;
    CHECK(pe_score_query(feats[0], G, feats + 1, gp, 3, D, &p, q32, &i32) == PE_OK);
    p.precision = PE_PRECISION_BF16;
    CHECK(pe_score_query(feats[0], G, feats + 1, gp, 3, D, &p, q16, &i16) == PE_OK);
    worst = 0;
    for (int i = 0; i < G; i++) worst = tl_worse(worst, fabs(q16[i] - q32[i]));
    CHECK_MSG(worst <= 2e-2, "few-shot bf16 scores differ by %g", worst);
    free(f);
}

/* bf16 backbones vs PyTorch fp32 (the committed fixtures). */
static void test_vit_bf16_parity(void)
{
    static const char *dirs[] = {"dinov2", "dinov2_reg", "clip", "openclip"};
    for (int i = 0; i < 4; i++) {
        char path[256];
        float *input = NULL, *ref = NULL, *aref = NULL;
        int nd;
        int64_t is[4], rs[4], as[4];
        snprintf(path, sizeof path, FIXTURE("vit/%s/input.npy"), dirs[i]);
        CHECK_MSG(pe_npy_load(path, &input, &nd, is) == PE_OK && nd == 3, "%s", pe_last_error());
        snprintf(path, sizeof path, FIXTURE("vit/%s/patch.npy"), dirs[i]);
        CHECK(pe_npy_load(path, &ref, &nd, rs) == PE_OK);
        snprintf(path, sizeof path, FIXTURE("vit/%s/attn.npy"), dirs[i]);
        CHECK(pe_npy_load(path, &aref, &nd, as) == PE_OK);
        snprintf(path, sizeof path, FIXTURE("vit/%s"), dirs[i]);
        pe_model_params mp = pe_model_default_params();
        mp.precision = PE_PRECISION_BF16;
        pe_model *m = NULL;
        CHECK_MSG(pe_model_load(path, &mp, &m) == PE_OK, "%s", pe_last_error());
        if (!m || !input || !ref || !aref) {
            pe_model_free(m), free(input), free(ref), free(aref);
            continue;
        }
        pe_model_info info;
        pe_model_get_info(m, &info);
        CHECK(info.precision == PE_PRECISION_BF16);
        pe_extract_params ep = pe_extract_default_params();
        ep.want_attn = 1;
        pe_features f;
        CHECK(pe_model_forward(m, input, (int)is[1], (int)is[2], &ep, &f) == PE_OK);
        if (f.data) {
            size_t n = (size_t)rs[0] * rs[1];
            double *r = malloc(n * sizeof *r), *ra = malloc((size_t)as[0] * sizeof *ra);
            for (size_t k = 0; k < n; k++) r[k] = ref[k];
            for (int64_t k = 0; k < as[0]; k++) ra[k] = aref[k];
            double d = rel(f.data, r, n), da = rel(f.attn, ra, (size_t)as[0]);
            printf("  %-11s bf16 vs PyTorch fp32: patch rel %.3g, attn rel %.3g\n", dirs[i], d, da);
            CHECK_MSG(d <= 5e-2 && da <= 5e-2, "%s bf16 parity: patch %g attn %g", dirs[i], d, da);
            CHECK_MSG(d > 1e-6, "%s: bf16 run identical to fp32? (rel %g)", dirs[i], d);
            free(r), free(ra);
        }
        pe_features_free(&f);
        pe_model_free(m), free(input), free(ref), free(aref);
    }
}

int main(void)
{
    pe_set_threads(2);
    RUN(test_precision_api);
    RUN(test_gemm);
    RUN(test_linear);
    RUN(test_linear_fused);
    RUN(test_linear_int8);
    RUN(test_chunked_rows);
    RUN(test_concurrent);
    RUN(test_attention);
    RUN(test_scoring_precision);
    RUN(test_vit_bf16_parity);
    return test_summary();
}
