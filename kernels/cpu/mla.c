/* CPU reference of DeepSeek-V3 multi-head latent attention (kernels/mla.h):
 * YaRN inverse frequencies and cos/sin tables, the low-rank q and kv
 * projections with their RMSNorms, interleaved RoPE on the decoupled rope
 * parts, causal attention with the YaRN-adjusted scale, and o_proj, with the
 * calibration hooks on each Linear group's input. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/forward_math.h"
#include "kernels/mla.h"

/* Query rows per block of the causal attention (as kernels/cpu/attention.c). */
#define QBLK 256

/* ---- RoPE / YaRN ---- */

static double get_mscale(double scale, double m) {
  return scale <= 1.0 ? 1.0 : 0.1 * m * log(scale) + 1.0;
}

static double corr_dim(double n_rot, int dim, double base, double max_pos) {
  return ((double)dim * log(max_pos / (n_rot * 2.0 * M_PI))) / (2.0 * log(base));
}

sq_status sq_mla_rope_inv_freq(const sq_mla_rope_cfg *cfg, float *inv_freq,
                               float *attention_factor) {
  if (!cfg || !inv_freq || cfg->dim <= 0 || cfg->dim % 2 != 0)
    return sq_error_set(SQ_ERR_ARG, "mla rope: qk_rope_head_dim %d must be positive and even",
                        cfg ? cfg->dim : -1);
  if (!(cfg->theta > 1.0))
    return sq_error_set(SQ_ERR_ARG, "mla rope: rope_theta %g must be > 1", cfg->theta);
  const int dim = cfg->dim, half = dim / 2;
  const float base = (float)cfg->theta;
  if (!cfg->yarn) {
    for (int i = 0; i < half; i++) inv_freq[i] = sq_fm_rope_inv_freq(i, dim, base);
    if (attention_factor) *attention_factor = 1.0f;
    return SQ_OK;
  }
  if (!(cfg->factor > 0.0) || cfg->original_max_position <= 0)
    return sq_error_set(SQ_ERR_ARG,
                        "mla rope yarn: need factor > 0 and original_max_position_embeddings > 0 "
                        "(got %g, %lld)",
                        cfg->factor, (long long)cfg->original_max_position);
  double beta_fast = cfg->beta_fast != 0.0 ? cfg->beta_fast : 32.0;
  double beta_slow = cfg->beta_slow != 0.0 ? cfg->beta_slow : 1.0;
  double omax = (double)cfg->original_max_position;
  double low = corr_dim(beta_fast, dim, cfg->theta, omax);
  double high = corr_dim(beta_slow, dim, cfg->theta, omax);
  if (!cfg->no_truncate) {
    low = floor(low);
    high = ceil(high);
  }
  if (low < 0.0) low = 0.0;
  if (high > dim - 1) high = dim - 1;
  if (low == high) high += 0.001; /* HF: prevent singularity */
  const float ff = (float)cfg->factor, lowf = (float)low, span = (float)(high - low);
  for (int i = 0; i < half; i++) {
    /* fp32 as torch: base ** (arange(0, dim, 2).float() / dim) */
    float pos = powf(base, (float)(2 * i) / (float)dim);
    float extra = 1.0f / pos, inter = 1.0f / (ff * pos);
    float ramp = ((float)i - lowf) / span;
    ramp = ramp < 0.0f ? 0.0f : (ramp > 1.0f ? 1.0f : ramp);
    float ef = 1.0f - ramp;
    inv_freq[i] = inter * (1.0f - ef) + extra * ef;
  }
  if (attention_factor) {
    double af = cfg->attention_factor;
    if (!(af > 0.0))
      af = (cfg->mscale != 0.0 && cfg->mscale_all_dim != 0.0)
               ? get_mscale(cfg->factor, cfg->mscale) / get_mscale(cfg->factor, cfg->mscale_all_dim)
               : get_mscale(cfg->factor, 1.0);
    *attention_factor = (float)af;
  }
  return SQ_OK;
}

