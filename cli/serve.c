/* serve.c — `patchead serve`: an HTTP inspection service (libmicrohttpd).
 *
 * Threads and flow of one POST /v1/banks/{name}/predict:
 *   MHD's one I/O thread (epoll) reads headers -> admission: at most --queue predict
 *   requests may be between their first byte of body and their answer (else 503 +
 *   Retry-After), which bounds the memory held in bodies to queue x --max-body ->
 *   body collected (raw image bytes, or the file part of multipart/form-data) ->
 *   connection suspended, job queued -> one of --workers inference threads decodes,
 *   scores (live_score: one inference at a time per backbone) and renders the answer
 *   -> connection resumed -> MHD sends it. The I/O thread never runs inference, so
 *   /healthz, /metrics and the page stay answerable while images are scored.
 *
 * Shutdown (SIGTERM / SIGINT): stop listening (MHD_quiesce_daemon), let every request
 * already received finish and be answered (bounded by --drain seconds), then stop the
 * I/O thread and the workers and exit 0.
 *
 * Errors are JSON {"error": "...", "status": N}. Nothing a client sends is trusted for
 * sizes: Content-Length is checked before any body is read, chunked bodies are cut at
 * --max-body, decoded pixels are bounded by the library's image limits. */
#include "cli.h"
#include "live.h"
#include "options.h"
#include "serve.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *USAGE =
    "usage: patchead serve --bank [NAME=]BANK.pead [--bank ...] [options]\n\n"
    "Serves the banks over HTTP: the model of each bank is loaded once and shared;\n"
    "images are scored by a bounded pool of worker threads. A web page for operators is\n"
    "at /. Stops cleanly on SIGTERM or SIGINT (finishes requests in flight, exit 0).\n\n"
    "endpoints:\n"
    "  POST /v1/banks/NAME/predict   body: one PNG/JPEG/BMP image (raw, or the file of a\n"
    "                                multipart/form-data form). JSON answer: score, threshold,\n"
    "                                is_anomalous, backbone, bank hash, timings.\n"
    "       ?threshold=T             decide with T instead of the bank's threshold\n"
    "       ?heatmap=png             answer the heatmap overlay as image/png instead; the\n"
    "                                JSON is then in the X-Patchead-Result header\n"
    "  GET  /v1/banks                banks: name, backbone, size, parameters, threshold\n"
    "  GET  /healthz                 200 {\"status\": \"ok\"} (503 while shutting down)\n"
    "  GET  /metrics                 Prometheus text: requests by status, latency\n"
    "                                histogram, images scored, in flight, queue, RSS\n"
    "  GET  /                        the web page\n\n"
    "example:\n"
    "  patchead serve --bank tire=tire.pead &\n"
    "  curl --data-binary @image.jpg -H 'Content-Type: image/jpeg' \\\n"
    "       http://127.0.0.1:8080/v1/banks/tire/predict\n";

/* ------------------------------------------------------------------ state */

typedef struct job job;

typedef struct {
    live_set set;
    struct MHD_Daemon *daemon;
    int workers, queue_limit, timeout_s;
    size_t max_body;

    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t wake;  /* workers: a job was queued or stopping */
    pthread_cond_t idle;  /* main: a request finished (drain) */
    job *head, *tail;     /* jobs waiting for a worker */
    int queued;           /* waiting in that list */
    int running;          /* being decoded / scored by a worker */
    int admitted;         /* predict requests admitted (receiving .. answered) */
    int active;           /* all requests between their first call and completion */
    int stopping;         /* workers exit */
    atomic_int draining;  /* SIGTERM seen: new requests get 503 + Connection: close */

    /* metrics */
    struct {
        int code;
        unsigned long count;
    } by_status[24];
    unsigned long hist[16], hist_count;
    double hist_sum;
    unsigned long *scored;   /* (num_banks) images scored */
    unsigned long abandoned; /* predict jobs dropped: the client had gone before its turn */
    unsigned long connections;
    double started_ms;
} server;

