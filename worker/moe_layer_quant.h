/* One MoE decoder layer's quantization on every rank of the job (issue 8):
 * the MoE counterpart of worker/layer_quant.h + the dense layer loop of
 * coordinator/cmd_quantize.c, for the models of worker/moe_model.h.
 *
 * sq_mlq_layer(layer) is one collective step, made by every rank with its own
 * samples' hidden states (n, T, d) at the layer's input (worker/activations.h):
 *   1. load: every rank reads the layer's small tensors (norms, biases, router,
 *      shared_expert_gate) and the Linear weights of the modules it owns
 *      (routed experts: owners only; attention / dense MLP / shared expert:
 *      the owner reads, then broadcasts, since every rank forwards them);
 *   2. calibration pass with the ORIGINAL weights: attention + norm2 on this
 *      rank's samples (batches of opts.batch samples), q/k/v (MLA: q_a/kv_a,
 *      q_b, kv_b) and o_proj input Hessians accumulated locally; for a MoE FFN the post-norm2
 * states of all local tokens go through the expert-parallel calibration (worker/moe_calib.h:
 * all-to-all dispatch, expert Hessians on their owners, shared expert partial Hessians reduced to
 * its owner, all-tokens mode per opts); a dense FFN layer accumulates gate/up and down Hessians
 * like attention;
 *   3. the partial attention / dense Hessians are reduced to their owners in
 *      rank order (deterministic);
 *   4. every owner solves its modules (GPTQ, or RTN for --method rtn and for
 *      experts flagged by moe_calib's RTN fallback when all_tokens is 0) and
 *      writes their compressed tensors to its shard writer (declared before
 *      with sq_mlq_declare);
 *   5. the dequantized weights of the replicated modules go to every rank
 *      (the experts stay on their owners, which is all the re-run needs);
 *   6. re-run of the quantized layer (routed expert outputs only, no
 *      all-tokens) replaces the stored states by the layer's outputs.
 * Every local step ends with an agreement (sq_comm_agree_status), so a failure
 * on one rank becomes the same error "rank R (host): cause" on every rank.
 * SQ_ERR_MPI means a collective failed: the caller must sq_comm_abort().
 *
 * Memory per rank: the layer's replicated weights + its owned experts, the
 * Hessians of its modules, and three (n*T, d) fp32 buffers (h, norm2(h), the
 * MoE output) besides the activations themselves (also with a spill file).
 * Not written here: the layer's tensors that stay dense (norms, router,
 * shared_expert_gate, biases, q/k norms); the driver copies them raw (as
 * cmd_quantize does for dense layers, e.g. from the owner of q_proj).
 * Equivalence across rank counts: the expert Hessians are bit-identical to
 * one process (moe_calib.h), the attention ones are partial sums reduced in
 * rank order (fp32 rounding), so outputs agree within rounding ties. */
#ifndef SQ_WORKER_MOE_LAYER_QUANT_H
#define SQ_WORKER_MOE_LAYER_QUANT_H

#include <stdint.h>

#include "common/status.h"
#include "kernels/hessian.h"
#include "sharding/safetensors.h"
#include "worker/activations.h"
#include "worker/comm.h"
#include "worker/layer_quant.h"
#include "worker/moe_calib.h"
#include "worker/moe_model.h"

typedef struct sq_mlq_opts {
  sq_lq_opts lq;      /* method GPTQ or RTN, quantize 1, q, fmt, actorder, block, damp */
  int all_tokens;     /* moe_calib all-tokens mode for expert Hessians [1] */
  int64_t min_tokens; /* RTN-fallback threshold when all_tokens is 0 */
  int64_t batch;      /* samples per attention batch [8] */
} sq_mlq_opts;

/* Defaults: W4A16 GPTQ (int4 symmetric, group 128, pack-quantized, fp32
 * scales: set lq.q.scale_dtype to the model's dtype), all_tokens 1,
 * min_tokens SQ_MOE_CALIB_MIN_TOKENS, batch 8. */
sq_mlq_opts sq_mlq_opts_default(void);

/* What one layer did (this rank's solves; moe the same on every rank). */
typedef struct sq_mlq_stat {
  int moe;                      /* 1: MoE FFN, moe_stats valid */
  sq_moe_calib_stats moe_stats; /* tokens per expert (min/median/max) etc. */
  int solved;                   /* modules this rank solved */
  int rtn_fallback;             /* of which experts solved by RTN (too few tokens) */
  double loss;                  /* Σ GPTQ losses of this rank's modules */
  double seconds;               /* wall time of the whole step */
  uint64_t bytes_in, bytes_out;
} sq_mlq_stat;

typedef struct sq_mlq {
  const sq_moe_model *m;
  const sq_comm *c;
  sq_mlq_opts o;
  int rank;
  int64_t n, T; /* this rank's samples */
  sq_moe_lbuf buf;
  sq_hessian hg[6];      /* q/k/v (MLA q_a/kv_a), o, dense gate/up, dense down,
                            MLA q_b, kv_b (partials) */
  sq_hessian *egu, *edn; /* (E): owned experts only, initialised per layer */
  sq_hessian sgu, sdn;   /* shared expert */
  int *expert_owner, *owned, *fallback;
  int64_t *tokens;          /* (E) routed tokens per expert, last layer */
  float *H;                 /* (dmax, dmax) finalized Hessian */
  const sq_hessian *h_of_H; /* which Hessian H holds */
  int8_t *codes;
  float *scales, *deq;
  int32_t *zps, *gidx;
  float *res, *xn2, *y, *x; /* (n*T, d) x3 and one batch (batch*T, d) */
  float *zero_ffn;          /* (d) zeros: the dummy FFN of the attention pass */
  void *ws;
  size_t ws_bytes;
} sq_mlq;

/* n_samples x T: this rank's share of the calibration samples. */
sq_status sq_mlq_init(sq_mlq *q, const sq_moe_model *m, const sq_comm *c, const sq_mlq_opts *o,
                      int64_t n_samples, int64_t T);
void sq_mlq_free(sq_mlq *q);

/* Does this rank solve any module of layer l? */
int sq_mlq_writes_layer(const sq_mlq *q, int64_t layer);
/* Declare the compressed tensors of layer l's modules this rank owns in w. */
sq_status sq_mlq_declare(const sq_mlq *q, int64_t layer, sq_st_writer *w);
/* The collective step above. w: this rank's writer (NULL if it owns nothing
 * in the layer); acts: this rank's n samples at the layer's input. */
sq_status sq_mlq_layer(sq_mlq *q, int64_t layer, sq_acts *acts, sq_st_writer *w, sq_mlq_stat *st);

#endif
