/* DeepSeek-V3's block-scaled fp8 weights: dequantize on load, and the
 * quantizer that writes them (for synthetic checkpoints and tests).
 *
 * Format (the released DeepSeek-V3 / R1 checkpoints, config.json
 *   "quantization_config": {"quant_method": "fp8", "fmt": "e4m3",
 *                           "activation_scheme": "dynamic", "weight_block_size": [128, 128]}):
 *   <name>            F8_E4M3 (float8_e4m3fn) codes (d_out, d_in), e.g.
 *                     model.layers.3.mlp.experts.7.up_proj.weight
 *   <name>_scale_inv  F32 (ceil(d_out/bo), ceil(d_in/bi)), e.g. ...up_proj.weight_scale_inv
 * with (bo, bi) = weight_block_size. Despite the name, scale_inv is MULTIPLIED:
 *   w[i][j] = fp8(code[i][j]) * scale_inv[i / bo][j / bi]
 * exactly as DeepSeek's inference/kernel.py weight_dequant_kernel does (and as
 * transformers' FP8 integration and vLLM read it). Edge blocks are partial when
 * d_out or d_in is not a multiple of the block size. Only Linear weights are fp8;
 * embeddings, norms, lm_head, the router (mlp.gate.weight) stay bf16, and
 * e_score_correction_bias is F32.
 *
 * The quantizer (sq_fp8_block_quantize) follows DeepSeek's act_quant recipe per
 * block: scale_inv = amax(|w|) / 448, code = e4m3(w / scale_inv) rounded to
 * nearest even; an all-zero block gets scale_inv 1. So |w - dequant(w)| <=
 * scale_inv * 2^-4 * 2^floor(log2|w / scale_inv|) per element (half an e4m3 ulp
 * in the normal range), and <= scale_inv * 2^-10 in the subnormal range. */
#ifndef SQ_SHARDING_FP8_BLOCK_H
#define SQ_SHARDING_FP8_BLOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "sharding/checkpoint.h"

struct json_t;

/* DeepSeek-V3's weight_block_size. */
#define SQ_FP8_BLOCK_DEFAULT 128

/* "<name>_scale_inv" into buf (size bytes). SQ_ERR_ARG when it does not fit. */
sq_status sq_fp8_block_scale_name(const char *name, char *buf, size_t size);

/* The block size of config.json's quantization_config: *present = false (and
 * bo = bi = 0) without one or when quant_method is not "fp8"; an fp8 config
 * without weight_block_size (per-tensor fp8) is SQ_ERR_UNSUPPORTED. label names
 * the file in errors. root: the parsed config.json (sq_model_config.json). */
sq_status sq_fp8_block_config(const char *label, const struct json_t *root, bool *present,
                              int64_t *bo, int64_t *bi);

/* True when tensor `name` of c is F8_E4M3 and c holds "<name>_scale_inv". */
bool sq_fp8_block_is_scaled(const sq_ckpt *c, const char *name);

/* Read Linear weight `name` (d_out, d_in) as fp32 into dst. An F8_E4M3 tensor is
 * dequantized with its <name>_scale_inv blocks of bo x bi (the scale tensor may be
 * F32, BF16 or F16); any other float dtype is read as it is (so callers can read
 * every weight of a mixed checkpoint through this one function). Errors name the
 * tensor: missing, wrong shape, fp8 without a scale tensor, a scale tensor of
 * the wrong shape, or a non-finite / negative scale. No allocation besides the
 * scales (the fp8 codes are staged inside dst). */
sq_status sq_fp8_block_read_f32_bs(const sq_ckpt *c, const char *name, float *dst, int64_t d_out,
                                   int64_t d_in, int64_t bo, int64_t bi);
/* The same with DeepSeek-V3's 128 x 128 blocks. */
sq_status sq_fp8_block_read_f32(const sq_ckpt *c, const char *name, float *dst, int64_t d_out,
                                int64_t d_in);

/* Pure helpers (no I/O). codes (d_out, d_in) e4m3 bytes; scale_inv
 * (ceil(d_out/bo), ceil(d_in/bi)). */
void sq_fp8_block_dequant(const uint8_t *codes, const float *scale_inv, int64_t d_out, int64_t d_in,
                          int64_t bo, int64_t bi, float *dst);
void sq_fp8_block_quantize(const float *w, int64_t d_out, int64_t d_in, int64_t bo, int64_t bi,
                           uint8_t *codes, float *scale_inv);
/* Number of scale rows / columns for d_out x d_in. */
static inline int64_t sq_fp8_block_count(int64_t n, int64_t b) {
  return (n + b - 1) / b;
}

#endif
