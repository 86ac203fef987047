/* Round trips through the safetensors writer and reader and the checkpoint
 * index: several dtypes and shapes (a scalar, a zero-size tensor), the file's
 * layout checked byte by byte against the format spec by a separate parser
 * here, fp32 conversions against decoders written from the IEEE/OCP formulas
 * with ldexp (not common/dtype.h), row reads against slices of full reads, and
 * a multi-shard checkpoint opened through its index. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fsio.h"
#include "common/log.h"
#include "sharding/checkpoint.h"
#include "sharding/safetensors.h"
#include "test_util.h"

/* ---- independent decoders ---- */

static float ref_bf16(const uint8_t *p) {
  uint32_t u = ((uint32_t)p[1] << 24) | ((uint32_t)p[0] << 16);
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static float ref_f16(const uint8_t *p) {
  unsigned h = p[0] | (p[1] << 8), s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, (int)e - 25);
  return (float)(s ? -v : v);
}

static float ref_e4m3(uint8_t b) {
  unsigned s = b >> 7, e = (b >> 3) & 15, m = b & 7;
  double v = (e == 15 && m == 7) ? NAN : e == 0 ? ldexp(m, -9) : ldexp(8 + m, (int)e - 10);
  return (float)(s ? -v : v);
}

static float ref_f32(const uint8_t *p) {
  float f;
  memcpy(&f, p, 4);
  return f;
}

static int same_float(float a, float b) {
  return (isnan(a) && isnan(b)) || a == b;
}

/* ---- the tensors ---- */

typedef struct {
  const char *name;
  sq_dtype dt;
  int ndim;
  int64_t shape[4];
  uint8_t *bytes;
  size_t nbytes, nelem;
} tcase;

static tcase cases[] = {
    {"model.embed_tokens.weight", SQ_DTYPE_BF16, 2, {7, 5}, NULL, 0, 0},
    {"a.f32", SQ_DTYPE_F32, 2, {3, 4}, NULL, 0, 0},
    {"a.f16", SQ_DTYPE_F16, 3, {2, 3, 5}, NULL, 0, 0},
    {"scalar", SQ_DTYPE_F32, 0, {0}, NULL, 0, 0},
    {"empty", SQ_DTYPE_BF16, 2, {0, 7}, NULL, 0, 0},
    {"fp8.weight", SQ_DTYPE_F8_E4M3, 2, {16, 16}, NULL, 0, 0}, /* all 256 bit patterns */
    {"ids", SQ_DTYPE_I32, 1, {5}, NULL, 0, 0},
    {"odd", SQ_DTYPE_U8, 1, {3}, NULL, 0, 0},
};
#define NCASES (sizeof cases / sizeof cases[0])

static void make_cases(void) {
  uint32_t seed = 12345;
  for (size_t i = 0; i < NCASES; ++i) {
    tcase *c = &cases[i];
    c->nelem = 1;
    for (int d = 0; d < c->ndim; ++d) c->nelem *= (size_t)c->shape[d];
    c->nbytes = c->nelem * sq_dtype_size(c->dt);
    c->bytes = malloc(c->nbytes + 1);
    for (size_t k = 0; k < c->nbytes; ++k) {
      seed = seed * 1664525u + 1013904223u;
      c->bytes[k] = (uint8_t)(c->dt == SQ_DTYPE_F8_E4M3 ? k : seed >> 24);
    }
  }
}

static float ref_elem(const tcase *c, size_t i) {
  switch (c->dt) {
    case SQ_DTYPE_BF16:
      return ref_bf16(c->bytes + 2 * i);
    case SQ_DTYPE_F16:
      return ref_f16(c->bytes + 2 * i);
    case SQ_DTYPE_F32:
      return ref_f32(c->bytes + 4 * i);
    case SQ_DTYPE_F8_E4M3:
      return ref_e4m3(c->bytes[i]);
    default:
      return NAN;
  }
}

static int is_float(sq_dtype dt) {
  return dt == SQ_DTYPE_BF16 || dt == SQ_DTYPE_F16 || dt == SQ_DTYPE_F32 || dt == SQ_DTYPE_F8_E4M3;
}

