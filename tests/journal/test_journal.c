/* The checkpoint-restart journal: create/commit/reopen, fingerprint changes
 * named by field, damaged journal.json (truncated, bad JSON, a flipped digit)
 * rejected with a clear error and journal.prev.json used instead, a changed or
 * missing listed file detected and named, falling back one generation, and a
 * crash before the rename (a torn temp file) leaving the old journal valid.
 * References: published FNV-1a 64 test vectors, file contents the test wrote,
 * and journal.json read back with jansson directly. Also runs `shardq status`. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/fsio.h"
#include "coordinator/journal.h"
#include "test_util.h"

static char *dir;

static char *path_in(const char *name) { return sq_fs_join(dir, name); }

static void write_text(const char *name, const char *text) {
  char *p = path_in(name);
  FILE *f = fopen(p, "wb");
  SQ_EXPECT_MSG(f != NULL, "cannot write %s", p);
  if (f) {
    fputs(text, f);
    fclose(f);
  }
  free(p);
}

static char *read_text(const char *name) {
  char *p = path_in(name), *text = NULL;
  size_t len;
  if (sq_fs_read_small_file(p, 1 << 24, &text, &len) != SQ_OK) text = NULL;
  free(p);
  return text;
}

static void fingerprint(sq_journal_fingerprint *fp) {
  memset(fp, 0, sizeof *fp);
  snprintf(fp->shardq_version, sizeof fp->shardq_version, "0.1.0");
  sq_hash_hex(sq_hash_fnv1a64(SQ_FNV1A64_INIT, "ckpt", 4), fp->checkpoint);
  sq_hash_hex(sq_hash_fnv1a64(SQ_FNV1A64_INIT, "recipe", 6), fp->recipe);
  sq_hash_hex(sq_hash_fnv1a64(SQ_FNV1A64_INIT, "calib", 5), fp->calibration);
  sq_hash_hex(sq_hash_fnv1a64(SQ_FNV1A64_INIT, "opts", 4), fp->options);
  fp->ranks = 4;
}

static int contains(const char *hay, const char *needle) { return strstr(hay, needle) != NULL; }

static void test_hash_vectors(void) {
  /* Published FNV-1a 64 vectors (Fowler/Noll/Vo test suite). */
  SQ_EXPECT_EQ_INT(sq_hash_fnv1a64(SQ_FNV1A64_INIT, "", 0), 0xcbf29ce484222325ULL);
  SQ_EXPECT_EQ_INT(sq_hash_fnv1a64(SQ_FNV1A64_INIT, "a", 1), 0xaf63dc4c8601ec8cULL);
  SQ_EXPECT_EQ_INT(sq_hash_fnv1a64(SQ_FNV1A64_INIT, "foobar", 6), 0x85944171f73967e8ULL);
  /* Streaming equals one shot. */
  SQ_EXPECT_EQ_INT(sq_hash_fnv1a64(sq_hash_fnv1a64(SQ_FNV1A64_INIT, "foo", 3), "bar", 3), 0x85944171f73967e8ULL);
  write_text("foobar.bin", "foobar");
  char hex[17];
  uint64_t bytes = 0;
  char *p = path_in("foobar.bin");
  SQ_EXPECT(sq_file_checksum(p, hex, &bytes) == SQ_OK);
  SQ_EXPECT_MSG(strcmp(hex, "85944171f73967e8") == 0, "checksum of foobar: %s", hex);
  SQ_EXPECT_EQ_INT(bytes, 6);
  free(p);
}

