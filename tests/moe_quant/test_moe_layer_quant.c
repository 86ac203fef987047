/* worker/moe_layer_quant.h under mpirun: a tiny synthetic MoE checkpoint
 * (mixtral, qwen2_moe with a dense first layer and a gated shared expert,
 * qwen3_moe with q/k norms) quantized layer by layer with W4A16 GPTQ, against
 * a single-process reference written here from other pieces: the whole layer
 * kernel (kernels/moe_layer.h, itself checked against a naive double loop in
 * tests/moe_layer) on ALL samples with its own Hessian hooks per module and
 * expert, sq_gptq_quantize per module, then the quantized layer re-run. The
 * reference never touches moe_calib, the attention-only pass, the owner
 * reads / broadcasts or the agreement logic of the code under test.
 * Every rank recomputes the reference, for each layer from the pipeline's
 * inputs of that layer (gathered from all ranks), and checks:
 *   (a) every module it owns: dequantized weight within one quantization
 *       step of the reference (Hessians differ only by fp32 summation order,
 *       which may flip a rounding tie), and >= 95% of elements equal within
 *       1e-6 relative;
 *   (b) its samples' hidden states after the layer vs the reference layer run
 *       with the pipeline's dequantized weights: relative L2 error <= 1e-5;
 *   (c) tokens per expert (min/max) equal the reference routing's;
 *   (d) its shard file holds weight_packed / weight_scale / weight_shape of
 *       exactly the modules it owns and no router / shared_expert_gate; over
 *       all ranks every module of the plan (every expert) is written once;
 * and at the end (e) the final hidden states are closer to the unquantized
 * model's than an all-RTN reference's are (GPTQ helps, summed over ranks).
 * With --fallback (all_tokens off, min_tokens huge): every expert falls back
 * to RTN and its dequantized weight must equal sq_quant_rtn of the original
 * weight bit for bit.
 * deepseek_v3: MLA (q_a/q_b, kv_a/kv_b), sigmoid group-limited router with
 * its score bias, shared experts, a dense first layer; with --fp8-blocks the
 * checkpoint holds F8_E4M3 weights with 128x128 weight_scale_inv that the
 * reference decodes itself (e4m3 from its bit layout, times the block scale).
 * usage: test_moe_layer_quant ARCH [--fallback] [--fp8-blocks] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "kernels/gptq.h"
#include "kernels/hessian.h"
#include "kernels/moe_layer.h"
#include "kernels/quant.h"
#include "sharding/checkpoint.h"
#include "sharding/safetensors.h"
#include "sharding/synth.h"
#include "test_util.h"
#include "worker/activations.h"
#include "worker/calib.h"
#include "worker/comm.h"
#include "worker/moe_layer_quant.h"
#include "worker/moe_model.h"

enum { NS = 8, TT = 16, D = 64, E = 4, GROUP = 32, MAXMOD = 64 };

static void die(const sq_comm *c, const char *what) {
  fprintf(stderr, "test_moe_layer_quant: %s: %s\n", what, sq_error_message());
  sq_comm_abort(c, 1);
}
#define OK(call, what)                      \
  do {                                      \
    if ((call) != SQ_OK) die(comm, (what)); \
  } while (0)

/* ---- the reference: whole layers on all samples, single process ---- */

typedef struct rmod {
  char name[128];
  float *W;    /* weight in use (original, then dequantized) */
  float *orig; /* original */
  int64_t d_out, d_in;
  sq_hessian *h; /* its input's Hessian */
  int expert;    /* >= 0: routed expert */
  float max_scale;
} rmod;

static int64_t n_fp8; /* fp8 weights the reference decoded */

typedef struct rlayer {
  int moe;
  float *attn_norm, *ffn_norm, *qb, *kb, *vb, *qn, *kn, *router, *sgate, *bias, *qan, *kvan;
  float *qa, *qbp, *kva, *kvbp;
  sq_hessian hqb, hkvb;
  rmod mods[MAXMOD];
  int n_mods;
  sq_moe_expert ex[E], shared;
  float *q, *k, *v, *o, *gate, *up, *down;
  sq_hessian hq, ho, hf, hd, egu[E], edn[E], sgu, sdn;
  int64_t counts[E];
} rlayer;

typedef struct rctx {
  const sq_moe_model *m;
  rlayer L;
  int all_tokens;
} rctx;

static float *rd(const sq_moe_model *m, const char *name, int64_t n) {
  float *p = malloc((size_t)n * sizeof(float));
  if (sq_ckpt_read_f32(m->ckpt, name, p, (uint64_t)n) != SQ_OK) {
    fprintf(stderr, "reference read %s: %s\n", name, sq_error_message());
    exit(1);
  }
  return p;
}

