/* A generator of malformed safetensors files and checkpoint directories: each
 * case is built here from bytes (not by the writer under test), opened with
 * sq_st_open or sq_ckpt_open, and must fail with the expected status and one
 * line naming the file at fault (and the tensor, where one is at fault),
 * without creating or changing any file. Control cases that differ from a
 * corrupt one by the fault alone must open, so that the rejections are for
 * the fault and not for something else in the fixture. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fsio.h"
#include "sharding/checkpoint.h"
#include "sharding/safetensors.h"
#include "test_util.h"

static char *g_root;
static int g_cases;

/* Write 8-byte length (hlen, or the header's length when hlen is -1), header
 * bytes and data_bytes bytes of data. */
static char *put_file(const char *dir, const char *name, const char *hdr, size_t hdr_len,
                      long long hlen, size_t data_bytes) {
  char *path = sq_fs_join(dir, name);
  FILE *fp = fopen(path, "wb");
  uint64_t n = hlen == -1 ? hdr_len : (uint64_t)hlen;
  for (int k = 0; k < 8; ++k) fputc((int)((n >> (8 * k)) & 0xff), fp);
  fwrite(hdr, 1, hdr_len, fp);
  for (size_t i = 0; i < data_bytes; ++i) fputc((int)(i * 7 & 0xff), fp);
  fclose(fp);
  return path;
}

static void put_text(const char *dir, const char *name, const char *text) {
  char *path = sq_fs_join(dir, name);
  FILE *fp = fopen(path, "wb");
  fwrite(text, 1, strlen(text), fp);
  fclose(fp);
  free(path);
}

/* Names and sizes of every entry of dir, as one string, to see that nothing was written. */
static void snapshot(const char *dir, char *buf, size_t cap) {
  buf[0] = '\0';
  DIR *d = opendir(dir);
  struct dirent *e;
  size_t used = 0;
  while (d && (e = readdir(d))) {
    char *p = sq_fs_join(dir, e->d_name);
    struct stat sb;
    stat(p, &sb);
    used += (size_t)snprintf(buf + used, used < cap ? cap - used : 0, "%s:%lld ", e->d_name,
                             (long long)sb.st_size);
    free(p);
  }
  if (d) closedir(d);
}

static void check_error(const char *what, sq_status got, sq_status want, const char *must1,
                        const char *must2, const char *tensor) {
  const char *msg = sq_error_message();
  SQ_EXPECT_MSG(got == want, "%s: status %s, expected %s (message: %s)", what, sq_status_str(got),
                sq_status_str(want), msg);
  SQ_EXPECT_MSG(msg[0] && !strchr(msg, '\n'), "%s: message must be one non-empty line: '%s'", what,
                msg);
  SQ_EXPECT_MSG(!must1 || strstr(msg, must1), "%s: message lacks '%s': %s", what, must1, msg);
  SQ_EXPECT_MSG(!must2 || strstr(msg, must2), "%s: message lacks '%s': %s", what, must2, msg);
  if (tensor) {
    char quoted[300];
    snprintf(quoted, sizeof quoted, "'%s'", tensor);
    SQ_EXPECT_MSG(strstr(msg, quoted) != NULL, "%s: message lacks tensor %s: %s", what, quoted,
                  msg);
  }
  if (getenv("SHARDQ_TEST_VERBOSE")) fprintf(stderr, "%-28s %s\n", what, msg);
}

/* One single-file case: a file built from (hdr, hlen, data) must fail to open. */
static void st_case(const char *what, const char *hdr, size_t hdr_len, long long hlen, size_t data,
                    sq_status want, const char *tensor) {
  char *dir = sq_fs_join(g_root, what), before[4096], after[4096];
  sq_fs_mkdirs(dir);
  char *path = put_file(dir, "x.safetensors", hdr, hdr_len, hlen, data);
  snapshot(dir, before, sizeof before);
  sq_error_clear();
  sq_st_file *f = (sq_st_file *)1;
  sq_status st = sq_st_open(path, &f);
  SQ_EXPECT_MSG(f == NULL, "%s: handle not cleared", what);
  if (st == SQ_OK) sq_st_close(f);
  check_error(what, st, want, path, NULL, tensor);
  snapshot(dir, after, sizeof after);
  SQ_EXPECT_MSG(strcmp(before, after) == 0, "%s: directory changed: %s -> %s", what, before, after);
  ++g_cases;
  free(path);
  free(dir);
}

#define ST_CASE(what, hdr, data, tensor) \
  st_case(what, hdr, sizeof(hdr) - 1, -1, data, SQ_ERR_FORMAT, tensor)

