/* Error reporting and small helpers shared by the commands (coordinator/cli.h). */
#include "coordinator/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int sq_cli_report(const char *cmd, sq_status st, int rank) {
  if (st == SQ_OK) return SQ_EXIT_OK;
  if (st == SQ_ERR_STOPPED) {
    fprintf(stderr, "shardq %s: stopped at a safe point; resubmit with --resume (exit %d = requeue me)\n",
            cmd, SQ_EXIT_REQUEUE);
    return SQ_EXIT_REQUEUE;
  }
  char host[256] = "?";
  gethostname(host, sizeof host - 1);
  const char *msg = sq_error_message();
  if (!msg[0]) msg = sq_status_str(st);
  if (rank >= 0)
    fprintf(stderr, "shardq %s: error: %s [host %s, rank %d]\n", cmd, msg, host, rank);
  else
    fprintf(stderr, "shardq %s: error: %s\n", cmd, msg);
  if (getenv("SHARDQ_DEBUG") && sq_error_trail()[0]) fprintf(stderr, "%s", sq_error_trail());
  return st == SQ_ERR_ARG ? SQ_EXIT_USAGE : SQ_EXIT_ERROR;
}

int sq_cli_is_help(const char *arg) {
  return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0;
}
