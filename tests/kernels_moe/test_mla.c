/* DeepSeek-V3 MLA (kernels/mla.h) against a naive per-head double-precision
 * transcription of HF's DeepseekV3Attention: explicit q/kv projections and
 * RMSNorms, the interleave permutation written as HF's view(d/2, 2) ->
 * transpose(-1, -2) index map, rotate_half with cat(freqs, freqs) tables,
 * YaRN inverse frequencies from the formula in double, the mscale² softmax
 * scale, causal softmax and o_proj. Tiny config (hidden 64, heads 4, q_lora 32,
 * kv_lora 16, nope 8, rope 4, v 8), 2 sequences of 7. Also the hooks' tensors,
 * the q_proj path, default RoPE, and that dropping the interleave is detected. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/mla.h"
#include "moe_naive.h"
#include "test_util.h"

enum { HID = 64, NH = 4, QL = 32, KVL = 16, NOPE = 8, ROPE = 4, VH = 8, B = 2, T = 7 };
enum { QKH = NOPE + ROPE, ROWS = B * T };

/* YaRN inv_freq and attention factor in double, from the YaRN formulas. */
static void naive_yarn(const sq_mla_rope_cfg *c, double *inv, double *af) {
  const int dim = c->dim;
  if (!c->yarn) {
    for (int i = 0; i < dim / 2; i++) inv[i] = pow(c->theta, -(2.0 * i) / dim);
    *af = 1.0;
    return;
  }
  double bf = c->beta_fast ? c->beta_fast : 32, bs = c->beta_slow ? c->beta_slow : 1;
  /* dimension index whose wavelength makes n full turns over the original context */
  double lo = dim * log(c->original_max_position / (bf * 2 * M_PI)) / (2 * log(c->theta));
  double hi = dim * log(c->original_max_position / (bs * 2 * M_PI)) / (2 * log(c->theta));
  if (!c->no_truncate) {
    lo = floor(lo);
    hi = ceil(hi);
  }
  lo = fmax(lo, 0);
  hi = fmin(hi, dim - 1);
  if (lo == hi) hi += 0.001;
  for (int i = 0; i < dim / 2; i++) {
    double theta_i = pow(c->theta, -(2.0 * i) / dim);
    double ramp = fmin(fmax((i - lo) / (hi - lo), 0.0), 1.0);
    /* ramp 0: keep (extrapolate), ramp 1: divide by factor (interpolate) */
    inv[i] = theta_i * (1 - ramp) + theta_i / c->factor * ramp;
  }
  double m = c->mscale ? 0.1 * c->mscale * log(c->factor) + 1 : 0.1 * log(c->factor) + 1;
  double mall = 0.1 * c->mscale_all_dim * log(c->factor) + 1;
  *af = (c->mscale && c->mscale_all_dim) ? m / mall : 0.1 * log(c->factor) + 1;
  if (c->attention_factor > 0) *af = c->attention_factor;
}

