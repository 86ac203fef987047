/* The MPI backend of the communication layer, and the dispatch shared by all
 * backends (see comm.h). Every wait is a non-blocking MPI call polled with
 * MPI_Testall against a deadline, so a dead peer turns into SQ_ERR_MPI instead
 * of a hang. Two duplicated communicators keep user point-to-point messages
 * (`mpi`) apart from the messages of our collectives (`coll`). Reductions are
 * gather-to-root in chunks of SQ_COMM_CHUNK_BYTES and a sum in rank order. */
#include <mpi.h>

#define SQ_COMM_BACKEND_INTERNAL 1
#include "worker/comm.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

#define SQ_COMM_CHUNK_BYTES ((int64_t)4 << 20) /* per peer and reduction step */
#define SQ_COMM_MSG_BYTES ((int64_t)1 << 30)   /* largest single MPI message */
#define SQ_COMM_AGREE_TEXT 1024

struct sq_comm_impl {
  MPI_Comm mpi;  /* user point to point */
  MPI_Comm coll; /* our collectives */
  double timeout;
  char host[256];
  struct sq_nccl *nccl; /* non-NULL: nccl backend */
};

static int sq_comm_live;    /* communicators made by sq_comm_init_* */
static int sq_comm_we_init; /* this layer called MPI_Init_thread */

/* ---- errors and waits ---------------------------------------------------- */

static sq_status sq_mpi_error(const sq_comm *c, int rc, const char *call, const char *label) {
  char text[MPI_MAX_ERROR_STRING] = "";
  int len = 0;
  MPI_Error_string(rc, text, &len);
  return sq_error_set(SQ_ERR_MPI,
                      "%s: %s failed on rank %d (%s): %s -- hint: a peer rank probably "
                      "failed; look for its error",
                      label, call, c->rank, sq_comm_host(c), text);
}

sq_status sq_comm_timeout_error(const sq_comm *c, const char *label) {
  return sq_error_set(SQ_ERR_MPI,
                      "collective '%s' timed out after %g s on rank %d (%s) (a peer "
                      "rank probably failed) -- hint: look for the first error of another rank; "
                      "raise SHARDQ_COMM_TIMEOUT if this step legitimately takes longer",
                      label, sq_comm_timeout(c), c->rank, sq_comm_host(c));
}

double sq_comm_deadline(const sq_comm *c) {
  return sq_time_now() + sq_comm_timeout(c);
}

/* Poll reqs until all are done or the deadline passes. Short spins first
 * (latency), then sleeps of up to 1 ms so oversubscribed ranks share cores. */
static sq_status sq_mpi_wait(const sq_comm *c, int n, MPI_Request *reqs, MPI_Status *st,
                             double deadline, const char *label) {
  for (unsigned polls = 0;; ++polls) {
    int done = 0;
    int rc = MPI_Testall(n, reqs, &done, st ? st : MPI_STATUSES_IGNORE);
    if (rc != MPI_SUCCESS) return sq_mpi_error(c, rc, "MPI_Testall", label);
    if (done) return SQ_OK;
    if (sq_time_now() > deadline) return sq_comm_timeout_error(c, label);
    if (polls > 64) {
      struct timespec ts = {0, polls > 2000 ? 1000000L : 50000L};
      nanosleep(&ts, NULL);
    }
  }
}

/* ---- creation ------------------------------------------------------------ */

static sq_status sq_comm_env_timeout(double *out) {
  const char *s = getenv("SHARDQ_COMM_TIMEOUT");
  *out = SQ_COMM_DEFAULT_TIMEOUT;
  if (!s || !*s) return SQ_OK;
  char *end = NULL;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || *end || !(v > 0))
    return sq_error_set(SQ_ERR_ARG,
                        "SHARDQ_COMM_TIMEOUT='%s' is not a positive number of seconds "
                        "-- hint: e.g. SHARDQ_COMM_TIMEOUT=600",
                        s);
  *out = v;
  return SQ_OK;
}

