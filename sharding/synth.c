/* Synthetic checkpoints and token files: the value streams, the dense
 * architectures' config.json (llama, mistral, qwen2), tensor generation and the
 * sharded writer. The MoE / MLA / fp8-block parts live in synth_moe.c; the value
 * recipe and the file layout are documented in synth.h. */
#include "sharding/synth.h"

#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/fsio.h"
#include "common/log.h"
#include "sharding/checkpoint.h"
#include "sharding/fp8_block.h"
#include "sharding/safetensors.h"
#include "sharding/synth_internal.h"

/* ---- deterministic streams ---- */

static uint64_t sq_splitmix64(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static uint64_t sq_fnv1a64(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; ++s) h = (h ^ (uint8_t)*s) * 1099511628211ull;
  return h;
}

static void sq_rng_init(sq_rng *r, uint64_t seed, const char *name) {
  uint64_t s = seed ^ sq_fnv1a64(name);
  r->state = sq_splitmix64(&s);
  r->has_spare = 0;
}

/* Box-Muller in float on two 24-bit uniforms cut from one splitmix64 draw:
 * u1 in (0, 1] (never 0, for the log), u2 in [0, 1). Float is plenty for
 * weights stored as bf16/fp16 and twice as fast as double. */
static float sq_rng_normal(sq_rng *r) {
  if (r->has_spare) {
    r->has_spare = 0;
    return r->spare;
  }
  uint64_t b = sq_splitmix64(&r->state);
  float u1 = ((float)(b >> 40) + 1.0f) * (1.0f / 16777216.0f);
  float u2 = (float)((b >> 16) & 0xffffffu) * (1.0f / 16777216.0f);
  float rad = sqrtf(-2.0f * logf(u1)), th = 6.28318530717958648f * u2;
  r->spare = rad * sinf(th);
  r->has_spare = 1;
  return rad * cosf(th);
}

/* ---- options and config ---- */

void sq_synth_options_default(sq_synth_options *o) {
  memset(o, 0, sizeof *o);
  o->arch = "llama";
  o->layers = 4;
  o->hidden = 256;
  o->heads = 8;
  o->kv_heads = 4;
  o->intermediate = 688;
  o->vocab = 1024;
  o->dtype = SQ_DTYPE_BF16;
  o->shards = 2;
  o->calib_samples = 128;
  o->calib_seq_len = 128;
  o->eval_samples = 32;
  o->progress = true;
}

sq_status sq_synth_check(const sq_synth_options *o) {
  if (!o->arch || (strcmp(o->arch, "llama") && strcmp(o->arch, "mistral") &&
                   strcmp(o->arch, "qwen2") && !sq_synth_arch_is_moe(o->arch)))
    return sq_error_set(SQ_ERR_ARG,
                        "synth: --arch '%s' is not one of llama, mistral, qwen2, mixtral, "
                        "qwen2_moe, qwen3_moe, deepseek_v3, llama4",
                        o->arch ? o->arch : "(null)");
  const struct {
    const char *flag;
    int64_t v;
  } pos[] = {{"--layers", o->layers},
             {"--hidden", o->hidden},
             {"--heads", o->heads},
             {"--kv-heads", o->kv_heads},
             {"--intermediate", o->intermediate},
             {"--vocab", o->vocab},
             {"--calib-seq-len", o->calib_seq_len}};
  for (size_t i = 0; i < sizeof pos / sizeof pos[0]; ++i)
    if (pos[i].v <= 0)
      return sq_error_set(SQ_ERR_ARG, "synth: %s must be positive (got %lld)", pos[i].flag,
                          (long long)pos[i].v);
  if (o->head_dim < 0 || o->calib_samples < 0 || o->eval_samples < 0)
    return sq_error_set(SQ_ERR_ARG,
                        "synth: --head-dim, --calib-samples and --eval-samples must "
                        "not be negative");
  if (o->heads % o->kv_heads != 0)
    return sq_error_set(SQ_ERR_ARG, "synth: --kv-heads %lld must divide --heads %lld",
                        (long long)o->kv_heads, (long long)o->heads);
  if (o->head_dim == 0 && o->hidden % o->heads != 0)
    return sq_error_set(SQ_ERR_ARG,
                        "synth: --hidden %lld is not a multiple of --heads %lld -- hint: give "
                        "--head-dim",
                        (long long)o->hidden, (long long)o->heads);
  if (o->dtype != SQ_DTYPE_BF16 && o->dtype != SQ_DTYPE_F16 && o->dtype != SQ_DTYPE_F32)
    return sq_error_set(SQ_ERR_ARG, "synth: --dtype must be bf16, fp16 or fp32");
  if (o->shards < 1 || o->shards > 99999)
    return sq_error_set(SQ_ERR_ARG, "synth: --shards must be in 1..99999 (got %d)", o->shards);
  if (o->layers > 10000 || o->hidden > (1 << 20) || o->vocab > (1 << 24) ||
      o->intermediate > (1 << 22))
    return sq_error_set(SQ_ERR_ARG,
                        "synth: sizes beyond any real model (layers <= 10000, "
                        "hidden <= 2^20, intermediate <= 2^22, vocab <= 2^24)");
  if (o->fp8_blocks && !sq_synth_arch_is_moe(o->arch))
    return sq_error_set(SQ_ERR_ARG,
                        "synth: --fp8-blocks is DeepSeek-V3's format -- hint: use --arch "
                        "deepseek_v3");
  if (!sq_synth_arch_is_moe(o->arch)) return SQ_OK;
  sq_synth_options r;
  sq_synth_resolve(o, &r);
  return sq_synth_moe_check(&r);
}

