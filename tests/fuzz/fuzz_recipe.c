/* libFuzzer target for the recipe parser (recipes/): any byte string must
 * either parse or fail with a status and one message naming file:line:col;
 * never crash, leak or hang. A parsed recipe is also resolved against a few
 * module names so that the regex matcher is exercised on fuzzed patterns. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "recipes/recipe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > SQ_RECIPE_MAX_BYTES) return 0;
  sq_recipe *r = NULL;
  sq_status st = sq_recipe_parse("fuzz.yaml", (const char *)data, size, &r);
  if (st == SQ_OK) {
    static const char *const names[] = {"model.layers.0.self_attn.q_proj",
                                        "model.layers.7.mlp.down_proj", "lm_head",
                                        "model.embed_tokens"};
    for (int i = 0; i < 4; i++) {
      sq_recipe_resolution res;
      if (sq_recipe_resolve(r, names[i], i < 3 ? "Linear" : "Embedding", &res) != SQ_OK)
        __builtin_trap();
    }
    char buf[4096];
    FILE *f = fmemopen(buf, sizeof buf, "w");
    if (f) {
      sq_recipe_print(r, f);
      fclose(f);
    }
    sq_recipe_free(r);
  } else {
    /* every rejection names the input */
    if (strncmp(sq_error_message(), "fuzz.yaml:", 10) != 0 && st != SQ_ERR_NOMEM) __builtin_trap();
  }
  sq_error_clear();
  return 0;
}
