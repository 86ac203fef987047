/* Fingerprint of a quantize run's inputs and the resume decision (resume.h). */
#include "coordinator/resume.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fsio.h"
#include "common/log.h"
#include "sharding/checkpoint.h"
#include "worker/state.h"

_Static_assert(SQ_STATE_HEX_LEN == SQ_HASH_HEX_LEN, "state and journal checksums differ in width");

#define SQ_RESUME_MAX_HEADER (100ull << 20) /* safetensors' own header limit */

static const char *sq_base_name(const char *p) {
  const char *s = strrchr(p, '/');
  return s ? s + 1 : p;
}

int sq_resume_is_state_file(const char *path) {
  return strncmp(sq_base_name(path), "state-", 6) == 0;
}

/* Hash of the checkpoint's shard names, sizes and header bytes, then config.json. */
static sq_status sq_resume_hash_checkpoint(const char *dir, uint64_t *out) {
  sq_ckpt *c = NULL;
  SQ_CHECK(sq_ckpt_open(dir, &c));
  uint64_t h = SQ_FNV1A64_INIT;
  sq_status st = SQ_OK;
  char *buf = NULL;
  for (size_t i = 0; st == SQ_OK && i < sq_ckpt_shard_count(c); i++) {
    const sq_st_file *f = sq_ckpt_shard(c, i);
    const char *path = sq_st_path(f);
    uint64_t size = sq_st_file_bytes(f), hdr = sq_st_data_start(f);
    unsigned char le[8];
    for (int b = 0; b < 8; b++) le[b] = (unsigned char)(size >> (8 * b));
    const char *name = sq_base_name(path);
    h = sq_hash_fnv1a64(h, name, strlen(name) + 1);
    h = sq_hash_fnv1a64(h, le, sizeof le);
    if (hdr > SQ_RESUME_MAX_HEADER) {
      st = sq_error_set(SQ_ERR_FORMAT, "%s: header of %llu bytes is too large", path,
                        (unsigned long long)hdr);
      break;
    }
    char *grown = realloc(buf, (size_t)hdr + 1);
    if (!grown) {
      st = sq_error_set(SQ_ERR_NOMEM, "%s: out of memory hashing the header", path);
      break;
    }
    buf = grown;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      st = sq_error_errno(path, "cannot open to fingerprint");
      break;
    }
    st = sq_fs_pread_full(fd, buf, (size_t)hdr, 0, path);
    close(fd);
    if (st == SQ_OK) h = sq_hash_fnv1a64(h, buf, (size_t)hdr);
  }
  free(buf);
  sq_ckpt_close(c);
  SQ_CHECK(st);
  char *cfg = sq_fs_join(dir, "config.json");
  if (!cfg) return sq_error_set(SQ_ERR_NOMEM, "out of memory");
  char *text = NULL;
  size_t len = 0;
  if (access(cfg, F_OK) == 0) st = sq_fs_read_small_file(cfg, 64u << 20, &text, &len);
  free(cfg);
  SQ_CHECK(st);
  h = sq_hash_fnv1a64(h, "config.json", 12);
  if (text) h = sq_hash_fnv1a64(h, text, len);
  free(text);
  *out = h;
  return SQ_OK;
}

sq_status sq_resume_fingerprint(const sq_resume_inputs *in, sq_journal_fingerprint *fp) {
  memset(fp, 0, sizeof *fp);
  snprintf(fp->shardq_version, sizeof fp->shardq_version, "%s", SHARDQ_VERSION);
  uint64_t h = 0;
  SQ_CHECK(sq_resume_hash_checkpoint(in->model_dir, &h));
  sq_hash_hex(h, fp->checkpoint);
  if (in->recipe_path) {
    SQ_CHECK(sq_file_checksum(in->recipe_path, fp->recipe, NULL));
  } else {
    const char *s = in->scheme_text ? in->scheme_text : "";
    sq_hash_hex(sq_hash_fnv1a64(SQ_FNV1A64_INIT, s, strlen(s)), fp->recipe);
  }
  SQ_CHECK(sq_file_checksum(in->calib_path, fp->calibration, NULL));
  fp->ranks = in->ranks;
  const char *o = in->options_text ? in->options_text : "";
  sq_hash_hex(sq_hash_fnv1a64(SQ_FNV1A64_INIT, o, strlen(o)), fp->options);
  return SQ_OK;
}

/* Check one listed file: exists, size, checksum. */
static sq_status sq_resume_check_file(const sq_journal *j, int layer, const sq_journal_file *f) {
  char *p = f->path[0] == '/' ? strdup(f->path) : sq_fs_join(j->dir, f->path);
  if (!p) return sq_error_set(SQ_ERR_NOMEM, "out of memory");
  sq_status st = SQ_OK;
  struct stat sb;
  char hex[SQ_HASH_HEX_LEN + 1];
  uint64_t bytes = 0;
  if (stat(p, &sb) != 0) {
    st = sq_error_set(SQ_ERR_FORMAT, "%s: listed in %s/%s for layer %d, is missing (%s)", p, j->dir,
                      SQ_JOURNAL_FILE, layer, strerror(errno));
  } else if ((uint64_t)sb.st_size != f->bytes) {
    st = sq_error_set(SQ_ERR_FORMAT,
                      "%s: %llu bytes, but the journal recorded %llu for layer %d (truncated?)", p,
                      (unsigned long long)sb.st_size, (unsigned long long)f->bytes, layer);
  } else if ((st = sq_file_checksum(p, hex, &bytes)) == SQ_OK && strcmp(hex, f->checksum) != 0) {
    st = sq_error_set(SQ_ERR_FORMAT,
                      "%s: checksum %s, but the journal recorded %s for layer %d (damaged)", p, hex,
                      f->checksum, layer);
  }
  free(p);
  return st;
}

