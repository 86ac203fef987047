/* GPTQ (Frantar et al. 2022), as llm-compressor's quantize_weight and the
 * original gptq.py fasterquant do it, on the CPU (OpenBLAS + LAPACKE).
 *
 * Inputs: W (d_out, d_in) row-major fp32 like torch Linear.weight, and the
 * finalized Hessian H (d_in, d_in) fp32 symmetric (sq_hessian_finalize).
 * Steps:
 *   1. quantization parameters that are fixed up front (tensor, channel, or
 *      group with static_groups / actorder WEIGHT) come from the original W;
 *   2. act-order (optional): columns permuted by descending diag(H);
 *   3. dead inputs (H_ii == 0): H_ii = 1 and W[:, i] = 0;
 *   4. damp = damp_frac * mean(diag H) added to the diagonal; Cholesky
 *      (spotrf), inverse (spotri), upper Cholesky U of the inverse. If a
 *      factorisation fails, damp is multiplied by 10 (logged with the module
 *      name) up to damp_retries times, then SQ_ERR_NUMERIC. Never RTN silently;
 *   5. column sweep in blocks of block_size: within a block each row is swept
 *      column by column (rows are independent there), the error e = (w-q)/U_kk
 *      is propagated inside the block, and the rest of W gets ONE sgemm per
 *      block: W[:, i2:] -= E (d_out, B) @ U[i1:i2, i2:];
 *   6. dynamic groups (default): the scale of a group is computed when its
 *      first column is reached, from the fully error-updated weights of the
 *      group's columns. When a group straddles a block boundary, the pending
 *      updates of the current block are applied to the overhang first, so
 *      the result equals the unblocked algorithm (gptq.py instead reads the
 *      block-start values there; identical when block_size % group_size == 0).
 * loss = sum over all (w - q)^2 / U_kk^2 / 2, as the reference reports it.
 *
 * actorder GROUP: groups are contiguous in quantization (permuted) order;
 *   g_idx[j] = group of original column j, has_g_idx = 1 (must be stored).
 * actorder WEIGHT: groups are the original contiguous ones, scales fixed up
 *   front, then columns are quantized in act-order; g_idx is the identity
 *   (j / group_size) and has_g_idx = 0.
 * Shapes of the outputs: scales / zero_points are (d_out, n_groups) for group,
 * (d_out, 1) for channel and (1) for tensor (sq_gptq_scale_count). Codes are
 * the signed integers of compressed-tensors in [-2^(b-1), 2^(b-1)-1]; the
 * dequantized weight deq is (codes - zp) * scale rounded to the scale dtype.
 *
 * Memory: sq_gptq_workspace_bytes() tells the workspace size; pass a buffer
 * of at least that many bytes (aligned to 64) or NULL to let the call
 * allocate it once and free it before returning. */
#ifndef SQ_KERNELS_GPTQ_H
#define SQ_KERNELS_GPTQ_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "kernels/quant_math.h"

typedef struct sq_gptq_opts {
  sq_qargs q;           /* int, 2..8 bits, strategy tensor/channel/group */
  sq_actorder actorder;
  int static_groups;    /* 1: group scales from the original W up front */
  int64_t block_size;   /* columns per lazy-update block (default 128) */
  float damp_frac;      /* dampening_frac (default 0.01) */
  int damp_retries;     /* x10 damping retries after a failed Cholesky (default 4) */
} sq_gptq_opts;

typedef struct sq_gptq_out {
  int8_t *codes;        /* (d_out, d_in) */
  float *scales;        /* sq_gptq_scale_count() floats */
  int32_t *zero_points; /* same count; zeros when symmetric */
  int32_t *g_idx;       /* (d_in): group of each original column; 0 unless group */
  float *deq;           /* (d_out, d_in) dequantized weight */
  /* filled by the call */
  int has_g_idx;        /* g_idx is not the identity j / group_size */
  double loss;
  float damp;           /* the damping that was finally added */
} sq_gptq_out;

/* Defaults: 4-bit symmetric channel, fp32 scales, block 128, damp 0.01. */
sq_gptq_opts sq_gptq_opts_default(void);

/* Number of scale cells: 1 (tensor), d_out (channel), d_out * n_groups. */
int64_t sq_gptq_scale_count(const sq_qargs *q, int64_t d_out, int64_t d_in);

size_t sq_gptq_workspace_bytes(int64_t d_out, int64_t d_in, const sq_gptq_opts *opts);

/* Quantize W with GPTQ. name is the module ("model.layers.3.mlp.down_proj"),
 * used in every error and warning. ws may be NULL. W and H are not modified. */
sq_status sq_gptq_quantize(const char *name, const float *W, const float *H, int64_t d_out,
                           int64_t d_in, const sq_gptq_opts *opts, void *ws, size_t ws_bytes,
                           sq_gptq_out *out);

/* CUDA twin (kernels/cuda/gptq.cu, SHARDQ_CUDA=ON): same algorithm and
 * results (codes bit-identical up to rounding ties, floats within fp32
 * tolerance); W, H and every pointer in out are DEVICE buffers, work is
 * queued on stream (cuSOLVER potrf/potri, cuBLAS sgemm, small kernels on the
 * shared quant_math.h). The workspace is allocated once inside the call. */
struct CUstream_st;
sq_status sq_gptq_quantize_cuda(const char *name, const float *W, const float *H, int64_t d_out,
                                int64_t d_in, const sq_gptq_opts *opts, sq_gptq_out *out,
                                struct CUstream_st *stream);

#endif
