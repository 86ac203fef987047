/* Fingerprint and resume decision (coordinator/resume.h). The fingerprint of
 * a tiny checkpoint + recipe + calibration file changes in exactly the field
 * of the input that changed (each input changed in turn, against a baseline),
 * and resuming with it is refused with a message naming the field and the
 * current file, leaving every byte and name in the checkpoint dir as it was.
 * The decision: fresh dir -> new journal at layer 0; journal without --resume
 * -> refused; resume -> first uncommitted layer; damaged last state file ->
 * one generation back; damaged older output -> refused naming the file;
 * pruned older state files are not required. The hashes are checked against
 * FNV-1a computed here from the bytes the test wrote. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/fsio.h"
#include "coordinator/journal.h"
#include "coordinator/resume.h"
#include "sharding/safetensors.h"
#include "test_util.h"

static char *root;

static char *at(const char *name) {
  return sq_fs_join(root, name);
}

static void write_text(const char *name, const char *text) {
  char *p = at(name);
  FILE *f = fopen(p, "wb");
  fputs(text, f);
  fclose(f);
  free(p);
}

static int contains(const char *hay, const char *needle) {
  return strstr(hay, needle) != NULL;
}

/* model/model.safetensors with one F32 tensor named name, shape (2, cols). */
static void write_model(const char *name, int64_t cols) {
  char *d = at("model");
  sq_fs_mkdirs(d);
  char *p = sq_fs_join(d, "model.safetensors");
  sq_st_writer *w = NULL;
  int64_t shape[2] = {2, cols};
  float v[64] = {0};
  SQ_EXPECT(sq_st_writer_create(p, &w) == SQ_OK);
  SQ_EXPECT(sq_st_writer_declare(w, name, SQ_DTYPE_F32, 2, shape) == SQ_OK);
  SQ_EXPECT(sq_st_writer_write(w, name, v) == SQ_OK);
  SQ_EXPECT(sq_st_writer_commit(w) == SQ_OK);
  sq_st_writer_free(w);
  free(p);
  free(d);
}

static sq_resume_inputs inputs(void) {
  static char model[1024], recipe[1024], calib[1024];
  snprintf(model, sizeof model, "%s/model", root);
  snprintf(recipe, sizeof recipe, "%s/recipe.yaml", root);
  snprintf(calib, sizeof calib, "%s/calib.safetensors", root);
  sq_resume_inputs in = {.model_dir = model,
                         .recipe_path = recipe,
                         .scheme_text = NULL,
                         .calib_path = calib,
                         .ranks = 2,
                         .options_text = "--calib-samples 8"};
  return in;
}

static void fp_of(const sq_resume_inputs *in, sq_journal_fingerprint *fp) {
  sq_status st = sq_resume_fingerprint(in, fp);
  SQ_EXPECT_MSG(st == SQ_OK, "fingerprint: %s", sq_error_message());
}

/* Which fields differ, as a bit set: 1 version, 2 checkpoint, 4 recipe,
 * 8 calibration, 16 ranks, 32 options. */
static int diff(const sq_journal_fingerprint *a, const sq_journal_fingerprint *b) {
  return (strcmp(a->shardq_version, b->shardq_version) != 0) |
         (strcmp(a->checkpoint, b->checkpoint) != 0) << 1 |
         (strcmp(a->recipe, b->recipe) != 0) << 2 |
         (strcmp(a->calibration, b->calibration) != 0) << 3 | (a->ranks != b->ranks) << 4 |
         (strcmp(a->options, b->options) != 0) << 5;
}

/* A listing of dir with every file's bytes, to prove nothing changed. */
static char *snapshot(const char *d) {
  size_t cap = 1 << 20, len = 0;
  char *out = calloc(cap, 1);
  struct dirent **names = NULL;
  int n = scandir(d, &names, NULL, alphasort);
  for (int i = 0; i < n; i++) {
    char *p = sq_fs_join(d, names[i]->d_name), *text = NULL;
    size_t tl = 0;
    len += (size_t)snprintf(out + len, cap - len, "[%s]", names[i]->d_name);
    if (names[i]->d_type == DT_REG && sq_fs_read_small_file(p, cap / 4, &text, &tl) == SQ_OK) {
      uint64_t h = sq_hash_fnv1a64(SQ_FNV1A64_INIT, text, tl);
      len += (size_t)snprintf(out + len, cap - len, "%zu:%llx;", tl, (unsigned long long)h);
    }
    free(text);
    free(p);
    free(names[i]);
  }
  free(names);
  return out;
}

