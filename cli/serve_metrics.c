/* serve_metrics.c — the counters of `patchead serve` (answers by status code, a latency
 * histogram; the gauges are read from the server state) and GET /metrics, Prometheus
 * text 0.0.4. See serve.h. */
#include "serve.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Latency histogram bucket bounds (seconds); one more bucket is +Inf. */
static const double BUCKETS[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define NUM_BUCKETS (int)(sizeof BUCKETS / sizeof *BUCKETS)

static unsigned long rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0, resident = 0;
    if (f) {
        if (fscanf(f, "%lu %lu", &pages, &resident) != 2) resident = 0;
        fclose(f);
    }
    return resident * (unsigned long)sysconf(_SC_PAGESIZE);
}

void serve_count_status(server *srv, unsigned code, double seconds)
{
    pthread_mutex_lock(&srv->lock);
    int slots = (int)(sizeof srv->by_status / sizeof *srv->by_status);
    for (int i = 0; i < slots; i++) {
        if (srv->by_status[i].code == (int)code || srv->by_status[i].code == 0) {
            srv->by_status[i].code = (int)code;
            srv->by_status[i].count++;
            break;
        }
    }
    int b = 0;
    while (b < NUM_BUCKETS && seconds > BUCKETS[b]) b++;
    srv->hist[b]++;
    srv->hist_count++;
    srv->hist_sum += seconds;
    pthread_mutex_unlock(&srv->lock);
}

/* ------------------------------------------------------------------ GET /metrics */

/* A growing text buffer for /metrics. */
typedef struct {
    char *data;
    size_t len, cap;
} text_buf;

static void tb_printf(text_buf *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tb_printf(text_buf *t, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = t->cap - t->len;
        int n = t->data ? vsnprintf(t->data + t->len, room, fmt, ap) : -1;
        va_end(ap);
        if (n >= 0 && (size_t)n < room) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = t->cap ? 2 * t->cap : 4096;
        char *grown = realloc(t->data, cap);
        if (!grown) return; /* keep what fits */
        t->data = grown;
        t->cap = cap;
    }
}

/* The drift check of every calibrated bank (one report per bank, read under its own
 * drift mutex, so the gauges of one bank agree with each other). */
static void drift_metrics(server *srv, text_buf *t)
{
    static const struct {
        const char *name, *help;
    } G[] = {
        {"patchead_drift_p_value", "p-value of the bank's drift check (one-sided two-sample KS "
                                   "of the last judged-normal scores vs the calibration; 1 "
                                   "while untested)."},
        {"patchead_drift_statistic", "KS statistic D of the bank's drift check."},
        {"patchead_drift_warning", "1 when the bank's drift check warns (p below the level)."},
        {"patchead_drift_alarm", "1 from a drift warning until a whole window of judged-normal "
                                 "images has passed without one."},
        {"patchead_drift_judged_normal",
         "Images judged normal in the bank's drift window (tested from 10 on)."},
        {"patchead_drift_level", "Warning level of the bank's drift check."},
    };
    int n = srv->set.num_banks;
    pe_drift_report *r = calloc((size_t)(n ? n : 1), sizeof *r);
    int *has = calloc((size_t)(n ? n : 1), sizeof *has), any = 0;
    int *alarm = calloc((size_t)(n ? n : 1), sizeof *alarm);
    for (int i = 0; r && has && alarm && i < n; i++)
        any |= has[i] = !live_drift_get(&srv->set.banks[i], &r[i], &alarm[i]);
    for (int g = 0; any && g < (int)(sizeof G / sizeof *G); g++) {
        tb_printf(t, "# HELP %s %s\n# TYPE %s gauge\n", G[g].name, G[g].help, G[g].name);
        for (int i = 0; i < n; i++) {
            if (!has[i]) continue;
            double v = g == 0   ? r[i].p_value
                       : g == 1 ? r[i].statistic
                       : g == 2 ? r[i].warning
                       : g == 3 ? alarm[i]
                       : g == 4 ? r[i].normal
                                : r[i].delta;
            tb_printf(t, "%s{bank=\"%s\"} %.9g\n", G[g].name, srv->set.banks[i].name, v);
        }
    }
    free(r);
    free(has);
    free(alarm);
}

