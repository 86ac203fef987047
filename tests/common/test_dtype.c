/* Every bf16, fp16 and fp8-e4m3fn bit pattern decodes to the value of the
 * IEEE-style formula (-1)^s 2^(e-bias) (1 + m/2^M) computed here in double with
 * ldexp; narrowing f32 -> f16/bf16/fp8 picks the nearest representable value
 * (ties to the even code) found by brute force over the sorted value table. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/dtype.h"
#include "test_util.h"

/* Decode a small float format from its fields, independently of common/dtype.h. */
static double decode(unsigned bits, int ebits, int mbits, int fn_no_inf) {
  int bias = (1 << (ebits - 1)) - 1;
  unsigned s = (bits >> (ebits + mbits)) & 1u;
  unsigned e = (bits >> mbits) & ((1u << ebits) - 1u);
  unsigned m = bits & ((1u << mbits) - 1u);
  double v;
  if (e == (1u << ebits) - 1u && !fn_no_inf) v = m ? NAN : INFINITY;
  else if (fn_no_inf && e == (1u << ebits) - 1u && m == (1u << mbits) - 1u) v = NAN;
  else if (e == 0) v = ldexp((double)m, 1 - bias - mbits);
  else v = ldexp(1.0 + ldexp((double)m, -mbits), (int)e - bias);
  return s ? -v : v;
}

static int same(double a, float b) {
  if (isnan(a)) return isnan(b);
  return a == (double)b && !signbit(a) == !signbit(b);
}

typedef struct { double v; unsigned code; } entry;
static int cmp_entry(const void *a, const void *b) {
  double x = ((const entry *)a)->v, y = ((const entry *)b)->v;
  return (x > y) - (x < y);
}

/* Nearest non-negative finite code to |x| by brute force; ties to even code. */
static unsigned nearest(const entry *t, int n, double ax) {
  int best = 0;
  for (int i = 1; i < n; ++i) {
    double d0 = fabs(t[best].v - ax), d1 = fabs(t[i].v - ax);
    if (d1 < d0 || (d1 == d0 && (t[i].code & 1u) == 0)) best = i;
  }
  return t[best].code;
}

static int build_table(entry *t, int ebits, int mbits, int fn) {
  int n = 0;
  for (unsigned c = 0; c < (1u << (ebits + mbits)); ++c) {
    double v = decode(c, ebits, mbits, fn);
    if (isfinite(v)) t[n++] = (entry){v, c};
  }
  qsort(t, (size_t)n, sizeof *t, cmp_entry);
  return n;
}

static float random_float(unsigned *state, int emin, int emax) {
  *state = *state * 1664525u + 1013904223u;
  unsigned r = *state;
  int e = emin + (int)((r >> 8) % (unsigned)(emax - emin + 1));
  *state = *state * 1664525u + 1013904223u;
  float m = 1.0f + (float)(*state >> 9) / 8388608.0f;
  float v = ldexpf(m, e);
  return (r & 1u) ? -v : v;
}

