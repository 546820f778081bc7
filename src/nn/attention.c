/* attention.c — multi-head scaled dot-product attention, blocked with an online
 * softmax (see docs/ENGINE.md), so that only a (BQ, BK) tile of each head's (T, T)
 * score matrix exists at a time.
 *
 * For each head h and block of BQ query rows, over the key blocks of BK keys:
 *   S = scale * Q_blk . K_blk^T                   (BQ, BK)  one engine GEMM
 *   m' = max(m, rowmax S);  c = exp(m - m')       running row maximum and its correction
 *   P = exp(S - m');  l = c * l + rowsum P        running softmax denominator
 *   acc = c * acc + P . V_blk                     (BQ, dh)  one engine GEMM (beta = 1)
 * and at the end ctx = acc / l. The middle three lines are one pass per row
 * (softmax_tile.c, AVX-512 or AVX2 as the CPU has), which writes P directly
 * in the GEMM's type. Key blocks are equal (key_block): for a 448-px ViT (T = 1025) one
 * block holds every key, so the recurrence runs once. This is the exact softmax(QK^T/sqrt(dh)) V of the
 * reference, reordered (FlashAttention's recurrence); in bf16, Q, K, V and P enter the
 * GEMMs as bf16 while m, l, acc and the exponentials stay fp32.
 *
 * Work items (head, query block) are spread over the OpenMP team; each item's GEMMs run
 * on its own thread (oneDNN runs single-threaded inside a parallel region). */
#include "compute/amx.h"
#include "compute/engine.h"
#include "ops.h"
#include "compute/softmax_tile.h"
#include "compute/vecmath.h"

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#define BQ 128      /* query rows per block */
#define BK_MAX 2048 /* keys per block at most: a (BQ, BK) fp32 tile is at most 1 MB (L2) */

/* Keys per block for T keys: the blocks are of equal size (a multiple of VL), so no
 * block is a sliver (T = 1025 is one block of 1040, not 1024 + 1). */
static int key_block(int T)
{
    const int blocks = (T + BK_MAX - 1) / BK_MAX, bk = (T + blocks - 1) / blocks;
    return (bk + VL - 1) / VL * VL;
}

/* Per-thread scratch (engine thread buffers: freed when an OpenMP worker exits). */
typedef struct {
    float *s;      /* (BQ, BK) scores / probabilities */
    bf16_t *p16;   /* (BQ, BK rounded up to 32) probabilities in bf16 */
    float *acc;    /* (BQ, dh) */
    float *m, *l;  /* (BQ) running maximum and denominator */
    float *rowmax; /* (BQ) AMX: each row's maximum score, found by the S GEMM */
} attn_scratch;

static int scratch_get(attn_scratch *t, int dh, int bk)
{
    t->s = eng_thread_buffer(ENG_SLOT_ATTN, (size_t)BQ * bk * sizeof(float));
    t->p16 = eng_thread_buffer(ENG_SLOT_ATTN + 1, (size_t)BQ * amx_kpad(bk) * sizeof(bf16_t));
    t->acc = eng_thread_buffer(ENG_SLOT_ATTN + 2, ((size_t)BQ * dh + 3 * BQ) * sizeof(float));
    if (!t->s || !t->p16 || !t->acc) return 0;
    t->m = t->acc + (size_t)BQ * dh;
    t->l = t->m + BQ;
    t->rowmax = t->l + BQ;
    return 1;
}

/* One (head, query block): rows q0..q0+nq-1 of head h. q, k, v: the head's dense
 * (T, dh) matrices (fp32 or bf16 as `bf16` says). Every operand is dense (leading
 * dimension = its width): oneDNN's brgemm kernels (AMX for bf16) take only dense ones;
 * strided views into qkv fall back to a slower generic GEMM. Returns 0 or -1. */
