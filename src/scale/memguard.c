/* memguard.c — how much memory a batch zero-shot needs, checked against what the
 * machine has before the batch is allocated (docs/SCALE.md). */
#include "scale.h"
#include "compute/engine.h"
#include "score/score.h"

#include <stdio.h>
#include <string.h>

double pe_zeroshot_scoring_bytes(int n, int patches, int dim, const pe_detect_params *params,
                                 int *k)
{
    int m = params->comparators > 0 && params->comparators < n - 1 ? params->comparators : n - 1;
    int kk = pe_score_k(&params->score, PE_MAX(m, 1));
    int t = pe_score_auto_tile(&params->score, patches, patches);
    if (k) *k = kk;
    /* heaps (n G K) + inverse norms (n G) + scores (n G) + results (n G) + tile + colmax */
    double bytes = 4.0 * ((double)n * patches * (kk + 3) + (double)t * patches + patches);
    /* bf16 operands (the pair's two images); the fp32 screen's copies and norms where it runs */
    if (pe_precision_resolve(params->score.precision) == PE_PRECISION_BF16)
        bytes += pe_score_pair_copy_bytes(patches, dim);
    else if (pe_score_screen_runs(dim) && pe_score_screen_fits(n, patches, dim))
        bytes += pe_score_screen_bytes(n, patches, dim);
    return bytes;
}

pe_status pe_zeroshot_estimate(int n, int patches, int dim, int want_attn, int spilled,
                               const pe_detect_params *params, pe_memory_estimate *out)
{
    /* NULL: the zero-shot defaults of the fields the estimate reads (pe_detect_default_params
     * (1) lives in detect/, a layer above; it sets the same score parameters and no
     * comparator sampling) */
    pe_detect_params defaults;
    memset(&defaults, 0, sizeof defaults);
    defaults.score = pe_score_default_params("patchead", 1);
    if (!params) params = &defaults;
    if (!out) return pe_fail(PE_ERR_ARG, "pe_zeroshot_estimate: NULL argument");
    memset(out, 0, sizeof *out);
    if (n < 2 || patches <= 0 || dim <= 0)
        return pe_fail(PE_ERR_ARG, "zero-shot estimate: %d images of %d patches x %d", n, patches,
                       dim);
    out->features = spilled ? 0 : 4.0 * n * (double)patches * (dim + (want_attn ? 1 : 0));
    out->scoring = pe_zeroshot_scoring_bytes(n, patches, dim, params, &out->k);
    out->total = out->features + out->scoring;
    out->available = pe_mem_available();
    return PE_OK;
}

/* "1.50 GiB", "12.0 MiB", "512 KiB" */
static const char *human(double bytes, char buf[32])
{
    const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    int u = 0;
    while (bytes >= 1024 && u < 5) {
        bytes /= 1024;
        u++;
    }
    snprintf(buf, 32, bytes < 10 ? "%.2f %s" : "%.1f %s", bytes, unit[u]);
    return buf;
}

pe_status pe_zeroshot_check_memory(const pe_memory_estimate *est, double limit_bytes)
{
    if (!est) return pe_fail(PE_ERR_ARG, "pe_zeroshot_check_memory: NULL argument");
    double limit = limit_bytes > 0 ? limit_bytes : est->available;
    if (limit <= 0 || est->total <= limit) return PE_OK;
    char total[32], feat[32], score[32], lim[32], avail[32], k[32] = "";
    if (est->k > 0) snprintf(k, sizeof k, " with K = %d", est->k);
    return pe_fail(PE_ERR_LIMIT,
                   "needs about %s (features %s, scoring %s%s), over the %s of %s (MemAvailable "
                   "%s); keep the features in a spill file, sample fewer comparators, or split "
                   "the batch",
                   human(est->total, total), human(est->features, feat), human(est->scoring, score),
                   k, limit_bytes > 0 ? "limit" : "available memory", human(limit, lim),
                   human(est->available, avail));
}
