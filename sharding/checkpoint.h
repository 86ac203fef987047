/* A Hugging Face checkpoint directory: config.json plus either model.safetensors
 * or model.safetensors.index.json and its shards, validated as a whole (shard
 * names are plain file names inside the directory, every shard exists, the
 * index and the shard headers list exactly the same tensors), and the writer of
 * such an index. */
#ifndef SQ_SHARDING_CHECKPOINT_H
#define SQ_SHARDING_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "sharding/safetensors.h"

typedef struct sq_ckpt sq_ckpt;

sq_status sq_ckpt_open(const char *dir, sq_ckpt **out);
void sq_ckpt_close(sq_ckpt *c);

const char *sq_ckpt_dir(const sq_ckpt *c);
size_t sq_ckpt_count(const sq_ckpt *c);
/* The i-th tensor over all shards (shard order, then data order); *file gets its shard. */
const sq_st_tensor *sq_ckpt_at(const sq_ckpt *c, size_t i, const sq_st_file **file);
/* Find a tensor by name; NULL if absent. */
const sq_st_tensor *sq_ckpt_find(const sq_ckpt *c, const char *name, const sq_st_file **file);
/* Read a whole tensor as fp32; an absent tensor or wrong element count is an
 * error naming the tensor and the directory. */
sq_status sq_ckpt_read_f32(const sq_ckpt *c, const char *name, float *dst, uint64_t nelem);
/* Sum of the shard files' sizes in bytes. */
uint64_t sq_ckpt_bytes_on_disk(const sq_ckpt *c);

/* Write model.safetensors.index.json into dir atomically: weight_map from
 * names[i] -> files[i] (n entries), metadata.total_size = total_size. */
sq_status sq_ckpt_write_index(const char *dir, size_t n, const char *const *names,
                              const char *const *files, uint64_t total_size);

#endif
