/* Internal helpers shared by the CPU GPTQ and SparseGPT solvers (not a public
 * API): finiteness checks, the damped Cholesky inverse with retries, aligned
 * workspace carving and the up-front quantization parameters. */
#ifndef SQ_KERNELS_CPU_SOLVER_COMMON_H
#define SQ_KERNELS_CPU_SOLVER_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "kernels/quant_math.h"

/* SQ_ERR_NUMERIC naming name/what and the first bad [row, col] of a (rows,
 * cols) matrix that holds a NaN or Inf. */
sq_status sq_solver_check_finite(const char *name, const char *what, const float *a,
                                 int64_t rows, int64_t cols);

/* U = upper Cholesky factor of (H' + damp I)^-1, row-major (d, d) into Hinv,
 * where H'[i][j] = H[perm[i]][perm[j]] (perm NULL: identity) and dead inputs
 * (H'_ii == 0) get H'_ii = 1 and W[:, i] = 0 (W (d_out, d), in place, in the
 * permuted order). damp = damp_frac * mean(diag H'), multiplied by 10 after a
 * failed factorisation (warned with name) up to retries times. */
sq_status sq_solver_prepare_hinv(const char *name, const float *H, const int64_t *perm,
                                 float *W, int64_t d_out, int64_t d, float damp_frac,
                                 int retries, float *Hinv, float *damp_out);

/* Validate integer quantization args for a solver (bits 2..8, strategy
 * tensor/channel/group, group_size > 0). */
sq_status sq_solver_check_qargs(const char *name, const sq_qargs *q);

/* Number of groups of a row for q (1 unless SQ_QSTRAT_GROUP). */
int64_t sq_solver_groups(const sq_qargs *q, int64_t d_in);

/* Scale/zero point cells fixed up front from W (d_out, d_in, row stride ld):
 * tensor -> cell 0, channel -> cell r, group -> cell r * n_groups + g with
 * contiguous groups of group_size columns. */
void sq_solver_static_params(const sq_qargs *q, const float *W, int64_t d_out, int64_t d_in,
                             float *scales, int32_t *zps);

/* Bump allocator over a caller's or an owned buffer. */
typedef struct sq_ws_carver {
  char *base;
  size_t used;
} sq_ws_carver;
/* Reserve n bytes aligned to 64 (base NULL: only count). */
void *sq_ws_take(sq_ws_carver *c, size_t n);
/* A carver over the caller's workspace ws (ws_bytes) or, when ws is NULL, over
 * one fresh allocation of need bytes that the caller frees through *owned.
 * what names the solver in errors ("GPTQ", "SparseGPT"). */
sq_status sq_solver_workspace(const char *name, const char *what, void *ws, size_t ws_bytes,
                              size_t need, void **owned, sq_ws_carver *c);

#endif