/* float8_e4m3fn from its definition: bias 7, no infinities, S.1111.111 NaN. */
static float e4m3(uint8_t b) {
  int e = (b >> 3) & 15, mant = b & 7;
  if (e == 15 && mant == 7) return NAN;
  float v = e == 0 ? ldexpf((float)mant / 8.0f, -6) : ldexpf(1.0f + (float)mant / 8.0f, e - 7);
  return (b & 0x80) ? -v : v;
}

/* A Linear weight: fp8 codes x their 128x128 block's weight_scale_inv,
 * decoded here (not through sharding/fp8_block.h), or any float dtype. */
static float *rd_linear(const sq_moe_model *m, const char *name, int64_t d_out, int64_t d_in) {
  const sq_st_file *f = NULL;
  const sq_st_tensor *t = sq_ckpt_find(m->ckpt, name, &f);
  if (!t || t->dtype != SQ_DTYPE_F8_E4M3) return rd(m, name, d_out * d_in);
  char sn[192];
  snprintf(sn, sizeof sn, "%s_scale_inv", name);
  const int64_t sc = (d_in + 127) / 128;
  float *s = rd(m, sn, ((d_out + 127) / 128) * sc), *w = malloc((size_t)(d_out * d_in) * 4);
  uint8_t *codes = malloc((size_t)(d_out * d_in));
  if (sq_st_read_raw(f, t, 0, codes, (uint64_t)(d_out * d_in)) != SQ_OK) exit(1);
  for (int64_t i = 0; i < d_out; i++)
    for (int64_t j = 0; j < d_in; j++)
      w[i * d_in + j] = e4m3(codes[i * d_in + j]) * s[(i / 128) * sc + j / 128];
  free(codes);
  free(s);
  n_fp8++;
  return w;
}

static float *add_mod(rlayer *L, const sq_moe_model *m, const char *name, int64_t d_out,
                      int64_t d_in, sq_hessian *h, int expert) {
  rmod *r = &L->mods[L->n_mods++];
  snprintf(r->name, sizeof r->name, "%s", name);
  char t[160];
  snprintf(t, sizeof t, "%s.weight", name);
  r->orig = rd_linear(m, t, d_out, d_in);
  r->W = malloc((size_t)(d_out * d_in) * sizeof(float));
  memcpy(r->W, r->orig, (size_t)(d_out * d_in) * sizeof(float));
  r->d_out = d_out;
  r->d_in = d_in;
  r->h = h;
  r->expert = expert;
  return r->W;
}

