/* common.c — error printing, number parsing, input collection, progress bar. */
#include "cli.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <stdint.h>
#include <unistd.h>

int cli_quiet = 0;

int cli_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (pe_dist_size() > 1) {
        /* under mpirun: the error goes to the other ranks, and rank 0 prints the first
         * one, naming its rank, once all have stopped (main.c, docs/SCALE.md) */
        char msg[512];
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        pe_dist_fail(msg);
        return EXIT_ERROR;
    }
    fputs("patchead: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return EXIT_ERROR;
}

void cli_warn(const char *fmt, ...)
{
    if (cli_quiet) return;
    va_list ap;
    va_start(ap, fmt);
    fputs("patchead: warning: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int cli_lib_error(pe_status status)
{
    const char *msg = pe_last_error();
    return cli_error("%s", msg && *msg ? msg : pe_status_name(status));
}

int cli_parse_int(const char *opt, const char *text, int min, int max, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < min || v > max) {
        cli_error("%s expects an integer in %d..%d, got '%s'", opt, min, max, text);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int cli_parse_float(const char *opt, const char *text, double min, double max, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || !(v >= min && v <= max)) {
        cli_error("%s expects a number in %g..%g, got '%s'", opt, min, max, text);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_parse_precision(const char *text, pe_precision *out)
{
    pe_precision p;
    if (pe_precision_parse(text, &p) != PE_OK) {
        cli_error("--precision expects fp32, bf16, auto or int8, got '%s'", text);
        return -1;
    }
    *out = pe_precision_resolve(p);
    return 0;
}

int cli_is_image_name(const char *path)
{
    const char *dot = strrchr(path, '.');
    if (!dot) return 0;
    const char *exts[] = {".png", ".jpg", ".jpeg", ".bmp"};
    for (size_t i = 0; i < sizeof exts / sizeof *exts; i++)
        if (strcasecmp(dot, exts[i]) == 0) return 1;
    return 0;
}

typedef struct {
    char **items;
    int n, cap;
} path_list;

/* Append an owned string (freed on failure). */
static int push_owned(path_list *l, char *p)
{
    if (!p) return cli_error("out of memory collecting inputs"), -1;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        char **items = realloc(l->items, (size_t)cap * sizeof *items);
        if (!items) {
            free(p);
            return cli_error("out of memory collecting inputs"), -1;
        }
        l->items = items;
        l->cap = cap;
    }
    l->items[l->n++] = p;
    return 0;
}

static int push_path(path_list *l, const char *p)
{
    if (l->n >= CLI_MAX_INPUTS) {
        cli_error("more than %d inputs in one run (at %s); split the run", CLI_MAX_INPUTS, p);
        return -1;
    }
    return push_owned(l, strdup(p));
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Set of (device, inode) pairs: each folder is walked once and each file taken once,
 * whatever the links (a link back to an ancestor would otherwise loop forever). */
typedef struct {
    struct { dev_t dev; ino_t ino; int used; } *slot;
    size_t cap, n;
} id_set;

/* 1 if (dev, ino) was new and is now in the set, 0 if already there, -1 on no memory. */
static int id_add(id_set *s, dev_t dev, ino_t ino)
{
    if (2 * (s->n + 1) > s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 256;
        id_set g = {calloc(cap, sizeof *s->slot), cap, 0};
        if (!g.slot) return -1;
        for (size_t i = 0; i < s->cap; i++)
            if (s->slot[i].used) id_add(&g, s->slot[i].dev, s->slot[i].ino);
        free(s->slot);
        *s = g;
    }
    size_t h = (size_t)(((uint64_t)dev * 0x9e3779b97f4a7c15ULL) ^ ((uint64_t)ino * 0xbf58476d1ce4e5b9ULL));
    for (size_t i = h & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        if (!s->slot[i].used) {
            s->slot[i].dev = dev;
            s->slot[i].ino = ino;
            s->slot[i].used = 1;
            s->n++;
            return 1;
        }
        if (s->slot[i].dev == dev && s->slot[i].ino == ino) return 0;
    }
}

typedef struct {
    path_list out;
    id_set dirs, files;
    int skipped;
} walk_state;

/* 1 the first time (dev, ino) of `st` is seen in `set`; 0 later (warned, counted as
 * skipped); -1 with an error printed when out of memory. */
static int first_visit(walk_state *w, id_set *set, const char *path, const struct stat *st,
                       const char *again)
{
    int fresh = id_add(set, st->st_dev, st->st_ino);
    if (fresh < 0) return cli_error("out of memory collecting inputs"), -1;
    if (!fresh) {
        cli_warn("%s: skipped (%s)", path, again);
        w->skipped++;
    }
    return fresh;
}

/* Take a file once (by device + inode). */
static int take_file(walk_state *w, const char *path, const struct stat *st)
{
    int fresh = first_visit(w, &w->files, path, st, "the same file as an earlier input");
    return fresh == 1 ? push_path(&w->out, path) : fresh;
}

static int walk(walk_state *w, const char *dir, const struct stat *dst, int depth)
{
    int fresh = first_visit(w, &w->dirs, dir, dst,
                            "folder already walked: a link loop or a second link to it");
    if (fresh != 1) return fresh;
    if (depth > CLI_MAX_DEPTH) {
        cli_warn("%s: skipped (more than %d folder levels)", dir, CLI_MAX_DEPTH);
        w->skipped++;
        return 0;
    }
    DIR *d = opendir(dir);
    if (!d) {
        cli_warn("%s: skipped (cannot open folder: %s)", dir, strerror(errno));
        w->skipped++;
        return 0;
    }
    path_list here = {0};
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        size_t len = strlen(dir) + strlen(e->d_name) + 2;
        if (len > 4096) {
            cli_warn("%s/%s: skipped (path longer than 4096 bytes)", dir, e->d_name);
            w->skipped++;
            continue;
        }
        char *full = malloc(len);
        if (full) {
            memcpy(full, dir, strlen(dir));
            full[strlen(dir)] = '/';
            memcpy(full + strlen(dir) + 1, e->d_name, strlen(e->d_name) + 1);
        }
        rc = push_owned(&here, full);
    }
    closedir(d);
    if (here.n) qsort(here.items, (size_t)here.n, sizeof *here.items, cmp_str);
    for (int i = 0; i < here.n && rc == 0; i++) {
        const char *p = here.items[i];
        struct stat st; /* stat, not lstat: links are followed (loops caught above) */
        if (stat(p, &st) != 0) {
            cli_warn("%s: skipped (%s)", p, strerror(errno));
            w->skipped++;
        } else if (S_ISDIR(st.st_mode)) {
            rc = walk(w, p, &st, depth + 1);
        } else if (!cli_is_image_name(p)) {
            cli_warn("%s: skipped (not an image file name)", p);
            w->skipped++;
        } else if (!S_ISREG(st.st_mode)) {
            cli_warn("%s: skipped (not a regular file)", p);
            w->skipped++;
        } else {
            rc = take_file(w, p, &st);
        }
    }
    cli_free_paths(here.items, here.n);
    return rc;
}

int cli_collect_images(char **args, int nargs, char ***paths)
{
    walk_state w = {0};
    int rc = 0;
    for (int i = 0; i < nargs && rc == 0; i++) {
        struct stat st;
        if (stat(args[i], &st) == 0 && S_ISDIR(st.st_mode)) rc = walk(&w, args[i], &st, 0);
        else if (stat(args[i], &st) == 0 && S_ISREG(st.st_mode)) rc = take_file(&w, args[i], &st);
        /* missing, unreadable, a link loop, a FIFO or a device: kept as an input; reading
         * it fails with the reason, like any other unreadable input */
        else rc = push_path(&w.out, args[i]);
    }
    free(w.dirs.slot);
    free(w.files.slot);
    if (rc) {
        cli_free_paths(w.out.items, w.out.n);
        return -1;
    }
    *paths = w.out.items;
    return w.out.n;
}

void cli_free_paths(char **paths, int n)
{
    if (!paths) return;
    for (int i = 0; i < n; i++) free(paths[i]);
    free(paths);
}

int cli_mkdirs(const char *path)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; ; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (mkdir(buf, 0777) != 0 && errno != EEXIST) {
                cli_error("%s: cannot create folder (%s)", buf, strerror(errno));
                return -1;
            }
            *p = c;
            if (!c) break;
        }
    }
    return 0;
}

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void cli_progress_begin(cli_progress *p, const char *label, int total)
{
    p->label = label;
    p->total = total;
    p->done = 0;
    p->start = cli_now();
    p->estimate = 0;
    p->active = !cli_quiet && isatty(fileno(stderr)) && total > 0;
    if (p->active) cli_progress_step(p, 0);
}

void cli_progress_step(cli_progress *p, int done)
{
    p->done = done;
    if (!p->active) return;
    double el = cli_now() - p->start;
    double eta = done > 0 ? el * (p->total - done) / done : p->estimate;
    int width = 30, fill = p->total ? (int)((long)width * done / p->total) : width;
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    fprintf(stderr, "\r%-10s [%s] %d/%d  %.1fs elapsed, ETA %.1fs ", p->label, bar, done, p->total,
            el, eta);
    fflush(stderr);
}

void cli_progress_end(cli_progress *p)
{
    if (!p->active) return;
    cli_progress_step(p, p->done);
    fputc('\n', stderr);
    p->active = 0;
}

/* RFC 4180 field / RFC 8259 string: the library's writers (pe_csv_field, pe_json_string). */
void cli_csv_field(FILE *f, const char *s) { pe_csv_field(f, s); }

void cli_json_string(FILE *f, const char *s) { pe_json_string(f, s); }
