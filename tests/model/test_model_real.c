/* The real model end to end: SmolLM2-135M-Instruct Q4_1 (fetched by
 * scripts/get-model.sh, which `make test` runs first). A missing model is a
 * failure, not a skip. Checks: greedy generation is deterministic and the same
 * however the prompt is chunked; "The capital of France is" continues with
 * " Paris"; a chat answer to "What is 2+2?" says 4 and ends on <|im_end|>; each stop
 * reason (limit, context, caller) stops where it should; bad arguments;
 * a ~300-token prompt and greedy steps give bit-identical logits for any
 * max_ctx, thread count, KV page size and prompt chunking (issue 11 item 6). */
#include "base/base.h"
#include "longattn_model.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char MODEL_PATH[] = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

typedef struct {
    int32_t tokens[512];
    int64_t n;
    int64_t prefill_calls, prefill_done;
    int64_t stop_after; /* on_token returns false after this many; <= 0 never */
} collected;

static bool collect_token(void *user, int32_t token) {
    collected *c = user;
    if (c->n < (int64_t)(sizeof c->tokens / sizeof c->tokens[0])) c->tokens[c->n] = token;
    c->n++;
    return c->stop_after <= 0 || c->n < c->stop_after;
}

static void count_prefill(void *user, int64_t done, int64_t total) {
    collected *c = user;
    c->prefill_calls++;
    c->prefill_done = done;
    (void)total;
}

/* Greedy generation from an empty session; returns the status. */
static la_status generate_greedy(la_model *m, la_context *ctx, const int32_t *prompt, int64_t n_prompt,
                                 int64_t max_new, int64_t chunk, int64_t max_ctx, collected *out,
                                 la_generate_stats *stats) {
    la_session *s = NULL;
    la_sampler *smp = NULL;
    la_sampler_params sp = {.temperature = 0, .top_p = 1};
    la_status st = la_session_new(m, ctx, max_ctx, &s);
    if (!st) st = la_sampler_new(&sp, (int32_t)la_model_config_of(m)->n_vocab, &smp);
    if (!st) {
        la_generate_params gp = la_generate_params_default();
        gp.max_new_tokens = max_new;
        gp.prefill_chunk = chunk;
        gp.max_ctx = max_ctx;
        gp.on_token = collect_token;
        gp.on_prefill = count_prefill;
        gp.user = out;
        st = la_generate(m, s, smp, prompt, n_prompt, &gp, stats);
    }
    la_sampler_free(smp);
    la_session_free(s);
    return st;
}

static char *detok(la_model *m, const collected *c) {
    char *text = NULL;
    size_t len;
    int64_t n = c->n < 512 ? c->n : 512;
    if (la_detokenize(la_model_tokenizer(m), c->tokens, n, false, &text, &len) != LA_OK) return NULL;
    return text;
}

