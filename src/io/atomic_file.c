/* atomic_file.c — the one writer every output file of patchead goes through (banks,
 * .npy, PNG, scores.csv / scores.jsonl, eval results).
 *
 * Protocol: create "<path>.tmp.<pid>.<seq>" beside the target (O_EXCL: never an existing
 * file), write through a FILE* whose write errors are recorded with their errno, then on
 * commit: flush, fsync the file, close, rename over the target, fsync the folder (so the
 * rename itself survives a power cut). A reader therefore sees the previous file or the
 * complete new one, never a prefix. On any failure the temporary file is removed and the
 * target is untouched. A process killed between open and commit leaves its temporary file
 * behind (it never replaces the target); its name says which process made it.
 *
 * Why fopencookie: stdio forgets the errno of a failed write (fflush/fclose later report
 * whatever errno happens to hold), and "write failed" without "No space left on device"
 * or "File too large" is not actionable. The cookie's write records the first error. */
#include "core/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct pe_atomic_file {
    FILE *f; /* stdio stream over fd (fopencookie) */
    int fd;
    int err;    /* first write errno, 0 if none */
    char *path; /* target */
    char *tmp;  /* temporary name */
};

static ssize_t cookie_write(void *cookie, const char *buf, size_t n)
{
    pe_atomic_file *af = cookie;
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(af->fd, buf + done, n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            if (!af->err) af->err = w < 0 ? errno : ENOSPC;
            errno = af->err;
            return done ? (ssize_t)done : -1;
        }
        done += (size_t)w;
    }
    return (ssize_t)done;
}

static int cookie_close(void *cookie)
{
    (void)cookie; /* the fd is closed by commit/abort, after fsync */
    return 0;
}

pe_status pe_atomic_open(const char *path, pe_atomic_file **out)
{
    static atomic_uint seq;
    *out = NULL;
    if (!path || !*path) return pe_fail(PE_ERR_ARG, "pe_atomic_open: empty path");
    pe_atomic_file *af = calloc(1, sizeof *af);
    size_t cap = strlen(path) + 48;
    if (af) {
        af->path = strdup(path);
        af->tmp = malloc(cap);
    }
    if (!af || !af->path || !af->tmp) {
        if (af) {
            free(af->path);
            free(af->tmp);
        }
        free(af);
        return pe_fail(PE_ERR_NOMEM, "%s: out of memory", path);
    }
    snprintf(af->tmp, cap, "%s.tmp.%ld.%u", path, (long)getpid(), atomic_fetch_add(&seq, 1));
    af->fd = open(af->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (af->fd < 0) {
        pe_status s = pe_fail(PE_ERR_IO, "%s: cannot write (%s)", path, strerror(errno));
        free(af->path);
        free(af->tmp);
        free(af);
        return s;
    }
    cookie_io_functions_t io = {
        .read = NULL, .write = cookie_write, .seek = NULL, .close = cookie_close};
    af->f = fopencookie(af, "w", io);
    if (!af->f) {
        close(af->fd);
        unlink(af->tmp);
        free(af->path);
        free(af->tmp);
        free(af);
        return pe_fail(PE_ERR_NOMEM, "%s: out of memory", path);
    }
    /* 64 KiB buffer: outputs are written in small pieces (CSV rows, PNG rows). */
    setvbuf(af->f, NULL, _IOFBF, 1 << 16);
    *out = af;
    return PE_OK;
}

FILE *pe_atomic_stream(pe_atomic_file *af) { return af ? af->f : NULL; }

static void release(pe_atomic_file *af)
{
    free(af->path);
    free(af->tmp);
    free(af);
}

pe_status pe_atomic_abort(pe_atomic_file *af)
{
    if (!af) return PE_OK;
    fclose(af->f); /* may try to flush: errors are recorded in af->err, then ignored */
    close(af->fd);
    unlink(af->tmp);
    pe_status s = PE_OK;
    if (af->err) s = pe_fail(PE_ERR_IO, "%s: write failed (%s)", af->path, strerror(af->err));
    release(af);
    return s;
}

pe_status pe_fsync_dir(const char *dir)
{
    int fd = open(dir && *dir ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return pe_fail(PE_ERR_IO, "%s: cannot open folder (%s)", dir, strerror(errno));
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    /* Some file systems cannot fsync a folder (EINVAL): nothing more can be done there. */
    if (rc != 0 && e != EINVAL && e != EROFS)
        return pe_fail(PE_ERR_IO, "%s: cannot sync folder (%s)", dir, strerror(e));
    return PE_OK;
}

/* Folder part of path ("." when there is none), into buf. */
static void dir_of(const char *path, char *buf, size_t cap)
{
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(buf, cap, ".");
    else if (slash == path) snprintf(buf, cap, "/");
    else snprintf(buf, cap, "%.*s", (int)(slash - path), path);
}

pe_status pe_atomic_commit(pe_atomic_file *af)
{
    if (!af) return pe_fail(PE_ERR_ARG, "pe_atomic_commit: NULL file");
    if (fflush(af->f) != 0 && !af->err) af->err = errno ? errno : EIO;
    if (ferror(af->f) && !af->err) af->err = EIO;
    if (!af->err && fsync(af->fd) != 0 && errno != EINVAL) af->err = errno;
    if (af->err) return pe_atomic_abort(af);
    fclose(af->f);
    if (close(af->fd) != 0) {
        af->err = errno;
        af->fd = -1;
        unlink(af->tmp);
        pe_status s = pe_fail(PE_ERR_IO, "%s: write failed (%s)", af->path, strerror(af->err));
        release(af);
        return s;
    }
    if (rename(af->tmp, af->path) != 0) {
        int e = errno;
        unlink(af->tmp);
        pe_status s =
            pe_fail(PE_ERR_IO, "%s: cannot rename into place (%s)", af->path, strerror(e));
        release(af);
        return s;
    }
    char dir[4096];
    dir_of(af->path, dir, sizeof dir);
    pe_status s = pe_fsync_dir(dir);
    release(af);
    return s;
}

pe_status pe_atomic_write(const char *path, const void *data, size_t n)
{
    pe_atomic_file *af;
    pe_status s = pe_atomic_open(path, &af);
    if (s) return s;
    if (n && fwrite(data, 1, n, af->f) != n) {
        s = pe_atomic_abort(af);
        return s ? s : pe_fail(PE_ERR_IO, "%s: write failed", path);
    }
    return pe_atomic_commit(af);
}
