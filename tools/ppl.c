/* longattn ppl: perplexity over a text file, computed as llama.cpp's
 * perplexity tool computes it so the numbers compare: the token stream is cut
 * into non-overlapping chunks of --ctx tokens; each chunk is evaluated from an
 * empty cache, its first token replaced by BOS when the model adds one; only
 * the predictions in the second half of each chunk are scored (each of those
 * has at least ctx/2 tokens of context). */
#include "cli.h"
#include "cli_util.h"
#include "ppl_score.h"
#include "longattn_model.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char CMD[] = "longattn ppl";

static void usage(FILE *f) {
    fprintf(f, "usage: longattn ppl -m MODEL.gguf -f FILE --ctx N [--threads N] [--kv-type T] [--kv POLICY]\n"
               "                   [--sparse SELECTOR:BUDGET[,OPTION=N...]] [--exact-decode]\n"
               "  -m FILE      GGUF model\n"
               "  -f FILE      text to score\n"
               "  --ctx N      tokens per chunk (llama.cpp's -c); the second half of each chunk is scored;\n"
               "               past the model's trained context it runs with a warning, as run's --ctx\n"
               "  --threads N  CPU threads, 1 to 4096 (default: OMP_NUM_THREADS or all cores)\n"
               "  --kv-type T  KV-cache element type: f16 (default, as llama.cpp), bf16, f32, q8 or q4\n"
               "  --kv POLICY  KV-cache policy: full (default), streaming:BUDGET, h2o:BUDGET, snapkv:BUDGET,\n"
               "               quest:BUDGET or duo:BUDGET[:SCOREFILE] (see include/longattn.h; applied after\n"
               "               each evaluated batch of tokens)\n"
               "  --sparse S:B block-sparse prefill: none (default) or SELECTOR:BUDGET[,sink=N][,local=N][,dense-layers=N],\n"
               "               SELECTOR one of static, topk, vslash, hip, chunks, flex, routing (la_sparse_choice, longattn.h)\n"
               "  --sparse-heads FILE  per-head coverage for --sparse topk:G (la_sparse_gammas_read), from\n"
               "               --calibrate-sparse\n"
               "  --calibrate-sparse FILE  while scoring, run --sparse's topk options at a ladder of coverages\n"
               "               per head and write the per-head coverage file (la_sparse_calibrate; --kv full or\n"
               "               streaming, as --score-heads)\n"
               "  --calibrate-target G[,G...]  the calibrated heads' mean coverage, in [0.9, 0.999], each\n"
               "               once (default 0.995); with several, one file per target, FILE-G\n"
               "  --score-heads FILE  while scoring, score each head of --sparse topk:G's sparse layers by how far\n"
               "               the residual stream moves when it alone goes streaming (sparse_head_score); write\n"
               "               the scores to FILE and, per --stream-share F, FILE-F: the per-head coverage file\n"
               "               with the share F of those heads streaming (coverage 0), the others at G\n"
               "  --stream-share F[,F...]  shares in [0, 1], each once, for --score-heads (default 0.5)\n"
               "  --exact-decode  f32 activations for one-token evaluations too (no int8 rounding)\n");
}

/* The next number of a list "F[,F...]" at *t into *v, the length of its
 * text into *len, *t moved past it; false when it is not a plain decimal
 * (la_parse_decimal: no blanks, hex, inf or nan) in [lo, hi] followed by
 * ',' or the end ("0.9," ended on an empty item that was dropped in silence). */
static bool list_next(const char **t, double lo, double hi, double *v, int *len) {
    const size_t n = strcspn(*t, ",");
    if ((*t)[n] == ',' && !(*t)[n + 1]) return false;
    if (!la_parse_decimal(*t, n, v) || !(*v >= lo && *v <= hi)) return false;
    *len = (int)n;
    *t += n + ((*t)[n] == ',');
    return true;
}

/* Each item once, as in every list the CLI reads: a repeated target or
 * share wrote the same file twice. */
static bool list_ok(const char *t, double lo, double hi) {
    double v, seen[64];
    int len, n = 0;
    if (!*t) return false; /* an empty list would do nothing, in silence */
    while (*t) {
        if (!list_next(&t, lo, hi, &v, &len) || n == 64) return false;
        for (int i = 0; i < n; i++)
            if (seen[i] == v) return false;
        seen[n++] = v;
    }
    return true;
}

/* --score-heads: the scores (one line per layer), then one coverage file
 * per share (the list checked by list_ok before the run). */
