/* shardq synth: write a synthetic checkpoint of a real architecture (config.json,
 * safetensors shards and index) plus calibration and evaluation token ids. The
 * work is sq_synth_write (sharding/synth.h); this file parses the flags. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/cli.h"
#include "sharding/synth.h"

static void sq_synth_usage(FILE *out) {
  sq_synth_options d;
  sq_synth_options_default(&d);
  fprintf(
      out,
      "usage: shardq synth --out DIR [options]\n\n"
      "Writes a synthetic Hugging Face checkpoint with the config.json keys of a real\n"
      "architecture, deterministic in --seed (splitmix64 + Box-Muller, see sharding/synth.h):\n"
      "  DIR/config.json\n"
      "  DIR/model.safetensors (1 shard) or DIR/model-0000k-of-0000N.safetensors\n"
      "      + DIR/model.safetensors.index.json\n"
      "  DIR/calib.safetensors, DIR/eval.safetensors: int32 input_ids [samples, seq_len],\n"
      "      uniform token ids, first token = bos\n"
      "Linear weights are N(0, 1/d_in) with 1%% of input columns x10 (outliers), norms\n"
      "1 + N(0, 0.05^2), embeddings with correlated channels. Tensors are generated and\n"
      "written one at a time (peak memory: the largest tensor).\n\n"
      "options (defaults in brackets):\n"
      "  --out DIR              output directory (created if missing; files replaced)\n"
      "  --arch A               llama | mistral | qwen2 | mixtral | qwen2_moe | qwen3_moe |\n"
      "                         deepseek_v3 | llama4 [%s]\n"
      "  --layers N             decoder layers [%lld]\n"
      "  --hidden H             hidden size [%lld]\n"
      "  --heads A              attention heads [%lld]\n"
      "  --kv-heads K           key/value heads, must divide --heads [%lld]\n"
      "  --intermediate I       MLP intermediate size [%lld]\n"
      "  --vocab V              vocabulary size [%lld]\n"
      "  --head-dim D           head dimension [hidden / heads]\n"
      "  --tie                  tie lm_head to the embeddings (no lm_head.weight)\n"
      "  --dtype T              bf16 | fp16 | fp32 [bf16]\n"
      "  --shards N             number of safetensors shards [%d]\n"
      "  --seed S               seed of every stream [%llu]\n"
      "  --calib-samples N      calibration samples, 0 for none [%lld]\n"
      "  --calib-seq-len T      tokens per sample (calibration and evaluation) [%lld]\n"
      "  --eval-samples N       evaluation samples, 0 for none [%lld]\n"
      "  -q, --quiet            no progress lines on stderr\n\n"
      "MoE / MLA options (mixtral, qwen2_moe, qwen3_moe, deepseek_v3, llama4; 0 = default):\n"
      "  --experts E            routed experts [8]\n"
      "  --experts-per-tok K    experts per token [2; llama4 1]\n"
      "  --moe-intermediate F   routed (and llama4 shared) expert size [intermediate/2];\n"
      "                         mixtral's experts use --intermediate\n"
      "  --shared-intermediate S  qwen2_moe shared expert size [intermediate]\n"
      "  --n-shared-experts N   deepseek_v3 shared experts [1]\n"
      "  --first-k-dense N      deepseek_v3 leading dense layers [1]\n"
      "  --moe-step N           every N-th layer is MoE (llama4 interleave_moe_layer_step,\n"
      "                         qwen decoder_sparse_step) [llama4 2, else 1]; the others\n"
      "                         are dense of --intermediate\n"
      "  --n-group G, --topk-group G  deepseek_v3 group-limited routing [4 or 1, G/2]\n"
      "  --q-lora-rank R, --kv-lora-rank R  deepseek_v3 MLA ranks [hidden/2, hidden/4]\n"
      "  --qk-nope-dim D, --qk-rope-dim D, --v-head-dim D  MLA head dims\n"
      "                         [head_dim, head_dim/2 (even), head_dim]\n"
      "  --fp8-blocks           deepseek_v3: store the layers' Linear weights as F8_E4M3 with\n"
      "                         <name>_scale_inv F32 128x128 block scales and DeepSeek's\n"
      "                         quantization_config, as the released checkpoint\n\n"
      "Tiny MoE examples:\n"
      "  shardq synth --out ds --arch deepseek_v3 --layers 3 --hidden 64 --heads 4 --fp8-blocks\n"
      "  shardq synth --out l4 --arch llama4 --layers 4 --hidden 64 --heads 4 --kv-heads 2\n\n"
      "A realistic size, e.g. Llama-3.1-8B's shapes (about 16 GB in bf16):\n"
      "  shardq synth --out d --layers 32 --hidden 4096 --heads 32 --kv-heads 8 \\\n"
      "               --intermediate 14336 --vocab 128256 --shards 4\n",
      d.arch, (long long)d.layers, (long long)d.hidden, (long long)d.heads, (long long)d.kv_heads,
      (long long)d.intermediate, (long long)d.vocab, d.shards, (unsigned long long)d.seed,
      (long long)d.calib_samples, (long long)d.calib_seq_len, (long long)d.eval_samples);
}

static int sq_parse_i64(const char *flag, const char *s, int64_t *out) {
  char *end = NULL;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || !end || end == s || *end) {
    fprintf(stderr, "shardq synth: %s needs an integer (got '%s')\n", flag, s);
    return 0;
  }
  *out = v;
  return 1;
}

/* The MoE / MLA size flags; 0 when a is none of them. */
static int sq_synth_moe_flag(sq_synth_options *o, const char *a, int64_t x) {
  const struct {
    const char *flag;
    int64_t *dst;
  } f[] = {{"--experts", &o->experts},
           {"--experts-per-tok", &o->experts_per_tok},
           {"--moe-intermediate", &o->moe_intermediate},
           {"--shared-intermediate", &o->shared_intermediate},
           {"--n-shared-experts", &o->n_shared_experts},
           {"--first-k-dense", &o->first_k_dense},
           {"--moe-step", &o->moe_step},
           {"--n-group", &o->n_group},
           {"--topk-group", &o->topk_group},
           {"--q-lora-rank", &o->q_lora_rank},
           {"--kv-lora-rank", &o->kv_lora_rank},
           {"--qk-nope-dim", &o->qk_nope_dim},
           {"--qk-rope-dim", &o->qk_rope_dim},
           {"--v-head-dim", &o->v_head_dim}};
  for (size_t i = 0; i < sizeof f / sizeof f[0]; ++i)
    if (strcmp(a, f[i].flag) == 0) {
      *f[i].dst = x;
      return 1;
    }
  return 0;
}

