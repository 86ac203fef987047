/* Status codes and the error trail.
 *
 * Library code (common, sharding, kernels, recipes, worker) never exits: it
 * returns an sq_status. The first failure records one human-readable line with
 * sq_error_set() (naming the file, tensor or YAML line at fault and, after
 * " -- hint: ", how to fix it). SQ_CHECK passes the status up and appends the
 * caller's file:line to a trail, so a failure deep in a call chain reads as a
 * trail with SHARDQ_DEBUG=1. Only main() turns a status into an exit code.
 * The message buffer is thread-local. */
#ifndef SQ_COMMON_STATUS_H
#define SQ_COMMON_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sq_status {
  SQ_OK = 0,
  SQ_ERR_ARG,         /* bad argument or command-line value */
  SQ_ERR_IO,          /* open/read/write/fsync/rename failed */
  SQ_ERR_FORMAT,      /* a file is malformed (safetensors, JSON, YAML, HDF5) */
  SQ_ERR_NOMEM,       /* allocation failed */
  SQ_ERR_NUMERIC,     /* NaN/Inf, failed factorisation */
  SQ_ERR_UNSUPPORTED, /* valid input that shardq does not handle */
  SQ_ERR_MPI,         /* an MPI or NCCL call failed, or a peer rank failed */
  SQ_ERR_CUDA,        /* CUDA runtime, cuBLAS or cuSOLVER failure */
  SQ_ERR_NO_DEVICE,   /* no usable GPU: fall back to or ask for the CPU */
  SQ_ERR_STOPPED,     /* stopped at a safe point on request (requeue me) */
  SQ_ERR_INTERNAL     /* a bug in shardq */
} sq_status;

/* Short name of a status ("format error"). */
const char *sq_status_str(sq_status st);

/* Record the failure message (printf-style) unless one is already recorded,
 * and return st so that callers can write `return sq_error_set(...)`. */
sq_status sq_error_set(sq_status st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Record errno's text for an I/O failure on path: "<path>: <what>: <strerror>". */
sq_status sq_error_errno(const char *path, const char *what);

/* The recorded message ("" if none). */
const char *sq_error_message(void);

/* The file:line frames that passed the error up, newest last ("" if none). */
const char *sq_error_trail(void);

/* Forget the recorded message and trail (after an error was handled). */
void sq_error_clear(void);

/* Used by SQ_CHECK: append one frame to the trail. */
void sq_error_trace(const char *file, int line, const char *expr);

#define SQ_CHECK(call)                                \
  do {                                                \
    sq_status sq_check_st_ = (call);                  \
    if (sq_check_st_ != SQ_OK) {                      \
      sq_error_trace(__FILE__, __LINE__, #call);      \
      return sq_check_st_;                            \
    }                                                 \
  } while (0)

/* Store the status in st and jump to one cleanup label on failure. */
#define SQ_CHECK_GOTO(call, st, label)                \
  do {                                                \
    (st) = (call);                                    \
    if ((st) != SQ_OK) {                              \
      sq_error_trace(__FILE__, __LINE__, #call);      \
      goto label;                                     \
    }                                                 \
  } while (0)

#ifdef __cplusplus
}
#endif

#endif