static void test_fingerprint(void) {
  write_model("w", 4);
  write_text("model/config.json", "{\"num_hidden_layers\": 3}\n");
  write_text("recipe.yaml", "quant_stage: {}\n");
  write_text("calib.safetensors", "calibration bytes v1");
  sq_resume_inputs in = inputs();
  sq_journal_fingerprint base, fp;
  fp_of(&in, &base);
  /* Reference values computed here: calibration and recipe = FNV-1a of the bytes. */
  char hex[SQ_HASH_HEX_LEN + 1];
  sq_hash_hex(sq_hash_fnv1a64(SQ_FNV1A64_INIT, "calibration bytes v1", 20), hex);
  SQ_EXPECT_MSG(!strcmp(base.calibration, hex), "calibration %s, want %s", base.calibration, hex);
  sq_hash_hex(sq_hash_fnv1a64(SQ_FNV1A64_INIT, "quant_stage: {}\n", 16), hex);
  SQ_EXPECT(!strcmp(base.recipe, hex));
  SQ_EXPECT_EQ_INT(base.ranks, 2);
  SQ_EXPECT(!strcmp(base.shardq_version, SHARDQ_VERSION));
  fp_of(&in, &fp);
  SQ_EXPECT_EQ_INT(diff(&base, &fp), 0); /* deterministic */

  write_text("calib.safetensors", "calibration bytes v2");
  fp_of(&in, &fp);
  SQ_EXPECT_EQ_INT(diff(&base, &fp), 8);
  write_text("calib.safetensors", "calibration bytes v1");

  write_text("recipe.yaml", "quant_stage: {a: 1}\n");
  fp_of(&in, &fp);
  SQ_EXPECT_EQ_INT(diff(&base, &fp), 4);
  write_text("recipe.yaml", "quant_stage: {}\n");

  write_text("model/config.json", "{\"num_hidden_layers\": 4}\n");
  fp_of(&in, &fp);
  SQ_EXPECT_EQ_INT(diff(&base, &fp), 2);
  write_text("model/config.json", "{\"num_hidden_layers\": 3}\n");

  write_model("v", 4); /* same size, another tensor name: the header differs */
  fp_of(&in, &fp);
  SQ_EXPECT_EQ_INT(diff(&base, &fp), 2);
  write_model("w", 5); /* another shape */
  fp_of(&in, &fp);
  SQ_EXPECT_EQ_INT(diff(&base, &fp), 2);
  write_model("w", 4);
  fp_of(&in, &fp);
  SQ_EXPECT_EQ_INT(diff(&base, &fp), 0);

  sq_resume_inputs in2 = in;
  in2.ranks = 3;
  fp_of(&in2, &fp);
  SQ_EXPECT_EQ_INT(diff(&base, &fp), 16);
  in2 = in;
  in2.options_text = "--calib-samples 16";
  fp_of(&in2, &fp);
  SQ_EXPECT_EQ_INT(diff(&base, &fp), 32);
  in2 = in;
  in2.recipe_path = NULL;
  in2.scheme_text = "W4A16";
  fp_of(&in2, &fp);
  SQ_EXPECT_EQ_INT(diff(&base, &fp), 4);
  sq_journal_fingerprint fp2;
  in2.scheme_text = "W8A16";
  fp_of(&in2, &fp2);
  SQ_EXPECT_EQ_INT(diff(&fp, &fp2), 4);

  /* Missing inputs are errors naming them. */
  in2 = in;
  in2.calib_path = "/nonexistent/calib.safetensors";
  sq_error_clear();
  SQ_EXPECT(sq_resume_fingerprint(&in2, &fp) != SQ_OK);
  SQ_EXPECT(contains(sq_error_message(), "/nonexistent/calib.safetensors"));
  sq_error_clear();
}

/* Refusal: each changed input is named, and the dir is untouched. */
static void test_refusal(void) {
  sq_resume_inputs in = inputs();
  sq_journal_fingerprint base, fp;
  fp_of(&in, &base);
  char *ck = at("ck-refuse");
  sq_resume r;
  SQ_EXPECT(sq_resume_open(ck, 1, &base, &in, 3, &r) == SQ_OK);
  SQ_EXPECT(r.journal && r.first_layer == 0 && !r.resumed);
  sq_journal_file f = {.path = "a.bin", .bytes = 0, .checksum = ""};
  char *a = sq_fs_join(ck, "a.bin");
  FILE *fa = fopen(a, "wb");
  fputs("layer0", fa);
  fclose(fa);
  SQ_EXPECT(sq_journal_commit_layer(r.journal, 0, &f, 1) == SQ_OK);
  sq_journal_close(r.journal);
  char *before = snapshot(ck);

  write_text("calib.safetensors", "calibration bytes CHANGED");
  fp_of(&in, &fp);
  sq_error_clear();
  SQ_EXPECT(sq_resume_open(ck, 1, &fp, &in, 3, &r) == SQ_ERR_ARG);
  SQ_EXPECT(r.journal == NULL);
  const char *m = sq_error_message();
  SQ_EXPECT_MSG(contains(m, "calibration file changed") && contains(m, in.calib_path) &&
                    !contains(m, "recipe/scheme changed"),
                "message: %s", m);
  sq_error_clear();
  write_text("calib.safetensors", "calibration bytes v1");

  sq_resume_inputs in2 = in;
  in2.ranks = 4;
  fp_of(&in2, &fp);
  SQ_EXPECT(sq_resume_open(ck, 1, &fp, &in2, 3, &r) == SQ_ERR_ARG);
  SQ_EXPECT_MSG(contains(sq_error_message(), "rank count changed: journal has 2, now 4"),
                "message: %s", sq_error_message());
  sq_error_clear();

  /* Without --resume an existing journal is refused too. */
  SQ_EXPECT(sq_resume_open(ck, 0, &base, &in, 3, &r) == SQ_ERR_ARG);
  SQ_EXPECT(contains(sq_error_message(), "--resume"));
  sq_error_clear();

  char *after = snapshot(ck);
  SQ_EXPECT_MSG(!strcmp(before, after), "the checkpoint dir changed:\n%s\n%s", before, after);
  free(before);
  free(after);

  /* Same inputs: resumes at layer 1. */
  SQ_EXPECT(sq_resume_open(ck, 1, &base, &in, 3, &r) == SQ_OK);
  SQ_EXPECT(r.resumed && r.first_layer == 1 && !r.fell_back);
  SQ_EXPECT_EQ_INT(r.journal->nruns, 2);
  sq_journal_close(r.journal);
  free(a);
  free(ck);
}

