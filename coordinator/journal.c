/* Implementation of coordinator/journal.h: the checkpoint-restart journal,
 * serialised with jansson and published with common/fsio.h. */
#include "coordinator/journal.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/fsio.h"
#include "common/log.h"

#define SQ_JOURNAL_MAX_BYTES (256u << 20) /* a 1000-layer, 1000-rank journal is ~100 MB */
#define SQ_CHECKSUM_CHUNK (1u << 20)

/* ---------------------------------------------------------------- hashing */

uint64_t sq_hash_fnv1a64(uint64_t h, const void *data, size_t len) {
  const unsigned char *p = (const unsigned char *)data;
  for (size_t i = 0; i < len; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

void sq_hash_hex(uint64_t h, char out[SQ_HASH_HEX_LEN + 1]) {
  snprintf(out, SQ_HASH_HEX_LEN + 1, "%016llx", (unsigned long long)h);
}

sq_status sq_file_checksum(const char *path, char hex[SQ_HASH_HEX_LEN + 1], uint64_t *bytes) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return sq_error_errno(path, "cannot open to checksum");
  unsigned char *buf = (unsigned char *)malloc(SQ_CHECKSUM_CHUNK);
  if (!buf) {
    close(fd);
    return sq_error_set(SQ_ERR_NOMEM, "%s: out of memory for the checksum buffer", path);
  }
  uint64_t h = SQ_FNV1A64_INIT, off = 0;
  sq_status st = SQ_OK;
  for (;;) {
    ssize_t n = pread(fd, buf, SQ_CHECKSUM_CHUNK, (off_t)off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      st = sq_error_errno(path, "read failed while checksumming");
      break;
    }
    if (n == 0) break;
    h = sq_hash_fnv1a64(h, buf, (size_t)n);
    off += (uint64_t)n;
  }
  free(buf);
  close(fd);
  if (st != SQ_OK) return st;
  sq_hash_hex(h, hex);
  if (bytes) *bytes = off;
  return SQ_OK;
}

/* ---------------------------------------------------------- serialisation */

static double sq_jn_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Checksum of obj without "journal_checksum": compact, key-sorted dump. Reals
 * are dumped with 17 significant digits, so a parsed journal dumps the same. */
static sq_status sq_jn_body_hash(json_t *obj, char hex[SQ_HASH_HEX_LEN + 1]) {
  json_t *copy = json_copy(obj);
  if (!copy) return sq_error_set(SQ_ERR_NOMEM, "out of memory hashing the journal");
  json_object_del(copy, "journal_checksum");
  char *text = json_dumps(copy, JSON_COMPACT | JSON_SORT_KEYS);
  json_decref(copy);
  if (!text) return sq_error_set(SQ_ERR_NOMEM, "out of memory hashing the journal");
  sq_hash_hex(sq_hash_fnv1a64(SQ_FNV1A64_INIT, text, strlen(text)), hex);
  free(text);
  return SQ_OK;
}

/* The journal with its first nlayers layers as JSON text (caller frees). */
static sq_status sq_jn_dump(const sq_journal *j, int nlayers, char **out) {
  json_t *root = json_object(), *fp = json_object(), *runs = json_array(), *layers = json_array();
  sq_status st = SQ_OK;
  if (!root || !fp || !runs || !layers) {
    json_decref(root);
    json_decref(fp);
    json_decref(runs);
    json_decref(layers);
    return sq_error_set(SQ_ERR_NOMEM, "out of memory writing the journal");
  }
  json_object_set_new(root, "format", json_string("shardq-journal"));
  json_object_set_new(root, "version", json_integer(SQ_JOURNAL_VERSION));
  json_object_set_new(root, "hash", json_string("fnv1a64"));
  json_object_set_new(fp, "shardq_version", json_string(j->fp.shardq_version));
  json_object_set_new(fp, "checkpoint", json_string(j->fp.checkpoint));
  json_object_set_new(fp, "recipe", json_string(j->fp.recipe));
  json_object_set_new(fp, "calibration", json_string(j->fp.calibration));
  json_object_set_new(fp, "ranks", json_integer(j->fp.ranks));
  json_object_set_new(fp, "options", json_string(j->fp.options));
  json_object_set_new(root, "fingerprint", fp);
  json_object_set_new(root, "total_layers", json_integer(j->total_layers));
  json_object_set_new(root, "created", json_real(j->created));
  for (int r = 0; r < j->nruns; ++r) {
    if (j->runs[r].first_layer > nlayers) continue; /* a run that began after a layer we drop */
    json_array_append_new(runs, json_pack("{s:f,s:i}", "started", j->runs[r].started, "first_layer",
                                          j->runs[r].first_layer));
  }
  json_object_set_new(root, "runs", runs);
  for (int l = 0; l < nlayers; ++l) {
    const sq_journal_layer *L = &j->layers[l];
    json_t *files = json_array();
    for (int f = 0; f < L->nfiles; ++f)
      json_array_append_new(files, json_pack("{s:s,s:I,s:s}", "path", L->files[f].path, "bytes",
                                             (json_int_t)L->files[f].bytes, "checksum",
                                             L->files[f].checksum));
    json_array_append_new(layers, json_pack("{s:i,s:f,s:o}", "layer", L->layer, "time", L->time,
                                            "files", files));
  }
  json_object_set_new(root, "layers", layers);
  char hex[SQ_HASH_HEX_LEN + 1];
  st = sq_jn_body_hash(root, hex);
  if (st == SQ_OK) {
    json_object_set_new(root, "journal_checksum", json_string(hex));
    *out = json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    if (!*out) st = sq_error_set(SQ_ERR_NOMEM, "out of memory writing the journal");
  }
  json_decref(root);
  return st;
}

/* Publish prev (layers 0..n-2) and then current (0..n-1). Generations only
 * append one layer, so the previous one is the current minus its last layer. */
static sq_status sq_jn_publish(const sq_journal *j) {
  char *cur = NULL, *prev = NULL;
  char *cur_path = sq_fs_join(j->dir, SQ_JOURNAL_FILE), *prev_path = sq_fs_join(j->dir, SQ_JOURNAL_PREV_FILE);
  sq_status st = SQ_OK;
  if (!cur_path || !prev_path) {
    st = sq_error_set(SQ_ERR_NOMEM, "out of memory");
    goto done;
  }
  SQ_CHECK_GOTO(sq_jn_dump(j, j->nlayers > 0 ? j->nlayers - 1 : 0, &prev), st, done);
  SQ_CHECK_GOTO(sq_jn_dump(j, j->nlayers, &cur), st, done);
  SQ_CHECK_GOTO(sq_fs_write_file_atomic(prev_path, prev, strlen(prev)), st, done);
  SQ_CHECK_GOTO(sq_fs_write_file_atomic(cur_path, cur, strlen(cur)), st, done);
done:
  free(cur);
  free(prev);
  free(cur_path);
  free(prev_path);
  return st;
}

/* ---------------------------------------------------------------- parsing */

static sq_status sq_jn_bad(const char *path, const char *what) {
  return sq_error_set(SQ_ERR_FORMAT,
                      "%s: damaged journal: %s -- hint: `shardq quantize --resume` falls back to %s; "
                      "if both are damaged, start over with a new --checkpoint-dir",
                      path, what, SQ_JOURNAL_PREV_FILE);
}

static int sq_jn_is_hex(const char *s) {
  if (!s || strlen(s) != SQ_HASH_HEX_LEN) return 0;
  for (const char *p = s; *p; ++p)
    if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return 0;
  return 1;
}

static sq_status sq_jn_hex_field(json_t *obj, const char *key, char out[SQ_HASH_HEX_LEN + 1],
                                 const char *path) {
  const char *s = json_string_value(json_object_get(obj, key));
  if (!sq_jn_is_hex(s)) {
    char what[128];
    snprintf(what, sizeof what, "\"%s\" is not a 16-digit hex digest", key);
    return sq_jn_bad(path, what);
  }
  memcpy(out, s, SQ_HASH_HEX_LEN + 1);
  return SQ_OK;
}

static void sq_jn_free(sq_journal *j) {
  if (!j) return;
  for (int l = 0; l < j->nlayers; ++l) {
    for (int f = 0; f < j->layers[l].nfiles; ++f) free(j->layers[l].files[f].path);
    free(j->layers[l].files);
  }
  free(j->layers);
  free(j->runs);
  free(j->dir);
  free(j);
}

static sq_status sq_jn_parse_layers(sq_journal *j, json_t *layers, const char *path) {
  size_t n = json_array_size(layers);
  if (n > (size_t)j->total_layers) return sq_jn_bad(path, "more committed layers than total_layers");
  j->layers = (sq_journal_layer *)calloc(n ? n : 1, sizeof *j->layers);
  if (!j->layers) return sq_error_set(SQ_ERR_NOMEM, "%s: out of memory", path);
  for (size_t l = 0; l < n; ++l) {
    json_t *L = json_array_get(layers, l), *files = json_object_get(L, "files");
    json_t *lay = json_object_get(L, "layer"), *tm = json_object_get(L, "time");
    char what[160];
    if (!json_is_integer(lay) || json_integer_value(lay) != (json_int_t)l || !json_is_number(tm) ||
        !json_is_array(files)) {
      snprintf(what, sizeof what, "layers[%zu] needs \"layer\": %zu, a numeric \"time\" and a \"files\" array", l, l);
      return sq_jn_bad(path, what);
    }
    sq_journal_layer *dst = &j->layers[l];
    dst->layer = (int)l;
    dst->time = json_number_value(tm);
    size_t nf = json_array_size(files);
    dst->files = (sq_journal_file *)calloc(nf ? nf : 1, sizeof *dst->files);
    if (!dst->files) return sq_error_set(SQ_ERR_NOMEM, "%s: out of memory", path);
    j->nlayers = (int)l + 1; /* from here on sq_jn_free releases this layer */
    for (size_t f = 0; f < nf; ++f) {
      json_t *F = json_array_get(files, f);
      const char *p = json_string_value(json_object_get(F, "path"));
      json_t *b = json_object_get(F, "bytes");
      if (!p || !p[0] || !json_is_integer(b) || json_integer_value(b) < 0) {
        snprintf(what, sizeof what, "layers[%zu].files[%zu] needs a \"path\" and non-negative \"bytes\"", l, f);
        return sq_jn_bad(path, what);
      }
      dst->files[f].path = strdup(p);
      if (!dst->files[f].path) return sq_error_set(SQ_ERR_NOMEM, "%s: out of memory", path);
      dst->nfiles = (int)f + 1;
      dst->files[f].bytes = (uint64_t)json_integer_value(b);
      SQ_CHECK(sq_jn_hex_field(F, "checksum", dst->files[f].checksum, path));
    }
  }
  return SQ_OK;
}

static sq_status sq_jn_parse(sq_journal *j, json_t *root, const char *path) {
  if (!json_is_object(root)) return sq_jn_bad(path, "top level is not a JSON object");
  const char *fmt = json_string_value(json_object_get(root, "format"));
  if (!fmt || strcmp(fmt, "shardq-journal") != 0) return sq_jn_bad(path, "\"format\" is not \"shardq-journal\"");
  json_t *ver = json_object_get(root, "version");
  if (!json_is_integer(ver) || json_integer_value(ver) != SQ_JOURNAL_VERSION) {
    return sq_error_set(SQ_ERR_UNSUPPORTED,
                        "%s: journal format version %lld, this shardq reads version %d -- hint: resume "
                        "with the shardq that started the job",
                        path, json_is_integer(ver) ? (long long)json_integer_value(ver) : -1LL,
                        SQ_JOURNAL_VERSION);
  }
  char want[SQ_HASH_HEX_LEN + 1], have[SQ_HASH_HEX_LEN + 1];
  SQ_CHECK(sq_jn_hex_field(root, "journal_checksum", have, path));
  SQ_CHECK(sq_jn_body_hash(root, want));
  if (strcmp(want, have) != 0) {
    char what[128];
    snprintf(what, sizeof what, "journal_checksum is %s but the content hashes to %s", have, want);
    return sq_jn_bad(path, what);
  }
  json_t *fp = json_object_get(root, "fingerprint"), *tl = json_object_get(root, "total_layers");
  json_t *cr = json_object_get(root, "created"), *runs = json_object_get(root, "runs");
  json_t *layers = json_object_get(root, "layers");
  if (!json_is_object(fp) || !json_is_integer(tl) || json_integer_value(tl) < 1 ||
      json_integer_value(tl) > 1000000 || !json_is_number(cr) || !json_is_array(runs) ||
      !json_is_array(layers))
    return sq_jn_bad(path, "needs \"fingerprint\", \"total_layers\" >= 1, \"created\", \"runs\" and \"layers\"");
  j->total_layers = (int)json_integer_value(tl);
  j->created = json_number_value(cr);
  const char *v = json_string_value(json_object_get(fp, "shardq_version"));
  json_t *ranks = json_object_get(fp, "ranks");
  if (!v || strlen(v) >= sizeof j->fp.shardq_version || !json_is_integer(ranks) || json_integer_value(ranks) < 1)
    return sq_jn_bad(path, "fingerprint needs \"shardq_version\" and \"ranks\" >= 1");
  snprintf(j->fp.shardq_version, sizeof j->fp.shardq_version, "%s", v);
  j->fp.ranks = (int)json_integer_value(ranks);
  SQ_CHECK(sq_jn_hex_field(fp, "checkpoint", j->fp.checkpoint, path));
  SQ_CHECK(sq_jn_hex_field(fp, "recipe", j->fp.recipe, path));
  SQ_CHECK(sq_jn_hex_field(fp, "calibration", j->fp.calibration, path));
  SQ_CHECK(sq_jn_hex_field(fp, "options", j->fp.options, path));
  size_t nr = json_array_size(runs);
  j->runs = (sq_journal_run *)calloc(nr ? nr : 1, sizeof *j->runs);
  if (!j->runs) return sq_error_set(SQ_ERR_NOMEM, "%s: out of memory", path);
  for (size_t r = 0; r < nr; ++r) {
    json_t *R = json_array_get(runs, r), *s = json_object_get(R, "started"), *fl = json_object_get(R, "first_layer");
    if (!json_is_number(s) || !json_is_integer(fl)) return sq_jn_bad(path, "a \"runs\" entry needs \"started\" and \"first_layer\"");
    j->runs[r].started = json_number_value(s);
    j->runs[r].first_layer = (int)json_integer_value(fl);
  }
  j->nruns = (int)nr;
  return sq_jn_parse_layers(j, layers, path);
}

static sq_status sq_jn_load(const char *dir, const char *name, sq_journal **out) {
  *out = NULL;
  char *path = sq_fs_join(dir, name);
  if (!path) return sq_error_set(SQ_ERR_NOMEM, "out of memory");
  char *text = NULL;
  size_t len = 0;
  sq_journal *j = NULL;
  json_t *root = NULL;
  struct stat sb;
  sq_status st = SQ_OK;
  if (stat(path, &sb) != 0) {
    st = sq_error_set(SQ_ERR_IO, "%s: no journal here (%s) -- hint: is this the --checkpoint-dir of a job?",
                      path, strerror(errno));
    goto done;
  }
  SQ_CHECK_GOTO(sq_fs_read_small_file(path, SQ_JOURNAL_MAX_BYTES, &text, &len), st, done);
  json_error_t err;
  root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);
  if (!root) {
    char what[300];
    snprintf(what, sizeof what, "not valid JSON at line %d column %d (%s)%s", err.line, err.column, err.text,
             len == 0 ? ", the file is empty" : "");
    st = sq_jn_bad(path, what);
    goto done;
  }
  j = (sq_journal *)calloc(1, sizeof *j);
  if (!j || !(j->dir = strdup(dir))) {
    st = sq_error_set(SQ_ERR_NOMEM, "out of memory");
    goto done;
  }
  SQ_CHECK_GOTO(sq_jn_parse(j, root, path), st, done);
  *out = j;
  j = NULL;
done:
  sq_jn_free(j);
  json_decref(root);
  free(text);
  free(path);
  return st;
}

