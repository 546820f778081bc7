/* eval.c — `patchead eval`: run PatchEAD over a dataset (few-shot with seeded
 * reference sampling, and/or batch zero-shot; optional PatchEAD+ switches and the 2x2
 * alignment x masking ablation) and write the result tables and the HTML report.
 *
 * Per category, every test image and every needed training image is decoded and passed
 * through the backbone ONCE; the features are reused by all presets, shots and seeds via
 * the *_features API. Alignment needs pixels (rigid registration of the references), so
 * aligned settings go through pe_bank_fit / pe_bank_predict / pe_zeroshot on images.
 * Pixel metrics stream each anomaly map into a histogram accumulator (pe_pixel_acc):
 * memory is O(bins + one image), whatever the number of pixels.
 *
 * This file: the options, the provenance recorded in results.json, and cmd_eval, which
 * runs the steps of eval_plan.c and eval_run.c (eval.h) in order and writes the outputs
 * (report.c, report_html.c). */
#include "cli.h"
#include "eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static const char *USAGE =
    "usage: patchead eval --model M --data ROOT (--shots 1,2,4 [--seeds 3] | --zeroshot)\n"
    "                     [options]\n\n"
    "Evaluates PatchEAD on a dataset and writes results.md, results.csv, results.json,\n"
    "scores.csv and report.html into --out. The scoring options (--preset, --order, --k,\n"
    "--top) apply to every setting; few-shot references of seed S are those of\n"
    "patchead fit --shots N --seed S on the category's normal training images (--shots\n"
    "all: every one of them, a row \"all-shot\" = fit --shots all --seed S). The\n"
    "options beyond the paper (--rotations, --flips, --window, --coreset) apply to the\n"
    "few-shot settings (docs/BEYOND.md); --comparators to the zero-shot ones\n"
    "(docs/SCALE.md). Before anything is extracted, each category's memory is checked\n"
    "(--mem-limit; --spill keeps test features in a mapped file) and the run's time is\n"
    "estimated from a short calibration (--max-time refuses a longer run). Under mpirun\n"
    "(a build with make MPI=1) the ranks share the (setting, category, seed) cells, or a\n"
    "single zero-shot batch's pairs, and rank 0 writes the outputs; a rank that fails\n"
    "ends every rank.\n";

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

/* ------------------------------------------------------------------ command */

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
    if (co.shots_list && eval_parse_shots(co.shots_list, &o)) {
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
        if (eval_parse_list(preset_text ? preset_text : "patchead", &names, &nn) ||
            nn > MAX_PRESETS) {
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
    if (eval_add_settings(&run, &o, info.has_attention)) goto out;
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
    if (eval_check_memory(&run, &o, &info, need_attn) ||
        eval_check_time(&run, &o, &info, need_attn, model))
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
        if (eval_run_category(model, &o, &run, ci, need_attn, shard_cells)) failed_here = 1;
        if (!failed_here && !cli_quiet && !shard_cells) {
            const ev_metrics *m = ev_cell(&run, 0, ci, 0);
            fprintf(stderr, "  %-20s %4d test  I-AUROC %5.1f  P-AUROC %5.1f  (%.1fs)\n",
                    run.cats[ci].cat->name, run.cats[ci].num_test, 100 * m->i_auroc,
                    100 * m->p_auroc, cli_now() - t);
        }
    }
    /* every rank says whether it got through before anything is gathered or written */
    if (!scale_ranks_all_ok(!failed_here)) goto out;
    if (shard_cells && eval_gather_cells(&run, o.out)) goto out;
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