static void test_yarn_inv_freq(void) {
  sq_mla_rope_cfg cfgs[4] = {
      /* DeepSeek-V3's rope_scaling with its 64-dim rope part */
      {.dim = 64,
       .theta = 10000,
       .yarn = 1,
       .factor = 40,
       .original_max_position = 4096,
       .beta_fast = 32,
       .beta_slow = 1,
       .mscale = 1,
       .mscale_all_dim = 1},
      {.dim = 4,
       .theta = 10000,
       .yarn = 1,
       .factor = 40,
       .original_max_position = 4096,
       .mscale = 0.8,
       .mscale_all_dim = 1},
      {.dim = 32,
       .theta = 50000,
       .yarn = 1,
       .factor = 8,
       .original_max_position = 2048,
       .beta_fast = 16,
       .beta_slow = 2,
       .no_truncate = 1},
      {.dim = 16, .theta = 10000, .yarn = 0},
  };
  for (int c = 0; c < 4; c++) {
    float inv[32], af;
    double ref[32], raf;
    SQ_EXPECT(sq_mla_rope_inv_freq(&cfgs[c], inv, &af) == SQ_OK);
    naive_yarn(&cfgs[c], ref, &raf);
    for (int i = 0; i < cfgs[c].dim / 2; i++) SQ_EXPECT_NEAR(inv[i], ref[i], 0, 3e-6);
    SQ_EXPECT_NEAR(af, raf, 0, 1e-6);
  }
  /* DeepSeek-V3: scale = 192^-0.5 * (0.1 ln 40 + 1)^2 */
  double want = 1.0 / sqrt(192.0) * pow(0.1 * log(40.0) + 1.0, 2.0);
  SQ_EXPECT_NEAR(sq_mla_softmax_scale(&cfgs[0], 192), want, 0, 1e-12);
  SQ_EXPECT_NEAR(sq_mla_softmax_scale(&cfgs[3], 192), 1.0 / sqrt(192.0), 0, 1e-12);
  sq_error_clear();
  sq_mla_rope_cfg bad = {.dim = 5, .theta = 10000};
  float junk[4];
  SQ_EXPECT(sq_mla_rope_inv_freq(&bad, junk, NULL) == SQ_ERR_ARG);
  sq_error_clear();
  bad = cfgs[0];
  bad.original_max_position = 0;
  SQ_EXPECT(sq_mla_rope_inv_freq(&bad, junk, NULL) == SQ_ERR_ARG);
  SQ_EXPECT(strstr(sq_error_message(), "original_max_position_embeddings") != NULL);
  sq_error_clear();
}

typedef struct mla_w {
  float *q_proj, *q_a, *q_a_b, *q_a_n, *q_b, *kv_a, *kv_a_b, *kv_a_n, *kv_b, *o, *o_b;
} mla_w;

/* Naive rope of one vector (ROPE) at angle table cosv/sinv (ROPE, cat(freqs, freqs)). */
static void naive_rope(const double *in, int interleave, const double *cosv, const double *sinv,
                       double *out) {
  const int half = ROPE / 2;
  double p[ROPE], rh[ROPE];
  for (int j = 0; j < half; j++)
    for (int c = 0; c < 2; c++) /* view (half, 2) -> transpose -> (2, half) */
      p[c * half + j] = interleave ? in[j * 2 + c] : in[c * half + j];
  for (int i = 0; i < ROPE; i++) rh[i] = i < half ? -p[i + half] : p[i - half]; /* rotate_half */
  for (int i = 0; i < ROPE; i++) out[i] = p[i] * cosv[i] + rh[i] * sinv[i];
}

