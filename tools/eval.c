/* longattn eval: what KV-cache policies keep, measured on the real model.
 * Tasks: needle in a haystack, multi-key needles and variable tracking (the
 * library's la_eval_* builders, asked through the chat template and answered
 * greedily), and perplexity over a text file (llama.cpp's chunked scheme,
 * shared with longattn ppl). Each task runs once per KV policy and KV type;
 * a table (or JSON lines) reports the cache's bytes, its share of a full f16
 * cache of the same tokens, the score and the speed. Needle grids are also
 * written as CSV heatmaps (context length x depth), and as PNG when gnuplot
 * is installed. */
#include "cli.h"
#include "cli_util.h"
#include "longattn_model.h"
#include "ppl_score.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char CMD[] = "longattn eval";

#define MAX_LIST 32
/* Extra session room beyond the longest context: the prompt may count a few
 * tokens more than the builder's sentence-by-sentence count. */
#define CTX_SLACK 64

typedef enum { TASK_NEEDLE, TASK_MULTIKEY, TASK_VARTRACK, TASK_PPL, TASK_COUNT } task_id;
static const char *const TASK_NAMES[TASK_COUNT] = {"needle", "multikey", "vartrack", "ppl"};

typedef struct {
    const char *model_path, *text_path, *heatmap;
    bool task[TASK_COUNT];
    int64_t lengths[MAX_LIST], depths[MAX_LIST];
    int n_lengths, n_depths;
    int64_t samples, threads, keys, chains, hops, ppl_ctx, ppl_chunks, ppl_offset;
    uint64_t seed;
    char *policy_text[MAX_LIST];
    la_kv_policy policy[MAX_LIST];
    int n_policies;
    la_dtype types[MAX_LIST];
    la_kv_quant quants[MAX_LIST]; /* with types: q8 / q4 pages (kv_type then unused) */
    int n_types;
    bool json, no_heatmap;
    bool exact_decode;        /* --exact-decode: f32 activations in single-token steps */
    la_sparse_choice sparse;  /* --sparse: block-sparse prefill in every run */
    const char *sparse_text, *sparse_heads;
} eval_options;

static void usage(FILE *f) {
    fprintf(f,
            "usage: longattn eval -m MODEL.gguf [options]\n"
            "  -m FILE          GGUF model\n"
            "  --task LIST      needle, multikey, vartrack, ppl (comma-separated; default needle)\n"
            "                   A list names an item once; an option no chosen task reads is refused.\n"
            "  --kv LIST        KV-cache policies, comma-separated (default full), e.g. full,streaming:1024\n"
            "  --kv-type LIST   KV element types, comma-separated (default f16), as longattn run's --kv-type\n"
            "  --lengths LIST   context lengths in tokens, prompt included (default 1024,2048; the model's\n"
            "                   trained context is the sensible top, 8192 for SmolLM2: a longer length runs\n"
            "                   with a warning naming it, as run's --ctx, and takes time and memory that grow\n"
            "                   with the length; a length whose KV cache (--kv-type's widest, the --kv that\n"
            "                   keeps most) and prompt would not fit in physical memory is refused; past\n"
            "                   the trained context a second warning gives the prompt's attention work\n"
            "                   relative to one at the trained context, which grows with the length squared)\n"
            "  --depths LIST    needle depths in percent of the context (default 0,25,50,75,100)\n"
            "  --samples N      samples (seeds) per grid cell (default 1)\n"
            "  --seed S         seed the samples derive from, with their length, depth and index (default 1)\n"
            "  --keys N         multikey: needles per context (default 4)\n"
            "  --chains N       vartrack: chains per context (default 2)\n"
            "  --hops N         vartrack: assignments after each chain's first (default 4)\n"
            "  -f FILE          ppl: the text (scripts/get-eval-text.sh: Gutenberg etexts from PyPI's brotli)\n"
            "  --ppl-ctx N      ppl: tokens per chunk, the second half scored (default 1024; past the trained\n"
            "                   context it runs with a warning, as --lengths)\n"
            "  --ppl-chunks N   ppl: chunks at most (default 8; 0 = all)\n"
            "  --ppl-offset N   ppl: the first chunk starts at token N of the text (default 0), so windows\n"
            "                   further in can be run alone; each chunk's own perplexity is reported too\n"
            "  --threads N      CPU threads, 1 to 4096 (default: OMP_NUM_THREADS or all cores)\n"
            "  --heatmap PREFIX write PREFIX-TASK-POLICY-TYPE.csv (and .png with gnuplot) for needle and\n"
            "                   multikey (default PREFIX: longattn-eval; DIR/NAME, not DIR/)\n"
            "  --no-heatmap     write no files (not with --heatmap)\n"
            "  --json           JSON lines on stdout (a line per grid cell, then per summary row)\n"
            "  --sparse S:B     block-sparse prefill in every run, as longattn run's --sparse (default none);\n"
            "                   the rows carry it as \"sparse\", so a dense and a sparse run can be compared;\n"
            "                   under a stateful --kv policy (h2o, snapkv, quest, duo) the prefill attends\n"
            "                   densely through the policy, and its rows carry \"sparse\":\"none\"\n"
            "  --sparse-heads FILE  per-head coverage for --sparse topk:G, as longattn run's\n"
            "  --exact-decode   f32 activations in single-token steps and the prompt's last logits (no\n"
            "                   int8 rounding; slower): policies compared without the rounding noise;\n"
            "                   the rows carry it as \"exact_decode\"\n"
            "\n"
            "Share: the cache's bytes over those of a full f16 cache of the same tokens and page size.\n"
            "Tokens/s: decode steps per second (ppl: tokens evaluated per second).\n");
}

/* ---- option parsing */

/* Split a comma-separated list in place into at most MAX_LIST items. */
static int split_list(const char *option, char *text, char **items) {
    int n = 0;
    for (char *p = text;;) {
        char *comma = strchr(p, ',');
        if (comma) *comma = 0;
        if (!*p || n == MAX_LIST) {
            fprintf(stderr, "%s: %s: %s\n", CMD, option, !*p ? "empty item in the list" : "more than 32 items");
            return -1;
        }
        for (int i = 0; i < n; i++)
            if (!strcmp(items[i], p)) { /* ppl,ppl ran ppl once; full,full wrote one heatmap over the other */
                fprintf(stderr, "%s: %s lists '%s' twice\n", CMD, option, p);
                return -1;
            }
        items[n++] = p;
        if (!comma) break;
        p = comma + 1;
    }
    return n;
}

