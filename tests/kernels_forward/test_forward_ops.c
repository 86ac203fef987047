/* Unit tests of the single forward ops (kernels/forward.h) against naive
 * double-precision loops (naive.h) and hand-worked values: embedding, RMSNorm,
 * Linear, SwiGLU, softmax, RoPE (default, linear, llama3), GQA attention
 * (MHA, GQA, MQA; causal property) and the NLL. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/forward.h"
#include "naive.h"
#include "test_util.h"

static void test_embed(void) {
  float table[4 * 3];
  for (int i = 0; i < 12; i++) table[i] = (float)i;
  int32_t ids[3] = {2, 0, 3};
  float out[9];
  SQ_EXPECT_EQ_INT(sq_fwd_embed(table, 4, 3, ids, 3, out), SQ_OK);
  for (int r = 0; r < 3; r++)
    for (int c = 0; c < 3; c++) SQ_EXPECT_EQ_INT(out[r * 3 + c], ids[r] * 3 + c);
  int32_t bad[3] = {1, 4, 0};
  sq_error_clear();
  SQ_EXPECT_EQ_INT(sq_fwd_embed(table, 4, 3, bad, 3, out), SQ_ERR_ARG);
  SQ_EXPECT_MSG(strstr(sq_error_message(), "token id 4 at position 1"), "message: %s",
                sq_error_message());
  int32_t neg[1] = {-7};
  sq_error_clear();
  SQ_EXPECT_EQ_INT(sq_fwd_embed(table, 4, 3, neg, 1, out), SQ_ERR_ARG);
  SQ_EXPECT_MSG(strstr(sq_error_message(), "-7"), "message: %s", sq_error_message());
  sq_error_clear();
}

static void test_rmsnorm(void) {
  uint64_t s = 11;
  const int64_t rows = 5, d = 67;
  float *x = nv_alloc_rand((size_t)(rows * d), &s, 3.0f), *w = nv_alloc_rand((size_t)d, &s, 2.0f);
  float *y = malloc((size_t)(rows * d) * sizeof(float));
  double *xd = nv_to_double(x, (size_t)(rows * d)), *yd = malloc((size_t)(rows * d) * 8);
  sq_fwd_rmsnorm(x, w, rows, d, 1e-5f, y);
  nv_rmsnorm(xd, w, rows, d, (double)1e-5f, yd);
  for (int64_t i = 0; i < rows * d; i++) SQ_EXPECT_NEAR(y[i], yd[i], 1e-6, 1e-6);
  /* in place */
  sq_fwd_rmsnorm(x, w, rows, d, 1e-5f, x);
  SQ_EXPECT(memcmp(x, y, (size_t)(rows * d) * sizeof(float)) == 0);
  free(x), free(w), free(y), free(xd), free(yd);
}

static void test_linear_silu_softmax(void) {
  uint64_t s = 5;
  const int64_t rows = 7, din = 33, dout = 19;
  float *X = nv_alloc_rand((size_t)(rows * din), &s, 1.0f);
  float *W = nv_alloc_rand((size_t)(dout * din), &s, 1.0f),
        *b = nv_alloc_rand((size_t)dout, &s, 1.0f);
  float *Y = malloc((size_t)(rows * dout) * sizeof(float));
  double *Xd = nv_to_double(X, (size_t)(rows * din)), *Yd = malloc((size_t)(rows * dout) * 8);
  for (int with_bias = 0; with_bias < 2; with_bias++) {
    sq_fwd_linear(X, rows, din, W, dout, with_bias ? b : NULL, Y);
    nv_linear(Xd, rows, din, W, dout, with_bias ? b : NULL, Yd);
    /* fp32 dot of 33 terms of |.| <= 1: error <= 33 * 2^-24 * 33 ~ 7e-5 worst case */
    for (int64_t i = 0; i < rows * dout; i++) SQ_EXPECT_NEAR(Y[i], Yd[i], 2e-5, 1e-5);
  }
  /* SwiGLU elementwise */
  float g[6] = {-20.0f, -1.5f, 0.0f, 0.3f, 2.0f, 30.0f}, u[6] = {1, 2, 3, -4, 5, 0.5f};
  float gg[6];
  memcpy(gg, g, sizeof g);
  sq_fwd_silu_mul(gg, u, 6);
  for (int i = 0; i < 6; i++) SQ_EXPECT_NEAR(gg[i], nv_silu(g[i]) * u[i], 1e-7, 2e-7);
  /* softmax with a huge offset (max subtraction) */
  float row[5] = {1000.0f, 1001.0f, 999.0f, -1e30f, 1000.5f};
  double ref[5], sum = 0;
  for (int i = 0; i < 5; i++) sum += (ref[i] = exp((double)row[i] - 1001.0));
  sq_fwd_softmax_row(row, 5);
  for (int i = 0; i < 5; i++) SQ_EXPECT_NEAR(row[i], ref[i] / sum, 1e-7, 1e-6);
  free(X), free(W), free(b), free(Y), free(Xd), free(Yd);
}

