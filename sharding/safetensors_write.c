/* Atomic writing of safetensors files (sharding/safetensors.h).
 *
 * Tensors are declared first; the first write (or the commit) freezes the
 * layout: the header JSON (jansson, compact, declaration order, __metadata__
 * first) padded with spaces so that the data starts 8-byte aligned, and the
 * data in declaration order with no gaps. Bytes go with pwrite to a temporary
 * file in the target directory, which commit fsyncs and renames into place. */
#include "sharding/safetensors.h"
#include "sharding/safetensors_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fsio.h"

typedef struct sq_st_decl {
  char *name;
  sq_dtype dtype;
  int ndim;
  int64_t shape[SQ_ST_MAX_DIMS];
  uint64_t nbytes;
  uint64_t begin; /* relative to the data start */
  int written;
} sq_st_decl;

struct sq_st_writer {
  char *final_path;
  char *tmp_path;
  int fd;
  sq_st_decl *decls;
  size_t n, cap;
  size_t *slots; /* open-addressing table of decl index + 1 (0 = empty) */
  size_t nslots; /* power of two, at least 2n */
  char **meta;   /* (2 * nmeta) key, value pairs, in order */
  size_t nmeta;
  uint64_t data_bytes;
  uint64_t data_start; /* valid once frozen */
  int frozen, committed;
};

static uint64_t sq_st_hash(const char *s) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (; *s; ++s) h = (h ^ (uint8_t)*s) * 1099511628211ull;
  return h;
}

/* Slot holding name, or the empty slot where it would go. */
static size_t *sq_st_slot(const sq_st_writer *w, const char *name) {
  size_t mask = w->nslots - 1, i = (size_t)sq_st_hash(name) & mask;
  while (w->slots[i] && strcmp(w->decls[w->slots[i] - 1].name, name) != 0) i = (i + 1) & mask;
  return &w->slots[i];
}

static sq_st_decl *sq_st_lookup(const sq_st_writer *w, const char *name) {
  if (!w->nslots) return NULL;
  size_t *s = sq_st_slot(w, name);
  return *s ? &w->decls[*s - 1] : NULL;
}

static sq_status sq_st_rehash(sq_st_writer *w, size_t nslots) {
  size_t *slots = (size_t *)calloc(nslots, sizeof *slots);
  if (!slots) return sq_error_set(SQ_ERR_NOMEM, "%s: out of memory", w->final_path);
  free(w->slots);
  w->slots = slots;
  w->nslots = nslots;
  for (size_t i = 0; i < w->n; ++i) *sq_st_slot(w, w->decls[i].name) = i + 1;
  return SQ_OK;
}

