/* libFuzzer target for the config.json parser: the input is the config text.
 * Failures must leave one non-empty line and nothing allocated; on success the
 * parsed sizes must be consistent, and writing the config back and parsing it
 * again must give the same sizes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sharding/model_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  sq_error_clear();
  sq_model_config c;
  if (sq_model_config_parse("fuzz.json", (const char *)data, size, &c) != SQ_OK) {
    if (!sq_error_message()[0] || strchr(sq_error_message(), '\n') || c.json) abort();
    return 0;
  }
  if (c.hidden_size <= 0 || c.num_attention_heads <= 0 || c.num_key_value_heads <= 0 ||
      c.num_attention_heads % c.num_key_value_heads != 0 || c.head_dim <= 0 || c.vocab_size <= 0)
    abort();
  if (c.num_hidden_layers <= 64 && c.num_experts <= 512) { /* keep each run small */
    sq_tensor_spec *s = NULL;
    size_t n = 0;
    if (sq_model_config_tensors(&c, &s, &n) == SQ_OK && n != sq_model_config_tensor_count(&c))
      abort();
    free(s);
    sq_error_clear();
  }
  char *text = NULL;
  if (sq_model_config_to_json(&c, &text) == SQ_OK) {
    sq_model_config d;
    if (sq_model_config_parse("again.json", text, strlen(text), &d) != SQ_OK) abort();
    if (d.hidden_size != c.hidden_size || d.num_hidden_layers != c.num_hidden_layers ||
        d.num_key_value_heads != c.num_key_value_heads || d.head_dim != c.head_dim ||
        d.vocab_size != c.vocab_size || d.family != c.family ||
        d.tie_word_embeddings != c.tie_word_embeddings || d.rms_norm_eps != c.rms_norm_eps)
      abort();
    sq_model_config_free(&d);
  }
  free(text);
  sq_model_config_free(&c);
  return 0;
}
