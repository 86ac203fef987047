/* Unit tests of sq_fwd_layer (a whole Llama decoder layer) against a naive
 * double-precision composition of the naive ops (naive.h), with GQA, q/k/v
 * biases and llama3 RoPE; the calibration hooks must see exactly the tensors
 * the naive path computes; the layer is causal; in-place and hook errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/forward.h"
#include "naive.h"
#include "test_util.h"

enum { HID = 48, H = 6, KV = 2, HD = 8, INTER = 80, B = 2, T = 19 };
#define ROWS (B * T)

typedef struct model {
  float *an, *q, *k, *v, *o, *qb, *kb, *vb, *mn, *g, *u, *d;
} model;

static model make_model(uint64_t *s) {
  model m;
  m.an = nv_alloc_rand(HID, s, 1.0f);
  m.mn = nv_alloc_rand(HID, s, 1.0f);
  for (int i = 0; i < HID; i++) m.an[i] += 1.0f, m.mn[i] += 1.0f;
  float a = 1.0f / sqrtf((float)HID);
  m.q = nv_alloc_rand(H * HD * HID, s, a);
  m.k = nv_alloc_rand(KV * HD * HID, s, a);
  m.v = nv_alloc_rand(KV * HD * HID, s, a);
  m.o = nv_alloc_rand(HID * H * HD, s, a);
  m.qb = nv_alloc_rand(H * HD, s, 0.2f);
  m.kb = nv_alloc_rand(KV * HD, s, 0.2f);
  m.vb = nv_alloc_rand(KV * HD, s, 0.2f);
  m.g = nv_alloc_rand(INTER * HID, s, a);
  m.u = nv_alloc_rand(INTER * HID, s, a);
  m.d = nv_alloc_rand(HID * INTER, s, 1.0f / sqrtf((float)INTER));
  return m;
}

static void free_model(model *m) {
  float *p[] = {m->an, m->q, m->k, m->v, m->o, m->qb, m->kb, m->vb, m->mn, m->g, m->u, m->d};
  for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) free(p[i]);
}

/* The naive path's intermediates, to compare with what the hooks see. */
typedef struct naive_out {
  double xn[ROWS * HID], k[ROWS * KV * HD], v[ROWS * KV * HD], att[ROWS * H * HD];
  double hn[ROWS * HID], act[ROWS * INTER], y[ROWS * HID];
} naive_out;

static void naive_layer(const model *m, const float *x, const double *inv, double eps,
                        naive_out *n) {
  static double q[ROWS * H * HD], h[ROWS * HID], tmp[ROWS * HID], g[ROWS * INTER], u[ROWS * INTER];
  double *xd = nv_to_double(x, ROWS * HID);
  nv_rmsnorm(xd, m->an, ROWS, HID, eps, n->xn);
  nv_linear(n->xn, ROWS, HID, m->q, H * HD, m->qb, q);
  nv_linear(n->xn, ROWS, HID, m->k, KV * HD, m->kb, n->k);
  nv_linear(n->xn, ROWS, HID, m->v, KV * HD, m->vb, n->v);
  nv_rope(q, ROWS, T, H, HD, inv);
  nv_rope(n->k, ROWS, T, KV, HD, inv);
  nv_attention(q, n->k, n->v, B, T, H, KV, HD, n->att);
  /* o_proj: the naive linear takes doubles */
  for (int r = 0; r < ROWS; r++)
    for (int o = 0; o < HID; o++) {
      double acc = 0;
      for (int i = 0; i < H * HD; i++) acc += n->att[r * H * HD + i] * m->o[o * H * HD + i];
      tmp[r * HID + o] = acc;
    }
  for (int i = 0; i < ROWS * HID; i++) h[i] = xd[i] + tmp[i];
  nv_rmsnorm(h, m->mn, ROWS, HID, eps, n->hn);
  nv_linear(n->hn, ROWS, HID, m->g, INTER, NULL, g);
  nv_linear(n->hn, ROWS, HID, m->u, INTER, NULL, u);
  for (int i = 0; i < ROWS * INTER; i++) n->act[i] = nv_silu(g[i]) * u[i];
  nv_linear(n->act, ROWS, INTER, m->d, HID, NULL, tmp);
  for (int i = 0; i < ROWS * HID; i++) n->y[i] = h[i] + tmp[i];
  free(xd);
}

