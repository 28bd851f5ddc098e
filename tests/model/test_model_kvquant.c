/* The real model (SmolLM2-135M-Instruct Q4_1) with quantised KV pages and
 * in exact-decode mode:
 *  - exact_decode: a token's logits are the same (within 1e-4 of the
 *    logits' range) evaluated one token at a time or as one batch; without
 *    it the int8-rounded single-token path differs more (issue 11 item 7);
 *  - kv_quant q8 / q4: a prompt longer than the f32 window plus a key group
 *    (so groups are quantised), then greedy single-token steps that decode
 *    straight over the quantised pages: the next-token choice matches the
 *    f16 cache's and the logits stay close (q8 tighter than q4), both in
 *    exact-decode mode; combined with streaming eviction;
 *  - bad kv_quant rejected with a message. */
#include "longattn_model.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char MODEL_PATH[] = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

static int32_t argmax(const float *x, int64_t n) {
    int32_t b = 0;
    for (int64_t i = 1; i < n; i++) b = x[i] > x[b] ? (int32_t)i : b;
    return b;
}

static double max_diff(const float *a, const float *b, int64_t n, double *range) {
    double d = 0, lo = INFINITY, hi = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        lo = fmin(lo, b[i]), hi = fmax(hi, b[i]);
    }
    *range = hi - lo;
    return d;
}

static la_session *session(la_model *m, la_context *ctx, int64_t max_ctx, la_kv_quant q, bool exact, const char *policy) {
    la_session_params sp = la_session_params_default();
    sp.max_ctx = max_ctx, sp.kv_quant = q, sp.exact_decode = exact;
    if (policy) TU_EXPECT_STATUS(la_kv_policy_parse(policy, &sp.kv_policy), LA_OK);
    la_session *s = NULL;
    TU_EXPECT_STATUS(la_session_new_with(m, ctx, &sp, &s), LA_OK);
    return s;
}

/* Logits of each token, as one batch (all_logits) and one token at a time. */
static void alone_vs_batch(la_model *m, la_context *ctx, const int32_t *t, int64_t n, bool exact, double *rel) {
    const int64_t V = la_model_config_of(m)->n_vocab;
    float *batch = tu_alloc(sizeof(float) * (size_t)(n * V)), *alone = tu_alloc(sizeof(float) * (size_t)(n * V));
    tu_poison(batch, LA_F32, n * V), tu_poison(alone, LA_F32, n * V);
    la_session *a = session(m, ctx, 64, LA_KV_QUANT_NONE, exact, NULL), *b = session(m, ctx, 64, LA_KV_QUANT_NONE, exact, NULL);
    if (a && b) {
        TU_EXPECT_STATUS(la_session_eval(a, t, n, batch, true), LA_OK);
        for (int64_t i = 0; i < n; i++) TU_EXPECT_STATUS(la_session_eval(b, t + i, 1, alone + i * V, false), LA_OK);
    }
    *rel = 0;
    for (int64_t i = 0; i < n; i++) {
        double range, d = max_diff(alone + i * V, batch + i * V, V, &range);
        *rel = fmax(*rel, d / range);
    }
    la_session_free(a), la_session_free(b);
    free(batch), free(alone);
}

static void test_exact(la_model *m, la_context *ctx, bool quick) {
    const char *text = "The lighthouse keeper wrote the date in the log, then climbed the stairs to light the lamp.";
    int32_t *t = NULL;
    int64_t n = 0;
    TU_EXPECT_STATUS(la_tokenize(la_model_tokenizer(m), text, strlen(text), true, false, &t, &n), LA_OK);
    if (n > (quick ? 5 : 10)) n = quick ? 5 : 10;
    double exact = 1, rounded = 0;
    alone_vs_batch(m, ctx, t, n, true, &exact);
    alone_vs_batch(m, ctx, t, n, false, &rounded);
    /* Tolerance 5e-4 of the logits' range: what is left is the f32
     * summation order of attention (exact forward vs split-K decode),
     * grown through 30 layers; measured at most 1.6e-4 over 20 tokens of
     * this prompt (token 0, attending to itself alone, is bit-identical),
     * against 4e-2 to 1.4e-1 for the int8-rounded single-token path. */
    tu_check(exact <= 5e-4, "exact_decode: logits alone vs in a batch differ by %.3g of their range (want <= 5e-4)",
             exact);
    /* Only the AVX2 / AVX-512 products round the single token's activations
     * to int8 (src/cpu/quant/quant_dot_isa.c); the scalar path keeps f32, so
     * there both paths differ only in summation order. */
    if (la_context_simd(ctx) != LA_SIMD_SCALAR)
        tu_check(rounded > 20 * exact, "without exact_decode the single-token path should differ visibly (%.3g vs %.3g)",
                 rounded, exact);
    printf("alone vs batch, worst share of the logits' range: exact %.3g, int8-rounded %.3g\n", exact, rounded);
    free(t);
}

/* Prefill P tokens then `steps` single-token steps (the greedy choice, or
 * forced[i] when forced): logits [steps + 1][V], one row per evaluation. */
static void steps_of(la_session *s, const int32_t *prompt, int64_t P, int64_t steps, int64_t V, float *logits,
                     const int32_t *forced, int32_t *chosen) {
    if (!s) return;
    TU_EXPECT_STATUS(la_session_eval(s, prompt, P, logits, false), LA_OK);
    for (int64_t i = 0; i < steps; i++) {
        chosen[i] = forced ? forced[i] : argmax(logits + i * V, V);
        TU_EXPECT_STATUS(la_session_eval(s, &chosen[i], 1, logits + (i + 1) * V, false), LA_OK);
    }
}