/* Latency histogram bucket bounds (seconds); one more bucket is +Inf. */
static const double BUCKETS[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define NUM_BUCKETS (int)(sizeof BUCKETS / sizeof *BUCKETS)

enum { REQ_PLAIN, REQ_PREDICT };
enum { JOB_RECEIVING, JOB_QUEUED, JOB_DONE };

/* One predict request, from its headers to its answer. */
struct job {
    server *srv;
    struct MHD_Connection *conn;
    live_bank *bank;
    int state;
    uint8_t *body;
    size_t len, cap;
    struct MHD_PostProcessor *post; /* multipart/form-data */
    int have_file;                  /* multipart: the file field was seen (and ended) */
    float threshold;                /* to decide with */
    int threshold_given;
    int want_png;
    double t_first, t_queued;
    /* the answer, set by the worker */
    unsigned status;
    char *answer;
    size_t answer_len;
    const char *answer_type;
    char *result_header; /* compact JSON for X-Patchead-Result (heatmap=png) */
    char score_text[32], threshold_text[32];
    const char *anomalous_text;
    job *next;
};

/* Per-request context (MHD's con_cls). */
typedef struct {
    int kind;
    double t_first;
    job *job;
} request;

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

static void count_status(server *srv, unsigned code, double seconds)
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

/* ------------------------------------------------------------------ responses */

static enum MHD_Result send_buffer(server *srv, struct MHD_Connection *conn, unsigned status,
                                   const char *type, void *data, size_t len, int must_free)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        len, data, must_free ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!r) {
        if (must_free) free(data);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    if (status == 503) MHD_add_response_header(r, "Retry-After", "1");
    if (atomic_load(&srv->draining)) MHD_add_response_header(r, "Connection", "close");
    enum MHD_Result ok = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ok;
}

static char *json_error_text(unsigned status, const char *msg)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "error", msg);
    cJSON_AddNumberToObject(o, "status", status);
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return text;
}

static enum MHD_Result send_error(server *srv, struct MHD_Connection *conn, unsigned status,
                                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static enum MHD_Result send_error(server *srv, struct MHD_Connection *conn, unsigned status,
                                  const char *fmt, ...)
{
    char msg[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char *text = json_error_text(status, msg);
    if (!text) return MHD_NO;
    return send_buffer(srv, conn, status, "application/json", text, strlen(text), 1);
}

static enum MHD_Result send_json(server *srv, struct MHD_Connection *conn, unsigned status,
                                 cJSON *o)
{
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!text) return MHD_NO;
    return send_buffer(srv, conn, status, "application/json", text, strlen(text), 1);
}

static enum MHD_Result send_method_not_allowed(server *srv, struct MHD_Connection *conn,
                                               const char *allow, const char *method)
{
    char *text = json_error_text(405, "method not allowed here");
    if (!text) return MHD_NO;
    (void)method;
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "application/json");
    MHD_add_response_header(r, "Allow", allow);
    if (atomic_load(&srv->draining)) MHD_add_response_header(r, "Connection", "close");
    enum MHD_Result ok = MHD_queue_response(conn, 405, r);
    MHD_destroy_response(r);
    return ok;
}

/* ------------------------------------------------------------------ GET endpoints */

static void add_bank_json(cJSON *arr, const live_bank *b)
{
    const pe_detect_params *p = pe_bank_params(b->bank);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", b->name);
    cJSON *bb = cJSON_AddObjectToObject(o, "backbone");
    cJSON_AddStringToObject(bb, "name", b->model->info.name);
    cJSON_AddStringToObject(bb, "family", b->model->info.family);
    cJSON_AddStringToObject(bb, "weights_hash", b->model->info.weights_hash);
    cJSON_AddNumberToObject(o, "size", p->size);
    cJSON *params = cJSON_AddObjectToObject(o, "parameters");
    char rule[96];
    detect_describe(&p->score, rule, sizeof rule);
    cJSON_AddStringToObject(params, "scoring", rule);
    cJSON_AddStringToObject(params, "order",
                            p->score.order == PE_ORDER_LOWEST ? "lowest" : "highest");
    if (p->score.k_count > 0) cJSON_AddNumberToObject(params, "k_count", p->score.k_count);
    else cJSON_AddNumberToObject(params, "k_fraction", p->score.k_fraction);
    if (p->score.top_count > 0) cJSON_AddNumberToObject(params, "top_count", p->score.top_count);
    else cJSON_AddNumberToObject(params, "top_fraction", p->score.top_fraction);
    cJSON_AddNumberToObject(params, "layer", p->layer);
    cJSON_AddBoolToObject(params, "align", p->align);
    cJSON_AddBoolToObject(params, "mask", p->mask);
    cJSON_AddNumberToObject(params, "sigma", p->map_sigma);
    if (isfinite(b->threshold)) cJSON_AddNumberToObject(o, "threshold", b->threshold);
    else cJSON_AddNullToObject(o, "threshold");
    cJSON_AddNumberToObject(o, "references", pe_bank_num_refs(b->bank));
    cJSON_AddStringToObject(o, "hash", pe_bank_hash(b->bank));
    cJSON_AddItemToArray(arr, o);
}