double sq_mla_softmax_scale(const sq_mla_rope_cfg *cfg, int64_t qk_head_dim) {
  double s = pow((double)qk_head_dim, -0.5);
  if (cfg && cfg->yarn && cfg->mscale_all_dim != 0.0) {
    double m = get_mscale(cfg->factor, cfg->mscale_all_dim);
    s = s * m * m;
  }
  return s;
}

void sq_mla_rope_free(sq_mla_rope *r) {
  if (!r) return;
  free(r->inv_freq);
  free(r->cos);
  free(r->sin);
  memset(r, 0, sizeof *r);
}

sq_status sq_mla_rope_init(sq_mla_rope *r, const sq_mla_rope_cfg *cfg, int64_t max_t) {
  if (!r || !cfg || max_t <= 0 || cfg->dim <= 0 || cfg->dim % 2 != 0)
    return sq_error_set(SQ_ERR_ARG, "mla rope: max_t %lld and qk_rope_head_dim %d must be positive",
                        (long long)max_t, cfg ? cfg->dim : -1);
  memset(r, 0, sizeof *r);
  const int half = cfg->dim / 2;
  size_t n = (size_t)max_t * (size_t)half;
  r->inv_freq = malloc((size_t)half * sizeof(float));
  r->cos = malloc(n * sizeof(float));
  r->sin = malloc(n * sizeof(float));
  if (!r->inv_freq || !r->cos || !r->sin) {
    sq_mla_rope_free(r);
    return sq_error_set(SQ_ERR_NOMEM, "mla rope: cannot allocate tables for %lld positions",
                        (long long)max_t);
  }
  float af = 1.0f;
  sq_status st = sq_mla_rope_inv_freq(cfg, r->inv_freq, &af);
  if (st != SQ_OK) {
    sq_mla_rope_free(r);
    return st;
  }
  r->max_t = max_t;
  r->dim = cfg->dim;
  r->attention_factor = af;
  for (int64_t t = 0; t < max_t; t++)
    for (int i = 0; i < half; i++) {
      /* HF: fp32 angle, emb.cos() * attention_scaling in fp32 */
      double a = (double)sq_fm_rope_angle(t, r->inv_freq[i]);
      r->cos[(size_t)t * half + i] = (float)cos(a) * af;
      r->sin[(size_t)t * half + i] = (float)sin(a) * af;
    }
  return SQ_OK;
}

/* Rotate one rope vector v (dim) of position t in place; interleave first
 * de-interleaves it (HF view (dim/2, 2) -> transpose), tmp: dim floats. */
static void rope_vec(float *v, const sq_mla_rope *r, int64_t t, int interleave, float *tmp) {
  const int half = r->dim / 2;
  if (interleave) {
    for (int j = 0; j < half; j++) {
      tmp[j] = v[2 * j];
      tmp[half + j] = v[2 * j + 1];
    }
    memcpy(v, tmp, (size_t)r->dim * sizeof(float));
  }
  const float *c = r->cos + (size_t)t * half, *s = r->sin + (size_t)t * half;
  for (int j = 0; j < half; j++) sq_fm_rope_pair(&v[j], &v[half + j], c[j], s[j]);
}

/* ---- forward ---- */

static size_t r4(size_t n) {
  return (n + 3) & ~(size_t)3;
}

/* Workspace layout in floats (rows = B*T), each piece rounded to 4 floats:
 *   qa (rows, q_lora) | q (rows, H*qkh) | kva (rows, kv_lora+rope) | ckv (rows, kv_lora)
 *   kv (rows, H*(nope+v)) | att (rows, H*v) | S (min(T, QBLK), T) | tmp (rope) */
typedef struct mla_ws {
  float *qa, *q, *kva, *ckv, *kv, *att, *S, *tmp;
} mla_ws;

