/* The NCCL backend of the communication layer (see comm.h): the data
 * collectives on DEVICE buffers over a non-blocking NCCL communicator, built
 * on top of an MPI communicator that carries the bootstrap (ncclUniqueId),
 * the error agreement and the fail points. NCCL has no timeout of its own, so
 * every wait polls ncclCommGetAsyncError and the stream against the deadline
 * and calls ncclCommAbort when it passes.
 *
 * Deterministic reduce: the root receives each rank's chunk (grouped
 * ncclRecv) and sums them in rank order with cublas{S,D}axpy (alpha = 1, so
 * each step is round(acc + x): the same bits as the CPU loop in comm_mpi.c).
 * int64 sums use ncclReduce: integer addition is associative, so any order
 * gives the same bits.
 *
 * Without SHARDQ_HAVE_CUDA this file only says that the backend is missing. */
#include <mpi.h>

#define SQ_COMM_BACKEND_INTERNAL 1
#include "worker/comm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef SHARDQ_HAVE_CUDA

sq_status sq_comm_init_nccl(int *argc, char ***argv, int device, sq_comm **out) {
  (void)argc;
  (void)argv;
  (void)device;
  *out = NULL;
  return sq_error_set(SQ_ERR_NO_DEVICE,
                      "the NCCL backend needs a CUDA build; this shardq was built "
                      "with SHARDQ_CUDA=OFF -- hint: use the MPI (CPU) backend");
}

static sq_status sq_nccl_missing(const char *label) {
  return sq_error_set(SQ_ERR_INTERNAL, "%s: NCCL call in a build without CUDA", label);
}
sq_status sq_nccl_open(const sq_comm *c, int device, struct sq_nccl **out) {
  (void)c;
  (void)device;
  *out = NULL;
  return sq_nccl_missing("nccl open");
}
void sq_nccl_close(struct sq_nccl *n) {
  (void)n;
}
void sq_nccl_abort(struct sq_nccl *n) {
  (void)n;
}
sq_status sq_nccl_reduce_sum(const sq_comm *c, struct sq_nccl *n, void *buf, int64_t count,
                             sq_comm_dtype dt, int root, double deadline, const char *label) {
  (void)c, (void)n, (void)buf, (void)count, (void)dt, (void)root, (void)deadline;
  return sq_nccl_missing(label);
}
sq_status sq_nccl_bcast(const sq_comm *c, struct sq_nccl *n, void *buf, int64_t bytes, int root,
                        double deadline, const char *label) {
  (void)c, (void)n, (void)buf, (void)bytes, (void)root, (void)deadline;
  return sq_nccl_missing(label);
}
sq_status sq_nccl_alltoallv(const sq_comm *c, struct sq_nccl *n, const void *sendbuf,
                            const int64_t *sendcounts, const int64_t *sdispls, void *recvbuf,
                            const int64_t *recvcounts, const int64_t *rdispls, size_t elem_bytes,
                            double deadline, const char *label) {
  (void)c, (void)n, (void)sendbuf, (void)sendcounts, (void)sdispls, (void)recvbuf;
  (void)recvcounts, (void)rdispls, (void)elem_bytes, (void)deadline;
  return sq_nccl_missing(label);
}
sq_status sq_nccl_p2p(const sq_comm *c, struct sq_nccl *n, void *buf, int64_t bytes, int peer,
                      int is_send, double deadline, const char *label) {
  (void)c, (void)n, (void)buf, (void)bytes, (void)peer, (void)is_send, (void)deadline;
  return sq_nccl_missing(label);
}

#else /* SHARDQ_HAVE_CUDA */

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <nccl.h>
#include <time.h>

#include "common/log.h"

#define SQ_NCCL_CHUNK_BYTES ((int64_t)64 << 20) /* per peer and reduction step */

struct sq_nccl {
  ncclComm_t comm;
  cudaStream_t stream;
  cublasHandle_t blas;
  int device;
  int aborted;
  char *scratch; /* device, (size + 1) * SQ_NCCL_CHUNK_BYTES, on the root of a reduce */
  size_t scratch_bytes;
};

static sq_status sq_nccl_fail(const sq_comm *c, ncclResult_t r, const char *call,
                              const char *label) {
  return sq_error_set(SQ_ERR_MPI,
                      "%s: %s failed on rank %d (%s): %s (%s) -- hint: a peer rank "
                      "probably failed; NCCL_DEBUG=WARN shows more",
                      label, call, c->rank, sq_comm_host(c), ncclGetErrorString(r),
                      ncclGetLastError(NULL));
}

