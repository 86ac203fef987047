/* The command line of `shardq quantize`: its --help text and the parsing of
 * its flags into the plan's arguments (quantize_plan.h) plus the few flags
 * the plan does not take (checkpoint-restart, MoE routing). Kept apart from
 * the driver (cmd_quantize.c) so that the flag surface and its documentation
 * sit in one short file. Internal to the coordinator. */
#ifndef SQ_COORDINATOR_QUANTIZE_CLI_H
#define SQ_COORDINATOR_QUANTIZE_CLI_H

#include <stdio.h>

#include "coordinator/quantize_plan.h"

/* Flags that are not part of the plan's arguments. */
typedef struct {
  const char *ckpt_dir; /* --checkpoint-dir (NULL: off) */
  int resume;           /* --resume */
  int moe_routed;       /* --moe-routed-only: moe_calib's all-tokens mode off (MoE models) */
} sq_qcli_flags;

/* The whole `shardq quantize --help` text. */
void sq_qcli_print_usage(FILE *f);

/* Parse argv[1..argc) into a (already defaulted with sq_qplan_args_default)
 * and x (zeroed). Returns 1 on success, 0 on a usage error; loud: print the
 * error (rank 0 only: every rank parses the same arguments and fails the
 * same way). The values in a point into argv. */
int sq_qcli_parse(int argc, char **argv, int loud, sq_qplan_args *a, sq_qcli_flags *x);

#endif
