/* Checkpoint-restart steps of `shardq quantize` (quantize_ckpt.h). */
#include "coordinator/quantize_ckpt.h"

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/fsio.h"
#include "common/log.h"
#include "coordinator/quantize_output.h"
#include "worker/state.h"

void sq_qckpt_init(sq_qckpt *k, const char *dir, int want_resume, int rank, int ranks) {
  memset(k, 0, sizeof *k);
  k->dir = dir;
  k->want_resume = want_resume;
  k->rank = rank;
  k->ranks = ranks;
  const char *fp = getenv("SHARDQ_FAILPOINT"), *from = getenv("SHARDQ_FAILPOINT_LAYER");
  const char *sl = getenv("SHARDQ_TEST_LAYER_SLEEP");
  k->failpoint = fp ? strdup(fp) : NULL;
  k->failpoint_from = from && from[0] ? atoi(from) : -1;
  k->sleep_s = sl && sl[0] ? atof(sl) : 0.0;
  if (k->failpoint_from > 0) unsetenv("SHARDQ_FAILPOINT"); /* armed at that layer */
}

void sq_qckpt_free(sq_qckpt *k) {
  sq_journal_close(k->journal);
  free(k->out_abs);
  free(k->failpoint);
  memset(k, 0, sizeof *k);
}

sq_status sq_qckpt_decide(sq_qckpt *k, const sq_resume_inputs *in, int total_layers,
                          const char *out_dir, int force) {
  if (!k->dir) return sq_qout_prepare(in->model_dir, out_dir, force);
  char *jp = sq_fs_join(k->dir, SQ_JOURNAL_FILE), *pp = sq_fs_join(k->dir, SQ_JOURNAL_PREV_FILE);
  if (!jp || !pp) {
    free(jp);
    free(pp);
    return sq_error_set(SQ_ERR_NOMEM, "out of memory");
  }
  int have = access(jp, F_OK) == 0 || access(pp, F_OK) == 0;
  free(jp);
  free(pp);
  sq_journal_fingerprint fp;
  SQ_CHECK(sq_resume_fingerprint(in, &fp));
  /* A fresh job must not write into someone's output; a resumed one
   * continues its own (checked by the journal's checksums). */
  if (!have) SQ_CHECK(sq_qout_prepare(in->model_dir, out_dir, force));
  sq_resume r;
  SQ_CHECK(sq_resume_open(k->dir, k->want_resume, &fp, in, total_layers, &r));
  if (have) {
    sq_status st = sq_qout_prepare(in->model_dir, out_dir, 1);
    if (st != SQ_OK) {
      sq_journal_close(r.journal);
      return st;
    }
  }
  k->journal = r.journal;
  k->first_layer = r.first_layer;
  k->fell_back = r.fell_back;
  if (r.resumed)
    sq_log_info("resuming from %s at layer %d of %d%s", k->dir, r.first_layer, total_layers,
                r.fell_back ? " (fell back one generation)" : "");
  return SQ_OK;
}

/* Delete out_dir/.<part>.tmp.* for every part (the safetensors writer's
 * temporary names). */
static sq_status sq_qckpt_clean_parts(const char *out_dir, const char *const *parts, int nparts) {
  DIR *d = opendir(out_dir);
  if (!d) return sq_error_errno(out_dir, "cannot list --out");
  sq_status st = SQ_OK;
  struct dirent *e;
  while (st == SQ_OK && (e = readdir(d)) != NULL) {
    for (int i = 0; i < nparts; i++) {
      if (!parts[i] || e->d_name[0] != '.') continue;
      size_t n = strlen(parts[i]);
      if (strncmp(e->d_name + 1, parts[i], n) != 0 || strncmp(e->d_name + 1 + n, ".tmp.", 5) != 0)
        continue;
      char *p = sq_fs_join(out_dir, e->d_name);
      if (!p)
        st = sq_error_set(SQ_ERR_NOMEM, "out of memory");
      else if (unlink(p) != 0)
        st = sq_error_errno(p, "cannot delete a stale temporary file");
      free(p);
      break;
    }
  }
  closedir(d);
  return st;
}

sq_status sq_qckpt_start(sq_qckpt *k, const char *out_dir, const char *const *parts, int nparts) {
  if (!k->dir) return SQ_OK;
  char buf[PATH_MAX];
  if (!realpath(out_dir, buf)) return sq_error_errno(out_dir, "resolve --out");
  k->out_abs = strdup(buf);
  if (!k->out_abs) return sq_error_set(SQ_ERR_NOMEM, "out of memory");
  /* Left by a writer that was killed: not listed anywhere. */
  SQ_CHECK(sq_qckpt_clean_parts(out_dir, parts, nparts));
  return sq_state_prune(k->dir, k->rank, 0);
}

sq_status sq_qckpt_load_state(sq_qckpt *k, int64_t s0, sq_acts *acts) {
  int F = k->first_layer;
  sq_journal *j = k->journal, *mine = NULL;
  if (!j) { /* ranks != 0: rank 0 has verified and published the journal */
    SQ_CHECK(sq_journal_open(k->dir, &mine));
    j = mine;
  }
  char name[64];
  sq_state_file_name(k->rank, F, name, sizeof name);
  const char *hex = NULL;
  if (F >= 1 && F <= j->nlayers) {
    const sq_journal_layer *L = &j->layers[F - 1];
    for (int f = 0; f < L->nfiles; f++)
      if (!strcmp(L->files[f].path, name)) hex = L->files[f].checksum;
  }
  sq_status st = SQ_OK;
  if (!hex)
    st = sq_error_set(SQ_ERR_FORMAT,
                      "%s/%s: layer %d does not list %s -- hint: the journal was written by a job "
                      "with another rank count or is damaged; start over with an empty "
                      "--checkpoint-dir",
                      k->dir, SQ_JOURNAL_FILE, F - 1, name);
  sq_state_desc d = {.layer = F,
                     .rank = k->rank,
                     .sample_start = s0,
                     .n = acts->n,
                     .T = acts->T,
                     .hidden = acts->d};
  if (st == SQ_OK) st = sq_state_read(k->dir, &d, sq_file_checksum, hex, acts);
  sq_journal_close(mine);
  return st;
}

