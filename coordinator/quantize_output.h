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

/* The index in two halves, so that ranks send rank 0 only names:
 * sq_qout_list_shards reads the headers of this rank's committed shards
 * files[0..n) (NULL entries skipped) and returns *out (malloc'd, *out_len bytes, no NUL counted) with
 * one line per tensor "name\tfile\tbytes\n"; sq_qout_write_index_list writes
 * the index from the concatenation of every rank's list (a tensor listed
 * twice is an error). */
sq_status sq_qout_list_shards(const char *out_dir, char *const *files, int n, char **out,
                              size_t *out_len);
sq_status sq_qout_write_index_list(const char *out_dir, const char *list, size_t len);
/* Every rank's list (mine, len bytes) to rank 0, concatenated in rank order
 * into *all (malloc'd, rank 0 only; NULL elsewhere). Only names travel, never
 * tensor data. A collective: every rank calls it. */
struct sq_comm;
sq_status sq_qout_gather_lists(const struct sq_comm *c, const char *mine, size_t len, char **all,
                               size_t *all_len);

/* "model-rank0000r-of-0000N-part0000k.safetensors": part k (0 = embeddings,
 * final norm, lm_head; 1 + g = decoder layer group g) written by rank r of an
 * N-rank job (N > 1; one rank keeps sq_qout_shard_name's names). */
void sq_qout_rank_shard_name(char *buf, size_t len, int rank, int ranks, int part);

/* Copy the tokenizer and generation files that exist in model_dir. */
sq_status sq_qout_copy_aux(const char *model_dir, const char *out_dir);

#endif
