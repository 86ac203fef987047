/* Per-element quantization math shared by the CPU reference and the CUDA
 * kernels (static inline, SQ_HD), so that the CPU tests cover the GPU path.
 *
 * Definitions are those of compressed-tensors (what vLLM loads):
 *   integer range      q in [qmin, qmax] = [-2^(b-1), 2^(b-1) - 1]
 *   observed range     min/max first widened to include 0
 *   symmetric          scale = max(|min|, |max|) / ((qmax - qmin) / 2), zp = 0
 *   asymmetric         scale = (max - min) / (qmax - qmin),
 *                      zp = clamp(round(qmin - min / scale), qmin, qmax)
 *   zero scale         becomes the scale dtype's epsilon
 *   quantize           q = clamp(round(x / scale + zp), qmin, qmax)   (ties to even)
 *   dequantize         x' = (q - zp) * scale, computed and rounded in the scale dtype
 *   fp8 e4m3           scale = absmax / 448, q = fp8(clamp(x / scale, -448, 448))
 * Scales are stored in the checkpoint's dtype, so they are rounded to it before
 * use: codes, scales and dequantized values are then identical to what a
 * consumer of the checkpoint computes. */
#ifndef SQ_KERNELS_QUANT_MATH_H
#define SQ_KERNELS_QUANT_MATH_H

#include <math.h>

#include "common/dtype.h"

/* How weights are grouped for scales (compressed-tensors "strategy"). */
typedef enum sq_qstrategy {
  SQ_QSTRAT_TENSOR = 0,
  SQ_QSTRAT_CHANNEL,
  SQ_QSTRAT_GROUP,
  SQ_QSTRAT_BLOCK,
  SQ_QSTRAT_TOKEN
} sq_qstrategy;

typedef enum sq_qtype { SQ_QTYPE_INT = 0, SQ_QTYPE_FLOAT } sq_qtype;

/* llm-compressor's actorder: "group" (alias "dynamic", true) permutes columns by
 * descending Hessian diagonal and stores g_idx; "weight" (alias "static") uses
 * the same order for calibration only, with static groups and no g_idx. */
typedef enum sq_actorder {
  SQ_ACTORDER_NONE = 0,
  SQ_ACTORDER_GROUP,
  SQ_ACTORDER_WEIGHT
} sq_actorder;

/* compressed-tensors QuantizationArgs, the fields shardq acts on. */
typedef struct sq_qargs {
  int num_bits;          /* 2, 3, 4, 8 for int; 8 for float (e4m3) */
  sq_qtype type;
  int symmetric;         /* 1 symmetric, 0 asymmetric (zero points) */
  sq_qstrategy strategy;
  int group_size;        /* columns per group for SQ_QSTRAT_GROUP */
  sq_dtype scale_dtype;  /* dtype scales are stored and computed in */
} sq_qargs;

static inline SQ_HD int sq_q_min(int bits) { return -(1 << (bits - 1)); }
static inline SQ_HD int sq_q_max(int bits) { return (1 << (bits - 1)) - 1; }

/* Machine epsilon of the scale dtype (torch.finfo(dtype).eps). */
static inline SQ_HD float sq_q_dtype_eps(sq_dtype dt) {
  if (dt == SQ_DTYPE_BF16) return 0.0078125f;     /* 2^-7 */
  if (dt == SQ_DTYPE_F16) return 0.0009765625f;   /* 2^-10 */
  return 1.1920928955078125e-07f;                 /* 2^-23 */
}

/* Integer scale and zero point for observed [xmin, xmax]. */
static inline SQ_HD void sq_q_int_params(float xmin, float xmax, int bits, int symmetric,
                                         sq_dtype scale_dt, float *scale, int *zp) {
  float lo = fminf(xmin, 0.0f), hi = fmaxf(xmax, 0.0f);
  float qmin = (float)sq_q_min(bits), qmax = (float)sq_q_max(bits);
  float s;
  int z = 0;
  if (symmetric) {
    s = fmaxf(-lo, hi) / ((qmax - qmin) / 2.0f);
  } else {
    s = (hi - lo) / (qmax - qmin);
  }
  s = sq_round_to_dtype(s, scale_dt);
  if (s == 0.0f) s = sq_q_dtype_eps(scale_dt);
  if (!symmetric) {
    float zf = rintf(qmin - lo / s);
    zf = fminf(fmaxf(zf, qmin), qmax);
    z = (int)zf;
  }
  *scale = s;
  *zp = z;
}

static inline SQ_HD int sq_q_int_quantize(float x, float scale, int zp, int bits) {
  float v = rintf(x / scale + (float)zp);
  v = fminf(fmaxf(v, (float)sq_q_min(bits)), (float)sq_q_max(bits));
  return (int)v;
}

static inline SQ_HD float sq_q_int_dequantize(int q, float scale, int zp, sq_dtype scale_dt) {
  return sq_round_to_dtype((float)(q - zp) * scale, scale_dt);
}

/* FP8 e4m3 scale for an observed absmax. */
static inline SQ_HD float sq_q_fp8_scale(float absmax, sq_dtype scale_dt) {
  float s = sq_round_to_dtype(absmax / SQ_FP8_E4M3_MAX, scale_dt);
  return s == 0.0f ? sq_q_dtype_eps(scale_dt) : s;
}

static inline SQ_HD uint8_t sq_q_fp8_quantize(float x, float scale) {
  float v = fminf(fmaxf(x / scale, -SQ_FP8_E4M3_MAX), SQ_FP8_E4M3_MAX);
  return sq_f32_to_fp8e4m3(v);
}

static inline SQ_HD float sq_q_fp8_dequantize(uint8_t code, float scale, sq_dtype scale_dt) {
  return sq_round_to_dtype(sq_fp8e4m3_to_f32(code) * scale, scale_dt);
}

/* Dispatch on qa.type for the tensor kernels (CPU and CUDA share these).
 * Scale and zero point of one scale cell with observed range [lo, hi]. */
static inline SQ_HD void sq_q_params(sq_qargs qa, float lo, float hi, float *scale, int *zp) {
  if (qa.type == SQ_QTYPE_FLOAT) {
    *scale = sq_q_fp8_scale(fmaxf(fabsf(lo), fabsf(hi)), qa.scale_dtype);
    *zp = 0;
  } else {
    sq_q_int_params(lo, hi, qa.num_bits, qa.symmetric, qa.scale_dtype, scale, zp);
  }
}

/* Code of x: the signed integer for int, the e4m3fn bit pattern for float. */
static inline SQ_HD int8_t sq_q_quantize(sq_qargs qa, float x, float scale, int zp) {
  if (qa.type == SQ_QTYPE_FLOAT) return (int8_t)sq_q_fp8_quantize(x, scale);
  return (int8_t)sq_q_int_quantize(x, scale, zp, qa.num_bits);
}

static inline SQ_HD float sq_q_dequantize(sq_qargs qa, int8_t code, float scale, int zp) {
  if (qa.type == SQ_QTYPE_FLOAT) return sq_q_fp8_dequantize((uint8_t)code, scale, qa.scale_dtype);
  return sq_q_int_dequantize(code, scale, zp, qa.scale_dtype);
}

#endif
