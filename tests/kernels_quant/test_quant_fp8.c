/* FP8 e4m3fn weight and activation quantization against an independent
 * reference: every one of the 256 codes decodes to (-1)^s 2^(e-7) (1 + m/8)
 * (subnormal m 2^-9, 0x7f/0xff NaN) computed here with ldexp; x = value *
 * scale quantizes back to the same code; random weights get the nearest
 * finite e4m3 value of x / scale (brute force over the table, near ties
 * skipped) with scale = round_dtype(absmax / 448); saturation at +-448. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/dtype.h"
#include "kernels/quant.h"
#include "test_util.h"

static double fp8_ref(unsigned c) {
  unsigned s = c >> 7, e = (c >> 3) & 15u, m = c & 7u;
  double v;
  if (e == 15 && m == 7) return NAN;
  if (e == 0) v = ldexp((double)m, -9);
  else v = ldexp(1.0 + m / 8.0, (int)e - 7);
  return s ? -v : v;
}

static uint64_t rng_state = 0x2545f4914f6cdd1dull;
static double urand(void) {
  rng_state ^= rng_state >> 12, rng_state ^= rng_state << 25, rng_state ^= rng_state >> 27;
  return (double)((rng_state * 2685821657736338717ull) >> 11) * (1.0 / 9007199254740992.0);
}

static float round_dt(float x, sq_dtype dt) {
  if (dt == SQ_DTYPE_BF16) return sq_bf16_to_f32(sq_f32_to_bf16(x));
  if (dt == SQ_DTYPE_F16) return sq_f16_to_f32(sq_f32_to_f16(x));
  return x;
}

static void test_table(void) {
  static const float scales[] = {1.0f, 0.0625f, 0.37f, 3.0f, 1.0e-3f};
  for (unsigned c = 0; c < 256; ++c) {
    double want = fp8_ref(c);
    float got = sq_q_fp8_dequantize((uint8_t)c, 1.0f, SQ_DTYPE_F32);
    if (isnan(want)) {
      SQ_EXPECT_MSG(isnan(got), "code 0x%02x: %g, want NaN", c, (double)got);
      continue;
    }
    SQ_EXPECT_MSG((double)got == want && !signbit(got) == !signbit(want),
                  "code 0x%02x decodes to %.9g, want %.9g", c, (double)got, want);
    for (int k = 0; k < 5; ++k) {
      float x = (float)want * scales[k];
      unsigned back = sq_q_fp8_quantize(x, scales[k]);
      SQ_EXPECT_MSG(back == c, "code 0x%02x * scale %g -> 0x%02x", c, (double)scales[k], back);
    }
  }
  SQ_EXPECT_EQ_INT(sq_q_fp8_quantize(1e30f, 1.0f), 0x7e);
  SQ_EXPECT_EQ_INT(sq_q_fp8_quantize(-1e30f, 1.0f), 0xfe);
  SQ_EXPECT_EQ_INT(sq_q_fp8_quantize(500.0f, 1.0f), 0x7e);
}

/* Rows of all 254 finite codes (both zeros included) times a power-of-2 row
 * scale: per-channel RTN must recover exactly the scale and every code. */
static void test_all_codes_per_channel(sq_dtype dt) {
  enum { R = 3, C = 254 };
  static const float rs[R] = {0.0625f, 4.0f, 1.0f};
  static float W[R * C], S[R], D[R * C];
  static int8_t Q[R * C];
  uint8_t want[C];
  int n = 0;
  for (unsigned c = 0; c < 256; ++c)
    if ((c & 0x7f) != 0x7f) want[n++] = (uint8_t)c;
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < C; ++j) W[r * C + j] = (float)fp8_ref(want[j]) * rs[r];
  sq_qargs qa = {8, SQ_QTYPE_FLOAT, 1, SQ_QSTRAT_CHANNEL, 0, dt};
  SQ_EXPECT(sq_quant_rtn(&qa, "w", W, R, C, Q, S, NULL, D) == SQ_OK);
  for (int r = 0; r < R; ++r) {
    SQ_EXPECT_MSG(S[r] == rs[r], "row %d scale %g want %g", r, (double)S[r], (double)rs[r]);
    for (int j = 0; j < C; ++j) {
      SQ_EXPECT_MSG((uint8_t)Q[r * C + j] == want[j], "row %d code 0x%02x -> 0x%02x", r, want[j],
                    (uint8_t)Q[r * C + j]);
      SQ_EXPECT(D[r * C + j] == W[r * C + j]);
    }
  }
}

