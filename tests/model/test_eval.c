/* The evaluation tasks (la_eval_*): the scorer on canned replies (exact match
 * of whole words, partial credit for variable tracking), the needle builder
 * placing the needle at the requested depth within one sentence (counted in
 * words, and in the real model's tokens), multi-key needles distinct with the
 * right answer, variable tracking's answers equal to the ground truth
 * recomputed by resolving every assignment in the text, determinism per seed,
 * prompts, and bad arguments (status and message). */
#include "longattn_model.h"
#include "test_util.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char MODEL_PATH[] = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

static bool quick(void) {
    const char *q = getenv("LONGATTN_TEST_QUICK");
    return q && *q && strcmp(q, "0");
}

static int64_t count_words(const char *s, size_t n) {
    int64_t w = 0;
    for (size_t i = 0; i < n; i++) w += !isspace((unsigned char)s[i]) && (i == 0 || isspace((unsigned char)s[i - 1]));
    return w;
}

/* Tokens of text[0, n) counted as the builder counts (t NULL: words). */
static int64_t count_tokens(const la_tokenizer *t, const char *text, size_t n) {
    if (!t) return count_words(text, n);
    int32_t *ids = NULL;
    int64_t k = 0;
    if (la_tokenize(t, text, n, false, false, &ids, &k) != LA_OK) k = -1;
    free(ids);
    return k;
}

/* The longest sentence of the context, in the builder's count: sentences end
 * at ". " (the statements end with '.' too). */
static int64_t longest_sentence(const la_tokenizer *t, const char *ctx) {
    int64_t best = 0;
    for (const char *p = ctx; *p;) {
        const char *end = strstr(p, ". ");
        size_t n = end ? (size_t)(end - p) + 1 : strlen(p);
        int64_t k = count_tokens(t, p, n) + 1; /* + the leading space's share */
        best = k > best ? k : best;
        p += n;
        while (*p == ' ') p++;
    }
    return best;
}

static size_t count_occurrences(const char *hay, const char *needle) {
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p++) n++;
    return n;
}

/* ---- the scorer on canned replies */

static void test_scorer_canned(void) {
    char a0[] = "4812093", *answers[] = {a0};
    la_eval_sample s = {.answers = answers, .n_answers = 1};
    const struct {
        const char *reply;
        double want;
    } needle[] = {
        {" 4812093.", 1},
        {"4812093", 1},
        {"The special magic number for Oslo is: 4812093!", 1},
        {"(4812093)\n", 1},
        {" 48120934.", 0},         /* a longer number is not the number */
        {" 14812093", 0},
        {" x4812093", 0},          /* glued to a word */
        {" 481 2093", 0},
        {" 4812039.", 0},
        {"", 0},
        {" The number is 1234567, not 4812093", 1},
    };
    for (size_t i = 0; i < sizeof needle / sizeof needle[0]; i++) {
        double got = -1;
        TU_EXPECT_STATUS(la_eval_score(&s, needle[i].reply, strlen(needle[i].reply), &got), LA_OK);
        tu_check(got == needle[i].want, "needle reply '%s' scored %g, want %g", needle[i].reply, got, needle[i].want);
    }
    /* len bounds the reply: the digits past it do not count */
    double got = -1;
    TU_EXPECT_STATUS(la_eval_score(&s, " 4812093", 5, &got), LA_OK);
    tu_check(got == 0, "a reply cut at 5 bytes scored %g", got);
    TU_EXPECT_STATUS(la_eval_score(&s, NULL, 0, &got), LA_OK);
    tu_check(got == 0, "an empty NULL reply scored %g", got);

    char v0[] = "QWERT", v1[] = "ASDFG", v2[] = "ZXCVB", v3[] = "POIUY", v4[] = "LKJHG";
    char *vars[] = {v0, v1, v2, v3, v4};
    la_eval_sample vt = {.answers = vars, .n_answers = 5};
    const struct {
        const char *reply;
        double want;
    } track[] = {
        {" QWERT, ASDFG, ZXCVB, POIUY, LKJHG.", 1},
        {" LKJHG ZXCVB QWERT", 0.6},
        {" VAR QWERT, VAR ASDFG", 0.4},
        {" QWERTY, ASDFGH", 0},
        {" qwert, asdfg", 0},
        {" POIUY\n- POIUY\n- POIUY", 0.2},
    };
    for (size_t i = 0; i < sizeof track / sizeof track[0]; i++) {
        TU_EXPECT_STATUS(la_eval_score(&vt, track[i].reply, strlen(track[i].reply), &got), LA_OK);
        tu_check(fabs(got - track[i].want) < 1e-12, "vartrack reply '%s' scored %g, want %g", track[i].reply, got,
                 track[i].want);
    }
}

