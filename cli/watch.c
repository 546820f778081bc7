/* watch.c — `patchead watch`: score every image that appears in a folder (inotify).
 *
 * When a file is ready (never half-written):
 *   - a file announced by inotify is scored only after its writer closed it
 *     (IN_CLOSE_WRITE) or it was renamed into the folder (IN_MOVED_TO), and then nothing
 *     happened to it for --settle ms (writers that reopen and append get more time);
 *   - a file already there at start (or with no event seen) must keep the same size and
 *     modification time for --settle ms;
 *   - every file is stat'ed again right before reading: changed -> wait again.
 * Exactly once across restarts: DIR/scores.jsonl (in --out) is the record. At start its
 * paths are read back and those images are skipped; a row is appended only after the
 * image's map and heatmap are written, and flushed + fsync'ed, so a crash can lose at most
 * the image being scored (scored again at the next start), never record it twice. A
 * partial last line (crash mid-write) is closed with a newline and ignored.
 * Output is the same as predict's (scores.csv / scores.jsonl rows, maps/, heatmaps/),
 * appended; heatmaps use live_heatmap_range's fixed scale (no batch to take a range of). */
#include "cli.h"
#include "live.h"
#include "options.h"
#include "output.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *USAGE =
    "usage: patchead watch --bank BANK.pead --in DIR [--out OUT] [options]\n\n"
    "Scores every PNG/JPEG/BMP image that appears in DIR (not its subfolders) against the\n"
    "bank, as predict does, appending to OUT/scores.csv and OUT/scores.jsonl and writing\n"
    "OUT/maps/<stem>.npy and OUT/heatmaps/<stem>.png. Images already in DIR at start are\n"
    "scored too. A file is scored once its writer has closed it (or it was renamed into\n"
    "DIR) and it stayed unchanged for --settle ms; an image already in OUT/scores.jsonl is\n"
    "not scored again, so a restart continues where the last run stopped. Runs until\n"
    "SIGTERM or Ctrl-C (finishes the image in progress, exit 0). With a calibrated bank\n"
    "the images judged normal are checked for drift after every image (the last\n"
    "--drift-window of this run against the calibration, level --drift-level): one line\n"
    "when the check turns to warning, one when a whole window has passed without one.\n\n"
    "example:\n"
    "  patchead watch --bank tire.pead --in /srv/camera --out /srv/results\n";

/* DIR (< 4096 bytes) + '/' + a file name (<= 255 bytes) */
#define WATCH_PATH (4096 + 260)

/* Largest file read as an image (the decoder bounds pixels; this bounds the bytes). */
#define WATCH_MAX_FILE ((size_t)512 << 20)

/* ------------------------------------------------------------------ the done set */

/* Paths already scored: an open-addressing hash set of strings (grows at half load). */
typedef struct {
    char **slots;
    size_t cap, count;
} path_set;

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static int set_has(const path_set *set, const char *path)
{
    if (!set->cap) return 0;
    for (size_t i = hash_str(path) & (set->cap - 1);; i = (i + 1) & (set->cap - 1)) {
        if (!set->slots[i]) return 0;
        if (!strcmp(set->slots[i], path)) return 1;
    }
}

static int set_add(path_set *set, const char *path)
{
    if (set_has(set, path)) return 0;
    if (2 * (set->count + 1) > set->cap) {
        size_t cap = set->cap ? 2 * set->cap : 256;
        char **slots = calloc(cap, sizeof *slots);
        if (!slots) return -1;
        for (size_t k = 0; k < set->cap; k++) {
            if (!set->slots[k]) continue;
            size_t i = hash_str(set->slots[k]) & (cap - 1);
            while (slots[i]) i = (i + 1) & (cap - 1);
            slots[i] = set->slots[k];
        }
        free(set->slots);
        set->slots = slots;
        set->cap = cap;
    }
    char *copy = strdup(path);
    if (!copy) return -1;
    size_t i = hash_str(path) & (set->cap - 1);
    while (set->slots[i]) i = (i + 1) & (set->cap - 1);
    set->slots[i] = copy;
    set->count++;
    return 0;
}

