/* Single-rank communicator (see comm.h). */
#include "worker/comm.h"

sq_comm sq_comm_single(void) {
  sq_comm c = {.rank = 0, .size = 1};
  return c;
}

int sq_comm_owner(const sq_comm *c, int layer, int mod) {
  return (int)(((int64_t)layer * 7 + mod) % c->size);
}

sq_status sq_comm_reduce_hessian(const sq_comm *c, sq_hessian *h, int owner, const char *name) {
  (void)h;
  if (c->size != 1 || owner != 0)
    return sq_error_set(SQ_ERR_UNSUPPORTED,
                        "%s: Hessian reduction over %d ranks needs the MPI backend, which this "
                        "build does not have -- hint: run with one rank",
                        name, c->size);
  return SQ_OK;
}

sq_status sq_comm_share_f32(const sq_comm *c, float *buf, int64_t n, int owner, const char *name) {
  (void)buf;
  (void)n;
  if (c->size != 1 || owner != 0)
    return sq_error_set(SQ_ERR_UNSUPPORTED,
                        "%s: sharing weights over %d ranks needs the MPI backend -- hint: run "
                        "with one rank",
                        name, c->size);
  return SQ_OK;
}
