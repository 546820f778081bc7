/* engine.c — GEMMs on oneDNN's matmul with run-time ISA dispatch (see engine.h and
 * docs/ENGINE.md).
 *
 * One process-wide CPU engine; one stream per thread. Matmul primitives are cached by
 * their full description (precision, M, N, K, strides, alpha, beta, bias): the ViT makes
 * the same ~10 shapes per block over and over, and creating a primitive (JIT included)
 * costs far more than running a small one. Operands stay in patchead's plain row-major
 * layouts (strides given to oneDNN), so no activation is ever reordered; bf16 operands
 * are produced by eng_to_bf16 (weights once per model, activations once per call). */
#include "engine.h"
#include "vecmath.h"

#include <dnnl.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <pthread.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

/* ------------------------------------------------------------------ engine, ISA */

static dnnl_engine_t g_engine;
static int g_engine_ok;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void engine_init(void)
{
    g_engine_ok = dnnl_engine_create(&g_engine, dnnl_cpu, 0) == dnnl_success;
}

static dnnl_engine_t engine(void)
{
    pthread_once(&g_once, engine_init);
    return g_engine_ok ? g_engine : NULL;
}

/* One stream per thread (a stream is not meant to be shared by concurrent callers);
 * freed at thread exit through the key's destructor. */
static pthread_key_t g_stream_key;
static pthread_once_t g_stream_once = PTHREAD_ONCE_INIT;
static void stream_free(void *s) { dnnl_stream_destroy((dnnl_stream_t)s); }
static void stream_key_init(void) { pthread_key_create(&g_stream_key, stream_free); }

static dnnl_stream_t stream(void)
{
    pthread_once(&g_stream_once, stream_key_init);
    dnnl_stream_t s = pthread_getspecific(g_stream_key);
    if (s) return s;
    dnnl_engine_t e = engine();
    if (!e || dnnl_stream_create(&s, e, dnnl_stream_default_flags) != dnnl_success) return NULL;
    pthread_setspecific(g_stream_key, s);
    return s;
}

const char *eng_isa_name(void)
{
    switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_mic: return "avx512_mic";
    case dnnl_cpu_isa_avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    default: return "unknown";
    }
}

int eng_native_bf16(void)
{
    /* the ISA values are bit sets: every ISA with AVX-512-BF16 contains its bits (AMX too);
     * DNNL_MAX_CPU_ISA in the environment lowers this, which the tests use */
    unsigned isa = (unsigned)dnnl_get_effective_cpu_isa();
    return (isa & (unsigned)dnnl_cpu_isa_avx512_core_bf16) ==
           (unsigned)dnnl_cpu_isa_avx512_core_bf16;
}

const char *pe_engine_isa(void) { return eng_isa_name(); }

const char *pe_precision_name(pe_precision p)
{
    switch (p) {
    case PE_PRECISION_FP32: return "fp32";
    case PE_PRECISION_BF16: return "bf16";
    case PE_PRECISION_AUTO: return "auto";
    case PE_PRECISION_INT8: return "int8";
    }
    return "?";
}

pe_status pe_precision_parse(const char *name, pe_precision *out)
{
    static const pe_precision all[] = {PE_PRECISION_FP32, PE_PRECISION_BF16, PE_PRECISION_AUTO,
                                       PE_PRECISION_INT8};
    for (int i = 0; name && i < 4; i++)
        if (!strcasecmp(name, pe_precision_name(all[i]))) {
            *out = all[i];
            return PE_OK;
        }
    return pe_fail(PE_ERR_ARG, "precision '%s' is not one of fp32, bf16, auto, int8",
                   name ? name : "");
}

pe_precision pe_precision_resolve(pe_precision p)
{
    if (p == PE_PRECISION_AUTO) return eng_native_bf16() ? PE_PRECISION_BF16 : PE_PRECISION_FP32;
    if (p == PE_PRECISION_INT8) return PE_PRECISION_INT8;
    return p == PE_PRECISION_BF16 ? PE_PRECISION_BF16 : PE_PRECISION_FP32;
}

/* ------------------------------------------------------------------ bf16 conversion */

VEC_INLINE void to_bf16_body(bf16_t *dst, const float *src, size_t n)
{
    size_t i = 0;
    for (; i + VL <= n; i += VL) vstore_bf16(dst + i, vload(src + i, VL, 0.0f), VL);
    if (i < n) vstore_bf16(dst + i, vload(src + i, n - i, 0.0f), n - i);
}
VEC_KERNEL(to_bf16, (bf16_t * dst, const float *src, size_t n), (dst, src, n))

/* round to nearest even on the bit pattern; a NaN keeps a quiet-NaN pattern (vecmath.h) */
void eng_to_bf16(bf16_t *dst, const float *src, size_t n) { to_bf16(dst, src, n); }

void eng_to_bf16_2d(bf16_t *dst, const float *src, int rows, int cols, int ld)
{
    /* across the team when large (a linear's input: 1025 x 1536 is 0.3 ms on one core);
     * inside a parallel region (attention, scoring) it stays on the calling thread */
#pragma omp parallel for schedule(static) if ((size_t)rows * cols >= ((size_t)1 << 16))
    for (int r = 0; r < rows; r++)
        eng_to_bf16(dst + (size_t)r * cols, src + (size_t)r * ld, (size_t)cols);
}

/* ------------------------------------------------------------------ int8 quantization */

/* Symmetric s8 with one scale per row: scale = max |x| / 127, q = x * (127 / max |x|)
 * rounded to nearest even (one rounding: the product and the 1.5 * 2^23 shift are one
 * fused multiply-add, in the scalar copy below and in the vector one, which GCC contracts
 * the same way: both give the same bits). A zero row has scale 0 and q 0; a row with inf
 * or NaN a non-finite scale, so its products come out non-finite as in fp32. */
#define ROUND_SHIFT 12582912.0f /* 1.5 * 2^23: x + shift - shift rounds |x| < 2^22 */
float eng_quantize_s8(int8_t *q, const float *x, int n)
{
    float amax = 0.0f;
    int nan = 0;
    for (int i = 0; i < n; i++) {
        nan |= x[i] != x[i];
        amax = fmaxf(amax, fabsf(x[i]));
    }
    if (nan) amax = __builtin_nanf("");
    const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (int i = 0; i < n; i++) q[i] = (int8_t)(int)(fmaf(x[i], inv, ROUND_SHIFT) - ROUND_SHIFT);
    return amax / 127.0f;
}

typedef int8_t vq __attribute__((vector_size(VL)));
VEC_INLINE void quant_row_body(int8_t *q, float *scale, const float *x, const float *ch, int n)
{
    vf m = vsplat(0.0f);
    vi ne = {0};
    for (int i = 0; i < n; i += VL) {
        const size_t k = (size_t)(n - i) < VL ? (size_t)(n - i) : VL;
        vf v = vload(x + i, k, 0.0f);
        if (ch) v *= vload(ch + i, k, 0.0f);
        const vf a = (vf)((vi)v & 0x7fffffff);
        m = vsel(a > m, a, m);
        ne |= v != v;
    }
    int nan = 0;
    for (int l = 0; l < VL; l++) nan |= ne[l];
    const float amax = nan ? __builtin_nanf("") : vmax_lanes(m);
    const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    *scale = amax / 127.0f;
    for (int i = 0; i < n; i += VL) {
        const size_t k = (size_t)(n - i) < VL ? (size_t)(n - i) : VL;
        vf v = vload(x + i, k, 0.0f);
        if (ch) v *= vload(ch + i, k, 0.0f);
        const vf t = v * inv + ROUND_SHIFT - ROUND_SHIFT;
        const vq b = __builtin_convertvector(__builtin_convertvector(t, vi), vq);
        memcpy(q + i, &b, k);
    }
}
/* (x * ch, ch (n) per channel, NULL: 1; see prepare_weight's smoothing) */
VEC_KERNEL(quant_row, (int8_t * q, float *scale, const float *x, const float *ch, int n),
           (q, scale, x, ch, n))

