/* longattn bench: kernel speed as ratios to this machine's ceilings, each
 * measured right beside the row it judges. `bench peak`, `bench attention`,
 * `bench decode`, `bench linear`, `bench sparse`, `bench matmul`. The rows are the cases ctest checks
 * (tests/attention, tests/linear, tests/sparse),
 * timed by the case harness's perf mode (tests/harness). */
#include "cases.h"
#include "linear_cases.h"
#include "delta_cases.h"
#include "ssm_cases.h"
#include "mixer_sweep.h"
#include "sparse_cases.h"
#include "sparse_qk.h"
#include "kv_cases.h"
#include "matmul_cases.h"
#include "cli.h"
#include "cli_util.h"
#include "harness.h"
#include "longattn.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_LIST 16

typedef struct {
    bool json, quick, cold;
    const char *qk_file; /* sparse: dumped attention inputs (sparse_qk.c) */
    int threads;
    int64_t B, H, Hkv;
    int64_t L[MAX_LIST], D[MAX_LIST];
    int nL, nD;
    int causal[2], ncausal;
    int deterministic[2], ndeterministic; /* attention: la_attention_params.deterministic (0: not given) */
    la_dtype dtype[3];
    int ndtype;
    bool fwd, bwd, decode; /* decode: linear's decode-step rows */
    bool pass_given;       /* --pass given: its bwd runs under --quick too */
    double budget_s; /* skip points expected to take longer than this */
    int decay;       /* linear: la_decay_kind */
    int64_t chunk;   /* linear: chunk size */
    int op;          /* linear: 0 linear attention (+ Titans), 1 delta rule, 2 gated delta rule, 3 Titans, 4 all
                        (-1: unknown --op) */
    int scan_op;     /* linear --op mamba|aaren: 1 + scan_case_op; 0 none */
    int feature;     /* linear: la_feature_map */
    la_ggml_type mm_type[8]; /* matmul: weight types, each once */
    int nmm_type;
} options;

typedef struct {
    double fma, bf16, bf16_effective, amx_bf16, read_gbps;
    la_simd simd;
} ceilings;

/* ---- argument lists ---- */

/* Sizes no machine holds are usage errors: the cases' size products
 * overflowed int64 (UBSan; a short buffer in a release build) before any
 * allocation could fail. A length or head dim is below 2^31 (some cases
 * keep L in an int32; L x L fits int64), a row's largest tensor at most
 * 2^40 elements (4 TiB of f32). */
#define BENCH_MAX_ITEM (((int64_t)1 << 31) - 1)
#define BENCH_MAX_ELEMS 1099511627776.0

/* Positive integers in [1, BENCH_MAX_ITEM] separated by ','; -1 for
 * anything else (an empty list or item, a value out of range, more than
 * max items). */
static int parse_list(const char *s, int64_t *out, int max) {
    int n = 0;
    if (!*s) return -1;
    while (*s) {
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (end == s || errno || v <= 0 || v > BENCH_MAX_ITEM || n == max || isspace((unsigned char)*s) ||
            (*end && (*end != ',' || !end[1])))
            return -1;
        out[n++] = v;
        s = *end ? end + 1 : end;
    }
    return n;
}

/* A comma-separated list with no empty item: strtok skips them, so "f32,",
 * ",fwd" and "a,,b" were read as "f32", "fwd" and "a,b", and an --qk-file
 * of "" or "," as no file at all (exit 0, no rows). */
static bool items_ok(const char *s) { return *s && s[0] != ',' && s[strlen(s) - 1] != ',' && !strstr(s, ",,"); }

/* The first item of the comma list s that an earlier item repeats, copied
 * into dup (false: none). Numbers compare by value ("64,064"), --qk-file
 * paths exactly, names without case (--type takes "Q8_0" as "q8_0"). A
 * repeat in any list is a usage error, as in eval's lists: "--L 1024,1024"
 * timed the row twice, "--type q8_0,q8_0" printed it twice. */
static bool list_repeats(const char *option, const char *s, char *dup, size_t cap) {
    const bool numeric = !strcmp(option, "--L") || !strcmp(option, "--D") || !strcmp(option, "--causal") ||
                         !strcmp(option, "--deterministic");
    for (const char *a = s; *a; a += strcspn(a, ",") + (a[strcspn(a, ",")] == ',')) {
        const size_t na = strcspn(a, ",");
        for (const char *b = s; b < a; b += strcspn(b, ",") + 1) {
            const size_t nb = strcspn(b, ",");
            const bool same = numeric ? strtoll(a, NULL, 10) == strtoll(b, NULL, 10)
                              : !strcmp(option, "--qk-file") ? na == nb && !strncmp(a, b, na)
                                                             : na == nb && !strncasecmp(a, b, na);
            if (same) {
                snprintf(dup, cap, "%.*s", (int)na, a);
                return true;
            }
        }
    }
    return false;
}

