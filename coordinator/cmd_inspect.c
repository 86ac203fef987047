/* shardq inspect: placeholder until its issue lands; it says so and fails. */
#include <stdio.h>

#include "coordinator/cli.h"

int sq_cmd_inspect(int argc, char **argv) {
  (void)argc;
  fprintf(stderr, "shardq %s: not implemented in this build yet\n", argv[0]);
  return SQ_EXIT_ERROR;
}
