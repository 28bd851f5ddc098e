/* longattn_model.h as an outside tester meets it: model load (missing,
 * non-GGUF and truncated files), sessions, eval and logits, the tokenizer,
 * sampler, chat templates, generation and the eval tasks, each called as
 * documented and then with bad input, which must return the documented
 * status with a message, never crash. Uses the default model, as `make
 * test` fetches it (a missing model is a failure, as in tests/model). */
#include "contract.h"
#include "longattn_model.h"

#include <math.h>
#include <unistd.h>

static const char MODEL_PATH[] = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/* The first `bytes` bytes of the model, as a file: a truncated download. */
static char *truncated_copy(size_t bytes, const char *path) {
    FILE *in = fopen(MODEL_PATH, "rb"), *out = fopen(path, "wb");
    if (!in || !out) {
        if (in) fclose(in);
        if (out) fclose(out);
        return NULL;
    }
    char chunk[1 << 16];
    size_t left = bytes;
    while (left > 0) {
        size_t n = fread(chunk, 1, left < sizeof chunk ? left : sizeof chunk, in);
        if (n == 0) break;
        fwrite(chunk, 1, n, out);
        left -= n;
    }
    fclose(in);
    fclose(out);
    return (char *)path;
}

static void check_load(void) {
    la_model *m = NULL;
    EXPECT(la_model_load(NULL, &m), LA_ERR_NULL);
    EXPECT(la_model_load(MODEL_PATH, NULL), LA_ERR_NULL);
    EXPECT(la_model_load("/nonexistent/model.gguf", &m), LA_ERR_IO);
    CHECK(m == NULL);
    EXPECT(la_model_load("README.md", &m), LA_ERR_FORMAT);
    CHECK(m == NULL);
    EXPECT(la_model_load(".", &m), LA_ERR_IO); /* a directory */
    static const size_t cuts[] = {0, 3, 8, 24, 1000, 100000, 20000000};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        char path[512]; /* in TMPDIR, not the source tree the tests run in; the pid keeps two runs apart */
        const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
        snprintf(path, sizeof path, "%s/longattn-contract-%ld-%zu.gguf", dir, (long)getpid(), i);
        if (!truncated_copy(cuts[i], path)) {
            CHECK(!"cannot write a truncated copy of the model");
            continue;
        }
        la_status st = la_model_load(path, &m);
        if (!((st == LA_ERR_FORMAT || (cuts[i] == 0 && st == LA_ERR_IO)) && la_last_error()[0] && m == NULL)) {
            contract_failures++;
            fprintf(stderr, "FAIL: the model cut to %zu bytes loads with %s (%s)\n", cuts[i], la_status_name(st),
                    la_last_error());
        }
        contract_checks++;
        if (m) la_model_free(m), m = NULL;
        remove(path);
    }
    /* *out is NULL after any failure, a NULL argument included (la_tokenizer_from_gguf left it as it was) */
    la_tokenizer *stale_tok = (la_tokenizer *)&m;
    EXPECT(la_tokenizer_from_gguf(NULL, &stale_tok), LA_ERR_NULL);
    CHECK(stale_tok == NULL);
    la_model_free(NULL);
    CHECK(la_model_config_of(NULL) == NULL);
    CHECK(la_model_tokenizer(NULL) == NULL);
    CHECK(la_model_gguf(NULL) == NULL);
}

