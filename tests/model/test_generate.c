/* Sampler and chat templates, without a model: the sampler against a float64
 * reference of temperature -> top-k -> top-p, its draws against the
 * distribution it claims, determinism per seed; chat formatting of both
 * template families; bad arguments. (Generation itself needs a model:
 * test_model_real.c.) */
#include "base/base.h"
#include "longattn_model.h"
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool quick(void) {
    const char *q = getenv("LONGATTN_TEST_QUICK");
    return q && *q && *q != '0';
}

/* ---------------------------------------------------------------- reference */

typedef struct {
    int32_t id;
    double logit;
} ref_cand;

static int ref_rank(const void *pa, const void *pb) {
    const ref_cand *a = pa, *b = pb;
    if (a->logit != b->logit) return a->logit > b->logit ? -1 : 1;
    return a->id < b->id ? -1 : 1;
}

/* probs[i] of the distribution after temperature t (> 0), top-k (<= 0 off)
 * and top-p (1 off). Returns the smallest |cumulative mass - top_p| seen
 * while cutting, so callers can avoid cuts decided by rounding. */
static double ref_distribution(const float *logits, int32_t n, double t, int32_t top_k, double top_p, double *probs) {
    ref_cand *c = tu_alloc((size_t)n * sizeof *c);
    for (int32_t i = 0; i < n; i++) c[i] = (ref_cand){i, logits[i]};
    qsort(c, (size_t)n, sizeof *c, ref_rank);
    int32_t keep = top_k > 0 && top_k < n ? top_k : n;
    double *w = tu_alloc((size_t)n * sizeof *w), sum = 0;
    for (int32_t i = 0; i < keep; i++) sum += (w[i] = exp((c[i].logit - c[0].logit) / t));
    double margin = INFINITY;
    if (top_p < 1) {
        double cum = 0;
        int32_t k = 0;
        while (k < keep && cum < top_p * sum) {
            cum += w[k++];
            margin = fmin(margin, fabs(cum / sum - top_p));
        }
        keep = k;
        sum = cum;
    }
    for (int32_t i = 0; i < n; i++) probs[i] = 0;
    for (int32_t i = 0; i < keep; i++) probs[c[i].id] = w[i] / sum;
    free(c);
    free(w);
    return margin;
}

