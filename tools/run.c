/* longattn run: generate text with a GGUF model, streaming tokens to stdout
 * as they come; progress and timing go to stderr. */
#include "cli.h"
#include "cli_util.h"
#include "qk_dump.h"
#include "longattn_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char CMD[] = "longattn run";

static void usage(FILE *f) {
    fprintf(f,
            "usage: longattn run -m MODEL.gguf (-p TEXT | -f FILE) [options]\n"
            "  -m FILE        GGUF model (llama or qwen2 architecture)\n"
            "  -p TEXT        prompt text\n"
            "  -f FILE        read the prompt from FILE\n"
            "  --chat         wrap the prompt in the model's chat template (ChatML or Llama-3)\n"
            "  --system TEXT  system message for --chat (default: the template's own, if any)\n"
            "  --raw          tokenise the prompt exactly as given: no BOS, special-token text kept as text\n"
            "  -n N           generate at most N tokens (default 256; -1: until end of text or context)\n"
            "  --temp T       temperature in [0, 1e6], a plain decimal; 0 = greedy (default 0.8)\n"
            "  --top-k K      keep the K most likely tokens, K in [0, 2^31 - 1]; 0 = off (default 40)\n"
            "  --top-p P      nucleus sampling mass in [1e-6, 1], a plain decimal; 1 = off (default 0.95)\n"
            "  --seed S       sampling seed (default: from the clock, printed)\n"
            "  --ctx N        KV-cache capacity in tokens (default: the model's training context; more\n"
            "                 runs, with a warning naming the trained context: quality falls past it)\n"
            "  --threads N    CPU threads, 1 to 4096 (default: OMP_NUM_THREADS or all cores)\n"
            "  --kv-type T    KV-cache element type: f16 (default, as llama.cpp), bf16, f32, or quantised\n"
            "                 q8 / q4 (int8 / int4, KIVI-style groups of 32, the last 32+ tokens kept f32)\n"
            "  --kv POLICY    KV-cache policy: full (default), streaming:BUDGET, h2o:BUDGET, snapkv:BUDGET,\n"
            "                 quest:BUDGET or duo:BUDGET[:SCOREFILE] (see include/longattn.h)\n"
            "  --sparse S:B   block-sparse prefill: none (default) or SELECTOR:BUDGET[,sink=N][,local=N]\n"
            "                 [,dense-layers=N], SELECTOR one of static, topk, vslash, hip, chunks, flex, routing\n"
            "                 (see la_sparse_choice in longattn.h)\n"
            "  --sparse-heads FILE  per-head coverage for --sparse topk:G, 0 = streaming head (from `longattn ppl\n"
            "                 --calibrate-sparse` or `--score-heads`)\n"
            "  --exact-decode f32 activations in single-token steps (no int8 rounding; slower)\n"
            "  --dump-qk DIR  write each prefill layer's q (after RoPE) and k into DIR/layer-NN.qk (qk_dump.h;\n"
            "                 --kv full or streaming, a prompt of two or more tokens; once streaming has evicted,\n"
            "                 the last prefill chunk's queries and the keys they attended to),\n"
            "                 for `longattn bench sparse --qk-file`; --dump-layers all|N,N,... (default 0,7,15,23)\n");
}

typedef struct {
    const char *model_path, *prompt, *prompt_file, *system;
    bool chat, raw, seed_given;
    int64_t n_predict, ctx, threads;
    la_dtype kv_type;
    la_kv_quant kv_quant;
    bool exact_decode;
    la_kv_policy kv_policy;
    la_sparse_choice sparse;
    const char *sparse_heads; /* --sparse-heads FILE or NULL */
    la_sampler_params sampling;
    const char *dump_qk, *dump_layers;
} run_options;

