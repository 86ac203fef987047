/* shardq submit: fill the batch-script template (slurm/shardq.sbatch.in) for a
 * quantize job with checkpoint-restart, write it to CKPT/shardq.sbatch and
 * submit it with sbatch (or print it with --dry-run). The script runs
 * `shardq quantize ... --checkpoint-dir CKPT --resume`, forwards Slurm's
 * warning signal, and requeues the job when shardq exits 75 (stopped at a safe
 * point); see the template for the protocol. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/fsio.h"
#include "coordinator/cli.h"

#define SQ_SUBMIT_SCRIPT "shardq.sbatch"
#define SQ_SUBMIT_MAX_TEMPLATE (1u << 20)

typedef struct {
  long nodes, ntasks, gpus, margin, max_requeues;
  const char *time, *partition, *ckpt, *job_name, *launcher, *template_path;
  int dry_run;
  int nargs;
  char **args; /* the quantize arguments after "--" */
} sq_submit_opts;

static void sq_submit_usage(FILE *out) {
  fprintf(out,
          "usage: shardq submit --nodes N --time TIME --checkpoint-dir CKPT [options] -- <quantize args>\n\n"
          "Writes a Slurm batch script to CKPT/shardq.sbatch and submits it with sbatch.\n"
          "The job runs `<launcher> shardq quantize <quantize args> --checkpoint-dir CKPT\n"
          "--resume`. Slurm sends SIGUSR1 to the batch script --signal-margin seconds before\n"
          "the time limit (and on preemption); the script forwards it, shardq stops at the\n"
          "next committed layer and exits 75, and the script requeues the job, which then\n"
          "resumes from the journal in CKPT. The log is CKPT/slurm-<jobid>.out (appended\n"
          "across restarts); the job id is written to CKPT/slurm_job_id.\n"
          "Watch it with: shardq status CKPT\n\n"
          "  --nodes N              nodes (required)\n"
          "  --ntasks-per-node T    MPI ranks per node (default 1; usually one per GPU)\n"
          "  --gpus-per-node G      GPUs per node (default 0: no --gpus-per-node line)\n"
          "  --time TIME            time limit per run, Slurm format (HH:MM:SS, D-HH:MM, MM)\n"
          "                         (required); the job requeues itself, so this is per run\n"
          "  --partition P          partition (default: the cluster's default)\n"
          "  --checkpoint-dir CKPT  journal, state, batch script and log (required)\n"
          "  --signal-margin S      seconds of warning before the time limit (default 300;\n"
          "                         Slurm may signal up to 60 s earlier). Make it longer\n"
          "                         than the slowest layer, or the job is killed mid-layer\n"
          "                         and redoes that layer.\n"
          "  --job-name NAME        Slurm job name (default shardq)\n"
          "  --launcher CMD         how to start the ranks (default \"srun --mpi=pmix\";\n"
          "                         e.g. \"mpirun\")\n"
          "  --max-requeues N       stop requeueing after N restarts (default 50)\n"
          "  --template FILE        batch-script template (default: the installed\n"
          "                         slurm/shardq.sbatch.in)\n"
          "  --dry-run              print the batch script; write and submit nothing\n\n"
          "environment:\n"
          "  SHARDQ_SBATCH_TEMPLATE  template path (like --template)\n"
          "  SHARDQ_SUBMIT_COMMAND   replace the whole job command line (launcher, shardq,\n"
          "                          arguments) with this shell text; for tests of the\n"
          "                          requeue protocol with a stand-in command\n\n"
          "exit: 0 submitted (or printed), 1 error (sbatch failed: its message is shown),\n"
          "2 usage error\n");
}

/* Strict integer in [lo, hi]; else a usage error naming the flag. */
static int sq_submit_long(const char *flag, const char *s, long lo, long hi, long *out) {
  char *end = NULL;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) {
    fprintf(stderr, "shardq submit: %s '%s' must be an integer in [%ld, %ld]\n", flag, s, lo, hi);
    return 0;
  }
  *out = v;
  return 1;
}