static bool write_split(const char *path, const char *shares, const double *scores, const la_model_config *cfg,
                        const la_sparse_choice *c) {
    const int64_t nl = cfg->n_layer, nh = cfg->n_head;
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "%s: --score-heads: cannot write '%s'\n", CMD, path);
        return false;
    }
    fprintf(f, "# per (layer, head): |W_o e|^2 / |x|^2 summed over the prefill's chunks (la_session_params."
               "sparse_head_score)\n");
    for (int64_t l = 0; l < nl; l++)
        for (int64_t h = 0; h < nh; h++) fprintf(f, "%.6g%c", scores[l * nh + h], h + 1 < nh ? ' ' : '\n');
    if (fclose(f)) {
        fprintf(stderr, "%s: --score-heads: error writing '%s'\n", CMD, path);
        return false;
    }
    float *g = malloc(sizeof(float) * (size_t)(nl * nh));
    bool ok = g != NULL;
    double share;
    int len;
    for (const char *t = shares, *at = t; ok && *t && list_next(&t, 0, 1, &share, &len); at = t) {
        char out[4096];
        la_status st;
        snprintf(out, sizeof out, "%s-%.*s", path, len, at);
        if ((st = la_sparse_heads_split(scores, nl, nh, c->dense_layers, share, (float)c->budget, g)) ||
            (st = la_sparse_gammas_write(out, g, nl, nh))) {
            cli_fail(CMD, "--stream-share", st);
            ok = false;
        } else {
            fprintf(stderr, "%s: %s: share %g of the sparse layers' heads streaming, the others at %g\n", CMD, out,
                    share, c->budget);
        }
    }
    if (!g) fprintf(stderr, "%s: out of memory\n", CMD);
    free(g);
    return ok;
}

