/* compressed-tensors `pack-quantized` packing against vectors computed by hand
 * from the definition (u = q + 2^(b-1); 32/b values per int32, first value in
 * the lowest bits; rows padded with u = 0; zero points packed along d_out),
 * plus unpack(pack(x)) == x over every width 1..8 and odd shapes, and
 * out-of-range codes rejected. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/quant.h"
#include "test_util.h"

#define EXPECT_WORD(got, hex)                                                              \
  SQ_EXPECT_MSG((uint32_t)(got) == (uint32_t)(hex), "%s: 0x%08x, want 0x%08x", #got,       \
                (unsigned)(uint32_t)(got), (unsigned)(uint32_t)(hex))

static void test_hand_vectors(void) {
  int32_t p[4];
  int8_t back[16];

  /* 4 bits, [-8..-1] -> u = [0..7]; u_i in bits 4i..4i+3 -> 0x76543210. */
  int8_t a[8] = {-8, -7, -6, -5, -4, -3, -2, -1};
  SQ_EXPECT(sq_quant_pack_rows(4, "a", a, 1, 8, p) == SQ_OK);
  EXPECT_WORD(p[0], 0x76543210u);
  /* 4 bits, [0..7] -> u = [8..15] -> nibbles 8,9,a,b,c,d,e,f -> 0xfedcba98 (negative int32). */
  int8_t b[8] = {0, 1, 2, 3, 4, 5, 6, 7};
  SQ_EXPECT(sq_quant_pack_rows(4, "b", b, 1, 8, p) == SQ_OK);
  EXPECT_WORD(p[0], 0xfedcba98u);
  SQ_EXPECT(p[0] < 0);
  /* 4 bits partial row [7, -8, 0] -> u = [15, 0, 8], pad 0 -> 0x0000080f. */
  int8_t c[3] = {7, -8, 0};
  SQ_EXPECT_EQ_INT(sq_quant_packed_cols(3, 4), 1);
  SQ_EXPECT(sq_quant_pack_rows(4, "c", c, 1, 3, p) == SQ_OK);
  EXPECT_WORD(p[0], 0x0000080fu);
  SQ_EXPECT(sq_quant_unpack_rows(4, "c", p, 1, 3, back) == SQ_OK);
  SQ_EXPECT(memcmp(back, c, 3) == 0);

  /* 8 bits [1, 2] -> u = [129, 130, 0, 0] -> 0x00008281 = 33409, the example in
   * compressed-tensors' pack_to_int32 docstring. */
  int8_t d[2] = {1, 2};
  SQ_EXPECT(sq_quant_pack_rows(8, "d", d, 1, 2, p) == SQ_OK);
  SQ_EXPECT_EQ_INT(p[0], 33409);
  /* 8 bits [-128, -1, 0, 127] -> u = [0x00, 0x7f, 0x80, 0xff] -> 0xff807f00. */
  int8_t e[4] = {-128, -1, 0, 127};
  SQ_EXPECT(sq_quant_pack_rows(8, "e", e, 1, 4, p) == SQ_OK);
  EXPECT_WORD(p[0], 0xff807f00u);

  /* 3 bits: 10 per word, top 2 bits unused, no straddling. 11 values
   * [-4..3, -4, -3, 2] -> u = [0..7, 0, 1 | 6]:
   *   1<<3 = 0x8, 2<<6 = 0x80, 3<<9 = 0x600, 4<<12 = 0x4000, 5<<15 = 0x28000,
   *   6<<18 = 0x180000, 7<<21 = 0xe00000, 0<<24, 1<<27 = 0x8000000
   *   sum = 0x08fac688; second word holds u = 6 in bits 0-2 -> 0x00000006. */
  int8_t f[11] = {-4, -3, -2, -1, 0, 1, 2, 3, -4, -3, 2};
  SQ_EXPECT_EQ_INT(sq_quant_packed_cols(11, 3), 2);
  SQ_EXPECT(sq_quant_pack_rows(3, "f", f, 1, 11, p) == SQ_OK);
  EXPECT_WORD(p[0], 0x08fac688u);
  EXPECT_WORD(p[1], 0x00000006u);
  SQ_EXPECT(sq_quant_unpack_rows(3, "f", p, 1, 11, back) == SQ_OK);
  SQ_EXPECT(memcmp(back, f, 11) == 0);

  /* 2 bits: 16 per word; [-2, -1, 0, 1] x 4 -> u = [0,1,2,3] per byte
   * -> 0 | 1<<2 | 2<<4 | 3<<6 = 0xe4 per byte -> 0xe4e4e4e4. */
  int8_t g[16];
  for (int i = 0; i < 16; ++i) g[i] = (int8_t)(i % 4 - 2);
  SQ_EXPECT(sq_quant_pack_rows(2, "g", g, 1, 16, p) == SQ_OK);
  EXPECT_WORD(p[0], 0xe4e4e4e4u);

  /* Two rows of 9 4-bit values: each row starts a fresh word.
   * row 0 [-8..0] -> 0x76543210, 0x00000008; row 1 all 7 -> 0xffffffff, 0x0000000f. */
  int8_t h[18];
  for (int i = 0; i < 9; ++i) h[i] = (int8_t)(i - 8), h[9 + i] = 7;
  SQ_EXPECT(sq_quant_pack_rows(4, "h", h, 2, 9, p) == SQ_OK);
  EXPECT_WORD(p[0], 0x76543210u);
  EXPECT_WORD(p[1], 0x00000008u);
  EXPECT_WORD(p[2], 0xffffffffu);
  EXPECT_WORD(p[3], 0x0000000fu);

  /* Zero points (d_out 9, n_groups 2), 4 bits, packed along d_out into (2, 2):
   * group 0 = rows [-8..0], group 1 = all 7:
   *   packed[0][0] = 0x76543210, packed[0][1] = 0xffffffff,
   *   packed[1][0] = 0x00000008, packed[1][1] = 0x0000000f. */
  int32_t zp[18], zback[18];
  for (int r = 0; r < 9; ++r) zp[r * 2 + 0] = r - 8, zp[r * 2 + 1] = 7;
  SQ_EXPECT(sq_quant_pack_zero_points(4, "zp", zp, 9, 2, p) == SQ_OK);
  EXPECT_WORD(p[0], 0x76543210u);
  EXPECT_WORD(p[1], 0xffffffffu);
  EXPECT_WORD(p[2], 0x00000008u);
  EXPECT_WORD(p[3], 0x0000000fu);
  SQ_EXPECT(sq_quant_unpack_zero_points(4, "zp", p, 9, 2, zback) == SQ_OK);
  SQ_EXPECT(memcmp(zback, zp, sizeof zp) == 0);

  /* Packed widths for the real model's d_in 172. */
  SQ_EXPECT_EQ_INT(sq_quant_packed_cols(172, 4), 22);
  SQ_EXPECT_EQ_INT(sq_quant_packed_cols(172, 8), 43);
  SQ_EXPECT_EQ_INT(sq_quant_packed_cols(172, 3), 18);
  SQ_EXPECT_EQ_INT(sq_quant_packed_cols(172, 2), 11);
}

