/* Helpers shared by safetensors_read.c, safetensors_write.c and checkpoint.c
 * (not part of the public API). */
#ifndef SQ_SHARDING_SAFETENSORS_INTERNAL_H
#define SQ_SHARDING_SAFETENSORS_INTERNAL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

/* Copy s into buf (cap bytes) with control characters shown as '?' and long
 * text cut with "...", so that hostile names cannot break the one-line error. */
const char *sq_st_printable(const char *s, char *buf, size_t cap);
/* Offset of the first byte that is not strict UTF-8, or len if all are. */
size_t sq_st_utf8_check(const unsigned char *s, size_t len);
/* "[4, 4]" */
char *sq_st_format_shape(int ndim, const int64_t *shape, char *buf, size_t cap);
/* "an object", "a string", ... for messages. */
const char *sq_st_json_type(const json_t *v);
/* Check UTF-8, parse with duplicate keys rejected, require an object. what
 * names the text in messages ("header", "index"). */
sq_status sq_st_json_load(const char *label, const char *what, const char *text, size_t len,
                          json_t **out);

#endif