/* -------------------------------------------------------------------- API */

sq_status sq_journal_create(const char *dir, const sq_journal_fingerprint *fp, int total_layers,
                            sq_journal **out) {
  *out = NULL;
  if (total_layers < 1) return sq_error_set(SQ_ERR_ARG, "journal for %s: total_layers %d must be >= 1", dir, total_layers);
  if (fp->ranks < 1) return sq_error_set(SQ_ERR_ARG, "journal for %s: rank count %d must be >= 1", dir, fp->ranks);
  const char *hexes[4] = {fp->checkpoint, fp->recipe, fp->calibration, fp->options};
  for (int i = 0; i < 4; ++i)
    if (!sq_jn_is_hex(hexes[i]))
      return sq_error_set(SQ_ERR_INTERNAL, "journal for %s: fingerprint field %d is not a 16-digit hex digest", dir, i);
  SQ_CHECK(sq_fs_mkdirs(dir));
  char *path = sq_fs_join(dir, SQ_JOURNAL_FILE);
  if (!path) return sq_error_set(SQ_ERR_NOMEM, "out of memory");
  struct stat sb;
  int exists = stat(path, &sb) == 0;
  free(path);
  if (exists)
    return sq_error_set(SQ_ERR_ARG,
                        "%s/%s already exists -- hint: resume that job with --resume, or use a new --checkpoint-dir",
                        dir, SQ_JOURNAL_FILE);
  sq_journal *j = (sq_journal *)calloc(1, sizeof *j);
  if (!j || !(j->dir = strdup(dir)) || !(j->runs = (sq_journal_run *)calloc(1, sizeof *j->runs))) {
    sq_jn_free(j);
    return sq_error_set(SQ_ERR_NOMEM, "out of memory");
  }
  j->fp = *fp;
  j->total_layers = total_layers;
  j->created = sq_jn_now();
  j->runs[0].started = j->created;
  j->nruns = 1;
  sq_status st = sq_jn_publish(j);
  if (st != SQ_OK) {
    sq_jn_free(j);
    return st;
  }
  *out = j;
  return SQ_OK;
}

