/* Output directory, pass-through tensors, index and auxiliary files of
 * `shardq quantize` (see quantize_output.h). */
#include "coordinator/quantize_output.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/fsio.h"
#include "worker/comm.h"
#include "worker/model.h"

sq_status sq_qout_prepare(const char *model_dir, const char *out_dir, int force) {
  char rm[PATH_MAX], ro[PATH_MAX];
  if (!realpath(model_dir, rm)) return sq_error_errno(model_dir, "resolve --model");
  if (realpath(out_dir, ro)) {
    if (strcmp(rm, ro) == 0)
      return sq_error_set(SQ_ERR_ARG,
                          "--out %s is the input model directory -- hint: shardq never writes "
                          "over its input; pick a new directory",
                          out_dir);
    DIR *d = opendir(out_dir);
    if (!d) return sq_error_errno(out_dir, "open --out");
    int nonempty = 0;
    struct dirent *e;
    while ((e = readdir(d)))
      if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) nonempty = 1;
    closedir(d);
    if (nonempty && !force)
      return sq_error_set(SQ_ERR_ARG,
                          "--out %s exists and is not empty -- hint: choose another directory "
                          "or pass --force to write into it",
                          out_dir);
  }
  return sq_fs_mkdirs(out_dir);
}

void sq_qout_shard_name(char *buf, size_t len, int k, int n) {
  snprintf(buf, len, "model-%05d-of-%05d.safetensors", k, n);
}

void sq_qout_rank_shard_name(char *buf, size_t len, int rank, int ranks, int part) {
  snprintf(buf, len, "model-rank%05d-of-%05d-part%05d.safetensors", rank, ranks, part);
}

sq_status sq_qout_declare_raw(sq_st_writer *w, const sq_ckpt *in, const char *name) {
  const sq_st_tensor *t = sq_ckpt_find(in, name, NULL);
  if (!t)
    return sq_error_set(SQ_ERR_FORMAT, "%s: tensor '%s' is missing from the checkpoint",
                        sq_ckpt_dir(in), name);
  return sq_st_writer_declare(w, name, t->dtype, t->ndim, t->shape);
}

sq_status sq_qout_write_raw(sq_st_writer *w, const sq_ckpt *in, const char *name) {
  const sq_st_file *f = NULL;
  const sq_st_tensor *t = sq_ckpt_find(in, name, &f);
  if (!t)
    return sq_error_set(SQ_ERR_FORMAT, "%s: tensor '%s' is missing from the checkpoint",
                        sq_ckpt_dir(in), name);
  uint64_t len = t->end - t->begin;
  void *buf = malloc(len ? len : 1);
  if (!buf) return sq_error_set(SQ_ERR_NOMEM, "out of memory copying tensor '%s'", name);
  sq_status st = sq_st_read_raw(f, t, 0, buf, len);
  sq_model_count_read(len);
  if (st == SQ_OK) st = sq_st_writer_write(w, name, buf);
  free(buf);
  return st;
}

sq_status sq_qout_list_shards(const char *out_dir, char *const *files, int n, char **out,
                              size_t *out_len) {
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap);
  *out = NULL;
  *out_len = 0;
  if (!buf) return sq_error_set(SQ_ERR_NOMEM, "out of memory listing the output shards");
  buf[0] = '\0';
  sq_status st = SQ_OK;
  for (int k = 0; k < n && st == SQ_OK; k++) {
    if (!files[k]) continue; /* a part this rank does not write */
    char *path = sq_fs_join(out_dir, files[k]);
    sq_st_file *f = NULL;
    st = path ? sq_st_open(path, &f) : sq_error_set(SQ_ERR_NOMEM, "out of memory");
    free(path);
    if (st != SQ_OK) break;
    for (size_t i = 0; i < sq_st_count(f) && st == SQ_OK; i++) {
      const sq_st_tensor *t = sq_st_at(f, i);
      size_t need = strlen(t->name) + strlen(files[k]) + 32;
      if (len + need + 1 > cap) {
        while (len + need + 1 > cap) cap *= 2;
        char *nb = realloc(buf, cap);
        if (!nb) {
          st = sq_error_set(SQ_ERR_NOMEM, "out of memory listing the output shards");
          break;
        }
        buf = nb;
      }
      len += (size_t)snprintf(buf + len, cap - len, "%s\t%s\t%llu\n", t->name, files[k],
                              (unsigned long long)(t->end - t->begin));
    }
    sq_st_close(f);
  }
  if (st != SQ_OK) {
    free(buf);
    return st;
  }
  *out = buf;
  *out_len = len;
  return SQ_OK;
}

