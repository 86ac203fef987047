/* quantization_config JSON: what shardq writes for the W4A16, W4A16_ASYM,
 * W8A8 and FP8_DYNAMIC presets is compared (semantically, json_equal) with
 * the block compressed-tensors writes for them, transcribed by hand below from
 * its serialization (model_compressor.update_config: version, quant_method,
 * sparsity_config, transform_config + QuantizationConfig.model_dump with every
 * QuantizationArgs field). Then parsing: the round trip, compressed-tensors'
 * defaults for missing fields, preset-name groups, mixed precision, sparsity,
 * module matching and rejections. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sharding/compressed.h"
#include "test_util.h"

#define W4A16_G128_SYM                                                                         \
  "{\"config_groups\": {\"group_0\": {\"input_activations\": null, \"output_activations\": null," \
  " \"targets\": [\"Linear\"], \"weights\": {\"actorder\": null, \"block_structure\": null,"    \
  " \"dynamic\": false, \"group_size\": 128, \"num_bits\": 4, \"observer\": \"minmax\","        \
  " \"observer_kwargs\": {}, \"strategy\": \"group\", \"symmetric\": true, \"type\": \"int\"}}}," \
  " \"format\": \"pack-quantized\", \"global_compression_ratio\": null, \"ignore\": [\"lm_head\"]," \
  " \"kv_cache_scheme\": null, \"quant_method\": \"compressed-tensors\","                        \
  " \"quantization_status\": \"compressed\", \"sparsity_config\": {}, \"transform_config\": {}," \
  " \"version\": \"0.11.0\"}"

static const char *k_w4a16_asym =
    "{\"config_groups\": {\"group_0\": {\"input_activations\": null, \"output_activations\": null,"
    " \"targets\": [\"Linear\"], \"weights\": {\"actorder\": null, \"block_structure\": null,"
    " \"dynamic\": false, \"group_size\": 128, \"num_bits\": 4, \"observer\": \"minmax\","
    " \"observer_kwargs\": {}, \"strategy\": \"group\", \"symmetric\": false, \"type\": \"int\"}}},"
    " \"format\": \"pack-quantized\", \"global_compression_ratio\": null, \"ignore\": [\"lm_head\"],"
    " \"kv_cache_scheme\": null, \"quant_method\": \"compressed-tensors\","
    " \"quantization_status\": \"compressed\", \"sparsity_config\": {}, \"transform_config\": {},"
    " \"version\": \"0.11.0\"}";

static const char *k_w8a8 =
    "{\"config_groups\": {\"group_0\": {\"input_activations\": {\"actorder\": null,"
    " \"block_structure\": null, \"dynamic\": true, \"group_size\": null, \"num_bits\": 8,"
    " \"observer\": null, \"observer_kwargs\": {}, \"strategy\": \"token\", \"symmetric\": true,"
    " \"type\": \"int\"}, \"output_activations\": null, \"targets\": [\"Linear\"],"
    " \"weights\": {\"actorder\": null, \"block_structure\": null, \"dynamic\": false,"
    " \"group_size\": null, \"num_bits\": 8, \"observer\": \"minmax\", \"observer_kwargs\": {},"
    " \"strategy\": \"channel\", \"symmetric\": true, \"type\": \"int\"}}},"
    " \"format\": \"int-quantized\", \"global_compression_ratio\": null, \"ignore\": [\"lm_head\"],"
    " \"kv_cache_scheme\": null, \"quant_method\": \"compressed-tensors\","
    " \"quantization_status\": \"compressed\", \"sparsity_config\": {}, \"transform_config\": {},"
    " \"version\": \"0.11.0\"}";

static const char *k_fp8_dynamic =
    "{\"config_groups\": {\"group_0\": {\"input_activations\": {\"actorder\": null,"
    " \"block_structure\": null, \"dynamic\": true, \"group_size\": null, \"num_bits\": 8,"
    " \"observer\": null, \"observer_kwargs\": {}, \"strategy\": \"token\", \"symmetric\": true,"
    " \"type\": \"float\"}, \"output_activations\": null, \"targets\": [\"Linear\"],"
    " \"weights\": {\"actorder\": null, \"block_structure\": null, \"dynamic\": false,"
    " \"group_size\": null, \"num_bits\": 8, \"observer\": \"minmax\", \"observer_kwargs\": {},"
    " \"strategy\": \"channel\", \"symmetric\": true, \"type\": \"float\"}}},"
    " \"format\": \"float-quantized\", \"global_compression_ratio\": null, \"ignore\": [\"lm_head\"],"
    " \"kv_cache_scheme\": null, \"quant_method\": \"compressed-tensors\","
    " \"quantization_status\": \"compressed\", \"sparsity_config\": {}, \"transform_config\": {},"
    " \"version\": \"0.11.0\"}";

static json_t *parse(const char *text) {
  json_error_t err;
  json_t *j = json_loads(text, 0, &err);
  if (!j) sq_test_fail(__FILE__, __LINE__, "bad test JSON: %s (line %d)", err.text, err.line);
  return j;
}

/* Build the preset's config, compare with want, then parse it back and re-serialize. */
static void check_preset(const char *preset, const char *want_text) {
  sq_ct_config c;
  sq_ct_scheme s;
  sq_ct_config_init(&c);
  SQ_EXPECT(sq_ct_scheme_preset(preset, SQ_DTYPE_BF16, &s) == SQ_OK);
  SQ_EXPECT(sq_ct_config_add_group(&c, &s) == SQ_OK);
  SQ_EXPECT(sq_ct_config_add_ignore(&c, "lm_head") == SQ_OK);
  json_t *got = NULL, *want = parse(want_text);
  SQ_EXPECT(sq_ct_config_to_json(&c, &got) == SQ_OK);
  if (!json_equal(got, want)) {
    char *g = json_dumps(got, JSON_SORT_KEYS);
    sq_test_fail(__FILE__, __LINE__, "%s: got %s", preset, g);
    free(g);
  }
  sq_ct_config back;
  SQ_EXPECT(sq_ct_config_from_json(want, "want.json", &back) == SQ_OK);
  json_t *again = NULL;
  SQ_EXPECT(sq_ct_config_to_json(&back, &again) == SQ_OK);
  SQ_EXPECT_MSG(json_equal(again, want), "%s: parse + serialize is not the identity", preset);
  SQ_EXPECT_EQ_INT(back.n_groups, 1);
  SQ_EXPECT_EQ_INT(back.groups[0].weights.q.num_bits, s.weights.q.num_bits);
  SQ_EXPECT_EQ_INT(back.groups[0].weights.q.strategy, s.weights.q.strategy);
  SQ_EXPECT_EQ_INT(back.groups[0].weights.q.symmetric, s.weights.q.symmetric);
  SQ_EXPECT_EQ_INT(back.groups[0].has_input, s.has_input);
  json_decref(again);
  json_decref(got);
  json_decref(want);
  sq_ct_config_free(&back);
  sq_ct_scheme_free(&s);
  sq_ct_config_free(&c);
}

