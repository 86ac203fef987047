/* `shardq quantize` command line: the --help text and the flag parser
 * (quantize_cli.h). Every rank parses the same argv; only the rank told to be
 * loud prints the usage errors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/quantize_cli.h"

void sq_qcli_print_usage(FILE *f) {
  fprintf(f,
          "usage: shardq quantize --model DIR --calib CALIB.safetensors --out OUTDIR [options]\n\n"
          "Calibrates and quantizes a checkpoint layer by layer and writes a\n"
          "compressed-tensors checkpoint: model.safetensors.index.json, config.json with\n"
          "quantization_config, the tokenizer/generation files and the shards. On one process:\n"
          "OUTDIR/model-0000k-of-0000N.safetensors (shard 1: embeddings, final norm, lm_head;\n"
          "then one shard per --layers-per-shard layers).\n"
          "As one MPI job (mpirun -np N / srun --mpi=pmix shardq quantize ...): every rank\n"
          "forwards its share of the calibration samples, each module has one owner rank (the\n"
          "plan of `shardq plan`) that solves it and writes it to its own part,\n"
          "model-rank0000r-of-0000N-part0000k.safetensors (part 0: embeddings etc., rank 0;\n"
          "part 1+g: layer group g). Any rank's error is reported by rank 0 as\n"
          "\"rank R (host): cause\"; every collective has a deadline (SHARDQ_COMM_TIMEOUT s).\n"
          "lm_head is never quantized; embeddings, norms and biases pass through unchanged.\n\n"
          "options (defaults in brackets):\n"
          "  --model DIR            input checkpoint (config.json + safetensors)\n"
          "  --calib FILE           int32 input_ids [samples, seq_len] (safetensors)\n"
          "  --out DIR              output directory (must not be --model; empty unless --force)\n"
          "  --force                write into a non-empty --out\n"
          "  --scheme S             W4A16 | W4A16_ASYM | W8A16 | W8A8 | FP8 | FP8_DYNAMIC [W4A16]\n"
          "  --recipe FILE          llm-compressor YAML recipe, resolved per module (instead of\n"
          "                         --scheme/--method and their flags): GPTQ/SparseGPT/\n"
          "                         QuantizationModifier in order, SmoothQuant (folded into the\n"
          "                         norms written out), static fp8 input_scale, kv-cache\n"
          "                         k_scale/v_scale; see recipes/*.yaml\n"
          "  --method M             gptq | rtn | sparsegpt [gptq]\n"
          "  --bits N               weight bits (overrides the scheme)\n"
          "  --group N              group size; 0 = per output channel (overrides the scheme)\n"
          "  --sym | --asym         symmetric or asymmetric weights (overrides the scheme)\n"
          "  --actorder [group|weight]  GPTQ activation order [off; bare flag = weight]\n"
          "  --damp F               GPTQ/SparseGPT dampening fraction [0.01]\n"
          "  --block N              GPTQ/SparseGPT block size [128]\n"
          "  --sparsity P           SparseGPT unstructured sparsity [0.5]\n"
          "  --mask N:M             SparseGPT N:M mask, e.g. 2:4 (instead of --sparsity)\n"
          "  --no-quant             SparseGPT: prune only, weights stay dense\n"
          "  --ignore NAME          leave a module dense (exact name or re:REGEX; repeatable)\n"
          "  --calib-samples N      calibration samples [128, or all if fewer]\n"
          "  --seq-len T            truncate samples to T tokens [full]\n"
          "  --shuffle-seed S       0 = take the first N rows; else a seeded shuffle [0]\n"
          "  --batch N              samples per forward batch (bounds memory) [8]\n"
          "  --layers-per-shard K   decoder layers per output shard [1]\n"
          "  --spill-dir DIR        keep activations in an HDF5 file there, not in memory\n"
          "  --blas-threads N       OpenBLAS threads per rank [1]; results depend on it, so it\n"
          "                         is fixed rather than taken from the CPU affinity\n"
          "  -q, --quiet            no progress lines (errors and the summary only)\n\n"
          "MoE models (mixtral, qwen2_moe, qwen3_moe, deepseek_v3 incl. fp8 block-scaled\n"
          "weights, dequantized on load): experts run expert-parallel (tokens all-to-all to\n"
          "each expert's owner rank); every routed expert, the shared expert(s) and attention\n"
          "are quantized, routers stay dense; the summary reports tokens per expert per layer.\n"
          "They take --scheme W4A16 | W4A16_ASYM | W8A16 with --method gptq | rtn (no recipe,\n"
          "--ignore or --checkpoint-dir yet).\n"
          "  --moe-routed-only      expert Hessians from the tokens routed to each expert only\n"
          "                         (default: from all tokens, as llm-compressor); an expert\n"
          "                         with fewer than 16 tokens then falls back to RTN (warned)\n\n"
          "checkpoint-restart (what `shardq submit` uses):\n"
          "  --checkpoint-dir DIR   after each layer, every rank publishes its shard part and\n"
          "                         an HDF5 file of its samples' hidden states in DIR, and rank 0\n"
          "                         commits the layer in DIR/journal.json (needs\n"
          "                         --layers-per-shard 1). SIGTERM/SIGUSR1 then stop the job\n"
          "                         after the next commit with exit 75 (requeue me).\n"
          "  --resume               continue the job journaled in --checkpoint-dir (inputs,\n"
          "                         options and rank count must be unchanged: a change is\n"
          "                         refused, naming it); start fresh when DIR has no journal\n\n"
          "Progress on stderr: layer i/N  module  loss  s/layer  ETA; a summary table at the end.\n"
          "Two runs with the same inputs and rank count write byte-identical files, also when\n"
          "one of them was stopped or killed and resumed.\n"
          "exit: 0 done, 1 error, 2 usage error, 75 stopped at a safe point (resume it)\n");
}

static int sq_q_arg(int argc, char **argv, int loud, int *i, const char **val) {
  if (*i + 1 >= argc) {
    if (loud) fprintf(stderr, "shardq quantize: %s needs a value (see --help)\n", argv[*i]);
    return 0;
  }
  *val = argv[++*i];
  return 1;
}

int sq_qcli_parse(int argc, char **argv, int loud, sq_qplan_args *a, sq_qcli_flags *ck) {
  for (int i = 1; i < argc; i++) {
    const char *s = argv[i], *v = NULL;
#define SQ_VAL() \
  if (!sq_q_arg(argc, argv, loud, &i, &v)) return 0
    if (!strcmp(s, "--model")) { SQ_VAL(); a->model = v; }
    else if (!strcmp(s, "--calib")) { SQ_VAL(); a->calib = v; }
    else if (!strcmp(s, "--out")) { SQ_VAL(); a->out = v; }
    else if (!strcmp(s, "--force")) a->force = 1;
    else if (!strcmp(s, "--scheme")) { SQ_VAL(); a->scheme = v; }
    else if (!strcmp(s, "--recipe")) { SQ_VAL(); a->recipe = v; }
    else if (!strcmp(s, "--method")) { SQ_VAL(); a->method = v; }
    else if (!strcmp(s, "--bits")) { SQ_VAL(); a->bits = atoi(v); }
    else if (!strcmp(s, "--group")) { SQ_VAL(); a->group = atoi(v); a->group_set = 1; }
    else if (!strcmp(s, "--sym")) a->sym = 1;
    else if (!strcmp(s, "--asym")) a->sym = 0;
    else if (!strcmp(s, "--actorder")) {
      a->actorder = "weight";
      if (i + 1 < argc && (!strcmp(argv[i + 1], "group") || !strcmp(argv[i + 1], "weight")))
        a->actorder = argv[++i];
    }
    else if (!strcmp(s, "--damp")) { SQ_VAL(); a->damp = atof(v); }
    else if (!strcmp(s, "--block")) { SQ_VAL(); a->block = atoll(v); }
    else if (!strcmp(s, "--sparsity")) { SQ_VAL(); a->sparsity = atof(v); }
    else if (!strcmp(s, "--mask")) { SQ_VAL(); a->mask = v; }
    else if (!strcmp(s, "--no-quant")) a->no_quant = 1;
    else if (!strcmp(s, "--ignore")) {
      SQ_VAL();
      if (a->n_ignore < SQ_QPLAN_MAX_IGNORE) a->ignore[a->n_ignore++] = v;
    }
    else if (!strcmp(s, "--calib-samples")) { SQ_VAL(); a->calib_samples = atoll(v); }
    else if (!strcmp(s, "--seq-len")) { SQ_VAL(); a->seq_len = atoll(v); }
    else if (!strcmp(s, "--shuffle-seed")) { SQ_VAL(); a->shuffle_seed = strtoull(v, NULL, 10); }
    else if (!strcmp(s, "--batch")) { SQ_VAL(); a->batch = atoll(v); }
    else if (!strcmp(s, "--layers-per-shard")) { SQ_VAL(); a->layers_per_shard = atoi(v); }
    else if (!strcmp(s, "--spill-dir")) { SQ_VAL(); a->spill_dir = v; }
    else if (!strcmp(s, "--blas-threads")) {
      SQ_VAL();
      a->blas_threads = atoi(v);
      if (a->blas_threads < 1 || a->blas_threads > 1024) {
        fprintf(stderr, "shardq quantize: --blas-threads must be 1..1024 (got '%s')\n", v);
        return 0;
      }
    }
    else if (!strcmp(s, "--dump-dequant")) { SQ_VAL(); a->dump_dequant = v; } /* tests */
    else if (!strcmp(s, "-q") || !strcmp(s, "--quiet")) a->quiet = 1;
    else if (!strcmp(s, "--checkpoint-dir")) { SQ_VAL(); ck->ckpt_dir = v; }
    else if (!strcmp(s, "--resume")) ck->resume = 1;
    else if (!strcmp(s, "--moe-routed-only")) ck->moe_routed = 1;
    else {
      if (loud) fprintf(stderr, "shardq quantize: unknown option '%s' (see --help)\n", s);
      return 0;
    }
#undef SQ_VAL
  }
  if (!a->model || !a->calib || !a->out) {
    if (loud)
      fprintf(stderr, "shardq quantize: --model, --calib and --out are required (see --help)\n");
    return 0;
  }
  const char *bad = NULL;
  if (ck->resume && !ck->ckpt_dir) bad = "--resume needs --checkpoint-dir DIR";
  else if (ck->ckpt_dir && a->layers_per_shard > 1)
    bad = "--checkpoint-dir commits layer by layer: it needs --layers-per-shard 1";
  else if (ck->ckpt_dir && a->dump_dequant)
    bad = "--dump-dequant cannot be resumed: drop --checkpoint-dir";
  if (bad) {
    if (loud) fprintf(stderr, "shardq quantize: %s (see --help)\n", bad);
    return 0;
  }
  return 1;
}