/* Names written from the Hugging Face modeling code, not from the plan. */
static void ref_load(rlayer *L, const sq_moe_model *m, int l) {
  memset(L, 0, sizeof *L);
  const int64_t d = m->hidden, qd = m->n_heads * m->head_dim, kvd = m->n_kv_heads * m->head_dim;
  const int mix = m->cfg.family == SQ_FAMILY_MIXTRAL;
  char n[160];
  L->moe = sq_moe_model_layer_is_moe(m, l);
#define NM(...) (snprintf(n, sizeof n, __VA_ARGS__), n)
  L->attn_norm = rd(m, NM("model.layers.%d.input_layernorm.weight", l), d);
  L->ffn_norm = rd(m, NM("model.layers.%d.post_attention_layernorm.weight", l), d);
  if (m->qkv_bias) {
    L->qb = rd(m, NM("model.layers.%d.self_attn.q_proj.bias", l), qd);
    L->kb = rd(m, NM("model.layers.%d.self_attn.k_proj.bias", l), kvd);
    L->vb = rd(m, NM("model.layers.%d.self_attn.v_proj.bias", l), kvd);
  }
  if (m->qk_norm) {
    L->qn = rd(m, NM("model.layers.%d.self_attn.q_norm.weight", l), m->head_dim);
    L->kn = rd(m, NM("model.layers.%d.self_attn.k_norm.weight", l), m->head_dim);
  }
  sq_hessian_init(&L->hq, d, 0, "ref");
  const int ds = m->cfg.family == SQ_FAMILY_DEEPSEEK_V3;
  if (ds) {
    const sq_model_config *c = &m->cfg;
    int64_t H = c->num_attention_heads, QL = c->q_lora_rank, KL = c->kv_lora_rank;
    int64_t qk = c->qk_nope_head_dim + c->qk_rope_head_dim, V = c->v_head_dim;
    sq_hessian_init(&L->ho, H * V, 0, "ref");
    sq_hessian_init(&L->hqb, QL, 0, "ref");
    sq_hessian_init(&L->hkvb, KL, 0, "ref");
    L->qa = add_mod(L, m, NM("model.layers.%d.self_attn.q_a_proj", l), QL, d, &L->hq, -1);
    L->qan = rd(m, NM("model.layers.%d.self_attn.q_a_layernorm.weight", l), QL);
    L->qbp = add_mod(L, m, NM("model.layers.%d.self_attn.q_b_proj", l), H * qk, QL, &L->hqb, -1);
    L->kva = add_mod(L, m, NM("model.layers.%d.self_attn.kv_a_proj_with_mqa", l),
                     KL + c->qk_rope_head_dim, d, &L->hq, -1);
    L->kvan = rd(m, NM("model.layers.%d.self_attn.kv_a_layernorm.weight", l), KL);
    L->kvbp = add_mod(L, m, NM("model.layers.%d.self_attn.kv_b_proj", l),
                      H * (c->qk_nope_head_dim + V), KL, &L->hkvb, -1);
    L->o = add_mod(L, m, NM("model.layers.%d.self_attn.o_proj", l), d, H * V, &L->ho, -1);
  } else {
    sq_hessian_init(&L->ho, qd, 0, "ref");
    L->q = add_mod(L, m, NM("model.layers.%d.self_attn.q_proj", l), qd, d, &L->hq, -1);
    L->k = add_mod(L, m, NM("model.layers.%d.self_attn.k_proj", l), kvd, d, &L->hq, -1);
    L->v = add_mod(L, m, NM("model.layers.%d.self_attn.v_proj", l), kvd, d, &L->hq, -1);
    L->o = add_mod(L, m, NM("model.layers.%d.self_attn.o_proj", l), d, qd, &L->ho, -1);
  }
  if (!L->moe) {
    int64_t I = m->cfg.intermediate_size;
    sq_hessian_init(&L->hf, d, 0, "ref");
    sq_hessian_init(&L->hd, I, 0, "ref");
    L->gate = add_mod(L, m, NM("model.layers.%d.mlp.gate_proj", l), I, d, &L->hf, -1);
    L->up = add_mod(L, m, NM("model.layers.%d.mlp.up_proj", l), I, d, &L->hf, -1);
    L->down = add_mod(L, m, NM("model.layers.%d.mlp.down_proj", l), d, I, &L->hd, -1);
    return;
  }
  const char *ffn = mix ? "block_sparse_moe" : "mlp";
  L->router = rd(m, NM("model.layers.%d.%s.gate.weight", l, ffn), E * d);
  if (ds) L->bias = rd(m, NM("model.layers.%d.mlp.gate.e_score_correction_bias", l), E);
  int64_t F = mix ? m->cfg.intermediate_size : m->cfg.moe_intermediate_size;
  for (int e = 0; e < E; e++) {
    sq_hessian_init(&L->egu[e], d, 0, "ref");
    sq_hessian_init(&L->edn[e], F, 0, "ref");
    const char *g = mix ? "w1" : "gate_proj", *u = mix ? "w3" : "up_proj",
               *dn = mix ? "w2" : "down_proj";
    L->ex[e].gate =
        add_mod(L, m, NM("model.layers.%d.%s.experts.%d.%s", l, ffn, e, g), F, d, &L->egu[e], e);
    L->ex[e].up =
        add_mod(L, m, NM("model.layers.%d.%s.experts.%d.%s", l, ffn, e, u), F, d, &L->egu[e], e);
    L->ex[e].down =
        add_mod(L, m, NM("model.layers.%d.%s.experts.%d.%s", l, ffn, e, dn), d, F, &L->edn[e], e);
  }
  int64_t S = !strcmp(m->cfg.model_type, "qwen2_moe") ? m->cfg.shared_expert_intermediate_size
              : ds ? m->cfg.n_shared_experts * m->cfg.moe_intermediate_size
                   : 0;
  const char *sx = ds ? "shared_experts" : "shared_expert";
  if (S > 0) {
    sq_hessian_init(&L->sgu, d, 0, "ref");
    sq_hessian_init(&L->sdn, S, 0, "ref");
    L->shared.gate =
        add_mod(L, m, NM("model.layers.%d.mlp.%s.gate_proj", l, sx), S, d, &L->sgu, -1);
    L->shared.up = add_mod(L, m, NM("model.layers.%d.mlp.%s.up_proj", l, sx), S, d, &L->sgu, -1);
    L->shared.down =
        add_mod(L, m, NM("model.layers.%d.mlp.%s.down_proj", l, sx), d, S, &L->sdn, -1);
    if (!ds) L->sgate = rd(m, NM("model.layers.%d.mlp.shared_expert_gate.weight", l), d);
  }
#undef NM
}