static int parse_dtypes(const char *s, la_dtype *out) {
    int n = 0;
    char buf[64];
    if (!*s || snprintf(buf, sizeof buf, "%s", s) >= (int)sizeof buf) return -1;
    /* a repeat is kept once here (out holds the three dtypes) and refused
     * by parse_options' list_repeats, as in every list: the loop stopped at
     * three items, so the fourth of "f32,f32,f32,bf16" was dropped in silence */
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        la_dtype t;
        if (!strcmp(tok, "f32")) t = LA_F32;
        else if (!strcmp(tok, "bf16")) t = LA_BF16;
        else if (!strcmp(tok, "f16")) t = LA_F16;
        else return -1;
        bool seen = false;
        for (int i = 0; i < n; i++) seen |= out[i] == t;
        if (!seen) out[n++] = t;
    }
    return n ? n : -1;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: longattn bench peak|attention|decode|kvquant|linear|sparse|matmul [--json] [--quick] [--threads N] [--cold]\n"
            "       [--backend cpu|cuda]: cuda times attention (--pass fwd|bwd, --L, --H 16, --D 128, --tokens 16384,\n"
            "               --iters 20, --deterministic 0,1 with bwd), decode and sparse on GPU 0 through the public\n"
            "               API, as JSON lines, after a device copy ceiling (tools/bench_gpu.c says which shapes)\n"
            "       --cold (every benchmark but peak, and not sparse --qk-file): evict the caches before every\n"
            "               timed run, so short rows read their inputs from memory as long ones do (rows carry\n"
            "               \"caches\":\"cold\")\n"
            "       --quick: fewer, shorter rows (no backward rows unless --pass names bwd)\n"
            "       --budget SECONDS (every benchmark but peak): skip rows estimated to take longer (a decimal\n"
            "               in [0.001, 1000000])\n"
            "       Each benchmark takes only the options listed for it; another is a usage error. A list\n"
            "       (--L, --D, --causal, --deterministic, --dtype, --pass, --type, --qk-file) names each item\n"
            "       once: a repeat is a usage error; --L and --D take at most 16 items.\n"
            "       peak:      the ceilings alone (FP32 FMA, BF16 dot, AMX BF16 tiles, read bandwidth)\n"
            "       attention: [--L 512,1024,...] [--D 64,128] [--causal 0,1] [--dtype f32,bf16,f16]\n"
            "                  [--pass fwd,bwd] [--B 1] [--H 8] [--Hkv 8] [--budget SECONDS]\n"
            "                  [--deterministic 0,1 (default 0)]: la_attention_params.deterministic; given, rows\n"
            "                  carry \"deterministic\" and bwd rows must run. bwd rows are timed at each value;\n"
            "                  fwd rows, which it does not change, once, at the first\n"
            "       decode:    [--L 1024,...,32768] [--dtype f32,bf16,f16] [--H 32] [--Hkv 8] [--D 128]\n"
            "       kvquant:   [--L 8192,32768] [--H 32] [--Hkv 8] [--D 128] decode through la_kv_cache_decode\n"
            "                  over f32, f16, q8 and q4 pages\n"
            "       linear:    [--L 1024,...] [--D 128] [--H 8] [--B 1]\n"
            "                  [--decay none|head|token|channel (default token)]\n"
            "                  [--chunk 64 (1..1024)] [--pass fwd,bwd,decode] [--budget SECONDS]\n"
            "                  [--op linear|delta|gated_delta|titans|mamba|aaren|all]: the mixer (default\n"
            "                  linear, with Titans); exact causal attention first, then each mixer's rows\n"
            "                  with ns_per_token, time_ratio and per_token_ratio to the L=4096 row,\n"
            "                  vs_attention, state_bytes; then decode-step rows (GB/s, rw_ratio to the\n"
            "                  read-modify-write bandwidth). mamba: the selective scan (D = --D, default\n"
            "                  1536, N 16); aaren: --D / 64 heads of 64; all: Mamba H x D channels, Aaren\n"
            "                  H x D / 64 heads of 64\n"
            "                  [--feature identity|elu1|relu|taylor|hedgehog] (linear attention's map, in its\n"
            "                  length and decode rows, as --decay is; taylor: Dk 16, 273 features; hedgehog: D / 2\n"
            "                  projections, D features; neither takes --decay channel)\n"
            "       sparse:    [--L 8192,16384,32768] [--D 128] [--causal 1] [--H 8] [--Hkv 8] [--budget SECONDS]\n"
            "                  each selector at a few budgets (static A-shape local 8, 26, 32; top-k gamma 0.9,\n"
            "                  top_k 16; vertical-slash 64, 64) against the dense kernel at the same shape\n"
            "                  or --qk-file FILE[,FILE] (from longattn run --dump-qk; the shapes are the file's):\n"
            "                  recall, density per selector\n"
            "       matmul:    [--L 1,16,...,512 (tokens)] [--type q4_1,q8_0,f16 (also f32, bf16, q4_0)]\n"
            "                  la_matmul_f32 and (n > 1) la_matmul (\"path\": f32, amx_bf16 or dot_bf16;\n"
            "                  LONGATTN_BF16=0 turns both bf16 paths off, LONGATTN_BF16=dot AMX alone) over\n"
            "                  SmolLM2-135M's projection shapes (q/o 576x576, k/v 192x576, gate/up 1536x576,\n"
            "                  down 576x1536; without --quick also the 49152x576 lm head); amx_bf16 rows are a\n"
            "                  ratio to the AMX BF16 ceiling, the others to the FP32 FMA one (\"ceiling\" names it)\n");
}

