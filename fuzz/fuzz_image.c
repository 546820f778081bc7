/* fuzz_image.c — libFuzzer target: image decoding (PNG, JPEG, BMP sniffed from the
 * bytes) through pe_image_decode, then a small resize of whatever decoded. */
#include "patchead.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pe_image img = {0};
    if (pe_image_decode(data, size, "fuzz", &img) == PE_OK) {
        pe_image small = {0};
        if (pe_image_resize(&img, 7, 5, &small) == PE_OK) pe_image_free(&small);
        pe_image_free(&img);
    }
    return 0;
}
