/* zeroshot.c — `patchead zeroshot`: batch zero-shot, every image scored against
 * all the others (no reference images needed; assumes most images are normal). */
#include "cli.h"
#include "options.h"
#include "output.h"
#include "scale.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *USAGE =
    "usage: patchead zeroshot --model M [options] QUERY...\n\n"
    "Batch zero-shot: each image (files or folders) is scored against all the others\n"
    "(default rule: mean of the lowest 30% of its per-image distances). Writes\n"
    "DIR/scores.csv, scores.jsonl, maps/ and heatmaps/ as predict does. An unreadable\n"
    "image is reported and left out of the batch; the exit status is then 3.\n"
    "Large batches: images are decoded one at a time and only their features kept; the\n"
    "memory estimate is checked before anything is allocated, and a short calibration\n"
    "(one forward, one pair) prints the estimated time before the bulk of the work\n"
    "(--max-time refuses a longer run). Under mpirun (a build with make MPI=1) the ranks\n"
    "share the pairs and rank 0 writes the outputs; a rank that fails ends every rank\n"
    "(docs/SCALE.md).\n";

static void on_progress(int done, int total, void *user)
{
    (void)total;
    cli_progress_step((cli_progress *)user, done);
}

int cmd_zeroshot(int argc, char **argv)
{
    cli_opts o;
    cli_opts_init(&o);
    int first, r = cli_parse_options(CMD_ZEROSHOT, USAGE, argc, argv, &o, &first);
    if (r) return r > 0 ? EXIT_OK : EXIT_USAGE;
    if (!o.model || first >= argc) {
        cli_error("zeroshot needs --model and at least two images (see patchead zeroshot --help)");
        return EXIT_USAGE;
    }
    const char *out = o.out ? o.out : "patchead-out";
    double threshold = o.threshold;
    int no_maps = o.no_maps;
    pe_detect_params params;
    if (cli_detect_params(&o, 1, &params)) return EXIT_USAGE;
    scale_opts so;
    if (scale_opts_from(&o, &so)) return EXIT_USAGE;
    scale_apply(&so, &params);
    if (so.spill && params.align) {
        cli_error("--spill cannot be used with --align (aligned zero-shot warps every image onto "
                  "the first, so it keeps the decoded images, not only their features)");
        return EXIT_USAGE;
    }
    if (o.threads) pe_set_threads(o.threads);

    char **paths = NULL;
    int n = cli_collect_images(argv + first, argc - first, &paths);
    if (n < 0) return EXIT_ERROR;
    int rc = EXIT_ERROR, failed = 0, loaded = 0;
    pe_model *model = NULL;
    pe_feature_store *store = NULL;
    /* rank 0 writes the outputs: its output folder is checked before any work */
    pe_run_dir *run = pe_dist_rank() == 0 ? det_begin(out) : NULL;
    if (!scale_ranks_all_ok(pe_dist_rank() != 0 || run != NULL)) {
        pe_run_abort(run);
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
    mp.precision = params.score.precision; /* backbone and scoring in the same arithmetic */
    pe_status s = pe_model_load(o.model, &mp, &model);
    if (s) {
        cli_lib_error(s);
        goto done;
    }
    for (int i = 0; i < n; i++) items[i].path = paths[i];
    if (det_assign_stems(items, n)) {
        cli_error("zeroshot: out of memory");
        goto done;
    }
    /* Memory guard, before any of the batch is allocated (shape from the model). */
    pe_model_info info;
    if ((s = pe_model_get_info(model, &info))) {
        cli_lib_error(s);
        goto done;
    }
    int side = params.size > 0 ? params.size : info.default_size;
    int grid = (side + info.patch_size - 1) / info.patch_size;
    if (scale_check_memory(&so, n, grid * grid, info.feature_dim, params.mask, &params)) goto done;

    cli_progress bar;
    double t0 = cli_now();
    if (params.align) {
        cli_progress_begin(&bar, "features", n);
        /* alignment warps every image onto the first: the pixels must stay loaded */
        for (int i = 0; i < n; i++) {
            s = pe_image_load(paths[i], &imgs[loaded]);
            if (s) {
                snprintf(items[i].error, sizeof items[i].error, "%s", pe_last_error());
                cli_warn("%s", items[i].error);
                failed++;
            } else {
                index[loaded++] = i;
            }
        }
        s = loaded < 2 ? PE_OK
                       : pe_zeroshot(model, imgs, loaded, &params, on_progress, &bar, results);
    } else {
        /* One image at a time: decode, extract, keep only the features (RAM or --spill).
         * Under MPI each rank extracts images i = rank, rank + ranks, ... and every
         * image's features then travel once, from its rank to all the others. */
        int ranks = pe_dist_size(), me = pe_dist_rank();
        uint64_t inputs = 0xcbf29ce484222325ULL;
        for (int i = 0; i < n; i++) inputs = scale_hash(inputs, paths[i], strlen(paths[i]) + 1);
        if (!scale_ranks_agree(inputs)) goto done;
        pe_extract_params ep = pe_extract_default_params();
        ep.size = params.size;
        ep.layer = params.layer;
        ep.want_attn = params.mask;
        /* Calibration (the batch's shape, a forward's and a pair's time), then the time
         * guard: the estimate is printed, or the run refused, before the bulk of the work. */
        pe_features shape = {0};
        double forward_s = 0, pair_s = 0, score_s = 0;
        if (scale_calibrate(model, &ep, side, &params, &shape, &forward_s, &pair_s)) goto done;
        char what[64];
        snprintf(what, sizeof what, "zero-shot batch of %d images", n);
        if (scale_check_time(&so, what, n, forward_s,
                             (double)pe_zeroshot_num_pairs(n, params.comparators), pair_s,
                             &score_s))
            goto done;
        cli_progress_begin(&bar, "features", n);
        s = pe_feature_store_create(so.spill, n, shape.grid_h * shape.grid_w, shape.dim,
                                    params.mask, &store);
        for (int i = 0; i < n && !s; i++) {
            if (i % ranks != me) continue;
            if (pe_dist_peer_failed()) break; /* another rank failed: stop here (main.c) */
            pe_image img;
            pe_features f = {0};
            pe_status e = pe_image_load(paths[i], &img);
            if (!e) {
                e = pe_model_extract(model, &img, &ep, &f);
                pe_image_free(&img);
            }
            if (!e) e = pe_feature_store_put(store, i, &f);
            if (e) snprintf(items[i].error, sizeof items[i].error, "%s", pe_last_error());
            else items[i].ok = 1;
            pe_features_free(&f);
            cli_progress_step(&bar, i + 1);
        }
        cli_progress_end(&bar);
        for (int i = 0; i < n && !s && ranks > 1; i++) {
            int owner = i % ranks;
            s = pe_dist_broadcast(&items[i].ok, sizeof items[i].ok, owner);
            if (!s)
                s = items[i].ok ? pe_feature_store_broadcast(store, i, owner)
                                : pe_dist_to_root(items[i].error, sizeof items[i].error, owner);
        }
        pe_features *batch = s ? NULL : calloc((size_t)n, sizeof *batch);
        for (int i = 0; batch && i < n; i++) {
            if (items[i].ok) {
                batch[loaded] = pe_feature_store_views(store)[i];
                index[loaded++] = i;
                items[i].ok = 0; /* set again once scored */
            } else {
                cli_warn("%s", items[i].error);
                failed++;
            }
        }
        if (!s && !batch) s = PE_ERR_NOMEM;
        if (!s && loaded >= 2) {
            scale_progress_hook(&bar, "scoring", score_s, &params);
            s = pe_zeroshot_features(batch, loaded, &params, results);
        }
        free(batch);
    }
    cli_progress_end(&bar);
    if (s) {
        cli_lib_error(s);
        goto done;
    }
    if (loaded < 2) {
        cli_error("zeroshot: needs at least 2 readable images, got %d", loaded);
        goto done;
    }
    double elapsed = cli_now() - t0;
    for (int b = 0; b < loaded; b++) {
        items[index[b]].result = results[b];
        items[index[b]].ok = 1;
        memset(&results[b], 0, sizeof results[b]);
        pe_image_free(&imgs[b]); /* maps reload images one at a time */
    }
    pe_feature_store_free(store);
    store = NULL;
    if (pe_dist_rank() != 0) { /* rank 0 writes the outputs */
        rc = failed ? EXIT_SOME_FAILED : EXIT_OK;
        goto done;
    }
    int map_failed = 0;
    pe_run_dir *pub = run;
    run = NULL; /* det_publish frees it */
    if (det_publish(pub, items, n, (float)threshold, !no_maps, params.map_sigma, &map_failed))
        goto done;
    if (!cli_quiet) {
        char rule[96];
        detect_describe(&params.score, rule, sizeof rule);
        char how[96] = "";
        if (params.comparators > 0 && params.comparators < loaded - 1)
            snprintf(how, sizeof how, ", %d comparators (seed %llu)", params.comparators,
                     (unsigned long long)params.comparator_seed);
        if (pe_dist_size() > 1)
            snprintf(how + strlen(how), sizeof how - strlen(how), ", %d MPI ranks", pe_dist_size());
        fprintf(stderr, "patchead: zero-shot over %d images in %.1fs (%s%s)\n", loaded, elapsed,
                rule, how);
        fprintf(stderr, "patchead: scores in %s/scores.csv%s\n", out,
                no_maps ? "" : ", heatmaps in heatmaps/, maps in maps/");
    }
    rc = failed || map_failed ? EXIT_SOME_FAILED : EXIT_OK;
done:
    pe_run_abort(run);
    pe_feature_store_free(store);
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
