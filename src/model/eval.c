/* Evaluation tasks: needle in a haystack, multi-key needles and variable
 * tracking (after RULER), built from a seed, and their scorer. */
#include "longattn_model.h"

#include "base/base.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- word lists: 16 x 12 x 16 x 12 = 36864 filler sentences, no digits */

static const char *const SUBJECTS[] = {
    "The old lighthouse keeper", "A quiet river",       "The morning train",   "Every gardener in the valley",
    "The tired baker",           "A flock of geese",    "The village library", "An old wooden bridge",
    "The northern wind",         "A young painter",     "The harbour master",  "The mountain road",
    "A travelling musician",     "The school teacher",  "A grey cat",          "The fishermen of the bay",
};
static const char *const VERBS[] = {
    "watched", "remembered", "crossed", "painted", "followed", "described",
    "waited beside", "passed", "talked about", "looked for", "walked past", "dreamed of",
};
static const char *const OBJECTS[] = {
    "the fields of barley", "the grey stone wall", "a letter from the coast", "the last lantern",
    "the narrow streets",   "the open sea",        "the orchard gate",        "a basket of apples",
    "the distant hills",    "the empty market",    "an unfinished song",      "the frozen pond",
    "the church tower",     "a row of poplars",    "the sleeping town",       "the old mill",
};
static const char *const TAILS[] = {
    "before the rain began",  "at the end of autumn", "while the bells were ringing", "without saying a word",
    "as the fog lifted",      "long after midnight",  "on a cold market day",         "under a pale sky",
    "when the tide came in",  "in the early spring",  "after the long journey",       "with a quiet smile",
};
static const char *const CITIES[] = {
    "Amsterdam", "Athens",   "Bangkok",   "Barcelona", "Berlin",    "Bogota",   "Boston",     "Budapest",
    "Cairo",     "Chicago",  "Dublin",    "Edinburgh", "Florence",  "Geneva",   "Hanoi",      "Helsinki",
    "Istanbul",  "Jakarta",  "Kyoto",     "Lagos",     "Lima",      "Lisbon",   "London",     "Madrid",
    "Manila",    "Marseille", "Melbourne", "Montreal", "Moscow",    "Mumbai",   "Munich",     "Nairobi",
    "Naples",    "Oslo",     "Paris",     "Prague",    "Quito",     "Rome",     "Santiago",   "Seoul",
    "Shanghai",  "Singapore", "Stockholm", "Sydney",   "Tokyo",     "Toronto",  "Vienna",     "Warsaw",
    "Zurich",    "Havana",   "Dakar",     "Seville",   "Porto",     "Krakow",   "Valencia",   "Osaka",
    "Perth",     "Denver",   "Calgary",   "Tunis",     "Riga",      "Tallinn",  "Vilnius",    "Sofia",
};
#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

#define EVAL_MAX_KEYS 64
#define EVAL_MAX_CHAINS 16
#define EVAL_MAX_HOPS 16
/* Tokens a reply needs: a 7-digit number is at most 7 tokens plus a space
 * and a full stop; a variable name (5 capitals) at most 5 tokens plus a
 * separator. Generous so a model that restates the question first still
 * reaches the answer. */
#define NEEDLE_ANSWER_TOKENS 16
#define VARTRACK_TOKENS_PER_NAME 7

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static uint64_t below(uint64_t *rng, uint64_t n) { return splitmix64(rng) % n; }

