/* zeroshot.c — `patchead zeroshot`: batch zero-shot, every image scored against
 * all the others (no reference images needed; assumes most images are normal). */
#include "cli.h"
#include "options.h"
#include "output.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *USAGE =
    "usage: patchead zeroshot --model M [options] QUERY...\n\n"
    "Batch zero-shot: each image (files or folders) is scored against all the others\n"
    "(default rule: mean of the lowest 30%% of its per-image distances). Writes\n"
    "DIR/scores.csv, scores.jsonl, maps/ and heatmaps/ as predict does. An unreadable\n"
    "image is reported and left out of the batch; the exit status is then 3.\n\n"
    "options:\n"
    "  --out DIR         output folder (default ./patchead-out): new, empty or from an\n"
    "                    earlier run; replaced as a whole when the run succeeds, left\n"
    "                    unchanged when it fails\n"
    "  --threshold T     add is_anomalous = score > T\n"
    "  --no-maps         only scores.csv / scores.jsonl\n" DETECT_OPTS_HELP;

static void on_progress(int done, int total, void *user)
{
    (void)total;
    cli_progress_step((cli_progress *)user, done);
}

int cmd_zeroshot(int argc, char **argv)
{
    detect_opts o = {0};
    o.sigma = -1;
    const char *out = "patchead-out";
    double threshold = NAN;
    int no_maps = 0;
    static const struct option longs[] = {DETECT_LONG_OPTS,
                                          {"out", required_argument, 0, OPT_OUT},
                                          {"threshold", required_argument, 0, OPT_THRESHOLD},
                                          {"no-maps", no_argument, 0, OPT_NO_MAPS},
                                          {0, 0, 0, 0}};
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
        int r = detect_opt(&o, c, optarg);
        if (r < 0) return EXIT_USAGE;
        if (r) continue;
        switch (c) {
        case OPT_OUT: out = optarg; break;
        case OPT_THRESHOLD:
            if (cli_parse_float("--threshold", optarg, -1e30, 1e30, &threshold)) return EXIT_USAGE;
            break;
        case OPT_NO_MAPS: no_maps = 1; break;
        case 'h':
        case OPT_HELP: fputs(USAGE, stdout); return EXIT_OK;
        default: fputs(USAGE, stderr); return EXIT_USAGE;
        }
    }
    if (!o.model || optind >= argc) {
        cli_error("zeroshot needs --model and at least two images");
        fputs(USAGE, stderr);
        return EXIT_USAGE;
    }
    pe_detect_params params;
    if (detect_params_from(&o, 1, &params)) return EXIT_USAGE;
    if (o.threads) pe_set_threads(o.threads);

    char **paths = NULL;
    int n = cli_collect_images(argv + optind, argc - optind, &paths);
    if (n < 0) return EXIT_ERROR;
    int rc = EXIT_ERROR, failed = 0, loaded = 0;
    pe_model *model = NULL;
    pe_run_dir *run = det_begin(out); /* output folder checked before any work */
    if (!run) {
        cli_free_paths(paths, n);
        return EXIT_ERROR;
    }
    det_item *items = calloc((size_t)n + 1, sizeof *items);
    pe_image *imgs = calloc((size_t)n + 1, sizeof *imgs);
    int *index = calloc((size_t)n + 1, sizeof *index); /* batch slot -> input */
    pe_result *results = calloc((size_t)n + 1, sizeof *results);
    if (!items || !imgs || !index || !results) {
        cli_error("zeroshot: out of memory");
        goto done;
    }
    pe_model_params mp = pe_model_default_params();
    mp.threads = o.threads;
    pe_status s = pe_model_load(o.model, &mp, &model);
    if (s) {
        cli_lib_error(s);
        goto done;
    }
    for (int i = 0; i < n; i++) {
        items[i].path = paths[i];
        s = pe_image_load(paths[i], &imgs[loaded]);
        if (s) {
            snprintf(items[i].error, sizeof items[i].error, "%s", pe_last_error());
            cli_warn("%s", items[i].error);
            failed++;
        } else {
            index[loaded++] = i;
        }
    }
    if (loaded < 2) {
        cli_error("zeroshot: needs at least 2 readable images, got %d", loaded);
        goto done;
    }
    if (det_assign_stems(items, n)) {
        cli_error("zeroshot: out of memory");
        goto done;
    }
    cli_progress bar;
    cli_progress_begin(&bar, "features", loaded);
    double t0 = cli_now();
    s = pe_zeroshot(model, imgs, loaded, &params, on_progress, &bar, results);
    cli_progress_end(&bar);
    if (s) {
        cli_lib_error(s);
        goto done;
    }
    double elapsed = cli_now() - t0;
    for (int b = 0; b < loaded; b++) {
        items[index[b]].result = results[b];
        items[index[b]].ok = 1;
        memset(&results[b], 0, sizeof results[b]);
        pe_image_free(&imgs[b]); /* maps reload images one at a time */
    }
    int map_failed = 0;
    pe_run_dir *pub = run;
    run = NULL; /* det_publish frees it */
    if (det_publish(pub, items, n, (float)threshold, !no_maps, params.map_sigma, &map_failed))
        goto done;
    if (!cli_quiet) {
        char rule[96];
        detect_describe(&params.score, rule, sizeof rule);
        fprintf(stderr, "patchead: zero-shot over %d images in %.1fs (%s)\n", loaded, elapsed, rule);
        fprintf(stderr, "patchead: scores in %s/scores.csv%s\n", out,
                no_maps ? "" : ", heatmaps in heatmaps/, maps in maps/");
    }
    rc = failed || map_failed ? EXIT_SOME_FAILED : EXIT_OK;
done:
    pe_run_abort(run);
    for (int b = 0; imgs && b < n; b++) pe_image_free(&imgs[b]);
    for (int b = 0; results && b < n; b++) pe_result_free(&results[b]);
    free(imgs);
    free(index);
    free(results);
    det_free_items(items, n);
    cli_free_paths(paths, n);
    pe_model_free(model);
    return rc;
}
