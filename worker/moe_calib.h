/* Expert-parallel calibration of one MoE decoder layer's FFN (issue 8).
 *
 * Every rank holds the post-attention, post-norm2 hidden states h (T_r, d) of
 * its own calibration tokens, the router weight (replicated), the shared expert
 * (replicated, see below) and the weights of the routed experts it OWNS
 * (expert_owner[e] == rank). One call of sq_moe_calib, made by every rank:
 *
 *   1. route locally: logits (T_r, E) = h · W_routerᵀ, sq_moe_route, and
 *      sq_moe_dispatch_build (per-expert lists in ascending token order);
 *      the shared expert runs on the local tokens (partial Hessians).
 *   2. dispatch, all-to-all (sq_comm_alltoallv, label "moe dispatch"):
 *      routed mode: to each rank p, the rows of the experts p owns, ordered by
 *        expert then token, each row (d + 1) floats = h row and routing weight;
 *      all-tokens mode: every local token row once to every rank owning at
 *        least one expert, each row (d + 2k) floats = h row, k expert ids
 *        (int32 bits) and k routing weights; owners rebuild the routing.
 *   3. each owner runs its experts in ascending id; expert e's input X_e is
 *      the rows of e from every source rank in rank order, then token order.
 *      With tokens split across ranks in contiguous ranges (rank 0 the first
 *      T_0 tokens, ...) this is exactly the matrix the single-process
 *      sq_moe_forward builds, so gate/up Hessians (X_e) and down Hessians
 *      (silu(X_e·gateᵀ)·(X_e·upᵀ)) are accumulated with ONE sq_hessian_accumulate
 *      call each on the same matrix: bit-identical to the single-process hooks
 *      (given the same routing weights, see 4).
 *   4. expert outputs go back all-to-all ("moe combine"), routed rows only,
 *      in the layout of step 2's routed mode, and each rank combines
 *      y[t] = Σ_e (ascending e) w_te · out_e(t)   (Llama-4: out_e(w_te · h_t))
 *      then adds the shared expert output (times sigmoid(h·gᵀ) for Qwen2's
 *      shared_expert_gate): the same operations in the same order as
 *      sq_moe_forward. The only differences from the single-process kernel on
 *      all tokens come from GEMMs that each rank runs on its OWN rows (router
 *      logits, shared expert): OpenBLAS's result for a row can change in the
 *      last bit with the batch's row count. So y matches within
 *      1e-5 + 1e-5·|y| (measured; bit-identical when the router GEMM is run on
 *      the same row ranges and there is no shared expert), and for Llama-4,
 *      whose routing weight scales the expert INPUT, the expert Hessians match
 *      within 1e-5 of their largest entry (bit-identical otherwise).
 *   5. the shared expert's partial Hessians are reduced to shared_owner in rank
 *      order (sq_comm_reduce_hessian): deterministic, but a sum of per-rank
 *      partial sums, so equal to a single-process Hessian only within fp32
 *      rounding (relative 1e-5 of the largest entry), like every dense module.
 *
 * Shared expert: REPLICATED (every rank holds its weights and computes it for
 * its own tokens), like the attention and router. It sees every token anyway,
 * so sending every token to one owner would cost an all-to-all of all of h
 * and make that rank the bottleneck; its weights (3·d·shared_ff) are small
 * next to the routed experts (E·3·d·ff). It has one owner for the solve.
 *
 * all_tokens (default 1, as llm-compressor's MoE calibration does): every
 * expert's Hessian sees ALL T = Σ T_r tokens while y uses only the routed
 * (token, expert) pairs (sq_moe_hooks.all_tokens semantics: for Llama-4 the
 * routed rows enter scaled by their weight, the others unscaled). Cost: each
 * rank sends its T_r rows to every other expert-owning rank, i.e. an
 * allgather of h (receives (T - T_r)·(d + 2k)·4 bytes, vs ≈ T_r·k·(d+1)·4 in
 * routed mode), holds all T rows (T·d·4 bytes), and runs its experts on all T
 * tokens: E/k times the routed FLOPs in total (the same as the single-process
 * all_tokens mode). For very large calibration sets call it on token chunks:
 * Hessians accumulate across calls.
 * With all_tokens 0 an expert whose Hessian saw fewer than min_tokens tokens
 * (over all ranks) is flagged for RTN fallback (rtn_fallback[e] = 1, one
 * warning line on rank 0); it is never left unquantized and its Hessian is
 * simply not used (a zero count would make sq_hessian_finalize fail).
 *
 * Errors: local failures (bad arguments, NaN logits, no memory, the fail point
 * "moe-dispatch" which sits after the send buffers are built, before the
 * dispatch all-to-all) are agreed between ranks before the next collective
 * (sq_comm_agree_status), so EVERY rank returns the failure with the message
 * "rank R (host): ..." of the lowest failing rank. SQ_ERR_MPI means a
 * collective failed or timed out: the communicator is unusable, the caller
 * must sq_comm_abort(). */
