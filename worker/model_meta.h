/* What the pipeline needs to know about a model, read from config.json: the
 * dimensions of a dense Llama-family decoder, its RoPE settings as plain
 * numbers, and its tensor list (Hugging Face names, roles, shapes), plus
 * writing an output config.json with a quantization_config.
 *
 * This header deliberately does not include sharding/model_config.h or
 * kernels/forward.h, so that the pipeline's translation units can use either
 * without the two headers' enum names meeting (see model.h). */
#ifndef SQ_WORKER_MODEL_META_H
#define SQ_WORKER_MODEL_META_H

#include <stddef.h>
#include <stdint.h>

#include "common/dtype.h"
#include "common/status.h"

struct sq_ct_config;

/* Tensor roles (same meaning as sharding/model_config.h's sq_tensor_role). */
enum { SQ_MT_EMBED = 0, SQ_MT_NORM, SQ_MT_LINEAR, SQ_MT_BIAS, SQ_MT_LM_HEAD };

typedef struct sq_model_tensor {
  char name[96];
  int role;  /* SQ_MT_* */
  int layer; /* -1 outside decoder layers */
  int ndim;
  int64_t shape[2];
} sq_model_tensor;

/* RoPE kinds as plain integers: the order of kernels/forward.h's sq_rope_type. */
enum { SQ_MM_ROPE_DEFAULT = 0, SQ_MM_ROPE_LINEAR = 1, SQ_MM_ROPE_LLAMA3 = 2 };

typedef struct sq_model_info {
  char dir[1024];
  int64_t hidden, intermediate, n_layers, n_heads, n_kv_heads, head_dim, vocab;
  float eps;
  int tied;                     /* lm_head is model.embed_tokens.weight */
  int qkv_bias, o_bias, mlp_bias;
  int rope_kind;                /* SQ_MM_ROPE_* */
  double rope_theta, rope_factor, rope_low, rope_high;
  int64_t rope_orig_max;
  sq_model_tensor *tensors;     /* checkpoint order */
  size_t n_tensors;
  void *config_;                /* the parsed sq_model_config (owned) */
} sq_model_info;

/* Load dir/config.json; checks that the forward can run it (dense llama,
 * mistral, qwen2; RoPE default/linear/llama3). */
sq_status sq_model_info_load(const char *dir, sq_model_info *out);
void sq_model_info_free(sq_model_info *m);

/* Write outdir/config.json: the input's config.json with quantization_config
 * set to qc (NULL: none) and unknown keys kept. */
sq_status sq_model_info_save(const sq_model_info *m, const struct sq_ct_config *qc,
                             const char *outdir);

#endif
