/* A checkpoint directory's tensors (sharding/checkpoint.h): the shard index,
 * every shard opened and validated, and cross-checks between the two, so that
 * a checkpoint that opens has exactly one readable home for every tensor. */
#include "sharding/checkpoint.h"
#include "sharding/safetensors_internal.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fsio.h"

#define SQ_CKPT_INDEX_NAME "model.safetensors.index.json"
#define SQ_CKPT_SINGLE_NAME "model.safetensors"
#define SQ_CKPT_MAX_INDEX (256u * 1024u * 1024u)

struct sq_ckpt_index {
  size_t n;
  const char **names; /* (n) sorted by name */
  size_t *file_of;    /* (n) index into files */
  size_t nfiles;
  const char **files;  /* (nfiles) distinct shard names, sorted */
  uint64_t total_size; /* metadata.total_size, 0 if absent */
  char *block;         /* one allocation behind all of the above */
};

typedef struct sq_ckpt_entry {
  const sq_st_tensor *t;
  size_t shard;
} sq_ckpt_entry;

struct sq_ckpt {
  char *dir;
  size_t nshards;
  sq_st_file **shards; /* (nshards) */
  size_t n;
  sq_ckpt_entry *order;  /* (n) shard order, then data order */
  sq_ckpt_entry *byname; /* (n) sorted by name */
  uint64_t bytes;
};

static int sq_ckpt_cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static size_t sq_ckpt_bsearch(const char *const *arr, size_t n, const char *key) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(arr[mid], key);
    if (c == 0) return mid;
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return (size_t)-1;
}

/* A shard name must stay inside the directory: a plain, non-empty file name. */
static int sq_ckpt_plain_name(const char *s, size_t len) {
  return len > 0 && !memchr(s, '\0', len) && !memchr(s, '/', len) && strcmp(s, ".") != 0 &&
         strcmp(s, "..") != 0;
}

/* ---- the index ---- */

