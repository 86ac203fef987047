/* shardq status: progress of a (Slurm) quantize job from its checkpoint
 * journal (coordinator/journal.h): layers done of total, when it started and
 * last committed, the average time per layer with queue time between restarts
 * left out, an ETA, and whether the job looks finished, running or stalled.
 * With a slurm_job_id file (written by `shardq submit`) and squeue on PATH it
 * also shows the Slurm job state. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/fsio.h"
#include "coordinator/cli.h"
#include "coordinator/journal.h"

/* Derived figures; times are unix seconds, -1 when unknown. */
typedef struct {
  int done, total, runs;
  double started, last_commit, now;
  double avg_layer; /* seconds of work per layer; -1: nothing committed */
  double eta;       /* seconds; 0 when finished, -1 unknown */
  const char *state; /* "finished", "running", "stalled", "not started" */
} sq_status_figures;

static double sq_st_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A layer's work time runs from the later of the previous commit and the
 * start of the run it was committed in, so time spent queued after a requeue
 * does not count. */
static void sq_status_compute(const sq_journal *j, double now, sq_status_figures *f) {
  memset(f, 0, sizeof *f);
  f->done = j->nlayers;
  f->total = j->total_layers;
  f->runs = j->nruns;
  f->started = j->created;
  f->now = now;
  f->last_commit = j->nlayers ? j->layers[j->nlayers - 1].time : -1;
  double work = 0, prev = j->created;
  for (int l = 0; l < j->nlayers; ++l) {
    double from = prev;
    for (int r = 0; r < j->nruns; ++r)
      if (j->runs[r].started > from && j->runs[r].started <= j->layers[l].time) from = j->runs[r].started;
    work += j->layers[l].time - from;
    prev = j->layers[l].time;
  }
  f->avg_layer = j->nlayers ? work / j->nlayers : -1;
  f->eta = f->done == f->total ? 0 : (f->avg_layer >= 0 ? f->avg_layer * (f->total - f->done) : -1);
  double last = f->last_commit > 0 ? f->last_commit : j->created;
  for (int r = 0; r < j->nruns; ++r)
    if (j->runs[r].started > last) last = j->runs[r].started;
  if (f->done == f->total) f->state = "finished";
  else if (f->done == 0) f->state = "not started";
  /* No sign of life for 3 average layer times (or 1 h before any commit). */
  else if (now - last > 3 * f->avg_layer + 60) f->state = "stalled";
  else f->state = "running";
  if (f->done == 0 && now - last > 3600) f->state = "stalled";
}

static void sq_status_fmt_time(double t, char *out, size_t cap) {
  if (t < 0) {
    snprintf(out, cap, "-");
    return;
  }
  time_t s = (time_t)t;
  struct tm tm;
  localtime_r(&s, &tm);
  strftime(out, cap, "%Y-%m-%d %H:%M:%S %Z", &tm);
}

static void sq_status_fmt_span(double secs, char *out, size_t cap) {
  if (secs < 0) {
    snprintf(out, cap, "unknown");
    return;
  }
  long s = (long)(secs + 0.5);
  if (s < 120) snprintf(out, cap, "%lds", s);
  else if (s < 7200) snprintf(out, cap, "%ldm %02lds", s / 60, s % 60);
  else snprintf(out, cap, "%ldh %02ldm", s / 3600, (s / 60) % 60);
}

/* The Slurm job id written by `shardq submit`, and its squeue state ("" if
 * squeue does not know it: finished longer ago than MinJobAge, or no Slurm). */
static long sq_status_slurm(const char *dir, char *state, size_t cap) {
  state[0] = '\0';
  char *path = sq_fs_join(dir, "slurm_job_id"), *text = NULL;
  long id = -1;
  if (path && sq_fs_read_small_file(path, 64, &text, NULL) == SQ_OK) id = strtol(text, NULL, 10);
  sq_error_clear();
  free(text);
  free(path);
  if (id <= 0) return -1;
  char cmd[128];
  snprintf(cmd, sizeof cmd, "squeue -h -j %ld -o %%T 2>/dev/null", id);
  FILE *p = popen(cmd, "r");
  if (p) {
    if (fgets(state, (int)cap, p)) state[strcspn(state, "\r\n")] = '\0';
    else state[0] = '\0';
    pclose(p);
  }
  return id;
}

