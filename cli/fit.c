/* fit.c — `patchead fit`: build a reference bank (.pead) from normal images. */
#include "cli.h"
#include "options.h"

#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *USAGE =
    "usage: patchead fit --model M -o BANK.pead [options] REF...\n\n"
    "Builds a few-shot reference bank from normal images (files or folders, walked\n"
    "recursively in sorted order). A label-free threshold is stored: every reference\n"
    "scored against the others (leave-one-out), the largest of those scores.\n"
    "--shots N --seed S picks the references pe_sample_refs draws for seed S from the\n"
    "sorted paths: the same as eval --shots N, seed S, on a category's train/good folder.\n"
    "Beyond the paper (docs/BEYOND.md): --rotations/--flips store turned/mirrored views of\n"
    "each reference, --coreset keeps a greedy k-center union of patches, --window scores\n"
    "each patch against the same neighbourhood only, --calibrate/--fpr set a threshold\n"
    "with a stated false-alarm rate.\n";

/* Calibrate the bank on normal images: those under `dir` (a folder or file), else the
 * n held-out paths. Returns 0, or -1 with an error printed. */
static int calibrate_bank(pe_bank *bank, pe_model *model, const char *dir, char **held, int n,
                          float alpha)
{
    char **found = NULL;
    if (dir) {
        char *arg = (char *)dir;
        n = cli_collect_images(&arg, 1, &found);
        if (n < 0) return -1;
        if (n == 0) {
            cli_free_paths(found, 0);
            return cli_error("%s: no calibration images found", dir), -1;
        }
        held = found;
    }
    pe_image *imgs = calloc((size_t)n, sizeof *imgs);
    int rc = imgs ? 0 : (cli_error("fit: out of memory"), -1);
    for (int i = 0; i < n && !rc; i++) {
        pe_status s = pe_image_load(held[i], &imgs[i]);
        if (s) rc = (cli_lib_error(s), -1);
    }
    if (!rc) {
        pe_status s = pe_bank_calibrate(bank, model, imgs, n, alpha);
        if (s) rc = (cli_lib_error(s), -1);
    }
    for (int i = 0; imgs && i < n; i++) pe_image_free(&imgs[i]);
    free(imgs);
    if (found) cli_free_paths(found, n);
    return rc;
}

/* Seeded order of the reference paths (pe_sample_refs, the rule eval uses): its first N
 * entries are the N-shot sample; a held-out calibration share is its last entries. */
static int shuffle_paths(char **paths, int n, uint64_t seed)
{
    int *perm = malloc(sizeof(int) * (size_t)n);
    char **picked = malloc(sizeof(char *) * (size_t)n);
    if (!perm || !picked || pe_sample_refs(seed, n, perm)) {
        free(perm);
        free(picked);
        return cli_error("fit: out of memory"), -1;
    }
    for (int i = 0; i < n; i++) picked[i] = paths[perm[i]];
    memcpy(paths, picked, sizeof(char *) * (size_t)n);
    free(perm);
    free(picked);
    return 0;
}

static void on_centres(int done, int total, void *user)
{
    cli_progress *bar = user;
    if (!bar->active && !cli_quiet && isatty(fileno(stderr))) { /* first call: the bar starts */
        cli_progress_begin(bar, "coreset", total);
        return;
    }
    bar->total = total;
    cli_progress_step(bar, done);
}