enum MHD_Result serve_get_metrics(server *srv, struct MHD_Connection *conn)
{
    text_buf t = {0};
    pthread_mutex_lock(&srv->lock);
    tb_printf(&t, "# HELP patchead_http_requests_total HTTP requests answered, by status code.\n"
                  "# TYPE patchead_http_requests_total counter\n");
    for (size_t i = 0; i < sizeof srv->by_status / sizeof *srv->by_status && srv->by_status[i].code;
         i++)
        tb_printf(&t, "patchead_http_requests_total{code=\"%d\"} %lu\n", srv->by_status[i].code,
                  srv->by_status[i].count);
    tb_printf(&t, "# HELP patchead_http_request_duration_seconds Time from request headers to the "
                  "answer queued.\n# TYPE patchead_http_request_duration_seconds histogram\n");
    unsigned long cum = 0;
    for (int b = 0; b < NUM_BUCKETS; b++) {
        cum += srv->hist[b];
        tb_printf(&t, "patchead_http_request_duration_seconds_bucket{le=\"%g\"} %lu\n", BUCKETS[b],
                  cum);
    }
    tb_printf(&t, "patchead_http_request_duration_seconds_bucket{le=\"+Inf\"} %lu\n",
              srv->hist_count);
    tb_printf(&t, "patchead_http_request_duration_seconds_sum %.6f\n", srv->hist_sum);
    tb_printf(&t, "patchead_http_request_duration_seconds_count %lu\n", srv->hist_count);
    tb_printf(&t, "# HELP patchead_images_scored_total Images scored, by bank.\n"
                  "# TYPE patchead_images_scored_total counter\n");
    for (int i = 0; i < srv->set.num_banks; i++)
        tb_printf(&t, "patchead_images_scored_total{bank=\"%s\"} %lu\n", srv->set.banks[i].name,
                  srv->scored[i]);
    tb_printf(&t,
              "# HELP patchead_requests_in_flight Requests received and not yet answered.\n"
              "# TYPE patchead_requests_in_flight gauge\npatchead_requests_in_flight %d\n",
              srv->active);
    tb_printf(&t,
              "# HELP patchead_predict_queue_depth Predict jobs waiting for a worker.\n"
              "# TYPE patchead_predict_queue_depth gauge\npatchead_predict_queue_depth %d\n",
              srv->queued);
    tb_printf(&t,
              "# HELP patchead_predict_running Predict jobs a worker has taken and not yet "
              "answered (decoding / scoring).\n"
              "# TYPE patchead_predict_running gauge\npatchead_predict_running %d\n",
              srv->running);
    tb_printf(&t,
              "# HELP patchead_predict_admitted Predict requests admitted (of --queue).\n"
              "# TYPE patchead_predict_admitted gauge\npatchead_predict_admitted %d\n",
              srv->admitted);
    tb_printf(
        &t,
        "# HELP patchead_predict_abandoned_total Predict jobs dropped unscored: the "
        "client closed the connection before its turn.\n"
        "# TYPE patchead_predict_abandoned_total counter\npatchead_predict_abandoned_total %lu\n",
        srv->abandoned);
    tb_printf(&t,
              "# HELP patchead_connections_total TCP connections accepted.\n"
              "# TYPE patchead_connections_total counter\npatchead_connections_total %lu\n",
              srv->connections);
    pthread_mutex_unlock(&srv->lock);
    drift_metrics(srv, &t);
    tb_printf(&t,
              "# HELP patchead_process_resident_memory_bytes Resident set size.\n"
              "# TYPE patchead_process_resident_memory_bytes gauge\n"
              "patchead_process_resident_memory_bytes %lu\n",
              rss_bytes());
    if (!t.data) return MHD_NO;
    return serve_send_buffer(srv, conn, 200, "text/plain; version=0.0.4; charset=utf-8", t.data,
                             t.len, 1);
}