static int block(attn_scratch *tl, float *ctx, bf16_t *ctx16, const void *q, const void *k,
                 const void *v, const eng_packed *kp, const eng_packed *vp, const uint16_t *ka,
                 const uint16_t *va, int T, int D, int dh, int h, int q0, int nq, int bk,
                 float scale, int bf16)
{
    float *acc = tl->acc, *m = tl->m, *l = tl->l;
    /* the operands as their type says (one of each pair is NULL) */
    const float *qf = bf16 ? NULL : (const float *)q + (size_t)q0 * dh;
    const bf16_t *qh = bf16 ? (const bf16_t *)q + (size_t)q0 * dh : NULL;
    for (int r = 0; r < nq; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
    }
    memset(acc, 0, (size_t)nq * dh * sizeof(float));
    for (int k0 = 0; k0 < T; k0 += bk) {
        const int nk = PE_MIN(bk, T - k0);
        const size_t off = (size_t)k0 * dh;
        const float *kf = bf16 ? NULL : (const float *)k + off,
                    *vf = bf16 ? NULL : (const float *)v + off;
        const bf16_t *kh = bf16 ? (const bf16_t *)k + off : NULL,
                     *vh = bf16 ? (const bf16_t *)v + off : NULL;
        float *S = tl->s; /* (nq, nk): dense for the engine, rows bk apart for AMX */
        int rc;
        const int kb = k0 / bk;
        if (ka) { /* AMX tiles (one key block: ka, va are this head's K and V packed) */
            const int ldp = amx_kpad(nk); /* P rows zero-padded to the tile depth */
            /* S rows bk apart (a multiple of 16 floats): each tile row is stored into one
             * cache line, not two (measured: Q K^T at 448 px 49 -> 26 us per block) */
            if (amx_gemm(nq, nk, dh, qh, dh, ka, S, bk, 0, tl->rowmax)) return -1;
            softmax_tile(S, bk, tl->p16, ldp, nq, nk, scale, m, l, acc, dh, tl->rowmax);
            for (int r = 0; r < nq; r++)
                memset(tl->p16 + (size_t)r * ldp + nk, 0, (size_t)(ldp - nk) * sizeof(bf16_t));
            if (amx_gemm(nq, dh, nk, tl->p16, ldp, va, acc, dh, 1, NULL)) return -1;
            continue;
        }
        /* S (nq, nk) = scale * Q (nq, dh) . K (nk, dh)^T: K packed once per head and key
         * block when the engine could (kp), else the plain GEMM (it repacks per call) */
        rc = kp && kp[kb].data
                 ? eng_gemm_packed(nq, scale, bf16 ? (const void *)qh : qf, &kp[kb], 0.0f, S, nk)
                 : -1;
        if (rc && bf16) rc = eng_gemm_bf16(1, nq, nk, dh, scale, qh, dh, kh, dh, 0.0f, S, nk, NULL);
        else if (rc)
            rc = eng_gemm(PE_PRECISION_FP32, 1, nq, nk, dh, scale, qf, dh, kf, dh, 0.0f, S, nk,
                          NULL);
        if (rc) return -1;
        softmax_tile(S, nk, bf16 ? tl->p16 : NULL, nk, nq, nk, 1.0f, m, l, acc, dh, NULL);
        /* acc (nq, dh) += P (nq, nk) . V (nk, dh) */
        const void *P = bf16 ? (const void *)tl->p16 : S;
        rc = vp && vp[kb].data ? eng_gemm_packed(nq, 1.0f, P, &vp[kb], 1.0f, acc, dh) : -1;
        if (rc && bf16)
            rc = eng_gemm_bf16(0, nq, dh, nk, 1.0f, tl->p16, nk, vh, dh, 1.0f, acc, dh, NULL);
        else if (rc)
            rc = eng_gemm(PE_PRECISION_FP32, 0, nq, dh, nk, 1.0f, S, nk, vf, dh, 1.0f, acc, dh,
                          NULL);
        if (rc) return -1;
    }
    for (int r = 0; r < nq; r++) {
        const float inv = 1.0f / l[r];
        float *a = acc + (size_t)r * dh;
#pragma omp simd
        for (int i = 0; i < dh; i++) a[i] *= inv;
        if (ctx16) eng_to_bf16(ctx16 + (size_t)(q0 + r) * D + h * dh, a, (size_t)dh);
        else memcpy(ctx + (size_t)(q0 + r) * D + h * dh, a, (size_t)dh * sizeof(float));
    }
    return 0;
}