int main(void) {
  for (unsigned c = 0; c < 65536; ++c) {
    SQ_EXPECT_MSG(same(decode(c, 8, 7, 0), sq_bf16_to_f32((uint16_t)c)), "bf16 0x%04x", c);
    SQ_EXPECT_MSG(same(decode(c, 5, 10, 0), sq_f16_to_f32((uint16_t)c)), "f16 0x%04x", c);
    /* Every finite bf16/f16 value survives the round trip through f32. */
    float b = sq_bf16_to_f32((uint16_t)c), h = sq_f16_to_f32((uint16_t)c);
    if (!isnan(b)) SQ_EXPECT_MSG(sq_f32_to_bf16(b) == c, "bf16 round trip 0x%04x", c);
    if (!isnan(h)) SQ_EXPECT_MSG(sq_f32_to_f16(h) == c, "f16 round trip 0x%04x", c);
  }
  for (unsigned c = 0; c < 256; ++c) {
    SQ_EXPECT_MSG(same(decode(c, 4, 3, 1), sq_fp8e4m3_to_f32((uint8_t)c)), "fp8 0x%02x", c);
    float v = sq_fp8e4m3_to_f32((uint8_t)c);
    if (!isnan(v)) SQ_EXPECT_MSG(sq_f32_to_fp8e4m3(v) == c, "fp8 round trip 0x%02x", c);
  }
  SQ_EXPECT(sq_fp8e4m3_to_f32(0x7e) == 448.0f);
  SQ_EXPECT(sq_f32_to_fp8e4m3(1e6f) == 0x7e && sq_f32_to_fp8e4m3(-INFINITY) == 0xfe);
  SQ_EXPECT(sq_f32_to_fp8e4m3(NAN) == 0x7f);

  static entry t16[65536], t8[256];
  int n16 = build_table(t16, 5, 10, 0), n8 = build_table(t8, 4, 3, 1);
  /* Keep only the non-negative half (codes without the sign bit). */
  int p16 = 0, p8 = 0;
  for (int i = 0; i < n16; ++i) if (t16[i].v >= 0 && !(t16[i].code & 0x8000u)) t16[p16++] = t16[i];
  for (int i = 0; i < n8; ++i) if (t8[i].v >= 0 && !(t8[i].code & 0x80u)) t8[p8++] = t8[i];

  unsigned state = 12345u;
  for (int i = 0; i < 4000; ++i) {
    float x = random_float(&state, -27, 15);
    unsigned sign16 = signbit(x) ? 0x8000u : 0u;
    double ax = fabs((double)x);
    unsigned want = ax >= 65520.0 ? 0x7c00u : nearest(t16, p16, ax);
    SQ_EXPECT_MSG(sq_f32_to_f16(x) == (sign16 | want), "f16(%a) = 0x%04x, want 0x%04x", x,
                  sq_f32_to_f16(x), sign16 | want);
    float y = random_float(&state, -12, 9);
    unsigned sign8 = signbit(y) ? 0x80u : 0u;
    double ay = fabs((double)y);
    unsigned want8 = ay >= 448.0 ? 0x7eu : nearest(t8, p8, ay);
    SQ_EXPECT_MSG(sq_f32_to_fp8e4m3(y) == (sign8 | want8), "fp8(%a) = 0x%02x, want 0x%02x", y,
                  sq_f32_to_fp8e4m3(y), sign8 | want8);
  }
  /* Exact midpoints between neighbours round to the even code. */
  for (int i = 0; i + 1 < p8; ++i) {
    float mid = (float)((t8[i].v + t8[i + 1].v) / 2);
    unsigned even = (t8[i].code & 1u) ? t8[i + 1].code : t8[i].code;
    SQ_EXPECT_MSG(sq_f32_to_fp8e4m3(mid) == even, "fp8 midpoint %g", mid);
  }
  for (int i = 0; i + 1 < p16; i += 7) {
    float mid = (float)((t16[i].v + t16[i + 1].v) / 2);
    unsigned even = (t16[i].code & 1u) ? t16[i + 1].code : t16[i].code;
    SQ_EXPECT_MSG(sq_f32_to_f16(mid) == even, "f16 midpoint %g", mid);
  }
  /* bf16 rounding: x = bf16 value + a fraction of one ulp. */
  for (unsigned c = 0x0080; c < 0x7f00; c += 13) {
    float lo = sq_bf16_to_f32((uint16_t)c), hi = sq_bf16_to_f32((uint16_t)(c + 1));
    SQ_EXPECT(sq_f32_to_bf16(lo + (hi - lo) * 0.25f) == c);
    SQ_EXPECT(sq_f32_to_bf16(lo + (hi - lo) * 0.75f) == c + 1);
    SQ_EXPECT(sq_f32_to_bf16(lo + (hi - lo) * 0.5f) == ((c & 1u) ? c + 1 : c));
  }
  return sq_test_result("test_dtype");
}
