/* bank.h — the in-memory reference bank shared by bank.c (file format) and
 * detect.c (fit / predict). Not public API: callers see the opaque pe_bank. */
#ifndef PE_BANK_H
#define PE_BANK_H

#include "internal.h"

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
    pe_image *images;        /* (M) S x S RGB references, only with params.align */
    char file_hash[17];      /* checksum of the .pead file it was loaded from, hex ("" if none) */
};

/* Allocate an empty bank for M references whose grids are given; features zeroed. */
pe_status pe_bank_alloc(int num_refs, int dim, const int *grid_h, const int *grid_w, pe_bank **out);
/* Fill inv/inv_data from the features (after they are written). */
void pe_bank_finish(pe_bank *bank);

#endif