/* Slurm time limit in seconds: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S; -1 if bad. */
static long sq_submit_time_seconds(const char *s) {
  long days = 0, f[3];
  int n = 0;
  const char *p = s;
  const char *dash = strchr(s, '-');
  if (dash) {
    char *end;
    days = strtol(s, &end, 10);
    if (end != dash || dash == s) return -1;
    p = dash + 1;
  }
  while (*p && n < 3) {
    if (!isdigit((unsigned char)*p)) return -1;
    char *end;
    f[n++] = strtol(p, &end, 10);
    p = end;
    if (*p == ':') ++p;
    else if (*p) return -1;
  }
  if (*p || n == 0) return -1;
  if (dash) { /* D-H, D-H:M, D-H:M:S */
    long h = f[0], m = n > 1 ? f[1] : 0, sec = n > 2 ? f[2] : 0;
    return ((days * 24 + h) * 60 + m) * 60 + sec;
  }
  if (n == 1) return f[0] * 60;
  if (n == 2) return f[0] * 60 + f[1];
  return (f[0] * 60 + f[1]) * 60 + f[2];
}

/* Values that go into #SBATCH lines unquoted: no whitespace or quotes. */
static int sq_submit_plain(const char *flag, const char *s) {
  for (const char *p = s; *p; ++p)
    if (isspace((unsigned char)*p) || *p == '"' || *p == '\'' || *p == '\\') {
      fprintf(stderr, "shardq submit: %s '%s' must not contain spaces or quotes\n", flag, s);
      return 0;
    }
  return s[0] != '\0';
}

/* A growable string; on allocation failure ok becomes 0. */
typedef struct {
  char *s;
  size_t len, cap;
  int ok;
} sq_sbuf;

static void sq_sb_add(sq_sbuf *b, const char *s, size_t n) {
  if (!b->ok) return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = (b->len + n + 1) * 2;
    char *g = (char *)realloc(b->s, cap);
    if (!g) {
      b->ok = 0;
      return;
    }
    b->s = g;
    b->cap = cap;
  }
  memcpy(b->s + b->len, s, n);
  b->len += n;
  b->s[b->len] = '\0';
}
static void sq_sb_str(sq_sbuf *b, const char *s) { sq_sb_add(b, s, strlen(s)); }
/* s as one single-quoted shell word. */
static void sq_sb_quoted(sq_sbuf *b, const char *s) {
  sq_sb_str(b, "'");
  for (const char *p = s; *p; ++p) {
    if (*p == '\'') sq_sb_str(b, "'\\''");
    else sq_sb_add(b, p, 1);
  }
  sq_sb_str(b, "'");
}

/* The template: --template, $SHARDQ_SBATCH_TEMPLATE, then next to the binary
 * (installed: <prefix>/share/shardq; build tree: <src>/slurm). */
static sq_status sq_submit_read_template(const char *flag_path, char **out) {
  const char *env = getenv("SHARDQ_SBATCH_TEMPLATE");
  if (flag_path || (env && env[0])) {
    SQ_CHECK(sq_fs_read_small_file(flag_path ? flag_path : env, SQ_SUBMIT_MAX_TEMPLATE, out, NULL));
    return SQ_OK;
  }
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash) *slash = '\0';
    const char *rel[] = {"../share/shardq/shardq.sbatch.in", "../slurm/shardq.sbatch.in",
                         "../../slurm/shardq.sbatch.in"};
    for (size_t i = 0; i < sizeof rel / sizeof rel[0]; ++i) {
      char cand[PATH_MAX + 64];
      snprintf(cand, sizeof cand, "%s/%s", exe, rel[i]);
      if (access(cand, R_OK) == 0) {
        SQ_CHECK(sq_fs_read_small_file(cand, SQ_SUBMIT_MAX_TEMPLATE, out, NULL));
        return SQ_OK;
      }
    }
  }
  return sq_error_set(SQ_ERR_IO,
                      "cannot find the batch-script template shardq.sbatch.in next to %s -- hint: pass "
                      "--template /path/to/shardq/slurm/shardq.sbatch.in or set SHARDQ_SBATCH_TEMPLATE",
                      n > 0 ? exe : "the shardq binary");
}

