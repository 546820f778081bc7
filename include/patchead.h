/*
 * patchead.h — the whole public API of patchead: training-free visual anomaly
 * detection (PatchEAD) with frozen vision backbones.
 *
 * Data flow:  image -> preprocess -> backbone -> patch features -> scoring
 *             -> patch scores / anomaly map / image score -> metrics / output.
 *
 * Conventions
 *   - Every fallible call returns a pe_status (PE_OK == 0). On failure a one-line,
 *     human-readable message naming the file and the problem is available from
 *     pe_last_error() (thread-local; valid until the next failing call on the thread).
 *   - Parameter structs are filled by *_default_params(); callers change only the
 *     fields they care about, so the structs can grow without breaking callers.
 *   - Opaque handles (pe_model, pe_bank) are created by one call and freed by one call.
 *   - Arrays are row-major float32. Feature maps are (G, D) with G = grid_h * grid_w
 *     patches in raster order (row by row).
 */
#ifndef PATCHEAD_H
#define PATCHEAD_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PE_VERSION "0.1.0"

/* ------------------------------------------------------------------ errors */

typedef enum {
    PE_OK = 0,
    PE_ERR_IO = 1,          /* file missing / unreadable / unwritable */
    PE_ERR_FORMAT = 2,      /* corrupt or truncated file, bad JSON, bad header */
    PE_ERR_SHAPE = 3,       /* tensor or array with an unexpected shape */
    PE_ERR_UNSUPPORTED = 4, /* valid input that patchead does not handle */
    PE_ERR_NOMEM = 5,       /* allocation failed */
    PE_ERR_ARG = 6,         /* bad argument from the caller */
    PE_ERR_MISMATCH = 7,    /* e.g. bank made with another backbone */
    PE_ERR_LIMIT = 8        /* input exceeds a documented limit */
} pe_status;

/* Text of the last error on this thread ("" if none). */
const char *pe_last_error(void);
/* Short name of a status code ("io", "format", ...). */
const char *pe_status_name(pe_status status);

/* ------------------------------------------------------------------ threads */

/* Number of worker threads used by GEMMs (OpenBLAS) and by patchead's own loops
 * (OpenMP). n <= 0 means "number of cores". */
void pe_set_threads(int n);
int pe_get_threads(void);

/* ------------------------------------------------------------------ atomic output files */
/* The one writer behind every file patchead writes (banks, .npy, PNG, scores.csv/jsonl,
 * eval results). Bytes go to "<path>.tmp.<pid>.<n>" beside the target; commit flushes,
 * fsyncs, renames it over the target and fsyncs the folder, so readers see the old file or
 * the complete new one, never a prefix. On failure the temporary file is removed, the
 * target is untouched and the message names the target and the reason from the system
 * ("write failed (No space left on device)"). A process killed before commit leaves only
 * its temporary file behind. */
typedef struct pe_atomic_file pe_atomic_file;
pe_status pe_atomic_open(const char *path, pe_atomic_file **out);
/* The stream to write to (buffered; do not fclose it). */
FILE *pe_atomic_stream(pe_atomic_file *file);
/* Publish the file (see above). Frees `file` whatever the outcome. */
pe_status pe_atomic_commit(pe_atomic_file *file);
/* Drop the temporary file and free `file`. Returns PE_ERR_IO with the reason when a write
 * had already failed (e.g. disk full), PE_OK otherwise (no error recorded then). */
pe_status pe_atomic_abort(pe_atomic_file *file);
/* Whole file from memory: open + write + commit. */
pe_status pe_atomic_write(const char *path, const void *data, size_t n);
/* fsync a folder (after renames in it); file systems that cannot are not an error. */
pe_status pe_fsync_dir(const char *dir);

/* ------------------------------------------------------------------ run folders */
/* One commit point for all outputs of a run (src/io/run_dir.c): the run writes into a staging
 * folder beside `out_dir`; commit swaps it in as a whole (atomic rename / exchange). The
 * output folder must be new, empty, or a folder of an earlier run (it holds the marker file
 * .patchead-run); anything else is refused by pe_run_begin, before any work. A failed or
 * killed run leaves the previous output folder exactly as it was. */
typedef struct pe_run_dir pe_run_dir;
pe_status pe_run_begin(const char *out_dir, pe_run_dir **out);
/* The staging folder to write the run's files into. */
const char *pe_run_path(const pe_run_dir *run);
/* The output folder the run is published to (links resolved). */
const char *pe_run_output(const pe_run_dir *run);
/* Publish (frees run whatever the outcome; on failure the staging folder is removed). */
pe_status pe_run_commit(pe_run_dir *run);
/* Discard the staging folder; the output folder is untouched. */
void pe_run_abort(pe_run_dir *run);

/* ------------------------------------------------------------------ output names */
/* Unique, short, recognisable output stems for n input paths (src/io/names.c): the file name
 * without extension; names shared by several inputs take their parent folder names in
 * front (up to 3 levels: cam001/crop/0001.jpg -> cam001_crop_0001); what still clashes
 * gets _2, _3, ... in input order. Control characters and invalid UTF-8 become '_'; each
 * part is at most 48 bytes. O(n) expected. stems[i] are malloc'd (free each). */
