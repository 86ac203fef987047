/* The command-line surface: one function per `shardq` command, exit codes,
 * and the one place that turns an sq_status into a message and an exit code.
 *
 * Exit codes (documented in README and `shardq --help`):
 *   0   done
 *   1   error; the message names the file/tensor/YAML line, host and rank
 *   2   usage error (bad flags)
 *   75  stopped at a safe point (SIGTERM/SIGUSR1): requeue me (EX_TEMPFAIL) */
#ifndef SQ_COORDINATOR_CLI_H
#define SQ_COORDINATOR_CLI_H

#include "common/status.h"

enum {
  SQ_EXIT_OK = 0,
  SQ_EXIT_ERROR = 1,
  SQ_EXIT_USAGE = 2,
  SQ_EXIT_REQUEUE = 75
};

/* Each command gets argv with argv[0] = the command name. */
int sq_cmd_inspect(int argc, char **argv);
int sq_cmd_synth(int argc, char **argv);
int sq_cmd_quantize(int argc, char **argv);
int sq_cmd_quantize_layer(int argc, char **argv);
int sq_cmd_eval(int argc, char **argv);
int sq_cmd_plan(int argc, char **argv);
int sq_cmd_recipe(int argc, char **argv);
int sq_cmd_submit(int argc, char **argv);
int sq_cmd_status(int argc, char **argv);

/* Print "shardq <cmd>: error: <message> [host H, rank R]" (and the trail when
 * SHARDQ_DEBUG is set) and return the exit code for st. rank < 0: no rank. */
int sq_cli_report(const char *cmd, sq_status st, int rank);

/* True when arg is -h or --help. */
int sq_cli_is_help(const char *arg);

#endif