static void test_round_trip(void) {
  static const int64_t shapes[][2] = {{1, 1}, {3, 7}, {5, 172}, {4, 64}, {2, 33}};
  uint32_t rng = 12345u;
  for (int bits = 1; bits <= 8; ++bits) {
    for (int si = 0; si < 5; ++si) {
      int64_t R = shapes[si][0], C = shapes[si][1], W = sq_quant_packed_cols(C, bits);
      int8_t *q = malloc((size_t)(R * C)), *q2 = malloc((size_t)(R * C));
      int32_t *p = malloc(sizeof(int32_t) * (size_t)(R * W));
      int32_t *z = malloc(sizeof(int32_t) * (size_t)(R * C)), *z2 = malloc(sizeof(int32_t) * (size_t)(R * C));
      int32_t *pz = malloc(sizeof(int32_t) * (size_t)(sq_quant_packed_cols(R, bits) * C));
      for (int64_t i = 0; i < R * C; ++i) {
        rng = rng * 1664525u + 1013904223u;
        q[i] = (int8_t)((int)(rng >> 24) % (1 << bits) - (1 << (bits - 1)));
        z[i] = q[i];
      }
      SQ_EXPECT(sq_quant_pack_rows(bits, "rt", q, R, C, p) == SQ_OK);
      SQ_EXPECT(sq_quant_unpack_rows(bits, "rt", p, R, C, q2) == SQ_OK);
      SQ_EXPECT_MSG(memcmp(q, q2, (size_t)(R * C)) == 0, "rows round trip bits %d shape %lldx%lld",
                    bits, (long long)R, (long long)C);
      /* padding slots are u = 0; for 3 bits the top 2 bits stay 0 */
      int pf = 32 / bits;
      int64_t used = C - (W - 1) * pf;
      uint32_t last = (uint32_t)p[W - 1];
      if (used * bits < 32) SQ_EXPECT_MSG((last >> (used * bits)) == 0, "bits %d pad not zero", bits);
      SQ_EXPECT(sq_quant_pack_zero_points(bits, "rt", z, R, C, pz) == SQ_OK);
      SQ_EXPECT(sq_quant_unpack_zero_points(bits, "rt", pz, R, C, z2) == SQ_OK);
      SQ_EXPECT(memcmp(z, z2, sizeof(int32_t) * (size_t)(R * C)) == 0);
      free(q), free(q2), free(p), free(z), free(z2), free(pz);
    }
  }
}

static void test_errors(void) {
  int8_t q[3] = {0, 8, 0}; /* 8 is outside int4 */
  int32_t p[1];
  SQ_EXPECT(sq_quant_pack_rows(4, "model.layers.0.self_attn.q_proj", q, 1, 3, p) == SQ_ERR_ARG);
  SQ_EXPECT_MSG(strstr(sq_error_message(), "q_proj") && strstr(sq_error_message(), "(0, 1)"),
                "message: %s", sq_error_message());
  sq_error_clear();
  SQ_EXPECT(sq_quant_pack_rows(9, "x", q, 1, 3, p) == SQ_ERR_UNSUPPORTED);
  sq_error_clear();
  int32_t z[2] = {-9, 0};
  SQ_EXPECT(sq_quant_pack_zero_points(4, "x", z, 2, 1, p) == SQ_ERR_ARG);
  sq_error_clear();
}

int main(void) {
  test_hand_vectors();
  test_round_trip();
  test_errors();
  return sq_test_result("test_pack");
}