int sq_cmd_synth(int argc, char **argv) {
  sq_synth_options o;
  sq_synth_options_default(&o);
  const char *out = NULL;
  for (int i = 1; i < argc; ++i) {
    const char *a = argv[i];
    if (sq_cli_is_help(a)) {
      sq_synth_usage(stdout);
      return SQ_EXIT_OK;
    }
    if (strcmp(a, "--tie") == 0) {
      o.tie_word_embeddings = true;
      continue;
    }
    if (strcmp(a, "--fp8-blocks") == 0) {
      o.fp8_blocks = true;
      continue;
    }
    if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
      o.progress = false;
      continue;
    }
    if (i + 1 >= argc || strncmp(a, "--", 2) != 0) {
      fprintf(stderr, "shardq synth: unknown or incomplete option '%s' (see --help)\n", a);
      return SQ_EXIT_USAGE;
    }
    const char *v = argv[++i];
    int64_t x = 0, ok = 1;
    if (strcmp(a, "--out") == 0)
      out = v;
    else if (strcmp(a, "--arch") == 0)
      o.arch = v;
    else if (strcmp(a, "--dtype") == 0) {
      if (strcmp(v, "bf16") == 0 || strcmp(v, "bfloat16") == 0)
        o.dtype = SQ_DTYPE_BF16;
      else if (strcmp(v, "fp16") == 0 || strcmp(v, "float16") == 0)
        o.dtype = SQ_DTYPE_F16;
      else if (strcmp(v, "fp32") == 0 || strcmp(v, "float32") == 0)
        o.dtype = SQ_DTYPE_F32;
      else {
        fprintf(stderr, "shardq synth: --dtype must be bf16, fp16 or fp32 (got '%s')\n", v);
        return SQ_EXIT_USAGE;
      }
    } else if ((ok = sq_parse_i64(a, v, &x))) {
      if (strcmp(a, "--layers") == 0)
        o.layers = x;
      else if (strcmp(a, "--hidden") == 0)
        o.hidden = x;
      else if (strcmp(a, "--heads") == 0)
        o.heads = x;
      else if (strcmp(a, "--kv-heads") == 0)
        o.kv_heads = x;
      else if (strcmp(a, "--intermediate") == 0)
        o.intermediate = x;
      else if (strcmp(a, "--vocab") == 0)
        o.vocab = x;
      else if (strcmp(a, "--head-dim") == 0)
        o.head_dim = x;
      else if (strcmp(a, "--shards") == 0)
        o.shards = x > 0 && x < 100000 ? (int)x : -1;
      else if (strcmp(a, "--seed") == 0)
        o.seed = (uint64_t)x;
      else if (strcmp(a, "--calib-samples") == 0)
        o.calib_samples = x;
      else if (strcmp(a, "--calib-seq-len") == 0)
        o.calib_seq_len = x;
      else if (strcmp(a, "--eval-samples") == 0)
        o.eval_samples = x;
      else if (!sq_synth_moe_flag(&o, a, x)) {
        fprintf(stderr, "shardq synth: unknown option '%s' (see --help)\n", a);
        return SQ_EXIT_USAGE;
      }
    }
    if (!ok) return SQ_EXIT_USAGE;
  }
  if (!out) {
    fprintf(stderr, "shardq synth: --out DIR is required (see --help)\n");
    return SQ_EXIT_USAGE;
  }
  return sq_cli_report("synth", sq_synth_write(out, &o), -1);
}