static enum MHD_Result get_banks(server *srv, struct MHD_Connection *conn)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(o, "banks");
    for (int i = 0; i < srv->set.num_banks; i++) add_bank_json(arr, &srv->set.banks[i]);
    return send_json(srv, conn, 200, o);
}

static enum MHD_Result get_health(server *srv, struct MHD_Connection *conn)
{
    int draining = atomic_load(&srv->draining);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", draining ? "draining" : "ok");
    cJSON_AddNumberToObject(o, "banks", srv->set.num_banks);
    cJSON_AddNumberToObject(o, "uptime_s", (live_now_ms() - srv->started_ms) / 1000);
    return send_json(srv, conn, draining ? 503 : 200, o);
}

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

static enum MHD_Result get_metrics(server *srv, struct MHD_Connection *conn)
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
              "# HELP patchead_predict_running Predict jobs a worker is decoding / scoring now.\n"
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
    return send_buffer(srv, conn, 200, "text/plain; version=0.0.4; charset=utf-8", t.data, t.len,
                       1);
}

/* ------------------------------------------------------------------ predict: worker */

static void set_answer_error(job *j, unsigned status, const char *msg)
{
    j->status = status;
    j->answer = json_error_text(status, msg);
    j->answer_len = j->answer ? strlen(j->answer) : 0;
    j->answer_type = "application/json";
}

/* HTTP status of a library failure on client data. */
static unsigned status_of(pe_status s)
{
    switch (s) {
    case PE_ERR_UNSUPPORTED: return 415; /* a GIF/TIFF/WebP: not a format we take */
    case PE_ERR_LIMIT: return 413;       /* too many pixels */
    case PE_ERR_FORMAT:
    case PE_ERR_SHAPE:
    case PE_ERR_ARG: return 400; /* not an image / corrupt */
    default: return 500;
    }
}

static void run_job(server *srv, job *j)
{
    double t_start = live_now_ms();
    live_bank *b = j->bank;
    pe_image img = {0};
    pe_result res = {0};
    live_timings tm;
    pe_status s = live_score(b, j->body, j->len, "request body", &img, &res, &tm);
    free(j->body); /* the encoded image is no longer needed */
    j->body = NULL;
    if (s) {
        set_answer_error(j, status_of(s), pe_last_error());
        return;
    }
    double heat_ms = 0;
    uint8_t *png = NULL;
    size_t png_len = 0;
    if (j->want_png) {
        double h0 = live_now_ms();
        float vmin, vmax;
        live_heatmap_range(&res, b->threshold, &vmin, &vmax);
        float *map = malloc(sizeof(float) * (size_t)img.width * img.height);
        pe_image heat = {0};
        s = map ? pe_result_map(&res, img.width, img.height, pe_bank_params(b->bank)->map_sigma,
                                map)
                : PE_ERR_NOMEM;
        if (!s) s = pe_heatmap_render(&img, map, vmin, vmax, &heat);
        if (!s) s = pe_image_encode_png(&heat, &png, &png_len);
        pe_image_free(&heat);
        free(map);
        heat_ms = live_now_ms() - h0;
        if (s) {
            set_answer_error(j, 500, pe_last_error());
            pe_image_free(&img);
            pe_result_free(&res);
            return;
        }
    }
    float score = res.image_score;
    int decided = isfinite(j->threshold);
    int anomalous = decided && score > j->threshold;

    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "bank", b->name);
    cJSON_AddNumberToObject(o, "score", score);
    if (decided) {
        cJSON_AddNumberToObject(o, "threshold", j->threshold);
        cJSON_AddBoolToObject(o, "is_anomalous", anomalous);
    } else {
        cJSON_AddNullToObject(o, "threshold");
        cJSON_AddNullToObject(o, "is_anomalous");
    }
    cJSON_AddStringToObject(o, "threshold_source", j->threshold_given ? "request" : "bank");
    cJSON *bb = cJSON_AddObjectToObject(o, "backbone");
    cJSON_AddStringToObject(bb, "name", b->model->info.name);
    cJSON_AddStringToObject(bb, "weights_hash", b->model->info.weights_hash);
    cJSON_AddStringToObject(o, "bank_hash", pe_bank_hash(b->bank));
    cJSON *im = cJSON_AddObjectToObject(o, "image");
    cJSON_AddNumberToObject(im, "width", img.width);
    cJSON_AddNumberToObject(im, "height", img.height);
    cJSON *grid = cJSON_AddArrayToObject(o, "grid");
    cJSON_AddItemToArray(grid, cJSON_CreateNumber(res.grid_h));
    cJSON_AddItemToArray(grid, cJSON_CreateNumber(res.grid_w));
    cJSON *t = cJSON_AddObjectToObject(o, "timings_ms");
    cJSON_AddNumberToObject(t, "queue", round((t_start - j->t_queued) * 1000) / 1000);
    cJSON_AddNumberToObject(t, "decode", round(tm.decode_ms * 1000) / 1000);
    cJSON_AddNumberToObject(t, "features", round(tm.features_ms * 1000) / 1000);
    cJSON_AddNumberToObject(t, "scoring", round(tm.scoring_ms * 1000) / 1000);
    if (j->want_png) cJSON_AddNumberToObject(t, "heatmap", round(heat_ms * 1000) / 1000);
    cJSON_AddNumberToObject(t, "total", round((live_now_ms() - j->t_first) * 1000) / 1000);
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    pe_image_free(&img);
    pe_result_free(&res);

    pthread_mutex_lock(&srv->lock);
    srv->scored[b - srv->set.banks]++;
    pthread_mutex_unlock(&srv->lock);

    if (!text) {
        free(png);
        set_answer_error(j, 500, "out of memory");
        return;
    }
    j->status = 200;
    snprintf(j->score_text, sizeof j->score_text, "%.7g", score);
    snprintf(j->threshold_text, sizeof j->threshold_text, "%.7g", j->threshold);
    j->anomalous_text = decided ? (anomalous ? "true" : "false") : "unknown";
    if (j->want_png) {
        j->result_header = text;
        j->answer = (char *)png;
        j->answer_len = png_len;
        j->answer_type = "image/png";
    } else {
        j->answer = text;
        j->answer_len = strlen(text);
        j->answer_type = "application/json";
    }
}

