/* serve_jobs.c — the inference side of `patchead serve`: --workers threads take queued
 * predict jobs, decode and score the body (live_score), render the heatmap when asked,
 * put the answer in the job and resume its connection; MHD's I/O thread then sends it
 * (serve_http.c). See serve.h. */
#include "cli.h"
#include "serve.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ predict: worker */

static void set_answer_error(job *j, unsigned status, const char *msg)
{
    j->status = status;
    j->answer = serve_json_error_text(status, msg);
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
    /* the bank's drift check with this image added (judged by the bank's threshold, whatever
     * ?threshold says); calibrated banks only */
    pe_drift_report dr;
    int alarm = 0, drift_changed = live_drift_add(b, score, &dr, &alarm);
    if (drift_changed >= 0) {
        cJSON *d = cJSON_AddObjectToObject(o, "drift");
        cJSON_AddNumberToObject(d, "judged_normal", dr.normal);
        cJSON_AddNumberToObject(d, "window", srv->drift_window);
        cJSON_AddNumberToObject(d, "calibration", dr.reference);
        cJSON_AddBoolToObject(d, "tested", dr.normal >= PE_DRIFT_MIN);
        cJSON_AddNumberToObject(d, "statistic", dr.statistic);
        cJSON_AddNumberToObject(d, "p_value", dr.p_value);
        cJSON_AddNumberToObject(d, "level", dr.delta);
        cJSON_AddBoolToObject(d, "warning", dr.warning);
        cJSON_AddBoolToObject(d, "alarm", alarm);
    }
    if (drift_changed > 0 && alarm)
        fprintf(stderr,
                "patchead: warning: drift: bank %s: the last %d images judged normal score "
                "higher than its %d calibration images (one-sided KS D = %.3f, p = %.2g < %g); "
                "the false-alarm rate no longer holds: recalibrate on current normal images\n",
                b->name, dr.normal, dr.reference, dr.statistic, dr.p_value, dr.delta);
    else if (drift_changed > 0)
        fprintf(stderr,
                "patchead: drift: bank %s back to normal: no warning over the last %d images "
                "judged normal (vs %d calibration images: KS D = %.3f, p = %.2g)\n",
                b->name, dr.normal, dr.reference, dr.statistic, dr.p_value);
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
        /* running from the dequeue to the answer, so that queued + running counts every
         * job a worker owes an answer (fuzz/fuzz_serve.c waits on that) */
        srv->running++;
        pthread_mutex_unlock(&srv->lock);
        if (client_gone(j->conn)) {
            set_answer_error(j, 400, "client closed the connection before its turn");
            pthread_mutex_lock(&srv->lock);
            srv->abandoned++;
            pthread_mutex_unlock(&srv->lock);
        } else {
            run_job(srv, j);
        }
        struct MHD_Connection *conn = j->conn;
        pthread_mutex_lock(&srv->lock);
        srv->running--;
        j->state = JOB_DONE;
        pthread_mutex_unlock(&srv->lock);
        /* outside our lock (MHD takes its own); MHD calls the handler again: it answers */
        MHD_resume_connection(conn);
        pthread_mutex_lock(&srv->lock);
    }
    pthread_mutex_unlock(&srv->lock);
    return NULL;
}

int serve_workers_start(server *srv, pthread_t *tids, int n)
{
    int started = 0;
    for (; tids && started < n; started++)
        if (pthread_create(&tids[started], NULL, worker_main, srv)) break;
    return started;
}

void serve_workers_stop(server *srv, pthread_t *tids, int started)
{
    pthread_mutex_lock(&srv->lock);
    srv->stopping = 1;
    pthread_cond_broadcast(&srv->wake);
    pthread_mutex_unlock(&srv->lock);
    for (int i = 0; i < started; i++) pthread_join(tids[i], NULL);
}
