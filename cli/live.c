/* live.c — banks + backbones kept in memory for serve / watch (see live.h). */
#include "live.h"
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

double live_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int stop_pipe[2] = {-1, -1};

static void on_stop_signal(int sig)
{
    int saved = errno;
    unsigned char byte = (unsigned char)sig;
    if (write(stop_pipe[1], &byte, 1) < 0) { /* pipe full: a stop is already pending */
    }
    errno = saved;
}

int live_stop_fd(void)
{
    if (stop_pipe[0] >= 0) return stop_pipe[0];
    if (pipe2(stop_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        cli_error("cannot create the signal pipe (%s)", strerror(errno));
        return -1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    return stop_pipe[0];
}

int live_valid_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > LIVE_NAME_MAX || !strcmp(name, ".") || !strcmp(name, "..")) return 0;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == '-'))
            return 0;
    return 1;
}

live_bank *live_find(live_set *set, const char *name)
{
    for (int i = 0; i < set->num_banks; i++)
        if (!strcmp(set->banks[i].name, name)) return &set->banks[i];
    return NULL;
}

/* The model of `path`, loading it on first use (banks on one backbone share it). */
static live_model *model_for(live_set *set, const char *path, int threads)
{
    for (int i = 0; i < set->num_models; i++)
        if (!strcmp(set->models[i]->path, path)) return set->models[i];
    live_model *m = calloc(1, sizeof *m);
    live_model **grown = realloc(set->models, (size_t)(set->num_models + 1) * sizeof *grown);
    if (!m || !grown || !(m->path = strdup(path))) {
        if (grown) set->models = grown;
        free(m);
        cli_error("out of memory loading %s", path);
        return NULL;
    }
    set->models = grown;
    pe_model_params mp = pe_model_default_params();
    mp.threads = threads;
    pe_status s = pe_model_load(path, &mp, &m->model);
    if (!s) s = pe_model_get_info(m->model, &m->info);
    if (s) {
        cli_lib_error(s);
        pe_model_free(m->model);
        free(m->path);
        free(m);
        return NULL;
    }
    pthread_mutex_init(&m->lock, NULL);
    set->models[set->num_models++] = m;
    return m;
}

/* "NAME=PATH" -> name, path; "PATH" -> the file's stem. */
static int split_spec(const char *spec, char *name, const char **path)
{
    const char *eq = strchr(spec, '=');
    if (eq) {
        size_t n = (size_t)(eq - spec);
        snprintf(name, LIVE_NAME_MAX + 1, "%.*s", (int)(n > LIVE_NAME_MAX ? LIVE_NAME_MAX : n),
                 spec);
        *path = eq + 1;
        if (n > LIVE_NAME_MAX || !live_valid_name(name)) {
            cli_error("bank name '%.*s' in '%s': use 1-%d of A-Z a-z 0-9 . _ - (not . or ..)",
                      (int)(eq - spec), spec, spec, LIVE_NAME_MAX);
            return -1;
        }
        return 0;
    }
    *path = spec;
    const char *base = strrchr(spec, '/');
    base = base ? base + 1 : spec;
    const char *dot = strrchr(base, '.');
    size_t n = dot && dot != base ? (size_t)(dot - base) : strlen(base);
    snprintf(name, LIVE_NAME_MAX + 1, "%.*s", (int)(n > LIVE_NAME_MAX ? LIVE_NAME_MAX : n), base);
    if (n > LIVE_NAME_MAX || !live_valid_name(name)) {
        cli_error("%s: its name '%.*s' is not a valid bank name (A-Z a-z 0-9 . _ -, at most %d); "
                  "give one as NAME=%s",
                  spec, (int)n, base, LIVE_NAME_MAX, spec);
        return -1;
    }
    return 0;
}

int live_open(live_set *set, char *const *specs, int num_specs, const char *model_override,
              int threads)
{
    memset(set, 0, sizeof *set);
    set->banks = calloc((size_t)num_specs, sizeof *set->banks);
    if (!set->banks) return cli_error("out of memory"), -1;
    for (int i = 0; i < num_specs; i++) {
        live_bank *b = &set->banks[i];
        const char *path;
        if (split_spec(specs[i], b->name, &path)) goto fail;
        if (live_find(set, b->name) != b && live_find(set, b->name)) {
            cli_error("bank name '%s' given twice (name them with NAME=PATH)", b->name);
            goto fail;
        }
        set->num_banks = i + 1;
        if (!(b->path = strdup(path))) {
            cli_error("out of memory");
            goto fail;
        }
        pe_status s = pe_bank_load(path, NULL, &b->bank);
        if (s) {
            cli_lib_error(s);
            goto fail;
        }
        const char *model_path = model_override ? model_override : pe_bank_model_path(b->bank);
        if (!*model_path) {
            cli_error("%s: records no model path; pass --model", path);
            goto fail;
        }
        if (!(b->model = model_for(set, model_path, threads))) goto fail;
        s = pe_bank_check_model(b->bank, b->model->model);
        if (s) {
            cli_error("%s: %s", path, pe_last_error());
            goto fail;
        }
        b->threshold = pe_bank_threshold(b->bank);
    }
    return 0;
fail:
    set->num_banks = num_specs; /* free whatever was loaded */
    live_close(set);
    return -1;
}