/* One output row of an int8 linear: y = acc * (rs * cs) + bias, act(y), then out = y,
 * out += y (add) or out += ls * y (LayerScale, ls != NULL). */
VEC_INLINE void int8_epilogue_body(float *out, const float *acc, float rs, const float *cs,
                                   const float *bias, int act, const float *ls, int add, int n)
{
    for (int j = 0; j < n; j += VL) {
        const size_t k = (size_t)(n - j) < VL ? (size_t)(n - j) : VL;
        vf y = vload(acc + j, k, 0.0f) * (vload(cs + j, k, 0.0f) * rs);
        if (bias) y += vload(bias + j, k, 0.0f);
        switch (act) {
        case ENG_ACT_GELU: y = v_gelu(y); break;
        case ENG_ACT_GELU_TANH: y = v_gelu_tanh(y); break;
        case ENG_ACT_QUICK_GELU: y = v_quick_gelu(y); break;
        case ENG_ACT_SILU: y = v_silu(y); break;
        default: break;
        }
        if (ls) y = vload(out + j, k, 0.0f) + vload(ls + j, k, 0.0f) * y;
        else if (add) y += vload(out + j, k, 0.0f);
        vstore(out + j, y, k);
    }
}
VEC_KERNEL(int8_epilogue,
           (float *out, const float *acc, float rs, const float *cs, const float *bias, int act,
            const float *ls, int add, int n),
           (out, acc, rs, cs, bias, act, ls, add, n))

/* ------------------------------------------------------------------ primitive cache */

typedef struct {
    int prec, trans_b, M, N, K, lda, ldb, ldc, has_bias;
    float alpha, beta;
    const dnnl_memory_desc_t *b_fixed; /* B in this (blocked) layout: a prepared weight */
    int dst_bf16;                      /* C in bf16 (else fp32) */
    int act;                           /* ENG_ACT_*: an activation applied to C (post-op) */
    int col_scale; /* the product (bias included) times a (1, N) vector before the sum */
} prim_key;

typedef struct {
    prim_key key;
    dnnl_primitive_t prim;
    dnnl_memory_desc_t a_md, b_md, c_md, bias_md, scratch_md;
    dnnl_memory_desc_t scale_md; /* (1, N) fp32: the col_scale post-op's operand */
    size_t scratch_bytes;
    unsigned long last_use;
    int used;
} prim_entry;

/* Enough for every shape of a ViT forward (the scoring adds 2-3, attention ~4). */
#define PRIM_CACHE 96
static prim_entry g_cache[PRIM_CACHE];
static unsigned long g_clock;
static pthread_mutex_t g_cache_lock = PTHREAD_MUTEX_INITIALIZER;

static int key_eq(const prim_key *a, const prim_key *b)
{
    return a->prec == b->prec && a->trans_b == b->trans_b && a->M == b->M && a->N == b->N &&
           a->K == b->K && a->lda == b->lda && a->ldb == b->ldb && a->ldc == b->ldc &&
           a->has_bias == b->has_bias && a->alpha == b->alpha && a->beta == b->beta &&
           a->b_fixed == b->b_fixed && a->dst_bf16 == b->dst_bf16 && a->act == b->act &&
           a->col_scale == b->col_scale;
}

/* The key of a plain product C (M, N) = alpha A (M, K; lda) . op(B) (ldb) (+ beta C)
 * (+ bias): B in the given layout, C fp32, no post-op; callers switch on the extras. */
static prim_key plain_key(int prec, int trans_b, int M, int N, int K, int lda, int ldb, int ldc,
                          int has_bias, float alpha, float beta)
{
    return (prim_key){.prec = prec,
                      .trans_b = trans_b,
                      .M = M,
                      .N = N,
                      .K = K,
                      .lda = lda,
                      .ldb = ldb,
                      .ldc = ldc,
                      .has_bias = has_bias,
                      .alpha = alpha,
                      .beta = beta};
}

/* Build the primitive for `k`. Returns 0 on success. */
static int prim_create(const prim_key *k, prim_entry *e)
{
    dnnl_engine_t eng = engine();
    if (!eng) return -1;
    /* INT8: s8 rows times a prepared s8 weight into fp32 (the int32 sums, exact below
     * 2^24), no bias or post-op: the scales come after, in linear_int8's epilogue */
    dnnl_data_type_t in_t = k->prec == PE_PRECISION_BF16   ? dnnl_bf16
                            : k->prec == PE_PRECISION_INT8 ? dnnl_s8
                                                           : dnnl_f32;
    dnnl_dims_t a_dims = {k->M, k->K}, a_str = {k->lda, 1};
    dnnl_dims_t b_dims = {k->K, k->N}, b_str;
    /* B as a logical (K, N) matrix: trans_b stores it as (N, K) rows, i.e. strides (1, ldb) */
    if (k->trans_b) {
        b_str[0] = 1;
        b_str[1] = k->ldb;
    } else {
        b_str[0] = k->ldb;
        b_str[1] = 1;
    }
    dnnl_dims_t c_dims = {k->M, k->N}, c_str = {k->ldc, 1};
    dnnl_dims_t bias_dims = {1, k->N}, bias_str = {k->N, 1};
    memset(e, 0, sizeof *e);
    if (dnnl_memory_desc_init_by_strides(&e->a_md, 2, a_dims, in_t, a_str) ||
        (k->b_fixed ? (e->b_md = *k->b_fixed, 0)
                    : dnnl_memory_desc_init_by_strides(&e->b_md, 2, b_dims, in_t, b_str)) ||
        dnnl_memory_desc_init_by_strides(&e->c_md, 2, c_dims, k->dst_bf16 ? dnnl_bf16 : dnnl_f32,
                                         c_str) ||
        (k->has_bias &&
         dnnl_memory_desc_init_by_strides(&e->bias_md, 2, bias_dims, dnnl_f32, bias_str)))
        return -1;
    dnnl_matmul_desc_t desc;
    if (dnnl_matmul_desc_init(&desc, &e->a_md, &e->b_md, k->has_bias ? &e->bias_md : NULL,
                              &e->c_md))
        return -1;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    int rc = -1;
    if (dnnl_primitive_attr_create(&attr)) return -1;
    /* user scratchpad: each calling thread passes its own (oneDNN's shared library
     * scratchpad is not safe when one primitive runs on several threads at once, as it
     * does when the scoring and attention run one GEMM per thread) */
    if (dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user)) goto done;
    if (k->alpha != 1.0f && dnnl_primitive_attr_set_output_scales(attr, 1, 0, &k->alpha)) goto done;
    dnnl_dims_t scale_dims = {1, k->N};
    if (k->col_scale &&
        dnnl_memory_desc_init_by_tag(&e->scale_md, 2, scale_dims, dnnl_f32, dnnl_ab))
        goto done;
    if (k->beta != 0.0f || k->act != ENG_ACT_NONE || k->col_scale) {
        /* oneDNN adds the bias before the post-ops: C = act(A B + bias) (+ beta C) */
        static const struct {
            dnnl_alg_kind_t alg;
            float alpha;
        } acts[] = {[ENG_ACT_GELU] = {dnnl_eltwise_gelu_erf, 0.0f},
                    [ENG_ACT_GELU_TANH] = {dnnl_eltwise_gelu_tanh, 0.0f},
                    [ENG_ACT_QUICK_GELU] = {dnnl_eltwise_swish, 1.702f}, /* x sigmoid(1.702 x) */
                    [ENG_ACT_SILU] = {dnnl_eltwise_swish, 1.0f}};
        if (dnnl_post_ops_create(&po) ||
            (k->act != ENG_ACT_NONE &&
             dnnl_post_ops_append_eltwise(po, 1.0f, acts[k->act].alg, acts[k->act].alpha, 0.0f)) ||
            (k->col_scale && dnnl_post_ops_append_binary(po, dnnl_binary_mul, &e->scale_md)) ||
            (k->beta != 0.0f && dnnl_post_ops_append_sum(po, k->beta)) ||
            dnnl_primitive_attr_set_post_ops(attr, po))
            goto done;
    }
    dnnl_primitive_desc_t pd = NULL;
    if (dnnl_primitive_desc_create(&pd, &desc, attr, eng, NULL)) goto done;
    /* A fused variant (activation, LayerScale, bf16 output) that only oneDNN's reference
     * kernel supports here is refused: that kernel is 100-1,000x slower than the unfused
     * product plus a pass of our own, which every caller of these variants falls back
     * to. Measured: LayerScale's binary_mul + sum on AVX2 and on AVX-512 without bf16,
     * and a bf16 output with a row stride, all went to ref:any. The refusal is cached
     * like a primitive (prim NULL), so it costs one query per shape. */
    /* INT8 takes only the brgemm kernels (AMX, AVX-512-VNNI, ...): with DNNL_MAX_CPU_ISA=AVX2
     * oneDNN 2.6.3 picked gemm:jit for s8 x s8 with the prepared weight, and its results
     * were wrong (rel 0.72 against the quantized reference in test_linear_int8) */
    const char *impl = NULL;
    if ((k->act != ENG_ACT_NONE || k->col_scale || k->dst_bf16 || k->prec == PE_PRECISION_INT8) &&
        !dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) && impl &&
        (!strncmp(impl, "ref", 3) || (k->prec == PE_PRECISION_INT8 && strncmp(impl, "brg", 3)))) {
        dnnl_primitive_desc_destroy(pd);
        e->prim = NULL;
        rc = 0;
        goto done;
    }
    e->scratch_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    e->scratch_bytes = dnnl_memory_desc_get_size(&e->scratch_md);
    rc = dnnl_primitive_create(&e->prim, pd) ? -1 : 0;
    dnnl_primitive_desc_destroy(pd);
