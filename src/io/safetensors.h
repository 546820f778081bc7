/* safetensors.h — read-only access to a .safetensors file (mmap + JSON header).
 * Format: u64 little-endian header length N, N bytes of JSON
 *   {"name": {"dtype": "F32"|"F16"|"BF16", "shape": [...], "data_offsets": [begin, end]}, ...,
 *    "__metadata__": {...}}
 * then the raw tensor bytes; offsets are relative to the end of the header. Every
 * offset, size and shape is validated on open. */
#ifndef PE_SAFETENSORS_H
#define PE_SAFETENSORS_H

#include "core/internal.h"

typedef struct st_file st_file;

#define ST_MAX_DIMS 8

typedef struct {
    const char *name;
    char dtype[8];               /* "F32", "F16", "BF16", ... as in the header */
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    int64_t numel;
    const uint8_t *data;         /* points into the mapping */
} st_tensor;

pe_status st_open(const char *path, st_file **out);
void st_close(st_file *f);
const char *st_path(const st_file *f);
int st_count(const st_file *f);
const st_tensor *st_at(const st_file *f, int index);
/* NULL if absent (no error recorded). */
const st_tensor *st_find(const st_file *f, const char *name);
/* Hex FNV-1a hash of the whole file (17 bytes incl. NUL). */
void st_hash(const st_file *f, char out[17]);
/* The file's read-only mapping (every tensor pointer lies in it); *size its bytes. */
const void *st_map(const st_file *f, size_t *size);
/* Dominant dtype: "F32", "F16", "BF16" or "mixed". */
const char *st_dtype_summary(const st_file *f);

/* Load tensor `name` converted to float32 into a new buffer (pe_alloc; free()).
 * The shape must equal `shape[0..ndim)`; a missing tensor, another shape or an
 * unsupported dtype fails with a message naming the file and the tensor. */
pe_status st_load_f32(const st_file *f, const char *name, int ndim, const int64_t *shape,
                      float **out);
/* Same without a shape check; shape/ndim returned. */
pe_status st_load_f32_any(const st_file *f, const char *name, float **out, int *ndim,
                          int64_t shape[ST_MAX_DIMS]);

#endif