static bool parse_i64_list(const char *option, char *text, int64_t lo, int64_t hi, int64_t *out, int *n_out) {
    char *items[MAX_LIST];
    int n = split_list(option, text, items);
    if (n < 0) return false;
    for (int i = 0; i < n; i++) {
        if (!cli_parse_i64(CMD, option, items[i], lo, hi, &out[i])) return false;
        for (int j = 0; j < i; j++)
            if (out[j] == out[i]) {
                fprintf(stderr, "%s: %s lists %lld twice\n", CMD, option, (long long)out[i]);
                return false;
            }
    }
    *n_out = n;
    return true;
}

/* Whether two parsed policies are the same policy, field by field (the
 * struct's padding is not compared). */
static bool same_policy(const la_kv_policy *a, const la_kv_policy *b) {
    return a->kind == b->kind && a->budget == b->budget && a->sinks == b->sinks && a->recent == b->recent &&
           a->window == b->window && a->kernel == b->kernel && a->pool_avg == b->pool_avg && a->page == b->page &&
           a->share == b->share && a->snap == b->snap && a->decode_grow == b->decode_grow && a->adapt == b->adapt &&
           !strcmp(a->file, b->file) && a->carry == b->carry && a->pyramid == b->pyramid;
}

static bool parse_policies(char *text, eval_options *o) {
    char *items[MAX_LIST];
    int n = split_list("--kv", text, items);
    if (n < 0) return false;
    for (int i = 0; i < n; i++) {
        if (la_kv_policy_parse(items[i], &o->policy[i])) {
            fprintf(stderr, "%s: --kv '%s': %s\n", CMD, items[i], la_last_error());
            return false;
        }
        /* spelled apart, the same policy (streaming:16 and streaming:016,
         * h2o:64 and h2o:0064): its rows would be run twice */
        for (int j = 0; j < i; j++)
            if (same_policy(&o->policy[j], &o->policy[i])) {
                fprintf(stderr, "%s: --kv lists one policy twice ('%s' and '%s')\n", CMD, items[j], items[i]);
                return false;
            }
        o->policy_text[i] = items[i];
    }
    o->n_policies = n;
    return true;
}

static bool parse_types(char *text, eval_options *o) {
    char *items[MAX_LIST];
    int n = split_list("--kv-type", text, items);
    if (n < 0) return false;
    for (int i = 0; i < n; i++) {
        if (!cli_parse_kv_type(CMD, "--kv-type", items[i], &o->types[i], &o->quants[i])) return false;
        for (int j = 0; j < i; j++)
            if (!strcmp(cli_kv_type_name(o->types[j], o->quants[j]), cli_kv_type_name(o->types[i], o->quants[i]))) {
                fprintf(stderr, "%s: --kv-type lists %s twice ('%s' and '%s')\n", CMD,
                        cli_kv_type_name(o->types[i], o->quants[i]), items[j], items[i]);
                return false;
            }
    }
    o->n_types = n;
    return true;
}

static bool parse_tasks(char *text, eval_options *o) {
    char *items[MAX_LIST];
    int n = split_list("--task", text, items);
    if (n < 0) return false;
    memset(o->task, 0, sizeof o->task);
    for (int i = 0; i < n; i++) {
        int t = 0;
        while (t < TASK_COUNT && strcmp(items[i], TASK_NAMES[t])) t++;
        if (t == TASK_COUNT) {
            fprintf(stderr, "%s: --task expects needle, multikey, vartrack or ppl, got '%s'\n", CMD, items[i]);
            return false;
        }
        o->task[t] = true;
    }
    return true;
}

static char default_lengths[] = "1024,2048", default_depths[] = "0,25,50,75,100", default_kv[] = "full";

/* Options only some tasks read: one given without any of them would be
 * ignored in silence (--lengths under --task ppl, --heatmap without a grid
 * that writes one), so it is a usage error naming them. */
#define TASKS_GRID ((1u << TASK_NEEDLE) | (1u << TASK_MULTIKEY) | (1u << TASK_VARTRACK))
#define TASKS_DEPTH ((1u << TASK_NEEDLE) | (1u << TASK_MULTIKEY))
static const struct {
    const char *option;
    unsigned tasks; /* bit t: task t reads it */
    const char *names;
} TASK_OPTIONS[] = {
    {"--ppl-ctx", 1u << TASK_PPL, "ppl"},           {"--ppl-chunks", 1u << TASK_PPL, "ppl"},
    {"--ppl-offset", 1u << TASK_PPL, "ppl"},        {"--keys", 1u << TASK_MULTIKEY, "multikey"},
    {"--chains", 1u << TASK_VARTRACK, "vartrack"},  {"--hops", 1u << TASK_VARTRACK, "vartrack"},
    {"--lengths", TASKS_GRID, "needle, multikey or vartrack"},
    {"--samples", TASKS_GRID, "needle, multikey or vartrack"},
    {"--seed", TASKS_GRID, "needle, multikey or vartrack"},
    {"--depths", TASKS_DEPTH, "needle or multikey"},
    {"--heatmap", TASKS_DEPTH, "needle or multikey"},
};
enum { N_TASK_OPTIONS = sizeof TASK_OPTIONS / sizeof TASK_OPTIONS[0] };

/* Returns 0 to go on, -1 after --help, or 2 for a usage error. Lists are
 * split in place in the argv strings. */