done:
    if (po) dnnl_post_ops_destroy(po);
    dnnl_primitive_attr_destroy(attr);
    return rc;
}

/* Cached primitive for k (created on a miss; the least recently used entry goes). The
 * entry is copied out under the lock; primitives are never destroyed while in use
 * because eviction only happens with more than PRIM_CACHE live shapes, and a primitive
 * being executed is at most a few calls old. */
static int prim_get(const prim_key *k, prim_entry *out)
{
    pthread_mutex_lock(&g_cache_lock);
    prim_entry *victim = &g_cache[0];
    for (int i = 0; i < PRIM_CACHE; i++) {
        prim_entry *e = &g_cache[i];
        if (e->used && key_eq(&e->key, k)) {
            e->last_use = ++g_clock;
            *out = *e;
            pthread_mutex_unlock(&g_cache_lock);
            return e->prim ? 0 : -1; /* NULL: refused (reference kernel only) */
        }
        if (!e->used) {
            if (victim->used) victim = e;
        } else if (victim->used && e->last_use < victim->last_use) {
            victim = e;
        }
    }
    prim_entry fresh;
    int rc = prim_create(k, &fresh);
    if (!rc) {
        if (victim->used && victim->prim) dnnl_primitive_destroy(victim->prim);
        fresh.key = *k;
        fresh.used = 1;
        fresh.last_use = ++g_clock;
        *victim = fresh;
        *out = fresh;
        if (!fresh.prim) rc = -1;
    }
    pthread_mutex_unlock(&g_cache_lock);
    return rc;
}

/* Per-thread buffers (slots, see engine.h), grown on demand, never shrunk, freed at
 * thread exit by the key's destructor (OpenMP workers come and go with team sizes). */
typedef struct {
    void *p[ENG_SLOTS];
    size_t cap[ENG_SLOTS];
} thread_bufs;
static pthread_key_t g_bufs_key;
static pthread_once_t g_bufs_once = PTHREAD_ONCE_INIT;
static void bufs_free(void *x)
{
    thread_bufs *b = x;
    for (int i = 0; i < ENG_SLOTS; i++) free(b->p[i]);
    free(b);
}
static void bufs_key_init(void) { pthread_key_create(&g_bufs_key, bufs_free); }

void *eng_thread_buffer(int slot, size_t bytes)
{
    pthread_once(&g_bufs_once, bufs_key_init);
    thread_bufs *b = pthread_getspecific(g_bufs_key);
    if (!b) {
        b = calloc(1, sizeof *b);
        if (!b || pthread_setspecific(g_bufs_key, b)) {
            free(b);
            return NULL;
        }
    }
    if (bytes > b->cap[slot]) {
        free(b->p[slot]);
        b->p[slot] = pe_alloc(bytes, 1, "engine scratch");
        b->cap[slot] = b->p[slot] ? bytes : 0;
    }
    return b->p[slot];
}
#define thread_scratchpad(bytes) eng_thread_buffer(ENG_SLOT_ONEDNN, bytes)

/* col_scale: the (1, N) vector of a key with col_scale set (else NULL) */
static int run_matmul_scaled(const prim_key *k, const void *A, const void *B, void *C,
                             const float *bias, const float *col_scale)
{
    prim_entry e;
    dnnl_stream_t s = stream();
    if (!s || prim_get(k, &e)) return -1;
    dnnl_engine_t eng = engine();
    dnnl_memory_t ma = NULL, mb = NULL, mc = NULL, mbias = NULL, mscratch = NULL, mscale = NULL;
    void *scratch = e.scratch_bytes ? thread_scratchpad(e.scratch_bytes) : NULL;
    int rc = -1, nargs = 0;
    if ((e.scratch_bytes && !scratch) || dnnl_memory_create(&ma, &e.a_md, eng, (void *)A) ||
        dnnl_memory_create(&mb, &e.b_md, eng, (void *)B) ||
        dnnl_memory_create(&mc, &e.c_md, eng, C) ||
        (bias && dnnl_memory_create(&mbias, &e.bias_md, eng, (void *)bias)) ||
        (scratch && dnnl_memory_create(&mscratch, &e.scratch_md, eng, scratch)) ||
        (k->col_scale &&
         (!col_scale || dnnl_memory_create(&mscale, &e.scale_md, eng, (void *)col_scale))))
        goto done;
    dnnl_exec_arg_t args[6];
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, ma};
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, mb};
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_DST, mc};
    if (mbias) args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, mbias};
    if (mscratch) args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, mscratch};
    if (mscale) /* the binary post-op's operand: post-op 0 (the key has no activation then) */
        args[nargs++] = (dnnl_exec_arg_t){
            DNNL_ARG_ATTR_MULTIPLE_POST_OP(k->act != ENG_ACT_NONE) | DNNL_ARG_SRC_1, mscale};
    if (dnnl_primitive_execute(e.prim, s, nargs, args) || dnnl_stream_wait(s)) goto done;
    rc = 0;
done:
    if (ma) dnnl_memory_destroy(ma);
    if (mb) dnnl_memory_destroy(mb);
    if (mc) dnnl_memory_destroy(mc);
    if (mbias) dnnl_memory_destroy(mbias);
    if (mscratch) dnnl_memory_destroy(mscratch);
    if (mscale) dnnl_memory_destroy(mscale);
    return rc;
}