/* Append "path\tbytes\tchecksum\n" to *buf (size *len, capacity *cap). */
static sq_status sq_qckpt_append(char **buf, size_t *len, size_t *cap, const char *path,
                                 uint64_t bytes, const char *hex) {
  size_t need = strlen(path) + 64;
  if (*len + need >= *cap) {
    size_t nc = (*cap + need) * 2;
    char *g = realloc(*buf, nc);
    if (!g) return sq_error_set(SQ_ERR_NOMEM, "out of memory");
    *buf = g;
    *cap = nc;
  }
  *len += (size_t)snprintf(*buf + *len, *cap - *len, "%s\t%llu\t%s\n", path,
                           (unsigned long long)bytes, hex);
  return SQ_OK;
}

sq_status sq_qckpt_layer_files(sq_qckpt *k, int l, int total, const sq_acts *acts, int64_t s0,
                               const char *const *parts, int nparts, char **list, size_t *len) {
  *list = NULL;
  *len = 0;
  size_t cap = 0;
  sq_status st = SQ_OK;
  char hex[SQ_HASH_HEX_LEN + 1];
  uint64_t bytes = 0;
  for (int i = 0; i < nparts && st == SQ_OK; i++) {
    if (!parts[i]) continue;
    char *p = sq_fs_join(k->out_abs, parts[i]);
    st = p ? sq_file_checksum(p, hex, &bytes) : sq_error_set(SQ_ERR_NOMEM, "out of memory");
    if (st == SQ_OK) st = sq_qckpt_append(list, len, &cap, p, bytes, hex);
    free(p);
  }
  if (st == SQ_OK && l + 1 < total) {
    sq_state_desc d = {.layer = l + 1,
                       .rank = k->rank,
                       .sample_start = s0,
                       .n = acts->n,
                       .T = acts->T,
                       .hidden = acts->d};
    char name[64];
    sq_state_file_name(k->rank, l + 1, name, sizeof name);
    st = sq_state_write(k->dir, &d, acts, sq_file_checksum, hex, &bytes);
    if (st == SQ_OK) st = sq_qckpt_append(list, len, &cap, name, bytes, hex);
  }
  if (st == SQ_OK && !*list) { /* nothing to list: an empty, valid text */
    *list = calloc(1, 1);
    if (!*list) st = sq_error_set(SQ_ERR_NOMEM, "out of memory");
  }
  if (st != SQ_OK) {
    free(*list);
    *list = NULL;
    *len = 0;
  }
  return st;
}

sq_status sq_qckpt_commit(sq_qckpt *k, int l, const char *all, size_t len) {
  int n = 0;
  for (size_t i = 0; i < len; i++) n += all[i] == '\n';
  sq_journal_file *files = calloc((size_t)n + 1, sizeof *files);
  char *text = malloc(len + 1);
  if (!files || !text) {
    free(files);
    free(text);
    return sq_error_set(SQ_ERR_NOMEM, "out of memory");
  }
  memcpy(text, all, len);
  text[len] = '\0';
  sq_status st = SQ_OK;
  int k2 = 0;
  char *save = NULL;
  for (char *line = strtok_r(text, "\n", &save); line && st == SQ_OK;
       line = strtok_r(NULL, "\n", &save)) {
    char *t1 = strchr(line, '\t'), *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
    if (!t1 || !t2 || strlen(t2 + 1) != SQ_HASH_HEX_LEN) {
      st = sq_error_set(SQ_ERR_INTERNAL, "layer %d: malformed file line '%s' from a rank", l, line);
      break;
    }
    *t1 = *t2 = '\0';
    files[k2].path = line;
    files[k2].bytes = strtoull(t1 + 1, NULL, 10);
    memcpy(files[k2].checksum, t2 + 1, SQ_HASH_HEX_LEN + 1);
    k2++;
  }
  if (st == SQ_OK) st = sq_journal_commit_layer(k->journal, l, files, k2);
  free(files);
  free(text);
  return st;
}

sq_status sq_qckpt_prune(sq_qckpt *k, int l) {
  return sq_state_prune(k->dir, k->rank, l);
}

void sq_qckpt_gate_failpoints(sq_qckpt *k, int l) {
  if (k->failpoint_from < 0 || !k->failpoint) return;
  if (l < k->failpoint_from)
    unsetenv("SHARDQ_FAILPOINT");
  else
    setenv("SHARDQ_FAILPOINT", k->failpoint, 1);
}

void sq_qckpt_test_pause(const sq_qckpt *k) {
  if (k->sleep_s <= 0) return;
  struct timespec ts = {(time_t)k->sleep_s,
                        (long)((k->sleep_s - (double)(time_t)k->sleep_s) * 1e9)};
  while (nanosleep(&ts, &ts) != 0) {
  }
}
