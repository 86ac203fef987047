/* Implementation of tests/test_util.h. */
#include "test_util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int sq_test_failures = 0;

void sq_test_fail(const char *file, int line, const char *fmt, ...) {
  ++sq_test_failures;
  if (sq_test_failures > 50) return; /* keep the log readable */
  fprintf(stderr, "FAIL %s:%d: ", file, line);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

int sq_test_result(const char *name) {
  if (sq_test_failures) {
    fprintf(stderr, "%s: %d check(s) failed\n", name, sq_test_failures);
    return 1;
  }
  fprintf(stderr, "%s: all checks passed\n", name);
  return 0;
}

void sq_test_skip(const char *why) {
  fprintf(stderr, "SKIP: %s\n", why);
  exit(77);
}

char *sq_test_data_path(const char *rel) {
  const char *root = getenv("SHARDQ_TESTDATA");
  if (!root) return NULL;
  size_t len = strlen(root) + strlen(rel) + 2;
  char *p = malloc(len);
  snprintf(p, len, "%s/%s", root, rel);
  if (access(p, R_OK) != 0) {
    free(p);
    return NULL;
  }
  return p;
}

char *sq_test_tmpdir(const char *name) {
  const char *base = getenv("TMPDIR");
  if (!base) base = "/tmp";
  size_t len = strlen(base) + strlen(name) + 64;
  char *p = malloc(len);
  snprintf(p, len, "%s/shardq-test-%s-%ld", base, name, (long)getpid());
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", p);
  if (system(cmd) != 0) { /* best effort */ }
  mkdir(p, 0755);
  return p;
}
