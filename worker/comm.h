/* The communication layer: one small API, three backends.
 *
 *   single  sq_comm_single(): rank 0 of 1, no MPI; every collective is a local
 *           no-op or copy (the single-process CPU path and unit tests).
 *   mpi     sq_comm_init_mpi(): host buffers, MPI non-blocking calls
 *           (comm_mpi.c). The CPU product path and every multi-rank test.
 *   nccl    sq_comm_init_nccl(): DEVICE buffers (cudaMalloc) for the data
 *           collectives (reduce, allreduce, bcast, alltoallv, send/recv),
 *           NCCL non-blocking communicator bootstrapped over MPI (comm_nccl.c).
 *           agree_status, barrier and fail points always go over MPI (host).
 *
 * Every collective has a DEADLINE (sq_comm_set_timeout, default from the env
 * SHARDQ_COMM_TIMEOUT in seconds, default 300): waits are non-blocking calls
 * polled until done or until the deadline, so a dead or stuck peer gives
 *   SQ_ERR_MPI "collective '<label>' timed out after N s on rank R (host) (a
 *   peer rank probably failed) -- hint: ..."
 * instead of a hang. After a timeout or any SQ_ERR_MPI from a collective the
 * communicator is unusable: the caller reports and calls sq_comm_abort(), which
 * ends the whole job (Open MPI 4.1 has no fault tolerance; the job restarts
 * from the last committed layer).
 *
 * Determinism: reductions are gather-to-root then a sum in rank order
 * ((b0 + b1) + b2) + ... on the root, chunk by chunk, so the result has the
 * same bits whatever MPI's or NCCL's algorithms are, and the same bits on both
 * backends. allreduce = that reduce to rank 0 + bcast.
 *
 * Error agreement: sq_comm_agree_status() lets every rank learn whether any
 * rank failed and gives the lowest failing rank's status and message, prefixed
 * "rank R (host): ", so that rank 0 can print it and every rank can exit.
 *
 * Fail points (fault-injection tests):
 *   SHARDQ_FAILPOINT=<label>[:<rank>][,<label>[:<rank>]...]
 *   SHARDQ_FAILPOINT_MODE=error|exit|hang   (default error)
 * sq_comm_failpoint(c, label) does nothing unless the env names this label
 * (and this rank, or no rank = every rank). Then, mode
 *   error: returns SQ_ERR_INTERNAL "fail point '<label>' triggered on rank R"
 *   exit:  _exit(137) at once, as if the process were killed (SIGKILL-like)
 *   hang:  sleeps forever, as a stuck rank (peers then hit their deadline).
 * The env is read at every call, so tests may setenv() between calls.
 *
 * Environment knobs (read by sq_comm_init_*; printed by sq_comm_describe):
 *   SHARDQ_COMM_TIMEOUT   deadline of every collective, seconds (300)
 *   SHARDQ_FAILPOINT, SHARDQ_FAILPOINT_MODE   as above
 *
 * Transitional: sq_comm is a small struct (rank, size, private impl) rather
 * than a fully opaque handle so that the single-rank seam of the layer pipeline
 * (sq_comm_single / sq_comm_owner / sq_comm_reduce_hessian / sq_comm_share_f32,
 * implemented in comm.c) keeps compiling; use the accessors, not the fields. */
#ifndef SQ_WORKER_COMM_H
#define SQ_WORKER_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "kernels/hessian.h"