sq_status sq_comm_init_mpi(int *argc, char ***argv, sq_comm **out) {
  *out = NULL;
  double timeout;
  SQ_CHECK(sq_comm_env_timeout(&timeout));
  int inited = 0, finalized = 0;
  MPI_Initialized(&inited);
  MPI_Finalized(&finalized);
  if (finalized)
    return sq_error_set(SQ_ERR_MPI,
                        "MPI was already finalized -- hint: create communicators "
                        "before freeing the last one");
  if (!inited) {
    int provided = 0;
    int rc = MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided);
    if (rc != MPI_SUCCESS)
      return sq_error_set(SQ_ERR_MPI,
                          "MPI_Init_thread failed (code %d) -- hint: start with "
                          "mpirun/srun --mpi=pmix; as root set OMPI_ALLOW_RUN_AS_ROOT=1 "
                          "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1",
                          rc);
    sq_comm_we_init = 1;
  }
  sq_comm *c = calloc(1, sizeof *c);
  struct sq_comm_impl *im = calloc(1, sizeof *im);
  if (!c || !im) {
    free(c);
    free(im);
    return sq_error_set(SQ_ERR_NOMEM, "out of memory creating the MPI communicator");
  }
  c->impl = im;
  im->timeout = timeout;
  im->mpi = im->coll = MPI_COMM_NULL;
  if (gethostname(im->host, sizeof im->host - 1) != 0) strcpy(im->host, "unknown-host");
  int rc = MPI_Comm_dup(MPI_COMM_WORLD, &im->mpi);
  if (rc == MPI_SUCCESS) rc = MPI_Comm_set_errhandler(im->mpi, MPI_ERRORS_RETURN);
  if (rc == MPI_SUCCESS) rc = MPI_Comm_dup(im->mpi, &im->coll);
  if (rc == MPI_SUCCESS) rc = MPI_Comm_set_errhandler(im->coll, MPI_ERRORS_RETURN);
  if (rc == MPI_SUCCESS) rc = MPI_Comm_rank(im->mpi, &c->rank);
  if (rc == MPI_SUCCESS) rc = MPI_Comm_size(im->mpi, &c->size);
  ++sq_comm_live;
  if (rc != MPI_SUCCESS) {
    sq_status st = sq_mpi_error(c, rc, "MPI_Comm_dup(MPI_COMM_WORLD)", "init mpi");
    sq_comm_release(c, 0);
    return st;
  }
  *out = c;
  return SQ_OK;
}

void sq_comm_attach_nccl(sq_comm *c, struct sq_nccl *n) {
  c->impl->nccl = n;
}

void sq_comm_release(sq_comm *c, int may_finalize) {
  if (!c || !c->impl) return;
  struct sq_comm_impl *im = c->impl;
  if (im->nccl) sq_nccl_close(im->nccl);
  if (im->coll != MPI_COMM_NULL) MPI_Comm_free(&im->coll);
  if (im->mpi != MPI_COMM_NULL) MPI_Comm_free(&im->mpi);
  free(im);
  free(c);
  if (--sq_comm_live == 0 && sq_comm_we_init && may_finalize) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
    sq_comm_we_init = 0;
  }
}

void sq_comm_free(sq_comm *c) {
  sq_comm_release(c, 1);
}

void sq_comm_abort(const sq_comm *c, int code) {
  fflush(stdout);
  fflush(stderr);
  if (c && c->impl) {
    if (c->impl->nccl) sq_nccl_abort(c->impl->nccl);
    MPI_Abort(c->impl->mpi, code);
  }
  _exit(code);
}

/* ---- properties ---------------------------------------------------------- */

int sq_comm_rank(const sq_comm *c) {
  return c->rank;
}
int sq_comm_size(const sq_comm *c) {
  return c->size;
}
const char *sq_comm_backend_name(const sq_comm *c) {
  return !c->impl ? "single" : c->impl->nccl ? "nccl" : "mpi";
}
int sq_comm_uses_device(const sq_comm *c) {
  return c->impl && c->impl->nccl;
}
const char *sq_comm_host(const sq_comm *c) {
  return c->impl ? c->impl->host : "localhost";
}
double sq_comm_timeout(const sq_comm *c) {
  return c->impl ? c->impl->timeout : SQ_COMM_DEFAULT_TIMEOUT;
}