/* Returns 0 to go on, or the exit status (2 for usage errors). */
static int parse_args(int argc, char **argv, run_options *o) {
    *o = (run_options){.n_predict = 256, .kv_type = la_session_params_default().kv_type,
                       .kv_policy = la_session_params_default().kv_policy, .sampling = la_sampler_params_default()};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        int64_t k;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return -1;
        } else if (!strcmp(a, "--chat")) {
            o->chat = true;
            continue;
        } else if (!strcmp(a, "--raw")) {
            o->raw = true;
            continue;
        } else if (!strcmp(a, "--exact-decode")) {
            o->exact_decode = true;
            continue;
        }
        static const char *const value_options[] = {"-m", "-p", "-f", "--system", "-n", "--temp", "--top-k", "--top-p",
                                                    "--seed", "--ctx", "--threads", "--kv-type", "--kv", "--dump-qk",
                                                    "--dump-layers", "--sparse-heads", "--sparse", NULL};
        if (!(v = cli_option_value(CMD, argc, argv, &i, value_options))) return 2;
        /* an empty path names no file: a usage error, as -o "" is (it was "cannot open ''", exit 1) */
        if ((!strcmp(a, "-m") || !strcmp(a, "-f") || !strcmp(a, "--sparse-heads") || !strcmp(a, "--dump-qk")) &&
            !cli_parse_path(CMD, a, v))
            return 2;
        if (!strcmp(a, "-m")) o->model_path = v;
        else if (!strcmp(a, "-p")) o->prompt = v;
        else if (!strcmp(a, "-f")) o->prompt_file = v;
        else if (!strcmp(a, "--system")) o->system = v;
        else if (!strcmp(a, "-n")) {
            if (!cli_parse_i64(CMD, a, v, -1, INT64_MAX, &o->n_predict)) return 2;
        } else if (!strcmp(a, "--temp")) {
            if (!cli_parse_f32(CMD, a, v, 0.0f, 1e6f, &o->sampling.temperature)) return 2;
        } else if (!strcmp(a, "--top-k")) {
            if (!cli_parse_i64(CMD, a, v, 0, INT32_MAX, &k)) return 2;
            o->sampling.top_k = (int32_t)k;
        } else if (!strcmp(a, "--top-p")) {
            if (!cli_parse_f32(CMD, a, v, 1e-6f, 1.0f, &o->sampling.top_p)) return 2;
        } else if (!strcmp(a, "--seed")) {
            if (!cli_parse_u64(CMD, a, v, &o->sampling.seed)) return 2;
            o->seed_given = true;
        } else if (!strcmp(a, "--ctx")) {
            if (!cli_parse_i64(CMD, a, v, 1, LA_SESSION_MAX_CTX, &o->ctx)) return 2;
        } else if (!strcmp(a, "--threads")) {
            if (!cli_parse_threads(CMD, v, &o->threads)) return 2;
        } else if (!strcmp(a, "--kv-type")) {
            if (!cli_parse_kv_type(CMD, a, v, &o->kv_type, &o->kv_quant)) return 2;
        } else if (!strcmp(a, "--kv")) {
            if (la_kv_policy_parse(v, &o->kv_policy)) {
                fprintf(stderr, "%s: --kv: %s\n", CMD, la_last_error());
                return 2;
            }
        } else if (!strcmp(a, "--dump-qk")) {
            o->dump_qk = v;
        } else if (!strcmp(a, "--dump-layers")) {
            o->dump_layers = v;
        } else if (!strcmp(a, "--sparse-heads")) {
            o->sparse_heads = v;
        } else if (!strcmp(a, "--sparse")) {
            if (!cli_parse_sparse(CMD, v, &o->sparse)) return 2;
        } else {
            fprintf(stderr, "%s: unknown option '%s'\n", CMD, a);
            usage(stderr);
            return 2;
        }
    }
    const char *problem = !o->model_path                     ? "-m MODEL.gguf is required"
                          : !o->prompt == !o->prompt_file    ? "give exactly one of -p TEXT and -f FILE"
                          : o->chat && o->raw                ? "--chat and --raw exclude each other"
                          : o->system && !o->chat            ? "--system needs --chat"
                          : o->dump_layers && !o->dump_qk    ? "--dump-layers needs --dump-qk"
                          /* the session calls on_attention only without policy state: DIR stayed empty, exit 0 */
                          : o->dump_qk && la_kv_policy_has_state(&o->kv_policy)
                              ? "--dump-qk needs --kv full or streaming (under h2o, snapkv, quest and duo the "
                                "prefill attends through the policy, and no q or k reaches the dump)"
                                                             : NULL;
    if (problem) {
        fprintf(stderr, "%s: %s\n", CMD, problem);
        usage(stderr);
        return 2;
    }
    if (o->sparse_heads && !cli_needs_topk(CMD, "--sparse-heads", &o->sparse, true)) return 2;
    if (!cli_default_threads(CMD, &o->threads)) return 2;
    if (!o->seed_given) o->sampling.seed = (uint64_t)time(NULL);
    return 0;
}

/* ---- streaming callbacks */

typedef struct {
    const la_tokenizer *tok;
    bool progress_shown;
} stream_state;

enum { PROGRESS_BAR_WIDTH = 40 };