pe_status pe_output_stems(const char *const *paths, int n, char **stems);

/* ------------------------------------------------------------------ precision / engine */

/* Arithmetic of the GEMMs (backbone linear layers, attention, scoring tiles):
 *   FP32: float32 throughout;
 *   BF16: operands rounded to bfloat16, products accumulated in float32 (layer norms,
 *         softmax, the residual stream and every reduction stay float32);
 *   AUTO: BF16 when the CPU has native bf16 dot products (AMX or AVX-512-BF16), else FP32
 *         (never INT8: see docs/ENGINE.md, "int8");
 *   INT8: ViT backbones only. The linear layers (qkv, out-projection, MLP, patch
 *         embedding) in int8: weights quantized symmetric per output channel at load,
 *         activations symmetric per row (token) at run time (a layer norm's output first
 *         smoothed per channel with the norm's gamma / beta), int32 products, scaled back
 *         to float32 with the bias; the attention in bf16 where the CPU has native bf16
 *         (else fp32); layer norms, softmax, GELU and the residual stream in float32; the
 *         scoring tiles in float32. CNN backbones refuse it (PE_ERR_UNSUPPORTED).
 * The GEMMs run on oneDNN, which picks its kernels (AVX2 / AVX-512 / VNNI / AMX) at run
 * time. (INT8 is 3 so that the values of the others, stored in banks, stay.) */
typedef enum {
    PE_PRECISION_FP32 = 0,
    PE_PRECISION_BF16 = 1,
    PE_PRECISION_AUTO = 2,
    PE_PRECISION_INT8 = 3
} pe_precision;
/* "fp32", "bf16", "auto", "int8" */
const char *pe_precision_name(pe_precision p);
/* Parse one of the names above (case-insensitive); PE_ERR_ARG naming the value otherwise. */
pe_status pe_precision_parse(const char *name, pe_precision *out);
/* AUTO -> FP32 or BF16 for this CPU; FP32 / BF16 / INT8 unchanged. */
pe_precision pe_precision_resolve(pe_precision p);
/* The instruction set the engine dispatched to on this CPU, e.g. "avx512_core_amx", "avx2". */
const char *pe_engine_isa(void);
/* Benchmark helpers (`patchead bench`): best GFLOP/s of the engine's C (M, N) =
 * A (M, K) . W^T with W (N, K) a weight as the backbones use it (bf16: reordered once;
 * A in bf16 where the bf16 block path feeds it so), in precision p (AUTO resolved), on
 * the current thread count, over at least `reps` runs and 0.3 s after a warm-up run
 * (reps < 0: exactly -reps runs); <= 0 on failure. And the name of the oneDNN
 * kernel for that shape, e.g. "brg:avx512_core_amx_bf16" ("" if none). */
double pe_engine_gemm_gflops(pe_precision p, int M, int N, int K, int reps);
const char *pe_engine_gemm_impl(pe_precision p, int M, int N, int K);
/* Per-step profile of the ViT forward (`patchead bench --profile`; also on for a whole
 * process with PE_PROFILE=1): pe_profile_start clears the step times and turns timing
 * on; pe_profile_print writes ms per image for each step (layer norms, qkv, attention's
 * parts, out-projection, fc1, fc2, ...) and its % of total_ms (the wall time of the
 * `images` forwards it covers; 0: no %). */
void pe_profile_start(void);
void pe_profile_print(FILE *out, int images, double total_ms);

/* ------------------------------------------------------------------ text output */
/* For paths and messages with any bytes (src/core/text.c). JSON string literal per RFC 8259:
 * quote, backslash and control characters escaped, bytes that are not valid UTF-8 replaced
 * by U+FFFD. CSV field per RFC 4180: quoted (quotes doubled) when it holds , " CR or LF;
 * the bytes are kept exactly. */
void pe_json_string(FILE *f, const char *s);
void pe_csv_field(FILE *f, const char *s);
/* Text with every byte that does not start a valid UTF-8 sequence replaced by U+FFFD
 * (e.g. a JSON document printed by cJSON, which copies string bytes as they are). */
void pe_utf8_write(FILE *f, const char *s);

/* ------------------------------------------------------------------ images */

/* Largest accepted decoded image: PE_MAX_IMAGE_SIDE pixels per side and
 * PE_MAX_IMAGE_PIXELS pixels in all. Larger inputs fail with PE_ERR_LIMIT. */
#define PE_MAX_IMAGE_SIDE 16384
#define PE_MAX_IMAGE_PIXELS (64u * 1024u * 1024u)

/* An 8-bit RGB image, interleaved, height x width x 3. */
typedef struct {
    int width, height;
    uint8_t *rgb; /* owned; free with pe_image_free */
} pe_image;

/* Decode PNG (8/16-bit, gray, gray+alpha, RGB, RGBA, palette), JPEG (gray, RGB,
 * CMYK) or BMP into 8-bit RGB. Alpha is dropped (composited on black is NOT done:
 * the colour channels are kept as stored). The format is found from the bytes,
 * not the file name. Pixels equal PIL's Image.open(f).convert('RGB'), quirks included:
 * 16-bit colour keeps the high byte, 16-bit gray is clamped at 255, CMYK JPEGs are
 * read with Adobe's inverted polarity. */