static int parse_args(int argc, char **argv, eval_options *o) {
    *o = (eval_options){.samples = 1, .seed = 1, .keys = 4, .chains = 2, .hops = 4, .ppl_ctx = 1024,
                        .ppl_chunks = 8, .heatmap = "longattn-eval"};
    o->task[TASK_NEEDLE] = true;
    o->types[0] = la_session_params_default().kv_type, o->n_types = 1;
    char *lengths = default_lengths, *depths = default_depths, *kv = default_kv;
    bool given[N_TASK_OPTIONS] = {false}, heatmap_given = false;
    for (int i = 1; i < argc; i++) {
        char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return -1;
        } else if (!strcmp(a, "--json")) {
            o->json = true;
            continue;
        } else if (!strcmp(a, "--no-heatmap")) {
            o->no_heatmap = true;
            continue;
        } else if (!strcmp(a, "--exact-decode")) {
            o->exact_decode = true;
            continue;
        }
        static const char *const value_options[] = {"-m", "-f", "--heatmap", "--task", "--kv", "--kv-type",
                                                    "--lengths", "--depths", "--samples", "--seed", "--keys",
                                                    "--chains", "--hops", "--ppl-ctx", "--ppl-chunks",
                                                    "--ppl-offset", "--threads", "--sparse",
                                                    "--sparse-heads", NULL};
        if (!(v = (char *)cli_option_value(CMD, argc, argv, &i, value_options))) {
            usage(stderr);
            return 2;
        }
        /* an empty path names no file: a usage error, as --heatmap "" is (it was "cannot open ''", exit 1) */
        bool ok = !(!strcmp(a, "-m") || !strcmp(a, "-f") || !strcmp(a, "--sparse-heads")) || cli_parse_path(CMD, a, v);
        if (!ok) return 2;
        for (int k = 0; k < N_TASK_OPTIONS; k++) given[k] |= !strcmp(a, TASK_OPTIONS[k].option);
        if (!strcmp(a, "-m")) o->model_path = v;
        else if (!strcmp(a, "-f")) o->text_path = v;
        else if (!strcmp(a, "--heatmap")) {
            o->heatmap = v;
            heatmap_given = true;
            /* the files were "-needle-...csv" in the working directory (""), or in DIR ("DIR/") */
            if (!*v || v[strlen(v) - 1] == '/') {
                fprintf(stderr, "%s: --heatmap expects a file prefix, got '%s'%s\n", CMD, v,
                        *v ? " (a directory: give DIR/NAME)" : "");
                ok = false;
            }
        }
        else if (!strcmp(a, "--task")) ok = parse_tasks(v, o);
        else if (!strcmp(a, "--kv")) kv = v;
        else if (!strcmp(a, "--kv-type")) ok = parse_types(v, o);
        else if (!strcmp(a, "--lengths")) lengths = v;
        else if (!strcmp(a, "--depths")) depths = v;
        else if (!strcmp(a, "--samples")) ok = cli_parse_i64(CMD, a, v, 1, 1000000, &o->samples);
        else if (!strcmp(a, "--seed")) ok = cli_parse_u64(CMD, a, v, &o->seed);
        else if (!strcmp(a, "--keys")) ok = cli_parse_i64(CMD, a, v, 2, 64, &o->keys);
        else if (!strcmp(a, "--chains")) ok = cli_parse_i64(CMD, a, v, 1, 16, &o->chains);
        else if (!strcmp(a, "--hops")) ok = cli_parse_i64(CMD, a, v, 0, 16, &o->hops);
        else if (!strcmp(a, "--ppl-ctx")) ok = cli_parse_i64(CMD, a, v, 4, LA_SESSION_MAX_CTX, &o->ppl_ctx);
        else if (!strcmp(a, "--ppl-chunks")) ok = cli_parse_i64(CMD, a, v, 0, INT32_MAX, &o->ppl_chunks);
        else if (!strcmp(a, "--ppl-offset")) ok = cli_parse_i64(CMD, a, v, 0, INT64_MAX, &o->ppl_offset);
        else if (!strcmp(a, "--threads")) ok = cli_parse_threads(CMD, v, &o->threads);
        else if (!strcmp(a, "--sparse-heads")) o->sparse_heads = v;
        else if (!strcmp(a, "--sparse")) {
            o->sparse_text = v;
            ok = cli_parse_sparse(CMD, v, &o->sparse);
        }
        else {
            fprintf(stderr, "%s: unknown option '%s'\n", CMD, a);
            usage(stderr);
            return 2;
        }
        if (!ok) return 2;
    }
    /* The defaults are split here too, once (they are static buffers). */
    static char lengths_copy[sizeof default_lengths], depths_copy[sizeof default_depths], kv_copy[sizeof default_kv];
    if (lengths == default_lengths) lengths = strcpy(lengths_copy, default_lengths);
    if (depths == default_depths) depths = strcpy(depths_copy, default_depths);
    if (kv == default_kv) kv = strcpy(kv_copy, default_kv);
    if (!parse_i64_list("--lengths", lengths, 64, LA_SESSION_MAX_CTX - CTX_SLACK, o->lengths, &o->n_lengths) ||
        !parse_i64_list("--depths", depths, 0, 100, o->depths, &o->n_depths) || !parse_policies(kv, o))
        return 2;
    /* as run's --chat and --raw: two options that contradict each other are refused, whatever their order */
    const char *problem = !o->model_path                  ? "-m MODEL.gguf is required"
                          : o->task[TASK_PPL] && !o->text_path ? "--task ppl needs -f FILE (scripts/get-eval-text.sh makes one)"
                          : o->text_path && !o->task[TASK_PPL] ? "-f FILE is only for --task ppl"
                          : heatmap_given && o->no_heatmap     ? "--heatmap and --no-heatmap exclude each other"
                                                               : NULL;
    unsigned tasks = 0;
    for (int t = 0; t < TASK_COUNT; t++) tasks |= o->task[t] ? 1u << t : 0;
    for (int k = 0; k < N_TASK_OPTIONS && !problem; k++)
        if (given[k] && !(TASK_OPTIONS[k].tasks & tasks)) {
            fprintf(stderr, "%s: %s is only for --task %s\n", CMD, TASK_OPTIONS[k].option, TASK_OPTIONS[k].names);
            usage(stderr);
            return 2;
        }
    if (problem) {
        fprintf(stderr, "%s: %s\n", CMD, problem);
        usage(stderr);
        return 2;
    }
    if (o->sparse_heads && !cli_needs_topk(CMD, "--sparse-heads", &o->sparse, true)) return 2;
    if (!cli_default_threads(CMD, &o->threads)) return 2;
    return 0;
}

/* ---- output */

