/* beyond_speed.c — per-query scoring time of the options beyond the paper on synthetic
 * features of MobileNetV2's shape (docs/BEYOND.md):
 *   build/bench/beyond_speed [GRID] [REFS] [REPS] [THREADS]  (default 56 = 448 input, 4, 3, all)
 * global Eq. 2 (score.c's GEMM path) against positional windows R = 0, 1, 2, 4, 8;
 * M references against M x 4 views (what --rotations 4 costs); and the greedy k-center
 * selection time for 1 % / 10 % of M * G patches with and without a 32-dim projection.
 * Prints the CPU and load average first; only the ratios within one run mean much on a
 * shared machine. */
#include "score/beyond.h"
#include "patchead.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static uint64_t state = 42;
static float frand(void) { return (float)((pe_splitmix64(&state) >> 40) / 16777216.0 - 0.5); }

/* Median ms of `reps` predictions of q against bank b. */
static double time_predict(const pe_bank *b, const pe_features *q, int reps)
{
    double best[16];
    for (int r = 0; r < reps; r++) {
        pe_result res;
        double t0 = now();
        if (pe_bank_predict_features(b, q, &res) != PE_OK) {
            fprintf(stderr, "beyond_speed: %s\n", pe_last_error());
            return -1;
        }
        best[r] = 1000 * (now() - t0);
        pe_result_free(&res);
    }
    for (int i = 0; i < reps; i++) /* insertion sort: reps is tiny */
        for (int j = i; j > 0 && best[j] < best[j - 1]; j--) {
            double t = best[j];
            best[j] = best[j - 1];
            best[j - 1] = t;
        }
    return best[reps / 2];
}

int main(int argc, char **argv)
{
    const int grid = argc > 1 ? atoi(argv[1]) : 56, m = argc > 2 ? atoi(argv[2]) : 4;
    const int reps = argc > 3 ? atoi(argv[3]) : 3, dim = 128, g = grid * grid;
    if (argc > 4) pe_set_threads(atoi(argv[4]));
    if (grid < 2 || m < 1 || reps < 1 || reps > 16) {
        fprintf(stderr, "usage: beyond_speed [GRID >= 2] [REFS >= 1] [REPS 1..16] [THREADS]\n");
        return 2;
    }
    char cpu[256] = "?", load[128] = "?";
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && fgets(cpu, sizeof cpu, f) && strncmp(cpu, "model name", 10)) {
    }
    if (f) fclose(f);
    if ((f = fopen("/proc/loadavg", "r"))) {
        if (!fgets(load, sizeof load, f)) load[0] = 0;
        fclose(f);
    }
    cpu[strcspn(cpu, "\n")] = load[strcspn(load, "\n")] = 0;
    printf("# %s; load %s; threads %d; grid %dx%d, D %d, %d references\n",
           strchr(cpu, ':') ? strchr(cpu, ':') + 2 : cpu, load, pe_get_threads(), grid, grid, dim,
           m);

    const int views = 4 * m;
    float *data = malloc(sizeof(float) * (size_t)(views + 1) * g * dim);
    for (size_t i = 0; i < (size_t)(views + 1) * g * dim; i++) data[i] = frand();
    pe_features *refs = calloc((size_t)views, sizeof *refs);
    for (int k = 0; k < views; k++)
        refs[k] = (pe_features){grid, grid, dim, data + (size_t)k * g * dim, NULL};
    pe_features q = {grid, grid, dim, data + (size_t)views * g * dim, NULL};

    printf("| scoring | candidates per query patch | ms / query |\n|---|---|---|\n");
    const int radii[] = {-1, 0, 1, 2, 4, 8};
    for (size_t i = 0; i < sizeof radii / sizeof radii[0]; i++) {
        pe_detect_params p = pe_detect_default_params(0);
        p.window = radii[i];
        pe_bank *b;
        if (pe_bank_fit_features(NULL, refs, m, &p, &b) != PE_OK) return 1;
        int side = radii[i] < 0 ? grid : PE_MIN(grid, 2 * radii[i] + 1);
        char name[64];
        if (radii[i] < 0) snprintf(name, sizeof name, "global, %d refs", m);
        else snprintf(name, sizeof name, "window R=%d, %d refs", radii[i], m);
        printf("| %s | %d x %d | %.1f |\n", name, m, side * side, time_predict(b, &q, reps));
        pe_bank_free(b);
    }
    /* --rotations 4 scores 4 views per reference: the same GEMMs as 4 M references */
    pe_detect_params p = pe_detect_default_params(0);
    pe_bank *b;
    if (pe_bank_fit_features(NULL, refs, views, &p, &b) != PE_OK) return 1;
    printf("| global, %d refs x 4 views (--rotations 4) | %d x %d | %.1f |\n", m, views, g,
           time_predict(b, &q, reps));
    pe_bank_free(b);

    printf("\n| coreset of %d patches | projection | ms |\n|---|---|---|\n", m * g);
    const int n = m * g;
    int *sel = malloc(sizeof(int) * (size_t)n);
    const float shares[] = {0.01f, 0.1f};
    const int projs[] = {0, 32};
    for (int s = 0; s < 2; s++)
        for (int j = 0; j < 2; j++) {
            int keep = pe_coreset_size(n, shares[s], 0);
            double t0 = now();
            if (pe_coreset_select(data, n, dim, keep, projs[j], 1, sel) != PE_OK) return 1;
            printf("| %g %% (%d) | %s | %.0f |\n", 100.0 * shares[s], keep,
                   projs[j] ? "32 dims" : "none (128)", 1000 * (now() - t0));
        }
    free(sel);
    free(refs);
    free(data);
    return 0;
}
