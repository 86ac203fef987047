/* CPU reference of the Llama forward ops other than attention: embedding,
 * RMSNorm, Linear (OpenBLAS sgemm), RoPE tables and rotation, SwiGLU, softmax,
 * logits and the NLL used for perplexity. Per-element math is in
 * kernels/forward_math.h so that the CUDA twins compute the same thing. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/forward.h"
#include "kernels/forward_math.h"

/* ---- RoPE ---- */

sq_status sq_fwd_rope_inv_freq(const sq_rope_cfg *cfg, float *inv_freq) {
  if (!cfg || !inv_freq || cfg->head_dim <= 0 || cfg->head_dim % 2 != 0)
    return sq_error_set(SQ_ERR_ARG, "rope: head_dim %d must be positive and even",
                        cfg ? cfg->head_dim : -1);
  if (!(cfg->theta > 0.0))
    return sq_error_set(SQ_ERR_ARG, "rope: rope_theta %g must be positive", cfg->theta);
  int half = cfg->head_dim / 2;
  float theta = (float)cfg->theta;
  for (int i = 0; i < half; i++) inv_freq[i] = sq_fm_rope_inv_freq(i, cfg->head_dim, theta);
  switch (cfg->type) {
    case SQ_FWD_ROPE_DEFAULT:
      return SQ_OK;
    case SQ_FWD_ROPE_LINEAR:
      if (!(cfg->factor > 0.0))
        return sq_error_set(SQ_ERR_ARG, "rope_scaling linear: factor %g must be positive",
                            cfg->factor);
      /* HF: inv_freq /= factor (fp32 tensor divided by a Python float). */
      for (int i = 0; i < half; i++) inv_freq[i] = inv_freq[i] / (float)cfg->factor;
      return SQ_OK;
    case SQ_FWD_ROPE_LLAMA3:
      if (!(cfg->factor > 0.0) || !(cfg->high_freq_factor > cfg->low_freq_factor) ||
          !(cfg->low_freq_factor > 0.0) || cfg->original_max_position <= 0)
        return sq_error_set(SQ_ERR_ARG,
                            "rope_scaling llama3: need factor > 0, high_freq_factor > "
                            "low_freq_factor > 0, original_max_position_embeddings > 0 "
                            "(got %g, %g, %g, %lld)",
                            cfg->factor, cfg->high_freq_factor, cfg->low_freq_factor,
                            (long long)cfg->original_max_position);
      for (int i = 0; i < half; i++)
        inv_freq[i] =
            sq_fm_rope_llama3(inv_freq[i], (float)cfg->factor, (float)cfg->low_freq_factor,
                              (float)cfg->high_freq_factor, (float)cfg->original_max_position);
      return SQ_OK;
  }
  return sq_error_set(SQ_ERR_UNSUPPORTED,
                      "rope: unknown rope type %d -- hint: shardq supports "
                      "default, linear and llama3",
                      (int)cfg->type);
}

sq_status sq_fwd_rope_init(sq_rope *r, const sq_rope_cfg *cfg, int64_t max_t) {
  if (!r || !cfg || max_t <= 0)
    return sq_error_set(SQ_ERR_ARG, "rope: max_t %lld must be positive", (long long)max_t);
  memset(r, 0, sizeof *r);
  if (cfg->head_dim <= 0 || cfg->head_dim % 2 != 0)
    return sq_error_set(SQ_ERR_ARG, "rope: head_dim %d must be positive and even", cfg->head_dim);
  int half = cfg->head_dim / 2;
  size_t n = (size_t)max_t * (size_t)half;
  r->inv_freq = malloc((size_t)half * sizeof(float));
  r->cos = malloc(n * sizeof(float));
  r->sin = malloc(n * sizeof(float));
  if (!r->inv_freq || !r->cos || !r->sin) {
    sq_fwd_rope_free(r);
    return sq_error_set(SQ_ERR_NOMEM, "rope: cannot allocate tables for %lld positions",
                        (long long)max_t);
  }
  sq_status st = sq_fwd_rope_inv_freq(cfg, r->inv_freq);
  if (st != SQ_OK) {
    sq_fwd_rope_free(r);
    return st;
  }
  r->max_t = max_t;
  r->head_dim = cfg->head_dim;
  for (int64_t t = 0; t < max_t; t++) {
    for (int i = 0; i < half; i++) {
      /* fp32 angle as HF; cos/sin of that float evaluated in double and rounded,
       * i.e. within half an ulp of torch's fp32 cos/sin. */
      double a = (double)sq_fm_rope_angle(t, r->inv_freq[i]);
      r->cos[(size_t)t * half + i] = (float)cos(a);
      r->sin[(size_t)t * half + i] = (float)sin(a);
    }
  }
  return SQ_OK;
}

