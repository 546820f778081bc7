/* test_amx.c — the AMX bf16 GEMM (amx.c) against a double reference on the same bf16
 * values: M, N and K that are not multiples of the 32-wide tiles and blocks, both
 * packings of B (rows (K, N) and transposed rows (N, K)), accumulation onto C, and the
 * row maxima it reports. And amx_linear (amx_linear.c), the ViT's bf16 linears with their
 * fused epilogues: bias + activation rounded to bf16 (also into per-head column groups),
 * and bias * LayerScale added to an fp32 residual; its refusals write nothing. */
#include "compute/amx.h"
#include "compute/engine.h"
#include "testlib.h"

static uint64_t rng = 0x853c49e6748fea9bull;
static float urand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

/* negative: A > 0 and B < 0, so every product (and, without accumulate, output) is negative */
static void gemm_case(int M, int N, int K, int trans, int accumulate, int negative)
{
    const int kp = amx_kpad(K), lda = kp; /* A rows zero-padded to the tile depth */
    bf16_t *A = calloc((size_t)M * lda, sizeof *A), *B = malloc((size_t)K * N * sizeof *B);
    float *C = malloc((size_t)M * (N + 3) * sizeof *C);
    double *ref = malloc((size_t)M * N * sizeof *ref);
    uint16_t *packed = malloc(amx_packed_bytes(K, N));
    const int ldc = N + 3; /* a C wider than N: only its first N columns are written */
    for (int i = 0; i < M; i++)
        for (int k = 0; k < K; k++) {
            float x = negative ? fabsf(urand()) + 0.01f : urand();
            eng_to_bf16(&A[(size_t)i * lda + k], &x, 1);
        }
    for (int i = 0; i < K * N; i++) {
        float x = negative ? -fabsf(urand()) - 0.01f : urand();
        eng_to_bf16(&B[i], &x, 1);
    }
    for (int i = 0; i < M * ldc; i++) C[i] = accumulate ? urand() : 7.0f;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double d = accumulate ? C[(size_t)i * ldc + j] : 0.0;
            for (int k = 0; k < K; k++) {
                /* B as trans says: (N, K) rows or (K, N) rows */
                bf16_t b = trans ? B[(size_t)j * K + k] : B[(size_t)k * N + j];
                d += (double)eng_bf16_to_f32(A[(size_t)i * lda + k]) * eng_bf16_to_f32(b);
            }
            ref[(size_t)i * N + j] = d;
        }
    const float guard = C[(size_t)0 * ldc + N];
    memset(packed, 0xff, amx_packed_bytes(K, N)); /* the packing must write every pad */
    amx_pack(B, trans ? K : N, trans, K, N, packed);
    float *rowmax = malloc((size_t)M * sizeof *rowmax);
    CHECK(amx_gemm(M, N, K, A, lda, packed, C, ldc, accumulate, rowmax) == 0);
    /* the row maxima it found: exactly those of the C it wrote */
    for (int i = 0; i < M; i++) {
        float mx = -INFINITY;
        for (int j = 0; j < N; j++) mx = fmaxf(mx, C[(size_t)i * ldc + j]);
        CHECK_MSG(rowmax[i] == mx, "M %d N %d K %d: row %d max %g, C's is %g", M, N, K, i,
                  rowmax[i], mx);
    }
    free(rowmax);
    double worst = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++)
            worst = tl_worse(worst, fabs(C[(size_t)i * ldc + j] - ref[(size_t)i * N + j]));
    CHECK_MSG(worst <= 1e-5 * K, "M %d N %d K %d trans %d acc %d: max |diff| %g", M, N, K, trans,
              accumulate, worst);
    CHECK_MSG(C[N] == guard, "a column beyond N was written");
    free(A), free(B), free(C), free(ref), free(packed);
}

