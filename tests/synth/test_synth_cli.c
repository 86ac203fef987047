/* `shardq synth` and `shardq inspect` end to end, through $SHARDQ_BIN:
 * - inspect --json agrees with parameter counts and scheme sizes computed here
 *   from the shapes (not from shardq's tensor list), and with stat() of the shards;
 * - the files read back through the safetensors/checkpoint readers: shapes,
 *   outlier columns, norms near 1, token ids in range with bos first;
 * - determinism: same seed -> identical bytes, another seed -> different bytes,
 *   and the values do not depend on the shard count;
 * - the config-only path on the published Llama-3.1 8B/405B configs gives the
 *   published parameter counts. */
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "sharding/checkpoint.h"
#include "sharding/model_config.h"
#include "sharding/safetensors.h"
#include "test_util.h"

static const char *bin;
static char *tmp;

static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...) {
  char cmd[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  int rc = system(cmd);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* Run `shardq inspect --json path` and parse its stdout. */
static json_t *inspect_json(const char *path) {
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "'%s' inspect --json '%s'", bin, path);
  FILE *p = popen(cmd, "r");
  if (!p) return NULL;
  json_error_t err;
  json_t *j = json_loadf(p, 0, &err);
  int rc = pclose(p);
  SQ_EXPECT_MSG(j != NULL, "inspect %s: bad JSON: %s", path, err.text);
  SQ_EXPECT_MSG(rc == 0, "inspect %s exited with %d", path, rc);
  return j;
}

static long long jint(json_t *o, const char *path) {
  /* "a.b.c" lookups */
  char buf[128];
  snprintf(buf, sizeof buf, "%s", path);
  json_t *v = o;
  for (char *tok = strtok(buf, "."); tok && v; tok = strtok(NULL, ".")) v = json_object_get(v, tok);
  SQ_EXPECT_MSG(v && json_is_integer(v), "no integer at %s", path);
  return v ? json_integer_value(v) : -1;
}

static uint64_t file_size(const char *dir, const char *name) {
  char p[4096];
  struct stat sb;
  snprintf(p, sizeof p, "%s/%s", dir, name);
  if (stat(p, &sb) != 0) return 0;
  return (uint64_t)sb.st_size;
}

static int files_equal(const char *a, const char *b, const char *name) {
  return run("cmp -s '%s/%s' '%s/%s'", a, name, b, name) == 0;
}

/* Independent sizes: the seven Linear shapes of a layer written out, plus
 * embeddings/lm_head/norms/biases as "other" (kept at 2 bytes). */
typedef struct {
  uint64_t params, bf16, w8, w4;
} sizes;

static void add_linear(sizes *s, uint64_t rows, uint64_t cols) {
  s->params += rows * cols;
  s->bf16 += 2 * rows * cols;
  s->w8 += rows * cols + 2 * rows;
  s->w4 += rows * cols / 2 + 2 * rows * ((cols + 127) / 128);
}

static void add_other(sizes *s, uint64_t n) {
  s->params += n;
  s->bf16 += 2 * n;
  s->w8 += 2 * n;
  s->w4 += 2 * n;
}

static sizes dense_sizes(uint64_t layers, uint64_t h, uint64_t heads, uint64_t kv, uint64_t hd,
                         uint64_t inter, uint64_t vocab, int tied, int qkv_bias) {
  sizes s = {0, 0, 0, 0};
  for (uint64_t l = 0; l < layers; ++l) {
    add_linear(&s, heads * hd, h);
    add_linear(&s, kv * hd, h);
    add_linear(&s, kv * hd, h);
    add_linear(&s, h, heads * hd);
    add_linear(&s, inter, h);
    add_linear(&s, inter, h);
    add_linear(&s, h, inter);
    add_other(&s, 2 * h);
    if (qkv_bias) add_other(&s, heads * hd + 2 * kv * hd);
  }
  add_other(&s, vocab * h * (tied ? 1 : 2) + h);
  return s;
}

static uint64_t gpus(uint64_t bytes) { /* ceil(bytes * 1.2 / 80e9) in integers */
  return (bytes * 12 + 800000000000ull - 1) / 800000000000ull;
}

static void check_inspect(json_t *j, sizes want, uint64_t layers, uint64_t kv_per_token) {
  SQ_EXPECT_EQ_INT(jint(j, "parameters"), want.params);
  SQ_EXPECT_EQ_INT(jint(j, "layers"), layers);
  SQ_EXPECT_EQ_INT(jint(j, "schemes.bf16.bytes"), want.bf16);
  SQ_EXPECT_EQ_INT(jint(j, "schemes.w8.bytes"), want.w8);
  SQ_EXPECT_EQ_INT(jint(j, "schemes.w4a16_g128.bytes"), want.w4);
  SQ_EXPECT_EQ_INT(jint(j, "schemes.bf16.gpus_80gb"), gpus(want.bf16));
  SQ_EXPECT_EQ_INT(jint(j, "schemes.w4a16_g128.gpus_80gb"), gpus(want.w4));
  SQ_EXPECT_EQ_INT(jint(j, "kv_cache_bytes_per_token"), kv_per_token);
}

static const char *jstr(json_t *j, const char *key) {
  const char *s = json_string_value(json_object_get(j, key));
  return s ? s : "";
}

/* The default model: layers 4, hidden 256, heads 8, kv 4, inter 688, vocab 1024, bf16, 2 shards. */
static void test_default(const char *d) {
  SQ_EXPECT_EQ_INT(run("'%s' synth --out '%s' -q", bin, d), 0);
  json_t *j = inspect_json(d);
  if (!j) return;
  check_inspect(j, dense_sizes(4, 256, 8, 4, 32, 688, 1024, 0, 0), 4, 2 * 4 * 4 * 32 * 2);
  SQ_EXPECT(strcmp(jstr(j, "source"), "checkpoint") == 0);
  SQ_EXPECT(strcmp(jstr(j, "dtype"), "BF16") == 0);
  SQ_EXPECT(strcmp(jstr(j, "model_type"), "llama") == 0);
  SQ_EXPECT_EQ_INT(jint(j, "tensors"), 2 + 4 * 9 + 1);
  uint64_t disk = file_size(d, "model-00001-of-00002.safetensors") +
                  file_size(d, "model-00002-of-00002.safetensors");
  SQ_EXPECT(disk > 0);
  SQ_EXPECT_EQ_INT(jint(j, "bytes_on_disk"), disk);
  json_t *top = json_object_get(j, "largest_tensors");
  SQ_EXPECT_EQ_INT(json_array_size(top), 5);
  SQ_EXPECT_EQ_INT(jint(json_array_get(top, 0), "bytes"), 1024 * 256 * 2);
  SQ_EXPECT_EQ_INT(file_size(d, "model.safetensors"), 0);
  SQ_EXPECT(file_size(d, "model.safetensors.index.json") > 0);
  json_decref(j);

  /* Read back through the checkpoint reader. */
  sq_ckpt *ck = NULL;
  SQ_EXPECT_MSG(sq_ckpt_open(d, &ck) == SQ_OK, "%s", sq_error_message());
  if (!ck) return;
  SQ_EXPECT_EQ_INT(sq_ckpt_count(ck), 39);
  const sq_st_tensor *t = sq_ckpt_find(ck, "model.layers.2.mlp.down_proj.weight", NULL);
  SQ_EXPECT(t && t->ndim == 2 && t->shape[0] == 256 && t->shape[1] == 688 &&
            t->dtype == SQ_DTYPE_BF16);
  float *w = malloc(256 * 688 * sizeof *w);
  if (t && sq_ckpt_read_f32(ck, "model.layers.2.mlp.down_proj.weight", w, 256 * 688) == SQ_OK) {
    /* Column RMS: 1/sqrt(688) except 1..6 outlier columns at 10x. */
    int outliers = 0, off = 0;
    double base = 1.0 / sqrt(688.0);
    for (int c = 0; c < 688; ++c) {
      double ss = 0;
      for (int r = 0; r < 256; ++r) ss += (double)w[r * 688 + c] * w[r * 688 + c];
      double rms = sqrt(ss / 256);
      if (rms > 5 * base)
        ++outliers;
      else if (fabs(rms / base - 1) > 0.25)
        ++off;
    }
    SQ_EXPECT_MSG(outliers >= 1 && outliers <= 6, "%d outlier columns", outliers);
    SQ_EXPECT_MSG(off == 0, "%d columns with a scale far from 1/sqrt(d_in)", off);
  }
  float norm[256];
  if (sq_ckpt_read_f32(ck, "model.layers.0.input_layernorm.weight", norm, 256) == SQ_OK) {
    double mean = 0;
    for (int i = 0; i < 256; ++i) mean += norm[i] / 256.0;
    SQ_EXPECT_NEAR(mean, 1.0, 0.02, 0);
  }
  free(w);
  sq_ckpt_close(ck);
  sq_error_clear();

  /* Token files: int32 [samples, seq], bos (1: 128000 does not fit 1024) first. */
  const struct {
    const char *name;
    int64_t rows;
  } tok[] = {{"calib.safetensors", 128}, {"eval.safetensors", 32}};
  int32_t *ids[2] = {NULL, NULL};
  for (int k = 0; k < 2; ++k) {
    char p[8192];
    snprintf(p, sizeof p, "%s/%s", d, tok[k].name);
    sq_st_file *f = NULL;
    SQ_EXPECT_MSG(sq_st_open(p, &f) == SQ_OK, "%s", sq_error_message());
    if (!f) continue;
    const sq_st_tensor *x = sq_st_find(f, "input_ids");
    SQ_EXPECT(x && x->dtype == SQ_DTYPE_I32 && x->ndim == 2 && x->shape[0] == tok[k].rows &&
              x->shape[1] == 128);
    if (x && x->nelem == (uint64_t)tok[k].rows * 128) {
      ids[k] = malloc(x->nelem * 4);
      SQ_EXPECT(sq_st_read_raw(f, x, 0, ids[k], x->nelem * 4) == SQ_OK);
      int bad = 0;
      for (uint64_t i = 0; i < x->nelem; ++i) {
        if (i % 128 == 0)
          bad += ids[k][i] != 1;
        else
          bad += ids[k][i] < 0 || ids[k][i] >= 1024;
      }
      SQ_EXPECT_EQ_INT(bad, 0);
    }
    sq_st_close(f);
  }
  if (ids[0] && ids[1]) SQ_EXPECT(memcmp(ids[0], ids[1], 32 * 128 * 4) != 0);
  free(ids[0]);
  free(ids[1]);
  sq_error_clear();
}

static const char *const files2[] = {"config.json",
                                     "model-00001-of-00002.safetensors",
                                     "model-00002-of-00002.safetensors",
                                     "model.safetensors.index.json",
                                     "calib.safetensors",
                                     "eval.safetensors"};

static void test_determinism(const char *base) {
  char a[4096], b[4096], c[4096], s3[4096], s1[4096];
  snprintf(a, sizeof a, "%s/seed7a", base);
  snprintf(b, sizeof b, "%s/seed7b", base);
  snprintf(c, sizeof c, "%s/seed8", base);
  snprintf(s3, sizeof s3, "%s/seed7-3shards", base);
  snprintf(s1, sizeof s1, "%s/seed7-1shard", base);
  const char *small =
      "--layers 2 --hidden 128 --heads 4 --kv-heads 2 --intermediate 256 "
      "--vocab 512 --calib-samples 8 --calib-seq-len 16 --eval-samples 4 -q";
  SQ_EXPECT_EQ_INT(run("'%s' synth --out '%s' --seed 7 %s", bin, a, small), 0);
  SQ_EXPECT_EQ_INT(run("'%s' synth --out '%s' --seed 7 %s", bin, b, small), 0);
  SQ_EXPECT_EQ_INT(run("'%s' synth --out '%s' --seed 8 %s", bin, c, small), 0);
  SQ_EXPECT_EQ_INT(run("'%s' synth --out '%s' --seed 7 --shards 3 %s", bin, s3, small), 0);
  SQ_EXPECT_EQ_INT(run("'%s' synth --out '%s' --seed 7 --shards 1 %s", bin, s1, small), 0);
  for (size_t i = 0; i < sizeof files2 / sizeof files2[0]; ++i) {
    SQ_EXPECT_MSG(files_equal(a, b, files2[i]), "seed 7 twice: %s differs", files2[i]);
    if (i == 0 || i == 3) continue; /* config and index do not depend on the seed */
    SQ_EXPECT_MSG(!files_equal(a, c, files2[i]), "seeds 7 and 8: %s is identical", files2[i]);
  }
  SQ_EXPECT(file_size(s1, "model.safetensors") > 0);
  SQ_EXPECT_EQ_INT(file_size(s1, "model.safetensors.index.json"), 0);
  SQ_EXPECT(file_size(s3, "model-00003-of-00003.safetensors") > 0);
  /* Re-synthesizing with another shard count leaves one layout only. */
  SQ_EXPECT_EQ_INT(run("'%s' synth --out '%s' --seed 7 --shards 2 %s", bin, s1, small), 0);
  SQ_EXPECT_EQ_INT(file_size(s1, "model.safetensors"), 0);
  for (size_t i = 0; i < sizeof files2 / sizeof files2[0]; ++i)
    SQ_EXPECT_MSG(files_equal(a, s1, files2[i]), "re-synth: %s differs", files2[i]);
  SQ_EXPECT_EQ_INT(run("'%s' synth --out '%s' --seed 7 --shards 1 %s", bin, s1, small), 0);
  SQ_EXPECT_EQ_INT(file_size(s1, "model.safetensors.index.json"), 0);
  SQ_EXPECT_EQ_INT(file_size(s1, "model-00001-of-00002.safetensors"), 0);

  /* Values do not depend on the sharding. */
  sq_ckpt *ca = NULL, *c3 = NULL, *c1 = NULL;
  SQ_EXPECT(sq_ckpt_open(a, &ca) == SQ_OK);
  SQ_EXPECT(sq_ckpt_open(s3, &c3) == SQ_OK);
  SQ_EXPECT_MSG(sq_ckpt_open(s1, &c1) == SQ_OK, "%s", sq_error_message());
  if (ca && c3 && c1) {
    SQ_EXPECT_EQ_INT(sq_ckpt_count(c3), sq_ckpt_count(ca));
    SQ_EXPECT_EQ_INT(sq_ckpt_count(c1), sq_ckpt_count(ca));
    size_t mismatched = 0;
    for (size_t i = 0; i < sq_ckpt_count(ca); ++i) {
      const sq_st_tensor *t = sq_ckpt_at(ca, i, NULL);
      float *x = malloc(t->nelem * 4), *y = malloc(t->nelem * 4), *z = malloc(t->nelem * 4);
      if (sq_ckpt_read_f32(ca, t->name, x, t->nelem) != SQ_OK ||
          sq_ckpt_read_f32(c3, t->name, y, t->nelem) != SQ_OK ||
          sq_ckpt_read_f32(c1, t->name, z, t->nelem) != SQ_OK || memcmp(x, y, t->nelem * 4) ||
          memcmp(x, z, t->nelem * 4))
        ++mismatched;
      free(x);
      free(y);
      free(z);
    }
    SQ_EXPECT_EQ_INT(mismatched, 0);
  }
  if (ca) sq_ckpt_close(ca);
  if (c3) sq_ckpt_close(c3);
  if (c1) sq_ckpt_close(c1);
  sq_error_clear();
}

static void test_other_archs(const char *base) {
  char d[4096];
  /* qwen2, fp16, tied, 3 shards: q/k/v biases and no lm_head. */
  snprintf(d, sizeof d, "%s/qwen2", base);
  SQ_EXPECT_EQ_INT(run("'%s' synth --out '%s' --arch qwen2 --dtype fp16 --tie --shards 3 "
                       "--layers 2 --hidden 128 --heads 4 --kv-heads 2 --intermediate 344 "
                       "--vocab 512 --calib-samples 4 --eval-samples 0 -q",
                       bin, d),
                   0);
  json_t *j = inspect_json(d);
  if (j) {
    check_inspect(j, dense_sizes(2, 128, 4, 2, 32, 344, 512, 1, 1), 2, 2 * 2 * 2 * 32 * 2);
    SQ_EXPECT(strcmp(jstr(j, "dtype"), "F16") == 0);
    SQ_EXPECT(strcmp(jstr(j, "architecture"), "Qwen2ForCausalLM") == 0);
    SQ_EXPECT_EQ_INT(jint(j, "bytes_on_disk"),
                     file_size(d, "model-00001-of-00003.safetensors") +
                         file_size(d, "model-00002-of-00003.safetensors") +
                         file_size(d, "model-00003-of-00003.safetensors"));
    json_decref(j);
  }
  SQ_EXPECT_EQ_INT(file_size(d, "eval.safetensors"), 0);
  sq_ckpt *ck = NULL;
  SQ_EXPECT(sq_ckpt_open(d, &ck) == SQ_OK);
  if (ck) {
    SQ_EXPECT(sq_ckpt_find(ck, "model.layers.1.self_attn.v_proj.bias", NULL) != NULL);
    SQ_EXPECT(sq_ckpt_find(ck, "lm_head.weight", NULL) == NULL);
    sq_ckpt_close(ck);
  }
  sq_model_config cfg;
  if (sq_model_config_load(d, &cfg) == SQ_OK) {
    SQ_EXPECT(cfg.family == SQ_FAMILY_QWEN2 && cfg.tie_word_embeddings);
    SQ_EXPECT(cfg.torch_dtype == SQ_DTYPE_F16);
    SQ_EXPECT(json_object_get(cfg.json, "use_sliding_window") != NULL); /* Qwen2's own keys */
    SQ_EXPECT(json_object_get(cfg.json, "attention_bias") == NULL);
    sq_model_config_free(&cfg);
  }
  sq_error_clear();

  /* mistral, fp32, 1 shard, head_dim given (48 * 4 != 128). */
  snprintf(d, sizeof d, "%s/mistral", base);
  SQ_EXPECT_EQ_INT(run("'%s' synth --out '%s' --arch mistral --dtype fp32 --shards 1 --layers 3 "
                       "--hidden 128 --heads 4 --kv-heads 4 --head-dim 48 --intermediate 256 "
                       "--vocab 300 --calib-samples 2 --calib-seq-len 8 -q",
                       bin, d),
                   0);
  j = inspect_json(d);
  if (j) {
    check_inspect(j, dense_sizes(3, 128, 4, 4, 48, 256, 300, 0, 0), 3, 2 * 3 * 4 * 48 * 2);
    SQ_EXPECT(strcmp(jstr(j, "dtype"), "F32") == 0);
    SQ_EXPECT_EQ_INT(jint(j, "head_dim"), 48);
    SQ_EXPECT_EQ_INT(jint(j, "bytes_on_disk"), file_size(d, "model.safetensors"));
    json_decref(j);
  }
}

static void test_config_only(void) {
  const char *src = getenv("SHARDQ_SOURCE_DIR");
  if (!src) return;
  char p[4096];
  snprintf(p, sizeof p, "%s/tests/assets/configs/Llama-3.1-8B", src);
  json_t *j = inspect_json(p);
  if (j) {
    SQ_EXPECT_EQ_INT(jint(j, "parameters"), 8030261248ull); /* published */
    check_inspect(j, dense_sizes(32, 4096, 32, 8, 128, 14336, 128256, 0, 0), 32, 131072);
    SQ_EXPECT(strcmp(jstr(j, "source"), "config") == 0);
    SQ_EXPECT(json_is_null(json_object_get(j, "bytes_on_disk")));
    json_decref(j);
  }
  snprintf(p, sizeof p, "%s/tests/assets/configs/Llama-3.1-405B/config.json", src);
  j = inspect_json(p);
  if (j) {
    SQ_EXPECT_EQ_INT(jint(j, "parameters"), 405853388800ull); /* published */
    check_inspect(j, dense_sizes(126, 16384, 128, 8, 128, 53248, 128256, 0, 0), 126,
                  2 * 126 * 8 * 128 * 2);
    SQ_EXPECT_EQ_INT(jint(j, "schemes.bf16.gpus_80gb"), 13); /* 811.7 GB x 1.2 / 80 GB = 12.2 */
    json_decref(j);
  }
  snprintf(p, sizeof p, "%s/tests/assets/configs/DeepSeek-V3", src);
  j = inspect_json(p);
  if (j) {
    SQ_EXPECT_EQ_INT(jint(j, "parameters"), 671026419200ull); /* test_model_config derives it */
    SQ_EXPECT_EQ_INT(jint(j, "num_experts"), 256);
    SQ_EXPECT_EQ_INT(jint(j, "kv_cache_bytes_per_token"), 61 * (512 + 64) * 2); /* MLA latent */
    json_decref(j);
  }
}

static void test_cli(const char *base) {
  SQ_EXPECT_EQ_INT(run("'%s' synth --help | grep -q -- '--calib-seq-len'", bin), 0);
  SQ_EXPECT_EQ_INT(run("'%s' inspect --help | grep -q 'W4A16 g128'", bin), 0);
  SQ_EXPECT_EQ_INT(run("'%s' synth -q 2>/dev/null", bin), 2); /* no --out */
  SQ_EXPECT_EQ_INT(run("'%s' synth --out '%s/x' --kv-heads 3 -q 2>/dev/null", bin, base), 2);
  SQ_EXPECT_EQ_INT(run("'%s' synth --out '%s/x' --layers many 2>/dev/null", bin, base), 2);
  SQ_EXPECT_EQ_INT(run("'%s' synth --out '%s/x' --bogus 1 2>/dev/null", bin, base), 2);
  SQ_EXPECT_EQ_INT(run("'%s' inspect '%s/does-not-exist' 2>/dev/null", bin, base), 1);
  SQ_EXPECT_EQ_INT(run("'%s' inspect 2>/dev/null", bin), 2);
}

int main(void) {
  bin = getenv("SHARDQ_BIN");
  if (!bin) sq_test_skip("SHARDQ_BIN not set");
  tmp = sq_test_tmpdir("synth");
  char d[4096];
  snprintf(d, sizeof d, "%s/default", tmp);
  test_default(d);
  test_determinism(tmp);
  test_other_archs(tmp);
  test_config_only();
  test_cli(tmp);
  int rc = sq_test_result("test_synth_cli");
  if (rc == 0) run("rm -rf '%s'", tmp);
  free(tmp);
  return rc;
}
