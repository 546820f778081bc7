/* eval.c — `patchead eval`: run PatchEAD over a dataset (few-shot with seeded
 * reference sampling, and/or batch zero-shot; optional PatchEAD+ switches and the 2x2
 * alignment x masking ablation) and write the result tables and the HTML report.
 *
 * Per category, every test image and every needed training image is decoded and passed
 * through the backbone ONCE; the features are reused by all presets, shots and seeds via
 * the *_features API. Alignment needs pixels (rigid registration of the references), so
 * aligned settings go through pe_bank_fit / pe_bank_predict / pe_zeroshot on images.
 * Pixel metrics stream each anomaly map into a histogram accumulator (pe_pixel_acc):
 * memory is O(bins + one image), whatever the number of pixels. */
#include "cli.h"
#include "options.h"
#include "report.h"
#include "scale.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define MAX_SHOTS 16
#define MAX_PRESETS 8
#define EXAMPLE_SIDE 256 /* longest side of the report's example heatmaps */

typedef struct {
    const cli_opts *cli;  /* the parsed options (scoring overrides) */
    const char *model_path, *data, *layout, *out;
    char *presets[MAX_PRESETS];
    int num_presets;
    char **only;          /* --category filter */
    int num_only;
    int shots[MAX_SHOTS], num_shots;
    int num_seeds, zeroshot;
    int size, layer, align, mask, ablation, threads, max_test, bins;
    float sigma; /* anomaly map Gaussian sigma (pixels) */
    pe_precision precision; /* backbone and scoring GEMMs (resolved) */
    /* beyond the paper (docs/BEYOND.md), applied to every few-shot setting */
    int rotations, flips, window, coreset_count, coreset_proj;
    float coreset_fraction;
    char beyond[160]; /* their description for results.json */
    scale_opts scale;     /* --comparators, --comparator-seed (zero-shot settings) */
} eval_opts;

static const char *USAGE =
    "usage: patchead eval --model M --data ROOT (--shots 1,2,4 [--seeds 3] | --zeroshot)\n"
    "                     [options]\n\n"
    "Evaluates PatchEAD on a dataset and writes results.md, results.csv, results.json,\n"
    "scores.csv and report.html into --out. The scoring options (--preset, --order, --k,\n"
    "--top) apply to every setting; few-shot references of seed S are those of\n"
    "patchead fit --shots N --seed S on the category's normal training images. The\n"
    "options beyond the paper (--rotations, --flips, --window, --coreset) apply to the\n"
    "few-shot settings (docs/BEYOND.md); --comparators to the zero-shot ones\n"
    "(docs/SCALE.md). Before anything is extracted, each category's memory is checked\n"
    "(--mem-limit; --spill keeps test features in a mapped file) and the run's time is\n"
    "estimated from a short calibration (--max-time refuses a longer run). Under mpirun\n"
    "(a build with make MPI=1) the ranks share the (setting, category, seed) cells, or a\n"
    "single zero-shot batch's pairs, and rank 0 writes the outputs; a rank that fails\n"
    "ends every rank.\n";

static int parse_shots(const char *text, eval_opts *o)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", text);
    o->num_shots = 0;
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        if (o->num_shots == MAX_SHOTS) {
            cli_error("--shots: at most %d values", MAX_SHOTS);
            return -1;
        }
        if (cli_parse_int("--shots", tok, 1, 4096, &o->shots[o->num_shots])) return -1;
        o->num_shots++;
    }
    if (!o->num_shots) {
        cli_error("--shots expects a list like 1,2,4");
        return -1;
    }
    return 0;
}

static int parse_list(const char *text, char ***items, int *n)
{
    char *copy = strdup(text);
    if (!copy) return -1;
    for (char *tok = strtok(copy, ","); tok; tok = strtok(NULL, ",")) {
        char **grown = realloc(*items, (size_t)(*n + 1) * sizeof *grown);
        if (!grown || !(grown[*n] = strdup(tok))) {
            free(copy);
            return -1;
        }
        *items = grown;
        (*n)++;
    }
    free(copy);
    return 0;
}

/* ------------------------------------------------------------------ provenance */

/* Commit of the git checkout holding `dir` or one of its parents: reads .git/HEAD, then
 * refs/heads/<branch> or packed-refs. Returns 1 when a checkout was found. */
static int git_commit_from(char *dir, char *out, size_t cap)
{
    for (;;) {
        char path[4400], line[256];
        snprintf(path, sizeof path, "%s/.git/HEAD", dir);
        FILE *f = fopen(path, "r");
        if (f) {
            int got = fgets(line, sizeof line, f) != NULL;
            fclose(f);
            if (!got) return 1;
            line[strcspn(line, "\r\n")] = 0;
            if (strncmp(line, "ref: ", 5)) { /* detached HEAD: the hash itself */
                snprintf(out, cap, "%.40s", line);
                return 1;
            }
            snprintf(path, sizeof path, "%s/.git/%s", dir, line + 5);
            if ((f = fopen(path, "r"))) {
                if (fgets(out, (int)cap, f)) out[strcspn(out, "\r\n")] = 0;
                fclose(f);
                return 1;
            }
            snprintf(path, sizeof path, "%s/.git/packed-refs", dir);
            if ((f = fopen(path, "r"))) {
                char row[512];
                while (fgets(row, sizeof row, f)) {
                    row[strcspn(row, "\r\n")] = 0;
                    char *sp = strchr(row, ' ');
                    if (sp && !strcmp(sp + 1, line + 5)) {
                        snprintf(out, cap, "%.40s", row);
                        break;
                    }
                }
                fclose(f);
            }
            return 1;
        }
        char *slash = strrchr(dir, '/');
        if (!slash || slash == dir) return 0;
        *slash = 0;
    }
}

/* The commit of the source tree the binary was built in (the checkout above the
 * executable), else of the checkout the command runs in; "" if neither. */
