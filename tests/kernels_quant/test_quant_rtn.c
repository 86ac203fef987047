/* Integer RTN (sq_quant_rtn, sq_quant_dequant, sq_quant_act_fake_per_token)
 * against a brute-force reference written here from the compressed-tensors
 * formulas, without kernels/quant_math.h:
 *   - per scale cell, min/max widened to 0, scale = absmax / ((2^b - 1) / 2)
 *     (sym) or (max - min) / (2^b - 1) (asym), rounded to the scale dtype,
 *     0 -> dtype eps, zp = round(-2^(b-1) - min / scale) clamped;
 *   - each code is the integer q in [-2^(b-1), 2^(b-1) - 1] that minimises
 *     |x - (q - zp) * scale| (in double); near ties accept either neighbour;
 *   - |x - W_deq| <= scale / 2 plus the dequantized value's dtype rounding.
 * Over bits 2/3/4/8, sym/asym, tensor/channel/group (32, 64, 128, 43, and a
 * partial last group: d_in 172 with group 32), scale dtypes f32/f16/bf16,
 * zero rows, positive-only rows, outliers; NaN/Inf and bad args -> errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/dtype.h"
#include "kernels/quant.h"
#include "test_util.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static double urand(void) { /* xorshift64*, uniform in [0, 1) */
  rng_state ^= rng_state >> 12, rng_state ^= rng_state << 25, rng_state ^= rng_state >> 27;
  return (double)((rng_state * 2685821657736338717ull) >> 11) * (1.0 / 9007199254740992.0);
}
static float nrand(void) { /* roughly normal: sum of 4 uniforms */
  return (float)((urand() + urand() + urand() + urand() - 2.0) * 1.7);
}

static float ref_round(float x, sq_dtype dt) { /* dtype.h conversions are tested in test_dtype */
  if (dt == SQ_DTYPE_BF16) return sq_bf16_to_f32(sq_f32_to_bf16(x));
  if (dt == SQ_DTYPE_F16) return sq_f16_to_f32(sq_f32_to_f16(x));
  return x;
}
static float ref_eps(sq_dtype dt) {
  return dt == SQ_DTYPE_BF16 ? ldexpf(1.0f, -7) : dt == SQ_DTYPE_F16 ? ldexpf(1.0f, -10) : ldexpf(1.0f, -23);
}
static double ref_rel_half_ulp(sq_dtype dt) {
  return dt == SQ_DTYPE_BF16 ? ldexp(1.0, -8) : dt == SQ_DTYPE_F16 ? ldexp(1.0, -11) : ldexp(1.0, -24);
}

static void ref_params(int bits, int sym, sq_dtype dt, float mn, float mx, float *s, int *z) {
  float lo = mn < 0.0f ? mn : 0.0f, hi = mx > 0.0f ? mx : 0.0f;
  float levels = (float)((1 << bits) - 1); /* qmax - qmin */
  int qlo = -(1 << (bits - 1)), qhi = (1 << (bits - 1)) - 1;
  if (sym) {
    float amax = -lo > hi ? -lo : hi;
    *s = amax / (levels / 2.0f);
  } else {
    *s = (hi - lo) / levels;
  }
  *s = ref_round(*s, dt);
  if (*s == 0.0f) *s = ref_eps(dt);
  *z = 0;
  if (!sym) {
    float t = nearbyintf((float)qlo - lo / *s);
    *z = t < (float)qlo ? qlo : t > (float)qhi ? qhi : (int)t;
  }
}

