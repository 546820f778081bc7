/* amx.h — bf16 GEMM on Intel AMX tiles (amx.c), for products whose short inner
 * dimension or small size make the library's kernels slow (attention's Q K^T with
 * dh = 64, and P V). B is packed once into panels of 32 columns in the tile unit's
 * VNNI layout: (Kp/2, 32, 2) per panel, Kp = K rounded up to 32 (zero rows). */
#ifndef PE_AMX_H
#define PE_AMX_H

#include <immintrin.h>
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
 * rowmax (M) != NULL: also each row's maximum over its N outputs, taken from every block
 * while it is still in L1 (attention's softmax then needs no pass of its own over the
 * (M, N) scores to find it). Call only where amx_ready(). Returns 0, or -1 out of memory
 * (nothing computed). */
int amx_gemm(int M, int N, int K, const uint16_t *A, int lda, const uint16_t *packed, float *C,
             int ldc, int accumulate, float *rowmax);

/* The linear layers of a bf16 ViT (amx_linear.c): products A (M, K) . W^T with W (N, K)
 * packed by amx_pack(W16, K, 1, K, N, packed), K a multiple of 32, and the epilogue on
 * each block of results while it is in L1. Exactly one of:
 *   out16: out16 = bf16(act(A W^T + bias)), rows ld_out apart; with group > 0 (a
 *          multiple of 32) column n goes to group n / group, group_stride elements
 *          apart, at column n % group (q, k, v written straight into per-head planes);
 *   add_to: add_to (rows ld_add apart) += scale * (A W^T + bias) (scale NULL: 1; act
 *          must be ENG_ACT_NONE) -- the residual stream.
 * bias / scale (N) may be NULL. Runs on the OpenMP team. Returns 0, or -1 (nothing
 * written) when AMX is not ready, the arguments are outside the above, or memory is
 * short: the caller then takes its other path. */
typedef struct {
    const float *bias, *scale;
    int act; /* ENG_ACT_* (engine.h) */
    uint16_t *out16;
    int ld_out, group;
    size_t group_stride;
    float *add_to;
    int ld_add;
} amx_epilogue;
int amx_linear(int M, int N, int K, const uint16_t *A, int lda, const uint16_t *packed,
               const amx_epilogue *ep);

/* One 32 x 32 fp32 block c (row stride cld floats) = (or += when accumulate) 32 rows of
 * bf16 A at a (row stride a_ld; chunks x 32 columns) times one packed panel pp (the
 * layout of amx_pack and sk_pack: (chunks x 16 pairs, 32, 2)), in tiles 0-7 as
 * amx_tiles_begin configures them. Each load comes just before the first product that
 * needs it, so the tile unit works on one product while the next operand arrives
 * (measured: P V at 448 px, 578 -> 680 GFLOP/s on one core, vs all four loads first).
 * Shared by amx_gemm, the fused zero-shot kernel and the fp32 screen. */
/* Chunk kc (32 deep) of a 32 x 32 block: tmm0-3 += the two A tiles (rows 0-15 and 16-31
 * of a, tmm4-5) times the two B tiles of panel pp (columns 0-15 and 16-31, tmm6-7). */
static inline __attribute__((target("amx-tile,amx-bf16"), always_inline)) void
amx_chunk32(const uint16_t *a, int a_ld, const uint16_t *pp, int kc)
{
    _tile_loadd(4, a + kc * 32, a_ld * 2);
    _tile_loadd(6, pp + (size_t)kc * 16 * 32 * 2, 32 * 4);
    _tile_dpbf16ps(0, 4, 6);
    _tile_loadd(7, pp + (size_t)kc * 16 * 32 * 2 + 32, 32 * 4);
    _tile_dpbf16ps(1, 4, 7);
    _tile_loadd(5, a + (size_t)16 * a_ld + kc * 32, a_ld * 2);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
}

static inline __attribute__((target("amx-tile,amx-bf16"), always_inline)) void
amx_block32(const uint16_t *a, int a_ld, const uint16_t *pp, int chunks, float *c, int cld,
            int accumulate)
{
    if (accumulate) {
        _tile_loadd(0, c, cld * 4);
        _tile_loadd(1, c + 16, cld * 4);
        _tile_loadd(2, c + (size_t)16 * cld, cld * 4);
        _tile_loadd(3, c + (size_t)16 * cld + 16, cld * 4);
    } else {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    }
    for (int kc = 0; kc < chunks; kc++) amx_chunk32(a, a_ld, pp, kc);
    _tile_stored(0, c, cld * 4);
    _tile_stored(1, c + 16, cld * 4);
    _tile_stored(2, c + (size_t)16 * cld, cld * 4);
    _tile_stored(3, c + (size_t)16 * cld + 16, cld * 4);
}

#endif
