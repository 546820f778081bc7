/* eval_run.c — running one category of a `patchead eval` run: every test image and
 * every needed training image decoded and extracted once, the features reused by all
 * presets, shots and seeds (aligned settings go through the image API); each cell's
 * image and pixel metrics; the report's example heatmaps. Under MPI the cells run on
 * their owner rank and are gathered on rank 0 here too. See eval.h. */
#include "cli.h"
#include "eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
    if (set->shots != 0) { /* few-shot bank options (docs/BEYOND.md) */
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
    /* all-shot: every training image in path order, as fit --shots all takes them (the
     * coreset's first centre is an index: the order matters) */
    const int all = set->shots == EV_SHOTS_ALL;
    const int *perm = cs->perm[seed];
    const int nref = ev_shots(set, cat->num_train);
    pe_bank *bank = NULL;
    if (!fit_images) {
        pe_features *refs = calloc((size_t)nref, sizeof *refs);
        if (!refs) return cli_error("out of memory"), -1;
        for (int k = 0; k < nref; k++) refs[k] = cs->train_feats[all ? k : perm[k]]; /* views */
        st = pe_bank_fit_features(cs->model, refs, nref, &dp, &bank);
        free(refs);
    } else {
        pe_image *imgs = calloc((size_t)nref, sizeof *imgs);
        const char **names = calloc((size_t)nref, sizeof *names);
        int rc = imgs && names ? 0 : -1;
        for (int k = 0; k < nref && !rc; k++) {
            names[k] = cat->train[all ? k : perm[k]].path;
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

int eval_run_category(pe_model *model, const eval_opts *o, ev_run *run, int ci, int need_attn,
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
    int all_shot = 0; /* an all-shot setting needs every training image */
    for (int s = 0; s < run->num_settings; s++) {
        max_shots = EV_MAX(max_shots, ev_shots(&run->settings[s], cat->num_train));
        if (run->settings[s].shots && !run->settings[s].align) need_train_feats = 1;
        all_shot |= run->settings[s].shots == EV_SHOTS_ALL && !run->settings[s].align;
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
        for (int k = 0; k < (all_shot ? cat->num_train : max_shots) && need_train_feats; k++)
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
int eval_gather_cells(ev_run *run, const char *out)
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