static void show_prefill_progress(void *user, int64_t done, int64_t total) {
    stream_state *ss = user;
    if (done == total && !ss->progress_shown) return; /* a single chunk: nothing to watch */
    int filled = (int)(PROGRESS_BAR_WIDTH * done / total);
    fprintf(stderr, "\rprefill [%.*s%*s] %lld/%lld tokens", filled, "########################################",
            PROGRESS_BAR_WIDTH - filled, "", (long long)done, (long long)total);
    if (done == total) fputc('\n', stderr);
    fflush(stderr);
    ss->progress_shown = true;
}

static bool print_token(void *user, int32_t token) {
    stream_state *ss = user;
    char buf[256];
    int64_t n = la_token_to_bytes(ss->tok, token, false, buf, sizeof buf);
    if (n > (int64_t)sizeof buf) { /* a token longer than any in real vocabularies */
        char *big = malloc((size_t)n);
        if (big && la_token_to_bytes(ss->tok, token, false, big, n) == n) fwrite(big, 1, (size_t)n, stdout);
        free(big);
    } else if (n > 0) {
        fwrite(buf, 1, (size_t)n, stdout);
    }
    /* output that cannot be written (a full disk) stops the generation: it
     * ran to -n before, its text lost; main's check then exits 1 */
    return fflush(stdout) == 0 && !ferror(stdout);
}

static const char *stop_name(la_stop_reason r) {
    switch (r) {
    case LA_STOP_EOG: return "end of text";
    case LA_STOP_LIMIT: return "token limit (-n)";
    case LA_STOP_CONTEXT: return "context full (--ctx)";
    case LA_STOP_CALLER: return "the output could not be written";
    default: return "stopped";
    }
}

/* Prompt tokens per the mode: chat template, raw bytes, or plain text. */
static int tokenize_prompt(const run_options *o, const la_model *m, const char *text, size_t len, int32_t **ids,
                           int64_t *n) {
    const la_tokenizer *tok = la_model_tokenizer(m);
    la_status st;
    if (o->chat && memchr(text, 0, len)) { /* la_chat_format takes C strings: the prompt ended there, unsaid */
        fprintf(stderr, "%s: --chat: the prompt holds a NUL byte at offset %zu; the chat template takes text\n", CMD,
                (size_t)((const char *)memchr(text, 0, len) - text));
        return 2;
    }
    if (o->chat) {
        la_chat_template tmpl;
        if ((st = la_chat_template_of_gguf(la_model_gguf(m), &tmpl))) return cli_fail(CMD, "--chat", st);
        char *chat_text;
        size_t chat_len;
        st = la_chat_format(&tmpl, o->system, text, &chat_text, &chat_len);
        la_chat_template_free(&tmpl);
        if (st) return cli_fail(CMD, "chat template", st);
        st = la_tokenize(tok, chat_text, chat_len, la_tokenizer_add_bos(tok), true, ids, n);
        free(chat_text);
    } else if (o->raw) {
        st = la_tokenize(tok, text, len, false, false, ids, n);
    } else {
        st = la_tokenize(tok, text, len, la_tokenizer_add_bos(tok), true, ids, n);
    }
    if (st) return cli_fail(CMD, "tokenizing the prompt", st);
    if (*n == 0) {
        /* bytes the vocabulary has no token for are dropped (as llama.cpp drops them): "-p $'\xff'"
         * said "empty" of a prompt that was not */
        if (len) fprintf(stderr, "%s: the prompt's %zu bytes give no token: the vocabulary has none for them (bytes "
                                 "invalid in UTF-8 or controls are dropped)\n", CMD, len);
        else fprintf(stderr, "%s: the prompt is empty\n", CMD);
        return 2;
    }
    return 0;
}

