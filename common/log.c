/* Implementation of common/log.h. */
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static sq_log_level sq_log_level_current = SQ_LOG_INFO;
static int sq_log_rank = -1;

void sq_log_init_from_env(void) {
  const char *v = getenv("SHARDQ_LOG_LEVEL");
  if (!v) return;
  if (!strcmp(v, "error")) sq_log_level_current = SQ_LOG_ERROR;
  else if (!strcmp(v, "warn")) sq_log_level_current = SQ_LOG_WARN;
  else if (!strcmp(v, "info")) sq_log_level_current = SQ_LOG_INFO;
  else if (!strcmp(v, "debug")) sq_log_level_current = SQ_LOG_DEBUG;
}

void sq_log_set_level(sq_log_level level) { sq_log_level_current = level; }
sq_log_level sq_log_get_level(void) { return sq_log_level_current; }
void sq_log_set_rank(int rank) { sq_log_rank = rank; }

void sq_log(sq_log_level level, const char *fmt, ...) {
  if (level > sq_log_level_current) return;
  static const char *const tag[] = {"error: ", "warning: ", "", ""};
  char line[2048];
  int n;
  if (sq_log_rank >= 0)
    n = snprintf(line, sizeof line, "shardq[%d]: %s", sq_log_rank, tag[level]);
  else
    n = snprintf(line, sizeof line, "shardq: %s", tag[level]);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
  va_end(ap);
  /* One fputs per line keeps lines from different ranks whole. */
  size_t len = strlen(line);
  if (len + 1 < sizeof line) {
    line[len] = '\n';
    line[len + 1] = '\0';
  }
  fputs(line, stderr);
}

double sq_time_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

uint64_t sq_peak_rss_bytes(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
  return (uint64_t)ru.ru_maxrss * 1024u; /* Linux reports KiB */
}

char *sq_format_bytes(uint64_t bytes, char *buf, size_t len) {
  static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = (double)bytes;
  int u = 0;
  while (v >= 1024.0 && u < 5) {
    v /= 1024.0;
    ++u;
  }
  if (u == 0) snprintf(buf, len, "%llu B", (unsigned long long)bytes);
  else snprintf(buf, len, "%.2f %s", v, unit[u]);
  return buf;
}