static void test_completion(la_model *m, la_context *ctx) {
    const la_tokenizer *tok = la_model_tokenizer(m);
    const char prompt[] = "The capital of France is";
    int32_t *ids = NULL;
    int64_t n = 0;
    TU_EXPECT_STATUS(la_tokenize(tok, prompt, strlen(prompt), la_tokenizer_add_bos(tok), false, &ids, &n), LA_OK);
    if (!ids || n < 2) {
        tu_check(false, "prompt tokenised to %lld tokens", (long long)n);
        free(ids);
        return;
    }
    const int64_t max_new = 12;
    collected a = {0}, b = {0}, chunked = {0};
    la_generate_stats sa, sb, sc;
    TU_EXPECT_STATUS(generate_greedy(m, ctx, ids, n, max_new, 0, 256, &a, &sa), LA_OK);
    TU_EXPECT_STATUS(generate_greedy(m, ctx, ids, n, max_new, 0, 256, &b, &sb), LA_OK);
    /* Chunks of 2 tokens: several la_session_eval calls appending to the cache. */
    TU_EXPECT_STATUS(generate_greedy(m, ctx, ids, n, max_new, 2, 256, &chunked, &sc), LA_OK);
    bool same = a.n == b.n && !memcmp(a.tokens, b.tokens, (size_t)a.n * sizeof a.tokens[0]);
    tu_check(same && a.n > 0, "greedy runs differ or are empty (%lld vs %lld tokens)", (long long)a.n, (long long)b.n);
    bool same_chunked = a.n == chunked.n && !memcmp(a.tokens, chunked.tokens, (size_t)a.n * sizeof a.tokens[0]);
    tu_check(same_chunked, "prefill in chunks of 2 changed the greedy continuation");
    /* an odd prompt ends on a chunk of 3: a lone last token would take the
     * single-token path and change the result */
    tu_check(chunked.prefill_calls == n / 2 && chunked.prefill_done == n,
             "chunks of 2 over %lld tokens: %lld progress calls ending at %lld", (long long)n,
             (long long)chunked.prefill_calls, (long long)chunked.prefill_done);
    tu_check(a.prefill_calls == 1, "one chunk reports progress once, got %lld", (long long)a.prefill_calls);
    /* The continuation stops on the limit, unless the model ends the text
     * first (it should not within 12 tokens of a plain sentence). */
    tu_check(sa.stop == LA_STOP_LIMIT && sa.n_generated == max_new && sa.n_decode == max_new - 1 &&
                 sa.n_prompt == n && a.n == max_new,
             "limit stop: stop %d, %lld generated, %lld decode passes", (int)sa.stop, (long long)sa.n_generated,
             (long long)sa.n_decode);
    tu_check(sa.prompt_tps > 0 && sa.decode_tps > 0, "timing stats filled");
    char *text = detok(m, &a);
    tu_check(text && !strncmp(text, " Paris", 6), "greedy continuation of '%s': '%s'", prompt, text ? text : "(null)");
    free(text);

    /* Context full: the cache holds n + 3 tokens, so 4 tokens come out (the
     * last one is sampled but never run). */
    collected c = {0};
    la_generate_stats st;
    TU_EXPECT_STATUS(generate_greedy(m, ctx, ids, n, 50, 0, n + 3, &c, &st), LA_OK);
    tu_check(st.stop == LA_STOP_CONTEXT && st.n_generated == 4 && st.n_decode == 3, "context stop: stop %d, %lld tokens",
             (int)st.stop, (long long)st.n_generated);
    tu_check(c.n == 4 && !memcmp(c.tokens, a.tokens, 4 * sizeof c.tokens[0]), "context-limited run is a prefix");
    /* The caller stops after 2 tokens. */
    collected d = {.stop_after = 2};
    TU_EXPECT_STATUS(generate_greedy(m, ctx, ids, n, 50, 0, 256, &d, &st), LA_OK);
    tu_check(st.stop == LA_STOP_CALLER && st.n_generated == 2 && d.n == 2, "caller stop: stop %d, %lld tokens",
             (int)st.stop, (long long)st.n_generated);
    /* Zero tokens asked: prefill only. */
    collected e = {0};
    TU_EXPECT_STATUS(generate_greedy(m, ctx, ids, n, 0, 0, 256, &e, &st), LA_OK);
    tu_check(st.n_generated == 0 && e.n == 0 && st.stop == LA_STOP_LIMIT, "-n 0 generates nothing");

    /* Bad arguments. */
    collected f = {0};
    TU_EXPECT_STATUS(generate_greedy(m, ctx, ids, n, 4, 0, n - 1, &f, &st), LA_ERR_ARGUMENT);
    tu_check(strstr(la_last_error(), "max_ctx") != NULL, "message names max_ctx: %s", la_last_error());
    TU_EXPECT_STATUS(generate_greedy(m, ctx, ids, 0, 4, 0, 256, &f, &st), LA_ERR_ARGUMENT);
    int32_t bad_ids[2] = {ids[0], (int32_t)la_model_config_of(m)->n_vocab};
    TU_EXPECT_STATUS(generate_greedy(m, ctx, bad_ids, 2, 4, 0, 256, &f, &st), LA_ERR_ARGUMENT);
    tu_check(strstr(la_last_error(), "prompt[1]") != NULL, "message names the token: %s", la_last_error());
    tu_check(f.n == 0, "no token emitted on bad arguments");
    la_generate_params gp = la_generate_params_default();
    TU_EXPECT_STATUS(la_generate(m, NULL, NULL, ids, n, &gp, NULL), LA_ERR_NULL);
    free(ids);
}

