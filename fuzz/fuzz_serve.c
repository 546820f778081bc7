/* fuzz_serve.c — libFuzzer target: the request handling of `patchead serve`, i.e. MHD's
 * HTTP parser and the service's handlers behind it (cli/serve_http.c: routing, headers,
 * query arguments, admission, raw and multipart/form-data bodies, responses; then
 * cli/serve_jobs.c: decoding and scoring the body with a real bank, the answer).
 *
 * Input = the raw bytes a client sends on one connection (one request, several pipelined,
 * or garbage). No network: the daemon has no listening socket; each input gets a fresh
 * socketpair whose one end is handed to MHD (MHD_add_connection) and whose other end is
 * the client. The target runs MHD's loop itself (MHD_run, no I/O thread) so it knows when
 * every byte has been handled: it writes the bytes, then runs the loop until MHD has read
 * them all and no predict job is queued or being scored (by the one worker thread),
 * half-closes (EOF: MHD closes the connection) and runs the loop until
 * the daemon holds no connection. Responses are read and dropped. Nothing outlives an
 * input but the counters of /metrics.
 *
 * The server, made once per process: one bank "tiny" (fuzz/corpus/bank/tiny.pead, the
 * 1-block DINOv2 of fuzz/corpus/model/dinov2_tiny; both embedded at build time as C
 * arrays and written to a temporary folder that is removed once loaded), 1 worker,
 * --queue 4, --max-body 1 MiB. */
#include "cli.h"
#include "serve.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* $(FUZZ_BUILD)/gen/serve_seeds.c (Makefile): the seed files' bytes. */
extern const unsigned char fuzz_seed_model[], fuzz_seed_bank[];
extern const size_t fuzz_seed_model_len, fuzz_seed_bank_len;

static server *srv;
static pthread_t worker;
static int show; /* FUZZ_SERVE_SHOW=1: the answers on stderr (reproducing a finding) */

static int put(const char *path, const unsigned char *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(p, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

static void stop(void)
{
    serve_workers_stop(srv, &worker, 1);
    MHD_stop_daemon(srv->daemon);
    free(srv->scored);
    live_close(&srv->set);
    free(srv);
}

static void start(void)
{
    show = getenv("FUZZ_SERVE_SHOW") && *getenv("FUZZ_SERVE_SHOW") == '1';
    cli_quiet = !show; /* MHD's log lines for bad requests */
    signal(SIGPIPE, SIG_IGN);
    pe_set_threads(1);
    char dir[64], mdir[96], cfg[128], wts[128], bank[128], spec[160];
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(dir, sizeof dir, "%.40s/pefuzz.XXXXXX", base);
    if (!mkdtemp(dir)) abort();
    snprintf(mdir, sizeof mdir, "%s/model", dir);
    snprintf(cfg, sizeof cfg, "%s/config.json", mdir);
    snprintf(wts, sizeof wts, "%s/model.safetensors", mdir);
    snprintf(bank, sizeof bank, "%s/tiny.pead", dir);
    snprintf(spec, sizeof spec, "tiny=%s", bank);
    size_t n = (size_t)fuzz_seed_model[0] | (size_t)fuzz_seed_model[1] << 8; /* config length */
    if (fuzz_seed_model_len < 2 + n || mkdir(mdir, 0700) || put(cfg, fuzz_seed_model + 2, n) ||
        put(wts, fuzz_seed_model + 2 + n, fuzz_seed_model_len - 2 - n) ||
        put(bank, fuzz_seed_bank, fuzz_seed_bank_len))
        abort();
    if (!(srv = calloc(1, sizeof *srv))) abort();
    char *specs[] = {spec};
    int loaded = live_open(&srv->set, specs, 1, mdir, 1);
    unlink(cfg), unlink(wts), unlink(bank), rmdir(mdir), rmdir(dir);
    if (loaded) abort();
    if (!(srv->scored = calloc((size_t)srv->set.num_banks, sizeof *srv->scored))) abort();
    srv->workers = 1;
    srv->queue_limit = 4;
    srv->timeout_s = 10;
    srv->max_body = (size_t)1 << 20;
    srv->started_ms = live_now_ms();
    pthread_mutex_init(&srv->lock, NULL);
    pthread_cond_init(&srv->wake, NULL);
    pthread_cond_init(&srv->idle, NULL);
    if (serve_workers_start(srv, &worker, 1) != 1) abort();
    srv->daemon = serve_http_start(srv, MHD_USE_NO_LISTEN_SOCKET, 0, NULL, 8);
    if (!srv->daemon) abort();
    atexit(stop);
}

/* Read whatever the daemon has answered; 1 once it has closed its end. */
static int drain(int fd)
{
    char buf[16384];
    for (;;) {
        ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (r > 0 && show) fwrite(buf, 1, (size_t)r, stderr);
        if (r > 0) continue;
        if (r == 0) return 1;
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : 1;
    }
}

/* 1 while MHD has bytes of the input left to read, or a predict job waits for a worker or
 * is being scored (queued + running: from the body's end to the answer). A request whose
 * body is still incomplete is not busy: nothing more will come, the EOF ends it. */
static int busy(int server_fd)
{
    int unread = 0;
    if (ioctl(server_fd, FIONREAD, &unread)) unread = 0; /* closed by MHD already */
    pthread_mutex_lock(&srv->lock);
    int jobs = srv->queued + srv->running;
    pthread_mutex_unlock(&srv->lock);
    return unread > 0 || jobs > 0;
}

static unsigned connections(void)
{
    const union MHD_DaemonInfo *di =
        MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    return di ? di->num_connections : 0;
}

/* Run MHD's loop once; when nothing is ready, wait up to 1 ms (the worker is scoring). */
static void step(int client)
{
    MHD_run(srv->daemon);
    struct pollfd p = {client, POLLIN, 0};
    poll(&p, 1, 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!srv) start();
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) abort();
    struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons(40000)};
    peer.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* MHD closes the socket itself when it refuses it */
    if (MHD_add_connection(srv->daemon, sv[1], (struct sockaddr *)&peer, sizeof peer) != MHD_YES) {
        close(sv[0]);
        return 0;
    }
    int server_fd = sv[1], client = sv[0], closed = 0;
    fcntl(client, F_SETFL, O_NONBLOCK);
    double deadline = live_now_ms() + 8000; /* under smoke.sh's -timeout=10 */
    size_t sent = 0;
    while (sent < size && !closed && live_now_ms() < deadline) {
        ssize_t w = send(client, data + sent, size - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) sent += (size_t)w;
        else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) break;
        MHD_run(srv->daemon);
        closed = drain(client);
    }
    /* every byte read by MHD and no request between its headers and its answer */
    while (!closed && live_now_ms() < deadline) {
        step(client);
        closed = drain(client);
        if (!busy(server_fd)) break;
    }
    shutdown(client, SHUT_WR); /* EOF: MHD ends the connection */
    while (connections() > 0 && live_now_ms() < deadline) {
        step(client);
        drain(client);
    }
    close(client);
    if (connections() > 0) {
        fprintf(stderr, "fuzz_serve: the connection is still open after 8 s\n");
        abort();
    }
    return 0;
}