/* Check one element: code q (and deq if given) for x under (s, z). */
static int check_elem(float x, int q, const float *deq, float s, int z, int bits, sq_dtype dt) {
  int qlo = -(1 << (bits - 1)), qhi = (1 << (bits - 1)) - 1;
  double d1 = INFINITY, d2 = INFINITY;
  int b1 = 0, b2 = 0;
  for (int c = qlo; c <= qhi; ++c) {
    double d = fabs((double)x - (double)(c - z) * s);
    if (d < d1) d2 = d1, b2 = b1, d1 = d, b1 = c;
    else if (d < d2) d2 = d, b2 = c;
  }
  int tie = d2 - d1 <= 1e-5 * s;
  int ok = q == b1 || (tie && q == b2);
  if (!ok) {
    sq_test_fail(__FILE__, __LINE__, "x=%.9g s=%.9g zp=%d bits=%d: code %d, nearest %d (d %g vs %g)",
                 (double)x, (double)s, z, bits, q, b1, d1, d2);
    return 0;
  }
  if (deq) {
    float want = ref_round((float)(q - z) * s, dt);
    /* Inside the representable range [(qmin - zp) s, (qmax - zp) s] the error
     * is at most s / 2; outside it (the scale was rounded down in its dtype)
     * x is clamped, by at most s / 2 more. */
    double rlo = (double)(qlo - z) * s, rhi = (double)(qhi - z) * s;
    int inside = (double)x >= rlo && (double)x <= rhi;
    double tol = (inside ? 0.5 : 1.0) * s * (1 + 1e-5) + fabs((double)want) * ref_rel_half_ulp(dt);
    if (memcmp(deq, &want, sizeof want) != 0 || !(fabs((double)x - *deq) <= tol)) {
      sq_test_fail(__FILE__, __LINE__, "x=%.9g deq %.9g want %.9g (tol %g)", (double)x,
                   (double)*deq, (double)want, tol);
      return 0;
    }
  }
  return 1;
}

/* Weight of d_out rows with varied content: row 0 zero, row 1 positive only,
 * row 2 one outlier, row 3 negative only, others random with a row scale. */
static void fill_weight(float *W, int64_t d_out, int64_t d_in) {
  for (int64_t i = 0; i < d_out; ++i) {
    float rs = (float)(0.01 + urand());
    for (int64_t j = 0; j < d_in; ++j) {
      float v = nrand() * rs;
      if (i == 0) v = 0.0f;
      if (i == 1) v = fabsf(v) + 0.5f;
      if (i == 2 && j == d_in / 3) v = 40.0f;
      if (i == 3) v = -fabsf(v) - 0.001f;
      W[i * d_in + j] = v;
    }
  }
}

static void run_case(int bits, int sym, sq_qstrategy strat, int gs, sq_dtype dt, int64_t d_out,
                     int64_t d_in) {
  sq_qargs qa = {bits, SQ_QTYPE_INT, sym, strat, gs, dt};
  int64_t n = d_out * d_in;
  int64_t ng = strat == SQ_QSTRAT_GROUP ? (d_in + gs - 1) / gs : 1;
  int64_t nr = strat == SQ_QSTRAT_TENSOR ? 1 : d_out;
  float *W = malloc(sizeof(float) * n), *D = malloc(sizeof(float) * n);
  float *D2 = malloc(sizeof(float) * n), *S = malloc(sizeof(float) * nr * ng);
  int8_t *Q = malloc((size_t)n);
  int32_t *Z = malloc(sizeof(int32_t) * nr * ng);
  fill_weight(W, d_out, d_in);
  SQ_EXPECT_EQ_INT(sq_quant_num_groups(&qa, d_in), ng);
  SQ_EXPECT_EQ_INT(sq_quant_scale_rows(&qa, d_out), nr);
  sq_status st = sq_quant_rtn(&qa, "layer.w", W, d_out, d_in, Q, S, sym ? NULL : Z, D);
  SQ_EXPECT_MSG(st == SQ_OK, "rtn failed: %s", sq_error_message());
  int bad = 0;
  for (int64_t r = 0; r < nr && !bad; ++r) {
    for (int64_t g = 0; g < ng && !bad; ++g) {
      int64_t r0 = strat == SQ_QSTRAT_TENSOR ? 0 : r, r1 = strat == SQ_QSTRAT_TENSOR ? d_out : r + 1;
      int64_t c0 = g * (strat == SQ_QSTRAT_GROUP ? gs : 0);
      int64_t c1 = strat == SQ_QSTRAT_GROUP ? (c0 + gs < d_in ? c0 + gs : d_in) : d_in;
      float mn = INFINITY, mx = -INFINITY;
      for (int64_t i = r0; i < r1; ++i)
        for (int64_t j = c0; j < c1; ++j) mn = fminf(mn, W[i * d_in + j]), mx = fmaxf(mx, W[i * d_in + j]);
      float s;
      int z;
      ref_params(bits, sym, dt, mn, mx, &s, &z);
      float got_s = S[r * ng + g];
      if (memcmp(&got_s, &s, sizeof s) != 0 || (!sym && Z[r * ng + g] != z)) {
        sq_test_fail(__FILE__, __LINE__,
                     "bits %d sym %d strat %d gs %d dt %s cell (%lld,%lld): scale %.9g zp %d, want %.9g %d",
                     bits, sym, (int)strat, gs, sq_dtype_name(dt), (long long)r, (long long)g,
                     (double)got_s, sym ? 0 : Z[r * ng + g], (double)s, z);
        bad = 1;
        break;
      }
      for (int64_t i = r0; i < r1 && !bad; ++i)
        for (int64_t j = c0; j < c1 && !bad; ++j)
          if (!check_elem(W[i * d_in + j], Q[i * d_in + j], &D[i * d_in + j], s, z, bits, dt)) {
            fprintf(stderr, "  case bits %d sym %d strat %d gs %d dt %s elem (%lld,%lld)\n", bits, sym,
                    (int)strat, gs, sq_dtype_name(dt), (long long)i, (long long)j);
            bad = 1;
          }
    }
  }
  /* Zero row: scale is eps, nothing NaN, dequantizes to 0. */
  if (strat != SQ_QSTRAT_TENSOR) SQ_EXPECT(S[0] == ref_eps(dt));
  for (int64_t j = 0; j < d_in; ++j) SQ_EXPECT(D[j] == 0.0f);
  /* sq_quant_dequant is a second path to the same values. */
  st = sq_quant_dequant(&qa, "layer.w", Q, S, sym ? NULL : Z, d_out, d_in, D2);
  SQ_EXPECT(st == SQ_OK);
  SQ_EXPECT(memcmp(D, D2, sizeof(float) * n) == 0);
  free(W), free(D), free(D2), free(S), free(Q), free(Z);
}