/* The job's command line, as shell text. */
static void sq_submit_command(const sq_submit_opts *o, const char *ckpt, sq_sbuf *b) {
  const char *override = getenv("SHARDQ_SUBMIT_COMMAND");
  if (override && override[0]) {
    sq_sb_str(b, override);
    return;
  }
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  exe[n > 0 ? n : 0] = '\0';
  sq_sb_str(b, o->launcher);
  sq_sb_str(b, " ");
  sq_sb_quoted(b, n > 0 ? exe : "shardq");
  sq_sb_str(b, " quantize");
  for (int i = 0; i < o->nargs; ++i) {
    sq_sb_str(b, " ");
    sq_sb_quoted(b, o->args[i]);
  }
  sq_sb_str(b, " --checkpoint-dir ");
  sq_sb_quoted(b, ckpt);
  sq_sb_str(b, " --resume");
}

/* Replace every {{NAME}} of the template; an unknown name is an error. */
static sq_status sq_submit_fill(const char *tmpl, const sq_submit_opts *o, const char *ckpt, sq_sbuf *b) {
  char num[7][32], *line_gpu = NULL, *line_part = NULL;
  snprintf(num[0], 32, "%ld", o->nodes);
  snprintf(num[1], 32, "%ld", o->ntasks);
  snprintf(num[2], 32, "%ld", o->margin);
  snprintf(num[3], 32, "%ld", o->max_requeues);
  sq_sbuf gl = {NULL, 0, 0, 1}, pl = {NULL, 0, 0, 1}, out = {NULL, 0, 0, 1}, ck = {NULL, 0, 0, 1},
          cmd = {NULL, 0, 0, 1};
  if (o->gpus > 0) {
    snprintf(num[4], 32, "%ld", o->gpus);
    sq_sb_str(&gl, "#SBATCH --gpus-per-node=");
    sq_sb_str(&gl, num[4]);
    sq_sb_str(&gl, "\n");
  }
  if (o->partition) {
    sq_sb_str(&pl, "#SBATCH --partition=");
    sq_sb_str(&pl, o->partition);
    sq_sb_str(&pl, "\n");
  }
  sq_sb_str(&out, ckpt);
  sq_sb_str(&out, "/slurm-%j.out");
  sq_sb_quoted(&ck, ckpt);
  sq_submit_command(o, ckpt, &cmd);
  line_gpu = gl.s ? gl.s : "";
  line_part = pl.s ? pl.s : "";
  struct {
    const char *name, *value;
  } vars[] = {{"JOB_NAME", o->job_name}, {"NODES", num[0]},         {"NTASKS_PER_NODE", num[1]},
              {"GPUS_LINE", line_gpu},   {"TIME", o->time},         {"PARTITION_LINE", line_part},
              {"SIGNAL_MARGIN", num[2]}, {"OUTPUT", out.s},         {"CKPT", ck.s},
              {"MAX_REQUEUES", num[3]},  {"COMMAND", cmd.s}};
  sq_status st = SQ_OK;
  if (!gl.ok || !pl.ok || !out.ok || !ck.ok || !cmd.ok) st = sq_error_set(SQ_ERR_NOMEM, "out of memory");
  const char *p = tmpl;
  while (st == SQ_OK && *p) {
    const char *open = strstr(p, "{{");
    if (!open) {
      sq_sb_str(b, p);
      break;
    }
    sq_sb_add(b, p, (size_t)(open - p));
    const char *close = strstr(open + 2, "}}");
    size_t n = close ? (size_t)(close - open - 2) : 0;
    size_t v = 0;
    for (; close && v < sizeof vars / sizeof vars[0]; ++v)
      if (strlen(vars[v].name) == n && strncmp(vars[v].name, open + 2, n) == 0) break;
    if (!close || v == sizeof vars / sizeof vars[0]) {
      int line = 1;
      for (const char *q = tmpl; q < open; ++q) line += *q == '\n';
      st = sq_error_set(SQ_ERR_FORMAT, "batch-script template line %d: unknown placeholder '%.40s'", line, open);
      break;
    }
    sq_sb_str(b, vars[v].value);
    p = close + 2;
  }
  if (st == SQ_OK && !b->ok) st = sq_error_set(SQ_ERR_NOMEM, "out of memory");
  free(gl.s);
  free(pl.s);
  free(out.s);
  free(ck.s);
  free(cmd.s);
  return st;
}

