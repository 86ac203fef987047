/* The communication steps of the layer pipeline, as a seam for the multi-rank
 * version: partial Hessians (sum + count) are reduced to a module's owner
 * rank, and an owner shares the dequantized weights it solved with every rank.
 * This build has the single-rank implementation: one rank owns every module,
 * so reduce and share move nothing. An MPI backend replaces these functions
 * (reduce in a fixed rank order for determinism) without touching callers. */
#ifndef SQ_WORKER_COMM_H
#define SQ_WORKER_COMM_H

#include <stdint.h>

#include "common/status.h"
#include "kernels/hessian.h"

typedef struct sq_comm {
  int rank, size;
} sq_comm;

/* The single-process communicator (rank 0 of 1). */
sq_comm sq_comm_single(void);
/* Owner of module index `mod` of a layer (round-robin over ranks). */
int sq_comm_owner(const sq_comm *c, int layer, int mod);
/* Sum every rank's partial Hessian into owner's h (sum and count). */
sq_status sq_comm_reduce_hessian(const sq_comm *c, sq_hessian *h, int owner, const char *name);
/* Copy n floats from owner's buf to every rank's buf. */
sq_status sq_comm_share_f32(const sq_comm *c, float *buf, int64_t n, int owner, const char *name);

#endif
