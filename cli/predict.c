/* predict.c — `patchead predict`: score images against a bank. */
#include "cli.h"
#include "options.h"
#include "output.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *USAGE =
    "usage: patchead predict --bank BANK.pead [options] QUERY...\n\n"
    "Scores each query image (files or folders) against the bank's references and\n"
    "writes DIR/scores.csv, DIR/scores.jsonl, DIR/maps/<stem>.npy and\n"
    "DIR/heatmaps/<stem>.png. An input that is missing or unreadable is reported and\n"
    "skipped (empty score in the CSV, \"error\" in the JSON); the exit status is then 3.\n"
    "The scoring rule, input size and PatchEAD+ switches are the bank's (set them at\n"
    "fit). With a calibrated bank (fit --fpr / --calibrate) each image also gets its\n"
    "conformal p-value (column p_value); --fpr A re-thresholds it for false-alarm rate\n"
    "A (docs/BEYOND.md), and the run ends with a drift check: the scores of the images\n"
    "judged normal are compared with the calibration scores (one-sided two-sample\n"
    "Kolmogorov-Smirnov; a warning at p < --drift-level) - a warning means that new\n"
    "normal images score higher than the calibration set (lighting, camera, product\n"
    "changed): recalibrate on current normal images with --recalibrate DIR. --out is\n"
    "new, empty or from an earlier run; it is replaced as a whole when the run succeeds\n"
    "and left unchanged when it fails.\n";

/* --recalibrate DIR: score the normal images of DIR through the bank and store them as its
 * calibration (rate: --fpr, else the bank's, else 0.05), keeping the references. */
static int recalibrate(pe_bank *bank, pe_model *model, const char *dir, double fpr)
{
    char *arg = (char *)dir;
    char **paths = NULL;
    int n = cli_collect_images(&arg, 1, &paths);
    if (n < 0) return -1;
    if (n == 0) {
        cli_free_paths(paths, 0);
        return cli_error("predict --recalibrate: no images found in %s", dir), -1;
    }
    pe_image *imgs = calloc((size_t)n, sizeof *imgs);
    pe_status s = imgs ? PE_OK : PE_ERR_NOMEM;
    for (int i = 0; i < n && !s; i++)
        if ((s = pe_image_load(paths[i], &imgs[i]))) cli_error("%s", pe_last_error());
    pe_calibration cal;
    double alpha = fpr > 0                                                     ? fpr
                   : pe_bank_calibration(bank, &cal) == PE_OK && cal.alpha > 0 ? cal.alpha
                                                                               : 0.05;
    if (!s && (s = pe_bank_calibrate(bank, model, imgs, n, (float)alpha)))
        cli_error("predict --recalibrate: %s", pe_last_error());
    if (!s && !cli_quiet && pe_bank_calibration(bank, &cal) == PE_OK)
        fprintf(stderr,
                "patchead: recalibrated on %d normal images of %s: threshold %.6g for a "
                "false-alarm rate of %g%s\n",
                n, dir, cal.threshold, cal.alpha,
                cal.guaranteed ? "" : " (too few images for that rate: no guarantee)");
    for (int i = 0; imgs && i < n; i++) pe_image_free(&imgs[i]);
    free(imgs);
    cli_free_paths(paths, n);
    return s ? -1 : 0;
}

/* The drift check over this run's scores (nothing when the bank has no calibration). */
static void report_drift(const pe_bank *bank, const det_item *items, int n, double level)
{
    pe_drift *d = NULL;
    pe_calibration cal;
    if (pe_bank_calibration(bank, &cal) != PE_OK || cal.n < 1) return;
    if (pe_drift_new(bank, level, 0, &d)) return;
    for (int i = 0; i < n; i++)
        if (items[i].ok) pe_drift_add(d, items[i].result.image_score);
    pe_drift_report r;
    if (pe_drift_report_get(d, &r) == PE_OK) {
        if (r.warning)
            fprintf(stderr,
                    "patchead: warning: drift: the %d images judged normal score higher than "
                    "the bank's %d calibration images (one-sided KS D = %.3f, p = %.2g < %g): "
                    "the false-alarm rate no longer holds; if the line changed (lighting, "
                    "camera, product), recalibrate: predict --recalibrate NORMAL_DIR\n",
                    r.normal, r.reference, r.statistic, r.p_value, r.delta);
        else if (!cli_quiet && r.normal >= PE_DRIFT_MIN)
            fprintf(stderr,
                    "patchead: drift check: %d images judged normal vs %d calibration images, "
                    "KS D = %.3f, p = %.2g: no drift\n",
                    r.normal, r.reference, r.statistic, r.p_value);
        else if (!cli_quiet)
            fprintf(stderr,
                    "patchead: drift check: %d images judged normal, fewer than %d: not "
                    "tested\n",
                    r.normal, PE_DRIFT_MIN);
    }
    pe_drift_free(d);
}

