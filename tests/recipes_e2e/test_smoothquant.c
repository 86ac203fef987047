/* SmoothQuant on one random fp32 decoder layer (worker/smoothquant.h):
 *  - the scales equal the llm-compressor formula recomputed here in double
 *    from the activations and weights (exp/log form, range = max - min);
 *  - the layer's output is unchanged by smoothing (max |dy| / max |y| <= 1e-5);
 *  - the balance layers' input gets flatter: max/mean of the per-channel
 *    absmax drops (the input has a few outlier channels, as real ones do). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/forward.h"
#include "test_util.h"
#include "worker/smoothquant.h"

enum { HID = 64, NH = 4, NKV = 2, HD = 16, INTER = 160, B = 2, T = 24 };

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) { /* uniform in [-1, 1) */
  rng = rng * 6364136223846793005ull + 1442695040888963407ull;
  return (float)((rng >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f;
}
static float *rnd(size_t n, float scale) {
  float *p = malloc(n * sizeof *p);
  for (size_t i = 0; i < n; i++) p[i] = frand() * scale;
  return p;
}

/* per-channel absmax of the norm outputs, captured by a hook */
typedef struct { float amax[2][HID]; double mn[2][HID], mx[2][HID]; } obs;
static sq_status grab(obs *o, int k, const float *X, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows; i++)
    for (int64_t j = 0; j < cols; j++) {
      float a = fabsf(X[i * cols + j]);
      if (a > o->amax[k][j]) o->amax[k][j] = a;
      if (X[i * cols + j] < o->mn[k][j]) o->mn[k][j] = X[i * cols + j];
      if (X[i * cols + j] > o->mx[k][j]) o->mx[k][j] = X[i * cols + j];
    }
  return SQ_OK;
}
static sq_status grab_attn(void *u, const float *X, int64_t r, int64_t c) { return grab(u, 0, X, r, c); }
static sq_status grab_mlp(void *u, const float *X, int64_t r, int64_t c) { return grab(u, 1, X, r, c); }

static double flatness(const float *a) { /* max / mean */
  double mx = 0, s = 0;
  for (int j = 0; j < HID; j++) {
    mx = a[j] > mx ? a[j] : mx;
    s += a[j];
  }
  return mx / (s / HID);
}

