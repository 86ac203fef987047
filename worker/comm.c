/* The layer pipeline's communication steps on top of comm.h's collectives:
 * the single-rank communicator, Hessian reduction to a module's owner, the
 * owner's weight broadcast, and a max-reduce for absmax observers. They work
 * on every backend whose data collectives take host buffers (single, mpi). */
#include "worker/comm.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

sq_comm sq_comm_single(void) {
  sq_comm c = {.rank = 0, .size = 1};
  return c;
}

int sq_comm_owner(const sq_comm *c, int layer, int mod) {
  return (int)(((int64_t)layer * 7 + mod) % c->size);
}

sq_status sq_comm_reduce_hessian(const sq_comm *c, sq_hessian *h, int owner, const char *name) {
  if (c->size == 1) return owner == 0 ? SQ_OK
                                      : sq_error_set(SQ_ERR_ARG, "%s: owner rank %d of 1", name,
                                                     owner);
  char label[160];
  snprintf(label, sizeof label, "reduce hessian %s", name);
  /* The sum (upper triangle maintained; whole matrices add) then the count,
   * both in rank order on the owner (comm.h): deterministic. */
  if (h->fp64) SQ_CHECK(sq_comm_reduce_sum_f64(c, h->sum64, h->d * h->d, owner, label));
  else SQ_CHECK(sq_comm_reduce_sum_f32(c, h->sum, h->d * h->d, owner, label));
  return sq_comm_reduce_sum_i64(c, &h->count, 1, owner, label);
}

sq_status sq_comm_share_f32(const sq_comm *c, float *buf, int64_t n, int owner, const char *name) {
  if (c->size == 1) return owner == 0 ? SQ_OK
                                      : sq_error_set(SQ_ERR_ARG, "%s: owner rank %d of 1", name,
                                                     owner);
  char label[160];
  snprintf(label, sizeof label, "share %s", name);
  return sq_comm_bcast(c, buf, n * (int64_t)sizeof(float), owner, label);
}

sq_status sq_comm_allreduce_max_f32(const sq_comm *c, float *buf, int64_t n, const char *label) {
  if (c->size == 1 || n == 0) return SQ_OK;
  /* Each rank broadcasts its values in turn and everyone folds them in rank
   * order: O(ranks·n), meant for small observer vectors. A NaN anywhere wins,
   * so that a NaN activation cannot hide behind a finite maximum. */
  float *acc = malloc((size_t)n * sizeof(float)), *tmp = malloc((size_t)n * sizeof(float));
  sq_status st = SQ_OK;
  if (!acc || !tmp) st = sq_error_set(SQ_ERR_NOMEM, "%s: out of memory for a max-reduce", label);
  for (int r = 0; r < c->size && st == SQ_OK; r++) {
    if (r == c->rank) memcpy(tmp, buf, (size_t)n * sizeof(float));
    st = sq_comm_bcast(c, tmp, n * (int64_t)sizeof(float), r, label);
    if (st != SQ_OK) break;
    for (int64_t i = 0; i < n; i++) {
      if (r == 0 || isnan(tmp[i]) || (!isnan(acc[i]) && tmp[i] > acc[i])) acc[i] = tmp[i];
    }
  }
  if (st == SQ_OK) memcpy(buf, acc, (size_t)n * sizeof(float));
  free(acc);
  free(tmp);
  return st;
}
