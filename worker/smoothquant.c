/* SmoothQuant for one decoder layer (see smoothquant.h). */
#include "worker/smoothquant.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

sq_status sq_smooth_init(sq_smooth *s, int64_t hidden, float alpha, int attn, int mlp) {
  memset(s, 0, sizeof *s);
  s->alpha = alpha;
  s->enabled[SQ_SMOOTH_ATTN] = attn;
  s->enabled[SQ_SMOOTH_MLP] = mlp;
  s->label = "layer";
  for (int k = 0; k < SQ_SMOOTH_COUNT; k++) {
    s->r[k].d = hidden;
    s->r[k].mn = malloc((size_t)hidden * sizeof(float));
    s->r[k].mx = malloc((size_t)hidden * sizeof(float));
    if (!s->r[k].mn || !s->r[k].mx) {
      sq_smooth_free(s);
      return sq_error_set(SQ_ERR_NOMEM, "SmoothQuant: out of memory for %lld channel ranges",
                          (long long)hidden);
    }
  }
  sq_smooth_reset(s);
  return SQ_OK;
}

void sq_smooth_free(sq_smooth *s) {
  for (int k = 0; k < SQ_SMOOTH_COUNT; k++) {
    free(s->r[k].mn);
    free(s->r[k].mx);
  }
  memset(s, 0, sizeof *s);
}

void sq_smooth_reset(sq_smooth *s) {
  for (int k = 0; k < SQ_SMOOTH_COUNT; k++) {
    sq_smooth_range *r = &s->r[k];
    for (int64_t j = 0; j < r->d; j++) {
      r->mn[j] = FLT_MAX;
      r->mx[j] = -FLT_MAX;
    }
    r->rows = 0;
  }
}

sq_status sq_smooth_observe(sq_smooth_range *r, const float *X, int64_t rows, int64_t cols,
                            const char *label) {
  if (cols != r->d)
    return sq_error_set(SQ_ERR_ARG, "%s: SmoothQuant input has %lld channels, expected %lld",
                        label, (long long)cols, (long long)r->d);
  for (int64_t i = 0; i < rows; i++) {
    const float *x = X + i * cols;
    for (int64_t j = 0; j < cols; j++) {
      if (x[j] < r->mn[j]) r->mn[j] = x[j];
      if (x[j] > r->mx[j]) r->mx[j] = x[j];
    }
  }
  r->rows += rows;
  return SQ_OK;
}

static sq_status sq_smooth_hook_attn(void *u, const float *X, int64_t rows, int64_t cols) {
  sq_smooth *s = u;
  return sq_smooth_observe(&s->r[SQ_SMOOTH_ATTN], X, rows, cols, s->label);
}
static sq_status sq_smooth_hook_mlp(void *u, const float *X, int64_t rows, int64_t cols) {
  sq_smooth *s = u;
  return sq_smooth_observe(&s->r[SQ_SMOOTH_MLP], X, rows, cols, s->label);
}

sq_fwd_hooks sq_smooth_hooks(sq_smooth *s) {
  sq_fwd_hooks h = {0};
  if (s->enabled[SQ_SMOOTH_ATTN]) h.qkv_in = sq_smooth_hook_attn;
  if (s->enabled[SQ_SMOOTH_MLP]) h.gate_up_in = sq_smooth_hook_mlp;
  h.user = s;
  return h;
}

sq_status sq_smooth_scales(const sq_smooth_range *r, const float *const *W, const int64_t *d_out,
                           int n_bal, float alpha, float *s, const char *label) {
  if (r->rows <= 0)
    return sq_error_set(SQ_ERR_ARG, "%s: SmoothQuant saw no calibration rows", label);
  int64_t d = r->d;
  /* weight range per input column: 2 * max |W_ij| over every balance layer */
  for (int64_t j = 0; j < d; j++) s[j] = 0.0f;
  for (int b = 0; b < n_bal; b++)
    for (int64_t i = 0; i < d_out[b]; i++) {
      const float *w = W[b] + i * d;
      for (int64_t j = 0; j < d; j++) {
        float a = fabsf(w[j]);
        if (a > s[j]) s[j] = a;
      }
    }
  for (int64_t j = 0; j < d; j++) {
    float wr = 2.0f * s[j];
    float act = r->mx[j] - r->mn[j];
    if (!isfinite(act) || !isfinite(wr))
      return sq_error_set(SQ_ERR_NUMERIC, "%s: SmoothQuant channel %lld has a non-finite range",
                          label, (long long)j);
    float v = wr > 0.0f ? powf(act, alpha) / powf(wr, 1.0f - alpha) : act;
    s[j] = v > SQ_SMOOTH_MIN_SCALE ? v : SQ_SMOOTH_MIN_SCALE;
  }
  return SQ_OK;
}

void sq_smooth_apply(float *norm, float *const *W, const int64_t *d_out, int n_bal, int64_t d,
                     const float *s) {
  for (int64_t j = 0; j < d; j++) norm[j] /= s[j];
  for (int b = 0; b < n_bal; b++)
    for (int64_t i = 0; i < d_out[b]; i++) {
      float *w = W[b] + i * d;
      for (int64_t j = 0; j < d; j++) w[j] *= s[j];
    }
}
