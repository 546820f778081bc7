/* bank.h — the in-memory reference bank shared by bank.c (file format) and
 * detect.c (fit / predict). Not public API: callers see the opaque pe_bank. */
#ifndef PE_BANK_H
#define PE_BANK_H

#include "core/internal.h"
#include "score/score.h"

struct pe_bank {
    pe_detect_params params; /* params.size is the resolved input side S (never 0 once fit) */
    char family[32];         /* backbone provenance, from pe_model_info */
    char name[64];
    char weights_hash[17];
    char *model_path;        /* model the bank was fit with ("" if unknown), owned */
    float threshold;         /* suggested label-free threshold (NAN if < 2 refs) */
    int num_refs, dim;
    int *grid_h, *grid_w;    /* (M) */
    char **names;            /* (M) provenance names, owned ("" if none) */
    float **feats;           /* (M) views into feat_data: (G_k, D) raw features */
    float *feat_data;        /* sum_k G_k * D */
    float **inv;             /* (M) views into inv_data: (G_k) inverse L2 norms */
    float *inv_data;
    pe_ref_cache *cache;     /* (M) what scoring derives from each reference alone (its
                                screen / bf16 copies), built on first use, freed with the bank */
    pe_image *images;        /* (M) S x S RGB references, only with params.align */
    /* --- beyond the paper (docs/BEYOND.md) ---
     * The M entries above are reference *views*; Eq. 3 runs over groups of them: group g
     * is entries [group_start[g], group_start[g + 1]). One entry per group for a plain
     * bank; the rotated / mirrored copies of one reference with --rotations / --flips;
     * a single group holding every coreset chunk for a union (coreset) bank. */
    int num_groups;
    int *group_start;        /* (num_groups + 1) */
    float calib_alpha;       /* conformal target false-alarm rate; 0 = not calibrated */
    int calib_n;
    float *calib_scores;     /* (calib_n) normal-image scores, sorted ascending */
    int calib_source;        /* PE_CALIB_* */
    char file_hash[17];      /* checksum of the .pead file it was loaded from, hex ("" if none) */
};

enum { PE_CALIB_NONE = 0, PE_CALIB_LOO = 1, PE_CALIB_IMAGES = 2 };

/* Allocate an empty bank for M references whose grids are given; features zeroed. */
pe_status pe_bank_alloc(int num_refs, int dim, const int *grid_h, const int *grid_w, pe_bank **out);
/* Fill inv/inv_data from the features (after they are written; empties the cache). */
void pe_bank_finish(pe_bank *bank);
/* Regroup the entries: num_groups groups of equal size (entries must divide evenly). */
pe_status pe_bank_set_groups(pe_bank *bank, int num_groups);
/* Store calibration scores (copied, sorted) and set the threshold for alpha. */
pe_status pe_bank_store_calibration(pe_bank *bank, const float *scores, int n, float alpha,
                                    int source);

#endif