pe_status pe_image_load(const char *path, pe_image *out);
/* Same from memory; `name` is used in error messages. */
pe_status pe_image_decode(const uint8_t *bytes, size_t n, const char *name, pe_image *out);
void pe_image_free(pe_image *img);
/* Write an 8-bit RGB image as PNG (atomically: temp file + rename). */
pe_status pe_image_save_png(const char *path, const pe_image *img);
/* Encode an 8-bit RGB image as PNG in memory: *bytes (malloc'd, free()) holds *len bytes. */
pe_status pe_image_encode_png(const pe_image *img, uint8_t **bytes, size_t *len);

/* Resize to out_w x out_h with PIL's antialiased bicubic filter
 * (Image.resize(..., BICUBIC), a = -0.5, support scaled by the downscale factor),
 * results rounded and clamped to 0..255 as PIL does; bit-identical to Pillow 13, whose
 * order of the two passes it follows. */
pe_status pe_image_resize(const pe_image *src, int out_w, int out_h, pe_image *out);

/* ------------------------------------------------------------------ npy */

/* Write a float32 C-order array of `ndim` dims (<= 4) as NumPy .npy (v1.0). */
pe_status pe_npy_save(const char *path, const float *data, int ndim, const int64_t *shape);
/* Read a little-endian float32 or float64 C-order .npy (float64 is converted). *data
 * is malloc'd; shape gets up to 4 dims. */
pe_status pe_npy_load(const char *path, float **data, int *ndim, int64_t shape[4]);

/* ------------------------------------------------------------------ models */

typedef struct pe_model pe_model;

typedef struct {
    int threads; /* <= 0: all cores */
    pe_precision precision; /* backbone GEMMs (default FP32; AUTO resolved at load) */
} pe_model_params;
pe_model_params pe_model_default_params(void);

/* Load a backbone from a .safetensors file or a hub-layout directory holding
 * model.safetensors (+ config.json, + open_clip_config.json for OpenCLIP).
 * Supported families: "dinov2", "dinov2_reg", "clip", "openclip", "mobilenet_v2",
 * "efficientnet_lite0", "resnet" (resnet18/34/50/101, wide_resnet50_2/101_2). */
pe_status pe_model_load(const char *path, const pe_model_params *params, pe_model **out);
void pe_model_free(pe_model *model);

typedef struct {
    const char *family;      /* e.g. "dinov2" */
    const char *name;        /* e.g. "dinov2-small", "mobilenet_v2" */
    const char *dtype;       /* dtype of the weights on disk: "F32", "F16", "BF16", mixed: "mixed" */
    int is_vit;              /* 1 for transformers, 0 for CNNs */
    int has_attention;       /* 1 if CLS attention is available (PatchEAD+ masking) */
    int patch_size;          /* ViT patch size, or the CNN's feature stride */
    int feature_dim;         /* D of the default patch features */
    int num_layers;          /* transformer blocks, or CNN stages */
    int hidden_dim;          /* ViT width (0 for CNNs) */
    int default_size;        /* default square input size S */
    int64_t num_params;      /* parameters loaded */
    float mean[3], std[3];   /* input normalisation */
    char weights_hash[17];   /* 64-bit hash of the whole weights file (pe_hash_fast), hex */
    pe_precision precision;  /* the backbone's GEMM precision as resolved at load (FP32 / BF16 / INT8) */
} pe_model_info;
pe_status pe_model_get_info(const pe_model *model, pe_model_info *info);

/* Patch features of one image. */
typedef struct {
    int grid_h, grid_w; /* G = grid_h * grid_w */
    int dim;            /* D */
    float *data;        /* (G, D), owned */
    float *attn;        /* (G) CLS->patch attention of the last block, mean over heads; NULL if none */
} pe_features;
void pe_features_free(pe_features *f);

typedef struct {
    int size;        /* square input side S; 0 = model default (448 for ViTs / CNNs) */
    int layer;       /* ViT: 0 = last block after the final norm; L>0 = output of block L (1-based)
                        after the final norm. CNN: ignored (0). */
    int want_attn;   /* also return CLS attention (ViT only; error for CNNs) */
} pe_extract_params;
pe_extract_params pe_extract_default_params(void);

/* Image -> resize S x S (PIL bicubic) -> normalise -> backbone -> patch features. */
pe_status pe_model_extract(pe_model *model, const pe_image *img, const pe_extract_params *params,
                           pe_features *out);
/* Backbone on an already-normalised (3, H, W) float tensor (H, W multiples of the
 * patch size for ViTs). Used by parity tests to isolate the backbone. */
pe_status pe_model_forward(pe_model *model, const float *chw, int height, int width,
                           const pe_extract_params *params, pe_features *out);

/* ------------------------------------------------------------------ scoring (Eq. 1-4) */

typedef enum { PE_ORDER_LOWEST = 0, PE_ORDER_HIGHEST = 1 } pe_order;

