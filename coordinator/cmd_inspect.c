/* shardq inspect: what a checkpoint directory holds (architecture, layers,
 * parameters, dtype, bytes on disk, largest tensors), its size under BF16, W8
 * (INT8/FP8) and W4A16 g128, the 80 GB GPUs each needs, and the KV cache per
 * token. A directory with only config.json is sized from the config's tensor
 * list (sharding/model_config.h). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/fsio.h"
#include "common/log.h"
#include "coordinator/cli.h"
#include "sharding/checkpoint.h"
#include "sharding/model_config.h"

#define SQ_INSPECT_TOP 5
#define SQ_GPU_BYTES 80e9
#define SQ_GPU_OVERHEAD 1.2

/* One tensor as inspect sees it, from a checkpoint header or a config. */
typedef struct {
  const char *name;
  sq_dtype dtype;
  int ndim;
  const int64_t *shape;
  uint64_t nelem;
} sq_insp_tensor;

typedef struct {
  uint64_t params, tensors;
  uint64_t bf16, w8, w4; /* bytes under each scheme */
  uint64_t dtype_bytes[SQ_DTYPE_COUNT];
  sq_insp_tensor top[SQ_INSPECT_TOP];
  int ntop;
} sq_insp_sums;

static uint64_t sq_insp_bytes(const sq_insp_tensor *t) {
  return t->nelem * sq_dtype_size(t->dtype);
}

/* Linear weights (rows, cols) = (d_out, d_in): W8 keeps 1 byte per weight and
 * a bf16 scale per output channel; W4A16 g128 half a byte per weight and a
 * bf16 scale per 128 inputs of each row. Everything else stays 2 bytes. */
static void sq_insp_add(sq_insp_sums *s, const sq_insp_tensor *t) {
  s->params += t->nelem;
  s->tensors++;
  s->bf16 += 2 * t->nelem;
  if (t->dtype > SQ_DTYPE_INVALID && t->dtype < SQ_DTYPE_COUNT)
    s->dtype_bytes[t->dtype] += sq_insp_bytes(t);
  if (sq_tensor_role_of(t->name, t->ndim) == SQ_ROLE_LINEAR && t->nelem > 0) {
    /* 2-D (d_out, d_in); 3-D fused expert stacks (Llama-4) are (E, d_in, d_out). */
    uint64_t cols = (uint64_t)t->shape[t->ndim == 3 ? 1 : t->ndim - 1], rows = t->nelem / cols;
    s->w8 += rows * cols + rows * 2;
    s->w4 += (rows * cols + 1) / 2 + rows * ((cols + 127) / 128) * 2;
  } else {
    s->w8 += 2 * t->nelem;
    s->w4 += 2 * t->nelem;
  }
  /* Keep the SQ_INSPECT_TOP largest by bytes (ties: first seen). */
  int pos = s->ntop;
  while (pos > 0 && sq_insp_bytes(&s->top[pos - 1]) < sq_insp_bytes(t)) --pos;
  if (pos >= SQ_INSPECT_TOP) return;
  int last = s->ntop < SQ_INSPECT_TOP ? s->ntop : SQ_INSPECT_TOP - 1;
  memmove(&s->top[pos + 1], &s->top[pos], (size_t)(last - pos) * sizeof s->top[0]);
  s->top[pos] = *t;
  if (s->ntop < SQ_INSPECT_TOP) s->ntop++;
}

static uint64_t sq_insp_gpus(uint64_t bytes) {
  double need = (double)bytes * SQ_GPU_OVERHEAD / SQ_GPU_BYTES;
  uint64_t n = (uint64_t)need;
  return (double)n < need ? n + 1 : n;
}

static int sq_insp_exists(const char *dir, const char *name) {
  char *p = sq_fs_join(dir, name);
  struct stat sb;
  int ok = p && stat(p, &sb) == 0;
  free(p);
  return ok;
}

