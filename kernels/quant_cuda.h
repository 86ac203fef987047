/* CUDA twins of kernels/quant.h (built when SHARDQ_CUDA is on; the macro
 * SHARDQ_HAVE_CUDA is then defined). Same semantics, shapes and error rules;
 * every pointer except qa and name is DEVICE memory, work is queued on
 * `stream`. The per-element math is the same static inline code as the CPU
 * reference (kernels/quant_math.h, kernels/pack_math.h), so codes, scales,
 * zero points and packed words match the CPU bit for bit.
 *
 * sq_quant_rtn_cuda and sq_quant_act_fake_per_token_cuda synchronize the
 * stream before returning (to report NaN/Inf with the element's index);
 * the pack functions only queue work and do NOT check the code range (pass
 * codes produced by the quantizers). CUDA failures become SQ_ERR_CUDA, or
 * SQ_ERR_NO_DEVICE when there is no usable GPU, with a one-line message. */
#ifndef SQ_KERNELS_QUANT_CUDA_H
#define SQ_KERNELS_QUANT_CUDA_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "kernels/quant.h"

#ifdef __cplusplus
extern "C" {
#endif

sq_status sq_quant_rtn_cuda(const sq_qargs *qa, const char *name, const float *W, int64_t d_out,
                            int64_t d_in, int8_t *codes, float *scales, int32_t *zero_points,
                            float *W_deq, cudaStream_t stream);

sq_status sq_quant_dequant_cuda(const sq_qargs *qa, const char *name, const int8_t *codes,
                                const float *scales, const int32_t *zero_points, int64_t d_out,
                                int64_t d_in, float *W_deq, cudaStream_t stream);

sq_status sq_quant_act_fake_per_token_cuda(const sq_qargs *qa, const char *name, const float *X,
                                           int64_t T, int64_t d, float *Y, cudaStream_t stream);

sq_status sq_quant_pack_rows_cuda(int bits, const char *name, const int8_t *codes, int64_t rows,
                                  int64_t cols, int32_t *packed, cudaStream_t stream);

sq_status sq_quant_pack_zero_points_cuda(int bits, const char *name, const int32_t *zp,
                                         int64_t d_out, int64_t n_groups, int32_t *packed,
                                         cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
