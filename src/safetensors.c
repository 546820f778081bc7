/* safetensors.c — PLACEHOLDER, to be replaced by its implementation. */
#include "safetensors.h"

pe_status st_open(const char *path, st_file **out)
{
    (void)path;
    (void)out;
    return pe_fail(PE_ERR_UNSUPPORTED, "not implemented yet");
}

void st_close(st_file *f)
{
    (void)f;
}

const char *st_path(const st_file *f)
{
    (void)f;
    return NULL;
}

int st_count(const st_file *f)
{
    (void)f;
    return 0;
}

const st_tensor *st_at(const st_file *f, int index)
{
    (void)f;
    (void)index;
    return NULL;
}

const st_tensor *st_find(const st_file *f, const char *name)
{
    (void)f;
    (void)name;
    return NULL;
}

void st_hash(const st_file *f, char out[17])
{
    (void)f;
    (void)out;
}

const char *st_dtype_summary(const st_file *f)
{
    (void)f;
    return NULL;
}

pe_status st_load_f32(const st_file *f, const char *name, int ndim, const int64_t *shape, float **out)
{
    (void)f;
    (void)name;
    (void)ndim;
    (void)shape;
    (void)out;
    return pe_fail(PE_ERR_UNSUPPORTED, "not implemented yet");
}

pe_status st_load_f32_any(const st_file *f, const char *name, float **out, int *ndim, int64_t shape[ST_MAX_DIMS])
{
    (void)f;
    (void)name;
    (void)out;
    (void)ndim;
    (void)shape;
    return pe_fail(PE_ERR_UNSUPPORTED, "not implemented yet");
}