/* ---- needle placement */

static void check_needle(const la_tokenizer *t, uint64_t *rng, int64_t n_tokens, double depth) {
    la_eval_params p = la_eval_params_default();
    p.n_tokens = n_tokens, p.depth = depth, p.seed = tu_next(rng);
    la_eval_sample s;
    la_status st = la_eval_build(t, &p, &s);
    tu_check(st == LA_OK, "needle build (%lld tokens, depth %.3f): %s", (long long)n_tokens, depth, la_last_error());
    if (st) return;
    const char *ctx = s.context;
    const char *needle = ctx + s.needle_offset;
    bool at = !strncmp(needle, "The special magic number for ", 29);
    tu_check(at, "needle_offset %lld does not point at the needle", (long long)s.needle_offset);
    tu_check(count_occurrences(ctx, "special magic number") == 1, "one needle in the context");
    /* the needle's city is the question's, its number the answer */
    char city[64] = "", number[16] = "";
    if (at) sscanf(needle + 29, "%63s is %15[0-9].", city, number);
    tu_check(s.n_answers == 1 && !strcmp(s.answers[0], number) && strlen(number) == 7,
             "answer '%s', needle's number '%s'", s.n_answers ? s.answers[0] : "", number);
    tu_check(city[0] && strstr(s.question, city) && strstr(s.answer_prefix, city), "question asks for %s", city);
    /* no other digits in the filler */
    size_t digits = 0;
    for (const char *c = ctx; *c; c++) digits += isdigit((unsigned char)*c) != 0;
    tu_check(digits == 7, "the context holds %zu digits, want the needle's 7", digits);

    const int64_t sentence = longest_sentence(t, ctx);
    const int64_t total = count_tokens(t, ctx, strlen(ctx));
    const int64_t needle_tok = count_tokens(t, needle, strcspn(needle, ".") + 1);
    const int64_t before = count_tokens(t, ctx, (size_t)s.needle_offset);
    /* the builder's count is the sum over sentences; whole-text tokenising may
     * merge across a boundary here and there: allow 1% and 2 tokens */
    const double slack = t ? 2 + 0.01 * (double)total : 0;
    tu_check(s.n_tokens <= n_tokens && s.n_tokens >= n_tokens - sentence, "context of %lld tokens for %lld (sentence %lld)",
             (long long)s.n_tokens, (long long)n_tokens, (long long)sentence);
    tu_check(fabs((double)total - (double)s.n_tokens) <= slack, "the context counts %lld tokens, the builder says %lld",
             (long long)total, (long long)s.n_tokens);
    tu_check(fabs((double)before - (double)s.needle_tokens) <= slack, "%lld tokens before the needle, the builder says %lld",
             (long long)before, (long long)s.needle_tokens);
    const double want = depth * (double)(s.n_tokens - needle_tok);
    tu_check(fabs((double)before - want) <= (double)sentence + slack,
             "depth %.3f of %lld tokens: needle after %lld tokens, want %.1f +/- one sentence (%lld)", depth,
             (long long)total, (long long)before, want, (long long)sentence);
    if (depth == 0) tu_check(s.needle_offset == 0, "depth 0 puts the needle first (offset %lld)", (long long)s.needle_offset);
    if (depth == 1) {
        size_t tail = strlen(needle);
        tu_check(tail == strcspn(needle, ".") + 1, "depth 1 puts the needle last ('%s' follows)", needle);
    }
    /* the same seed builds the same sample; another seed another */
    la_eval_sample again, other;
    TU_EXPECT_STATUS(la_eval_build(t, &p, &again), LA_OK);
    tu_check(again.context && !strcmp(again.context, ctx) && !strcmp(again.answers[0], s.answers[0]),
             "the same seed gave another sample");
    p.seed++;
    TU_EXPECT_STATUS(la_eval_build(t, &p, &other), LA_OK);
    tu_check(other.context && strcmp(other.context, ctx), "another seed gave the same context");
    la_eval_sample_free(&again);
    la_eval_sample_free(&other);
    la_eval_sample_free(&s);
}