void sq_fwd_rope_free(sq_rope *r) {
  if (!r) return;
  free(r->inv_freq);
  free(r->cos);
  free(r->sin);
  memset(r, 0, sizeof *r);
}

void sq_fwd_rope_apply(const sq_rope *r, float *x, int64_t B, int64_t T, int64_t n_heads) {
  int hd = r->head_dim, half = hd / 2;
  int64_t width = n_heads * hd;
  for (int64_t row = 0; row < B * T; row++) {
    const float *c = r->cos + (size_t)(row % T) * half;
    const float *s = r->sin + (size_t)(row % T) * half;
    float *xr = x + (size_t)row * width;
    for (int64_t h = 0; h < n_heads; h++) {
      float *xh = xr + h * hd;
      for (int i = 0; i < half; i++) sq_fm_rope_pair(&xh[i], &xh[i + half], c[i], s[i]);
    }
  }
}

/* ---- elementwise and linear ---- */

sq_status sq_fwd_embed(const float *table, int64_t vocab, int64_t hidden, const int32_t *ids,
                       int64_t n, float *out) {
  for (int64_t i = 0; i < n; i++) {
    if (ids[i] < 0 || ids[i] >= vocab)
      return sq_error_set(SQ_ERR_ARG,
                          "embedding: token id %d at position %lld is outside the vocabulary "
                          "[0, %lld) -- hint: the calibration ids were made with another "
                          "tokenizer",
                          (int)ids[i], (long long)i, (long long)vocab);
    memcpy(out + (size_t)i * hidden, table + (size_t)ids[i] * hidden,
           (size_t)hidden * sizeof(float));
  }
  return SQ_OK;
}

void sq_fwd_rmsnorm(const float *x, const float *w, int64_t rows, int64_t d, float eps, float *y) {
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + (size_t)r * d;
    float *yr = y + (size_t)r * d;
    double ss = 0.0; /* double sum: within fp32 rounding of torch's fp32 mean */
    for (int64_t i = 0; i < d; i++) ss += (double)xr[i] * xr[i];
    float inv = sq_fm_rms_inv((float)ss, d, eps);
    for (int64_t i = 0; i < d; i++) yr[i] = sq_fm_rms_elem(xr[i], inv, w[i]);
  }
}

void sq_fwd_linear(const float *X, int64_t rows, int64_t d_in, const float *W, int64_t d_out,
                   const float *bias, float *Y) {
  if (rows <= 0 || d_out <= 0) return;
  if (bias) {
    for (int64_t r = 0; r < rows; r++)
      memcpy(Y + (size_t)r * d_out, bias, (size_t)d_out * sizeof(float));
  }
  /* Y (rows, d_out) = X (rows, d_in) · W (d_out, d_in)ᵀ [+ Y] */
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)d_out, (int)d_in, 1.0f, X,
              (int)d_in, W, (int)d_in, bias ? 1.0f : 0.0f, Y, (int)d_out);
}

void sq_fwd_silu_mul(float *g, const float *u, int64_t n) {
  for (int64_t i = 0; i < n; i++) g[i] = sq_fm_silu_mul(g[i], u[i]);
}

void sq_fwd_softmax_row(float *x, int64_t n) {
  float m = -INFINITY;
  for (int64_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
  double sum = 0.0;
  for (int64_t i = 0; i < n; i++) {
    x[i] = expf(x[i] - m);
    sum += x[i];
  }
  float inv = (float)(1.0 / sum);
  for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

/* ---- head and loss ---- */

void sq_fwd_logits(const float *x, int64_t rows, int64_t hidden, const float *norm_w, float eps,
                   const float *lm_head, int64_t vocab, float *xn_ws, float *logits) {
  sq_fwd_rmsnorm(x, norm_w, rows, hidden, eps, xn_ws);
  sq_fwd_linear(xn_ws, rows, hidden, lm_head, vocab, NULL, logits);
}

sq_status sq_fwd_nll(const float *logits, int64_t rows, int64_t vocab, const int32_t *targets,
                     double *nll) {
  double total = 0.0;
  for (int64_t r = 0; r < rows; r++) {
    if (targets[r] < 0 || targets[r] >= vocab)
      return sq_error_set(SQ_ERR_ARG,
                          "nll: target id %d at row %lld is outside the vocabulary [0, %lld)",
                          (int)targets[r], (long long)r, (long long)vocab);
    const float *lr = logits + (size_t)r * vocab;
    float m = -INFINITY;
    for (int64_t i = 0; i < vocab; i++) m = lr[i] > m ? lr[i] : m;
    double s = 0.0;
    for (int64_t i = 0; i < vocab; i++) s += exp((double)lr[i] - m);
    /* -log p = log(sum exp(l - m)) + m - l_target */
    total += log(s) + (double)m - (double)lr[targets[r]];
  }
  *nll = total;
  return SQ_OK;
}
