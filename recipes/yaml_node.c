/* YAML tree from libyaml events, for recipes (see yaml_node.h).
 *
 * libyaml accepts anchors, aliases, tags, several documents and duplicate keys;
 * recipes come from strangers, so each of those is rejected here with the
 * position libyaml reports (converted to 1-based line:column). The depth limit
 * bounds the builder's stack and every later recursive walk. */
#include "recipes/yaml_node.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "recipes/recipe.h"

/* ---- arena ---- */

typedef struct sq_arena_block {
  struct sq_arena_block *next;
  size_t used, cap;
  max_align_t data[];
} sq_arena_block;

struct sq_arena {
  sq_arena_block *head;
};

sq_arena *sq_arena_new(void) { return calloc(1, sizeof(sq_arena)); }

void *sq_arena_alloc(sq_arena *a, size_t bytes) {
  size_t align = sizeof(max_align_t);
  bytes = (bytes + align - 1) / align * align;
  if (bytes == 0) bytes = align;
  sq_arena_block *b = a->head;
  if (!b || b->cap - b->used < bytes) {
    size_t cap = bytes > 16384 ? bytes : 16384;
    b = malloc(sizeof(sq_arena_block) + cap);
    if (!b) return NULL;
    b->next = a->head;
    b->used = 0;
    b->cap = cap;
    a->head = b;
  }
  void *p = (char *)b->data + b->used;
  b->used += bytes;
  memset(p, 0, bytes);
  return p;
}

char *sq_arena_strdup(sq_arena *a, const char *s) {
  size_t n = strlen(s) + 1;
  char *p = sq_arena_alloc(a, n);
  if (p) memcpy(p, s, n);
  return p;
}

void sq_arena_free(sq_arena *a) {
  if (!a) return;
  for (sq_arena_block *b = a->head, *next; b; b = next) {
    next = b->next;
    free(b);
  }
  free(a);
}

int sq_edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 64 || lb > 64) return 1 << 20;
  int row[65];
  for (size_t j = 0; j <= lb; j++) row[j] = (int)j;
  for (size_t i = 1; i <= la; i++) {
    int diag = row[0];
    row[0] = (int)i;
    for (size_t j = 1; j <= lb; j++) {
      int up = row[j];
      int sub = diag + (a[i - 1] != b[j - 1]);
      int best = up + 1 < row[j - 1] + 1 ? up + 1 : row[j - 1] + 1;
      row[j] = sub < best ? sub : best;
      diag = up;
    }
  }
  return row[lb];
}

/* ---- tree ---- */

void sq_yaml_free(sq_ynode *n) {
  if (!n) return;
  for (int i = 0; i < n->n; i++) sq_yaml_free(n->kids[i]);
  free(n->kids);
  free(n->str);
  free(n);
}

const char *sq_yaml_kind_name(const sq_ynode *n) {
  if (n->kind == SQ_Y_MAP) return "a mapping";
  if (n->kind == SQ_Y_SEQ) return "a list";
  if (sq_yaml_is_null(n)) return "null";
  return "a scalar";
}