static void ref_free(rlayer *L) {
  float *p[] = {L->attn_norm, L->ffn_norm, L->qb,    L->kb,   L->vb,  L->qn,
                L->kn,        L->router,   L->sgate, L->bias, L->qan, L->kvan};
  for (size_t i = 0; i < sizeof p / sizeof *p; i++) free(p[i]);
  for (int i = 0; i < L->n_mods; i++) {
    free(L->mods[i].W);
    free(L->mods[i].orig);
  }
  sq_hessian *h[] = {&L->hq, &L->ho, &L->hf, &L->hd, &L->sgu, &L->sdn, &L->hqb, &L->hkvb};
  for (size_t i = 0; i < sizeof h / sizeof *h; i++) sq_hessian_free(h[i]);
  for (int e = 0; e < E; e++) {
    sq_hessian_free(&L->egu[e]);
    sq_hessian_free(&L->edn[e]);
  }
}

static sq_moe_layer_weights ref_weights(const rlayer *L) {
  sq_moe_layer_weights w;
  memset(&w, 0, sizeof w);
  w.attn_norm = L->attn_norm;
  w.ffn_norm = L->ffn_norm;
  w.q = L->q, w.k = L->k, w.v = L->v, w.o = L->o;
  w.mla.q_a_proj = L->qa, w.mla.q_a_norm = L->qan, w.mla.q_b_proj = L->qbp;
  w.mla.kv_a_proj = L->kva, w.mla.kv_a_norm = L->kvan, w.mla.kv_b_proj = L->kvbp,
  w.mla.o_proj = L->o;
  w.q_bias = L->qb, w.k_bias = L->kb, w.v_bias = L->vb;
  w.q_norm = L->qn, w.k_norm = L->kn;
  w.gate = L->gate, w.up = L->up, w.down = L->down;
  w.router = L->router;
  w.experts = L->ex;
  w.shared = L->shared;
  w.shared_gate = L->sgate;
  return w;
}

static sq_status h_acc(sq_hessian *h, const float *X, int64_t rows) {
  return h->sum ? sq_hessian_accumulate(h, X, rows, "ref") : SQ_OK;
}
static sq_status rh_qkv(void *u, const float *X, int64_t r, int64_t c) {
  (void)c;
  return h_acc(&((rlayer *)u)->hq, X, r);
}
static sq_status rh_o(void *u, const float *X, int64_t r, int64_t c) {
  (void)c;
  return h_acc(&((rlayer *)u)->ho, X, r);
}
static sq_status rh_qb(void *u, const float *X, int64_t r, int64_t c) {
  (void)c;
  return h_acc(&((rlayer *)u)->hqb, X, r);
}
static sq_status rh_kvb(void *u, const float *X, int64_t r, int64_t c) {
  (void)c;
  return h_acc(&((rlayer *)u)->hkvb, X, r);
}
static sq_status rh_ffn(void *u, const float *X, int64_t r, int64_t c) {
  (void)c;
  rlayer *L = u;
  return L->moe ? SQ_OK : h_acc(&L->hf, X, r);
}
static sq_status rh_down(void *u, const float *X, int64_t r, int64_t c) {
  (void)c;
  return h_acc(&((rlayer *)u)->hd, X, r);
}
static sq_status rh_egu(void *u, int e, const float *X, int64_t r, int64_t c) {
  (void)c;
  rlayer *L = u;
  return h_acc(e == SQ_MOE_SHARED ? &L->sgu : &L->egu[e], X, r);
}
static sq_status rh_edn(void *u, int e, const float *X, int64_t r, int64_t c) {
  (void)c;
  rlayer *L = u;
  return h_acc(e == SQ_MOE_SHARED ? &L->sdn : &L->edn[e], X, r);
}

/* Run layer L over x (NS, TT, D) -> y, in batches of 2 samples (as the
 * pipeline on one rank, so that its dense Hessians are summed in the same
 * order there), with or without hooks; counts summed when given. */