static void test_create_commit_reopen(void) {
  sq_journal_fingerprint fp;
  fingerprint(&fp);
  sq_journal *j = NULL;
  SQ_EXPECT(sq_journal_create(dir, &fp, 5, &j) == SQ_OK);
  if (!j) return;
  SQ_EXPECT_EQ_INT(sq_journal_next_layer(j), 0);
  sq_journal *j2 = NULL;
  SQ_EXPECT(sq_journal_create(dir, &fp, 5, &j2) == SQ_ERR_ARG); /* never over an existing job */
  SQ_EXPECT(contains(sq_error_message(), "already exists"));
  sq_error_clear();

  write_text("l0.bin", "foobar");
  write_text("l1a.bin", "layer one, rank a");
  write_text("l1b.bin", "layer one, rank b");
  sq_journal_file f0 = {"l0.bin", 0, ""};
  SQ_EXPECT(sq_journal_commit_layer(j, 0, &f0, 1) == SQ_OK);
  SQ_EXPECT(sq_journal_commit_layer(j, 2, &f0, 1) != SQ_OK); /* out of order */
  sq_error_clear();
  sq_journal_file f1[2] = {{"l1a.bin", 0, ""}, {"l1b.bin", 0, ""}};
  SQ_EXPECT(sq_journal_begin_run(j) == SQ_OK);
  SQ_EXPECT(sq_journal_commit_layer(j, 1, f1, 2) == SQ_OK);
  SQ_EXPECT_EQ_INT(sq_journal_next_layer(j), 2);
  sq_journal_close(j);

  SQ_EXPECT(sq_journal_open(dir, &j) == SQ_OK);
  if (!j) return;
  SQ_EXPECT_EQ_INT(j->nlayers, 2);
  SQ_EXPECT_EQ_INT(j->total_layers, 5);
  SQ_EXPECT_EQ_INT(j->nruns, 2);
  SQ_EXPECT_EQ_INT(j->from_prev, 0);
  SQ_EXPECT(j->layers[0].nfiles == 1 && strcmp(j->layers[0].files[0].path, "l0.bin") == 0);
  SQ_EXPECT(strcmp(j->layers[0].files[0].checksum, "85944171f73967e8") == 0);
  SQ_EXPECT_EQ_INT(j->layers[0].files[0].bytes, 6);
  SQ_EXPECT(j->layers[1].nfiles == 2 && j->layers[1].files[1].bytes == strlen("layer one, rank b"));
  SQ_EXPECT(j->created <= j->layers[0].time && j->layers[0].time <= j->layers[1].time);
  SQ_EXPECT(sq_journal_check_fingerprint(j, &fp) == SQ_OK);
  int bad = 7;
  SQ_EXPECT(sq_journal_verify_files(j, &bad) == SQ_OK);
  SQ_EXPECT_EQ_INT(bad, -1);

  /* Read journal.json with jansson directly: the documented layout. */
  char *p = path_in(SQ_JOURNAL_FILE);
  json_error_t e;
  json_t *root = json_load_file(p, 0, &e);
  SQ_EXPECT(root != NULL);
  SQ_EXPECT_EQ_INT(json_integer_value(json_object_get(root, "version")), 1);
  SQ_EXPECT_EQ_INT(json_array_size(json_object_get(root, "layers")), 2);
  SQ_EXPECT(strcmp(json_string_value(json_object_get(json_object_get(root, "fingerprint"), "calibration")),
                   fp.calibration) == 0);
  json_decref(root);
  free(p);
  /* journal.prev.json is the previous generation: one layer. */
  p = path_in(SQ_JOURNAL_PREV_FILE);
  root = json_load_file(p, 0, &e);
  SQ_EXPECT_EQ_INT(json_array_size(json_object_get(root, "layers")), 1);
  json_decref(root);
  free(p);
  sq_journal_close(j);
}

static void test_fingerprint_changes(void) {
  sq_journal_fingerprint fp, now;
  fingerprint(&fp);
  sq_journal *j = NULL;
  SQ_EXPECT(sq_journal_open(dir, &j) == SQ_OK);
  if (!j) return;
  now = fp;
  sq_hash_hex(sq_hash_fnv1a64(SQ_FNV1A64_INIT, "other calib", 11), now.calibration);
  SQ_EXPECT(sq_journal_check_fingerprint(j, &now) == SQ_ERR_ARG);
  char want[128];
  snprintf(want, sizeof want, "calibration file changed: journal has %s, now %s", fp.calibration, now.calibration);
  SQ_EXPECT_MSG(contains(sq_error_message(), want), "message: %s", sq_error_message());
  SQ_EXPECT(!contains(sq_error_message(), "recipe"));
  sq_error_clear();
  now = fp;
  now.ranks = 8;
  snprintf(now.shardq_version, sizeof now.shardq_version, "0.2.0");
  SQ_EXPECT(sq_journal_check_fingerprint(j, &now) == SQ_ERR_ARG);
  SQ_EXPECT_MSG(contains(sq_error_message(), "rank count changed: journal has 4, now 8") &&
                    contains(sq_error_message(), "shardq version changed: journal has 0.1.0, now 0.2.0"),
                "message: %s", sq_error_message());
  sq_error_clear();
  sq_journal_close(j);
}

/* Replace journal.json by text; open must fail naming the file and why, and
 * open_or_prev must fall back to the previous generation (1 layer). */
