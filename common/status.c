/* The thread-local error message and trail behind common/status.h. */
#include "common/status.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define SQ_ERROR_MSG_MAX 1024
#define SQ_ERROR_TRAIL_MAX 2048

static _Thread_local char sq_error_msg[SQ_ERROR_MSG_MAX];
static _Thread_local char sq_error_trail_buf[SQ_ERROR_TRAIL_MAX];

const char *sq_status_str(sq_status st) {
  switch (st) {
    case SQ_OK: return "ok";
    case SQ_ERR_ARG: return "invalid argument";
    case SQ_ERR_IO: return "I/O error";
    case SQ_ERR_FORMAT: return "format error";
    case SQ_ERR_NOMEM: return "out of memory";
    case SQ_ERR_NUMERIC: return "numerical error";
    case SQ_ERR_UNSUPPORTED: return "unsupported";
    case SQ_ERR_MPI: return "communication error";
    case SQ_ERR_CUDA: return "CUDA error";
    case SQ_ERR_NO_DEVICE: return "no GPU";
    case SQ_ERR_STOPPED: return "stopped at a safe point";
    case SQ_ERR_INTERNAL: return "internal error";
  }
  return "unknown status";
}

sq_status sq_error_set(sq_status st, const char *fmt, ...) {
  if (sq_error_msg[0] != '\0') return st; /* the first (deepest) cause wins */
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(sq_error_msg, sizeof sq_error_msg, fmt, ap);
  va_end(ap);
  /* Messages are one line: fold any newline a caller let through. */
  for (char *p = sq_error_msg; *p; ++p)
    if (*p == '\n' || *p == '\r') *p = ' ';
  return st;
}

sq_status sq_error_errno(const char *path, const char *what) {
  int e = errno;
  sq_status st = (e == ENOMEM) ? SQ_ERR_NOMEM : SQ_ERR_IO;
  return sq_error_set(st, "%s: %s: %s", path, what, strerror(e));
}

const char *sq_error_message(void) { return sq_error_msg; }
const char *sq_error_trail(void) { return sq_error_trail_buf; }

void sq_error_clear(void) {
  sq_error_msg[0] = '\0';
  sq_error_trail_buf[0] = '\0';
}

void sq_error_trace(const char *file, int line, const char *expr) {
  size_t used = strlen(sq_error_trail_buf);
  if (used + 1 >= sizeof sq_error_trail_buf) return;
  snprintf(sq_error_trail_buf + used, sizeof sq_error_trail_buf - used,
           "  at %s:%d: %s\n", file, line, expr);
}