static void sq_insp_usage(FILE *out) {
  fprintf(out,
          "usage: shardq inspect DIR [--json]\n\n"
          "Shows what a Hugging Face checkpoint directory holds: architecture, layers,\n"
          "parameter count, dtype, bytes of the safetensors shards on disk, the %d largest\n"
          "tensors, and the size of the weights under each scheme with the number of 80 GB\n"
          "GPUs needed (ceil(bytes x %.1f / 80e9), 20%% overhead):\n"
          "  BF16        2 bytes per parameter\n"
          "  W8          INT8 or FP8 weights: 1 byte per Linear weight + a bf16 scale per\n"
          "              output channel; embeddings, lm_head, routers and norms stay bf16\n"
          "  W4A16 g128  0.5 byte per Linear weight + a bf16 scale per 128 weights of a row;\n"
          "              embeddings, lm_head, routers and norms stay bf16\n"
          "and the bf16 KV cache per token (2 x layers x kv_heads x head_dim x 2 bytes;\n"
          "for MLA, layers x (kv_lora_rank + qk_rope_head_dim) x 2 bytes).\n"
          "DIR may hold only config.json (or be a config.json path): the tensors are then\n"
          "listed from the config (llama, mistral, qwen2, mixtral, deepseek_v3 without its\n"
          "MTP layer, llama4's text model) and the output says so.\n\n"
          "options:\n"
          "  --json      print the same as one JSON object on stdout\n"
          "  -h, --help  this text\n",
          SQ_INSPECT_TOP, SQ_GPU_OVERHEAD);
}

static json_t *sq_insp_scheme_json(uint64_t bytes) {
  return json_pack("{s:I,s:I}", "bytes", (json_int_t)bytes, "gpus_80gb",
                   (json_int_t)sq_insp_gpus(bytes));
}

static void sq_insp_print_json(const char *dir, int from_ckpt, const sq_model_config *c,
                               const sq_insp_sums *s, int have_sums, sq_dtype dtype,
                               uint64_t on_disk, uint64_t kv) {
  json_t *o = json_object();
  json_object_set_new(o, "dir", json_string(dir));
  json_object_set_new(o, "source", json_string(from_ckpt ? "checkpoint" : "config"));
  json_object_set_new(o, "model_type", json_string(c->model_type));
  json_object_set_new(o, "architecture", json_string(c->architecture));
  json_object_set_new(o, "family", json_string(sq_model_family_name(c->family)));
  json_object_set_new(o, "layers", json_integer(c->num_hidden_layers));
  json_object_set_new(o, "hidden_size", json_integer(c->hidden_size));
  json_object_set_new(o, "intermediate_size", json_integer(c->intermediate_size));
  json_object_set_new(o, "num_attention_heads", json_integer(c->num_attention_heads));
  json_object_set_new(o, "num_key_value_heads", json_integer(c->num_key_value_heads));
  json_object_set_new(o, "head_dim", json_integer(c->head_dim));
  json_object_set_new(o, "vocab_size", json_integer(c->vocab_size));
  json_object_set_new(o, "tie_word_embeddings", json_boolean(c->tie_word_embeddings));
  json_object_set_new(o, "num_experts", json_integer(c->num_experts));
  json_object_set_new(o, "dtype", dtype ? json_string(sq_dtype_name(dtype)) : json_null());
  json_object_set_new(o, "bytes_on_disk",
                      from_ckpt ? json_integer((json_int_t)on_disk) : json_null());
  json_object_set_new(o, "kv_cache_bytes_per_token", json_integer((json_int_t)kv));
  if (have_sums) {
    json_object_set_new(o, "parameters", json_integer((json_int_t)s->params));
    json_object_set_new(o, "tensors", json_integer((json_int_t)s->tensors));
    json_t *top = json_array();
    for (int i = 0; i < s->ntop; ++i) {
      json_t *shape = json_array();
      for (int d = 0; d < s->top[i].ndim; ++d)
        json_array_append_new(shape, json_integer(s->top[i].shape[d]));
      json_array_append_new(top, json_pack("{s:s,s:o,s:s,s:I}", "name", s->top[i].name, "shape",
                                           shape, "dtype", sq_dtype_name(s->top[i].dtype), "bytes",
                                           (json_int_t)sq_insp_bytes(&s->top[i])));
    }
    json_object_set_new(o, "largest_tensors", top);
    json_object_set_new(
        o, "schemes",
        json_pack("{s:o,s:o,s:o}", "bf16", sq_insp_scheme_json(s->bf16), "w8",
                  sq_insp_scheme_json(s->w8), "w4a16_g128", sq_insp_scheme_json(s->w4)));
  } else {
    json_object_set_new(o, "parameters", json_null());
    json_object_set_new(o, "note", json_string(sq_error_message()));
  }
  char *text = json_dumps(o, JSON_INDENT(2));
  if (text) printf("%s\n", text);
  free(text);
  json_decref(o);
}