/* Naive DeepseekV3Attention; fills the hooks' expected tensors too. */
static void naive_mla(const sq_mla_rope_cfg *rc, int q_lora, int interleave, const mla_w *w,
                      const float *xf, double *qan, double *ckv, double *att, double *y) {
  double *x = malloc(ROWS * HID * sizeof(double)), *q = malloc(ROWS * NH * QKH * sizeof(double));
  double *qa = malloc(ROWS * QL * sizeof(double)),
         *kva = malloc(ROWS * (KVL + ROPE) * sizeof(double));
  double *kv = malloc(ROWS * NH * (NOPE + VH) * sizeof(double));
  double *qrot = malloc(ROWS * NH * ROPE * sizeof(double)),
         *krot = malloc(ROWS * ROPE * sizeof(double));
  for (int i = 0; i < ROWS * HID; i++) x[i] = xf[i];
  if (q_lora) {
    mn_linear(x, ROWS, HID, w->q_a, QL, w->q_a_b, qa);
    for (int r = 0; r < ROWS; r++) mn_rmsnorm_row(qa + r * QL, w->q_a_n, QL, 1e-6, qan + r * QL);
    mn_linear(qan, ROWS, QL, w->q_b, NH * QKH, NULL, q);
  } else {
    mn_linear(x, ROWS, HID, w->q_proj, NH * QKH, NULL, q);
  }
  mn_linear(x, ROWS, HID, w->kv_a, KVL + ROPE, w->kv_a_b, kva);
  for (int r = 0; r < ROWS; r++)
    mn_rmsnorm_row(kva + r * (KVL + ROPE), w->kv_a_n, KVL, 1e-6, ckv + r * KVL);
  mn_linear(ckv, ROWS, KVL, w->kv_b, NH * (NOPE + VH), NULL, kv);
  double inv[ROPE / 2], af;
  naive_yarn(rc, inv, &af);
  for (int r = 0; r < ROWS; r++) {
    int t = r % T;
    double cosv[ROPE], sinv[ROPE];
    for (int i = 0; i < ROPE; i++) { /* emb = cat(freqs, freqs) */
      cosv[i] = cos(t * inv[i % (ROPE / 2)]) * af;
      sinv[i] = sin(t * inv[i % (ROPE / 2)]) * af;
    }
    for (int h = 0; h < NH; h++)
      naive_rope(q + (r * NH + h) * QKH + NOPE, interleave, cosv, sinv, qrot + (r * NH + h) * ROPE);
    naive_rope(kva + r * (KVL + ROPE) + KVL, interleave, cosv, sinv, krot + r * ROPE);
  }
  double scaling = 1.0 / sqrt((double)QKH);
  if (rc->yarn && rc->mscale_all_dim && rc->factor > 1) {
    double m = 0.1 * rc->mscale_all_dim * log(rc->factor) + 1.0;
    scaling *= m * m;
  }
  for (int b = 0; b < B; b++)
    for (int h = 0; h < NH; h++)
      for (int i = 0; i < T; i++) {
        int ri = b * T + i;
        double sc[T], mx = -INFINITY, z = 0;
        for (int j = 0; j <= i; j++) {
          int rj = b * T + j;
          double acc = 0;
          for (int d = 0; d < NOPE; d++) /* query = cat(q_nope, q_rot), key = cat(k_nope, k_rot) */
            acc += q[(ri * NH + h) * QKH + d] * kv[(rj * NH + h) * (NOPE + VH) + d];
          for (int d = 0; d < ROPE; d++)
            acc += qrot[(ri * NH + h) * ROPE + d] * krot[rj * ROPE + d];
          sc[j] = acc * scaling;
          mx = fmax(mx, sc[j]);
        }
        for (int j = 0; j <= i; j++) z += (sc[j] = exp(sc[j] - mx));
        for (int d = 0; d < VH; d++) {
          double acc = 0;
          for (int j = 0; j <= i; j++)
            acc += sc[j] / z * kv[((b * T + j) * NH + h) * (NOPE + VH) + NOPE + d];
          att[ri * NH * VH + h * VH + d] = acc;
        }
      }
  mn_linear(att, ROWS, NH * VH, w->o, HID, w->o_b, y);
  free(x);
  free(q);
  free(qa);
  free(kva);
  free(kv);
  free(qrot);
  free(krot);
}

typedef struct seen {
  float *x, *qb, *kvb, *o;
  int64_t rows[4], cols[4];
} seen;

static sq_status keep(float **dst, int64_t *rows, int64_t *cols, const float *X, int64_t r,
                      int64_t c) {
  free(*dst);
  *dst = malloc((size_t)(r * c) * sizeof(float));
  memcpy(*dst, X, (size_t)(r * c) * sizeof(float));
  *rows = r;
  *cols = c;
  return SQ_OK;
}
static sq_status h_x(void *u, const float *X, int64_t r, int64_t c) {
  seen *s = u;
  return keep(&s->x, &s->rows[0], &s->cols[0], X, r, c);
}
static sq_status h_qb(void *u, const float *X, int64_t r, int64_t c) {
  seen *s = u;
  return keep(&s->qb, &s->rows[1], &s->cols[1], X, r, c);
}
static sq_status h_kvb(void *u, const float *X, int64_t r, int64_t c) {
  seen *s = u;
  return keep(&s->kvb, &s->rows[2], &s->cols[2], X, r, c);
}
static sq_status h_o(void *u, const float *X, int64_t r, int64_t c) {
  seen *s = u;
  return keep(&s->o, &s->rows[3], &s->cols[3], X, r, c);
}

