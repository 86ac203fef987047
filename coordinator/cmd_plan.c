/* shardq plan: the distributed plan for a model and its per-rank estimate of
 * checkpoint bytes read, network bytes, peak memory, FLOPs and time, from
 * config.json alone (no weights needed). See sharding/plan.h for the model. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "coordinator/cli.h"
#include "sharding/plan.h"

static void sq_plan_help(FILE *out) {
  fprintf(
      out,
      "usage: shardq plan --model DIR|config.json --ranks N [options]\n\n"
      "Builds the distributed plan (which rank owns which quantizable module of every\n"
      "decoder layer, which calibration samples each rank forwards) and estimates, per\n"
      "rank, the checkpoint bytes read, network bytes, peak memory, FLOPs and time.\n"
      "Needs only config.json. Modules sharing a Hessian (q/k/v, gate/up) share an owner;\n"
      "owners are chosen per layer by greedy longest-processing-time on the solve cost\n"
      "d_out*d_in^2 + d_in^3 (+ routed tokens*d_in^2 for experts) plus the time to read\n"
      "the module's weight (weight bytes * flops / read-bw).\n\n"
      "options:\n"
      "  --model PATH        model directory or its config.json (required)\n"
      "  --ranks N           number of ranks (GPUs), >= 1 (required)\n"
      "  --samples S         calibration samples (default 512)\n"
      "  --seq-len T         tokens per sample (default 2048)\n"
      "  --gpus-per-node G   ranks per node (default 8); >1 node uses --net-bw\n"
      "  --gpu-mem BYTES     memory per GPU, e.g. 80GiB, 96e9 (default 80GiB); warns if exceeded\n"
      "  --flops F           sustained FLOP/s per rank (default 400e12)\n"
      "  --mem-bw B          HBM bytes/s per rank (default 2e12)\n"
      "  --read-bw B         checkpoint read bytes/s per rank (default 2e9)\n"
      "  --net-bw B          inter-node bytes/s per rank (default 25e9)\n"
      "  --intra-bw B        intra-node bytes/s per rank (default 150e9)\n"
      "  --bits K            output weight bits, for the bytes written (default 4)\n"
      "  --layers            also print the per-layer owner table\n"
      "  --json              print JSON instead of text\n"
      "  -h, --help          this help\n\n"
      "Estimates assume uniform expert routing, no overlap of compute, I/O and network,\n"
      "and that each rank reads only its own modules' weights plus norms, routers and\n"
      "the embedding; the dense weights it does not own arrive over the network.\n"
      "exit codes: 0 done, 1 error, 2 usage error\n");
}

/* "80GiB", "80G", "96e9", "512MiB" -> bytes. */
static int sq_parse_bytes(const char *s, uint64_t *out) {
  errno = 0;
  char *end;
  double v = strtod(s, &end);
  if (end == s || errno || !(v > 0)) return -1;
  double mul = 1;
  if (!strcmp(end, "") || !strcmp(end, "B"))
    mul = 1;
  else if (!strcmp(end, "KiB") || !strcmp(end, "K"))
    mul = 1024.0;
  else if (!strcmp(end, "MiB") || !strcmp(end, "M"))
    mul = 1024.0 * 1024;
  else if (!strcmp(end, "GiB") || !strcmp(end, "G"))
    mul = 1024.0 * 1024 * 1024;
  else if (!strcmp(end, "TiB") || !strcmp(end, "T"))
    mul = 1024.0 * 1024 * 1024 * 1024;
  else if (!strcmp(end, "KB"))
    mul = 1e3;
  else if (!strcmp(end, "MB"))
    mul = 1e6;
  else if (!strcmp(end, "GB"))
    mul = 1e9;
  else if (!strcmp(end, "TB"))
    mul = 1e12;
  else
    return -1;
  v *= mul;
  if (v > 1.8e19) return -1;
  *out = (uint64_t)v;
  return 0;
}

static int sq_parse_pos(const char *s, double *out) {
  errno = 0;
  char *end;
  double v = strtod(s, &end);
  if (end == s || *end || errno || !(v > 0) || !isfinite(v)) return -1;
  *out = v;
  return 0;
}

static int sq_parse_int(const char *s, long long lo, long long hi, long long *out) {
  errno = 0;
  char *end;
  long long v = strtoll(s, &end, 10);
  if (end == s || *end || errno || v < lo || v > hi) return -1;
  *out = v;
  return 0;
}

static const char *sq_fmt_flops(double f, char *buf, size_t n) {
  const char *u[] = {"", "K", "M", "G", "T", "P", "E", "Z"};
  int i = 0;
  while (f >= 1000 && i < 7) f /= 1000, i++;
  snprintf(buf, n, "%.2f %sFLOP", f, u[i]);
  return buf;
}