/* Hook recorder: copies of what each hook saw. */
typedef struct rec {
  float *buf[6];
  int64_t rows[6], cols[6];
  int calls[6];
  int fail_at; /* hook index that returns an error, -1 none */
} rec;

static sq_status record(rec *r, int i, const float *X, int64_t rows, int64_t cols) {
  r->calls[i]++;
  r->rows[i] = rows, r->cols[i] = cols;
  free(r->buf[i]);
  r->buf[i] = malloc((size_t)(rows * cols) * sizeof(float));
  memcpy(r->buf[i], X, (size_t)(rows * cols) * sizeof(float));
  if (r->fail_at == i) return sq_error_set(SQ_ERR_NOMEM, "hook %d: out of memory (test)", i);
  return SQ_OK;
}
static sq_status h0(void *u, const float *X, int64_t r, int64_t c) {
  return record(u, 0, X, r, c);
}
static sq_status h1(void *u, const float *X, int64_t r, int64_t c) {
  return record(u, 1, X, r, c);
}
static sq_status h2(void *u, const float *X, int64_t r, int64_t c) {
  return record(u, 2, X, r, c);
}
static sq_status h3(void *u, const float *X, int64_t r, int64_t c) {
  return record(u, 3, X, r, c);
}
static sq_status h4(void *u, const float *X, int64_t r, int64_t c) {
  return record(u, 4, X, r, c);
}
static sq_status h5(void *u, const float *X, int64_t r, int64_t c) {
  return record(u, 5, X, r, c);
}

static void expect_close(const char *what, const float *got, const double *ref, size_t n,
                         double atol, double rtol) {
  size_t bad = 0;
  double worst = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs(got[i] - ref[i]);
    if (!(d <= atol + rtol * fabs(ref[i]))) bad++;
    if (d > worst) worst = d;
  }
  SQ_EXPECT_MSG(bad == 0, "%s: %zu of %zu elements off, worst |diff| %g", what, bad, n, worst);
}