static double max_diff(const float *a, const double *b, int n) {
  double m = 0;
  for (int i = 0; i < n; i++) m = fmax(m, fabs(a[i] - b[i]));
  return m;
}

/* Run the kernel (with kernel_interleave) and compare with the naive (interleave). */
static void run_case(const char *what, const sq_mla_rope_cfg *rc, int q_lora, int interleave,
                     int kernel_interleave, int biases, const mla_w *w, const float *x) {
  sq_mla_rope rope = {0};
  SQ_EXPECT(sq_mla_rope_init(&rope, rc, T) == SQ_OK);
  sq_mla_cfg c = {.hidden = HID,
                  .n_heads = NH,
                  .q_lora_rank = q_lora ? QL : 0,
                  .kv_lora_rank = KVL,
                  .qk_nope = NOPE,
                  .qk_rope = ROPE,
                  .v_head = VH,
                  .eps = 1e-6f,
                  .rope_interleave = kernel_interleave,
                  .scale = (float)sq_mla_softmax_scale(rc, QKH),
                  .rope = &rope};
  sq_mla_weights mw = {.q_proj = w->q_proj,
                       .q_a_proj = w->q_a,
                       .q_a_norm = w->q_a_n,
                       .q_b_proj = w->q_b,
                       .kv_a_proj = w->kv_a,
                       .kv_a_norm = w->kv_a_n,
                       .kv_b_proj = w->kv_b,
                       .o_proj = w->o};
  mla_w nw = *w;
  if (biases) {
    mw.q_a_bias = w->q_a_b;
    mw.kv_a_bias = w->kv_a_b;
    mw.o_bias = w->o_b;
  } else {
    nw.q_a_b = nw.kv_a_b = nw.o_b = NULL;
  }
  seen s = {0};
  sq_mla_hooks hk = {h_x, h_qb, h_kvb, h_o, &s};
  void *ws = aligned_alloc(16, (sq_mla_workspace_bytes(&c, B, T) + 15) & ~(size_t)15);
  float *y = malloc(ROWS * HID * sizeof(float));
  sq_status st = sq_mla_forward(&c, &mw, x, B, T, &hk, ws, y);
  SQ_EXPECT_MSG(st == SQ_OK, "%s: %s", what, sq_error_message());
  double *qan = calloc(ROWS * QL, sizeof(double)), *ckv = malloc(ROWS * KVL * sizeof(double));
  double *att = malloc(ROWS * NH * VH * sizeof(double)), *yn = malloc(ROWS * HID * sizeof(double));
  naive_mla(rc, q_lora, interleave, &nw, x, qan, ckv, att, yn);
  double err = max_diff(y, yn, ROWS * HID);
  if (interleave == kernel_interleave) {
    for (int i = 0; i < ROWS * HID; i++) SQ_EXPECT_NEAR(y[i], yn[i], 2e-5, 1e-4);
    SQ_EXPECT(s.rows[0] == ROWS && s.cols[0] == HID &&
              memcmp(s.x, x, sizeof(float) * ROWS * HID) == 0);
    if (q_lora) {
      SQ_EXPECT(s.rows[1] == ROWS && s.cols[1] == QL);
      for (int i = 0; i < ROWS * QL; i++) SQ_EXPECT_NEAR(s.qb[i], qan[i], 1e-5, 1e-5);
    } else {
      SQ_EXPECT(s.qb == NULL);
    }
    SQ_EXPECT(s.rows[2] == ROWS && s.cols[2] == KVL);
    for (int i = 0; i < ROWS * KVL; i++) SQ_EXPECT_NEAR(s.kvb[i], ckv[i], 1e-5, 1e-5);
    SQ_EXPECT(s.rows[3] == ROWS && s.cols[3] == NH * VH);
    for (int i = 0; i < ROWS * NH * VH; i++) SQ_EXPECT_NEAR(s.o[i], att[i], 1e-5, 1e-4);
    printf("%-34s max|y - naive| = %.3g (af %.4f, scale %.5f)\n", what, err, rope.attention_factor,
           c.scale);
  } else {
    /* The naive reference must notice a wrong rope layout. */
    SQ_EXPECT_MSG(err > 1e-3, "%s: interleave mismatch not detected (max diff %.3g)", what, err);
    printf("%-34s max|y - naive| = %.3g (expected large)\n", what, err);
  }
  free(s.x);
  free(s.qb);
  free(s.kvb);
  free(s.o);
  free(qan);
  free(ckv);
  free(att);
  free(yn);
  free(y);
  free(ws);
  sq_mla_rope_free(&rope);
}