/* Verify as if only layers [0, n) were committed. */
static sq_status sq_resume_verify_n(const sq_journal *j, int n, int *bad_layer) {
  *bad_layer = -1;
  for (int l = 0; l < n; l++) {
    const sq_journal_layer *L = &j->layers[l];
    for (int k = 0; k < L->nfiles; k++) {
      /* Older state files are deleted by design (two generations are kept). */
      if (l != n - 1 && sq_resume_is_state_file(L->files[k].path)) continue;
      sq_status st = sq_resume_check_file(j, l, &L->files[k]);
      if (st != SQ_OK) {
        *bad_layer = l;
        return st;
      }
    }
  }
  return SQ_OK;
}

sq_status sq_resume_verify(const sq_journal *j, int *bad_layer) {
  return sq_resume_verify_n(j, j->nlayers, bad_layer);
}

/* Replace the recorded message by itself + the current inputs' paths. */
static sq_status sq_resume_name_inputs(sq_status st, const sq_resume_inputs *in) {
  if (!in) return st;
  char msg[2048];
  snprintf(msg, sizeof msg, "%s", sq_error_message());
  char *hint = strstr(msg, " -- hint:");
  char tail[1024] = "";
  if (hint) {
    snprintf(tail, sizeof tail, "%s", hint);
    *hint = '\0';
  }
  sq_error_clear();
  return sq_error_set(st, "%s (inputs now: calibration file %s, model %s, %s %s)%s", msg,
                      in->calib_path ? in->calib_path : "?", in->model_dir ? in->model_dir : "?",
                      in->recipe_path ? "recipe" : "scheme",
                      in->recipe_path ? in->recipe_path : (in->scheme_text ? in->scheme_text : "?"),
                      tail);
}

static int sq_resume_exists(const char *dir, const char *name) {
  char *p = sq_fs_join(dir, name);
  int e = p && access(p, F_OK) == 0;
  free(p);
  return e;
}

sq_status sq_resume_open(const char *ckpt_dir, int want_resume, const sq_journal_fingerprint *fp,
                         const sq_resume_inputs *in, int total_layers, sq_resume *out) {
  memset(out, 0, sizeof *out);
  int have = sq_resume_exists(ckpt_dir, SQ_JOURNAL_FILE) ||
             sq_resume_exists(ckpt_dir, SQ_JOURNAL_PREV_FILE);
  if (!have) {
    SQ_CHECK(sq_fs_mkdirs(ckpt_dir));
    SQ_CHECK(sq_journal_create(ckpt_dir, fp, total_layers, &out->journal));
    return SQ_OK;
  }
  if (!want_resume)
    return sq_error_set(
        SQ_ERR_ARG,
        "%s already holds a journal -- hint: pass --resume to continue that job, or "
        "choose an empty --checkpoint-dir to start over",
        ckpt_dir);
  sq_journal *j = NULL;
  SQ_CHECK(sq_journal_open_or_prev(ckpt_dir, &j));
  sq_status st = sq_journal_check_fingerprint(j, fp);
  if (st != SQ_OK) {
    sq_journal_close(j); /* nothing was written */
    return sq_resume_name_inputs(st, in);
  }
  if (j->total_layers != total_layers) {
    int had = j->total_layers;
    sq_journal_close(j);
    return sq_error_set(SQ_ERR_ARG, "%s/%s: the journal is for %d layers, the model has %d",
                        ckpt_dir, SQ_JOURNAL_FILE, had, total_layers);
  }
  int bad = -1;
  st = sq_resume_verify(j, &bad);
  char first[1024] = "";
  int tried_back = 0;
  if (st != SQ_OK && bad == j->nlayers - 1) {
    /* Check the previous generation BEFORE publishing the fall back, so that
     * a refusal leaves the journal as it was. */
    snprintf(first, sizeof first, "%s", sq_error_message());
    sq_error_clear();
    tried_back = 1;
    st = sq_resume_verify_n(j, j->nlayers - 1, &bad);
    if (st == SQ_OK) {
      sq_log_warn("%s", first);
      st = sq_journal_fall_back(j);
      out->fell_back = st == SQ_OK;
    }
  }
  if (st != SQ_OK) {
    char msg[2560];
    if (tried_back)
      snprintf(msg, sizeof msg, "%s; after falling back one generation: %s", first,
               sq_error_message());
    else
      snprintf(msg, sizeof msg, "%s", sq_error_message());
    sq_error_clear();
    sq_journal_close(j);
    return sq_error_set(
        st,
        "cannot resume from %s: %s -- hint: only one generation back is kept; restore "
        "the file or start over with an empty --checkpoint-dir",
        ckpt_dir, msg);
  }
  st = sq_journal_begin_run(j);
  if (st != SQ_OK) {
    sq_journal_close(j);
    return st;
  }
  out->journal = j;
  out->first_layer = sq_journal_next_layer(j);
  out->resumed = 1;
  return SQ_OK;
}
