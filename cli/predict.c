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
    "skipped (empty score in the CSV, \"error\" in the JSON); the exit status is then 3.\n\n"
    "options:\n"
    "  --bank BANK       the bank written by patchead fit\n"
    "  --model PATH      backbone (default: the path recorded in the bank; must be the\n"
    "                    same weights)\n"
    "  --out DIR         output folder (default ./patchead-out): new, empty or from an\n"
    "                    earlier run; replaced as a whole when the run succeeds, left\n"
    "                    unchanged when it fails\n"
    "  --threshold T     is_anomalous = score > T (default: the bank's threshold)\n"
    "  --no-maps         only scores.csv / scores.jsonl\n"
    "  --sigma PX        Gaussian sigma of the anomaly maps (default: the bank's, 4)\n"
    "  --threads N       worker threads (default: all cores)\n"
    "  --quiet           no progress bar or warnings\n";

int cmd_predict(int argc, char **argv)
{
    const char *bank_path = NULL, *model_path = NULL, *out = "patchead-out";
    double threshold = NAN, sigma = -1;
    int no_maps = 0, threads = 0;
    static const struct option longs[] = {{"bank", required_argument, 0, OPT_BANK},
                                          {"model", required_argument, 0, OPT_MODEL},
                                          {"out", required_argument, 0, OPT_OUT},
                                          {"threshold", required_argument, 0, OPT_THRESHOLD},
                                          {"no-maps", no_argument, 0, OPT_NO_MAPS},
                                          {"sigma", required_argument, 0, OPT_SIGMA},
                                          {"threads", required_argument, 0, OPT_THREADS},
                                          {"quiet", no_argument, 0, OPT_QUIET},
                                          {"help", no_argument, 0, OPT_HELP},
                                          {0, 0, 0, 0}};
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
        switch (c) {
        case OPT_BANK: bank_path = optarg; break;
        case OPT_MODEL: model_path = optarg; break;
        case OPT_OUT: out = optarg; break;
        case OPT_THRESHOLD:
            if (cli_parse_float("--threshold", optarg, -1e30, 1e30, &threshold)) return EXIT_USAGE;
            break;
        case OPT_NO_MAPS: no_maps = 1; break;
        case OPT_SIGMA:
            if (cli_parse_float("--sigma", optarg, 0, 1000, &sigma)) return EXIT_USAGE;
            break;
        case OPT_THREADS:
            if (cli_parse_int("--threads", optarg, 1, 4096, &threads)) return EXIT_USAGE;
            break;
        case OPT_QUIET: cli_quiet = 1; break;
        case 'h':
        case OPT_HELP: fputs(USAGE, stdout); return EXIT_OK;
        default: fputs(USAGE, stderr); return EXIT_USAGE;
        }
    }
    if (!bank_path || optind >= argc) {
        cli_error("predict needs --bank BANK.pead and at least one query image");
        fputs(USAGE, stderr);
        return EXIT_USAGE;
    }
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
    s = pe_model_load(model_path, &mp, &model);
    if (!s) s = pe_bank_check_model(bank, model);
    if (s) {
        char msg[1100];
        snprintf(msg, sizeof msg, "%s", pe_last_error());
        pe_bank_free(bank);
        pe_model_free(model);
        return s == PE_ERR_MISMATCH ? cli_error("%s: %s", bank_path, msg) : cli_error("%s", msg);
    }
    if (isnan(threshold)) threshold = pe_bank_threshold(bank);
    if (sigma < 0) sigma = pe_bank_params(bank)->map_sigma;

    char **paths = NULL;
    int n = cli_collect_images(argv + optind, argc - optind, &paths);
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
    if (det_publish(pub, items, n, (float)threshold, !no_maps, (float)sigma, &map_failed)) goto done;
    if (!cli_quiet) {
        fprintf(stderr, "patchead: scored %d of %d images in %.1fs (%.0f ms/image)\n", n - failed,
                n, elapsed, n - failed > 0 ? 1000 * elapsed / (n - failed) : 0.0);
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