/* Row chunks of a large product over the OpenMP team, taken dynamically: a thread that
 * finishes early takes the next chunk, where oneDNN's own split gives each thread a fixed
 * share and the product waits for the slowest. Cores are not always equal: on the
 * shared VM of docs/ENGINE.md one vCPU ran the same pinned kernel at half the speed of
 * the other, the roles swapping within seconds; on a line PC the camera software takes
 * its turns. Measured there (ViT-S/14, 448 px, bf16, 2 threads, 10 alternating rounds):
 * median forward 132 -> 119 ms, best 79 -> 77-79 ms (no loss where the cores are even).
 * About 3 chunks per thread (2 at least), 64 rows at least, a multiple of 32, a last
 * sliver of under 32 rows joined to the chunk before; each chunk runs on one
 * thread (oneDNN is single-threaded inside a parallel region), with its own scratchpad.
 * Returns 0, 1 when it did not run (small or in a parallel region, or forced off: the
 * caller runs the product whole), or -1 when a chunk failed. */
static int g_chunk_rows = -1; /* eng_set_chunk_rows: -1 automatic, 0 off, > 0 rows */
static int run_matmul_chunked(const prim_key *k, const void *A, const void *B, void *C,
                              const float *bias, const float *col_scale)
{
    const int threads = omp_get_max_threads();
    /* only products with a prepared (blocked) weight: a plain one is packed by oneDNN in
     * every call, once per chunk instead of once per thread (fp32 ViT-B measured 874 ->
     * 905 ms best of 4 with it chunked) */
    if (g_chunk_rows == 0 || threads < 2 || omp_in_parallel() || !k->b_fixed) return 1;
    if (g_chunk_rows < 0 && (double)k->M * k->N * k->K < 5e7) return 1; /* not worth a split */
    int mc = g_chunk_rows;
    if (mc < 0) {
        mc = (k->M + 3 * threads - 1) / (3 * threads);
        mc = mc < 64 ? 64 : (mc + 31) / 32 * 32;
    }
    if (k->M <= mc) return 1;
    int chunks = (k->M + mc - 1) / mc;
    if (k->M - (chunks - 1) * mc < 32 && chunks > 2) chunks--; /* a sliver joins the last */
    /* fewer than 2 chunks per thread: no room to even out, oneDNN's own split is as good */
    if (g_chunk_rows < 0 && chunks < 2 * threads) return 1;
    const int tail = k->M - (chunks - 1) * mc;
    prim_key kc = *k, kt = *k;
    kc.M = mc;
    kt.M = tail;
    prim_entry e;
    if (prim_get(&kc, &e) || prim_get(&kt, &e)) return 1;
    const size_t a_row = (size_t)k->lda * (k->prec == PE_PRECISION_BF16   ? 2
                                           : k->prec == PE_PRECISION_INT8 ? 1
                                                                          : 4),
                 c_row = (size_t)k->ldc * (k->dst_bf16 ? 2 : 4);
    int failed = 0;
#pragma omp parallel for schedule(dynamic, 1) reduction(| : failed)
    for (int i = 0; i < chunks; i++)
        failed |=
            run_matmul_scaled(i == chunks - 1 ? &kt : &kc, (const char *)A + (size_t)i * mc * a_row,
                              B, (char *)C + (size_t)i * mc * c_row, bias, col_scale) != 0;
    return failed ? -1 : 0;
}

int eng_set_chunk_rows(int rows)
{
    const int before = g_chunk_rows;
    g_chunk_rows = rows;
    return before;
}

static int run_matmul(const prim_key *k, const void *A, const void *B, void *C, const float *bias)
{
    const int rc = run_matmul_chunked(k, A, B, C, bias, NULL);
    return rc <= 0 ? rc : run_matmul_scaled(k, A, B, C, bias, NULL);
}

/* ------------------------------------------------------------------ GEMM entry points */

/* bf16 kernels available? (oneDNN 2.6 has bf16 matmul from AVX-512 up; on AVX2 the
 * primitive cannot be created.) Checked once by creating a tiny one. */
static int g_bf16_ok = -1;
static int bf16_kernels(void)
{
    if (g_bf16_ok < 0) {
        prim_key k = plain_key(PE_PRECISION_BF16, 1, 16, 16, 32, 32, 32, 16, 0, 1.0f, 0.0f);
        prim_entry e;
        g_bf16_ok = prim_get(&k, &e) == 0;
    }
    return g_bf16_ok;
}

/* Converted operands: this thread's buffers (slots 0, 1 bf16; 2, 3 fp32). */
static bf16_t *scratch16(int which, size_t n)
{
    return eng_thread_buffer(ENG_SLOT_CONVERT + which, n * sizeof(bf16_t));
}
static float *scratch32(int which, size_t n)
{
    return eng_thread_buffer(ENG_SLOT_CONVERT + 2 + which, n * sizeof(float));
}

/* C (+)= product via a temp when beta is not 0 or 1 (never in patchead's own calls). */
static int gemm_general_beta(prim_key k, const void *A, const void *B, float *C, const float *bias)
{
    float *tmp = scratch32(1, (size_t)k.M * k.N);
    if (!tmp) return -1;
    float beta = k.beta;
    k.beta = 0.0f;
    k.ldc = k.N;
    if (run_matmul(&k, A, B, tmp, bias)) return -1;
    for (int i = 0; i < k.M; i++)
        for (int j = 0; j < k.N; j++)
            C[(size_t)i * k.ldc + j] = beta * C[(size_t)i * k.ldc + j] + tmp[(size_t)i * k.N + j];
    return 0;
}

static int matmul(prim_key k, const void *A, const void *B, float *C, int ldc, const float *bias)
{
    if (k.beta != 0.0f && k.beta != 1.0f) {
        k.ldc = ldc;
        return gemm_general_beta(k, A, B, C, bias);
    }
    k.ldc = ldc;
    return run_matmul(&k, A, B, C, bias);
}

int eng_gemm_bf16(int trans_b, int M, int N, int K, float alpha, const bf16_t *A, int lda,
                  const bf16_t *B, int ldb, float beta, float *C, int ldc, const float *bias)
{
    if (M <= 0 || N <= 0) return 0;
    if (bf16_kernels()) {
        prim_key k = plain_key(PE_PRECISION_BF16, trans_b != 0, M, N, K, lda, ldb, ldc,
                               bias != NULL, alpha, beta);
        return matmul(k, A, B, C, ldc, bias);
    }
    /* no bf16 kernels on this CPU: the fp32 kernel on the widened (exact) bf16 values */
    int b_rows = trans_b ? N : K, b_cols = trans_b ? K : N;
    float *a32 = scratch32(0, (size_t)M * K);
    float *b32 = malloc((size_t)b_rows * b_cols * sizeof(float));
    if (!a32 || !b32) {
        free(b32);
        return -1;
    }
    for (int i = 0; i < M; i++)
        for (int j = 0; j < K; j++)
            a32[(size_t)i * K + j] = eng_bf16_to_f32(A[(size_t)i * lda + j]);
    for (int i = 0; i < b_rows; i++)
        for (int j = 0; j < b_cols; j++)
            b32[(size_t)i * b_cols + j] = eng_bf16_to_f32(B[(size_t)i * ldb + j]);
    prim_key k = plain_key(PE_PRECISION_FP32, trans_b != 0, M, N, K, K, b_cols, ldc, bias != NULL,
                           alpha, beta);
    int rc = matmul(k, a32, b32, C, ldc, bias);
    free(b32);
    return rc;
}

int eng_gemm(pe_precision prec, int trans_b, int M, int N, int K, float alpha, const float *A,
             int lda, const float *B, int ldb, float beta, float *C, int ldc, const float *bias)
{
    if (M <= 0 || N <= 0) return 0;
    if (prec != PE_PRECISION_BF16) {
        prim_key k = plain_key(PE_PRECISION_FP32, trans_b != 0, M, N, K, lda, ldb, ldc,
                               bias != NULL, alpha, beta);
        return matmul(k, A, B, C, ldc, bias);
    }
    int b_rows = trans_b ? N : K, b_cols = trans_b ? K : N;
    bf16_t *a16 = scratch16(0, (size_t)M * K), *b16 = scratch16(1, (size_t)b_rows * b_cols);
    if (!a16 || !b16) return -1;
    eng_to_bf16_2d(a16, A, M, K, lda);
    eng_to_bf16_2d(b16, B, b_rows, b_cols, ldb);
    return eng_gemm_bf16(trans_b, M, N, K, alpha, a16, K, b16, b_cols, beta, C, ldc, bias);
}

