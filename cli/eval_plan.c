/* eval_plan.c — the plan of a `patchead eval` run before anything is extracted: the
 * --shots and --preset lists, the settings grid (presets x shots x ablation variants)
 * and the guards that refuse a run too large for the machine's memory or --max-time
 * (docs/SCALE.md). See eval.h. */
#include "cli.h"
#include "eval.h"

#include <stdlib.h>
#include <string.h>

int eval_parse_shots(const char *text, eval_opts *o)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", text);
    o->num_shots = 0;
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        if (o->num_shots == MAX_SHOTS) {
            cli_error("--shots: at most %d values", MAX_SHOTS);
            return -1;
        }
        if (!strcmp(tok, "all")) { /* every training image, in path order (fit --shots all) */
            for (int k = 0; k < o->num_shots; k++)
                if (o->shots[k] == EV_SHOTS_ALL) {
                    cli_error("--shots: 'all' given twice");
                    return -1;
                }
            o->shots[o->num_shots++] = EV_SHOTS_ALL;
            continue;
        }
        if (cli_parse_int("--shots", tok, 1, 4096, &o->shots[o->num_shots])) return -1;
        o->num_shots++;
    }
    if (!o->num_shots) {
        cli_error("--shots expects a list like 1,2,4 or all");
        return -1;
    }
    return 0;
}

int eval_parse_list(const char *text, char ***items, int *n)
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

/* ------------------------------------------------------------------ settings */

int eval_add_settings(ev_run *run, const eval_opts *o, int has_attn)
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
                /* all-shot: the references are the whole train set whatever the seed; the
                 * seed still picks the coreset's first centre (and projection) */
                s->num_seeds = !s->shots ? 1
                               : s->shots == EV_SHOTS_ALL && !o->coreset_count &&
                                         !(o->coreset_fraction > 0) ? 1 : o->num_seeds;
                char base[32];
                if (s->shots == EV_SHOTS_ALL) snprintf(base, sizeof base, "all-shot");
                else if (s->shots) snprintf(base, sizeof base, "%d-shot", s->shots);
                else snprintf(base, sizeof base, "zero-shot");
                snprintf(s->name, sizeof s->name, "%s%s%s%s%s%s", base, align ? " +align" : "",
                         mask ? " +mask" : "", o->num_presets > 1 ? " [" : "",
                         o->num_presets > 1 ? s->preset : "", o->num_presets > 1 ? "]" : "");
            }
    if (skipped_mask)
        cli_warn("the backbone has no CLS attention: masking variants of the ablation skipped");
    return 0;
}

/* ------------------------------------------------------------------ guards */

/* The memory guard (docs/SCALE.md), before anything is allocated. Categories run one at
 * a time, so each is checked on its own: its test features (none with --spill), at most
 * the references its seeds need, and the larger of its zero-shot scoring state (Eq. 3
 * heaps, norms, scores, one tile) and a few-shot bank (shots x rotations x flips maps). */
int eval_check_memory(const ev_run *run, const eval_opts *o, const pe_model_info *info,
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
                max_shots = EV_MAX(max_shots, ev_shots(set, ec->cat->num_train));
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
int eval_check_time(const ev_run *run, const eval_opts *o, const pe_model_info *info,
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
            } else if (ev_shots(set, ec->cat->num_train) <= ec->cat->num_train) {
                int shots = ev_shots(set, ec->cat->num_train);
                max_shots = EV_MAX(max_shots, shots);
                pairs += (double)set->num_seeds * n * shots * views;
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
