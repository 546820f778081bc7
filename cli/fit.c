/* fit.c — `patchead fit`: build a reference bank (.pead) from normal images. */
#include "cli.h"
#include "options.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *USAGE =
    "usage: patchead fit --model M -o BANK.pead [options] REF...\n\n"
    "Builds a few-shot reference bank from normal images (files or folders, walked\n"
    "recursively in sorted order). A label-free threshold is stored: every reference\n"
    "scored against the others (leave-one-out), the largest of those scores.\n\n"
    "options:\n"
    "  -o, --output BANK  the bank file to write (.pead)\n"
    "  --shots N|all      use N references sampled from REF... (reproducible: --seed);\n"
    "                     all (the default): every image\n"
    "  --seed X           sampling seed (default 0): splitmix64 + Fisher-Yates over\n"
    "                     the sorted path list, the first N of the shuffle; also the\n"
    "                     coreset's first centre and projection\n"
    "beyond the paper (docs/BEYOND.md):\n"
    "  --rotations N      also store each reference turned by 360/N degrees, N times\n"
    "                     (4: 0/90/180/270; 8: every 45, border replicated); a query\n"
    "                     turned relative to the references still matches (N x cost)\n"
    "  --flips            also store the mirrored reference (2 x cost)\n"
    "  --coreset F        keep a greedy k-center coreset of all reference patches: a\n"
    "                     fraction (0.1, 10%) or a count; the bank becomes one union\n"
    "                     of patches (nearest neighbour over all of them)\n"
    "  --coreset-proj P   random projection to P dims for the coreset distances\n"
    "                     (default 0 = none)\n"
    "  --window R         positional scoring for aligned parts: compare each query patch\n"
    "                     only with reference patches within R patches of its position\n"
    "                     (0 = the same patch; default: all patches)\n"
    "  --calibrate X      calibrate the threshold on normal images that are not\n"
    "                     references: a folder/file, or a fraction of REF... held out\n"
    "                     (0.3 or 30%: the last of the seeded shuffle)\n"
    "  --fpr A            target false-alarm rate of the threshold (conformal quantile\n"
    "                     of the calibration scores; leave-one-out scores of the\n"
    "                     references when there is no --calibrate; default 0.05 with\n"
    "                     --calibrate)\n" DETECT_OPTS_HELP;

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