static void test_chat_answer(la_model *m, la_context *ctx) {
    const la_tokenizer *tok = la_model_tokenizer(m);
    la_chat_template tmpl;
    TU_EXPECT_STATUS(la_chat_template_of_gguf(la_model_gguf(m), &tmpl), LA_OK);
    tu_check(tmpl.style == LA_CHAT_CHATML, "SmolLM2 uses ChatML");
    tu_check(tmpl.default_system != NULL, "SmolLM2's template has a default system prompt");
    char *text = NULL;
    size_t len = 0;
    /* llama.cpp (llama-cpp-python 0.3.36, greedy) answers this prompt on the
     * same file with "The answer to this classic math problem is 4." and
     * <|im_end|>; the capital-of-France question derails this small model
     * in chat form, in llama.cpp too. */
    TU_EXPECT_STATUS(la_chat_format(&tmpl, NULL, "What is 2+2?", &text, &len), LA_OK);
    la_chat_template_free(&tmpl);
    int32_t *ids = NULL;
    int64_t n = 0;
    if (text) TU_EXPECT_STATUS(la_tokenize(tok, text, len, la_tokenizer_add_bos(tok), true, &ids, &n), LA_OK);
    free(text);
    int32_t im_start = la_tokenizer_find(tok, "<|im_start|>"), im_end = la_tokenizer_find(tok, "<|im_end|>");
    tu_check(ids && n > 10 && ids[0] == im_start, "chat prompt starts with <|im_start|> as one token");
    if (!ids) return;
    collected c = {0};
    la_generate_stats st;
    TU_EXPECT_STATUS(generate_greedy(m, ctx, ids, n, 96, 0, 512, &c, &st), LA_OK);
    char *answer = detok(m, &c);
    tu_check(st.stop == LA_STOP_EOG && st.eog_token == im_end && im_end >= 0,
             "chat answer ends on <|im_end|> (%d): stop %d, token %d, %lld tokens: '%s'", (int)im_end, (int)st.stop,
             (int)st.eog_token, (long long)st.n_generated, answer ? answer : "(null)");
    tu_check(st.n_generated > 0 && answer && answer[0], "chat answer is non-empty");
    tu_check(answer && strstr(answer, "4"), "chat answer says 4: '%s'", answer ? answer : "(null)");
    free(answer);
    free(ids);
}

typedef struct {
    int64_t max_ctx, page, piece;
    int threads;
} repro_config;

/* Prompt in la_session_eval pieces, then `steps` greedy single-token steps;
 * logits [steps + 1][V] of the prompt's last token and of each step. */
static void logged_greedy(la_model *m, const repro_config *rc, const int32_t *prompt, int64_t P, int64_t steps,
                          float *logits) {
    const int64_t V = la_model_config_of(m)->n_vocab;
    la_context *ctx = NULL;
    TU_EXPECT_STATUS(la_context_create(&ctx, rc->threads), LA_OK);
    la_session_params sp = la_session_params_default();
    sp.max_ctx = rc->max_ctx, sp.kv_page_size = rc->page;
    la_session *s = NULL;
    if (ctx) TU_EXPECT_STATUS(la_session_new_with(m, ctx, &sp, &s), LA_OK);
    for (int64_t done = 0; s && done < P;) {
        int64_t n = P - done < rc->piece ? P - done : rc->piece;
        if (P - done - n < 2) n = P - done;
        TU_EXPECT_STATUS(la_session_eval(s, prompt + done, n, done + n == P ? logits : NULL, false), LA_OK);
        done += n;
    }
    for (int64_t i = 0; s && i < steps; i++) {
        const float *row = logits + i * V;
        int32_t best = 0;
        for (int64_t v = 1; v < V; v++) best = row[v] > row[best] ? (int32_t)v : best;
        TU_EXPECT_STATUS(la_session_eval(s, &best, 1, logits + (i + 1) * V, false), LA_OK);
    }
    la_session_free(s);
    la_context_destroy(ctx);
}

static void test_reproducible(la_model *m) {
    const char *sentence = "The river bends past the old mill, where the miller counts sacks of grain by lamplight. ";
    char text[4096] = "";
    for (int i = 0; i < 16; i++) strcat(text, sentence);
    int32_t *prompt = NULL;
    int64_t P = 0;
    TU_EXPECT_STATUS(la_tokenize(la_model_tokenizer(m), text, strlen(text), true, false, &prompt, &P), LA_OK);
    tu_check(P > 256, "the prompt has %lld tokens; want more than decode's 256-key chunk", (long long)P);
    const int64_t steps = 6, V = la_model_config_of(m)->n_vocab;
    float *want = tu_alloc(sizeof(float) * (size_t)((steps + 1) * V)), *got = tu_alloc(sizeof(float) * (size_t)((steps + 1) * V));
    const repro_config configs[] = {{P + steps, 256, P, 1}, {2048, 16, 100, 2}, {8192, 64, 37, 2}, {P + 50, 1, 9, 3}};
    logged_greedy(m, &configs[0], prompt, P, steps, want);
    for (size_t i = 1; i < sizeof configs / sizeof *configs; i++) {
        tu_poison(got, LA_F32, (steps + 1) * V);
        logged_greedy(m, &configs[i], prompt, P, steps, got);
        tu_check(!memcmp(want, got, sizeof(float) * (size_t)((steps + 1) * V)),
                 "max_ctx %lld, page %lld, pieces of %lld, %d threads: logits differ from one piece, 1 thread",
                 (long long)configs[i].max_ctx, (long long)configs[i].page, (long long)configs[i].piece,
                 configs[i].threads);
    }
    free(prompt), free(want), free(got);
}