int cmd_predict(int argc, char **argv)
{
    cli_opts o;
    cli_opts_init(&o);
    int first, r = cli_parse_options(CMD_PREDICT, USAGE, argc, argv, &o, &first);
    if (r) return r > 0 ? EXIT_OK : EXIT_USAGE;
    if (!o.bank || first >= argc) {
        cli_error("predict needs --bank BANK.pead and at least one query image "
                  "(see patchead predict --help)");
        return EXIT_USAGE;
    }
    const char *bank_path = o.bank, *model_path = o.model;
    const char *out = o.out ? o.out : "patchead-out";
    double threshold = o.threshold, sigma = o.sigma, fpr = o.fpr;
    int no_maps = o.no_maps, threads = o.threads;
    if (threads) pe_set_threads(threads);

    pe_bank *bank = NULL;
    pe_model *model = NULL;
    pe_status s = pe_bank_load(bank_path, NULL, &bank);
    if (s) return cli_lib_error(s);
    if (!model_path) model_path = pe_bank_model_path(bank);
    if (!*model_path) {
        pe_bank_free(bank);
        return cli_error("%s: records no model path; pass --model", bank_path);
    }
    pe_model_params mp = pe_model_default_params();
    mp.threads = threads;
    if (o.precision) {
        pe_precision precision;
        if (cli_parse_precision(o.precision, &precision)) {
            pe_bank_free(bank);
            return EXIT_USAGE;
        }
        pe_bank_set_precision(bank, precision);
    }
    mp.precision = pe_bank_params(bank)->score.precision; /* backbone as the scoring */
    s = pe_model_load(model_path, &mp, &model);
    if (!s) s = pe_bank_check_model(bank, model);
    if (s) {
        char msg[1100];
        snprintf(msg, sizeof msg, "%s", pe_last_error());
        pe_bank_free(bank);
        pe_model_free(model);
        return s == PE_ERR_MISMATCH ? cli_error("%s: %s", bank_path, msg) : cli_error("%s", msg);
    }
    if (fpr > 0 && (s = pe_bank_set_fpr(bank, (float)fpr))) {
        char msg[1100];
        snprintf(msg, sizeof msg, "%s", pe_last_error());
        pe_bank_free(bank);
        pe_model_free(model);
        return cli_error("%s: %s", bank_path, msg);
    }
    if (o.recalibrate && recalibrate(bank, model, o.recalibrate, fpr)) {
        pe_bank_free(bank);
        pe_model_free(model);
        return EXIT_ERROR;
    }
    if (isnan(threshold)) threshold = pe_bank_threshold(bank);
    if (sigma < 0) sigma = pe_bank_params(bank)->map_sigma;

    char **paths = NULL;
    int n = cli_collect_images(argv + first, argc - first, &paths);
    int rc = EXIT_ERROR, failed = 0;
    pe_run_dir *run = n > 0 ? det_begin(out) : NULL; /* output folder checked before any work */
    det_item *items = n > 0 ? calloc((size_t)n, sizeof *items) : NULL;
    if (n < 0) goto done;
    if (n == 0) {
        cli_error("predict: no images found in the given queries");
        goto done;
    }
    if (!items) {
        cli_error("predict: out of memory");
        goto done;
    }
    if (!run) goto done;
    for (int i = 0; i < n; i++) items[i].path = paths[i];
    if (det_assign_stems(items, n)) {
        cli_error("predict: out of memory");
        goto done;
    }
    cli_progress bar;
    cli_progress_begin(&bar, "predict", n);
    double t0 = cli_now();
    for (int i = 0; i < n; i++) {
        pe_image img = {0};
        s = pe_image_load(paths[i], &img);
        if (!s) s = pe_bank_predict(bank, model, &img, &items[i].result);
        pe_image_free(&img);
        if (s) {
            snprintf(items[i].error, sizeof items[i].error, "%s", pe_last_error());
            if (bar.active) fputc('\n', stderr);
            cli_warn("%s", items[i].error);
            failed++;
        } else {
            items[i].ok = 1;
        }
        cli_progress_step(&bar, i + 1);
    }
    cli_progress_end(&bar);
    double elapsed = cli_now() - t0;
    if (o.recalibrate) { /* published with the run folder, or not at all */
        char bank_out[4096];
        snprintf(bank_out, sizeof bank_out, "%s/recalibrated.pead", pe_run_path(run));
        if (pe_bank_save(bank, bank_out)) {
            cli_error("%s", pe_last_error());
            goto done;
        }
    }
    int map_failed = 0;
    pe_run_dir *pub = run;
    run = NULL; /* det_publish frees it */
    if (det_publish(pub, items, n, (float)threshold, !no_maps, (float)sigma, &map_failed))
        goto done;
    if (!cli_quiet) {
        fprintf(stderr, "patchead: scored %d of %d images in %.1fs (%.0f ms/image)\n", n - failed,
                n, elapsed, n - failed > 0 ? 1000 * elapsed / (n - failed) : 0.0);
        pe_calibration cal;
        if (pe_bank_calibration(bank, &cal) == PE_OK && cal.n > 0)
            fprintf(stderr,
                    "patchead: threshold %.6g for a false-alarm rate of %g (%d calibration "
                    "scores, %s%s)\n",
                    threshold, cal.alpha, cal.n,
                    strcmp(cal.source, "images") ? "leave-one-out over the references"
                                                 : "normal images",
                    cal.guaranteed ? "" : "; too few for that rate: no guarantee");
        fprintf(stderr, "patchead: scores in %s/scores.csv%s%s\n", out,
                no_maps ? "" : ", heatmaps in heatmaps/, maps in maps/",
                o.recalibrate ? ", the recalibrated bank in recalibrated.pead" : "");
    }
    report_drift(bank, items, n, o.drift_level);
    rc = failed || map_failed ? EXIT_SOME_FAILED : EXIT_OK;
done:
    pe_run_abort(run);
    det_free_items(items, n > 0 ? n : 0);
    cli_free_paths(paths, n > 0 ? n : 0);
    pe_bank_free(bank);
    pe_model_free(model);
    return rc;
}
