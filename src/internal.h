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
void pe_clear_error(void);

/* 64-byte aligned allocation (free with free()); NULL on overflow/failure with an
 * error recorded. `what` names the buffer in the error message. */
void *pe_alloc(size_t count, size_t elem_size, const char *what);
void *pe_calloc(size_t count, size_t elem_size, const char *what);

/* 64-bit FNV-1a of a byte range, continuing from `hash` (start with PE_FNV_SEED). */
#define PE_FNV_SEED 0xcbf29ce484222325ULL
uint64_t pe_fnv1a(uint64_t hash, const void *data, size_t n);
/* Fast 64-bit hash of a large byte range (weights files): 4-lane word-wise FNV-1a. */
uint64_t pe_hash_fast(const void *data, size_t n);

/* Read a whole file into memory (adds a terminating NUL). */
pe_status pe_read_file(const char *path, uint8_t **data, size_t *size);

/* Open "<path>.tmp.<pid>" for writing; pe_commit_file() closes, fsyncs and renames it
 * over `path`; pe_abort_file() closes and removes it. Used for atomic output. */
FILE *pe_open_temp(const char *path, char *tmp_path, size_t tmp_cap);
pe_status pe_commit_file(FILE *f, const char *tmp_path, const char *path);
void pe_abort_file(FILE *f, const char *tmp_path);

/* splitmix64: the library's seeded generator (coreset first centre and projection). */
uint64_t pe_splitmix64(uint64_t *state);

#define PE_MIN(a, b) ((a) < (b) ? (a) : (b))
#define PE_MAX(a, b) ((a) > (b) ? (a) : (b))

#endif