static void sq_insp_print_text(const char *dir, int from_ckpt, size_t nshards,
                               const sq_model_config *c, const sq_insp_sums *s, int have_sums,
                               sq_dtype dtype, uint64_t on_disk, uint64_t kv) {
  char b[32];
  printf("%s\n", dir);
  if (from_ckpt)
    printf("  source        checkpoint (%zu safetensors file%s)\n", nshards,
           nshards == 1 ? "" : "s");
  else
    printf("  source        config.json only: sizes computed from the config, no weights read\n");
  printf("  architecture  %s (model_type %s, family %s)\n",
         c->architecture[0] ? c->architecture : "?", c->model_type,
         sq_model_family_name(c->family));
  printf(
      "  layers        %lld (hidden %lld, heads %lld, kv heads %lld, head_dim %lld, "
      "intermediate %lld, vocab %lld%s)\n",
      (long long)c->num_hidden_layers, (long long)c->hidden_size, (long long)c->num_attention_heads,
      (long long)c->num_key_value_heads, (long long)c->head_dim, (long long)c->intermediate_size,
      (long long)c->vocab_size, c->tie_word_embeddings ? ", tied embeddings" : "");
  if (c->num_experts) {
    /* Qwen2-MoE has one shared expert sized by shared_expert_intermediate_size
     * rather than an n_shared_experts count. */
    long long shared = c->n_shared_experts ? (long long)c->n_shared_experts
                                           : (c->shared_expert_intermediate_size > 0 ? 1 : 0);
    printf("  experts       %lld routed, %lld per token, %lld shared\n", (long long)c->num_experts,
           (long long)c->num_experts_per_tok, shared);
  }
  printf("  dtype         %s\n", dtype ? sq_dtype_name(dtype) : "?");
  if (from_ckpt)
    printf("  on disk       %s (%llu bytes)\n", sq_format_bytes(on_disk, b, sizeof b),
           (unsigned long long)on_disk);
  printf("  KV cache      %llu bytes per token (%s, all layers)\n", (unsigned long long)kv,
         c->kv_lora_rank > 0 ? "bf16 MLA latent + rope key" : "bf16 K and V");
  if (!have_sums) {
    printf("  parameters    unknown: %s\n", sq_error_message());
    return;
  }
  printf("  parameters    %llu in %llu tensors\n", (unsigned long long)s->params,
         (unsigned long long)s->tensors);
  printf("  largest tensors:\n");
  for (int i = 0; i < s->ntop; ++i) {
    char shape[96] = "";
    size_t off = 0;
    for (int d = 0; d < s->top[i].ndim && off < sizeof shape; ++d)
      off += (size_t)snprintf(shape + off, sizeof shape - off, "%s%lld", d ? ", " : "",
                              (long long)s->top[i].shape[d]);
    printf("    %-48s [%s] %s %s\n", s->top[i].name, shape, sq_dtype_name(s->top[i].dtype),
           sq_format_bytes(sq_insp_bytes(&s->top[i]), b, sizeof b));
  }
  printf("  weights under each scheme (80 GB GPUs needed with 20%% overhead):\n");
  const struct {
    const char *name;
    uint64_t bytes;
  } rows[] = {{"BF16", s->bf16}, {"W8 (INT8/FP8)", s->w8}, {"W4A16 g128", s->w4}};
  for (int i = 0; i < 3; ++i)
    printf("    %-14s %12s  %llu bytes  %llu GPU%s\n", rows[i].name,
           sq_format_bytes(rows[i].bytes, b, sizeof b), (unsigned long long)rows[i].bytes,
           (unsigned long long)sq_insp_gpus(rows[i].bytes),
           sq_insp_gpus(rows[i].bytes) == 1 ? "" : "s");
}

