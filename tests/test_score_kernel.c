/* test_score_kernel.c — the fused scoring kernel (score_kernel.c) against a double
 * reference: row and column maxima of scaled dot products, for odd row counts (micro-
 * tile tails), a reference count that is not a multiple of the 32-column panels, a
 * reference large enough to be cache-blocked (column chunks, row groups), both
 * fp32 copies (AVX-512 and AVX2) and bf16 where the CPU has it. */
#include "engine.h"
#include "score_kernel.h"
#include "testlib.h"
#include "vecmath.h"

#include <stdint.h>

static uint64_t rng = 0x2545f4914f6cdd1dull;
static float urand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

/* rowmax / colmax of (A_r . B_j) scaled, in double, on the values as given */
static void reference(const float *A, int rows, const float *B, int G, int dim, const float *ri,
                      const float *ci, double *rowmax, double *colmax)
{
    for (int j = 0; j < G; j++) colmax[j] = -INFINITY;
    for (int r = 0; r < rows; r++) {
        rowmax[r] = -INFINITY;
        for (int j = 0; j < G; j++) {
            double d = 0;
            for (int k = 0; k < dim; k++)
                d += (double)A[(size_t)r * dim + k] * B[(size_t)j * dim + k];
            rowmax[r] = fmax(rowmax[r], d * ci[j]);
            colmax[j] = fmax(colmax[j], d * ri[r]);
        }
    }
}

static void run_case(int bf16, int rows, int G, int dim, const char *label)
{
    float *A = malloc((size_t)rows * dim * sizeof *A), *B = malloc((size_t)G * dim * sizeof *B);
    float *ri = malloc((size_t)rows * sizeof *ri), *ci = malloc((size_t)G * sizeof *ci);
    float *rowmax = malloc((size_t)rows * sizeof *rowmax),
          *colmax = malloc((size_t)G * sizeof *colmax);
    double *rr = malloc((size_t)rows * sizeof *rr), *rc = malloc((size_t)G * sizeof *rc);
    for (int i = 0; i < rows * dim; i++) A[i] = urand();
    for (int i = 0; i < G * dim; i++) B[i] = urand();
    for (int i = 0; i < rows; i++) ri[i] = 0.5f + 0.5f * urand();
    for (int i = 0; i < G; i++) ci[i] = 0.5f + 0.5f * urand();
    if (bf16) { /* the kernel sees bf16 values: the reference takes the same ones */
        for (int i = 0; i < rows * dim; i++) A[i] = eng_round_bf16(A[i]);
        for (int i = 0; i < G * dim; i++) B[i] = eng_round_bf16(B[i]);
    }
    reference(A, rows, B, G, dim, ri, ci, rr, rc);
    void *packed = malloc(sk_panel_bytes(G, dim, bf16));
    bf16_t *A16 = malloc((size_t)rows * dim * sizeof *A16),
           *B16 = malloc((size_t)G * dim * sizeof *B16);
    eng_to_bf16(A16, A, (size_t)rows * dim);
    eng_to_bf16(B16, B, (size_t)G * dim);
    sk_pack(bf16 ? (const void *)B16 : B, G, dim, bf16, packed);
    for (int j = 0; j < G; j++) colmax[j] = -INFINITY;
    /* rows in two calls (a split the scorer's row tiles make), colmax running across */
    const int split = rows / 3;
    const size_t esz = bf16 ? sizeof(bf16_t) : sizeof(float);
    const char *a = bf16 ? (const char *)A16 : (const char *)A;
    sk_rows(bf16, a, split, dim, packed, G, ri, ci, rowmax, colmax);
    sk_rows(bf16, a + (size_t)split * dim * esz, rows - split, dim, packed, G, ri + split, ci,
            rowmax + split, colmax);
    double worst = 0;
    for (int r = 0; r < rows; r++) worst = fmax(worst, fabs(rowmax[r] - rr[r]));
    for (int j = 0; j < G; j++) worst = fmax(worst, fabs(colmax[j] - rc[j]));
    /* |dot| <= dim; fp32 accumulation of exact products: ~dim * 2^-24 * |terms| */
    const double tol = 1e-6 * dim;
    printf("  %s rows %d G %d dim %d: max |diff| %.3g\n", label, rows, G, dim, worst);
    CHECK_MSG(worst <= tol, "%s: max |diff| %g > %g", label, worst, tol);
    /* fp32: the AVX2 copy gives the same bits as the AVX-512 one (same FMA chains) */
    if (!bf16 && vec_avx512()) {
        float *rm2 = malloc((size_t)rows * sizeof *rm2), *cm2 = malloc((size_t)G * sizeof *cm2);
        for (int j = 0; j < G; j++) cm2[j] = -INFINITY;
        vec_set_avx512(0);
        sk_rows(0, a, rows, dim, packed, G, ri, ci, rm2, cm2);
        vec_set_avx512(1);
        CHECK_MSG(!memcmp(rm2, rowmax, (size_t)rows * sizeof *rm2) &&
                      !memcmp(cm2, colmax, (size_t)G * sizeof *cm2),
                  "%s: the AVX2 copy differs from the AVX-512 one", label);
        free(rm2), free(cm2);
    }
    /* only one side asked: the other is not touched */
    colmax[0] = 12345.0f;
    sk_rows(bf16, a, rows, dim, packed, G, ri, ci, rowmax, NULL);
    CHECK(colmax[0] == 12345.0f);
    free(A), free(B), free(ri), free(ci), free(rowmax), free(colmax), free(rr), free(rc);
    free(packed), free(A16), free(B16);
}

static void test_fp32(void)
{
    const int avx512 = vec_set_avx512(1) && vec_avx512();
    for (int v = avx512 ? 1 : 0; v >= 0; v--) {
        vec_set_avx512(v);
        run_case(0, 37, 101, 64, v ? "fp32 avx512" : "fp32 avx2");
        run_case(0, 9, 32, 7, v ? "fp32 avx512" : "fp32 avx2");
        run_case(0, 70, 200, 128, v ? "fp32 avx512" : "fp32 avx2");
        /* packed reference > 1 MB: cache-blocked in column chunks (the last one ragged,
         * ending inside a panel) and row groups of 256 (the last one short) */
        run_case(0, 300, 2100, 128, v ? "fp32 avx512 blocked" : "fp32 avx2 blocked");
    }
    vec_set_avx512(avx512);
}

static void test_bf16(void)
{
    if (!sk_available(1, 64)) {
        printf("# test_bf16: no AVX-512-BF16 here; bf16 scoring uses the engine GEMM path\n");
        return;
    }
    run_case(1, 37, 101, 64, "bf16");
    run_case(1, 70, 200, 128, "bf16");
    run_case(1, 1, 33, 2, "bf16");
    run_case(1, 40, 4200, 128, "bf16 blocked");
}

int main(void)
{
    RUN(test_fp32);
    RUN(test_bf16);
    return test_summary();
}