/* Default RoPE against the formula in double. fp32 angles (HF) differ from the
 * double angle t*inv by at most ~3 ulp of it (inv_freq's powf and division, the
 * product's rounding): tolerance 1e-6 + 4e-7 * t * inv * |x|max, per element. */
static void test_rope_default(void) {
  sq_rope_cfg cfg = {.type = SQ_FWD_ROPE_DEFAULT, .head_dim = 64, .theta = 10000.0};
  sq_rope r = {0};
  const int64_t T = 300, B = 2, H = 3, hd = 64;
  SQ_EXPECT_EQ_INT(sq_fwd_rope_init(&r, &cfg, T), SQ_OK);
  double inv[32];
  for (int i = 0; i < 32; i++) {
    inv[i] = pow(10000.0, -(2.0 * i) / 64.0);
    SQ_EXPECT_NEAR(r.inv_freq[i], inv[i], 0, 3e-7);
  }
  for (int64_t t = 0; t < T; t += 7)
    for (int i = 0; i < 32; i++) {
      double tol = 1e-6 + 4e-7 * (double)t * inv[i];
      SQ_EXPECT_NEAR(r.cos[t * 32 + i], cos((double)t * inv[i]), tol, 0);
      SQ_EXPECT_NEAR(r.sin[t * 32 + i], sin((double)t * inv[i]), tol, 0);
    }
  uint64_t s = 3;
  size_t n = (size_t)(B * T * H * hd);
  float *x = nv_alloc_rand(n, &s, 2.0f);
  double *xd = nv_to_double(x, n);
  sq_fwd_rope_apply(&r, x, B, T, H);
  nv_rope(xd, B * T, T, H, hd, inv);
  for (size_t e = 0; e < n; e++) {
    int64_t t = (int64_t)(e / (size_t)(H * hd)) % T;
    double tol = 2e-6 + 2.0 * 2.0 * 4e-7 * (double)t; /* |x| <= 2, two terms, inv <= 1 */
    SQ_EXPECT_NEAR(x[e], xd[e], tol, 0);
  }
  /* head_dim must be even */
  sq_rope bad = {0};
  cfg.head_dim = 63;
  SQ_EXPECT_EQ_INT(sq_fwd_rope_init(&bad, &cfg, 4), SQ_ERR_ARG);
  sq_error_clear();
  free(x), free(xd);
  sq_fwd_rope_free(&r);
}

/* llama3 scaling worked by hand for theta 5e5, head_dim 128, factor 8, low 1,
 * high 4, original 8192 (wavelength thresholds 8192 / 1 and 8192 / 4 = 2048):
 *  i = 0:  inv = 1, wavelen 2*pi < 2048             -> kept: 1
 *  i = 20: inv = 5e5^(-40/128) = 0.0165604401, wavelen 379.4 < 2048 -> kept
 *  i = 32: inv = 5e5^(-1/2) = 1/707.106781 = 0.00141421356, wavelen
 *          2*pi*707.106781 = 4442.88294 in [2048, 8192]: smooth
 *          s = (8192 / 4442.88294 - 1) / 3 = 0.281282605,
 *          inv * ((1 - s) / 8 + s) = 0.00141421356 * 0.371122829 = 5.24846161e-4
 *  i = 40: inv = 5e5^(-80/128) = 2.74248176e-4, wavelen 22910.6 > 8192 -> /8 = 3.42810220e-5
 *  i = 63: inv = 5e5^(-126/128) = 2.45514079e-6 -> /8 = 3.06892599e-7 */
