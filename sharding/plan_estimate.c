/* Per-rank estimates of a plan: checkpoint bytes read, network bytes, peak
 * memory, FLOPs and wall time from stated device figures. The model is
 * documented at sq_plan_estimate_build in sharding/plan.h; every figure here is
 * an estimate for sizing a job, not a measurement. */
#include <stdlib.h>
#include <string.h>

#include "sharding/plan.h"

void sq_plan_device_default(sq_plan_device *d) {
  d->flops = 400e12;
  d->mem_bw = 2e12;
  d->read_bw = 2e9;
  d->net_bw = 25e9;
  d->intra_bw = 150e9;
  d->gpu_mem = (uint64_t)80 << 30;
  d->gpus_per_node = 8;
  d->bits = 4;
}

static double sq_weight_bytes(const sq_plan_module *m, double eb, bool fp8) {
  double n = (double)m->d_out * (double)m->d_in * eb;
  if (fp8) n += (double)((m->d_out + 127) / 128) * (double)((m->d_in + 127) / 128) * 4.0;
  return n;
}

/* Unquantized tensors of layer L every rank reads: norms, router, biases. */
static double sq_small_elems(const sq_model_config *c, const sq_plan_layer *L) {
  double h = (double)c->hidden_size, n = 2 * h;
  if (L->moe) n += (double)L->n_experts * h;
  if (c->family == SQ_FAMILY_DEEPSEEK_V3) n += (double)(c->q_lora_rank + c->kv_lora_rank);
  if (c->attention_bias)
    n += (double)(c->num_attention_heads + 2 * c->num_key_value_heads) * (double)c->head_dim;
  return n;
}

typedef struct {
  double dense_params, owned_dense, owned_expert, expert_flops_params;
  double dense_h2, owned_expert_h2, largest, routed_in, read, cost;
} sq_layer_acc;