static void sq_status_usage(FILE *out) {
  fprintf(out,
          "usage: shardq status CKPT_DIR [--json]\n\n"
          "Progress of a quantize job from the journal in its --checkpoint-dir:\n"
          "layers committed of total, start and last commit times, restarts, the average\n"
          "time per layer (time queued between restarts left out), an ETA from it, and\n"
          "the state: finished, running, stalled (no commit for 3 average layer times)\n"
          "or not started. If CKPT_DIR/slurm_job_id exists (written by `shardq submit`)\n"
          "and squeue works, the Slurm job state too. Reads only; safe while the job runs.\n\n"
          "  --json   one JSON object instead of text (times in unix seconds, -1 unknown)\n\n"
          "exit: 0 shown, 1 no readable journal, 2 usage error\n");
}

int sq_cmd_status(int argc, char **argv) {
  const char *dir = NULL;
  int as_json = 0;
  for (int i = 1; i < argc; ++i) {
    if (sq_cli_is_help(argv[i])) {
      sq_status_usage(stdout);
      return SQ_EXIT_OK;
    } else if (strcmp(argv[i], "--json") == 0) {
      as_json = 1;
    } else if (argv[i][0] == '-' || dir) {
      fprintf(stderr, "shardq status: unexpected argument '%s'\n", argv[i]);
      sq_status_usage(stderr);
      return SQ_EXIT_USAGE;
    } else {
      dir = argv[i];
    }
  }
  if (!dir) {
    sq_status_usage(stderr);
    return SQ_EXIT_USAGE;
  }
  sq_journal *j = NULL;
  sq_status st = sq_journal_open_or_prev(dir, &j);
  if (st != SQ_OK) {
    sq_cli_report("status", st, -1);
    return SQ_EXIT_ERROR; /* also for a missing journal: not a usage error */
  }
  sq_status_figures f;
  sq_status_compute(j, sq_st_now(), &f);
  char sstate[64];
  long job = sq_status_slurm(dir, sstate, sizeof sstate);
  if (as_json) {
    json_t *o = json_pack("{s:s,s:i,s:i,s:b,s:s,s:f,s:f,s:i,s:f,s:f,s:b}", "checkpoint_dir", dir, "layers_done",
                          f.done, "total_layers", f.total, "finished", f.done == f.total, "state", f.state,
                          "started", f.started, "last_commit", f.last_commit, "runs", f.runs,
                          "avg_seconds_per_layer", f.avg_layer, "eta_seconds", f.eta, "from_prev_journal",
                          j->from_prev);
    if (o && job > 0) {
      json_object_set_new(o, "slurm_job_id", json_integer(job));
      json_object_set_new(o, "slurm_state", json_string(sstate));
    }
    char *text = o ? json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    if (text) printf("%s\n", text);
    free(text);
    json_decref(o);
  } else {
    char t1[64], t2[64], s1[32], s2[32], s3[32];
    sq_status_fmt_time(f.started, t1, sizeof t1);
    sq_status_fmt_time(f.last_commit, t2, sizeof t2);
    sq_status_fmt_span(f.now - f.started, s1, sizeof s1);
    printf("checkpoint dir: %s%s\n", dir, j->from_prev ? " (journal.json damaged: read journal.prev.json)" : "");
    printf("layers:         %d / %d committed (%.1f%%)\n", f.done, f.total, 100.0 * f.done / f.total);
    printf("started:        %s (%s ago)\n", t1, s1);
    if (f.last_commit >= 0) {
      sq_status_fmt_span(f.now - f.last_commit, s2, sizeof s2);
      printf("last commit:    %s (%s ago)\n", t2, s2);
    } else {
      printf("last commit:    none yet\n");
    }
    printf("runs:           %d (%d restart%s)\n", f.runs, f.runs - 1, f.runs == 2 ? "" : "s");
    sq_status_fmt_span(f.avg_layer, s3, sizeof s3);
    printf("per layer:      %s on average (queue time between runs left out)\n", s3);
    if (f.done == f.total) {
      printf("ETA:            done\n");
    } else {
      sq_status_fmt_span(f.eta, s3, sizeof s3);
      printf("ETA:            %s of work for %d more layer%s\n", s3, f.total - f.done,
             f.total - f.done == 1 ? "" : "s");
    }
    printf("state:          %s\n", f.state);
    if (job > 0) printf("slurm job:      %ld (%s)\n", job, sstate[0] ? sstate : "not in squeue: ended or no Slurm here");
  }
  sq_journal_close(j);
  return SQ_EXIT_OK;
}