int main(void) {
  sq_rope_cfg rc = {.type = SQ_FWD_ROPE_DEFAULT, .head_dim = HD, .theta = 10000.0};
  sq_rope rope = {0};
  SQ_EXPECT(sq_fwd_rope_init(&rope, &rc, T) == SQ_OK);
  sq_fwd_layer_cfg cfg = {.hidden = HID, .n_heads = NH, .n_kv_heads = NKV, .head_dim = HD,
                          .intermediate = INTER, .eps = 1e-5f, .rope = &rope};
  float *x = rnd((size_t)B * T * HID, 1.0f);
  /* outlier channels in the residual stream (hence in both norms' outputs) */
  for (int i = 0; i < B * T; i++) {
    x[i * HID + 3] *= 40.0f;
    x[i * HID + 17] *= 25.0f;
  }
  float *an = rnd(HID, 0.1f), *mn = rnd(HID, 0.1f);
  for (int j = 0; j < HID; j++) {
    an[j] += 1.0f;
    mn[j] += 1.0f;
  }
  float *W[7];
  const int64_t dout[7] = {NH * HD, NKV * HD, NKV * HD, HID, INTER, INTER, HID};
  const int64_t din[7] = {HID, HID, HID, NH * HD, HID, HID, INTER};
  for (int m = 0; m < 7; m++) W[m] = rnd((size_t)(dout[m] * din[m]), 1.0f / sqrtf((float)din[m]));
  sq_fwd_layer_weights w = {.attn_norm = an, .q = W[0], .k = W[1], .v = W[2], .o = W[3],
                            .mlp_norm = mn, .gate = W[4], .up = W[5], .down = W[6]};
  void *ws = aligned_alloc(64, (sq_fwd_layer_workspace_bytes(&cfg, B, T) + 63) / 64 * 64);
  float *y0 = malloc(sizeof(float) * B * T * HID), *y1 = malloc(sizeof(float) * B * T * HID);

  obs *before = calloc(1, sizeof *before), *after = calloc(1, sizeof *after);
  for (int k = 0; k < 2; k++)
    for (int j = 0; j < HID; j++) {
      before->mn[k][j] = after->mn[k][j] = INFINITY;
      before->mx[k][j] = after->mx[k][j] = -INFINITY;
    }
  sq_fwd_hooks ho = {.qkv_in = grab_attn, .gate_up_in = grab_mlp, .user = before};
  SQ_EXPECT(sq_fwd_layer(&cfg, &w, x, B, T, &ho, ws, y0) == SQ_OK);

  const float alpha = 0.8f;
  sq_smooth sm;
  SQ_EXPECT(sq_smooth_init(&sm, HID, alpha, 1, 1) == SQ_OK);
  sq_fwd_hooks hs = sq_smooth_hooks(&sm);
  /* the smoothing pass runs on the ORIGINAL weights */
  SQ_EXPECT(sq_fwd_layer(&cfg, &w, x, B, T, &hs, ws, y1) == SQ_OK);
  float s[2][HID];
  float *bal_attn[3] = {W[0], W[1], W[2]}, *bal_mlp[2] = {W[4], W[5]};
  int64_t d_attn[3] = {dout[0], dout[1], dout[2]}, d_mlp[2] = {dout[4], dout[5]};
  SQ_EXPECT(sq_smooth_scales(&sm.r[SQ_SMOOTH_ATTN], (const float *const *)bal_attn, d_attn, 3,
                             alpha, s[0], "test attn") == SQ_OK);
  SQ_EXPECT(sq_smooth_scales(&sm.r[SQ_SMOOTH_MLP], (const float *const *)bal_mlp, d_mlp, 2, alpha,
                             s[1], "test mlp") == SQ_OK);
  /* reference scales: exp(a*log(range_x) - (1-a)*log(2*max|W|)), floored at 1e-5 */
  for (int k = 0; k < 2; k++)
    for (int j = 0; j < HID; j++) {
      double wmax = 0;
      int mods[3] = {k ? 4 : 0, k ? 5 : 1, k ? -1 : 2};
      for (int b = 0; b < 3; b++) {
        if (mods[b] < 0) continue;
        for (int64_t i = 0; i < dout[mods[b]]; i++) {
          double a = fabs(W[mods[b]][i * HID + j]);
          wmax = a > wmax ? a : wmax;
        }
      }
      double range = before->mx[k][j] - before->mn[k][j];
      double ref = exp(alpha * log(range) - (1.0 - alpha) * log(2.0 * wmax));
      if (ref < 1e-5) ref = 1e-5;
      SQ_EXPECT_NEAR(s[k][j], ref, 0, 2e-5);
    }
  sq_smooth_apply(an, bal_attn, d_attn, 3, HID, s[0]);
  sq_smooth_apply(mn, bal_mlp, d_mlp, 2, HID, s[1]);

  ho.user = after;
  SQ_EXPECT(sq_fwd_layer(&cfg, &w, x, B, T, &ho, ws, y1) == SQ_OK);
  double dmax = 0, ymax = 0;
  for (int i = 0; i < B * T * HID; i++) {
    double d = fabs((double)y1[i] - y0[i]);
    dmax = d > dmax ? d : dmax;
    ymax = fabs(y0[i]) > ymax ? fabs(y0[i]) : ymax;
  }
  fprintf(stderr, "smoothing changed the layer output by %.3g relative\n", dmax / ymax);
  SQ_EXPECT_MSG(dmax <= 1e-5 * ymax, "layer output changed by %.3g (max |y| %.3g)", dmax, ymax);
  for (int k = 0; k < 2; k++) {
    double f0 = flatness(before->amax[k]), f1 = flatness(after->amax[k]);
    fprintf(stderr, "%s input absmax max/mean: %.2f -> %.2f\n", k ? "gate/up" : "q/k/v", f0, f1);
    SQ_EXPECT_MSG(f1 < 0.7 * f0, "mapping %d: flatness %.3f -> %.3f did not drop", k, f0, f1);
  }
  /* an empty calibration is an error, not a division by zero */
  sq_smooth_reset(&sm);
  SQ_EXPECT(sq_smooth_scales(&sm.r[0], (const float *const *)bal_attn, d_attn, 3, alpha, s[0],
                             "empty") == SQ_ERR_ARG);
  sq_smooth_free(&sm);
  for (int m = 0; m < 7; m++) free(W[m]);
  free(x), free(an), free(mn), free(ws), free(y0), free(y1), free(before), free(after);
  sq_fwd_rope_free(&rope);
  return sq_test_result("test_smoothquant");
}
