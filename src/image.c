/* image.c — PLACEHOLDER, to be replaced by its implementation. */
#include "internal.h"

pe_status pe_image_load(const char *path, pe_image *out)
{
    (void)path;
    (void)out;
    return pe_fail(PE_ERR_UNSUPPORTED, "not implemented yet");
}

pe_status pe_image_decode(const uint8_t *bytes, size_t n, const char *name, pe_image *out)
{
    (void)bytes;
    (void)n;
    (void)name;
    (void)out;
    return pe_fail(PE_ERR_UNSUPPORTED, "not implemented yet");
}

void pe_image_free(pe_image *img)
{
    (void)img;
}

pe_status pe_image_save_png(const char *path, const pe_image *img)
{
    (void)path;
    (void)img;
    return pe_fail(PE_ERR_UNSUPPORTED, "not implemented yet");
}

pe_status pe_image_resize(const pe_image *src, int out_w, int out_h, pe_image *out)
{
    (void)src;
    (void)out_w;
    (void)out_h;
    (void)out;
    return pe_fail(PE_ERR_UNSUPPORTED, "not implemented yet");
}