static void set_free(path_set *set)
{
    for (size_t i = 0; i < set->cap; i++) free(set->slots[i]);
    free(set->slots);
}

/* Read OUT/scores.jsonl back: every "path" in it is done. Returns 0 or -1 (printed). */
static int load_done(const char *jsonl, path_set *done)
{
    FILE *f = fopen(jsonl, "r");
    if (!f)
        return errno == ENOENT ? 0
                               : (cli_error("%s: cannot read (%s)", jsonl, strerror(errno)), -1);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    while ((n = getline(&line, &cap, f)) > 0 && !rc) {
        cJSON *o = cJSON_Parse(line); /* a partial last line fails to parse: ignored */
        const cJSON *p = o ? cJSON_GetObjectItemCaseSensitive(o, "path") : NULL;
        if (cJSON_IsString(p) && set_add(done, p->valuestring)) rc = cli_error("out of memory");
        cJSON_Delete(o);
    }
    free(line);
    fclose(f);
    return rc;
}

/* ------------------------------------------------------------------ pending files */

typedef struct {
    char *name;      /* file name inside DIR */
    int closed;      /* IN_CLOSE_WRITE / IN_MOVED_TO seen since the last write */
    int evented;     /* inotify told us about it (else: found by the start-up scan) */
    double since_ms; /* last event or last observed change */
    off_t size;      /* at since_ms */
    struct timespec mtime;
} pending;

typedef struct {
    pending *items;
    int n, cap;
} pending_list;

static pending *pending_find(pending_list *l, const char *name)
{
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->items[i].name, name)) return &l->items[i];
    return NULL;
}

static pending *pending_touch(pending_list *l, const char *name)
{
    pending *p = pending_find(l, name);
    if (p) return p;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        pending *grown = realloc(l->items, (size_t)cap * sizeof *grown);
        if (!grown) return NULL;
        l->items = grown;
        l->cap = cap;
    }
    p = &l->items[l->n];
    memset(p, 0, sizeof *p);
    if (!(p->name = strdup(name))) return NULL;
    l->n++;
    return p;
}

/* Keeps the order of the others (files waiting at start are scored in name order, the
 * others in arrival order; moving the last item into the hole broke both). */
static void pending_remove(pending_list *l, pending *p)
{
    free(p->name);
    size_t after = (size_t)(l->items + l->n - (p + 1));
    memmove(p, p + 1, after * sizeof *p);
    l->n--;
}

/* ------------------------------------------------------------------ scoring one file */

typedef struct {
    live_set set;
    live_bank *bank;
    const char *in, *out;
    float threshold, sigma;
    int maps;
    int settle_ms;
    path_set done;
    FILE *csv, *jsonl;
    int scored, failed;
} watcher;