/* The Hugging Face keys each architecture's published config.json has
 * (Llama-3.1-8B, Mistral-7B-v0.3, Qwen2.5-7B), with the requested sizes. */
static json_t *sq_synth_config_json(const sq_synth_options *o) {
  int64_t hd = o->head_dim ? o->head_dim : o->hidden / o->heads;
  json_t *c = json_object();
  const char *arch = o->arch;
  int llama = strcmp(arch, "llama") == 0, qwen = strcmp(arch, "qwen2") == 0;
  json_object_set_new(c, "architectures",
                      json_pack("[s]", llama  ? "LlamaForCausalLM"
                                       : qwen ? "Qwen2ForCausalLM"
                                              : "MistralForCausalLM"));
  if (llama) json_object_set_new(c, "attention_bias", json_false());
  json_object_set_new(c, "attention_dropout", json_real(0.0));
  int64_t bos = llama  ? sq_synth_token(128000, o->vocab, 1)
                : qwen ? sq_synth_token(151643, o->vocab, 1)
                       : sq_synth_token(1, o->vocab, 1);
  int64_t eos = llama  ? sq_synth_token(128001, o->vocab, 2)
                : qwen ? sq_synth_token(151643, o->vocab, 2)
                       : sq_synth_token(2, o->vocab, 2);
  json_object_set_new(c, "bos_token_id", json_integer(bos));
  json_object_set_new(c, "eos_token_id", json_integer(eos));
  if (hd * o->heads != o->hidden) json_object_set_new(c, "head_dim", json_integer(hd));
  json_object_set_new(c, "hidden_act", json_string("silu"));
  json_object_set_new(c, "hidden_size", json_integer(o->hidden));
  json_object_set_new(c, "initializer_range", json_real(0.02));
  json_object_set_new(c, "intermediate_size", json_integer(o->intermediate));
  json_object_set_new(c, "max_position_embeddings", json_integer(llama || qwen ? 131072 : 32768));
  if (qwen) json_object_set_new(c, "max_window_layers", json_integer(o->layers));
  if (llama) json_object_set_new(c, "mlp_bias", json_false());
  json_object_set_new(c, "model_type", json_string(arch));
  json_object_set_new(c, "num_attention_heads", json_integer(o->heads));
  json_object_set_new(c, "num_hidden_layers", json_integer(o->layers));
  json_object_set_new(c, "num_key_value_heads", json_integer(o->kv_heads));
  if (llama) json_object_set_new(c, "pretraining_tp", json_integer(1));
  json_object_set_new(c, "rms_norm_eps", json_real(qwen ? 1e-6 : 1e-5));
  if (llama)
    json_object_set_new(c, "rope_scaling",
                        json_pack("{s:f,s:f,s:f,s:i,s:s}", "factor", 8.0, "low_freq_factor", 1.0,
                                  "high_freq_factor", 4.0, "original_max_position_embeddings", 8192,
                                  "rope_type", "llama3"));
  json_object_set_new(c, "rope_theta", json_real(llama ? 500000.0 : 1000000.0));
  if (qwen) json_object_set_new(c, "sliding_window", json_integer(131072));
  if (!llama && !qwen) json_object_set_new(c, "sliding_window", json_null());
  json_object_set_new(c, "tie_word_embeddings", json_boolean(o->tie_word_embeddings));
  json_object_set_new(c, "torch_dtype", json_string(sq_dtype_torch_name(o->dtype)));
  json_object_set_new(c, "transformers_version",
                      json_string(llama  ? "4.43.0.dev0"
                                  : qwen ? "4.43.1"
                                         : "4.42.0.dev0"));
  json_object_set_new(c, "use_cache", json_true());
  if (qwen) json_object_set_new(c, "use_mrope", json_false());
  if (qwen) json_object_set_new(c, "use_sliding_window", json_false());
  json_object_set_new(c, "vocab_size", json_integer(o->vocab));
  return c;
}

