/* bench_pipeline: peak RSS and wall time of `shardq quantize` (GPTQ W4A16) on
 * synthetic models of depth L and 2L with the same width, each run in its own
 * child process (wait4's ru_maxrss is that run's peak). Memory must be flat
 * in depth (within 10%) and time about linear; the bench checks both and
 * exits non-zero when memory grows.
 *   bench_pipeline [L=4] [hidden=256] [samples=64] [seq=128] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "coordinator/cli.h"

static int sq_bench_child(int (*cmd)(int, char **), char **argv, double *sec, long *rss_kb) {
  int argc = 0;
  while (argv[argc]) argc++;
  double t0 = sq_time_now();
  pid_t pid = fork();
  if (pid == 0) _exit(cmd(argc, argv));
  int status = 0;
  struct rusage ru;
  if (pid < 0 || wait4(pid, &status, 0, &ru) != pid) return -1;
  *sec = sq_time_now() - t0;
  *rss_kb = ru.ru_maxrss;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int main(int argc, char **argv) {
  int L = argc > 1 ? atoi(argv[1]) : 4;
  const char *hidden = argc > 2 ? argv[2] : "256";
  const char *samples = argc > 3 ? argv[3] : "64";
  const char *seq = argc > 4 ? argv[4] : "128";
  setenv("OPENBLAS_NUM_THREADS", "1", 0);
  char tmp[] = "/tmp/shardq-bench-pipeline.XXXXXX";
  if (!mkdtemp(tmp)) return 1;
  double sec[2];
  long rss[2];
  for (int k = 0; k < 2; k++) {
    char layers[16], mdir[512], out[512], calib[600];
    snprintf(layers, sizeof layers, "%d", L * (k + 1));
    snprintf(mdir, sizeof mdir, "%s/m%d", tmp, k);
    snprintf(out, sizeof out, "%s/q%d", tmp, k);
    snprintf(calib, sizeof calib, "%s/calib.safetensors", mdir);
    char *sargv[] = {"synth", "--out", mdir, "--layers", layers, "--hidden", (char *)hidden,
                     "--intermediate", "688", "--calib-samples", (char *)samples,
                     "--calib-seq-len", (char *)seq, "--eval-samples", "0", "-q", NULL};
    double s;
    long r;
    if (sq_bench_child(sq_cmd_synth, sargv, &s, &r) != 0) return 1;
    char *qargv[] = {"quantize", "--model", mdir, "--calib", calib, "--out", out, "--scheme",
                     "W4A16", "--method", "gptq", "-q", NULL};
    if (sq_bench_child(sq_cmd_quantize, qargv, &sec[k], &rss[k]) != 0) return 1;
    printf("layers %3d  hidden %s  samples %s x %s  time %7.2f s  (%.2f s/layer)  peak RSS %7.1f MiB\n",
           L * (k + 1), hidden, samples, seq, sec[k], sec[k] / (L * (k + 1)), rss[k] / 1024.0);
  }
  double rss_ratio = (double)rss[1] / (double)rss[0], t_ratio = sec[1] / sec[0];
  printf("depth x2: peak RSS x%.3f (flat: within 10%%), time x%.2f (linear: ~2)\n", rss_ratio,
         t_ratio);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
  if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", tmp);
  if (rss_ratio > 1.10) {
    printf("FAIL: peak memory grows with depth\n");
    return 1;
  }
  return 0;
}
