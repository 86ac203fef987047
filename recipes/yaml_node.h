/* Internal to recipes/: a small YAML tree built from libyaml events, with the
 * position of every node, and the arena that owns a parsed recipe.
 *
 * The tree builder enforces the hostile-input rules (one document, no
 * anchors/aliases/tags, depth limit, duplicate keys, NUL bytes in strings);
 * the schema code (recipe_parse.c) walks the tree. Not a public header. */
#ifndef SQ_RECIPES_YAML_NODE_H
#define SQ_RECIPES_YAML_NODE_H

#include <stddef.h>

#include "common/status.h"

typedef enum sq_ykind { SQ_Y_SCALAR = 0, SQ_Y_SEQ, SQ_Y_MAP } sq_ykind;

typedef struct sq_ynode {
  sq_ykind kind;
  int line, col;          /* 1-based */
  char *str;              /* scalar text (NUL-terminated, no inner NULs) */
  int quoted;             /* scalar was quoted or a block scalar: always a string */
  struct sq_ynode **kids; /* seq: items; map: keys at even, values at odd */
  int n;                  /* seq: items; map: 2 * pairs */
  int cap;
} sq_ynode;

/* Parse buf into *root (one document). name is used in messages. */
sq_status sq_yaml_build(const char *name, const char *buf, size_t len, sq_ynode **root);
void sq_yaml_free(sq_ynode *n);

/* "mapping", "list", "string"/"number"/... for messages */
const char *sq_yaml_kind_name(const sq_ynode *n);
/* Plain null: ~, null, Null, NULL, or empty and unquoted. */
int sq_yaml_is_null(const sq_ynode *n);

/* Bump allocator: blocks freed together. Returns zeroed memory. */
typedef struct sq_arena sq_arena;
sq_arena *sq_arena_new(void);
void *sq_arena_alloc(sq_arena *a, size_t bytes);
char *sq_arena_strdup(sq_arena *a, const char *s);
void sq_arena_free(sq_arena *a);

/* Levenshtein distance (bounded inputs: keys are short). */
int sq_edit_distance(const char *a, const char *b);

/* recipe_match.c: fill t for target text written at line:col of file name,
 * compiling "re:" patterns (Python syntax translated to POSIX ERE). */
struct sq_recipe_target;
struct sq_recipe;
sq_status sq_recipe_target_init(const char *name, sq_arena *a, const char *text, int line, int col,
                                struct sq_recipe_target *t);
/* recipe_match.c: regfree every compiled target (before the arena goes). */
void sq_recipe_release_regexes(struct sq_recipe *r);

#endif
