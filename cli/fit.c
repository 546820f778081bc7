/* fit.c — `patchead fit`: build a reference bank (.pead) from normal images. */
#include "cli.h"
#include "options.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *USAGE =
    "usage: patchead fit --model M -o BANK.pead [options] REF...\n\n"
    "Builds a few-shot reference bank from normal images (files or folders, walked\n"
    "recursively in sorted order). A label-free threshold is stored: every reference\n"
    "scored against the others (leave-one-out), the largest of those scores.\n"
    "--shots N --seed S picks the references pe_sample_refs draws for seed S from the\n"
    "sorted paths: the same as eval --shots N, seed S, on a category's train/good folder.\n";

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
    const char *output = o.output;
    int shots = o.shots;
    pe_detect_params params;
    if (cli_detect_params(&o, 0, &params)) return EXIT_USAGE;
    if (o.threads) pe_set_threads(o.threads);

    char **paths;
    int n = cli_collect_images(argv + first, argc - first, &paths);
    if (n < 0) return EXIT_ERROR;
    if (n == 0) {
        cli_free_paths(paths, n);
        return cli_error("fit: no images found in the given references");
    }
    int used = n;
    if (shots) {
        if (shots > n) {
            cli_free_paths(paths, n);
            return cli_error("fit: --shots %d but only %d reference images", shots, n);
        }
        /* the first `shots` of the seeded order; the rest are freed with the list */
        int *perm = malloc(sizeof(int) * (size_t)n);
        char **picked = malloc(sizeof(char *) * (size_t)n);
        if (!perm || !picked || pe_sample_refs((uint64_t)o.seed, n, perm)) {
            free(perm);
            free(picked);
            cli_free_paths(paths, n);
            return cli_error("fit: out of memory");
        }
        for (int i = 0; i < n; i++) picked[i] = paths[perm[i]];
        memcpy(paths, picked, sizeof(char *) * (size_t)n);
        free(perm);
        free(picked);
        used = shots;
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
    s = pe_bank_fit(model, imgs, used, (const char *const *)paths, &params, &bank);
    if (s) {
        cli_lib_error(s);
        goto done;
    }
    pe_bank_set_model_path(bank, o.model);
    s = pe_bank_save(bank, output);
    if (s) {
        cli_lib_error(s);
        goto done;
    }
    if (!cli_quiet) {
        char rule[96];
        detect_describe(&pe_bank_params(bank)->score, rule, sizeof rule);
        float th = pe_bank_threshold(bank);
        fprintf(stderr, "patchead: fit %d reference%s in %.1fs (%s, size %d%s%s) -> %s\n", used,
                used == 1 ? "" : "s", cli_now() - t0, rule, pe_bank_params(bank)->size,
                params.align ? ", align" : "", params.mask ? ", mask" : "", output);
        if (isnan(th)) fprintf(stderr, "patchead: no threshold (needs at least 2 references)\n");
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
