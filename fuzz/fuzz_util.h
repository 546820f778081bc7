/* fuzz_util.h — helpers shared by the libFuzzer targets (see fuzz/README.md).
 * The library's readers take paths, so each input is put into an anonymous memory
 * file (memfd) and read back through /proc/self/fd/N: a regular file, no disk I/O,
 * nothing left behind when the fuzzer is killed. */
#ifndef PE_FUZZ_UTIL_H
#define PE_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* Write bytes into a fresh memfd; fills path with its /proc name. Returns the fd
 * (close it after use) or -1. */
static inline int fuzz_memfile(const uint8_t *data, size_t size, char *path, size_t cap)
{
    int fd = memfd_create("pefuzz", MFD_CLOEXEC);
    if (fd < 0) return -1;
    size_t done = 0;
    while (done < size) {
        ssize_t w = write(fd, data + done, size - done);
        if (w <= 0) {
            close(fd);
            return -1;
        }
        done += (size_t)w;
    }
    snprintf(path, cap, "/proc/self/fd/%d", fd);
    return fd;
}

#endif