/* --causal, --deterministic: 0 and/or 1, comma-separated; -1 for anything else. */
static int parse_causal(const char *s, int *out) {
    int n = 0;
    for (;; s += 2) {
        if ((s[0] != '0' && s[0] != '1') || (s[1] && s[1] != ',') || n == 2) return -1;
        out[n++] = s[0] - '0';
        if (!s[1]) return n;
    }
}

/* --pass: fwd, bwd, decode, comma-separated. */
static bool parse_passes(const char *s, options *o) {
    char buf[64];
    if (!*s || snprintf(buf, sizeof buf, "%s", s) >= (int)sizeof buf || buf[strlen(buf) - 1] == ',') return false;
    o->fwd = o->bwd = o->decode = false;
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ","))
        if (!strcmp(tok, "fwd")) o->fwd = true;
        else if (!strcmp(tok, "bwd")) o->bwd = true;
        else if (!strcmp(tok, "decode")) o->decode = true;
        else return false;
    return true;
}

/* The value options each benchmark reads (--threads and --backend go to
 * all). One given to a benchmark that does not read it is a usage error
 * naming the benchmarks that do: `bench peak --L 5` ran the ceilings and
 * dropped --L in silence. */
static const struct {
    const char *bench;
    const char *const options[11];
} bench_options[] = {
    {"peak", {NULL}},
    {"attention",
     {"--L", "--D", "--causal", "--deterministic", "--dtype", "--pass", "--B", "--H", "--Hkv", "--budget", NULL}},
    {"decode", {"--L", "--D", "--dtype", "--H", "--Hkv", "--budget", NULL}},
    {"kvquant", {"--L", "--D", "--H", "--Hkv", "--budget", NULL}},
    {"linear", {"--L", "--D", "--B", "--H", "--decay", "--chunk", "--pass", "--op", "--feature", "--budget", NULL}},
    {"sparse", {"--L", "--D", "--causal", "--H", "--Hkv", "--budget", "--qk-file", NULL}},
    {"matmul", {"--L", "--type", "--budget", NULL}},
};
enum { N_BENCHES = sizeof bench_options / sizeof bench_options[0] };

static bool bench_takes(int b, const char *option) {
    for (const char *const *k = bench_options[b].options; *k; k++)
        if (!strcmp(*k, option)) return true;
    return false;
}

/* bench `name` (an index into bench_options, or -1 for an unknown name,
 * reported by cmd_bench) given `option`: true when it reads it; else says
 * which benchmarks do. */
static bool option_fits(const char *cmd, int b, const char *option) {
    if (b < 0 || bench_takes(b, option)) return true;
    fprintf(stderr, "%s: %s is only for bench", cmd, option);
    for (int i = 0, n = 0; i < N_BENCHES; i++)
        if (bench_takes(i, option)) fprintf(stderr, "%s %s", n++ ? "," : "", bench_options[i].bench);
    fprintf(stderr, " (not bench %s)\n", bench_options[b].bench);
    return false;
}

/* The largest tensor a row of bench `name` makes, in elements, from the
 * options given (defaults are small), within BENCH_MAX_ELEMS; else says
 * so. Doubles: the product itself must not overflow. */
static bool sizes_fit(const options *o, const char *name) {
    double L = 1, D = 1, elems;
    for (int i = 0; i < o->nL; i++) L = L > (double)o->L[i] ? L : (double)o->L[i];
    if (!o->nL) L = 65536; /* the longest default row (linear's) */
    for (int i = 0; i < o->nD; i++) D = D > (double)o->D[i] ? D : (double)o->D[i];
    if (!o->nD) D = 1536; /* the largest default (linear's Mamba width) */
    const double H = (double)(o->H > o->Hkv ? o->H : o->Hkv), B = (double)o->B;
    if (!strcmp(name, "matmul")) elems = L * 49152; /* the lm head's rows */
    else if (!strcmp(name, "linear")) elems = B * H * D * (L > D ? L : D); /* tokens, or the [D, D] states */
    else elems = B * L * H * D;
    if (elems <= BENCH_MAX_ELEMS) return true;
    fprintf(stderr, "longattn bench %s: --B, --L, --H and --D ask for tensors of %.3g elements, past 2^40\n", name,
            elems);
    return false;
}

/* Usage errors print why and return -1 (exit 2); --help prints the usage on
 * stdout and returns 1 (exit 0). */
