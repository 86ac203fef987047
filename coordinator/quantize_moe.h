/* `shardq quantize` for MoE checkpoints (mixtral, qwen2_moe, qwen3_moe,
 * deepseek_v3 incl. its fp8 block-scaled weights, dequantized on load): the
 * layer-sequential job of cmd_quantize.c, with each decoder layer run by
 * worker/moe_layer_quant.h (attention data-parallel, experts expert-parallel
 * with all-to-all dispatch, every module solved by its plan owner).
 *
 * Output: the same layout as the dense job: part 0 (embeddings, final norm,
 * lm_head; rank 0) and one part per decoder layer per writing rank
 * (model-0000k-of-0000N.safetensors on one rank,
 * model-rank0000r-of-0000N-part0000k.safetensors on N ranks), the index over
 * every rank's parts, config.json with quantization_config (the scheme's
 * group targeting Linear; lm_head, the routers and Qwen2-MoE's
 * shared_expert_gate in "ignore": they stay dense as vLLM expects), and the
 * tokenizer files. Every routed expert (gate/up/down), the shared expert and
 * the attention projections are quantized. The summary reports, per MoE
 * layer, routed tokens per expert (min/median/max) and RTN fallbacks.
 *
 * Supported: --scheme W4A16 / W4A16_ASYM / W8A16 (+ --bits/--group/--sym/
 * --asym/--actorder/--damp/--block), --method gptq|rtn, --calib-samples,
 * --seq-len, --shuffle-seed, --batch, --spill-dir, --force, --quiet. Other
 * options (recipes, SparseGPT, activation schemes, --ignore, checkpoint-
 * restart) are refused with SQ_ERR_UNSUPPORTED naming the option.
 * Internal to the coordinator. */
#ifndef SQ_COORDINATOR_QUANTIZE_MOE_H
#define SQ_COORDINATOR_QUANTIZE_MOE_H

#include "common/status.h"
#include "coordinator/quantize_plan.h"
#include "worker/comm.h"

/* *is_moe = 1 when dir/config.json is one of the MoE families above (0 for
 * anything else, including unreadable configs: the dense path reports those). */
void sq_qmoe_detect(const char *dir, int *is_moe);

/* The whole job on every rank of c. all_tokens: moe_calib's all-tokens mode
 * (1 = default). On a failed collective *broken is set (the caller aborts). */
sq_status sq_qmoe_run(const sq_qplan_args *a, const sq_comm *c, int all_tokens, int *broken);

#endif