sq_status sq_journal_open(const char *dir, sq_journal **out) {
  SQ_CHECK(sq_jn_load(dir, SQ_JOURNAL_FILE, out));
  return SQ_OK;
}

sq_status sq_journal_open_or_prev(const char *dir, sq_journal **out) {
  sq_status st = sq_jn_load(dir, SQ_JOURNAL_FILE, out);
  if (st != SQ_ERR_FORMAT) return st;
  char first[1024];
  snprintf(first, sizeof first, "%s", sq_error_message());
  char *hint = strstr(first, " -- hint:");
  if (hint) *hint = '\0'; /* the hint says to do what happens next */
  sq_error_clear();
  st = sq_jn_load(dir, SQ_JOURNAL_PREV_FILE, out);
  if (st != SQ_OK) {
    char second[1024];
    snprintf(second, sizeof second, "%s", sq_error_message());
    sq_error_clear();
    return sq_error_set(SQ_ERR_FORMAT, "both journal generations are unusable: %s; and %s", first, second);
  }
  (*out)->from_prev = 1;
  sq_log_warn("%s; using %s/%s instead (%d layers committed)", first, dir, SQ_JOURNAL_PREV_FILE, (*out)->nlayers);
  return SQ_OK;
}

static void sq_jn_diff(char *msg, size_t cap, const char *field, const char *was, const char *now) {
  if (strcmp(was, now) == 0) return;
  size_t len = strlen(msg);
  snprintf(msg + len, cap - len, "%s%s changed: journal has %s, now %s", len ? "; " : "", field, was, now);
}