sq_status sq_ckpt_parse_index(const char *label, const char *json, size_t len,
                              sq_ckpt_index **out) {
  *out = NULL;
  json_t *root;
  SQ_CHECK(sq_st_json_load(label, "index", json, len, &root));
  sq_status st = SQ_OK;
  char nb[512], fb[512];
  json_t *meta = json_object_get(root, "metadata"), *wm = json_object_get(root, "weight_map");
  uint64_t total = 0;
  if (meta) {
    json_t *ts = json_object_get(meta, "total_size");
    /* A real total_size (some exporters write 1.6e10) is accepted if it fits in 64 bits. */
    if (!json_is_object(meta) || (ts && (!json_is_number(ts) || json_number_value(ts) < 0 ||
                                         json_number_value(ts) >= 1.8e19))) {
      st = sq_error_set(SQ_ERR_FORMAT,
                        "%s: metadata must be an object whose total_size is a non-negative number",
                        label);
      goto done;
    }
    if (ts)
      total =
          json_is_integer(ts) ? (uint64_t)json_integer_value(ts) : (uint64_t)json_number_value(ts);
  }
  if (!wm || !json_is_object(wm)) {
    st =
        sq_error_set(SQ_ERR_FORMAT, "%s: weight_map is %s, expected an object {tensor: shard file}",
                     label, wm ? sq_st_json_type(wm) : "missing");
    goto done;
  }
  size_t n = json_object_size(wm), pool = 0;
  const char *key;
  size_t klen;
  json_t *val;
  json_object_keylen_foreach(wm, key, klen, val) {
    if (klen == 0 || memchr(key, '\0', klen)) {
      st = sq_error_set(SQ_ERR_FORMAT,
                        "%s: weight_map has an empty tensor name or one with a NUL byte", label);
      goto done;
    }
    if (!json_is_string(val)) {
      st = sq_error_set(SQ_ERR_FORMAT,
                        "%s: tensor '%s': weight_map value is %s, expected a shard file name",
                        label, sq_st_printable(key, nb, sizeof nb), sq_st_json_type(val));
      goto done;
    }
    if (!sq_ckpt_plain_name(json_string_value(val), json_string_length(val))) {
      st = sq_error_set(
          SQ_ERR_FORMAT,
          "%s: tensor '%s': shard '%s' is not a plain file name in the checkpoint directory "
          "(empty, '.', '..', or contains '/' or NUL)",
          label, sq_st_printable(key, nb, sizeof nb),
          sq_st_printable(json_string_value(val), fb, sizeof fb));
      goto done;
    }
    pool += klen + 1 + json_string_length(val) + 1;
  }
  /* names, file_of, files (at most n), then strings. */
  size_t bytes = n * (2 * sizeof(char *) + sizeof(size_t) + sizeof(char *)) + pool + 1;
  sq_ckpt_index *idx = (sq_ckpt_index *)calloc(1, sizeof *idx);
  char *block = (char *)calloc(1, bytes);
  if (!idx || !block) {
    free(idx), free(block);
    st = sq_error_set(SQ_ERR_NOMEM, "%s: out of memory for an index of %zu tensors", label, n);
    goto done;
  }
  idx->block = block;
  idx->n = n;
  idx->total_size = total;
  idx->names = (const char **)block;
  const char **file_names =
      (const char **)(block + n * sizeof(char *)); /* per tensor, then sorted */
  idx->file_of = (size_t *)(block + 2 * n * sizeof(char *));
  idx->files = (const char **)(block + 2 * n * sizeof(char *) + n * sizeof(size_t));
  char *p = block + n * (3 * sizeof(char *) + sizeof(size_t));
  /* Interned as "name\0file\0" so that sorting names keeps each file beside its name. */
  size_t i = 0;
  json_object_keylen_foreach(wm, key, klen, val) {
    idx->names[i++] = memcpy(p, key, klen + 1);
    p += klen + 1;
    memcpy(p, json_string_value(val), json_string_length(val) + 1);
    p += json_string_length(val) + 1;
  }
  qsort(idx->names, n, sizeof *idx->names, sq_ckpt_cmp_str);
  for (i = 0; i < n; ++i) file_names[i] = idx->names[i] + strlen(idx->names[i]) + 1;
  memcpy(idx->files, file_names, n * sizeof *file_names);
  qsort(idx->files, n, sizeof *idx->files, sq_ckpt_cmp_str);
  size_t nf = 0;
  for (i = 0; i < n; ++i)
    if (nf == 0 || strcmp(idx->files[nf - 1], idx->files[i]) != 0) idx->files[nf++] = idx->files[i];
  idx->nfiles = nf;
  for (i = 0; i < n; ++i) idx->file_of[i] = sq_ckpt_bsearch(idx->files, nf, file_names[i]);
  *out = idx;
done:
  json_decref(root);
  return st;
}

void sq_ckpt_index_free(sq_ckpt_index *idx) {
  if (!idx) return;
  free(idx->block);
  free(idx);
}

size_t sq_ckpt_index_count(const sq_ckpt_index *idx) {
  return idx->n;
}
const char *sq_ckpt_index_name(const sq_ckpt_index *idx, size_t i) {
  return i < idx->n ? idx->names[i] : NULL;
}
const char *sq_ckpt_index_file(const sq_ckpt_index *idx, size_t i) {
  return i < idx->n ? idx->files[idx->file_of[i]] : NULL;
}
size_t sq_ckpt_index_shard_count(const sq_ckpt_index *idx) {
  return idx->nfiles;
}
const char *sq_ckpt_index_shard(const sq_ckpt_index *idx, size_t i) {
  return i < idx->nfiles ? idx->files[i] : NULL;
}
uint64_t sq_ckpt_index_total_size(const sq_ckpt_index *idx) {
  return idx->total_size;
}

/* ---- the checkpoint ---- */

static int sq_ckpt_cmp_entry(const void *a, const void *b) {
  return strcmp(((const sq_ckpt_entry *)a)->t->name, ((const sq_ckpt_entry *)b)->t->name);
}