typedef struct {
    pe_order order;      /* which reference images enter Eq. 3 */
    float k_fraction;    /* K as a fraction of M (used when k_count <= 0) */
    int k_count;         /* K as a count (> 0 overrides k_fraction) */
    float top_fraction;  /* Eq. 4: image score = mean of top max(1, floor(r*G)) patch scores */
    int top_count;       /* > 0 overrides top_fraction (1 = max) */
    int tile;            /* query-patch rows per GEMM tile (bounded scratch); 0 = auto */
    /* PatchEAD+ attention masking (applied by callers that have attention) */
    float mask_threshold; /* default 0.05 */
    float mask_low_weight;/* default 0.5 */
    pe_precision precision; /* scoring tile GEMMs (default FP32; AUTO resolved per call;
                             * INT8 scores in FP32: int8 is a backbone precision) */
} pe_score_params;

/* preset: "patchead" (default), "anomalydino", "musc"; zeroshot selects the
 * zero-shot variant of a preset. Returns defaults of "patchead" for NULL. */
pe_score_params pe_score_default_params(const char *preset, int zeroshot);
/* Fills *out from a preset name; PE_ERR_ARG for an unknown name. */
pe_status pe_score_preset(const char *preset, int zeroshot, pe_score_params *out);

/* Few-shot scoring of one query against M reference images.
 *   query: (Gq, D); refs[k]: (Gk, D). Features need not be normalised.
 *   patch_scores: (Gq) output a_i (Eq. 3); image_score: output (Eq. 4). */
pe_status pe_score_query(const float *query, int query_patches, const float *const *refs,
                         const int *ref_patches, int num_refs, int dim,
                         const pe_score_params *params, float *patch_scores, float *image_score);

/* Batch zero-shot: every image scored against all the others.
 *   feats[b]: (G, D), all with the same G; patch_scores: (B, G); image_scores: (B). */
pe_status pe_score_batch(const float *const *feats, int num_images, int patches, int dim,
                         const pe_score_params *params, float *patch_scores, float *image_scores);

/* Image score (Eq. 4) from patch scores. */
float pe_image_score(const float *patch_scores, int n, const pe_score_params *params);

/* PatchEAD+ masking: attn (G) -> min-max normalise -> weight 1 above threshold,
 * low_weight below; patch_scores *= weight. */
void pe_apply_attention_mask(float *patch_scores, const float *attn, int n, float threshold,
                             float low_weight);

/* ------------------------------------------------------------------ anomaly maps */

/* (grid_h, grid_w) patch scores -> bilinear upsample to out_w x out_h -> Gaussian sigma. */
pe_status pe_anomaly_map(const float *patch_scores, int grid_h, int grid_w, int out_w, int out_h,
                         float sigma, float *out_map);
/* Heatmap overlay PNG: map values in [vmin, vmax] through a colormap, blended
 * with the image (same size as map). */
pe_status pe_save_heatmap_png(const char *path, const pe_image *img, const float *map, float vmin,
                              float vmax);
/* The same overlay in memory (what pe_save_heatmap_png writes): out gets
 * (img->width + 4 + max(8, img->width / 40)) x img->height RGB, the colour bar on the right;
 * free with pe_image_free. */
pe_status pe_heatmap_render(const pe_image *img, const float *map, float vmin, float vmax,
                            pe_image *out);


/* ------------------------------------------------------------------ PatchEAD+ alignment */

/* Rigid transform mapping reference pixel coordinates into the query frame:
 *   [xq, yq] = R(angle) [xr, yr] + [tx, ty]   (pixel units of the images given). */
typedef struct {
    double angle_deg, tx, ty;
    int inliers;   /* RANSAC inliers supporting it */
    int ok;        /* 0 when matching failed (too few inliers): callers fall back to identity */
} pe_rigid;

typedef struct {
    int max_keypoints;   /* per image */
    int min_inliers;     /* below this the estimate is rejected (ok = 0) */
    int ransac_iters;
    float ransac_tol_px; /* inlier distance at the working resolution */
    int work_size;       /* longest side the images are downscaled to for matching */
    uint64_t seed;       /* RANSAC RNG seed (results are deterministic) */
} pe_align_params;
pe_align_params pe_align_default_params(void);

/* Estimate reference -> query. PE_OK with out->ok = 0 when matching fails. */
pe_status pe_align_estimate(const pe_image *reference, const pe_image *query,
                            const pe_align_params *params, pe_rigid *out);
/* Warp `reference` into an out_w x out_h frame with bilinear interpolation; pixels that
 * map outside the source take the nearest edge pixel (replicate border). */
pe_status pe_align_warp(const pe_image *reference, const pe_rigid *transform, int out_w, int out_h,
                        pe_image *out);
/* 180-degree rotation about the image centre. */
pe_status pe_image_rotate180(const pe_image *src, pe_image *out);

/* ------------------------------------------------------------------ detection pipeline */
/* The layer used by the CLI (fit / predict / zeroshot) and by eval: features ->
 * scores -> maps, with the PatchEAD+ switches. */

