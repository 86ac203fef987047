/* libFuzzer target for the safetensors header parser. The input is a whole
 * file: the 8-byte little-endian length is checked as sq_st_open checks it,
 * then sq_st_parse_header validates the header against the rest of the input
 * as the data section; on success every accessor is exercised so that a
 * parser that accepts inconsistent tables is caught by the sanitizers. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sharding/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 8) return 0;
  uint64_t n = 0;
  for (int k = 7; k >= 0; --k) n = (n << 8) | data[k];
  if (n > SQ_ST_MAX_HEADER || n > size - 8) {
    /* A length that sq_st_open would reject: still give the JSON checks the
     * rest of the input as a header (with a data size taken from the prefix),
     * so that mutations of the text are not wasted on the length check. */
    sq_error_clear();
    sq_st_file *g = NULL;
    if (sq_st_parse_header("fuzz.safetensors", (const char *)data + 8, size - 8, n & 0xfff, &g) ==
        SQ_OK)
      sq_st_close(g);
    else if (!sq_error_message()[0] || strchr(sq_error_message(), '\n'))
      abort();
    return 0;
  }
  sq_error_clear();
  sq_st_file *f = NULL;
  sq_status st =
      sq_st_parse_header("fuzz.safetensors", (const char *)data + 8, (size_t)n, size - 8 - n, &f);
  if (st != SQ_OK) {
    if (!sq_error_message()[0] || strchr(sq_error_message(), '\n')) abort(); /* one line, always */
    return 0;
  }
  uint64_t pos = 0;
  for (size_t i = 0; i < sq_st_count(f); ++i) {
    const sq_st_tensor *t = sq_st_at(f, i);
    /* Invariants the validator promises. */
    if (t->begin != pos || t->end < t->begin || sq_st_find(f, t->name) != t) abort();
    if (t->nelem * sq_dtype_size(t->dtype) != t->end - t->begin || t->ndim > SQ_ST_MAX_DIMS)
      abort();
    pos = t->end;
  }
  if (pos != size - 8 - n) abort();
  for (size_t i = 0; i < sq_st_metadata_count(f); ++i) {
    const char *v, *k = sq_st_metadata_at(f, i, &v);
    if (!k || !v || !sq_st_metadata(f, k)) abort();
  }
  sq_st_close(f);
  return 0;
}