sq_status sq_synth_config(const sq_synth_options *o, sq_model_config *out) {
  memset(out, 0, sizeof *out);
  SQ_CHECK(sq_synth_check(o));
  sq_synth_options r;
  sq_synth_resolve(o, &r);
  json_t *c =
      sq_synth_arch_is_moe(o->arch) ? sq_synth_moe_config_json(&r) : sq_synth_config_json(o);
  char *text = c ? json_dumps(c, JSON_INDENT(2) | JSON_REAL_PRECISION(15)) : NULL;
  json_decref(c);
  if (!text) return sq_error_set(SQ_ERR_NOMEM, "synth: out of memory building config.json");
  sq_status st = sq_model_config_parse("synth config.json", text, strlen(text), out);
  free(text);
  return st;
}

/* ---- token files ---- */

sq_status sq_synth_write_ids(const char *path, int64_t samples, int64_t seq_len, int64_t vocab,
                             int64_t bos, uint64_t seed, const char *stream) {
  if (samples <= 0 || seq_len <= 0 || vocab <= 0 || vocab > INT32_MAX)
    return sq_error_set(SQ_ERR_ARG, "%s: bad token file shape [%lld, %lld] or vocab %lld", path,
                        (long long)samples, (long long)seq_len, (long long)vocab);
  size_t n = (size_t)samples * (size_t)seq_len;
  int32_t *ids = malloc(n * sizeof *ids);
  if (!ids) return sq_error_set(SQ_ERR_NOMEM, "%s: out of memory for %zu token ids", path, n);
  char name[64];
  snprintf(name, sizeof name, "%s.input_ids", stream);
  sq_rng r;
  sq_rng_init(&r, seed, name);
  for (size_t i = 0; i < n; ++i) ids[i] = (int32_t)(sq_splitmix64(&r.state) % (uint64_t)vocab);
  if (bos >= 0 && bos < vocab)
    for (int64_t s = 0; s < samples; ++s) ids[(size_t)s * (size_t)seq_len] = (int32_t)bos;
  sq_st_writer *w = NULL;
  int64_t shape[2] = {samples, seq_len};
  sq_status st;
  SQ_CHECK_GOTO(sq_st_writer_create(path, &w), st, done);
  SQ_CHECK_GOTO(sq_st_writer_set_metadata(w, "format", "pt"), st, done);
  SQ_CHECK_GOTO(sq_st_writer_declare(w, "input_ids", SQ_DTYPE_I32, 2, shape), st, done);
  SQ_CHECK_GOTO(sq_st_writer_write(w, "input_ids", ids), st, done);
  SQ_CHECK_GOTO(sq_st_writer_commit(w), st, done);
done:
  sq_st_writer_free(w);
  free(ids);
  return st;
}