static void ref_run(const sq_moe_model *m, int l, rlayer *L, const float *x, float *y, int hooks,
                    int all_tokens, int64_t *counts) {
  sq_moe_layer_cfg cfg = sq_moe_model_layer_cfg(m, l);
  cfg.router.e_score_correction_bias = L->bias;
  sq_moe_layer_weights w = ref_weights(L);
  sq_moe_layer_hooks h = {.qkv_in = rh_qkv,
                          .o_in = rh_o,
                          .ffn_in = rh_ffn,
                          .down_in = rh_down,
                          .qa_kva_in = rh_qkv,
                          .q_b_in = rh_qb,
                          .kv_b_in = rh_kvb,
                          .expert_gate_up_in = rh_egu,
                          .expert_down_in = rh_edn,
                          .all_tokens = all_tokens,
                          .user = L};
  size_t wsb = sq_moe_layer_workspace_bytes(&cfg, 2, TT);
  void *ws = aligned_alloc(64, (wsb + 63) / 64 * 64);
  int64_t c[E];
  for (int s = 0; s < NS; s += 2) {
    int nb = NS - s < 2 ? NS - s : 2;
    sq_status st = sq_moe_layer_forward(&cfg, &w, x + (size_t)s * TT * D, nb, TT, hooks ? &h : NULL,
                                        ws, y + (size_t)s * TT * D, counts ? c : NULL);
    if (st != SQ_OK) {
      fprintf(stderr, "reference forward: %s\n", sq_error_message());
      exit(1);
    }
    for (int e = 0; counts && cfg.moe && e < E; e++) counts[e] += c[e];
  }
  free(ws);
}

static sq_qargs qargs(void) {
  sq_qargs q;
  memset(&q, 0, sizeof q);
  q.type = SQ_QTYPE_INT;
  q.num_bits = 4;
  q.symmetric = 1;
  q.strategy = SQ_QSTRAT_GROUP;
  q.group_size = GROUP;
  q.scale_dtype = SQ_DTYPE_BF16;
  return q;
}

/* Quantize every module of L: GPTQ with its Hessian, or RTN (rtn, or an
 * expert when expert_rtn). */
static void ref_quantize(rlayer *L, int rtn, int expert_rtn) {
  sq_qargs q = qargs();
  for (int i = 0; i < L->n_mods; i++) {
    rmod *r = &L->mods[i];
    size_t n = (size_t)(r->d_out * r->d_in);
    int8_t *codes = malloc(n);
    int64_t ns = sq_gptq_scale_count(&q, r->d_out, r->d_in);
    float *scales = malloc((size_t)ns * sizeof(float)), *deq = malloc(n * sizeof(float));
    int32_t *zp = calloc((size_t)ns, sizeof(int32_t)), *gi = calloc((size_t)r->d_in, 4);
    sq_status st;
    if (rtn || (expert_rtn && r->expert >= 0)) {
      st = sq_quant_rtn(&q, r->name, r->W, r->d_out, r->d_in, codes, scales, NULL, deq);
    } else {
      float *H = malloc((size_t)(r->d_in * r->d_in) * sizeof(float));
      st = sq_hessian_finalize(r->h, H, r->name);
      sq_gptq_opts go = sq_gptq_opts_default();
      go.q = q;
      go.block_size = 128;
      go.damp_frac = 0.01f;
      sq_gptq_out out = {
          .codes = codes, .scales = scales, .zero_points = zp, .g_idx = gi, .deq = deq};
      if (st == SQ_OK)
        st = sq_gptq_quantize(r->name, r->W, H, r->d_out, r->d_in, &go, NULL, 0, &out);
      free(H);
    }
    if (st != SQ_OK) {
      fprintf(stderr, "reference quantize %s: %s\n", r->name, sq_error_message());
      exit(1);
    }
    r->max_scale = 0;
    for (int64_t k = 0; k < ns; k++) r->max_scale = fmaxf(r->max_scale, fabsf(scales[k]));
    memcpy(r->W, deq, n * sizeof(float));
    free(codes);
    free(scales);
    free(deq);
    free(zp);
    free(gi);
  }
}

static const rmod *ref_find(const rlayer *L, const char *name) {
  for (int i = 0; i < L->n_mods; i++)
    if (!strcmp(L->mods[i].name, name)) return &L->mods[i];
  return NULL;
}

static double rel_l2(const float *a, const float *b, int64_t n, double *num, double *den) {
  double s = 0, r = 0;
  for (int64_t i = 0; i < n; i++) {
    double dd = (double)a[i] - (double)b[i];
    s += dd * dd;
    r += (double)b[i] * (double)b[i];
  }
  if (num) *num = s;
  if (den) *den = r;
  return sqrt(s / (r > 0 ? r : 1));
}