/* The policy's name (before ':') and budget (after it, or "-"). */
static void policy_parts(const char *text, char *name, size_t name_cap, const char **budget) {
    const char *colon = strchr(text, ':');
    size_t n = colon ? (size_t)(colon - text) : strlen(text);
    snprintf(name, name_cap, "%.*s", (int)n, text);
    *budget = colon ? colon + 1 : "-";
}

/* Bytes of a full f16 cache holding `tokens` tokens in the session's pages. */
static double full_f16_bytes(const la_session *s, int64_t tokens) {
    const la_kv_cache_params *p = la_kv_cache_params_of(la_session_kv_cache(s));
    if (!p) return 0;
    int64_t pages = (tokens + p->page_size - 1) / p->page_size;
    return 2.0 * 2.0 * (double)p->n_layers * (double)p->n_kv_heads * (double)pages * (double)p->page_size *
           (double)p->head_dim;
}

typedef struct {
    double score, kv_bytes, share; /* sums over cells */
    double steps, seconds;         /* decode steps (ppl: tokens) and their time */
    int64_t cells;
    double ppl, ppl_err;
    const double *windows;         /* ppl: each chunk's own perplexity, n_windows of them */
    int64_t n_windows, offset;
} summary;

typedef struct {
    task_id task;
    const char *policy_text, *type_name;
    char policy_name[64];
    const char *budget;
    const char *sparse_text; /* --sparse as given, "none" without it */
    bool exact_decode;
} run_id;

/* The last fields, so the earlier fields keep their order for readers that
 * match them in sequence. */
static void end_row(const run_id *r) {
    printf(",\"sparse\":");
    cli_json_string(stdout, r->sparse_text);
    printf(",\"exact_decode\":%s}\n", r->exact_decode ? "true" : "false");
}

static void print_cell_json(const run_id *r, int64_t length, int64_t depth, int64_t prompt_tokens, size_t kv,
                            double full, double score, double tps, const char *reply) {
    printf("{\"task\":\"%s\",\"policy\":", TASK_NAMES[r->task]);
    cli_json_string(stdout, r->policy_text);
    printf(",\"name\":");
    cli_json_string(stdout, r->policy_name);
    printf(",\"budget\":");
    cli_json_string(stdout, r->budget);
    printf(",\"kv_type\":\"%s\",\"length\":%lld,", r->type_name, (long long)length);
    if (depth >= 0) printf("\"depth\":%lld,", (long long)depth);
    printf("\"prompt_tokens\":%lld,\"kv_bytes\":%zu,\"full_bytes\":%.0f,\"share\":%.4f,\"score\":%.4f,"
           "\"decode_tps\":%.3f,\"reply\":",
           (long long)prompt_tokens, kv, full, full > 0 ? (double)kv / full : 0, score, tps);
    cli_json_string(stdout, reply);
    end_row(r);
    fflush(stdout);
}

static void print_summary(const eval_options *o, const run_id *r, const summary *s) {
    double n = s->cells > 0 ? (double)s->cells : 1, tps = s->seconds > 0 ? s->steps / s->seconds : 0;
    if (o->json) {
        printf("{\"summary\":true,\"task\":\"%s\",\"policy\":", TASK_NAMES[r->task]);
        cli_json_string(stdout, r->policy_text);
        printf(",\"name\":");
        cli_json_string(stdout, r->policy_name);
        printf(",\"budget\":");
        cli_json_string(stdout, r->budget);
        printf(",\"kv_type\":\"%s\",\"cells\":%lld,\"kv_bytes\":%.0f,\"share\":%.4f,", r->type_name,
               (long long)s->cells, s->kv_bytes / n, s->share / n);
        if (r->task == TASK_PPL) {
            printf("\"ppl\":%.4f,\"ppl_err\":%.5f,\"eval_tps\":%.3f,\"ppl_offset\":%lld,\"ppl_windows\":[", s->ppl,
                   s->ppl_err, tps, (long long)s->offset);
            for (int64_t w = 0; w < s->n_windows; w++) printf("%s%.4f", w ? "," : "", s->windows[w]);
            printf("]");
        } else printf("\"accuracy\":%.4f,\"decode_tps\":%.3f", s->score / n, tps);
        end_row(r);
    } else {
        char score[48];
        if (r->task == TASK_PPL) snprintf(score, sizeof score, "ppl %.4f +/- %.4f", s->ppl, s->ppl_err);
        else snprintf(score, sizeof score, "acc %.3f", s->score / n);
        printf("%-9s %-12s %-8s %-5s %5lld %12.0f %6.3f  %-22s %9.2f\n", TASK_NAMES[r->task], r->policy_name,
               r->budget, r->type_name, (long long)s->cells, s->kv_bytes / n, s->share / n, score, tps);
        if (r->task == TASK_PPL && s->n_windows > 1) {
            printf("%-9s per chunk from token %lld:", "", (long long)s->offset);
            for (int64_t w = 0; w < s->n_windows; w++) printf(" %.4f", s->windows[w]);
            printf("\n");
        }
    }
    fflush(stdout);
}

static void print_header(void) {
    printf("%-9s %-12s %-8s %-5s %5s %12s %6s  %-22s %9s\n", "task", "policy", "budget", "type", "cells", "KV bytes",
           "share", "score", "tokens/s");
}

/* CSV heatmap (rows: lengths, columns: depths) and, with gnuplot, a PNG.
 * False (printed) when the CSV cannot be written: the run then fails
 * (exit 1; it exited 0 with the message alone). No gnuplot, or a failed
 * PNG, is not a failure: the PNG is optional. */