/* ---- weights ---- */

static uint64_t sq_spec_nelem(const sq_tensor_spec *s) {
  uint64_t n = 1;
  for (int d = 0; d < s->ndim; ++d) n *= (uint64_t)s->shape[d];
  return n;
}

/* Fill rows [r0, r0+nr) of tensor s (row length cols) into f. The stream r is
 * consumed in row order, so chunking does not change the values. */
void sq_synth_rows(const sq_tensor_spec *s, sq_rng *r, const uint8_t *outlier, const float *dirs,
                   int64_t cols, int64_t nr, float *f) {
  float inv = 1.0f / sqrtf((float)cols);
  for (int64_t i = 0; i < nr; ++i) {
    float *row = f + i * cols;
    switch (s->role) {
      case SQ_ROLE_NORM:
        for (int64_t c = 0; c < cols; ++c) row[c] = 1.0f + 0.05f * sq_rng_normal(r);
        break;
      case SQ_ROLE_BIAS:
        for (int64_t c = 0; c < cols; ++c) row[c] = 0.02f * sq_rng_normal(r);
        break;
      case SQ_ROLE_EMBED: {
        float z[4];
        for (int k = 0; k < 4; ++k) z[k] = sq_rng_normal(r);
        for (int64_t c = 0; c < cols; ++c) {
          float mix = 0;
          for (int k = 0; k < 4; ++k) mix += z[k] * dirs[(size_t)k * (size_t)cols + (size_t)c];
          row[c] = inv * (0.6f * sq_rng_normal(r) + 0.4f * mix);
        }
        break;
      }
      case SQ_ROLE_LINEAR:
        for (int64_t c = 0; c < cols; ++c)
          row[c] = inv * sq_rng_normal(r) * (outlier[c] ? 10.0f : 1.0f);
        break;
      case SQ_ROLE_LM_HEAD:
      case SQ_ROLE_ROUTER: /* dense synth models have none */
        for (int64_t c = 0; c < cols; ++c) row[c] = inv * sq_rng_normal(r);
        break;
    }
  }
}

/* 1% of the input columns (at least one), drawn from the stream before the weights. */
void sq_synth_outliers(sq_rng *r, int64_t cols, uint8_t *outlier) {
  memset(outlier, 0, (size_t)cols);
  int64_t k = cols / 100 > 0 ? cols / 100 : 1;
  for (int64_t i = 0; i < k; ++i) outlier[sq_splitmix64(&r->state) % (uint64_t)cols] = 1;
}

/* Generate tensor s into w->buf in dtype dt (fp8: codes in w->buf, block scales
 * in w->scales). */
static sq_status sq_synth_tensor(const sq_tensor_spec *s, sq_dtype dt, uint64_t seed,
                                 sq_synth_work *w) {
  sq_rng r;
  sq_rng_init(&r, seed, s->name);
  size_t es = sq_dtype_size(dt);
  if (s->ndim == 3) return sq_synth_moe_gen_fused(s, dt, &r, w); /* llama4 */
  int64_t rows = s->ndim == 2 ? s->shape[0] : 1;
  int64_t cols = s->ndim == 2 ? s->shape[1] : s->shape[0];
  if (s->role == SQ_ROLE_LINEAR) sq_synth_outliers(&r, cols, w->outlier);
  if (dt == SQ_DTYPE_F8_E4M3) { /* deepseek_v3 --fp8-blocks */
    sq_synth_moe_gen_fp8(s, &r, rows, cols, w);
    return SQ_OK;
  }
  int64_t per = (int64_t)(w->chunk_elems / (size_t)cols);
  if (per < 1) per = 1;
  for (int64_t r0 = 0; r0 < rows; r0 += per) {
    int64_t nr = rows - r0 < per ? rows - r0 : per;
    sq_synth_rows(s, &r, w->outlier, w->dirs, cols, nr, w->chunk);
    size_t n = (size_t)nr * (size_t)cols;
    if (sq_dtype_convert_from_f32(dt, w->chunk, w->buf + (size_t)r0 * (size_t)cols * es, n) != 0)
      return sq_error_set(SQ_ERR_INTERNAL, "synth: cannot convert to %s", sq_dtype_name(dt));
  }
  return SQ_OK;
}