sq_status sq_comm_set_timeout(sq_comm *c, double seconds) {
  if (!(seconds > 0))
    return sq_error_set(SQ_ERR_ARG, "communication timeout %g s must be positive", seconds);
  if (c->impl) c->impl->timeout = seconds;
  return SQ_OK;
}

void sq_comm_describe(const sq_comm *c, char *buf, size_t len) {
  const char *fp = getenv("SHARDQ_FAILPOINT"), *mode = getenv("SHARDQ_FAILPOINT_MODE");
  snprintf(buf, len, "comm: backend %s, %d rank%s, rank %d on %s, timeout %g s%s%s%s%s",
           sq_comm_backend_name(c), c->size, c->size == 1 ? "" : "s", c->rank, sq_comm_host(c),
           sq_comm_timeout(c), fp && *fp ? ", FAIL POINT " : "", fp && *fp ? fp : "",
           fp && *fp ? " mode " : "", fp && *fp ? (mode && *mode ? mode : "error") : "");
}

MPI_Comm sq_comm_mpi_handle(const sq_comm *c) {
  return c->impl ? c->impl->mpi : MPI_COMM_SELF;
}

/* ---- reductions ---------------------------------------------------------- */

static size_t sq_dtype_bytes(sq_comm_dtype dt) {
  return dt == SQ_COMM_F32 ? 4 : 8;
}
static MPI_Datatype sq_dtype_mpi(sq_comm_dtype dt) {
  return dt == SQ_COMM_F32 ? MPI_FLOAT : dt == SQ_COMM_F64 ? MPI_DOUBLE : MPI_INT64_T;
}

/* acc (n) = src[0] + src[1] + ... + src[size-1], left to right. */
static void sq_sum_in_order(void *acc, void *const *src, int size, int64_t n, sq_comm_dtype dt) {
  if (dt == SQ_COMM_F32) {
    float *a = acc;
    memcpy(a, src[0], (size_t)n * 4);
    for (int r = 1; r < size; ++r)
      for (int64_t i = 0; i < n; ++i) a[i] += ((const float *)src[r])[i];
  } else if (dt == SQ_COMM_F64) {
    double *a = acc;
    memcpy(a, src[0], (size_t)n * 8);
    for (int r = 1; r < size; ++r)
      for (int64_t i = 0; i < n; ++i) a[i] += ((const double *)src[r])[i];
  } else {
    uint64_t *a = acc; /* unsigned: wrap-around instead of UB, same bits as int64 */
    memcpy(a, src[0], (size_t)n * 8);
    for (int r = 1; r < size; ++r)
      for (int64_t i = 0; i < n; ++i) a[i] += ((const uint64_t *)src[r])[i];
  }
}