sq_status sq_journal_check_fingerprint(const sq_journal *j, const sq_journal_fingerprint *fp) {
  char msg[1024] = "", a[16], b[16];
  sq_jn_diff(msg, sizeof msg, "shardq version", j->fp.shardq_version, fp->shardq_version);
  sq_jn_diff(msg, sizeof msg, "input checkpoint (shard headers)", j->fp.checkpoint, fp->checkpoint);
  sq_jn_diff(msg, sizeof msg, "recipe/scheme", j->fp.recipe, fp->recipe);
  sq_jn_diff(msg, sizeof msg, "calibration file", j->fp.calibration, fp->calibration);
  snprintf(a, sizeof a, "%d", j->fp.ranks);
  snprintf(b, sizeof b, "%d", fp->ranks);
  sq_jn_diff(msg, sizeof msg, "rank count", a, b);
  sq_jn_diff(msg, sizeof msg, "options", j->fp.options, fp->options);
  if (!msg[0]) return SQ_OK;
  return sq_error_set(SQ_ERR_ARG,
                      "%s/%s: cannot resume: %s -- hint: resume with the same inputs, options and rank count "
                      "(the output must match an uninterrupted run), or start over with a new --checkpoint-dir",
                      j->dir, SQ_JOURNAL_FILE, msg);
}

