/* predict_speed.c — few-shot scoring time per image against a bank, backbone excluded
 * (docs/ENGINE.md, "Few-shot queries too": the reference cache).
 *
 *   build/bench/predict_speed MODEL DATA_DIR [SIZE [SHOTS [QUERIES [PRECISION [ROUNDS]]]]]
 *       (default 448, 4 shots, 16 queries, fp32, 5 rounds)
 * e.g. build/bench/predict_speed weights/mobilenet_v2 ../shared/data/mvtec3d_tire 448 4 16 fp32
 *
 * Features of the first SHOTS images of DATA_DIR/train/good (the references) and of the
 * first QUERIES images under DATA_DIR/test/<defect>/ (sorted) are extracted once; a bank
 * is fit on the references (pe_bank_fit_features, in PRECISION), saved and loaded again
 * (a bank as `patchead predict` has it), then every query is scored against it
 * (pe_bank_predict_features) ROUNDS times. Prints ms per image of the first round (a
 * fresh bank) and the best and median of the others, and a checksum of the image scores
 * (their bits, so two builds can be compared exactly). */
#include "patchead.h"

#include <dirent.h>
#include <stdint.h>
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

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}
static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* sorted image files directly under dir, appended to *v (n entries so far) */
static int list_images(const char *dir, char ***v, int n)
{
    DIR *d = opendir(dir);
    if (!d) return n;
    struct dirent *e;
    int first = n;
    while ((e = readdir(d))) {
        const char *dot = strrchr(e->d_name, '.');
        if (e->d_name[0] == '.' || !dot || (strcmp(dot, ".png") && strcmp(dot, ".jpg"))) continue;
        *v = realloc(*v, sizeof **v * (size_t)(n + 1));
        (*v)[n] = malloc(strlen(dir) + strlen(e->d_name) + 2);
        sprintf((*v)[n++], "%s/%s", dir, e->d_name);
    }
    closedir(d);
    qsort(*v + first, (size_t)(n - first), sizeof **v, cmp_str);
    return n;
}

static int extract(pe_model *m, const char *path, int size, pe_features *f)
{
    pe_image img;
    if (pe_image_load(path, &img)) return -1;
    pe_extract_params e = pe_extract_default_params();
    e.size = size;
    pe_status s = pe_model_extract(m, &img, &e, f);
    pe_image_free(&img);
    return s ? -1 : 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: predict_speed MODEL DATA_DIR [SIZE [SHOTS [QUERIES [PRECISION "
                        "[ROUNDS]]]]]\n");
        return 2;
    }
    const int size = argc > 3 ? atoi(argv[3]) : 448, shots = argc > 4 ? atoi(argv[4]) : 4;
    const int want_q = argc > 5 ? atoi(argv[5]) : 16, rounds = argc > 7 ? atoi(argv[7]) : 5;
    pe_precision prec = PE_PRECISION_FP32;
    if (argc > 6 && pe_precision_parse(argv[6], &prec)) {
        fprintf(stderr, "predict_speed: %s\n", pe_last_error());
        return 2;
    }
    prec = pe_precision_resolve(prec);
    char dir[4096];
    char **refs_p = NULL, **test_p = NULL;
    snprintf(dir, sizeof dir, "%s/train/good", argv[2]);
    const int nr = list_images(dir, &refs_p, 0);
    int nt = 0;
    snprintf(dir, sizeof dir, "%s/test", argv[2]);
    DIR *d = opendir(dir);
    char **sub = NULL;
    int nsub = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        sub = realloc(sub, sizeof *sub * (size_t)(nsub + 1));
        sub[nsub] = malloc(strlen(dir) + strlen(e->d_name) + 2);
        sprintf(sub[nsub++], "%s/%s", dir, e->d_name);
    }
    if (d) closedir(d);
    qsort(sub, (size_t)nsub, sizeof *sub, cmp_str);
    for (int i = 0; i < nsub; i++) nt = list_images(sub[i], &test_p, nt);
    if (nr < shots || nt < 1 || shots < 1 || rounds < 2) {
        fprintf(stderr, "predict_speed: %d references, %d test images under %s\n", nr, nt, argv[2]);
        return 1;
    }
    const int nq = want_q < nt ? want_q : nt;
    pe_model_params mp = pe_model_default_params();
    mp.precision = prec;
    pe_model *model = NULL;
    if (pe_model_load(argv[1], &mp, &model)) {
        fprintf(stderr, "predict_speed: %s\n", pe_last_error());
        return 1;
    }
    pe_features *rf = calloc((size_t)shots, sizeof *rf), *qf = calloc((size_t)nq, sizeof *qf);
    for (int i = 0; i < shots; i++)
        if (extract(model, refs_p[i], size, &rf[i]))
            return fprintf(stderr, "%s\n", pe_last_error()), 1;
    for (int i = 0; i < nq; i++)
        if (extract(model, test_p[i], size, &qf[i]))
            return fprintf(stderr, "%s\n", pe_last_error()), 1;
    pe_detect_params p = pe_detect_default_params(0);
    p.size = size;
    p.score.precision = prec;
    pe_bank *fit = NULL, *bank = NULL;
    char path[] = "/tmp/predict_speed_XXXXXX";
    const int fd = mkstemp(path);
    if (fd < 0 || pe_bank_fit_features(model, rf, shots, &p, &fit) || pe_bank_save(fit, path) ||
        pe_bank_load(path, NULL, &bank)) {
        fprintf(stderr, "predict_speed: %s\n", pe_last_error());
        return 1;
    }
    pe_bank_free(fit);
    remove(path);
    printf("predict_speed: %s, %d x %d patches x %d, %d-shot, %d queries, %s, engine ISA %s, "
           "threads %d\n",
           argv[1], rf[0].grid_h, rf[0].grid_w, rf[0].dim, shots, nq, pe_precision_name(prec),
           pe_engine_isa(), pe_get_threads());
    double *ms = malloc((size_t)rounds * sizeof *ms);
    uint64_t sum = 0;
    for (int r = 0; r < rounds; r++) {
        const double t0 = now();
        for (int i = 0; i < nq; i++) {
            pe_result res;
            if (pe_bank_predict_features(bank, &qf[i], &res)) {
                fprintf(stderr, "predict_speed: %s\n", pe_last_error());
                return 1;
            }
            if (r == 0) {
                uint32_t bits;
                memcpy(&bits, &res.image_score, 4);
                sum = sum * 1000003u + bits;
                for (int j = 0; j < res.grid_h * res.grid_w; j++) {
                    memcpy(&bits, &res.patch_scores[j], 4);
                    sum = sum * 1000003u + bits;
                }
            }
            pe_result_free(&res);
        }
        ms[r] = 1e3 * (now() - t0) / nq;
    }
    const double first = ms[0];
    qsort(ms + 1, (size_t)rounds - 1, sizeof *ms, cmp_dbl);
    printf("scoring ms/image: first round %.2f, then best %.2f median %.2f (%d rounds); scores "
           "checksum %016llx\n",
           first, ms[1], ms[1 + (rounds - 1) / 2], rounds - 1, (unsigned long long)sum);
    pe_bank_free(bank);
    pe_model_free(model);
    for (int i = 0; i < shots; i++) pe_features_free(&rf[i]);
    for (int i = 0; i < nq; i++) pe_features_free(&qf[i]);
    return 0;
}
