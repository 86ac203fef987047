/* Per-element math of the Llama forward ops, shared by the CPU reference
 * (kernels/cpu/forward.c, attention.c) and the CUDA kernels
 * (kernels/cuda/forward.cu): static inline and SQ_HD, so the CPU tests cover
 * the arithmetic that the GPU runs.
 *
 * Everything follows Hugging Face transformers' Llama in fp32:
 *   RMSNorm   y = w * (x * rsqrt(mean(x^2) + eps))          (LlamaRMSNorm)
 *   SiLU      silu(g) = g / (1 + exp(-g)), SwiGLU h = silu(g) * u
 *   RoPE      rotate_half pairs (i, i + hd/2):
 *             y[i]      = x[i] * cos - x[i + hd/2] * sin
 *             y[i+hd/2] = x[i + hd/2] * cos + x[i] * sin
 *   inv_freq  1 / theta^((2i)/hd), computed in fp32 (arange(0, hd, 2).float() / hd)
 *   llama3    HF _compute_llama3_parameters, per frequency (see below)
 *   angle     float(pos) * inv_freq rounded to fp32, as HF's fp32 matmul does */
#ifndef SQ_KERNELS_FORWARD_MATH_H
#define SQ_KERNELS_FORWARD_MATH_H

#include <math.h>
#include <stdint.h>

#include "common/dtype.h" /* SQ_HD */

/* 1 / sqrt(mean + eps) for a row whose squares sum to sumsq over n elements. */
static inline SQ_HD float sq_fm_rms_inv(float sumsq, int64_t n, float eps) {
  return 1.0f / sqrtf(sumsq / (float)n + eps);
}

/* One RMSNorm output: HF multiplies x by the inverse rms first, then by w. */
static inline SQ_HD float sq_fm_rms_elem(float x, float inv_rms, float w) {
  return w * (x * inv_rms);
}

static inline SQ_HD float sq_fm_silu(float g) {
  return g / (1.0f + expf(-g));
}

static inline SQ_HD float sq_fm_silu_mul(float g, float u) {
  return sq_fm_silu(g) * u;
}

/* Rotate one rotate_half pair (a = x[i], b = x[i + hd/2]) in place. */
static inline SQ_HD void sq_fm_rope_pair(float *a, float *b, float c, float s) {
  float x0 = *a, x1 = *b;
  *a = x0 * c - x1 * s;
  *b = x1 * c + x0 * s;
}

/* Default inverse frequency of pair i (0 <= i < hd/2), as HF computes it in fp32:
 * exponent = float(2i) / float(hd), inv = 1 / powf(theta, exponent). */
static inline SQ_HD float sq_fm_rope_inv_freq(int i, int head_dim, float theta) {
  float e = (float)(2 * i) / (float)head_dim;
  return 1.0f / powf(theta, e);
}

/* HF _compute_llama3_parameters for one frequency:
 *   wavelen = 2*pi / inv
 *   wavelen < old_ctx / high_freq_factor  -> inv (high frequencies kept)
 *   wavelen > old_ctx / low_freq_factor   -> inv / factor
 *   otherwise smooth = (old_ctx / wavelen - low) / (high - low),
 *             (1 - smooth) * inv / factor + smooth * inv
 * The fp32 tensors of HF become fp32 here; the thresholds are Python doubles. */
static inline SQ_HD float sq_fm_rope_llama3(float inv, float factor, float low_freq_factor,
                                            float high_freq_factor, float old_ctx) {
  const double two_pi = 6.283185307179586;
  double low_freq_wavelen = (double)old_ctx / (double)low_freq_factor;
  double high_freq_wavelen = (double)old_ctx / (double)high_freq_factor;
  float wavelen = (float)two_pi / inv;
  if ((double)wavelen < high_freq_wavelen) return inv;
  if ((double)wavelen > low_freq_wavelen) return inv / factor;
  float smooth = (old_ctx / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
  return (1.0f - smooth) * inv / factor + smooth * inv;
}

/* Rotation angle of position pos, rounded to fp32 like HF's inv_freq @ positions. */
static inline SQ_HD float sq_fm_rope_angle(int64_t pos, float inv) {
  return (float)pos * inv;
}

#endif
