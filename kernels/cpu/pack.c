/* CPU reference of compressed-tensors `pack-quantized` packing (layout in
 * kernels/pack_math.h): codes packed along a row for weight_packed, zero
 * points packed along d_out for weight_zero_point, and the inverses. */
#include <stddef.h>

#include "kernels/quant.h"

static const char *nm(const char *name) { return name ? name : "(unnamed tensor)"; }

int64_t sq_quant_packed_cols(int64_t n, int bits) { return sq_pack_words(n, bits); }

static sq_status check_pack(int bits, const char *name, const void *a, const void *b,
                            int64_t rows, int64_t cols) {
  if (bits < 1 || bits > 8)
    return sq_error_set(SQ_ERR_UNSUPPORTED,
                        "%s: packing %d-bit values is not supported -- hint: 1 to 8 bits", name,
                        bits);
  if (!a || !b || rows < 0 || cols < 0)
    return sq_error_set(SQ_ERR_ARG, "%s: bad packing arguments (shape (%lld, %lld))", name,
                        (long long)rows, (long long)cols);
  return SQ_OK;
}

static sq_status out_of_range(const char *name, const char *what, int64_t i, int64_t j, int v,
                              int bits) {
  return sq_error_set(SQ_ERR_ARG,
                      "%s: %s (%lld, %lld) = %d is outside the %d-bit range [%d, %d] -- hint: "
                      "quantize with the same num_bits",
                      name, what, (long long)i, (long long)j, v, bits, sq_q_min(bits),
                      sq_q_max(bits));
}

sq_status sq_quant_pack_rows(int bits, const char *name, const int8_t *codes, int64_t rows,
                             int64_t cols, int32_t *packed) {
  name = nm(name);
  SQ_CHECK(check_pack(bits, name, codes, packed, rows, cols));
  int pf = sq_pack_factor(bits);
  int64_t words = sq_pack_words(cols, bits);
  for (int64_t i = 0; i < rows; ++i) {
    const int8_t *c = codes + i * cols;
    for (int64_t k = 0; k < words; ++k) {
      uint32_t w = 0;
      for (int s = 0; s < pf && k * pf + s < cols; ++s) {
        int q = c[k * pf + s];
        if (q < sq_q_min(bits) || q > sq_q_max(bits))
          return out_of_range(name, "code", i, k * pf + s, q, bits);
        w |= sq_pack_slot(q, s, bits);
      }
      packed[i * words + k] = (int32_t)w;
    }
  }
  return SQ_OK;
}

sq_status sq_quant_unpack_rows(int bits, const char *name, const int32_t *packed, int64_t rows,
                               int64_t cols, int8_t *codes) {
  name = nm(name);
  SQ_CHECK(check_pack(bits, name, packed, codes, rows, cols));
  int pf = sq_pack_factor(bits);
  int64_t words = sq_pack_words(cols, bits);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j)
      codes[i * cols + j] =
          (int8_t)sq_unpack_slot((uint32_t)packed[i * words + j / pf], (int)(j % pf), bits);
  return SQ_OK;
}

sq_status sq_quant_pack_zero_points(int bits, const char *name, const int32_t *zp, int64_t d_out,
                                    int64_t n_groups, int32_t *packed) {
  name = nm(name);
  SQ_CHECK(check_pack(bits, name, zp, packed, d_out, n_groups));
  int pf = sq_pack_factor(bits);
  int64_t words = sq_pack_words(d_out, bits);
  for (int64_t k = 0; k < words; ++k) {
    for (int64_t g = 0; g < n_groups; ++g) {
      uint32_t w = 0;
      for (int s = 0; s < pf && k * pf + s < d_out; ++s) {
        int64_t r = k * pf + s;
        int32_t q = zp[r * n_groups + g];
        if (q < sq_q_min(bits) || q > sq_q_max(bits))
          return out_of_range(name, "zero point", r, g, (int)q, bits);
        w |= sq_pack_slot((int)q, s, bits);
      }
      packed[k * n_groups + g] = (int32_t)w;
    }
  }
  return SQ_OK;
}

sq_status sq_quant_unpack_zero_points(int bits, const char *name, const int32_t *packed,
                                      int64_t d_out, int64_t n_groups, int32_t *zp) {
  name = nm(name);
  SQ_CHECK(check_pack(bits, name, packed, zp, d_out, n_groups));
  int pf = sq_pack_factor(bits);
  for (int64_t r = 0; r < d_out; ++r)
    for (int64_t g = 0; g < n_groups; ++g)
      zp[r * n_groups + g] =
          sq_unpack_slot((uint32_t)packed[(r / pf) * n_groups + g], (int)(r % pf), bits);
  return SQ_OK;
}
