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
    tb_printf(&t,
              "# HELP patchead_process_resident_memory_bytes Resident set size.\n"
              "# TYPE patchead_process_resident_memory_bytes gauge\n"
              "patchead_process_resident_memory_bytes %lu\n",
              rss_bytes());
    if (!t.data) return MHD_NO;
    return serve_send_buffer(srv, conn, 200, "text/plain; version=0.0.4; charset=utf-8", t.data,
                             t.len, 1);
}