const char *eng_impl_name(pe_precision prec, int M, int N, int K)
{
    static _Thread_local char name[96];
    name[0] = 0;
    dnnl_engine_t eng = engine();
    if (!eng) return name;
    dnnl_data_type_t t = prec == PE_PRECISION_BF16   ? dnnl_bf16
                         : prec == PE_PRECISION_INT8 ? dnnl_s8
                                                     : dnnl_f32;
    dnnl_dims_t a = {M, K}, b = {K, N}, c = {M, N};
    dnnl_memory_desc_t a_md, b_md, c_md;
    dnnl_matmul_desc_t desc;
    dnnl_primitive_desc_t pd;
    if (dnnl_memory_desc_init_by_tag(&a_md, 2, a, t, dnnl_ab) ||
        dnnl_memory_desc_init_by_tag(&b_md, 2, b, t,
                                     prec == PE_PRECISION_INT8 ? dnnl_format_tag_any : dnnl_ba) ||
        dnnl_memory_desc_init_by_tag(&c_md, 2, c, dnnl_f32, dnnl_ab) ||
        dnnl_matmul_desc_init(&desc, &a_md, &b_md, NULL, &c_md) ||
        dnnl_primitive_desc_create(&pd, &desc, NULL, eng, NULL))
        return name;
    const char *s = NULL;
    if (!dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &s) && s)
        snprintf(name, sizeof name, "%s", s);
    dnnl_primitive_desc_destroy(pd);
    return name;
}

/* ------------------------------------------------------------------ packed B */

/* One packing recipe per (precision, trans_b, N, K, m): the blocked layout oneDNN's
 * matmul picks for B ("any") and the reorder into it. Entries live as long as the
 * process (their layout address keys cached matmul primitives); when the table is
 * full, new shapes are simply not packed. */
typedef struct {
    int used, prec, trans_b, N, K, m;
    dnnl_memory_desc_t plain, packed;
    dnnl_primitive_t reorder;
    size_t bytes;
} pack_recipe;
#define PACK_RECIPES 32
static pack_recipe g_recipes[PACK_RECIPES];
static pthread_mutex_t g_recipe_lock = PTHREAD_MUTEX_INITIALIZER;

static pack_recipe *recipe_get(pe_precision prec, int trans_b, int N, int K, int m)
{
    pack_recipe *r = NULL;
    pthread_mutex_lock(&g_recipe_lock);
    for (int i = 0; i < PACK_RECIPES && !r; i++) {
        pack_recipe *e = &g_recipes[i];
        if (!e->used) {
            /* first free slot: build it (a failed build is remembered: bytes 0) */
            dnnl_engine_t eng = engine();
            dnnl_data_type_t t = prec == PE_PRECISION_BF16 ? dnnl_bf16 : dnnl_f32;
            dnnl_dims_t a = {m, K}, b = {K, N}, c = {m, N};
            dnnl_dims_t str = {trans_b ? 1 : N, trans_b ? K : 1};
            dnnl_memory_desc_t a_md, b_any, c_md;
            dnnl_matmul_desc_t desc;
            dnnl_primitive_desc_t pd = NULL, rpd = NULL;
            memset(e, 0, sizeof *e);
            e->used = 1;
            e->prec = (int)prec;
            e->trans_b = trans_b;
            e->N = N;
            e->K = K;
            e->m = m;
            if (eng && !dnnl_memory_desc_init_by_tag(&a_md, 2, a, t, dnnl_ab) &&
                !dnnl_memory_desc_init_by_tag(&b_any, 2, b, t, dnnl_format_tag_any) &&
                !dnnl_memory_desc_init_by_tag(&c_md, 2, c, dnnl_f32, dnnl_ab) &&
                !dnnl_memory_desc_init_by_strides(&e->plain, 2, b, t, str) &&
                !dnnl_matmul_desc_init(&desc, &a_md, &b_any, NULL, &c_md) &&
                !dnnl_primitive_desc_create(&pd, &desc, NULL, eng, NULL)) {
                e->packed = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
                if (!dnnl_reorder_primitive_desc_create(&rpd, &e->plain, eng, &e->packed, eng,
                                                        NULL) &&
                    !dnnl_primitive_create(&e->reorder, rpd))
                    e->bytes = dnnl_memory_desc_get_size(&e->packed);
            }
            if (rpd) dnnl_primitive_desc_destroy(rpd);
            if (pd) dnnl_primitive_desc_destroy(pd);
            r = e;
        } else if (e->prec == (int)prec && e->trans_b == trans_b && e->N == N && e->K == K &&
                   e->m == m) {
            r = e;
        }
    }
    pthread_mutex_unlock(&g_recipe_lock);
    return r && r->bytes ? r : NULL;
}

size_t eng_packed_size(pe_precision prec, int trans_b, int N, int K, int m)
{
    if (prec == PE_PRECISION_BF16 && !bf16_kernels()) return 0;
    pack_recipe *r = recipe_get(prec, trans_b != 0, N, K, m);
    return r ? r->bytes : 0;
}

int eng_pack_b(pe_precision prec, int trans_b, int N, int K, int m, const void *B, void *dst,
               eng_packed *out)
{
    pack_recipe *r = recipe_get(prec, trans_b != 0, N, K, m);
    dnnl_stream_t s = stream();
    dnnl_memory_t from = NULL, to = NULL;
    int rc = -1;
    if (!r || !s || dnnl_memory_create(&from, &r->plain, engine(), (void *)B) ||
        dnnl_memory_create(&to, &r->packed, engine(), dst))
        goto done;
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
    if (dnnl_primitive_execute(r->reorder, s, 2, args) || dnnl_stream_wait(s)) goto done;
    *out = (eng_packed){r, dst, N, K, prec};
    rc = 0;
done:
    if (from) dnnl_memory_destroy(from);
    if (to) dnnl_memory_destroy(to);
    return rc;
}

int eng_gemm_packed(int M, float alpha, const void *A, const eng_packed *B, float beta, float *C,
                    int ldc)
{
    if (M <= 0) return 0;
    const pack_recipe *r = B->layout;
    prim_key k = plain_key(B->prec, 0, M, B->N, B->K, B->K, B->N, ldc, 0, alpha, beta);
    k.b_fixed = &r->packed;
    return matmul(k, A, B->data, C, ldc, NULL);
}

/* ------------------------------------------------------------------ per-model context */

/* A weight (N, K) (nn.Linear layout) reordered once into the layout the matmul kernel
 * wants (oneDNN "any": for AMX, VNNI-blocked bf16 tiles), in the context's precision. */
typedef struct {
    const float *src;
    int rows, cols;        /* N, K */
    dnnl_memory_desc_t md; /* blocked layout */
    dnnl_memory_t mem;     /* owns the reordered data */
    void *data;
    float *col_scale; /* INT8: (N) the scale of each output channel's s8 row (else NULL) */
    float *in_scale;  /* INT8 smoothed: (K) 1 / s_k, applied to A's columns (else NULL) */
} weight_entry;

/* INT8: a weight whose input is a layer norm's output (eng_int8_norm_input) */
typedef struct {
    const float *w;
    float *range; /* (K) |gamma_k| * 4 + |beta_k|: the reach of input channel k */
    int K;
} norm_hint;

struct eng_ctx {
    pe_precision prec;
    const char *file_lo, *file_hi; /* the weights file's read-only mapping, or NULL */
    weight_entry **w;
    int n, cap;
    norm_hint *hints;
    int n_hints, cap_hints;
    pthread_mutex_t lock;
};