static int read_file(const char *path, uint8_t **bytes, size_t *len, char *err, size_t cap)
{
    *bytes = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(err, cap, "%.400s: cannot open (%s)", path, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode) || (size_t)st.st_size > WATCH_MAX_FILE) {
        snprintf(err, cap, "%.400s: %s", path,
                 S_ISREG(st.st_mode) ? "larger than 512 MiB, not read" : "not a regular file");
        close(fd);
        return -1;
    }
    uint8_t *b = malloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (b && got < (size_t)st.st_size) {
        ssize_t r = read(fd, b + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    if (!b || got != (size_t)st.st_size) {
        snprintf(err, cap, "%.400s: %s", path, b ? "changed while reading" : "out of memory");
        free(b);
        return -1;
    }
    *bytes = b;
    *len = got;
    return 0;
}

/* Output stem: the file's stem, with _2, _3 ... when maps from an earlier image (of this
 * run or an earlier one) already use it. */
static char *unique_stem(const watcher *w, const char *name)
{
    const char *dot = strrchr(name, '.');
    int n = dot && dot != name ? (int)(dot - name) : (int)strlen(name);
    char stem[600], probe[5000];
    for (int k = 1; k < 100000; k++) {
        if (k == 1) snprintf(stem, sizeof stem, "%.*s", n, name);
        else snprintf(stem, sizeof stem, "%.*s_%d", n, name, k);
        snprintf(probe, sizeof probe, "%s/heatmaps/%s.png", w->out, stem);
        struct stat st;
        if (stat(probe, &st) != 0) return strdup(stem);
    }
    return NULL;
}

static int write_maps(const watcher *w, const pe_image *img, const det_item *it, char *err,
                      size_t cap)
{
    float *map = malloc(sizeof(float) * (size_t)img->width * img->height);
    pe_status s =
        map ? pe_result_map(&it->result, img->width, img->height, w->sigma, map) : PE_ERR_NOMEM;
    char path[5000];
    if (!s) {
        int64_t shape[2] = {img->height, img->width};
        snprintf(path, sizeof path, "%s/maps/%s.npy", w->out, it->stem);
        s = pe_npy_save(path, map, 2, shape);
    }
    if (!s) {
        float vmin, vmax;
        live_heatmap_range(&it->result, w->threshold, &vmin, &vmax);
        snprintf(path, sizeof path, "%s/heatmaps/%s.png", w->out, it->stem);
        s = pe_save_heatmap_png(path, img, map, vmin, vmax);
    }
    free(map);
    if (s) snprintf(err, cap, "%s", pe_last_error());
    return s ? -1 : 0;
}

/* Append the row (jsonl last: it is the record of "done"), flush and fsync both. */
static int append_row(watcher *w, const det_item *it)
{
    det_write_row(w->csv, w->jsonl, it, w->threshold, 0);
    int bad =
        fflush(w->csv) || fsync(fileno(w->csv)) || fflush(w->jsonl) || fsync(fileno(w->jsonl));
    if (bad) return cli_error("%s: cannot append results (%s)", w->out, strerror(errno)), -1;
    return 0;
}

/* The bank's drift check with one more score: a line only when its verdict changes
 * (printed even with --quiet, like predict's drift warning). */
static void report_drift(watcher *w, float score)
{
    pe_drift_report r;
    int alarm;
    if (live_drift_add(w->bank, score, &r, &alarm) <= 0) return;
    if (alarm)
        fprintf(stderr,
                "patchead: warning: drift: the last %d images judged normal score higher than "
                "the bank's %d calibration images (one-sided KS D = %.3f, p = %.2g < %g): the "
                "false-alarm rate no longer holds; if the line changed (lighting, camera, "
                "product), recalibrate: predict --recalibrate NORMAL_DIR\n",
                r.normal, r.reference, r.statistic, r.p_value, r.delta);
    else
        fprintf(stderr,
                "patchead: drift: back to normal: no warning over the last %d images judged "
                "normal (vs %d calibration images: KS D = %.3f, p = %.2g, level %g)\n",
                r.normal, r.reference, r.statistic, r.p_value, r.delta);
}

/* Score DIR/name. Returns 0 (scored or recorded as failed), 1 (changed: wait again),
 * -1 (cannot write results: stop). */
static int score_file(watcher *w, const char *name)
{
    char path[WATCH_PATH];
    snprintf(path, sizeof path, "%s/%s", w->in, name);
    det_item it;
    memset(&it, 0, sizeof it);
    it.path = path;
    uint8_t *bytes = NULL;
    size_t len = 0;
    pe_image img = {0};
    live_timings tm;
    double t0 = live_now_ms();
    if (read_file(path, &bytes, &len, it.error, sizeof it.error)) {
        struct stat st;
        if (stat(path, &st) != 0) return 0; /* gone before we read it: nothing to record */
    } else if (live_score(w->bank, bytes, len, path, &img, &it.result, &tm)) {
        snprintf(it.error, sizeof it.error, "%s", pe_last_error());
    } else {
        it.ok = 1;
    }
    free(bytes);
    if (it.ok && w->maps) {
        it.stem = unique_stem(w, name);
        if (!it.stem) {
            snprintf(it.error, sizeof it.error, "%.400s: out of memory", path);
            it.ok = 0;
        } else if (write_maps(w, &img, &it, it.error, sizeof it.error)) {
            cli_warn("%s: map not written: %s", path, it.error);
            it.ok = 0;
        } else {
            it.has_map = 1;
        }
    }
    pe_image_free(&img);
    int rc = append_row(w, &it);
    if (!rc && set_add(&w->done, path)) {
        cli_error("out of memory");
        rc = -1;
    }
    if (it.ok) {
        w->scored++;
        if (!cli_quiet) {
            float s = it.result.image_score;
            fprintf(stderr, "patchead: watch: %s score %.4f%s (%.0f ms)\n", path, s,
                    isnan(w->threshold) ? ""
                    : s > w->threshold  ? " NG"
                                        : " OK",
                    live_now_ms() - t0);
        }
        report_drift(w, it.result.image_score); /* after the image's line: the one it follows */
    } else {
        w->failed++;
        cli_warn("%s", it.error);
    }
    free(it.stem);
    pe_result_free(&it.result);
    return rc;
}

/* ------------------------------------------------------------------ the loop */

static int wanted(const watcher *w, const char *name)
{
    char path[WATCH_PATH];
    snprintf(path, sizeof path, "%s/%s", w->in, name);
    return name[0] != '.' && cli_is_image_name(name) && !set_has(&w->done, path);
}

static void observe(pending *p, const struct stat *st, double now)
{
    p->since_ms = now;
    p->size = st->st_size;
    p->mtime = st->st_mtim;
}

/* Ready: closed (or never seen written) and unchanged for settle ms. -1: gone. */
static int check_ready(watcher *w, pending *p, double now)
{
    if (p->evented && !p->closed) return 0; /* its writer still has it open */
    char path[WATCH_PATH];
    snprintf(path, sizeof path, "%s/%s", w->in, p->name);
    struct stat st;
    if (stat(path, &st) != 0) return -1;
    if (!S_ISREG(st.st_mode)) return -1;
    if (st.st_size != p->size || st.st_mtim.tv_sec != p->mtime.tv_sec ||
        st.st_mtim.tv_nsec != p->mtime.tv_nsec) {
        observe(p, &st, now);
        return 0;
    }
    return now - p->since_ms >= w->settle_ms;
}

static FILE *open_append(const char *dir, const char *name, int *fresh)
{
    char path[WATCH_PATH];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "a+");
    if (!f) {
        cli_error("%s: cannot open for appending (%s)", path, strerror(errno));
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    *fresh = size == 0;
    if (size > 0) {
        /* a crash mid-row leaves no newline: end that line so ours start clean */
        fseek(f, size - 1, SEEK_SET);
        int last = fgetc(f);
        fseek(f, 0, SEEK_END);
        if (last != '\n') fputc('\n', f);
    }
    return f;
}

int cmd_watch(int argc, char **argv)
{
    cli_opts o;
    cli_opts_init(&o);
    o.drift_level = LIVE_DRIFT_LEVEL; /* checked after every image: stricter than predict's */
    int first, r = cli_parse_options(CMD_WATCH, USAGE, argc, argv, &o, &first);
    if (r) return r > 0 ? EXIT_OK : EXIT_USAGE;
    if (!o.bank || !o.in || first < argc) {
        cli_error(first < argc ? "watch: unexpected argument '%s'"
                               : "watch needs --bank BANK.pead and --in DIR%s",
                  first < argc ? argv[first] : "");
        return EXIT_USAGE;
    }
    char *bank_path = (char *)o.bank;
    const char *model = o.model;
    char in[4096];
    snprintf(in, sizeof in, "%s", o.in);
    watcher w;
    memset(&w, 0, sizeof w);
    w.out = o.out ? o.out : "patchead-out";
    w.maps = !o.no_maps;
    w.settle_ms = o.settle_ms;
    const double threshold = o.threshold;
    const int threads = o.threads;
    for (size_t n = strlen(in); n > 1 && in[n - 1] == '/'; n--) in[n - 1] = 0; /* "d/" == "d" */
    w.in = in;
    struct stat st;
    if (stat(in, &st) != 0) return cli_error("%s: cannot open (%s)", in, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return cli_error("%s: not a folder", in);
    if (threads) pe_set_threads(threads);

    /* SIGTERM / SIGINT arrive on a descriptor, polled with the inotify one. */
    int sfd = live_stop_fd();
    if (sfd < 0) return EXIT_ERROR;

    char *specs[1] = {bank_path};
    if (live_open(&w.set, specs, 1, model, threads)) return EXIT_ERROR;
    w.bank = &w.set.banks[0];
    w.threshold = isnan(threshold) ? w.bank->threshold : (float)threshold;
    const int drift_window = o.drift_window ? o.drift_window : LIVE_DRIFT_WINDOW;
    int drifting = 0;
    if (live_drift_start(&w.set, o.drift_level, drift_window, &drifting)) {
        live_close(&w.set);
        return EXIT_ERROR;
    }
    w.sigma = pe_bank_params(w.bank->bank)->map_sigma;

    int rc = EXIT_ERROR, ino = -1;
    pending_list pend = {0};
    char maps_dir[4200], heat_dir[4200], jsonl_path[4200];
    snprintf(maps_dir, sizeof maps_dir, "%s/maps", w.out);
    snprintf(heat_dir, sizeof heat_dir, "%s/heatmaps", w.out);
    snprintf(jsonl_path, sizeof jsonl_path, "%s/scores.jsonl", w.out);
    if (cli_mkdirs(w.out) || (w.maps && (cli_mkdirs(maps_dir) || cli_mkdirs(heat_dir)))) goto out;
    if (load_done(jsonl_path, &w.done)) goto out;
    int fresh_csv, fresh_jsonl;
    if (!(w.csv = open_append(w.out, "scores.csv", &fresh_csv))) goto out;
    if (!(w.jsonl = open_append(w.out, "scores.jsonl", &fresh_jsonl))) goto out;
    if (fresh_csv) det_write_header(w.csv, w.threshold, 0);

    ino = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    /* Watch before the scan, so nothing falls between the two. */
    if (ino < 0 || inotify_add_watch(ino, in,
                                     IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_MODIFY |
                                         IN_DELETE_SELF | IN_MOVE_SELF) < 0) {
        cli_error("%s: cannot watch (%s)", in, strerror(errno));
        goto out;
    }
    DIR *d = opendir(in);
    if (!d) {
        cli_error("%s: cannot list (%s)", in, strerror(errno));
        goto out;
    }
    double now = live_now_ms();
    for (struct dirent *e; (e = readdir(d));) {
        if (!wanted(&w, e->d_name)) continue;
        char path[WATCH_PATH];
        snprintf(path, sizeof path, "%s/%s", in, e->d_name);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        pending *p = pending_touch(&pend, e->d_name);
        if (!p) {
            closedir(d);
            cli_error("out of memory");
            goto out;
        }
        observe(p, &st, now); /* scored once unchanged for settle ms from now */
    }
    closedir(d);
    if (!cli_quiet)
        fprintf(stderr, "patchead: watching %s (bank %s, %zu image%s already scored, %d waiting)\n",
                in, w.bank->name, w.done.count, w.done.count == 1 ? "" : "s", pend.n);
    if (!cli_quiet && drifting)
        fprintf(stderr,
                "patchead: drift check: the last %d images judged normal (this run) vs the "
                "bank's calibration, warning at p < %g; a line when it turns to warning and when "
                "it returns to normal\n",
                drift_window, o.drift_level);

    /* Files waiting at start are scored in name order. */
    for (int i = 1; i < pend.n; i++)
        for (int j = i; j > 0 && strcmp(pend.items[j - 1].name, pend.items[j].name) > 0; j--) {
            pending t = pend.items[j];
            pend.items[j] = pend.items[j - 1];
            pend.items[j - 1] = t;
        }
    int stop = 0;
    while (!stop) {
        /* score what is ready, in arrival order */
        now = live_now_ms();
        int next_ms = -1;
        for (int i = 0; i < pend.n && !stop;) {
            pending *p = &pend.items[i];
            int ready = check_ready(&w, p, now);
            if (ready < 0) {
                pending_remove(&pend, p);
                continue;
            }
            if (ready) {
                char *name = strdup(p->name);
                pending_remove(&pend, p);
                int r = name ? score_file(&w, name) : -1;
                free(name);
                if (r < 0) goto out;
                now = live_now_ms();
                unsigned char sig;
                if (read(sfd, &sig, 1) == 1) stop = 1;
                continue;
            }
            if (!p->evented || p->closed) {
                int wait = (int)(p->since_ms + w.settle_ms - now) + 1;
                if (wait < 1) wait = 1;
                if (next_ms < 0 || wait < next_ms) next_ms = wait;
            }
            i++;
        }
        if (stop) break;
        struct pollfd fds[2] = {{ino, POLLIN, 0}, {sfd, POLLIN, 0}};
        int pr = poll(fds, 2, next_ms);
        if (pr < 0 && errno != EINTR) {
            cli_error("watch: poll failed (%s)", strerror(errno));
            goto out;
        }
        if (fds[1].revents & POLLIN) break;
        if (!(fds[0].revents & POLLIN)) continue;
        /* inotify events: (struct inotify_event + name) records */
        char buf[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));
        ssize_t n;
        now = live_now_ms();
        while ((n = read(ino, buf, sizeof buf)) > 0) {
            for (char *q = buf; q < buf + n;) {
                struct inotify_event *ev = (struct inotify_event *)q;
                q += sizeof *ev + ev->len;
                if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) {
                    cli_error("%s: the watched folder was removed or moved", in);
                    goto out;
                }
                if (ev->mask & IN_Q_OVERFLOW) {
                    /* events were lost: fall back to a scan of the folder */
                    cli_warn("%s: inotify queue overflow; rescanning", in);
                    DIR *rd = opendir(in);
                    for (struct dirent *e; rd && (e = readdir(rd));)
                        if (wanted(&w, e->d_name) && !pending_find(&pend, e->d_name)) {
                            pending *p = pending_touch(&pend, e->d_name);
                            if (p) p->since_ms = now, p->size = -1;
                        }
                    if (rd) closedir(rd);
                    continue;
                }
                if (!ev->len || (ev->mask & IN_ISDIR) || !wanted(&w, ev->name)) continue;
                pending *p = pending_touch(&pend, ev->name);
                if (!p) {
                    cli_error("out of memory");
                    goto out;
                }
                p->evented = 1;
                p->since_ms = now;
                p->size = -1; /* re-stat before trusting it */
                if (ev->mask & (IN_CLOSE_WRITE | IN_MOVED_TO)) p->closed = 1;
                else if (ev->mask & (IN_MODIFY | IN_CREATE)) p->closed = 0;
            }
        }
    }
    if (!cli_quiet)
        fprintf(stderr, "patchead: watch stopped: %d scored, %d failed this run\n", w.scored,
                w.failed);
    rc = EXIT_OK;
out:
    for (int i = 0; i < pend.n; i++) free(pend.items[i].name);
    free(pend.items);
    if (ino >= 0) close(ino);
    if (w.csv) fclose(w.csv);
    if (w.jsonl) fclose(w.jsonl);
    set_free(&w.done);
    live_close(&w.set);
    return rc;
}