static bool write_heatmap(const eval_options *o, const run_id *r, const double *grid) {
    char safe[96], path[1024];
    size_t k = 0;
    for (const char *c = r->policy_text; *c && k + 1 < sizeof safe; c++)
        safe[k++] = isalnum((unsigned char)*c) ? *c : '_';
    safe[k] = 0;
    int n = snprintf(path, sizeof path, "%s-%s-%s-%s.csv", o->heatmap, TASK_NAMES[r->task], safe, r->type_name);
    if (n < 0 || (size_t)n >= sizeof path - 4) {
        fprintf(stderr, "%s: --heatmap prefix too long; no heatmap written\n", CMD);
        return false;
    }
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "%s: cannot write '%s': %s\n", CMD, path, strerror(errno));
        return false;
    }
    fprintf(f, "length\\depth");
    for (int d = 0; d < o->n_depths; d++) fprintf(f, ",%lld", (long long)o->depths[d]);
    fputc('\n', f);
    for (int l = 0; l < o->n_lengths; l++) {
        fprintf(f, "%lld", (long long)o->lengths[l]);
        for (int d = 0; d < o->n_depths; d++) fprintf(f, ",%.4f", grid[l * o->n_depths + d]);
        fputc('\n', f);
    }
    if ((ferror(f) != 0) | (fclose(f) != 0)) {
        fprintf(stderr, "%s: error writing '%s'\n", CMD, path);
        return false;
    }
    fprintf(stderr, "%s: wrote %s\n", CMD, path);
    if (system("command -v gnuplot >/dev/null 2>&1") != 0) {
        static bool told;
        if (!told) fprintf(stderr, "%s: gnuplot not found: no PNG heatmap (scripts/install-deps.sh installs it)\n", CMD);
        told = true;
        return true;
    }
    char png[1024];
    snprintf(png, sizeof png, "%.*s.png", n - 4, path);
    FILE *g = popen("gnuplot", "w");
    if (!g) {
        fprintf(stderr, "%s: cannot run gnuplot\n", CMD);
        return true;
    }
    fprintf(g, "set terminal pngcairo size 900,560\nset output '%s'\n", png);
    fprintf(g, "set title '%s, %s, KV %s' noenhanced\n", TASK_NAMES[r->task], r->policy_text, r->type_name);
    fprintf(g, "set xlabel 'needle depth (%%)'\nset ylabel 'context length (tokens)'\nset cbrange [0:1]\n"
               "set cblabel 'accuracy'\nset palette defined (0 '#c0392b', 0.5 '#f1c40f', 1 '#27ae60')\n"
               "set xrange [-0.5:%d.5]\nset yrange [-0.5:%d.5]\nunset key\n",
            o->n_depths - 1, o->n_lengths - 1);
    fprintf(g, "set xtics (");
    for (int d = 0; d < o->n_depths; d++) fprintf(g, "%s'%lld' %d", d ? ", " : "", (long long)o->depths[d], d);
    fprintf(g, ")\nset ytics (");
    for (int l = 0; l < o->n_lengths; l++) fprintf(g, "%s'%lld' %d", l ? ", " : "", (long long)o->lengths[l], l);
    fprintf(g, ")\n$grid << EOD\n");
    for (int l = 0; l < o->n_lengths; l++)
        for (int d = 0; d < o->n_depths; d++) fprintf(g, "%d %d %.4f\n", d, l, grid[l * o->n_depths + d]);
    /* boxes rather than `with image`, which needs a 2 x 2 grid at least */
    fprintf(g, "EOD\nplot $grid using 1:2:(0.5):(0.5):3 with boxxyerror fillstyle solid 1.0 noborder lc palette, "
               "$grid using 1:2:(sprintf('%%.2f', $3)) with labels\n");
    int rc = pclose(g);
    if (rc) fprintf(stderr, "%s: gnuplot failed (status %d); no PNG\n", CMD, rc);
    else fprintf(stderr, "%s: wrote %s\n", CMD, png);
    return true;
}

/* ---- the generation tasks */

typedef struct {
    char *text;
    size_t len, cap;
    const la_tokenizer *tok;
} reply_buf;

static bool collect_reply(void *user, int32_t token) {
    reply_buf *r = user;
    char piece[256];
    int64_t n = la_token_to_bytes(r->tok, token, false, piece, sizeof piece);
    if (n <= 0 || n > (int64_t)sizeof piece) return true;
    if (r->len + (size_t)n + 1 > r->cap) {
        size_t cap = (r->cap ? r->cap * 2 : 256) + (size_t)n;
        char *grown = realloc(r->text, cap);
        if (!grown) return false;
        r->text = grown, r->cap = cap;
    }
    memcpy(r->text + r->len, piece, (size_t)n);
    r->len += (size_t)n;
    r->text[r->len] = 0;
    return true;
}

typedef struct {
    const la_model *m;
    const la_chat_template *tmpl; /* NULL: plain prompt */
    la_sampler *greedy;
} model_env;

/* Prompt tokens of a sample. */
static la_status sample_prompt(const model_env *e, const la_eval_sample *smp, int32_t **ids, int64_t *n) {
    char *text = NULL;
    size_t len = 0;
    la_status st = la_eval_prompt(smp, e->tmpl, &text, &len);
    const la_tokenizer *tok = la_model_tokenizer(e->m);
    if (!st) st = la_tokenize(tok, text, len, la_tokenizer_add_bos(tok), true, ids, n);
    free(text);
    return st;
}

static la_eval_params task_params(const eval_options *o, task_id t) {
    la_eval_params p = la_eval_params_default();
    p.task = t == TASK_NEEDLE ? LA_EVAL_NEEDLE : t == TASK_MULTIKEY ? LA_EVAL_MULTIKEY : LA_EVAL_VARTRACK;
    p.n_keys = (int32_t)o->keys, p.n_chains = (int32_t)o->chains, p.n_hops = (int32_t)o->hops;
    return p;
}

/* Prompt tokens beyond the context's own (template, instruction, question,
 * answer prefix, BOS) plus the reply's room: measured on a sample of 2048
 * tokens, or of the longest length when longer (many --chains and --hops
 * need more than 2048 tokens of statements: a fixed 2048 failed the run,
 * exit 1, at lengths that hold them). LA_ERR_ARGUMENT: even that length
 * cannot hold the task's statements. */
static la_status prompt_overhead(const model_env *e, const eval_options *o, task_id t, int64_t max_len,
                                 int64_t *overhead) {
    la_eval_params p = task_params(o, t);
    p.n_tokens = max_len > 2048 ? max_len : 2048;
    la_eval_sample smp;
    int32_t *ids = NULL;
    int64_t n = 0;
    la_status st = la_eval_build(la_model_tokenizer(e->m), &p, &smp);
    if (!st) st = sample_prompt(e, &smp, &ids, &n);
    if (!st) *overhead = n - smp.n_tokens + smp.max_answer_tokens;
    free(ids);
    la_eval_sample_free(&smp);
    return st;
}

