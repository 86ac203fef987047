/* Writing one quantized Linear module's compressed-tensors tensors into a
 * safetensors writer, in two phases (declare every tensor of a shard first,
 * write the bytes later), with the names, shapes and dtypes of
 * compressed-tensors' PackedQuantizationCompressor and
 * Int/FloatQuantizationCompressor (layout in sharding/compressed.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/pack_math.h"
#include "sharding/compressed.h"

int64_t sq_ct_scale_rows(const sq_qargs *qa, int64_t d_out) {
  return qa->strategy == SQ_QSTRAT_TENSOR ? 1 : d_out;
}

int64_t sq_ct_scale_cols(const sq_qargs *qa, int64_t d_in) {
  if (qa->strategy != SQ_QSTRAT_GROUP) return 1;
  return (d_in + qa->group_size - 1) / qa->group_size;
}

/* Scale tensor shape: [1] for tensor, (rows, cols) otherwise. */
static int scale_shape(const sq_qargs *qa, int64_t d_out, int64_t d_in, int64_t shape[2]) {
  if (qa->strategy == SQ_QSTRAT_TENSOR) {
    shape[0] = 1;
    return 1;
  }
  shape[0] = d_out;
  shape[1] = sq_ct_scale_cols(qa, d_in);
  return 2;
}

/* Asymmetric pack-quantized zero points are packed only for group/channel
 * (PackedQuantizationCompressor); a tensor-strategy zero point stays I8 [1]. */
static bool zp_packed(sq_ct_format fmt, const sq_qargs *qa) {
  return fmt == SQ_CT_FMT_PACK &&
         (qa->strategy == SQ_QSTRAT_GROUP || qa->strategy == SQ_QSTRAT_CHANNEL);
}

static bool has_zp(const sq_qargs *qa) { return qa->type == SQ_QTYPE_INT && !qa->symmetric; }

static sq_status check_args(sq_ct_format fmt, const char *name, const sq_qargs *qa, int64_t d_out,
                            int64_t d_in) {
  if (!name || !qa || d_out <= 0 || d_in <= 0)
    return sq_error_set(SQ_ERR_ARG, "%s: bad module arguments (d_out %lld, d_in %lld)",
                        name ? name : "(null)", (long long)d_out, (long long)d_in);
  if (qa->strategy != SQ_QSTRAT_TENSOR && qa->strategy != SQ_QSTRAT_CHANNEL &&
      qa->strategy != SQ_QSTRAT_GROUP)
    return sq_error_set(SQ_ERR_UNSUPPORTED,
                        "%s: weight strategy %d is not written by shardq -- hint: use tensor, "
                        "channel or group",
                        name, (int)qa->strategy);
  if (qa->strategy == SQ_QSTRAT_GROUP && qa->group_size <= 0)
    return sq_error_set(SQ_ERR_ARG, "%s: group strategy needs group_size > 0", name);
  if (qa->scale_dtype != SQ_DTYPE_F32 && qa->scale_dtype != SQ_DTYPE_F16 &&
      qa->scale_dtype != SQ_DTYPE_BF16)
    return sq_error_set(SQ_ERR_ARG, "%s: scale dtype must be F32, F16 or BF16", name);
  switch (fmt) {
  case SQ_CT_FMT_PACK:
    if (qa->type != SQ_QTYPE_INT || qa->num_bits < 2 || qa->num_bits > 8)
      return sq_error_set(SQ_ERR_ARG, "%s: pack-quantized needs int weights of 2..8 bits", name);
    break;
  case SQ_CT_FMT_INT:
  case SQ_CT_FMT_NAIVE:
    if (qa->type != SQ_QTYPE_INT || qa->num_bits < 2 || qa->num_bits > 8)
      return sq_error_set(SQ_ERR_ARG, "%s: %s needs int weights of 2..8 bits", name,
                          sq_ct_format_name(fmt));
    break;
  case SQ_CT_FMT_FLOAT:
    if (qa->type != SQ_QTYPE_FLOAT || qa->num_bits != 8)
      return sq_error_set(SQ_ERR_ARG, "%s: float-quantized needs 8-bit float weights", name);
    break;
  default:
    return sq_error_set(SQ_ERR_ARG, "%s: format %s has no quantized module tensors", name,
                        sq_ct_format_name(fmt));
  }
  return SQ_OK;
}

/* "<name>.<suffix>" into buf. */
static sq_status tname(char *buf, size_t cap, const char *name, const char *suffix) {
  if ((size_t)snprintf(buf, cap, "%s.%s", name, suffix) >= cap)
    return sq_error_set(SQ_ERR_ARG, "%s: module name too long", name);
  return SQ_OK;
}