/* Open the shard named file; a failure names the index and the shard. */
static sq_status sq_ckpt_open_shard(const char *dir, const char *index_path, const char *file,
                                    sq_st_file **out) {
  char *path = sq_fs_join(dir, file);
  if (!path) return sq_error_set(SQ_ERR_NOMEM, "out of memory");
  sq_status st = sq_st_open(path, out);
  if (st != SQ_OK && index_path) {
    /* Re-state the shard's own message with the index that led to it. */
    char inner[768];
    snprintf(inner, sizeof inner, "%s", sq_error_message());
    sq_error_clear();
    sq_error_set(st, "%s: shard '%s' is unusable: %s", index_path, file, inner);
  }
  free(path);
  return st;
}

sq_status sq_ckpt_open(const char *dir, sq_ckpt **out) {
  *out = NULL;
  sq_status st = SQ_OK;
  sq_ckpt_index *idx = NULL;
  char *json = NULL, *index_path = sq_fs_join(dir, SQ_CKPT_INDEX_NAME);
  char nb[512];
  sq_ckpt *c = (sq_ckpt *)calloc(1, sizeof *c);
  if (!c || !index_path || !(c->dir = strdup(dir))) {
    st = sq_error_set(SQ_ERR_NOMEM, "out of memory");
    goto fail;
  }
  struct stat sb;
  if (stat(dir, &sb) != 0) {
    st = sq_error_errno(dir, "cannot open checkpoint directory");
    goto fail;
  }
  if (!S_ISDIR(sb.st_mode)) {
    st =
        sq_error_set(SQ_ERR_ARG, "%s: not a directory -- hint: pass the checkpoint directory", dir);
    goto fail;
  }
  if (stat(index_path, &sb) == 0) {
    size_t len;
    SQ_CHECK_GOTO(sq_fs_read_small_file(index_path, SQ_CKPT_MAX_INDEX, &json, &len), st, fail);
    SQ_CHECK_GOTO(sq_ckpt_parse_index(index_path, json, len, &idx), st, fail);
    c->nshards = idx->nfiles;
  } else {
    c->nshards = 1;
  }
  c->shards = (sq_st_file **)calloc(c->nshards ? c->nshards : 1, sizeof *c->shards);
  if (!c->shards) {
    st = sq_error_set(SQ_ERR_NOMEM, "out of memory");
    goto fail;
  }
  if (!idx) {
    char *single = sq_fs_join(dir, SQ_CKPT_SINGLE_NAME);
    if (single && stat(single, &sb) != 0 && errno == ENOENT) {
      free(single);
      st = sq_error_set(
          SQ_ERR_IO,
          "%s: neither %s nor %s found -- hint: is this a Hugging Face checkpoint directory?", dir,
          SQ_CKPT_INDEX_NAME, SQ_CKPT_SINGLE_NAME);
      goto fail;
    }
    free(single);
    SQ_CHECK_GOTO(sq_ckpt_open_shard(dir, NULL, SQ_CKPT_SINGLE_NAME, &c->shards[0]), st, fail);
  } else {
    for (size_t s = 0; s < c->nshards; ++s)
      SQ_CHECK_GOTO(sq_ckpt_open_shard(dir, index_path, idx->files[s], &c->shards[s]), st, fail);
    /* Every shard tensor is in the index, mapped to that shard... */
    for (size_t s = 0; s < c->nshards; ++s) {
      const sq_st_file *f = c->shards[s];
      for (size_t i = 0; i < sq_st_count(f); ++i) {
        const char *name = sq_st_at(f, i)->name;
        size_t k = sq_ckpt_bsearch(idx->names, idx->n, name);
        if (k == (size_t)-1 || idx->file_of[k] != s) {
          char ob[512];
          st = sq_error_set(
              SQ_ERR_FORMAT, "%s: tensor '%s' is in this shard but %s %s%s%s", sq_st_path(f),
              sq_st_printable(name, nb, sizeof nb), index_path,
              k == (size_t)-1 ? "does not list it" : "maps it to '",
              k == (size_t)-1 ? "" : sq_st_printable(idx->files[idx->file_of[k]], ob, sizeof ob),
              k == (size_t)-1 ? "" : "'");
          goto fail;
        }
      }
    }
    /* ...and every index entry is in its shard. */
    for (size_t k = 0; k < idx->n; ++k)
      if (!sq_st_find(c->shards[idx->file_of[k]], idx->names[k])) {
        st =
            sq_error_set(SQ_ERR_FORMAT, "%s: tensor '%s' is mapped to '%s' but %s does not hold it",
                         index_path, sq_st_printable(idx->names[k], nb, sizeof nb),
                         idx->files[idx->file_of[k]], sq_st_path(c->shards[idx->file_of[k]]));
        goto fail;
      }
  }
  for (size_t s = 0; s < c->nshards; ++s) {
    c->n += sq_st_count(c->shards[s]);
    c->bytes += sq_st_file_bytes(c->shards[s]);
  }
  c->order = (sq_ckpt_entry *)malloc((c->n ? c->n : 1) * 2 * sizeof *c->order);
  if (!c->order) {
    st = sq_error_set(SQ_ERR_NOMEM, "%s: out of memory for %zu tensors", dir, c->n);
    goto fail;
  }
  c->byname = c->order + c->n;
  size_t j = 0;
  for (size_t s = 0; s < c->nshards; ++s)
    for (size_t i = 0; i < sq_st_count(c->shards[s]); ++i)
      c->order[j++] = (sq_ckpt_entry){sq_st_at(c->shards[s], i), s};
  memcpy(c->byname, c->order, c->n * sizeof *c->order);
  qsort(c->byname, c->n, sizeof *c->byname, sq_ckpt_cmp_entry);
  for (size_t i = 1; i < c->n;
       ++i) /* only reachable without an index cross-check; keep it explicit */
    if (strcmp(c->byname[i - 1].t->name, c->byname[i].t->name) == 0) {
      st = sq_error_set(SQ_ERR_FORMAT, "%s: tensor '%s' is in two shards", dir,
                        sq_st_printable(c->byname[i].t->name, nb, sizeof nb));
      goto fail;
    }
  sq_ckpt_index_free(idx);
  free(json);
  free(index_path);
  *out = c;
  return SQ_OK;
fail:
  sq_ckpt_index_free(idx);
  free(json);
  free(index_path);
  sq_ckpt_close(c);
  return st;
}