/* 1 if the client of a suspended connection has closed it (EOF or error on a peek; a
 * pipelined next request is data, not a close). Checked before a job's inference, so a
 * client that gave up (timeout, Ctrl-C) does not cost an inference and a queue slot. */
static int client_gone(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return 0;
    char c;
    ssize_t r = recv(ci->connect_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static void *worker_main(void *arg)
{
    server *srv = arg;
    pe_set_threads(pe_get_threads()); /* OpenMP's thread count is per calling thread */
    pthread_mutex_lock(&srv->lock);
    for (;;) {
        while (!srv->head && !srv->stopping) pthread_cond_wait(&srv->wake, &srv->lock);
        if (!srv->head) break; /* stopping and nothing left */
        job *j = srv->head;
        srv->head = j->next;
        if (!srv->head) srv->tail = NULL;
        srv->queued--;
        pthread_mutex_unlock(&srv->lock);
        if (client_gone(j->conn)) {
            set_answer_error(j, 400, "client closed the connection before its turn");
            pthread_mutex_lock(&srv->lock);
            srv->abandoned++;
            pthread_mutex_unlock(&srv->lock);
        } else {
            pthread_mutex_lock(&srv->lock);
            srv->running++;
            pthread_mutex_unlock(&srv->lock);
            run_job(srv, j);
            pthread_mutex_lock(&srv->lock);
            srv->running--;
            pthread_mutex_unlock(&srv->lock);
        }
        struct MHD_Connection *conn = j->conn;
        pthread_mutex_lock(&srv->lock);
        j->state = JOB_DONE;
        pthread_mutex_unlock(&srv->lock);
        /* outside our lock (MHD takes its own); MHD calls the handler again: it answers */
        MHD_resume_connection(conn);
        pthread_mutex_lock(&srv->lock);
    }
    pthread_mutex_unlock(&srv->lock);
    return NULL;
}

/* ------------------------------------------------------------------ predict: I/O side */

static void free_job(job *j)
{
    if (!j) return;
    if (j->post) MHD_destroy_post_processor(j->post);
    free(j->body);
    free(j->answer);
    free(j->result_header);
    free(j);
}

static int append_body(job *j, const char *data, size_t size)
{
    if (size > j->srv->max_body - j->len) return -1;
    if (j->len + size > j->cap) {
        size_t cap = j->cap ? j->cap : 65536;
        while (cap < j->len + size) cap *= 2;
        if (cap > j->srv->max_body) cap = j->srv->max_body;
        uint8_t *grown = realloc(j->body, cap);
        if (!grown) return -1;
        j->body = grown;
        j->cap = cap;
    }
    memcpy(j->body + j->len, data, size);
    j->len += size;
    return 0;
}

/* multipart/form-data: keep the first part that carries a file name (or is named
 * "image"/"file"); ignore the other fields. */
static enum MHD_Result on_form_field(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *filename, const char *content_type,
                                     const char *transfer_encoding, const char *data, uint64_t off,
                                     size_t size)
{
    (void)kind, (void)content_type, (void)transfer_encoding;
    job *j = cls;
    int is_file = filename || (key && (!strcmp(key, "image") || !strcmp(key, "file")));
    if (!is_file) return MHD_YES;
    if (j->have_file == 2) return MHD_YES; /* after the first file: ignored */
    if (off == 0 && size && j->len) {      /* a new part begins: a second file */
        j->have_file = 2;
        return MHD_YES;
    }
    j->have_file = 1;
    if (size && append_body(j, data, size)) return MHD_NO; /* too large */
    return MHD_YES;
}

/* The request line is "/v1/banks/NAME/predict": NAME in *name (valid or not). */
static int parse_predict_path(const char *url, char *name, size_t cap)
{
    const char *prefix = "/v1/banks/";
    size_t pl = strlen(prefix);
    if (strncmp(url, prefix, pl)) return 0;
    const char *start = url + pl, *slash = strchr(start, '/');
    if (!slash || strcmp(slash, "/predict")) return 0;
    size_t n = (size_t)(slash - start);
    snprintf(name, cap, "%.*s", (int)(n < cap ? n : cap - 1), start);
    return n < cap ? 1 : -1; /* -1: too long to be a name */
}

/* A client's text for an error message: printable ASCII only, at most cap - 1 bytes. */
static const char *printable(const char *text, char *buf, size_t cap)
{
    size_t n = 0;
    for (; text && text[n] && n + 1 < cap; n++)
        buf[n] = text[n] >= 0x20 && text[n] < 0x7f ? text[n] : '?';
    buf[n] = 0;
    return buf;
}

static int content_type_ok(const char *ct, int *multipart)
{
    *multipart = 0;
    if (!ct || !*ct) return 1;
    if (!strncasecmp(ct, "multipart/form-data", 19)) {
        *multipart = 1;
        return 1;
    }
    if (!strncasecmp(ct, "image/", 6) || !strncasecmp(ct, "application/octet-stream", 24)) return 1;
    return 0;
}

static enum MHD_Result predict_first_call(server *srv, struct MHD_Connection *conn, request *req,
                                          const char *name)
{
    if (atomic_load(&srv->draining)) return send_error(srv, conn, 503, "shutting down");
    live_bank *bank = live_find(&srv->set, name);
    if (!bank)
        return send_error(srv, conn, 404, "unknown bank '%s' (GET /v1/banks lists them)", name);
    const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
    int multipart;
    char shown[64];
    if (!content_type_ok(ct, &multipart))
        return send_error(srv, conn, 415,
                          "Content-Type %s: send an image (image/png, image/jpeg, image/bmp), "
                          "application/octet-stream or multipart/form-data (curl --data-binary "
                          "needs -H 'Content-Type: image/jpeg')",
                          printable(ct, shown, sizeof shown));
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
    if (cl) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (errno || end == cl || *end) return send_error(srv, conn, 400, "bad Content-Length");
        if (n > srv->max_body)
            return send_error(srv, conn, 413, "body of %llu bytes exceeds the limit of %zu bytes",
                              n, srv->max_body);
        if (n == 0) return send_error(srv, conn, 400, "empty body: send one image");
    }
    /* ?threshold=T and ?heatmap=png|json */
    float threshold = bank->threshold;
    int threshold_given = 0, want_png = 0;
    const char *tq = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "threshold");
    if (tq) {
        char *end;
        double v = strtod(tq, &end);
        if (end == tq || *end || !isfinite(v) || fabs(v) > 1e30)
            return send_error(srv, conn, 400, "threshold must be a finite number");
        threshold = (float)v;
        threshold_given = 1;
    }
    const char *hq = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "heatmap");
    if (hq) {
        if (!strcmp(hq, "png")) want_png = 1;
        else if (strcmp(hq, "none") && strcmp(hq, "json") && *hq)
            return send_error(srv, conn, 400, "heatmap must be png or none");
    }
    /* admission: bounded bodies in memory, bounded waiting */
    pthread_mutex_lock(&srv->lock);
    int full = srv->admitted >= srv->queue_limit;
    if (!full) srv->admitted++;
    pthread_mutex_unlock(&srv->lock);
    if (full)
        return send_error(srv, conn, 503, "busy: %d predict requests in progress; retry",
                          srv->queue_limit);
    job *j = calloc(1, sizeof *j);
    if (!j) {
        pthread_mutex_lock(&srv->lock);
        srv->admitted--;
        pthread_mutex_unlock(&srv->lock);
        return send_error(srv, conn, 500, "out of memory");
    }
    j->srv = srv;
    j->conn = conn;
    j->bank = bank;
    j->threshold = threshold;
    j->threshold_given = threshold_given;
    j->want_png = want_png;
    j->t_first = req->t_first;
    req->kind = REQ_PREDICT;
    req->job = j; /* from here on the completion callback releases the admission */
    if (multipart) {
        j->post = MHD_create_post_processor(conn, 64 * 1024, on_form_field, j);
        if (!j->post) return send_error(srv, conn, 400, "malformed multipart/form-data header");
    }
    return MHD_YES;
}