static void git_commit(char *out, size_t cap)
{
    out[0] = 0;
    char dir[4096];
    ssize_t n = readlink("/proc/self/exe", dir, sizeof dir - 1);
    if (n > 0) {
        dir[n] = 0;
        if (git_commit_from(dir, out, cap)) return;
    }
    if (getcwd(dir, sizeof dir)) git_commit_from(dir, out, cap);
}

static long peak_rss_kb(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_maxrss : 0;
}

/* ------------------------------------------------------------------ one category */

typedef struct {
    pe_model *model;
    const eval_opts *o;
    ev_run *run;
    int ci;                   /* category index in the run */
    int need_attn;
    int shard_cells;          /* MPI: cells split across ranks (else a batch's pairs are) */
    pe_features *test_feats;  /* (n) */
    int *test_w, *test_h;     /* original sizes (anomaly maps are computed at these) */
    pe_features *train_feats; /* (num_train) extracted on demand; data NULL if not */
    int **perm;               /* [seed] reference order */
} cat_state;

static int load_image(const char *path, pe_image *img)
{
    pe_status st = pe_image_load(path, img);
    if (st) return cli_lib_error(st), -1;
    return 0;
}

static int extract_one(cat_state *cs, const char *path, pe_features *f, int *w, int *h)
{
    pe_image img;
    if (load_image(path, &img)) return -1;
    pe_extract_params ep = pe_extract_default_params();
    ep.size = cs->o->size;
    ep.layer = cs->o->layer;
    ep.want_attn = cs->need_attn;
    pe_status st = pe_model_extract(cs->model, &img, &ep, f);
    if (w) *w = img.width;
    if (h) *h = img.height;
    pe_image_free(&img);
    if (st) {
        cli_error("%s: %s", path, pe_last_error());
        return -1;
    }
    return 0;
}

/* Pick the report's example heatmaps from one setting's results: the most confident
 * correct cases (highest-scored anomaly, lowest-scored normal image) and the worst
 * misranked ones (lowest-scored anomaly, highest-scored normal image). */
static void write_examples(cat_state *cs, const ev_setting *set, const pe_result *res,
                           const float *scores, float lo, float hi)
{
    ev_category *ec = &cs->run->cats[cs->ci];
    int n = ec->num_test;
    int best_a = -1, best_n = -1, worst_a = -1, worst_n = -1;
    for (int i = 0; i < n; i++) {
        if (ec->test[i]->label) {
            if (best_a < 0 || scores[i] > scores[best_a]) best_a = i;
            if (worst_a < 0 || scores[i] < scores[worst_a]) worst_a = i;
        } else {
            if (best_n < 0 || scores[i] < scores[best_n]) best_n = i;
            if (worst_n < 0 || scores[i] > scores[worst_n]) worst_n = i;
        }
    }
    const int pick[4] = {best_a, best_n, worst_a, worst_n};
    const char *kind[4] = {"most confident anomaly", "most confident normal",
                           "lowest-scored anomaly", "highest-scored normal"};
    snprintf(ec->examples_setting, sizeof ec->examples_setting, "%s, seed 0", set->name);
    char safe[128];
    snprintf(safe, sizeof safe, "%s", ec->cat->name);
    for (char *p = safe; *p; p++)
        if (*p == '/' || *p == ' ' || *p == '"' || *p == '<' || *p == '&') *p = '_';
    for (int k = 0; k < 4; k++) {
        int i = pick[k];
        if (i < 0 || (k == 2 && i == best_a) || (k == 3 && i == best_n)) continue;
        pe_image img, small = {0};
        if (pe_image_load(ec->test[i]->path, &img)) {
            cli_warn("%s: %s (example heatmap skipped)", ec->test[i]->path, pe_last_error());
            continue;
        }
        double f = (double)EXAMPLE_SIDE / EV_MAX(img.width, img.height);
        if (f > 1) f = 1;
        int sw = EV_MAX(1, (int)lround(img.width * f)), sh = EV_MAX(1, (int)lround(img.height * f));
        float *map = malloc(sizeof(float) * (size_t)sw * sh);
        ev_example *ex = &ec->examples[ec->num_examples];
        snprintf(ex->file, sizeof ex->file, "heatmaps/%s_%d.png", safe, k);
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", cs->o->out, ex->file);
        pe_status st = map ? pe_image_resize(&img, sw, sh, &small) : PE_ERR_NOMEM;
        if (!st) st = pe_result_map(&res[i], sw, sh, (float)(cs->o->sigma * f), map);
        if (!st) st = pe_save_heatmap_png(path, &small, map, lo, hi);
        if (st) {
            cli_warn("%s: example heatmap not written (%s)", path, pe_last_error());
        } else {
            const char *rel = ec->test[i]->path;
            size_t lr = strlen(ec->cat->root);
            if (!strncmp(rel, ec->cat->root, lr) && rel[lr] == '/') rel += lr + 1;
            int rank = 1;
            for (int j = 0; j < n; j++) rank += scores[j] > scores[i];
            snprintf(ex->caption, sizeof ex->caption, "%s: %s (%s, score %.4f, rank %d/%d)",
                     kind[k], rel, ec->test[i]->label ? "anomalous" : "normal", scores[i], rank, n);
            ec->num_examples++;
        }
        free(map);
        pe_image_free(&small);
        pe_image_free(&img);
    }
}