static void test_amx_gemm(void)
{
    if (!amx_ready()) {
        printf("# test_amx_gemm: no AMX here (or DNNL_MAX_CPU_ISA caps it); the engine's GEMMs run "
               "instead\n");
        return;
    }
    gemm_case(128, 1025, 64, 1, 0, 0); /* attention's S = Q K^T at 448 px, one query block */
    gemm_case(1, 64, 1025, 0, 1, 0);   /* its last 1-row block of P V, accumulating */
    gemm_case(37, 70, 45, 0, 0, 0);    /* nothing a multiple of 32 */
    gemm_case(33, 31, 96, 1, 1, 0);
    /* every output negative: the zeros of a ragged last panel must not be the maximum */
    gemm_case(40, 45, 3, 1, 0, 1);
}

/* One amx_linear case: A (M, K), W (N, K) random bf16 values (scaled so the products
 * reach GELU's curved part and its negative tail), bias and LayerScale random. mode 0:
 * bf16 rows out (act), 1: the same into column groups of 32 (planes M x 32), 2: added to
 * fp32 rows with LayerScale, 3: added without. */
static void linear_case(int M, int N, int K, int act, int mode)
{
    bf16_t *A = malloc((size_t)M * K * sizeof *A), *W = malloc((size_t)N * K * sizeof *W);
    float *bias = malloc((size_t)N * sizeof *bias), *ls = malloc((size_t)N * sizeof *ls);
    const int ldx = N + 5;
    float *X = malloc((size_t)M * ldx * sizeof *X), *X0 = malloc((size_t)M * ldx * sizeof *X0);
    bf16_t *out = malloc(((size_t)M * N + 64) * sizeof *out);
    uint16_t *packed = malloc(amx_packed_bytes(K, N));
    for (int i = 0; i < M * K; i++) {
        float x = urand() * 1.5f;
        eng_to_bf16(&A[i], &x, 1);
    }
    for (int i = 0; i < N * K; i++) {
        float x = urand() * 3.0f / sqrtf((float)K);
        eng_to_bf16(&W[i], &x, 1);
    }
    for (int j = 0; j < N; j++) bias[j] = urand(), ls[j] = urand();
    for (int i = 0; i < M * ldx; i++) X[i] = X0[i] = urand();
    for (size_t i = 0; i < (size_t)M * N + 64; i++) out[i] = 0x7fc1; /* (a NaN marker) */
    amx_pack(W, K, 1, K, N, packed);
    amx_epilogue ep = {.bias = bias, .act = mode < 2 ? act : ENG_ACT_NONE};
    if (mode < 2) {
        ep.out16 = out;
        ep.ld_out = mode == 1 ? 32 : N;
        ep.group = mode == 1 ? 32 : 0;
        ep.group_stride = (size_t)M * 32;
    } else {
        ep.add_to = X;
        ep.ld_add = ldx;
        ep.scale = mode == 2 ? ls : NULL;
    }
    CHECK(amx_linear(M, N, K, A, K, packed, &ep) == 0);
    double worst = 0;
    int misplaced = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double d = bias[j];
            for (int k = 0; k < K; k++)
                d += (double)eng_bf16_to_f32(A[(size_t)i * K + k]) *
                     eng_bf16_to_f32(W[(size_t)j * K + k]);
            if (mode < 2) {
                const double r = tl_act_ref(act, d);
                const size_t at = mode == 1 ? (size_t)(j / 32) * M * 32 + (size_t)i * 32 + j % 32
                                            : (size_t)i * N + j;
                const float got = eng_bf16_to_f32(out[at]);
                misplaced += got != got;
                /* bf16's rounding (2^-9 relative) plus the products' fp32 sums */
                worst = tl_worse(worst, fabs(got - r) / (fabs(r) * 0x1p-8 + 1e-5 * K));
            } else {
                const double r = X0[(size_t)i * ldx + j] + (mode == 2 ? ls[j] : 1.0) * d;
                worst = tl_worse(worst, fabs(X[(size_t)i * ldx + j] - r) / (1e-5 * K));
            }
        }
    CHECK_MSG(!misplaced, "M %d N %d K %d mode %d: %d outputs not written", M, N, K, mode,
              misplaced);
    CHECK_MSG(worst <= 1.0, "M %d N %d K %d act %d mode %d: error %.3g x its bound", M, N, K, act,
              mode, worst);
    if (mode >= 2) /* the columns past N of the residual rows are not touched */
        for (int i = 0; i < M; i++)
            for (int j = N; j < ldx; j++)
                CHECK_MSG(X[(size_t)i * ldx + j] == X0[(size_t)i * ldx + j], "column %d written",
                          j);
    free(A), free(W), free(bias), free(ls), free(X), free(X0), free(out), free(packed);
}