typedef struct {
    pe_score_params score; /* Eq. 1-4 settings (preset) */
    int size;              /* input side S; 0 = model default */
    int layer;             /* feature layer (see pe_extract_params) */
    int align;             /* PatchEAD+ alignment */
    int mask;              /* PatchEAD+ attention masking (ViT only) */
    float map_sigma;       /* Gaussian sigma of anomaly maps in output pixels (4) */
    pe_align_params align_params;
    /* --- beyond the paper (docs/BEYOND.md); defaults keep the paper's method --- */
    int rotations;          /* fit: each reference also rotated to 360*r/N degrees, r < N (1 = none);
                               the views of one reference form one reference image of Eq. 3 */
    int flips;              /* fit: also the mirrored reference (and its rotations) */
    int window;             /* positional scoring: a query patch is compared only with reference
                               patches within `window` patches of its grid position (Chebyshev);
                               -1 = global (the paper) */
    float coreset_fraction; /* fit: keep this share of all reference patches as one union bank */
    int coreset_count;      /* ... or this many (> 0 overrides); both 0 = per-image bank */
    int coreset_proj;       /* random projection dims for the coreset distances: 0 = the default
                               (PatchCore's 128 dims when D > 128, else none), -1 = none */
    uint64_t coreset_seed;  /* coreset: first centre and projection (deterministic) */
    float fpr;              /* fit: target false-alarm rate alpha of the conformal threshold
                               (0 = the leave-one-out maximum, uncalibrated) */
    /* batch zero-shot at scale (docs/SCALE.md) */
    int comparators;           /* R > 0: each image is scored against R others of the batch
                                  (seeded, balanced rule; Eq. 3's M = R); 0 or >= n-1: all */
    uint64_t comparator_seed;  /* seed of the comparator draw */
    int local_only;            /* MPI build: 1 = score the whole batch on this rank (no pair
                                  sharding across ranks); ignored without MPI */
    void (*score_progress)(int64_t done, int64_t total, void *user); /* pairs scored; may be NULL */
    void *progress_user;
    /* fit with a coreset (docs/BEYOND.md "Coreset selection that scales"): centres chosen so
       far of `total`, about 200 calls per selection (progress_user is passed); may be NULL */
    void (*coreset_progress)(int done, int total, void *user);
    double coreset_max_time; /* > 0: refuse (PE_ERR_LIMIT) a coreset selection estimated above
                                this many seconds, before it starts (the estimate: the same
                                selection on 1/16 of the rows, times 16^2) */
} pe_detect_params;
/* zeroshot selects the zero-shot preset defaults. */
pe_detect_params pe_detect_default_params(int zeroshot);

/* The result for one query image. */
typedef struct {
    float image_score;    /* Eq. 4 (after masking) */
    int grid_h, grid_w;
    float *patch_scores;  /* (grid_h, grid_w), owned */
    int aligned;          /* alignment: references aligned successfully (count) */
    int align_failed;     /* alignment: references that fell back to unaligned */
    double p_value;       /* conformal p-value against the bank's calibration scores; NAN
                             when the bank is not calibrated (docs/BEYOND.md) */
} pe_result;
void pe_result_free(pe_result *r);
/* Anomaly map of a result at width x height (bilinear + Gaussian map_sigma). */
pe_status pe_result_map(const pe_result *r, int width, int height, float sigma, float *out_map);

/* Few-shot reference bank: the fitted state, saved as a versioned .pead file. */
typedef struct pe_bank pe_bank;

/* Extract the reference images' features and build a bank. names[i] (may be NULL)
 * are recorded for provenance. With align, the reference images are kept too. */
pe_status pe_bank_fit(pe_model *model, const pe_image *refs, int num_refs,
                      const char *const *names, const pe_detect_params *params, pe_bank **out);
/* Build from already-extracted features (eval's feature cache). Features are copied. */
pe_status pe_bank_fit_features(pe_model *model, const pe_features *refs, int num_refs,
                               const pe_detect_params *params, pe_bank **out);
void pe_bank_free(pe_bank *bank);
/* Atomic write (temp + rename) of the versioned file with a checksum. */
pe_status pe_bank_save(const pe_bank *bank, const char *path);
/* Load and verify (version, checksum, that `model` is the backbone the bank was made
 * with: same weights hash). model may be NULL: the model check is then skipped (call
 * pe_bank_check_model once the model is loaded, e.g. from pe_bank_model_path). */
pe_status pe_bank_load(const char *path, pe_model *model, pe_bank **out);
/* PE_ERR_MISMATCH (message naming both backbones) unless `model` has the weights the
 * bank was fit with. */
pe_status pe_bank_check_model(const pe_bank *bank, pe_model *model);
/* Model path recorded in the bank for provenance / as predict's default ("" if none). */
const char *pe_bank_model_path(const pe_bank *bank);
void pe_bank_set_model_path(pe_bank *bank, const char *path);
const pe_detect_params *pe_bank_params(const pe_bank *bank);
int pe_bank_num_refs(const pe_bank *bank);
/* Suggested label-free threshold from leave-one-out scoring of the references at fit
 * time (NAN if fewer than 2 references). */
float pe_bank_threshold(const pe_bank *bank);
void pe_bank_set_threshold(pe_bank *bank, float threshold);
/* Scoring precision used by pe_bank_predict* (recorded at fit; AUTO is resolved here). */
void pe_bank_set_precision(pe_bank *bank, pe_precision precision);
/* 16 hex digits identifying the bank's contents: the checksum of the .pead file it was
 * loaded from ("" for a bank built in memory and not loaded from a file). */
const char *pe_bank_hash(const pe_bank *bank);