sq_status sq_journal_begin_run(sq_journal *j) {
  sq_journal_run *r = (sq_journal_run *)realloc(j->runs, (size_t)(j->nruns + 1) * sizeof *r);
  if (!r) return sq_error_set(SQ_ERR_NOMEM, "out of memory");
  j->runs = r;
  j->runs[j->nruns].started = sq_jn_now();
  j->runs[j->nruns].first_layer = j->nlayers;
  j->nruns++;
  SQ_CHECK(sq_jn_publish(j));
  return SQ_OK;
}

int sq_journal_next_layer(const sq_journal *j) { return j->nlayers; }

/* Resolve a listed path against the journal directory (caller frees). */
static char *sq_jn_resolve(const sq_journal *j, const char *p) {
  return p[0] == '/' ? strdup(p) : sq_fs_join(j->dir, p);
}

sq_status sq_journal_commit_layer(sq_journal *j, int layer, const sq_journal_file *files, int nfiles) {
  if (layer != j->nlayers || layer >= j->total_layers)
    return sq_error_set(SQ_ERR_INTERNAL, "%s: committing layer %d, but the next layer is %d of %d",
                        j->dir, layer, j->nlayers, j->total_layers);
  if (nfiles < 0) return sq_error_set(SQ_ERR_INTERNAL, "%s: layer %d: negative file count", j->dir, layer);
  sq_journal_layer *grown = (sq_journal_layer *)realloc(j->layers, (size_t)(layer + 1) * sizeof *grown);
  if (!grown) return sq_error_set(SQ_ERR_NOMEM, "out of memory");
  j->layers = grown;
  sq_journal_layer *L = &j->layers[layer];
  memset(L, 0, sizeof *L);
  L->layer = layer;
  L->files = (sq_journal_file *)calloc(nfiles ? (size_t)nfiles : 1, sizeof *L->files);
  if (!L->files) return sq_error_set(SQ_ERR_NOMEM, "out of memory");
  sq_status st = SQ_OK;
  for (int f = 0; f < nfiles && st == SQ_OK; ++f) {
    sq_journal_file *dst = &L->files[f];
    if (!files[f].path || !files[f].path[0]) {
      st = sq_error_set(SQ_ERR_INTERNAL, "%s: layer %d: file %d has no path", j->dir, layer, f);
      break;
    }
    if (!(dst->path = strdup(files[f].path))) {
      st = sq_error_set(SQ_ERR_NOMEM, "out of memory");
      break;
    }
    L->nfiles = f + 1;
    dst->bytes = files[f].bytes;
    memcpy(dst->checksum, files[f].checksum, sizeof dst->checksum);
    if (!dst->checksum[0]) {
      char *full = sq_jn_resolve(j, dst->path);
      st = full ? sq_file_checksum(full, dst->checksum, &dst->bytes) : sq_error_set(SQ_ERR_NOMEM, "out of memory");
      free(full);
    } else if (!sq_jn_is_hex(dst->checksum)) {
      st = sq_error_set(SQ_ERR_INTERNAL, "%s: layer %d: checksum of %s is not 16 hex digits", j->dir, layer, dst->path);
    }
  }
  if (st == SQ_OK) {
    L->time = sq_jn_now();
    j->nlayers = layer + 1;
    st = sq_jn_publish(j);
    if (st != SQ_OK) j->nlayers = layer; /* not published: forget it (freed below) */
  }
  if (j->nlayers == layer) {
    for (int f = 0; f < L->nfiles; ++f) free(L->files[f].path);
    free(L->files);
    memset(L, 0, sizeof *L);
  }
  return st;
}

