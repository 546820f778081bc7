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
#include <unistd.h>

int cli_quiet = 0;

int cli_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
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
        cli_error("--precision expects fp32, bf16 or auto, got '%s'", text);
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

static int push_path(path_list *l, const char *p)
{
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        char **items = realloc(l->items, (size_t)cap * sizeof *items);
        if (!items) return -1;
        l->items = items;
        l->cap = cap;
    }
    l->items[l->n] = strdup(p);
    return l->items[l->n++] ? 0 : -1;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int walk(const char *dir, path_list *l, int *skipped)
{
    DIR *d = opendir(dir);
    if (!d) {
        cli_error("%s: cannot open folder (%s)", dir, strerror(errno));
        return -1;
    }
    path_list here = {0};
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char full[4096];
        snprintf(full, sizeof full, "%s/%s", dir, e->d_name);
        if (push_path(&here, full)) break;
    }
    closedir(d);
    if (here.n) qsort(here.items, (size_t)here.n, sizeof *here.items, cmp_str);
    int rc = 0;
    for (int i = 0; i < here.n && rc == 0; i++) {
        struct stat st;
        if (stat(here.items[i], &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) rc = walk(here.items[i], l, skipped);
        else if (cli_is_image_name(here.items[i])) rc = push_path(l, here.items[i]);
        else {
            cli_warn("%s: skipped (not an image file name)", here.items[i]);
            (*skipped)++;
        }
    }
    cli_free_paths(here.items, here.n);
    return rc;
}

int cli_collect_images(char **args, int nargs, char ***paths)
{
    path_list l = {0};
    int skipped = 0;
    for (int i = 0; i < nargs; i++) {
        struct stat st;
        if (stat(args[i], &st) != 0) {
            cli_error("%s: no such file or directory", args[i]);
            cli_free_paths(l.items, l.n);
            return -1;
        }
        int rc = S_ISDIR(st.st_mode) ? walk(args[i], &l, &skipped) : push_path(&l, args[i]);
        if (rc) {
            cli_free_paths(l.items, l.n);
            return -1;
        }
    }
    *paths = l.items;
    return l.n;
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
    p->active = !cli_quiet && isatty(fileno(stderr)) && total > 0;
    if (p->active) cli_progress_step(p, 0);
}

void cli_progress_step(cli_progress *p, int done)
{
    p->done = done;
    if (!p->active) return;
    double el = cli_now() - p->start;
    double eta = done > 0 ? el * (p->total - done) / done : 0;
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

/* CSV field: quoted (quotes doubled) when it holds a comma, quote or newline. */
void cli_csv_field(FILE *f, const char *s)
{
    if (!strpbrk(s, ",\"\n\r")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

/* JSON string literal with quotes, backslashes and control characters escaped. */
void cli_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}
