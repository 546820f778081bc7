/* score_speed.c — scoring throughput vs the sgemm peak, in one run.
 *
 *   build/bench/score_speed [B G D THREADS [TILE [PRECISION]]]
 *       (default 24 3136 128 2, tile auto, fp32)
 *
 * Prints: the engine's GEMM GFLOP/s in PRECISION on the scoring's own shape (G x G x D,
 * the "same-precision peak"), OpenBLAS sgemm for comparison, then pe_score_batch (batch
 * zero-shot, B images of G patches) and pe_score_query (4 references) in GFLOP/s and %
 * of that peak, counting 2*G*G*D per image pair (the batch path computes each
 * unordered pair once). Random features. */
#include "patchead.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

char *openblas_get_corename(void);

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* Process CPU seconds (all threads): on a shared, loaded machine the ratio of CPU-time
 * rates is steadier than wall time. */
static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static float *random_matrix(size_t n, unsigned *seed)
{
    float *m = malloc(n * sizeof *m);
    for (size_t i = 0; i < n; i++) m[i] = (float)rand_r(seed) / RAND_MAX - 0.5f;
    return m;
}

/* Best-of-3 GFLOP/s of C(m,n) = A(m,k) B(n,k)^T. */
static double sgemm_gflops(int m, int n, int k)
{
    unsigned seed = 1;
    float *a = random_matrix((size_t)m * k, &seed), *b = random_matrix((size_t)n * k, &seed);
    float *c = malloc((size_t)m * n * sizeof *c);
    double best = 1e30;
    for (int r = 0; r < 4; r++) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, a, k, b, k, 0.0f, c, n);
        double t = now() - t0;
        if (r > 0 && t < best) best = t; /* first run warms up */
    }
    free(a);
    free(b);
    free(c);
    return 2.0 * m * n * k / best / 1e9;
}

int main(int argc, char **argv)
{
    int B = argc > 1 ? atoi(argv[1]) : 24, G = argc > 2 ? atoi(argv[2]) : 3136;
    int D = argc > 3 ? atoi(argv[3]) : 128, threads = argc > 4 ? atoi(argv[4]) : 2;
    if (B < 2 || G < 1 || D < 1) {
        fprintf(stderr, "usage: score_speed [B>=2 G D THREADS]\n");
        return 2;
    }
    pe_precision prec = PE_PRECISION_FP32;
    if (argc > 6 && pe_precision_parse(argv[6], &prec)) {
        fprintf(stderr, "score_speed: %s\n", pe_last_error());
        return 2;
    }
    prec = pe_precision_resolve(prec);
    pe_set_threads(threads);
    printf("openblas kernel %s, engine ISA %s, threads %d, precision %s\n", openblas_get_corename(),
           pe_engine_isa(), pe_get_threads(), pe_precision_name(prec));
    double peak = pe_engine_gemm_gflops(prec, G, G, D, 5);
    /* CPU-time peak: 20 more runs of the same GEMM, from the difference of two calls (so
     * the warm-up / JIT of each call cancels) */
    double c0 = cpu_now();
    pe_engine_gemm_gflops(prec, G, G, D, -1); /* (negative: exactly that many runs) */
    double c1 = cpu_now();
    pe_engine_gemm_gflops(prec, G, G, D, -21);
    double cpu_peak = 20 * 2.0 * G * G * D / ((cpu_now() - c1) - (c1 - c0)) / 1e9;
    double tile_peak = sgemm_gflops(G, G, D);
    printf("engine %s GEMM %dx%dx%d (%s): %.1f GFLOP/s; OpenBLAS sgemm same shape: %.1f GFLOP/s\n",
           pe_precision_name(prec), G, G, D, pe_engine_gemm_impl(prec, G, G, D), peak, tile_peak);

    unsigned seed = 7;
    float **feats = malloc(B * sizeof *feats);
    for (int b = 0; b < B; b++) feats[b] = random_matrix((size_t)G * D, &seed);
    float *patch = malloc((size_t)B * G * sizeof *patch), *img = malloc(B * sizeof *img);

    int tile = argc > 5 ? atoi(argv[5]) : 0;
    pe_score_params zs = pe_score_default_params("patchead", 1);
    zs.tile = tile;
    zs.precision = prec;
    double t0 = now(), cb = cpu_now();
    if (pe_score_batch((const float *const *)feats, B, G, D, &zs, patch, img)) {
        fprintf(stderr, "score_speed: %s\n", pe_last_error());
        return 1;
    }
    double t = now() - t0;
    cb = cpu_now() - cb;
    double flops = (double)B * (B - 1) / 2 * 2.0 * G * G * D;
    printf("cpu time: GEMM %.1f GFLOP/s per CPU-second, pe_score_batch %.1f = %.0f%% of it\n", cpu_peak,
           flops / cb / 1e9, 100 * flops / cb / 1e9 / cpu_peak);
    printf("pe_score_batch  B=%d G=%d D=%d: %.2f s, %.1f GFLOP/s = %.0f%% of the GEMM peak\n", B, G, D, t,
           flops / t / 1e9, 100 * flops / t / 1e9 / peak);

    pe_score_params fs = pe_score_default_params("patchead", 0);
    fs.tile = tile;
    fs.precision = prec;
    int refs_n = 4, reps = 5;
    int gs[4] = {G, G, G, G};
    float image_score;
    t0 = now();
    for (int r = 0; r < reps; r++)
        pe_score_query(feats[4], G, (const float *const *)feats, gs, refs_n, D, &fs, patch, &image_score);
    t = (now() - t0) / reps;
    flops = (double)refs_n * 2.0 * G * G * D;
    printf("pe_score_query  4 refs, G=%d D=%d: %.1f ms/query, %.1f GFLOP/s = %.0f%% of the GEMM peak\n", G, D,
           1e3 * t, flops / t / 1e9, 100 * flops / t / 1e9 / peak);
    for (int b = 0; b < B; b++) free(feats[b]);
    free(feats);
    free(patch);
    free(img);
    return 0;
}