/* A header that is valid with `data` bytes; the control for the layout cases. */
static void st_valid(const char *what, const char *hdr, size_t data) {
  char *dir = sq_fs_join(g_root, what);
  sq_fs_mkdirs(dir);
  char *path = put_file(dir, "x.safetensors", hdr, strlen(hdr), -1, data);
  sq_st_file *f = NULL;
  sq_error_clear();
  SQ_EXPECT_MSG(sq_st_open(path, &f) == SQ_OK, "control %s must open: %s", what,
                sq_error_message());
  sq_st_close(f);
  free(path);
  free(dir);
}

#define W8(name, a, b) \
  "\"" name "\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[" #a "," #b "]}"

static void single_file_cases(void) {
  /* Controls. */
  st_valid("ok-two", "{" W8("a", 0, 8) "," W8("b", 8, 16) "}", 16);
  st_valid("ok-empty", "{}", 0);
  st_valid("ok-meta", "{\"__metadata__\":{\"format\":\"pt\"}," W8("a", 0, 8) "}   ", 8);
  st_valid("ok-zero",
           "{\"z\":{\"dtype\":\"BF16\",\"shape\":[0,3],\"data_offsets\":[0,0]}," W8("a", 0, 8) "}",
           8);

  /* The length prefix. */
  {
    char *dir = sq_fs_join(g_root, "short"), *path = sq_fs_join(dir, "x.safetensors");
    sq_fs_mkdirs(dir);
    FILE *fp = fopen(path, "wb");
    fwrite("\x02\0\0\0\0", 1, 5, fp);
    fclose(fp);
    sq_error_clear();
    sq_st_file *f;
    check_error("short", sq_st_open(path, &f), SQ_ERR_FORMAT, path, NULL, NULL);
    ++g_cases;
    free(path);
    free(dir);
  }
  st_case("hlen-zero", "", 0, 0, 0, SQ_ERR_FORMAT, NULL);
  st_case("hlen-past-file", "{}", 2, 1000, 0, SQ_ERR_FORMAT, NULL);
  st_case("hlen-over-100mb", "{}", 2, 200ll * 1024 * 1024, 0, SQ_ERR_FORMAT, NULL);
  st_case("hlen-u64-max", "{}", 2, -2 /* 0xff..fe */, 0, SQ_ERR_FORMAT, NULL);
  /* The header text. */
  ST_CASE("not-brace", "[" W8("a", 0, 8) "]", 8, NULL);
  ST_CASE("bad-utf8", "{\"a\xff\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
          NULL);
  ST_CASE("overlong-utf8",
          "{\"a\xc0\xae\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, NULL);
  ST_CASE("bad-json", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", 8, NULL);
  ST_CASE("trailing-garbage", "{" W8("a", 0, 8) "} x", 8, NULL);
  ST_CASE("nul-padding", "{" W8("a", 0, 8) "}\0\0\0", 8, NULL);
  ST_CASE("duplicate-key", "{" W8("a", 0, 8) "," W8("a", 8, 16) "}", 16, NULL);
  ST_CASE("dup-inner-key",
          "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
          NULL);
  ST_CASE("nul-in-name", "{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
          8, NULL);
  ST_CASE("empty-name", "{\"\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, NULL);
  /* __metadata__. */
  ST_CASE("meta-not-object", "{\"__metadata__\":\"pt\"," W8("a", 0, 8) "}", 8, NULL);
  ST_CASE("meta-null", "{\"__metadata__\":null," W8("a", 0, 8) "}", 8, NULL);
  ST_CASE("meta-int-value", "{\"__metadata__\":{\"format\":1}," W8("a", 0, 8) "}", 8, NULL);
  ST_CASE("meta-nul-value", "{\"__metadata__\":{\"format\":\"p\\u0000t\"}," W8("a", 0, 8) "}", 8,
          NULL);
  /* Tensor entries. */
  ST_CASE("entry-not-object", "{\"w\":[1,2]}", 0, "w");
  ST_CASE("missing-shape", "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, "w");
  ST_CASE("missing-dtype", "{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "w");
  ST_CASE("missing-offsets", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, "w");
  ST_CASE("extra-key", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":1}}",
          8, "w");
  ST_CASE("dtype-not-string", "{\"w\":{\"dtype\":5,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "w");
  ST_CASE("unknown-dtype", "{\"w\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
          "w");
  ST_CASE("lowercase-dtype", "{\"w\":{\"dtype\":\"f32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
          "w");
  ST_CASE("shape-not-array", "{\"w\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8,
          "w");
  ST_CASE("negative-dim", "{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8,
          "w");
  ST_CASE("real-dim", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8, "w");
  ST_CASE("string-dim", "{\"w\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8,
          "w");
  ST_CASE("nine-dims",
          "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}", 8,
          "w");
  ST_CASE("shape-overflow",
          "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,8]}}",
          8, "w");
  ST_CASE("bytes-overflow",
          "{\"w\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,8]}}", 8,
          "w");
  ST_CASE("offsets-not-array", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":8}}", 8,
          "w");
  ST_CASE("offsets-one", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8]}}", 8, "w");
  ST_CASE("offsets-three", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,8]}}", 8,
          "w");
  ST_CASE("offsets-negative", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}",
          8, "w");
  ST_CASE("offsets-real", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8.0]}}", 8,
          "w");
  ST_CASE("offsets-huge",
          "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,18446744073709551615]}}", 8,
          NULL);
  ST_CASE("begin-after-end", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8,
          "w");
  /* The example. */
  ST_CASE("size-mismatch",
          "{\"model.layers.0.mlp.up_proj.weight\":{\"dtype\":\"BF16\",\"shape\":[4,4],\"data_"
          "offsets\":[0,10]}}",
          10, "model.layers.0.mlp.up_proj.weight");
  /* Layout of the data section (controls: ok-two, ok-zero). */
  ST_CASE("overlap", "{" W8("a", 0, 8) "," W8("b", 4, 12) "}", 12, "b");
  ST_CASE("gap", "{" W8("a", 0, 8) "," W8("b", 12, 20) "}", 20, "b");
  ST_CASE("gap-at-start", "{" W8("a", 4, 12) "}", 12, "a");
  ST_CASE("trailing-bytes", "{" W8("a", 0, 8) "}", 12, NULL);
  ST_CASE("no-tensors-but-data", "{}", 4, NULL);
  ST_CASE("past-end", "{" W8("a", 0, 8) "," W8("b", 8, 16) "}", 12, "b");
  ST_CASE("same-range", "{" W8("a", 0, 8) "," W8("b", 0, 8) "}", 8, NULL);

  /* Not a regular file, and a missing file. */
  {
    char *dir = sq_fs_join(g_root, "is-dir"), *path = sq_fs_join(dir, "x.safetensors");
    sq_fs_mkdirs(path);
    sq_st_file *f;
    sq_error_clear();
    check_error("is-dir", sq_st_open(path, &f), SQ_ERR_FORMAT, path, NULL, NULL);
    free(path);
    path = sq_fs_join(dir, "missing.safetensors");
    sq_error_clear();
    check_error("missing", sq_st_open(path, &f), SQ_ERR_IO, path, NULL, NULL);
    g_cases += 2;
    free(path);
    free(dir);
  }
}