/* Assign tensors to shards in order, each shard taking about an equal share
 * of the bytes not yet assigned, and every shard at least one tensor. */
static void sq_synth_assign(const uint64_t *bytes, size_t n, int shards, int *shard_of) {
  uint64_t left = 0;
  for (size_t i = 0; i < n; ++i) left += bytes[i];
  int s = 0;
  uint64_t acc = 0, target = left / (uint64_t)shards;
  for (size_t i = 0; i < n; ++i) {
    shard_of[i] = s;
    acc += bytes[i];
    size_t tensors_after = n - i - 1;
    int shards_after = shards - s - 1;
    if (shards_after > 0 && (acc >= target || tensors_after == (size_t)shards_after)) {
      left -= acc;
      acc = 0;
      ++s;
      target = left / (uint64_t)(shards - s);
    }
  }
}

static char *sq_synth_shard_name(int k, int shards) {
  char name[64];
  if (shards == 1)
    snprintf(name, sizeof name, "model.safetensors");
  else
    snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", k + 1, shards);
  return strdup(name);
}

/* Remove the weight files of an earlier synth run with another shard count, so
 * that the directory holds one layout only (a leftover model.safetensors next
 * to an index would be ambiguous). Only names synth itself writes are touched. */
static sq_status sq_synth_remove_stale(const char *dir, int shards) {
  DIR *d = opendir(dir);
  if (!d) return sq_error_errno(dir, "cannot list directory");
  sq_status st = SQ_OK;
  struct dirent *e;
  while (st == SQ_OK && (e = readdir(d)) != NULL) {
    int k = 0, n = 0, end = 0;
    int stale = 0;
    if (strcmp(e->d_name, "model.safetensors") == 0)
      stale = shards != 1;
    else if (strcmp(e->d_name, "model.safetensors.index.json") == 0)
      stale = shards == 1;
    else if (sscanf(e->d_name, "model-%5d-of-%5d.safetensors%n", &k, &n, &end) == 2 &&
             e->d_name[end] == '\0')
      stale = n != shards;
    if (!stale) continue;
    char *p = sq_fs_join(dir, e->d_name);
    if (!p)
      st = sq_error_set(SQ_ERR_NOMEM, "out of memory listing %s", dir);
    else if (unlink(p) != 0)
      st = sq_error_errno(p, "cannot remove stale file");
    free(p);
  }
  closedir(d);
  return st;
}