sq_status sq_plan_estimate_build(const sq_plan *p, const sq_model_config *c,
                                 const sq_plan_device *d, sq_plan_estimate *e) {
  memset(e, 0, sizeof *e);
  if (!(d->flops > 0) || !(d->mem_bw > 0) || !(d->read_bw > 0) || !(d->net_bw > 0) ||
      !(d->intra_bw > 0) || d->gpus_per_node < 1 || d->bits < 1 || d->bits > 16)
    return sq_error_set(SQ_ERR_ARG, "plan estimate: device figures must be positive (bits 1..16)");
  const int N = p->ranks;
  e->ranks = N;
  e->nodes = (N + d->gpus_per_node - 1) / d->gpus_per_node;
  e->rank = calloc((size_t)N, sizeof *e->rank);
  sq_layer_acc *acc = calloc((size_t)N, sizeof *acc);
  double *tflops = calloc((size_t)N, sizeof *tflops), *thbm = calloc((size_t)N, sizeof *thbm);
  double *tnet = calloc((size_t)N, sizeof *tnet), *tread = calloc((size_t)N, sizeof *tread);
  if (!e->rank || !acc || !tflops || !thbm || !tnet || !tread) {
    free(acc), free(tflops), free(thbm), free(tnet), free(tread);
    sq_plan_estimate_free(e);
    return sq_error_set(SQ_ERR_NOMEM, "plan estimate: out of memory for %d ranks", N);
  }
  bool fp8;
  const double eb = sq_plan_weight_elem_bytes(c, &fp8);
  const double h = (double)c->hidden_size, S = (double)p->seq_len;
  const double topk = c->num_experts_per_tok > 0 ? (double)c->num_experts_per_tok : 1.0;
  const double E = c->num_experts > 0 ? (double)c->num_experts : 1.0;
  const double total_tokens = (double)p->samples * S;
  double dqk = (double)c->head_dim, dv = (double)c->head_dim;
  if (c->family == SQ_FAMILY_DEEPSEEK_V3) {
    dqk = (double)(c->qk_nope_head_dim + c->qk_rope_head_dim);
    dv = (double)c->v_head_dim;
  }
  const double nh = (double)c->num_attention_heads;
  const double net_bw = e->nodes > 1 ? d->net_bw : d->intra_bw;
  const double eb16 = fp8 ? 2.0 : eb; /* embed, norms, routers stay bf16 in fp8 checkpoints */
  const double embed = (double)c->vocab_size * h * eb16;
  for (int r = 0; r < N; ++r) tread[r] = embed;
  e->wall_s = embed / d->read_bw;

  for (int l = 0; l < p->n_layers; ++l) {
    const sq_plan_layer *L = &p->layers[l];
    memset(acc, 0, (size_t)N * sizeof *acc);
    double dense_params = 0, dense_h2 = 0, n_dense_groups = 0;
    for (size_t i = L->first; i < L->first + L->count; ++i) {
      const sq_plan_module *m = &p->modules[i];
      sq_layer_acc *a = &acc[m->owner];
      const double par = (double)m->d_out * (double)m->d_in, in2 = (double)m->d_in * m->d_in;
      const bool first_of_group = i == L->first || p->modules[i - 1].group != m->group;
      a->read += sq_weight_bytes(m, eb, fp8);
      a->cost += m->cost;
      e->rank[m->owner].bytes_out +=
          (uint64_t)(par * d->bits / 8.0 +
                     (double)m->d_out * (double)((m->d_in + 127) / 128) * 2.0);
      const double work = (par + in2) * 4.0; /* fp32 weight + inverse Hessian while solving */
      if (work > a->largest) a->largest = work;
      if (m->kind == SQ_PLAN_EXPERT) {
        a->owned_expert += par;
        /* (routed tokens, d_in) @ (d_in, d_out) in both passes */
        a->expert_flops_params += par;
        if (first_of_group) a->owned_expert_h2 += in2;
        /* dispatch buffer: the tokens routed to this expert, hidden-wide
         * (once per expert, at its first module); the ff-wide intermediate
         * is processed in chunks and not counted */
        if (i == L->first || p->modules[i - 1].expert != m->expert)
          a->routed_in += total_tokens * topk / E * h;
      } else {
        dense_params += par;
        a->owned_dense += par;
        if (first_of_group) {
          dense_h2 += in2;
          n_dense_groups += 1;
        }
      }
    }
    const double small = sq_small_elems(c, L) * eb16;
    double layer_max = 0;
    for (int r = 0; r < N; ++r) {
      const double f0 = tflops[r], h0 = thbm[r], n0 = tnet[r], rd0 = tread[r];
      sq_layer_acc *a = &acc[r];
      sq_plan_rank_est *R = &e->rank[r];
      const double tok = (double)(p->rank[r].sample_end - p->rank[r].sample_begin) * S;
      tread[r] += small + a->read;
      tflops[r] += a->cost; /* owned solves (+ routed-token expert Hessians) */
      /* Forward, 2 passes: dense matmuls + causal attention for own tokens, and
       * the owned experts on the tokens routed to them. */
      const double attn = tok * S * nh * (dqk + dv);
      const double fwd = 2.0 * tok * dense_params + attn +
                         2.0 * (total_tokens * topk / E) * a->expert_flops_params;
      tflops[r] += 2.0 * fwd + tok * dense_h2; /* + partial dense Hessians */
      thbm[r] +=
          2.0 * 2.0 * (dense_params + a->owned_expert) + 8.0 * (dense_h2 + a->owned_expert_h2);
      if (N > 1) {
        /* dense weights: receive the others', send own (original + dequantized) */
        double net = 2.0 * 2.0 * dense_params;
        net += 2.0 * 4.0 * dense_h2; /* partial Hessian reduce, ring model */
        if (L->moe) net += 2.0 * 2.0 * tok * topk * h * 2.0 * (double)(N - 1) / N;
        tnet[r] += net;
      }
      const double act = tok * h * 4.0 * 4.0 + a->routed_in * 4.0;
      const double peak = 2.0 * (dense_params + a->owned_expert) +
                          4.0 * (dense_h2 + a->owned_expert_h2) + a->largest + act;
      const double t = (tflops[r] - f0) / d->flops + (thbm[r] - h0) / d->mem_bw +
                       (tnet[r] - n0) / net_bw + (tread[r] - rd0) / d->read_bw;
      if (t > layer_max) layer_max = t;
      if (peak > (double)R->peak_mem) {
        R->peak_mem = (uint64_t)peak;
        R->peak_layer = l;
      }
    }
    e->wall_s += layer_max;
  }
  double tsum = 0, csum = 0, cmax = 0;
  e->busiest = 0;
  for (int r = 0; r < N; ++r) {
    sq_plan_rank_est *R = &e->rank[r];
    R->bytes_read = (uint64_t)tread[r];
    R->bytes_net = (uint64_t)tnet[r];
    R->flops = tflops[r];
    R->time_s =
        tflops[r] / d->flops + thbm[r] / d->mem_bw + tread[r] / d->read_bw + tnet[r] / net_bw;
    e->total.bytes_read += R->bytes_read;
    e->total.bytes_net += R->bytes_net;
    e->total.bytes_out += R->bytes_out;
    e->total.flops += R->flops;
    if (R->peak_mem > e->total.peak_mem) {
      e->total.peak_mem = R->peak_mem;
      e->total.peak_layer = R->peak_layer;
    }
    if (R->time_s > e->total.time_s) {
      e->total.time_s = R->time_s;
      e->busiest = r;
    }
    if (R->peak_mem > d->gpu_mem) e->over_memory = true;
    tsum += R->time_s;
    csum += p->rank[r].load;
    if (p->rank[r].load > cmax) cmax = p->rank[r].load;
  }
  e->imbalance = tsum > 0 ? e->total.time_s / (tsum / N) : 1.0;
  e->cost_imbalance = csum > 0 ? cmax / (csum / N) : 1.0;
  e->makespan_ratio = csum > 0 ? p->layer_makespan / (csum / N) : 1.0;
  free(acc), free(tflops), free(thbm), free(tnet), free(tread);
  return SQ_OK;
}

void sq_plan_estimate_free(sq_plan_estimate *e) {
  free(e->rank);
  e->rank = NULL;
}
