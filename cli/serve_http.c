/* serve_http.c — the HTTP side of `patchead serve` (libmicrohttpd): the daemon and its
 * callbacks, run on MHD's one I/O thread. Routing; GET /, /healthz, /v1/banks; for
 * POST /v1/banks/NAME/predict the checks on headers and query (Content-Type,
 * Content-Length against --max-body, ?threshold, ?heatmap), admission (--queue), the body
 * (raw, or the file part of multipart/form-data through MHD's post processor), the job
 * queued for a worker (serve_jobs.c) with the connection suspended, and the answer sent
 * once the worker resumes it. Nothing a client sends is trusted for sizes. See serve.h. */
#include "cli.h"
#include "options.h"
#include "serve.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Per-request context (MHD's con_cls). */
typedef struct {
    int kind;
    double t_first;
    job *job;
} request;

/* ------------------------------------------------------------------ responses */

enum MHD_Result serve_send_buffer(server *srv, struct MHD_Connection *conn, unsigned status,
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

char *serve_json_error_text(unsigned status, const char *msg)
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
    char *text = serve_json_error_text(status, msg);
    if (!text) return MHD_NO;
    return serve_send_buffer(srv, conn, status, "application/json", text, strlen(text), 1);
}

static enum MHD_Result send_json(server *srv, struct MHD_Connection *conn, unsigned status,
                                 cJSON *o)
{
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!text) return MHD_NO;
    return serve_send_buffer(srv, conn, status, "application/json", text, strlen(text), 1);
}

static enum MHD_Result send_method_not_allowed(server *srv, struct MHD_Connection *conn,
                                               const char *allow, const char *method)
{
    char *text = serve_json_error_text(405, "method not allowed here");
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
            ok = serve_send_buffer(srv, conn, j->status, j->answer_type, j->answer, j->answer_len,
                                   1);
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
            return serve_send_buffer(srv, conn, 200, "text/html; charset=utf-8",
                                     (void *)serve_page_html, serve_page_html_len, 0);
        if (i == 2) return get_health(srv, conn);
        if (i == 3) return serve_get_metrics(srv, conn);
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
    serve_count_status(srv, code, (live_now_ms() - req->t_first) / 1000);
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

/* ------------------------------------------------------------------ daemon */

struct MHD_Daemon *serve_http_start(server *srv, unsigned flags, int port,
                                    const struct sockaddr *addr, unsigned max_conn)
{
    flags |= MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    return MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_request, srv,
                            MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_SOCK_ADDR, addr,
                            MHD_OPTION_CONNECTION_LIMIT, max_conn, MHD_OPTION_CONNECTION_TIMEOUT,
                            (unsigned)srv->timeout_s, MHD_OPTION_NOTIFY_COMPLETED, on_completed,
                            srv, MHD_OPTION_NOTIFY_CONNECTION, on_connection, srv, MHD_OPTION_END);
}