static enum MHD_Result predict_body(server *srv, struct MHD_Connection *conn, request *req,
                                    const char *data, size_t *size)
{
    job *j = req->job;
    if (j->state == JOB_DONE) {
        enum MHD_Result ok;
        if (j->status == 200 && j->want_png) {
            struct MHD_Response *r =
                MHD_create_response_from_buffer(j->answer_len, j->answer, MHD_RESPMEM_MUST_FREE);
            if (!r) return MHD_NO;
            j->answer = NULL;
            MHD_add_response_header(r, "Content-Type", "image/png");
            MHD_add_response_header(r, "Cache-Control", "no-store");
            MHD_add_response_header(r, "X-Patchead-Score", j->score_text);
            MHD_add_response_header(r, "X-Patchead-Threshold", j->threshold_text);
            MHD_add_response_header(r, "X-Patchead-Anomalous", j->anomalous_text);
            MHD_add_response_header(r, "X-Patchead-Result", j->result_header);
            if (atomic_load(&srv->draining)) MHD_add_response_header(r, "Connection", "close");
            ok = MHD_queue_response(conn, 200, r);
            MHD_destroy_response(r);
        } else {
            ok = send_buffer(srv, conn, j->status, j->answer_type, j->answer, j->answer_len, 1);
            j->answer = NULL;
        }
        return ok;
    }
    if (j->state == JOB_QUEUED) return MHD_YES; /* spurious call while suspended */
    if (*size) {
        /* A body that trickles in past the deadline is cut (slow-client defence). */
        if (live_now_ms() - j->t_first > 6000.0 * srv->timeout_s) return MHD_NO;
        int bad = j->post ? MHD_post_process(j->post, data, *size) != MHD_YES
                          : append_body(j, data, *size) != 0;
        *size = 0;
        /* Over the limit (only possible without a Content-Length) or a malformed form: MHD
         * cannot answer in the middle of a body, so the connection is closed. */
        return bad ? MHD_NO : MHD_YES;
    }
    /* whole body received */
    if (j->post && j->have_file == 0)
        return send_error(srv, conn, 400, "multipart/form-data without a file field");
    if (j->len == 0) return send_error(srv, conn, 400, "empty body: send one image");
    MHD_suspend_connection(conn); /* before a worker can resume it */
    pthread_mutex_lock(&srv->lock);
    j->state = JOB_QUEUED;
    j->t_queued = live_now_ms();
    if (srv->tail) srv->tail->next = j;
    else srv->head = j;
    srv->tail = j;
    srv->queued++;
    pthread_cond_signal(&srv->wake);
    pthread_mutex_unlock(&srv->lock);
    return MHD_YES;
}

