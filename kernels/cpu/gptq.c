/* CPU reference of kernels/gptq.h: GPTQ with lazy batch updates. Within a
 * block every row is swept column by column (rows are independent there, and
 * a row keeps the (B, B) block of U hot in cache); the rest of the matrix is
 * updated by one cblas_sgemm per block. Work is in the act-order permuted
 * column space and un-permuted at the end. */
#include "kernels/gptq.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/solver_common.h"

sq_gptq_opts sq_gptq_opts_default(void) {
  sq_gptq_opts o;
  memset(&o, 0, sizeof(o));
  o.q.num_bits = 4;
  o.q.type = SQ_QTYPE_INT;
  o.q.symmetric = 1;
  o.q.strategy = SQ_QSTRAT_CHANNEL;
  o.q.group_size = 128;
  o.q.scale_dtype = SQ_DTYPE_F32;
  o.actorder = SQ_ACTORDER_NONE;
  o.block_size = 128;
  o.damp_frac = 0.01f;
  o.damp_retries = 4;
  return o;
}

int64_t sq_gptq_scale_count(const sq_qargs *q, int64_t d_out, int64_t d_in) {
  if (q->strategy == SQ_QSTRAT_TENSOR) return 1;
  return d_out * sq_solver_groups(q, d_in);
}

/* Act-order: columns by descending diag(H), ties by column (deterministic).
 * Sorting (key, index) pairs keeps qsort free of global state. */
typedef struct sort_pair {
  float key;
  int64_t idx;
} sort_pair;

static int cmp_desc(const void *a, const void *b) {
  const sort_pair *x = a, *y = b;
  if (x->key > y->key) return -1;
  if (x->key < y->key) return 1;
  return (x->idx > y->idx) - (x->idx < y->idx);
}

typedef struct gptq_ws {
  float *U;      /* (d_in, d_in) upper Cholesky factor of H^-1 (permuted) */
  float *Wp;     /* (d_out, d_in) working weights, permuted columns */
  int8_t *Cp;    /* (d_out, d_in) codes, permuted columns */
  float *E;      /* (d_out, B) scaled errors of the current block */
  int64_t *perm; /* (d_in) quantization order -> original column */
  int32_t *grp;  /* (d_in) scale group of each permuted column */
  sort_pair *pairs; /* (d_in) diag(H) and column, for the act-order sort */
} gptq_ws;

static size_t carve(sq_ws_carver *c, gptq_ws *w, int64_t d_out, int64_t d_in, int64_t B) {
  w->U = sq_ws_take(c, (size_t)(d_in * d_in) * sizeof(float));
  w->Wp = sq_ws_take(c, (size_t)(d_out * d_in) * sizeof(float));
  w->Cp = sq_ws_take(c, (size_t)(d_out * d_in));
  w->E = sq_ws_take(c, (size_t)(d_out * B) * sizeof(float));
  w->perm = sq_ws_take(c, (size_t)d_in * sizeof(int64_t));
  w->grp = sq_ws_take(c, (size_t)d_in * sizeof(int32_t));
  w->pairs = sq_ws_take(c, (size_t)d_in * sizeof(sort_pair));
  return c->used + 64;
}

size_t sq_gptq_workspace_bytes(int64_t d_out, int64_t d_in, const sq_gptq_opts *opts) {
  sq_ws_carver c = {NULL, 0};
  gptq_ws w;
  int64_t B = opts && opts->block_size > 0 ? opts->block_size : 128;
  return carve(&c, &w, d_out, d_in, B);
}