static void expect_damaged(const char *text, const char *why, const char *what) {
  char *good = read_text(SQ_JOURNAL_FILE);
  write_text(SQ_JOURNAL_FILE, text);
  sq_journal *j = NULL;
  SQ_EXPECT_MSG(sq_journal_open(dir, &j) == SQ_ERR_FORMAT, "%s: not rejected", what);
  SQ_EXPECT_MSG(contains(sq_error_message(), "journal.json") && contains(sq_error_message(), why),
                "%s: message: %s", what, sq_error_message());
  sq_error_clear();
  sq_journal_close(j);
  j = NULL;
  SQ_EXPECT_MSG(sq_journal_open_or_prev(dir, &j) == SQ_OK, "%s: no fallback: %s", what, sq_error_message());
  sq_error_clear();
  if (j) {
    SQ_EXPECT_EQ_INT(j->from_prev, 1);
    SQ_EXPECT_EQ_INT(j->nlayers, 1);
  }
  sq_journal_close(j);
  if (good) write_text(SQ_JOURNAL_FILE, good);
  free(good);
}

static void test_damaged_journal(void) {
  char *good = read_text(SQ_JOURNAL_FILE);
  SQ_EXPECT(good != NULL);
  if (!good) return;
  size_t len = strlen(good);
  char *half = strndup(good, len / 2);
  expect_damaged(half, "not valid JSON", "truncated");
  expect_damaged("", "not valid JSON", "empty");
  expect_damaged("{\"format\": \"shardq-journal\", ]", "not valid JSON", "bad JSON");
  expect_damaged("[1, 2]", "not a JSON object", "array");
  /* Valid JSON with one digit changed: the journal checksum catches it. */
  char *flipped = strdup(good), *tl = strstr(flipped, "\"total_layers\": 5");
  SQ_EXPECT(tl != NULL);
  if (tl) tl[strlen("\"total_layers\": ")] = '6';
  expect_damaged(flipped, "journal_checksum", "flipped digit");
  free(flipped);
  free(half);
  /* Both generations damaged: one error naming both. */
  char *prev = read_text(SQ_JOURNAL_PREV_FILE);
  write_text(SQ_JOURNAL_FILE, "{");
  write_text(SQ_JOURNAL_PREV_FILE, "{");
  sq_journal *j = NULL;
  SQ_EXPECT(sq_journal_open_or_prev(dir, &j) == SQ_ERR_FORMAT);
  SQ_EXPECT_MSG(contains(sq_error_message(), "journal.json") && contains(sq_error_message(), "journal.prev.json"),
                "message: %s", sq_error_message());
  sq_error_clear();
  write_text(SQ_JOURNAL_FILE, good);
  if (prev) write_text(SQ_JOURNAL_PREV_FILE, prev);
  free(prev);
  free(good);
  /* No journal at all. */
  SQ_EXPECT(sq_journal_open("/nonexistent/shardq-ckpt", &j) == SQ_ERR_IO);
  SQ_EXPECT(contains(sq_error_message(), "no journal"));
  sq_error_clear();
}

static void test_file_checks_and_fall_back(void) {
  sq_journal *j = NULL;
  SQ_EXPECT(sq_journal_open(dir, &j) == SQ_OK);
  if (!j) return;
  write_text("l1b.bin", "layer one, rank B"); /* same size, one byte changed */
  int bad = -1;
  SQ_EXPECT(sq_journal_verify_files(j, &bad) == SQ_ERR_FORMAT);
  SQ_EXPECT_EQ_INT(bad, 1);
  SQ_EXPECT_MSG(contains(sq_error_message(), "l1b.bin") && contains(sq_error_message(), "checksum"), "message: %s",
                sq_error_message());
  sq_error_clear();
  write_text("l1b.bin", "layer one, rank b and more");
  SQ_EXPECT(sq_journal_verify_files(j, &bad) == SQ_ERR_FORMAT);
  SQ_EXPECT_MSG(contains(sq_error_message(), "l1b.bin") && contains(sq_error_message(), "bytes"), "message: %s",
                sq_error_message());
  sq_error_clear();
  /* Fall back one generation: layer 1 is forgotten, layer 0 still verifies. */
  SQ_EXPECT(sq_journal_fall_back(j) == SQ_OK);
  SQ_EXPECT_EQ_INT(sq_journal_next_layer(j), 1);
  sq_journal_close(j);
  j = NULL;
  SQ_EXPECT(sq_journal_open(dir, &j) == SQ_OK);
  if (!j) return;
  SQ_EXPECT_EQ_INT(j->nlayers, 1);
  SQ_EXPECT(sq_journal_verify_files(j, &bad) == SQ_OK);
  /* Redo layer 1 and finish the job for the status test. */
  write_text("l1b.bin", "layer one, rank b");
  sq_journal_file f1[2] = {{"l1a.bin", 0, ""}, {"l1b.bin", 0, ""}};
  SQ_EXPECT(sq_journal_commit_layer(j, 1, f1, 2) == SQ_OK);
  char *p = path_in("l0.bin");
  unlink(p);
  SQ_EXPECT(sq_journal_verify_files(j, &bad) == SQ_ERR_FORMAT);
  SQ_EXPECT_EQ_INT(bad, 0);
  SQ_EXPECT_MSG(contains(sq_error_message(), "l0.bin") && contains(sq_error_message(), "missing"), "message: %s",
                sq_error_message());
  sq_error_clear();
  write_text("l0.bin", "foobar");
  free(p);
  sq_journal_close(j);
}