static void test_amx_linear(void)
{
    bf16_t a[64 * 64] = {0};
    uint16_t w[64 * 64] = {0};
    float x[64 * 64], b[64] = {0};
    for (int i = 0; i < 64 * 64; i++) x[i] = 1.0f;
    amx_epilogue add = {.add_to = x, .ld_add = 64};
    if (!amx_ready()) { /* refused, nothing written: the callers take the engine's path */
        printf("# test_amx_linear: no AMX here (or DNNL_MAX_CPU_ISA caps it): refusal checked\n");
        CHECK(amx_linear(64, 64, 64, a, 64, w, &add) == -1);
        CHECK(x[0] == 1.0f && x[64 * 64 - 1] == 1.0f);
        return;
    }
    /* refusals (nothing written): K not a multiple of 32, both or neither output, an
     * activation on a residual sum, a column group that splits a panel */
    CHECK(amx_linear(64, 64, 40, a, 64, w, &add) == -1);
    amx_epilogue both = {.add_to = x, .ld_add = 64, .out16 = a, .ld_out = 64}, none = {.bias = b};
    CHECK(amx_linear(64, 64, 64, a, 64, w, &both) == -1);
    CHECK(amx_linear(64, 64, 64, a, 64, w, &none) == -1);
    amx_epilogue act_add = {.add_to = x, .ld_add = 64, .act = ENG_ACT_GELU};
    CHECK(amx_linear(64, 64, 64, a, 64, w, &act_add) == -1);
    amx_epilogue bad_group = {.out16 = a, .ld_out = 16, .group = 16, .group_stride = 1024};
    CHECK(amx_linear(64, 64, 64, a, 64, w, &bad_group) == -1);
    for (int i = 0; i < 64 * 64; i++) CHECK_MSG(x[i] == 1.0f, "a refused call wrote x[%d]", i);
    /* ViT shapes cut down: rows not a multiple of 32 (the padded last strip), odd strip
     * counts (the last work item has one strip), N not a multiple of 32 */
    const int acts[] = {ENG_ACT_GELU, ENG_ACT_GELU_TANH, ENG_ACT_QUICK_GELU, ENG_ACT_SILU,
                        ENG_ACT_NONE};
    for (int i = 0; i < 5; i++) linear_case(67, 96, 64, acts[i], 0);
    linear_case(1025 / 8, 192, 96, ENG_ACT_NONE, 1); /* q, k, v into 32-wide head planes */
    linear_case(33, 64, 128, ENG_ACT_NONE, 2);       /* out-projection / fc2 with LayerScale */
    linear_case(97, 80, 256, ENG_ACT_NONE, 3);       /* the same without, N ragged */
    linear_case(32, 45, 32, ENG_ACT_GELU, 0);        /* one strip, one ragged panel */
    /* a weight over 1 MB packed: columns in parts (8 panels of K = 2048), the last ragged */
    linear_case(45, 300, 2048, ENG_ACT_GELU, 0);
    linear_case(70, 320, 2048, ENG_ACT_NONE, 1);
    linear_case(45, 300, 2048, ENG_ACT_NONE, 2);
}

int main(void)
{
    RUN(test_amx_gemm);
    RUN(test_amx_linear);
    return test_summary();
}