static sq_status sq_cuda_fail(const sq_comm *c, cudaError_t e, const char *call,
                              const char *label) {
  return sq_error_set(SQ_ERR_CUDA, "%s: %s failed on rank %d (%s): %s", label, call, c->rank,
                      sq_comm_host(c), cudaGetErrorString(e));
}

/* Wait until NCCL finished the enqueued calls (async error no longer
 * ncclInProgress) and the stream is idle, or the deadline passes: then abort
 * the communicator so no kernel keeps spinning on a dead peer. */
static sq_status sq_nccl_wait(const sq_comm *c, struct sq_nccl *n, double deadline,
                              const char *label) {
  for (unsigned polls = 0;; ++polls) {
    ncclResult_t a = ncclSuccess;
    ncclResult_t r = ncclCommGetAsyncError(n->comm, &a);
    if (r != ncclSuccess) return sq_nccl_fail(c, r, "ncclCommGetAsyncError", label);
    if (a != ncclSuccess && a != ncclInProgress) {
      sq_nccl_abort(n);
      return sq_nccl_fail(c, a, "NCCL (asynchronous error)", label);
    }
    if (a == ncclSuccess) {
      cudaError_t q = cudaStreamQuery(n->stream);
      if (q == cudaSuccess) return SQ_OK;
      if (q != cudaErrorNotReady) return sq_cuda_fail(c, q, "cudaStreamQuery", label);
    }
    if (sq_time_now() > deadline) {
      sq_nccl_abort(n);
      return sq_comm_timeout_error(c, label);
    }
    if (polls > 64) {
      struct timespec ts = {0, polls > 2000 ? 1000000L : 50000L};
      nanosleep(&ts, NULL);
    }
  }
}

