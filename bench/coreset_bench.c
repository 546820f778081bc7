/* coreset_bench.c — greedy k-center coreset selection time against the number of images
 * (issue #26, docs/BEYOND.md "Coreset selection that scales"):
 *   build/bench/coreset_bench [IMAGES,...] [SHARE] [THREADS] [PLAIN_CENTRES]
 * defaults 100,320,1000, 0.1, all cores, 300.
 *
 * Features: real MobileNetV2 features when $PATCHEAD_DATA holds mvtec3d_tire and
 * weights/mobilenet_v2 exists — every tire image of train/good and test/good at 448 px
 * (56 x 56 patches, D = 128) cut into four 28 x 28 quarters, so one "image" here is 784
 * real patches as the 320 x 784 rows; past the 1,056 quarters they repeat with
 * 1 % Gaussian jitter. Without the data: clustered synthetic rows (5,000 Gaussian
 * clusters, sd 0.3 of the spread of their centres, in 128 dims), said in the header.
 *
 * Columns: "plain" is the loop before issue #26 (every centre scans every row; env
 * PE_CORESET_PLAIN=1), timed on its first PLAIN_CENTRES centres and extrapolated linearly
 * (each of its centres costs the same one pass over the rows), marked "~"; "new" is
 * pe_coreset_select as shipped (default projection for the feature dim, pruned), one run.
 * The memory column is pe_coreset_bytes (what the memory guard checks). */
#include "score/beyond.h"
#include "patchead.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static uint64_t state = 42;
static double urand(void) { return ((pe_splitmix64(&state) >> 11) + 0.5) / 9007199254740992.0; }
static float nrand(void) { return (float)(sqrt(-2.0 * log(urand())) * cos(2.0 * M_PI * urand())); }

enum { DIM = 128, Q = 28, QG = Q * Q };

/* Quarters of the real 448 px feature maps: (count, 784, 128) in *out; 0 when unavailable. */
static int real_quarters(float **out)
{
    const char *root = getenv("PATCHEAD_DATA");
    const char *weights =
        getenv("PE_BENCH_MODEL") ? getenv("PE_BENCH_MODEL") : "weights/mobilenet_v2";
    struct stat st;
    char dir[2][1024];
    if (!root || !*root || stat(weights, &st)) return 0;
    snprintf(dir[0], sizeof dir[0], "%s/mvtec3d_tire/train/good", root);
    snprintf(dir[1], sizeof dir[1], "%s/mvtec3d_tire/test/good", root);
    pe_model *model;
    if (pe_model_load(weights, NULL, &model) != PE_OK) return 0;
    pe_extract_params ep = pe_extract_default_params();
    ep.size = 448;
    int count = 0, cap = 0;
    float *data = NULL;
    for (int d = 0; d < 2; d++) {
        struct dirent **names;
        int nn = scandir(dir[d], &names, NULL, alphasort);
        for (int k = 0; k < nn; k++) {
            char path[2400];
            const char *e = strrchr(names[k]->d_name, '.');
            snprintf(path, sizeof path, "%s/%s", dir[d], names[k]->d_name);
            free(names[k]);
            if (!e || (strcmp(e, ".jpg") && strcmp(e, ".png"))) continue;
            pe_image img;
            pe_features f;
            if (pe_image_load(path, &img) != PE_OK) continue;
            pe_status s = pe_model_extract(model, &img, &ep, &f);
            pe_image_free(&img);
            if (s != PE_OK || f.dim != DIM || f.grid_h != 2 * Q || f.grid_w != 2 * Q) {
                if (s == PE_OK) pe_features_free(&f);
                continue;
            }
            if (count + 4 > cap) {
                cap = 2 * cap + 64;
                data = realloc(data, sizeof(float) * (size_t)cap * QG * DIM);
            }
            for (int qy = 0; qy < 2; qy++)
                for (int qx = 0; qx < 2; qx++, count++)
                    for (int y = 0; y < Q; y++)
                        memcpy(data + ((size_t)count * QG + (size_t)y * Q) * DIM,
                               f.data + ((size_t)(qy * Q + y) * 2 * Q + qx * Q) * DIM,
                               sizeof(float) * Q * DIM);
            pe_features_free(&f);
        }
        if (nn > 0) free(names);
    }
    pe_model_free(model);
    *out = data;
    return count;
}

