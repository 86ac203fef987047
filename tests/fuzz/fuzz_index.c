/* libFuzzer target for the model.safetensors.index.json parser: the input is
 * the index text. On success the sorted, plain-file-name invariants that
 * sq_ckpt_open relies on are checked. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sharding/checkpoint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  sq_error_clear();
  sq_ckpt_index *idx = NULL;
  if (sq_ckpt_parse_index("fuzz.index.json", (const char *)data, size, &idx) != SQ_OK) {
    if (!sq_error_message()[0] || strchr(sq_error_message(), '\n')) abort();
    return 0;
  }
  size_t n = sq_ckpt_index_count(idx);
  for (size_t i = 0; i < n; ++i) {
    const char *name = sq_ckpt_index_name(idx, i), *file = sq_ckpt_index_file(idx, i);
    if (!name || !file || !name[0] || !file[0] || strchr(file, '/') || !strcmp(file, "..")) abort();
    if (i && strcmp(sq_ckpt_index_name(idx, i - 1), name) >= 0) abort();
  }
  for (size_t i = 1; i < sq_ckpt_index_shard_count(idx); ++i)
    if (strcmp(sq_ckpt_index_shard(idx, i - 1), sq_ckpt_index_shard(idx, i)) >= 0) abort();
  sq_ckpt_index_free(idx);
  return 0;
}