/* Scores (and maps) of one setting and seed for every test image of the category. */
static int run_cell(cat_state *cs, int si, int seed, pe_result *res)
{
    const ev_setting *set = &cs->run->settings[si];
    ev_category *ec = &cs->run->cats[cs->ci];
    const int n = ec->num_test;
    pe_detect_params dp = pe_detect_default_params(set->shots == 0);
    pe_status st = pe_score_preset(set->preset, set->shots == 0, &dp.score);
    if (st) return cli_lib_error(st), -1;
    if (cli_score_overrides(cs->o->cli, &dp.score)) return -1;
    dp.size = cs->o->size;
    dp.layer = cs->o->layer;
    dp.map_sigma = cs->o->sigma;
    dp.score.precision = cs->o->precision;
    dp.align = set->align;
    dp.mask = set->mask;
    if (set->shots > 0) { /* few-shot bank options (docs/BEYOND.md) */
        dp.rotations = cs->o->rotations;
        dp.flips = cs->o->flips;
        dp.window = cs->o->window;
        dp.coreset_fraction = cs->o->coreset_fraction;
        dp.coreset_count = cs->o->coreset_count;
        dp.coreset_proj = cs->o->coreset_proj;
        dp.coreset_seed = (uint64_t)cs->run->seed_list[seed];
    }
    /* rotated references are made from pixels: fit from images, predict from features */
    const int fit_images = set->align || dp.rotations > 1 || dp.flips;
    scale_apply(&cs->o->scale, &dp);
    dp.local_only = cs->shard_cells;

    if (set->shots == 0 && !set->align) {
        st = pe_zeroshot_features(cs->test_feats, n, &dp, res);
        if (st) return cli_lib_error(st), -1;
        return 0;
    }
    if (set->shots == 0) { /* aligned zero-shot needs every image of the batch */
        pe_image *imgs = calloc((size_t)n, sizeof *imgs);
        int rc = imgs ? 0 : -1;
        for (int i = 0; i < n && !rc; i++) rc = load_image(ec->test[i]->path, &imgs[i]);
        if (!rc) {
            st = pe_zeroshot(cs->model, imgs, n, &dp, NULL, NULL, res);
            if (st) rc = (cli_lib_error(st), -1);
        }
        for (int i = 0; imgs && i < n; i++) pe_image_free(&imgs[i]);
        free(imgs);
        return rc;
    }

    const pe_category *cat = ec->cat;
    const int *perm = cs->perm[seed];
    const int nref = set->shots;
    pe_bank *bank = NULL;
    if (!fit_images) {
        pe_features *refs = calloc((size_t)nref, sizeof *refs);
        if (!refs) return cli_error("out of memory"), -1;
        for (int k = 0; k < nref; k++) refs[k] = cs->train_feats[perm[k]]; /* shallow views */
        st = pe_bank_fit_features(cs->model, refs, nref, &dp, &bank);
        free(refs);
    } else {
        pe_image *imgs = calloc((size_t)nref, sizeof *imgs);
        const char **names = calloc((size_t)nref, sizeof *names);
        int rc = imgs && names ? 0 : -1;
        for (int k = 0; k < nref && !rc; k++) {
            names[k] = cat->train[perm[k]].path;
            rc = load_image(names[k], &imgs[k]);
        }
        st = rc ? PE_ERR_IO : pe_bank_fit(cs->model, imgs, nref, names, &dp, &bank);
        for (int k = 0; imgs && k < nref; k++) pe_image_free(&imgs[k]);
        free(imgs);
        free(names);
        if (rc) return -1;
    }
    if (st) return cli_lib_error(st), -1;
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        if (!set->align) {
            st = pe_bank_predict_features(bank, &cs->test_feats[i], &res[i]);
        } else {
            pe_image img;
            if (load_image(ec->test[i]->path, &img)) {
                rc = -1;
                break;
            }
            st = pe_bank_predict(bank, cs->model, &img, &res[i]);
            pe_image_free(&img);
        }
        if (st) rc = (cli_error("%s: %s", ec->test[i]->path, pe_last_error()), -1);
    }
    pe_bank_free(bank);
    return rc;
}

/* Image and pixel metrics of one cell from its results. */
static int cell_metrics(cat_state *cs, int si, int seed, const pe_result *res, ev_metrics *m)
{
    ev_category *ec = &cs->run->cats[cs->ci];
    const int n = ec->num_test;
    float *scores = ev_scores(cs->run, si, cs->ci, seed);
    uint8_t *labels = malloc((size_t)n);
    if (!labels) return cli_error("out of memory"), -1;
    float lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < n; i++) {
        scores[i] = res[i].image_score;
        labels[i] = (uint8_t)ec->test[i]->label;
        for (int g = 0; g < res[i].grid_h * res[i].grid_w; g++) {
            lo = fminf(lo, res[i].patch_scores[g]);
            hi = fmaxf(hi, res[i].patch_scores[g]);
        }
    }
    pe_image_metrics im;
    pe_status st = pe_image_metrics_compute(scores, labels, n, &im);
    free(labels);
    if (st) return cli_lib_error(st), -1;
    m->i_auroc = im.auroc;
    m->i_ap = im.ap;
    m->f1_max = im.f1_max;
    m->p_auroc = m->pro = m->p_auroc_bound = m->pro_bound = NAN;
    if (ec->cat->has_masks) {
        /* Maps are bilinear + normalised-Gaussian blends of the patch scores, so
         * [lo, hi] of the patch scores is their range (values outside are clamped). */
        pe_pixel_acc *acc;
        st = pe_pixel_acc_create(lo, hi, cs->o->bins, &acc);
        if (st) return cli_lib_error(st), -1;
        float *map = NULL;
        size_t map_cap = 0;
        int rc = 0;
        for (int i = 0; i < n && !rc; i++) {
            int w = cs->test_w[i], h = cs->test_h[i];
            uint8_t *mask = NULL;
            if (ec->test[i]->label) {
                int mw, mh;
                st = pe_mask_load(ec->test[i]->mask_path, &mw, &mh, &mask);
                if (st) {
                    rc = (cli_lib_error(st), -1);
                    break;
                }
                if (mw != w || mh != h) {
                    rc = (cli_error("%s: mask is %dx%d but the image is %dx%d",
                                   ec->test[i]->mask_path, mw, mh, w, h), -1);
                    free(mask);
                    break;
                }
            }
            if ((size_t)w * h > map_cap) {
                free(map);
                map_cap = (size_t)w * h;
                map = malloc(sizeof(float) * map_cap);
            }
            st = map ? pe_result_map(&res[i], w, h, cs->o->sigma, map) : PE_ERR_NOMEM;
            if (!st) st = pe_pixel_acc_add(acc, map, mask, w, h);
            if (st) rc = (cli_error("%s: %s", ec->test[i]->path, pe_last_error()), -1);
            free(mask);
        }
        free(map);
        pe_pixel_metrics pm;
        if (!rc && !(st = pe_pixel_acc_result(acc, 0.3, &pm))) {
            m->p_auroc = pm.auroc;
            m->pro = pm.pro;
            m->p_auroc_bound = pm.auroc_bound;
            m->pro_bound = pm.pro_bound;
        } else if (!rc) {
            rc = (cli_lib_error(st), -1);
        }
        pe_pixel_acc_free(acc);
        if (rc) return -1;
    }
    if (si == 0 && seed == 0) write_examples(cs, &cs->run->settings[si], res, scores, lo, hi);
    return 0;
}

