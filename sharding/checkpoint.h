/* The tensors of a Hugging Face checkpoint directory: model.safetensors.index.json
 * and its shards if the index exists, else model.safetensors alone, validated as
 * a whole (shard names are plain file names inside the directory, every shard
 * exists and is a valid safetensors file, the index and the shard headers list
 * exactly the same tensors, each in one shard), and the writer of such an index.
 * config.json is not read here (see the model config module). Shards stay open
 * (one fd each) for pread until sq_ckpt_close; lookups by name are O(log n).
 *
 * Index format: {"metadata": {"total_size": N, ...}, "weight_map": {tensor: file}};
 * other top-level keys are ignored. */
#ifndef SQ_SHARDING_CHECKPOINT_H
#define SQ_SHARDING_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "sharding/safetensors.h"

typedef struct sq_ckpt sq_ckpt;

/* Open and validate dir. SQ_ERR_FORMAT for a malformed index or shard (one line
 * naming the file and the tensor), SQ_ERR_IO for a missing directory or file. */
sq_status sq_ckpt_open(const char *dir, sq_ckpt **out);
void sq_ckpt_close(sq_ckpt *c);

const char *sq_ckpt_dir(const sq_ckpt *c);
size_t sq_ckpt_count(const sq_ckpt *c);
/* The i-th tensor over all shards (shard order, then data order); *file gets its shard. */
const sq_st_tensor *sq_ckpt_at(const sq_ckpt *c, size_t i, const sq_st_file **file);
/* Find a tensor by name; NULL if absent. */
const sq_st_tensor *sq_ckpt_find(const sq_ckpt *c, const char *name, const sq_st_file **file);
/* Read a whole tensor as fp32; an absent tensor or wrong element count is an
 * error naming the tensor and the directory. An F8_E4M3 tensor that has a
 * DeepSeek block scale "<name>_scale_inv" is refused (SQ_ERR_UNSUPPORTED):
 * read it with sq_fp8_block_read_f32 (sharding/fp8_block.h), which applies the
 * scales. */
sq_status sq_ckpt_read_f32(const sq_ckpt *c, const char *name, float *dst, uint64_t nelem);
/* Sum of the shard files' sizes in bytes. */
uint64_t sq_ckpt_bytes_on_disk(const sq_ckpt *c);
/* Shards, sorted by file name (1 for a single-file checkpoint). */
size_t sq_ckpt_shard_count(const sq_ckpt *c);
const sq_st_file *sq_ckpt_shard(const sq_ckpt *c, size_t i);

/* The index parser on its own (label names the text in messages; the fuzz
 * target's entry point). Checks the JSON, that weight_map is an object of
 * plain file names, and metadata.total_size if present; not the shards. */
typedef struct sq_ckpt_index sq_ckpt_index;
sq_status sq_ckpt_parse_index(const char *label, const char *json, size_t len, sq_ckpt_index **out);
void sq_ckpt_index_free(sq_ckpt_index *idx);
/* Entries sorted by tensor name: name and shard file of the i-th. */
size_t sq_ckpt_index_count(const sq_ckpt_index *idx);
const char *sq_ckpt_index_name(const sq_ckpt_index *idx, size_t i);
const char *sq_ckpt_index_file(const sq_ckpt_index *idx, size_t i);
/* Distinct shard files, sorted. */
size_t sq_ckpt_index_shard_count(const sq_ckpt_index *idx);
const char *sq_ckpt_index_shard(const sq_ckpt_index *idx, size_t i);
/* metadata.total_size, 0 if absent. */
uint64_t sq_ckpt_index_total_size(const sq_ckpt_index *idx);

/* Write model.safetensors.index.json into dir atomically: weight_map from
 * names[i] -> files[i] (n entries, written sorted by name; duplicate names or
 * file names that are not plain are SQ_ERR_ARG), metadata.total_size =
 * total_size (by convention the sum of the tensors' byte sizes). */
sq_status sq_ckpt_write_index(const char *dir, size_t n, const char *const *names,
                              const char *const *files, uint64_t total_size);

#endif