/* One cell: build, prompt, generate greedily, score. */
static la_status run_cell(const model_env *e, la_session *s, const la_eval_params *p, int64_t max_ctx, double *score,
                          size_t *kv, int64_t *prompt_tokens, la_generate_stats *stats, reply_buf *reply) {
    la_eval_sample smp;
    int32_t *ids = NULL;
    int64_t n = 0;
    la_status st = la_eval_build(la_model_tokenizer(e->m), p, &smp);
    if (!st) st = sample_prompt(e, &smp, &ids, &n);
    if (!st && n + smp.max_answer_tokens > max_ctx)
        st = la_set_error(LA_ERR_ARGUMENT, "the prompt has %lld tokens; with the reply it exceeds the session's %lld",
                          (long long)n, (long long)max_ctx);
    if (!st) {
        la_session_reset(s);
        reply->len = 0;
        if (reply->text) reply->text[0] = 0;
        la_generate_params gp = la_generate_params_default();
        gp.max_new_tokens = smp.max_answer_tokens;
        gp.max_ctx = max_ctx;
        gp.on_token = collect_reply;
        gp.user = reply;
        st = la_generate(e->m, s, e->greedy, ids, n, &gp, stats);
    }
    if (!st) {
        *kv = la_session_kv_bytes(s);
        *prompt_tokens = n;
        st = la_eval_score(&smp, reply->text ? reply->text : "", reply->len, score);
    }
    free(ids);
    la_eval_sample_free(&smp);
    return st;
}

static int run_generation_task(const eval_options *o, const model_env *e, la_session *s, int64_t max_ctx,
                               const run_id *r, int64_t overhead) {
    const bool has_depth = r->task != TASK_VARTRACK;
    const int n_depths = has_depth ? o->n_depths : 1;
    double *grid = calloc((size_t)o->n_lengths * (size_t)n_depths, sizeof *grid);
    reply_buf reply = {.tok = la_model_tokenizer(e->m)};
    summary sum = {0};
    int rc = 0;
    if (!grid) {
        fprintf(stderr, "%s: out of memory\n", CMD);
        return 1;
    }
    for (int l = 0; l < o->n_lengths && !rc; l++) {
        int64_t n_tokens = o->lengths[l] - overhead; /* checked by check_lengths */
        for (int d = 0; d < n_depths && !rc; d++) {
            double cell = 0;
            for (int64_t k = 0; k < o->samples; k++) {
                la_eval_params p = task_params(o, r->task);
                p.n_tokens = n_tokens;
                p.depth = has_depth ? (double)o->depths[d] / 100.0 : 0.5;
                /* a sample per (seed, length, depth, index): the same for every policy */
                p.seed = o->seed * 0x9E3779B97F4A7C15ull + ((uint64_t)o->lengths[l] << 40) +
                         ((uint64_t)(has_depth ? o->depths[d] : 0) << 24) + (uint64_t)k;
                double score = 0;
                size_t kv = 0;
                int64_t prompt_tokens = 0;
                la_generate_stats stats;
                la_status st = run_cell(e, s, &p, max_ctx, &score, &kv, &prompt_tokens, &stats, &reply);
                if (st) {
                    char what[96];
                    snprintf(what, sizeof what, "%s at length %lld", TASK_NAMES[r->task], (long long)o->lengths[l]);
                    rc = cli_fail(CMD, what, st);
                    break;
                }
                double full = full_f16_bytes(s, la_session_pos(s));
                cell += score;
                sum.score += score, sum.kv_bytes += (double)kv, sum.share += full > 0 ? (double)kv / full : 0;
                sum.steps += (double)stats.n_decode, sum.seconds += stats.decode_seconds, sum.cells++;
                if (o->json) {
                    print_cell_json(r, o->lengths[l], has_depth ? o->depths[d] : -1, prompt_tokens, kv, full, score,
                                    stats.decode_tps, reply.text ? reply.text : "");
                    if (!cli_output_written()) { /* the rows are lost: the grid stops (main says why) */
                        rc = 1;
                        break;
                    }
                } else if (has_depth)
                    fprintf(stderr, "%s %s %s length %lld depth %lld%%: score %.2f, reply '%s'\n", TASK_NAMES[r->task],
                            r->policy_text, r->type_name, (long long)o->lengths[l], (long long)o->depths[d], score,
                            reply.text ? reply.text : "");
                else
                    fprintf(stderr, "%s %s %s length %lld: score %.2f, reply '%s'\n", TASK_NAMES[r->task],
                            r->policy_text, r->type_name, (long long)o->lengths[l], score, reply.text ? reply.text : "");
            }
            grid[l * n_depths + d] = cell / (double)o->samples;
        }
    }
    if (!rc) {
        print_summary(o, r, &sum);
        if (has_depth && !o->no_heatmap && !write_heatmap(o, r, grid)) rc = 1;
    }
    free(reply.text);
    free(grid);
    return rc;
}

/* Every length leaves room for the task's statements after the prompt's
 * overhead: a usage error (2) naming the length otherwise. */
static int check_lengths(const eval_options *o, const model_env *e, task_id t, int64_t overhead) {
    for (int l = 0; l < o->n_lengths; l++) {
        la_eval_params p = task_params(o, t);
        p.n_tokens = o->lengths[l] - overhead;
        la_eval_sample smp;
        la_status st = p.n_tokens < 1 ? LA_ERR_ARGUMENT : la_eval_build(la_model_tokenizer(e->m), &p, &smp);
        if (p.n_tokens >= 1) la_eval_sample_free(&smp);
        if (st == LA_ERR_ARGUMENT) {
            fprintf(stderr, "%s: --lengths %lld is too short for %s: %lld tokens go to the template, question and "
                            "reply%s%s\n",
                    CMD, (long long)o->lengths[l], TASK_NAMES[t], (long long)overhead, p.n_tokens < 1 ? "" : "; ",
                    p.n_tokens < 1 ? "" : la_last_error());
            return 2;
        }
        if (st) return cli_fail(CMD, TASK_NAMES[t], st);
    }
    return 0;
}

