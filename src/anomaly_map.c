/* anomaly_map.c — PLACEHOLDER, to be replaced by its implementation. */
#include "internal.h"

pe_status pe_anomaly_map(const float *patch_scores, int grid_h, int grid_w, int out_w, int out_h, float sigma, float *out_map)
{
    (void)patch_scores;
    (void)grid_h;
    (void)grid_w;
    (void)out_w;
    (void)out_h;
    (void)sigma;
    (void)out_map;
    return pe_fail(PE_ERR_UNSUPPORTED, "not implemented yet");
}

pe_status pe_save_heatmap_png(const char *path, const pe_image *img, const float *map, float vmin, float vmax)
{
    (void)path;
    (void)img;
    (void)map;
    (void)vmin;
    (void)vmax;
    return pe_fail(PE_ERR_UNSUPPORTED, "not implemented yet");
}