static sq_status sq_mpi_reduce(const sq_comm *c, void *buf, int64_t n, sq_comm_dtype dt, int root,
                               double deadline, const char *label) {
  const size_t es = sq_dtype_bytes(dt);
  const int64_t chunk = SQ_COMM_CHUNK_BYTES / (int64_t)es;
  const MPI_Datatype mt = sq_dtype_mpi(dt);
  MPI_Comm comm = c->impl->coll;
  char *base = buf;
  if (c->rank != root) {
    for (int64_t off = 0; off < n; off += chunk) {
      int cnt = (int)(n - off < chunk ? n - off : chunk);
      MPI_Request rq;
      int rc = MPI_Isend(base + off * es, cnt, mt, root, 1, comm, &rq);
      if (rc != MPI_SUCCESS) return sq_mpi_error(c, rc, "MPI_Isend", label);
      SQ_CHECK(sq_mpi_wait(c, 1, &rq, NULL, deadline, label));
    }
    return SQ_OK;
  }
  /* Root: one chunk slot per rank (+ the accumulator), all sized up front. */
  const int P = c->size;
  char *scratch = malloc((size_t)(P + 1) * (size_t)chunk * es);
  MPI_Request *reqs = malloc((size_t)P * sizeof *reqs);
  void **src = malloc((size_t)P * sizeof *src);
  sq_status st = SQ_OK;
  if (!scratch || !reqs || !src) {
    st = sq_error_set(SQ_ERR_NOMEM, "%s: out of memory for the reduction buffers (%d x %lld bytes)",
                      label, P + 1, (long long)(chunk * (int64_t)es));
    goto done;
  }
  char *acc = scratch + (size_t)P * (size_t)chunk * es;
  for (int64_t off = 0; off < n; off += chunk) {
    int cnt = (int)(n - off < chunk ? n - off : chunk), nreq = 0;
    for (int r = 0; r < P; ++r) {
      if (r == root) {
        src[r] = base + off * es;
        continue;
      }
      src[r] = scratch + (size_t)r * (size_t)chunk * es;
      int rc = MPI_Irecv(src[r], cnt, mt, r, 1, comm, &reqs[nreq++]);
      if (rc != MPI_SUCCESS) {
        st = sq_mpi_error(c, rc, "MPI_Irecv", label);
        goto done;
      }
    }
    SQ_CHECK_GOTO(sq_mpi_wait(c, nreq, reqs, NULL, deadline, label), st, done);
    sq_sum_in_order(acc, src, P, cnt, dt);
    memcpy(base + off * es, acc, (size_t)cnt * es);
  }
done:
  free(src);
  free(reqs);
  free(scratch);
  return st;
}

static sq_status sq_mpi_bcast(const sq_comm *c, void *buf, int64_t bytes, int root, double deadline,
                              const char *label) {
  for (int64_t off = 0; off < bytes; off += SQ_COMM_MSG_BYTES) {
    int cnt = (int)(bytes - off < SQ_COMM_MSG_BYTES ? bytes - off : SQ_COMM_MSG_BYTES);
    MPI_Request rq;
    int rc = MPI_Ibcast((char *)buf + off, cnt, MPI_BYTE, root, c->impl->coll, &rq);
    if (rc != MPI_SUCCESS) return sq_mpi_error(c, rc, "MPI_Ibcast", label);
    SQ_CHECK(sq_mpi_wait(c, 1, &rq, NULL, deadline, label));
  }
  return SQ_OK;
}

static sq_status sq_comm_check_root(const sq_comm *c, int root, int64_t n, const void *buf,
                                    const char *label) {
  if (root < 0 || root >= c->size)
    return sq_error_set(SQ_ERR_ARG, "%s: root rank %d is outside 0..%d", label, root, c->size - 1);
  if (n < 0 || (n > 0 && !buf))
    return sq_error_set(SQ_ERR_ARG, "%s: bad buffer (%lld elements at %p)", label, (long long)n,
                        buf);
  return SQ_OK;
}

static sq_status sq_comm_reduce(const sq_comm *c, void *buf, int64_t n, sq_comm_dtype dt, int root,
                                const char *label) {
  SQ_CHECK(sq_comm_check_root(c, root, n, buf, label));
  if (!c->impl || c->size == 1) return SQ_OK;
  double deadline = sq_comm_deadline(c);
  if (c->impl->nccl) return sq_nccl_reduce_sum(c, c->impl->nccl, buf, n, dt, root, deadline, label);
  return sq_mpi_reduce(c, buf, n, dt, root, deadline, label);
}

static sq_status sq_comm_allreduce(const sq_comm *c, void *buf, int64_t n, sq_comm_dtype dt,
                                   const char *label) {
  SQ_CHECK(sq_comm_check_root(c, 0, n, buf, label));
  if (!c->impl || c->size == 1) return SQ_OK;
  double deadline = sq_comm_deadline(c);
  int64_t bytes = n * (int64_t)sq_dtype_bytes(dt);
  if (c->impl->nccl) {
    SQ_CHECK(sq_nccl_reduce_sum(c, c->impl->nccl, buf, n, dt, 0, deadline, label));
    return sq_nccl_bcast(c, c->impl->nccl, buf, bytes, 0, deadline, label);
  }
  SQ_CHECK(sq_mpi_reduce(c, buf, n, dt, 0, deadline, label));
  return sq_mpi_bcast(c, buf, bytes, 0, deadline, label);
}