eng_ctx *eng_ctx_create(pe_precision prec)
{
    eng_ctx *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->prec = pe_precision_resolve(prec);
    pthread_mutex_init(&c->lock, NULL);
    return c;
}

void eng_ctx_free(eng_ctx *c)
{
    if (!c) return;
    /* drop cached primitives that refer to this context's weight layouts */
    pthread_mutex_lock(&g_cache_lock);
    for (int i = 0; i < PRIM_CACHE; i++) {
        prim_entry *e = &g_cache[i];
        if (!e->used || !e->key.b_fixed) continue;
        for (int j = 0; j < c->n; j++)
            if (e->key.b_fixed == &c->w[j]->md) {
                if (e->prim) dnnl_primitive_destroy(e->prim);
                e->used = 0;
                break;
            }
    }
    pthread_mutex_unlock(&g_cache_lock);
    for (int i = 0; i < c->n; i++) {
        dnnl_memory_destroy(c->w[i]->mem);
        free(c->w[i]->col_scale);
        free(c->w[i]->in_scale);
        free(c->w[i]);
    }
    for (int i = 0; i < c->n_hints; i++) free(c->hints[i].range);
    free(c->hints);
    free(c->w);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

pe_precision eng_ctx_precision(const eng_ctx *c) { return c ? c->prec : PE_PRECISION_FP32; }

void eng_int8_norm_input(eng_ctx *c, const float *W, const float *gamma, const float *beta, int K)
{
    if (!c || c->prec != PE_PRECISION_INT8 || !W || K <= 0) return;
    pthread_mutex_lock(&c->lock);
    int i = 0;
    while (i < c->n_hints && c->hints[i].w != W) i++;
    if (i == c->n_hints && c->n_hints == c->cap_hints) {
        const int cap = c->cap_hints ? 2 * c->cap_hints : 64;
        norm_hint *grown = realloc(c->hints, (size_t)cap * sizeof *grown);
        if (grown) c->hints = grown, c->cap_hints = cap;
    }
    float *range = i < c->cap_hints ? malloc((size_t)K * sizeof *range) : NULL;
    if (range) {
        for (int k = 0; k < K; k++)
            range[k] = 4.0f * (gamma ? fabsf(gamma[k]) : 1.0f) + (beta ? fabsf(beta[k]) : 0.0f);
        if (i < c->n_hints) free(c->hints[i].range);
        else c->n_hints++;
        c->hints[i] = (norm_hint){W, range, K};
    }
    pthread_mutex_unlock(&c->lock);
}

void eng_ctx_set_file_map(eng_ctx *c, const void *base, size_t size)
{
    if (!c) return;
    c->file_lo = base;
    c->file_hi = base ? (const char *)base + size : NULL;
}

/* The s8 weight of an INT8 context: q (N, K) and e->col_scale (N), each row quantized
 * symmetric (eng_quantize_s8). Where the input is a layer norm's output (a hint from
 * eng_int8_norm_input), its channels differ in reach by up to ~100x (gamma, beta), and
 * one scale per token would leave the narrow channels a few levels: the input is
 * smoothed first (SmoothQuant, alpha = 1/2, with the norm's gamma / beta standing for the
 * activation's range, so no calibration data): s_k = sqrt(range_k / max_n |W_nk|),
 * W'_nk = W_nk s_k is quantized, and A's column k is divided by s_k as it is quantized
 * (e->in_scale = 1 / s_k): A W^T is unchanged, both factors quantize evenly. Caller holds
 * c->lock. Returns 0, or -1 out of memory. */
static int prepare_int8(eng_ctx *c, weight_entry *e, const float *w, int N, int K, int8_t **q_out)
{
    const norm_hint *h = NULL;
    for (int i = 0; i < c->n_hints && !h; i++)
        if (c->hints[i].w == w && c->hints[i].K == K) h = &c->hints[i];
    int8_t *q = malloc((size_t)N * K);
    float *row = h ? malloc((size_t)K * sizeof *row) : NULL,
          *s = h ? calloc((size_t)K, sizeof *s) : NULL;
    e->col_scale = malloc((size_t)N * sizeof(float));
    e->in_scale = h ? malloc((size_t)K * sizeof(float)) : NULL;
    if (!q || !e->col_scale || (h && (!row || !s || !e->in_scale))) {
        free(q), free(row), free(s);
        return -1;
    }
    if (h) {
        for (int n = 0; n < N; n++)
            for (int k = 0; k < K; k++) s[k] = fmaxf(s[k], fabsf(w[(size_t)n * K + k]));
        for (int k = 0; k < K; k++) {
            const float f = s[k] > 0.0f && h->range[k] > 0.0f ? sqrtf(h->range[k] / s[k]) : 1.0f;
            s[k] = isfinite(f) ? f : 1.0f;
            e->in_scale[k] = 1.0f / s[k];
        }
    }
    for (int n = 0; n < N; n++) {
        const float *src = w + (size_t)n * K;
        if (h) {
            for (int k = 0; k < K; k++) row[k] = src[k] * s[k];
            src = row;
        }
        e->col_scale[n] = eng_quantize_s8(q + (size_t)n * K, src, K);
    }
    free(row), free(s);
    *q_out = q;
    return 0;
}

/* Reorder w (N, K) fp32 into the layout a (M, N, K) matmul of the context's precision
 * prefers. Returns NULL when oneDNN cannot (the caller then uses the plain path). */
static weight_entry *prepare_weight(eng_ctx *c, const float *w, int N, int K, int M)
{
    dnnl_engine_t eng = engine();
    dnnl_stream_t s = stream();
    if (!eng || !s) return NULL;
    const int int8 = c->prec == PE_PRECISION_INT8;
    dnnl_data_type_t t = c->prec == PE_PRECISION_BF16 ? dnnl_bf16 : int8 ? dnnl_s8 : dnnl_f32;
    dnnl_dims_t a = {M, K}, b = {K, N}, cd = {M, N}, plain_str = {1, K};
    dnnl_memory_desc_t a_md, b_any, c_md, plain;
    dnnl_matmul_desc_t desc;
    dnnl_primitive_desc_t pd = NULL, rpd = NULL;
    dnnl_primitive_t reorder = NULL;
    dnnl_memory_t src = NULL;
    weight_entry *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    int ok = 0;
    /* INT8: each output channel (row of w) quantized symmetric to s8 with its own scale,
     * then reordered like a bf16 weight (for VNNI kernels oneDNN appends its s8
     * compensation sums to the blocked data) */
    int8_t *q = NULL;
    if (int8 && prepare_int8(c, e, w, N, K, &q)) goto done;
    if (dnnl_memory_desc_init_by_tag(&a_md, 2, a, t, dnnl_ab) ||
        dnnl_memory_desc_init_by_tag(&b_any, 2, b, t, dnnl_format_tag_any) ||
        dnnl_memory_desc_init_by_tag(&c_md, 2, cd, dnnl_f32, dnnl_ab) ||
        dnnl_memory_desc_init_by_strides(&plain, 2, b, int8 ? dnnl_s8 : dnnl_f32, plain_str) ||
        dnnl_matmul_desc_init(&desc, &a_md, &b_any, NULL, &c_md) ||
        dnnl_primitive_desc_create(&pd, &desc, NULL, eng, NULL))
        goto done;
    e->md = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    if (dnnl_memory_create(&e->mem, &e->md, eng, DNNL_MEMORY_ALLOCATE) ||
        dnnl_memory_get_data_handle(e->mem, &e->data) ||
        dnnl_memory_create(&src, &plain, eng, int8 ? (void *)q : (void *)w) ||
        dnnl_reorder_primitive_desc_create(&rpd, &plain, eng, &e->md, eng, NULL) ||
        dnnl_primitive_create(&reorder, rpd))
        goto done;
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, e->mem}};
    if (dnnl_primitive_execute(reorder, s, 2, args) || dnnl_stream_wait(s)) goto done;
    eng_release_source(c, w, (size_t)N * K);
    e->src = w;
    e->rows = N;
    e->cols = K;
    ok = 1;
