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
    "fit). With a calibrated bank (fit\n"
    "--fpr / --calibrate) each image also gets its conformal p-value (column p_value);\n"
    "--fpr A re-thresholds it for false-alarm rate A (docs/BEYOND.md). --out is new,\n"
    "empty or from an earlier run; it is replaced as a whole when the run succeeds and\n"
    "left unchanged when it fails.\n";

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
        fprintf(stderr, "patchead: scores in %s/scores.csv%s\n", out,
                no_maps ? "" : ", heatmaps in heatmaps/, maps in maps/");
    }
    rc = failed || map_failed ? EXIT_SOME_FAILED : EXIT_OK;
done:
    pe_run_abort(run);
    det_free_items(items, n > 0 ? n : 0);
    cli_free_paths(paths, n > 0 ? n : 0);
    pe_bank_free(bank);
    pe_model_free(model);
    return rc;
}
