/* test_output_files.c — output names (pe_output_stems), the atomic writer
 * (pe_atomic_*) and run folders (pe_run_*): names unique, short and terminating on
 * 10,000 colliding inputs; an aborted or failed write never touches the target; a run
 * folder is published whole or not at all. The whole binary runs under alarm(): a
 * regression that loops (the old suffix rule never returned on 200 clashing names) fails
 * with SIGALRM instead of hanging the suite. */
#include "patchead.h"
#include "testlib.h"

#include <errno.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* 1 if the n strings are pairwise distinct (sorts a copy: O(n log n)). */
static int all_distinct(char **s, int n)
{
    char **c = malloc(sizeof *c * (size_t)n);
    memcpy(c, s, sizeof *c * (size_t)n);
    qsort(c, (size_t)n, sizeof *c, cmp_str);
    int ok = 1;
    for (int i = 1; i < n; i++)
        if (!strcmp(c[i - 1], c[i])) ok = 0;
    free(c);
    return ok;
}

static void free_all(char **s, int n)
{
    for (int i = 0; i < n; i++) free(s[i]);
}

static void test_stems_basic(void)
{
    const char *p[] = {"a/b/x.png", "c/d/y.jpg", "e/.hidden", "noext", "dir/z.tar.gz"};
    char *s[5];
    CHECK(pe_output_stems(p, 5, s) == PE_OK);
    CHECK(!strcmp(s[0], "x") && !strcmp(s[1], "y") && !strcmp(s[2], ".hidden"));
    CHECK(!strcmp(s[3], "noext") && !strcmp(s[4], "z.tar"));
    free_all(s, 5);
}

/* The camera tree: cam001/crop/0001.jpg ... -> cam001_crop_0001 ... */
static void test_stems_camera_tree_10000(void)
{
    enum { N = 10000 };
    char **p = malloc(sizeof *p * N), **s = malloc(sizeof *s * N);
    for (int i = 0; i < N; i++) {
        p[i] = malloc(64);
        snprintf(p[i], 64, "tree/cam%05d/crop/0001.jpg", i + 1);
    }
    CHECK(pe_output_stems((const char *const *)p, N, s) == PE_OK);
    CHECK(!strcmp(s[0], "cam00001_crop_0001") && !strcmp(s[N - 1], "cam10000_crop_0001"));
    CHECK(all_distinct(s, N));
    free_all(s, N);
    free_all(p, N);
    free(p);
    free(s);
}

/* 10,000 inputs that no folder name separates (same path given 10,000 times, plus names
 * that look like suffixed ones): numeric suffixes, all distinct, short. */
static void test_stems_identical_10000(void)
{
    enum { N = 10000 };
    char **p = malloc(sizeof *p * N), **s = malloc(sizeof *s * N);
    for (int i = 0; i < N; i++) {
        p[i] = malloc(64);
        if (i % 10 == 9) snprintf(p[i], 64, "a/b/c/d/x_%d.png", i / 10 + 2); /* x_2, x_3, ... */
        else snprintf(p[i], 64, "a/b/c/d/x.png");
    }
    CHECK(pe_output_stems((const char *const *)p, N, s) == PE_OK);
    CHECK(all_distinct(s, N));
    CHECK(!strcmp(s[0], "b_c_d_x")); /* first of the clashing ones keeps its name */
    size_t longest = 0;
    for (int i = 0; i < N; i++) longest = strlen(s[i]) > longest ? strlen(s[i]) : longest;
    CHECK_MSG(longest <= 24, "longest stem %zu bytes", longest);
    free_all(s, N);
    free_all(p, N);
    free(p);
    free(s);
}

/* Control characters and invalid UTF-8 become '_'; long parts are cut. */
static void test_stems_bytes(void)
{
    char longname[400];
    memset(longname, 'L', 300);
    strcpy(longname + 300, ".png");
    const char *p[] = {"q\n\"\\\t\r.png",
                       "bad\xff\xfe"
                       "name.png",
                       "caf\xc3\xa9.png", longname};
    char *s[4];
    CHECK(pe_output_stems(p, 4, s) == PE_OK);
    CHECK_MSG(!strcmp(s[0], "q_\"\\__"), "got '%s'", s[0]);
    CHECK(!strcmp(s[1], "bad__name"));
    CHECK(!strcmp(s[2], "caf\xc3\xa9"));
    CHECK(strlen(s[3]) == 48);
    free_all(s, 4);
}

/* JSON string / CSV field / UTF-8 repair on hand-checked byte strings: escapes, a stray
 * 0xFF, an overlong encoding, a UTF-16 surrogate and a truncated sequence. */
static void test_text_output(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    pe_json_string(f, "a\"b\\c\td\n\x01\xff\xc3\xa9\xc0\xaf\xed\xa0\x80\xe2\x82");
    fputc('|', f);
    pe_csv_field(f, "plain");
    fputc('|', f);
    pe_csv_field(f, "a,b\"c\nd");
    fputc('|', f);
    pe_utf8_write(f, "ok\xff\xe2\x82\xac");
    fclose(f);
    const char *want =
        "\"a\\\"b\\\\c\\u0009d\\u000a\\u0001\\ufffd\xc3\xa9\\ufffd\\ufffd"
        "\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\"|plain|\"a,b\"\"c\nd\"|ok\xef\xbf\xbd\xe2\x82\xac";
    CHECK_MSG(!strcmp(buf, want), "got  %s\nwant %s", buf, want);
    free(buf);
}

static char tmpdir[] = "/tmp/pe_test_out.XXXXXX";

static int read_all(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = 0;
    fclose(f);
    return (int)n;
}