done:
    if (reorder) dnnl_primitive_destroy(reorder);
    if (rpd) dnnl_primitive_desc_destroy(rpd);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (src) dnnl_memory_destroy(src);
    free(q);
    if (!ok) {
        if (e->mem) dnnl_memory_destroy(e->mem);
        free(e->col_scale);
        free(e);
        return NULL;
    }
    return e;
}

static weight_entry *ctx_weight(eng_ctx *c, const float *w, int N, int K, int M)
{
    weight_entry *found = NULL;
    pthread_mutex_lock(&c->lock);
    for (int i = c->n - 1; i >= 0 && !found; i--)
        if (c->w[i]->src == w && c->w[i]->rows == N && c->w[i]->cols == K) found = c->w[i];
    if (!found && c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 64;
        weight_entry **grown = realloc(c->w, (size_t)cap * sizeof *grown);
        if (grown) {
            c->w = grown;
            c->cap = cap;
        }
    }
    if (!found && c->n < c->cap && (found = prepare_weight(c, w, N, K, M)) != NULL)
        c->w[c->n++] = found;
    pthread_mutex_unlock(&c->lock);
    return found;
}

/* A (M, K; lda) fp32 rows rounded to bf16 into this thread's conversion buffer (dense),
 * the operand of a bf16 product; NULL out of memory. */
static const bf16_t *rows_to_bf16(const float *A, int M, int K, int lda)
{
    bf16_t *a16 = scratch16(0, (size_t)M * K);
    if (a16) eng_to_bf16_2d(a16, A, M, K, lda);
    return a16;
}

/* The int8 linear (INT8 contexts): C (M, N; ldc) = act(A . W^T + bias) (add = 0), C +=
 * that (add = 1), or C += ls * (A . W^T + bias) (ls != NULL), A fp32 (M, K; lda). W is
 * quantized per output channel once (prepare_weight); the rows of A are quantized per
 * row (token) on the fly. The rows go in chunks that the threads take dynamically (as
 * run_matmul_chunked): each chunk quantizes its rows into the thread's buffer, runs the
 * s8 x s8 product (oneDNN, one thread, int32 sums written as fp32) into a second buffer
 * (at most 128 x N floats: stays in the core's cache) and scales it into C with the
 * bias, the activation and the sum (int8_epilogue): the product is never a full M x N
 * matrix in memory. Returns 0, or -1 (C unchanged) when the int8 kernel is not there
 * (oneDNN's reference kernel only: refused) or out of memory. */
static int linear_int8(eng_ctx *c, int M, int N, int K, const float *A, int lda, const float *W,
                       const float *bias, int act, const float *ls, int add, float *C, int ldc)
{
    weight_entry *we = ctx_weight(c, W, N, K, M);
    if (!we || !we->col_scale) return -1;
    const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
    int mc = (M + 3 * threads - 1) / (3 * threads); /* ~3 chunks per thread, 32..128 rows */
    mc = mc < 32 ? 32 : mc > 128 ? 128 : (mc + 31) / 32 * 32;
    if (mc > M) mc = M;
    int chunks = (M + mc - 1) / mc;
    if (chunks > 1 && M - (chunks - 1) * mc < 16) chunks--; /* a sliver joins the last */
    const int tail = M - (chunks - 1) * mc;
    prim_key kc = plain_key(PE_PRECISION_INT8, 1, mc, N, K, K, K, N, 0, 1.0f, 0.0f), kt = kc;
    kc.b_fixed = kt.b_fixed = &we->md;
    kt.M = tail;
    prim_entry e;
    if (prim_get(&kc, &e) || prim_get(&kt, &e)) return -1;
    const int most = tail > mc ? tail : mc; /* rows of the largest chunk */
    const size_t q_bytes = ((size_t)most * K + 63) / 64 * 64;
    int failed = 0;
#pragma omp parallel for schedule(dynamic, 1) reduction(| : failed) if (chunks > 1 && threads > 1)
    for (int i = 0; i < chunks; i++) {
        const int r0 = i * mc, rows = i == chunks - 1 ? tail : mc;
        int8_t *qa = eng_thread_buffer(ENG_SLOT_CONVERT, q_bytes + (size_t)most * sizeof(float));
        float *acc = eng_thread_buffer(ENG_SLOT_CONVERT + 2, (size_t)most * N * sizeof(float));
        if (!qa || !acc) {
            failed = 1;
            continue;
        }
        float *rs = (float *)(void *)(qa + q_bytes);
        for (int r = 0; r < rows; r++)
            quant_row(qa + (size_t)r * K, rs + r, A + (size_t)(r0 + r) * lda, we->in_scale, K);
        if (run_matmul_scaled(i == chunks - 1 ? &kt : &kc, qa, we->data, acc, NULL, NULL)) {
            failed = 1;
            continue;
        }
        for (int r = 0; r < rows; r++)
            int8_epilogue(C + (size_t)(r0 + r) * ldc, acc + (size_t)r * N, rs[r], we->col_scale,
                          bias, act, ls, add, N);
    }
    return failed ? -1 : 0;
}

int eng_attention_bf16(const eng_ctx *c)
{
    const pe_precision p = eng_ctx_precision(c);
    return p == PE_PRECISION_BF16 || (p == PE_PRECISION_INT8 && bf16_kernels());
}

int eng_linear(eng_ctx *c, int M, int N, int K, const float *A, int lda, const float *W, float beta,
               float *C, int ldc, const float *bias)
{
    if (M <= 0 || N <= 0) return 0;
    pe_precision prec = eng_ctx_precision(c);
    if (prec == PE_PRECISION_INT8 && (beta == 0.0f || beta == 1.0f) &&
        !linear_int8(c, M, N, K, A, lda, W, bias, ENG_ACT_NONE, NULL, beta != 0.0f, C, ldc))
        return 0;
    if (prec == PE_PRECISION_INT8) /* no int8 kernel here (or out of memory): fp32 */
        return eng_gemm(PE_PRECISION_FP32, 1, M, N, K, 1.0f, A, lda, W, K, beta, C, ldc, bias);
    /* fp32: the weight is used in place, in its nn.Linear layout (no second copy: the
     * peak RSS stays that of the weights file); bf16 without bf16 kernels (AVX2 CPUs):
     * eng_gemm's emulation on rounded operands */
    if (prec == PE_PRECISION_FP32 || !bf16_kernels())
        return eng_gemm(prec, 1, M, N, K, 1.0f, A, lda, W, K, beta, C, ldc, bias);
    weight_entry *we = c ? ctx_weight(c, W, N, K, M) : NULL;
    if (!we) return eng_gemm(prec, 1, M, N, K, 1.0f, A, lda, W, K, beta, C, ldc, bias);
    const bf16_t *a16 = rows_to_bf16(A, M, K, lda);
    if (!a16) return -1;
    prim_key k = plain_key(PE_PRECISION_BF16, 1, M, N, K, K, K, ldc, bias != NULL, 1.0f, beta);
    k.b_fixed = &we->md;
    return matmul(k, a16, we->data, C, ldc, bias);
}

/* The fp32 source is not read again (calls go to the bf16 copy). Where it lies in the
 * weights file's read-only mapping, unmap its pages: they come back from the file if
 * read (MADV_DONTNEED discards nothing in such a mapping), so the bf16 model does not
 * hold both copies. Weights in memory the model allocated (converted or fused) are left
 * alone: there DONTNEED would zero them. (MADV_PAGEOUT, used before, kept ext4's large
 * page-cache folios: measured, it released the first 85 MB of ViT-B's file and then
 * nothing.) */