static int parse_options(int argc, char **argv, options *o, bool decode) {
    static const char CMD[] = "longattn bench";
    memset(o, 0, sizeof *o);
    o->B = 1, o->H = decode ? 32 : 8, o->Hkv = 8, o->budget_s = 20;
    o->nL = 0, o->nD = 0, o->ncausal = 0, o->ndtype = 0;
    o->fwd = o->bwd = o->decode = true;
    o->decay = LA_DECAY_TOKEN, o->chunk = 64;
    static const char *const value_options[] = {"--threads", "--backend", "--qk-file", "--L", "--D", "--B", "--H",
                                                "--Hkv", "--budget", "--dtype", "--chunk", "--type", "--op",
                                                "--feature", "--decay", "--causal", "--deterministic", "--pass",
                                                NULL};
    int b = 0; /* the benchmark, as bench_options numbers them; -1 unknown */
    while (b < N_BENCHES && strcmp(argv[1], bench_options[b].bench)) b++;
    if (b == N_BENCHES) b = -1;
    const bool is_sparse = b >= 0 && !strcmp(bench_options[b].bench, "sparse");
    const char *shape_option = NULL; /* sparse: an option the --qk-file run would not read */
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *val;
        int64_t n;
        float f;
        bool bad = false;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return usage(stdout), 1;
        if (!strcmp(a, "--json")) { o->json = true; continue; }
        if (!strcmp(a, "--quick")) { o->quick = true; continue; }
        if (!strcmp(a, "--cold")) { o->cold = true; continue; }
        if (!(val = cli_option_value(CMD, argc, argv, &i, value_options))) return -1;
        if (strcmp(a, "--threads") && strcmp(a, "--backend") && !option_fits(CMD, b, a)) return -1;
        if (is_sparse && strcmp(a, "--threads") && strcmp(a, "--backend") && strcmp(a, "--qk-file")) shape_option = a;
        if (!strcmp(a, "--threads")) {
            if (!cli_parse_threads(CMD, val, &n)) return -1;
            o->threads = (int)n;
        }
        else if (!strcmp(a, "--backend")) {} /* cpu: cmd_bench sent cuda to bench_gpu */
        else if (!strcmp(a, "--qk-file")) o->qk_file = val;
        else if (!strcmp(a, "--L")) o->nL = parse_list(val, o->L, MAX_LIST);
        else if (!strcmp(a, "--D")) o->nD = parse_list(val, o->D, MAX_LIST);
        else if (!strcmp(a, "--B") || !strcmp(a, "--H") || !strcmp(a, "--Hkv") || !strcmp(a, "--chunk")) {
            /* --chunk: the CPU kernels' range (la_linear_params.chunk_size); past it every mixer row was an
             * error row, and the exit 0 when exact attention's row ran */
            if (!cli_parse_i64(CMD, a, val, 1, !strcmp(a, "--chunk") ? 1024 : (int64_t)1 << 30, &n)) return -1;
            *(!strcmp(a, "--B") ? &o->B : !strcmp(a, "--H") ? &o->H : !strcmp(a, "--Hkv") ? &o->Hkv : &o->chunk) = n;
        }
        else if (!strcmp(a, "--budget")) {
            if (!cli_parse_f32(CMD, a, val, 1e-3f, 1e6f, &f)) return -1;
            o->budget_s = f;
        }
        else if (!strcmp(a, "--dtype")) o->ndtype = parse_dtypes(val, o->dtype);
        else if (!strcmp(a, "--type")) {
            char buf[64];
            o->nmm_type = *val && snprintf(buf, sizeof buf, "%s", val) < (int)sizeof buf ? 0 : -1;
            for (char *tok = o->nmm_type ? NULL : strtok(buf, ","); tok && o->nmm_type >= 0;
                 tok = strtok(NULL, ",")) {
                static const la_ggml_type ts[] = {LA_GGML_F32, LA_GGML_F16, LA_GGML_BF16, LA_GGML_Q8_0,
                                                  LA_GGML_Q4_0, LA_GGML_Q4_1, LA_GGML_Q4_K, LA_GGML_Q6_K};
                int found = -1;
                for (int t = 0; t < 8; t++)
                    if (!strcasecmp(tok, la_ggml_type_name(ts[t]))) found = t;
                /* every shape has rows of 576 or 1536 weights: a 256-element block type (q4_k, q6_k) failed
                 * every 576-wide row, exit 1, for a type the sweep cannot take */
                if (found >= 0 && 576 % la_ggml_block_elems(ts[found])) found = -1;
                bool seen = false; /* a repeat: refused by list_repeats below, as in every list */
                for (int t = 0; found >= 0 && t < o->nmm_type; t++) seen |= o->mm_type[t] == ts[found];
                if (found < 0) o->nmm_type = -1;
                else if (!seen) o->mm_type[o->nmm_type++] = ts[found];
            }
            if (o->nmm_type == 0) o->nmm_type = -1; /* "," names no type: not the default list in silence */
        }
        else if (!strcmp(a, "--op")) {
            /* each --op replaces the one before: "--op mamba --op delta" ran mamba, as scan_op stayed set */
            o->scan_op = !strcmp(val, "mamba") ? 1 + SCAN_CASE_MAMBA : !strcmp(val, "aaren") ? 1 + SCAN_CASE_AAREN : 0;
            o->op = o->scan_op ? 0 : !strcmp(val, "linear") ? 0 : !strcmp(val, "delta") ? 1
                    : !strcmp(val, "gated_delta") ? 2 : !strcmp(val, "titans") ? 3 : !strcmp(val, "all") ? 4 : -1;
        }
        else if (!strcmp(a, "--feature")) {
            static const char *const names[] = {"identity", "elu1", "relu", "taylor", "hedgehog"};
            o->feature = -1;
            for (int f = 0; f < 5; f++)
                if (!strcmp(val, names[f])) o->feature = f;
        }
        else if (!strcmp(a, "--decay")) {
            static const char *const names[] = {"none", "head", "token", "channel"};
            o->decay = -1;
            for (int d = 0; d < 4; d++)
                if (!strcmp(val, names[d])) o->decay = d;
        }
        else if (!strcmp(a, "--causal")) o->ncausal = parse_causal(val, o->causal);
        else if (!strcmp(a, "--deterministic")) o->ndeterministic = parse_causal(val, o->deterministic);
        else if (!strcmp(a, "--pass")) bad = !parse_passes(val, o), o->pass_given = true;
        if ((!strcmp(a, "--qk-file") || !strcmp(a, "--dtype") || !strcmp(a, "--type") || !strcmp(a, "--pass")) &&
            !items_ok(val))
            bad = true;
        /* a list's repeat is refused whatever else is wrong with it, and named */
        const bool is_list = !strcmp(a, "--L") || !strcmp(a, "--D") || !strcmp(a, "--causal") ||
                             !strcmp(a, "--deterministic") || !strcmp(a, "--dtype") || !strcmp(a, "--pass") ||
                             !strcmp(a, "--type") || !strcmp(a, "--qk-file");
        char dup[64];
        const bool repeat = is_list && items_ok(val) && list_repeats(a, val, dup, sizeof dup);
        int items = 1;
        for (const char *c = val; *c; c++) items += *c == ',';
        if (repeat || bad || o->nL < 0 || o->nD < 0 || o->ndtype < 0 || o->ncausal < 0 || o->ndeterministic < 0 ||
            o->decay < 0 || o->op < 0 || o->feature < 0 || o->nmm_type < 0) {
            fprintf(stderr, "%s: bad value for %s: '%s'", CMD, a, val);
            if (repeat) fprintf(stderr, " lists '%s' twice (each item once)", dup);
            else if ((!strcmp(a, "--L") || !strcmp(a, "--D")) && items > MAX_LIST)
                fprintf(stderr, " (%d items; at most %d)", items, MAX_LIST);
            else if (!strcmp(a, "--causal") || !strcmp(a, "--deterministic"))
                fprintf(stderr, " (0 and/or 1, comma-separated)");
            else if (!strcmp(a, "--type"))
                fprintf(stderr, " (types f32, f16, bf16, q8_0, q4_0, q4_1; q4_k and q6_k blocks of 256 do not fit "
                                "the 576-wide rows)");
            fputc('\n', stderr);
            return -1;
        }
    }
    /* grouped heads: every row would fail in the library, one error row each (exit 1), for a usage error */
    if (b >= 0 && bench_takes(b, "--Hkv") && !o->qk_file && o->H % o->Hkv) {
        fprintf(stderr, "%s: --H %lld is not a multiple of --Hkv %lld (query heads share each KV head; --Hkv "
                        "defaults to 8)\n", CMD, (long long)o->H, (long long)o->Hkv);
        return -1;
    }
    if (o->cold && b >= 0 && !strcmp(argv[1], "peak")) { /* peak times no rows */
        fprintf(stderr, "%s: --cold is for the benchmarks with rows (not bench peak)\n", CMD);
        return -1;
    }
    if (o->qk_file && shape_option) { /* the file's q and k set the shapes: the option was dropped in silence */
        fprintf(stderr, "%s: bench sparse --qk-file takes its shapes from the file, not %s\n", CMD, shape_option);
        return -1;
    }
    if (o->qk_file && o->cold) { /* it times selectors on the file's q and k, with no cache eviction */
        fprintf(stderr, "%s: --cold is not for bench sparse --qk-file (its selector times are taken warm)\n", CMD);
        return -1;
    }
    if (o->pass_given && o->decode && o->scan_op == 1 + SCAN_CASE_AAREN) {
        /* Aaren has no decode-step rows: --pass decode ran none, exit 0 */
        fprintf(stderr, "%s: --pass decode: bench linear --op aaren has no decode-step rows (fwd and bwd only)\n",
                CMD);
        return -1;
    }
    if (o->ndeterministic && !(o->bwd && (!o->quick || o->pass_given))) {
        /* a backward-only option where no backward row runs: dropped in silence */
        fprintf(stderr, "%s: --deterministic changes the backward only, and no bwd row runs (%s)\n", CMD,
                o->bwd ? "--quick times none unless --pass names bwd" : "--pass does not name bwd");
        return -1;
    }
    if (b >= 0 && !strcmp(argv[1], "linear") && !o->scan_op && (o->op == 0 || o->op == 4) &&
        o->decay == LA_DECAY_CHANNEL && (o->feature == LA_FEATURE_TAYLOR || o->feature == LA_FEATURE_HEDGEHOG)) {
        /* the library refuses the pair by design (la_linear_params_default): every linear row was an error row */
        fprintf(stderr, "%s: --decay channel does not go with --feature %s: a per-channel decay needs an elementwise "
                        "map (identity, elu1 or relu); the Taylor and Hedgehog maps change the key channels, and "
                        "take --decay none, head or token\n",
                CMD, o->feature == LA_FEATURE_TAYLOR ? "taylor" : "hedgehog");
        return -1;
    }
    if (o->pass_given && o->decode && b >= 0 && strcmp(argv[1], "linear")) {
        /* attention reads fwd and bwd: --pass decode was dropped (alone, no row ran and the exit was 0) */
        fprintf(stderr, "%s: --pass decode is only for bench linear\n", CMD);
        return -1;
    }
    /* a list where one value is taken: the first was used, the rest dropped in silence */
    const bool many_D = o->nD > 1 && strcmp(argv[1], "attention");
    if (many_D || (o->ncausal > 1 && !strcmp(argv[1], "sparse"))) {
        fprintf(stderr, "%s: bench %s takes one value for %s\n", CMD, argv[1], many_D ? "--D" : "--causal");
        return -1;
    }
    if (b >= 0 && !sizes_fit(o, bench_options[b].bench)) return -1;
    int64_t threads = o->threads; /* 0: the library's default, checked as --threads is */
    if (!cli_default_threads(CMD, &threads)) return -1;
    o->threads = threads > 0 ? (int)threads : 1;
    return 0;
}