sq_status sq_synth_write(const char *dir, const sq_synth_options *o_in) {
  sq_model_config cfg;
  sq_tensor_spec *specs = NULL;
  size_t n = 0;
  SQ_CHECK(sq_synth_config(o_in, &cfg));
  sq_synth_options ro;
  sq_synth_resolve(o_in, &ro);
  const sq_synth_options *o = &ro;
  sq_status st = SQ_OK;
  uint64_t *bytes = NULL;
  int *shard_of = NULL;
  char **files = NULL, **scale_names = NULL;
  const char **names = NULL, **name_files = NULL;
  sq_st_writer **writers = NULL;
  sq_synth_work w = {0};
  char *path = NULL;
  double t0 = sq_time_now();

  SQ_CHECK_GOTO(sq_fs_mkdirs(dir), st, done);
  SQ_CHECK_GOTO(sq_model_config_save(&cfg, dir), st, done);
  SQ_CHECK_GOTO(sq_model_config_tensors(&cfg, &specs, &n), st, done);
  if ((size_t)o->shards > n) {
    st = sq_error_set(SQ_ERR_ARG, "synth: --shards %d exceeds the %zu tensors", o->shards, n);
    goto done;
  }

  /* Sizes first, then every allocation once. An fp8 weight's bytes include its
   * scale tensor, which goes to the same shard right after it. */
  size_t largest = 0, max_cols = 1, max_scales = 1, n_names = n;
  uint64_t total = 0;
  w.chunk_elems = 1u << 16;
  bytes = calloc(n, sizeof *bytes);
  shard_of = calloc(n, sizeof *shard_of);
  scale_names = calloc(n, sizeof *scale_names);
  files = calloc((size_t)o->shards, sizeof *files);
  writers = calloc((size_t)o->shards, sizeof *writers);
  names = calloc(2 * n, sizeof *names);
  name_files = calloc(2 * n, sizeof *name_files);
  if (!bytes || !shard_of || !scale_names || !files || !writers || !names || !name_files)
    goto nomem;
  for (size_t i = 0; i < n; ++i) {
    const sq_tensor_spec *sp = &specs[i];
    bytes[i] = sq_spec_nelem(sp) * sq_dtype_size(sq_synth_dtype(sp, o));
    if (bytes[i] > largest) largest = (size_t)bytes[i];
    size_t cols = (size_t)(sp->ndim >= 2 ? sp->shape[1] : sp->shape[0]);
    if (cols > max_cols) max_cols = cols;
    if (sp->ndim == 3 && (size_t)(sp->shape[1] * sp->shape[2]) > w.chunk_elems)
      w.chunk_elems = (size_t)(sp->shape[1] * sp->shape[2]);
    if (sq_synth_is_fp8(sp, o)) {
      size_t ns = (size_t)(sq_fp8_block_count(sp->shape[0], SQ_FP8_BLOCK_DEFAULT) *
                           sq_fp8_block_count(sp->shape[1], SQ_FP8_BLOCK_DEFAULT));
      bytes[i] += ns * sizeof(float);
      if (ns > max_scales) max_scales = ns;
      if (sq_spec_nelem(sp) > w.chunk_elems) w.chunk_elems = (size_t)sq_spec_nelem(sp);
      char sname[sizeof sp->name + 16];
      SQ_CHECK_GOTO(sq_fp8_block_scale_name(sp->name, sname, sizeof sname), st, done);
      if (!(scale_names[i] = strdup(sname))) goto nomem;
      n_names++;
    }
    total += bytes[i];
  }
  if (max_cols > w.chunk_elems) w.chunk_elems = max_cols;
  w.buf = malloc(largest);
  w.chunk = malloc(w.chunk_elems * sizeof *w.chunk);
  w.tr = malloc(w.chunk_elems * sizeof *w.tr);
  w.outlier = malloc(max_cols);
  w.dirs = malloc(4 * (size_t)cfg.hidden_size * sizeof *w.dirs);
  w.scales = malloc(max_scales * sizeof *w.scales);
  if (!w.buf || !w.chunk || !w.tr || !w.outlier || !w.dirs || !w.scales) goto nomem;
  sq_rng dr;
  sq_rng_init(&dr, o->seed, "embed_directions");
  for (size_t i = 0; i < 4 * (size_t)cfg.hidden_size; ++i) w.dirs[i] = sq_rng_normal(&dr);

  /* Declare every tensor in its shard, then generate and write one at a time. */
  sq_synth_assign(bytes, n, o->shards, shard_of);
  for (int k = 0; k < o->shards; ++k) {
    files[k] = sq_synth_shard_name(k, o->shards);
    free(path);
    path = files[k] ? sq_fs_join(dir, files[k]) : NULL;
    if (!path) goto nomem;
    SQ_CHECK_GOTO(sq_st_writer_create(path, &writers[k]), st, done);
    SQ_CHECK_GOTO(sq_st_writer_set_metadata(writers[k], "format", "pt"), st, done);
  }
  size_t nn = 0;
  for (size_t i = 0; i < n; ++i) {
    sq_st_writer *wr = writers[shard_of[i]];
    SQ_CHECK_GOTO(sq_st_writer_declare(wr, specs[i].name, sq_synth_dtype(&specs[i], o),
                                       specs[i].ndim, specs[i].shape),
                  st, done);
    names[nn] = specs[i].name;
    name_files[nn++] = files[shard_of[i]];
    if (scale_names[i]) {
      int64_t ss[2] = {sq_fp8_block_count(specs[i].shape[0], SQ_FP8_BLOCK_DEFAULT),
                       sq_fp8_block_count(specs[i].shape[1], SQ_FP8_BLOCK_DEFAULT)};
      SQ_CHECK_GOTO(sq_st_writer_declare(wr, scale_names[i], SQ_DTYPE_F32, 2, ss), st, done);
      names[nn] = scale_names[i];
      name_files[nn++] = files[shard_of[i]];
    }
  }
  uint64_t done_bytes = 0;
  char b1[32], b2[32];
  for (size_t i = 0; i < n; ++i) {
    sq_st_writer *wr = writers[shard_of[i]];
    SQ_CHECK_GOTO(sq_synth_tensor(&specs[i], sq_synth_dtype(&specs[i], o), o->seed, &w), st, done);
    SQ_CHECK_GOTO(sq_st_writer_write(wr, specs[i].name, w.buf), st, done);
    if (scale_names[i]) SQ_CHECK_GOTO(sq_st_writer_write(wr, scale_names[i], w.scales), st, done);
    done_bytes += bytes[i];
    if (i + 1 == n || shard_of[i + 1] != shard_of[i])
      SQ_CHECK_GOTO(sq_st_writer_commit(wr), st, done);
    int last_of_layer = i + 1 == n || specs[i + 1].layer != specs[i].layer;
    if (o->progress && last_of_layer && specs[i].layer >= 0)
      fprintf(stderr, "synth: layer %d/%lld written (%s of %s, %.1f s)\n", specs[i].layer + 1,
              (long long)cfg.num_hidden_layers, sq_format_bytes(done_bytes, b1, sizeof b1),
              sq_format_bytes(total, b2, sizeof b2), sq_time_now() - t0);
  }
  if (o->shards > 1)
    SQ_CHECK_GOTO(sq_ckpt_write_index(dir, n_names, names, name_files, total), st, done);
  SQ_CHECK_GOTO(sq_synth_remove_stale(dir, o->shards), st, done);

  int64_t bos = cfg.bos_token_id;
  if (o->calib_samples > 0) {
    free(path);
    if (!(path = sq_fs_join(dir, "calib.safetensors"))) goto nomem;
    SQ_CHECK_GOTO(sq_synth_write_ids(path, o->calib_samples, o->calib_seq_len, o->vocab, bos,
                                     o->seed, "calib"),
                  st, done);
  }
  if (o->eval_samples > 0) {
    free(path);
    if (!(path = sq_fs_join(dir, "eval.safetensors"))) goto nomem;
    SQ_CHECK_GOTO(
        sq_synth_write_ids(path, o->eval_samples, o->calib_seq_len, o->vocab, bos, o->seed, "eval"),
        st, done);
  }
  if (o->progress)
    fprintf(stderr, "synth: %s: %s%s, %lld layers, %zu tensors, %s in %d shard(s), %.1f s\n", dir,
            o->arch, o->fp8_blocks ? " (fp8 block-scaled)" : "", (long long)cfg.num_hidden_layers,
            n_names, sq_format_bytes(total, b1, sizeof b1), o->shards, sq_time_now() - t0);
  goto done;
nomem:
  st = sq_error_set(SQ_ERR_NOMEM, "synth: out of memory writing %s", dir);
done:
  if (writers)
    for (int k = 0; k < o->shards; ++k) sq_st_writer_free(writers[k]);
  if (files)
    for (int k = 0; k < o->shards; ++k) free(files[k]);
  if (scale_names)
    for (size_t i = 0; i < n; ++i) free(scale_names[i]);
  free(scale_names);
  free(writers);
  free(files);
  free(names);
  free(name_files);
  free(bytes);
  free(shard_of);
  free(path);
  free(w.buf);
  free(w.chunk);
  free(w.tr);
  free(w.outlier);
  free(w.dirs);
  free(w.scales);
  free(specs);
  sq_model_config_free(&cfg);
  return st;
}
