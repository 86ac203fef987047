/* Output side of `shardq quantize`: the output directory checks, dense
 * pass-through of tensors, the shard naming, and the final publication of the
 * index, config.json and tokenizer files. Internal to the coordinator. */
#ifndef SQ_COORDINATOR_QUANTIZE_OUTPUT_H
#define SQ_COORDINATOR_QUANTIZE_OUTPUT_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "sharding/checkpoint.h"
#include "sharding/safetensors.h"

/* Refuse out == model (same directory after realpath) and a non-empty out
 * unless force; create out. */
sq_status sq_qout_prepare(const char *model_dir, const char *out_dir, int force);

/* "model-0000k-of-0000N.safetensors" into buf (k 1-based). */
void sq_qout_shard_name(char *buf, size_t len, int k, int n);

/* Declare tensor name of the input checkpoint in w as it is stored (dtype, shape). */
sq_status sq_qout_declare_raw(sq_st_writer *w, const sq_ckpt *in, const char *name);
/* Copy its bytes unchanged (declared with sq_qout_declare_raw). */
sq_status sq_qout_write_raw(sq_st_writer *w, const sq_ckpt *in, const char *name);

/* Write model.safetensors.index.json from the committed shards files[0..n). */
sq_status sq_qout_write_index(const char *out_dir, char *const *files, int n);

/* Copy the tokenizer and generation files that exist in model_dir. */
sq_status sq_qout_copy_aux(const char *model_dir, const char *out_dir);

#endif