/* A call of a non-blocking communicator may answer ncclInProgress: fine. */
#define SQ_NCCL_CALL(c, call, label)                     \
  do {                                                   \
    ncclResult_t sq_r_ = (call);                         \
    if (sq_r_ != ncclSuccess && sq_r_ != ncclInProgress) \
      return sq_nccl_fail((c), sq_r_, #call, (label));   \
  } while (0)

sq_status sq_nccl_open(const sq_comm *c, int device, struct sq_nccl **out) {
  const char *label = "init nccl";
  *out = NULL;
  struct sq_nccl *n = calloc(1, sizeof *n);
  if (!n) return sq_error_set(SQ_ERR_NOMEM, "out of memory for the NCCL state");
  n->device = device;
  *out = n; /* from here on, the caller frees with sq_nccl_close */
  cudaError_t e = cudaSetDevice(device);
  if (e != cudaSuccess) return sq_cuda_fail(c, e, "cudaSetDevice", label);
  e = cudaStreamCreateWithFlags(&n->stream, cudaStreamNonBlocking);
  if (e != cudaSuccess) return sq_cuda_fail(c, e, "cudaStreamCreateWithFlags", label);
  if (cublasCreate(&n->blas) != CUBLAS_STATUS_SUCCESS ||
      cublasSetStream(n->blas, n->stream) != CUBLAS_STATUS_SUCCESS)
    return sq_error_set(SQ_ERR_CUDA, "%s: cublasCreate failed on rank %d (%s)", label, c->rank,
                        sq_comm_host(c));
  ncclUniqueId id;
  memset(&id, 0, sizeof id);
  if (c->rank == 0) SQ_NCCL_CALL(c, ncclGetUniqueId(&id), label);
  SQ_CHECK(sq_comm_bcast(c, &id, (int64_t)sizeof id, 0, "nccl unique id")); /* over MPI */
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  cfg.blocking = 0;
  SQ_NCCL_CALL(c, ncclCommInitRankConfig(&n->comm, c->size, id, c->rank, &cfg), label);
  return sq_nccl_wait(c, n, sq_comm_deadline(c), label);
}

void sq_nccl_abort(struct sq_nccl *n) {
  if (n && n->comm && !n->aborted) {
    ncclCommAbort(n->comm);
    n->aborted = 1;
  }
}

void sq_nccl_close(struct sq_nccl *n) {
  if (!n) return;
  if (n->comm && !n->aborted) {
    /* Finalize flushes pending work; on any error abort instead of waiting. */
    ncclResult_t a = ncclInProgress;
    double deadline = sq_time_now() + 30.0;
    ncclCommFinalize(n->comm);
    while (ncclCommGetAsyncError(n->comm, &a) == ncclSuccess && a == ncclInProgress &&
           sq_time_now() < deadline) {
      struct timespec ts = {0, 1000000L};
      nanosleep(&ts, NULL);
    }
    if (a == ncclSuccess)
      ncclCommDestroy(n->comm);
    else
      ncclCommAbort(n->comm);
  }
  if (n->scratch) cudaFree(n->scratch);
  if (n->blas) cublasDestroy(n->blas);
  if (n->stream) cudaStreamDestroy(n->stream);
  free(n);
}

sq_status sq_comm_init_nccl(int *argc, char ***argv, int device, sq_comm **out) {
  *out = NULL;
  sq_comm *c = NULL;
  SQ_CHECK(sq_comm_init_mpi(argc, argv, &c));
  /* Every rank checks its device, then all agree, so that either every rank
   * enters ncclCommInitRank or none does (else the others would hang). */
  int ndev = 0;
  cudaError_t e = cudaGetDeviceCount(&ndev);
  sq_status local = SQ_OK;
  char why[512] = "";
  if (e != cudaSuccess || ndev == 0) {
    local = SQ_ERR_NO_DEVICE;
    snprintf(why, sizeof why,
             "no usable CUDA device (cudaGetDeviceCount: %s) -- hint: run on GPU "
             "nodes or use the MPI (CPU) backend",
             e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
  } else if (device < 0) {
    MPI_Comm node;
    int local_rank = 0;
    if (MPI_Comm_split_type(sq_comm_mpi_handle(c), MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) ==
        MPI_SUCCESS) {
      MPI_Comm_rank(node, &local_rank);
      MPI_Comm_free(&node);
    }
    device = local_rank % ndev;
  } else if (device >= ndev) {
    local = SQ_ERR_NO_DEVICE;
    snprintf(why, sizeof why, "CUDA device %d requested but only %d present", device, ndev);
  }
  sq_status global = SQ_OK;
  char msg[1024];
  sq_status st = sq_comm_agree_status(c, local, why, &global, msg, sizeof msg);
  if (st == SQ_OK && global != SQ_OK) st = sq_error_set(global, "nccl backend: %s", msg);
  struct sq_nccl *n = NULL;
  if (st == SQ_OK) {
    sq_status opened = sq_nccl_open(c, device, &n);
    st = sq_comm_agree_status(c, opened, sq_error_message(), &global, msg, sizeof msg);
    if (st == SQ_OK && global != SQ_OK) {
      sq_error_clear();
      st = sq_error_set(global, "nccl backend: %s", msg);
    }
  }
  if (st != SQ_OK) {
    sq_nccl_close(n);
    sq_comm_release(c, 0); /* keep MPI up for the fallback */
    return st;
  }
  sq_comm_attach_nccl(c, n);
  *out = c;
  return SQ_OK;
}

static ncclDataType_t sq_nccl_type(sq_comm_dtype dt) {
  return dt == SQ_COMM_F32 ? ncclFloat32 : dt == SQ_COMM_F64 ? ncclFloat64 : ncclInt64;
}

sq_status sq_nccl_reduce_sum(const sq_comm *c, struct sq_nccl *n, void *buf, int64_t count,
                             sq_comm_dtype dt, int root, double deadline, const char *label) {
  if (dt == SQ_COMM_I64) {
    SQ_NCCL_CALL(c,
                 ncclReduce(buf, buf, (size_t)count, ncclInt64, ncclSum, root, n->comm, n->stream),
                 label);
    return sq_nccl_wait(c, n, deadline, label);
  }
  const size_t es = dt == SQ_COMM_F32 ? 4 : 8;
  const int64_t chunk = SQ_NCCL_CHUNK_BYTES / (int64_t)es;
  const int P = c->size;
  char *base = buf;
  if (c->rank == root && !n->scratch) {
    n->scratch_bytes = (size_t)(P + 1) * (size_t)SQ_NCCL_CHUNK_BYTES;
    cudaError_t e = cudaMalloc((void **)&n->scratch, n->scratch_bytes);
    if (e != cudaSuccess) {
      n->scratch = NULL;
      return sq_cuda_fail(c, e, "cudaMalloc (reduce scratch)", label);
    }
  }
  for (int64_t off = 0; off < count; off += chunk) {
    int cnt = (int)(count - off < chunk ? count - off : chunk);
    char *mine = base + off * (int64_t)es;
    if (c->rank != root) {
      SQ_NCCL_CALL(c, ncclSend(mine, (size_t)cnt, sq_nccl_type(dt), root, n->comm, n->stream),
                   label);
      SQ_CHECK(sq_nccl_wait(c, n, deadline, label));
      continue;
    }
    SQ_NCCL_CALL(c, ncclGroupStart(), label);
    for (int r = 0; r < P; ++r)
      if (r != root)
        SQ_NCCL_CALL(c,
                     ncclRecv(n->scratch + (size_t)r * SQ_NCCL_CHUNK_BYTES, (size_t)cnt,
                              sq_nccl_type(dt), r, n->comm, n->stream),
                     label);
    SQ_NCCL_CALL(c, ncclGroupEnd(), label);
    SQ_CHECK(sq_nccl_wait(c, n, deadline, label));
    /* acc = v_0 + v_1 + ... in rank order; slot P is the accumulator. */
    char *acc = n->scratch + (size_t)P * SQ_NCCL_CHUNK_BYTES;
    const char *v0 = root == 0 ? mine : n->scratch;
    cudaError_t e = cudaMemcpyAsync(acc, v0, (size_t)cnt * es, cudaMemcpyDeviceToDevice, n->stream);
    if (e != cudaSuccess) return sq_cuda_fail(c, e, "cudaMemcpyAsync", label);
    for (int r = 1; r < P; ++r) {
      const char *v = r == root ? mine : n->scratch + (size_t)r * SQ_NCCL_CHUNK_BYTES;
      const float one_f = 1.0f;
      const double one_d = 1.0;
      cublasStatus_t bs =
          dt == SQ_COMM_F32
              ? cublasSaxpy(n->blas, cnt, &one_f, (const float *)v, 1, (float *)acc, 1)
              : cublasDaxpy(n->blas, cnt, &one_d, (const double *)v, 1, (double *)acc, 1);
      if (bs != CUBLAS_STATUS_SUCCESS)
        return sq_error_set(SQ_ERR_CUDA, "%s: cublas axpy failed on rank %d (%s), status %d", label,
                            c->rank, sq_comm_host(c), (int)bs);
    }
    e = cudaMemcpyAsync(mine, acc, (size_t)cnt * es, cudaMemcpyDeviceToDevice, n->stream);
    if (e != cudaSuccess) return sq_cuda_fail(c, e, "cudaMemcpyAsync", label);
    SQ_CHECK(sq_nccl_wait(c, n, deadline, label));
  }
  return SQ_OK;
}

sq_status sq_nccl_bcast(const sq_comm *c, struct sq_nccl *n, void *buf, int64_t bytes, int root,
                        double deadline, const char *label) {
  SQ_NCCL_CALL(c, ncclBroadcast(buf, buf, (size_t)bytes, ncclUint8, root, n->comm, n->stream),
               label);
  return sq_nccl_wait(c, n, deadline, label);
}

sq_status sq_nccl_alltoallv(const sq_comm *c, struct sq_nccl *n, const void *sendbuf,
                            const int64_t *sendcounts, const int64_t *sdispls, void *recvbuf,
                            const int64_t *recvcounts, const int64_t *rdispls, size_t elem_bytes,
                            double deadline, const char *label) {
  SQ_NCCL_CALL(c, ncclGroupStart(), label);
  for (int r = 0; r < c->size; ++r) {
    if (sendcounts[r] > 0)
      SQ_NCCL_CALL(c,
                   ncclSend((const char *)sendbuf + sdispls[r] * (int64_t)elem_bytes,
                            (size_t)sendcounts[r] * elem_bytes, ncclUint8, r, n->comm, n->stream),
                   label);
    if (recvcounts[r] > 0)
      SQ_NCCL_CALL(c,
                   ncclRecv((char *)recvbuf + rdispls[r] * (int64_t)elem_bytes,
                            (size_t)recvcounts[r] * elem_bytes, ncclUint8, r, n->comm, n->stream),
                   label);
  }
  SQ_NCCL_CALL(c, ncclGroupEnd(), label);
  return sq_nccl_wait(c, n, deadline, label);
}

sq_status sq_nccl_p2p(const sq_comm *c, struct sq_nccl *n, void *buf, int64_t bytes, int peer,
                      int is_send, double deadline, const char *label) {
  if (is_send)
    SQ_NCCL_CALL(c, ncclSend(buf, (size_t)bytes, ncclUint8, peer, n->comm, n->stream), label);
  else
    SQ_NCCL_CALL(c, ncclRecv(buf, (size_t)bytes, ncclUint8, peer, n->comm, n->stream), label);
  return sq_nccl_wait(c, n, deadline, label);
}

#endif /* SHARDQ_HAVE_CUDA */
