/* fit.c — `patchead fit`: build a reference bank (.pead) from normal images. */
#include "cli.h"
#include "options.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *USAGE =
    "usage: patchead fit --model M -o BANK.pead [options] REF...\n\n"
    "Builds a few-shot reference bank from normal images (files or folders, walked\n"
    "recursively in sorted order). A label-free threshold is stored: every reference\n"
    "scored against the others (leave-one-out), the largest of those scores.\n\n"
    "options:\n"
    "  -o, --output BANK  the bank file to write (.pead)\n"
    "  --shots N          use N references sampled from REF... (reproducible: --seed)\n"
    "  --seed X           sampling seed (default 0): splitmix64 + Fisher-Yates over\n"
    "                     the sorted path list, the first N of the shuffle\n" DETECT_OPTS_HELP;

/* splitmix64: a tiny, well-mixed, documented PRNG for reproducible shot sampling. */
static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Partial Fisher-Yates: paths[0..shots) become a uniform sample (in shuffle order). */
static void sample_paths(char **paths, int n, int shots, uint64_t seed)
{
    uint64_t st = seed;
    for (int i = 0; i < shots && i < n - 1; i++) {
        int j = i + (int)(splitmix64(&st) % (uint64_t)(n - i));
        char *t = paths[i];
        paths[i] = paths[j];
        paths[j] = t;
    }
}

int cmd_fit(int argc, char **argv)
{
    detect_opts o = {0};
    o.sigma = -1;
    const char *output = NULL;
    int shots = 0;
    long long seed = 0;
    static const struct option longs[] = {DETECT_LONG_OPTS,
                                          {"output", required_argument, 0, 'o'},
                                          {"shots", required_argument, 0, OPT_SHOTS},
                                          {"seed", required_argument, 0, OPT_SEED},
                                          {0, 0, 0, 0}};
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "o:h", longs, NULL)) != -1) {
        int r = detect_opt(&o, c, optarg);
        if (r < 0) return EXIT_USAGE;
        if (r) continue;
        switch (c) {
        case 'o': output = optarg; break;
        case OPT_SHOTS:
            if (cli_parse_int("--shots", optarg, 1, 100000, &shots)) return EXIT_USAGE;
            break;
        case OPT_SEED: {
            char *end;
            seed = strtoll(optarg, &end, 10);
            if (*end || end == optarg) {
                cli_error("--seed expects an integer, got '%s'", optarg);
                return EXIT_USAGE;
            }
            break;
        }
        case 'h':
        case OPT_HELP: fputs(USAGE, stdout); return EXIT_OK;
        default: fputs(USAGE, stderr); return EXIT_USAGE;
        }
    }
    if (!o.model || !output || optind >= argc) {
        cli_error("fit needs --model, -o BANK.pead and at least one reference image");
        fputs(USAGE, stderr);
        return EXIT_USAGE;
    }
    pe_detect_params params;
    if (detect_params_from(&o, 0, &params)) return EXIT_USAGE;
    if (o.threads) pe_set_threads(o.threads);

    char **paths;
    int n = cli_collect_images(argv + optind, argc - optind, &paths);
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
        sample_paths(paths, n, shots, (uint64_t)seed);
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