int cmd_fit(int argc, char **argv)
{
    detect_opts o = {0};
    o.sigma = -1;
    const char *output = NULL, *coreset = NULL, *calibrate = NULL;
    int shots = 0, rotations = 1, flips = 0, window = -1, coreset_proj = 0;
    double fpr = 0;
    long long seed = 0;
    static const struct option longs[] = {DETECT_LONG_OPTS,
                                          {"output", required_argument, 0, 'o'},
                                          {"shots", required_argument, 0, OPT_SHOTS},
                                          {"seed", required_argument, 0, OPT_SEED},
                                          {"rotations", required_argument, 0, OPT_ROTATIONS},
                                          {"flips", no_argument, 0, OPT_FLIPS},
                                          {"window", required_argument, 0, OPT_WINDOW},
                                          {"coreset", required_argument, 0, OPT_CORESET},
                                          {"coreset-proj", required_argument, 0, OPT_CORESET_PROJ},
                                          {"calibrate", required_argument, 0, OPT_CALIBRATE},
                                          {"fpr", required_argument, 0, OPT_FPR},
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
            if (strcmp(optarg, "all") && cli_parse_int("--shots", optarg, 1, 100000, &shots))
                return EXIT_USAGE;
            break;
        case OPT_ROTATIONS:
            if (cli_parse_int("--rotations", optarg, 1, 360, &rotations)) return EXIT_USAGE;
            break;
        case OPT_FLIPS: flips = 1; break;
        case OPT_WINDOW:
            if (cli_parse_int("--window", optarg, 0, 4096, &window)) return EXIT_USAGE;
            break;
        case OPT_CORESET: coreset = optarg; break;
        case OPT_CORESET_PROJ:
            if (cli_parse_int("--coreset-proj", optarg, 0, 65536, &coreset_proj)) return EXIT_USAGE;
            break;
        case OPT_CALIBRATE: calibrate = optarg; break;
        case OPT_FPR:
            if (cli_parse_float("--fpr", optarg, 1e-6, 0.999999, &fpr)) return EXIT_USAGE;
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
    params.rotations = rotations;
    params.flips = flips;
    params.window = window;
    params.coreset_proj = coreset_proj;
    params.coreset_seed = (uint64_t)seed;
    if (coreset &&
        parse_count_or_fraction("--coreset", coreset, &params.coreset_count, &params.coreset_fraction))
        return EXIT_USAGE;
    /* --calibrate: an existing path is a calibration set; otherwise a held-out fraction */
    struct stat cst;
    double holdout = 0;
    int calib_is_path = calibrate && stat(calibrate, &cst) == 0;
    if (calibrate && !calib_is_path) {
        int count = 0;
        float frac = 0;
        if (parse_count_or_fraction("--calibrate", calibrate, &count, &frac)) return EXIT_USAGE;
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
    int n = cli_collect_images(argv + optind, argc - optind, &paths);
    if (n < 0) return EXIT_ERROR;
    if (n == 0) {
        cli_free_paths(paths, n);
        return cli_error("fit: no images found in the given references");
    }
    int used = n, pool = n; /* references come from paths[0, pool) */
    if (holdout > 0) {
        /* full shuffle: its first N entries are the N-shot sample of the plain shuffle, the
         * held-out calibration images are its last ceil(fraction * n) */
        sample_paths(paths, n, n, (uint64_t)seed);
        pool = n - (int)ceil(holdout * n);
        if (pool < 1) {
            cli_free_paths(paths, n);
            return cli_error("fit: --calibrate %s holds out every one of the %d images", calibrate, n);
        }
        used = pool;
    }
    if (shots) {
        if (shots > pool) {
            cli_free_paths(paths, n);
            return cli_error("fit: --shots %d but only %d reference images%s", shots, pool,
                             holdout > 0 ? " outside the calibration share" : "");
        }
        if (holdout == 0) sample_paths(paths, n, shots, (uint64_t)seed);
        used = shots;
    }

    pe_model *model = NULL;
    pe_model_params mp = pe_model_default_params();
    mp.threads = o.threads;
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
    if (calibrate && calibrate_bank(bank, model, calib_is_path ? calibrate : NULL,
                                    paths + pool, n - pool, (float)fpr))
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
        fprintf(stderr, "patchead: fit %d reference%s in %.1fs (%s, size %d%s%s) -> %s\n", used,
                used == 1 ? "" : "s", cli_now() - t0, rule, pe_bank_params(bank)->size,
                params.align ? ", align" : "", params.mask ? ", mask" : "", output);
        if (rotations > 1 || flips)
            fprintf(stderr, "patchead: %d views per reference (rotations %d%s): %dx memory and "
                    "scoring time\n", rotations * (flips ? 2 : 1), rotations,
                    flips ? ", mirrored" : "", rotations * (flips ? 2 : 1));
        if (coreset)
            fprintf(stderr, "patchead: coreset bank (greedy k-center, seed %lld): one union of "
                    "patches, nearest neighbour over all of them\n", seed);
        pe_calibration cal;
        pe_bank_calibration(bank, &cal);
        if (cal.n > 0 && cal.guaranteed)
            fprintf(stderr, "patchead: threshold %.6g: conformal quantile of %d %s scores; false-alarm "
                    "rate <= %g for normal images exchangeable with them\n", th, cal.n,
                    !strcmp(cal.source, "images") ? "calibration-image" : "leave-one-out", cal.alpha);
        else if (cal.n > 0)
            fprintf(stderr, "patchead: warning: %d calibration scores are too few for a false-alarm "
                    "rate of %g (need at least %d); threshold %.6g is their maximum, with no "
                    "guarantee\n", cal.n, cal.alpha, (int)ceil(1.0 / cal.alpha - 1e-9) - 1, th);
        else if (isnan(th))
            fprintf(stderr, "patchead: no threshold (needs at least 2 references%s)\n",
                    params.coreset_fraction > 0 || params.coreset_count > 0
                        ? "; a coreset bank has one: use --calibrate" : "");
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