void eng_release_source(const eng_ctx *c, const float *w, size_t n)
{
    if (!c || c->prec == PE_PRECISION_FP32 || !c->file_lo || (const char *)w < c->file_lo ||
        (const char *)(w + n) > c->file_hi)
        return;
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = ((uintptr_t)w + page - 1) & ~(page - 1);
    uintptr_t hi = ((uintptr_t)(w + n)) & ~(page - 1);
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

int eng_bf16_direct(const eng_ctx *c)
{
    return c && c->prec == PE_PRECISION_BF16 && bf16_kernels();
}

int eng_linear_bf16(eng_ctx *c, int M, int N, int K, const bf16_t *A16, const float *W,
                    const float *bias, int act, float beta, float *C, int ldc, bf16_t *out16)
{
    if (M <= 0 || N <= 0) return 0;
    if (!eng_bf16_direct(c) || act < ENG_ACT_NONE || act > ENG_ACT_SILU ||
        (out16 ? beta != 0.0f : act != ENG_ACT_NONE || (beta != 0.0f && beta != 1.0f)))
        return -1;
    weight_entry *we = ctx_weight(c, W, N, K, M);
    if (!we) return -1;
    /* fp32 C with a row stride: oneDNN 2.6 has no AMX kernel for it (its reference one
     * is ~1,000x slower), so the product goes dense into this thread's buffer and then
     * into C's rows (copied, or added for beta = 1) */
    float *dense = !out16 && ldc != N ? scratch32(0, (size_t)M * N) : NULL;
    if (!out16 && ldc != N && !dense) return -1;
    prim_key k = plain_key(PE_PRECISION_BF16, 1, M, N, K, K, K, out16 || dense ? N : ldc,
                           bias != NULL, 1.0f, dense ? 0.0f : beta);
    k.b_fixed = &we->md;
    k.dst_bf16 = out16 != NULL;
    k.act = act;
    void *dst = out16 ? (void *)out16 : dense ? (void *)dense : (void *)C;
    if (run_matmul(&k, A16, we->data, dst, bias)) return -1;
    if (dense) {
#pragma omp parallel for schedule(static) if ((size_t)M * N >= ((size_t)1 << 16))
        for (int i = 0; i < M; i++) {
            float *row = C + (size_t)i * ldc;
            const float *d = dense + (size_t)i * N;
            if (beta == 0.0f) memcpy(row, d, (size_t)N * sizeof *row);
            else
                for (int j = 0; j < N; j++) row[j] += d[j];
        }
    }
    return 0;
}

int eng_linear_act_f32(eng_ctx *c, int M, int N, int K, const float *A, int lda, const float *W,
                       const float *bias, int act, float *C, int ldc)
{
    if (M <= 0 || N <= 0) return 0;
    if (act <= ENG_ACT_NONE || act > ENG_ACT_SILU) return -1;
    if (eng_ctx_precision(c) == PE_PRECISION_INT8)
        return linear_int8(c, M, N, K, A, lda, W, bias, act, NULL, 0, C, ldc);
    if (eng_ctx_precision(c) != PE_PRECISION_FP32) return -1;
    prim_key k = plain_key(PE_PRECISION_FP32, 1, M, N, K, lda, K, ldc, bias != NULL, 1.0f, 0.0f);
    k.act = act;
    return run_matmul(&k, A, W, C, bias);
}

int eng_linear_scaled_add(eng_ctx *c, int M, int N, int K, const void *A, int a_bf16,
                          const float *W, const float *bias, const float *scale, float *X, int ldx)
{
    if (M <= 0 || N <= 0) return 0;
    if (!scale) return -1;
    if (eng_ctx_precision(c) == PE_PRECISION_INT8)
        return a_bf16 ? -1 : linear_int8(c, M, N, K, A, K, W, bias, ENG_ACT_NONE, scale, 0, X, ldx);
    if (eng_ctx_precision(c) == PE_PRECISION_FP32) {
        if (a_bf16) return -1;
        prim_key k = plain_key(PE_PRECISION_FP32, 1, M, N, K, K, K, ldx, bias != NULL, 1.0f, 1.0f);
        k.col_scale = 1;
        const int rc = run_matmul_chunked(&k, A, W, X, bias, scale);
        return rc <= 0 ? rc : run_matmul_scaled(&k, A, W, X, bias, scale);
    }
    if (!eng_bf16_direct(c)) return -1;
    weight_entry *we = ctx_weight(c, W, N, K, M);
    if (!we) return -1;
    const bf16_t *a16 = a_bf16 ? A : rows_to_bf16(A, M, K, K); /* fp32 rows: as eng_linear */
    if (!a16) return -1;
    prim_key k = plain_key(PE_PRECISION_BF16, 1, M, N, K, K, K, ldx, bias != NULL, 1.0f, 1.0f);
    k.b_fixed = &we->md;
    k.col_scale = 1;
    const int rc = run_matmul_chunked(&k, a16, we->data, X, bias, scale);
    return rc <= 0 ? rc : run_matmul_scaled(&k, a16, we->data, X, bias, scale);
}

static _Thread_local eng_ctx *tl_current;
eng_ctx *eng_set_current(eng_ctx *c)
{
    eng_ctx *prev = tl_current;
    tl_current = c;
    return prev;
}
eng_ctx *eng_current(void) { return tl_current; }

/* ------------------------------------------------------------------ benchmark helpers */

#include <time.h>

static double seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

double pe_engine_gemm_gflops(pe_precision p, int M, int N, int K, int reps)
{
    if (M <= 0 || N <= 0 || K <= 0 || reps == 0) return -1;
    const int exact = reps < 0; /* exactly -reps runs (CPU-time differences), no 0.3 s floor */
    if (exact) reps = -reps;
    float *a = pe_alloc((size_t)M * K, sizeof(float), "bench A");
    float *w = pe_alloc((size_t)N * K, sizeof(float), "bench W");
    float *c = pe_alloc((size_t)M * N, sizeof(float), "bench C");
    eng_ctx *ctx = eng_ctx_create(p);
    double best = -1;
    if (a && w && c && ctx) {
        for (size_t i = 0; i < (size_t)M * K; i++)
            a[i] = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
        for (size_t i = 0; i < (size_t)N * K; i++)
            w[i] = (float)((i * 40503u) % 1000) * 1e-3f - 0.5f;
        /* bf16 where the forward has the bf16 path: A arrives in bf16 (a layer norm or
         * the previous GEMM wrote it so), so the peak is the GEMM's, without a conversion */
        bf16_t *a16 = eng_bf16_direct(ctx) ? pe_alloc((size_t)M * K, sizeof *a16, "bench A") : NULL;
        if (a16) eng_to_bf16(a16, a, (size_t)M * K);
        /* first run: JIT, weight reorder; then the best of at least `reps` runs and
         * 0.3 s (a 1 ms product measured 5 times is at the mercy of one interruption) */
        const double until = seconds() + (exact ? 0.0 : 0.3);
        for (int r = -1; r < reps || (r < 100000 && seconds() < until); r++) {
            double t = seconds();
            if (a16 ? eng_linear_bf16(ctx, M, N, K, a16, w, NULL, ENG_ACT_NONE, 0.0f, c, N, NULL)
                    : eng_linear(ctx, M, N, K, a, K, w, 0.0f, c, N, NULL)) {
                best = -1;
                break;
            }
            t = seconds() - t;
            double g = 2.0 * M * N * K / t * 1e-9;
            if (r >= 0 && g > best) best = g;
        }
        free(a16);
    }
    eng_ctx_free(ctx);
    free(a);
    free(w);
    free(c);
    return best;
}

const char *pe_engine_gemm_impl(pe_precision p, int M, int N, int K)
{
    return eng_impl_name(pe_precision_resolve(p), M, N, K);
}