sq_status sq_st_writer_create(const char *final_path, sq_st_writer **out) {
  *out = NULL;
  struct stat sb;
  if (stat(final_path, &sb) == 0 && S_ISDIR(sb.st_mode))
    return sq_error_set(
        SQ_ERR_ARG, "%s: is a directory, refusing to write a safetensors file there", final_path);
  sq_st_writer *w = (sq_st_writer *)calloc(1, sizeof *w);
  if (!w) return sq_error_set(SQ_ERR_NOMEM, "%s: out of memory", final_path);
  w->fd = -1;
  w->final_path = strdup(final_path);
  w->tmp_path = sq_fs_temp_name(final_path);
  if (!w->final_path || !w->tmp_path) {
    sq_st_writer_free(w);
    return sq_error_set(SQ_ERR_NOMEM, "%s: out of memory", final_path);
  }
  w->fd = open(w->tmp_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (w->fd < 0) {
    sq_status st = sq_error_errno(w->tmp_path, "cannot create temporary file");
    w->committed = 1; /* nothing to unlink */
    sq_st_writer_free(w);
    return st;
  }
  sq_status st = sq_st_writer_set_metadata(w, "format", "pt");
  if (st != SQ_OK) {
    sq_st_writer_free(w);
    return st;
  }
  *out = w;
  return SQ_OK;
}

sq_status sq_st_writer_set_metadata(sq_st_writer *w, const char *key, const char *value) {
  if (w->frozen)
    return sq_error_set(SQ_ERR_ARG, "%s: metadata '%s' set after the header was written",
                        w->final_path, key);
  size_t kl = strlen(key), vl = strlen(value);
  if (sq_st_utf8_check((const unsigned char *)key, kl) != kl ||
      sq_st_utf8_check((const unsigned char *)value, vl) != vl)
    return sq_error_set(SQ_ERR_ARG, "%s: metadata key or value for '%s' is not valid UTF-8",
                        w->final_path, key);
  char *v = strdup(value);
  if (!v) return sq_error_set(SQ_ERR_NOMEM, "%s: out of memory", w->final_path);
  for (size_t i = 0; i < w->nmeta; ++i)
    if (strcmp(w->meta[2 * i], key) == 0) {
      free(w->meta[2 * i + 1]);
      w->meta[2 * i + 1] = v;
      return SQ_OK;
    }
  char *k = strdup(key);
  char **meta = (char **)realloc(w->meta, 2 * (w->nmeta + 1) * sizeof *meta);
  if (!k || !meta) {
    free(k), free(v);
    if (meta) w->meta = meta;
    return sq_error_set(SQ_ERR_NOMEM, "%s: out of memory", w->final_path);
  }
  w->meta = meta;
  w->meta[2 * w->nmeta] = k;
  w->meta[2 * w->nmeta + 1] = v;
  ++w->nmeta;
  return SQ_OK;
}

sq_status sq_st_writer_declare(sq_st_writer *w, const char *name, sq_dtype dtype, int ndim,
                               const int64_t *shape) {
  const char *path = w->final_path;
  size_t nl = strlen(name);
  if (w->frozen)
    return sq_error_set(SQ_ERR_ARG, "%s: tensor '%s' declared after the first write", path, name);
  if (nl == 0 || strcmp(name, "__metadata__") == 0 ||
      sq_st_utf8_check((const unsigned char *)name, nl) != nl)
    return sq_error_set(SQ_ERR_ARG, "%s: tensor name '%s' is empty, reserved or not UTF-8", path,
                        name);
  if (sq_dtype_size(dtype) == 0)
    return sq_error_set(SQ_ERR_ARG, "%s: tensor '%s': invalid dtype", path, name);
  if (ndim < 0 || ndim > SQ_ST_MAX_DIMS || (ndim > 0 && !shape))
    return sq_error_set(SQ_ERR_ARG, "%s: tensor '%s': %d dimensions (0..%d allowed)", path, name,
                        ndim, SQ_ST_MAX_DIMS);
  if (sq_st_lookup(w, name))
    return sq_error_set(SQ_ERR_ARG, "%s: tensor '%s' declared twice", path, name);
  sq_st_decl d;
  memset(&d, 0, sizeof d);
  d.dtype = dtype;
  d.ndim = ndim;
  uint64_t nbytes = sq_dtype_size(dtype);
  int overflow = 0;
  for (int i = 0; i < ndim; ++i) {
    if (shape[i] < 0)
      return sq_error_set(SQ_ERR_ARG, "%s: tensor '%s': shape[%d] = %lld is negative", path, name,
                          i, (long long)shape[i]);
    d.shape[i] = shape[i];
    overflow |= __builtin_mul_overflow(nbytes, (uint64_t)shape[i], &nbytes);
  }
  if (overflow || __builtin_add_overflow(w->data_bytes, nbytes, &d.begin) ||
      d.begin > (uint64_t)INT64_MAX)
    return sq_error_set(SQ_ERR_ARG, "%s: tensor '%s': size overflows 64 bits", path, name);
  d.begin = w->data_bytes;
  d.nbytes = nbytes;
  if (w->n == w->cap) {
    size_t cap = w->cap ? 2 * w->cap : 64;
    sq_st_decl *decls = (sq_st_decl *)realloc(w->decls, cap * sizeof *decls);
    if (!decls) return sq_error_set(SQ_ERR_NOMEM, "%s: out of memory", path);
    w->decls = decls;
    w->cap = cap;
  }
  if (2 * (w->n + 1) > w->nslots) SQ_CHECK(sq_st_rehash(w, w->nslots ? 2 * w->nslots : 128));
  d.name = strdup(name);
  if (!d.name) return sq_error_set(SQ_ERR_NOMEM, "%s: out of memory", path);
  w->decls[w->n] = d;
  *sq_st_slot(w, name) = ++w->n;
  w->data_bytes += nbytes;
  return SQ_OK;
}

/* The compact header JSON (declaration order, __metadata__ first), or NULL
 * when out of memory. Caller frees. */
static char *sq_st_header_text(const sq_st_writer *w) {
  char *text = NULL;
  json_t *root = json_object(), *meta = json_object();
  if (!root || !meta) goto out;
  for (size_t i = 0; i < w->nmeta; ++i)
    if (json_object_set_new(meta, w->meta[2 * i], json_string(w->meta[2 * i + 1]))) goto out;
  if (w->nmeta && json_object_set(root, "__metadata__", meta)) goto out;
  for (size_t i = 0; i < w->n; ++i) {
    const sq_st_decl *d = &w->decls[i];
    json_t *shape = json_array(), *offs = json_array();
    for (int k = 0; shape && k < d->ndim; ++k)
      if (json_array_append_new(shape, json_integer((json_int_t)d->shape[k]))) goto out;
    if (!offs || json_array_append_new(offs, json_integer((json_int_t)d->begin)) ||
        json_array_append_new(offs, json_integer((json_int_t)(d->begin + d->nbytes)))) {
      json_decref(shape), json_decref(offs);
      goto out;
    }
    /* "o" steals shape and offs (also on failure). */
    json_t *e = json_pack("{s:s, s:o, s:o}", "dtype", sq_dtype_name(d->dtype), "shape", shape,
                          "data_offsets", offs);
    if (!e || json_object_set_new(root, d->name, e)) goto out;
  }
  text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
out:
  json_decref(meta);
  json_decref(root);
  return text;
}

/* Write the header; from now on the layout is fixed. */
static sq_status sq_st_freeze(sq_st_writer *w) {
  if (w->frozen) return SQ_OK;
  sq_status st = SQ_OK;
  char *hdr = NULL, *text = sq_st_header_text(w);
  if (!text) goto nomem;
  size_t len = strlen(text), padded = (len + 7) & ~(size_t)7; /* 8 + padded is a multiple of 8 */
  if (padded > SQ_ST_MAX_HEADER) {
    st = sq_error_set(SQ_ERR_UNSUPPORTED,
                      "%s: header of %zu bytes exceeds the %u-byte limit of readers", w->final_path,
                      padded, SQ_ST_MAX_HEADER);
    goto out;
  }
  hdr = (char *)malloc(8 + padded);
  if (!hdr) goto nomem;
  for (int k = 0; k < 8; ++k) hdr[k] = (char)(((uint64_t)padded >> (8 * k)) & 0xff);
  memcpy(hdr + 8, text, len);
  memset(hdr + 8 + len, ' ', padded - len);
  st = sq_fs_pwrite_full(w->fd, hdr, 8 + padded, 0, w->tmp_path);
  if (st == SQ_OK) {
    w->data_start = 8 + padded;
    w->frozen = 1;
  }
  goto out;
nomem:
  st = sq_error_set(SQ_ERR_NOMEM, "%s: out of memory building the header", w->final_path);
out:
  free(hdr);
  free(text);
  return st;
}

static sq_status sq_st_begin_write(sq_st_writer *w, const char *name, sq_st_decl **out) {
  if (w->committed || w->fd < 0)
    return sq_error_set(SQ_ERR_ARG, "%s: write of '%s' after commit", w->final_path, name);
  sq_st_decl *d = sq_st_lookup(w, name);
  if (!d) return sq_error_set(SQ_ERR_ARG, "%s: tensor '%s' was not declared", w->final_path, name);
  if (d->written)
    return sq_error_set(SQ_ERR_ARG, "%s: tensor '%s' written twice", w->final_path, name);
  SQ_CHECK(sq_st_freeze(w));
  *out = d;
  return SQ_OK;
}

sq_status sq_st_writer_write(sq_st_writer *w, const char *name, const void *data) {
  sq_st_decl *d;
  SQ_CHECK(sq_st_begin_write(w, name, &d));
  SQ_CHECK(
      sq_fs_pwrite_full(w->fd, data, (size_t)d->nbytes, w->data_start + d->begin, w->tmp_path));
  d->written = 1;
  return SQ_OK;
}

sq_status sq_st_writer_write_f32(sq_st_writer *w, const char *name, const float *data) {
  sq_st_decl *d;
  SQ_CHECK(sq_st_begin_write(w, name, &d));
  size_t es = sq_dtype_size(d->dtype);
  uint64_t n = d->nbytes / es;
  enum { CHUNK = 1u << 16 };
  uint8_t buf[CHUNK * 4];
  for (uint64_t done = 0; done < n; done += CHUNK) {
    size_t k = (size_t)(n - done < CHUNK ? n - done : CHUNK);
    if (sq_dtype_convert_from_f32(d->dtype, data + done, buf, k) != 0)
      return sq_error_set(SQ_ERR_UNSUPPORTED, "%s: tensor '%s': cannot convert fp32 to %s",
                          w->final_path, name, sq_dtype_name(d->dtype));
    SQ_CHECK(
        sq_fs_pwrite_full(w->fd, buf, k * es, w->data_start + d->begin + done * es, w->tmp_path));
  }
  d->written = 1;
  return SQ_OK;
}

sq_status sq_st_writer_commit(sq_st_writer *w) {
  if (w->committed || w->fd < 0)
    return sq_error_set(SQ_ERR_ARG, "%s: committed twice", w->final_path);
  for (size_t i = 0; i < w->n; ++i)
    if (!w->decls[i].written)
      return sq_error_set(SQ_ERR_ARG, "%s: tensor '%s' was declared but never written",
                          w->final_path, w->decls[i].name);
  SQ_CHECK(sq_st_freeze(w));
  struct stat sb;
  if (stat(w->final_path, &sb) == 0 && S_ISDIR(sb.st_mode))
    return sq_error_set(SQ_ERR_ARG, "%s: is a directory, refusing to replace it", w->final_path);
  /* The file must be exactly as long as the layout even if the last tensors are empty. */
  if (ftruncate(w->fd, (off_t)(w->data_start + w->data_bytes)) != 0)
    return sq_error_errno(w->tmp_path, "cannot set file size");
  int fd = w->fd;
  w->fd = -1; /* publish closes it in every case */
  sq_status st = sq_fs_publish(fd, w->tmp_path, w->final_path);
  if (st != SQ_OK) return st; /* free() unlinks the temporary file */
  w->committed = 1;
  return SQ_OK;
}

void sq_st_writer_free(sq_st_writer *w) {
  if (!w) return;
  if (w->fd >= 0) close(w->fd);
  if (!w->committed && w->tmp_path) unlink(w->tmp_path);
  for (size_t i = 0; i < w->n; ++i) free(w->decls[i].name);
  for (size_t i = 0; i < 2 * w->nmeta; ++i) free(w->meta[i]);
  free(w->meta);
  free(w->decls);
  free(w->slots);
  free(w->tmp_path);
  free(w->final_path);
  free(w);
}

uint64_t sq_st_writer_total_bytes(const sq_st_writer *w) {
  if (w->frozen) return w->data_start + w->data_bytes;
  char *text = sq_st_header_text(w);
  if (!text) return 0;
  uint64_t total = 8 + ((strlen(text) + 7) & ~(uint64_t)7) + w->data_bytes;
  free(text);
  return total;
}