static void free_feats(pe_features *f, int n)
{
    for (int i = 0; f && i < n; i++) pe_features_free(&f[i]);
    free(f);
}

/* MPI rank that runs cell (setting, category, seed) when cells are split: round robin
 * starting at rank 1 (rank 0 also gathers and writes everything). */
static int cell_owner(const ev_run *run, int s, int ci, int seed)
{
    return (int)((((size_t)s * run->num_categories + ci) * run->num_seed_list + seed + 1) %
                 (size_t)pe_dist_size());
}

static int run_category(pe_model *model, const eval_opts *o, ev_run *run, int ci, int need_attn,
                        int shard_cells)
{
    ev_category *ec = &run->cats[ci];
    const pe_category *cat = ec->cat;
    const int n = ec->num_test;
    cat_state cs = {model, o, run, ci, need_attn, shard_cells, NULL, NULL, NULL, NULL, NULL};
    pe_feature_store *store = NULL; /* --spill: the test features */
    if (shard_cells) { /* nothing of this category on this rank: skip its extraction too */
        int mine = 0;
        for (int s = 0; s < run->num_settings; s++)
            for (int seed = 0; seed < run->settings[s].num_seeds; seed++)
                mine |= cell_owner(run, s, ci, seed) == pe_dist_rank();
        if (!mine) return 0;
    }
    int rc = 0, max_shots = 0, need_train_feats = 0;
    for (int s = 0; s < run->num_settings; s++) {
        max_shots = EV_MAX(max_shots, run->settings[s].shots);
        if (run->settings[s].shots && !run->settings[s].align) need_train_feats = 1;
    }
    if (max_shots > cat->num_train) {
        cli_warn("%s: %d normal training image(s), fewer than %d shots: few-shot settings "
                 "skipped for it%s", cat->name, cat->num_train, max_shots,
                 cat->num_train ? "" : " (use --zeroshot)");
    }
    int few_ok = max_shots > 0 && max_shots <= cat->num_train;

    cs.test_feats = calloc((size_t)n, sizeof *cs.test_feats);
    cs.test_w = calloc((size_t)n, sizeof *cs.test_w);
    cs.test_h = calloc((size_t)n, sizeof *cs.test_h);
    cs.train_feats = calloc((size_t)EV_MAX(cat->num_train, 1), sizeof *cs.train_feats);
    cs.perm = calloc((size_t)run->num_seed_list, sizeof *cs.perm);
    pe_result *res = calloc((size_t)n, sizeof *res);
    if (!cs.test_feats || !cs.test_w || !cs.test_h || !cs.train_feats || !cs.perm || !res) {
        rc = cli_error("out of memory");
        goto done;
    }
    /* the references each seed needs, then one extraction pass over test + needed train */
    char *needed = calloc((size_t)EV_MAX(cat->num_train, 1), 1);
    int num_needed = 0;
    for (int seed = 0; few_ok && seed < run->num_seed_list && needed; seed++) {
        cs.perm[seed] = malloc(sizeof(int) * (size_t)cat->num_train);
        if (!cs.perm[seed]) break;
        pe_sample_refs((uint64_t)run->seed_list[seed], cat->num_train, cs.perm[seed]);
        for (int k = 0; k < max_shots && need_train_feats; k++)
            if (!needed[cs.perm[seed][k]]) {
                needed[cs.perm[seed][k]] = 1;
                num_needed++;
            }
    }
    double t0 = cli_now();
    char label[80];
    snprintf(label, sizeof label, "%.40s", cat->name);
    cli_progress bar;
    cli_progress_begin(&bar, label, n + num_needed);
    for (int i = 0; i < n && !rc; i++) {
        /* --spill: each test image's features go into a mapped file (the batch), not RAM */
        pe_features spilled = {0}, *f = o->scale.spill ? &spilled : &cs.test_feats[i];
        if (pe_dist_peer_failed()) rc = EXIT_ERROR; /* another MPI rank failed: stop */
        else if (extract_one(&cs, ec->test[i]->path, f, &cs.test_w[i], &cs.test_h[i]))
            rc = EXIT_ERROR;
        if (!rc && f == &spilled) {
            pe_status st = store ? PE_OK
                                 : pe_feature_store_create(o->scale.spill, n, f->grid_h * f->grid_w,
                                                           f->dim, f->attn != NULL, &store);
            if (!st) st = pe_feature_store_put(store, i, f);
            if (st) rc = (cli_lib_error(st), EXIT_ERROR);
        }
        pe_features_free(&spilled);
        cli_progress_step(&bar, i + 1);
    }
    if (!rc && store) /* views into the store; free_feats must not free them */
        memcpy(cs.test_feats, pe_feature_store_views(store), sizeof *cs.test_feats * (size_t)n);
    for (int k = 0, done = 0; k < cat->num_train && !rc && needed; k++) {
        if (!needed[k]) continue;
        if (pe_dist_peer_failed()) rc = EXIT_ERROR;
        else if (extract_one(&cs, cat->train[k].path, &cs.train_feats[k], NULL, NULL)) rc = EXIT_ERROR;
        cli_progress_step(&bar, n + ++done);
    }
    cli_progress_end(&bar);
    free(needed);
    ec->extract_seconds = cli_now() - t0;
    if (rc) goto done;

    int cells = 0, cells_done = 0;
    for (int s = 0; s < run->num_settings; s++)
        if (!run->settings[s].shots || few_ok) cells += run->settings[s].num_seeds;
    char score_label[96];
    snprintf(score_label, sizeof score_label, "%.40s scoring", cat->name);
    cli_progress_begin(&bar, score_label, cells);
    for (int s = 0; s < run->num_settings && !rc; s++) {
        const ev_setting *set = &run->settings[s];
        if (set->shots && !few_ok) continue;
        for (int seed = 0; seed < set->num_seeds && !rc; seed++, cli_progress_step(&bar, ++cells_done)) {
            if (shard_cells && cell_owner(run, s, ci, seed) != pe_dist_rank()) continue;
            if (pe_dist_peer_failed()) {
                rc = EXIT_ERROR;
                break;
            }
            double t1 = cli_now();
            ev_metrics *m = ev_cell(run, s, ci, seed);
            if (run_cell(&cs, s, seed, res) || cell_metrics(&cs, s, seed, res, m)) rc = EXIT_ERROR;
            m->seconds = cli_now() - t1;
            m->done = !rc;
            for (int i = 0; i < n; i++) pe_result_free(&res[i]);
        }
    }
    cli_progress_end(&bar);
done:
    for (int seed = 0; cs.perm && seed < run->num_seed_list; seed++) free(cs.perm[seed]);
    free(cs.perm);
    if (store) {
        free(cs.test_feats);
        pe_feature_store_free(store);
    } else {
        free_feats(cs.test_feats, n);
    }
    free_feats(cs.train_feats, cat->num_train);
    free(cs.test_w);
    free(cs.test_h);
    free(res);
    return rc;
}

