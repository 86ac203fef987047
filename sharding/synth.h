/* Synthetic checkpoints of real architectures (llama, mistral, qwen2), for
 * tests and benchmarks where no real model is at hand, and the calibration /
 * evaluation token files that go with them.
 *
 * A synthetic directory holds:
 *   config.json        the architecture's Hugging Face keys and values (as in
 *                      Llama-3.1-8B / Mistral-7B-v0.3 / Qwen2.5-7B) with the
 *                      requested sizes; bos/eos are the real ids when they fit
 *                      in the vocabulary, else 1 and 2
 *   model.safetensors  (1 shard) or model-0000k-of-0000N.safetensors plus
 *                      model.safetensors.index.json; shards split the tensor
 *                      list in order, balanced by bytes
 *   calib.safetensors  int32 input_ids [calib_samples, calib_seq_len]
 *   eval.safetensors   int32 input_ids [eval_samples, calib_seq_len], another stream
 *
 * Values (deterministic in the seed, independent of sharding and order):
 * every tensor has its own stream, splitmix64 seeded with
 * splitmix64(seed ^ fnv1a64(tensor name)), and normals come from Box-Muller
 * (in float) on two 24-bit uniforms per splitmix64 draw. Bytes are identical
 * for a given seed on a given build; another libm may round logf/sinf/cosf
 * differently in rare cases. Linear weights (d_out, d_in) are N(0, 1/d_in) with 1% of the
 * input columns (at least one, chosen from the stream) scaled by 10, so that
 * per-channel round-to-nearest suffers and GPTQ has something to fix; norms are
 * 1 + N(0, 0.05^2); biases N(0, 0.02^2); lm_head N(0, 1/hidden). Embedding rows
 * are 0.6*noise + 0.4*(a mix of 4 shared directions), times 1/sqrt(hidden):
 * correlated hidden channels, as real activations are, so that the Hessians
 * GPTQ sees are not diagonal. Token ids are uniform in [0, vocab) (splitmix64
 * modulo vocab; the bias is below vocab/2^64), with the first token of every
 * sample = bos.
 *
 * Memory: tensors are generated and written one at a time; the peak is one
 * buffer the size of the largest tensor in the output dtype. */
#ifndef SQ_SHARDING_SYNTH_H
#define SQ_SHARDING_SYNTH_H

#include <stdbool.h>
#include <stdint.h>

#include "common/dtype.h"
#include "common/status.h"
#include "sharding/model_config.h"

typedef struct sq_synth_options {
  const char *arch; /* "llama", "mistral" or "qwen2" */
  int64_t layers, hidden, heads, kv_heads, intermediate, vocab;
  int64_t head_dim; /* 0: hidden / heads */
  bool tie_word_embeddings;
  sq_dtype dtype; /* BF16, F16 or F32 */
  int shards;
  uint64_t seed;
  int64_t calib_samples, calib_seq_len; /* calib_samples 0: no calib.safetensors */
  int64_t eval_samples;                 /* 0: no eval.safetensors */
  bool progress;                        /* progress lines on stderr */
} sq_synth_options;

/* The defaults: llama, 4 layers, hidden 256, 8 heads, 4 kv heads,
 * intermediate 688, vocab 1024, bf16, 2 shards, seed 0, 128 x 128 calibration
 * tokens, 32 x 128 evaluation tokens, progress on. */
void sq_synth_options_default(sq_synth_options *o);

/* Validate the options (one line naming the bad option on failure). */
sq_status sq_synth_check(const sq_synth_options *o);

/* The config.json the options describe, parsed (so it went through the same
 * validation as a real one). Free with sq_model_config_free. */
sq_status sq_synth_config(const sq_synth_options *o, sq_model_config *out);

/* Write the whole synthetic directory (created if missing). */
sq_status sq_synth_write(const char *dir, const sq_synth_options *o);

/* Write an int32 input_ids [samples, seq_len] file from stream `stream`
 * ("calib", "eval"): uniform ids in [0, vocab), first id = bos when 0 <= bos < vocab. */
sq_status sq_synth_write_ids(const char *path, int64_t samples, int64_t seq_len, int64_t vocab,
                             int64_t bos, uint64_t seed, const char *stream);

#endif
