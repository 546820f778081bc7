/* run_dir.c — one commit point for all the files of a run (predict, zeroshot, eval).
 *
 * A run writes everything (scores, maps, heatmaps, reports) into a staging folder
 * "<parent>/.<name>.run.<pid>" beside the output folder <parent>/<name> — same file
 * system, so it can be renamed. Commit makes the whole new folder visible in one step:
 *   - no output folder yet: rename(staging, out);
 *   - an output folder from an earlier run (it holds the marker file .patchead-run) or an
 *     empty one: renameat2(RENAME_EXCHANGE) swaps the two folders atomically, then the old
 *     one (now at the staging name) is deleted. On file systems without RENAME_EXCHANGE
 *     the fallback is two renames (the output folder is briefly absent, never mixed).
 *   - any other existing folder is refused when the run begins (before any work): it may
 *     hold files patchead did not write, and the commit replaces the folder as a whole.
 * A run that fails, or is killed, never touches the output folder: the previous results
 * stay complete and consistent with each other. Staging folders left by killed runs are
 * removed by the next run into the same output folder (their process is gone).
 * The marker is written last into the staging folder, after every other file. */
#include "core/internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define RUN_MARKER ".patchead-run"
#define RUN_MAX_DEPTH 64

struct pe_run_dir {
    char out[4096];    /* the output folder (a symlink to a folder is resolved) */
    char parent[4096]; /* its parent folder */
    char stage[4096];  /* staging folder */
};

/* mkdir -p */
static pe_status make_dirs(const char *path)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return pe_fail(PE_ERR_ARG, "%s: path too long", path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return pe_fail(PE_ERR_IO, "%s: cannot create folder (%s)", buf, strerror(errno));
            *p = c;
            if (!c) break;
        }
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return pe_fail(PE_ERR_IO, "%s: not a folder", path);
    return PE_OK;
}

/* Delete the tree under dirfd/name without following symlinks (depth-bounded). */
static int remove_tree_at(int at, const char *name, int depth)
{
    if (unlinkat(at, name, 0) == 0) return 0;
    if (errno != EISDIR && errno != EPERM) return errno == ENOENT ? 0 : -1;
    if (depth >= RUN_MAX_DEPTH) return -1;
    int fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return -1;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return -1;
    }
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
            remove_tree_at(dirfd(d), e->d_name, depth + 1))
            rc = -1;
    closedir(d);
    if (unlinkat(at, name, AT_REMOVEDIR) != 0) rc = -1;
    return rc;
}

static int remove_tree(const char *path) { return remove_tree_at(AT_FDCWD, path, 0); }

/* 1 if dir is empty or holds the run marker; 0 otherwise (or unreadable). */
static int replaceable(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    int empty = 1, marker = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        empty = 0;
        if (!strcmp(e->d_name, RUN_MARKER)) marker = 1;
    }
    closedir(d);
    return empty || marker;
}

/* Remove ".<base>.run.<pid>" folders of processes that no longer exist. */
static void sweep_stale(const char *parent, const char *base)
{
    DIR *d = opendir(parent);
    if (!d) return;
    char prefix[300];
    int plen = snprintf(prefix, sizeof prefix, ".%s.run.", base);
    if (plen < 0 || plen >= (int)sizeof prefix) {
        closedir(d);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, prefix, (size_t)plen)) continue;
        char *end;
        long pid = strtol(e->d_name + plen, &end, 10);
        if (*end || pid <= 0 || pid == (long)getpid()) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue; /* still running */
        remove_tree_at(dirfd(d), e->d_name, 0);
    }
    closedir(d);
}