static void test_errors(void) {
  sq_qargs qa = {4, SQ_QTYPE_INT, 1, SQ_QSTRAT_GROUP, 32, SQ_DTYPE_BF16};
  float W[4 * 64];
  int8_t Q[4 * 64];
  float S[4 * 2];
  int32_t Z[4 * 2];
  fill_weight(W, 4, 64);
  W[2 * 64 + 5] = NAN;
  sq_status st = sq_quant_rtn(&qa, "model.layers.7.mlp.up_proj", W, 4, 64, Q, S, NULL, NULL);
  SQ_EXPECT(st == SQ_ERR_NUMERIC);
  SQ_EXPECT_MSG(strstr(sq_error_message(), "model.layers.7.mlp.up_proj") &&
                    strstr(sq_error_message(), "(2, 5)"),
                "message: %s", sq_error_message());
  sq_error_clear();
  W[2 * 64 + 5] = -INFINITY;
  SQ_EXPECT(sq_quant_rtn(&qa, "m", W, 4, 64, Q, S, NULL, NULL) == SQ_ERR_NUMERIC);
  sq_error_clear();
  W[2 * 64 + 5] = 1.0f;
  qa.num_bits = 5;
  SQ_EXPECT(sq_quant_rtn(&qa, "m", W, 4, 64, Q, S, NULL, NULL) == SQ_ERR_UNSUPPORTED);
  sq_error_clear();
  qa.num_bits = 4, qa.group_size = 0;
  SQ_EXPECT(sq_quant_rtn(&qa, "m", W, 4, 64, Q, S, NULL, NULL) == SQ_ERR_ARG);
  sq_error_clear();
  qa.group_size = 32, qa.symmetric = 0;
  SQ_EXPECT(sq_quant_rtn(&qa, "m", W, 4, 64, Q, S, NULL, NULL) == SQ_ERR_ARG);
  sq_error_clear();
  SQ_EXPECT(sq_quant_rtn(&qa, "m", W, 4, 64, Q, S, Z, NULL) == SQ_OK);
  qa.strategy = SQ_QSTRAT_BLOCK;
  SQ_EXPECT(sq_quant_rtn(&qa, "m", W, 4, 64, Q, S, Z, NULL) == SQ_ERR_UNSUPPORTED);
  sq_error_clear();
  float X[2 * 8] = {0};
  X[9] = NAN;
  qa.strategy = SQ_QSTRAT_TOKEN, qa.num_bits = 8;
  SQ_EXPECT(sq_quant_act_fake_per_token(&qa, "act.x", X, 2, 8, X) == SQ_ERR_NUMERIC);
  SQ_EXPECT(strstr(sq_error_message(), "act.x") != NULL);
  sq_error_clear();
}