int main(int argc, char **argv)
{
    int images[8] = {100, 320, 1000}, ni = 3;
    if (argc > 1) {
        ni = 0;
        for (char *tok = strtok(argv[1], ","); tok && ni < 8; tok = strtok(NULL, ","))
            images[ni++] = atoi(tok);
    }
    const float share = argc > 2 ? (float)atof(argv[2]) : 0.1f;
    if (argc > 3) pe_set_threads(atoi(argv[3]));
    const int plain_centres = argc > 4 ? atoi(argv[4]) : 300;
    int most = 0;
    for (int i = 0; i < ni; i++) most = images[i] > most ? images[i] : most;

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
    /* the ISA: the CPU's vector extensions; the distances are fp32 C (omp simd) compiled for
     * the build's -march */
    char isa[128] = "";
    static char flags[8192];
    if ((f = fopen("/proc/cpuinfo", "r"))) {
        while (fgets(flags, sizeof flags, f) && strncmp(flags, "flags", 5)) {
        }
        fclose(f);
    }
    const char *names[] = {" avx2", " avx512f", " avx512_bf16", " amx_tile"};
    for (int k = 0; k < 4; k++)
        if (strstr(flags, names[k])) strcat(isa, names[k]);

    double t0 = now();
    float *base = NULL;
    int nbase = real_quarters(&base);
    const char *source;
    char sbuf[256];
    float *x = malloc(sizeof(float) * (size_t)most * QG * DIM);
    if (!x) return 1;
    if (nbase > 0) {
        snprintf(
            sbuf, sizeof sbuf,
            "real MobileNetV2 tire features at 448 px (%d quarter maps of 28x28 from train/good + "
            "test/good, repeated with 1 %% jitter past them; extracted in %.0f s)",
            nbase, now() - t0);
        source = sbuf;
        for (int k = 0; k < most; k++) {
            const float *src = base + (size_t)(k % nbase) * QG * DIM;
            float *dst = x + (size_t)k * QG * DIM;
            for (int i = 0; i < QG; i++) {
                double ss = 0;
                for (int c = 0; c < DIM; c++) ss += (double)src[i * DIM + c] * src[i * DIM + c];
                float sd = k < nbase ? 0 : 0.01f * (float)sqrt(ss / DIM);
                for (int c = 0; c < DIM; c++) dst[i * DIM + c] = src[i * DIM + c] + sd * nrand();
            }
        }
    } else {
        source = "synthetic clustered rows (5,000 Gaussian clusters, sd 0.3 of the centres' "
                 "spread; no PATCHEAD_DATA tire or weights/mobilenet_v2)";
        const int nc = 5000;
        float *centres = malloc(sizeof(float) * (size_t)nc * DIM);
        for (size_t i = 0; i < (size_t)nc * DIM; i++) centres[i] = nrand();
        for (size_t i = 0; i < (size_t)most * QG; i++) {
            const float *c = centres + (pe_splitmix64(&state) % nc) * DIM;
            for (int k = 0; k < DIM; k++) x[i * DIM + k] = c[k] + 0.3f * nrand();
        }
        free(centres);
    }
    free(base);

    printf("# coreset selection: %s; load %s; threads %d\n",
           strchr(cpu, ':') ? strchr(cpu, ':') + 2 : cpu, load, pe_get_threads());
    printf("# ISA:%s; distances fp32 (omp simd, %s build)\n", isa,
#ifdef __AVX512F__
           "AVX-512"
#elif defined(__AVX2__)
           "AVX2"
#else
           "baseline"
#endif
    );
    printf("# features: %s\n", source);
    printf("# %g %% kept, D = %d, seed 1; plain = every centre scans every row (before #26), "
           "~ = extrapolated from its first %d centres\n\n",
           100.0 * share, DIM, plain_centres);
    printf("| images | rows | kept | memory MB | plain s | new s | speed-up |\n");
    printf("|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < ni; i++) {
        const int n = images[i] * QG, keep = pe_coreset_size(n, share, 0);
        int *sel = malloc(sizeof(int) * (size_t)keep);
        const int pk = plain_centres < keep ? plain_centres : keep;
        setenv("PE_CORESET_PLAIN", "1", 1);
        double a = now();
        if (pe_coreset_select(x, n, DIM, pk, -1, 1, sel) != PE_OK) return 1;
        double plain = (now() - a) * keep / pk;
        unsetenv("PE_CORESET_PLAIN");
        a = now();
        if (pe_coreset_select(x, n, DIM, keep, 0, 1, sel) != PE_OK) {
            fprintf(stderr, "coreset_bench: %s\n", pe_last_error());
            return 1;
        }
        double fresh = now() - a;
        printf("| %d | %d | %d | %.0f | %s%.1f | %.1f | %.0fx |\n", images[i], n, keep,
               pe_coreset_bytes(n, DIM, keep, 0) / 1e6, pk < keep ? "~" : "", plain, fresh,
               plain / fresh);
        fflush(stdout);
        free(sel);
    }
    free(x);
    return 0;
}
