/* The distributed plan: which rank owns which quantizable module of every
 * decoder layer, which calibration samples each rank forwards, and an estimate
 * of what that costs per rank. Pure bookkeeping from config.json alone: no
 * weights, no MPI (the worker and `shardq plan` both use it).
 *
 * Execution model (DESIGN.md): layers run one after another on all ranks;
 * inside a layer the samples are split across ranks (data parallel) and each
 * quantizable module has one owner that runs its GPTQ/SparseGPT solve. Modules
 * that read the same input share one Hessian (q/k/v; gate/up; per expert
 * gate/up; DeepSeek's q_a/kv_a_proj_with_mqa) and are placed as one unit.
 *
 * Module names are the Hugging Face module names without ".weight", as the
 * output checkpoint (compressed-tensors) spells them:
 *   llama/mistral/qwen2   model.layers.L.self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj
 *   mixtral               model.layers.L.block_sparse_moe.experts.E.w1|w3 (gate/up), w2 (down)
 *   qwen2_moe/qwen3_moe   model.layers.L.mlp.experts.E.{gate,up,down}_proj,
 *                         mlp.shared_expert.{gate,up,down}_proj (qwen2_moe),
 *                         dense mlp.* on mlp_only_layers / off decoder_sparse_step
 *   deepseek_v2/v3        self_attn.q_a_proj (q_lora_rank, h) or q_proj, q_b_proj,
 *                         kv_a_proj_with_mqa (kv_lora_rank + rope, h), kv_b_proj, o_proj;
 *                         mlp.* dense for l < first_k_dense_replace, then
 *                         mlp.experts.E.*, mlp.shared_experts.* (n_shared * moe_inter)
 *   llama4                language_model.model.layers.L.feed_forward.experts.E.{gate,up,down}_proj
 *                         (slices of the fused stacks experts.gate_up_proj (E, h, 2 ff) and
 *                         experts.down_proj (E, ff, h), named as llm-compressor unpacks them),
 *                         feed_forward.shared_expert.*, dense feed_forward.*
 * (intermediate_size_mlp) Routers (mlp.gate, feed_forward.router, shared_expert_gate), norms,
 * embeddings and lm_head are not quantized and not planned.
 *
 * Cost model (per module, what its owner alone does):
 *   solve   d_out·d_in² (GPTQ sweep) + d_in³ (Cholesky + inverse)
 *   experts + routed tokens·d_in² per Hessian group (the owner accumulates the
 *             expert's Hessian from the tokens dispatched to it; expected tokens
 *             = samples·seq_len·experts_per_tok / experts, uniform routing)
 * Dense Hessians are accumulated by every rank over its own samples and reduced
 * to the owner, so they are data-parallel and not part of the owner's cost.
 *
 * The owner also reads the module's weight from the checkpoint, so the unit
 * that is balanced is load = cost + byte_cost·weight bytes (byte_cost = the
 * device's flops / read bandwidth: FLOP-equivalents of reading one byte).
 *
 * Assignment: per layer, greedy longest-processing-time over Hessian groups
 * (load descending, ties by first module index), each to the rank with the
 * least load in this layer, ties to the least load over the previous layers,
 * then the lower rank: deterministic, and it rotates small layers over ranks. */
#ifndef SQ_SHARDING_PLAN_H
#define SQ_SHARDING_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "sharding/model_config.h"

typedef enum sq_plan_kind {
  SQ_PLAN_ATTN = 0, /* attention projections (MLA's low-rank ones too) */
  SQ_PLAN_MLP,      /* dense MLP */
  SQ_PLAN_EXPERT,   /* one routed expert's projection */
  SQ_PLAN_SHARED    /* shared expert(s) of an MoE layer */
} sq_plan_kind;

/* Where the weight comes from for a fused Llama-4 expert stack. */
typedef enum sq_plan_slice {
  SQ_SLICE_NONE = 0, /* the whole 2-D tensor `tensor` */
  SQ_SLICE_GATE,     /* gate_up_proj[expert][:, 0:ff]ᵀ */
  SQ_SLICE_UP,       /* gate_up_proj[expert][:, ff:2ff]ᵀ */
  SQ_SLICE_DOWN      /* down_proj[expert]ᵀ */
} sq_plan_slice;

typedef struct sq_plan_module {
  char name[112];   /* module name, e.g. "model.layers.3.self_attn.q_proj" */
  char tensor[128]; /* checkpoint tensor holding the weight */
  int layer;
  int expert; /* routed expert index, -1 otherwise */
  sq_plan_kind kind;
  sq_plan_slice slice;
  int64_t d_out, d_in;
  int group;   /* Hessian group, numbered over the whole plan from 0 */
  int owner;   /* rank */
  double cost; /* owner FLOPs (see cost model); a group's routed-token
                  Hessian is counted on its first module */
  double load; /* what the assignment balances: cost + byte_cost × the
                  checkpoint bytes of the weight (the owner reads it) */
} sq_plan_module;

typedef struct sq_plan_layer {
  size_t first, count; /* modules[first .. first + count) */
  bool moe;
  int64_t n_experts; /* routed experts planned in this layer (0 for dense) */
  int first_group, n_groups;
} sq_plan_layer;

typedef struct sq_plan_rank {
  int64_t sample_begin, sample_end; /* calibration samples [begin, end) */
  size_t n_modules;                 /* over all layers */
  double cost;                      /* Σ owned module cost */
  double load;                      /* Σ owned module load */
  uint64_t params;                  /* Σ owned d_out·d_in */
  double max_layer_load;            /* largest per-layer load */
} sq_plan_rank;