/* Per-token int8 fake quantization: each row against the reference. */
static void test_act_int8(int sym, sq_dtype dt) {
  enum { T = 9, D = 70 };
  static float X[T * D], Y[T * D];
  sq_qargs qa = {8, SQ_QTYPE_INT, sym, SQ_QSTRAT_TOKEN, 0, dt};
  fill_weight(X, T, D);
  SQ_EXPECT(sq_quant_act_fake_per_token(&qa, "act", X, T, D, Y) == SQ_OK);
  for (int t = 0; t < T; ++t) {
    float mn = INFINITY, mx = -INFINITY, s;
    int z;
    for (int j = 0; j < D; ++j) mn = fminf(mn, X[t * D + j]), mx = fmaxf(mx, X[t * D + j]);
    ref_params(8, sym, dt, mn, mx, &s, &z);
    for (int j = 0; j < D; ++j) {
      /* recover the code from Y and check it is the nearest one */
      float y = Y[t * D + j];
      int q = (int)lrint(y / s) + z;
      if (!check_elem(X[t * D + j], q, &y, s, z, 8, dt)) {
        fprintf(stderr, "  act sym %d token %d col %d\n", sym, t, j);
        return;
      }
    }
  }
  /* in place gives the same */
  static float X2[T * D];
  memcpy(X2, X, sizeof X);
  SQ_EXPECT(sq_quant_act_fake_per_token(&qa, "act", X2, T, D, X2) == SQ_OK);
  SQ_EXPECT(memcmp(X2, Y, sizeof Y) == 0);
}

/* Exact ties round half to even, as torch.round does: sym int4 with absmax
 * 7.5 gives scale 7.5 / 7.5 = 1 exactly, so x = k + 0.5 is a tie. */
static void test_ties(void) {
  float W[8] = {7.5f, 2.5f, -1.5f, 0.5f, -0.5f, 3.5f, -6.5f, 1.0f};
  const int want[8] = {7, 2, -2, 0, 0, 4, -6, 1};
  int8_t Q[8];
  float S[1];
  sq_qargs qa = {4, SQ_QTYPE_INT, 1, SQ_QSTRAT_CHANNEL, 0, SQ_DTYPE_F32};
  SQ_EXPECT(sq_quant_rtn(&qa, "ties", W, 1, 8, Q, S, NULL, NULL) == SQ_OK);
  SQ_EXPECT(S[0] == 1.0f);
  for (int j = 0; j < 8; ++j) SQ_EXPECT_EQ_INT(Q[j], want[j]);
}

int main(void) {
  test_ties();
  static const int bits_list[] = {2, 3, 4, 8};
  static const sq_dtype dts[] = {SQ_DTYPE_F32, SQ_DTYPE_F16, SQ_DTYPE_BF16};
  for (int bi = 0; bi < 4; ++bi)
    for (int sym = 0; sym <= 1; ++sym)
      for (int di = 0; di < 3; ++di) {
        int b = bits_list[bi];
        sq_dtype dt = dts[di];
        run_case(b, sym, SQ_QSTRAT_TENSOR, 0, dt, 6, 256);
        run_case(b, sym, SQ_QSTRAT_CHANNEL, 0, dt, 6, 256);
        run_case(b, sym, SQ_QSTRAT_GROUP, 32, dt, 6, 256);
        run_case(b, sym, SQ_QSTRAT_GROUP, 64, dt, 6, 256);
        run_case(b, sym, SQ_QSTRAT_GROUP, 128, dt, 6, 256);
        run_case(b, sym, SQ_QSTRAT_GROUP, 43, dt, 5, 172);  /* divisor, not a power of 2 */
        run_case(b, sym, SQ_QSTRAT_GROUP, 32, dt, 5, 172);  /* partial last group of 12 */
        run_case(b, sym, SQ_QSTRAT_GROUP, 128, dt, 4, 100); /* one partial group */
      }
  /* The real model's shape: 6 groups, the last with 12 columns. */
  sq_qargs qa = {4, SQ_QTYPE_INT, 1, SQ_QSTRAT_GROUP, 32, SQ_DTYPE_BF16};
  SQ_EXPECT_EQ_INT(sq_quant_num_groups(&qa, 172), 6);
  test_errors();
  test_act_int8(1, SQ_DTYPE_F32);
  test_act_int8(0, SQ_DTYPE_F32);
  test_act_int8(1, SQ_DTYPE_BF16);
  return sq_test_result("test_quant_rtn");
}
