/* fuzz_bank.c — libFuzzer target: the .pead bank reader (pe_bank_load).
 * A bank ends with a 64-bit FNV-1a checksum of everything before it and holds its own
 * size at bytes 16..23, so almost every mutation would stop at those two checks. The
 * target patches both to match the mutated bytes first, so mutations reach the parser
 * behind them (header fields, grids, strings, features, images). */
#include "fuzz_util.h"
#include "core/internal.h" /* pe_fnv1a: the checksum the bank format uses */
#include "patchead.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1u << 22)) return 0;
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    if (size >= 32) {
        for (int i = 0; i < 8; i++) buf[16 + i] = (uint8_t)((uint64_t)size >> (8 * i));
        uint64_t h = pe_fnv1a(PE_FNV_SEED, buf, size - 8);
        for (int i = 0; i < 8; i++) buf[size - 8 + i] = (uint8_t)(h >> (8 * i));
    }
    char path[64];
    int fd = fuzz_memfile(buf, size, path, sizeof path);
    free(buf);
    if (fd < 0) return 0;
    pe_bank *bank = NULL;
    if (pe_bank_load(path, NULL, &bank) == PE_OK) {
        (void)pe_bank_threshold(bank);
        (void)pe_bank_model_path(bank);
        pe_bank_free(bank);
    }
    close(fd);
    return 0;
}