/* vLLM-style minimal config: missing fields take compressed-tensors' defaults. */
static void check_defaults(void) {
  json_t *j = parse("{\"quant_method\": \"compressed-tensors\", \"format\": \"pack-quantized\","
                    " \"config_groups\": {\"group_0\": {\"targets\": [\"Linear\"], \"weights\":"
                    " {\"num_bits\": 4, \"group_size\": 32}}, \"group_1\": {\"targets\":"
                    " [\"re:.*down_proj\"], \"weights\": {\"group_size\": -1, \"actorder\": true}},"
                    " \"group_2\": {\"targets\": [\"model.layers.0.mlp.down_proj\"],"
                    " \"weights\": {\"num_bits\": 8, \"symmetric\": false}}},"
                    " \"ignore\": [\"lm_head\", \"re:.*mlp.gate$\"]}");
  sq_ct_config c;
  SQ_EXPECT(sq_ct_config_from_json(j, "min.json", &c) == SQ_OK);
  SQ_EXPECT_EQ_INT(c.n_groups, 3);
  SQ_EXPECT_EQ_INT(c.format, SQ_CT_FMT_PACK);
  const sq_ct_scheme *g0 = &c.groups[0], *g1 = &c.groups[1], *g2 = &c.groups[2];
  SQ_EXPECT_EQ_INT(g0->weights.q.strategy, SQ_QSTRAT_GROUP); /* inferred from group_size */
  SQ_EXPECT_EQ_INT(g0->weights.q.group_size, 32);
  SQ_EXPECT_EQ_INT(g0->weights.q.symmetric, 1);
  SQ_EXPECT_EQ_INT(g0->weights.q.type, SQ_QTYPE_INT);
  SQ_EXPECT_EQ_INT(g1->weights.q.strategy, SQ_QSTRAT_CHANNEL); /* group_size -1 */
  SQ_EXPECT_EQ_INT(g1->weights.q.num_bits, 8);                 /* default */
  SQ_EXPECT_EQ_INT(g1->weights.actorder, SQ_CT_ACTORDER_GROUP);  /* true -> "group" */
  SQ_EXPECT_EQ_INT(g2->weights.q.strategy, SQ_QSTRAT_TENSOR);  /* no group_size */
  SQ_EXPECT_EQ_INT(g2->weights.q.symmetric, 0);
  /* matching: exact name beats regex beats "Linear"; ignore wins */
  SQ_EXPECT(sq_ct_config_match(&c, "model.layers.0.mlp.down_proj") == g2);
  SQ_EXPECT(sq_ct_config_match(&c, "model.layers.1.mlp.down_proj") == g1);
  SQ_EXPECT(sq_ct_config_match(&c, "model.layers.1.self_attn.q_proj") == g0);
  SQ_EXPECT(sq_ct_config_match(&c, "lm_head") == NULL);
  SQ_EXPECT(sq_ct_config_match(&c, "model.layers.3.mlp.gate") == NULL);
  SQ_EXPECT(sq_ct_config_match(&c, "model.layers.3.mlp.gate_proj") == g0);
  sq_ct_config_free(&c);
  json_decref(j);
}