/* ------------------------------------------------------------------ routing */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *size, void **con_cls)
{
    (void)version;
    server *srv = cls;
    request *req = *con_cls;
    if (!req) {
        if (!(req = calloc(1, sizeof *req))) return MHD_NO;
        req->t_first = live_now_ms();
        *con_cls = req;
        pthread_mutex_lock(&srv->lock);
        srv->active++;
        pthread_mutex_unlock(&srv->lock);
    } else if (req->kind == REQ_PREDICT) {
        return predict_body(srv, conn, req, data, size);
    } else {
        /* a body sent to a GET endpoint (answered already on the first call) */
        *size = 0;
        return MHD_YES;
    }
    int is_get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    int is_post = !strcmp(method, "POST");
    char name[LIVE_NAME_MAX + 2];
    int predict = parse_predict_path(url, name, sizeof name);
    if (predict) {
        if (!is_post) return send_method_not_allowed(srv, conn, "POST", method);
        if (predict < 0 || !live_valid_name(name))
            return send_error(srv, conn, 400,
                              "invalid bank name: use 1-%d of A-Z a-z 0-9 . _ - (not . or ..)",
                              LIVE_NAME_MAX);
        return predict_first_call(srv, conn, req, name);
    }
    const char *get_only[] = {"/", "/index.html", "/healthz", "/metrics", "/v1/banks"};
    for (size_t i = 0; i < sizeof get_only / sizeof *get_only; i++) {
        if (strcmp(url, get_only[i])) continue;
        if (!is_get) return send_method_not_allowed(srv, conn, "GET, HEAD", method);
        if (i <= 1)
            return send_buffer(srv, conn, 200, "text/html; charset=utf-8", (void *)serve_page_html,
                               serve_page_html_len, 0);
        if (i == 2) return get_health(srv, conn);
        if (i == 3) return get_metrics(srv, conn);
        return get_banks(srv, conn);
    }
    if (!strncmp(url, "/v1/banks/", 10))
        return send_error(srv, conn, 404, "no such endpoint (POST /v1/banks/NAME/predict)");
    return send_error(srv, conn, 404, "no such endpoint");
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode why)
{
    (void)conn;
    server *srv = cls;
    request *req = *con_cls;
    if (!req) return;
    *con_cls = NULL;
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_HTTP_STATUS);
    unsigned code = info && why == MHD_REQUEST_TERMINATED_COMPLETED_OK ? info->http_status : 0;
    /* 0 = closed before an answer (client gone, timeout, body too large) */
    count_status(srv, code, (live_now_ms() - req->t_first) / 1000);
    pthread_mutex_lock(&srv->lock);
    if (req->job) srv->admitted--;
    srv->active--;
    pthread_cond_broadcast(&srv->idle);
    pthread_mutex_unlock(&srv->lock);
    /* A job is never freed while queued or running: MHD only completes a request that
     * is not suspended, and the worker resumes it only after it is done with it. */
    free_job(req->job);
    free(req);
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_ctx,
                          enum MHD_ConnectionNotificationCode code)
{
    (void)conn, (void)socket_ctx;
    server *srv = cls;
    if (code != MHD_CONNECTION_NOTIFY_STARTED) return;
    pthread_mutex_lock(&srv->lock);
    srv->connections++;
    pthread_mutex_unlock(&srv->lock);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    if (cli_quiet) return;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = 0;
    fprintf(stderr, "patchead: serve: %s\n", msg);
}

