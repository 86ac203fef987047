/* Every malformed recipe in tests/assets/recipes/ must be rejected with a
 * message that starts "<path>:<line>:" where <line> is the one written in the
 * file's "# expect-line: N" comment, and that contains the text of its
 * "# expect: ..." comment. The expectations were written by hand next to the
 * fault, not copied from the parser's output. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recipes/recipe.h"
#include "test_util.h"

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(void) {
  const char *src = getenv("SHARDQ_SOURCE_DIR");
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/tests/assets/recipes", src ? src : ".");
  DIR *d = opendir(dir);
  if (!d) sq_test_skip("tests/assets/recipes not found (set SHARDQ_SOURCE_DIR)");
  char *names[256];
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) && n < 256) {
    size_t l = strlen(e->d_name);
    if (l > 5 && !strcmp(e->d_name + l - 5, ".yaml")) names[n++] = strdup(e->d_name);
  }
  closedir(d);
  qsort(names, (size_t)n, sizeof names[0], by_name);
  SQ_EXPECT_MSG(n >= 25, "only %d malformed recipes", n);
  for (int i = 0; i < n; i++) {
    char path[8192], line[512], expect[512] = "";
    int want_line = -1;
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    FILE *f = fopen(path, "rb");
    SQ_EXPECT(f != NULL);
    if (!f) continue;
    while (fgets(line, sizeof line, f)) {
      sscanf(line, "# expect-line: %d", &want_line);
      if (!strncmp(line, "# expect: ", 10)) {
        snprintf(expect, sizeof expect, "%s", line + 10);
        expect[strcspn(expect, "\n")] = 0;
      }
    }
    fclose(f);
    SQ_EXPECT_MSG(want_line > 0, "%s has no '# expect-line: N'", names[i]);
    sq_recipe *r = NULL;
    sq_status st = sq_recipe_load(path, &r);
    const char *msg = sq_error_message();
    char prefix[8300];
    snprintf(prefix, sizeof prefix, "%s:%d:", path, want_line);
    SQ_EXPECT_MSG(st == SQ_ERR_FORMAT && r == NULL, "%s: accepted (status %d)", names[i], (int)st);
    SQ_EXPECT_MSG(!strncmp(msg, prefix, strlen(prefix)), "%s: want line %d, got: %s", names[i], want_line, msg);
    SQ_EXPECT_MSG(!expect[0] || strstr(msg, expect), "%s: message lacks '%s': %s", names[i], expect, msg);
    if (getenv("SHARDQ_TEST_VERBOSE")) printf("%s\n", msg);
    sq_recipe_free(r);
    sq_error_clear();
    free(names[i]);
  }
  return sq_test_result("test_recipe_corpus");
}