static void check_preset_group_and_mixed(void) {
  /* A group written as a preset name with its targets (QuantizationConfig.model_post_init). */
  json_t *j = parse("{\"quant_method\": \"compressed-tensors\", \"format\": \"pack-quantized\","
                    " \"config_groups\": {\"W4A16\": [\"Linear\"]}}");
  sq_ct_config c;
  SQ_EXPECT(sq_ct_config_from_json(j, "p.json", &c) == SQ_OK);
  SQ_EXPECT_EQ_INT(c.n_groups, 1);
  if (c.n_groups == 1) {
    SQ_EXPECT_EQ_INT(c.groups[0].weights.q.group_size, 128);
    SQ_EXPECT_EQ_INT(c.groups[0].n_targets, 1);
    SQ_EXPECT(c.groups[0].n_targets == 1 && strcmp(c.groups[0].targets[0], "Linear") == 0);
  }
  sq_ct_config_free(&c);
  json_decref(j);

  /* Two groups of different formats: mixed-precision with a "format" per group. */
  sq_ct_config m;
  sq_ct_scheme a, b;
  sq_ct_config_init(&m);
  SQ_EXPECT(sq_ct_scheme_preset("W4A16", SQ_DTYPE_BF16, &a) == SQ_OK);
  SQ_EXPECT(sq_ct_scheme_preset("FP8_DYNAMIC", SQ_DTYPE_BF16, &b) == SQ_OK);
  sq_ct_scheme_free(&a); /* retarget W4A16 to the MLPs */
  SQ_EXPECT(sq_ct_scheme_add_target(&a, "re:.*mlp.*") == SQ_OK);
  SQ_EXPECT(sq_ct_config_add_group(&m, &a) == SQ_OK);
  SQ_EXPECT(sq_ct_config_add_group(&m, &b) == SQ_OK);
  json_t *got = NULL;
  SQ_EXPECT(sq_ct_config_to_json(&m, &got) == SQ_OK);
  json_t *want = parse(
      "{\"format\": \"mixed-precision\", \"config_groups\": {"
      "\"group_0\": {\"format\": \"pack-quantized\", \"targets\": [\"re:.*mlp.*\"]},"
      "\"group_1\": {\"format\": \"float-quantized\", \"targets\": [\"Linear\"]}}}");
  SQ_EXPECT(json_equal(json_object_get(got, "format"), json_object_get(want, "format")));
  for (int g = 0; g < 2; ++g) {
    const char *gn = g ? "group_1" : "group_0";
    json_t *gg = json_object_get(json_object_get(got, "config_groups"), gn);
    json_t *wg = json_object_get(json_object_get(want, "config_groups"), gn);
    SQ_EXPECT_MSG(json_equal(json_object_get(gg, "format"), json_object_get(wg, "format")),
                  "%s format", gn);
    SQ_EXPECT_MSG(json_equal(json_object_get(gg, "targets"), json_object_get(wg, "targets")),
                  "%s targets", gn);
  }
  sq_ct_config back;
  SQ_EXPECT(sq_ct_config_from_json(got, "m.json", &back) == SQ_OK);
  SQ_EXPECT_EQ_INT(back.format, SQ_CT_FMT_MIXED);
  SQ_EXPECT(sq_ct_config_module_format(&back, sq_ct_config_match(&back, "model.layers.0.mlp.up_proj")) ==
            SQ_CT_FMT_PACK);
  SQ_EXPECT(sq_ct_config_module_format(&back, sq_ct_config_match(&back, "model.layers.0.self_attn.o_proj")) ==
            SQ_CT_FMT_FLOAT);
  sq_ct_config_free(&back);
  json_decref(got);
  json_decref(want);
  sq_ct_scheme_free(&a);
  sq_ct_scheme_free(&b);
  sq_ct_config_free(&m);
}

