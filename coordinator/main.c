/* shardq: the single executable. Dispatches to one function per command; each
 * command parses its own flags and has a --help that says what it really does. */
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "coordinator/cli.h"

typedef struct {
  const char *name;
  int (*run)(int argc, char **argv);
  const char *summary;
} sq_command;

static const sq_command sq_commands[] = {
    {"inspect", sq_cmd_inspect, "what a checkpoint holds; sizes under each scheme; GPUs needed"},
    {"synth", sq_cmd_synth, "write a synthetic checkpoint of a real architecture, and calibration ids"},
    {"quantize", sq_cmd_quantize, "the job: calibrate and quantize a model layer by layer (mpirun/srun)"},
    {"quantize-layer", sq_cmd_quantize_layer, "quantize one Linear layer from files (GPTQ, SparseGPT, RTN)"},
    {"eval", sq_cmd_eval, "perplexity and KL of an original vs. a quantized checkpoint"},
    {"plan", sq_cmd_plan, "the distributed plan and its memory/time estimate"},
    {"recipe", sq_cmd_recipe, "`recipe check FILE`: validate a recipe and show what it does"},
    {"submit", sq_cmd_submit, "submit a quantize job to Slurm with requeue"},
    {"status", sq_cmd_status, "progress of a job from its journal"},
};

static void sq_usage(FILE *out) {
  fprintf(out,
          "usage: shardq <command> [options]    (shardq <command> --help for details)\n\n"
          "Quantizes and sparsifies large language models (GPTQ, SparseGPT, RTN, FP8)\n"
          "and writes compressed-tensors checkpoints that vLLM serves.\n\ncommands:\n");
  for (size_t i = 0; i < sizeof sq_commands / sizeof sq_commands[0]; ++i)
    fprintf(out, "  %-15s %s\n", sq_commands[i].name, sq_commands[i].summary);
  fprintf(out,
          "\nexit codes: 0 done, 1 error, 2 usage error, %d stopped at a safe point (requeue me)\n"
          "environment: SHARDQ_LOG_LEVEL=error|warn|info|debug, SHARDQ_DEBUG=1 (error trail)\n",
          SQ_EXIT_REQUEUE);
}

int main(int argc, char **argv) {
  sq_log_init_from_env();
  if (argc < 2 || sq_cli_is_help(argv[1])) {
    sq_usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? SQ_EXIT_USAGE : SQ_EXIT_OK;
  }
  if (strcmp(argv[1], "--version") == 0) {
    printf("shardq %s\n", SHARDQ_VERSION);
    return SQ_EXIT_OK;
  }
  for (size_t i = 0; i < sizeof sq_commands / sizeof sq_commands[0]; ++i)
    if (strcmp(argv[1], sq_commands[i].name) == 0) return sq_commands[i].run(argc - 1, argv + 1);
  fprintf(stderr, "shardq: unknown command '%s'\n", argv[1]);
  sq_usage(stderr);
  return SQ_EXIT_USAGE;
}
