/* Validated reading of safetensors files (sharding/safetensors.h).
 *
 * Only the 8-byte length and the JSON header are read at open; tensor bytes
 * are read later with pread at their offsets. The header is checked as the
 * reference implementation does and more strictly: bounded length, '{' first,
 * strict UTF-8, JSON without duplicate keys, known dtypes, non-negative integer
 * shapes of at most 8 dims, shape x dtype size (overflow-checked) equal to the
 * byte range, and ranges that tile the data section exactly (sorted, no gap,
 * no overlap, nothing trailing). Every rejection is one line naming the file
 * and, where one is at fault, the tensor. */
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

struct sq_st_file {
  char *path;
  int fd;              /* -1 for a header parsed from memory */
  uint64_t file_bytes; /* 8 + header + data */
  uint64_t data_start; /* 8 + header length */
  size_t n;
  sq_st_tensor *tensors; /* (n) in data order */
  size_t *by_name;       /* (n) indices into tensors, sorted by name */
  size_t nmeta;
  const char **meta; /* (2 * nmeta) key, value pairs */
  char *block;       /* the one allocation behind tensors, by_name, meta and names */
};

/* ---- small helpers shared with the writer and the checkpoint ---- */

const char *sq_st_printable(const char *s, char *buf, size_t cap) {
  size_t j = 0;
  for (size_t i = 0; s[i] && j + 4 < cap; ++i) {
    unsigned char c = (unsigned char)s[i];
    buf[j++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
  }
  if (s[0] && j + 4 >= cap && cap >= 4) {
    buf[j++] = '.', buf[j++] = '.', buf[j++] = '.';
  }
  buf[j] = '\0';
  return buf;
}

/* Strict UTF-8 (no overlongs, no surrogates, at most U+10FFFF). Returns the
 * offset of the first bad byte, or len when all is well. */
size_t sq_st_utf8_check(const unsigned char *s, size_t len) {
  size_t i = 0;
  while (i < len) {
    unsigned c = s[i];
    size_t need;
    unsigned min;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      need = 1, min = 0x80, c &= 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      need = 2, min = 0x800, c &= 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      need = 3, min = 0x10000, c &= 0x07;
    } else {
      return i;
    }
    if (len - i <= need) return i;
    for (size_t k = 1; k <= need; ++k) {
      if ((s[i + k] & 0xc0) != 0x80) return i;
      c = (c << 6) | (s[i + k] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return i;
    i += need + 1;
  }
  return len;
}

char *sq_st_format_shape(int ndim, const int64_t *shape, char *buf, size_t cap) {
  size_t j = (size_t)snprintf(buf, cap, "[");
  for (int d = 0; d < ndim && j < cap; ++d)
    j += (size_t)snprintf(buf + j, cap - j, d ? ", %lld" : "%lld", (long long)shape[d]);
  if (j < cap) snprintf(buf + j, cap - j, "]");
  return buf;
}

const char *sq_st_json_type(const json_t *v) {
  switch (json_typeof(v)) {
    case JSON_OBJECT:
      return "an object";
    case JSON_ARRAY:
      return "an array";
    case JSON_STRING:
      return "a string";
    case JSON_INTEGER:
      return "an integer";
    case JSON_REAL:
      return "a real number";
    case JSON_TRUE:
    case JSON_FALSE:
      return "a boolean";
    case JSON_NULL:
      return "null";
  }
  return "unknown";
}

sq_status sq_st_json_load(const char *label, const char *what, const char *text, size_t len,
                          json_t **out) {
  *out = NULL;
  size_t bad = sq_st_utf8_check((const unsigned char *)text, len);
  if (bad != len)
    return sq_error_set(SQ_ERR_FORMAT, "%s: %s is not valid UTF-8 (byte 0x%02x at offset %zu)",
                        label, what, (unsigned)(unsigned char)text[bad], bad);
  json_error_t err;
  json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
  if (!root) {
    char msg[256];
    return sq_error_set(SQ_ERR_FORMAT, "%s: %s is not valid JSON: %s (line %d, column %d)", label,
                        what, sq_st_printable(err.text, msg, sizeof msg), err.line, err.column);
  }
  if (!json_is_object(root)) {
    json_decref(root);
    return sq_error_set(SQ_ERR_FORMAT, "%s: %s is not a JSON object", label, what);
  }
  *out = root;
  return SQ_OK;
}

/* ---- header validation ---- */

static const char *const sq_st_keys[3] = {"dtype", "shape", "data_offsets"};

/* Validate one tensor entry and fill t (name already set). */
static sq_status sq_st_parse_entry(const char *label, const char *name, json_t *v,
                                   uint64_t data_bytes, sq_st_tensor *t) {
  char nb[512];
  const char *pn = sq_st_printable(name, nb, sizeof nb);
  if (!json_is_object(v))
    return sq_error_set(SQ_ERR_FORMAT,
                        "%s: tensor '%s': entry is %s, expected an object with dtype, shape "
                        "and data_offsets",
                        label, pn, sq_st_json_type(v));
  const char *key;
  json_t *val;
  json_object_foreach(v, key, val) {
    int known = 0;
    for (int k = 0; k < 3; ++k) known |= strcmp(key, sq_st_keys[k]) == 0;
    if (!known) {
      char kb[128];
      return sq_error_set(SQ_ERR_FORMAT,
                          "%s: tensor '%s': unexpected key '%s' (allowed: dtype, shape, "
                          "data_offsets)",
                          label, pn, sq_st_printable(key, kb, sizeof kb));
    }
  }
  json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
         *jo = json_object_get(v, "data_offsets");
  for (int k = 0; k < 3; ++k) {
    json_t *x = k == 0 ? jd : k == 1 ? js : jo;
    if (!x)
      return sq_error_set(SQ_ERR_FORMAT, "%s: tensor '%s': missing '%s'", label, pn, sq_st_keys[k]);
  }
  if (!json_is_string(jd))
    return sq_error_set(SQ_ERR_FORMAT, "%s: tensor '%s': dtype is %s, expected a string", label, pn,
                        sq_st_json_type(jd));
  t->dtype = strlen(json_string_value(jd)) == json_string_length(jd)
                 ? sq_dtype_from_name(json_string_value(jd))
                 : SQ_DTYPE_INVALID;
  if (t->dtype == SQ_DTYPE_INVALID) {
    char db[64];
    return sq_error_set(SQ_ERR_FORMAT,
                        "%s: tensor '%s': unknown dtype '%s' -- hint: shardq reads F64, F32, F16, "
                        "BF16, F8_E4M3, F8_E5M2, I64..I8, U64..U8, BOOL",
                        label, pn, sq_st_printable(json_string_value(jd), db, sizeof db));
  }
  if (!json_is_array(js))
    return sq_error_set(SQ_ERR_FORMAT, "%s: tensor '%s': shape is %s, expected an array", label, pn,
                        sq_st_json_type(js));
  size_t nd = json_array_size(js);
  if (nd > SQ_ST_MAX_DIMS)
    return sq_error_set(SQ_ERR_FORMAT,
                        "%s: tensor '%s': shape has %zu dimensions, at most %d are supported",
                        label, pn, nd, SQ_ST_MAX_DIMS);
  t->ndim = (int)nd;
  uint64_t nelem = 1;
  int overflow = 0;
  for (size_t d = 0; d < nd; ++d) {
    json_t *x = json_array_get(js, d);
    if (!json_is_integer(x))
      return sq_error_set(
          SQ_ERR_FORMAT,
          "%s: tensor '%s': shape[%zu] is %s, dimensions must be non-negative integers", label, pn,
          d, sq_st_json_type(x));
    json_int_t dim = json_integer_value(x);
    if (dim < 0)
      return sq_error_set(
          SQ_ERR_FORMAT,
          "%s: tensor '%s': shape[%zu] is %lld, dimensions must be non-negative integers", label,
          pn, d, (long long)dim);
    t->shape[d] = (int64_t)dim;
    overflow |= __builtin_mul_overflow(nelem, (uint64_t)dim, &nelem);
  }
  if (!json_is_array(jo) || json_array_size(jo) != 2)
    return sq_error_set(SQ_ERR_FORMAT,
                        "%s: tensor '%s': data_offsets must be an array [begin, end]", label, pn);
  int64_t off[2];
  for (int k = 0; k < 2; ++k) {
    json_t *x = json_array_get(jo, (size_t)k);
    if (!json_is_integer(x) || json_integer_value(x) < 0)
      return sq_error_set(
          SQ_ERR_FORMAT, "%s: tensor '%s': data_offsets[%d] is %s, expected a non-negative integer",
          label, pn, k, json_is_integer(x) ? "negative" : sq_st_json_type(x));
    off[k] = (int64_t)json_integer_value(x);
  }
  t->begin = (uint64_t)off[0];
  t->end = (uint64_t)off[1];
  if (t->begin > t->end)
    return sq_error_set(SQ_ERR_FORMAT,
                        "%s: tensor '%s': data_offsets [%llu, %llu] begin after they end", label,
                        pn, (unsigned long long)t->begin, (unsigned long long)t->end);
  if (t->end > data_bytes)
    return sq_error_set(
        SQ_ERR_FORMAT,
        "%s: tensor '%s': data_offsets [%llu, %llu] reach past the data section, "
        "which holds %llu bytes -- hint: the file is truncated or the header is wrong",
        label, pn, (unsigned long long)t->begin, (unsigned long long)t->end,
        (unsigned long long)data_bytes);
  char sb[256];
  uint64_t nbytes = 0;
  overflow |= __builtin_mul_overflow(nelem, (uint64_t)sq_dtype_size(t->dtype), &nbytes);
  if (overflow)
    return sq_error_set(SQ_ERR_FORMAT, "%s: tensor '%s': shape %s x %s overflows 64 bits", label,
                        pn, sq_st_format_shape(t->ndim, t->shape, sb, sizeof sb),
                        sq_dtype_name(t->dtype));
  if (nbytes != t->end - t->begin)
    return sq_error_set(
        SQ_ERR_FORMAT,
        "%s: tensor '%s': data_offsets [%llu, %llu] hold %llu bytes but shape %s x %s "
        "needs %llu",
        label, pn, (unsigned long long)t->begin, (unsigned long long)t->end,
        (unsigned long long)(t->end - t->begin),
        sq_st_format_shape(t->ndim, t->shape, sb, sizeof sb), sq_dtype_name(t->dtype),
        (unsigned long long)nbytes);
  t->nelem = nelem;
  return SQ_OK;
}

static int sq_st_cmp_offsets(const void *a, const void *b) {
  const sq_st_tensor *x = (const sq_st_tensor *)a, *y = (const sq_st_tensor *)b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return strcmp(x->name, y->name);
}

/* qsort has no context argument: the table being sorted by name. */
static _Thread_local const sq_st_tensor *sq_st_sort_table;

static int sq_st_cmp_names(const void *a, const void *b) {
  return strcmp(sq_st_sort_table[*(const size_t *)a].name,
                sq_st_sort_table[*(const size_t *)b].name);
}

/* Sorted ranges must tile [0, data_bytes) exactly. */
static sq_status sq_st_check_layout(const char *label, const sq_st_file *f, uint64_t data_bytes) {
  char nb[512], pb[512];
  uint64_t pos = 0;
  for (size_t i = 0; i < f->n; ++i) {
    const sq_st_tensor *t = &f->tensors[i];
    if (t->begin < pos)
      return sq_error_set(
          SQ_ERR_FORMAT,
          "%s: tensor '%s': data_offsets [%llu, %llu] overlap tensor '%s' which ends at %llu",
          label, sq_st_printable(t->name, nb, sizeof nb), (unsigned long long)t->begin,
          (unsigned long long)t->end, sq_st_printable(f->tensors[i - 1].name, pb, sizeof pb),
          (unsigned long long)pos);
    if (t->begin > pos)
      return sq_error_set(
          SQ_ERR_FORMAT,
          "%s: tensor '%s': data_offsets [%llu, %llu] leave a gap of %llu bytes before it "
          "(%s %llu)",
          label, sq_st_printable(t->name, nb, sizeof nb), (unsigned long long)t->begin,
          (unsigned long long)t->end, (unsigned long long)(t->begin - pos),
          i ? "the previous tensor ends at" : "the data section starts at",
          (unsigned long long)pos);
    pos = t->end;
  }
  if (pos != data_bytes)
    return sq_error_set(SQ_ERR_FORMAT,
                        "%s: the tensors cover %llu bytes of data but the data section holds %llu "
                        "(%llu trailing bytes)",
                        label, (unsigned long long)pos, (unsigned long long)data_bytes,
                        (unsigned long long)(data_bytes - pos));
  for (size_t i = 1; i < f->n;
       ++i) /* jansson rejects duplicate keys; keep the invariant explicit */
    if (strcmp(f->tensors[f->by_name[i - 1]].name, f->tensors[f->by_name[i]].name) == 0)
      return sq_error_set(SQ_ERR_FORMAT, "%s: tensor '%s' appears twice", label,
                          sq_st_printable(f->tensors[f->by_name[i]].name, nb, sizeof nb));
  return SQ_OK;
}

sq_status sq_st_parse_header(const char *label, const char *json, size_t len, uint64_t data_bytes,
                             sq_st_file **out) {
  if (out) *out = NULL;
  if (len < 2)
    return sq_error_set(SQ_ERR_FORMAT, "%s: header length %zu is too small for a JSON object",
                        label, len);
  if (len > SQ_ST_MAX_HEADER)
    return sq_error_set(SQ_ERR_FORMAT, "%s: header length %zu exceeds the limit of %u bytes", label,
                        len, SQ_ST_MAX_HEADER);
  if (json[0] != '{')
    return sq_error_set(SQ_ERR_FORMAT,
                        "%s: header does not start with '{' (first byte 0x%02x) -- hint: not a "
                        "safetensors file?",
                        label, (unsigned)(unsigned char)json[0]);
  json_t *root;
  SQ_CHECK(sq_st_json_load(label, "header", json, len, &root));

  /* Pass 1: sizes, names and __metadata__. */
  sq_status st = SQ_OK;
  size_t n = 0, nmeta = 0, pool = 0;
  const char *key;
  size_t klen;
  json_t *val;
  json_object_keylen_foreach(root, key, klen, val) {
    char nb[512];
    if (klen == 0) {
      st = sq_error_set(SQ_ERR_FORMAT, "%s: a tensor has an empty name", label);
      goto done;
    }
    if (memchr(key, '\0', klen)) {
      st = sq_error_set(SQ_ERR_FORMAT, "%s: tensor '%s': the name contains a NUL byte", label,
                        sq_st_printable(key, nb, sizeof nb));
      goto done;
    }
    if (strcmp(key, "__metadata__") == 0) {
      if (!json_is_object(val)) {
        st = sq_error_set(SQ_ERR_FORMAT, "%s: __metadata__ is %s, expected an object of strings",
                          label, sq_st_json_type(val));
        goto done;
      }
      const char *mk;
      json_t *mv;
      json_object_foreach(val, mk, mv) {
        if (!json_is_string(mv) || memchr(json_string_value(mv), '\0', json_string_length(mv))) {
          st = sq_error_set(SQ_ERR_FORMAT,
                            "%s: __metadata__ value for '%s' is %s, expected a string%s", label,
                            sq_st_printable(mk, nb, sizeof nb),
                            json_is_string(mv) ? "a string with a NUL byte" : sq_st_json_type(mv),
                            json_is_string(mv) ? " without NUL bytes" : "");
          goto done;
        }
        pool += strlen(mk) + 1 + json_string_length(mv) + 1;
        ++nmeta;
      }
      continue;
    }
    pool += klen + 1;
    ++n;
  }

  /* One block: tensors, by_name, meta pointers, then the string pool. */
  size_t bytes =
      n * sizeof(sq_st_tensor) + n * sizeof(size_t) + 2 * nmeta * sizeof(char *) + pool + 1;
  sq_st_file *f = (sq_st_file *)calloc(1, sizeof *f);
  char *block = (char *)calloc(1, bytes);
  char *path = strdup(label);
  if (!f || !block || !path) {
    free(f), free(block), free(path);
    st = sq_error_set(SQ_ERR_NOMEM, "%s: out of memory for a header of %zu tensors", label, n);
    goto done;
  }
  f->path = path;
  f->fd = -1;
  f->block = block;
  f->n = n;
  f->nmeta = nmeta;
  f->tensors = (sq_st_tensor *)block;
  f->by_name = (size_t *)(block + n * sizeof(sq_st_tensor));
  f->meta = (const char **)(block + n * (sizeof(sq_st_tensor) + sizeof(size_t)));
  char *p = block + n * (sizeof(sq_st_tensor) + sizeof(size_t)) + 2 * nmeta * sizeof(char *);

  /* Pass 2: fill and validate each entry. */
  size_t i = 0, m = 0;
  json_object_keylen_foreach(root, key, klen, val) {
    if (strcmp(key, "__metadata__") == 0) {
      const char *mk;
      json_t *mv;
      json_object_foreach(val, mk, mv) {
        size_t kl = strlen(mk) + 1, vl = json_string_length(mv) + 1;
        f->meta[2 * m] = memcpy(p, mk, kl);
        p += kl;
        f->meta[2 * m + 1] = memcpy(p, json_string_value(mv), vl);
        p += vl;
        ++m;
      }
      continue;
    }
    sq_st_tensor *t = &f->tensors[i];
    t->name = memcpy(p, key, klen + 1);
    p += klen + 1;
    st = sq_st_parse_entry(label, t->name, val, data_bytes, t);
    if (st != SQ_OK) break;
    ++i;
  }
  if (st == SQ_OK) {
    qsort(f->tensors, n, sizeof *f->tensors, sq_st_cmp_offsets);
    for (size_t k = 0; k < n; ++k) f->by_name[k] = k;
    sq_st_sort_table = f->tensors;
    qsort(f->by_name, n, sizeof *f->by_name, sq_st_cmp_names);
    st = sq_st_check_layout(label, f, data_bytes);
  }
  f->data_start = 8 + len;
  f->file_bytes = 8 + len + data_bytes;
  if (st != SQ_OK || !out)
    sq_st_close(f);
  else
    *out = f;
done:
  json_decref(root);
  return st;
}

/* ---- files ---- */

sq_status sq_st_open(const char *path, sq_st_file **out) {
  *out = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO must not hang us */
  if (fd < 0) return sq_error_errno(path, "cannot open safetensors file");
  sq_status st = SQ_OK;
  char *hdr = NULL;
  struct stat sb;
  if (fstat(fd, &sb) != 0) {
    st = sq_error_errno(path, "cannot stat");
    goto fail;
  }
  if (!S_ISREG(sb.st_mode)) {
    st = sq_error_set(SQ_ERR_FORMAT, "%s: not a regular file", path);
    goto fail;
  }
  uint64_t size = (uint64_t)sb.st_size;
  if (size < 8) {
    st = sq_error_set(SQ_ERR_FORMAT,
                      "%s: file is %llu bytes, too short for the 8-byte header length", path,
                      (unsigned long long)size);
    goto fail;
  }
  uint8_t lenbuf[8];
  SQ_CHECK_GOTO(sq_fs_pread_full(fd, lenbuf, 8, 0, path), st, fail);
  uint64_t hlen = 0;
  for (int k = 7; k >= 0; --k) hlen = (hlen << 8) | lenbuf[k];
  if (hlen > SQ_ST_MAX_HEADER) {
    st = sq_error_set(
        SQ_ERR_FORMAT,
        "%s: header length %llu exceeds the limit of %u bytes -- hint: not a safetensors "
        "file, or a corrupt one",
        path, (unsigned long long)hlen, SQ_ST_MAX_HEADER);
    goto fail;
  }
  if (hlen > size - 8) {
    st = sq_error_set(SQ_ERR_FORMAT,
                      "%s: header length %llu runs past the end of the %llu-byte file", path,
                      (unsigned long long)hlen, (unsigned long long)size);
    goto fail;
  }
  hdr = (char *)malloc(hlen ? hlen : 1);
  if (!hdr) {
    st = sq_error_set(SQ_ERR_NOMEM, "%s: out of memory for a %llu-byte header", path,
                      (unsigned long long)hlen);
    goto fail;
  }
  SQ_CHECK_GOTO(sq_fs_pread_full(fd, hdr, hlen, 8, path), st, fail);
  SQ_CHECK_GOTO(sq_st_parse_header(path, hdr, hlen, size - 8 - hlen, out), st, fail);
  (*out)->fd = fd;
  free(hdr);
  return SQ_OK;
fail:
  free(hdr);
  close(fd);
  return st;
}

void sq_st_close(sq_st_file *f) {
  if (!f) return;
  if (f->fd >= 0) close(f->fd);
  free(f->block);
  free(f->path);
  free(f);
}

const char *sq_st_path(const sq_st_file *f) {
  return f->path;
}
size_t sq_st_count(const sq_st_file *f) {
  return f->n;
}
uint64_t sq_st_file_bytes(const sq_st_file *f) {
  return f->file_bytes;
}
uint64_t sq_st_data_start(const sq_st_file *f) {
  return f->data_start;
}

const sq_st_tensor *sq_st_at(const sq_st_file *f, size_t i) {
  return i < f->n ? &f->tensors[i] : NULL;
}

const sq_st_tensor *sq_st_find(const sq_st_file *f, const char *name) {
  size_t lo = 0, hi = f->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    const sq_st_tensor *t = &f->tensors[f->by_name[mid]];
    int c = strcmp(t->name, name);
    if (c == 0) return t;
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return NULL;
}

const char *sq_st_metadata(const sq_st_file *f, const char *key) {
  for (size_t i = 0; i < f->nmeta; ++i)
    if (strcmp(f->meta[2 * i], key) == 0) return f->meta[2 * i + 1];
  return NULL;
}

size_t sq_st_metadata_count(const sq_st_file *f) {
  return f->nmeta;
}

const char *sq_st_metadata_at(const sq_st_file *f, size_t i, const char **value) {
  if (i >= f->nmeta) return NULL;
  if (value) *value = f->meta[2 * i + 1];
  return f->meta[2 * i];
}

/* ---- tensor bytes ---- */

static sq_status sq_st_check_tensor(const sq_st_file *f, const sq_st_tensor *t) {
  if (!t || t < f->tensors || t >= f->tensors + f->n)
    return sq_error_set(SQ_ERR_ARG, "%s: tensor handle does not belong to this file", f->path);
  if (f->fd < 0)
    return sq_error_set(SQ_ERR_ARG, "%s: header parsed from memory has no file to read from",
                        f->path);
  return SQ_OK;
}

sq_status sq_st_read_raw(const sq_st_file *f, const sq_st_tensor *t, uint64_t offset, void *dst,
                         uint64_t len) {
  SQ_CHECK(sq_st_check_tensor(f, t));
  uint64_t size = t->end - t->begin, stop;
  if (__builtin_add_overflow(offset, len, &stop) || stop > size)
    return sq_error_set(SQ_ERR_ARG,
                        "%s: tensor '%s': read of %llu bytes at %llu is outside its %llu bytes",
                        f->path, t->name, (unsigned long long)len, (unsigned long long)offset,
                        (unsigned long long)size);
  return sq_fs_pread_full(f->fd, dst, (size_t)len, f->data_start + t->begin + offset, f->path);
}

/* Read nelem elements starting at element e0 of t, converted to fp32. */
static sq_status sq_st_read_elems_f32(const sq_st_file *f, const sq_st_tensor *t, uint64_t e0,
                                      uint64_t nelem, float *dst) {
  size_t es = sq_dtype_size(t->dtype);
  if (t->dtype != SQ_DTYPE_F32 && t->dtype != SQ_DTYPE_F16 && t->dtype != SQ_DTYPE_BF16 &&
      t->dtype != SQ_DTYPE_F8_E4M3)
    return sq_error_set(
        SQ_ERR_UNSUPPORTED,
        "%s: tensor '%s': dtype %s cannot be read as fp32 (F32, F16, BF16, F8_E4M3 can)", f->path,
        t->name, sq_dtype_name(t->dtype));
  if (t->dtype == SQ_DTYPE_F32) return sq_st_read_raw(f, t, e0 * 4, dst, nelem * 4);
  /* Bounce through a bounded buffer: conversions widen, so reading in place is not safe. */
  enum { CHUNK = 1u << 18 }; /* elements per pread */
  uint64_t chunk = nelem < CHUNK ? nelem : CHUNK;
  uint8_t *buf = (uint8_t *)malloc(chunk ? chunk * es : 1);
  if (!buf)
    return sq_error_set(SQ_ERR_NOMEM, "%s: out of memory reading tensor '%s'", f->path, t->name);
  sq_status st = SQ_OK;
  for (uint64_t done = 0; done < nelem && st == SQ_OK; done += chunk) {
    uint64_t k = nelem - done < chunk ? nelem - done : chunk;
    st = sq_st_read_raw(f, t, (e0 + done) * es, buf, k * es);
    if (st == SQ_OK) sq_dtype_convert_to_f32(t->dtype, buf, dst + done, (size_t)k);
  }
  free(buf);
  return st;
}

sq_status sq_st_read_f32(const sq_st_file *f, const sq_st_tensor *t, float *dst, uint64_t nelem) {
  SQ_CHECK(sq_st_check_tensor(f, t));
  if (nelem != t->nelem)
    return sq_error_set(SQ_ERR_ARG, "%s: tensor '%s': caller expects %llu elements but it has %llu",
                        f->path, t->name, (unsigned long long)nelem, (unsigned long long)t->nelem);
  return sq_st_read_elems_f32(f, t, 0, nelem, dst);
}

sq_status sq_st_read_rows_f32(const sq_st_file *f, const sq_st_tensor *t, int64_t row0,
                              int64_t nrows, float *dst) {
  SQ_CHECK(sq_st_check_tensor(f, t));
  if (t->ndim < 1)
    return sq_error_set(SQ_ERR_ARG, "%s: tensor '%s' is a scalar and has no rows", f->path,
                        t->name);
  int64_t rows = t->shape[0];
  if (row0 < 0 || nrows < 0 || row0 > rows || nrows > rows - row0)
    return sq_error_set(SQ_ERR_ARG, "%s: tensor '%s': rows [%lld, %lld) are outside its %lld rows",
                        f->path, t->name, (long long)row0, (long long)row0 + (long long)nrows,
                        (long long)rows);
  if (nrows == 0) return SQ_OK;
  uint64_t row_elems = t->nelem / (uint64_t)rows;
  return sq_st_read_elems_f32(f, t, (uint64_t)row0 * row_elems, (uint64_t)nrows * row_elems, dst);
}