sq_status sq_journal_verify_files(const sq_journal *j, int *bad_layer) {
  if (bad_layer) *bad_layer = -1;
  for (int l = 0; l < j->nlayers; ++l) {
    for (int f = 0; f < j->layers[l].nfiles; ++f) {
      const sq_journal_file *F = &j->layers[l].files[f];
      char *full = sq_jn_resolve(j, F->path);
      if (!full) return sq_error_set(SQ_ERR_NOMEM, "out of memory");
      struct stat sb;
      char hex[SQ_HASH_HEX_LEN + 1] = "";
      sq_status st = SQ_OK;
      if (stat(full, &sb) != 0)
        st = sq_error_set(SQ_ERR_FORMAT, "%s: listed in the journal for layer %d but missing (%s)", full, l,
                          strerror(errno));
      else if ((uint64_t)sb.st_size != F->bytes)
        st = sq_error_set(SQ_ERR_FORMAT, "%s: layer %d file has %llu bytes, the journal recorded %llu", full, l,
                          (unsigned long long)sb.st_size, (unsigned long long)F->bytes);
      else if ((st = sq_file_checksum(full, hex, NULL)) == SQ_OK && strcmp(hex, F->checksum) != 0)
        st = sq_error_set(SQ_ERR_FORMAT, "%s: layer %d file checksum is %s, the journal recorded %s", full, l, hex,
                          F->checksum);
      free(full);
      if (st != SQ_OK) {
        if (bad_layer) *bad_layer = l;
        return st;
      }
    }
  }
  return SQ_OK;
}

sq_status sq_journal_fall_back(sq_journal *j) {
  if (j->nlayers == 0)
    return sq_error_set(SQ_ERR_ARG, "%s: no committed layer to fall back from -- hint: start the job over", j->dir);
  sq_journal_layer *L = &j->layers[j->nlayers - 1];
  j->nlayers--;
  sq_status st = sq_jn_publish(j);
  if (st != SQ_OK) {
    j->nlayers++; /* still the in-memory state; sq_jn_free releases it */
    sq_error_trace(__FILE__, __LINE__, "sq_jn_publish(j)");
    return st;
  }
  sq_log_warn("%s: fell back one generation: layer %d will be redone", j->dir, L->layer);
  for (int f = 0; f < L->nfiles; ++f) free(L->files[f].path);
  free(L->files);
  memset(L, 0, sizeof *L);
  /* Runs that began after the dropped layer are gone from the file; match it. */
  while (j->nruns > 1 && j->runs[j->nruns - 1].first_layer > j->nlayers) j->nruns--;
  return SQ_OK;
}

void sq_journal_close(sq_journal *j) { sq_jn_free(j); }
