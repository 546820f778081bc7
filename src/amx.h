/* amx.h — bf16 GEMM on Intel AMX tiles (amx.c), for products whose short inner
 * dimension or small size make the library's kernels slow (attention's Q K^T with
 * dh = 64, and P V). B is packed once into panels of 32 columns in the tile unit's
 * VNNI layout: (Kp/2, 32, 2) per panel, Kp = K rounded up to 32 (zero rows). */
#ifndef PE_AMX_H
#define PE_AMX_H

#include <stddef.h>
#include <stdint.h>

/* 1 if AMX-BF16 runs here: cpuid, Linux's permission for the tile state, and
 * DNNL_MAX_CPU_ISA not capping below AMX. */
int amx_ready(void);
/* Loads this thread's tile configuration used by every AMX kernel here: tiles 0-7 of
 * 16 rows x 64 bytes (C: 16 x 16 fp32; A: 16 rows x 32 bf16; B: 16 pairs x 16 columns).
 * Call only where amx_ready(); end the kernel with _tile_release(). */
void amx_tiles_begin(void);
/* K rounded up to the tile depth (32), and the bytes of B packed for (K, N) */
int amx_kpad(int K);
size_t amx_packed_bytes(int K, int N);
/* Pack B given as rows of K: trans = 1: B^T rows (N, K), ld; trans = 0: B rows (K, N), ld. */
void amx_pack(const uint16_t *B, int ld, int trans, int K, int N, uint16_t *packed);
/* C (M, N) (+)= A (M, K) . B: A bf16 rows with lda (its columns K..kpad-1, if K is not a
 * multiple of 32, must be readable and zero), C fp32 with ldc; accumulate = 1 adds to C.
 * Call only where amx_ready(). Returns 0, or -1 out of memory (nothing computed). */
int amx_gemm(int M, int N, int K, const uint16_t *A, int lda, const uint16_t *packed, float *C,
             int ldc, int accumulate);

#endif