/* ---- perplexity */

static int run_ppl_task(const eval_options *o, const model_env *e, la_session *s, const int32_t *tokens,
                        int64_t n_tokens, const run_id *r) {
    const la_tokenizer *tok = la_model_tokenizer(e->m);
    const int64_t n_vocab = la_model_config_of(e->m)->n_vocab;
    int64_t n_chunks = (n_tokens - o->ppl_offset) / o->ppl_ctx; /* >= 1: cmd_eval checked the offset */
    if (o->ppl_chunks > 0 && n_chunks > o->ppl_chunks) n_chunks = o->ppl_chunks;
    float *logits = malloc((size_t)PPL_EVAL_BATCH * (size_t)n_vocab * sizeof *logits);
    double *windows = malloc((size_t)n_chunks * sizeof *windows);
    if (!logits || !windows) {
        free(logits), free(windows);
        fprintf(stderr, "%s: out of memory for logits\n", CMD);
        return 1;
    }
    const int32_t bos = la_tokenizer_add_bos(tok) ? la_tokenizer_bos(tok) : -1;
    ppl_tally t = {0};
    summary sum = {.windows = windows, .n_windows = n_chunks, .offset = o->ppl_offset};
    double t0 = la_clock_seconds();
    for (int64_t c = 0; c < n_chunks; c++) {
        ppl_tally one = {0}; /* this chunk alone, for the spread across windows */
        la_status st = score_chunk(s, tokens + o->ppl_offset + c * o->ppl_ctx, o->ppl_ctx, bos, n_vocab, logits, &one);
        if (st) {
            free(logits), free(windows);
            return cli_fail(CMD, "perplexity", st);
        }
        double err;
        tally_result(&one, &windows[c], &err);
        t.nll += one.nll, t.nll2 += one.nll2, t.count += one.count;
        size_t kv = la_session_kv_bytes(s);
        double full = full_f16_bytes(s, o->ppl_ctx);
        sum.kv_bytes += (double)kv, sum.share += full > 0 ? (double)kv / full : 0, sum.cells++;
    }
    sum.seconds = la_clock_seconds() - t0, sum.steps = (double)(n_chunks * o->ppl_ctx);
    tally_result(&t, &sum.ppl, &sum.ppl_err);
    print_summary(o, r, &sum);
    free(logits), free(windows);
    return 0;
}

/* ---- driver */

