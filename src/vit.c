/* vit.c — PLACEHOLDER, to be replaced by its implementation. */
#include "backbone.h"

pe_status vit_load(const st_file *weights, const cJSON *config, const char *path, backbone **out)
{
    (void)weights;
    (void)config;
    (void)path;
    (void)out;
    return pe_fail(PE_ERR_UNSUPPORTED, "not implemented yet");
}

int vit_detect(const st_file *weights, const cJSON *config)
{
    (void)weights;
    (void)config;
    return 0;
}