/* ------------------------------------------------------------------ command */

int cmd_serve(int argc, char **argv)
{
    cli_opts o;
    cli_opts_init(&o);
    int first, r = cli_parse_options(CMD_SERVE, USAGE, argc, argv, &o, &first);
    if (r) {
        cli_opts_free(&o);
        return r > 0 ? EXIT_OK : EXIT_USAGE;
    }
    if (first < argc || o.banks.n == 0) {
        cli_error(first < argc ? "serve: unexpected argument '%s'"
                               : "serve needs at least one --bank%s",
                  first < argc ? argv[first] : "");
        cli_opts_free(&o);
        return EXIT_USAGE;
    }
    /* the bank specs outlive the option struct: take them over */
    char **specs = o.banks.items;
    int num_specs = o.banks.n;
    o.banks.items = NULL;
    o.banks.n = 0;
    const int port = o.port, workers = o.workers, queue = o.queue, max_body_mb = o.max_body_mb;
    const int max_conn = o.max_connections, timeout_s = o.timeout_s, drain_s = o.drain_s;
    const int threads = o.threads;
    const char *host = o.host, *model = o.model;
    int rc = EXIT_USAGE;
    struct sockaddr_in addr4 = {0};
    struct sockaddr_in6 addr6 = {0};
    int ipv6 = 0;
    if (inet_pton(AF_INET, host, &addr4.sin_addr) == 1) {
        addr4.sin_family = AF_INET;
        addr4.sin_port = htons((uint16_t)port);
    } else if (inet_pton(AF_INET6, host, &addr6.sin6_addr) == 1) {
        addr6.sin6_family = AF_INET6;
        addr6.sin6_port = htons((uint16_t)port);
        ipv6 = 1;
    } else {
        cli_error("--host expects a numeric IPv4 or IPv6 address, got '%s'", host);
        cli_free_paths(specs, num_specs);
        return EXIT_USAGE;
    }
    if (threads) pe_set_threads(threads);
    /* SIGTERM / SIGINT: read from live_stop_fd below. SIGPIPE: a client that hung up. */
    int stop_fd = live_stop_fd();
    if (stop_fd < 0) {
        cli_free_paths(specs, num_specs);
        return EXIT_ERROR;
    }
    signal(SIGPIPE, SIG_IGN);

    server *srv = calloc(1, sizeof *srv);
    if (!srv) return cli_free_paths(specs, num_specs), cli_error("out of memory");
    rc = EXIT_ERROR;
    if (live_open(&srv->set, specs, num_specs, model, threads)) goto out_free;
    srv->scored = calloc((size_t)srv->set.num_banks, sizeof *srv->scored);
    if (!srv->scored) {
        cli_error("out of memory");
        goto out_close;
    }
    srv->workers = workers;
    srv->queue_limit = queue;
    srv->timeout_s = timeout_s;
    srv->max_body = (size_t)max_body_mb << 20;
    srv->started_ms = live_now_ms();
    pthread_mutex_init(&srv->lock, NULL);
    pthread_cond_init(&srv->wake, NULL);
    pthread_cond_init(&srv->idle, NULL);

    pthread_t *tids = calloc((size_t)workers, sizeof *tids);
    int started = 0;
    for (; tids && started < workers; started++)
        if (pthread_create(&tids[started], NULL, worker_main, srv)) break;
    if (started < workers) {
        cli_error("serve: cannot start %d worker threads", workers);
        goto out_workers;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG | (ipv6 ? MHD_USE_IPv6 : 0);
    srv->daemon = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, on_request, srv, MHD_OPTION_EXTERNAL_LOGGER, mhd_log,
        NULL, MHD_OPTION_SOCK_ADDR, ipv6 ? (struct sockaddr *)&addr6 : (struct sockaddr *)&addr4,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)max_conn, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)timeout_s, MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, srv, MHD_OPTION_END);
    if (!srv->daemon) {
        cli_error("serve: cannot listen on %s port %d (%s)", host, port,
                  errno ? strerror(errno) : "address in use or not available");
        goto out_workers;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    int bound = di ? di->port : port;
    if (!cli_quiet) {
        fprintf(stderr, "patchead: serving %d bank%s on http://%s%s%s:%d/ (", srv->set.num_banks,
                srv->set.num_banks == 1 ? "" : "s", ipv6 ? "[" : "", host, ipv6 ? "]" : "", bound);
        for (int i = 0; i < srv->set.num_banks; i++)
            fprintf(stderr, "%s%s", i ? ", " : "", srv->set.banks[i].name);
        fprintf(stderr, "); SIGTERM or Ctrl-C stops\n");
    }
    /* The line scripts wait for, on stdout: the address actually bound. */
    printf("listening http://%s%s%s:%d/\n", ipv6 ? "[" : "", host, ipv6 ? "]" : "", bound);
    fflush(stdout);

    unsigned char sig = 0;
    struct pollfd pfd = {stop_fd, POLLIN, 0};
    while (poll(&pfd, 1, -1) < 0 || read(stop_fd, &sig, 1) != 1) {
    }
    /* Drain: stop accepting, answer what was received, then stop. */
    atomic_store(&srv->draining, 1);
    if (!cli_quiet)
        fprintf(stderr, "patchead: %s: draining requests in flight\n", strsignal((int)sig));
    MHD_socket listener = MHD_quiesce_daemon(srv->daemon);
    if (listener != MHD_INVALID_SOCKET) close(listener);
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += drain_s;
    pthread_mutex_lock(&srv->lock);
    int left = 0;
    while (srv->active > 0 &&
           pthread_cond_timedwait(&srv->idle, &srv->lock, &deadline) != ETIMEDOUT) {
    }
    left = srv->active;
    pthread_mutex_unlock(&srv->lock);
    if (left && !cli_quiet)
        fprintf(stderr, "patchead: %d request%s still open after %d s; closing them\n", left,
                left == 1 ? "" : "s", drain_s);
    rc = EXIT_OK;

out_workers:
    pthread_mutex_lock(&srv->lock);
    srv->stopping = 1;
    pthread_cond_broadcast(&srv->wake);
    pthread_mutex_unlock(&srv->lock);
    for (int i = 0; i < started; i++) pthread_join(tids[i], NULL);
    /* workers are gone: now MHD can close whatever is left (resumed or not) */
    if (srv->daemon) MHD_stop_daemon(srv->daemon);
    free(tids);
    pthread_mutex_destroy(&srv->lock);
    pthread_cond_destroy(&srv->wake);
    pthread_cond_destroy(&srv->idle);
    if (rc == EXIT_OK && !cli_quiet) fprintf(stderr, "patchead: stopped\n");
out_close:
    free(srv->scored);
    live_close(&srv->set);
out_free:
    free(srv);
    cli_free_paths(specs, num_specs);
    return rc;
}
