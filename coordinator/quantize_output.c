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
  if (st == SQ_OK) st = sq_st_writer_write(w, name, buf);
  free(buf);
  return st;
}

sq_status sq_qout_write_index(const char *out_dir, char *const *files, int n) {
  size_t cap = 0, cnt = 0;
  const char **names = NULL, **fnames = NULL;
  char **owned = NULL;
  uint64_t total = 0;
  sq_status st = SQ_OK;
  for (int k = 0; k < n && st == SQ_OK; k++) {
    char *path = sq_fs_join(out_dir, files[k]);
    sq_st_file *f = NULL;
    st = path ? sq_st_open(path, &f) : sq_error_set(SQ_ERR_NOMEM, "out of memory");
    free(path);
    if (st != SQ_OK) break;
    for (size_t i = 0; i < sq_st_count(f); i++) {
      if (cnt == cap) {
        cap = cap ? cap * 2 : 256;
        const char **a = realloc(names, cap * sizeof *a), **b = realloc(fnames, cap * sizeof *b);
        char **c = realloc(owned, cap * sizeof *c);
        if (a) names = a;
        if (b) fnames = b;
        if (c) owned = c;
        if (!a || !b || !c) {
          st = sq_error_set(SQ_ERR_NOMEM, "out of memory building the index");
          break;
        }
      }
      const sq_st_tensor *t = sq_st_at(f, i);
      owned[cnt] = strdup(t->name);
      names[cnt] = owned[cnt];
      fnames[cnt] = files[k];
      total += t->end - t->begin;
      cnt++;
    }
    sq_st_close(f);
  }
  if (st == SQ_OK) st = sq_ckpt_write_index(out_dir, cnt, names, fnames, total);
  for (size_t i = 0; i < cnt; i++) free(owned[i]);
  free(owned);
  free(names);
  free(fnames);
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