/* CLS row of every head, exactly in fp32 from qkv: cls_attn[j - first] = mean over heads
 * of softmax_j(scale * q_0 . k_j), j >= first (the PatchEAD+ foreground mask). */
static void cls_attention(const float *qkv, int T, int D, int H, float scale, float *cls_attn,
                          int first, float *row)
{
    const int dh = D / H, ld = 3 * D;
    memset(cls_attn, 0, (size_t)(T - first) * sizeof(float));
    for (int h = 0; h < H; h++) {
        const float *q = qkv + h * dh;
        float mx = -INFINITY;
        for (int j = 0; j < T; j++) {
            const float *k = qkv + (size_t)j * ld + D + h * dh;
            float d = 0.0f;
#pragma omp simd reduction(+ : d)
            for (int i = 0; i < dh; i++) d += q[i] * k[i];
            row[j] = d * scale;
            mx = row[j] > mx ? row[j] : mx;
        }
        double sum = 0;
        for (int j = 0; j < T; j++) sum += row[j] = expf(row[j] - mx);
        for (int j = first; j < T; j++) cls_attn[j - first] += (float)(row[j] / sum) / (float)H;
    }
}

/* Each head's K and V, per key block, packed once into the layout the GEMM kernel wants
 * (eng_pack_b) for every query block that uses them: handles [K or V][head][key block],
 * the packed data in the caller's kept buffer. bf16 only: AMX wants VNNI tiles, and
 * packing once instead of in every product took ViT-S/14 at 448 px from 272 to 228 ms.
 * NULL (every product then takes the plain path) when the engine cannot pack these
 * shapes or memory is short. */
static eng_packed *pack_heads(const char *heads, int T, int H, int dh, int bk, int nkb, int bf16)
{
    /* fp32 kernels read K^T and V in place at full speed: packing only costs there
     * (measured: ViT-S/14 at 448 px, 2 threads, 403 ms packed vs 372 ms plain) */
    if (!bf16) return NULL;
    const pe_precision prec = bf16 ? PE_PRECISION_BF16 : PE_PRECISION_FP32;
    const size_t per = (size_t)T * dh, esz = bf16 ? sizeof(bf16_t) : sizeof(float);
    const int n = 2 * H * nkb;
    eng_packed *out = calloc((size_t)n, sizeof *out);
    size_t *at = malloc(((size_t)n + 1) * sizeof *at);
    char *store = NULL;
    int failed = !out || !at;
    /* sizes and offsets first (serially: the engine builds one packing recipe per shape) */
    for (int i = 0, off = 0; i < n && !failed; i++) {
        const int part = i / (H * nkb), nk = PE_MIN(bk, T - (i % nkb) * bk);
        const size_t bytes =
            part == 0 ? eng_packed_size(prec, 1, nk, dh, BQ) : eng_packed_size(prec, 0, dh, nk, BQ);
        at[i] = (size_t)off;
        off += (int)((bytes + 63) & ~(size_t)63);
        at[i + 1] = (size_t)off;
        failed = bytes == 0;
    }
    if (!failed) store = eng_thread_buffer(ENG_SLOT_ATTN_PACKED, at[n]);
    if (failed || !store) { /* (an OpenMP `if` would still run the loop, serially) */
        free(at);
        free(out);
        return NULL;
    }
#pragma omp parallel for schedule(static) reduction(| : failed)
    for (int i = 0; i < n; i++) {
        const int part = i / (H * nkb), h = (i / nkb) % H, kb = i % nkb;
        const int nk = PE_MIN(bk, T - kb * bk);
        /* part 0: K (nk, dh) rows, the B^T of S = Q K^T; part 1: V (nk, dh), the B of P V */
        const char *src = heads + (((size_t)(1 + part) * H + h) * per + (size_t)kb * bk * dh) * esz;
        failed |= part == 0 ? eng_pack_b(prec, 1, nk, dh, BQ, src, store + at[i], &out[i])
                            : eng_pack_b(prec, 0, dh, nk, BQ, src, store + at[i], &out[i]);
    }
    free(at);
    if (failed) {
        free(out);
        return NULL;
    }
    return out;
}

/* AMX: each head's K (as the B^T of S = Q K^T) and V (the B of P V) packed into the tile
 * kernels' panels (amx.h), [head][K then V], in the caller's kept buffer. NULL when
 * memory is short (the engine path then runs). */