int sq_cmd_inspect(int argc, char **argv) {
  const char *dir = NULL;
  int as_json = 0;
  for (int i = 1; i < argc; ++i) {
    if (sq_cli_is_help(argv[i])) {
      sq_insp_usage(stdout);
      return SQ_EXIT_OK;
    }
    if (strcmp(argv[i], "--json") == 0)
      as_json = 1;
    else if (argv[i][0] == '-' || dir) {
      fprintf(stderr, "shardq inspect: unexpected argument '%s' (see --help)\n", argv[i]);
      return SQ_EXIT_USAGE;
    } else
      dir = argv[i];
  }
  if (!dir) {
    sq_insp_usage(stderr);
    return SQ_EXIT_USAGE;
  }
  sq_model_config cfg;
  sq_ckpt *ck = NULL;
  sq_tensor_spec *specs = NULL;
  size_t nspecs = 0;
  sq_insp_sums sums;
  memset(&sums, 0, sizeof sums);
  sq_status st = sq_model_config_load(dir, &cfg);
  if (st != SQ_OK) return sq_cli_report("inspect", st, -1);

  size_t dl = strlen(dir);
  int is_file = dl >= 5 && strcmp(dir + dl - 5, ".json") == 0;
  int from_ckpt = !is_file && (sq_insp_exists(dir, "model.safetensors") ||
                               sq_insp_exists(dir, "model.safetensors.index.json"));
  int have_sums = 1;
  sq_dtype dtype = cfg.torch_dtype;
  uint64_t on_disk = 0;
  size_t nshards = 0;
  if (from_ckpt) {
    SQ_CHECK_GOTO(sq_ckpt_open(dir, &ck), st, done);
    const sq_st_file *prev = NULL;
    for (size_t i = 0; i < sq_ckpt_count(ck); ++i) {
      const sq_st_file *f = NULL;
      const sq_st_tensor *t = sq_ckpt_at(ck, i, &f);
      if (f != prev) nshards++;
      prev = f;
      sq_insp_tensor it = {t->name, t->dtype, t->ndim, t->shape, t->nelem};
      sq_insp_add(&sums, &it);
    }
    on_disk = sq_ckpt_bytes_on_disk(ck);
    uint64_t best = 0; /* the dtype holding the most bytes */
    for (int d = 1; d < SQ_DTYPE_COUNT; ++d)
      if (sums.dtype_bytes[d] > best) {
        best = sums.dtype_bytes[d];
        dtype = (sq_dtype)d;
      }
  } else if (sq_model_config_tensors(&cfg, &specs, &nspecs) == SQ_OK) {
    sq_dtype dt = dtype != SQ_DTYPE_INVALID ? dtype : SQ_DTYPE_BF16;
    for (size_t i = 0; i < nspecs; ++i) {
      uint64_t ne = 1;
      for (int d = 0; d < specs[i].ndim; ++d) ne *= (uint64_t)specs[i].shape[d];
      sq_insp_tensor it = {specs[i].name, dt, specs[i].ndim, specs[i].shape, ne};
      sq_insp_add(&sums, &it);
    }
  } else {
    have_sums = 0; /* MoE / other: the message says why */
  }
  /* MLA (DeepSeek) caches the compressed latent and the rope key instead. */
  uint64_t kv = cfg.kv_lora_rank > 0
                    ? (uint64_t)cfg.num_hidden_layers *
                          (uint64_t)(cfg.kv_lora_rank + cfg.qk_rope_head_dim) * 2ull
                    : 2ull * (uint64_t)cfg.num_hidden_layers * (uint64_t)cfg.num_key_value_heads *
                          (uint64_t)cfg.head_dim * 2ull;
  if (as_json)
    sq_insp_print_json(dir, from_ckpt, &cfg, &sums, have_sums, dtype, on_disk, kv);
  else
    sq_insp_print_text(dir, from_ckpt, nshards, &cfg, &sums, have_sums, dtype, on_disk, kv);
  if (!have_sums) sq_error_clear();
done:
  free(specs);
  if (ck) sq_ckpt_close(ck);
  sq_model_config_free(&cfg);
  return sq_cli_report("inspect", st, -1);
}
