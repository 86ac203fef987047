/* `shardq eval` for the MoE models of worker/moe_model.h (mixtral, qwen2_moe,
 * qwen3_moe, deepseek_v3): the protocol of worker/evaluate.h (NLL / perplexity of one
 * model, KL of an original vs a quantized directory), with each decoder layer
 * run by kernels/moe_layer.h on one process: every layer's weights (all
 * experts) are loaded once per model, dequantized from compressed-tensors
 * through sharding/compressed.h's reader (DeepSeek-V3 fp8 block-scaled
 * originals through sharding/fp8_block.h), so memory is one layer plus the
 * hidden states of the evaluation rows. sq_eval_run dispatches here. */
#ifndef SQ_WORKER_MOE_EVAL_H
#define SQ_WORKER_MOE_EVAL_H

#include "common/status.h"
#include "worker/evaluate.h"

/* 1 when dir/config.json is a MoE family handled here (0 otherwise, also when
 * unreadable: the dense path reports that). */
int sq_moe_eval_detect(const char *dir);

sq_status sq_moe_eval_run(const char *dir_a, const char *dir_b, const char *data,
                          const sq_eval_opts *opts, sq_eval_result *out);

#endif
