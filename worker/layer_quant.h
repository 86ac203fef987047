/* One decoder layer's quantization, as separate steps so that the multi-rank
 * pipeline can put communication between them (DESIGN.md):
 *   1. sq_lq_begin_layer + sq_lq_hooks: the calibration forward accumulates a
 *      partial Hessian (unscaled sum + token count, kernels/hessian.h) per
 *      Linear input: q/k/v share norm1(x), gate/up share norm2(h), o and down
 *      have their own;
 *   2. sq_lq_reduce: partial Hessians go to each module's owner (comm.h);
 *   3. sq_lq_solve: the owner finalizes H and runs GPTQ / SparseGPT / RTN on
 *      one module, writes its compressed tensors to its shard writer, and
 *      leaves the dequantized weight (d_out, d_in) in lq->deq;
 *   4. sq_lq_share: the dequantized weight replaces the module's weight on
 *      every rank (the caller then re-runs the layer for the next inputs).
 * Modules may use different solver options (recipes): sq_lq_init sizes the
 * buffers for every option set the job will use, sq_lq_set_opts selects the
 * one of the next sq_lq_declare / sq_lq_solve.
 * The hooks also observe, on every rank for its own samples, the absolute
 * maximum of each Linear input group and of the k (after RoPE) / v cache
 * tensors: static activation scales and kv-cache scales; multi-rank callers
 * max-reduce them with sq_lq_reduce_observers before use.
 * Memory: the four Hessian sums, one finalized H and the solver's outputs for
 * the largest module, allocated once in sq_lq_init and reused for every layer. */
#ifndef SQ_WORKER_LAYER_QUANT_H
#define SQ_WORKER_LAYER_QUANT_H

#include <stdint.h>

#include "common/status.h"
#include "kernels/forward.h"
#include "kernels/hessian.h"
#include "sharding/compressed.h"
#include "worker/comm.h"
#include "worker/model.h"

typedef enum sq_lq_method { SQ_LQ_RTN = 0, SQ_LQ_GPTQ, SQ_LQ_SPARSEGPT } sq_lq_method;

typedef struct sq_lq_opts {
  sq_lq_method method;
  int quantize;          /* 0: SparseGPT pruning only (weights stay dense) */
  sq_qargs q;            /* weight quantization; scale_dtype = the stored scales' dtype */
  sq_ct_format fmt;      /* PACK, INT, NAIVE or FLOAT */
  int actorder;          /* 0 none, 1 group (g_idx stored), 2 weight */
  int64_t block;         /* GPTQ / SparseGPT block size */
  float damp;            /* dampening fraction */
  float sparsity;        /* SparseGPT unstructured ratio */
  int prune_n, prune_m;  /* SparseGPT N:M (0: unstructured) */
  sq_dtype dense_dtype;  /* dtype of dense outputs (pruning only) */
  int post_rtn;          /* SparseGPT with quantize: prune first (dense), then
                            round-to-nearest with q (fp8, or a recipe's
                            QuantizationModifier after a SparseGPTModifier) */
} sq_lq_opts;

/* Figures of one solved module. */
typedef struct sq_lq_stat {
  double loss;        /* solver loss (NaN for RTN: no Hessian) */
  double seconds;
  uint64_t bytes_in;  /* original weight bytes */
  uint64_t bytes_out; /* stored bytes (compressed tensors) */
} sq_lq_stat;

typedef struct sq_lq {
  const sq_model_info *info;
  sq_lq_opts opts;
  sq_hessian h[SQ_HG_COUNT];
  int hessians;       /* 0 for RTN: no calibration pass needed */
  float *H;           /* (dmax, dmax) finalized Hessian of h_group */
  int h_group;        /* group H holds, -1 none */
  int layer;
  int8_t *codes;      /* (d_out, d_in) of the largest module */
  float *scales;
  int32_t *zps, *gidx;
  float *deq;         /* the last solved module's dequantized weight */
  uint8_t *mask;
  float *tmp;          /* (d_out, d_in) pruned weight before post_rtn, else NULL */
  float absmax[SQ_HG_COUNT];  /* max |x| of each input group this layer */
  float k_absmax, v_absmax;   /* max |k| (after RoPE), max |v| this layer */
  char hname[SQ_HG_COUNT][96];
} sq_lq;

/* opts[0..n_opts): every option set the job uses (n_opts >= 1); opts[0] is
 * selected. Hessians are kept when any of them needs them. */
sq_status sq_lq_init(sq_lq *lq, const sq_model_info *info, const sq_lq_opts *opts, int n_opts);
/* Select the options of the next declare/solve (one of those given to init). */
void sq_lq_set_opts(sq_lq *lq, const sq_lq_opts *opts);
void sq_lq_free(sq_lq *lq);

/* Does the method need a calibration pass (Hessians)? */
int sq_lq_needs_calibration(const sq_lq *lq);
/* Zero the Hessians and the absmax observers for layer `layer`. */
void sq_lq_begin_layer(sq_lq *lq, int layer);
/* Hooks that accumulate the Hessians during sq_acts_forward. */
sq_fwd_hooks sq_lq_hooks(sq_lq *lq);
/* Step 2: reduce the partial Hessians to their owners: group g's sum and
 * token count go to rank owner[g] (the owner of every module reading that
 * input), in rank order (deterministic). Other ranks keep their partials. */
sq_status sq_lq_reduce(sq_lq *lq, const sq_comm *comm, const int owner[SQ_HG_COUNT]);
/* Max-reduce the absmax observers (input groups, k, v) over ranks so that
 * every rank sees the maxima over all samples (static input / kv scales). */
sq_status sq_lq_reduce_observers(sq_lq *lq, const sq_comm *comm);

/* Declare module `name`'s compressed tensors (quantized) in w. */
sq_status sq_lq_declare(const sq_lq *lq, sq_st_writer *w, const char *name, int64_t d_out,
                        int64_t d_in);
/* Step 3: solve module `mod` (weight W, torch layout) named `name` (without
 * ".weight"), write its tensors to w (declared with sq_lq_declare), leave the
 * dequantized weight in lq->deq. src_dtype: the original weight's dtype. */
sq_status sq_lq_solve(sq_lq *lq, int mod, const char *name, const float *W, sq_dtype src_dtype,
                      sq_st_writer *w, sq_lq_stat *stat);
/* Step 4: lq->deq (owner's) replaces W (d_out, d_in) on every rank. */
sq_status sq_lq_share(sq_lq *lq, const sq_comm *comm, int owner, float *W, int64_t d_out,
                      int64_t d_in, const char *name);

#endif