static void test_rope_llama3_linear(void) {
  sq_rope_cfg cfg = {.type = SQ_FWD_ROPE_LLAMA3,
                     .head_dim = 128,
                     .theta = 500000.0,
                     .factor = 8.0,
                     .low_freq_factor = 1.0,
                     .high_freq_factor = 4.0,
                     .original_max_position = 8192};
  float inv[64];
  SQ_EXPECT_EQ_INT(sq_fwd_rope_inv_freq(&cfg, inv), SQ_OK);
  SQ_EXPECT_NEAR(inv[0], 1.0, 0, 1e-7);
  SQ_EXPECT_NEAR(inv[20], 0.0165604401, 0, 1e-6);
  SQ_EXPECT_NEAR(inv[32], 5.24846161e-4, 0, 2e-6);
  SQ_EXPECT_NEAR(inv[40], 3.42810220e-5, 0, 1e-6);
  SQ_EXPECT_NEAR(inv[63], 3.06892599e-7, 0, 1e-6);
  /* the smooth band is monotone between its two ends */
  for (int i = 1; i < 64; i++) SQ_EXPECT(inv[i] < inv[i - 1]);
  /* linear: every inverse frequency divided by the factor */
  sq_rope_cfg lin = {.type = SQ_FWD_ROPE_LINEAR, .head_dim = 16, .theta = 10000.0, .factor = 4.0};
  sq_rope r = {0};
  SQ_EXPECT_EQ_INT(sq_fwd_rope_init(&r, &lin, 50), SQ_OK);
  for (int i = 0; i < 8; i++) {
    double invd = pow(10000.0, -(2.0 * i) / 16.0);
    SQ_EXPECT_NEAR(r.inv_freq[i], invd / 4.0, 0, 3e-7);
    for (int t = 0; t < 50; t++)
      SQ_EXPECT_NEAR(r.cos[t * 8 + i], cos((t / 4.0) * invd), 1e-6 + 4e-7 * t, 0);
  }
  sq_fwd_rope_free(&r);
  cfg.high_freq_factor = 0.5; /* must exceed low_freq_factor */
  SQ_EXPECT_EQ_INT(sq_fwd_rope_inv_freq(&cfg, inv), SQ_ERR_ARG);
  sq_error_clear();
}

static void check_attention(int64_t B, int64_t T, int64_t H, int64_t KV, int64_t hd) {
  uint64_t s = (uint64_t)(B * 1000 + T * 100 + H * 10 + KV);
  size_t nq = (size_t)(B * T * H * hd), nk = (size_t)(B * T * KV * hd);
  float *q = nv_alloc_rand(nq, &s, 2.0f), *k = nv_alloc_rand(nk, &s, 2.0f);
  float *v = nv_alloc_rand(nk, &s, 1.0f);
  float *out = malloc(nq * sizeof(float)), *ws = malloc(sq_fwd_attention_workspace_floats(T) * 4);
  double *qd = nv_to_double(q, nq), *kd = nv_to_double(k, nk), *vd = nv_to_double(v, nk);
  double *od = malloc(nq * sizeof(double));
  SQ_EXPECT_EQ_INT(sq_fwd_attention(q, k, v, B, T, H, KV, hd, ws, out), SQ_OK);
  nv_attention(qd, kd, vd, B, T, H, KV, hd, od);
  int bad = 0;
  for (size_t i = 0; i < nq; i++)
    if (!(fabs(out[i] - od[i]) <= 2e-6 + 1e-5 * fabs(od[i])) && bad++ < 5)
      SQ_EXPECT_NEAR(out[i], od[i], 2e-6, 1e-5);
  SQ_EXPECT_MSG(bad == 0, "attention B%lld T%lld H%lld KV%lld: %d mismatches", (long long)B,
                (long long)T, (long long)H, (long long)KV, bad);

  /* causal: changing q/k/v of position t+1 (and later) leaves positions <= t as
   * they were, and does change position t+1. Sequence 0 only. */
  int64_t t = T / 2;
  float *out2 = malloc(nq * sizeof(float));
  for (int64_t r = t + 1; r < T; r++) {
    for (int64_t e = 0; e < H * hd; e++) q[r * H * hd + e] += 0.5f;
    for (int64_t e = 0; e < KV * hd; e++) k[r * KV * hd + e] -= 0.7f, v[r * KV * hd + e] *= -2.0f;
  }
  SQ_EXPECT_EQ_INT(sq_fwd_attention(q, k, v, B, T, H, KV, hd, ws, out2), SQ_OK);
  double before = 0, after = 0;
  for (int64_t r = 0; r < T; r++)
    for (int64_t e = 0; e < H * hd; e++) {
      double d = fabs(out2[r * H * hd + e] - out[r * H * hd + e]);
      if (r <= t)
        before = fmax(before, d);
      else
        after = fmax(after, d);
    }
  SQ_EXPECT_MSG(before <= 1e-6, "causal: outputs at <= t changed by %g", before);
  if (t + 1 < T) SQ_EXPECT_MSG(after > 1e-3, "causal: outputs after t did not change (%g)", after);
  free(q), free(k), free(v), free(out), free(out2), free(ws), free(qd), free(kd), free(vd),
      free(od);
}

