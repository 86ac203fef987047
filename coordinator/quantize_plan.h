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
  int blas_threads; /* BLAS threads per rank: fixed, because results depend on it */
  double damp, sparsity;
  int64_t block, calib_samples, seq_len, batch;
  uint64_t shuffle_seed;
} sq_qplan_args;

/* What the job does to one Linear module of the decoder layers. */
typedef struct sq_qplan_mod {
  int process;       /* the solver runs on it (quantize and/or prune) */
  int quantize;      /* stored as compressed tensors (else dense) */
  int input_scale;   /* static per-tensor input activations: write <m>.input_scale */
  sq_qargs input_q;  /* their QuantizationArgs (scale_dtype = the model's) */
  sq_lq_opts lq;     /* solver options when process */
} sq_qplan_mod;

typedef struct sq_qplan {
  sq_ct_config ct;     /* written into config.json */
  sq_lq_opts lq;       /* options of the first processed module (the --scheme path: all) */
  sq_qplan_mod *mods;  /* (n_layers, SQ_MOD_COUNT) */
  int64_t n_layers;
  sq_dtype dtype;      /* the checkpoint's weight dtype */
  int kv_cache;        /* write self_attn.k_scale / v_scale (static fp8 per tensor) */
  sq_qargs kv_q;       /* their QuantizationArgs */
  int smooth_attn, smooth_mlp; /* SmoothQuant mappings in use */
  float smooth_alpha;
  sq_lq_opts *opts_list; /* distinct solver options of processed modules */
  int n_opts;
  char summary[160];   /* "W4A16 gptq int4 sym group(128)" */
} sq_qplan;

/* Defaults: W4A16, gptq, damp 0.01, block 128, sparsity 0.5, sym unset (-1). */
void sq_qplan_args_default(sq_qplan_args *a);
/* Build the plan for model m (scales in its weights' dtype): from --recipe
 * (recipes/recipe.h, resolved per module) or from --scheme and its flags. */
sq_status sq_qplan_build(const sq_qplan_args *a, const sq_model *m, sq_qplan *out);
void sq_qplan_free(sq_qplan *p);
/* Module mod (SQ_MOD_*) of decoder layer `layer`. */
const sq_qplan_mod *sq_qplan_module(const sq_qplan *p, int layer, int mod);
/* Does the job need a calibration forward for this plan's layers (Hessians,
 * SmoothQuant, static activation or kv-cache scales)? */
int sq_qplan_needs_calibration(const sq_qplan *p);
/* Every processed module's solver options, for sq_lq_init (*n >= 1; points into p). */
const sq_lq_opts *sq_qplan_all_opts(const sq_qplan *p, int *n);

/* The distribution of the job over `ranks` ranks (sharding/plan.h): owner
 * (n_layers, SQ_MOD_COUNT) gets every module's owner rank (modules sharing a
 * Hessian share an owner), [*s0, *s1) this rank's calibration samples of
 * `samples` x `seq_len`. One rank: rank 0 owns everything, all samples (no
 * plan is built). */
sq_status sq_qplan_distribute(const sq_model *m, int ranks, int rank, int64_t samples,
                              int64_t seq_len, int *owner, int64_t *s0, int64_t *s1);

#endif
