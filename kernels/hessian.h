/* Hessian accumulation for GPTQ / SparseGPT.
 *
 * The layer-wise Hessian of a Linear module with input x (d_in) is
 *   H = 2/n * sum_t x_t x_t^T                                   (d_in, d_in)
 * (llm-compressor's accumulate_hessian). shardq keeps it as an unscaled sum
 * S = sum_t 2 x_t x_t^T plus a count n, so that partial Hessians of many ranks
 * (data parallel) or many dispatch rounds (MoE experts) add up by plain
 * addition, in a fixed order, and the division happens once at solve time
 * (sq_hessian_finalize). Until finalize only the UPPER triangle of the sum is
 * maintained (cblas_ssyrk / dsyrk); merge adds whole matrices.
 *
 * Accumulation is fp32 by default (what the reference does); fp64 (dsyrk on a
 * converted copy of the tile, in chunks of SQ_HESSIAN_CHUNK rows) is optional
 * for very long calibration runs.
 *
 * The count is in tokens (rows of the tiles). llm-compressor counts samples
 * (sequences) instead: this changes H by a constant factor, which GPTQ and
 * SparseGPT are invariant to (damping is relative to mean(diag H)); only the
 * reported loss scales. */
#ifndef SQ_KERNELS_HESSIAN_H
#define SQ_KERNELS_HESSIAN_H

#include <stdint.h>

#include "common/status.h"

#define SQ_HESSIAN_CHUNK 256 /* rows converted per dsyrk call in fp64 mode */

typedef struct sq_hessian {
  int64_t d;       /* d_in */
  int fp64;        /* 1: sum64 is used, 0: sum */
  float *sum;      /* (d, d) sum of 2 x x^T (upper triangle), fp32 mode */
  double *sum64;   /* (d, d) same, fp64 mode */
  double *chunk;   /* (SQ_HESSIAN_CHUNK, d) conversion scratch, fp64 mode */
  int64_t count;   /* tokens accumulated */
} sq_hessian;

/* Allocate a zero Hessian for d_in = d (one allocation per buffer). h starts
 * invalid (zeroed) on failure; name is the module, for error messages. */
sq_status sq_hessian_init(sq_hessian *h, int64_t d, int fp64, const char *name);
void sq_hessian_free(sq_hessian *h);
/* Zero the sum and the count (reuse the buffers for the next layer). */
void sq_hessian_reset(sq_hessian *h);

/* S += 2 * x^T x for a tile x (T, d) row-major fp32; count += T. */
sq_status sq_hessian_accumulate(sq_hessian *h, const float *x, int64_t T, const char *name);

/* dst += src (sum and count); both must have the same d and precision. */
sq_status sq_hessian_merge(sq_hessian *dst, const sq_hessian *src, const char *name);

/* H = S / count as a full symmetric fp32 (d, d) matrix into out. A zero count
 * is an error (no calibration tokens reached the module). */
sq_status sq_hessian_finalize(const sq_hessian *h, float *out, const char *name);

/* CUDA twin (kernels/cuda/hessian.cu, SHARDQ_CUDA=ON): d_sum (d, d) fp32 on
 * the device += 2 * x^T x for a device tile d_x (T, d), with cublasSsyrk
 * (upper triangle in row-major terms) on stream; the caller keeps the count
 * and finalizes like sq_hessian_finalize after copying the sum back. */
struct CUstream_st;
sq_status sq_hessian_accumulate_cuda(float *d_sum, int64_t d, const float *d_x, int64_t T,
                                     struct CUstream_st *stream, const char *name);

#endif