static int32_t ref_argmax(const float *x, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static la_sampler *new_sampler(float t, int32_t top_k, float top_p, uint64_t seed, int32_t n_vocab) {
    la_sampler *s = NULL;
    la_sampler_params p = {.temperature = t, .top_k = top_k, .top_p = top_p, .seed = seed};
    TU_EXPECT_STATUS(la_sampler_new(&p, n_vocab, &s), LA_OK);
    return s;
}

/* ---------------------------------------------------------------- sampler */

static void test_greedy(uint64_t *rng) {
    for (int rep = 0; rep < 20; rep++) {
        int32_t n = (int32_t)tu_randint(rng, 1, 3001);
        float *logits = tu_alloc((size_t)n * sizeof *logits);
        tu_fill(rng, logits, LA_F32, n, -10, 10);
        la_sampler *greedy = new_sampler(0.0f, 0, 1.0f, tu_next(rng), n);
        la_sampler *top1 = new_sampler(1.3f, 1, 1.0f, tu_next(rng), n);
        int32_t want = ref_argmax(logits, n), got = -1, got_top1 = -1;
        TU_EXPECT_STATUS(la_sampler_sample(greedy, logits, &got), LA_OK);
        tu_check(got == want, "greedy over %d logits picked %d, argmax is %d", (int)n, (int)got, (int)want);
        for (int draw = 0; draw < 5; draw++) {
            TU_EXPECT_STATUS(la_sampler_sample(top1, logits, &got_top1), LA_OK);
            tu_check(got_top1 == want, "top-k 1 at temperature 1.3 picked %d, argmax is %d", (int)got_top1, (int)want);
        }
        free(logits);
        la_sampler_free(greedy);
        la_sampler_free(top1);
    }
    /* Ties go to the lowest id, for greedy and for top-k 1. */
    float tied[6] = {1, 3, -2, 3, 3, 0};
    la_sampler *greedy = new_sampler(-1.0f, 0, 1.0f, 1, 6), *top1 = new_sampler(1.0f, 1, 1.0f, 1, 6);
    int32_t a = -1, b = -1;
    TU_EXPECT_STATUS(la_sampler_sample(greedy, tied, &a), LA_OK);
    TU_EXPECT_STATUS(la_sampler_sample(top1, tied, &b), LA_OK);
    tu_check(a == 1 && b == 1, "ties: greedy %d, top-1 %d, want 1", (int)a, (int)b);
    la_sampler_free(greedy);
    la_sampler_free(top1);
}

/* Greedy's scan runs four lanes at a time, then the tail: against the
 * one-pass strict-compare scan (ref_argmax, lowest id on ties), with ties,
 * +0 / -0, -inf masks and the bad values (NaN, +inf, with the first one's
 * index in the message) placed in the vector part and in the tail, for
 * vocabularies of every length modulo 4. */
static void test_greedy_edges(uint64_t *rng) {
    for (int32_t n = 1; n <= 23; n++)
        for (int rep = 0; rep < 40; rep++) {
            float x[23];
            for (int32_t i = 0; i < n; i++) {
                const int kind = (int)tu_randint(rng, 0, 5);
                x[i] = kind == 0 ? 0.0f : kind == 1 ? -0.0f : kind == 2 ? -INFINITY : kind == 3 ? 1.5f
                                                                                                 : (float)tu_randint(rng, -3, 3);
            }
            la_sampler *g = new_sampler(0.0f, 0, 1.0f, 1, n);
            int32_t got = -1, first_finite = -1;
            for (int32_t i = 0; i < n && first_finite < 0; i++)
                if (x[i] != -INFINITY) first_finite = i;
            if (first_finite < 0) {
                TU_EXPECT_STATUS(la_sampler_sample(g, x, &got), LA_ERR_ARGUMENT);
            } else {
                int32_t want = first_finite; /* ref_argmax with -inf skipped */
                for (int32_t i = first_finite + 1; i < n; i++)
                    if (x[i] > x[want]) want = i;
                TU_EXPECT_STATUS(la_sampler_sample(g, x, &got), LA_OK);
                tu_check(got == want, "greedy over %d edge logits picked %d, want %d", (int)n, (int)got, (int)want);
                const int32_t b1 = (int32_t)tu_randint(rng, 0, n - 1), b2 = (int32_t)tu_randint(rng, 0, n - 1);
                const int32_t first = b1 < b2 ? b1 : b2;
                x[b1] = rep % 2 ? NAN : INFINITY, x[b2] = rep % 3 ? INFINITY : NAN;
                TU_EXPECT_STATUS(la_sampler_sample(g, x, &got), LA_ERR_ARGUMENT);
                char want_msg[32];
                snprintf(want_msg, sizeof want_msg, "token %d ", (int)first);
                tu_check(strstr(la_last_error(), want_msg) != NULL, "message names the first bad token %d: %s",
                         (int)first, la_last_error());
            }
            la_sampler_free(g);
        }
}

static void test_temperature_to_zero(uint64_t *rng) {
    const int32_t n = 257;
    float logits[257];
    for (int rep = 0; rep < 10; rep++) {
        /* Every other logit at least 0.01 below the best: at temperature
         * 1e-4 each has relative weight <= exp(-100), never drawn. */
        int32_t best = (int32_t)tu_randint(rng, 0, n - 1);
        for (int32_t i = 0; i < n; i++) logits[i] = (float)tu_uniform(rng, -5, 4.99);
        logits[best] = 5;
        const float temps[] = {1e-4f, 1e-38f, 1e-45f}; /* the last two overflow 1/t to inf */
        for (int ti = 0; ti < 3; ti++) {
            la_sampler *s = new_sampler(temps[ti], 0, ti == 2 ? 0.5f : 1.0f, tu_next(rng), n);
            int wrong = 0;
            for (int draw = 0; draw < 200; draw++) {
                int32_t got = -1;
                TU_EXPECT_STATUS(la_sampler_sample(s, logits, &got), LA_OK);
                wrong += got != best;
            }
            tu_check(wrong == 0, "temperature %g: %d of 200 draws were not the argmax", (double)temps[ti], wrong);
            la_sampler_free(s);
        }
    }
}

/* The sampler's distribution equals the reference's for random settings,
 * including a large vocabulary (the top-p prefilter's fast path) and one with
 * a long tail of tiny tokens holding real mass (its fallback). */
static void test_filters(uint64_t *rng) {
    for (int rep = 0; rep < 40; rep++) {
        const int kind = rep % 4;
        int32_t n = kind == 0 ? (int32_t)tu_randint(rng, 2, 50) : kind == 1 ? 49157 : kind == 2 ? 300007 : 1000;
        float *logits = tu_alloc((size_t)n * sizeof *logits);
        double *want = tu_alloc((size_t)n * sizeof *want);
        float *got = tu_alloc((size_t)n * sizeof *got);
        tu_fill(rng, logits, LA_F32, n, -8, 8);
        if (kind == 2) {
            /* One token holds ~90% of the mass; the rest each hold < 1e-6 of it
             * but together ~10%, so top-p above 0.9 must look at them. */
            tu_fill(rng, logits, LA_F32, n, 0, 0.01);
            logits[tu_randint(rng, 0, n - 1)] = (float)log(9.0 * n);
        }
        double t = tu_uniform(rng, 0.3, 2.0);
        int32_t top_k = kind == 3 ? (int32_t)tu_randint(rng, 1, 300) : 0;
        double top_p;
        double margin;
        do { /* a cut within 1e-7 of top_p could go either way by rounding */
            top_p = kind == 2 ? tu_uniform(rng, 0.91, 0.99) : tu_uniform(rng, 0.05, 1.0);
            margin = ref_distribution(logits, n, t, top_k, top_p, want);
        } while (margin < 1e-7);
        la_sampler *s = new_sampler((float)t, top_k, (float)top_p, 1, n);
        if (s && la_sampler_distribution(s, logits, got) == LA_OK) {
            /* float32 probabilities of a float64 computation: 1e-6 relative
             * covers the rounding; the support must match exactly. */
            int bad = 0, support_bad = 0;
            double sum = 0;
            for (int32_t i = 0; i < n; i++) {
                sum += got[i];
                support_bad += (got[i] > 0) != (want[i] > 0);
                bad += !tu_close(got[i], want[i], 1e-9, 1e-6);
            }
            tu_check(support_bad == 0 && bad == 0,
                     "filters n=%d t=%.3f top_k=%d top_p=%.4f: %d support mismatches, %d values off", (int)n, t,
                     (int)top_k, top_p, support_bad, bad);
            tu_check(fabs(sum - 1) < 1e-4, "distribution sums to %.7f", sum); /* n float32 roundings */
        } else {
            tu_check(false, "la_sampler_distribution failed: %s", la_last_error());
        }
        la_sampler_free(s);
        free(logits);
        free(want);
        free(got);
    }
    /* Top-p by hand: masses 0.5, 0.3, 0.15, 0.05 at t = 1. p = 0.8 needs the
     * first two (0.8 reaches it), p = 0.81 the first three, p = 0.5 one. */
    float logits[4] = {(float)log(0.3), (float)log(0.05), (float)log(0.5), (float)log(0.15)};
    const float ps[] = {0.5f, 0.79f, 0.81f, 1.0f};
    const int want_kept[] = {1, 2, 3, 4};
    for (int i = 0; i < 4; i++) {
        float probs[4];
        la_sampler *s = new_sampler(1.0f, 0, ps[i], 3, 4);
        TU_EXPECT_STATUS(la_sampler_distribution(s, logits, probs), LA_OK);
        int kept = (probs[0] > 0) + (probs[1] > 0) + (probs[2] > 0) + (probs[3] > 0);
        tu_check(kept == want_kept[i] && probs[2] > 0, "top_p %.2f kept %d tokens, want %d", (double)ps[i], kept,
                 want_kept[i]);
        la_sampler_free(s);
    }
}

static void test_seed(uint64_t *rng) {
    enum { N = 64, DRAWS = 500 };
    float logits[N];
    tu_fill(rng, logits, LA_F32, N, -1, 1);
    uint64_t seed = tu_next(rng);
    la_sampler *a = new_sampler(1.0f, 0, 1.0f, seed, N), *b = new_sampler(1.0f, 0, 1.0f, seed, N),
               *c = new_sampler(1.0f, 0, 1.0f, seed + 1, N);
    int32_t ta[DRAWS], tb, tc;
    int same_ab = 0, same_ac = 0;
    for (int i = 0; i < DRAWS; i++) {
        la_sampler_sample(a, logits, &ta[i]);
        la_sampler_sample(b, logits, &tb);
        la_sampler_sample(c, logits, &tc);
        same_ab += ta[i] == tb;
        same_ac += ta[i] == tc;
    }
    tu_check(same_ab == DRAWS, "same seed: %d of %d draws agree", same_ab, DRAWS);
    /* Independent streams agree on a draw with probability ~1/64 (near-
     * uniform over 64 tokens): ~8 of 500; 100 is far beyond chance. */
    tu_check(same_ac < 100, "seeds %llu and %llu agree on %d of %d draws", (unsigned long long)seed,
             (unsigned long long)seed + 1, same_ac, DRAWS);
    la_sampler_reseed(b, seed);
    int replay = 0;
    for (int i = 0; i < DRAWS; i++) {
        la_sampler_sample(b, logits, &tb);
        replay += ta[i] == tb;
    }
    tu_check(replay == DRAWS, "reseed replays: %d of %d draws agree", replay, DRAWS);
    la_sampler_free(a);
    la_sampler_free(b);
    la_sampler_free(c);
}

/* Draw frequencies match the reference distribution. Each count is
 * Binomial(N, p): allowing 5 standard deviations per token makes a false
 * failure ~6e-7 per token. A per-token bound alone misses small biases spread
 * over many tokens, so the pooled chi-square statistic is checked as well. */
static void test_frequencies(uint64_t *rng) {
    enum { V = 9 };
    const int64_t draws = quick() ? 100000 : 400000;
    float logits[V];
    tu_fill(rng, logits, LA_F32, V, -2, 2);
    const double t = 0.8, top_p = 0.9;
    const int32_t top_k = 7;
    double want[V];
    ref_distribution(logits, V, t, top_k, top_p, want);
    la_sampler *s = new_sampler((float)t, top_k, (float)top_p, tu_next(rng), V);
    int64_t count[V] = {0};
    for (int64_t i = 0; i < draws; i++) {
        int32_t tok = -1;
        if (la_sampler_sample(s, logits, &tok) != LA_OK || tok < 0 || tok >= V) {
            tu_check(false, "draw %lld failed: token %d, %s", (long long)i, (int)tok, la_last_error());
            break;
        }
        count[tok]++;
    }
    double chi2 = 0;
    int df = -1;
    for (int i = 0; i < V; i++) {
        double expect = want[i] * (double)draws;
        if (want[i] == 0) {
            tu_check(count[i] == 0, "token %d was filtered out but drawn %lld times", i, (long long)count[i]);
            continue;
        }
        double sd = sqrt((double)draws * want[i] * (1 - want[i]));
        tu_check(fabs((double)count[i] - expect) <= 5 * sd, "token %d drawn %lld times, expected %.0f +- %.0f", i,
                 (long long)count[i], expect, sd);
        chi2 += ((double)count[i] - expect) * ((double)count[i] - expect) / expect;
        df++;
    }
    /* Chi-square with df <= 8 degrees of freedom exceeds 40 with probability
     * < 3e-6 (the 1 - 3e-6 quantile of chi2(8) is ~38.5). */
    tu_check(df >= 1 && chi2 < 40, "chi-square %.2f with %d degrees of freedom", chi2, df);
    la_sampler_free(s);
}

static void test_sampler_bad_args(void) {
    la_sampler *s = NULL;
    la_sampler_params p = la_sampler_params_default();
    TU_EXPECT_STATUS(la_sampler_new(&p, 10, NULL), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_sampler_new(NULL, 10, &s), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_sampler_new(&p, 0, &s), LA_ERR_ARGUMENT);
    tu_check(strstr(la_last_error(), "n_vocab") != NULL, "message names n_vocab: %s", la_last_error());
    p.top_p = 0;
    TU_EXPECT_STATUS(la_sampler_new(&p, 10, &s), LA_ERR_ARGUMENT);
    tu_check(strstr(la_last_error(), "top_p") != NULL, "message names top_p: %s", la_last_error());
    p.top_p = 1.5f;
    TU_EXPECT_STATUS(la_sampler_new(&p, 10, &s), LA_ERR_ARGUMENT);
    p.top_p = NAN;
    TU_EXPECT_STATUS(la_sampler_new(&p, 10, &s), LA_ERR_ARGUMENT);
    p = la_sampler_params_default();
    p.temperature = NAN;
    TU_EXPECT_STATUS(la_sampler_new(&p, 10, &s), LA_ERR_ARGUMENT);
    tu_check(s == NULL, "failed new leaves *out NULL");
    p = la_sampler_params_default();
    TU_EXPECT_STATUS(la_sampler_new(&p, 4, &s), LA_OK);
    int32_t tok;
    float probs[4];
    TU_EXPECT_STATUS(la_sampler_sample(s, NULL, &tok), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_sampler_sample(s, (float[4]){0}, NULL), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_sampler_sample(NULL, (float[4]){0}, &tok), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_sampler_sample(s, (float[4]){0, NAN, 0, 0}, &tok), LA_ERR_ARGUMENT);
    tu_check(strstr(la_last_error(), "token 1") != NULL, "message names the token: %s", la_last_error());
    TU_EXPECT_STATUS(la_sampler_sample(s, (float[4]){0, 0, INFINITY, 0}, &tok), LA_ERR_ARGUMENT);
    TU_EXPECT_STATUS(la_sampler_sample(s, (float[4]){-INFINITY, -INFINITY, -INFINITY, -INFINITY}, &tok),
                     LA_ERR_ARGUMENT);
    TU_EXPECT_STATUS(la_sampler_distribution(s, (float[4]){-INFINITY, 2, -INFINITY, -INFINITY}, probs), LA_OK);
    tu_check(probs[1] == 1 && probs[0] == 0 && probs[2] == 0 && probs[3] == 0, "-inf logits are masked tokens");
    for (int i = 0; i < 50; i++) {
        TU_EXPECT_STATUS(la_sampler_sample(s, (float[4]){-INFINITY, 0.5f, -INFINITY, 0.4f}, &tok), LA_OK);
        tu_check(tok == 1 || tok == 3, "a masked token was drawn: %d", (int)tok);
    }
    la_sampler_free(s);
    la_sampler_free(NULL);
}

/* ---------------------------------------------------------------- chat */

static void expect_format(const la_chat_template *t, const char *system, const char *user, const char *want,
                          const char *what) {
    char *text = NULL;
    size_t len = 0;
    TU_EXPECT_STATUS(la_chat_format(t, system, user, &text, &len), LA_OK);
    tu_check(text && len == strlen(want) && strcmp(text, want) == 0, "%s:\n got: [%s]\nwant: [%s]", what,
             text ? text : "(null)", want);
    free(text);
}

static void test_chat(void) {
    /* Written for this test in the shape such templates take: a default
     * system turn as a Jinja string literal (escaped newline), then the turns. */
    const char chatml_src[] =
        "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a terse test model.<|im_end|>\\n' }}"
        "{% endif %}{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
    la_chat_template t;
    TU_EXPECT_STATUS(la_chat_template_parse(chatml_src, strlen(chatml_src), &t), LA_OK);
    tu_check(t.style == LA_CHAT_CHATML, "ChatML recognised");
    tu_check(t.default_system && strcmp(t.default_system, "You are a terse test model.") == 0,
             "default system prompt: %s", t.default_system ? t.default_system : "(null)");
    expect_format(&t, NULL, "Hi there", "<|im_start|>system\nYou are a terse test model.<|im_end|>\n"
                                        "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
                  "ChatML, default system");
    expect_format(&t, "Be kind.", "2+2?", "<|im_start|>system\nBe kind.<|im_end|>\n"
                                          "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n",
                  "ChatML, given system");
    expect_format(&t, "", "x", "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n",
                  "ChatML, empty system turn");
    la_chat_template_free(&t);
    tu_check(t.default_system == NULL, "free clears the default");

    /* A real newline after the marker also counts; a system turn built from
     * the message content is not a default. */
    const char chatml_newline[] = "{{ '<|im_start|>system\nHello.<|im_end|>' }}";
    TU_EXPECT_STATUS(la_chat_template_parse(chatml_newline, strlen(chatml_newline), &t), LA_OK);
    tu_check(t.default_system && strcmp(t.default_system, "Hello.") == 0, "literal newline default");
    la_chat_template_free(&t);
    const char chatml_plain[] = "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + "
                                "'<|im_end|>\\n'}}{% endfor %}";
    TU_EXPECT_STATUS(la_chat_template_parse(chatml_plain, strlen(chatml_plain), &t), LA_OK);
    tu_check(t.style == LA_CHAT_CHATML && t.default_system == NULL, "ChatML without a default system turn");
    expect_format(&t, NULL, "Hi", "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", "ChatML, no system");
    la_chat_template_free(&t);

    const char llama3_src[] = "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + "
                              "'<|end_header_id|>\\n\\n' + m['content'] | trim + '<|eot_id|>' }}{% endfor %}";
    TU_EXPECT_STATUS(la_chat_template_parse(llama3_src, strlen(llama3_src), &t), LA_OK);
    tu_check(t.style == LA_CHAT_LLAMA3 && t.default_system == NULL, "Llama-3 recognised");
    expect_format(&t, "Sys.", "Question?",
                  "<|start_header_id|>system<|end_header_id|>\n\nSys.<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nQuestion?<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\n",
                  "Llama-3 with system");
    expect_format(&t, NULL, "Q", "<|start_header_id|>user<|end_header_id|>\n\nQ<|eot_id|>"
                                 "<|start_header_id|>assistant<|end_header_id|>\n\n",
                  "Llama-3 without system");
    la_chat_template_free(&t);

    /* Only the first len bytes are looked at. */
    TU_EXPECT_STATUS(la_chat_template_parse(chatml_src, 5, &t), LA_ERR_UNSUPPORTED);
    const char other[] = "{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}";
    TU_EXPECT_STATUS(la_chat_template_parse(other, strlen(other), &t), LA_ERR_UNSUPPORTED);
    tu_check(strstr(la_last_error(), "raw") != NULL, "message suggests raw prompts: %s", la_last_error());
    TU_EXPECT_STATUS(la_chat_template_parse(NULL, 3, &t), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_chat_template_parse(other, 3, NULL), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_chat_template_of_gguf(NULL, &t), LA_ERR_NULL);
    char *text = (char *)1;
    la_chat_template bad = {.style = (la_chat_style)7};
    TU_EXPECT_STATUS(la_chat_format(&bad, NULL, "x", &text, NULL), LA_ERR_ARGUMENT);
    tu_check(text == NULL, "failed format leaves *text NULL");
    TU_EXPECT_STATUS(la_chat_format(&bad, NULL, NULL, &text, NULL), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_chat_format(NULL, NULL, "x", &text, NULL), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_chat_format(&bad, NULL, "x", NULL, NULL), LA_ERR_NULL);
    la_chat_template_free(NULL);
}

int main(void) {
    uint64_t rng = tu_seed();
    test_greedy(&rng);
    test_greedy_edges(&rng);
    test_temperature_to_zero(&rng);
    test_filters(&rng);
    test_seed(&rng);
    test_frequencies(&rng);
    test_sampler_bad_args();
    test_chat();
    return tu_finish();
}
