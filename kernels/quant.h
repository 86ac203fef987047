/* Tensor-level quantization (CPU reference): round-to-nearest (RTN) of a
 * Linear weight to integer or fp8 codes with the scales and zero points that a
 * compressed-tensors checkpoint stores, dequantization, dynamic per-token
 * fake quantization of activations (to simulate W8A8 at eval), and the
 * `pack-quantized` int32 packing. The per-element math is in
 * kernels/quant_math.h and kernels/pack_math.h (compressed-tensors'
 * definitions, shared with the CUDA twins in kernels/quant_cuda.h).
 *
 * Shapes (row-major, like torch Linear weights):
 *   W, W_deq, codes     (d_out, d_in)
 *   scales, zero_points (sq_quant_scale_rows, sq_quant_num_groups):
 *       tensor  (1, 1)   channel (d_out, 1)   group (d_out, ceil(d_in / group_size))
 *   With groups, group g holds columns [g*gs, min((g+1)*gs, d_in)): when d_in is
 *   not a multiple of gs the last group is partial (d_in 172, gs 32 -> 6 groups,
 *   the last of 12 columns), as compressed-tensors does.
 *
 * Every function takes `name` (the module or tensor, e.g.
 * "model.layers.3.mlp.down_proj.weight") that error messages name. Functions
 * return SQ_OK, SQ_ERR_ARG (bad shapes/args), SQ_ERR_UNSUPPORTED (a strategy
 * or bit width shardq does not handle) or SQ_ERR_NUMERIC (NaN/Inf input). */
#ifndef SQ_KERNELS_QUANT_H
#define SQ_KERNELS_QUANT_H

#include <stdint.h>

#include "common/status.h"
#include "kernels/pack_math.h"
#include "kernels/quant_math.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Scale columns: 1 for tensor/channel, ceil(d_in / group_size) for group. */
int64_t sq_quant_num_groups(const sq_qargs *qa, int64_t d_in);
/* Scale rows: 1 for tensor, d_out for channel/group. */
int64_t sq_quant_scale_rows(const sq_qargs *qa, int64_t d_out);

/* Check that qa describes a weight quantization shardq implements, for a
 * (d_out, d_in) weight: int 2/3/4/8 bits or float 8 bits (e4m3, symmetric);
 * strategy tensor, channel or group (group_size >= 1); scale dtype f32/f16/bf16. */
sq_status sq_quant_check_args(const sq_qargs *qa, const char *name, int64_t d_out, int64_t d_in);

/* RTN-quantize W (d_out, d_in). Scales come from each scale cell's min/max
 * (widened to include 0), rounded to qa->scale_dtype and then used as rounded.
 *   int:   codes are the signed integers q; zero_points are written when
 *          !qa->symmetric (pass NULL when symmetric; required otherwise).
 *   float: codes hold fp8 e4m3fn bit patterns (cast to uint8_t); zero_points
 *          is ignored (may be NULL).
 * W_deq (d_out, d_in) gets the dequantized weight, rounded to the scale dtype
 * as a consumer computes it; pass NULL to skip. A NaN or Inf in W is an
 * SQ_ERR_NUMERIC naming `name` and the element. */
sq_status sq_quant_rtn(const sq_qargs *qa, const char *name, const float *W, int64_t d_out,
                       int64_t d_in, int8_t *codes, float *scales, int32_t *zero_points,
                       float *W_deq);

/* Dequantize codes (as written by sq_quant_rtn, or unpacked from a checkpoint)
 * with their scales / zero points into W_deq (d_out, d_in). zero_points may be
 * NULL for symmetric int and for float. */
sq_status sq_quant_dequant(const sq_qargs *qa, const char *name, const int8_t *codes,
                           const float *scales, const int32_t *zero_points, int64_t d_out,
                           int64_t d_in, float *W_deq);

/* Dynamic per-token fake quantization of activations X (T, d) into Y (T, d)
 * (Y may equal X): each row gets its own scale (and zero point when
 * asymmetric int) from its own min/max, is quantized and dequantized. qa:
 * int 8 bits (sym or asym) or float 8 bits; the strategy field is ignored (it
 * is "token"); scales are rounded to qa->scale_dtype. NaN/Inf -> SQ_ERR_NUMERIC. */
sq_status sq_quant_act_fake_per_token(const sq_qargs *qa, const char *name, const float *X,
                                      int64_t T, int64_t d, float *Y);

/* int32 words per packed row of n values (compressed-tensors: ceil(n / (32 / bits))). */
int64_t sq_quant_packed_cols(int64_t n, int bits);

/* Pack codes (rows, cols) along cols into packed (rows, sq_quant_packed_cols(cols)),
 * the layout of `weight_packed` (see kernels/pack_math.h). A code outside the
 * signed range of bits is an SQ_ERR_ARG naming the element. bits in 1..8. */
sq_status sq_quant_pack_rows(int bits, const char *name, const int8_t *codes, int64_t rows,
                             int64_t cols, int32_t *packed);
/* Inverse of sq_quant_pack_rows: packed (rows, sq_quant_packed_cols(cols)) -> codes. */
sq_status sq_quant_unpack_rows(int bits, const char *name, const int32_t *packed, int64_t rows,
                               int64_t cols, int8_t *codes);

/* Pack asymmetric zero points zp (d_out, n_groups) along d_out into packed
 * (sq_quant_packed_cols(d_out), n_groups), the layout of a packed
 * `weight_zero_point`. Out-of-range values are SQ_ERR_ARG. */
sq_status sq_quant_pack_zero_points(int bits, const char *name, const int32_t *zp, int64_t d_out,
                                    int64_t n_groups, int32_t *packed);
/* Inverse of sq_quant_pack_zero_points. */
sq_status sq_quant_unpack_zero_points(int bits, const char *name, const int32_t *packed,
                                      int64_t d_out, int64_t n_groups, int32_t *zp);

#ifdef __cplusplus
}
#endif

#endif