/* Score one query image (extracts its features; aligns references if the bank says so). */
pe_status pe_bank_predict(pe_bank *bank, pe_model *model, const pe_image *query, pe_result *out);
/* Score already-extracted query features (no alignment possible: features only). */
pe_status pe_bank_predict_features(const pe_bank *bank, const pe_features *query, pe_result *out);

/* Batch zero-shot over n images (all scored against the others). progress(i, n, user)
 * is called after each image's features are extracted (may be NULL). */
pe_status pe_zeroshot(pe_model *model, const pe_image *images, int n, const pe_detect_params *params,
                      void (*progress)(int done, int total, void *user), void *user,
                      pe_result *out /* n results */);
/* Zero-shot from already-extracted features (all of the same grid). */
pe_status pe_zeroshot_features(const pe_features *feats, int n, const pe_detect_params *params,
                               pe_result *out);

/* ------------------------------------------------------------------ calibrated thresholds */
/* Conformal threshold from normal scores only (docs/BEYOND.md). With n calibration scores
 * of normal images and a new normal image exchangeable with them,
 * P(new score > threshold) <= alpha when threshold = the ceil((1 - alpha)(n + 1))-th smallest
 * calibration score. That rank exists only when n >= ceil(1/alpha) - 1; with fewer scores
 * there is no guarantee and pe_conformal_threshold returns +INFINITY. */
float pe_conformal_threshold(const float *scores, int n, float alpha);
/* p = (1 + #{calibration scores >= score}) / (n + 1); score > pe_conformal_threshold(alpha)
 * exactly when p <= alpha. NAN for n < 1. */
double pe_conformal_p_value(const float *scores, int n, float score);

typedef struct {
    float alpha;           /* target false-alarm rate (0: not calibrated) */
    int n;                 /* calibration scores stored */
    const char *source;    /* "leave-one-out" (the references) or "images" (calibration set) */
    int guaranteed;        /* n is large enough for alpha (see pe_conformal_threshold) */
    float threshold;       /* the bank's threshold now */
} pe_calibration;
pe_status pe_bank_calibration(const pe_bank *bank, pe_calibration *out);
/* Calibrate on normal images that are not references (their features are extracted; with
 * alignment they are aligned as queries are). Replaces the bank's calibration scores and
 * sets its threshold for alpha. */
pe_status pe_bank_calibrate(pe_bank *bank, pe_model *model, const pe_image *images, int n,
                            float alpha);
pe_status pe_bank_calibrate_features(pe_bank *bank, const pe_features *feats, int n, float alpha);
/* Re-derive the threshold from the stored calibration scores for another alpha. */
pe_status pe_bank_set_fpr(pe_bank *bank, float alpha);
/* Conformal p-value of an image score against the bank's calibration (NAN if none). */
double pe_bank_p_value(const pe_bank *bank, float score);

/* Drift check (docs/BEYOND.md, "Drift alarms"): the threshold keeps its false-alarm promise
 * only while new normal images score like the calibration images. A pe_drift collects the
 * scores of the images judged normal (score <= the bank's calibrated threshold) and compares
 * them with the calibration scores at or below that threshold by a one-sided two-sample
 * Kolmogorov-Smirnov test: D = max over x of (F_calibration(x) - F_new(x)), large when the new
 * scores are stochastically higher (lighting, camera, product drift). p = exp(-2 D^2 n m /
 * (n + m)) (Smirnov's bound; n, m the two sample sizes); a warning when p < delta and at
 * least PE_DRIFT_MIN images were judged normal. Under exchangeability the warning's
 * false-alarm rate is about delta per check (tested by simulation in test_drift.c).
 * window > 0 keeps only the last `window` judged-normal scores (long-running serve/watch);
 * 0 keeps all. The bank must carry calibration scores (fit --calibrate or --fpr). */
#define PE_DRIFT_MIN 10
typedef struct pe_drift pe_drift;
typedef struct {
    int seen;          /* scores added */
    int normal;        /* of them judged normal (in the window, if one is set) */
    int reference;     /* calibration scores at or below the threshold */
    float threshold;   /* the bank's calibrated threshold the judgement uses */
    double statistic;  /* D, in [0, 1] */
    double p_value;    /* 1 when fewer than PE_DRIFT_MIN judged normal */
    double delta;      /* warning level */
    int warning;       /* p_value < delta */
} pe_drift_report;
pe_status pe_drift_new(const pe_bank *bank, double delta, int window, pe_drift **out);
/* Record one image score (flagged ones count in `seen` only). */
pe_status pe_drift_add(pe_drift *drift, float score);
pe_status pe_drift_report_get(const pe_drift *drift, pe_drift_report *out);
void pe_drift_free(pe_drift *drift);

/* ================================================================== metrics (eval) */
/* Labels: 1 = anomalous (positive class), 0 = normal. Tied scores form one threshold
 * step, as scikit-learn does. A metric that is undefined (one class only, no regions)
 * is NAN; callers print it as "n/a". */

typedef struct {
    double auroc;        /* roc_auc_score: trapezoid over the tie-grouped ROC curve */
    double ap;           /* average_precision_score: sum (R_n - R_n-1) P_n, no interpolation */
    double f1_max;       /* best F1 over all thresholds "score >= t" */
    double f1_threshold; /* the t reaching f1_max */
    int num_pos, num_neg;
} pe_image_metrics;
/* Exact image-level metrics of n scores (sorts a copy: O(n log n)). PE_ERR_ARG for a
 * NaN score or a label other than 0/1. */