/* (d) this rank's shard: exactly its modules, compressed, no router. */
static int64_t check_shard(const sq_comm *comm, const sq_moe_model *m, int l, const char *path) {
  sq_st_file *f = NULL;
  OK(sq_st_open(path, &f), "open shard");
  size_t first, count;
  sq_moe_model_layer_modules(m, l, &first, &count);
  int64_t mine = 0;
  for (size_t i = first; i < first + count; i++) {
    const sq_mm_module *mm = &m->mods[i];
    static const char *const sfx[] = {"weight_packed", "weight_scale", "weight_shape"};
    for (int k = 0; k < 3; k++) {
      char t[192];
      snprintf(t, sizeof t, "%s.%s", mm->pm->name, sfx[k]);
      int has = sq_st_find(f, t) != NULL;
      SQ_EXPECT_MSG(has == (mm->owner == sq_comm_rank(comm)), "%s: present %d, owner %d", t, has,
                    mm->owner);
    }
    mine += mm->owner == sq_comm_rank(comm);
  }
  for (size_t i = 0;; i++) {
    const sq_st_tensor *t = sq_st_at(f, i);
    if (!t) break;
    SQ_EXPECT_MSG(!strstr(t->name, ".gate.weight") && !strstr(t->name, "shared_expert_gate"),
                  "router tensor %s written as quantized", t->name);
  }
  sq_st_close(f);
  return mine;
}