/* Nearest finite e4m3 code to v (|v| <= 448) by brute force; *tie set when
 * the two nearest are within a relative 1e-6. */
static unsigned nearest_code(double v, int *tie) {
  double d1 = INFINITY, d2 = INFINITY;
  unsigned b1 = 0;
  for (unsigned c = 0; c < 256; ++c) {
    double f = fp8_ref(c);
    if (isnan(f) || (f == 0.0 && signbit(f) != signbit(v))) continue;
    double d = fabs(v - f);
    if (d < d1) d2 = d1, d1 = d, b1 = c;
    else if (d < d2 && f != fp8_ref(b1)) d2 = d;
  }
  *tie = d2 - d1 <= 1e-6 * fabs(v);
  return b1;
}

static void test_random(sq_qstrategy strat, sq_dtype dt) {
  enum { R = 5, C = 200 };
  static float W[R * C], S[R], D[R * C];
  static int8_t Q[R * C];
  for (int i = 0; i < R * C; ++i) W[i] = (float)((urand() - 0.5) * (1 + i / C) * 3.0);
  W[7] = 0.0f;
  sq_qargs qa = {8, SQ_QTYPE_FLOAT, 1, strat, 0, dt};
  SQ_EXPECT(sq_quant_rtn(&qa, "w", W, R, C, Q, S, NULL, D) == SQ_OK);
  int nr = strat == SQ_QSTRAT_TENSOR ? 1 : R, checked = 0;
  for (int r = 0; r < nr; ++r) {
    int i0 = strat == SQ_QSTRAT_TENSOR ? 0 : r, i1 = strat == SQ_QSTRAT_TENSOR ? R : r + 1;
    float amax = 0.0f;
    for (int i = i0 * C; i < i1 * C; ++i) amax = fmaxf(amax, fabsf(W[i]));
    float s = round_dt(amax / 448.0f, dt);
    SQ_EXPECT_MSG(S[r] == s, "scale %g want %g", (double)S[r], (double)s);
    for (int i = i0 * C; i < i1 * C; ++i) {
      double v = (double)W[i] / s;
      if (v > 448) v = 448;
      if (v < -448) v = -448;
      int tie;
      unsigned c = nearest_code(v, &tie);
      if (tie) continue;
      ++checked;
      SQ_EXPECT_MSG((uint8_t)Q[i] == c, "x %g / s %g: code 0x%02x want 0x%02x", (double)W[i],
                    (double)s, (uint8_t)Q[i], c);
      SQ_EXPECT(D[i] == round_dt((float)fp8_ref(c) * s, dt));
    }
  }
  SQ_EXPECT(checked > R * C / 2);
}

/* Per-token fp8 activation fake quantization: each row scaled by its own absmax. */
static void test_act(void) {
  enum { T = 4, D = 50 };
  static float X[T * D], Y[T * D];
  for (int i = 0; i < T * D; ++i) X[i] = (float)((urand() - 0.5) * (i / D + 1) * 10);
  sq_qargs qa = {8, SQ_QTYPE_FLOAT, 1, SQ_QSTRAT_TOKEN, 0, SQ_DTYPE_F32};
  SQ_EXPECT(sq_quant_act_fake_per_token(&qa, "act", X, T, D, Y) == SQ_OK);
  for (int t = 0; t < T; ++t) {
    float amax = 0.0f;
    for (int j = 0; j < D; ++j) amax = fmaxf(amax, fabsf(X[t * D + j]));
    float s = amax / 448.0f;
    for (int j = 0; j < D; ++j) {
      int tie;
      unsigned c = nearest_code((double)X[t * D + j] / s, &tie);
      if (!tie) SQ_EXPECT(Y[t * D + j] == (float)fp8_ref(c) * s);
    }
  }
}

int main(void) {
  test_table();
  test_all_codes_per_channel(SQ_DTYPE_BF16);
  test_all_codes_per_channel(SQ_DTYPE_F32);
  test_random(SQ_QSTRAT_TENSOR, SQ_DTYPE_F32);
  test_random(SQ_QSTRAT_CHANNEL, SQ_DTYPE_BF16);
  test_random(SQ_QSTRAT_CHANNEL, SQ_DTYPE_F16);
  test_act();
  return sq_test_result("test_quant_fp8");
}
