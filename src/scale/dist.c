/* dist.c — the few MPI collectives patchead uses, behind one interface. The default
 * build has no MPI dependency: every call is then the single rank 0 of 1. Build with
 * `make MPI=1` (OpenMPI's mpicc, -DPE_MPI) for the real thing. docs/SCALE.md. */
#include "scale.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef PE_MPI
#include <mpi.h>

/* Messages are cut into pieces of at most 256 MiB (MPI counts are ints). */
#define CHUNK_BYTES ((size_t)256 << 20)

static int started_here; /* pe_dist_init called MPI_Init (so finalize is ours) */

/* A failed rank (docs/SCALE.md "A failed rank"). Every exchange below starts with an
 * agreement (one MPI_Allreduce of "lowest failed rank"), so a rank that failed and
 * went straight to pe_dist_finalize meets the others in that same allreduce instead
 * of leaving them in a broadcast it will never make. A failing rank also sends each
 * other rank a one-int notice on a private communicator, which long local loops poll
 * (pe_dist_peer_failed) to stop early; pe_dist_finalize receives every notice. */
#define WHY_BYTES 512
#define NOTICE_TAG 77
static MPI_Comm notice_comm = MPI_COMM_NULL;
static MPI_Request *notices;      /* this rank's sent notices (size - 1), or NULL */
static int local_failed;          /* pe_dist_fail was called here */
static char local_why[WHY_BYTES]; /* its first message */
static int job_failed_rank = -1;  /* lowest failed rank, known to all after an agreement */
static char job_why[WHY_BYTES];   /* that rank's message */
static int notice_rank;           /* what the notices carry (kept until they are sent) */

int pe_dist_available(void) { return 1; }

static void open_notices(void)
{
    if (notice_comm == MPI_COMM_NULL) MPI_Comm_dup(MPI_COMM_WORLD, &notice_comm);
}

pe_status pe_dist_init(int *argc, char ***argv)
{
    int on = 0;
    MPI_Initialized(&on);
    if (on) {
        open_notices();
        return PE_OK;
    }
    /* Not started by an MPI launcher: stay a plain single process (no singleton MPI). */
    if (!getenv("OMPI_COMM_WORLD_SIZE") && !getenv("PMIX_RANK") && !getenv("PMI_SIZE"))
        return PE_OK;
    int provided;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return pe_fail(PE_ERR_IO, "MPI: initialisation failed");
    started_here = 1;
    open_notices();
    return PE_OK;
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

int pe_dist_peer_failed(void)
{
    if (job_failed_rank >= 0) return 1;
    if (!mpi_on() || notice_comm == MPI_COMM_NULL) return 0;
    int flag = 0;
    MPI_Iprobe(MPI_ANY_SOURCE, NOTICE_TAG, notice_comm, &flag, MPI_STATUS_IGNORE);
    return flag;
}

void pe_dist_fail(const char *why)
{
    int size = pe_dist_size();
    /* one rank, already failed, or stopping because another rank failed first */
    if (size == 1 || local_failed || pe_dist_peer_failed()) return;
    local_failed = 1;
    snprintf(local_why, sizeof local_why, "%s", why && *why ? why : "failed");
    notices = calloc((size_t)size, sizeof *notices);
    notice_rank = pe_dist_rank();
    for (int r = 0, j = 0; notices && r < size; r++)
        if (r != notice_rank)
            MPI_Isend(&notice_rank, 1, MPI_INT, r, NOTICE_TAG, notice_comm, &notices[j++]);
}

int pe_dist_failure(char *why, size_t cap)
{
    if (job_failed_rank >= 0 && why && cap) snprintf(why, cap, "%s", job_why);
    return job_failed_rank;
}

/* The agreement every exchange starts with (collective): PE_OK when no rank has
 * failed; else every rank learns the lowest failed rank and its message. */
static pe_status agree(void)
{
    int size = pe_dist_size();
    if (size == 1) return PE_OK;
    if (job_failed_rank < 0) {
        int mine = local_failed ? pe_dist_rank() : size, low = size;
        if (MPI_Allreduce(&mine, &low, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD) != MPI_SUCCESS)
            MPI_Abort(MPI_COMM_WORLD, 1); /* the ranks can no longer agree: end them all */
        if (low == size) return PE_OK;
        char why[WHY_BYTES];
        memcpy(why, local_why, sizeof why);
        if (MPI_Bcast(why, sizeof why, MPI_CHAR, low, MPI_COMM_WORLD) != MPI_SUCCESS)
            MPI_Abort(MPI_COMM_WORLD, 1);
        why[sizeof why - 1] = 0;
        memcpy(job_why, why, sizeof why);
        job_failed_rank = low;
    }
    return pe_fail(PE_ERR_IO, "MPI rank %d: %s", job_failed_rank, job_why);
}

pe_status pe_dist_check(void) { return agree(); }

void pe_dist_finalize(void)
{
    if (mpi_on() && pe_dist_size() > 1 && notice_comm != MPI_COMM_NULL) {
        agree(); /* the closing agreement: a failure anywhere is now known everywhere */
        /* receive every notice sent to this rank, so none is left in flight */
        int sent = notices != NULL, senders = 0, dummy;
        MPI_Allreduce(&sent, &senders, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
        for (int i = 0; i < senders - sent; i++)
            MPI_Recv(&dummy, 1, MPI_INT, MPI_ANY_SOURCE, NOTICE_TAG, notice_comm,
                     MPI_STATUS_IGNORE);
        if (notices) MPI_Waitall(pe_dist_size() - 1, notices, MPI_STATUSES_IGNORE);
        free(notices);
        notices = NULL;
        MPI_Comm_free(&notice_comm);
    }
    int on = 0, off = 0;
    MPI_Initialized(&on);
    MPI_Finalized(&off);
    if (started_here && on && !off) MPI_Finalize();
}

pe_status pe_dist_to_root(void *data, size_t n, int from)
{
    /* point to point, no agreement: callers run pe_dist_check before a series */
    int rank = pe_dist_rank();
    if (from == 0 || (rank != 0 && rank != from) || pe_dist_size() == 1) return PE_OK;
    if (job_failed_rank >= 0) return agree();
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
    pe_status s = agree();
    if (s) return s;
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
    pe_status s = agree();
    if (s) return s;
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
void pe_dist_fail(const char *why) { (void)why; }
int pe_dist_peer_failed(void) { return 0; }
pe_status pe_dist_check(void) { return PE_OK; }
int pe_dist_failure(char *why, size_t cap)
{
    (void)why;
    (void)cap;
    return -1;
}
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