/* A crash after the temp file was written but before the rename leaves a
 * stray (maybe torn) temp file: the journal still opens as before, and the
 * next commit publishes normally. */
static void test_crash_before_rename(void) {
  char *before = read_text(SQ_JOURNAL_FILE);
  char *final_path = path_in(SQ_JOURNAL_FILE);
  char *tmp = sq_fs_temp_name(final_path);
  FILE *f = fopen(tmp, "wb");
  SQ_EXPECT(f != NULL);
  if (f) {
    fwrite(before, 1, before ? strlen(before) / 3 : 0, f);
    fclose(f);
  }
  sq_journal *j = NULL;
  SQ_EXPECT(sq_journal_open(dir, &j) == SQ_OK);
  if (j) {
    SQ_EXPECT_EQ_INT(j->nlayers, 2);
    char *after = read_text(SQ_JOURNAL_FILE);
    SQ_EXPECT(after && before && strcmp(after, before) == 0);
    free(after);
    for (int l = 2; l < 5; ++l) {
      sq_journal_file none[1];
      SQ_EXPECT(sq_journal_commit_layer(j, l, none, 0) == SQ_OK);
    }
    sq_journal_close(j);
  }
  SQ_EXPECT(sq_journal_open(dir, &j) == SQ_OK);
  if (j) SQ_EXPECT_EQ_INT(sq_journal_next_layer(j), 5);
  sq_journal_close(j);
  unlink(tmp);
  free(tmp);
  free(final_path);
  free(before);
}

/* `shardq status --json` on the finished journal: counts, finished, ETA 0 and
 * a plausible average (all commits here took milliseconds); a directory with
 * no journal is exit 1 saying so. */
static void test_status_cli(void) {
  const char *bin = getenv("SHARDQ_BIN");
  if (!bin) {
    fprintf(stderr, "SHARDQ_BIN not set: status CLI checks skipped\n");
    return;
  }
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "'%s' status '%s' --json", bin, dir);
  FILE *p = popen(cmd, "r");
  char buf[8192];
  size_t n = p ? fread(buf, 1, sizeof buf - 1, p) : 0;
  buf[n] = '\0';
  int rc = p ? pclose(p) : -1;
  SQ_EXPECT_EQ_INT(rc, 0);
  json_error_t e;
  json_t *o = json_loads(buf, 0, &e);
  SQ_EXPECT_MSG(o != NULL, "status --json printed: %s", buf);
  if (o) {
    SQ_EXPECT_EQ_INT(json_integer_value(json_object_get(o, "layers_done")), 5);
    SQ_EXPECT_EQ_INT(json_integer_value(json_object_get(o, "total_layers")), 5);
    SQ_EXPECT(json_is_true(json_object_get(o, "finished")));
    SQ_EXPECT(strcmp(json_string_value(json_object_get(o, "state")), "finished") == 0);
    SQ_EXPECT_NEAR(json_number_value(json_object_get(o, "eta_seconds")), 0, 0, 0);
    double avg = json_number_value(json_object_get(o, "avg_seconds_per_layer"));
    SQ_EXPECT_MSG(avg >= 0 && avg < 5, "avg %g s per layer for instant commits", avg);
    json_decref(o);
  }
  snprintf(cmd, sizeof cmd, "'%s' status /nonexistent/shardq-ckpt 2>&1", bin);
  p = popen(cmd, "r");
  n = p ? fread(buf, 1, sizeof buf - 1, p) : 0;
  buf[n] = '\0';
  rc = p ? pclose(p) : -1;
  SQ_EXPECT(WIFEXITED(rc) && WEXITSTATUS(rc) == 1);
  SQ_EXPECT_MSG(contains(buf, "no journal"), "status output: %s", buf);
}

int main(void) {
  dir = sq_test_tmpdir("journal");
  test_hash_vectors();
  test_create_commit_reopen();
  test_fingerprint_changes();
  test_damaged_journal();
  test_file_checks_and_fall_back();
  test_crash_before_rename();
  test_status_cli();
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (sq_test_failures == 0 && system(cmd) != 0) { /* best effort */
  }
  free(dir);
  return sq_test_result("test_journal");
}