static sq_status check_args(const char *name, const float *W, const float *H, int64_t d_out,
                            int64_t d_in, const sq_gptq_opts *o, const sq_gptq_out *out) {
  if (!W || !H || !o || !out || !out->codes || !out->scales || !out->zero_points ||
      !out->g_idx || !out->deq)
    return sq_error_set(SQ_ERR_ARG, "%s: GPTQ needs W, H, options and every output buffer",
                        name);
  if (d_out <= 0 || d_in <= 0)
    return sq_error_set(SQ_ERR_ARG, "%s: bad weight shape (%lld, %lld)", name,
                        (long long)d_out, (long long)d_in);
  if (o->block_size <= 0)
    return sq_error_set(SQ_ERR_ARG, "%s: block_size must be positive", name);
  if (!(o->damp_frac >= 0.0f) || o->damp_retries < 0)
    return sq_error_set(SQ_ERR_ARG, "%s: bad damping (frac %g, retries %d)", name,
                        (double)o->damp_frac, o->damp_retries);
  SQ_CHECK(sq_solver_check_qargs(name, &o->q));
  SQ_CHECK(sq_solver_check_finite(name, "weight", W, d_out, d_in));
  SQ_CHECK(sq_solver_check_finite(name, "Hessian", H, d_in, d_in));
  return SQ_OK;
}

/* Scale and zero point of group g of row r, from the error-updated weights of
 * the group's permuted columns [k, e): [k, i2) are current in the row, columns
 * [i2, e) still lack the pending update -E[r, 0:i] @ U[i1:i1+i, j]. */
static void dynamic_params(const sq_qargs *q, const gptq_ws *w, int64_t d_in, int64_t B,
                           int64_t r, int64_t i1, int64_t i2, int64_t k, float *s, int *z) {
  int64_t e = k + q->group_size < d_in ? k + q->group_size : d_in;
  const float *row = w->Wp + r * d_in;
  float lo = row[k], hi = row[k];
  int64_t in_end = e < i2 ? e : i2;
  for (int64_t j = k + 1; j < in_end; ++j) {
    lo = fminf(lo, row[j]);
    hi = fmaxf(hi, row[j]);
  }
  const float *er = w->E + r * B;
  int64_t done = k - i1; /* columns of this block already swept in row r */
  for (int64_t j = i2; j < e; ++j) {
    float v = row[j];
    for (int64_t t = 0; t < done; ++t) v -= er[t] * w->U[(i1 + t) * d_in + j];
    lo = fminf(lo, v);
    hi = fmaxf(hi, v);
  }
  sq_q_int_params(lo, hi, q->num_bits, q->symmetric, q->scale_dtype, s, z);
}