pe_status pe_image_metrics_compute(const float *scores, const uint8_t *labels, int n,
                                   pe_image_metrics *out);

/* ROC and PR curves for plotting: n points, thresholds decreasing; point 0 is the
 * empty prediction (threshold +inf, fpr = tpr = recall = 0, precision = 1). */
typedef struct {
    int n;
    double *threshold, *fpr, *tpr, *precision; /* (n) each, owned; recall == tpr */
} pe_curve;
pe_status pe_curve_compute(const float *scores, const uint8_t *labels, int n, pe_curve *out);
void pe_curve_free(pe_curve *curve);

/* Pixel-level metrics (pixel AUROC, PRO) accumulated image by image in bounded memory:
 * scores go into `bins` equal bins over [lo, hi] (values outside are clamped into the
 * end bins), so memory is O(bins), not O(pixels). Within a bin the order of pixels is
 * unknown; the result carries a guaranteed bound on the difference to the exact
 * (unbinned) value, which is 0 when every bin holds a single distinct score.
 * PRO follows the MVTec AD reference: regions are the 8-connected components of each
 * ground-truth mask; FPR counts every pixel outside all regions (of all images);
 * PRO(t) = mean over all regions of the fraction of the region with score >= t;
 * the (FPR, PRO) curve is integrated with the trapezoid rule from 0 to max_fpr
 * (interpolating at max_fpr) and divided by max_fpr. */
typedef struct pe_pixel_acc pe_pixel_acc;
#define PE_PIXEL_BINS_DEFAULT (1 << 18)
pe_status pe_pixel_acc_create(float lo, float hi, int bins, pe_pixel_acc **out);
/* Add one image: map (height, width) scores; mask (height, width) nonzero = anomalous,
 * or NULL for an image without anomalies. */
pe_status pe_pixel_acc_add(pe_pixel_acc *acc, const float *map, const uint8_t *mask, int width,
                           int height);
typedef struct {
    double auroc, auroc_bound; /* |auroc - exact| <= auroc_bound */
    double pro, pro_bound;     /* |pro - exact| <= pro_bound */
    double max_fpr;
    int64_t num_pos, num_neg, num_regions;
    float min_score, max_score; /* range actually seen */
} pe_pixel_metrics;
pe_status pe_pixel_acc_result(const pe_pixel_acc *acc, double max_fpr, pe_pixel_metrics *out);
void pe_pixel_acc_free(pe_pixel_acc *acc);

/* 8-connected components of a binary mask (nonzero = foreground): labels (height,
 * width) get 0 for background and 1..count for the regions (raster order of first
 * pixel). Returns the count, or -1 with an error recorded. */
int pe_mask_regions(const uint8_t *mask, int width, int height, int32_t *labels);

/* ================================================================== datasets (eval) */
/* Dataset layouts (docs/DATASETS.md): "mvtec" (also MPDD, DTD-Synthetic), "mvtec3d",
 * "visa", "btad", "ksdd", "dagm", "loco". ROOT may be one category or a folder of
 * categories. */

typedef struct {
    char *path;      /* image file */
    char *mask_path; /* ground-truth mask file (LOCO: a folder of masks); NULL if none */
    char *defect;    /* defect type ("good" for normal images) */
    int label;       /* 0 normal, 1 anomalous */
} pe_sample;

typedef struct {
    char *name;            /* category name ("bottle", "tire", "Class1", ...) */
    char *root;            /* its folder */
    pe_sample *train;      /* normal images to draw few-shot references from, sorted by path */
    int num_train;
    pe_sample *test;       /* test images, sorted by path */
    int num_test;
    int num_anomalous;     /* test images with label 1 */
    int has_masks;         /* 1 if every anomalous test image has a mask (pixel metrics) */
} pe_category;

typedef struct {
    char *root;
    const char *layout;    /* detected or given layout name (static string) */
    pe_category *categories;
    int num_categories;
} pe_dataset;

/* layout NULL or "auto": detect from the folder (PE_ERR_FORMAT naming the candidates
 * when ambiguous or unknown). */
pe_status pe_dataset_open(const char *root, const char *layout, pe_dataset **out);
void pe_dataset_free(pe_dataset *ds);
/* Names of the supported layouts, NULL-terminated. */
const char *const *pe_dataset_layouts(void);
/* Load a ground-truth mask as width x height bytes, 1 = anomalous (any nonzero pixel of
 * any channel). A folder (LOCO) is the union of the masks in it. *mask is malloc'd. */
pe_status pe_mask_load(const char *path, int *width, int *height, uint8_t **mask);

/* ------------------------------------------------------------------ reference sampling */

/* The one seeded sampler of few-shot references (used by `fit --shots N --seed S` and by
 * `eval --shots N`, seed S, so an eval row can be reproduced with fit + predict).
 * Given n candidate images in a fixed order (the CLI: sorted by path), fills perm[0..n)
 * with a permutation of 0..n-1; the N-shot references of `seed` are perm[0..N), so the
 * N-shot set is inside the (N+1)-shot set. Rule: state = seed; for i = 0 .. n-2:
 * j = i + pe_splitmix64(&state) mod (n - i), swap perm[i] and perm[j] (a forward
 * Fisher-Yates shuffle). Depends on nothing else (no category name, no run order). */