/* ------------------------------------------------------------------ MPI gather */

/* Owner of a file's bytes -> rank 0, written there under the same name (the example
 * heatmaps, for ranks that do not share a file system). */
static int file_to_root(const char *path, int from) /* path: at most 4400 bytes */
{
    uint64_t size = 0;
    uint8_t *bytes = NULL;
    if (pe_dist_rank() == from) {
        FILE *f = fopen(path, "rb");
        if (f && !fseek(f, 0, SEEK_END) && (long)(size = (uint64_t)ftell(f)) >= 0 &&
            !fseek(f, 0, SEEK_SET) && (bytes = malloc(size ? size : 1)) &&
            fread(bytes, 1, size, f) == size) {
        } else {
            size = 0;
        }
        if (f) fclose(f);
    }
    int rc = pe_dist_to_root(&size, sizeof size, from) ? -1 : 0;
    if (!rc && pe_dist_rank() == 0 && size) rc = (bytes = malloc(size)) ? 0 : -1;
    if (!rc && size) rc = pe_dist_to_root(bytes, size, from) ? -1 : 0;
    if (!rc && pe_dist_rank() == 0 && size) {
        char tmp[4500];
        snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
        FILE *f = fopen(tmp, "wb");
        int ok = f && fwrite(bytes, 1, size, f) == size;
        if (f && fclose(f)) ok = 0;
        if (!ok || rename(tmp, path)) {
            remove(tmp);
            rc = cli_error("%s: cannot write the example heatmap from rank %d", path, from);
        }
    }
    free(bytes);
    return rc;
}

/* Cells split across ranks: every cell's metrics and scores, and each category's
 * examples, travel from the rank that ran them to rank 0. All ranks call this. */
static int gather_cells(ev_run *run, const char *out)
{
    int rc = 0;
    for (int s = 0; s < run->num_settings; s++)
        for (int ci = 0; ci < run->num_categories; ci++)
            for (int seed = 0; seed < run->settings[s].num_seeds; seed++) {
                int from = cell_owner(run, s, ci, seed);
                if (pe_dist_to_root(ev_cell(run, s, ci, seed), sizeof(ev_metrics), from) ||
                    pe_dist_to_root(ev_scores(run, s, ci, seed),
                                    sizeof(float) * (size_t)EV_MAX(run->max_test_count, 1), from))
                    rc = -1;
            }
    for (int ci = 0; ci < run->num_categories && !rc; ci++) {
        ev_category *ec = &run->cats[ci];
        int from = cell_owner(run, 0, ci, 0); /* examples come from setting 0, seed 0 */
        if (pe_dist_to_root(ec->examples, sizeof ec->examples, from) ||
            pe_dist_to_root(&ec->num_examples, sizeof ec->num_examples, from) ||
            pe_dist_to_root(ec->examples_setting, sizeof ec->examples_setting, from) ||
            pe_dist_to_root(&ec->extract_seconds, sizeof ec->extract_seconds, from))
            rc = -1;
        for (int k = 0; k < ec->num_examples && !rc && from != 0; k++) {
            char path[4400];
            snprintf(path, sizeof path, "%s/%s", out, ec->examples[k].file);
            rc = file_to_root(path, from);
        }
    }
    if (rc) cli_error("MPI: gathering the results on rank 0 failed (%s)", pe_last_error());
    return rc;
}

/* ------------------------------------------------------------------ guards */

/* The memory guard (docs/SCALE.md), before anything is allocated. Categories run one at
 * a time, so each is checked on its own: its test features (none with --spill), at most
 * the references its seeds need, and the larger of its zero-shot scoring state (Eq. 3
 * heaps, norms, scores, one tile) and a few-shot bank (shots x rotations x flips maps). */
