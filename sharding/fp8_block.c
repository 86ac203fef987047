/* Block-scaled fp8 (DeepSeek-V3): dequantize on load and quantize; the format
 * is documented in fp8_block.h. */
#include "sharding/fp8_block.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/dtype.h"

sq_status sq_fp8_block_scale_name(const char *name, char *buf, size_t size) {
  int n = snprintf(buf, size, "%s_scale_inv", name);
  if (n < 0 || (size_t)n >= size)
    return sq_error_set(SQ_ERR_ARG, "fp8 block: tensor name '%s' too long for its scale name",
                        name);
  return SQ_OK;
}

sq_status sq_fp8_block_config(const char *label, const struct json_t *root, bool *present,
                              int64_t *bo, int64_t *bi) {
  *present = false;
  *bo = *bi = 0;
  json_t *qc = root ? json_object_get(root, "quantization_config") : NULL;
  if (!qc || json_is_null(qc)) return SQ_OK;
  json_t *m = json_object_get(qc, "quant_method");
  if (!json_is_string(m) || strcmp(json_string_value(m), "fp8") != 0) return SQ_OK;
  json_t *fmt = json_object_get(qc, "fmt");
  if (fmt && (!json_is_string(fmt) || strcmp(json_string_value(fmt), "e4m3") != 0))
    return sq_error_set(SQ_ERR_UNSUPPORTED,
                        "%s: quantization_config.fmt must be \"e4m3\" for block-scaled fp8", label);
  json_t *bs = json_object_get(qc, "weight_block_size");
  if (!bs || json_is_null(bs))
    return sq_error_set(SQ_ERR_UNSUPPORTED,
                        "%s: fp8 quantization_config without weight_block_size (per-tensor fp8) "
                        "is not supported -- hint: only DeepSeek-style block scales are read",
                        label);
  if (!json_is_array(bs) || json_array_size(bs) != 2 || !json_is_integer(json_array_get(bs, 0)) ||
      !json_is_integer(json_array_get(bs, 1)) || json_integer_value(json_array_get(bs, 0)) <= 0 ||
      json_integer_value(json_array_get(bs, 1)) <= 0)
    return sq_error_set(SQ_ERR_FORMAT,
                        "%s: quantization_config.weight_block_size must be two positive integers "
                        "like [128, 128]",
                        label);
  *bo = (int64_t)json_integer_value(json_array_get(bs, 0));
  *bi = (int64_t)json_integer_value(json_array_get(bs, 1));
  *present = true;
  return SQ_OK;
}

bool sq_fp8_block_is_scaled(const sq_ckpt *c, const char *name) {
  char sname[320];
  const sq_st_tensor *t = sq_ckpt_find(c, name, NULL);
  if (!t || t->dtype != SQ_DTYPE_F8_E4M3) return false;
  if (sq_fp8_block_scale_name(name, sname, sizeof sname) != SQ_OK) {
    sq_error_clear();
    return false;
  }
  return sq_ckpt_find(c, sname, NULL) != NULL;
}

void sq_fp8_block_dequant(const uint8_t *codes, const float *scale_inv, int64_t d_out, int64_t d_in,
                          int64_t bo, int64_t bi, float *dst) {
  const int64_t nbi = sq_fp8_block_count(d_in, bi);
  /* Backwards, so that codes may live in dst's own bytes (code i sits at byte
   * i <= 4i, the first byte dst[i] overwrites). */
  for (int64_t r = d_out - 1; r >= 0; --r) {
    const float *srow = scale_inv + (size_t)(r / bo) * (size_t)nbi;
    for (int64_t j = d_in - 1; j >= 0; --j) {
      size_t i = (size_t)r * (size_t)d_in + (size_t)j;
      dst[i] = sq_fp8e4m3_to_f32(codes[i]) * srow[j / bi];
    }
  }
}

void sq_fp8_block_quantize(const float *w, int64_t d_out, int64_t d_in, int64_t bo, int64_t bi,
                           uint8_t *codes, float *scale_inv) {
  const int64_t nbo = sq_fp8_block_count(d_out, bo), nbi = sq_fp8_block_count(d_in, bi);
  for (int64_t a = 0; a < nbo; ++a)
    for (int64_t b = 0; b < nbi; ++b) {
      const int64_t r1 = (a + 1) * bo < d_out ? (a + 1) * bo : d_out;
      const int64_t c1 = (b + 1) * bi < d_in ? (b + 1) * bi : d_in;
      float amax = 0.0f;
      for (int64_t r = a * bo; r < r1; ++r)
        for (int64_t j = b * bi; j < c1; ++j) amax = fmaxf(amax, fabsf(w[r * d_in + j]));
      float s = amax > 0.0f ? amax / SQ_FP8_E4M3_MAX : 1.0f;
      scale_inv[a * nbi + b] = s;
      for (int64_t r = a * bo; r < r1; ++r)
        for (int64_t j = b * bi; j < c1; ++j)
          codes[r * d_in + j] = sq_f32_to_fp8e4m3(w[r * d_in + j] / s);
    }
}