/* ---- checkpoint directories ---- */

/* Shards A (tensors a, b) and B (tensor c), plus an index text. */
static char *make_ckpt(const char *what, const char *index) {
  char *dir = sq_fs_join(g_root, what);
  sq_fs_mkdirs(dir);
  free(put_file(dir, "A.safetensors", "{" W8("a", 0, 8) "," W8("b", 8, 16) "}",
                strlen("{" W8("a", 0, 8) "," W8("b", 8, 16) "}"), -1, 16));
  free(put_file(dir, "B.safetensors", "{" W8("c", 0, 8) "}", strlen("{" W8("c", 0, 8) "}"), -1, 8));
  if (index) put_text(dir, "model.safetensors.index.json", index);
  return dir;
}

static void ckpt_case(const char *what, const char *index, sq_status want,
                      const char *file_at_fault, const char *tensor) {
  char *dir = make_ckpt(what, index), before[4096], after[4096];
  snapshot(dir, before, sizeof before);
  char *at_fault = file_at_fault[0] ? sq_fs_join(dir, file_at_fault) : strdup(dir);
  sq_ckpt *c = (sq_ckpt *)1;
  sq_error_clear();
  sq_status st = sq_ckpt_open(dir, &c);
  SQ_EXPECT_MSG(c == NULL, "%s: handle not cleared", what);
  if (st == SQ_OK) sq_ckpt_close(c);
  check_error(what, st, want, at_fault, NULL, tensor);
  snapshot(dir, after, sizeof after);
  SQ_EXPECT_MSG(strcmp(before, after) == 0, "%s: directory changed", what);
  ++g_cases;
  free(at_fault);
  free(dir);
}