uint64_t sq_ct_module_bytes(sq_ct_format fmt, const sq_qargs *qa, int64_t d_out, int64_t d_in,
                            bool has_gidx) {
  uint64_t nscale = (uint64_t)sq_ct_scale_rows(qa, d_out) * (uint64_t)sq_ct_scale_cols(qa, d_in);
  uint64_t b = nscale * sq_dtype_size(qa->scale_dtype);
  if (fmt == SQ_CT_FMT_PACK) {
    b += (uint64_t)d_out * (uint64_t)sq_pack_words(d_in, qa->num_bits) * 4u + 2u * 8u;
    if (has_zp(qa))
      b += zp_packed(fmt, qa)
               ? (uint64_t)sq_pack_words(d_out, qa->num_bits) * (uint64_t)sq_ct_scale_cols(qa, d_in) * 4u
               : nscale;
  } else {
    b += (uint64_t)d_out * (uint64_t)d_in; /* I8 or F8_E4M3 */
    if (has_zp(qa)) b += nscale;
  }
  if (has_gidx) b += (uint64_t)d_in * 4u;
  return b;
}

sq_status sq_ct_declare_module(sq_st_writer *w, sq_ct_format fmt, const char *name,
                               const sq_qargs *qa, int64_t d_out, int64_t d_in, bool has_gidx) {
  SQ_CHECK(check_args(fmt, name, qa, d_out, d_in));
  char t[512];
  int64_t shape[2];
  int sdim = scale_shape(qa, d_out, d_in, shape);
  if (fmt == SQ_CT_FMT_PACK) {
    int64_t packed[2] = {d_out, sq_pack_words(d_in, qa->num_bits)}, two = 2;
    SQ_CHECK(tname(t, sizeof t, name, "weight_packed"));
    SQ_CHECK(sq_st_writer_declare(w, t, SQ_DTYPE_I32, 2, packed));
    SQ_CHECK(tname(t, sizeof t, name, "weight_scale"));
    SQ_CHECK(sq_st_writer_declare(w, t, qa->scale_dtype, sdim, shape));
    SQ_CHECK(tname(t, sizeof t, name, "weight_shape"));
    SQ_CHECK(sq_st_writer_declare(w, t, SQ_DTYPE_I64, 1, &two));
  } else {
    int64_t wshape[2] = {d_out, d_in};
    SQ_CHECK(tname(t, sizeof t, name, "weight"));
    SQ_CHECK(sq_st_writer_declare(w, t, fmt == SQ_CT_FMT_FLOAT ? SQ_DTYPE_F8_E4M3 : SQ_DTYPE_I8, 2,
                                  wshape));
    SQ_CHECK(tname(t, sizeof t, name, "weight_scale"));
    SQ_CHECK(sq_st_writer_declare(w, t, qa->scale_dtype, sdim, shape));
  }
  if (has_zp(qa)) {
    SQ_CHECK(tname(t, sizeof t, name, "weight_zero_point"));
    if (zp_packed(fmt, qa)) {
      int64_t zshape[2] = {sq_pack_words(d_out, qa->num_bits), sq_ct_scale_cols(qa, d_in)};
      SQ_CHECK(sq_st_writer_declare(w, t, SQ_DTYPE_I32, 2, zshape));
    } else {
      SQ_CHECK(sq_st_writer_declare(w, t, SQ_DTYPE_I8, sdim, shape));
    }
  }
  if (has_gidx) {
    SQ_CHECK(tname(t, sizeof t, name, "weight_g_idx"));
    SQ_CHECK(sq_st_writer_declare(w, t, SQ_DTYPE_I32, 1, &d_in));
  }
  return SQ_OK;
}

/* Code range check: a code outside the signed range of bits would corrupt
 * its neighbours when packed. */
static sq_status check_code(const char *name, const char *what, int64_t r, int64_t c, int v,
                            int bits) {
  if (v < sq_q_min(bits) || v > sq_q_max(bits))
    return sq_error_set(SQ_ERR_ARG, "%s: %s[%lld, %lld] = %d is outside the %d-bit range [%d, %d]",
                        name, what, (long long)r, (long long)c, v, bits, sq_q_min(bits),
                        sq_q_max(bits));
  return SQ_OK;
}

