/* scale.c — batch zero-shot at scale: shared options and helpers (see scale.h). */
#include "scale.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "8G", "512M", "100k", "1.5GiB", "4096" -> bytes (binary units). */
static int parse_size(const char *text, double *out)
{
    char *end;
    double v = strtod(text, &end);
    double unit = 1;
    switch (*end) {
    case 'k':
    case 'K':
        unit = 1024.0;
        end++;
        break;
    case 'm':
    case 'M':
        unit = 1048576.0;
        end++;
        break;
    case 'g':
    case 'G':
        unit = 1073741824.0;
        end++;
        break;
    case 't':
    case 'T':
        unit = 1099511627776.0;
        end++;
        break;
    }
    if (unit > 1 && (!strcmp(end, "iB") || !strcmp(end, "B"))) end += strlen(end);
    if (end == text || *end || !(v > 0) || !isfinite(v)) {
        cli_error("--mem-limit expects a size like 8G, 512M or 1048576, got '%s'", text);
        return -1;
    }
    *out = v * unit;
    return 0;
}

int scale_opts_from(const cli_opts *o, scale_opts *so)
{
    memset(so, 0, sizeof *so);
    so->comparators = o->comparators;
    so->seed = (uint64_t)o->comparator_seed;
    so->spill = o->spill;
    so->max_time = o->max_time;
    if (o->mem_limit && parse_size(o->mem_limit, &so->mem_limit)) return -1;
    return 0;
}

void scale_apply(const scale_opts *o, pe_detect_params *p)
{
    p->comparators = o->comparators;
    p->comparator_seed = o->seed;
}

int scale_refuse_memory(const scale_opts *o, const char *what, const pe_memory_estimate *est,
                        const char *more_options)
{
    pe_status s = pe_zeroshot_check_memory(est, o->mem_limit);
    if (s == PE_ERR_LIMIT) {
        cli_error("%s: %s (%s--comparators R, %s--mem-limit SIZE)", what, pe_last_error(),
                  o->spill ? "" : "--spill DIR, ", more_options ? more_options : "");
        return -1;
    }
    if (s) return cli_lib_error(s), -1;
    return 0;
}

int scale_check_memory(const scale_opts *o, int n, int patches, int dim, int want_attn,
                       const pe_detect_params *p)
{
    pe_memory_estimate est;
    pe_status s = pe_zeroshot_estimate(n, patches, dim, want_attn, o->spill != NULL, p, &est);
    if (s) return cli_lib_error(s), -1;
    char what[96];
    snprintf(what, sizeof what, "zero-shot batch of %d images of %d patches x %d", n, patches, dim);
    return scale_refuse_memory(o, what, &est, NULL);
}

int scale_calibrate(pe_model *model, const pe_extract_params *ep, int side,
                    const pe_detect_params *p, pe_features *shape, double *forward_s,
                    double *pair_s)
{
    pe_image grey = {side, side, malloc((size_t)side * side * 3)};
    if (!grey.rgb) return cli_error("out of memory"), -1;
    memset(grey.rgb, 128, (size_t)side * side * 3);
    pe_status s = PE_OK;
    for (int rep = 0; rep < 2 && !s; rep++) { /* the first forward warms up */
        if (rep) pe_features_free(shape);
        double t0 = cli_now();
        s = pe_model_extract(model, &grey, ep, shape);
        *forward_s = cli_now() - t0;
    }
    pe_image_free(&grey);
    if (!s) s = pe_zeroshot_pair_seconds(shape, p, pair_s);
    free(shape->data);
    free(shape->attn);
    shape->data = shape->attn = NULL;
    if (s) return cli_lib_error(s), -1;
    return 0;
}

/* "0.35 s", "4m10s", "3.2 h" */
static const char *secs(double t, char buf[32])
{
    if (t < 120) snprintf(buf, 32, t < 1 ? "%.3f s" : t < 10 ? "%.2f s" : "%.0f s", t);
    else if (t < 7200) snprintf(buf, 32, "%dm%02ds", (int)(t / 60), (int)fmod(t, 60));
    else snprintf(buf, 32, "%.1f h", t / 3600);
    return buf;
}

int scale_check_time(const scale_opts *o, const char *what, double images, double forward_s,
                     double pairs, double pair_s, double *score_s)
{
    int ranks = pe_dist_size();
    /* this rank's share: images round robin, pairs in equal contiguous shares */
    double ex = ceil(images / ranks) * forward_s, sc = ceil(pairs / ranks) * pair_s;
    if (score_s) *score_s = sc;
    char a[32], b[32], c[32], d[32], e[32], per[64] = "";
    if (ranks > 1) snprintf(per, sizeof per, ", each of %d MPI ranks", ranks);
    char detail[256];
    snprintf(detail, sizeof detail,
             "extraction ~%s (%.0f images at %.1f ms) + scoring ~%s (%.0f pairs at %.1f ms)%s",
             secs(ex, a), images, forward_s * 1e3, secs(sc, b), pairs, pair_s * 1e3, per);
    if (o->max_time > 0 && ex + sc > o->max_time) {
        cli_error("%s: estimated %s, over --max-time %s: %s; sample fewer comparators, use a "
                  "smaller size, or run more MPI ranks (--comparators R, --size S, mpirun -n N)",
                  what, secs(ex + sc, c), secs(o->max_time, d), detail);
        return -1;
    }
    if (!cli_quiet) fprintf(stderr, "patchead: %s: about %s: %s\n", what, secs(ex + sc, e), detail);
    return 0;
}

static void on_pairs(int64_t done, int64_t total, void *user)
{
    cli_progress *bar = user;
    bar->total = (int)total;
    /* redraw about 200 times per run, not once per pair */
    if (done == total || done % (total / 200 + 1) == 0) cli_progress_step(bar, (int)done);
}

void scale_progress_hook(cli_progress *bar, const char *label, double estimate, pe_detect_params *p)
{
    cli_progress_begin(bar, label, 1); /* total set by the first callback */
    bar->estimate = estimate;
    if (!bar->active) return; /* not a terminal (or quiet): the plain path */
    p->score_progress = on_pairs;
    p->progress_user = bar;
}

uint64_t scale_hash(uint64_t h, const void *data, size_t n)
{
    const unsigned char *b = data;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

int scale_ranks_agree(uint64_t fingerprint)
{
    int ranks = pe_dist_size();
    if (ranks == 1) return 1;
    if (pe_dist_check()) return 0; /* a rank failed before getting here */
    for (int r = 1; r < ranks; r++) {
        uint64_t theirs = fingerprint;
        if (pe_dist_to_root(&theirs, sizeof theirs, r)) return 0; /* a rank has failed */
        if (pe_dist_rank() == 0 && theirs != fingerprint)
            cli_error("MPI rank %d holds a different batch than rank 0 (other files, or other "
                      "image bytes): give every rank the same inputs",
                      r);
    }
    return pe_dist_check() == PE_OK;
}

int scale_ranks_all_ok(int ok)
{
    if (!ok) pe_dist_fail(NULL);        /* keeps the rank's first error, if it printed one */
    int all = pe_dist_check() == PE_OK; /* collective: every rank calls it */
    return ok && all;
}