static int count_entries(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "ls -A '%s' | wc -l", dir);
    FILE *p = popen(cmd, "r");
    int n = -1;
    if (p) {
        if (fscanf(p, "%d", &n) != 1) n = -1;
        pclose(p);
    }
    return n;
}

static void test_atomic_commit_abort(void)
{
    char path[256], buf[64];
    snprintf(path, sizeof path, "%s/a.txt", tmpdir);
    CHECK(pe_atomic_write(path, "old\n", 4) == PE_OK);
    pe_atomic_file *af;
    CHECK(pe_atomic_open(path, &af) == PE_OK);
    fputs("new, never committed\n", pe_atomic_stream(af));
    CHECK(pe_atomic_abort(af) == PE_OK);
    CHECK(read_all(path, buf, sizeof buf) == 4 && !strcmp(buf, "old\n"));
    CHECK(count_entries(tmpdir) == 1); /* no temporary file left */
    CHECK(pe_atomic_open(path, &af) == PE_OK);
    fputs("new\n", pe_atomic_stream(af));
    CHECK(pe_atomic_commit(af) == PE_OK);
    CHECK(read_all(path, buf, sizeof buf) == 4 && !strcmp(buf, "new\n"));
    snprintf(path, sizeof path, "%s/missing/a.txt", tmpdir);
    CHECK(pe_atomic_write(path, "x", 1) == PE_ERR_IO);
    CHECK(strstr(pe_last_error(), "missing/a.txt") && strstr(pe_last_error(), "No such file"));
}

/* A write that fails (file size limit: the same EFBIG path as a full disk's ENOSPC)
 * reports the system's reason and leaves the old file. */
static void test_atomic_write_error_keeps_old(void)
{
    char path[256], buf[64];
    snprintf(path, sizeof path, "%s/b.bin", tmpdir);
    CHECK(pe_atomic_write(path, "old\n", 4) == PE_OK);
    struct rlimit old, lim = {100000, 100000};
    getrlimit(RLIMIT_FSIZE, &old);
    lim.rlim_max = old.rlim_max;
    signal(SIGXFSZ, SIG_IGN);
    CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    size_t n = 1 << 20;
    char *big = calloc(n, 1);
    pe_status s = pe_atomic_write(path, big, n);
    setrlimit(RLIMIT_FSIZE, &old);
    free(big);
    CHECK(s == PE_ERR_IO);
    CHECK_MSG(strstr(pe_last_error(), "File too large") != NULL, "message: %s", pe_last_error());
    CHECK(read_all(path, buf, sizeof buf) == 4 && !strcmp(buf, "old\n"));
    CHECK(count_entries(tmpdir) == 2); /* a.txt, b.bin: no temporary left */
}

static void test_run_dir(void)
{
    char out[256], f[300], buf[64];
    snprintf(out, sizeof out, "%s/run/out", tmpdir);
    /* first run: folder created */
    pe_run_dir *r;
    CHECK(pe_run_begin(out, &r) == PE_OK);
    snprintf(f, sizeof f, "%s/scores.csv", pe_run_path(r));
    CHECK(pe_atomic_write(f, "one\n", 4) == PE_OK);
    CHECK(access(out, F_OK) != 0); /* nothing visible before commit */
    CHECK(pe_run_commit(r) == PE_OK);
    snprintf(f, sizeof f, "%s/scores.csv", out);
    CHECK(read_all(f, buf, sizeof buf) == 4 && !strcmp(buf, "one\n"));
    /* a failed run: aborted, old results intact, staging gone */
    CHECK(pe_run_begin(out, &r) == PE_OK);
    char g[400];
    snprintf(g, sizeof g, "%s/scores.csv", pe_run_path(r));
    CHECK(pe_atomic_write(g, "two, failed\n", 12) == PE_OK);
    pe_run_abort(r);
    CHECK(read_all(f, buf, sizeof buf) == 4 && !strcmp(buf, "one\n"));
    char parent[300];
    snprintf(parent, sizeof parent, "%s/run", tmpdir);
    CHECK(count_entries(parent) == 1);
    /* second run replaces the whole folder (old maps/ do not survive) */
    CHECK(pe_run_begin(out, &r) == PE_OK);
    snprintf(g, sizeof g, "%s/scores.csv", pe_run_path(r));
    CHECK(pe_atomic_write(g, "three\n", 6) == PE_OK);
    CHECK(pe_run_commit(r) == PE_OK);
    CHECK(read_all(f, buf, sizeof buf) == 6 && !strcmp(buf, "three\n"));
    CHECK(count_entries(parent) == 1);
    /* a folder with somebody else's files is refused up front */
    char foreign[320];
    snprintf(foreign, sizeof foreign, "%s/run/mine", tmpdir);
    mkdir(foreign, 0777);
    snprintf(g, sizeof g, "%s/notes.txt", foreign);
    CHECK(pe_atomic_write(g, "keep", 4) == PE_OK);
    CHECK(pe_run_begin(foreign, &r) == PE_ERR_IO);
    CHECK(strstr(pe_last_error(), "not written by patchead") != NULL);
    CHECK(pe_run_begin(".", &r) == PE_ERR_ARG);
}

static void remove_tmpdir(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
}

int main(void)
{
    alarm(120);
    if (!mkdtemp(tmpdir)) return 1;
    atexit(remove_tmpdir);
    RUN(test_stems_basic);
    RUN(test_stems_camera_tree_10000);
    RUN(test_stems_identical_10000);
    RUN(test_stems_bytes);
    RUN(test_text_output);
    RUN(test_atomic_commit_abort);
    RUN(test_atomic_write_error_keeps_old);
    RUN(test_run_dir);
    return test_summary();
}