static void test_needle_placement(const la_tokenizer *t, uint64_t *rng) {
    const double fixed[] = {0, 0.1, 0.5, 0.9, 1};
    const int64_t max_tokens = quick() ? 1500 : 9000;
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) check_needle(t, rng, tu_randint(rng, 30, max_tokens), fixed[i]);
    const int rounds = quick() ? 4 : 20;
    /* from 18: SmolLM2's tokenizer takes 16-18 tokens for a needle statement
     * (measured over 20000 seeds), and a shorter context is refused */
    for (int i = 0; i < rounds; i++) check_needle(t, rng, tu_randint(rng, 18, max_tokens), tu_uniform(rng, 0, 1));
    check_needle(t, rng, t ? 20 : 10, 0.5); /* just the needle, no room for filler */
}

/* ---- multi-key needles */

static void test_multikey(const la_tokenizer *t, uint64_t *rng) {
    for (int round = 0; round < (quick() ? 3 : 10); round++) {
        la_eval_params p = la_eval_params_default();
        p.task = LA_EVAL_MULTIKEY;
        p.n_keys = (int32_t)tu_randint(rng, 2, 12);
        p.n_tokens = tu_randint(rng, 40 * p.n_keys, 3000);
        p.depth = tu_uniform(rng, 0, 1);
        p.seed = tu_next(rng);
        la_eval_sample s;
        la_status st = la_eval_build(t, &p, &s);
        tu_check(st == LA_OK, "multikey build: %s", la_last_error());
        if (st) continue;
        tu_check(count_occurrences(s.context, "The special magic number for ") == (size_t)p.n_keys,
                 "%d needles in the context", (int)p.n_keys);
        /* distinct cities and numbers; the queried city's number is the answer */
        char cities[64][64], numbers[64][16];
        int n = 0;
        for (const char *c = s.context; (c = strstr(c, "The special magic number for ")) && n < 64; c++, n++)
            sscanf(c + 29, "%63s is %15[0-9].", cities[n], numbers[n]);
        bool distinct = true;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < i; j++) distinct &= strcmp(cities[i], cities[j]) && strcmp(numbers[i], numbers[j]);
        tu_check(distinct, "multikey needles repeat a city or a number");
        int asked = -1;
        for (int i = 0; i < n; i++)
            if (strstr(s.question, cities[i])) asked = asked < 0 ? i : -2;
        tu_check(asked >= 0 && !strcmp(s.answers[0], numbers[asked]), "the question names one city, answered by its number");
        const char *q = s.context + s.needle_offset;
        tu_check(asked >= 0 && !strncmp(q + 29, cities[asked], strlen(cities[asked])),
                 "needle_offset points at the queried needle");
        la_eval_sample_free(&s);
    }
}

/* ---- variable tracking: the answers are exactly the variables holding the
 * queried value, found by resolving every assignment of the text in order */

typedef struct {
    char name[8];
    long value; /* -1: unresolved */
} var;