/* The KV policies on the real model (issue 11 item 3): with a budget at
 * least the context, h2o, snapkv, quest and duo give the full cache's
 * logits bit for bit (a ~200-token prefill and greedy steps); duo's score
 * file comes from a short la_duo_calibrate, whose scores are finite, in
 * [0, 1], and read back by the policy. */
static void test_policies(la_model *m, la_context *ctx) {
    const la_model_config *c = la_model_config_of(m);
    const int64_t V = c->n_vocab, n_heads = c->n_layer * c->n_head_kv;
    float *scores = malloc(sizeof(float) * (size_t)n_heads);
    la_duo_params dp = la_duo_params_default();
    dp.n_prompts = 1, dp.context = 48;
    TU_EXPECT_STATUS(la_duo_calibrate(m, ctx, &dp, scores), LA_OK);
    bool in_range = true;
    double best = 0;
    for (int64_t i = 0; i < n_heads; i++) in_range &= scores[i] >= 0 && scores[i] <= 1, best = fmax(best, scores[i]);
    tu_check(in_range && best > 0, "duo scores outside [0, 1] or all 0 (max %g)", best);
    char path[64], duo[96];
    snprintf(path, sizeof path, "duo-real-test-%d.txt", (int)(tu_seed() % 100000));
    TU_EXPECT_STATUS(la_duo_scores_write(path, scores, c->n_layer, c->n_head_kv), LA_OK);
    snprintf(duo, sizeof duo, "duo:1024:%s", path);
    dp.n_prompts = 0;
    TU_EXPECT_STATUS(la_duo_calibrate(m, ctx, &dp, scores), LA_ERR_ARGUMENT);
    const char *text = "The old lighthouse keeper climbed the stairs every evening to light the lamp. Ships passed "
                       "through the narrow strait at night, guided by its beam. One winter a storm broke the glass, "
                       "and the keeper worked until dawn to repair it. The village remembered him for years, and "
                       "children still tell the story of the night the light never went out. Today the lighthouse is "
                       "a museum, and visitors can climb the same stairs to see the view over the sea. The keeper's "
                       "name was";
    int32_t *ids = NULL;
    int64_t n = 0;
    TU_EXPECT_STATUS(la_tokenize(la_model_tokenizer(m), text, strlen(text), true, false, &ids, &n), LA_OK);
    enum { STEPS = 2, NP = 5 };
    const char *policies[NP] = {"full", "h2o:1024", "snapkv:1024", "quest:1024", duo};
    float *logits[NP];
    for (int pi = 0; pi < NP; pi++) {
        logits[pi] = calloc((size_t)((STEPS + 1) * V), sizeof(float));
        la_session_params sp = la_session_params_default();
        sp.max_ctx = 512;
        TU_EXPECT_STATUS(la_kv_policy_parse(policies[pi], &sp.kv_policy), LA_OK);
        la_session *s = NULL;
        TU_EXPECT_STATUS(la_session_new_with(m, ctx, &sp, &s), LA_OK);
        if (!s || !ids) continue;
        TU_EXPECT_STATUS(la_session_eval(s, ids, n, logits[pi], false), LA_OK);
        for (int i = 0; i < STEPS; i++) {
            int32_t t = 0;
            for (int64_t v = 1; v < V; v++)
                if (logits[pi][i * V + v] > logits[pi][i * V + t]) t = (int32_t)v;
            TU_EXPECT_STATUS(la_session_eval(s, &t, 1, logits[pi] + (i + 1) * V, false), LA_OK);
        }
        la_session_free(s);
        if (pi)
            tu_check(!memcmp(logits[0], logits[pi], sizeof(float) * (size_t)((STEPS + 1) * V)),
                     "%s over %lld tokens differs from the full cache", policies[pi], (long long)n + STEPS);
    }
    remove(path);
    for (int pi = 0; pi < NP; pi++) free(logits[pi]);
    free(ids), free(scores);
}

int main(void) {
    tu_seed();
    la_model *m = NULL;
    la_status st = la_model_load(MODEL_PATH, &m);
    tu_check(st == LA_OK, "cannot load %s (%s: %s); run scripts/get-model.sh (make test does)", MODEL_PATH,
             la_status_name(st), la_last_error());
    la_context *ctx = NULL;
    if (m) TU_EXPECT_STATUS(la_context_create(&ctx, 0), LA_OK);
    if (m && ctx) {
        test_completion(m, ctx);
        test_chat_answer(m, ctx);
        test_reproducible(m);
        test_policies(m, ctx);
    }
    la_context_destroy(ctx);
    la_model_free(m);
    return tu_finish();
}