pe_status pe_run_begin(const char *out_dir, pe_run_dir **out)
{
    *out = NULL;
    if (!out_dir || !*out_dir) return pe_fail(PE_ERR_ARG, "pe_run_begin: empty output folder");
    pe_run_dir *r = calloc(1, sizeof *r);
    if (!r) return pe_fail(PE_ERR_NOMEM, "%s: out of memory", out_dir);
    size_t n = strlen(out_dir);
    while (n > 1 && out_dir[n - 1] == '/') n--;
    if (n >= sizeof r->out) {
        free(r);
        return pe_fail(PE_ERR_ARG, "%s: path too long", out_dir);
    }
    memcpy(r->out, out_dir, n);
    r->out[n] = 0;
    struct stat st;
    if (lstat(r->out, &st) == 0 && S_ISLNK(st.st_mode)) {
        char real[PATH_MAX];
        if (!realpath(r->out, real)) {
            pe_status s = pe_fail(PE_ERR_IO, "%s: output folder link cannot be resolved (%s)",
                                  r->out, strerror(errno));
            free(r);
            return s;
        }
        snprintf(r->out, sizeof r->out, "%s", real);
    }
    const char *slash = strrchr(r->out, '/');
    const char *base = slash ? slash + 1 : r->out;
    if (!*base || !strcmp(base, ".") || !strcmp(base, "..")) {
        free(r);
        return pe_fail(PE_ERR_ARG,
                       "%s: the output folder must be named (not '.', '..' or '/'): its contents "
                       "are replaced as a whole",
                       out_dir);
    }
    if (!slash) snprintf(r->parent, sizeof r->parent, ".");
    else if (slash == r->out) snprintf(r->parent, sizeof r->parent, "/");
    else snprintf(r->parent, sizeof r->parent, "%.*s", (int)(slash - r->out), r->out);
    if (stat(r->out, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            free(r);
            return pe_fail(PE_ERR_IO, "%s: exists and is not a folder", out_dir);
        }
        if (!replaceable(r->out)) {
            free(r);
            return pe_fail(PE_ERR_IO,
                           "%s: folder exists and was not written by patchead (no %s marker); "
                           "give a new or empty --out folder (it is replaced as a whole)",
                           out_dir, RUN_MARKER);
        }
    }
    pe_status s = make_dirs(r->parent);
    if (s) {
        free(r);
        return s;
    }
    sweep_stale(r->parent, base);
    int len =
        snprintf(r->stage, sizeof r->stage, "%s/.%s.run.%ld", r->parent, base, (long)getpid());
    if (len < 0 || len >= (int)sizeof r->stage) {
        free(r);
        return pe_fail(PE_ERR_ARG, "%s: path too long", out_dir);
    }
    remove_tree(r->stage); /* a leftover of this very pid (pid reuse) */
    if (mkdir(r->stage, 0777) != 0) {
        s = pe_fail(PE_ERR_IO, "%s: cannot create a folder beside it (%s)", out_dir,
                    strerror(errno));
        free(r);
        return s;
    }
    *out = r;
    return PE_OK;
}

const char *pe_run_path(const pe_run_dir *r) { return r ? r->stage : NULL; }
const char *pe_run_output(const pe_run_dir *r) { return r ? r->out : NULL; }

void pe_run_abort(pe_run_dir *r)
{
    if (!r) return;
    remove_tree(r->stage);
    free(r);
}

/* fsync every folder in the staging tree (files were synced by the atomic writer). */
static void sync_tree(const char *dir, int depth)
{
    if (depth > RUN_MAX_DEPTH) return;
    pe_fsync_dir(dir);
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_type != DT_DIR || !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char sub[4400];
        snprintf(sub, sizeof sub, "%s/%s", dir, e->d_name);
        sync_tree(sub, depth + 1);
    }
    closedir(d);
}

pe_status pe_run_commit(pe_run_dir *r)
{
    if (!r) return pe_fail(PE_ERR_ARG, "pe_run_commit: NULL run");
    char marker[4200];
    snprintf(marker, sizeof marker, "%s/%s", r->stage, RUN_MARKER);
    const char text[] = "patchead " PE_VERSION " run folder: replaced as a whole by the next run\n";
    pe_status s = pe_atomic_write(marker, text, sizeof text - 1);
    if (s) {
        char msg[1100];
        snprintf(msg, sizeof msg, "%s", pe_last_error());
        pe_run_abort(r);
        return pe_fail(s, "%s", msg);
    }
    sync_tree(r->stage, 0);
    struct stat st;
    if (stat(r->out, &st) != 0) {
        if (rename(r->stage, r->out) != 0) {
            s = pe_fail(PE_ERR_IO, "%s: cannot move the results into place (%s)", r->out,
                        strerror(errno));
            pe_run_abort(r);
            return s;
        }
    } else {
        if (!S_ISDIR(st.st_mode) || !replaceable(r->out)) {
            s = pe_fail(PE_ERR_IO,
                        "%s: changed during the run and was not written by patchead; "
                        "results not published",
                        r->out);
            pe_run_abort(r);
            return s;
        }
        if (renameat2(AT_FDCWD, r->stage, AT_FDCWD, r->out, RENAME_EXCHANGE) != 0) {
            if (errno != EINVAL && errno != ENOSYS) {
                s = pe_fail(PE_ERR_IO, "%s: cannot move the results into place (%s)", r->out,
                            strerror(errno));
                pe_run_abort(r);
                return s;
            }
            /* no atomic exchange here: move the old folder aside, then the new one in */
            char old[4200];
            snprintf(old, sizeof old, "%s.old", r->stage);
            if (rename(r->out, old) != 0 || rename(r->stage, r->out) != 0) {
                s = pe_fail(PE_ERR_IO, "%s: cannot move the results into place (%s)", r->out,
                            strerror(errno));
                rename(old, r->out); /* put the old one back if it moved */
                pe_run_abort(r);
                return s;
            }
            remove_tree(old);
        }
        /* the old results are now at the staging name */
    }
    pe_fsync_dir(r->parent);
    remove_tree(r->stage);
    free(r);
    return PE_OK;
}