int cmd_fit(int argc, char **argv)
{
    cli_opts o;
    cli_opts_init(&o);
    int first, r = cli_parse_options(CMD_FIT, USAGE, argc, argv, &o, &first);
    if (r) return r > 0 ? EXIT_OK : EXIT_USAGE;
    if (!o.model || !o.output || first >= argc) {
        cli_error("fit needs --model, -o BANK.pead and at least one reference image "
                  "(see patchead fit --help)");
        return EXIT_USAGE;
    }
    const char *output = o.output, *calibrate = o.calibrate;
    int shots = 0;
    if (o.shots_text && strcmp(o.shots_text, "all") &&
        cli_parse_int("--shots", o.shots_text, 1, 100000, &shots))
        return EXIT_USAGE;
    double fpr = o.fpr;
    pe_detect_params params;
    if (cli_detect_params(&o, 0, &params)) return EXIT_USAGE;
    params.coreset_seed = (uint64_t)o.seed;
    /* --calibrate: an existing path is a calibration set; otherwise a held-out fraction */
    struct stat cst;
    double holdout = 0;
    int calib_is_path = calibrate && stat(calibrate, &cst) == 0;
    if (calibrate && !calib_is_path) {
        int count = 0;
        float frac = 0;
        if (cli_count_or_fraction("--calibrate", calibrate, &count, &frac)) return EXIT_USAGE;
        if (count > 0 || frac >= 1)
            return cli_error("--calibrate expects a folder, a file or a fraction below 1, got '%s'",
                             calibrate),
                   EXIT_USAGE;
        holdout = frac;
    }
    if (calibrate && fpr == 0) fpr = 0.05;
    /* with a calibration set the library fits uncalibrated and pe_bank_calibrate follows */
    params.fpr = calibrate ? 0.0f : (float)fpr;
    if (o.threads) pe_set_threads(o.threads);

    char **paths;
    int n = cli_collect_images(argv + first, argc - first, &paths);
    if (n < 0) return EXIT_ERROR;
    if (n == 0) {
        cli_free_paths(paths, n);
        return cli_error("fit: no images found in the given references");
    }
    int used = n, pool = n; /* references come from paths[0, pool) */
    if (holdout > 0 || shots) {
        if (shuffle_paths(paths, n, (uint64_t)o.seed)) {
            cli_free_paths(paths, n);
            return EXIT_ERROR;
        }
    }
    if (holdout > 0) {
        pool = n - (int)ceil(holdout * n);
        if (pool < 1) {
            cli_free_paths(paths, n);
            return cli_error("fit: --calibrate %s holds out every one of the %d images", calibrate,
                             n);
        }
        used = pool;
    }
    if (shots) {
        if (shots > pool) {
            cli_free_paths(paths, n);
            return cli_error("fit: --shots %d but only %d reference images%s", shots, pool,
                             holdout > 0 ? " outside the calibration share" : "");
        }
        used = shots; /* the first `shots` of the seeded order; the rest are freed with the list */
    }

    pe_model *model = NULL;
    pe_model_params mp = pe_model_default_params();
    mp.threads = o.threads;
    mp.precision = params.score.precision; /* backbone and scoring in the same arithmetic */
    pe_image *imgs = calloc((size_t)used, sizeof *imgs);
    pe_bank *bank = NULL;
    int rc = EXIT_ERROR;
    pe_status s = imgs ? pe_model_load(o.model, &mp, &model) : PE_ERR_NOMEM;
    if (s) {
        cli_lib_error(s);
        goto done;
    }
    /* A bank silently missing a reference would score differently than asked: an
     * unreadable reference is an error. */
    for (int i = 0; i < used; i++) {
        s = pe_image_load(paths[i], &imgs[i]);
        if (s) {
            cli_lib_error(s);
            goto done;
        }
    }
    double t0 = cli_now();
    cli_progress bar = {0};
    if (o.coreset) { /* a bar for the greedy selection (on a terminal; not with --quiet) */
        params.coreset_progress = on_centres;
        params.progress_user = &bar;
    }
    params.coreset_max_time = o.max_time;
    s = pe_bank_fit(model, imgs, used, (const char *const *)paths, &params, &bank);
    cli_progress_end(&bar);
    if (s) {
        cli_lib_error(s);
        goto done;
    }
    pe_bank_set_model_path(bank, o.model);
    if (calibrate && calibrate_bank(bank, model, calib_is_path ? calibrate : NULL, paths + pool,
                                    n - pool, (float)fpr))
        goto done;
    s = pe_bank_save(bank, output);
    if (s) {
        cli_lib_error(s);
        goto done;
    }
    if (!cli_quiet) {
        char rule[96];
        detect_describe(&pe_bank_params(bank)->score, rule, sizeof rule);
        float th = pe_bank_threshold(bank);
        const int rotations = params.rotations, flips = params.flips;
        fprintf(stderr, "patchead: fit %d reference%s in %.1fs (%s, size %d%s%s) -> %s\n", used,
                used == 1 ? "" : "s", cli_now() - t0, rule, pe_bank_params(bank)->size,
                params.align ? ", align" : "", params.mask ? ", mask" : "", output);
        if (rotations > 1 || flips)
            fprintf(stderr,
                    "patchead: %d views per reference (rotations %d%s): %dx memory and "
                    "scoring time\n",
                    rotations * (flips ? 2 : 1), rotations, flips ? ", mirrored" : "",
                    rotations * (flips ? 2 : 1));
        if (o.coreset)
            fprintf(stderr,
                    "patchead: coreset bank (greedy k-center, seed %d): one union of "
                    "patches, nearest neighbour over all of them\n",
                    o.seed);
        pe_calibration cal;
        pe_bank_calibration(bank, &cal);
        if (cal.n > 0 && cal.guaranteed)
            fprintf(stderr,
                    "patchead: threshold %.6g: conformal quantile of %d %s scores; false-alarm "
                    "rate <= %g for normal images exchangeable with them\n",
                    th, cal.n,
                    !strcmp(cal.source, "images") ? "calibration-image" : "leave-one-out",
                    cal.alpha);
        else if (cal.n > 0)
            fprintf(stderr,
                    "patchead: warning: %d calibration scores are too few for a false-alarm "
                    "rate of %g (need at least %d); threshold %.6g is their maximum, with no "
                    "guarantee\n",
                    cal.n, cal.alpha, (int)ceil(1.0 / cal.alpha - 1e-9) - 1, th);
        else if (isnan(th))
            fprintf(stderr, "patchead: no threshold (needs at least 2 references%s)\n",
                    params.coreset_fraction > 0 || params.coreset_count > 0
                        ? "; a coreset bank has one: use --calibrate"
                        : "");
        else fprintf(stderr, "patchead: suggested threshold %.6g (leave-one-out maximum)\n", th);
    }
    rc = EXIT_OK;
done:
    for (int i = 0; imgs && i < used; i++) pe_image_free(&imgs[i]);
    free(imgs);
    pe_bank_free(bank);
    pe_model_free(model);
    cli_free_paths(paths, n);
    return rc;
}