static void check_session(la_model *m, la_context *ctx) {
    const la_model_config *cfg = la_model_config_of(m);
    const la_tokenizer *tok = la_model_tokenizer(m);
    la_session *s = NULL;
    EXPECT(la_session_new(NULL, ctx, 64, &s), LA_ERR_NULL);
    EXPECT(la_session_new(m, NULL, 64, &s), LA_ERR_NULL);
    EXPECT(la_session_new(m, ctx, 64, NULL), LA_ERR_NULL);
    EXPECT(la_session_new(m, ctx, 0, &s), LA_ERR_ARGUMENT);
    EXPECT(la_session_new(m, ctx, -5, &s), LA_ERR_ARGUMENT);
    EXPECT(la_session_new(m, ctx, LA_SESSION_MAX_CTX + 1, &s), LA_ERR_ARGUMENT);
    CHECK(s == NULL);
    la_session_params sp = la_session_params_default();
    sp.max_ctx = 64;
    /* out is cleared on every failure, a NULL argument included (as la_model_load and la_kv_cache_create do) */
    for (int i = 0; i < 3; i++) {
        la_session *stale = (la_session *)&sp;
        EXPECT(la_session_new_with(i == 0 ? NULL : m, i == 1 ? NULL : ctx, i == 2 ? NULL : &sp, &stale), LA_ERR_NULL);
        CHECK(stale == NULL);
    }
    la_session_params bp = sp;
    bp.kv_type = (la_dtype)9;
    la_status st = la_session_new_with(m, ctx, &bp, &s);
    CHECK((st == LA_ERR_DTYPE || st == LA_ERR_ARGUMENT) && la_last_error()[0] && !s);
    bp = sp, bp.kv_page_size = 0;
    st = la_session_new_with(m, ctx, &bp, &s);
    CHECK((st == LA_ERR_ARGUMENT || st == LA_ERR_SHAPE) && la_last_error()[0] && !s);
    bp = sp, bp.kv_quant = (la_kv_quant)5;
    EXPECT(la_session_new_with(m, ctx, &bp, &s), LA_ERR_ARGUMENT);
    bp = sp, bp.kv_policy.kind = (la_kv_policy_kind)77;
    EXPECT(la_session_new_with(m, ctx, &bp, &s), LA_ERR_ARGUMENT);
    bp = sp, bp.sparse.kind = LA_SPARSE_KIND_COUNT;
    EXPECT(la_session_new_with(m, ctx, &bp, &s), LA_ERR_ARGUMENT);
    bp = sp, bp.sparse = (la_sparse_choice){LA_SPARSE_TOPK, 0.9, .dense_layers = -1};
    EXPECT(la_session_new_with(m, ctx, &bp, &s), LA_ERR_ARGUMENT);
    /* a budget out of its selector's range is refused at creation, not at the first prefill */
    bp = sp, bp.sparse = (la_sparse_choice){LA_SPARSE_HIP, 2.5};
    EXPECT(la_session_new_with(m, ctx, &bp, &s), LA_ERR_ARGUMENT);
    bp = sp, bp.sparse = (la_sparse_choice){LA_SPARSE_ROUTING, 1e12};
    EXPECT(la_session_new_with(m, ctx, &bp, &s), LA_ERR_ARGUMENT);
    EXPECT(la_session_new_with(m, ctx, NULL, &s), LA_ERR_NULL);

    EXPECT_OK(la_session_new_with(m, ctx, &sp, &s));
    float *logits = buf(sizeof(float) * (size_t)cfg->n_vocab * 4);
    int32_t toks[4] = {1, 2, 3, 4};
    EXPECT_OK(la_session_eval(s, toks, 2, logits, false));
    CHECK(la_session_pos(s) == 2 && isfinite(logits[0]));
    EXPECT_OK(la_session_eval(s, toks, 1, NULL, false)); /* logits may be NULL */
    CHECK(la_session_pos(s) == 3);
    EXPECT(la_session_eval(NULL, toks, 1, logits, false), LA_ERR_NULL);
    st = la_session_eval(s, NULL, 1, logits, false);
    CHECK(st == LA_ERR_NULL && la_last_error()[0]);
    st = la_session_eval(s, toks, 0, logits, false); /* no token */
    CHECK(st != LA_OK && la_last_error()[0]);
    st = la_session_eval(s, toks, -1, logits, false);
    CHECK(st != LA_OK && la_last_error()[0]);
    int32_t bad[2] = {1, (int32_t)cfg->n_vocab};
    st = la_session_eval(s, bad, 2, logits, false); /* an id past the vocabulary */
    CHECK(st == LA_ERR_ARGUMENT && la_last_error()[0]);
    bad[1] = -1;
    st = la_session_eval(s, bad, 2, logits, false);
    CHECK(st == LA_ERR_ARGUMENT && la_last_error()[0]);
    CHECK(la_session_pos(s) == 3); /* refused calls add nothing */
    int32_t *many = buf(sizeof(int32_t) * 64);
    for (int i = 0; i < 64; i++) many[i] = 5;
    /* n so large that position + n wraps: refused before a token is read (the sum went
     * negative, passed the max_ctx check, and the token check read past the array) */
    st = la_session_eval(s, many, INT64_MAX, NULL, false);
    CHECK(st == LA_ERR_ARGUMENT && strstr(la_last_error(), "max_ctx"));
    st = la_session_eval(s, many, INT64_MAX - 1, NULL, false);
    CHECK(st == LA_ERR_ARGUMENT && strstr(la_last_error(), "max_ctx"));
    st = la_session_eval(s, many, 62, NULL, false); /* past max_ctx */
    CHECK(st != LA_OK && la_last_error()[0]);
    CHECK(la_session_pos(s) == 3);
    int64_t listed, visible;
    EXPECT(la_session_sparse_counts(s, cfg->n_layer, &listed, &visible), LA_ERR_ARGUMENT);
    EXPECT(la_session_sparse_counts(s, -1, &listed, &visible), LA_ERR_ARGUMENT);
    EXPECT(la_session_sparse_counts(NULL, 0, &listed, &visible), LA_ERR_NULL);
    EXPECT(la_session_prompt(NULL, true), LA_ERR_NULL);
    la_session_reset(s);
    CHECK(la_session_pos(s) == 0);
    la_session_free(s);
    la_session_free(NULL);
    la_session_reset(NULL);
    CHECK(la_session_pos(NULL) <= 0);
    CHECK(la_session_kv_bytes(NULL) == 0);

    /* tokenizer */
    int32_t *ids = NULL;
    int64_t n = -1;
    EXPECT_OK(la_tokenize(tok, "", 0, false, false, &ids, &n)); /* empty text: no token */
    CHECK(n == 0);
    free(ids), ids = NULL;
    EXPECT_OK(la_tokenize(tok, "hello", 5, true, false, &ids, &n));
    CHECK(n >= 2);
    free(ids), ids = NULL;
    EXPECT(la_tokenize(NULL, "hi", 2, false, false, &ids, &n), LA_ERR_NULL);
    EXPECT(la_tokenize(tok, NULL, 2, false, false, &ids, &n), LA_ERR_NULL);
    EXPECT(la_tokenize(tok, "hi", 2, false, false, NULL, &n), LA_ERR_NULL);
    EXPECT_OK(la_tokenize(tok, "\xff\xfe\x80 bytes", 9, false, false, &ids, &n)); /* not UTF-8: bytes */
    free(ids), ids = NULL;
    char piece[8];
    CHECK(la_token_to_bytes(tok, 5, false, piece, sizeof piece) >= 0);
    CHECK(la_token_to_bytes(tok, (int32_t)cfg->n_vocab, false, piece, sizeof piece) <= 0);
    CHECK(la_token_to_bytes(tok, -7, false, piece, sizeof piece) <= 0);
    CHECK(la_token_to_bytes(NULL, 5, false, piece, sizeof piece) <= 0);
    char *text = NULL;
    size_t len;
    int32_t bad_ids[2] = {5, -3};
    st = la_detokenize(tok, bad_ids, 2, false, &text, &len);
    CHECK(st == LA_ERR_ARGUMENT && la_last_error()[0]);
    free(text), text = NULL;
    EXPECT_OK(la_detokenize(tok, bad_ids, 0, false, &text, &len)); /* nothing: "" */
    CHECK(text && len == 0 && text[0] == '\0');
    free(text), text = NULL;
    CHECK(la_tokenizer_find(tok, "<|im_start|>") >= 0);
    CHECK(la_tokenizer_find(tok, "no such token, surely") == -1);
    CHECK(!la_tokenizer_is_eog(tok, -1) && !la_tokenizer_is_eog(tok, (int32_t)cfg->n_vocab));

    /* generation */
    la_sampler_params spp = la_sampler_params_default();
    la_sampler *smp = NULL;
    EXPECT_OK(la_sampler_new(&spp, (int32_t)cfg->n_vocab, &smp));
    EXPECT_OK(la_session_new(m, ctx, 32, &s));
    la_generate_params gp = la_generate_params_default();
    gp.max_ctx = 32, gp.max_new_tokens = 2;
    la_generate_stats stats;
    EXPECT(la_generate(m, s, smp, toks, 0, &gp, &stats), LA_ERR_ARGUMENT); /* empty prompt */
    EXPECT(la_generate(m, s, smp, NULL, 2, &gp, &stats), LA_ERR_NULL);
    EXPECT(la_generate(m, NULL, smp, toks, 2, &gp, &stats), LA_ERR_NULL);
    EXPECT(la_generate(m, s, NULL, toks, 2, &gp, &stats), LA_ERR_NULL);
    EXPECT(la_generate(m, s, smp, toks, 2, NULL, &stats), LA_ERR_NULL);
    gp.max_ctx = 0;
    EXPECT(la_generate(m, s, smp, toks, 2, &gp, &stats), LA_ERR_ARGUMENT); /* max_ctx must be set */
    gp.max_ctx = 32;
    EXPECT(la_generate(m, s, smp, many, 40, &gp, &stats), LA_ERR_ARGUMENT); /* prompt beyond max_ctx */
    EXPECT_OK(la_generate(m, s, smp, toks, 2, &gp, NULL));
    /* max_ctx above the session's own (32): generation stops when the session is full, as
     * LA_STOP_CONTEXT, not with LA_ERR_ARGUMENT "context full" after tokens were handed out */
    la_sampler_params greedy = la_sampler_params_default();
    greedy.temperature = 0;
    la_sampler *g = NULL;
    EXPECT_OK(la_sampler_new(&greedy, (int32_t)cfg->n_vocab, &g));
    la_session_reset(s);
    gp.max_ctx = 1000, gp.max_new_tokens = -1;
    EXPECT_OK(la_generate(m, s, g, many, 28, &gp, &stats));
    CHECK(stats.stop == LA_STOP_CONTEXT && la_session_pos(s) == 32 && stats.n_generated == 5);
    la_session_reset(s);
    EXPECT(la_generate(m, s, g, many, 40, &gp, &stats), LA_ERR_ARGUMENT); /* a prompt the session cannot hold */
    CHECK(la_session_pos(s) == 0);
    /* a sampler for another vocabulary: it read its n_vocab logits from a buffer of the model's
     * (past its end when larger), or drew from the first tokens only (when smaller) */
    la_sampler *other = NULL;
    for (int i = 0; i < 2; i++) {
        EXPECT_OK(la_sampler_new(&greedy, (int32_t)cfg->n_vocab + (i ? 4096 : -100), &other));
        la_session_reset(s);
        EXPECT(la_generate(m, s, other, toks, 2, &gp, &stats), LA_ERR_ARGUMENT);
        CHECK(la_session_pos(s) == 0);
        la_sampler_free(other);
    }
    /* a session of another model (the same file loaded twice is another model): the logits
     * buffer and the token checks are sized by m, so it is refused before any work */
    CHECK(la_session_model(s) == m && la_session_model(NULL) == NULL);
    la_model *twin = NULL;
    EXPECT_OK(la_model_load(MODEL_PATH, &twin));
    la_session_reset(s);
    if (twin) EXPECT(la_generate(twin, s, g, toks, 2, &gp, &stats), LA_ERR_ARGUMENT);
    CHECK(la_session_pos(s) == 0);
    la_model_free(twin);
    la_sampler_free(g);
    la_session_free(s);
    la_sampler_free(smp);
}