/* A growing string. */
typedef struct {
    char *buf;
    size_t len, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *grown = realloc(b->buf, cap);
        if (!grown) {
            b->oom = true;
            return;
        }
        b->buf = grown, b->cap = cap;
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = 0;
}
static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static char *dup_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *dup_printf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s) {
        va_start(ap, fmt);
        vsnprintf(s, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    return s;
}

/* Tokens of " sentence" (words when t is NULL). */
static la_status count_tokens(const la_tokenizer *t, const char *sentence, int64_t *n) {
    if (!t) {
        int64_t words = 0;
        for (const char *c = sentence; *c; c++) words += !isspace((unsigned char)*c) && (c == sentence || isspace((unsigned char)c[-1]));
        *n = words;
        return LA_OK;
    }
    sbuf b = {0};
    sb_str(&b, " ");
    sb_str(&b, sentence);
    if (b.oom) return la_fail(LA_ERR_NOMEM, "la_eval_build: no memory to count a sentence's tokens");
    int32_t *ids = NULL;
    la_status st = la_tokenize(t, b.buf, b.len, false, false, &ids, n);
    free(ids);
    free(b.buf);
    return st;
}

/* A statement placed in the filler. */
typedef struct {
    char text[96];
    double depth;
    int64_t tokens;
    int64_t boundary; /* filler sentences before it */
} statement;

static void filler_sentence(uint64_t *rng, char *out, size_t cap) {
    snprintf(out, cap, "%s %s %s %s.", SUBJECTS[below(rng, COUNT(SUBJECTS))], VERBS[below(rng, COUNT(VERBS))],
             OBJECTS[below(rng, COUNT(OBJECTS))], TAILS[below(rng, COUNT(TAILS))]);
}

/* Distinct random picks: k values from [0, n). */
static void distinct(uint64_t *rng, int n, int k, int *out) {
    for (int i = 0; i < k; i++) {
        int v;
        bool seen;
        do {
            v = (int)below(rng, (uint64_t)n);
            seen = false;
            for (int j = 0; j < i; j++) seen |= out[j] == v;
        } while (seen);
        out[i] = v;
    }
}

static void random_name(uint64_t *rng, char name[6]) {
    for (int i = 0; i < 5; i++) name[i] = (char)('A' + below(rng, 26));
    name[5] = 0;
}

la_eval_params la_eval_params_default(void) {
    return (la_eval_params){.task = LA_EVAL_NEEDLE, .depth = 0.5, .n_keys = 4, .n_chains = 2, .n_hops = 4};
}

void la_eval_sample_free(la_eval_sample *s) {
    if (!s) return;
    free(s->instruction);
    free(s->context);
    free(s->question);
    free(s->answer_prefix);
    for (int32_t i = 0; s->answers && i < s->n_answers; i++) free(s->answers[i]);
    free(s->answers);
    memset(s, 0, sizeof *s);
}

static la_status check_params(const la_eval_params *p) {
    if (p->task != LA_EVAL_NEEDLE && p->task != LA_EVAL_MULTIKEY && p->task != LA_EVAL_VARTRACK)
        return la_fail(LA_ERR_ARGUMENT, "la_eval_build: unknown task %d", (int)p->task);
    if (p->n_tokens < 1 || p->n_tokens > LA_SESSION_MAX_CTX)
        return la_fail(LA_ERR_ARGUMENT, "la_eval_build: n_tokens %lld is outside [1, %lld]", (long long)p->n_tokens,
                       (long long)LA_SESSION_MAX_CTX);
    if (!(p->depth >= 0 && p->depth <= 1))
        return la_fail(LA_ERR_ARGUMENT, "la_eval_build: depth %g is outside [0, 1]", p->depth);
    if (p->task == LA_EVAL_MULTIKEY && (p->n_keys < 2 || p->n_keys > EVAL_MAX_KEYS))
        return la_fail(LA_ERR_ARGUMENT, "la_eval_build: n_keys %d is outside [2, %d]", (int)p->n_keys, EVAL_MAX_KEYS);
    if (p->task == LA_EVAL_VARTRACK && (p->n_chains < 1 || p->n_chains > EVAL_MAX_CHAINS))
        return la_fail(LA_ERR_ARGUMENT, "la_eval_build: n_chains %d is outside [1, %d]", (int)p->n_chains,
                       EVAL_MAX_CHAINS);
    if (p->task == LA_EVAL_VARTRACK && (p->n_hops < 0 || p->n_hops > EVAL_MAX_HOPS))
        return la_fail(LA_ERR_ARGUMENT, "la_eval_build: n_hops %d is outside [0, %d]", (int)p->n_hops, EVAL_MAX_HOPS);
    return LA_OK;
}

/* The task's statements (in the order they must appear when depths tie),
 * the question and the answers. */
static la_status make_statements(const la_eval_params *p, uint64_t *rng, statement *st, int *n_st, la_eval_sample *out) {
    char number[16], city_q[32];
    if (p->task == LA_EVAL_NEEDLE || p->task == LA_EVAL_MULTIKEY) {
        int n = p->task == LA_EVAL_NEEDLE ? 1 : p->n_keys;
        int cities[EVAL_MAX_KEYS] = {0};
        uint32_t numbers[EVAL_MAX_KEYS] = {0};
        distinct(rng, COUNT(CITIES), n, cities);
        for (int i = 0; i < n; i++) {
            bool seen;
            do {
                numbers[i] = 1000000u + (uint32_t)below(rng, 9000000u);
                seen = false;
                for (int j = 0; j < i; j++) seen |= numbers[j] == numbers[i];
            } while (seen);
            snprintf(st[i].text, sizeof st[i].text, "The special magic number for %s is %u.", CITIES[cities[i]],
                     (unsigned)numbers[i]);
            st[i].depth = i == 0 ? p->depth : (double)below(rng, 1000001) / 1e6;
        }
        *n_st = n;
        snprintf(number, sizeof number, "%u", (unsigned)numbers[0]);
        snprintf(city_q, sizeof city_q, "%s", CITIES[cities[0]]);
        out->instruction = strdup(n == 1 ? "A special magic number is hidden within the following text. Make sure to "
                                           "memorize it. I will quiz you about the number afterwards."
                                         : "Some special magic numbers are hidden within the following text. Make "
                                           "sure to memorize them. I will quiz you about the numbers afterwards.");
        out->question = dup_printf("What is the special magic number for %s mentioned in the provided text?", city_q);
        out->answer_prefix = dup_printf("The special magic number for %s mentioned in the provided text is", city_q);
        out->answers = calloc(1, sizeof *out->answers);
        if (out->answers) out->n_answers = 1, out->answers[0] = strdup(number);
        out->max_answer_tokens = NEEDLE_ANSWER_TOKENS;
    } else {
        const int chains = p->n_chains, per = p->n_hops + 1, total = chains * per;
        char names[EVAL_MAX_CHAINS * (EVAL_MAX_HOPS + 1)][6];
        uint32_t values[EVAL_MAX_CHAINS];
        for (int i = 0; i < total; i++) {
            bool seen;
            do {
                random_name(rng, names[i]);
                seen = false;
                for (int j = 0; j < i; j++) seen |= !strcmp(names[j], names[i]);
            } while (seen);
        }
        for (int c = 0; c < chains; c++) {
            bool seen;
            do {
                values[c] = 10000u + (uint32_t)below(rng, 90000u);
                seen = false;
                for (int j = 0; j < c; j++) seen |= values[j] == values[c];
            } while (seen);
        }
        /* hop-major, so every chain's statements come in order */
        for (int h = 0, k = 0; h < per; h++)
            for (int c = 0; c < chains; c++, k++) {
                const char *name = names[c * per + h];
                if (h == 0) snprintf(st[k].text, sizeof st[k].text, "VAR %.5s = %u.", name, (unsigned)values[c]);
                else snprintf(st[k].text, sizeof st[k].text, "VAR %.5s = VAR %.5s.", name, names[c * per + h - 1]);
                st[k].depth = (double)(k + 1) / (double)(total + 1);
            }
        *n_st = total;
        snprintf(number, sizeof number, "%u", (unsigned)values[0]);
        out->instruction = strdup("Memorize and track the chain(s) of variable assignment hidden in the following text.");
        out->question = dup_printf("Question: Find all variables that are assigned the value %s in the text above.", number);
        out->answer_prefix = dup_printf("Answer: According to the chain(s) of variable assignment in the text above, "
                                        "%d variables are assigned the value %s, they are:",
                                        per, number);
        out->answers = calloc((size_t)per, sizeof *out->answers);
        if (out->answers) {
            out->n_answers = per;
            for (int h = 0; h < per; h++) out->answers[h] = strdup(names[h]);
        }
        out->max_answer_tokens = per * VARTRACK_TOKENS_PER_NAME;
    }
    bool oom = !out->instruction || !out->question || !out->answer_prefix || !out->answers;
    for (int32_t i = 0; !oom && i < out->n_answers; i++) oom = !out->answers[i];
    return oom ? la_fail(LA_ERR_NOMEM, "la_eval_build: no memory for the question") : LA_OK;
}

la_status la_eval_build(const la_tokenizer *t, const la_eval_params *p, la_eval_sample *out) {
    if (!out) return la_fail(LA_ERR_NULL, "la_eval_build: out is NULL");
    memset(out, 0, sizeof *out);
    if (!p) return la_fail(LA_ERR_NULL, "la_eval_build: params p is NULL");
    la_status st = check_params(p);
    if (st) return st;
    uint64_t rng = p->seed ^ ((uint64_t)p->task << 56);
    statement *sts = calloc(EVAL_MAX_CHAINS * (EVAL_MAX_HOPS + 1) + EVAL_MAX_KEYS, sizeof *sts);
    int64_t *sent_tok = NULL; /* filler sentence token counts */
    uint64_t *sent_seed = NULL;
    int n_st = 0;
    sbuf ctx = {0};
    if (!sts) {
        st = la_fail(LA_ERR_NOMEM, "la_eval_build: no memory");
        goto fail;
    }
    if ((st = make_statements(p, &rng, sts, &n_st, out))) goto fail;
    int64_t st_tokens = 0;
    for (int i = 0; i < n_st; i++) {
        if ((st = count_tokens(t, sts[i].text, &sts[i].tokens))) goto fail;
        st_tokens += sts[i].tokens;
    }
    if (st_tokens > p->n_tokens) {
        st = la_fail(LA_ERR_ARGUMENT, "la_eval_build: n_tokens %lld is too small for the task's statements (%lld tokens)",
                     (long long)p->n_tokens, (long long)st_tokens);
        goto fail;
    }
    /* Filler sentences while they fit; each is regenerated from its own
     * seed when the context is written, so only counts are kept. A sentence
     * that does not fit is skipped for a shorter one while the gap left is
     * longer than every sentence in the context, so the context falls short
     * of n_tokens by less than its own longest sentence. */
    const int64_t filler_target = p->n_tokens - st_tokens;
    int64_t n_sent = 0, cap = 0, filler = 0, longest = 0, misses = 0;
    for (int i = 0; i < n_st; i++) longest = sts[i].tokens > longest ? sts[i].tokens : longest;
    char sentence[160];
    for (;;) {
        uint64_t seed = splitmix64(&rng), r = seed;
        filler_sentence(&r, sentence, sizeof sentence);
        int64_t n;
        if ((st = count_tokens(t, sentence, &n))) goto fail;
        if (filler + n > filler_target) {
            if (filler_target - filler <= longest || ++misses > 256) break;
            continue;
        }
        longest = n > longest ? n : longest;
        if (n_sent == cap) {
            cap = cap ? cap * 2 : 64;
            int64_t *a = realloc(sent_tok, (size_t)cap * sizeof *a);
            if (a) sent_tok = a;
            uint64_t *b = a ? realloc(sent_seed, (size_t)cap * sizeof *b) : NULL;
            if (b) sent_seed = b;
            if (!a || !b) {
                st = la_fail(LA_ERR_NOMEM, "la_eval_build: no memory for %lld sentences", (long long)cap);
                goto fail;
            }
        }
        sent_tok[n_sent] = n, sent_seed[n_sent] = seed;
        n_sent++;
        filler += n;
    }
    /* Each statement goes to the sentence boundary whose filler prefix is
     * nearest depth x filler (ties to the earlier boundary). */
    for (int i = 0; i < n_st; i++) {
        double want = sts[i].depth * (double)filler;
        int64_t k = 0, before = 0;
        while (k < n_sent && (double)(before + sent_tok[k]) <= want) before += sent_tok[k++];
        if (k < n_sent && (double)(before + sent_tok[k]) - want < want - (double)before) k++;
        sts[i].boundary = k;
    }
    /* Write: at each boundary, its statements in order, then the sentence. */
    int64_t tokens = 0;
    bool first = true;
    for (int64_t k = 0; k <= n_sent; k++) {
        for (int i = 0; i < n_st; i++) {
            if (sts[i].boundary != k) continue;
            if (!first) sb_str(&ctx, " ");
            if (i == 0) out->needle_offset = (int64_t)ctx.len, out->needle_tokens = tokens;
            sb_str(&ctx, sts[i].text);
            tokens += sts[i].tokens;
            first = false;
        }
        if (k == n_sent) break;
        uint64_t r = sent_seed[k];
        filler_sentence(&r, sentence, sizeof sentence);
        if (!first) sb_str(&ctx, " ");
        sb_str(&ctx, sentence);
        tokens += sent_tok[k];
        first = false;
    }
    if (ctx.oom || !ctx.buf) {
        st = la_fail(LA_ERR_NOMEM, "la_eval_build: no memory for the context");
        goto fail;
    }
    out->context = ctx.buf;
    out->n_tokens = tokens;
    free(sts);
    free(sent_tok);
    free(sent_seed);
    return la_succeed();
fail:
    free(ctx.buf);
    free(sts);
    free(sent_tok);
    free(sent_seed);
    la_eval_sample_free(out);
    return st;
}

la_status la_eval_prompt(const la_eval_sample *s, const la_chat_template *tmpl, char **text, size_t *len) {
    if (!text) return la_fail(LA_ERR_NULL, "la_eval_prompt: text is NULL");
    *text = NULL;
    if (!s || !s->instruction || !s->context || !s->question || !s->answer_prefix)
        return la_fail(LA_ERR_NULL, "la_eval_prompt: %s", !s ? "sample s is NULL" : "the sample is not built");
    sbuf user = {0}, all = {0};
    sb_str(&user, s->instruction);
    sb_str(&user, "\n");
    sb_str(&user, s->context);
    sb_str(&user, "\n");
    sb_str(&user, s->question);
    if (user.oom) {
        free(user.buf);
        return la_fail(LA_ERR_NOMEM, "la_eval_prompt: no memory for the prompt");
    }
    if (tmpl) {
        char *turn = NULL;
        size_t turn_len = 0;
        la_status st = la_chat_format(tmpl, NULL, user.buf, &turn, &turn_len);
        free(user.buf);
        if (st) return st;
        all = (sbuf){.buf = turn, .len = turn_len, .cap = turn_len + 1};
    } else {
        all = user;
        sb_str(&all, "\n");
    }
    sb_str(&all, s->answer_prefix);
    if (all.oom) {
        free(all.buf);
        return la_fail(LA_ERR_NOMEM, "la_eval_prompt: no memory for the prompt");
    }
    *text = all.buf;
    if (len) *len = all.len;
    return la_succeed();
}

static bool word_char(char c) { return isalnum((unsigned char)c) != 0; }

/* answer occurs in reply[0, len) with no letter or digit on either side. */
static bool contains_word(const char *reply, size_t len, const char *answer) {
    size_t n = strlen(answer);
    for (size_t i = 0; n && n <= len && i <= len - n; i++)
        if (!memcmp(reply + i, answer, n) && (i == 0 || !word_char(reply[i - 1])) &&
            (i + n == len || !word_char(reply[i + n])))
            return true;
    return false;
}

la_status la_eval_score(const la_eval_sample *s, const char *reply, size_t len, double *score) {
    if (!score) return la_fail(LA_ERR_NULL, "la_eval_score: score is NULL");
    *score = 0;
    if (!s || (!reply && len)) return la_fail(LA_ERR_NULL, "la_eval_score: %s is NULL", !s ? "sample s" : "reply");
    if (s->n_answers < 1 || !s->answers) return la_fail(LA_ERR_NULL, "la_eval_score: the sample has no answers");
    int found = 0;
    for (int32_t i = 0; i < s->n_answers; i++) found += reply && contains_word(reply, len, s->answers[i]);
    *score = (double)found / (double)s->n_answers;
    return la_succeed();
}