static void measure_ceilings(const options *o) {
    ceilings c;
    c.simd = la_simd_detected();
    double secs = o->quick ? 0.3 : 1.0;
    c.fma = la_peak_fma_gflops(c.simd, o->threads, secs);
    c.bf16 = la_peak_bf16_gflops(c.simd, o->threads, secs);
    /* bf16 and f16 inputs reach the FMA units widened to f32 (the kernels
     * use no BF16 dot instruction yet), so their ceiling is the faster of
     * the FP32 FMA peak and the BF16 dot peak: on a Xeon with AVX512_BF16
     * vdpbf16ps measured slower than f32 FMA, which must not flatter bf16. */
    c.bf16_effective = c.bf16 > c.fma ? c.bf16 : c.fma;
    /* la_matmul's amx_bf16 rows are a ratio to this one (0: no AMX here) */
    c.amx_bf16 = la_peak_amx_bf16_gflops(o->threads, secs);
    c.read_gbps = la_peak_read_gbps(o->threads, (size_t)(o->quick ? 256 : 512) << 20);
    if (o->json)
        printf("{\"op\":\"peak\",\"simd\":\"%s\",\"threads\":%d,\"fp32_fma_gflops\":%.1f,\"bf16_dot_gflops\":%.1f,"
               "\"bf16_ceiling_gflops\":%.1f,\"amx_bf16_gflops\":%.1f,\"read_gbps\":%.2f}\n",
               la_simd_name(c.simd), o->threads, c.fma, c.bf16, c.bf16_effective, c.amx_bf16, c.read_gbps);
    else
        printf("ceilings (%s, %d threads): FP32 FMA %.1f GFLOP/s, BF16 dot %s%.1f GFLOP/s, AMX BF16 %s%.1f GFLOP/s, "
               "read bandwidth %.1f GB/s\n",
               la_simd_name(c.simd), o->threads, c.fma, c.bf16 > 0 ? "" : "(none; bf16 runs as f32 FMA) ",
               c.bf16 > 0 ? c.bf16 : c.fma, c.amx_bf16 > 0 ? "" : "(none) ", c.amx_bf16, c.read_gbps);
    fflush(stdout);
}