static size_t count_entries(const char *dir) {
  DIR *d = opendir(dir);
  size_t n = 0;
  struct dirent *e;
  while (d && (e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) ++n;
  if (d) closedir(d);
  return n;
}

static sq_status write_file(const char *path, size_t first, size_t last, int reverse) {
  sq_st_writer *w;
  sq_status st = sq_st_writer_create(path, &w);
  if (st != SQ_OK) return st;
  SQ_EXPECT_EQ_INT(sq_st_writer_set_metadata(w, "producer", "test"), SQ_OK);
  for (size_t i = first; i < last; ++i)
    SQ_EXPECT_EQ_INT(
        sq_st_writer_declare(w, cases[i].name, cases[i].dt, cases[i].ndim, cases[i].shape), SQ_OK);
  uint64_t predicted = sq_st_writer_total_bytes(w);
  for (size_t k = first; k < last; ++k) { /* any order works */
    size_t i = reverse ? last - 1 - (k - first) : k;
    SQ_EXPECT_EQ_INT(sq_st_writer_write(w, cases[i].name, cases[i].bytes), SQ_OK);
  }
  st = sq_st_writer_commit(w);
  sq_st_writer_free(w);
  struct stat sb;
  SQ_EXPECT(stat(path, &sb) == 0 && (uint64_t)sb.st_size == predicted);
  return st;
}

/* Parse the file by hand, per the spec, and check the writer's layout. */
static void check_layout(const char *path) {
  char *buf;
  size_t len;
  SQ_EXPECT_EQ_INT(sq_fs_read_small_file(path, 1 << 20, &buf, &len), SQ_OK);
  uint64_t n = 0;
  for (int k = 7; k >= 0; --k) n = (n << 8) | (uint8_t)buf[k];
  SQ_EXPECT((8 + n) % 8 == 0);
  SQ_EXPECT(8 + n <= len);
  SQ_EXPECT(strncmp(buf + 8,
                    "{\"__metadata__\":{\"format\":\"pt\",\"producer\":\"test\"},\"model.embed_"
                    "tokens.weight\":"
                    "{\"dtype\":\"BF16\",\"shape\":[7,5],\"data_offsets\":[0,70]}",
                    strlen("{\"__metadata__\":{\"format\":\"pt\",\"producer\":\"test\"},\"model."
                           "embed_tokens.weight\":"
                           "{\"dtype\":\"BF16\",\"shape\":[7,5],\"data_offsets\":[0,70]}")) == 0);
  SQ_EXPECT(buf[8 + n - 1] == ' ' || buf[8 + n - 1] == '}');
  size_t pos = 8 + n;
  for (size_t i = 0; i < NCASES; ++i) { /* data in declaration order, no gaps */
    SQ_EXPECT_MSG(memcmp(buf + pos, cases[i].bytes, cases[i].nbytes) == 0, "data of %s",
                  cases[i].name);
    pos += cases[i].nbytes;
  }
  SQ_EXPECT_EQ_INT(pos, len);
  free(buf);
}

static void check_file(const char *path) {
  sq_st_file *f;
  SQ_EXPECT_EQ_INT(sq_st_open(path, &f), SQ_OK);
  if (!f) return;
  SQ_EXPECT_EQ_INT(sq_st_count(f), NCASES);
  SQ_EXPECT(strcmp(sq_st_metadata(f, "format"), "pt") == 0);
  SQ_EXPECT(strcmp(sq_st_metadata(f, "producer"), "test") == 0);
  SQ_EXPECT(sq_st_metadata(f, "nope") == NULL);
  SQ_EXPECT(sq_st_find(f, "nope") == NULL);
  for (size_t i = 1; i < sq_st_count(f); ++i)
    SQ_EXPECT(sq_st_at(f, i - 1)->end == sq_st_at(f, i)->begin);
  for (size_t i = 0; i < NCASES; ++i) {
    const tcase *c = &cases[i];
    const sq_st_tensor *t = sq_st_find(f, c->name);
    SQ_EXPECT_MSG(t != NULL, "find %s", c->name);
    if (!t) continue;
    SQ_EXPECT(t->dtype == c->dt && t->ndim == c->ndim && t->nelem == c->nelem);
    for (int d = 0; d < c->ndim; ++d) SQ_EXPECT(t->shape[d] == c->shape[d]);
    uint8_t *raw = malloc(c->nbytes + 1);
    SQ_EXPECT_EQ_INT(sq_st_read_raw(f, t, 0, raw, c->nbytes), SQ_OK);
    SQ_EXPECT(memcmp(raw, c->bytes, c->nbytes) == 0);
    if (c->nbytes > 3) {
      SQ_EXPECT_EQ_INT(sq_st_read_raw(f, t, 1, raw, c->nbytes - 2), SQ_OK);
      SQ_EXPECT(memcmp(raw, c->bytes + 1, c->nbytes - 2) == 0);
    }
    sq_error_clear();
    SQ_EXPECT_EQ_INT(sq_st_read_raw(f, t, 1, raw, c->nbytes), SQ_ERR_ARG);
    free(raw);
    float *full = malloc((c->nelem + 1) * sizeof(float)),
          *rows = malloc((c->nelem + 1) * sizeof(float));
    if (!is_float(c->dt)) {
      sq_error_clear();
      SQ_EXPECT_EQ_INT(sq_st_read_f32(f, t, full, c->nelem), SQ_ERR_UNSUPPORTED);
      SQ_EXPECT(strstr(sq_error_message(), c->name) != NULL);
    } else {
      SQ_EXPECT_EQ_INT(sq_st_read_f32(f, t, full, c->nelem), SQ_OK);
      for (size_t k = 0; k < c->nelem; ++k)
        SQ_EXPECT_MSG(same_float(full[k], ref_elem(c, k)), "%s[%zu]: %g vs %g", c->name, k, full[k],
                      ref_elem(c, k));
      sq_error_clear();
      SQ_EXPECT_EQ_INT(sq_st_read_f32(f, t, full, c->nelem + 1), SQ_ERR_ARG);
      if (c->ndim >= 1) {
        int64_t R = c->shape[0];
        size_t row = R ? c->nelem / (size_t)R : 0;
        for (int64_t r0 = 0; r0 <= R; ++r0)
          for (int64_t nr = 0; r0 + nr <= R; ++nr) {
            memset(rows, 0xff, (c->nelem + 1) * sizeof(float));
            SQ_EXPECT_EQ_INT(sq_st_read_rows_f32(f, t, r0, nr, rows), SQ_OK);
            SQ_EXPECT(memcmp(rows, full + (size_t)r0 * row, (size_t)nr * row * sizeof(float)) == 0);
            uint32_t guard;
            memcpy(&guard, rows + (size_t)nr * row, 4);
            SQ_EXPECT(guard == 0xffffffffu); /* nothing past the rows */
          }
        sq_error_clear();
        SQ_EXPECT_EQ_INT(sq_st_read_rows_f32(f, t, R, 1, rows), SQ_ERR_ARG);
        SQ_EXPECT_EQ_INT(sq_st_read_rows_f32(f, t, -1, 1, rows), SQ_ERR_ARG);
      } else {
        sq_error_clear();
        SQ_EXPECT_EQ_INT(sq_st_read_rows_f32(f, t, 0, 1, rows), SQ_ERR_ARG);
      }
    }
    free(full);
    free(rows);
  }
  sq_st_close(f);
}

static void test_single(const char *dir) {
  char *path = sq_fs_join(dir, "one.safetensors");
  SQ_EXPECT_EQ_INT(write_file(path, 0, NCASES, 1), SQ_OK);
  check_layout(path);
  check_file(path);
  /* Rewriting replaces the file atomically and leaves no temporary behind. */
  SQ_EXPECT_EQ_INT(write_file(path, 0, NCASES, 0), SQ_OK);
  check_file(path);
  SQ_EXPECT_EQ_INT(count_entries(dir), 1);
  free(path);
}

static void test_uncommitted(const char *dir) {
  char *path = sq_fs_join(dir, "never.safetensors");
  sq_st_writer *w;
  SQ_EXPECT_EQ_INT(sq_st_writer_create(path, &w), SQ_OK);
  SQ_EXPECT_EQ_INT(sq_st_writer_declare(w, "x", SQ_DTYPE_F32, 1, (int64_t[]){4}), SQ_OK);
  SQ_EXPECT_EQ_INT(sq_st_writer_declare(w, "y", SQ_DTYPE_F16, 1, (int64_t[]){4}), SQ_OK);
  sq_error_clear();
  SQ_EXPECT_EQ_INT(sq_st_writer_declare(w, "x", SQ_DTYPE_F32, 1, (int64_t[]){4}), SQ_ERR_ARG);
  SQ_EXPECT_EQ_INT(sq_st_writer_declare(w, "", SQ_DTYPE_F32, 1, (int64_t[]){4}), SQ_ERR_ARG);
  SQ_EXPECT_EQ_INT(sq_st_writer_declare(w, "neg", SQ_DTYPE_F32, 1, (int64_t[]){-4}), SQ_ERR_ARG);
  SQ_EXPECT_EQ_INT(sq_st_writer_write_f32(w, "x", (float[]){1, 2, 3, 4}), SQ_OK);
  sq_error_clear();
  SQ_EXPECT_EQ_INT(sq_st_writer_declare(w, "late", SQ_DTYPE_F32, 1, (int64_t[]){4}), SQ_ERR_ARG);
  SQ_EXPECT_EQ_INT(sq_st_writer_write(w, "x", (float[]){1, 2, 3, 4}), SQ_ERR_ARG); /* twice */
  SQ_EXPECT_EQ_INT(sq_st_writer_write(w, "zz", (float[]){1, 2, 3, 4}), SQ_ERR_ARG);
  sq_error_clear();
  SQ_EXPECT_EQ_INT(sq_st_writer_commit(w), SQ_ERR_ARG); /* y never written */
  SQ_EXPECT(strstr(sq_error_message(), "'y'") != NULL);
  SQ_EXPECT_EQ_INT(count_entries(dir), 1); /* the temporary file */
  sq_st_writer_free(w);
  SQ_EXPECT_EQ_INT(count_entries(dir), 0);
  SQ_EXPECT(access(path, F_OK) != 0);
  /* A directory is never replaced. */
  sq_error_clear();
  SQ_EXPECT_EQ_INT(sq_st_writer_create(dir, &w), SQ_ERR_ARG);
  SQ_EXPECT(w == NULL);
  free(path);
}

/* write_f32 converts with round-to-nearest-even; check against the reference decoders. */
static void test_write_f32(const char *dir) {
  char *path = sq_fs_join(dir, "conv.safetensors");
  float src[6] = {1.0f, -2.5f, 3.14159265f, 1e-3f, 500.0f, 0.0f};
  sq_dtype dts[4] = {SQ_DTYPE_F32, SQ_DTYPE_F16, SQ_DTYPE_BF16, SQ_DTYPE_F8_E4M3};
  const char *names[4] = {"f32", "f16", "bf16", "f8"};
  sq_st_writer *w;
  SQ_EXPECT_EQ_INT(sq_st_writer_create(path, &w), SQ_OK);
  for (int k = 0; k < 4; ++k)
    SQ_EXPECT_EQ_INT(sq_st_writer_declare(w, names[k], dts[k], 2, (int64_t[]){2, 3}), SQ_OK);
  for (int k = 0; k < 4; ++k) SQ_EXPECT_EQ_INT(sq_st_writer_write_f32(w, names[k], src), SQ_OK);
  SQ_EXPECT_EQ_INT(sq_st_writer_commit(w), SQ_OK);
  sq_st_writer_free(w);
  sq_st_file *f;
  SQ_EXPECT_EQ_INT(sq_st_open(path, &f), SQ_OK);
  for (int k = 0; f && k < 4; ++k) {
    float out[6];
    SQ_EXPECT_EQ_INT(sq_st_read_f32(f, sq_st_find(f, names[k]), out, 6), SQ_OK);
    for (int i = 0; i < 6; ++i) {
      /* The nearest representable value: relative error within half an ulp of the format. */
      double rel = k == 0 ? 0 : k == 1 ? ldexp(1, -11) : k == 2 ? ldexp(1, -8) : ldexp(1, -4);
      double want = src[i] > 448 && k == 3 ? 448 : src[i];
      SQ_EXPECT_NEAR(out[i], want, k == 3 ? ldexp(1, -10) : 1e-7, rel);
    }
  }
  sq_st_close(f);
  free(path);
}

static void test_checkpoint(const char *dir) {
  /* Three shards: cases [0,3), [3,6), [6,8). */
  const char *files[3] = {"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                          "model-00003-of-00003.safetensors"};
  size_t bounds[4] = {0, 3, 6, NCASES};
  uint64_t total_file_bytes = 0, tensor_bytes = 0;
  const char *names[NCASES], *map[NCASES];
  for (int s = 0; s < 3; ++s) {
    char *p = sq_fs_join(dir, files[s]);
    SQ_EXPECT_EQ_INT(write_file(p, bounds[s], bounds[s + 1], s == 1), SQ_OK);
    struct stat sb;
    stat(p, &sb);
    total_file_bytes += (uint64_t)sb.st_size;
    for (size_t i = bounds[s]; i < bounds[s + 1]; ++i) {
      names[NCASES - 1 - i] = cases[i].name; /* any order in, sorted out */
      map[NCASES - 1 - i] = files[s];
      tensor_bytes += cases[i].nbytes;
    }
    free(p);
  }
  SQ_EXPECT_EQ_INT(sq_ckpt_write_index(dir, NCASES, names, map, tensor_bytes), SQ_OK);
  sq_ckpt *c;
  SQ_EXPECT_EQ_INT(sq_ckpt_open(dir, &c), SQ_OK);
  if (!c) return;
  SQ_EXPECT_EQ_INT(sq_ckpt_count(c), NCASES);
  SQ_EXPECT_EQ_INT(sq_ckpt_shard_count(c), 3);
  SQ_EXPECT_EQ_INT(sq_ckpt_bytes_on_disk(c), total_file_bytes);
  for (size_t i = 0; i < NCASES; ++i) {
    const sq_st_file *f = NULL;
    const sq_st_tensor *t = sq_ckpt_find(c, cases[i].name, &f);
    SQ_EXPECT_MSG(t && f, "find %s", cases[i].name);
    if (!t) continue;
    size_t s = i < 3 ? 0 : i < 6 ? 1 : 2;
    SQ_EXPECT(strstr(sq_st_path(f), files[s]) != NULL);
    if (is_float(cases[i].dt)) {
      float *v = malloc((cases[i].nelem + 1) * 4);
      SQ_EXPECT_EQ_INT(sq_ckpt_read_f32(c, cases[i].name, v, cases[i].nelem), SQ_OK);
      for (size_t k = 0; k < cases[i].nelem; ++k)
        SQ_EXPECT(same_float(v[k], ref_elem(&cases[i], k)));
      free(v);
    }
  }
  /* at(): shard order, then data order; covers every tensor once. */
  size_t seen = 0;
  const sq_st_file *prev = NULL;
  for (size_t i = 0; i < sq_ckpt_count(c); ++i) {
    const sq_st_file *f;
    const sq_st_tensor *t = sq_ckpt_at(c, i, &f);
    if (f != prev) ++seen, prev = f;
    SQ_EXPECT(sq_ckpt_find(c, t->name, NULL) == t);
  }
  SQ_EXPECT_EQ_INT(seen, 3);
  SQ_EXPECT(sq_ckpt_find(c, "missing", NULL) == NULL);
  sq_error_clear();
  float x;
  SQ_EXPECT_EQ_INT(sq_ckpt_read_f32(c, "missing", &x, 1), SQ_ERR_FORMAT);
  SQ_EXPECT(strstr(sq_error_message(), "missing") && strstr(sq_error_message(), dir));
  sq_ckpt_close(c);

  /* The index as written: sorted weight_map and the total size. */
  char *ipath = sq_fs_join(dir, "model.safetensors.index.json"), *json;
  size_t len;
  SQ_EXPECT_EQ_INT(sq_fs_read_small_file(ipath, 1 << 20, &json, &len), SQ_OK);
  char want[64];
  snprintf(want, sizeof want, "\"total_size\": %llu", (unsigned long long)tensor_bytes);
  SQ_EXPECT(strstr(json, want) != NULL);
  const char *prevname = "";
  for (const char *p = strstr(json, "weight_map"); p && (p = strstr(p, "\n    \""));) {
    p += 6;
    SQ_EXPECT(strncmp(prevname, p, strcspn(p, "\"")) < 0);
    prevname = p;
  }
  sq_ckpt_index *idx;
  SQ_EXPECT_EQ_INT(sq_ckpt_parse_index(ipath, json, len, &idx), SQ_OK);
  if (idx) {
    SQ_EXPECT_EQ_INT(sq_ckpt_index_count(idx), NCASES);
    SQ_EXPECT_EQ_INT(sq_ckpt_index_shard_count(idx), 3);
    SQ_EXPECT_EQ_INT(sq_ckpt_index_total_size(idx), tensor_bytes);
    for (size_t i = 1; i < NCASES; ++i)
      SQ_EXPECT(strcmp(sq_ckpt_index_name(idx, i - 1), sq_ckpt_index_name(idx, i)) < 0);
    sq_ckpt_index_free(idx);
  }
  free(json);
  free(ipath);
  /* Duplicate names are refused. */
  sq_error_clear();
  SQ_EXPECT_EQ_INT(
      sq_ckpt_write_index(dir, 2, (const char *[]){"a", "a"}, (const char *[]){"x", "y"}, 0),
      SQ_ERR_ARG);
  SQ_EXPECT_EQ_INT(sq_ckpt_write_index(dir, 1, (const char *[]){"a"}, (const char *[]){"../x"}, 0),
                   SQ_ERR_ARG);
}

static void test_single_file_ckpt(const char *dir) {
  char *p = sq_fs_join(dir, "model.safetensors");
  SQ_EXPECT_EQ_INT(write_file(p, 0, NCASES, 0), SQ_OK);
  sq_ckpt *c;
  SQ_EXPECT_EQ_INT(sq_ckpt_open(dir, &c), SQ_OK);
  if (c) {
    SQ_EXPECT_EQ_INT(sq_ckpt_count(c), NCASES);
    SQ_EXPECT(sq_ckpt_find(c, "fp8.weight", NULL) != NULL);
    sq_ckpt_close(c);
  }
  free(p);
}

/* 40k tensors over 4 shards (DeepSeek-V3 has ~92k): everything found, in
 * time that rules out quadratic lookups (timed in the log, not asserted). */
static void test_many(const char *dir) {
  enum { N = 40000, SHARDS = 4 };
  char **names = malloc(N * sizeof *names);
  const char **files = malloc(N * sizeof *files);
  char shard_names[SHARDS][64];
  double t0 = sq_time_now();
  for (int s = 0; s < SHARDS; ++s) {
    snprintf(shard_names[s], sizeof shard_names[s], "model-%05d-of-%05d.safetensors", s + 1,
             SHARDS);
    char *p = sq_fs_join(dir, shard_names[s]);
    sq_st_writer *w;
    SQ_EXPECT_EQ_INT(sq_st_writer_create(p, &w), SQ_OK);
    for (int i = s; i < N; i += SHARDS) {
      char buf[96];
      snprintf(buf, sizeof buf, "model.layers.%d.mlp.experts.%d.down_proj.weight", i / 256,
               i % 256);
      names[i] = strdup(buf);
      files[i] = shard_names[s];
      SQ_EXPECT_EQ_INT(sq_st_writer_declare(w, names[i], SQ_DTYPE_I32, 1, (int64_t[]){1}), SQ_OK);
    }
    for (int i = s; i < N; i += SHARDS)
      SQ_EXPECT_EQ_INT(sq_st_writer_write(w, names[i], &i), SQ_OK);
    SQ_EXPECT_EQ_INT(sq_st_writer_commit(w), SQ_OK);
    sq_st_writer_free(w);
    free(p);
  }
  SQ_EXPECT_EQ_INT(sq_ckpt_write_index(dir, N, (const char *const *)names, files, 4ull * N), SQ_OK);
  double t1 = sq_time_now();
  sq_ckpt *c;
  SQ_EXPECT_EQ_INT(sq_ckpt_open(dir, &c), SQ_OK);
  double t2 = sq_time_now();
  if (c) {
    SQ_EXPECT_EQ_INT(sq_ckpt_count(c), N);
    for (int i = 0; i < N; ++i) {
      const sq_st_file *f;
      const sq_st_tensor *t = sq_ckpt_find(c, names[i], &f);
      SQ_EXPECT_MSG(t != NULL, "find %s", names[i]);
      if (t && i % 997 == 0) { /* spot-check contents */
        int32_t v = -1;
        SQ_EXPECT_EQ_INT(sq_st_read_raw(f, t, 0, &v, 4), SQ_OK);
        SQ_EXPECT_EQ_INT(v, i);
      }
    }
    sq_ckpt_close(c);
  }
  double t3 = sq_time_now();
  fprintf(stderr, "%d tensors / %d shards: write %.2f s, open+validate %.2f s, all finds %.3f s\n",
          N, SHARDS, t1 - t0, t2 - t1, t3 - t2);
  for (int i = 0; i < N; ++i) free(names[i]);
  free(names);
  free(files);
}

int main(void) {
  make_cases();
  char *d1 = sq_test_tmpdir("st-single"), *d2 = sq_test_tmpdir("st-uncommitted"),
       *d3 = sq_test_tmpdir("st-ckpt"), *d4 = sq_test_tmpdir("st-ckpt1"),
       *d5 = sq_test_tmpdir("st-many");
  test_single(d1);
  test_write_f32(d1);
  test_uncommitted(d2);
  test_checkpoint(d3);
  test_single_file_ckpt(d4);
  test_many(d5);
  for (size_t i = 0; i < NCASES; ++i) free(cases[i].bytes);
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s' '%s' '%s' '%s'", d1, d2, d3, d4, d5);
  if (!sq_test_failures && system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
  free(d1), free(d2), free(d3), free(d4), free(d5);
  return sq_test_result("test_safetensors_roundtrip");
}