void sq_ckpt_close(sq_ckpt *c) {
  if (!c) return;
  for (size_t s = 0; c->shards && s < c->nshards; ++s) sq_st_close(c->shards[s]);
  free(c->shards);
  free(c->order);
  free(c->dir);
  free(c);
}

const char *sq_ckpt_dir(const sq_ckpt *c) {
  return c->dir;
}
size_t sq_ckpt_count(const sq_ckpt *c) {
  return c->n;
}
uint64_t sq_ckpt_bytes_on_disk(const sq_ckpt *c) {
  return c->bytes;
}
size_t sq_ckpt_shard_count(const sq_ckpt *c) {
  return c->nshards;
}
const sq_st_file *sq_ckpt_shard(const sq_ckpt *c, size_t i) {
  return i < c->nshards ? c->shards[i] : NULL;
}

const sq_st_tensor *sq_ckpt_at(const sq_ckpt *c, size_t i, const sq_st_file **file) {
  if (i >= c->n) return NULL;
  if (file) *file = c->shards[c->order[i].shard];
  return c->order[i].t;
}

const sq_st_tensor *sq_ckpt_find(const sq_ckpt *c, const char *name, const sq_st_file **file) {
  size_t lo = 0, hi = c->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int cmp = strcmp(c->byname[mid].t->name, name);
    if (cmp == 0) {
      if (file) *file = c->shards[c->byname[mid].shard];
      return c->byname[mid].t;
    }
    if (cmp < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return NULL;
}

sq_status sq_ckpt_read_f32(const sq_ckpt *c, const char *name, float *dst, uint64_t nelem) {
  const sq_st_file *f;
  const sq_st_tensor *t = sq_ckpt_find(c, name, &f);
  if (!t) return sq_error_set(SQ_ERR_FORMAT, "%s: checkpoint has no tensor '%s'", c->dir, name);
  /* A DeepSeek block-scaled fp8 weight converted code by code would be off by
   * its per-block scale: refuse it rather than return wrong weights. */
  if (t->dtype == SQ_DTYPE_F8_E4M3) {
    size_t len = strlen(name);
    char *sname = malloc(len + sizeof "_scale_inv");
    if (!sname) return sq_error_set(SQ_ERR_NOMEM, "%s: out of memory reading '%s'", c->dir, name);
    memcpy(sname, name, len);
    memcpy(sname + len, "_scale_inv", sizeof "_scale_inv");
    sq_status st = SQ_OK;
    if (sq_ckpt_find(c, sname, NULL)) {
      char pn[200], ps[200]; /* names come from the file: keep the message one line */
      st = sq_error_set(SQ_ERR_UNSUPPORTED,
                        "%s: tensor '%s' is block-scaled fp8 (it has '%s'), which a plain fp32 "
                        "read would leave unscaled -- hint: read it with sq_fp8_block_read_f32 "
                        "(sharding/fp8_block.h)",
                        c->dir, sq_st_printable(name, pn, sizeof pn),
                        sq_st_printable(sname, ps, sizeof ps));
    }
    free(sname);
    if (st != SQ_OK) return st;
  }
  return sq_st_read_f32(f, t, dst, nelem);
}

/* ---- writing the index ---- */

static _Thread_local const char *const *sq_ckpt_sort_names; /* qsort has no context */
static int sq_ckpt_cmp_idx(const void *a, const void *b) {
  return strcmp(sq_ckpt_sort_names[*(const size_t *)a], sq_ckpt_sort_names[*(const size_t *)b]);
}

sq_status sq_ckpt_write_index(const char *dir, size_t n, const char *const *names,
                              const char *const *files, uint64_t total_size) {
  char *path = sq_fs_join(dir, SQ_CKPT_INDEX_NAME), *text = NULL;
  size_t *ord = (size_t *)malloc((n ? n : 1) * sizeof *ord);
  json_t *root = json_object(), *wm = json_object();
  sq_status st = SQ_OK;
  if (!path || !ord || !root || !wm) {
    st = sq_error_set(SQ_ERR_NOMEM, "%s: out of memory", dir);
    goto out;
  }
  for (size_t i = 0; i < n; ++i) {
    if (!names[i] || !names[i][0] || !files[i] || !sq_ckpt_plain_name(files[i], strlen(files[i]))) {
      st = sq_error_set(SQ_ERR_ARG,
                        "%s: index entry %zu ('%s' -> '%s') needs a name and a plain file name",
                        path, i, names[i] ? names[i] : "(null)", files[i] ? files[i] : "(null)");
      goto out;
    }
    ord[i] = i;
  }
  sq_ckpt_sort_names = names;
  qsort(ord, n, sizeof *ord, sq_ckpt_cmp_idx);
  for (size_t i = 0; i < n; ++i) {
    if (i && strcmp(names[ord[i - 1]], names[ord[i]]) == 0) {
      st = sq_error_set(SQ_ERR_ARG, "%s: tensor '%s' listed twice", path, names[ord[i]]);
      goto out;
    }
    if (json_object_set_new(wm, names[ord[i]], json_string(files[ord[i]]))) {
      st = sq_error_set(SQ_ERR_ARG, "%s: tensor '%s' or its file is not valid UTF-8", path,
                        names[ord[i]]);
      goto out;
    }
  }
  json_t *meta = json_pack("{s:I}", "total_size", (json_int_t)total_size);
  if (!meta || json_object_set_new(root, "metadata", meta) ||
      json_object_set(root, "weight_map", wm) ||
      !(text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER))) {
    st = sq_error_set(SQ_ERR_NOMEM, "%s: out of memory", path);
    goto out;
  }
  size_t len = strlen(text);
  char *with_nl = (char *)realloc(text, len + 2);
  if (!with_nl) {
    st = sq_error_set(SQ_ERR_NOMEM, "%s: out of memory", path);
    goto out;
  }
  text = with_nl;
  text[len] = '\n';
  st = sq_fs_write_file_atomic(path, text, len + 1);
out:
  json_decref(wm);
  json_decref(root);
  free(text);
  free(ord);
  free(path);
  return st;
}