int main(int argc, char **argv) {
  sq_comm *comm = NULL;
  if (sq_comm_init_mpi(&argc, &argv, &comm) != SQ_OK) {
    fprintf(stderr, "test_moe_layer_quant: %s\n", sq_error_message());
    return 1;
  }
  const char *arch = argc > 1 ? argv[1] : "mixtral";
  int fallback = 0, fp8 = 0;
  for (int i = 2; i < argc; i++) {
    fallback |= !strcmp(argv[i], "--fallback");
    fp8 |= !strcmp(argv[i], "--fp8-blocks");
  }
  const int rank = sq_comm_rank(comm), P = sq_comm_size(comm);
  sq_log_set_level(SQ_LOG_ERROR);

  /* rank 0 writes the checkpoint; its path goes to everyone */
  char dir[512] = "";
  if (rank == 0) {
    char *tmp = sq_test_tmpdir("moe-layer-quant");
    snprintf(dir, sizeof dir, "%s", tmp);
    free(tmp);
    sq_synth_options o;
    sq_synth_options_default(&o);
    o.arch = arch;
    o.layers = 2;
    o.hidden = D;
    o.heads = 4;
    o.kv_heads = 2;
    o.intermediate = 64;
    o.vocab = 128;
    o.shards = 2;
    o.seed = 7;
    o.calib_samples = NS;
    o.calib_seq_len = TT;
    o.eval_samples = 0;
    o.progress = false;
    o.experts = E;
    o.experts_per_tok = 2;
    if (!strcmp(arch, "qwen2_moe")) o.moe_step = 2; /* layer 0 dense, layer 1 MoE */
    if (!strcmp(arch, "deepseek_v3")) {             /* layer 0 dense (first_k_dense_replace 1) */
      o.n_group = 2;
      o.topk_group = 1;
      o.q_lora_rank = 32;
      o.kv_lora_rank = 16;
      o.qk_nope_dim = 16;
      o.qk_rope_dim = 8;
      o.v_head_dim = 16;
      o.fp8_blocks = fp8;
    }
    OK(sq_synth_write(dir, &o), "synth");
  }
  OK(sq_comm_bcast(comm, dir, sizeof dir, 0, "dir"), "bcast");

  sq_moe_model m;
  OK(sq_moe_model_open(dir, P, NS, TT, &m), "open model");
  char cpath[600];
  snprintf(cpath, sizeof cpath, "%s/calib.safetensors", dir);
  sq_calib cal;
  OK(sq_calib_load(cpath, NS, TT, 0, &cal), "calib");
  float *table = malloc((size_t)(m.cfg.vocab_size * D) * sizeof(float));
  OK(sq_ckpt_read_f32(m.ckpt, "model.embed_tokens.weight", table, (uint64_t)(m.cfg.vocab_size * D)),
     "embed");
  int64_t s0 = m.plan->rank[rank].sample_begin, s1 = m.plan->rank[rank].sample_end;
  sq_acts acts;
  OK(sq_acts_init(&acts, s1 - s0, TT, D, NULL), "acts");
  OK(sq_acts_embed(&acts, cal.ids + s0 * TT, table, m.cfg.vocab_size), "embed acts");

  sq_mlq_opts o = sq_mlq_opts_default();
  o.lq.q = qargs();
  o.batch = 2;
  if (fallback) {
    o.all_tokens = 0;
    o.min_tokens = 1000000;
  }
  sq_mlq q;
  OK(sq_mlq_init(&q, &m, comm, &o, s1 - s0, TT), "mlq init");

  /* reference streams over all samples: GPTQ, RTN, unquantized */
  size_t nall = (size_t)NS * TT * D;
  float *xg = malloc(nall * sizeof(float)), *xr = malloc(nall * sizeof(float));
  float *xf = malloc(nall * sizeof(float)), *y = malloc(nall * sizeof(float));
  for (int s = 0; s < NS; s++)
    sq_fwd_embed(table, m.cfg.vocab_size, D, cal.ids + s * TT, TT, xg + (size_t)s * TT * D);
  memcpy(xr, xg, nall * sizeof(float));
  memcpy(xf, xg, nall * sizeof(float));

  int64_t written = 0, total_mods = 0, ndiff = 0, nelem = 0;
  for (int l = 0; l < m.n_layers; l++) {
    /* The reference layer starts from the pipeline's own inputs (every rank's
     * rows, gathered by an exact sum of zero-padded buffers): a rounding tie
     * flipped in one layer must not cascade into the next layer's check. */
    memset(xg, 0, nall * sizeof(float));
    memcpy(xg + s0 * TT * D, acts.mem, (size_t)((s1 - s0) * TT * D) * sizeof(float));
    OK(sq_comm_allreduce_sum_f32(comm, xg, (int64_t)nall, "gather inputs"), "gather");
    rlayer L;
    ref_load(&L, &m, l);
    ref_run(&m, l, &L, xf, y, 0, 0, NULL); /* unquantized stream */
    memcpy(xf, y, nall * sizeof(float));
    ref_run(&m, l, &L, xg, y, 1, !fallback, L.counts);
    ref_quantize(&L, 0, fallback);
    rlayer R;
    ref_load(&R, &m, l);
    ref_quantize(&R, 1, 0);
    ref_run(&m, l, &R, xr, y, 0, 0, NULL);
    memcpy(xr, y, nall * sizeof(float));
    ref_free(&R);

    /* the code under test */
    char path[700];
    snprintf(path, sizeof path, "%s/out-rank%d-layer%d.safetensors", dir, rank, l);
    sq_st_writer *w = NULL;
    if (sq_mlq_writes_layer(&q, l)) {
      OK(sq_st_writer_create(path, &w), "writer");
      OK(sq_mlq_declare(&q, l, w), "declare");
    }
    sq_mlq_stat st;
    OK(sq_mlq_layer(&q, l, &acts, w, &st), "mlq layer");
    if (w) {
      OK(sq_st_writer_commit(w), "commit");
      sq_st_writer_free(w);
    }

    /* (a) owned modules */
    size_t first, count;
    sq_moe_model_layer_modules(&m, l, &first, &count);
    total_mods += (int64_t)count;
    int owned_experts = 0;
    for (size_t i = first; i < first + count; i++) {
      const sq_mm_module *mm = &m.mods[i];
      if (mm->owner != rank) continue;
      const rmod *r = ref_find(&L, mm->pm->name);
      SQ_EXPECT_MSG(r != NULL, "module %s not in the reference", mm->pm->name);
      if (!r) continue;
      owned_experts += mm->expert >= 0;
      const float *a = sq_moe_lbuf_module(&q.buf, mm);
      int64_t n = r->d_out * r->d_in, diff = 0;
      double mx = 0;
      for (int64_t k = 0; k < n; k++) {
        double dd = fabs((double)a[k] - (double)r->W[k]);
        mx = dd > mx ? dd : mx;
        diff += dd > 1e-6 * (1 + fabs((double)r->W[k]));
      }
      ndiff += diff;
      nelem += n;
      if (fallback && mm->expert >= 0) {
        SQ_EXPECT_MSG(diff == 0, "%s: RTN fallback differs from sq_quant_rtn in %lld elements",
                      mm->pm->name, (long long)diff);
      } else {
        SQ_EXPECT_MSG(mx <= 1.01 * r->max_scale + 1e-6, "%s: max |deq - ref| %g > step %g",
                      mm->pm->name, mx, (double)r->max_scale);
        SQ_EXPECT_MSG(diff * 20 <= n, "%s: %lld of %lld elements differ from the reference",
                      mm->pm->name, (long long)diff, (long long)n);
      }
    }
    if (fallback && st.moe) SQ_EXPECT_EQ_INT(st.rtn_fallback, owned_experts);
    if (!fallback) SQ_EXPECT_EQ_INT(st.rtn_fallback, 0);
    /* (b) hidden states: the reference layer run with the pipeline's own
     * dequantized weights (gathered from their owners), so that a rounding
     * tie decided differently in (a) does not hide a forward error here. */
    for (size_t i = first; i < first + count; i++) {
      const sq_mm_module *mm = &m.mods[i];
      rmod *r = (rmod *)ref_find(&L, mm->pm->name);
      if (!r) continue;
      int64_t n = r->d_out * r->d_in;
      if (mm->owner == rank)
        memcpy(r->W, sq_moe_lbuf_module(&q.buf, mm), (size_t)n * sizeof(float));
      else
        memset(r->W, 0, (size_t)n * sizeof(float));
      OK(sq_comm_allreduce_sum_f32(comm, r->W, n, "gather weights"), "gather");
    }
    ref_run(&m, l, &L, xg, y, 0, 0, NULL);
    memcpy(xg, y, nall * sizeof(float));
    int64_t nl = (s1 - s0) * TT * D;
    double e = rel_l2(acts.mem, xg + s0 * TT * D, nl, NULL, NULL);
    SQ_EXPECT_MSG(e <= 1e-5, "layer %d: hidden states rel. L2 error %g vs the reference", l, e);
    if (rank == 0) printf("layer %d: hidden states rel. L2 error %.3g\n", l, e);
    /* (c) tokens per expert */
    SQ_EXPECT_EQ_INT(st.moe, sq_moe_model_layer_is_moe(&m, l));
    if (st.moe) {
      int64_t mn = INT64_MAX, mx = 0;
      for (int k = 0; k < E; k++) {
        mn = L.counts[k] < mn ? L.counts[k] : mn;
        mx = L.counts[k] > mx ? L.counts[k] : mx;
      }
      SQ_EXPECT_EQ_INT(st.moe_stats.tok_min, mn);
      SQ_EXPECT_EQ_INT(st.moe_stats.tok_max, mx);
      SQ_EXPECT_EQ_INT(st.moe_stats.total_tokens, NS * TT);
      if (rank == 0) {
        char line[256];
        sq_moe_calib_describe(&st.moe_stats, E, line, sizeof line);
        printf("layer %d: %s\n", l, line);
      }
    }
    /* (d) files */
    if (sq_mlq_writes_layer(&q, l)) written += check_shard(comm, &m, l, path);
    ref_free(&L);
  }
  /* (e) GPTQ through the pipeline beats RTN (errors vs the unquantized model). */
  double ev[4] = {0, 0, 0, 0}, dummy;
  int64_t nl = (s1 - s0) * TT * D;
  rel_l2(acts.mem, xf + s0 * TT * D, nl, &ev[0], &dummy);
  rel_l2(xr + s0 * TT * D, xf + s0 * TT * D, nl, &ev[1], &dummy);
  OK(sq_comm_allreduce_sum_f64(comm, ev, 2, "errors"), "allreduce");
  if (!fallback) SQ_EXPECT_MSG(ev[0] < ev[1], "GPTQ error %g is not below RTN's %g", ev[0], ev[1]);
  int64_t cnt[4] = {written, sq_test_failures, ndiff, nelem};
  OK(sq_comm_allreduce_sum_i64(comm, cnt, 4, "counts"), "allreduce");
  SQ_EXPECT_EQ_INT(cnt[0], total_mods);
  if (rank == 0)
    printf(
        "%s np=%d%s: %lld modules written (plan %lld), %lld of %lld dequantized values "
        "differ from the reference; squared error vs unquantized: pipeline GPTQ %.4g, RTN "
        "%.4g\n",
        arch, P, fallback ? " fallback" : "", (long long)cnt[0], (long long)total_mods,
        (long long)cnt[2], (long long)cnt[3], ev[0], ev[1]);
  if (fp8) SQ_EXPECT_MSG(n_fp8 > 0, "no fp8 weight in the --fp8-blocks checkpoint");
  if (fp8 && rank == 0)
    printf("fp8 block-scaled weights decoded by the reference: %lld\n", (long long)n_fp8);
  int64_t fails = cnt[1] + (cnt[0] != total_mods) + (fp8 && n_fp8 == 0);
  sq_mlq_free(&q);
  sq_acts_free(&acts, 0);
  free(xg);
  free(xr);
  free(xf);
  free(y);
  free(table);
  sq_calib_free(&cal);
  sq_moe_model_close(&m);
  if (rank == 0 && fails == 0) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) { /* best effort */
    }
  }
  sq_comm_free(comm);
  return fails ? 1 : 0;
}