int main(void) {
  test_yarn_inv_freq();
  uint64_t s = 0x31a;
  mla_w w;
  w.q_proj = mn_alloc_rand((size_t)NH * QKH * HID, &s, 0.15);
  w.q_a = mn_alloc_rand((size_t)QL * HID, &s, 0.2);
  w.q_a_b = mn_alloc_rand(QL, &s, 0.1);
  w.q_a_n = mn_alloc_rand(QL, &s, 0.3);
  w.q_b = mn_alloc_rand((size_t)NH * QKH * QL, &s, 0.3);
  w.kv_a = mn_alloc_rand((size_t)(KVL + ROPE) * HID, &s, 0.2);
  w.kv_a_b = mn_alloc_rand(KVL + ROPE, &s, 0.1);
  w.kv_a_n = mn_alloc_rand(KVL, &s, 0.3);
  w.kv_b = mn_alloc_rand((size_t)NH * (NOPE + VH) * KVL, &s, 0.3);
  w.o = mn_alloc_rand((size_t)HID * NH * VH, &s, 0.2);
  w.o_b = mn_alloc_rand(HID, &s, 0.1);
  for (int i = 0; i < QL; i++) w.q_a_n[i] += 1.0f;
  for (int i = 0; i < KVL; i++) w.kv_a_n[i] += 1.0f;
  float *x = mn_alloc_rand((size_t)ROWS * HID, &s, 1.0);

  /* rope dim 4, factor 40, original 4096: ramp (0, 0.5) over the 2 frequencies */
  sq_mla_rope_cfg ds = {.dim = ROPE,
                        .theta = 10000,
                        .yarn = 1,
                        .factor = 40,
                        .original_max_position = 4096,
                        .beta_fast = 32,
                        .beta_slow = 1,
                        .mscale = 1,
                        .mscale_all_dim = 1};
  sq_mla_rope_cfg ds_af = ds;
  ds_af.mscale = 0.8; /* attention_factor != 1: cos/sin scaled */
  sq_mla_rope_cfg plain = {.dim = ROPE, .theta = 10000};
  run_case("q_lora, yarn, interleave, bias", &ds, 1, 1, 1, 1, &w, x);
  run_case("q_proj, yarn mscale 0.8, rotate", &ds_af, 0, 0, 0, 0, &w, x);
  run_case("q_lora, default rope, interleave", &plain, 1, 1, 1, 0, &w, x);
  run_case("kernel without interleave", &ds, 1, 1, 0, 1, &w, x);

  float **all[] = {&w.q_proj, &w.q_a,    &w.q_a_b, &w.q_a_n, &w.q_b, &w.kv_a,
                   &w.kv_a_b, &w.kv_a_n, &w.kv_b,  &w.o,     &w.o_b};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) free(*all[i]);
  free(x);
  return sq_test_result("test_mla");
}