typedef struct sq_plan_opts {
  int64_t samples;  /* calibration samples (default 512) */
  int64_t seq_len;  /* tokens per sample (default 2048) */
  double byte_cost; /* FLOP-equivalents per checkpoint byte an owner reads:
                       flops / read_bw of the device (default 400e12 / 2e9);
                       0 balances on the solve cost alone */
} sq_plan_opts;

typedef struct sq_plan {
  int ranks;
  int64_t samples, seq_len;
  int n_layers;
  sq_plan_layer *layers; /* [n_layers] */
  size_t n_modules;
  sq_plan_module *modules; /* layer by layer, in checkpoint order */
  int n_groups;
  sq_plan_rank *rank;    /* [ranks] */
  double layer_makespan; /* Σ_l max_r load(l, r): the owners' critical path */
} sq_plan;

void sq_plan_opts_default(sq_plan_opts *o);

/* The quantizable modules of every decoder layer of c, in checkpoint order,
 * with shapes, kinds and Hessian groups (owner 0, cost filled). *modules and
 * *layers are malloc'd ([*n] and [c->num_hidden_layers]); caller frees.
 * SQ_ERR_UNSUPPORTED for families without a module list (names the file). */
sq_status sq_plan_modules(const sq_model_config *c, const sq_plan_opts *o, sq_plan_module **modules,
                          size_t *n, sq_plan_layer **layers);

/* Build the plan for `ranks` ranks (>= 1). opts may be NULL (defaults). On
 * failure *out is NULL. */
sq_status sq_plan_build(const sq_model_config *c, int ranks, const sq_plan_opts *opts,
                        sq_plan **out);
void sq_plan_free(sq_plan *p);

/* Index of the module named name (no ".weight"), or -1. Linear scan. */
long sq_plan_find(const sq_plan *p, const char *name);

const char *sq_plan_kind_name(sq_plan_kind k);

/* Bytes per stored Linear weight element in the checkpoint: torch_dtype's size
 * (2 when absent), 1 for fp8 checkpoints (quantization_config.quant_method
 * "fp8", DeepSeek-V3; their 128x128 block scales are not counted here). */
double sq_plan_weight_elem_bytes(const sq_model_config *c, bool *fp8);

/* ---- estimates ---- */

/* Device and job figures (per GPU / rank). */
typedef struct sq_plan_device {
  double flops;      /* sustained FLOP/s per rank (default 400e12) */
  double mem_bw;     /* HBM bytes/s (default 2e12): weight + Hessian traffic */
  double read_bw;    /* checkpoint read bytes/s per rank (default 2e9) */
  double net_bw;     /* inter-node bytes/s per rank (default 25e9) */
  double intra_bw;   /* intra-node bytes/s per rank (default 150e9) */
  uint64_t gpu_mem;  /* bytes (default 80 GiB) */
  int gpus_per_node; /* default 8 */
  int bits;          /* output weight bits (default 4), group size 128 */
} sq_plan_device;

typedef struct sq_plan_rank_est {
  uint64_t bytes_read; /* checkpoint bytes this rank reads */
  uint64_t bytes_net;  /* bytes sent + received */
  uint64_t bytes_out;  /* compressed bytes it writes */
  uint64_t peak_mem;   /* largest per-layer working set */
  int peak_layer;
  double flops;  /* forward (2 passes) + Hessians + owned solves */
  double time_s; /* flops/F + HBM/mem_bw + read/read_bw + net/bw, no overlap:
                    this rank's busy time */
} sq_plan_rank_est;

typedef struct sq_plan_estimate {
  int ranks, nodes;
  sq_plan_rank_est *rank; /* [ranks] */
  sq_plan_rank_est total; /* sums (peak_mem, time_s: maxima) */
  int busiest;            /* rank with the largest time_s */
  double imbalance;       /* max / mean time_s */
  double cost_imbalance;  /* max / mean owned load (p->rank[].load) */
  double makespan_ratio;  /* layer_makespan / (Σ load / ranks) */
  double wall_s;          /* Σ over layers of the slowest rank's layer time
                             (layers are synchronous); the job's estimate,
                             plus embed read once at start */
  bool over_memory;       /* some rank's peak exceeds gpu_mem */
} sq_plan_estimate;

void sq_plan_device_default(sq_plan_device *d);

/* Per-rank bytes, memory, FLOPs and time for plan p of model c.
 *
 * Model: each rank reads from the checkpoint only the weights of the modules it
 * owns (every byte once across the job) plus the small unquantized tensors
 * every rank needs (norms, routers, biases, and the embedding table). The dense
 * (non-expert) weights of a layer that a rank does not own reach it over the
 * network twice: original for the calibration pass, dequantized for the
 * recompute pass. Partial dense Hessians are reduced to their owners (each rank
 * sends d_in² floats per group it does not own, the owner receives ~as much);
 * MoE tokens go all-to-all (hidden in bf16, out and back, both passes).
 * Peak memory per layer: the layer's dense weights (bf16) + owned expert
 * weights (bf16) + a partial Hessian per dense group + a Hessian per owned
 * expert group + the largest owned module's fp32 weight and inverse Hessian +
 * activations samples/N × seq_len × hidden × 4 B × 4 buffers. Out: *e owns rank[]. */
sq_status sq_plan_estimate_build(const sq_plan *p, const sq_model_config *c,
                                 const sq_plan_device *d, sq_plan_estimate *e);
void sq_plan_estimate_free(sq_plan_estimate *e);

#endif