static int check_memory(const ev_run *run, const eval_opts *o, const pe_model_info *info,
                        int need_attn)
{
    int side = o->size > 0 ? o->size : info->default_size;
    int grid = (side + info->patch_size - 1) / info->patch_size;
    int G = grid * grid, D = info->feature_dim;
    double per_image = 4.0 * G * (D + (need_attn ? 1 : 0));
    for (int ci = 0; ci < run->num_categories; ci++) {
        const ev_category *ec = &run->cats[ci];
        int n = ec->num_test, max_shots = 0;
        pe_detect_params dp = pe_detect_default_params(1);
        scale_apply(&o->scale, &dp);
        pe_memory_estimate est, zs;
        /* the base: the machine's MemAvailable, and the default rule's state */
        pe_status st = pe_zeroshot_estimate(EV_MAX(n, 2), G, D, 0, 1, &dp, &est);
        if (st) return cli_lib_error(st), -1;
        est.scoring = 0;
        est.k = 0;
        for (int si = 0; si < run->num_settings; si++) {
            const ev_setting *set = &run->settings[si];
            if (set->shots) {
                max_shots = EV_MAX(max_shots, set->shots);
                continue;
            }
            if (pe_score_preset(set->preset, 1, &dp.score) || cli_score_overrides(o->cli, &dp.score))
                continue; /* reported when the cell runs */
            if (n >= 2 && !pe_zeroshot_estimate(n, G, D, 0, 1, &dp, &zs) && zs.scoring > est.scoring) {
                est.scoring = zs.scoring;
                est.k = zs.k;
            }
        }
        int refs = 0;
        if (max_shots && max_shots <= ec->cat->num_train) {
            refs = max_shots * run->num_seed_list;
            if (refs > ec->cat->num_train) refs = ec->cat->num_train;
            double bank = 4.0 * max_shots * o->rotations * (o->flips ? 2 : 1) * G * D;
            if (bank > est.scoring) est.scoring = bank, est.k = 0;
        }
        est.features = ((o->scale.spill ? 0 : n) + refs) * per_image;
        est.total = est.features + est.scoring;
        char what[192];
        snprintf(what, sizeof what, "eval, category %.64s (%d test + %d reference images of %d "
                 "patches x %d)", ec->cat->name, n, refs, G, D);
        if (scale_refuse_memory(&o->scale, what, &est, "--max-test N, --category C, ")) return -1;
    }
    return 0;
}

/* The time guard (docs/SCALE.md), before anything is extracted: a short calibration
 * (one forward, one pair), then every category's images (test + at most shots x seeds
 * references) at the forward's time and its pair GEMMs at the pair's time: a zero-shot
 * cell scores pe_zeroshot_num_pairs of its test images, a few-shot cell compares each test
 * image with shots x rotations x flips reference maps (a coreset fraction scales that). */
static int check_time(const ev_run *run, const eval_opts *o, const pe_model_info *info,
                      int need_attn, pe_model *model)
{
    pe_extract_params ep = pe_extract_default_params();
    ep.size = o->size;
    ep.layer = o->layer;
    ep.want_attn = need_attn;
    pe_detect_params dp = pe_detect_default_params(1);
    dp.score.precision = o->precision;
    pe_features shape = {0};
    double forward_s = 0, pair_s = 0, images = 0, pairs = 0;
    if (scale_calibrate(model, &ep, o->size > 0 ? o->size : info->default_size, &dp, &shape,
                        &forward_s, &pair_s))
        return -1;
    double views = o->rotations * (o->flips ? 2 : 1) *
                   (o->coreset_fraction > 0 && o->coreset_fraction < 1 ? o->coreset_fraction : 1);
    for (int ci = 0; ci < run->num_categories; ci++) {
        const ev_category *ec = &run->cats[ci];
        int n = ec->num_test, max_shots = 0;
        for (int si = 0; si < run->num_settings; si++) {
            const ev_setting *set = &run->settings[si];
            if (!set->shots) {
                pairs += (double)pe_zeroshot_num_pairs(n, o->scale.comparators);
            } else if (set->shots <= ec->cat->num_train) {
                max_shots = EV_MAX(max_shots, set->shots);
                pairs += (double)set->num_seeds * n * set->shots * views;
            }
        }
        int refs = max_shots * run->num_seed_list;
        images += n + (refs < ec->cat->num_train ? refs : ec->cat->num_train);
    }
    char what[64];
    snprintf(what, sizeof what, "eval of %d categor%s", run->num_categories,
             run->num_categories == 1 ? "y" : "ies");
    return scale_check_time(&o->scale, what, images, forward_s, pairs, pair_s, NULL);
}

/* ------------------------------------------------------------------ command */

static int add_settings(ev_run *run, const eval_opts *o, int has_attn)
{
    int bases = o->num_shots + (o->zeroshot ? 1 : 0);
    int variants = o->ablation ? 4 : 1;
    int cap = o->num_presets * bases * variants;
    run->settings = calloc((size_t)cap, sizeof *run->settings);
    if (!run->settings) return cli_error("out of memory");
    int skipped_mask = 0;
    for (int p = 0; p < o->num_presets; p++)
        for (int b = 0; b < bases; b++)
            for (int v = 0; v < variants; v++) {
                int align = o->ablation ? (v & 1) : o->align;
                int mask = o->ablation ? (v >> 1) : o->mask;
                if (mask && !has_attn) {
                    skipped_mask = 1;
                    continue;
                }
                ev_setting *s = &run->settings[run->num_settings++];
                s->shots = b < o->num_shots ? o->shots[b] : 0;
                s->align = align;
                s->mask = mask;
                snprintf(s->preset, sizeof s->preset, "%s", o->presets[p]);
                s->num_seeds = s->shots ? o->num_seeds : 1;
                char base[32];
                if (s->shots) snprintf(base, sizeof base, "%d-shot", s->shots);
                else snprintf(base, sizeof base, "zero-shot");
                snprintf(s->name, sizeof s->name, "%s%s%s%s%s%s", base, align ? " +align" : "",
                         mask ? " +mask" : "", o->num_presets > 1 ? " [" : "",
                         o->num_presets > 1 ? s->preset : "", o->num_presets > 1 ? "]" : "");
            }
    if (skipped_mask)
        cli_warn("the backbone has no CLS attention: masking variants of the ablation skipped");
    return 0;
}

