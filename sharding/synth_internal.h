/* Internal to sharding/synth.c and sharding/synth_moe.c (not part of the
 * public API): the per-tensor value streams and generation workspace that
 * synth.c owns, and the MoE / MLA / fp8-block pieces synth_moe.c provides. */
#ifndef SQ_SHARDING_SYNTH_INTERNAL_H
#define SQ_SHARDING_SYNTH_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "common/dtype.h"
#include "common/status.h"
#include "sharding/model_config.h"
#include "sharding/synth.h"

/* One tensor's normal stream (synth.h: splitmix64 + Box-Muller). */
typedef struct {
  uint64_t state;
  float spare; /* second Box-Muller value */
  int has_spare;
} sq_rng;

/* Scratch for generating one tensor, allocated once by sq_synth_write. */
typedef struct {
  char *buf;    /* the largest tensor, in its stored dtype */
  float *chunk; /* fp32 rows before conversion (a whole fp8 tensor or fused expert) */
  float *tr;    /* a fused expert transposed, chunk_elems */
  size_t chunk_elems;
  uint8_t *outlier; /* per input column */
  float *dirs;      /* 4 x hidden shared embedding directions */
  float *scales;    /* fp8 block scales of the current tensor */
} sq_synth_work;

static inline bool sq_synth_is(const sq_synth_options *o, const char *arch) {
  return strcmp(o->arch, arch) == 0;
}

/* Token id of the real model when it fits in the vocabulary, else fallback. */
static inline int64_t sq_synth_token(int64_t real, int64_t vocab, int64_t fallback) {
  return real < vocab ? real : fallback;
}

/* ---- synth.c ---- */

/* Fill nr rows (row length cols) of tensor s into f (nr, cols) from stream r,
 * consumed in row order. */
void sq_synth_rows(const sq_tensor_spec *s, sq_rng *r, const uint8_t *outlier, const float *dirs,
                   int64_t cols, int64_t nr, float *f);
/* Mark 1% of cols (at least one) as outlier input columns, drawn from r. */
void sq_synth_outliers(sq_rng *r, int64_t cols, uint8_t *outlier);

/* ---- synth_moe.c ---- */

/* Validate the MoE/MLA fields of resolved options r (one line naming the flag). */
sq_status sq_synth_moe_check(const sq_synth_options *r);
/* config.json of a MoE architecture for resolved options r (NULL when out of memory). */
json_t *sq_synth_moe_config_json(const sq_synth_options *r);
/* True when tensor s is stored as DeepSeek's block-scaled fp8 (r->fp8_blocks). */
bool sq_synth_is_fp8(const sq_tensor_spec *s, const sq_synth_options *r);
/* The dtype tensor s is stored in. */
sq_dtype sq_synth_dtype(const sq_tensor_spec *s, const sq_synth_options *r);
/* Llama-4's fused expert stack s (E, d_in, d_out) into w->buf in dtype dt. */
sq_status sq_synth_moe_gen_fused(const sq_tensor_spec *s, sq_dtype dt, sq_rng *r, sq_synth_work *w);
/* fp8 Linear s (rows, cols), outliers already drawn: codes into w->buf, block
 * scales into w->scales. */
void sq_synth_moe_gen_fp8(const sq_tensor_spec *s, sq_rng *r, int64_t rows, int64_t cols,
                          sq_synth_work *w);

#endif