int main(void) {
  uint64_t s = 2024;
  model m = make_model(&s);
  float *x = nv_alloc_rand(ROWS * HID, &s, 1.5f);
  const float eps = 1e-5f;

  sq_rope_cfg rc = {.type = SQ_FWD_ROPE_LLAMA3,
                    .head_dim = HD,
                    .theta = 500000.0,
                    .factor = 8.0,
                    .low_freq_factor = 1.0,
                    .high_freq_factor = 4.0,
                    .original_max_position = 8192};
  sq_rope rope = {0};
  SQ_EXPECT_EQ_INT(sq_fwd_rope_init(&rope, &rc, 32), SQ_OK);
  /* The naive layer uses the llama3 frequencies written independently in double. */
  double inv[HD / 2];
  for (int i = 0; i < HD / 2; i++) {
    double f = pow(500000.0, -(2.0 * i) / HD), wl = 2 * M_PI / f;
    if (wl < 8192.0 / 4.0)
      inv[i] = f;
    else if (wl > 8192.0)
      inv[i] = f / 8.0;
    else {
      double sm = (8192.0 / wl - 1.0) / 3.0;
      inv[i] = (1 - sm) * f / 8.0 + sm * f;
    }
  }

  sq_fwd_layer_cfg cfg = {.hidden = HID,
                          .n_heads = H,
                          .n_kv_heads = KV,
                          .head_dim = HD,
                          .intermediate = INTER,
                          .eps = eps,
                          .rope = &rope};
  sq_fwd_layer_weights w = {.attn_norm = m.an,
                            .q = m.q,
                            .k = m.k,
                            .v = m.v,
                            .o = m.o,
                            .q_bias = m.qb,
                            .k_bias = m.kb,
                            .v_bias = m.vb,
                            .mlp_norm = m.mn,
                            .gate = m.g,
                            .up = m.u,
                            .down = m.d};
  size_t wsb = sq_fwd_layer_workspace_bytes(&cfg, B, T);
  SQ_EXPECT(wsb > 0);
  void *ws = malloc(wsb); /* exactly the advertised size: ASan catches overruns */
  float *y = malloc(ROWS * HID * sizeof(float));
  rec r = {.fail_at = -1};
  sq_fwd_hooks hooks = {h0, h1, h2, h3, h4, h5, &r};

  SQ_EXPECT_EQ_INT(sq_fwd_layer(&cfg, &w, x, B, T, &hooks, ws, y), SQ_OK);
  naive_out *n = malloc(sizeof *n);
  naive_layer(&m, x, inv, (double)eps, n);
  expect_close("layer output", y, n->y, ROWS * HID, 2e-5, 2e-5);

  /* the hooks saw exactly the naive path's tensors, with their shapes */
  const int64_t exp_cols[6] = {HID, H * HD, HID, INTER, KV * HD, KV * HD};
  const double *refs[6] = {n->xn, n->att, n->hn, n->act, n->k, n->v};
  const char *names[6] = {"qkv_in", "o_in", "gate_up_in", "down_in", "k_cache", "v_cache"};
  for (int i = 0; i < 6; i++) {
    SQ_EXPECT_MSG(r.calls[i] == 1, "%s hook called %d times", names[i], r.calls[i]);
    if (r.calls[i] != 1) continue;
    SQ_EXPECT_EQ_INT(r.rows[i], ROWS);
    SQ_EXPECT_EQ_INT(r.cols[i], exp_cols[i]);
    if (r.cols[i] == exp_cols[i])
      expect_close(names[i], r.buf[i], refs[i], (size_t)(ROWS * exp_cols[i]), 2e-5, 2e-5);
  }

  /* in place (y == x) gives the same bits; no hooks */
  float *xi = malloc(ROWS * HID * sizeof(float));
  memcpy(xi, x, ROWS * HID * sizeof(float));
  SQ_EXPECT_EQ_INT(sq_fwd_layer(&cfg, &w, xi, B, T, NULL, ws, xi), SQ_OK);
  SQ_EXPECT(memcmp(xi, y, ROWS * HID * sizeof(float)) == 0);

  /* causal: changing token t+1 of sequence 1 leaves rows <= t (and sequence 0) alone */
  const int t = 9;
  memcpy(xi, x, ROWS * HID * sizeof(float));
  for (int e = 0; e < HID; e++) xi[(T + t + 1) * HID + e] = -xi[(T + t + 1) * HID + e] + 0.3f;
  float *y2 = malloc(ROWS * HID * sizeof(float));
  SQ_EXPECT_EQ_INT(sq_fwd_layer(&cfg, &w, xi, B, T, NULL, ws, y2), SQ_OK);
  double before = 0, after = 0;
  for (int row = 0; row < ROWS; row++)
    for (int e = 0; e < HID; e++) {
      double d = fabs(y2[row * HID + e] - y[row * HID + e]);
      if (row < T + t + 1)
        before = fmax(before, d);
      else
        after = fmax(after, d);
    }
  SQ_EXPECT_MSG(before <= 1e-6, "causal: rows before the change moved by %g", before);
  SQ_EXPECT_MSG(after > 1e-3, "causal: rows from the change on did not move (%g)", after);

  /* a failing hook stops the layer and its status comes back */
  r.fail_at = 3;
  sq_error_clear();
  SQ_EXPECT_EQ_INT(sq_fwd_layer(&cfg, &w, x, B, T, &hooks, ws, y2), SQ_ERR_NOMEM);
  SQ_EXPECT_MSG(strstr(sq_error_message(), "hook 3"), "message: %s", sq_error_message());
  sq_error_clear();

  /* rope tables too short for T */
  cfg.rope = &rope;
  SQ_EXPECT_EQ_INT(sq_fwd_layer(&cfg, &w, x, B, 40, NULL, ws, y2), SQ_ERR_ARG);
  sq_error_clear();

  for (int i = 0; i < 6; i++) free(r.buf[i]);
  free(x), free(xi), free(y), free(y2), free(ws), free(n);
  free_model(&m);
  sq_fwd_rope_free(&rope);
  return sq_test_result("test_forward_layer");
}