static void check_sampler(void) {
    la_sampler_params p = la_sampler_params_default();
    la_sampler *s = NULL;
    EXPECT(la_sampler_new(NULL, 10, &s), LA_ERR_NULL);
    EXPECT(la_sampler_new(&p, 10, NULL), LA_ERR_NULL);
    EXPECT(la_sampler_new(&p, 0, &s), LA_ERR_ARGUMENT);
    EXPECT(la_sampler_new(&p, -4, &s), LA_ERR_ARGUMENT);
    la_sampler_params b = p;
    b.top_p = 0;
    EXPECT(la_sampler_new(&b, 10, &s), LA_ERR_ARGUMENT);
    b.top_p = 1.5f;
    EXPECT(la_sampler_new(&b, 10, &s), LA_ERR_ARGUMENT);
    b.top_p = NAN;
    EXPECT(la_sampler_new(&b, 10, &s), LA_ERR_ARGUMENT);
    b = p, b.temperature = NAN;
    EXPECT(la_sampler_new(&b, 10, &s), LA_ERR_ARGUMENT);
    CHECK(s == NULL);
    EXPECT_OK(la_sampler_new(&p, 4, &s));
    float logits[4] = {0, 1, 2, 3}, probs[4];
    int32_t tok = -1;
    EXPECT_OK(la_sampler_sample(s, logits, &tok));
    CHECK(tok >= 0 && tok < 4);
    logits[1] = NAN;
    EXPECT(la_sampler_sample(s, logits, &tok), LA_ERR_ARGUMENT);
    logits[1] = INFINITY;
    EXPECT(la_sampler_sample(s, logits, &tok), LA_ERR_ARGUMENT);
    for (int i = 0; i < 4; i++) logits[i] = -INFINITY;
    EXPECT(la_sampler_sample(s, logits, &tok), LA_ERR_ARGUMENT); /* no finite logit */
    logits[2] = 0;
    EXPECT_OK(la_sampler_sample(s, logits, &tok)); /* -inf: masked */
    CHECK(tok == 2);
    EXPECT_OK(la_sampler_distribution(s, logits, probs));
    CHECK(probs[2] == 1 && probs[0] == 0);
    EXPECT(la_sampler_sample(s, NULL, &tok), LA_ERR_NULL);
    EXPECT(la_sampler_sample(s, logits, NULL), LA_ERR_NULL);
    EXPECT(la_sampler_sample(NULL, logits, &tok), LA_ERR_NULL);
    EXPECT(la_sampler_distribution(s, logits, NULL), LA_ERR_NULL);
    la_sampler_free(s);
    la_sampler_free(NULL);
}

