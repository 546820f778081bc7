/* fuzz_npy.c — libFuzzer target: the .npy reader (pe_npy_load) on arbitrary bytes. */
#include "fuzz_util.h"
#include "patchead.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    int fd = fuzz_memfile(data, size, path, sizeof path);
    if (fd < 0) return 0;
    float *arr = NULL;
    int ndim = 0;
    int64_t shape[4];
    if (pe_npy_load(path, &arr, &ndim, shape) == PE_OK) free(arr);
    close(fd);
    return 0;
}