int cmd_eval(int argc, char **argv)
{
    cli_opts co;
    cli_opts_init(&co);
    int first, r = cli_parse_options(CMD_EVAL, USAGE, argc, argv, &co, &first);
    if (r) {
        cli_opts_free(&co);
        return r > 0 ? EXIT_OK : EXIT_USAGE;
    }
    eval_opts o = {0};
    o.cli = &co;
    o.model_path = co.model;
    o.data = co.data;
    o.layout = co.layout;
    o.out = co.out ? co.out : "eval_out";
    o.only = co.categories.items;
    o.num_only = co.categories.n;
    o.num_seeds = co.seeds;
    o.zeroshot = co.zeroshot;
    o.size = co.size;
    o.layer = co.layer;
    o.align = co.align;
    o.mask = co.mask;
    o.ablation = co.ablation;
    o.threads = co.threads;
    o.max_test = co.max_test;
    o.bins = co.pixel_bins;
    if (scale_opts_from(&co, &o.scale)) {
        cli_opts_free(&co);
        return EXIT_USAGE;
    }
    if (co.precision && cli_parse_precision(co.precision, &o.precision)) {
        cli_opts_free(&co);
        return EXIT_USAGE;
    }
    o.sigma = co.sigma >= 0 ? (float)co.sigma : pe_detect_default_params(0).map_sigma;
    const char *preset_text = co.preset;
    if (co.shots_list && parse_shots(co.shots_list, &o)) {
        cli_opts_free(&co);
        return EXIT_USAGE;
    }
    if (first < argc) {
        cli_error("eval: unexpected argument '%s'", argv[first]);
        cli_opts_free(&co);
        return EXIT_USAGE;
    }
    if (!o.model_path || !o.data) {
        cli_error("eval needs --model and --data (see patchead eval --help)");
        cli_opts_free(&co);
        return EXIT_USAGE;
    }
    o.rotations = co.rotations;
    o.flips = co.flips;
    o.window = co.window;
    o.coreset_proj = co.coreset_proj;
    if (co.coreset && cli_count_or_fraction("--coreset", co.coreset, &o.coreset_count,
                                            &o.coreset_fraction)) {
        cli_opts_free(&co);
        return EXIT_USAGE;
    }
    snprintf(o.beyond, sizeof o.beyond, "rotations %d, flips %d, window %d, coreset %s, proj %d",
             o.rotations, o.flips, o.window, co.coreset ? co.coreset : "none", o.coreset_proj);
    if (!o.num_shots && !o.zeroshot) {
        cli_error("eval needs --shots LIST and/or --zeroshot");
        cli_opts_free(&co);
        return EXIT_USAGE;
    }
    {
        char **names = NULL;
        int nn = 0;
        if (parse_list(preset_text ? preset_text : "patchead", &names, &nn) || nn > MAX_PRESETS) {
            cli_free_paths(names, nn);
            cli_opts_free(&co);
            cli_error("--preset: at most %d names", MAX_PRESETS);
            return EXIT_USAGE;
        }
        for (int i = 0; i < nn; i++) {
            pe_score_params sp;
            if (pe_score_preset(names[i], 0, &sp) != PE_OK) {
                cli_error("--preset: %s", pe_last_error());
                cli_free_paths(names, nn);
                cli_opts_free(&co);
                return EXIT_USAGE;
            }
            o.presets[i] = names[i];
        }
        o.num_presets = nn;
        free(names);
    }

    double t_start = cli_now();
    time_t now = time(NULL);
    char started[32];
    strftime(started, sizeof started, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    pe_set_threads(o.threads);

    int rc = EXIT_ERROR;
    pe_model *model = NULL;
    pe_dataset *ds = NULL;
    ev_run run = {0};
    const char *final_out = o.out; /* o.out becomes the staging folder during the run */
    pe_run_dir *pub = NULL;
    pe_model_params mp = pe_model_default_params();
    mp.threads = o.threads;
    mp.precision = o.precision;
    pe_status st = pe_model_load(o.model_path, &mp, &model);
    if (st) {
        cli_lib_error(st);
        goto out;
    }
    pe_model_info info;
    pe_model_get_info(model, &info);
    if (o.mask && !info.has_attention) {
        cli_error("--mask needs a ViT backbone with CLS attention; %s has none", info.name);
        goto out;
    }
    if ((st = pe_dataset_open(o.data, o.layout, &ds))) {
        if (st == PE_ERR_FORMAT && !o.layout) cli_error("%s (see --layout)", pe_last_error());
        else cli_lib_error(st);
        goto out;
    }

    /* categories (in dataset order), filtered by --category */
    run.cats = calloc((size_t)ds->num_categories, sizeof *run.cats);
    if (!run.cats) goto out;
    for (int i = 0; i < ds->num_categories; i++) {
        int keep = !o.num_only;
        for (int k = 0; k < o.num_only && !keep; k++) keep = !strcmp(o.only[k], ds->categories[i].name);
        if (keep) run.cats[run.num_categories++].cat = &ds->categories[i];
    }
    for (int k = 0; k < o.num_only; k++) {
        int found = 0;
        for (int i = 0; i < ds->num_categories && !found; i++)
            found = !strcmp(o.only[k], ds->categories[i].name);
        if (!found) {
            char names[1024] = "";
            for (int i = 0; i < ds->num_categories; i++) {
                size_t l = strlen(names);
                snprintf(names + l, sizeof names - l, "%s%s", i ? ", " : "", ds->categories[i].name);
            }
            cli_error("--category %s: not in %s (categories: %s)", o.only[k], o.data, names);
            goto out;
        }
    }
    for (int i = 0; i < run.num_categories; i++) {
        ev_category *ec = &run.cats[i];
        int total = ec->cat->num_test;
        ec->num_test = o.max_test && o.max_test < total ? o.max_test : total;
        ec->test = calloc((size_t)ec->num_test, sizeof *ec->test);
        if (!ec->test) goto out;
        for (int k = 0; k < ec->num_test; k++) /* evenly spaced when capped */
            ec->test[k] = &ec->cat->test[(long)k * total / ec->num_test];
        run.max_test_count = EV_MAX(run.max_test_count, ec->num_test);
    }
    if (add_settings(&run, &o, info.has_attention)) goto out;
    if (run.num_settings == 0) {
        cli_error("no setting left to run");
        goto out;
    }
    int need_attn = 0;
    for (int s = 0; s < run.num_settings; s++) need_attn |= run.settings[s].mask;
    run.num_seed_list = o.num_shots ? o.num_seeds : 1;
    int *seeds = malloc(sizeof(int) * (size_t)run.num_seed_list);
    if (!seeds) goto out;
    for (int i = 0; i < run.num_seed_list; i++) seeds[i] = i;
    run.seed_list = seeds;
    size_t cells = (size_t)run.num_settings * run.num_categories * run.num_seed_list;
    run.metrics = calloc(cells, sizeof *run.metrics);
    run.scores = malloc(sizeof(float) * cells * (size_t)EV_MAX(run.max_test_count, 1));
    if (!run.metrics || !run.scores) {
        cli_error("out of memory");
        goto out;
    }
    for (size_t i = 0; i < cells * (size_t)EV_MAX(run.max_test_count, 1); i++) run.scores[i] = NAN;
    for (size_t i = 0; i < cells; i++) {
        ev_metrics *m = &run.metrics[i];
        m->i_auroc = m->i_ap = m->f1_max = m->p_auroc = m->pro = NAN;
        m->p_auroc_bound = m->pro_bound = NAN;
    }
    if (check_memory(&run, &o, &info, need_attn) || check_time(&run, &o, &info, need_attn, model))
        goto out;
    /* One commit point: everything goes into a staging folder that replaces --out as a
     * whole at the end (pe_run_*); a failed run leaves the previous results. */
    if ((st = pe_run_begin(final_out, &pub))) {
        cli_lib_error(st);
        goto out;
    }
    o.out = pe_run_path(pub);
    char hm[4200];
    snprintf(hm, sizeof hm, "%s/heatmaps", o.out);
    if (cli_mkdirs(hm)) goto out;

    char commit[64];
    git_commit(commit, sizeof commit);
    run.version = PE_VERSION;
    run.git_commit = commit;
    run.started = started;
    run.model_path = o.model_path;
    run.backbone = info.name;
    run.family = info.family;
    run.weights_hash = info.weights_hash;
    run.data_root = o.data;
    run.layout = ds->layout;
    run.out_dir = final_out;
    run.size = o.size ? o.size : info.default_size;
    run.threads = pe_get_threads();
    run.precision = pe_precision_name(o.precision);
    run.max_test = o.max_test;
    run.pixel_bins = o.bins;
    run.map_sigma = o.sigma;
    run.beyond = o.beyond;

    if (!cli_quiet)
        fprintf(stderr, "eval: %s (%s), %d categor%s of %s (%s), %d setting(s)\n", info.name,
                info.weights_hash, run.num_categories, run.num_categories == 1 ? "y" : "ies",
                o.data, ds->layout, run.num_settings);
    /* MPI: with at least as many cells as ranks the cells are split; otherwise each
     * zero-shot batch's pairs are (and every rank runs every cell). */
    size_t runnable = 0;
    for (int s = 0; s < run.num_settings; s++)
        runnable += (size_t)run.settings[s].num_seeds * run.num_categories;
    int shard_cells = pe_dist_size() > 1 && runnable >= (size_t)pe_dist_size();
    run.comparators = o.scale.comparators;
    run.comparator_seed = (int)o.scale.seed;
    run.mpi_ranks = pe_dist_size();
    int failed_here = 0;
    for (int ci = 0; ci < run.num_categories && !failed_here && !pe_dist_peer_failed(); ci++) {
        double t = cli_now();
        if (run_category(model, &o, &run, ci, need_attn, shard_cells)) failed_here = 1;
        if (!failed_here && !cli_quiet && !shard_cells) {
            const ev_metrics *m = ev_cell(&run, 0, ci, 0);
            fprintf(stderr, "  %-20s %4d test  I-AUROC %5.1f  P-AUROC %5.1f  (%.1fs)\n",
                    run.cats[ci].cat->name, run.cats[ci].num_test, 100 * m->i_auroc,
                    100 * m->p_auroc, cli_now() - t);
        }
    }
    /* every rank says whether it got through before anything is gathered or written */
    if (!scale_ranks_all_ok(!failed_here)) goto out;
    if (shard_cells && gather_cells(&run, o.out)) goto out;
    if (pe_dist_rank() != 0) { /* rank 0 writes the outputs; this rank's staging is dropped */
        pe_run_abort(pub);
        pub = NULL;
        rc = EXIT_OK;
        goto out;
    }
    run.total_seconds = cli_now() - t_start;
    run.peak_rss_kb = peak_rss_kb();
    if (ev_write_scores(&run, o.out) || ev_write_csv(&run, o.out) || ev_write_json(&run, o.out) ||
        ev_write_markdown(&run, o.out) || ev_write_html(&run, o.out))
        goto out;
    st = pe_run_commit(pub);
    pub = NULL;
    o.out = final_out;
    if (st) {
        cli_lib_error(st);
        cli_error("%s: results not published; the previous contents (if any) are unchanged",
                  final_out);
        goto out;
    }
    if (!cli_quiet) {
        char md[4200];
        snprintf(md, sizeof md, "%s/results.md", o.out);
        FILE *f = fopen(md, "r");
        char line[1024];
        while (f && fgets(line, sizeof line, f)) fputs(line, stdout);
        if (f) fclose(f);
        fprintf(stderr, "eval: wrote %s/{results.md,results.csv,results.json,scores.csv,report.html} "
                        "in %.1fs, peak RSS %.0f MiB\n",
                o.out, run.total_seconds, run.peak_rss_kb / 1024.0);
    }
    rc = EXIT_OK;
out:
    if (pub) {
        pe_run_abort(pub);
        cli_error("%s: results not published; the previous contents (if any) are unchanged",
                  final_out);
    }
    if (run.cats)
        for (int i = 0; i < run.num_categories; i++) free(run.cats[i].test);
    free(run.cats);
    free(run.settings);
    free(run.metrics);
    free(run.scores);
    free((void *)run.seed_list);
    for (int i = 0; i < o.num_presets; i++) free(o.presets[i]);
    cli_opts_free(&co);
    pe_dataset_free(ds);
    pe_model_free(model);
    return rc;
}