static void check_chat_and_eval(la_model *m) {
    la_chat_template t;
    EXPECT(la_chat_template_parse("{{ bos }}{{ messages }}", 23, &t), LA_ERR_UNSUPPORTED);
    EXPECT(la_chat_template_parse(NULL, 0, &t), LA_ERR_NULL);
    EXPECT(la_chat_template_parse("<|im_start|>", 12, NULL), LA_ERR_NULL);
    EXPECT_OK(la_chat_template_of_gguf(la_model_gguf(m), &t));
    char *text = NULL;
    EXPECT_OK(la_chat_format(&t, "", "hi", &text, NULL)); /* len may be NULL; "" an empty system turn */
    CHECK(text && strstr(text, "hi"));
    free(text), text = NULL;
    EXPECT(la_chat_format(&t, NULL, NULL, &text, NULL), LA_ERR_NULL);
    EXPECT(la_chat_format(NULL, NULL, "hi", &text, NULL), LA_ERR_NULL);
    la_chat_template bad = t;
    bad.style = (la_chat_style)9;
    la_status st = la_chat_format(&bad, NULL, "hi", &text, NULL);
    CHECK((st == LA_ERR_ARGUMENT || st == LA_ERR_UNSUPPORTED) && la_last_error()[0]);
    free(text), text = NULL;
    la_chat_template_free(&t);
    la_chat_template_free(NULL);

    la_eval_params ep = la_eval_params_default();
    la_eval_sample smp;
    EXPECT(la_eval_build(NULL, &ep, &smp), LA_ERR_ARGUMENT); /* n_tokens 0: must be set */
    la_eval_sample_free(&smp); /* zeroed on failure: safe */
    ep.n_tokens = 300;
    ep.depth = 1.5;
    EXPECT(la_eval_build(NULL, &ep, &smp), LA_ERR_ARGUMENT);
    ep.depth = NAN;
    EXPECT(la_eval_build(NULL, &ep, &smp), LA_ERR_ARGUMENT);
    ep.depth = 0.5, ep.task = (la_eval_task)7;
    EXPECT(la_eval_build(NULL, &ep, &smp), LA_ERR_ARGUMENT);
    ep.task = LA_EVAL_MULTIKEY, ep.n_keys = 1;
    EXPECT(la_eval_build(NULL, &ep, &smp), LA_ERR_ARGUMENT);
    ep = la_eval_params_default(), ep.n_tokens = 5; /* too small for the statements */
    EXPECT(la_eval_build(NULL, &ep, &smp), LA_ERR_ARGUMENT);
    ep.n_tokens = LA_SESSION_MAX_CTX + 1;
    EXPECT(la_eval_build(NULL, &ep, &smp), LA_ERR_ARGUMENT);
    EXPECT(la_eval_build(NULL, NULL, &smp), LA_ERR_NULL);
    ep.n_tokens = 300;
    EXPECT_OK(la_eval_build(la_model_tokenizer(m), &ep, &smp));
    double score = -1;
    EXPECT_OK(la_eval_score(&smp, smp.answers[0], strlen(smp.answers[0]), &score));
    CHECK(score == 1);
    EXPECT_OK(la_eval_score(&smp, "", 0, &score));
    CHECK(score == 0);
    EXPECT(la_eval_score(&smp, NULL, 3, &score), LA_ERR_NULL);
    EXPECT(la_eval_score(NULL, "x", 1, &score), LA_ERR_NULL);
    size_t len;
    EXPECT_OK(la_eval_prompt(&smp, NULL, &text, &len));
    CHECK(text && len == strlen(text));
    free(text);
    la_eval_sample_free(&smp);
    la_eval_sample_free(NULL);

    /* sparse calibration helpers */
    la_sparse_choice ch;
    la_sparse_calib *cal = NULL;
    la_context *ctx;
    la_context_create(&ctx, 1);
    EXPECT_OK(la_sparse_choice_parse("hip:4", &ch));
    EXPECT(la_sparse_calibrate_new(ctx, &ch, 2, 2, &cal), LA_ERR_ARGUMENT); /* topk only */
    EXPECT_OK(la_sparse_choice_parse("topk:0.9", &ch));
    EXPECT(la_sparse_calibrate_new(ctx, &ch, 0, 2, &cal), LA_ERR_ARGUMENT);
    EXPECT(la_sparse_calibrate_new(ctx, NULL, 2, 2, &cal), LA_ERR_NULL);
    la_sparse_calibrate_free(NULL);
    double score4[4] = {1, 2, 3, 4};
    float g4[4];
    EXPECT_OK(la_sparse_heads_split(score4, 2, 2, 0, 0.5, 0.9f, g4));
    CHECK(g4[0] == 0 && g4[1] == 0 && g4[3] > 0.89f);
    EXPECT(la_sparse_heads_split(score4, 2, 2, 0, 1.5, 0.9f, g4), LA_ERR_ARGUMENT);
    EXPECT(la_sparse_heads_split(score4, 2, 2, 3, 0.5, 0.9f, g4), LA_ERR_ARGUMENT);
    EXPECT(la_sparse_heads_split(score4, 2, 2, 0, 0.5, 0, g4), LA_ERR_ARGUMENT);
    score4[1] = NAN;
    EXPECT(la_sparse_heads_split(score4, 2, 2, 0, 0.5, 0.9f, g4), LA_ERR_ARGUMENT);
    EXPECT(la_sparse_heads_split(NULL, 2, 2, 0, 0.5, 0.9f, g4), LA_ERR_NULL);
    EXPECT(la_sparse_gammas_read("/nonexistent/gammas.txt", 2, 2, g4), LA_ERR_IO);
    EXPECT(la_sparse_gammas_read("README.md", 2, 2, g4), LA_ERR_FORMAT);
    EXPECT(la_sparse_gammas_write("/nonexistent/dir/gammas.txt", g4, 2, 2), LA_ERR_IO);
    la_duo_params dp = la_duo_params_default();
    dp.n_prompts = 0;
    float sc[1024] = {0}; /* read by la_duo_scores_write below, which now checks the values: never left unset */
    EXPECT(la_duo_calibrate(m, ctx, &dp, sc), LA_ERR_ARGUMENT);
    dp = la_duo_params_default(), dp.context = 15;
    EXPECT(la_duo_calibrate(m, ctx, &dp, sc), LA_ERR_ARGUMENT);
    EXPECT(la_duo_scores_write("/nonexistent/dir/duo.txt", sc, 1, 1), LA_ERR_IO);
    la_context_destroy(ctx);
}