#define IDX_OK                                                                           \
  "{\"metadata\":{\"total_size\":24},\"weight_map\":{\"a\":\"A.safetensors\",\"b\":\"A." \
  "safetensors\",\"c\":\"B.safetensors\"}}"
#define IDX "model.safetensors.index.json"

static void checkpoint_cases(void) {
  { /* Control. */
    char *dir = make_ckpt("ckpt-ok", IDX_OK);
    sq_ckpt *c = NULL;
    sq_error_clear();
    SQ_EXPECT_MSG(sq_ckpt_open(dir, &c) == SQ_OK, "control ckpt-ok must open: %s",
                  sq_error_message());
    if (c) SQ_EXPECT_EQ_INT(sq_ckpt_count(c), 3);
    sq_ckpt_close(c);
    free(dir);
  }
  ckpt_case("idx-slash",
            "{\"weight_map\":{\"a\":\"A.safetensors\",\"b\":\"A.safetensors\",\"c\":\"sub/"
            "B.safetensors\"}}",
            SQ_ERR_FORMAT, IDX, "c");
  ckpt_case("idx-dotdot",
            "{\"weight_map\":{\"a\":\"A.safetensors\",\"b\":\"A.safetensors\",\"c\":\"..\"}}",
            SQ_ERR_FORMAT, IDX, "c");
  ckpt_case("idx-parent",
            "{\"weight_map\":{\"a\":\"../"
            "A.safetensors\",\"b\":\"A.safetensors\",\"c\":\"B.safetensors\"}}",
            SQ_ERR_FORMAT, IDX, "a");
  ckpt_case("idx-empty-file",
            "{\"weight_map\":{\"a\":\"\",\"b\":\"A.safetensors\",\"c\":\"B.safetensors\"}}",
            SQ_ERR_FORMAT, IDX, "a");
  ckpt_case("idx-nul-file",
            "{\"weight_map\":{\"a\":\"A.safetensors\\u0000x\",\"b\":\"A.safetensors\",\"c\":\"B."
            "safetensors\"}}",
            SQ_ERR_FORMAT, IDX, "a");
  ckpt_case(
      "idx-missing-shard",
      "{\"weight_map\":{\"a\":\"A.safetensors\",\"b\":\"A.safetensors\",\"c\":\"C.safetensors\"}}",
      SQ_ERR_IO, "C.safetensors", NULL);
  ckpt_case("idx-tensor-not-in-shard",
            "{\"weight_map\":{\"a\":\"A.safetensors\",\"b\":\"A.safetensors\",\"c\":\"B."
            "safetensors\",\"d\":\"B.safetensors\"}}",
            SQ_ERR_FORMAT, IDX, "d");
  ckpt_case("shard-tensor-not-in-idx",
            "{\"weight_map\":{\"a\":\"A.safetensors\",\"c\":\"B.safetensors\"}}", SQ_ERR_FORMAT,
            "A.safetensors", "b");
  ckpt_case(
      "idx-wrong-shard",
      "{\"weight_map\":{\"a\":\"A.safetensors\",\"b\":\"B.safetensors\",\"c\":\"B.safetensors\"}}",
      SQ_ERR_FORMAT, "A.safetensors", "b");
  ckpt_case("idx-not-json", "weight_map: a", SQ_ERR_FORMAT, IDX, NULL);
  ckpt_case("idx-truncated", "{\"weight_map\":{\"a\":\"A.safetensors\"", SQ_ERR_FORMAT, IDX, NULL);
  ckpt_case("idx-array", "[]", SQ_ERR_FORMAT, IDX, NULL);
  ckpt_case("idx-no-weight-map", "{\"metadata\":{}}", SQ_ERR_FORMAT, IDX, NULL);
  ckpt_case("idx-weight-map-array", "{\"weight_map\":[\"A.safetensors\"]}", SQ_ERR_FORMAT, IDX,
            NULL);
  ckpt_case("idx-value-not-string",
            "{\"weight_map\":{\"a\":1,\"b\":\"A.safetensors\",\"c\":\"B.safetensors\"}}",
            SQ_ERR_FORMAT, IDX, "a");
  ckpt_case("idx-duplicate",
            "{\"weight_map\":{\"a\":\"A.safetensors\",\"a\":\"A.safetensors\",\"b\":\"A."
            "safetensors\",\"c\":\"B.safetensors\"}}",
            SQ_ERR_FORMAT, IDX, NULL);
  ckpt_case("idx-metadata-string",
            "{\"metadata\":\"x\",\"weight_map\":{\"a\":\"A.safetensors\",\"b\":\"A.safetensors\","
            "\"c\":\"B.safetensors\"}}",
            SQ_ERR_FORMAT, IDX, NULL);
  ckpt_case("idx-bad-utf8", "{\"weight_map\":{\"a\xe2\x82\":\"A.safetensors\"}}", SQ_ERR_FORMAT,
            IDX, NULL);
  ckpt_case("no-checkpoint", NULL, SQ_ERR_IO, "", NULL); /* neither index nor model.safetensors */
  { /* A corrupt shard behind a valid index: both files named. */
    char *dir = make_ckpt("idx-corrupt-shard", IDX_OK), *b = sq_fs_join(dir, "B.safetensors");
    if (truncate(b, 20) != 0) SQ_EXPECT(0);
    sq_ckpt *c;
    sq_error_clear();
    char *ip = sq_fs_join(dir, IDX);
    check_error("idx-corrupt-shard", sq_ckpt_open(dir, &c), SQ_ERR_FORMAT, ip, b, NULL);
    ++g_cases;
    free(ip), free(b), free(dir);
  }
  { /* The same tensor in two shards (B also holds a). */
    char *dir = make_ckpt("idx-two-homes", IDX_OK);
    free(put_file(dir, "B.safetensors", "{" W8("a", 0, 8) "," W8("c", 8, 16) "}",
                  strlen("{" W8("a", 0, 8) "," W8("c", 8, 16) "}"), -1, 16));
    sq_ckpt *c;
    sq_error_clear();
    char *bp = sq_fs_join(dir, "B.safetensors");
    check_error("idx-two-homes", sq_ckpt_open(dir, &c), SQ_ERR_FORMAT, bp, NULL, "a");
    ++g_cases;
    free(bp), free(dir);
  }
  { /* Without an index, a corrupt model.safetensors. */
    char *dir = sq_fs_join(g_root, "single-corrupt");
    sq_fs_mkdirs(dir);
    free(put_file(dir, "model.safetensors", "{" W8("a", 0, 8) "}", strlen("{" W8("a", 0, 8) "}"),
                  -1, 4));
    sq_ckpt *c;
    sq_error_clear();
    char *mp = sq_fs_join(dir, "model.safetensors");
    check_error("single-corrupt", sq_ckpt_open(dir, &c), SQ_ERR_FORMAT, mp, NULL, "a");
    ++g_cases;
    free(mp), free(dir);
  }
  { /* A missing directory. */
    char *dir = sq_fs_join(g_root, "does-not-exist");
    sq_ckpt *c;
    sq_error_clear();
    check_error("missing-dir", sq_ckpt_open(dir, &c), SQ_ERR_IO, dir, NULL, NULL);
    ++g_cases;
    free(dir);
  }
}