static const char *sq_fmt_time(double s, char *buf, size_t n) {
  if (s < 120)
    snprintf(buf, n, "%.1f s", s);
  else if (s < 7200)
    snprintf(buf, n, "%.1f min", s / 60);
  else
    snprintf(buf, n, "%.2f h", s / 3600);
  return buf;
}

static void sq_print_text(const sq_plan *p, const sq_plan_estimate *e, const sq_model_config *c,
                          const sq_plan_device *d, int layers) {
  char b1[32], b2[32], b3[32], b4[32], b5[32], b6[32];
  int moe_layers = 0;
  for (int l = 0; l < p->n_layers; ++l) moe_layers += p->layers[l].moe;
  printf("model       %s (%s), %d layers (%d MoE), %zu quantizable modules in %d Hessian groups\n",
         c->label, sq_model_family_name(c->family), p->n_layers, moe_layers, p->n_modules,
         p->n_groups);
  printf(
      "job         %d ranks on %d node(s) x %d GPUs, %lld samples x %lld tokens, %d-bit output\n",
      p->ranks, e->nodes, d->gpus_per_node, (long long)p->samples, (long long)p->seq_len, d->bits);
  printf(
      "device      %.3g FLOP/s, HBM %.3g B/s, read %.3g B/s, net %.3g B/s (intra %.3g), mem %s\n\n",
      d->flops, d->mem_bw, d->read_bw, d->net_bw, d->intra_bw,
      sq_format_bytes(d->gpu_mem, b1, sizeof b1));
  printf("%5s %9s %8s %12s %12s %12s %12s %14s %10s\n", "rank", "samples", "modules", "read", "net",
         "written", "peak mem", "FLOPs", "busy");
  for (int r = 0; r < p->ranks; ++r) {
    const sq_plan_rank_est *R = &e->rank[r];
    char smp[32];
    snprintf(smp, sizeof smp, "%lld-%lld", (long long)p->rank[r].sample_begin,
             (long long)p->rank[r].sample_end);
    printf("%5d %9s %8zu %12s %12s %12s %12s %14s %10s%s\n", r, smp, p->rank[r].n_modules,
           sq_format_bytes(R->bytes_read, b1, sizeof b1),
           sq_format_bytes(R->bytes_net, b2, sizeof b2),
           sq_format_bytes(R->bytes_out, b3, sizeof b3),
           sq_format_bytes(R->peak_mem, b4, sizeof b4), sq_fmt_flops(R->flops, b5, sizeof b5),
           sq_fmt_time(R->time_s, b6, sizeof b6), R->peak_mem > d->gpu_mem ? "  OVER MEMORY" : "");
  }
  printf("%5s %9s %8zu %12s %12s %12s %12s %14s\n", "total", "", p->n_modules,
         sq_format_bytes(e->total.bytes_read, b1, sizeof b1),
         sq_format_bytes(e->total.bytes_net, b2, sizeof b2),
         sq_format_bytes(e->total.bytes_out, b3, sizeof b3),
         sq_format_bytes(e->total.peak_mem, b4, sizeof b4),
         sq_fmt_flops(e->total.flops, b5, sizeof b5));
  printf("\nbusiest rank %d (%s busy); busy-time imbalance max/mean %.3f\n", e->busiest,
         sq_fmt_time(e->rank[e->busiest].time_s, b1, sizeof b1), e->imbalance);
  printf("owned load (solve + weight read) max/mean %.3f; per-layer critical path / ideal %.3f\n",
         e->cost_imbalance, e->makespan_ratio);
  printf("estimated wall time %s (layers are synchronous: sum of each layer's slowest rank)\n",
         sq_fmt_time(e->wall_s, b1, sizeof b1));
  printf("peak memory %s at layer %d (limit %s)\n",
         sq_format_bytes(e->total.peak_mem, b1, sizeof b1), e->total.peak_layer,
         sq_format_bytes(d->gpu_mem, b2, sizeof b2));
  if (layers) {
    printf("\n%5s %4s %7s %8s  owners (module: rank)\n", "layer", "moe", "modules", "groups");
    for (int l = 0; l < p->n_layers; ++l) {
      const sq_plan_layer *L = &p->layers[l];
      printf("%5d %4s %7zu %8d ", l, L->moe ? "yes" : "no", L->count, L->n_groups);
      if (L->moe) {
        /* Experts: count per rank instead of 3·E names. */
        for (size_t i = L->first; i < L->first + L->count; ++i) {
          const sq_plan_module *m = &p->modules[i];
          if (m->kind != SQ_PLAN_EXPERT) {
            const char *s = strstr(m->name, "layers.");
            s = s ? strchr(s + 7, '.') + 1 : m->name;
            printf(" %s:%d", s, m->owner);
          }
        }
        printf(" | experts per rank:");
        for (int r = 0; r < p->ranks; ++r) {
          size_t k = 0;
          for (size_t i = L->first; i < L->first + L->count; ++i)
            k += p->modules[i].kind == SQ_PLAN_EXPERT && p->modules[i].owner == r &&
                 p->modules[i].d_in == c->hidden_size &&
                 (i == L->first || p->modules[i - 1].group != p->modules[i].group);
          printf(" %zu", k);
        }
      } else {
        for (size_t i = L->first; i < L->first + L->count; ++i) {
          const sq_plan_module *m = &p->modules[i];
          const char *s = strstr(m->name, "layers.");
          s = s ? strchr(s + 7, '.') + 1 : m->name;
          printf(" %s:%d", s, m->owner);
        }
      }
      printf("\n");
    }
  }
  if (e->over_memory)
    printf(
        "\nwarning: peak memory %s exceeds --gpu-mem %s -- hint: use more ranks or fewer "
        "samples per rank (--samples, --seq-len)\n",
        sq_format_bytes(e->total.peak_mem, b1, sizeof b1),
        sq_format_bytes(d->gpu_mem, b2, sizeof b2));
}