static size_t mla_ws_layout(const sq_mla_cfg *c, int64_t B, int64_t T, float *base, mla_ws *w) {
  const size_t rows = (size_t)(B * T), H = (size_t)c->n_heads;
  const size_t qkh = (size_t)(c->qk_nope + c->qk_rope);
  const size_t sizes[8] = {rows * (size_t)c->q_lora_rank,
                           rows * H * qkh,
                           rows * (size_t)(c->kv_lora_rank + c->qk_rope),
                           rows * (size_t)c->kv_lora_rank,
                           rows * H * (size_t)(c->qk_nope + c->v_head),
                           rows * H * (size_t)c->v_head,
                           (size_t)(T < QBLK ? T : QBLK) * (size_t)T,
                           (size_t)c->qk_rope};
  float **slots[8] = {&w->qa, &w->q, &w->kva, &w->ckv, &w->kv, &w->att, &w->S, &w->tmp};
  size_t off = 0;
  for (int i = 0; i < 8; i++) {
    if (base) *slots[i] = base + off;
    off += r4(sizes[i]);
  }
  return off;
}

size_t sq_mla_workspace_bytes(const sq_mla_cfg *cfg, int64_t B, int64_t T) {
  mla_ws w;
  return mla_ws_layout(cfg, B, T, NULL, &w) * sizeof(float);
}

static sq_status check_mla(const sq_mla_cfg *c, const sq_mla_weights *w, int64_t B, int64_t T) {
  if (!c || !w || c->hidden <= 0 || c->n_heads <= 0 || c->kv_lora_rank <= 0 || c->qk_nope < 0 ||
      c->qk_rope <= 0 || c->qk_rope % 2 != 0 || c->v_head <= 0 || c->q_lora_rank < 0)
    return sq_error_set(SQ_ERR_ARG,
                        "mla: hidden, heads, kv_lora_rank, v_head_dim and an even "
                        "qk_rope_head_dim must be positive");
  if (B <= 0 || T <= 0)
    return sq_error_set(SQ_ERR_ARG, "mla: B %lld and T %lld must be positive", (long long)B,
                        (long long)T);
  if (!c->rope || c->rope->dim != c->qk_rope || c->rope->max_t < T)
    return sq_error_set(SQ_ERR_ARG,
                        "mla: rope tables (dim %d, %lld positions) do not cover qk_rope_head_dim "
                        "%lld and T %lld",
                        c->rope ? c->rope->dim : 0, c->rope ? (long long)c->rope->max_t : 0LL,
                        (long long)c->qk_rope, (long long)T);
  int q_ok = c->q_lora_rank > 0 ? (w->q_a_proj && w->q_a_norm && w->q_b_proj) : w->q_proj != NULL;
  if (!q_ok || !w->kv_a_proj || !w->kv_a_norm || !w->kv_b_proj || !w->o_proj)
    return sq_error_set(SQ_ERR_ARG,
                        "mla: missing weights (q_lora_rank %lld needs %s; kv_a_proj_with_mqa, "
                        "kv_a_layernorm, kv_b_proj, o_proj always)",
                        (long long)c->q_lora_rank,
                        c->q_lora_rank > 0 ? "q_a_proj, q_a_layernorm, q_b_proj" : "q_proj");
  return SQ_OK;
}