/* Session 20 fuzzing's findings, each a crash, a hang or an overflow before
 * its fix. A pre-token can be the whole text (a run of one character):
 * BPE merged it by a scan per merge, O(n^2): 1.5 MB of 'a' took most of an
 * hour; now a heap, well under a second (the ids match the scan's). */
static void check_fuzz_findings(la_model *m) {
    const la_tokenizer *t = la_model_tokenizer(m);
    const size_t len = 3 << 19;
    char *run = buf(len);
    memset(run, 'a', len);
    int32_t *ids = NULL;
    int64_t n = 0;
    EXPECT_OK(la_tokenize(t, run, len, false, false, &ids, &n));
    CHECK(n > 0 && n < (int64_t)len);
    free(ids);
    char *text = NULL;
    int32_t one[1] = {42};
    EXPECT(la_detokenize(t, one, -1, false, &text, NULL), LA_ERR_ARGUMENT);
    CHECK(la_token_to_bytes(t, 42, false, NULL, 64) > 0); /* NULL buf with a cap: wrote through NULL */
    float g[4] = {0.5f, 0.5f, 0.5f, 0.5f};
    EXPECT(la_sparse_gammas_write("/dev/null", g, INT64_MAX, INT64_MAX), LA_ERR_ARGUMENT); /* read past g */
    EXPECT(la_sparse_gammas_read("/dev/null", INT64_MAX, 2, g), LA_ERR_ARGUMENT);
    /* Session 22: the writers wrote files their readers refuse (a gamma of
     * nan or 2, a duo score of nan): now refused, the file left untouched. */
    const char *path = "test_public_model_contract.gammas";
    EXPECT_OK(la_sparse_gammas_write(path, g, 2, 2));
    float bad[] = {NAN, 2.0f, -0.5f, INFINITY};
    for (int i = 0; i < 4; i++) {
        float g2[4] = {0.5f, 0.5f, 0.5f, 0.5f};
        g2[(i + 1) % 4] = bad[i];
        EXPECT(la_sparse_gammas_write(path, g2, 2, 2), LA_ERR_ARGUMENT);
    }
    float back[4] = {0};
    EXPECT_OK(la_sparse_gammas_read(path, 2, 2, back)); /* still the good file */
    CHECK(back[0] == 0.5f && back[3] == 0.5f);
    float edge[4] = {0, 1, -0.0f, 0.25f};
    EXPECT_OK(la_sparse_gammas_write(path, edge, 2, 2));
    EXPECT_OK(la_sparse_gammas_read(path, 2, 2, back));
    CHECK(back[1] == 1 && back[3] == 0.25f);
    remove(path);
    path = "test_public_model_contract.duo";
    float sc[4] = {0.1f, -0.2f, 3.0f, 0};
    EXPECT_OK(la_duo_scores_write(path, sc, 2, 2)); /* negative scores are read (they count 0) */
    sc[2] = NAN;
    EXPECT(la_duo_scores_write(path, sc, 2, 2), LA_ERR_ARGUMENT);
    sc[2] = -INFINITY;
    EXPECT(la_duo_scores_write(path, sc, 2, 2), LA_ERR_ARGUMENT);
    la_kv_policy pol;
    char spec[64];
    snprintf(spec, sizeof spec, "duo:8:%s", path);
    EXPECT_OK(la_kv_policy_parse(spec, &pol));
    la_kv_cache_params cp = la_kv_cache_params_default();
    cp.n_layers = 2, cp.n_kv_heads = 2;
    la_kv_cache *c = NULL;
    la_kv_policy_state *ps = NULL;
    EXPECT_OK(la_kv_cache_create(&cp, &c));
    EXPECT_OK(la_kv_policy_state_create(&pol, c, &ps)); /* the first, good file is what the policy reads */
    la_kv_policy_state_destroy(ps);
    la_kv_cache_destroy(c);
    remove(path);
}

