/* test_amx.c — the AMX bf16 GEMM (amx.c) against a double reference on the same bf16
 * values: M, N and K that are not multiples of the 32-wide tiles and blocks, both
 * packings of B (rows (K, N) and transposed rows (N, K)), accumulation onto C, and the
 * row maxima it reports. */
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

int main(void)
{
    RUN(test_amx_gemm);
    return test_summary();
}