sq_status sq_mla_forward(const sq_mla_cfg *c, const sq_mla_weights *w, const float *x, int64_t B,
                         int64_t T, const sq_mla_hooks *hooks, void *ws, float *y) {
  SQ_CHECK(check_mla(c, w, B, T));
  mla_ws s;
  mla_ws_layout(c, B, T, ws, &s);
  const int64_t rows = B * T, H = c->n_heads, D = c->hidden;
  const int64_t nope = c->qk_nope, rope = c->qk_rope, vh = c->v_head;
  const int64_t qkh = nope + rope, kvw = nope + vh, kal = c->kv_lora_rank + rope;
  const int64_t qw = H * qkh, kw = H * kvw, ow = H * vh;
  void *u = hooks ? hooks->user : NULL;

  if (hooks && hooks->qa_kva_in) SQ_CHECK(hooks->qa_kva_in(u, x, rows, D));
  /* q (rows, H*qkh) */
  if (c->q_lora_rank > 0) {
    const int64_t ql = c->q_lora_rank;
    sq_fwd_linear(x, rows, D, w->q_a_proj, ql, w->q_a_bias, s.qa);
    sq_fwd_rmsnorm(s.qa, w->q_a_norm, rows, ql, c->eps, s.qa);
    if (hooks && hooks->q_b_in) SQ_CHECK(hooks->q_b_in(u, s.qa, rows, ql));
    sq_fwd_linear(s.qa, rows, ql, w->q_b_proj, qw, NULL, s.q);
  } else {
    sq_fwd_linear(x, rows, D, w->q_proj, qw, NULL, s.q);
  }
  /* kva (rows, kv_lora + rope) = [compressed | k_pe]; ckv = RMSNorm(compressed) */
  sq_fwd_linear(x, rows, D, w->kv_a_proj, kal, w->kv_a_bias, s.kva);
  for (int64_t r = 0; r < rows; r++)
    sq_fwd_rmsnorm(s.kva + (size_t)r * kal, w->kv_a_norm, 1, c->kv_lora_rank, c->eps,
                   s.ckv + (size_t)r * c->kv_lora_rank);
  if (hooks && hooks->kv_b_in) SQ_CHECK(hooks->kv_b_in(u, s.ckv, rows, c->kv_lora_rank));
  sq_fwd_linear(s.ckv, rows, c->kv_lora_rank, w->kv_b_proj, kw, NULL, s.kv);
  /* RoPE on every head's q_pe and on the shared k_pe, position = row % T */
  for (int64_t r = 0; r < rows; r++) {
    int64_t t = r % T;
    for (int64_t h = 0; h < H; h++)
      rope_vec(s.q + (size_t)r * qw + h * qkh + nope, c->rope, t, c->rope_interleave, s.tmp);
    rope_vec(s.kva + (size_t)r * kal + c->kv_lora_rank, c->rope, t, c->rope_interleave, s.tmp);
  }
  /* Causal attention per sequence and head. Scores = scale · (q_nope·k_nopeᵀ +
   * q_pe·k_peᵀ): two sgemms instead of concatenating k per head. */
  for (int64_t b = 0; b < B; b++) {
    const float *qb = s.q + (size_t)(b * T) * qw;
    const float *kvb = s.kv + (size_t)(b * T) * kw;
    const float *kpe = s.kva + (size_t)(b * T) * kal + c->kv_lora_rank;
    float *ob = s.att + (size_t)(b * T) * ow;
    for (int64_t h = 0; h < H; h++) {
      for (int64_t i0 = 0; i0 < T; i0 += QBLK) {
        int64_t i1 = i0 + QBLK < T ? i0 + QBLK : T, m = i1 - i0, n = i1;
        float beta = 0.0f;
        if (nope > 0) {
          /* S (m, n) = scale · Q_nope[i0:i1] (m, nope) · K_nope[0:n] (n, nope)ᵀ */
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)n, (int)nope, c->scale,
                      qb + i0 * qw + h * qkh, (int)qw, kvb + h * kvw, (int)kw, 0.0f, s.S, (int)n);
          beta = 1.0f;
        }
        /* S += scale · Q_pe (m, rope) · K_pe (n, rope)ᵀ; k_pe is shared by all heads */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)n, (int)rope, c->scale,
                    qb + i0 * qw + h * qkh + nope, (int)qw, kpe, (int)kal, beta, s.S, (int)n);
        for (int64_t i = i0; i < i1; i++) {
          float *Si = s.S + (size_t)(i - i0) * n;
          sq_fwd_softmax_row(Si, i + 1); /* causal: keys 0..i */
          if (i + 1 < n) memset(Si + i + 1, 0, (size_t)(n - i - 1) * sizeof(float));
        }
        /* O_h[i0:i1] (m, v) = P (m, n) · V_h[0:n] (n, v) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)vh, (int)n, 1.0f, s.S,
                    (int)n, kvb + h * kvw + nope, (int)kw, 0.0f, ob + i0 * ow + h * vh, (int)ow);
      }
    }
  }
  if (hooks && hooks->o_in) SQ_CHECK(hooks->o_in(u, s.att, rows, ow));
  sq_fwd_linear(s.att, rows, ow, w->o_proj, D, w->o_bias, y);
  return SQ_OK;
}