sq_status sq_comm_reduce_sum_f32(const sq_comm *c, float *buf, int64_t n, int root,
                                 const char *label) {
  return sq_comm_reduce(c, buf, n, SQ_COMM_F32, root, label);
}
sq_status sq_comm_reduce_sum_f64(const sq_comm *c, double *buf, int64_t n, int root,
                                 const char *label) {
  return sq_comm_reduce(c, buf, n, SQ_COMM_F64, root, label);
}
sq_status sq_comm_reduce_sum_i64(const sq_comm *c, int64_t *buf, int64_t n, int root,
                                 const char *label) {
  return sq_comm_reduce(c, buf, n, SQ_COMM_I64, root, label);
}
sq_status sq_comm_allreduce_sum_f32(const sq_comm *c, float *buf, int64_t n, const char *label) {
  return sq_comm_allreduce(c, buf, n, SQ_COMM_F32, label);
}
sq_status sq_comm_allreduce_sum_f64(const sq_comm *c, double *buf, int64_t n, const char *label) {
  return sq_comm_allreduce(c, buf, n, SQ_COMM_F64, label);
}
sq_status sq_comm_allreduce_sum_i64(const sq_comm *c, int64_t *buf, int64_t n, const char *label) {
  return sq_comm_allreduce(c, buf, n, SQ_COMM_I64, label);
}

/* ---- bcast, alltoallv, point to point, barrier --------------------------- */

sq_status sq_comm_bcast(const sq_comm *c, void *buf, int64_t bytes, int root, const char *label) {
  SQ_CHECK(sq_comm_check_root(c, root, bytes, buf, label));
  if (!c->impl || c->size == 1) return SQ_OK;
  double deadline = sq_comm_deadline(c);
  if (c->impl->nccl) return sq_nccl_bcast(c, c->impl->nccl, buf, bytes, root, deadline, label);
  return sq_mpi_bcast(c, buf, bytes, root, deadline, label);
}

sq_status sq_comm_alltoallv(const sq_comm *c, const void *sendbuf, const int64_t *sendcounts,
                            const int64_t *sdispls, void *recvbuf, const int64_t *recvcounts,
                            const int64_t *rdispls, size_t elem_bytes, const char *label) {
  const int P = c->size;
  if (elem_bytes == 0 || elem_bytes > INT_MAX)
    return sq_error_set(SQ_ERR_ARG, "%s: element size %zu bytes is invalid", label, elem_bytes);
  for (int r = 0; r < P; ++r)
    if (sendcounts[r] < 0 || recvcounts[r] < 0 || sdispls[r] < 0 || rdispls[r] < 0 ||
        sendcounts[r] > INT_MAX || recvcounts[r] > INT_MAX || sdispls[r] > INT_MAX ||
        rdispls[r] > INT_MAX)
      return sq_error_set(SQ_ERR_ARG,
                          "%s: count/displacement for rank %d is negative or over "
                          "INT_MAX elements -- hint: use a larger elem_bytes or split the "
                          "exchange",
                          label, r);
  if (!c->impl) {
    if (sendcounts[0] != recvcounts[0])
      return sq_error_set(SQ_ERR_ARG, "%s: rank 0 sends %lld elements to itself but expects %lld",
                          label, (long long)sendcounts[0], (long long)recvcounts[0]);
    memmove((char *)recvbuf + rdispls[0] * (int64_t)elem_bytes,
            (const char *)sendbuf + sdispls[0] * (int64_t)elem_bytes,
            (size_t)sendcounts[0] * elem_bytes);
    return SQ_OK;
  }
  double deadline = sq_comm_deadline(c);
  if (c->impl->nccl)
    return sq_nccl_alltoallv(c, c->impl->nccl, sendbuf, sendcounts, sdispls, recvbuf, recvcounts,
                             rdispls, elem_bytes, deadline, label);
  int *ints = malloc((size_t)P * 4 * sizeof *ints);
  if (!ints) return sq_error_set(SQ_ERR_NOMEM, "%s: out of memory", label);
  for (int r = 0; r < P; ++r) {
    ints[r] = (int)sendcounts[r];
    ints[P + r] = (int)sdispls[r];
    ints[2 * P + r] = (int)recvcounts[r];
    ints[3 * P + r] = (int)rdispls[r];
  }
  sq_status st = SQ_OK;
  MPI_Datatype et = MPI_DATATYPE_NULL;
  MPI_Request rq;
  int rc = MPI_Type_contiguous((int)elem_bytes, MPI_BYTE, &et);
  if (rc == MPI_SUCCESS) rc = MPI_Type_commit(&et);
  if (rc == MPI_SUCCESS)
    rc = MPI_Ialltoallv(sendbuf, ints, ints + P, et, recvbuf, ints + 2 * P, ints + 3 * P, et,
                        c->impl->coll, &rq);
  if (rc != MPI_SUCCESS)
    st = sq_mpi_error(c, rc, "MPI_Ialltoallv", label);
  else
    st = sq_mpi_wait(c, 1, &rq, NULL, deadline, label);
  if (et != MPI_DATATYPE_NULL) MPI_Type_free(&et);
  free(ints);
  return st;
}