static void check_sparsity(void) {
  sq_ct_config c;
  sq_ct_config_init(&c);
  c.sparsity.present = true;
  snprintf(c.sparsity.format, sizeof c.sparsity.format, "sparse-24-bitmask");
  snprintf(c.sparsity.structure, sizeof c.sparsity.structure, "2:4");
  c.sparsity.global_sparsity = 0.5;
  json_t *got = NULL;
  SQ_EXPECT(sq_ct_config_to_json(&c, &got) == SQ_OK);
  json_t *want = parse("{\"format\": \"sparse-24-bitmask\", \"global_sparsity\": 0.5,"
                       " \"ignore\": [], \"sparsity_structure\": \"2:4\", \"targets\": []}");
  SQ_EXPECT(json_equal(json_object_get(got, "sparsity_config"), want));
  SQ_EXPECT(strcmp(json_string_value(json_object_get(got, "format")), "dense") == 0);
  sq_ct_config back;
  SQ_EXPECT(sq_ct_config_from_json(got, "s.json", &back) == SQ_OK);
  SQ_EXPECT(back.sparsity.present && back.sparsity.global_sparsity == 0.5);
  SQ_EXPECT(strcmp(back.sparsity.structure, "2:4") == 0);
  sq_ct_config_free(&back);
  json_decref(got);
  json_decref(want);
  sq_ct_config_free(&c);
}

static void expect_reject(const char *text, const char *needle) {
  json_t *j = parse(text);
  sq_ct_config c;
  sq_error_clear();
  sq_status st = sq_ct_config_from_json(j, "bad/config.json", &c);
  SQ_EXPECT_MSG(st != SQ_OK, "accepted: %s", text);
  const char *msg = sq_error_message();
  SQ_EXPECT_MSG(strstr(msg, "bad/config.json") && strstr(msg, needle) && !strchr(msg, '\n'),
                "message '%s' should name the file and '%s'", msg, needle);
  sq_error_clear();
  json_decref(j);
}

static void check_rejects(void) {
  expect_reject("{\"format\": \"marlin-25\", \"config_groups\": {}}", "marlin-25");
  expect_reject("{\"config_groups\": {\"g\": {\"targets\": [\"Linear\"], \"weights\":"
                " {\"strategy\": \"group\"}}}}",
                "group_size");
  expect_reject("{\"config_groups\": {\"g\": {\"targets\": [\"Linear\"], \"weights\":"
                " {\"num_bits\": 16}}}}",
                "num_bits");
  expect_reject("{\"config_groups\": {\"g\": {\"targets\": \"Linear\"}}}", "targets");
  expect_reject("{\"config_groups\": {\"g\": {\"targets\": [\"Linear\"], \"weights\":"
                " {\"type\": \"nf4\"}}}}",
                "type");
  expect_reject("{\"quant_method\": \"gptq\"}", "gptq");
}

int main(void) {
  check_preset("W4A16", W4A16_G128_SYM);
  check_preset("W4A16_ASYM", k_w4a16_asym);
  check_preset("W8A8", k_w8a8);
  check_preset("FP8_DYNAMIC", k_fp8_dynamic);
  check_defaults();
  check_preset_group_and_mixed();
  check_sparsity();
  check_rejects();
  return sq_test_result("test_ct_config");
}