static void put(const char *ck, const char *name, const char *text) {
  char *p = sq_fs_join(ck, name);
  FILE *f = fopen(p, "wb");
  fputs(text, f);
  fclose(f);
  free(p);
}

/* Layers 0..3 committed; each layer l lists out-l (absolute path, an output
 * shard) and state-rank00000-layer<l+1>.h5 (relative). */
static void test_fall_back(void) {
  sq_resume_inputs in = inputs();
  sq_journal_fingerprint fp;
  fp_of(&in, &fp);
  char *ck = at("ck-fb");
  sq_resume r;
  SQ_EXPECT(sq_resume_open(ck, 1, &fp, &in, 6, &r) == SQ_OK);
  char outs[4][1100], states[4][64];
  for (int l = 0; l < 4; l++) {
    snprintf(outs[l], sizeof outs[l], "%s/out-%d", ck, l);
    snprintf(states[l], sizeof states[l], "state-rank00000-layer%04d.h5", l + 1);
    FILE *f = fopen(outs[l], "wb");
    fprintf(f, "output of layer %d", l);
    fclose(f);
    char s[32];
    snprintf(s, sizeof s, "state %d", l + 1);
    put(ck, states[l], s);
    sq_journal_file files[2] = {{.path = outs[l]}, {.path = states[l]}};
    SQ_EXPECT(sq_journal_commit_layer(r.journal, l, files, 2) == SQ_OK);
  }
  sq_journal_close(r.journal);
  /* Older state files are pruned by design: not needed. */
  char *p = sq_fs_join(ck, states[0]);
  unlink(p);
  free(p);
  p = sq_fs_join(ck, states[1]);
  unlink(p);
  free(p);
  SQ_EXPECT(sq_resume_open(ck, 1, &fp, &in, 6, &r) == SQ_OK);
  SQ_EXPECT_MSG(r.first_layer == 4 && !r.fell_back, "first %d fell_back %d: %s", r.first_layer,
                r.fell_back, sq_error_message());
  sq_journal_close(r.journal);
  /* The newest state file damaged (same size, other bytes): back to layer 3. */
  put(ck, states[3], "STATE 4");
  sq_error_clear();
  SQ_EXPECT(sq_resume_open(ck, 1, &fp, &in, 6, &r) == SQ_OK);
  SQ_EXPECT_MSG(r.first_layer == 3 && r.fell_back, "first %d fell_back %d", r.first_layer,
                r.fell_back);
  SQ_EXPECT_EQ_INT(r.journal->nlayers, 3);
  sq_journal_close(r.journal);
  /* Now the state file for layer 3 truncated: falling back again needs the
   * input of layer 2, which was pruned: refused, naming both files. */
  put(ck, states[2], "sta");
  sq_error_clear();
  SQ_EXPECT(sq_resume_open(ck, 1, &fp, &in, 6, &r) == SQ_ERR_FORMAT);
  SQ_EXPECT_MSG(
      contains(sq_error_message(), states[2]) && contains(sq_error_message(), "truncated") &&
          contains(sq_error_message(), states[1]) && contains(sq_error_message(), "missing"),
      "message: %s", sq_error_message());
  SQ_EXPECT(r.journal == NULL);
  {
    sq_journal *j = NULL; /* the refusal did not fall back (the journal is as it was) */
    SQ_EXPECT(sq_journal_open(ck, &j) == SQ_OK && j && j->nlayers == 3);
    sq_journal_close(j);
  }
  sq_error_clear();
  put(ck, states[2], "state 3");
  /* An older output shard damaged: refused, naming it. */
  FILE *f = fopen(outs[0], "wb");
  fputs("output of layer X", f);
  fclose(f);
  SQ_EXPECT(sq_resume_open(ck, 1, &fp, &in, 6, &r) == SQ_ERR_FORMAT);
  SQ_EXPECT_MSG(contains(sq_error_message(), outs[0]) && contains(sq_error_message(), "layer 0"),
                "message: %s", sq_error_message());
  sq_error_clear();
  free(ck);
}

int main(void) {
  root = sq_test_tmpdir("restart-resume");
  test_fingerprint();
  test_refusal();
  test_fall_back();
  int rc = sq_test_result("test_restart_resume");
  if (rc == 0) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0) { /* best effort */
    }
  }
  free(root);
  return rc;
}