#ifdef __cplusplus
extern "C" {
#endif

struct sq_comm_impl; /* comm_mpi.c */

typedef struct sq_comm {
  int rank, size;            /* read with sq_comm_rank / sq_comm_size */
  struct sq_comm_impl *impl; /* NULL for the single-rank communicator */
} sq_comm;

#define SQ_COMM_DEFAULT_TIMEOUT 300.0 /* seconds, when SHARDQ_COMM_TIMEOUT is unset */
#define SQ_COMM_FAILPOINT_EXIT_CODE 137

/* ---- creation ---------------------------------------------------------- */

/* The single-process communicator (rank 0 of 1). Nothing to free. (comm.c) */
sq_comm sq_comm_single(void);

/* MPI_Init_thread (if MPI is not initialised yet), then a dup of
 * MPI_COMM_WORLD with MPI_ERRORS_RETURN. *out is NULL on failure. */
sq_status sq_comm_init_mpi(int *argc, char ***argv, sq_comm **out);

/* NCCL over all MPI ranks: device = -1 picks (node-local rank) mod (devices on
 * the node). The ncclUniqueId travels over MPI; the NCCL communicator is
 * non-blocking (config.blocking = 0) so that init and every call can be
 * polled with a deadline. Without a usable GPU on ANY rank (or in a build
 * without CUDA) every rank gets SQ_ERR_NO_DEVICE with a message naming the
 * rank and host; MPI stays initialised so the caller can fall back to
 * sq_comm_init_mpi(). *out is NULL on failure. */
sq_status sq_comm_init_nccl(int *argc, char ***argv, int device, sq_comm **out);

/* Free the communicator (NULL or the single communicator's address are
 * fine). When the last communicator made by sq_comm_init_* is freed and this
 * layer initialised MPI, MPI_Finalize is called: free it after all other MPI
 * users (parallel HDF5) are closed. */
void sq_comm_free(sq_comm *c);

/* End the whole job now (ncclCommAbort, then MPI_Abort with code). For the
 * single communicator: _exit(code). Used after a collective failed or timed
 * out, so that no rank is left hanging. Does not return. */
void sq_comm_abort(const sq_comm *c, int code) __attribute__((noreturn));

/* ---- properties -------------------------------------------------------- */

int sq_comm_rank(const sq_comm *c);
int sq_comm_size(const sq_comm *c);
/* "single", "mpi" or "nccl". */
const char *sq_comm_backend_name(const sq_comm *c);
/* 1 if the data collectives take device pointers (nccl), 0 for host. */
int sq_comm_uses_device(const sq_comm *c);
/* This rank's host name ("localhost" for single). */
const char *sq_comm_host(const sq_comm *c);
/* Deadline of each later collective, seconds (> 0). */
sq_status sq_comm_set_timeout(sq_comm *c, double seconds);
double sq_comm_timeout(const sq_comm *c);
/* One line: backend, ranks, host, timeout, fail points (for start-up logs). */
void sq_comm_describe(const sq_comm *c, char *buf, size_t len);

/* ---- collectives (all ranks call them in the same order) ---------------- */
/* label names the step in errors ("reduce hessian layers.3.mlp.up_proj"). */

/* Deterministic sum of buf (n elements) over ranks into root's buf; other
 * ranks' buf is input only (unchanged). */
sq_status sq_comm_reduce_sum_f32(const sq_comm *c, float *buf, int64_t n, int root,
                                 const char *label);
sq_status sq_comm_reduce_sum_f64(const sq_comm *c, double *buf, int64_t n, int root,
                                 const char *label);
sq_status sq_comm_reduce_sum_i64(const sq_comm *c, int64_t *buf, int64_t n, int root,
                                 const char *label);
/* Same sum on every rank (reduce to rank 0 + bcast): same bits everywhere. */
sq_status sq_comm_allreduce_sum_f32(const sq_comm *c, float *buf, int64_t n, const char *label);
sq_status sq_comm_allreduce_sum_f64(const sq_comm *c, double *buf, int64_t n, const char *label);
sq_status sq_comm_allreduce_sum_i64(const sq_comm *c, int64_t *buf, int64_t n, const char *label);

/* root's bytes of buf to every rank's buf. */
sq_status sq_comm_bcast(const sq_comm *c, void *buf, int64_t bytes, int root, const char *label);

/* All-to-all with per-peer counts (MoE expert dispatch). Counts and
 * displacements are in ELEMENTS of elem_bytes each, one per rank:
 * sendbuf + sdispls[d]*elem_bytes holds sendcounts[d] elements for rank d;
 * recvbuf + rdispls[s]*elem_bytes gets recvcounts[s] elements from rank s.
 * Every count and displacement must fit an int (MPI's limit). */
sq_status sq_comm_alltoallv(const sq_comm *c, const void *sendbuf, const int64_t *sendcounts,
                            const int64_t *sdispls, void *recvbuf, const int64_t *recvcounts,
                            const int64_t *rdispls, size_t elem_bytes, const char *label);

/* Point to point, bytes, tag >= 0. recv checks that exactly `bytes` came. */
sq_status sq_comm_send(const sq_comm *c, const void *buf, int64_t bytes, int peer, int tag,
                       const char *label);
sq_status sq_comm_recv(const sq_comm *c, void *buf, int64_t bytes, int peer, int tag,
                       const char *label);

sq_status sq_comm_barrier(const sq_comm *c, const char *label);

/* Every rank passes its own status and message (NULL/"" if none). Every rank
 * gets in *global_status the status of the LOWEST failing rank (SQ_OK if none
 * failed) and, in msg_buf (len bytes, may be NULL), that rank's message as
 * "rank R (host): <message>". Returns SQ_OK unless the agreement itself failed
 * (SQ_ERR_MPI, e.g. timeout): then *global_status is SQ_ERR_MPI too. */
sq_status sq_comm_agree_status(const sq_comm *c, sq_status local_status, const char *local_message,
                               sq_status *global_status, char *msg_buf, size_t len);

/* Fault injection, see the top of this file. Returns SQ_OK when no fail point
 * matches (label, this rank). */
sq_status sq_comm_failpoint(const sq_comm *c, const char *label);

/* ---- the layer pipeline's steps on top of the collectives (comm.c) ------ */
/* Host buffers (single and mpi backends). The pipeline takes owners from
 * sharding/plan.h; sq_comm_owner is a plain round-robin for tests. */

/* Owner of module index `mod` of a layer (round-robin over ranks). */
int sq_comm_owner(const sq_comm *c, int layer, int mod);
/* Sum every rank's partial Hessian into owner's h (sum and count), in rank
 * order (deterministic); other ranks' h is unchanged. */
sq_status sq_comm_reduce_hessian(const sq_comm *c, sq_hessian *h, int owner, const char *name);
/* Copy n floats from owner's buf to every rank's buf. */
sq_status sq_comm_share_f32(const sq_comm *c, float *buf, int64_t n, int owner, const char *name);
/* Element-wise maximum of buf (n floats) over ranks, the same bits on every
 * rank; NaN wins (absmax observers must not hide a NaN). Host buffers; cost
 * O(ranks·n): for small observer vectors (absmax, SmoothQuant ranges). */
sq_status sq_comm_allreduce_max_f32(const sq_comm *c, float *buf, int64_t n, const char *label);

/* The MPI communicator (a dup of MPI_COMM_WORLD) for other MPI users such as
 * parallel HDF5; MPI_COMM_SELF for the single communicator. Declared only when
 * <mpi.h> was included before this header. */
#ifdef MPI_VERSION
MPI_Comm sq_comm_mpi_handle(const sq_comm *c);
#endif

/* ---- between comm_mpi.c and comm_nccl.c only (not for callers) --------- */
#ifdef SQ_COMM_BACKEND_INTERNAL
typedef enum sq_comm_dtype { SQ_COMM_F32, SQ_COMM_F64, SQ_COMM_I64 } sq_comm_dtype;
struct sq_nccl;
/* comm_mpi.c: attach an NCCL state to an MPI communicator; free without
 * finalising MPI (failed NCCL init: the caller falls back to MPI); the
 * timeout error every backend reports; deadline of a collective started now. */
void sq_comm_attach_nccl(sq_comm *c, struct sq_nccl *n);
void sq_comm_release(sq_comm *c, int may_finalize);
sq_status sq_comm_timeout_error(const sq_comm *c, const char *label);
double sq_comm_deadline(const sq_comm *c);
/* comm_nccl.c: the device data path. */
sq_status sq_nccl_open(const sq_comm *c, int device, struct sq_nccl **out);
void sq_nccl_close(struct sq_nccl *n);
void sq_nccl_abort(struct sq_nccl *n);
sq_status sq_nccl_reduce_sum(const sq_comm *c, struct sq_nccl *n, void *buf, int64_t count,
                             sq_comm_dtype dt, int root, double deadline, const char *label);
sq_status sq_nccl_bcast(const sq_comm *c, struct sq_nccl *n, void *buf, int64_t bytes, int root,
                        double deadline, const char *label);
sq_status sq_nccl_alltoallv(const sq_comm *c, struct sq_nccl *n, const void *sendbuf,
                            const int64_t *sendcounts, const int64_t *sdispls, void *recvbuf,
                            const int64_t *recvcounts, const int64_t *rdispls, size_t elem_bytes,
                            double deadline, const char *label);
/* send (is_send = 1) or recv of bytes with peer; NCCL has no tags: messages
 * between two ranks match in order. */
sq_status sq_nccl_p2p(const sq_comm *c, struct sq_nccl *n, void *buf, int64_t bytes, int peer,
                      int is_send, double deadline, const char *label);
#endif

#ifdef __cplusplus
}
#endif

#endif