static sq_status sq_comm_p2p(const sq_comm *c, void *buf, int64_t bytes, int peer, int tag,
                             int is_send, const char *label) {
  if (peer < 0 || peer >= c->size || peer == c->rank || tag < 0)
    return sq_error_set(SQ_ERR_ARG, "%s: bad peer %d (rank %d of %d) or tag %d", label, peer,
                        c->rank, c->size, tag);
  SQ_CHECK(sq_comm_check_root(c, 0, bytes, buf, label));
  double deadline = sq_comm_deadline(c);
  if (c->impl->nccl)
    return sq_nccl_p2p(c, c->impl->nccl, buf, bytes, peer, is_send, deadline, label);
  for (int64_t off = 0; off < bytes || (bytes == 0 && off == 0); off += SQ_COMM_MSG_BYTES) {
    int cnt = (int)(bytes - off < SQ_COMM_MSG_BYTES ? bytes - off : SQ_COMM_MSG_BYTES);
    MPI_Request rq;
    MPI_Status mst;
    int rc = is_send ? MPI_Isend((char *)buf + off, cnt, MPI_BYTE, peer, tag, c->impl->mpi, &rq)
                     : MPI_Irecv((char *)buf + off, cnt, MPI_BYTE, peer, tag, c->impl->mpi, &rq);
    if (rc != MPI_SUCCESS) return sq_mpi_error(c, rc, is_send ? "MPI_Isend" : "MPI_Irecv", label);
    SQ_CHECK(sq_mpi_wait(c, 1, &rq, &mst, deadline, label));
    int got = 0;
    if (!is_send && (MPI_Get_count(&mst, MPI_BYTE, &got) != MPI_SUCCESS || got != cnt))
      return sq_error_set(SQ_ERR_MPI, "%s: rank %d expected %d bytes from rank %d (tag %d), got %d",
                          label, c->rank, cnt, peer, tag, got);
    if (bytes == 0) break;
  }
  return SQ_OK;
}

sq_status sq_comm_send(const sq_comm *c, const void *buf, int64_t bytes, int peer, int tag,
                       const char *label) {
  return sq_comm_p2p(c, (void *)buf, bytes, peer, tag, 1, label);
}
sq_status sq_comm_recv(const sq_comm *c, void *buf, int64_t bytes, int peer, int tag,
                       const char *label) {
  return sq_comm_p2p(c, buf, bytes, peer, tag, 0, label);
}

sq_status sq_comm_barrier(const sq_comm *c, const char *label) {
  if (!c->impl || c->size == 1) return SQ_OK;
  MPI_Request rq;
  int rc = MPI_Ibarrier(c->impl->coll, &rq);
  if (rc != MPI_SUCCESS) return sq_mpi_error(c, rc, "MPI_Ibarrier", label);
  return sq_mpi_wait(c, 1, &rq, NULL, sq_comm_deadline(c), label);
}