static void test_vartrack(const la_tokenizer *t, uint64_t *rng) {
    for (int round = 0; round < (quick() ? 3 : 10); round++) {
        la_eval_params p = la_eval_params_default();
        p.task = LA_EVAL_VARTRACK;
        p.n_chains = (int32_t)tu_randint(rng, 1, 5);
        p.n_hops = (int32_t)tu_randint(rng, 0, 6);
        p.n_tokens = tu_randint(rng, 20 * p.n_chains * (p.n_hops + 1), 4000);
        p.seed = tu_next(rng);
        la_eval_sample s;
        la_status st = la_eval_build(t, &p, &s);
        tu_check(st == LA_OK, "vartrack build (%d chains, %d hops, %lld tokens): %s", (int)p.n_chains, (int)p.n_hops,
                 (long long)p.n_tokens, la_last_error());
        if (st) continue;
        var vars[128];
        int nv = 0;
        bool ordered = true;
        for (const char *c = s.context; (c = strstr(c, "VAR ")) && nv < 128; c += 4) {
            if (c > s.context && c[-1] != ' ') continue; /* the right-hand side of an assignment */
            if (c - s.context >= 4 && !strncmp(c - 2, "= ", 2)) continue;
            char lhs[8], rhs[8];
            long value;
            if (sscanf(c, "VAR %7s = %ld.", lhs, &value) == 2) {
                snprintf(vars[nv].name, sizeof vars[nv].name, "%s", lhs), vars[nv++].value = value;
            } else if (sscanf(c, "VAR %7s = VAR %7[A-Z].", lhs, rhs) == 2) {
                long v = -1;
                for (int i = 0; i < nv; i++)
                    if (!strcmp(vars[i].name, rhs)) v = vars[i].value;
                ordered &= v >= 0; /* assigned before it is used */
                snprintf(vars[nv].name, sizeof vars[nv].name, "%s", lhs), vars[nv++].value = v;
            }
        }
        tu_check(nv == p.n_chains * (p.n_hops + 1), "%d assignments, want %d", nv, (int)(p.n_chains * (p.n_hops + 1)));
        tu_check(ordered, "a variable is used before its assignment");
        long asked = -1;
        const char *num = s.question;
        while (*num && !isdigit((unsigned char)*num)) num++;
        asked = strtol(num, NULL, 10);
        int holding = 0;
        bool all_listed = true;
        for (int i = 0; i < nv; i++) {
            if (vars[i].value != asked) continue;
            holding++;
            bool listed = false;
            for (int32_t k = 0; k < s.n_answers; k++) listed |= !strcmp(s.answers[k], vars[i].name);
            all_listed &= listed;
        }
        tu_check(holding == s.n_answers && all_listed && s.n_answers == p.n_hops + 1,
                 "value %ld: %d variables hold it, the sample lists %d", asked, holding, (int)s.n_answers);
        char value_text[16];
        snprintf(value_text, sizeof value_text, "%ld", asked);
        tu_check(strstr(s.answer_prefix, value_text) != NULL, "the answer prefix repeats the value");
        tu_check(!strncmp(s.context + s.needle_offset, "VAR ", 4) &&
                     !strncmp(s.context + s.needle_offset + 4, s.answers[0], 5),
                 "needle_offset points at the queried chain's first assignment");
        /* the full list scores 1, one name less scores (n-1)/n */
        char reply[1024] = "";
        for (int32_t k = 0; k < s.n_answers; k++) {
            strcat(reply, " ");
            strcat(reply, s.answers[k]);
        }
        double score = -1;
        TU_EXPECT_STATUS(la_eval_score(&s, reply, strlen(reply), &score), LA_OK);
        tu_check(score == 1, "the full list scored %g", score);
        size_t cut = strlen(reply) - 6;
        TU_EXPECT_STATUS(la_eval_score(&s, reply, cut, &score), LA_OK);
        tu_check(fabs(score - (double)(s.n_answers - 1) / s.n_answers) < 1e-12, "the list less one scored %g", score);
        la_eval_sample_free(&s);
    }
}

/* ---- prompts */

static void test_prompt(void) {
    la_eval_params p = la_eval_params_default();
    p.n_tokens = 200;
    la_eval_sample s;
    TU_EXPECT_STATUS(la_eval_build(NULL, &p, &s), LA_OK);
    if (!s.context) return;
    const char src[] = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}";
    la_chat_template tmpl;
    TU_EXPECT_STATUS(la_chat_template_parse(src, strlen(src), &tmpl), LA_OK);
    char *text = NULL;
    size_t len = 0;
    TU_EXPECT_STATUS(la_eval_prompt(&s, &tmpl, &text, &len), LA_OK);
    const char *ctx_at = text ? strstr(text, s.context) : NULL;
    bool ok = text && len == strlen(text) && !strncmp(text, "<|im_start|>user\n", 17) &&
              !strncmp(text + 17, s.instruction, strlen(s.instruction)) && ctx_at && strstr(ctx_at, s.question) &&
              strstr(text, "<|im_end|>\n<|im_start|>assistant\n") &&
              !strcmp(text + len - strlen(s.answer_prefix), s.answer_prefix);
    tu_check(ok, "ChatML prompt: '%.200s'...", text ? text : "(null)");
    free(text);
    TU_EXPECT_STATUS(la_eval_prompt(&s, NULL, &text, &len), LA_OK);
    ok = text && !strncmp(text, s.instruction, strlen(s.instruction)) && strstr(text, s.context) &&
         len > strlen(s.answer_prefix) && text[len - strlen(s.answer_prefix) - 1] == '\n' &&
         !strcmp(text + len - strlen(s.answer_prefix), s.answer_prefix);
    tu_check(ok, "plain prompt: '%.200s'...", text ? text : "(null)");
    free(text);
    la_chat_template_free(&tmpl);
    la_eval_sample_free(&s);
}

/* ---- bad arguments: each its status and a message naming the problem */

