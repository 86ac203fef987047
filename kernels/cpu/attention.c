/* CPU reference of grouped-query causal attention and of a whole Llama decoder
 * layer (norm, q/k/v, RoPE, attention, o, residual, norm, SwiGLU MLP, residual)
 * with the calibration hooks that hand each Linear group's input to the caller,
 * so Hessians are accumulated without recomputing the layer. */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "kernels/forward.h"
#include "kernels/forward_math.h"

/* Query rows per block of the causal attention. */
#define QBLK 256

size_t sq_fwd_attention_workspace_floats(int64_t T) {
  int64_t m = T < QBLK ? T : QBLK;
  return (size_t)m * (size_t)T; /* (QBLK, T) scores of one query block */
}

static sq_status check_heads(int64_t n_heads, int64_t n_kv_heads, int64_t head_dim) {
  if (n_heads <= 0 || n_kv_heads <= 0 || head_dim <= 0 || n_heads % n_kv_heads != 0)
    return sq_error_set(SQ_ERR_ARG,
                        "attention: num_attention_heads %lld must be a positive multiple of "
                        "num_key_value_heads %lld (head_dim %lld)",
                        (long long)n_heads, (long long)n_kv_heads, (long long)head_dim);
  return SQ_OK;
}

sq_status sq_fwd_attention(const float *q, const float *k, const float *v, int64_t B, int64_t T,
                           int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float *ws,
                           float *out) {
  SQ_CHECK(check_heads(n_heads, n_kv_heads, head_dim));
  if (B <= 0 || T <= 0)
    return sq_error_set(SQ_ERR_ARG, "attention: B %lld and T %lld must be positive", (long long)B,
                        (long long)T);
  const int64_t qw = n_heads * head_dim, kw = n_kv_heads * head_dim;
  const int64_t rep = n_heads / n_kv_heads;
  const float scale = 1.0f / sqrtf((float)head_dim);
  float *S = ws; /* (min(T, QBLK), T) scores of one query block */
  for (int64_t b = 0; b < B; b++) {
    const float *qb = q + (size_t)(b * T) * qw;
    const float *kb = k + (size_t)(b * T) * kw;
    const float *vb = v + (size_t)(b * T) * kw;
    float *ob = out + (size_t)(b * T) * qw;
    for (int64_t h = 0; h < n_heads; h++) {
      int64_t kvh = h / rep; /* HF repeat_kv: kv head j serves heads j*rep..j*rep+rep-1 */
      /* Query blocks of QBLK rows only meet keys 0..i1-1 (causal), which halves
       * the work of a full (T, T) score matrix for long sequences. */
      for (int64_t i0 = 0; i0 < T; i0 += QBLK) {
        int64_t i1 = i0 + QBLK < T ? i0 + QBLK : T, m = i1 - i0, n = i1;
        /* S (m, n) = scale · Q_h[i0:i1] (m, hd) · K_h[0:n] (n, hd)ᵀ, rows strided by qw / kw */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)n, (int)head_dim, scale,
                    qb + i0 * qw + h * head_dim, (int)qw, kb + kvh * head_dim, (int)kw, 0.0f, S,
                    (int)n);
        for (int64_t i = i0; i < i1; i++) {
          float *Si = S + (size_t)(i - i0) * n;
          sq_fwd_softmax_row(Si, i + 1); /* causal: keys 0..i */
          if (i + 1 < n) memset(Si + i + 1, 0, (size_t)(n - i - 1) * sizeof(float));
        }
        /* O_h[i0:i1] (m, hd) = P (m, n) · V_h[0:n] (n, hd), into the head's columns */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)head_dim, (int)n, 1.0f,
                    S, (int)n, vb + kvh * head_dim, (int)kw, 0.0f, ob + i0 * qw + h * head_dim,
                    (int)qw);
      }
    }
  }
  return SQ_OK;
}

/* Workspace layout in floats, each piece rounded up to 4 floats (16 bytes):
 *   xn   (rows, hidden)   norm output, reused by norm2
 *   tmp  (rows, hidden)   o_proj and down_proj outputs
 *   S    (QBLK, T)        attention scores of one query block
 *   then a union: attention phase q, k, v, att | MLP phase g, u (rows, inter) */
typedef struct layer_ws {
  float *xn, *tmp, *S, *q, *k, *v, *att, *g, *u;
} layer_ws;

static size_t r4(size_t n) {
  return (n + 3) & ~(size_t)3;
}

static size_t layer_ws_floats(const sq_fwd_layer_cfg *c, int64_t B, int64_t T, layer_ws *lw,
                              float *base) {
  size_t rows = (size_t)(B * T);
  size_t qn = r4(rows * (size_t)(c->n_heads * c->head_dim));
  size_t kn = r4(rows * (size_t)(c->n_kv_heads * c->head_dim));
  size_t hn = r4(rows * (size_t)c->hidden), in = r4(rows * (size_t)c->intermediate);
  size_t sn = r4(sq_fwd_attention_workspace_floats(T));
  size_t attn_phase = 2 * qn + 2 * kn, mlp_phase = 2 * in;
  size_t uni = attn_phase > mlp_phase ? attn_phase : mlp_phase;
  if (lw) {
    lw->xn = base;
    lw->tmp = lw->xn + hn;
    lw->S = lw->tmp + hn;
    float *un = lw->S + sn;
    lw->q = un;
    lw->k = lw->q + qn;
    lw->v = lw->k + kn;
    lw->att = lw->v + kn;
    lw->g = un;
    lw->u = lw->g + in;
  }
  return 2 * hn + sn + uni;
}