/* A JSON string literal for s (paths may hold quotes or backslashes). */
static void sq_json_str(const char *s) {
  putchar('"');
  for (; *s; ++s) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\')
      printf("\\%c", ch);
    else if (ch < 0x20)
      printf("\\u%04x", ch);
    else
      putchar(ch);
  }
  putchar('"');
}

static void sq_print_json(const sq_plan *p, const sq_plan_estimate *e, const sq_model_config *c,
                          const sq_plan_device *d, int layers) {
  printf("{\n  \"model\": ");
  sq_json_str(c->label);
  printf(", \"family\": \"%s\", \"layers\": %d, \"modules\": %zu, \"groups\": %d,\n",
         sq_model_family_name(c->family), p->n_layers, p->n_modules, p->n_groups);
  printf(
      "  \"ranks\": %d, \"nodes\": %d, \"samples\": %lld, \"seq_len\": %lld, \"gpu_mem\": %llu,\n",
      p->ranks, e->nodes, (long long)p->samples, (long long)p->seq_len,
      (unsigned long long)d->gpu_mem);
  printf(
      "  \"busiest\": %d, \"imbalance\": %.6f, \"cost_imbalance\": %.6f, "
      "\"makespan_ratio\": %.6f, \"wall_s\": %.3f, \"over_memory\": %s,\n",
      e->busiest, e->imbalance, e->cost_imbalance, e->makespan_ratio, e->wall_s,
      e->over_memory ? "true" : "false");
  printf(
      "  \"total\": {\"bytes_read\": %llu, \"bytes_net\": %llu, \"bytes_out\": %llu, "
      "\"peak_mem\": %llu, \"flops\": %.6e},\n",
      (unsigned long long)e->total.bytes_read, (unsigned long long)e->total.bytes_net,
      (unsigned long long)e->total.bytes_out, (unsigned long long)e->total.peak_mem,
      e->total.flops);
  printf("  \"rank\": [\n");
  for (int r = 0; r < p->ranks; ++r) {
    const sq_plan_rank_est *R = &e->rank[r];
    printf(
        "    {\"rank\": %d, \"samples\": [%lld, %lld], \"modules\": %zu, \"cost\": %.6e, "
        "\"bytes_read\": %llu, \"bytes_net\": %llu, \"bytes_out\": %llu, \"peak_mem\": %llu, "
        "\"peak_layer\": %d, \"flops\": %.6e, \"time_s\": %.3f}%s\n",
        r, (long long)p->rank[r].sample_begin, (long long)p->rank[r].sample_end,
        p->rank[r].n_modules, p->rank[r].cost, (unsigned long long)R->bytes_read,
        (unsigned long long)R->bytes_net, (unsigned long long)R->bytes_out,
        (unsigned long long)R->peak_mem, R->peak_layer, R->flops, R->time_s,
        r + 1 < p->ranks ? "," : "");
  }
  printf("  ]%s\n", layers ? "," : "");
  if (layers) {
    printf("  \"modules_owned\": [\n");
    for (size_t i = 0; i < p->n_modules; ++i) {
      const sq_plan_module *m = &p->modules[i];
      printf(
          "    {\"name\": \"%s\", \"layer\": %d, \"kind\": \"%s\", \"d_out\": %lld, \"d_in\": "
          "%lld, "
          "\"group\": %d, \"owner\": %d}%s\n",
          m->name, m->layer, sq_plan_kind_name(m->kind), (long long)m->d_out, (long long)m->d_in,
          m->group, m->owner, i + 1 < p->n_modules ? "," : "");
    }
    printf("  ]\n");
  }
  printf("}\n");
}