sq_status sq_qout_write_index_list(const char *out_dir, const char *list, size_t len) {
  size_t cnt = 0;
  for (size_t i = 0; i < len; i++) cnt += list[i] == '\n';
  char *copy = malloc(len + 1);
  const char **names = calloc(cnt + 1, sizeof *names), **fnames = calloc(cnt + 1, sizeof *fnames);
  sq_status st = SQ_OK;
  uint64_t total = 0;
  if (!copy || !names || !fnames) st = sq_error_set(SQ_ERR_NOMEM, "out of memory building the index");
  size_t k = 0;
  if (st == SQ_OK) {
    memcpy(copy, list, len);
    copy[len] = '\0';
    char *p = copy;
    while (k < cnt && st == SQ_OK) {
      char *nl = strchr(p, '\n'), *t1 = strchr(p, '\t');
      char *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
      if (!nl || !t1 || !t2 || t2 > nl) {
        st = sq_error_set(SQ_ERR_INTERNAL, "%s: malformed shard list line %zu", out_dir, k + 1);
        break;
      }
      *nl = *t1 = *t2 = '\0';
      names[k] = p;
      fnames[k] = t1 + 1;
      total += strtoull(t2 + 1, NULL, 10);
      k++;
      p = nl + 1;
    }
  }
  if (st == SQ_OK) st = sq_ckpt_write_index(out_dir, k, names, fnames, total);
  free(copy);
  free(names);
  free(fnames);
  return st;
}

sq_status sq_qout_gather_lists(const sq_comm *c, const char *mine, size_t len, char **all,
                               size_t *all_len) {
  int size = sq_comm_size(c), rank = sq_comm_rank(c);
  *all = NULL;
  *all_len = 0;
  int64_t *lens = calloc((size_t)size, sizeof *lens);
  if (!lens) return sq_error_set(SQ_ERR_NOMEM, "out of memory gathering the shard lists");
  lens[rank] = (int64_t)len;
  /* Lengths first (each rank fills its slot; a sum is exact), then each
   * rank's names to rank 0 in rank order. */
  sq_status st = sq_comm_reduce_sum_i64(c, lens, size, 0, "gather shard list lengths");
  if (st == SQ_OK && rank != 0 && len > 0)
    st = sq_comm_send(c, mine, (int64_t)len, 0, 61, "gather shard lists");
  if (st == SQ_OK && rank == 0) {
    size_t total = 0;
    for (int r = 0; r < size; r++) total += (size_t)lens[r];
    char *buf = malloc(total + 1);
    if (!buf) st = sq_error_set(SQ_ERR_NOMEM, "out of memory gathering the shard lists");
    size_t off = 0;
    for (int r = 0; r < size && st == SQ_OK; r++) {
      if (r == 0) memcpy(buf, mine, len);
      else if (lens[r] > 0) st = sq_comm_recv(c, buf + off, lens[r], r, 61, "gather shard lists");
      off += (size_t)lens[r];
    }
    if (st == SQ_OK) {
      *all = buf;
      *all_len = total;
    } else {
      free(buf);
    }
  }
  free(lens);
  return st;
}

sq_status sq_qout_write_index(const char *out_dir, char *const *files, int n) {
  char *list = NULL;
  size_t len = 0;
  SQ_CHECK(sq_qout_list_shards(out_dir, files, n, &list, &len));
  sq_status st = sq_qout_write_index_list(out_dir, list, len);
  free(list);
  return st;
}

sq_status sq_qout_copy_aux(const char *model_dir, const char *out_dir) {
  static const char *const files[] = {"tokenizer.json",          "tokenizer_config.json",
                                      "tokenizer.model",         "special_tokens_map.json",
                                      "generation_config.json",  "tok512.bin"};
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    char *src = sq_fs_join(model_dir, files[i]), *dst = sq_fs_join(out_dir, files[i]);
    struct stat sb;
    sq_status st = SQ_OK;
    if (src && dst && stat(src, &sb) == 0) {
      char *data = NULL;
      size_t len = 0;
      st = sq_fs_read_small_file(src, (size_t)1 << 30, &data, &len);
      if (st == SQ_OK) st = sq_fs_write_file_atomic(dst, data, len);
      free(data);
    }
    free(src);
    free(dst);
    SQ_CHECK(st);
  }
  return SQ_OK;
}