/* ---- the sweeps, timed by the harness ---- */

static harness_perf_opts perf_opts(const options *o, bool sampled_error, double time_budget_s) {
    return (harness_perf_opts){.json = o->json,
                               .sampled_error = sampled_error,
                               .threads = o->threads,
                               .time_budget_s = time_budget_s,
                               .skip_budget_s = o->budget_s,
                               .ceiling_s = o->quick ? 0.2 : 0.5,
                               .bandwidth_bytes = (size_t)(o->quick ? 256 : 512) << 20,
                               .cold = o->cold};
}

static int bench_attention(const options *o) {
    static const int64_t default_L[] = {512, 1024, 2048, 4096, 8192, 16384, 32768};
    static const int64_t quick_L[] = {1024, 4096};
    static const int64_t default_D[] = {64, 128}, quick_D[] = {128};
    static const int both[] = {0, 1};
    static const la_dtype default_dt[] = {LA_F32, LA_BF16};
    attn_sweep s = {.B = o->B, .H = o->H, .Hkv = o->Hkv, .fwd = o->fwd,
                   .bwd = o->bwd && (!o->quick || o->pass_given)};
    s.L = o->nL ? o->L : o->quick ? quick_L : default_L;
    s.nL = o->nL ? o->nL : o->quick ? 2 : 7;
    s.D = o->nD ? o->D : o->quick ? quick_D : default_D;
    s.nD = o->nD ? o->nD : o->quick ? 1 : 2;
    s.causal = o->ncausal ? o->causal : both;
    s.ncausal = o->ncausal ? o->ncausal : o->quick ? 1 : 2;
    s.dtype = o->ndtype ? o->dtype : default_dt;
    s.ndtype = o->ndtype ? o->ndtype : o->quick ? 1 : 2;
    /* not given: NULL, deterministic 0 and rows as they always were */
    s.deterministic = o->ndeterministic ? o->deterministic : NULL;
    s.ndeterministic = o->ndeterministic;
    harness_list list = {0};
    attn_sweep_cases(&list, &s);
    harness_perf_opts po = perf_opts(o, true, o->quick ? 0.5 : 2.0);
    int status = harness_perf(&list, &po);
    harness_list_free(&list);
    return status;
}

