/* score_bench.c — evidence for docs/SCORING.md: image scores of the MVTec 3D-AD tire
 * test set for few-shot (N shots x seeds) and batch zero-shot (presets x orders), with
 * timings of backbone vs scoring and the sgemm peak. Scores go to a CSV; AUROC is
 * computed from it with scikit-learn (tools/score_auroc.py).
 *
 *   build/bench/score_bench MODEL DATA_DIR SIZE ZS_SIZE OUT.csv
 * e.g. build/bench/score_bench weights/mobilenet_v2 ../shared/data/mvtec3d_tire 448 224 s.csv
 * Shots are sampled exactly as `patchead fit --shots N --seed X` and eval do
 * (pe_sample_refs over the sorted train/good paths). */
#include "patchead.h"

#include <cblas.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char **)a, *(char **)b); }

/* Sorted image paths under dir (one level). */
static int list_dir(const char *dir, char ***out)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    char **v = NULL;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        v = realloc(v, sizeof *v * (n + 1));
        v[n] = malloc(strlen(dir) + strlen(e->d_name) + 2);
        sprintf(v[n++], "%s/%s", dir, e->d_name);
    }
    closedir(d);
    qsort(v, (size_t)n, sizeof *v, cmp_str);
    *out = v;
    return n;
}

static double t_backbone = 0;
static int extract(pe_model *m, const char *path, int size, pe_features *f)
{
    pe_image img;
    if (pe_image_load(path, &img)) return -1;
    pe_extract_params e = pe_extract_default_params();
    e.size = size;
    double t0 = now();
    pe_status s = pe_model_extract(m, &img, &e, f);
    t_backbone += now() - t0;
    pe_image_free(&img);
    return s ? -1 : 0;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: score_bench MODEL DATA_DIR SIZE ZS_SIZE OUT.csv\n");
        return 2;
    }
    const char *model_path = argv[1], *data = argv[2];
    int size = atoi(argv[3]), zs_size = atoi(argv[4]);
    FILE *csv = fopen(argv[5], "w");
    pe_model *model;
    if (!csv || pe_model_load(model_path, NULL, &model)) {
        fprintf(stderr, "%s\n", pe_last_error());
        return 1;
    }
    fprintf(csv, "config,path,label,score\n");
    printf("threads %d\n", pe_get_threads());

    /* sgemm peak: (1536 x 1536) x (1536 x 1536) */
    {
        int n = 1536;
        float *a = calloc((size_t)n * n, 4), *b = calloc((size_t)n * n, 4), *c = calloc((size_t)n * n, 4);
        for (int i = 0; i < n * n; i++) a[i] = b[i] = (float)(i % 7) * 0.1f;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1, a, n, b, n, 0, c, n);
        double t0 = now();
        for (int r = 0; r < 3; r++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1, a, n, b, n, 0, c, n);
        printf("sgemm peak: %.1f GFLOP/s\n", 3 * 2.0 * n * n * n / (now() - t0) / 1e9);
        free(a), free(b), free(c);
    }

    char dir[4096], **train, *types[16];
    snprintf(dir, sizeof dir, "%s/train/good", data);
    int ntrain = list_dir(dir, &train);
    char **tdirs;
    snprintf(dir, sizeof dir, "%s/test", data);
    int ntypes = list_dir(dir, &tdirs);
    char **test = NULL;
    int *label = NULL, ntest = 0;
    for (int t = 0; t < ntypes && t < 16; t++) {
        char **v;
        int n = list_dir(tdirs[t], &v);
        types[t] = tdirs[t];
        for (int i = 0; i < n; i++) {
            test = realloc(test, sizeof *test * (ntest + 1));
            label = realloc(label, sizeof *label * (ntest + 1));
            test[ntest] = v[i];
            label[ntest++] = strstr(tdirs[t], "/good") ? 0 : 1;
        }
        free(v);
    }
    printf("%d train, %d test images\n", ntrain, ntest);

    /* ---- few-shot at `size` */
    pe_features *tf = calloc((size_t)ntest, sizeof *tf);
    t_backbone = 0;
    for (int i = 0; i < ntest; i++)
        if (extract(model, test[i], size, &tf[i])) return fprintf(stderr, "%s\n", pe_last_error()), 1;
    printf("backbone: %.1f ms/image at %d (%d images)\n", 1000 * t_backbone / ntest, size, ntest);
    int shots_list[2] = {1, 4};
    for (int si = 0; si < 2; si++)
        for (int seed = 0; seed < 3; seed++) {
            int shots = shots_list[si];
            char **p = malloc(sizeof *p * ntrain);
            int *perm = malloc(sizeof *perm * ntrain);
            pe_sample_refs((uint64_t)seed, ntrain, perm);
            for (int i = 0; i < ntrain; i++) p[i] = train[perm[i]];
            free(perm);
            pe_features rf[16];
            for (int k = 0; k < shots; k++) extract(model, p[k], size, &rf[k]);
            pe_detect_params dp = pe_detect_default_params(0);
            pe_bank *bank;
            pe_bank_fit_features(model, rf, shots, &dp, &bank);
            double t0 = now();
            int n_good = 0, n_above = 0;
            for (int i = 0; i < ntest; i++) {
                pe_result r;
                pe_bank_predict_features(bank, &tf[i], &r);
                fprintf(csv, "fewshot_%dshot_seed%d,%s,%d,%.7g\n", shots, seed, test[i], label[i], r.image_score);
                if (!label[i]) {
                    n_good++;
                    n_above += r.image_score > pe_bank_threshold(bank);
                }
                pe_result_free(&r);
            }
            printf("%d-shot seed %d: scoring %.2f ms/image; threshold %.4f flags %d/%d good test images\n",
                   shots, seed, 1000 * (now() - t0) / ntest, pe_bank_threshold(bank), n_above, n_good);
            pe_bank_free(bank);
            for (int k = 0; k < shots; k++) pe_features_free(&rf[k]);
            free(p);
        }
    if (zs_size != size) {
        for (int i = 0; i < ntest; i++) pe_features_free(&tf[i]);
        t_backbone = 0;
        for (int i = 0; i < ntest; i++) extract(model, test[i], zs_size, &tf[i]);
        printf("backbone: %.1f ms/image at %d\n", 1000 * t_backbone / ntest, zs_size);
    }
    /* ---- batch zero-shot at zs_size: (order, K) runs; Eq. 4 top 1% and max from each */
    const float **views = malloc(sizeof *views * ntest);
    for (int i = 0; i < ntest; i++) views[i] = tf[i].data;
    int g = tf[0].grid_h * tf[0].grid_w, dim = tf[0].dim;
    float *ps = malloc(sizeof(float) * (size_t)ntest * g);
    struct { const char *name; int order, count; float frac; } runs[] = {
        {"lowest_K30%", 0, 0, 0.3f}, {"lowest_K1", 0, 1, 0}, {"highest_K30%", 1, 0, 0.3f},
        {"highest_K1", 1, 1, 0}};
    for (size_t r = 0; r < sizeof runs / sizeof *runs; r++) {
        pe_score_params sp = pe_score_default_params("patchead", 1);
        sp.order = (pe_order)runs[r].order;
        sp.k_count = runs[r].count;
        sp.k_fraction = runs[r].frac;
        double t0 = now();
        pe_score_batch(views, ntest, g, dim, &sp, ps, NULL);
        double t = now() - t0;
        double flop = (double)ntest * (ntest - 1) / 2 * g * (double)g * dim * 2;
        printf("zero-shot %s: scoring %.1f s (%.1f GFLOP/s, G=%d, D=%d)\n", runs[r].name, t, flop / t / 1e9, g, dim);
        for (int top = 0; top < 2; top++) {
            pe_score_params e = sp;
            e.top_count = top ? 1 : 0;
            for (int i = 0; i < ntest; i++)
                fprintf(csv, "zeroshot_%s_%s,%s,%d,%.7g\n", runs[r].name, top ? "max" : "top1%", test[i],
                        label[i], pe_image_score(ps + (size_t)i * g, g, &e));
        }
        fflush(csv);
    }
    fclose(csv);
    (void)types;
    return 0;
}
