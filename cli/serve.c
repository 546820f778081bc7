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
 * --max-body, decoded pixels are bounded by the library's image limits.
 *
 * Files (serve.h): this one is cmd_serve (options, address, startup, drain, shutdown);
 * serve_http.c the daemon and its handlers, serve_jobs.c the workers, serve_metrics.c the
 * counters and /metrics. */
#include "cli.h"
#include "options.h"
#include "serve.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *USAGE =
    "usage: patchead serve --bank [NAME=]BANK.pead [--bank ...] [options]\n\n"
    "Serves the banks over HTTP: the model of each bank is loaded once and shared;\n"
    "images are scored by a bounded pool of worker threads. A web page for operators is\n"
    "at /. Stops cleanly on SIGTERM or SIGINT (finishes requests in flight, exit 0).\n\n"
    "endpoints:\n"
    "  POST /v1/banks/NAME/predict   body: one PNG/JPEG/BMP image (raw, or the file of a\n"
    "                                multipart/form-data form). JSON answer: score, threshold,\n"
    "                                is_anomalous, backbone, bank hash, timings; drift\n"
    "                                (calibrated banks): the bank's drift check after\n"
    "                                this image (--drift-level, --drift-window)\n"
    "       ?threshold=T             decide with T instead of the bank's threshold\n"
    "       ?heatmap=png             answer the heatmap overlay as image/png instead; the\n"
    "                                JSON is then in the X-Patchead-Result header\n"
    "  GET  /v1/banks                banks: name, backbone, size, parameters, threshold\n"
    "  GET  /healthz                 200 {\"status\": \"ok\"} (503 while shutting down)\n"
    "  GET  /metrics                 Prometheus text: requests by status, latency\n"
    "                                histogram, images scored, in flight, queue, RSS,\n"
    "                                drift check per calibrated bank\n"
    "  GET  /                        the web page\n\n"
    "example:\n"
    "  patchead serve --bank tire=tire.pead &\n"
    "  curl --data-binary @image.jpg -H 'Content-Type: image/jpeg' \\\n"
    "       http://127.0.0.1:8080/v1/banks/tire/predict\n";

/* ------------------------------------------------------------------ command */

/* ------------------------------------------------------------------ command */

int cmd_serve(int argc, char **argv)
{
    cli_opts o;
    cli_opts_init(&o);
    o.drift_level = LIVE_DRIFT_LEVEL; /* checked after every image: stricter than predict's */
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
    const double drift_level = o.drift_level;
    const int drift_window = o.drift_window ? o.drift_window : LIVE_DRIFT_WINDOW;
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
    int drift_banks = 0;
    if (live_drift_start(&srv->set, drift_level, drift_window, &drift_banks)) goto out_close;
    srv->drift_window = drift_window;
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
    int started = serve_workers_start(srv, tids, workers);
    if (started < workers) {
        cli_error("serve: cannot start %d worker threads", workers);
        goto out_workers;
    }
    srv->daemon = serve_http_start(
        srv, MHD_USE_INTERNAL_POLLING_THREAD | (ipv6 ? MHD_USE_IPv6 : 0), port,
        ipv6 ? (struct sockaddr *)&addr6 : (struct sockaddr *)&addr4, (unsigned)max_conn);
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
        if (drift_banks)
            fprintf(stderr,
                    "patchead: drift check on %d calibrated bank%s: the last %d images judged "
                    "normal vs the calibration, warning at p < %g\n",
                    drift_banks, drift_banks == 1 ? "" : "s", drift_window, drift_level);
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
    serve_workers_stop(srv, tids, started);
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
