/* shardq eval: perplexity of a model, or of an original and its quantized
 * version with the KL divergence of their next-token distributions, layer by
 * layer (worker/evaluate.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "coordinator/cli.h"
#include "worker/evaluate.h"

static void sq_eval_usage(FILE *f) {
  fprintf(f,
          "usage: shardq eval --model DIR [--quantized QDIR] --data EVAL.safetensors [options]\n\n"
          "Perplexity on int32 input_ids [rows, T]: per row the mean NLL of tokens 1..T-1 given\n"
          "their prefix; PPL = exp(mean over all scored tokens). With --quantized, both models\n"
          "run side by side and the report adds KL(p_model || p_quantized) of the next-token\n"
          "distributions (mean, 99th percentile, max over tokens) and the accuracy recovery\n"
          "ppl_model / ppl_quantized. Directories may be dense or compressed-tensors. The\n"
          "models run layer by layer over all rows (memory flat in depth).\n\n"
          "options:\n"
          "  --model DIR        the original (or only) model\n"
          "  --quantized QDIR   its quantized version\n"
          "  --data FILE        evaluation ids (safetensors, int32 input_ids)\n"
          "  --samples N        use the first N rows [all]\n"
          "  --seq-len T        truncate rows to T tokens [full]\n"
          "  --batch N          rows per forward batch [8]\n"
          "  --spill-dir DIR    keep hidden states in HDF5 files there, not in memory\n"
          "  --json             one JSON object on stdout instead of the text report\n");
}

int sq_cmd_eval(int argc, char **argv) {
  const char *model = NULL, *quant = NULL, *data = NULL;
  sq_eval_opts o = {0};
  int json = 0;
  for (int i = 1; i < argc; i++) {
    const char *s = argv[i];
    if (sq_cli_is_help(s)) {
      sq_eval_usage(stdout);
      return SQ_EXIT_OK;
    }
    int has = i + 1 < argc;
    if (!strcmp(s, "--json")) json = 1;
    else if (has && !strcmp(s, "--model")) model = argv[++i];
    else if (has && !strcmp(s, "--quantized")) quant = argv[++i];
    else if (has && !strcmp(s, "--data")) data = argv[++i];
    else if (has && !strcmp(s, "--samples")) o.samples = atoll(argv[++i]);
    else if (has && !strcmp(s, "--seq-len")) o.seq_len = atoll(argv[++i]);
    else if (has && !strcmp(s, "--batch")) o.batch = atoll(argv[++i]);
    else if (has && !strcmp(s, "--spill-dir")) o.spill_dir = argv[++i];
    else {
      fprintf(stderr, "shardq eval: unknown option or missing value '%s' (see --help)\n", s);
      return SQ_EXIT_USAGE;
    }
  }
  if (!model || !data) {
    fprintf(stderr, "shardq eval: --model and --data are required (see --help)\n");
    return SQ_EXIT_USAGE;
  }
  sq_eval_result r;
  sq_status st = sq_eval_run(model, quant, data, &o, &r);
  if (st != SQ_OK) return sq_cli_report("eval", st, -1);
  char rss[32];
  sq_format_bytes(sq_peak_rss_bytes(), rss, sizeof rss);
  if (json) {
    printf("{\"samples\": %lld, \"seq_len\": %lld, \"tokens\": %lld, \"ppl_model\": %.6f, "
           "\"nll_model\": %.8f",
           (long long)r.samples, (long long)r.seq_len, (long long)r.tokens, r.ppl_a, r.nll_a);
    if (r.has_b)
      printf(", \"ppl_quantized\": %.6f, \"nll_quantized\": %.8f, \"kl_mean\": %.8g, "
             "\"kl_p99\": %.8g, \"kl_max\": %.8g, \"recovery\": %.6f",
             r.ppl_b, r.nll_b, r.kl_mean, r.kl_p99, r.kl_max, r.ppl_a / r.ppl_b);
    printf(", \"seconds\": %.3f}\n", r.seconds);
  } else {
    printf("rows %lld x %lld tokens (%lld scored)\n", (long long)r.samples, (long long)r.seq_len,
           (long long)r.tokens);
    printf("perplexity  %-40s %.4f\n", model, r.ppl_a);
    if (r.has_b) {
      printf("perplexity  %-40s %.4f\n", quant, r.ppl_b);
      printf("KL(model || quantized) per token: mean %.6f  p99 %.6f  max %.6f\n", r.kl_mean,
             r.kl_p99, r.kl_max);
      printf("accuracy recovery (ppl_model / ppl_quantized): %.4f\n", r.ppl_a / r.ppl_b);
    }
    printf("time %.2f s, peak RSS %s\n", r.seconds, rss);
  }
  return SQ_EXIT_OK;
}