/* Session 29: metadata that loaded and then gave NaN logits at every token
 * (an rms epsilon of NaN, inf or < 0; a rope base of 0, < 0, NaN or inf),
 * and a context_length < 1, is LA_ERR_FORMAT naming the key. The model is copied once and the f32
 * value after each key patched in place. */
static void check_bad_metadata(void) {
    char path[512];
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(path, sizeof path, "%s/longattn-contract-%ld-meta.gguf", dir, (long)getpid());
    if (!truncated_copy((size_t)1 << 40, path)) {
        CHECK(!"cannot write a copy of the model");
        return;
    }
    enum { HEAD = 1 << 21 }; /* the metadata lies in the file's first 2 MB (the tokenizer's strings) */
    char *head = buf(HEAD);
    FILE *f = fopen(path, "r+b");
    const size_t got = f ? fread(head, 1, HEAD, f) : 0;
    static const struct {
        const char *key;
        float value;
    } cases[] = {{"llama.attention.layer_norm_rms_epsilon", NAN}, {"llama.attention.layer_norm_rms_epsilon", -1e-5f},
                 {"llama.attention.layer_norm_rms_epsilon", INFINITY}, {"llama.rope.freq_base", 0},
                 {"llama.rope.freq_base", -10000}, {"llama.rope.freq_base", NAN}, {"llama.rope.freq_base", INFINITY}};
    for (size_t i = 0; f && i < sizeof cases / sizeof cases[0]; i++) {
        const size_t kl = strlen(cases[i].key);
        const char *at = NULL;
        for (size_t o = 0; !at && o + kl + 8 <= got; o++)
            if (!memcmp(head + o, cases[i].key, kl)) at = head + o;
        uint32_t type = 0;
        if (at) memcpy(&type, at + kl, 4);
        CHECK(at && type == LA_GGUF_F32);
        if (!at || type != LA_GGUF_F32) continue;
        const long off = (long)(at + kl + 4 - head);
        float old;
        memcpy(&old, at + kl + 4, 4);
        fseek(f, off, SEEK_SET), fwrite(&cases[i].value, 4, 1, f), fflush(f);
        la_model *m = (la_model *)head;
        EXPECT(la_model_load(path, &m), LA_ERR_FORMAT);
        CHECK(m == NULL && strstr(la_last_error(), cases[i].key + strlen("llama.")));
        if (m) la_model_free(m);
        fseek(f, off, SEEK_SET), fwrite(&old, 4, 1, f), fflush(f);
    }
    /* Session 31: a context_length of 0, or negative as an i32, loaded; the
     * CLI's default context is the trained one, so `run` then said "the
     * prompt has 9 tokens, more than the context of -5". The 4-byte value
     * after the key's type is patched, and for -5 the type u32 -> i32. */
    static const struct {
        uint32_t type;
        int32_t value;
    } ctx_cases[] = {{LA_GGUF_U32, 0}, {LA_GGUF_I32, -5}};
    const char ctx_key[] = "llama.context_length";
    const char *at = NULL;
    for (size_t o = 0; f && !at && o + sizeof ctx_key + 8 <= got; o++)
        if (!memcmp(head + o, ctx_key, sizeof ctx_key - 1)) at = head + o;
    uint32_t ctx_type = 0;
    if (at) memcpy(&ctx_type, at + sizeof ctx_key - 1, 4);
    CHECK(at && ctx_type == LA_GGUF_U32);
    for (size_t i = 0; at && ctx_type == LA_GGUF_U32 && i < sizeof ctx_cases / sizeof ctx_cases[0]; i++) {
        const long off = (long)(at + sizeof ctx_key - 1 - head);
        char old[8];
        memcpy(old, at + sizeof ctx_key - 1, 8);
        fseek(f, off, SEEK_SET), fwrite(&ctx_cases[i].type, 4, 1, f), fwrite(&ctx_cases[i].value, 4, 1, f), fflush(f);
        la_model *m = (la_model *)head;
        EXPECT(la_model_load(path, &m), LA_ERR_FORMAT);
        CHECK(m == NULL && strstr(la_last_error(), "context_length"));
        if (m) la_model_free(m);
        fseek(f, off, SEEK_SET), fwrite(old, 8, 1, f), fflush(f);
    }
    if (f) fclose(f);
    remove(path);
}

int main(void) {
    check_load();
    check_bad_metadata();
    check_sampler();
    la_model *m = NULL;
    la_context *ctx = NULL;
    EXPECT_OK(la_model_load(MODEL_PATH, &m));
    EXPECT_OK(la_context_create(&ctx, 2));
    if (m && ctx) {
        check_session(m, ctx);
        check_chat_and_eval(m);
        check_fuzz_findings(m);
    }
    la_context_destroy(ctx);
    la_model_free(m);
    contract_free_all();
    return contract_exit("test_public_model_contract");
}
