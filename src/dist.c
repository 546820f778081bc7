/* dist.c — the few MPI collectives patchead uses, behind one interface. The default
 * build has no MPI dependency: every call is then the single rank 0 of 1. Build with
 * `make MPI=1` (OpenMPI's mpicc, -DPE_MPI) for the real thing. docs/SCALE.md. */
#include "scale.h"

#include <math.h>
#include <string.h>

#ifdef PE_MPI
#include <mpi.h>

/* Messages are cut into pieces of at most 256 MiB (MPI counts are ints). */
#define CHUNK_BYTES ((size_t)256 << 20)

static int started_here; /* pe_dist_init called MPI_Init (so finalize is ours) */

int pe_dist_available(void) { return 1; }

pe_status pe_dist_init(int *argc, char ***argv)
{
    int on = 0;
    MPI_Initialized(&on);
    if (on) return PE_OK;
    /* Not started by an MPI launcher: stay a plain single process (no singleton MPI). */
    if (!getenv("OMPI_COMM_WORLD_SIZE") && !getenv("PMIX_RANK") && !getenv("PMI_SIZE"))
        return PE_OK;
    int provided;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return pe_fail(PE_ERR_IO, "MPI: initialisation failed");
    started_here = 1;
    return PE_OK;
}

void pe_dist_finalize(void)
{
    int on = 0, off = 0;
    MPI_Initialized(&on);
    MPI_Finalized(&off);
    if (started_here && on && !off) MPI_Finalize();
}

static int mpi_on(void)
{
    int on = 0, off = 0;
    MPI_Initialized(&on);
    MPI_Finalized(&off);
    return on && !off;
}

int pe_dist_rank(void)
{
    int r = 0;
    if (mpi_on()) MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
}

int pe_dist_size(void)
{
    int n = 1;
    if (mpi_on()) MPI_Comm_size(MPI_COMM_WORLD, &n);
    return n;
}

pe_status pe_dist_to_root(void *data, size_t n, int from)
{
    int rank = pe_dist_rank();
    if (from == 0 || (rank != 0 && rank != from) || pe_dist_size() == 1) return PE_OK;
    for (size_t off = 0; off < n; off += CHUNK_BYTES) {
        int len = (int)(n - off < CHUNK_BYTES ? n - off : CHUNK_BYTES);
        int rc = rank == from ? MPI_Send((char *)data + off, len, MPI_BYTE, 0, 7, MPI_COMM_WORLD)
                              : MPI_Recv((char *)data + off, len, MPI_BYTE, from, 7, MPI_COMM_WORLD,
                                         MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) return pe_fail(PE_ERR_IO, "MPI: transfer from rank %d failed", from);
    }
    return PE_OK;
}

pe_status pe_dist_broadcast(void *data, size_t n, int root)
{
    if (pe_dist_size() == 1) return PE_OK;
    for (size_t off = 0; off < n; off += CHUNK_BYTES) {
        int len = (int)(n - off < CHUNK_BYTES ? n - off : CHUNK_BYTES);
        if (MPI_Bcast((char *)data + off, len, MPI_BYTE, root, MPI_COMM_WORLD) != MPI_SUCCESS)
            return pe_fail(PE_ERR_IO, "MPI: broadcast from rank %d failed", root);
    }
    return PE_OK;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* MPI reduction over blocks of k keys: inout = the k smallest keys of in + inout
 * (+INF = empty slot). The kept set does not depend on the order ranks are combined
 * in, and the Eq. 3 mean of k keys is exact in double (docs/SCALE.md), so every rank
 * count gives the bytes of the single-process run. */
static void merge_blocks(void *in, void *inout, int *len, MPI_Datatype *type)
{
    int bytes = 0;
    MPI_Type_size(*type, &bytes);
    int k = bytes / (int)sizeof(float);
    float *buf = malloc(2 * (size_t)k * sizeof *buf);
    if (!buf) MPI_Abort(MPI_COMM_WORLD, 1);
    for (int b = 0; b < *len; b++) {
        const float *x = (const float *)in + (size_t)b * k;
        float *y = (float *)inout + (size_t)b * k;
        int c = 0;
        for (int j = 0; j < k; j++) {
            if (x[j] < INFINITY) buf[c++] = x[j];
            if (y[j] < INFINITY) buf[c++] = y[j];
        }
        if (c > k) qsort(buf, (size_t)c, sizeof *buf, cmp_float);
        for (int j = 0; j < k; j++) y[j] = j < c ? buf[j] : INFINITY;
    }
    free(buf);
}

pe_status pe_dist_merge_selection(float *heaps, size_t blocks, int k)
{
    if (pe_dist_size() == 1) return PE_OK;
    MPI_Datatype block;
    MPI_Op op;
    MPI_Type_contiguous(k, MPI_FLOAT, &block);
    MPI_Type_commit(&block);
    MPI_Op_create(merge_blocks, 1, &op);
    size_t per = CHUNK_BYTES / ((size_t)k * sizeof(float));
    if (per < 1) per = 1;
    int rc = MPI_SUCCESS;
    for (size_t b0 = 0; b0 < blocks && rc == MPI_SUCCESS; b0 += per) {
        int len = (int)(blocks - b0 < per ? blocks - b0 : per);
        rc = MPI_Allreduce(MPI_IN_PLACE, heaps + b0 * (size_t)k, len, block, op, MPI_COMM_WORLD);
    }
    MPI_Op_free(&op);
    MPI_Type_free(&block);
    return rc == MPI_SUCCESS ? PE_OK : pe_fail(PE_ERR_IO, "MPI: merging the selections failed");
}

#else /* no MPI: one rank */

int pe_dist_available(void) { return 0; }
pe_status pe_dist_init(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return PE_OK;
}
void pe_dist_finalize(void) {}
int pe_dist_rank(void) { return 0; }
int pe_dist_size(void) { return 1; }
pe_status pe_dist_to_root(void *data, size_t n, int from)
{
    (void)data;
    (void)n;
    (void)from;
    return PE_OK;
}
pe_status pe_dist_broadcast(void *data, size_t n, int root)
{
    (void)data;
    (void)n;
    (void)root;
    return PE_OK;
}
pe_status pe_dist_merge_selection(float *heaps, size_t blocks, int k)
{
    (void)heaps;
    (void)blocks;
    (void)k;
    return PE_OK;
}

#endif