static sq_status sq_fp8_shape_check(const sq_ckpt *c, const char *name, const sq_st_tensor *t,
                                    int64_t rows, int64_t cols, const char *what) {
  if (t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols)
    return sq_error_set(SQ_ERR_FORMAT,
                        "%s: tensor '%s' has shape [%lld, %lld] (%d dims), expected %s [%lld, "
                        "%lld]",
                        sq_ckpt_dir(c), name, (long long)(t->ndim > 0 ? t->shape[0] : 0),
                        (long long)(t->ndim > 1 ? t->shape[1] : 0), t->ndim, what, (long long)rows,
                        (long long)cols);
  return SQ_OK;
}

sq_status sq_fp8_block_read_f32_bs(const sq_ckpt *c, const char *name, float *dst, int64_t d_out,
                                   int64_t d_in, int64_t bo, int64_t bi) {
  if (d_out <= 0 || d_in <= 0 || bo <= 0 || bi <= 0)
    return sq_error_set(SQ_ERR_ARG, "fp8 block: '%s': bad shape [%lld, %lld] or block %lldx%lld",
                        name, (long long)d_out, (long long)d_in, (long long)bo, (long long)bi);
  const sq_st_file *f = NULL;
  const sq_st_tensor *t = sq_ckpt_find(c, name, &f);
  if (!t) return sq_error_set(SQ_ERR_FORMAT, "%s: tensor '%s' is missing", sq_ckpt_dir(c), name);
  SQ_CHECK(sq_fp8_shape_check(c, name, t, d_out, d_in, "weight"));
  const uint64_t n = (uint64_t)d_out * (uint64_t)d_in;
  if (t->dtype != SQ_DTYPE_F8_E4M3) return sq_st_read_f32(f, t, dst, n);

  char sname[320];
  SQ_CHECK(sq_fp8_block_scale_name(name, sname, sizeof sname));
  const sq_st_file *sf = NULL;
  const sq_st_tensor *s = sq_ckpt_find(c, sname, &sf);
  if (!s)
    return sq_error_set(SQ_ERR_FORMAT,
                        "%s: fp8 tensor '%s' has no block scales '%s' -- hint: DeepSeek-style "
                        "checkpoints store a weight_scale_inv next to every F8_E4M3 weight",
                        sq_ckpt_dir(c), name, sname);
  const int64_t nbo = sq_fp8_block_count(d_out, bo), nbi = sq_fp8_block_count(d_in, bi);
  SQ_CHECK(sq_fp8_shape_check(c, sname, s, nbo, nbi, "block scales"));
  float *sc = malloc((size_t)nbo * (size_t)nbi * sizeof *sc);
  if (!sc)
    return sq_error_set(SQ_ERR_NOMEM, "fp8 block: out of memory for the scales of '%s'", name);
  sq_status st = sq_st_read_f32(sf, s, sc, (uint64_t)(nbo * nbi));
  for (int64_t i = 0; st == SQ_OK && i < nbo * nbi; ++i)
    if (!isfinite(sc[i]) || sc[i] < 0.0f)
      st = sq_error_set(
          SQ_ERR_FORMAT, "%s: '%s' block [%lld, %lld] is %g (not a finite scale >= 0)",
          sq_ckpt_dir(c), sname, (long long)(i / nbi), (long long)(i % nbi), (double)sc[i]);
  /* Stage the codes in dst's first n bytes, then expand in place. */
  if (st == SQ_OK) st = sq_st_read_raw(f, t, 0, dst, n);
  if (st == SQ_OK) sq_fp8_block_dequant((const uint8_t *)dst, sc, d_out, d_in, bo, bi, dst);
  free(sc);
  return st;
}

sq_status sq_fp8_block_read_f32(const sq_ckpt *c, const char *name, float *dst, int64_t d_out,
                                int64_t d_in) {
  return sq_fp8_block_read_f32_bs(c, name, dst, d_out, d_in, SQ_FP8_BLOCK_DEFAULT,
                                  SQ_FP8_BLOCK_DEFAULT);
}