/* sbatch --parsable SCRIPT; the job id into *job. sbatch's own stderr goes
 * through to the user. */
static sq_status sq_submit_sbatch(const char *script, long *job) {
  int fds[2];
  if (pipe(fds) != 0) return sq_error_errno("sbatch", "pipe failed");
  pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return sq_error_errno("sbatch", "fork failed");
  }
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    execlp("sbatch", "sbatch", "--parsable", script, (char *)NULL);
    fprintf(stderr, "shardq submit: cannot run sbatch: %s\n", strerror(errno));
    _exit(127);
  }
  close(fds[1]);
  char out[256] = "";
  size_t len = 0;
  ssize_t n;
  while ((n = read(fds[0], out + len, sizeof out - 1 - len)) > 0 || (n < 0 && errno == EINTR))
    if (n > 0) len += (size_t)n;
  out[len] = '\0';
  close(fds[0]);
  int ws = 0;
  while (waitpid(pid, &ws, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
    return sq_error_set(SQ_ERR_IO,
                        "sbatch %s failed (exit %d; its message is above) -- hint: check the partition, "
                        "time limit and node counts; `shardq submit --dry-run` shows the script",
                        script, WIFEXITED(ws) ? WEXITSTATUS(ws) : -1);
  char *end = NULL;
  *job = strtol(out, &end, 10);
  if (end == out || *job <= 0)
    return sq_error_set(SQ_ERR_FORMAT, "sbatch printed '%s', not a job id", out);
  return SQ_OK;
}

static int sq_submit_parse(int argc, char **argv, sq_submit_opts *o) {
  memset(o, 0, sizeof *o);
  o->ntasks = 1;
  o->margin = 300;
  o->max_requeues = 50;
  o->job_name = "shardq";
  o->launcher = "srun --mpi=pmix";
  int i = 1;
  for (; i < argc; ++i) {
    const char *a = argv[i];
    if (strcmp(a, "--") == 0) {
      ++i;
      break;
    }
    if (strcmp(a, "--dry-run") == 0) {
      o->dry_run = 1;
      continue;
    }
    if (i + 1 >= argc) {
      fprintf(stderr, "shardq submit: %s needs a value (or is unknown)\n", a);
      return 0;
    }
    const char *v = argv[++i];
    if (strcmp(a, "--nodes") == 0) {
      if (!sq_submit_long(a, v, 1, 100000, &o->nodes)) return 0;
    } else if (strcmp(a, "--ntasks-per-node") == 0) {
      if (!sq_submit_long(a, v, 1, 4096, &o->ntasks)) return 0;
    } else if (strcmp(a, "--gpus-per-node") == 0) {
      if (!sq_submit_long(a, v, 0, 1024, &o->gpus)) return 0;
    } else if (strcmp(a, "--signal-margin") == 0) {
      if (!sq_submit_long(a, v, 1, 65535, &o->margin)) return 0;
    } else if (strcmp(a, "--max-requeues") == 0) {
      if (!sq_submit_long(a, v, 0, 100000, &o->max_requeues)) return 0;
    } else if (strcmp(a, "--time") == 0) {
      o->time = v;
    } else if (strcmp(a, "--partition") == 0) {
      if (!sq_submit_plain(a, v)) return 0;
      o->partition = v;
    } else if (strcmp(a, "--checkpoint-dir") == 0) {
      if (!sq_submit_plain(a, v)) return 0; /* it goes into #SBATCH --output */
      o->ckpt = v;
    } else if (strcmp(a, "--job-name") == 0) {
      if (!sq_submit_plain(a, v)) return 0;
      o->job_name = v;
    } else if (strcmp(a, "--launcher") == 0) {
      o->launcher = v;
    } else if (strcmp(a, "--template") == 0) {
      o->template_path = v;
    } else {
      fprintf(stderr, "shardq submit: unknown option '%s' (quantize arguments go after --)\n", a);
      return 0;
    }
  }
  o->args = argv + i;
  o->nargs = argc - i;
  if (!o->nodes || !o->time || !o->ckpt) {
    fprintf(stderr, "shardq submit: --nodes, --time and --checkpoint-dir are required\n");
    return 0;
  }
  long secs = sq_submit_time_seconds(o->time);
  if (secs <= 0) {
    fprintf(stderr, "shardq submit: --time '%s' is not a Slurm time limit (HH:MM:SS, D-HH:MM:SS, MM)\n", o->time);
    return 0;
  }
  if (o->margin >= secs) {
    fprintf(stderr, "shardq submit: --signal-margin %ld s is not shorter than --time %s (%ld s)\n", o->margin,
            o->time, secs);
    return 0;
  }
  for (int k = 0; k < o->nargs; ++k)
    if (strcmp(o->args[k], "--checkpoint-dir") == 0 || strcmp(o->args[k], "--resume") == 0) {
      fprintf(stderr, "shardq submit: do not pass %s after --: submit adds --checkpoint-dir CKPT --resume\n",
              o->args[k]);
      return 0;
    }
  const char *override = getenv("SHARDQ_SUBMIT_COMMAND");
  if (o->nargs == 0 && !(override && override[0])) {
    fprintf(stderr, "shardq submit: no quantize arguments after -- (e.g. -- --model M --calib C --scheme W4A16 --out O)\n");
    return 0;
  }
  return 1;
}

int sq_cmd_submit(int argc, char **argv) {
  for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; ++i)
    if (sq_cli_is_help(argv[i])) {
      sq_submit_usage(stdout);
      return SQ_EXIT_OK;
    }
  sq_submit_opts o;
  if (!sq_submit_parse(argc, argv, &o)) {
    fprintf(stderr, "(shardq submit --help for usage)\n");
    return SQ_EXIT_USAGE;
  }
  char *tmpl = NULL, *ckpt = NULL, *script = NULL, *idfile = NULL;
  sq_sbuf body = {NULL, 0, 0, 1};
  sq_status st = SQ_OK;
  /* An absolute checkpoint dir: the job may start in another directory. */
  if (!o.dry_run) SQ_CHECK_GOTO(sq_fs_mkdirs(o.ckpt), st, done);
  ckpt = realpath(o.ckpt, NULL);
  if (!ckpt && o.ckpt[0] == '/') ckpt = strdup(o.ckpt);
  if (!ckpt) { /* dry run of a dir that does not exist yet */
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd)) {
      st = sq_error_errno(".", "getcwd failed");
      goto done;
    }
    ckpt = sq_fs_join(cwd, o.ckpt);
  }
  if (!ckpt) {
    st = sq_error_set(SQ_ERR_NOMEM, "out of memory");
    goto done;
  }
  for (const char *c = ckpt; *c; ++c)
    if (isspace((unsigned char)*c) || *c == '"' || *c == '\\' || *c == '\'') {
      st = sq_error_set(SQ_ERR_ARG, "--checkpoint-dir resolves to '%s': the path goes into #SBATCH --output, so "
                                    "it must not contain spaces or quotes", ckpt);
      goto done;
    }
  SQ_CHECK_GOTO(sq_submit_read_template(o.template_path, &tmpl), st, done);
  SQ_CHECK_GOTO(sq_submit_fill(tmpl, &o, ckpt, &body), st, done);
  if (o.dry_run) {
    fputs(body.s, stdout);
    goto done;
  }
  script = sq_fs_join(ckpt, SQ_SUBMIT_SCRIPT);
  idfile = sq_fs_join(ckpt, "slurm_job_id");
  if (!script || !idfile) {
    st = sq_error_set(SQ_ERR_NOMEM, "out of memory");
    goto done;
  }
  SQ_CHECK_GOTO(sq_fs_write_file_atomic(script, body.s, body.len), st, done);
  long job = 0;
  SQ_CHECK_GOTO(sq_submit_sbatch(script, &job), st, done);
  char idtext[32];
  int idlen = snprintf(idtext, sizeof idtext, "%ld\n", job);
  SQ_CHECK_GOTO(sq_fs_write_file_atomic(idfile, idtext, (size_t)idlen), st, done);
  printf("submitted job %ld: script %s, log %s/slurm-%ld.out\nwatch it with: shardq status %s\n", job, script,
         ckpt, job, ckpt);
done:
  free(tmpl);
  free(ckpt);
  free(script);
  free(idfile);
  free(body.s);
  return sq_cli_report("submit", st, -1);
}
