/* spill.c — feature maps of a batch in RAM or in a memory-mapped spill file.
 *
 * Spilled: one file "<dir>/patchead-spill-XXXXXX" of n * G * (D [+ 1]) floats, created
 * with mkstemp, unlinked at once (it disappears with the process, even on a crash),
 * sized with ftruncate and mapped MAP_SHARED: written pages go back to the file, so
 * the kernel can drop them from RAM and page them in again when scoring reads them. */
#include "core/internal.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct pe_feature_store {
    int n, patches, dim, with_attn;
    float *data; /* (n, G, D) then (n, G) attention when with_attn */
    size_t bytes;
    int mapped; /* 1: munmap, 0: free */
    pe_features *views;
};

pe_status pe_feature_store_create(const char *spill_dir, int n, int patches, int dim, int with_attn,
                                  pe_feature_store **out)
{
    *out = NULL;
    if (n <= 0 || patches <= 0 || dim <= 0)
        return pe_fail(PE_ERR_ARG, "feature store: %d images of %d patches x %d", n, patches, dim);
    pe_feature_store *s = calloc(1, sizeof *s);
    if (!s) return pe_fail(PE_ERR_NOMEM, "feature store: out of memory");
    s->n = n;
    s->patches = patches;
    s->dim = dim;
    s->with_attn = with_attn;
    double floats = (double)n * patches * (dim + (with_attn ? 1 : 0));
    if (floats * 4 > (double)SIZE_MAX / 2) {
        free(s);
        return pe_fail(PE_ERR_LIMIT, "feature store: %d images x %d x %d is too large", n, patches,
                       dim);
    }
    s->bytes = (size_t)floats * sizeof(float);
    s->views = calloc((size_t)n, sizeof *s->views);
    if (!s->views) {
        free(s);
        return pe_fail(PE_ERR_NOMEM, "feature store: out of memory");
    }
    pe_status st = PE_OK;
    if (spill_dir) {
        char path[4096];
        snprintf(path, sizeof path, "%s/patchead-spill-XXXXXX", spill_dir);
        int fd = mkstemp(path);
        if (fd < 0) {
            st = pe_fail(PE_ERR_IO, "%s: cannot create a spill file there (%s)", spill_dir,
                         strerror(errno));
        } else {
            unlink(path);
            void *map = MAP_FAILED;
            if (ftruncate(fd, (off_t)s->bytes) != 0)
                st = pe_fail(PE_ERR_IO, "%s: cannot size a %.2f GiB spill file (%s)", spill_dir,
                             s->bytes / 1073741824.0, strerror(errno));
            else if ((map = mmap(NULL, s->bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) ==
                     MAP_FAILED)
                st = pe_fail(PE_ERR_IO, "%s: cannot map the spill file (%s)", spill_dir,
                             strerror(errno));
            close(fd); /* the mapping keeps the (unlinked) file alive */
            s->data = map == MAP_FAILED ? NULL : map;
            s->mapped = 1;
        }
    } else {
        s->data = pe_alloc(s->bytes / sizeof(float), sizeof(float), "batch features");
        if (!s->data) st = PE_ERR_NOMEM;
    }
    if (st) {
        free(s->views);
        free(s);
        return st;
    }
    *out = s;
    return PE_OK;
}

pe_status pe_feature_store_put(pe_feature_store *s, int i, const pe_features *f)
{
    if (!s || !f || !f->data || i < 0 || i >= s->n)
        return pe_fail(PE_ERR_ARG, "feature store: bad slot %d", i);
    if (f->grid_h * f->grid_w != s->patches || f->dim != s->dim)
        return pe_fail(PE_ERR_SHAPE,
                       "feature store: image %d has %dx%dx%d features, the batch %d patches x %d "
                       "(all images must use one input size)",
                       i, f->grid_h, f->grid_w, f->dim, s->patches, s->dim);
    if (s->with_attn && !f->attn)
        return pe_fail(PE_ERR_ARG, "feature store: image %d has no attention", i);
    size_t g = (size_t)s->patches;
    float *dst = s->data + (size_t)i * g * s->dim;
    memcpy(dst, f->data, g * s->dim * sizeof(float));
    pe_features *v = &s->views[i];
    v->grid_h = f->grid_h;
    v->grid_w = f->grid_w;
    v->dim = f->dim;
    v->data = dst;
    v->attn = NULL;
    if (s->with_attn) {
        float *a = s->data + (size_t)s->n * g * s->dim + (size_t)i * g;
        memcpy(a, f->attn, g * sizeof(float));
        v->attn = a;
    }
    return PE_OK;
}

pe_status pe_feature_store_broadcast(pe_feature_store *s, int i, int root)
{
    if (!s || i < 0 || i >= s->n) return pe_fail(PE_ERR_ARG, "feature store: bad slot %d", i);
    size_t g = (size_t)s->patches;
    float *data = s->data + (size_t)i * g * s->dim;
    float *attn = s->with_attn ? s->data + (size_t)s->n * g * s->dim + (size_t)i * g : NULL;
    pe_status st = pe_dist_broadcast(&s->views[i], sizeof s->views[i], root);
    if (!st) st = pe_dist_broadcast(data, g * s->dim * sizeof(float), root);
    if (!st && attn) st = pe_dist_broadcast(attn, g * sizeof(float), root);
    s->views[i].data = data; /* the root's pointers mean nothing here */
    s->views[i].attn = attn;
    return st;
}

const pe_features *pe_feature_store_views(const pe_feature_store *s) { return s ? s->views : NULL; }

void pe_feature_store_free(pe_feature_store *s)
{
    if (!s) return;
    if (s->mapped) munmap(s->data, s->bytes);
    else free(s->data);
    free(s->views);
    free(s);
}