pe_status pe_sample_refs(uint64_t seed, int n, int *perm);
/* One step of splitmix64 (Steele, Lea, Flood 2014): advances *state, returns 64 bits. */
uint64_t pe_splitmix64(uint64_t *state);
/* ================================================================== scale (docs/SCALE.md) */
/* Large zero-shot batches: a memory estimate checked before the batch is allocated,
 * feature maps kept in a memory-mapped spill file, and MPI ranks sharing the work. */

/* Memory a batch zero-shot needs, in bytes. */
typedef struct {
    double features;  /* n * G * D floats of feature maps (+ attention), 0 when spilled */
    double scoring;   /* Eq. 3 selection heaps n * G * K, norms, scores, results, one tile */
    double total;
    double available; /* MemAvailable of /proc/meminfo; 0 when unknown */
    int k;            /* Eq. 3's K for this batch */
} pe_memory_estimate;
/* Estimate for n images of `patches` x `dim` features (want_attn: + G attention floats). */
pe_status pe_zeroshot_estimate(int n, int patches, int dim, int want_attn, int spilled,
                               const pe_detect_params *params, pe_memory_estimate *out);
/* PE_ERR_LIMIT, with a message giving the estimate and the limit, when the estimate's
 * total exceeds limit_bytes (<= 0: the machine's available memory; no check when that
 * is unknown). pe_zeroshot_features runs this check on its scoring state itself. */
pe_status pe_zeroshot_check_memory(const pe_memory_estimate *est, double limit_bytes);

/* Time guard (docs/SCALE.md): the pair GEMMs a batch of n images scores with R
 * comparators (R <= 0: all pairs), and the seconds one pair takes here, measured on a
 * sample image's features (three runs of one pair; the first is a warm-up). */
int64_t pe_zeroshot_num_pairs(int n, int comparators);
pe_status pe_zeroshot_pair_seconds(const pe_features *sample, const pe_detect_params *params,
                                   double *seconds);

/* n feature maps of one shape, in RAM or (spill_dir given) in a file of that folder
 * mapped into memory: the kernel pages it to disk, so a batch larger than RAM fits.
 * The file is unlinked as soon as it is created (nothing left behind, even on a crash). */
typedef struct pe_feature_store pe_feature_store;
pe_status pe_feature_store_create(const char *spill_dir, int n, int patches, int dim,
                                  int with_attn, pe_feature_store **out);
/* Copy one image's features into slot i (its shape must be the store's). */
pe_status pe_feature_store_put(pe_feature_store *store, int i, const pe_features *f);
/* MPI: slot i of rank root's store to every rank's (all ranks call it). */
pe_status pe_feature_store_broadcast(pe_feature_store *store, int i, int root);
/* (n) views whose data / attn point into the store: pass to pe_zeroshot_features; do not
 * free them (pe_feature_store_free does). */
const pe_features *pe_feature_store_views(const pe_feature_store *store);
void pe_feature_store_free(pe_feature_store *store);

/* MPI (build with `make MPI=1`; the default build has these as a single rank 0 of 1).
 * In an MPI build pe_zeroshot_features splits a batch's pairs across the ranks and
 * every rank returns the same results (unless params->local_only). */
pe_status pe_dist_init(int *argc, char ***argv);
/* Ends the MPI job for this rank after a closing agreement (see pe_dist_fail). */
void pe_dist_finalize(void);
int pe_dist_rank(void);
int pe_dist_size(void);
/* Rank `from` sends n bytes at data to rank 0; every rank makes the same calls in the
 * same order (a no-op on the others, and when from == 0). Point to point: run
 * pe_dist_check before a series of them (a failed `from` would never send). */
pe_status pe_dist_to_root(void *data, size_t n, int from);
/* Rank root's n bytes at data to every rank (all ranks call it). */
pe_status pe_dist_broadcast(void *data, size_t n, int root);
/* 1 in an MPI build (make MPI=1), else 0. */
int pe_dist_available(void);
/* A failed rank must not leave the others waiting (docs/SCALE.md "A failed rank").
 * pe_dist_fail: this rank hit an error (why: one line; the first call counts); it
 * tells the other ranks at once. pe_dist_broadcast, the zero-shot merge,
 * pe_dist_check and pe_dist_finalize start with an agreement: once any rank has failed, it returns
 * PE_ERR_IO on every rank, pe_last_error "MPI rank R: why" (R: lowest failed rank). */
void pe_dist_fail(const char *why);
/* 1 when another rank has failed (a notice arrived, or an agreement said so): long
 * local loops poll it to stop early. Cheap (MPI_Iprobe); 0 without MPI. */
int pe_dist_peer_failed(void);
/* Agreement on its own (all ranks call it): PE_OK when no rank has failed. */
pe_status pe_dist_check(void);
/* The lowest failed rank known here (-1: none) and its message into why. */
int pe_dist_failure(char *why, size_t cap);

#ifdef __cplusplus
}
#endif
#endif /* PATCHEAD_H */