int sq_cmd_plan(int argc, char **argv) {
  const char *model = NULL;
  long long ranks = 0, v;
  int layers = 0, json = 0;
  sq_plan_opts o;
  sq_plan_opts_default(&o);
  sq_plan_device d;
  sq_plan_device_default(&d);
  for (int i = 1; i < argc; ++i) {
    const char *a = argv[i];
    if (sq_cli_is_help(a)) {
      sq_plan_help(stdout);
      return SQ_EXIT_OK;
    }
    if (!strcmp(a, "--layers")) {
      layers = 1;
      continue;
    }
    if (!strcmp(a, "--json")) {
      json = 1;
      continue;
    }
    if (i + 1 >= argc) {
      fprintf(stderr, "shardq plan: %s needs a value (see shardq plan --help)\n", a);
      return SQ_EXIT_USAGE;
    }
    const char *val = argv[++i];
    int bad = 0;
    if (!strcmp(a, "--model"))
      model = val;
    else if (!strcmp(a, "--ranks"))
      bad = sq_parse_int(val, 1, 1 << 20, &ranks);
    else if (!strcmp(a, "--samples")) {
      bad = sq_parse_int(val, 1, 1LL << 40, &v);
      o.samples = v;
    } else if (!strcmp(a, "--seq-len")) {
      bad = sq_parse_int(val, 1, 1LL << 30, &v);
      o.seq_len = v;
    } else if (!strcmp(a, "--gpus-per-node")) {
      bad = sq_parse_int(val, 1, 1 << 20, &v);
      d.gpus_per_node = (int)v;
    } else if (!strcmp(a, "--bits")) {
      bad = sq_parse_int(val, 1, 16, &v);
      d.bits = (int)v;
    } else if (!strcmp(a, "--gpu-mem"))
      bad = sq_parse_bytes(val, &d.gpu_mem);
    else if (!strcmp(a, "--flops"))
      bad = sq_parse_pos(val, &d.flops);
    else if (!strcmp(a, "--mem-bw"))
      bad = sq_parse_pos(val, &d.mem_bw);
    else if (!strcmp(a, "--read-bw"))
      bad = sq_parse_pos(val, &d.read_bw);
    else if (!strcmp(a, "--net-bw"))
      bad = sq_parse_pos(val, &d.net_bw);
    else if (!strcmp(a, "--intra-bw"))
      bad = sq_parse_pos(val, &d.intra_bw);
    else {
      fprintf(stderr, "shardq plan: unknown option '%s' (see shardq plan --help)\n", a);
      return SQ_EXIT_USAGE;
    }
    if (bad) {
      fprintf(stderr, "shardq plan: bad value '%s' for %s (see shardq plan --help)\n", val, a);
      return SQ_EXIT_USAGE;
    }
  }
  o.byte_cost = d.flops / d.read_bw; /* owners read their weights: balance time, not FLOPs */
  if (!model || ranks < 1) {
    fprintf(stderr, "shardq plan: --model and --ranks are required\n");
    sq_plan_help(stderr);
    return SQ_EXIT_USAGE;
  }
  sq_model_config c;
  memset(&c, 0, sizeof c);
  sq_plan *p = NULL;
  sq_plan_estimate e;
  memset(&e, 0, sizeof e);
  sq_status st;
  SQ_CHECK_GOTO(sq_model_config_load(model, &c), st, fail);
  SQ_CHECK_GOTO(sq_plan_build(&c, (int)ranks, &o, &p), st, fail);
  SQ_CHECK_GOTO(sq_plan_estimate_build(p, &c, &d, &e), st, fail);
  if (json)
    sq_print_json(p, &e, &c, &d, layers);
  else
    sq_print_text(p, &e, &c, &d, layers);
  if (e.over_memory) sq_log_warn("plan: estimated peak memory exceeds --gpu-mem");
fail:
  sq_plan_estimate_free(&e);
  sq_plan_free(p);
  sq_model_config_free(&c);
  return st == SQ_OK ? SQ_EXIT_OK : sq_cli_report("plan", st, -1);
}
