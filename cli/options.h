/* options.h — options shared by `patchead fit` and `patchead zeroshot`:
 * model, input size, layer, scoring preset and its overrides, PatchEAD+ switches. */
#ifndef PE_DETECT_OPTS_H
#define PE_DETECT_OPTS_H

#include "patchead.h"

#include <getopt.h>

enum {
    OPT_SIZE = 1000, OPT_LAYER, OPT_PRESET, OPT_ORDER, OPT_K, OPT_TOP, OPT_ALIGN, OPT_MASK,
    OPT_PLUS, OPT_THREADS, OPT_QUIET, OPT_SHOTS, OPT_SEED, OPT_BANK, OPT_OUT, OPT_THRESHOLD,
    OPT_NO_MAPS, OPT_MODEL, OPT_HELP, OPT_SIGMA,
    /* beyond the paper (docs/BEYOND.md) */
    OPT_ROTATIONS, OPT_FLIPS, OPT_WINDOW, OPT_CORESET, OPT_CORESET_PROJ, OPT_CALIBRATE, OPT_FPR
};

/* getopt_long entries for the shared options (terminate your own table after them). */
#define DETECT_LONG_OPTS                                                                       \
    {"model", required_argument, 0, OPT_MODEL}, {"size", required_argument, 0, OPT_SIZE},     \
        {"layer", required_argument, 0, OPT_LAYER},                                           \
        {"preset", required_argument, 0, OPT_PRESET},                                         \
        {"order", required_argument, 0, OPT_ORDER}, {"k", required_argument, 0, OPT_K},       \
        {"top", required_argument, 0, OPT_TOP}, {"align", no_argument, 0, OPT_ALIGN},         \
        {"mask", no_argument, 0, OPT_MASK}, {"plus", no_argument, 0, OPT_PLUS},               \
        {"sigma", required_argument, 0, OPT_SIGMA},                                           \
        {"threads", required_argument, 0, OPT_THREADS},                                       \
        {"quiet", no_argument, 0, OPT_QUIET}, {"help", no_argument, 0, OPT_HELP }

#define DETECT_OPTS_HELP                                                                       \
    "  --model PATH      backbone weights (file or hub folder)\n"                             \
    "  --size S          square input side (default: the model's, 448)\n"                     \
    "  --layer L         ViT block whose output is used (default: last)\n"                    \
    "  --preset P        scoring preset: patchead (default), anomalydino, musc\n"             \
    "  --order O         Eq. 3 reference selection: lowest or highest\n"                      \
    "  --k K             Eq. 3 K: a count (3) or a fraction of M (0.3 or 30%)\n"              \
    "  --top R           Eq. 4: mean of the top R (fraction 0.01 / 1%) or count (5) patches\n" \
    "  --align           PatchEAD+ alignment of the references to each query\n"               \
    "  --mask            PatchEAD+ attention masking (ViT backbones only)\n"                  \
    "  --plus            both --align and --mask\n"                                           \
    "  --sigma PX        Gaussian sigma of the anomaly maps in pixels (default 4)\n"          \
    "  --threads N       worker threads (default: all cores)\n"                               \
    "  --quiet           no progress bar or warnings\n"

typedef struct {
    const char *model;
    const char *preset;
    const char *order, *k, *top; /* overrides, NULL if not given */
    int size, layer, align, mask, threads;
    double sigma;
} detect_opts;

/* Handle one shared option; 1 if handled, 0 if not ours, -1 on a bad value. */
int detect_opt(detect_opts *o, int c, const char *arg);
/* Build detect params from the options (preset then overrides). -1 on a bad value. */
int detect_params_from(const detect_opts *o, int zeroshot, pe_detect_params *p);
/* "3" -> *count = 3; "0.3" or "30%" -> *fraction = 0.3 (count 0). -1 with an error printed. */
int parse_count_or_fraction(const char *opt, const char *text, int *count, float *fraction);
/* "lowest K=30% top 1%" — a short description of the scoring rule. */
void detect_describe(const pe_score_params *s, char *buf, size_t cap);

#endif