int live_drift_start(live_set *set, double level, int window, int *checked)
{
    int n = 0;
    for (int i = 0; i < set->num_banks; i++) {
        live_bank *b = &set->banks[i];
        pe_calibration cal;
        if (b->drift || pe_bank_calibration(b->bank, &cal) != PE_OK || cal.n < 1) continue;
        pe_status s = pe_drift_new(b->bank, level, window, &b->drift);
        if (s) {
            cli_error("%s: %s", b->path, pe_last_error());
            return -1;
        }
        pthread_mutex_init(&b->drift_lock, NULL);
        b->drift_window = window;
        n++;
    }
    if (checked) *checked = n;
    return 0;
}

int live_drift_add(live_bank *b, float score, pe_drift_report *r, int *alarm)
{
    if (!b->drift) return -1;
    pthread_mutex_lock(&b->drift_lock);
    const int was = b->drift_alarm;
    if (pe_drift_add(b->drift, score) == PE_OK && pe_drift_report_get(b->drift, r) == PE_OK) {
        if (r->warning) {
            b->drift_alarm = 1;
            b->drift_quiet = 0;
        } else if (score <= r->threshold && b->drift_alarm && ++b->drift_quiet >= b->drift_window) {
            b->drift_alarm = 0;
        }
    } else {
        memset(r, 0, sizeof *r); /* out of memory: report "not tested", keep the alarm */
        r->p_value = 1;
    }
    *alarm = b->drift_alarm;
    pthread_mutex_unlock(&b->drift_lock);
    return *alarm != was;
}

int live_drift_get(live_bank *b, pe_drift_report *r, int *alarm)
{
    if (!b->drift) return -1;
    pthread_mutex_lock(&b->drift_lock);
    pe_status s = pe_drift_report_get(b->drift, r);
    *alarm = b->drift_alarm;
    pthread_mutex_unlock(&b->drift_lock);
    if (s) {
        memset(r, 0, sizeof *r);
        r->p_value = 1;
    }
    return 0;
}

void live_close(live_set *set)
{
    for (int i = 0; set->banks && i < set->num_banks; i++) {
        if (set->banks[i].drift) {
            pe_drift_free(set->banks[i].drift);
            pthread_mutex_destroy(&set->banks[i].drift_lock);
        }
        pe_bank_free(set->banks[i].bank);
        free(set->banks[i].path);
    }
    free(set->banks);
    for (int i = 0; i < set->num_models; i++) {
        pe_model_free(set->models[i]->model);
        pthread_mutex_destroy(&set->models[i]->lock);
        free(set->models[i]->path);
        free(set->models[i]);
    }
    free(set->models);
    memset(set, 0, sizeof *set);
}

pe_status live_score(live_bank *b, const uint8_t *bytes, size_t len, const char *name,
                     pe_image *img, pe_result *res, live_timings *t)
{
    memset(t, 0, sizeof *t);
    memset(res, 0, sizeof *res);
    double t0 = live_now_ms();
    pe_status s = pe_image_decode(bytes, len, name, img);
    double t1 = live_now_ms();
    t->decode_ms = t1 - t0;
    if (s) return s;
    const pe_detect_params *p = pe_bank_params(b->bank);
    pthread_mutex_lock(&b->model->lock);
    if (p->align) {
        /* alignment runs inside predict (references warped onto this query): one stage */
        s = pe_bank_predict(b->bank, b->model->model, img, res);
        t->features_ms = live_now_ms() - t1;
    } else {
        /* the same two stages pe_bank_predict runs, timed apart */
        pe_extract_params e = pe_extract_default_params();
        e.size = p->size;
        e.layer = p->layer;
        e.want_attn = p->mask;
        pe_features q = {0};
        s = pe_model_extract(b->model->model, img, &e, &q);
        double t2 = live_now_ms();
        t->features_ms = t2 - t1;
        if (!s) s = pe_bank_predict_features(b->bank, &q, res);
        t->scoring_ms = live_now_ms() - t2;
        pe_features_free(&q);
    }
    pthread_mutex_unlock(&b->model->lock);
    if (s) pe_image_free(img);
    return s;
}

void live_heatmap_range(const pe_result *r, float threshold, float *vmin, float *vmax)
{
    if (isfinite(threshold) && threshold > 0) {
        *vmin = 0.5f * threshold;
        *vmax = 1.5f * threshold;
        return;
    }
    *vmin = INFINITY;
    *vmax = -INFINITY;
    for (int i = 0; i < r->grid_h * r->grid_w; i++) {
        *vmin = fminf(*vmin, r->patch_scores[i]);
        *vmax = fmaxf(*vmax, r->patch_scores[i]);
    }
}