static uint16_t *pack_heads_amx(const char *heads, int T, int H, int dh)
{
    const size_t per = (size_t)T * dh, kbytes = amx_packed_bytes(dh, T),
                 vbytes = amx_packed_bytes(T, dh);
    char *store = eng_thread_buffer(ENG_SLOT_ATTN_PACKED, (size_t)H * (kbytes + vbytes));
    if (!store) return NULL;
    const bf16_t *hk = (const bf16_t *)(const void *)heads + (size_t)H * per,
                 *hv = (const bf16_t *)(const void *)heads + (size_t)2 * H * per;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < 2 * H; i++) {
        const int h = i / 2;
        char *dst = store + (size_t)h * (kbytes + vbytes) + (i % 2 ? kbytes : 0);
        if (i % 2 == 0) amx_pack(hk + (size_t)h * per, dh, 1, dh, T, (uint16_t *)(void *)dst);
        else amx_pack(hv + (size_t)h * per, dh, 0, T, dh, (uint16_t *)(void *)dst);
    }
    return (uint16_t *)(void *)store;
}

/* Heads h0..h0+hn-1 of q, k and v copied from their rows into the dense per-head
 * layout [part q/k/v][head - h0][T][dh] (see block); bf16 rounds here when the qkv rows
 * are fp32 and the GEMMs bf16. */
static void copy_heads(char *heads, const float *qkv, const bf16_t *qkv16, int planar, int T, int D,
                       int dh, int h0, int hn, int bf16)
{
    const size_t per = (size_t)T * dh;
    const size_t row_stride = planar ? (size_t)D : (size_t)3 * D,
                 part_stride = planar ? (size_t)T * D : (size_t)D;
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++)
        for (int part = 0; part < 3; part++)
            for (int hh = 0; hh < hn; hh++) {
                const size_t from =
                    (size_t)t * row_stride + (size_t)part * part_stride + (size_t)(h0 + hh) * dh;
                const size_t at = ((size_t)(part * hn + hh) * per + (size_t)t * dh);
                if (qkv16) memcpy((bf16_t *)(void *)heads + at, qkv16 + from, (size_t)dh * 2);
                else if (bf16) eng_to_bf16((bf16_t *)(void *)heads + at, qkv + from, (size_t)dh);
                else memcpy((float *)(void *)heads + at, qkv + from, (size_t)dh * sizeof(float));
            }
}

/* Heads per round: all of them in bf16 (its K and V are packed once for every query
 * block); in fp32 only as many as keep every thread busy (at least 8 work items per
 * thread), so the dense copies of a 448-px ViT-S on 2 threads take 1.6 MB, not 4.7. */
static int heads_per_round(int H, int nqb, int bf16)
{
    if (bf16) return H;
    const int want = (8 * omp_get_max_threads() + nqb - 1) / nqb;
    return PE_MAX(1, PE_MIN(H, want));
}

/* The attention behind op_attention (qkv fp32, ctx fp32) and op_attention_bf16 (qkv16
 * and ctx16 bf16: the block's bf16 path); exactly one of each pair is non-NULL. qkv16
 * is (T, 3D) rows [q | k | v] (planar 0) or q, k, v (T, D) one after another (planar 1). */