#ifndef SQ_WORKER_MOE_CALIB_H
#define SQ_WORKER_MOE_CALIB_H

#include <stdint.h>

#include "common/status.h"
#include "kernels/hessian.h"
#include "kernels/moe.h"
#include "worker/comm.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SQ_MOE_CALIB_MIN_TOKENS 16 /* default RTN-fallback threshold (all_tokens 0) */
#define SQ_MOE_CALIB_FAILPOINT "moe-dispatch"

typedef struct sq_moe_calib_cfg {
  sq_moe_router_cfg router; /* E = router.n_experts, k = router.top_k */
  int64_t hidden;           /* d */
  int64_t ff;               /* routed experts' intermediate size */
  const float *router_w;    /* (E, d), on every rank */
  /* (E): gate/up (ff, d), down (d, ff); only entries owned by this rank are
   * read (others may be NULL pointers). */
  const sq_moe_expert *experts;
  const int *expert_owner; /* (E) owner rank of each expert, same on all ranks */
  /* Shared expert, replicated on every rank; shared.gate NULL: none. */
  sq_moe_expert shared;
  int64_t shared_ff;
  const float *shared_gate; /* Qwen2-MoE shared_expert_gate (1, d) or NULL */
  int shared_owner;         /* rank that receives the shared expert's Hessians */
  int all_tokens;           /* see above; sq_moe_calib_cfg_default sets 1 */
  int64_t min_tokens;       /* RTN-fallback threshold, >= 1 */
} sq_moe_calib_cfg;

/* Routed tokens per expert over all ranks, and what the call moved. */
typedef struct sq_moe_calib_stats {
  int64_t total_tokens;     /* T = Σ T_r */
  int64_t tok_min, tok_max; /* routed tokens per expert over the E experts */
  double tok_median;        /* middle value; mean of the two middle ones for even E */
  int n_fallback;           /* experts flagged for RTN */
  int64_t bytes_sent;       /* this rank's all-to-all payload to OTHER ranks, both passes */
  int64_t bytes_recv;       /* and from other ranks */
  double seconds;           /* wall time of the call on this rank */
} sq_moe_calib_stats;

typedef struct sq_moe_calib_out {
  float *y; /* (T_r, d): the MoE block output for the local tokens (no residual) */
  /* (E) each. For every expert this rank owns, the caller sq_hessian_init's
   * gate_up[e] with d and down[e] with ff; the call ADDS to them (so chunks
   * accumulate). Entries of other ranks' experts are not touched. */
  sq_hessian *gate_up, *down;
  /* Shared expert (when cfg.shared.gate): initialised (d and shared_ff) on
   * EVERY rank; on return shared_owner holds the sum over ranks, the others
   * their own partial contribution. NULL when there is no shared expert. */
  sq_hessian *shared_gate_up, *shared_down;
  int *rtn_fallback;      /* (E) or NULL: 1 = too few tokens, quantize with RTN */
  int64_t *expert_tokens; /* (E) or NULL: routed tokens per expert, all ranks */
  sq_moe_calib_stats stats;
} sq_moe_calib_out;

/* all_tokens = 1, min_tokens = SQ_MOE_CALIB_MIN_TOKENS, shared_owner 0, the
 * rest zero: fill in the shapes and pointers. */
sq_moe_calib_cfg sq_moe_calib_cfg_default(void);

/* Validate cfg against the communicator (one error line naming the field). */
sq_status sq_moe_calib_check(const sq_comm *c, const sq_moe_calib_cfg *cfg);

/* The collective step above. Every rank calls it with the same cfg (except
 * for which expert weights are present) and its own h (n_tokens, d);
 * n_tokens may be 0. */
sq_status sq_moe_calib(const sq_comm *c, const sq_moe_calib_cfg *cfg, const float *h,
                       int64_t n_tokens, sq_moe_calib_out *out);

/* One line "tokens/expert min A median B max C over E experts (T tokens),
 * F RTN fallbacks, a2a sent X recv Y, S s" for the layer summary. */
void sq_moe_calib_describe(const sq_moe_calib_stats *s, int n_experts, char *buf, size_t len);

#ifdef __cplusplus
}
#endif

#endif
