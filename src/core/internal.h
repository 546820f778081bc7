/* internal.h — helpers shared by the library's source files (not public API). */
#ifndef PE_INTERNAL_H
#define PE_INTERNAL_H

#include "patchead.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* Record an error for pe_last_error() and return `status`.
 * Message style: "<file>: <problem>" on one line, no trailing newline. */
pe_status pe_fail(pe_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* 64-byte aligned allocation (free with free()); NULL on overflow/failure with an
 * error recorded. `what` names the buffer in the error message. */
void *pe_alloc(size_t count, size_t elem_size, const char *what);
void *pe_calloc(size_t count, size_t elem_size, const char *what);

/* 64-bit FNV-1a of a byte range, continuing from `hash` (start with PE_FNV_SEED). */
#define PE_FNV_SEED 0xcbf29ce484222325ULL
uint64_t pe_fnv1a(uint64_t hash, const void *data, size_t n);
/* Fast 64-bit hash of a large byte range (weights files): 4-lane word-wise FNV-1a. */
uint64_t pe_hash_fast(const void *data, size_t n);
/* The same value, walked in chunks of `chunk` bytes (a multiple of 32; 0: one chunk);
 * done(p, bytes, arg) is called after each chunk is read (the tail of < 32 bytes is
 * read after the last call). */
uint64_t pe_hash_fast_chunks(const void *data, size_t n, size_t chunk,
                             void (*done)(const void *p, size_t n, void *arg), void *arg);

/* Read a whole file into memory (adds a terminating NUL). Only regular files (checked on
 * the opened descriptor, opened without blocking: a FIFO is refused, never waited on),
 * smaller than PE_MAX_INPUT_FILE (images, configs, banks). */
#define PE_MAX_INPUT_FILE ((uint64_t)4 << 30)
pe_status pe_read_file(const char *path, uint8_t **data, size_t *size);
/* open(O_RDONLY) that refuses anything but a regular file without blocking on FIFOs;
 * -1 with the error recorded ("<path>: not a regular file (a FIFO)"). */
int pe_open_regular(const char *path);
/* The same as a read-only stdio stream (text files: dataset lists, split CSVs). */
FILE *pe_fopen_regular(const char *path);

/* MemAvailable of /proc/meminfo in bytes; 0 when unknown (meminfo.c). */
double pe_mem_available(void);

/* splitmix64: the library's seeded generator (coreset first centre and projection). */
uint64_t pe_splitmix64(uint64_t *state);

/* Length of the valid UTF-8 sequence at s (n bytes available), 0 if none starts there
 * (overlong, surrogate, above U+10FFFF, truncated, stray continuation byte). */
int pe_utf8_len(const unsigned char *s, size_t n);

/* Per-step profile of the ViT forward (profile.c): PE_PROFILE=1 turns it on. Time a
 * step as `double t = pe_prof_now(); ...; t = pe_prof_add(PE_PROF_X, t);` (0 when off:
 * the calls cost a branch). The public pe_profile_start / pe_profile_print (patchead.h)
 * clear and print the slots. */
typedef enum {
    PE_PROF_EMBED,
    PE_PROF_LN,
    PE_PROF_QKV,
    PE_PROF_ATTN_COPY,
    PE_PROF_ATTN_PACK,
    PE_PROF_ATTN_CORE,
    PE_PROF_OUT,
    PE_PROF_FC1,
    PE_PROF_FC2,
    PE_PROF_OTHER,
    PE_PROF_SLOTS
} pe_prof_slot;
int pe_prof_on(void);
double pe_prof_now(void);
double pe_prof_add(pe_prof_slot slot, double t0);

#define PE_MIN(a, b) ((a) < (b) ? (a) : (b))
#define PE_MAX(a, b) ((a) > (b) ? (a) : (b))

#endif
