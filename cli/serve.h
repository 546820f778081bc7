/* serve.h — what the files of `patchead serve` share (cli-private): the server state,
 * one predict job, and the functions the files call across (the design, threads and
 * flow are described at the top of serve.c):
 *   serve.c          cmd_serve: options, listening address, startup, drain, shutdown;
 *   serve_http.c     the MHD daemon and its handlers: routing, admission, headers,
 *                    bodies (raw or multipart/form-data), GET endpoints, responses;
 *   serve_jobs.c     the worker threads: queued jobs decoded, scored and answered;
 *   serve_metrics.c  the request counters and GET /metrics;
 *   $(BUILD)/gen/serve_page.c  the web page: cli/serve_page.html turned into a C array at
 *                    build time (Makefile rule: od + sed), so the binary carries it and
 *                    needs no file or network at run time. */
#ifndef PE_CLI_SERVE_H
#define PE_CLI_SERVE_H

#include "live.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

extern const unsigned char serve_page_html[]; /* UTF-8, NUL-terminated */
extern const size_t serve_page_html_len;      /* bytes, without the NUL */

/* ------------------------------------------------------------------ state */

typedef struct job job;

typedef struct {
    live_set set;
    struct MHD_Daemon *daemon;
    int workers, queue_limit, timeout_s;
    int drift_window; /* judged-normal images of each bank's drift check */
    size_t max_body;

    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t wake;  /* workers: a job was queued or stopping */
    pthread_cond_t idle;  /* main: a request finished (drain) */
    job *head, *tail;     /* jobs waiting for a worker */
    int queued;           /* waiting in that list */
    int running;          /* taken by a worker, not answered yet (decoding / scoring) */
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

/* ------------------------------------------------------------------ serve_http.c */

/* The MHD daemon of `serve` for srv, with its handlers: epoll, suspend/resume,
 * srv->timeout_s as the idle timeout, at most max_conn connections. `flags` pick the rest:
 * cmd_serve passes MHD_USE_INTERNAL_POLLING_THREAD (MHD's own I/O thread) and MHD_USE_IPv6
 * for an IPv6 addr; fuzz/fuzz_serve.c passes MHD_USE_NO_LISTEN_SOCKET, port 0 and addr
 * NULL, adds each connection with MHD_add_connection and runs the loop itself (MHD_run),
 * so that it knows when a request has been handled. srv's lock, conditions and counters
 * must be ready. NULL when MHD cannot start it. */
struct MHD_Daemon *serve_http_start(server *srv, unsigned flags, int port,
                                    const struct sockaddr *addr, unsigned max_conn);

/* Queue an answer with the service's headers (no-store, nosniff, Retry-After on 503,
 * Connection: close while draining); must_free: data is malloc'd and MHD frees it. */
enum MHD_Result serve_send_buffer(server *srv, struct MHD_Connection *conn, unsigned status,
                                  const char *type, void *data, size_t len, int must_free);
/* {"error": msg, "status": status} (malloc'd), NULL when out of memory. */
char *serve_json_error_text(unsigned status, const char *msg);

/* ------------------------------------------------------------------ serve_jobs.c */

/* Start n worker threads on srv's queue (tids: n slots); returns how many started. */
int serve_workers_start(server *srv, pthread_t *tids, int n);
/* Wake the workers to stop once the queue is empty and join the `started` first. */
void serve_workers_stop(server *srv, pthread_t *tids, int started);

/* ------------------------------------------------------------------ serve_metrics.c */

/* One request ended: its status (0 = closed before an answer) and seconds taken. */
void serve_count_status(server *srv, unsigned code, double seconds);
/* GET /metrics: the Prometheus text. */
enum MHD_Result serve_get_metrics(server *srv, struct MHD_Connection *conn);

#endif
