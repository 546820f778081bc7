/* npy.c — PLACEHOLDER, to be replaced by its implementation. */
#include "internal.h"

pe_status pe_npy_save(const char *path, const float *data, int ndim, const int64_t *shape)
{
    (void)path;
    (void)data;
    (void)ndim;
    (void)shape;
    return pe_fail(PE_ERR_UNSUPPORTED, "not implemented yet");
}

pe_status pe_npy_load(const char *path, float **data, int *ndim, int64_t shape[4])
{
    (void)path;
    (void)data;
    (void)ndim;
    (void)shape;
    return pe_fail(PE_ERR_UNSUPPORTED, "not implemented yet");
}