static void test_quantised(la_model *m, la_context *ctx, bool quick) {
    const char *sentence = "The river bends past the old mill, where the miller counts sacks of grain by lamplight. ";
    char text[2048] = "";
    for (int i = 0; i < 6; i++) strcat(text, sentence);
    int32_t *prompt = NULL;
    int64_t P = 0;
    TU_EXPECT_STATUS(la_tokenize(la_model_tokenizer(m), text, strlen(text), true, false, &prompt, &P), LA_OK);
    tu_check(P > 64 + 32, "prompt of %lld tokens; want more than the window and a group", (long long)P);
    const int64_t V = la_model_config_of(m)->n_vocab, steps = quick ? 2 : 4, rows = steps + 1;
    float *ref = tu_alloc(sizeof(float) * (size_t)(rows * V)), *got = tu_alloc(sizeof(float) * (size_t)(rows * V));
    int32_t want[8], have[8];
    /* exact_decode throughout: the int8 rounding of activations would
     * otherwise turn any perturbation into noise of its own size (2-4% of
     * the logits' range here, whatever the cache) */
    la_session *s = session(m, ctx, 256, LA_KV_QUANT_NONE, true, NULL);
    steps_of(s, prompt, P, steps, V, ref, NULL, want);
    const size_t f16_bytes = la_session_kv_bytes(s);
    la_session_free(s);
    /* tolerances on the worst step's logits, as a share of their range:
     * measured 0.35% (q8) and 5% (q4) on this prompt, f16 reference */
    const struct { la_kv_quant q; const char *policy; double tol; } runs[] = {
        {LA_KV_Q8, NULL, 0.01}, {LA_KV_Q4, NULL, 0.15}, {LA_KV_Q8, "streaming:64", -1}};
    for (size_t r = 0; r < sizeof runs / sizeof *runs; r++) {
        s = session(m, ctx, 256, runs[r].q, true, runs[r].policy);
        tu_poison(got, LA_F32, rows * V);
        /* the f16 run's tokens fed back, so every step sees the same context */
        steps_of(s, prompt, P, steps, V, got, want, have);
        const char *name = runs[r].q == LA_KV_Q8 ? "q8" : "q4";
        bool finite = true;
        for (int64_t i = 0; i < rows * V; i++) finite &= isfinite(got[i]);
        if (runs[r].tol > 0) {
            double worst = 0;
            int64_t same_top = 0;
            for (int64_t i = 0; i < rows; i++) {
                double range, d = max_diff(got + i * V, ref + i * V, V, &range);
                worst = fmax(worst, d / range);
                same_top += argmax(got + i * V, V) == argmax(ref + i * V, V);
            }
            tu_check(finite && worst <= runs[r].tol && (runs[r].q == LA_KV_Q4 || same_top == rows),
                     "%s cache: logits differ from the f16 cache's by %.3g of their range (tol %.2g); top token "
                     "agrees at %lld of %lld steps", name, worst, runs[r].tol, (long long)same_top, (long long)rows);
            printf("%s cache: logits within %.3g of the f16 cache's range, top token agrees at %lld of %lld steps; "
                   "%zu bytes vs %zu (windows dominate at this length)\n",
                   name, worst, (long long)same_top, (long long)rows, la_session_kv_bytes(s), f16_bytes);
        } else {
            const int64_t len = la_kv_cache_len(la_session_kv_cache(s), 0, 0, 0);
            tu_check(finite && len >= 64 && len < 64 + 32, "q8 + streaming:64: %lld entries (want [64, 96)), finite %d",
                     (long long)len, finite);
        }
        la_session_free(s);
    }
    /* bad parameters */
    la_session_params sp = la_session_params_default();
    sp.max_ctx = 64, sp.kv_quant = (la_kv_quant)3;
    s = NULL;
    la_status st = la_session_new_with(m, ctx, &sp, &s);
    tu_check(st == LA_ERR_ARGUMENT && !s && strstr(la_last_error(), "kv_quant"), "kv_quant 3 gave %s (%s)",
             la_status_name(st), la_last_error());
    sp.kv_quant = LA_KV_Q8, sp.kv_page_size = 24; /* key group gcd(32, 24) = 8: accepted */
    st = la_session_new_with(m, ctx, &sp, &s);
    tu_check(st == LA_OK, "q8 with 24-token pages: %s (%s)", la_status_name(st), la_last_error());
    la_session_free(s);
    free(prompt), free(ref), free(got);
}

int main(void) {
    tu_seed();
    const char *qe = getenv("LONGATTN_TEST_QUICK");
    const bool quick = qe && atoi(qe) != 0;
    la_model *m = NULL;
    la_status st = la_model_load(MODEL_PATH, &m);
    tu_check(st == LA_OK, "cannot load %s (%s: %s); run scripts/get-model.sh (make test does)", MODEL_PATH,
             la_status_name(st), la_last_error());
    la_context *ctx = NULL;
    if (m) TU_EXPECT_STATUS(la_context_create(&ctx, 0), LA_OK);
    if (m && ctx) {
        test_exact(m, ctx, quick);
        test_quantised(m, ctx, quick);
    }
    la_context_destroy(ctx);
    la_model_free(m);
    return tu_finish();
}