/* ---- error agreement and fail points ------------------------------------- */

sq_status sq_comm_agree_status(const sq_comm *c, sq_status local_status, const char *local_message,
                               sq_status *global_status, char *msg_buf, size_t len) {
  struct {
    int status;
    char text[SQ_COMM_AGREE_TEXT];
  } msg;
  memset(&msg, 0, sizeof msg);
  msg.status = (int)local_status;
  if (local_status != SQ_OK)
    snprintf(msg.text, sizeof msg.text, "rank %d (%s): %s", c->rank, sq_comm_host(c),
             local_message && *local_message ? local_message : sq_status_str(local_status));
  if (msg_buf && len) msg_buf[0] = '\0';
  *global_status = SQ_ERR_MPI;
  if (c->impl && c->size > 1) {
    const char *label = "agree status";
    double deadline = sq_comm_deadline(c);
    int mine = local_status != SQ_OK ? c->rank : c->size, lowest = c->size;
    MPI_Request rq;
    int rc = MPI_Iallreduce(&mine, &lowest, 1, MPI_INT, MPI_MIN, c->impl->coll, &rq);
    if (rc != MPI_SUCCESS) return sq_mpi_error(c, rc, "MPI_Iallreduce", label);
    SQ_CHECK(sq_mpi_wait(c, 1, &rq, NULL, deadline, label));
    if (lowest == c->size) {
      *global_status = SQ_OK;
      return SQ_OK;
    }
    SQ_CHECK(sq_mpi_bcast(c, &msg, (int64_t)sizeof msg, lowest, deadline, label));
  }
  *global_status = (sq_status)msg.status;
  if (msg_buf && len) snprintf(msg_buf, len, "%s", msg.text);
  return SQ_OK;
}

/* Does one item "label[:rank]" of SHARDQ_FAILPOINT match (label, rank)? */
static int sq_failpoint_match(const char *item, size_t n, const char *label, int rank) {
  const char *colon = memchr(item, ':', n);
  size_t lab_n = colon ? (size_t)(colon - item) : n;
  if (lab_n != strlen(label) || strncmp(item, label, lab_n) != 0) return 0;
  if (!colon) return 1;
  char num[16];
  size_t k = n - lab_n - 1;
  if (k == 0 || k >= sizeof num) return 0;
  memcpy(num, colon + 1, k);
  num[k] = '\0';
  char *end = NULL;
  long r = strtol(num, &end, 10);
  return *end == '\0' && r == rank;
}

sq_status sq_comm_failpoint(const sq_comm *c, const char *label) {
  const char *spec = getenv("SHARDQ_FAILPOINT");
  if (!spec || !*spec) return SQ_OK;
  int hit = 0;
  for (const char *p = spec; *p && !hit;) {
    size_t n = strcspn(p, ",");
    hit = sq_failpoint_match(p, n, label, c->rank);
    p += n + (p[n] == ',');
  }
  if (!hit) return SQ_OK;
  const char *mode = getenv("SHARDQ_FAILPOINT_MODE");
  if (mode && strcmp(mode, "exit") == 0) {
    fprintf(stderr, "shardq[%d]: fail point '%s': exiting with %d on %s\n", c->rank, label,
            SQ_COMM_FAILPOINT_EXIT_CODE, sq_comm_host(c));
    fflush(stderr);
    _exit(SQ_COMM_FAILPOINT_EXIT_CODE);
  }
  if (mode && strcmp(mode, "hang") == 0) {
    fprintf(stderr, "shardq[%d]: fail point '%s': hanging on %s\n", c->rank, label,
            sq_comm_host(c));
    fflush(stderr);
    for (;;) sleep(1);
  }
  return sq_error_set(SQ_ERR_INTERNAL,
                      "fail point '%s' triggered on rank %d -- hint: unset "
                      "SHARDQ_FAILPOINT (fault-injection testing only)",
                      label, c->rank);
}