static int bench_decode(const options *o) {
    static const int64_t default_L[] = {1024, 4096, 16384, 32768}, quick_L[] = {32768};
    static const la_dtype default_dt[] = {LA_F32, LA_BF16, LA_F16};
    decode_sweep s = {.H = o->H, .Hkv = o->Hkv, .D = o->nD ? o->D[0] : 128, .paged = !o->quick};
    s.L = o->nL ? o->L : o->quick ? quick_L : default_L;
    s.nL = o->nL ? o->nL : o->quick ? 1 : 4;
    s.dtype = o->ndtype ? o->dtype : default_dt;
    s.ndtype = o->ndtype ? o->ndtype : o->quick ? 1 : 3;
    harness_list list = {0};
    decode_sweep_cases(&list, &s);
    harness_perf_opts po = perf_opts(o, false, o->quick ? 0.3 : 1.0);
    int status = harness_perf(&list, &po);
    harness_list_free(&list);
    return status;
}

/* The linear mixers (tests/linear/mixer_sweep.h): exact causal attention,
 * then each mixer's chunked forward (and backward) over the lengths, each
 * row with its time per token and its ratios to the 4K row and to exact
 * attention; then one decode step of each mixer, as GB/s against the
 * read and the read-modify-write bandwidth measured beside it. */
static int bench_linear(const options *o) {
    static const int64_t default_L[] = {1024, 2048, 4096, 8192, 16384, 32768, 65536}, quick_L[] = {1024, 4096};
    static const unsigned mixers_of[] = {MIXER_LINEAR | MIXER_TITANS, MIXER_DELTA, MIXER_GATED_DELTA, MIXER_TITANS,
                                         MIXER_ALL};
    const bool scan = o->scan_op != 0;
    const unsigned mixers = scan ? (o->scan_op - 1 == SCAN_CASE_MAMBA ? MIXER_MAMBA : MIXER_AAREN) : mixers_of[o->op];
    const int64_t D = o->nD ? o->D[0] : scan ? 1536 : 128;
    mixer_sweep s = {.B = o->B, .H = o->H, .D = D, .chunk = o->chunk, .mixers = mixers,
                     .mamba_width = scan ? D : 0, .aaren_width = scan ? D : 0, .decay = (la_decay_kind)o->decay,
                     .feature = (la_feature_map)o->feature, .bwd = o->bwd && (!o->quick || o->pass_given),
                     .with_attention = !scan && o->fwd};
    s.L = o->nL ? o->L : o->quick ? quick_L : default_L;
    s.nL = o->nL ? o->nL : o->quick ? 2 : 7;
    harness_list list = {0};
    if (o->fwd || s.bwd) mixer_sweep_cases(&list, &s);
    if (o->decode) /* the decode rows: about 128 MiB of state (--quick: 32 MiB) */
        mixer_decode_cases(&list, mixers, o->quick ? (scan ? 64 : 16) : 0, scan ? 1 : o->H, D,
                           (la_feature_map)o->feature, (la_decay_kind)o->decay, o->threads);
    harness_perf_opts po = perf_opts(o, false, o->quick ? 0.5 : 2.0);
    int status = harness_perf(&list, &po);
    harness_list_free(&list);
    mixer_sweep_release();
    return status;
}

static void ceilings_of(const void *o) { measure_ceilings(o); }

