/* SparseGPT (Frantar & Alistarh 2023), as sparsegpt.py fasterprune and
 * llm-compressor's sparsify_weight do it, on the CPU (OpenBLAS + LAPACKE).
 *
 * W (d_out, d_in) row-major fp32, H (d_in, d_in) finalized. Same Hessian
 * preparation as GPTQ (dead inputs, damping with x10 retries, U = upper
 * Cholesky of (H + damp I)^-1; see gptq.h), then a blocked column sweep:
 *   unstructured (prune_n == 0): at the start of every block [i1, i2) the
 *     weights with the smallest w^2 / U_kk^2 over the whole (d_out, B) block
 *     are pruned, exactly floor(d_out * B * sparsity) of them (ties broken by
 *     position). The reference thresholds with <= on the sorted value at that
 *     index, which prunes one more; shardq hits the ratio exactly;
 *   N:M (prune_n, prune_m, e.g. 2:4): at every column k with k % M == 0 the N
 *     weights of each row with the smallest w^2 / U_kk^2 among columns
 *     k..k+M-1 (error-updated) are pruned. block_size and d_in must be
 *     multiples of M;
 *   quantize (optional, quantize = 1): kept weights are then fake-quantized
 *     with scales fixed up front from the original W (tensor, channel or
 *     static groups); pruned weights stay exactly 0 (code = zero point).
 * The error (w - q) / U_kk is propagated inside the block and by one sgemm
 * per block to the rest of W. loss = sum (w - q)^2 / U_kk^2 / 2.
 * Workspace as in gptq.h (NULL: allocated once inside). */
#ifndef SQ_KERNELS_SPARSEGPT_H
#define SQ_KERNELS_SPARSEGPT_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "kernels/quant_math.h"

typedef struct sq_sparsegpt_opts {
  float sparsity;      /* unstructured ratio in [0, 1) when prune_n == 0 */
  int prune_n;         /* N of N:M (0: unstructured) */
  int prune_m;         /* M of N:M */
  int64_t block_size;  /* default 128 */
  float damp_frac;     /* default 0.01 */
  int damp_retries;    /* default 4 */
  int quantize;        /* 1: joint quantization with q below */
  sq_qargs q;          /* int; tensor/channel/group (static) */
} sq_sparsegpt_opts;

typedef struct sq_sparsegpt_out {
  float *weight;        /* (d_out, d_in) pruned (and dequantized) weight */
  uint8_t *mask;        /* (d_out, d_in) 1 = kept, 0 = pruned; may be NULL */
  int8_t *codes;        /* (d_out, d_in) when quantize, else may be NULL */
  float *scales;        /* sq_gptq_scale_count() cells when quantize */
  int32_t *zero_points; /* same */
  double loss;
  float damp;
} sq_sparsegpt_out;

/* Defaults: 50% unstructured, block 128, damp 0.01, no quantization. */
sq_sparsegpt_opts sq_sparsegpt_opts_default(void);

size_t sq_sparsegpt_workspace_bytes(int64_t d_out, int64_t d_in, const sq_sparsegpt_opts *opts);

sq_status sq_sparsegpt_prune(const char *name, const float *W, const float *H, int64_t d_out,
                             int64_t d_in, const sq_sparsegpt_opts *opts, void *ws,
                             size_t ws_bytes, sq_sparsegpt_out *out);

/* CUDA twin (kernels/cuda/sparsegpt.cu): device buffers, queued on stream.
 * N:M without joint quantization only; anything else returns
 * SQ_ERR_UNSUPPORTED (the per-block global selection runs on the CPU path). */
struct CUstream_st;
sq_status sq_sparsegpt_prune_cuda(const char *name, const float *W, const float *H,
                                  int64_t d_out, int64_t d_in, const sq_sparsegpt_opts *opts,
                                  sq_sparsegpt_out *out, struct CUstream_st *stream);

#endif
