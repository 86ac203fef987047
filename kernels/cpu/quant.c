/* CPU reference of the tensor-level quantizers in kernels/quant.h: RTN of a
 * weight over its scale cells (tensor, channel rows, or row x column-group),
 * dequantization, and dynamic per-token activation fake quantization. The
 * per-element math is the shared static inline code of kernels/quant_math.h. */
#include <math.h>
#include <stddef.h>

#include "kernels/quant.h"

static const char *nm(const char *name) { return name ? name : "(unnamed tensor)"; }

int64_t sq_quant_num_groups(const sq_qargs *qa, int64_t d_in) {
  if (qa->strategy != SQ_QSTRAT_GROUP || qa->group_size < 1) return 1;
  return (d_in + qa->group_size - 1) / qa->group_size;
}

int64_t sq_quant_scale_rows(const sq_qargs *qa, int64_t d_out) {
  return qa->strategy == SQ_QSTRAT_TENSOR ? 1 : d_out;
}

static sq_status check_elem_args(const sq_qargs *qa, const char *name) {
  if (qa->type == SQ_QTYPE_FLOAT) {
    if (qa->num_bits != 8)
      return sq_error_set(SQ_ERR_UNSUPPORTED,
                          "%s: float quantization with %d bits is not supported -- hint: use 8 "
                          "(fp8 e4m3)",
                          name, qa->num_bits);
    if (!qa->symmetric)
      return sq_error_set(SQ_ERR_UNSUPPORTED,
                          "%s: asymmetric fp8 quantization is not supported -- hint: set "
                          "symmetric: true",
                          name);
  } else if (qa->type == SQ_QTYPE_INT) {
    if (qa->num_bits != 2 && qa->num_bits != 3 && qa->num_bits != 4 && qa->num_bits != 8)
      return sq_error_set(SQ_ERR_UNSUPPORTED,
                          "%s: int quantization with %d bits is not supported -- hint: use 2, "
                          "3, 4 or 8",
                          name, qa->num_bits);
  } else {
    return sq_error_set(SQ_ERR_ARG, "%s: unknown quantization type %d", name, (int)qa->type);
  }
  if (qa->scale_dtype != SQ_DTYPE_F32 && qa->scale_dtype != SQ_DTYPE_F16 &&
      qa->scale_dtype != SQ_DTYPE_BF16)
    return sq_error_set(SQ_ERR_UNSUPPORTED,
                        "%s: scale dtype %s is not supported -- hint: scales are stored as "
                        "F32, F16 or BF16",
                        name, sq_dtype_name(qa->scale_dtype));
  return SQ_OK;
}

sq_status sq_quant_check_args(const sq_qargs *qa, const char *name, int64_t d_out, int64_t d_in) {
  name = nm(name);
  if (!qa) return sq_error_set(SQ_ERR_ARG, "%s: no quantization arguments", name);
  if (d_out < 1 || d_in < 1)
    return sq_error_set(SQ_ERR_ARG, "%s: weight shape (%lld, %lld) is empty", name,
                        (long long)d_out, (long long)d_in);
  SQ_CHECK(check_elem_args(qa, name));
  switch (qa->strategy) {
  case SQ_QSTRAT_TENSOR:
  case SQ_QSTRAT_CHANNEL: return SQ_OK;
  case SQ_QSTRAT_GROUP:
    if (qa->group_size < 1)
      return sq_error_set(SQ_ERR_ARG,
                          "%s: group strategy needs group_size >= 1 (got %d) -- hint: e.g. 128",
                          name, qa->group_size);
    return SQ_OK;
  case SQ_QSTRAT_BLOCK:
    return sq_error_set(SQ_ERR_UNSUPPORTED,
                        "%s: block-wise weight scales are not supported -- hint: use group or "
                        "channel",
                        name);
  default:
    return sq_error_set(SQ_ERR_UNSUPPORTED,
                        "%s: strategy %d is not a weight strategy -- hint: use tensor, channel "
                        "or group",
                        name, (int)qa->strategy);
  }
}

/* Rows [*r0, *r1) and columns [*c0, *c1) of scale cell (r, g). */
static void cell_bounds(const sq_qargs *qa, int64_t d_out, int64_t d_in, int64_t r, int64_t g,
                        int64_t *r0, int64_t *r1, int64_t *c0, int64_t *c1) {
  if (qa->strategy == SQ_QSTRAT_TENSOR) {
    *r0 = 0, *r1 = d_out, *c0 = 0, *c1 = d_in;
    return;
  }
  *r0 = r, *r1 = r + 1;
  if (qa->strategy == SQ_QSTRAT_GROUP) {
    *c0 = g * qa->group_size;
    *c1 = *c0 + qa->group_size < d_in ? *c0 + qa->group_size : d_in;
  } else {
    *c0 = 0, *c1 = d_in;
  }
}