/* The in-memory parsers reject what the file reader rejects (the fuzz entry points). */
static void parser_cases(void) {
  sq_st_file *f = NULL;
  const char *h = "{" W8("a", 0, 8) "}";
  sq_error_clear();
  SQ_EXPECT_EQ_INT(sq_st_parse_header("mem", h, strlen(h), 8, &f), SQ_OK);
  SQ_EXPECT(f && sq_st_count(f) == 1 && sq_st_find(f, "a"));
  if (f) {
    float x[2];
    sq_error_clear();
    SQ_EXPECT_EQ_INT(sq_st_read_f32(f, sq_st_find(f, "a"), x, 2),
                     SQ_ERR_ARG); /* no file behind it */
  }
  sq_st_close(f);
  SQ_EXPECT_EQ_INT(sq_st_parse_header("mem", h, strlen(h), 9, NULL), SQ_ERR_FORMAT);
  sq_ckpt_index *idx = NULL;
  sq_error_clear();
  SQ_EXPECT_EQ_INT(sq_ckpt_parse_index("mem", IDX_OK, strlen(IDX_OK), &idx), SQ_OK);
  if (idx) {
    SQ_EXPECT_EQ_INT(sq_ckpt_index_count(idx), 3);
    SQ_EXPECT_EQ_INT(sq_ckpt_index_shard_count(idx), 2);
    SQ_EXPECT(strcmp(sq_ckpt_index_file(idx, 2), "B.safetensors") == 0);
  }
  sq_ckpt_index_free(idx);
}

int main(void) {
  g_root = sq_test_tmpdir("st-corrupt");
  single_file_cases();
  checkpoint_cases();
  parser_cases();
  fprintf(stderr, "%d corrupt files and directories rejected as expected\n", g_cases);
  SQ_EXPECT(g_cases >= 30);
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_root);
  if (!sq_test_failures && system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
  free(g_root);
  return sq_test_result("test_safetensors_corrupt");
}
