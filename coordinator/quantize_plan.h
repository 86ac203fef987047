/* What `shardq quantize` does to each module: the command-line arguments, the
 * compressed-tensors quantization_config they describe, and the solver
 * options of worker/layer_quant.h. Internal to the coordinator. */
#ifndef SQ_COORDINATOR_QUANTIZE_PLAN_H
#define SQ_COORDINATOR_QUANTIZE_PLAN_H

#include <stdint.h>

#include "common/status.h"
#include "sharding/compressed.h"
#include "worker/layer_quant.h"
#include "worker/model.h"

#define SQ_QPLAN_MAX_IGNORE 64

typedef struct sq_qplan_args {
  const char *model, *calib, *out, *scheme, *recipe, *method, *actorder, *mask, *spill_dir;
  const char *dump_dequant; /* hidden: dequantized weights the pipeline used (tests) */
  const char *ignore[SQ_QPLAN_MAX_IGNORE];
  int n_ignore;
  int force, quiet, bits, group, group_set, sym, no_quant, layers_per_shard;
  double damp, sparsity;
  int64_t block, calib_samples, seq_len, batch;
  uint64_t shuffle_seed;
} sq_qplan_args;

typedef struct sq_qplan {
  sq_ct_config ct;   /* written into config.json */
  sq_lq_opts lq;     /* solver options for every quantized module */
  char summary[160]; /* "W4A16 gptq int4 sym group(128)" */
} sq_qplan;

/* Defaults: W4A16, gptq, damp 0.01, block 128, sparsity 0.5, sym unset (-1). */
void sq_qplan_args_default(sq_qplan_args *a);
/* Build the plan for model m (scales in its weights' dtype). */
sq_status sq_qplan_build(const sq_qplan_args *a, const sq_model *m, sq_qplan *out);
void sq_qplan_free(sq_qplan *p);
/* Is module (e.g. "model.layers.0.mlp.down_proj") quantized (not ignored)? */
int sq_qplan_quantized(const sq_qplan *p, const char *module);

#endif
