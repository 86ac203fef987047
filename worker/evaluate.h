/* Perplexity of one model, or of an original and a quantized model side by
 * side with the KL divergence of their next-token distributions, computed
 * layer by layer: the hidden states of all samples are kept (memory or HDF5
 * spill) and each decoder layer's weights are loaded once, so memory is flat
 * in depth. Either directory may be dense or compressed-tensors (read through
 * sharding/compressed.h, i.e. exactly as stored).
 *
 * Protocol: for each row of input_ids (n, T), the NLL of tokens 1..T-1 given
 * their prefix; PPL = exp(total NLL / (n * (T - 1))). KL(p_a || p_b) is taken
 * at the same n * (T - 1) positions: sum_v p_a(v) (log p_a(v) - log p_b(v)),
 * log-softmax in double; reported as mean, 99th percentile (nearest rank) and
 * max. Accuracy recovery = ppl_a / ppl_b. */
#ifndef SQ_WORKER_EVALUATE_H
#define SQ_WORKER_EVALUATE_H

#include <stdint.h>

#include "common/status.h"

typedef struct sq_eval_opts {
  int64_t samples;        /* rows to use (<= 0: all) */
  int64_t seq_len;        /* <= 0: the file's */
  int64_t batch;          /* samples per forward batch (<= 0: 8) */
  const char *spill_dir;  /* keep hidden states in HDF5 files there */
  float *logits_a;        /* optional (n, T, vocab): model a's logits (tests) */
} sq_eval_opts;

typedef struct sq_eval_result {
  int64_t samples, seq_len, tokens; /* tokens scored = samples * (seq_len - 1) */
  int64_t vocab;
  double nll_a, nll_b;              /* mean NLL per scored token */
  double ppl_a, ppl_b;
  int has_b;
  double kl_mean, kl_p99, kl_max;
  double seconds;
} sq_eval_result;

/* Evaluate dir_a (and dir_b when not NULL) on data (int32 input_ids). */
sq_status sq_eval_run(const char *dir_a, const char *dir_b, const char *data,
                      const sq_eval_opts *opts, sq_eval_result *out);

/* Fill r from the per-model NLL sums over n rows of T tokens (vocab V) and, when
 * a second model ran, the per-token KL values kl[n*(T-1)] (sorted in place for
 * the 99th percentile; NULL for one model). t0: start time (sq_time_now). Shared
 * by the dense and the MoE evaluation loops. */
void sq_eval_summarize(sq_eval_result *r, int64_t n, int64_t T, int64_t V, const double nll[2],
                       double *kl, double t0);

#endif