sq_status sq_quant_rtn(const sq_qargs *qa, const char *name, const float *W, int64_t d_out,
                       int64_t d_in, int8_t *codes, float *scales, int32_t *zero_points,
                       float *W_deq) {
  name = nm(name);
  SQ_CHECK(sq_quant_check_args(qa, name, d_out, d_in));
  if (!W || !codes || !scales)
    return sq_error_set(SQ_ERR_ARG, "%s: sq_quant_rtn needs W, codes and scales", name);
  int asym_int = qa->type == SQ_QTYPE_INT && !qa->symmetric;
  if (asym_int && !zero_points)
    return sq_error_set(SQ_ERR_ARG, "%s: asymmetric quantization needs a zero_points buffer",
                        name);
  int64_t n_rows = sq_quant_scale_rows(qa, d_out), n_groups = sq_quant_num_groups(qa, d_in);
  for (int64_t r = 0; r < n_rows; ++r) {
    for (int64_t g = 0; g < n_groups; ++g) {
      int64_t r0, r1, c0, c1;
      cell_bounds(qa, d_out, d_in, r, g, &r0, &r1, &c0, &c1);
      float lo = INFINITY, hi = -INFINITY;
      for (int64_t i = r0; i < r1; ++i) {
        const float *w = W + i * d_in;
        for (int64_t j = c0; j < c1; ++j) {
          if (!isfinite(w[j]))
            return sq_error_set(SQ_ERR_NUMERIC,
                                "%s: weight element (%lld, %lld) is %g -- hint: the checkpoint "
                                "or an earlier layer's update is corrupt",
                                name, (long long)i, (long long)j, (double)w[j]);
          lo = fminf(lo, w[j]);
          hi = fmaxf(hi, w[j]);
        }
      }
      float s;
      int z;
      sq_q_params(*qa, lo, hi, &s, &z);
      scales[r * n_groups + g] = s;
      if (asym_int) zero_points[r * n_groups + g] = z;
      for (int64_t i = r0; i < r1; ++i) {
        for (int64_t j = c0; j < c1; ++j) {
          int8_t q = sq_q_quantize(*qa, W[i * d_in + j], s, z);
          codes[i * d_in + j] = q;
          if (W_deq) W_deq[i * d_in + j] = sq_q_dequantize(*qa, q, s, z);
        }
      }
    }
  }
  return SQ_OK;
}

sq_status sq_quant_dequant(const sq_qargs *qa, const char *name, const int8_t *codes,
                           const float *scales, const int32_t *zero_points, int64_t d_out,
                           int64_t d_in, float *W_deq) {
  name = nm(name);
  SQ_CHECK(sq_quant_check_args(qa, name, d_out, d_in));
  if (!codes || !scales || !W_deq)
    return sq_error_set(SQ_ERR_ARG, "%s: sq_quant_dequant needs codes, scales and W_deq", name);
  int asym_int = qa->type == SQ_QTYPE_INT && !qa->symmetric;
  if (asym_int && !zero_points)
    return sq_error_set(SQ_ERR_ARG, "%s: asymmetric dequantization needs zero points", name);
  int64_t n_groups = sq_quant_num_groups(qa, d_in);
  int64_t gs = qa->strategy == SQ_QSTRAT_GROUP ? qa->group_size : d_in;
  for (int64_t i = 0; i < d_out; ++i) {
    int64_t srow = qa->strategy == SQ_QSTRAT_TENSOR ? 0 : i;
    for (int64_t j = 0; j < d_in; ++j) {
      int64_t k = srow * n_groups + j / gs;
      int z = asym_int ? zero_points[k] : 0;
      W_deq[i * d_in + j] = sq_q_dequantize(*qa, codes[i * d_in + j], scales[k], z);
    }
  }
  return SQ_OK;
}

sq_status sq_quant_act_fake_per_token(const sq_qargs *qa, const char *name, const float *X,
                                      int64_t T, int64_t d, float *Y) {
  name = nm(name);
  if (!qa || !X || !Y)
    return sq_error_set(SQ_ERR_ARG, "%s: sq_quant_act_fake_per_token needs qa, X and Y", name);
  if (T < 0 || d < 1)
    return sq_error_set(SQ_ERR_ARG, "%s: activation shape (%lld, %lld) is invalid", name,
                        (long long)T, (long long)d);
  SQ_CHECK(check_elem_args(qa, name));
  for (int64_t t = 0; t < T; ++t) {
    const float *x = X + t * d;
    float *y = Y + t * d;
    float lo = INFINITY, hi = -INFINITY;
    for (int64_t j = 0; j < d; ++j) {
      if (!isfinite(x[j]))
        return sq_error_set(SQ_ERR_NUMERIC,
                            "%s: activation (token %lld, channel %lld) is %g -- hint: the "
                            "layer input overflowed; check the previous layer",
                            name, (long long)t, (long long)j, (double)x[j]);
      lo = fminf(lo, x[j]);
      hi = fmaxf(hi, x[j]);
    }
    float s;
    int z;
    sq_q_params(*qa, lo, hi, &s, &z);
    for (int64_t j = 0; j < d; ++j) y[j] = sq_q_dequantize(*qa, sq_q_quantize(*qa, x[j], s, z), s, z);
  }
  return SQ_OK;
}