sq_status sq_ct_write_module(sq_st_writer *w, sq_ct_format fmt, const char *name,
                             const sq_qargs *qa, int64_t d_out, int64_t d_in, const int8_t *codes,
                             const float *scales, const int32_t *zero_points,
                             const int32_t *g_idx) {
  SQ_CHECK(check_args(fmt, name, qa, d_out, d_in));
  if (!codes || !scales)
    return sq_error_set(SQ_ERR_ARG, "%s: codes and scales are required", name);
  if (has_zp(qa) && !zero_points)
    return sq_error_set(SQ_ERR_ARG, "%s: asymmetric quantization needs zero points", name);
  const int bits = qa->num_bits;
  const int64_t srows = sq_ct_scale_rows(qa, d_out), scols = sq_ct_scale_cols(qa, d_in);
  char t[512];
  sq_status st = SQ_OK;
  void *buf = NULL;
  if (qa->type == SQ_QTYPE_INT)
    for (int64_t r = 0; r < d_out; ++r)
      for (int64_t c = 0; c < d_in; ++c)
        SQ_CHECK(check_code(name, "code", r, c, codes[r * d_in + c], bits));
  if (has_zp(qa))
    for (int64_t r = 0; r < srows; ++r)
      for (int64_t c = 0; c < scols; ++c)
        SQ_CHECK(check_code(name, "zero point", r, c, zero_points[r * scols + c], bits));
  if (g_idx)
    for (int64_t c = 0; c < d_in; ++c)
      if (g_idx[c] < 0 || g_idx[c] >= scols)
        return sq_error_set(SQ_ERR_ARG, "%s: g_idx[%lld] = %d is not a group in [0, %lld)", name,
                            (long long)c, g_idx[c], (long long)scols);

  if (fmt == SQ_CT_FMT_PACK) {
    const int pf = sq_pack_factor(bits);
    const int64_t words = sq_pack_words(d_in, bits);
    /* (d_out, words) int32 words, value j of a row in word j / pf, slot j % pf. */
    uint32_t *packed = calloc((size_t)(d_out * words), sizeof *packed);
    buf = packed;
    if (!packed) return sq_error_set(SQ_ERR_NOMEM, "%s: out of memory packing", name);
    for (int64_t r = 0; r < d_out; ++r)
      for (int64_t c = 0; c < d_in; ++c)
        packed[r * words + c / pf] |= sq_pack_slot(codes[r * d_in + c], (int)(c % pf), bits);
    SQ_CHECK_GOTO(tname(t, sizeof t, name, "weight_packed"), st, done);
    SQ_CHECK_GOTO(sq_st_writer_write(w, t, packed), st, done);
    int64_t shape[2] = {d_out, d_in};
    SQ_CHECK_GOTO(tname(t, sizeof t, name, "weight_shape"), st, done);
    SQ_CHECK_GOTO(sq_st_writer_write(w, t, shape), st, done);
  } else {
    /* I8 codes and F8_E4M3 bit patterns are both one byte per element as given. */
    SQ_CHECK_GOTO(tname(t, sizeof t, name, "weight"), st, done);
    SQ_CHECK_GOTO(sq_st_writer_write(w, t, codes), st, done);
  }
  SQ_CHECK_GOTO(tname(t, sizeof t, name, "weight_scale"), st, done);
  SQ_CHECK_GOTO(sq_st_writer_write_f32(w, t, scales), st, done);

  if (has_zp(qa)) {
    free(buf);
    buf = NULL;
    SQ_CHECK_GOTO(tname(t, sizeof t, name, "weight_zero_point"), st, done);
    if (zp_packed(fmt, qa)) {
      /* zero points (d_out, scols) packed along d_out: (ceil(d_out / pf), scols). */
      const int pf = sq_pack_factor(bits);
      const int64_t zrows = sq_pack_words(d_out, bits);
      uint32_t *zp = calloc((size_t)(zrows * scols), sizeof *zp);
      buf = zp;
      if (!zp) {
        st = sq_error_set(SQ_ERR_NOMEM, "%s: out of memory packing zero points", name);
        goto done;
      }
      for (int64_t r = 0; r < d_out; ++r)
        for (int64_t c = 0; c < scols; ++c)
          zp[(r / pf) * scols + c] |= sq_pack_slot(zero_points[r * scols + c], (int)(r % pf), bits);
      SQ_CHECK_GOTO(sq_st_writer_write(w, t, zp), st, done);
    } else {
      int8_t *zp = malloc((size_t)(srows * scols));
      buf = zp;
      if (!zp) {
        st = sq_error_set(SQ_ERR_NOMEM, "%s: out of memory", name);
        goto done;
      }
      for (int64_t i = 0; i < srows * scols; ++i) zp[i] = (int8_t)zero_points[i];
      SQ_CHECK_GOTO(sq_st_writer_write(w, t, zp), st, done);
    }
  }
  if (g_idx) {
    SQ_CHECK_GOTO(tname(t, sizeof t, name, "weight_g_idx"), st, done);
    SQ_CHECK_GOTO(sq_st_writer_write(w, t, g_idx), st, done);
  }
done:
  free(buf);
  return st;
}