static int bench_sparse(const options *o) {
    static const int64_t default_L[] = {8192, 16384, 32768}, quick_L[] = {4096};
    static const sparse_spec configs[] = {
        {.selector = SPARSE_STATIC, .local_blocks = 8},
        /* one sink + 26 local blocks of 64: density 0.103 at L = 32768 causal,
         * the 10% point (measured, not interpolated) */
        {.selector = SPARSE_STATIC, .local_blocks = 26},
        {.selector = SPARSE_STATIC, .local_blocks = 32},
        {.selector = SPARSE_TOPK, .gamma = 0.9f},
        {.selector = SPARSE_TOPK, .top_k = 16},
        {.selector = SPARSE_VSLASH, .vertical = 64, .slash = 64},
        {.selector = SPARSE_VSLASH, .vertical = 256, .slash = 64, .columns = 1},
        {.selector = SPARSE_ROUTING, .clusters = 16},
        {.selector = SPARSE_HIP, .top_k = 8},
        {.selector = SPARSE_HIP, .top_k = 32},
        {.selector = SPARSE_CHUNKS, .chunk_blocks = 4, .top_k = 2},
        {.selector = SPARSE_FLEX, .gamma = 0.9f, .tau = 0.1f, .vertical = 64, .slash = 64},
    };
    sparse_sweep s = {.H = o->H, .Hkv = o->Hkv, .D = o->nD ? o->D[0] : 128,
                      .causal = o->ncausal ? o->causal[0] : 1, .configs = configs,
                      .nconfig = o->quick ? 2 : (int)(sizeof configs / sizeof configs[0])};
    s.L = o->nL ? o->L : o->quick ? quick_L : default_L;
    s.nL = o->nL ? o->nL : o->quick ? 1 : 3;
    harness_list list = {0};
    sparse_sweep_cases(&list, &s);
    harness_perf_opts po = perf_opts(o, false, o->quick ? 0.3 : 1.0);
    int status = harness_perf(&list, &po);
    harness_list_free(&list);
    return status;
}

/* Decode over the KV cache's own pages, float and quantised side by side. */
static int bench_kvquant(const options *o) {
    static const int64_t default_L[] = {8192, 32768}, quick_L[] = {4096};
    kv_decode_sweep s = {.H = o->H, .Hkv = o->Hkv, .D = o->nD ? o->D[0] : 128};
    s.L = o->nL ? o->L : o->quick ? quick_L : default_L;
    s.nL = o->nL ? o->nL : o->quick ? 1 : 2;
    harness_list list = {0};
    kv_decode_sweep_cases(&list, &s);
    harness_perf_opts po = perf_opts(o, false, o->quick ? 0.3 : 1.0);
    int status = harness_perf(&list, &po);
    harness_list_free(&list);
    return status;
}

/* Prefill's weight products over the model's projection shapes, one series
 * per (type, shape, entry) growing in tokens: la_matmul_f32 (f32
 * activations, the exact-decode mode's products) and la_matmul (what the
 * model's prefill runs: a bf16 path where the machine has one); each row's
 * "path" says which kernel ran. */
static int bench_matmul(const options *o) {
    static const int64_t default_n[] = {1, 16, 64, 128, 256, 512}, quick_n[] = {64, 512};
    static const la_ggml_type default_t[] = {LA_GGML_Q4_1, LA_GGML_Q8_0, LA_GGML_F16};
    matmul_sweep s = {.types = o->nmm_type ? o->mm_type : default_t,
                      .ntypes = o->nmm_type ? o->nmm_type : o->quick ? 1 : 3, .lm_head = !o->quick,
                      .la_matmul = true};
    s.n = o->nL ? o->L : o->quick ? quick_n : default_n;
    s.nn = o->nL ? o->nL : o->quick ? 2 : 6;
    harness_list list = {0};
    matmul_sweep_cases(&list, &s);
    harness_perf_opts po = perf_opts(o, true, o->quick ? 0.3 : 1.0);
    int status = harness_perf(&list, &po);
    harness_list_free(&list);
    return status;
}

int cmd_bench(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *backend = "cpu"; /* the last --backend counts, as every repeated option's last value does */
    for (int i = 2; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--backend")) {
            backend = argv[++i];
            if (strcmp(backend, "cuda") && strcmp(backend, "cpu")) {
                fprintf(stderr, "longattn bench: --backend is cpu or cuda, got '%s'\n", backend);
                return 2;
            }
        }
    bool decode = !strcmp(argv[1], "decode"), kvquant = !strcmp(argv[1], "kvquant");
    /* the name first: "bench --L 5" said "unknown option '5'", taking --L for the benchmark (and with
     * --backend cuda, "bench bogus" said it had no CUDA rows) */
    if (strcmp(argv[1], "peak") && strcmp(argv[1], "attention") && strcmp(argv[1], "linear") && strcmp(argv[1], "sparse") &&
        strcmp(argv[1], "matmul") && !decode && !kvquant) {
        fprintf(stderr, "longattn bench: unknown benchmark '%s'\n", argv[1]);
        usage(stderr);
        return 2;
    }
    if (!strcmp(backend, "cuda")) return bench_gpu(argc, argv);
    options o;
    int parsed = parse_options(argc, argv, &o, decode || kvquant);
    if (parsed) return parsed > 0 ? 0 : 2;
    /* The machine's ceilings as a first line; every row's ratio is to the
     * ceiling measured beside that row. */
    if (o.qk_file) /* its files are checked first, then the ceilings measured */
        return sparse_qk_bench(o.qk_file, o.threads, o.json, o.quick, ceilings_of, &o);
    measure_ceilings(&o);
    if (!strcmp(argv[1], "attention")) return bench_attention(&o);
    if (decode) return bench_decode(&o);
    if (kvquant) return bench_kvquant(&o);
    if (!strcmp(argv[1], "linear")) return bench_linear(&o);
    if (!strcmp(argv[1], "sparse")) return bench_sparse(&o);
    if (!strcmp(argv[1], "matmul")) return bench_matmul(&o);
    return 0;
}