static int attention(float *ctx, bf16_t *ctx16, const float *qkv, const bf16_t *qkv16, int planar,
                     const bf16_t *heads_given, int T, int D, int H, float scale, float *cls_attn,
                     int first_patch, void *work, size_t work_bytes)
{
    const int dh = D / H;
    const int bf16 =
        qkv16 || heads_given || eng_attention_bf16(eng_current()); /* bf16, or int8 + native bf16 */
    const size_t per = (size_t)T * dh, esz = bf16 ? sizeof(bf16_t) : sizeof(float);
    const int nqb = (T + BQ - 1) / BQ, bk = key_block(T), nkb = (T + bk - 1) / bk;
    const int hg = heads_per_round(H, nqb, bf16);
    /* heads: [part q/k/v][head of the round][T][dh], dense per head (see block); the
     * calling thread's buffer, kept between layers and calls (no per-layer malloc) */
    const size_t heads_bytes = (size_t)3 * hg * per * esz;
    char *heads = heads_given ? (char *)(uintptr_t)heads_given
                  : work && heads_bytes <= work_bytes
                      ? work
                      : eng_thread_buffer(ENG_SLOT_ATTN_HEADS, heads_bytes);
    if (!heads) {
        pe_fail(PE_ERR_NOMEM, "out of memory for the attention heads");
        return -1;
    }
    if (cls_attn && qkv) {
        float *row = pe_alloc((size_t)T, sizeof(float), "CLS attention row");
        if (!row) return -1;
        cls_attention(qkv, T, D, H, scale, cls_attn, first_patch, row);
        free(row);
    }
    const size_t kbytes = amx_packed_bytes(dh, T), vbytes = amx_packed_bytes(T, dh);
    eng_ctx *current = eng_current();
    int failed = 0;
    for (int h0 = 0; h0 < H && !failed; h0 += hg) {
        const int hn = PE_MIN(hg, H - h0), items = hn * nqb;
        double t = pe_prof_now();
        if (!heads_given) copy_heads(heads, qkv, qkv16, planar, T, D, dh, h0, hn, bf16);
        t = pe_prof_add(PE_PROF_ATTN_COPY, t);
        /* bf16 on AMX: K and V of each head packed for the tile kernels (amx.c); else the
         * engine's packing (oneDNN) where it helps, else plain products (hn = H here) */
        uint16_t *amx = bf16 && nkb == 1 && dh % 32 == 0 && amx_ready()
                            ? pack_heads_amx(heads, T, hn, dh)
                            : NULL;
        eng_packed *packed = amx ? NULL : pack_heads(heads, T, hn, dh, bk, nkb, bf16);
        t = pe_prof_add(PE_PROF_ATTN_PACK, t);
#pragma omp parallel for schedule(dynamic, 1) reduction(| : failed)
        for (int it = 0; it < items; it++) {
            eng_ctx *prev = eng_set_current(current); /* worker threads see the caller's engine */
            const int hh = it / nqb, q0 = (it % nqb) * BQ;
            const char *q = heads + (size_t)hh * per * esz,
                       *k = heads + (size_t)(hn + hh) * per * esz,
                       *v = heads + (size_t)(2 * hn + hh) * per * esz;
            attn_scratch tl;
            const eng_packed *kp = packed ? packed + (size_t)hh * nkb : NULL,
                             *vp = packed ? packed + (size_t)(hn + hh) * nkb : NULL;
            const char *ah = amx ? (const char *)amx + (size_t)hh * (kbytes + vbytes) : NULL;
            const uint16_t *ka = ah ? (const uint16_t *)(const void *)ah : NULL,
                           *va = ah ? (const uint16_t *)(const void *)(ah + kbytes) : NULL;
            if (!scratch_get(&tl, dh, bk) ||
                block(&tl, ctx, ctx16, q, k, v, kp, vp, ka, va, T, D, dh, h0 + hh, q0,
                      PE_MIN(BQ, T - q0), bk, scale, bf16))
                failed = 1;
            eng_set_current(prev);
        }
        pe_prof_add(PE_PROF_ATTN_CORE, t);
        free(packed);
    }
    return failed ? -1 : 0;
}

int op_attention(float *ctx, const float *qkv, int T, int D, int H, float scale, float *cls_attn,
                 int first_patch, void *work, size_t work_bytes)
{
    return attention(ctx, NULL, qkv, NULL, 0, NULL, T, D, H, scale, cls_attn, first_patch, work,
                     work_bytes);
}

int op_attention_bf16(uint16_t *ctx16, const uint16_t *qkv16, int planar, int T, int D, int H,
                      float scale)
{
    return attention(NULL, ctx16, NULL, qkv16, planar, NULL, T, D, H, scale, NULL, 0, NULL, 0);
}
int op_attention_bf16_heads(uint16_t *ctx16, const uint16_t *heads16, int T, int D, int H,
                            float scale)
{
    /* (bf16: every head in one round, so the given planes are the round's) */
    return attention(NULL, ctx16, NULL, NULL, 0, heads16, T, D, H, scale, NULL, 0, NULL, 0);
}