int sq_yaml_is_null(const sq_ynode *n) {
  if (n->kind != SQ_Y_SCALAR || n->quoted) return 0;
  const char *s = n->str;
  return !s[0] || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

static sq_ynode *node_new(sq_ykind kind, yaml_mark_t m) {
  sq_ynode *n = calloc(1, sizeof *n);
  if (!n) return NULL;
  n->kind = kind;
  n->line = (int)m.line + 1;
  n->col = (int)m.column + 1;
  return n;
}

static sq_status node_push(sq_ynode *parent, sq_ynode *kid) {
  if (parent->n == parent->cap) {
    int cap = parent->cap ? parent->cap * 2 : 8;
    sq_ynode **k = realloc(parent->kids, (size_t)cap * sizeof *k);
    if (!k) return sq_error_set(SQ_ERR_NOMEM, "out of memory reading a recipe");
    parent->kids = k;
    parent->cap = cap;
  }
  parent->kids[parent->n++] = kid;
  return SQ_OK;
}

static sq_status perr(const char *name, yaml_mark_t m, const char *what, const char *hint) {
  return sq_error_set(SQ_ERR_FORMAT, "%s:%d:%d: %s%s%s", name, (int)m.line + 1, (int)m.column + 1,
                      what, hint ? " -- hint: " : "", hint ? hint : "");
}

/* Reject anchors and explicit tags on any node. */
static sq_status check_props(const char *name, yaml_mark_t m, const yaml_char_t *anchor,
                             const yaml_char_t *tag, int implicit) {
  if (anchor)
    return perr(name, m, "anchors (&name) are not allowed in recipes",
                "write the value out in full");
  if (tag && !implicit)
    return perr(name, m, "tags (!tag) are not allowed in recipes", "remove the tag");
  return SQ_OK;
}

/* Attach a finished node to the open container on top of the stack, checking
 * for duplicate keys when the container is a mapping and kid is a key. */
static sq_status attach(const char *name, sq_ynode **stack, int depth, sq_ynode *kid) {
  sq_ynode *top = stack[depth - 1];
  if (top->kind == SQ_Y_MAP && top->n % 2 == 0) { /* kid is a key */
    if (kid->kind != SQ_Y_SCALAR) {
      sq_status st = sq_error_set(SQ_ERR_FORMAT, "%s:%d:%d: mapping keys must be plain strings, not %s",
                                  name, kid->line, kid->col, sq_yaml_kind_name(kid));
      sq_yaml_free(kid);
      return st;
    }
    for (int i = 0; i < top->n; i += 2) {
      if (strcmp(top->kids[i]->str, kid->str) == 0) {
        sq_status st = sq_error_set(SQ_ERR_FORMAT,
                                    "%s:%d:%d: duplicate key '%s' (first at line %d) -- hint: "
                                    "YAML keeps only one; merge the two entries",
                                    name, kid->line, kid->col, kid->str, top->kids[i]->line);
        sq_yaml_free(kid);
        return st;
      }
    }
  }
  sq_status st = node_push(top, kid);
  if (st != SQ_OK) sq_yaml_free(kid);
  return st;
}

sq_status sq_yaml_build(const char *name, const char *buf, size_t len, sq_ynode **root) {
  *root = NULL;
  if (len > SQ_RECIPE_MAX_BYTES)
    return sq_error_set(SQ_ERR_FORMAT, "%s:1:1: recipe is %zu bytes, more than the %u-byte limit",
                        name, len, (unsigned)SQ_RECIPE_MAX_BYTES);
  yaml_parser_t parser;
  if (!yaml_parser_initialize(&parser)) return sq_error_set(SQ_ERR_NOMEM, "libyaml: out of memory");
  yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);

  /* stack[0] is a synthetic sequence that receives the document's root. */
  sq_ynode *stack[SQ_RECIPE_MAX_DEPTH + 2] = {0};
  int depth = 0;
  sq_status st = SQ_OK;
  int docs = 0, done = 0;
  yaml_mark_t zero = {0, 0, 0};
  stack[depth++] = node_new(SQ_Y_SEQ, zero);
  if (!stack[0]) {
    yaml_parser_delete(&parser);
    return sq_error_set(SQ_ERR_NOMEM, "out of memory reading a recipe");
  }

  while (!done && st == SQ_OK) {
    yaml_event_t ev;
    if (!yaml_parser_parse(&parser, &ev)) {
      /* With a context ("while parsing a flow sequence"), the context mark is
       * where the unclosed construct opened: that is the line to fix. */
      yaml_mark_t m = parser.problem_mark;
      const char *problem = parser.problem ? parser.problem : "unknown problem";
      if (parser.context)
        st = sq_error_set(SQ_ERR_FORMAT, "%s:%d:%d: YAML syntax error %s started here: %s (at %d:%d)", name,
                          (int)parser.context_mark.line + 1, (int)parser.context_mark.column + 1, parser.context,
                          problem, (int)m.line + 1, (int)m.column + 1);
      else
        st = sq_error_set(SQ_ERR_FORMAT, "%s:%d:%d: YAML syntax error: %s", name, (int)m.line + 1,
                          (int)m.column + 1, problem);
      break;
    }
    yaml_mark_t m = ev.start_mark;
    switch (ev.type) {
      case YAML_STREAM_START_EVENT:
      case YAML_DOCUMENT_END_EVENT:
        break;
      case YAML_STREAM_END_EVENT:
        done = 1;
        break;
      case YAML_DOCUMENT_START_EVENT:
        if (++docs > 1)
          st = perr(name, m, "more than one YAML document", "a recipe is one document; remove the '---'");
        break;
      case YAML_ALIAS_EVENT:
        st = perr(name, m, "aliases (*name) are not allowed in recipes", "write the value out in full");
        break;
      case YAML_SCALAR_EVENT: {
        st = check_props(name, m, ev.data.scalar.anchor, ev.data.scalar.tag,
                         ev.data.scalar.plain_implicit || ev.data.scalar.quoted_implicit);
        if (st != SQ_OK) break;
        if (memchr(ev.data.scalar.value, 0, ev.data.scalar.length)) {
          st = perr(name, m, "string contains a NUL character", NULL);
          break;
        }
        sq_ynode *n = node_new(SQ_Y_SCALAR, m);
        char *s = n ? malloc(ev.data.scalar.length + 1) : NULL;
        if (!s) {
          free(n);
          st = sq_error_set(SQ_ERR_NOMEM, "out of memory reading a recipe");
          break;
        }
        memcpy(s, ev.data.scalar.value, ev.data.scalar.length);
        s[ev.data.scalar.length] = 0;
        n->str = s;
        n->quoted = ev.data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
        st = attach(name, stack, depth, n);
        break;
      }
      case YAML_SEQUENCE_START_EVENT:
      case YAML_MAPPING_START_EVENT: {
        int is_map = ev.type == YAML_MAPPING_START_EVENT;
        st = is_map ? check_props(name, m, ev.data.mapping_start.anchor, ev.data.mapping_start.tag,
                                  ev.data.mapping_start.implicit)
                    : check_props(name, m, ev.data.sequence_start.anchor, ev.data.sequence_start.tag,
                                  ev.data.sequence_start.implicit);
        if (st != SQ_OK) break;
        if (depth > SQ_RECIPE_MAX_DEPTH) {
          char what[96];
          snprintf(what, sizeof what, "nesting deeper than %d levels", SQ_RECIPE_MAX_DEPTH);
          st = perr(name, m, what, NULL);
          break;
        }
        sq_ynode *n = node_new(is_map ? SQ_Y_MAP : SQ_Y_SEQ, m);
        if (!n) {
          st = sq_error_set(SQ_ERR_NOMEM, "out of memory reading a recipe");
          break;
        }
        /* keys are checked when attached, so a container key fails here */
        st = attach(name, stack, depth, n);
        if (st == SQ_OK) stack[depth++] = n;
        break;
      }
      case YAML_SEQUENCE_END_EVENT:
      case YAML_MAPPING_END_EVENT:
        if (depth > 1) depth--;
        break;
      default:
        break;
    }
    yaml_event_delete(&ev);
  }
  yaml_parser_delete(&parser);

  sq_ynode *holder = stack[0];
  if (st == SQ_OK && holder->n == 0)
    st = sq_error_set(SQ_ERR_FORMAT, "%s:1:1: the recipe is empty -- hint: start with e.g. 'quant_stage:'",
                      name);
  if (st == SQ_OK) {
    *root = holder->kids[0];
    holder->n = 0;
  }
  sq_yaml_free(holder);
  return st;
}