size_t sq_fwd_layer_workspace_bytes(const sq_fwd_layer_cfg *cfg, int64_t B, int64_t T) {
  return layer_ws_floats(cfg, B, T, NULL, NULL) * sizeof(float);
}

static sq_status run_hook(sq_fwd_hook_fn fn, void *user, const float *X, int64_t rows, int64_t cols,
                          const char *which) {
  if (!fn) return SQ_OK;
  sq_status st = fn(user, X, rows, cols);
  if (st != SQ_OK) sq_error_set(st, "decoder layer: the %s calibration hook failed", which);
  return st;
}

sq_status sq_fwd_layer(const sq_fwd_layer_cfg *cfg, const sq_fwd_layer_weights *w, const float *x,
                       int64_t B, int64_t T, const sq_fwd_hooks *hooks, void *ws, float *y) {
  SQ_CHECK(check_heads(cfg->n_heads, cfg->n_kv_heads, cfg->head_dim));
  if (cfg->hidden <= 0 || cfg->intermediate <= 0 || B <= 0 || T <= 0)
    return sq_error_set(SQ_ERR_ARG,
                        "decoder layer: hidden %lld, intermediate %lld, B %lld, T %lld must be "
                        "positive",
                        (long long)cfg->hidden, (long long)cfg->intermediate, (long long)B,
                        (long long)T);
  if (!cfg->rope || cfg->rope->head_dim != cfg->head_dim || cfg->rope->max_t < T)
    return sq_error_set(SQ_ERR_ARG,
                        "decoder layer: rope tables (head_dim %d, %lld positions) do not cover "
                        "head_dim %lld and T %lld -- hint: sq_fwd_rope_init with max_t >= T",
                        cfg->rope ? cfg->rope->head_dim : 0,
                        (long long)(cfg->rope ? cfg->rope->max_t : 0), (long long)cfg->head_dim,
                        (long long)T);
  static const sq_fwd_hooks no_hooks = {0};
  const sq_fwd_hooks *hk = hooks ? hooks : &no_hooks;
  const int64_t rows = B * T, hid = cfg->hidden, inter = cfg->intermediate;
  const int64_t qw = cfg->n_heads * cfg->head_dim, kw = cfg->n_kv_heads * cfg->head_dim;
  layer_ws lw;
  layer_ws_floats(cfg, B, T, &lw, (float *)ws);

  /* attention block: h = x + o(attn(rope(q(xn)), rope(k(xn)), v(xn))), xn = norm1(x) */
  sq_fwd_rmsnorm(x, w->attn_norm, rows, hid, cfg->eps, lw.xn);
  SQ_CHECK(run_hook(hk->qkv_in, hk->user, lw.xn, rows, hid, "qkv_in"));
  sq_fwd_linear(lw.xn, rows, hid, w->q, qw, w->q_bias, lw.q);
  sq_fwd_linear(lw.xn, rows, hid, w->k, kw, w->k_bias, lw.k);
  sq_fwd_linear(lw.xn, rows, hid, w->v, kw, w->v_bias, lw.v);
  sq_fwd_rope_apply(cfg->rope, lw.q, B, T, cfg->n_heads);
  sq_fwd_rope_apply(cfg->rope, lw.k, B, T, cfg->n_kv_heads);
  SQ_CHECK(run_hook(hk->k_cache, hk->user, lw.k, rows, kw, "k_cache"));
  SQ_CHECK(run_hook(hk->v_cache, hk->user, lw.v, rows, kw, "v_cache"));
  SQ_CHECK(sq_fwd_attention(lw.q, lw.k, lw.v, B, T, cfg->n_heads, cfg->n_kv_heads, cfg->head_dim,
                            lw.S, lw.att));
  SQ_CHECK(run_hook(hk->o_in, hk->user, lw.att, rows, qw, "o_in"));
  sq_fwd_linear(lw.att, rows, qw, w->o, hid, w->o_bias, lw.tmp);
  for (size_t i = 0; i < (size_t)(rows * hid); i++) y[i] = x[i] + lw.tmp[i];

  /* MLP block: y = h + down(silu(gate(hn)) * up(hn)), hn = norm2(h); g/u reuse q..att */
  sq_fwd_rmsnorm(y, w->mlp_norm, rows, hid, cfg->eps, lw.xn);
  SQ_CHECK(run_hook(hk->gate_up_in, hk->user, lw.xn, rows, hid, "gate_up_in"));
  sq_fwd_linear(lw.xn, rows, hid, w->gate, inter, w->gate_bias, lw.g);
  sq_fwd_linear(lw.xn, rows, hid, w->up, inter, w->up_bias, lw.u);
  sq_fwd_silu_mul(lw.g, lw.u, rows * inter);
  SQ_CHECK(run_hook(hk->down_in, hk->user, lw.g, rows, inter, "down_in"));
  sq_fwd_linear(lw.g, rows, inter, w->down, hid, w->down_bias, lw.tmp);
  for (size_t i = 0; i < (size_t)(rows * hid); i++) y[i] += lw.tmp[i];
  return SQ_OK;
}
