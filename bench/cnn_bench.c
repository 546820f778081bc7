/* cnn_bench.c — CNN backbone driver for tools/parity_cnn.py and speed figures.
 *
 *   cnn_bench features MODEL INPUT.f32 H W OUTPUT.f32 [THREADS]
 *       INPUT.f32: raw little-endian float32 (3, H, W), already normalised. Runs
 *       pe_model_forward and writes the (G, D) features as raw float32; prints
 *       "grid_h grid_w dim" on stdout.
 *   cnn_bench time MODEL SIZE THREADS [REPS [PRECISION]]
 *       ms/image of pe_model_forward on a SIZE x SIZE input (best and median of REPS
 *       after one warm-up run) and the process CPU time per image (all threads; on a
 *       busy machine the 1-thread CPU time is the steadier figure), one line:
 *       "<name> size S threads T ms_best X ms_median Y cpu_ms Z grid GhxGw dim D". */
#include "patchead.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double clock_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}
#define now_ms() clock_ms(CLOCK_MONOTONIC)
#define cpu_ms() clock_ms(CLOCK_PROCESS_CPUTIME_ID)

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int fail(const char *what)
{
    fprintf(stderr, "cnn_bench: %s: %s\n", what, pe_last_error());
    return 1;
}

static int cmd_features(int argc, char **argv)
{
    if (argc < 7) return fprintf(stderr, "usage: cnn_bench features MODEL IN.f32 H W OUT.f32 [THREADS]\n"), 2;
    int h = atoi(argv[4]), w = atoi(argv[5]);
    pe_model_params mp = pe_model_default_params();
    if (argc > 7) mp.threads = atoi(argv[7]);
    if (h <= 0 || w <= 0) return fprintf(stderr, "cnn_bench: bad size\n"), 2;
    size_t n = (size_t)3 * h * w;
    float *x = malloc(n * sizeof(float));
    FILE *f = fopen(argv[3], "rb");
    if (!x || !f || fread(x, sizeof(float), n, f) != n) {
        fprintf(stderr, "cnn_bench: %s: cannot read %zu floats\n", argv[3], n);
        return 1;
    }
    fclose(f);
    pe_model *m;
    if (pe_model_load(argv[2], &mp, &m)) return fail(argv[2]);
    pe_features feat;
    if (pe_model_forward(m, x, h, w, NULL, &feat)) return fail("forward");
    size_t out_n = (size_t)feat.grid_h * feat.grid_w * feat.dim;
    f = fopen(argv[6], "wb");
    if (!f || fwrite(feat.data, sizeof(float), out_n, f) != out_n || fclose(f) != 0) {
        fprintf(stderr, "cnn_bench: %s: cannot write\n", argv[6]);
        return 1;
    }
    printf("%d %d %d\n", feat.grid_h, feat.grid_w, feat.dim);
    pe_features_free(&feat);
    pe_model_free(m);
    free(x);
    return 0;
}

static int cmd_time(int argc, char **argv)
{
    if (argc < 5) return fprintf(stderr, "usage: cnn_bench time MODEL SIZE THREADS [REPS]\n"), 2;
    int size = atoi(argv[3]), reps = argc > 5 ? atoi(argv[5]) : 5;
    pe_model_params mp = pe_model_default_params();
    mp.threads = atoi(argv[4]);
    if (argc > 6 && pe_precision_parse(argv[6], &mp.precision))
        return fprintf(stderr, "cnn_bench: %s\n", pe_last_error()), 2;
    if (size <= 0 || reps <= 0 || reps > 1000) return fprintf(stderr, "cnn_bench: bad size/reps\n"), 2;
    pe_model *m;
    if (pe_model_load(argv[2], &mp, &m)) return fail(argv[2]);
    pe_model_info info;
    pe_model_get_info(m, &info);
    size_t n = (size_t)3 * size * size;
    float *x = malloc(n * sizeof(float));
    if (!x) return 1;
    for (size_t i = 0; i < n; i++) x[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
    double *ms = calloc((size_t)reps, sizeof(double));
    pe_features feat;
    if (pe_model_forward(m, x, size, size, NULL, &feat)) return fail("forward"); /* warm-up: scratch */
    int gh = feat.grid_h, gw = feat.grid_w, dim = feat.dim;
    pe_features_free(&feat);
    double cpu0 = cpu_ms();
    for (int r = 0; r < reps; r++) {
        double t0 = now_ms();
        if (pe_model_forward(m, x, size, size, NULL, &feat)) return fail("forward");
        ms[r] = now_ms() - t0;
        pe_features_free(&feat);
    }
    double cpu = (cpu_ms() - cpu0) / reps;
    qsort(ms, (size_t)reps, sizeof *ms, cmp_double);
    printf("%s size %d threads %d ms_best %.1f ms_median %.1f cpu_ms %.1f grid %dx%d dim %d precision %s\n",
           info.name, size, pe_get_threads(), ms[0], ms[reps / 2], cpu, gh, gw, dim,
           pe_precision_name(info.precision));
    free(ms);
    free(x);
    pe_model_free(m);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "features")) return cmd_features(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "time")) return cmd_time(argc, argv);
    fprintf(stderr, "usage: cnn_bench features|time ...\n");
    return 2;
}