static void expect_bad(const la_eval_params *p, la_status want, const char *mention) {
    la_eval_sample s;
    memset(&s, 0x5a, sizeof s);
    la_status st = la_eval_build(NULL, p, &s);
    tu_check(st == want && strstr(la_last_error(), mention), "bad params: %s '%s', want %s mentioning '%s'",
             la_status_name(st), la_last_error(), la_status_name(want), mention);
    tu_check(!s.context && !s.answers && !s.question, "a failed build leaves the sample zeroed");
    la_eval_sample_free(&s);
}

static void test_bad_arguments(void) {
    la_eval_params good = la_eval_params_default();
    good.n_tokens = 500;
    la_eval_params p = good;
    p.task = (la_eval_task)7;
    expect_bad(&p, LA_ERR_ARGUMENT, "task");
    p = good, p.n_tokens = 0;
    expect_bad(&p, LA_ERR_ARGUMENT, "n_tokens");
    p = good, p.n_tokens = LA_SESSION_MAX_CTX + 1;
    expect_bad(&p, LA_ERR_ARGUMENT, "n_tokens");
    p = good, p.n_tokens = 5;
    expect_bad(&p, LA_ERR_ARGUMENT, "too small");
    const double bad_depths[] = {-0.01, 1.01, NAN, INFINITY};
    for (int i = 0; i < 4; i++) {
        p = good, p.depth = bad_depths[i];
        expect_bad(&p, LA_ERR_ARGUMENT, "depth");
    }
    p = good, p.task = LA_EVAL_MULTIKEY, p.n_keys = 1;
    expect_bad(&p, LA_ERR_ARGUMENT, "n_keys");
    p.n_keys = 65;
    expect_bad(&p, LA_ERR_ARGUMENT, "n_keys");
    p = good, p.task = LA_EVAL_VARTRACK, p.n_chains = 0;
    expect_bad(&p, LA_ERR_ARGUMENT, "n_chains");
    p.n_chains = 17;
    expect_bad(&p, LA_ERR_ARGUMENT, "n_chains");
    p = good, p.task = LA_EVAL_VARTRACK, p.n_hops = -1;
    expect_bad(&p, LA_ERR_ARGUMENT, "n_hops");
    p.n_hops = 17;
    expect_bad(&p, LA_ERR_ARGUMENT, "n_hops");
    expect_bad(NULL, LA_ERR_NULL, "params");
    TU_EXPECT_STATUS(la_eval_build(NULL, &good, NULL), LA_ERR_NULL);
    tu_check(strstr(la_last_error(), "out") != NULL, "message names out: %s", la_last_error());

    la_eval_sample s;
    TU_EXPECT_STATUS(la_eval_build(NULL, &good, &s), LA_OK);
    double score;
    TU_EXPECT_STATUS(la_eval_score(&s, "x", 1, NULL), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_eval_score(NULL, "x", 1, &score), LA_ERR_NULL);
    tu_check(strstr(la_last_error(), "sample") != NULL, "message names the sample: %s", la_last_error());
    TU_EXPECT_STATUS(la_eval_score(&s, NULL, 3, &score), LA_ERR_NULL);
    tu_check(strstr(la_last_error(), "reply") != NULL, "message names the reply: %s", la_last_error());
    la_eval_sample empty = {0};
    TU_EXPECT_STATUS(la_eval_score(&empty, "x", 1, &score), LA_ERR_NULL);
    char *text = NULL;
    TU_EXPECT_STATUS(la_eval_prompt(&s, NULL, NULL, NULL), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_eval_prompt(NULL, NULL, &text, NULL), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_eval_prompt(&empty, NULL, &text, NULL), LA_ERR_NULL);
    tu_check(text == NULL, "a failed prompt leaves text NULL");
    la_eval_sample_free(&s);
    la_eval_sample_free(NULL);
}

int main(void) {
    uint64_t rng = tu_seed();
    test_scorer_canned();
    test_prompt();
    test_bad_arguments();
    /* words counted (no tokenizer), then the real model's tokenizer */
    test_needle_placement(NULL, &rng);
    test_multikey(NULL, &rng);
    test_vartrack(NULL, &rng);
    la_model *m = NULL;
    la_status st = la_model_load(MODEL_PATH, &m);
    tu_check(st == LA_OK, "loading %s (scripts/get-model.sh fetches it): %s", MODEL_PATH, la_last_error());
    if (m) {
        const la_tokenizer *t = la_model_tokenizer(m);
        test_needle_placement(t, &rng);
        test_multikey(t, &rng);
        test_vartrack(t, &rng);
        la_model_free(m);
    }
    return tu_finish();
}