sq_status sq_gptq_quantize(const char *name, const float *W, const float *H, int64_t d_out,
                           int64_t d_in, const sq_gptq_opts *opts, void *ws, size_t ws_bytes,
                           sq_gptq_out *out) {
  if (!name) name = "?";
  SQ_CHECK(check_args(name, W, H, d_out, d_in, opts, out));
  const sq_qargs *q = &opts->q;
  const int64_t B = opts->block_size;
  const int is_group = q->strategy == SQ_QSTRAT_GROUP;
  const int64_t gs = is_group ? q->group_size : d_in;
  const int64_t ng = sq_solver_groups(q, d_in);
  const sq_actorder ao = opts->actorder;
  /* actorder WEIGHT fixes the (original-order) groups up front. */
  const int dynamic = is_group && !opts->static_groups && ao != SQ_ACTORDER_WEIGHT;

  size_t need = sq_gptq_workspace_bytes(d_out, d_in, opts);
  void *owned = NULL;
  sq_ws_carver c;
  SQ_CHECK(sq_solver_workspace(name, "GPTQ", ws, ws_bytes, need, &owned, &c));
  sq_status st = SQ_OK;
  gptq_ws w;
  carve(&c, &w, d_out, d_in, B);

  /* 1-2. act-order permutation and the permuted working copy of W. */
  if (ao != SQ_ACTORDER_NONE) {
    for (int64_t i = 0; i < d_in; ++i) {
      w.pairs[i].key = H[i * d_in + i];
      w.pairs[i].idx = i;
    }
    qsort(w.pairs, (size_t)d_in, sizeof(sort_pair), cmp_desc);
    for (int64_t i = 0; i < d_in; ++i) w.perm[i] = w.pairs[i].idx;
  } else {
    for (int64_t i = 0; i < d_in; ++i) w.perm[i] = i;
  }
  for (int64_t r = 0; r < d_out; ++r)
    for (int64_t k = 0; k < d_in; ++k) w.Wp[r * d_in + k] = W[r * d_in + w.perm[k]];
  for (int64_t k = 0; k < d_in; ++k)
    w.grp[k] = !is_group ? 0 : (int32_t)((ao == SQ_ACTORDER_WEIGHT ? w.perm[k] : k) / gs);

  /* Parameters fixed up front come from the original (not dead-zeroed) W, as
   * llm-compressor's observer runs before the dead-column mask. */
  if (!dynamic)
    sq_solver_static_params(q, ao == SQ_ACTORDER_WEIGHT ? W : w.Wp, d_out, d_in, out->scales,
                            out->zero_points);

  /* 3-4. dead columns, damping, U = chol(H^-1)^T. */
  SQ_CHECK_GOTO(sq_solver_prepare_hinv(name, H, ao != SQ_ACTORDER_NONE ? w.perm : NULL, w.Wp,
                                       d_out, d_in, opts->damp_frac, opts->damp_retries, w.U,
                                       &out->damp),
                st, done);

  /* 5. blocked sweep. */
  double loss = 0.0;
  for (int64_t i1 = 0; i1 < d_in; i1 += B) {
    const int64_t i2 = i1 + B < d_in ? i1 + B : d_in, cnt = i2 - i1;
    for (int64_t r = 0; r < d_out; ++r) {
      float *row = w.Wp + r * d_in;
      int8_t *crow = w.Cp + r * d_in;
      float *er = w.E + r * B;
      int64_t cell = q->strategy == SQ_QSTRAT_TENSOR ? 0 : r * ng;
      double rloss = 0.0;
      for (int64_t i = 0; i < cnt; ++i) {
        const int64_t k = i1 + i;
        const float *urow = w.U + k * d_in;
        int64_t sc = q->strategy == SQ_QSTRAT_TENSOR ? 0 : cell + w.grp[k];
        if (dynamic && k % gs == 0) {
          float s;
          int z;
          dynamic_params(q, &w, d_in, B, r, i1, i2, k, &s, &z);
          out->scales[sc] = s;
          out->zero_points[sc] = z;
        }
        const float s = out->scales[sc];
        const int z = out->zero_points[sc];
        const float x = row[k], d = urow[k];
        const int code = sq_q_int_quantize(x, s, z, q->num_bits);
        const float qv = sq_q_int_dequantize(code, s, z, q->scale_dtype);
        const float err = (x - qv) / d;
        rloss += (double)err * (double)err;
        crow[k] = (int8_t)code;
        row[k] = qv;
        er[i] = err;
        for (int64_t j = k + 1; j < i2; ++j) row[j] -= err * urow[j];
      }
      loss += rloss;
    }
    /* Lazy batch update: W[:, i2:] -= E (d_out, cnt) @ U[i1:i2, i2:]. */
    if (i2 < d_in)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)d_out,
                  (blasint)(d_in - i2), (blasint)cnt, -1.0f, w.E, (blasint)B,
                  w.U + i1 * d_in + i2, (blasint)d_in, 1.0f, w.Wp + i2, (blasint)d_in);
  }
  out->loss = loss / 2.0;

  /* Un-permute; g_idx maps each original column to its scale group. */
  for (int64_t r = 0; r < d_out; ++r) {
    for (int64_t k = 0; k < d_in; ++k) {
      out->deq[r * d_in + w.perm[k]] = w.Wp[r * d_in + k];
      out->codes[r * d_in + w.perm[k]] = w.Cp[r * d_in + k];
    }
  }
  for (int64_t k = 0; k < d_in; ++k) out->g_idx[w.perm[k]] = w.grp[k];
  out->has_g_idx = is_group && ao == SQ_ACTORDER_GROUP;
  if (!out->has_g_idx && is_group) /* identity anyway; keep it explicit */
    for (int64_t j = 0; j < d_in; ++j) out->g_idx[j] = (int32_t)(j / gs);

done:
  free(owned);
  return st;
}
