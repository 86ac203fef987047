/* SmoothQuant (Xiao et al. 2022) as llm-compressor's SmoothQuantModifier does
 * it, for one decoder layer: a calibration pass records the per-channel range
 * of the balance layers' shared input (the output of the smooth layer, an
 * RMSNorm), then per input channel j
 *
 *   act_j = max_x X_j - min_x X_j              (dynamic range over calibration)
 *   w_j   = 2 * max over balance layers of max_i |W_ij|
 *   s_j   = act_j^alpha / w_j^(1 - alpha)      (act_j if w_j == 0)
 *   s_j   = max(s_j, 1e-5)                     (MINIMUM_SMOOTHING_SCALE)
 *
 * and the norm weight is divided by s, every balance layer's column j is
 * multiplied by s_j. The layer's function is unchanged (RMSNorm(x)*g/s · (W*s)ᵀ
 * = RMSNorm(x)*g · Wᵀ) while the balance layers' input gets flatter channels.
 * (llm-compressor's _calculate_smoothing_scales and _apply_smoothing; the
 * "2 *" and max-min come from there: both are ranges, not absolute maxima.)
 *
 * The two Llama mappings are supported: q/k/v_proj balanced by input_layernorm
 * (hook qkv_in) and gate/up_proj by post_attention_layernorm (hook gate_up_in).
 * Memory: two (hidden) min/max pairs, allocated in sq_smooth_init. */
#ifndef SQ_WORKER_SMOOTHQUANT_H
#define SQ_WORKER_SMOOTHQUANT_H

#include <stdint.h>

#include "common/status.h"
#include "kernels/forward.h"

#define SQ_SMOOTH_MIN_SCALE 1e-5f

/* Which norm a mapping smooths. */
enum { SQ_SMOOTH_ATTN = 0, SQ_SMOOTH_MLP, SQ_SMOOTH_COUNT };

/* Per-channel min/max of one smooth layer's output. */
typedef struct sq_smooth_range {
  int64_t d;
  float *mn, *mx; /* (d) each */
  int64_t rows;   /* rows observed since the last reset */
} sq_smooth_range;

typedef struct sq_smooth {
  int enabled[SQ_SMOOTH_COUNT]; /* mappings in use */
  float alpha;                  /* smoothing_strength */
  sq_smooth_range r[SQ_SMOOTH_COUNT];
  const char *label;            /* names the layer in errors */
} sq_smooth;

sq_status sq_smooth_init(sq_smooth *s, int64_t hidden, float alpha, int attn, int mlp);
void sq_smooth_free(sq_smooth *s);
/* Forget the ranges (start of a layer). */
void sq_smooth_reset(sq_smooth *s);
/* Fold X (rows, d) into range r. */
sq_status sq_smooth_observe(sq_smooth_range *r, const float *X, int64_t rows, int64_t cols,
                            const char *label);
/* Hooks (qkv_in, gate_up_in) that observe the enabled mappings' inputs. */
sq_fwd_hooks sq_smooth_hooks(sq_smooth *s);

/* Scales s (d) from range r and the n_bal balance weights W[b] (d_out[b], d). */
sq_status sq_smooth_scales(const sq_smooth_range *r, const float *const *W, const int64_t *d_out,
                           int n_bal, float alpha, float *s, const char *label);
/* norm (d) /= s; each W[b] (d_out[b], d) column j *= s[j]. */
void sq_smooth_apply(float *norm, float *const *W, const int64_t *d_out, int n_bal, int64_t d,
                     const float *s);

#endif