int cmd_eval(int argc, char **argv) {
    eval_options o;
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc < 0 ? 0 : rc;
    /* the directory the heatmaps go to: checked before the model runs */
    if (!o.no_heatmap && (o.task[TASK_NEEDLE] || o.task[TASK_MULTIKEY]) && !cli_output_ok(CMD, "--heatmap", o.heatmap, true))
        return 1;

    la_model *m = NULL;
    la_context *ctx = NULL;
    la_session *s = NULL;
    la_chat_template tmpl = {0};
    bool have_tmpl = false;
    char *text = NULL;
    int32_t *text_tokens = NULL;
    int64_t n_text_tokens = 0;
    model_env env = {0};
    float *gamma = NULL; /* --sparse-heads */
    la_status st;
    if ((st = la_model_load(o.model_path, &m))) return cli_fail(CMD, o.model_path, st);
    const la_model_config *cfg = la_model_config_of(m);
    const la_tokenizer *tok = la_model_tokenizer(m);
    env.m = m;
    if (!cli_sparse_fits_model(CMD, &o.sparse, cfg)) {
        rc = 2;
        goto done;
    }
    if (!la_chat_template_of_gguf(la_model_gguf(m), &tmpl)) have_tmpl = true, env.tmpl = &tmpl;
    else fprintf(stderr, "%s: %s; prompts are plain text\n", CMD, la_last_error());
    la_sampler_params greedy = {.temperature = 0, .top_p = 1};
    if ((st = la_context_create(&ctx, (int)o.threads)) ||
        (st = la_sampler_new(&greedy, (int32_t)cfg->n_vocab, &env.greedy))) {
        rc = cli_fail(CMD, ctx ? "sampler" : "context", st);
        goto done;
    }
    if (o.sparse_heads && !cli_sparse_heads(CMD, o.sparse_heads, cfg, &gamma)) {
        rc = 1;
        goto done;
    }
    if (o.sparse_text) fprintf(stderr, "%s: block-sparse prefill: %s\n", CMD, o.sparse_text);
    if (o.exact_decode) fprintf(stderr, "%s: exact decode: f32 activations in single-token steps\n", CMD);
    int64_t max_len = 0;
    for (int l = 0; l < o.n_lengths; l++) max_len = o.lengths[l] > max_len ? o.lengths[l] : max_len;
    bool any_grid = o.task[TASK_NEEDLE] || o.task[TASK_MULTIKEY] || o.task[TASK_VARTRACK];
    /* A length whose cache cannot fit in memory is refused before any
     * prompt is built (building and tokenising a haystack near 2^30 tokens
     * alone took hours). Every policy but streaming holds the whole prompt
     * at its end; streaming holds its budget and one prefill chunk (it
     * evicts after each). The widest --kv-type counts, with the policy that
     * holds the most, plus the prompt's text and ids. */
    double kv_token = 0;
    int wide = 0;
    for (int i = 0; i < o.n_types; i++) {
        double b = cli_kv_bytes_per_token(cfg, o.types[i], o.quants[i]);
        if (b > kv_token) kv_token = b, wide = i;
    }
    int64_t held = 0, held_ppl = 0; /* tokens the fullest policy's cache holds */
    for (int i = 0; i < o.n_policies; i++) {
        const bool streaming = o.policy[i].kind == LA_KV_POLICY_STREAMING;
        const int64_t keep = streaming ? o.policy[i].budget + LA_PREFILL_CHUNK_DEFAULT : INT64_MAX;
        const int64_t grid = keep < max_len ? keep : max_len, ppl = keep < o.ppl_ctx ? keep : o.ppl_ctx;
        held = grid > held ? grid : held, held_ppl = ppl > held_ppl ? ppl : held_ppl;
    }
    char what[96], what_grid[128];
    snprintf(what, sizeof what, "the %s KV cache", cli_kv_type_name(o.types[wide], o.quants[wide]));
    snprintf(what_grid, sizeof what_grid, "%s and the prompt", what);
    if ((any_grid && !cli_fits_memory(CMD, "--lengths", max_len,
                                      (double)held * kv_token + (double)max_len * CLI_PROMPT_TOKEN_BYTES, what_grid)) ||
        (o.task[TASK_PPL] && !cli_fits_memory(CMD, "--ppl-ctx", o.ppl_ctx, (double)held_ppl * kv_token, what))) {
        rc = 2;
        goto done;
    }
    if (any_grid && cli_model_ctx(CMD, "--lengths", max_len, cfg) > cfg->n_ctx_train && cfg->n_ctx_train > 0) {
        /* run --ctx past the trained context only sets a capacity; here the length is the prompt itself, and
         * its prefill grows with the square of it: "--lengths 1000000" was a bare warning, then days of work */
        const double ratio = (double)max_len / (double)cfg->n_ctx_train;
        fprintf(stderr, "%s: warning: a --lengths %lld prompt takes about %.0fx the attention work of one at "
                        "%lld tokens; the grid runs one per depth and sample, for each --kv policy and --kv-type\n",
                CMD, (long long)max_len, ratio * ratio, (long long)cfg->n_ctx_train);
    }
    if (o.task[TASK_PPL]) {
        cli_model_ctx(CMD, "--ppl-ctx", o.ppl_ctx, cfg);
        size_t len;
        if (!(text = cli_read_file(CMD, o.text_path, &len))) {
            rc = 1;
            goto done;
        }
        if ((st = la_tokenize(tok, text, len, la_tokenizer_add_bos(tok), false, &text_tokens, &n_text_tokens))) {
            rc = cli_fail(CMD, "tokenizing", st);
            goto done;
        }
        if (n_text_tokens < o.ppl_ctx || n_text_tokens - o.ppl_ctx < o.ppl_offset) {
            fprintf(stderr, "%s: '%s' has %lld tokens; --ppl-offset %lld plus --ppl-ctx %lld needs at least that many\n",
                    CMD, o.text_path, (long long)n_text_tokens, (long long)o.ppl_offset, (long long)o.ppl_ctx);
            rc = 2;
            goto done;
        }
    }
    int64_t overhead[TASK_COUNT] = {0};
    for (int t = 0; t < TASK_PPL; t++)
        if (o.task[t] && (st = prompt_overhead(&env, &o, (task_id)t, max_len, &overhead[t]))) {
            if (st == LA_ERR_ARGUMENT) { /* the options ask for more than the lengths hold: a usage error */
                fprintf(stderr, "%s: --lengths %lld is too short for %s (measured on a %lld-token sample: %s)\n", CMD,
                        (long long)max_len, TASK_NAMES[t], (long long)(max_len > 2048 ? max_len : 2048),
                        la_last_error());
                rc = 2;
            } else {
                rc = cli_fail(CMD, TASK_NAMES[t], st);
            }
            goto done;
        }
    for (int t = 0; t < TASK_PPL && !rc; t++)
        if (o.task[t]) rc = check_lengths(&o, &env, (task_id)t, overhead[t]);
    if (rc) goto done;
    fprintf(stderr, "%s: %d threads, SIMD %s, %d policies x %d KV types\n", CMD, la_context_threads(ctx),
            la_simd_name(la_context_simd(ctx)), o.n_policies, o.n_types);
    for (int t = 0; t < TASK_PPL; t++)
        if (o.task[t])
            fprintf(stderr, "%s: %s: %lld tokens of each length go to the template, question and reply\n", CMD,
                    TASK_NAMES[t], (long long)overhead[t]);
    if (!o.json) print_header();
    int first_task = 0;
    while (!o.task[first_task]) first_task++;
    for (int t = 0; t < TASK_COUNT && !rc; t++) {
        if (!o.task[t]) continue;
        for (int pi = 0; pi < o.n_policies && !rc; pi++)
            for (int ti = 0; ti < o.n_types && !rc; ti++) {
                /* a stateful policy's prefill is dense (la_session_params.sparse): its rows said "sparse" */
                const bool sparse_runs = o.sparse_text && !la_kv_policy_has_state(&o.policy[pi]);
                if (o.sparse_text && !sparse_runs && ti == 0 && t == first_task)
                    fprintf(stderr, "%s: --sparse does not apply under --kv %s: its prefill attends densely through "
                                    "the policy; its rows carry \"sparse\":\"none\"\n", CMD, o.policy_text[pi]);
                run_id r = {.task = (task_id)t, .policy_text = o.policy_text[pi],
                            .type_name = cli_kv_type_name(o.types[ti], o.quants[ti]),
                            .sparse_text = sparse_runs ? o.sparse_text : "none", .exact_decode = o.exact_decode};
                policy_parts(r.policy_text, r.policy_name, sizeof r.policy_name, &r.budget);
                la_session_params sp = la_session_params_default();
                sp.kv_type = o.types[ti], sp.kv_quant = o.quants[ti], sp.kv_policy = o.policy[pi];
                sp.sparse = o.sparse, sp.sparse_head_gamma = gamma, sp.exact_decode = o.exact_decode;
                sp.max_ctx = t == TASK_PPL ? o.ppl_ctx : max_len + CTX_SLACK;
                if ((st = la_session_new_with(m, ctx, &sp, &s))) {
                    rc = cli_fail(CMD, "session", st);
                    break;
                }
                rc = t == TASK_PPL ? run_ppl_task(&o, &env, s, text_tokens, n_text_tokens, &r)
                                   : run_generation_task(&o, &env, s, sp.max_ctx, &r, overhead[t]);
                /* a summary row that cannot be written stops the runs still to come (main says why) */
                if (!rc && !cli_output_written()) rc = 1;
                la_session_free(s);
                s = NULL;
            }
    }
done:
    la_session_free(s);
    la_sampler_free(env.greedy);
    la_context_destroy(ctx);
    if (have_tmpl) la_chat_template_free(&tmpl);
    la_model_free(m);
    free(text_tokens);
    free(text);
    free(gamma);
    return rc;
}