int cmd_run(int argc, char **argv) {
    run_options o;
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc < 0 ? 0 : rc;

    char *file_text = NULL;
    size_t len;
    if (o.prompt_file && !(file_text = cli_read_file(CMD, o.prompt_file, &len))) return 1;
    const char *text = file_text ? file_text : o.prompt;
    if (!file_text) len = strlen(text);

    la_model *m = NULL;
    la_context *ctx = NULL;
    la_session *s = NULL;
    la_sampler *sampler = NULL;
    int32_t *ids = NULL;
    float *gamma = NULL;
    int64_t n_ids = 0;
    la_status st;
    if ((st = la_model_load(o.model_path, &m))) {
        rc = cli_fail(CMD, o.model_path, st);
        goto done;
    }
    const la_model_config *cfg = la_model_config_of(m);
    if (!cli_sparse_fits_model(CMD, &o.sparse, cfg)) {
        rc = 2;
        goto done;
    }
    if ((rc = tokenize_prompt(&o, m, text, len, &ids, &n_ids))) goto done;
    int64_t max_ctx = cli_model_ctx(CMD, "--ctx", o.ctx, cfg);
    if (n_ids > max_ctx) {
        fprintf(stderr, "%s: the prompt has %lld tokens, more than the context of %lld; raise --ctx\n", CMD,
                (long long)n_ids, (long long)max_ctx);
        rc = 2;
        goto done;
    }
    if ((st = la_context_create(&ctx, (int)o.threads))) {
        rc = cli_fail(CMD, "context", st);
        goto done;
    }
    la_session_params sp = la_session_params_default();
    sp.max_ctx = max_ctx, sp.kv_type = o.kv_type, sp.kv_policy = o.kv_policy, sp.sparse = o.sparse;
    sp.kv_quant = o.kv_quant, sp.exact_decode = o.exact_decode;
    if (o.sparse_heads && !cli_sparse_heads(CMD, o.sparse_heads, cfg, &gamma)) {
        rc = 1;
        goto done;
    }
    sp.sparse_head_gamma = gamma;
    static qk_dump dump; /* --dump-qk: large, so not on the stack */
    if (o.dump_qk) {
        if ((rc = qk_dump_init(&dump, CMD, o.dump_qk, o.dump_layers ? o.dump_layers : "0,7,15,23"))) goto done;
        for (int64_t l = cfg->n_layer; o.dump_layers && strcmp(o.dump_layers, "all") && l < QK_DUMP_MAX_LAYERS; l++)
            if (dump.want[l]) { /* a layer the model does not have would be silently missing from DIR */
                fprintf(stderr, "%s: --dump-layers: layer %lld is past the model's %lld layers\n", CMD, (long long)l,
                        (long long)cfg->n_layer);
                rc = 2;
                goto done;
            }
        if (n_ids < 2) { /* one token is a single-token step: nothing was dumped, exit 0 */
            fprintf(stderr, "%s: --dump-qk needs a prompt of two or more tokens (it dumps the prefill's attention); "
                            "this one has %lld\n", CMD, (long long)n_ids);
            rc = 2;
            goto done;
        }
        sp.on_attention = qk_dump_observe, sp.on_attention_user = &dump;
    }
    if ((st = la_session_new_with(m, ctx, &sp, &s))) {
        rc = cli_fail(CMD, "session", st);
        goto done;
    }
    if ((st = la_sampler_new(&o.sampling, (int32_t)cfg->n_vocab, &sampler))) {
        rc = cli_fail(CMD, "sampler", st);
        goto done;
    }
    if (o.sampling.temperature > 0 && !o.seed_given)
        fprintf(stderr, "%s: seed %llu\n", CMD, (unsigned long long)o.sampling.seed);

    stream_state ss = {.tok = la_model_tokenizer(m)};
    la_generate_params gp = la_generate_params_default();
    gp.max_new_tokens = o.n_predict;
    gp.max_ctx = max_ctx;
    gp.on_prefill = show_prefill_progress;
    gp.on_token = print_token;
    gp.user = &ss;
    la_generate_stats stats;
    st = la_generate(m, s, sampler, ids, n_ids, &gp, &stats);
    fputc('\n', stdout);
    fflush(stdout);
    if (st) {
        rc = cli_fail(CMD, "generation", st);
        goto done;
    }
    if (o.dump_qk && !qk_dump_finish(&dump, CMD)) {
        rc = 1;
        goto done;
    }
    size_t kv = la_session_kv_bytes(s);
    fprintf(stderr,
            "\nprompt:     %6lld tokens in %7.3f s = %8.2f tokens/s\n"
            "generation: %6lld tokens in %7.3f s = %8.2f tokens/s (%lld forward passes; stop: %s)\n"
            "KV cache:   %zu bytes (%.2f MiB, %s) for %lld tokens, %d threads, SIMD %s\n",
            (long long)stats.n_prompt, stats.prompt_seconds, stats.prompt_tps, (long long)stats.n_generated,
            stats.decode_seconds, stats.decode_tps, (long long)stats.n_decode, stop_name(stats.stop), kv,
            (double)kv / (1024.0 * 1024.0), cli_kv_type_name(o.kv_type, o.kv_quant), (long long)la_session_pos(s), la_context_threads(ctx),
            la_simd_name(la_context_simd(ctx)));
    if (o.sparse.kind != LA_SPARSE_NONE) cli_sparse_report(CMD, s, cfg);
done:
    free(gamma);
    la_sampler_free(sampler);
    la_session_free(s);
    la_context_destroy(ctx);
    la_model_free(m);
    free(ids);
    free(file_text);
    return rc;
}