int cmd_ppl(int argc, char **argv) {
    const char *model_path = NULL, *text_path = NULL;
    const char *heads_path = NULL, *calib_path = NULL, *calib_targets = NULL; /* NULL: not given */
    const char *score_path = NULL, *shares = NULL;
    int64_t n_ctx = 0, threads = 0;
    la_session_params sp = la_session_params_default();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--exact-decode")) {
            sp.exact_decode = true;
            continue;
        }
        static const char *const value_options[] = {"-m", "-f", "--ctx", "--threads", "--kv-type", "--kv",
                                                    "--sparse-heads", "--calibrate-sparse", "--calibrate-target",
                                                    "--score-heads", "--stream-share", "--sparse", NULL};
        if (!(v = cli_option_value(CMD, argc, argv, &i, value_options))) return 2;
        /* an empty path names no file: a usage error, as --score-heads "" is */
        if ((!strcmp(a, "-m") || !strcmp(a, "-f") || !strcmp(a, "--sparse-heads")) && !cli_parse_path(CMD, a, v))
            return 2;
        if (!strcmp(a, "-m")) model_path = v;
        else if (!strcmp(a, "-f")) text_path = v;
        else if (!strcmp(a, "--ctx")) {
            if (!cli_parse_i64(CMD, a, v, 4, LA_SESSION_MAX_CTX, &n_ctx)) return 2;
        } else if (!strcmp(a, "--threads")) {
            if (!cli_parse_threads(CMD, v, &threads)) return 2;
        } else if (!strcmp(a, "--kv-type")) {
            if (!cli_parse_kv_type(CMD, a, v, &sp.kv_type, &sp.kv_quant)) return 2;
        } else if (!strcmp(a, "--kv")) {
            if (la_kv_policy_parse(v, &sp.kv_policy)) {
                fprintf(stderr, "%s: --kv: %s\n", CMD, la_last_error());
                return 2;
            }
        } else if (!strcmp(a, "--sparse-heads")) {
            heads_path = v;
        } else if (!strcmp(a, "--calibrate-sparse")) {
            if (!cli_parse_path(CMD, a, v)) return 2;
            calib_path = v;
        } else if (!strcmp(a, "--calibrate-target")) {
            calib_targets = v;
        } else if (!strcmp(a, "--score-heads")) {
            if (!cli_parse_path(CMD, a, v)) return 2;
            score_path = v;
        } else if (!strcmp(a, "--stream-share")) {
            shares = v;
        } else if (!strcmp(a, "--sparse")) {
            if (!cli_parse_sparse(CMD, v, &sp.sparse)) return 2;
        } else {
            fprintf(stderr, "%s: unknown option '%s'\n", CMD, a);
            usage(stderr);
            return 2;
        }
    }
    /* options of an option not given would be ignored in silence, unchecked */
    if ((calib_targets && !calib_path) || (shares && !score_path)) {
        fprintf(stderr, "%s: %s\n", CMD,
                calib_targets && !calib_path ? "--calibrate-target needs --calibrate-sparse"
                                             : "--stream-share needs --score-heads");
        return 2;
    }
    if (!calib_targets) calib_targets = "0.995";
    if (!shares) shares = "0.5";
    /* --score-heads' options checked before the long run, not after it */
    if (score_path && !cli_needs_topk(CMD, "--score-heads", &sp.sparse, true)) return 2;
    if (score_path && !list_ok(shares, 0, 1)) {
        fprintf(stderr, "%s: --stream-share '%s': expected shares in [0, 1] separated by ',', each a plain "
                        "decimal given once\n", CMD, shares);
        return 2;
    }
    /* la_sparse_calibrate_finish's range: refused there only after the whole run */
    if (calib_path && !list_ok(calib_targets, LA_SPARSE_CALIB_TARGET_MIN, LA_SPARSE_CALIB_TARGET_MAX)) {
        fprintf(stderr, "%s: --calibrate-target '%s': expected numbers separated by ',', each in [%g, %g], a "
                        "plain decimal given once\n", CMD, calib_targets, LA_SPARSE_CALIB_TARGET_MIN,
                LA_SPARSE_CALIB_TARGET_MAX);
        return 2;
    }
    /* before, found by the library once the model was read: exit 1, "kind 0 given" */
    if ((heads_path && !cli_needs_topk(CMD, "--sparse-heads", &sp.sparse, true)) ||
        (calib_path && !cli_needs_topk(CMD, "--calibrate-sparse", &sp.sparse, false)))
        return 2;
    if (!cli_default_threads(CMD, &threads)) return 2;
    /* neither observes a stateful policy's prefill (la_session_params): the file written after the run held the
     * target everywhere, or zero scores */
    const char *observer = calib_path ? "--calibrate-sparse" : score_path ? "--score-heads" : NULL;
    if (observer && la_kv_policy_has_state(&sp.kv_policy)) {
        fprintf(stderr, "%s: %s needs --kv full or streaming (under h2o, snapkv, quest and duo the prefill attends "
                        "through the policy, and no head is observed)\n", CMD, observer);
        return 2;
    }
    if (!model_path || !text_path || !n_ctx) {
        fprintf(stderr, "%s: -m, -f and --ctx are required\n", CMD);
        usage(stderr);
        return 2;
    }

    /* several targets name files FILE-G: "DIR/" gave DIR/-0.99, as eval's --heatmap DIR/ did */
    if (calib_path && strchr(calib_targets, ',') && calib_path[strlen(calib_path) - 1] == '/') {
        fprintf(stderr, "%s: --calibrate-sparse expects a file prefix with several targets, got '%s' (a directory: "
                        "give DIR/NAME)\n", CMD, calib_path);
        return 2;
    }
    /* the files written after the run: checked before it */
    if ((calib_path && !cli_output_ok(CMD, "--calibrate-sparse", calib_path, strchr(calib_targets, ',') != NULL)) ||
        (score_path && !cli_output_ok(CMD, "--score-heads", score_path, false)))
        return 1;
    size_t len;
    char *text = cli_read_file(CMD, text_path, &len);
    if (!text) return 1;
    la_model *m = NULL;
    la_context *ctx = NULL;
    la_session *s = NULL;
    int32_t *tokens = NULL;
    float *logits = NULL, *gamma = NULL;
    double *scores = NULL;
    la_sparse_calib *cal = NULL;
    int64_t n_tokens = 0;
    int rc = 0;
    la_status st;
    if ((st = la_model_load(model_path, &m))) {
        rc = cli_fail(CMD, model_path, st);
        goto done;
    }
    const la_tokenizer *tok = la_model_tokenizer(m);
    const int64_t n_vocab = la_model_config_of(m)->n_vocab;
    if (!cli_sparse_fits_model(CMD, &sp.sparse, la_model_config_of(m))) {
        rc = 2;
        goto done;
    }
    cli_model_ctx(CMD, "--ctx", n_ctx, la_model_config_of(m));
    const bool add_bos = la_tokenizer_add_bos(tok);
    /* As llama.cpp: BOS at the start when the model adds one; special-token
     * text in the file stays text. */
    if ((st = la_tokenize(tok, text, len, add_bos, false, &tokens, &n_tokens))) {
        rc = cli_fail(CMD, "tokenizing", st);
        goto done;
    }
    const int64_t n_chunks = n_tokens / n_ctx;
    if (n_chunks < 1) {
        fprintf(stderr, "%s: '%s' has %lld tokens; --ctx %lld needs at least that many\n", CMD, text_path,
                (long long)n_tokens, (long long)n_ctx);
        rc = 2;
        goto done;
    }
    const la_model_config *cfg = la_model_config_of(m);
    if (heads_path && !cli_sparse_heads(CMD, heads_path, cfg, &gamma)) {
        rc = 1;
        goto done;
    }
    sp.sparse_head_gamma = gamma;
    if ((st = la_context_create(&ctx, (int)threads))) {
        rc = cli_fail(CMD, "context", st);
        goto done;
    }
    if (calib_path) {
        if ((st = la_sparse_calibrate_new(ctx, &sp.sparse, cfg->n_layer, cfg->n_head, &cal))) {
            rc = cli_fail(CMD, "--calibrate-sparse", st);
            goto done;
        }
        sp.on_attention = la_sparse_calibrate_observe, sp.on_attention_user = cal;
    }
    if (score_path) {
        if (!(scores = calloc((size_t)(cfg->n_layer * cfg->n_head), sizeof *scores))) {
            fprintf(stderr, "%s: out of memory\n", CMD);
            rc = 1;
            goto done;
        }
        sp.sparse_head_score = scores;
    }
    if ((sp.max_ctx = n_ctx, st = la_session_new_with(m, ctx, &sp, &s))) {
        rc = cli_fail(CMD, ctx ? "session" : "context", st);
        goto done;
    }
    if (!(logits = malloc((size_t)PPL_EVAL_BATCH * (size_t)n_vocab * sizeof *logits))) {
        fprintf(stderr, "%s: out of memory for logits\n", CMD);
        rc = 1;
        goto done;
    }
    fprintf(stderr, "%s: %lld tokens, %lld chunks of %lld, scoring %lld predictions per chunk, %d threads\n", CMD,
            (long long)n_tokens, (long long)n_chunks, (long long)n_ctx, (long long)(n_ctx - 1 - n_ctx / 2),
            la_context_threads(ctx));
    const int32_t bos = add_bos ? la_tokenizer_bos(tok) : -1;
    ppl_tally t = {0};
    double ppl, err, t0 = la_clock_seconds();
    for (int64_t c = 0; c < n_chunks; c++) {
        if ((st = score_chunk(s, tokens + c * n_ctx, n_ctx, bos, n_vocab, logits, &t))) {
            rc = cli_fail(CMD, "evaluation", st);
            goto done;
        }
        tally_result(&t, &ppl, &err);
        printf("[%lld]%.4f,", (long long)(c + 1), ppl);
        if (!cli_output_written()) {
            rc = 1;
            goto done;
        }
    }
    double seconds = la_clock_seconds() - t0;
    printf("\nFinal estimate: PPL = %.4f +/- %.5f\n", ppl, err);
    if (sp.sparse.kind != LA_SPARSE_NONE) cli_sparse_report(CMD, s, cfg);
    if (cal) {
        float *g = gamma ? gamma : (gamma = malloc(sizeof(float) * (size_t)(cfg->n_layer * cfg->n_head)));
        if (!g) {
            fprintf(stderr, "%s: out of memory\n", CMD);
            rc = 1;
            goto done;
        }
        const bool several = strchr(calib_targets, ',') != NULL;
        double target;
        int len;
        for (const char *t = calib_targets, *at = t; *t && list_next(&t, -INFINITY, INFINITY, &target, &len); at = t) {
            char path[4096];
            snprintf(path, sizeof path, several ? "%s-%.*s" : "%s", calib_path, len, at);
            if ((st = la_sparse_calibrate_finish(cal, target, gamma)) ||
                (st = la_sparse_gammas_write(path, gamma, cfg->n_layer, cfg->n_head))) {
                rc = cli_fail(CMD, "--calibrate-sparse", st);
                goto done;
            }
            /* the blocks it buys on this text against the target everywhere */
            float *uni = malloc(sizeof(float) * (size_t)(cfg->n_layer * cfg->n_head));
            for (int64_t i = 0; uni && i < cfg->n_layer * cfg->n_head; i++) uni[i] = (float)target;
            const double per_head = la_sparse_calibrate_blocks(cal, gamma), one = la_sparse_calibrate_blocks(cal, uni);
            free(uni);
            fprintf(stderr, "%s: per-head coverage (target %g) written to %s: %.0f blocks in the sparse layers", CMD,
                    target, path, per_head);
            if (one > 0) fprintf(stderr, ", %.0f at %g everywhere (%.3f)", one, target, per_head / one);
            fputc('\n', stderr);
        }
    }
    if (scores && !write_split(score_path, shares, scores, cfg, &sp.sparse)) {
        rc = 1;
        goto done;
    }
    fprintf(stderr, "%s: %lld tokens evaluated in %.2f s = %.2f tokens/s\n", CMD, (long long)(n_chunks * n_ctx),
            seconds, (double)(n_chunks * n_ctx) / seconds);
done:
    la_sparse_calibrate_free(cal);
    free(scores);
    free(gamma);
    free(logits);
    free(tokens);
    la_session_free(s);
    la_context_destroy(ctx);
    la_model_free(m);
    free(text);
    return rc;
}