static void test_attention(void) {
  check_attention(2, 37, 6, 6, 16); /* MHA */
  check_attention(2, 37, 6, 2, 16); /* GQA, 3 heads per kv head */
  check_attention(1, 20, 4, 1, 8);  /* MQA */
  check_attention(1, 1, 2, 1, 4);   /* one token */
  check_attention(2, 600, 2, 1, 8); /* several query blocks of 256 */
  float x = 0;
  SQ_EXPECT_EQ_INT(sq_fwd_attention(&x, &x, &x, 1, 1, 6, 4, 4, &x, &x), SQ_ERR_ARG);
  sq_error_clear();
}

/* NLL against a log-sum-exp in double written directly, with logits offset by
 * +-1000 so that a naive exp would overflow. */
static void test_nll(void) {
  uint64_t s = 99;
  const int64_t rows = 9, V = 301;
  float *lg = nv_alloc_rand((size_t)(rows * V), &s, 8.0f);
  for (int64_t r = 0; r < rows; r++)
    for (int64_t i = 0; i < V; i++) lg[r * V + i] += (r % 2 ? 1000.0f : -1000.0f);
  int32_t tg[9];
  for (int r = 0; r < 9; r++) tg[r] = (int32_t)((r * 37 + 5) % V);
  double ref = 0;
  for (int64_t r = 0; r < rows; r++) {
    double m = -INFINITY, sum = 0;
    for (int64_t i = 0; i < V; i++) m = fmax(m, lg[r * V + i]);
    for (int64_t i = 0; i < V; i++) sum += exp(lg[r * V + i] - m);
    ref += -(lg[r * V + tg[r]] - m - log(sum));
  }
  double nll = 0;
  SQ_EXPECT_EQ_INT(sq_fwd_nll(lg, rows, V, tg, &nll), SQ_OK);
  SQ_EXPECT_NEAR(nll, ref, 1e-9, 1e-12);
  /* uniform logits: -log p = log V exactly */
  for (int64_t i = 0; i < V; i++) lg[i] = 3.25f;
  SQ_EXPECT_EQ_INT(sq_fwd_nll(lg, 1, V, tg, &nll), SQ_OK);
  SQ_EXPECT_NEAR(nll, log((double)V), 1e-12, 1e-12);
  tg[2] = (int32_t)V;
  sq_error_clear();
  SQ_EXPECT_EQ_INT(sq_fwd_nll(lg, rows, V, tg, &nll), SQ_ERR_ARG);
  SQ_EXPECT_MSG(strstr(sq_error_message(), "target id 301 at row 2"), "message: %s",
                sq_error_message());
  sq_error_clear();
  free(lg);
}

/* final norm + lm_head against the naive norm and linear */
static void test_logits(void) {
  uint64_t s = 17;
  const int64_t rows = 4, hid = 24, V = 50;
  float *x = nv_alloc_rand((size_t)(rows * hid), &s, 2.0f),
        *nw = nv_alloc_rand((size_t)hid, &s, 1.0f);
  float *lm = nv_alloc_rand((size_t)(V * hid), &s, 0.3f);
  float *xn = malloc((size_t)(rows * hid) * 4), *lg = malloc((size_t)(rows * V) * 4);
  double *xd = nv_to_double(x, (size_t)(rows * hid)), *xnd = malloc((size_t)(rows * hid) * 8);
  double *ref = malloc((size_t)(rows * V) * 8);
  sq_fwd_logits(x, rows, hid, nw, 1e-6f, lm, V, xn, lg);
  nv_rmsnorm(xd, nw, rows, hid, (double)1e-6f, xnd);
  nv_linear(xnd, rows, hid, lm, V, NULL, ref);
  for (int64_t i = 0; i < rows * V; i++) SQ_EXPECT_NEAR(lg[i], ref[i], 1e-5, 1e-5);
  free(x), free(nw), free(lm), free(xn), free(lg), free(xd), free(xnd), free(ref);
}

int main(void) {
  test_logits();
  test_embed();
  test_rmsnorm();
  test_linear_silu_softmax();
  test_rope_default();
  test_rope_llama3_linear();
  test_attention();
  test_nll();
  return sq_test_result("test_forward_ops");
}
