/* options.c — shared options of fit / zeroshot (see options.h). */
#include "options.h"
#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

int detect_opt(detect_opts *o, int c, const char *arg)
{
    double v;
    switch (c) {
    case OPT_MODEL: o->model = arg; return 1;
    case OPT_SIZE: return cli_parse_int("--size", arg, 32, 4096, &o->size) ? -1 : 1;
    case OPT_LAYER: return cli_parse_int("--layer", arg, 0, 1000, &o->layer) ? -1 : 1;
    case OPT_PRESET: o->preset = arg; return 1;
    case OPT_ORDER: o->order = arg; return 1;
    case OPT_K: o->k = arg; return 1;
    case OPT_TOP: o->top = arg; return 1;
    case OPT_ALIGN: o->align = 1; return 1;
    case OPT_MASK: o->mask = 1; return 1;
    case OPT_PLUS: o->align = o->mask = 1; return 1;
    case OPT_SIGMA:
        if (cli_parse_float("--sigma", arg, 0, 1000, &v)) return -1;
        o->sigma = v;
        return 1;
    case OPT_THREADS: return cli_parse_int("--threads", arg, 1, 4096, &o->threads) ? -1 : 1;
    case OPT_QUIET: cli_quiet = 1; return 1;
    }
    return 0;
}

/* "3" -> count 3; "0.3" or "30%" -> fraction 0.3. */
int parse_count_or_fraction(const char *opt, const char *text, int *count, float *fraction)
{
    size_t n = strlen(text);
    char buf[64];
    if (n == 0 || n >= sizeof buf) return cli_error("%s expects a count or a fraction, got '%s'", opt, text), -1;
    memcpy(buf, text, n + 1);
    double v;
    if (buf[n - 1] == '%') {
        buf[n - 1] = 0;
        if (cli_parse_float(opt, buf, 1e-9, 100, &v)) return -1;
        *count = 0;
        *fraction = (float)(v / 100);
    } else if (strpbrk(buf, ".eE")) {
        if (cli_parse_float(opt, buf, 1e-9, 1, &v)) return -1;
        *count = 0;
        *fraction = (float)v;
    } else {
        int c;
        if (cli_parse_int(opt, buf, 1, 1 << 30, &c)) return -1;
        *count = c;
    }
    return 0;
}

int detect_params_from(const detect_opts *o, int zeroshot, pe_detect_params *p)
{
    *p = pe_detect_default_params(zeroshot);
    if (o->preset && pe_score_preset(o->preset, zeroshot, &p->score) != PE_OK) {
        cli_lib_error(PE_ERR_ARG);
        return -1;
    }
    if (o->order) {
        if (!strcasecmp(o->order, "lowest")) p->score.order = PE_ORDER_LOWEST;
        else if (!strcasecmp(o->order, "highest")) p->score.order = PE_ORDER_HIGHEST;
        else return cli_error("--order expects lowest or highest, got '%s'", o->order), -1;
    }
    if (o->k && parse_count_or_fraction("--k", o->k, &p->score.k_count, &p->score.k_fraction))
        return -1;
    if (o->top &&
        parse_count_or_fraction("--top", o->top, &p->score.top_count, &p->score.top_fraction))
        return -1;
    p->size = o->size;
    p->layer = o->layer;
    p->align = o->align;
    p->mask = o->mask;
    if (o->sigma >= 0) p->map_sigma = (float)o->sigma;
    return 0;
}

void detect_describe(const pe_score_params *s, char *buf, size_t cap)
{
    char k[32], top[32];
    if (s->k_count > 0) snprintf(k, sizeof k, "%d", s->k_count);
    else snprintf(k, sizeof k, "%g%%", 100.0 * s->k_fraction);
    if (s->top_count > 0) snprintf(top, sizeof top, "%d", s->top_count);
    else snprintf(top, sizeof top, "%g%%", 100.0 * s->top_fraction);
    snprintf(buf, cap, "%s K=%s, top %s", s->order == PE_ORDER_LOWEST ? "lowest" : "highest", k, top);
}
