/* Sampling: temperature, then top-k, then top-p over the tempered
 * distribution (the order HF transformers uses; top-k commutes with the
 * temperature, top-p does not), then one draw from xoshiro256**. */
#include "model/sampler.h"

#include "base/base.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Without top-k, top-p first sorts only the tokens holding at least this
 * share of the probability mass: on a 49k vocabulary a sampled step has a few
 * hundred such tokens, so the sort is ~100x cheaper than sorting everything.
 * The result is exact: when those tokens already reach top_p, the smallest
 * prefix reaching it lies within them (every other token is less likely);
 * otherwise everything is sorted. */
#define LA_TOP_P_PREFILTER_SHARE 1e-6

typedef struct {
    int32_t id;
    float logit;
    double weight; /* exp((logit - max) / temperature), unnormalised */
} la_candidate;

struct la_sampler {
    la_sampler_params p;
    int32_t n_vocab;
    uint64_t rng[4];
    la_candidate *cand; /* n_vocab */
};

int32_t la_sampler_vocab(const la_sampler *s) { return s ? s->n_vocab : 0; }

la_sampler_params la_sampler_params_default(void) {
    return (la_sampler_params){.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .seed = 0};
}

/* ---- PRNG: xoshiro256** seeded through splitmix64 (Blackman & Vigna). */
static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t xoshiro_next(uint64_t s[4]) {
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

static double uniform01(uint64_t s[4]) { return (double)(xoshiro_next(s) >> 11) * 0x1.0p-53; }

void la_sampler_reseed(la_sampler *s, uint64_t seed) {
    if (!s) return;
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&seed);
}

la_status la_sampler_new(const la_sampler_params *p, int32_t n_vocab, la_sampler **out) {
    if (!out) return la_fail(LA_ERR_NULL, "la_sampler_new: out is NULL");
    *out = NULL;
    if (!p) return la_fail(LA_ERR_NULL, "la_sampler_new: params p is NULL");
    if (n_vocab <= 0) return la_fail(LA_ERR_ARGUMENT, "la_sampler_new: n_vocab is %d; must be > 0", (int)n_vocab);
    if (isnan(p->temperature) || isinf(p->temperature))
        return la_fail(LA_ERR_ARGUMENT, "la_sampler_new: temperature %g is not finite", (double)p->temperature);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return la_fail(LA_ERR_ARGUMENT, "la_sampler_new: top_p %g must be in (0, 1]", (double)p->top_p);
    la_sampler *s = calloc(1, sizeof *s);
    if (s) s->cand = malloc((size_t)n_vocab * sizeof *s->cand);
    if (!s || !s->cand) {
        free(s);
        return la_fail(LA_ERR_NOMEM, "la_sampler_new: no memory for %d candidates", (int)n_vocab);
    }
    s->p = *p;
    s->n_vocab = n_vocab;
    la_sampler_reseed(s, p->seed);
    *out = s;
    return la_succeed();
}

void la_sampler_free(la_sampler *s) {
    if (!s) return;
    free(s->cand);
    free(s);
}

/* Index of the largest logit (lowest id on ties); fails on +inf / NaN or
 * when every logit is -inf. Greedy generation runs it on every token (the
 * whole vocabulary, 49152 logits for SmolLM2), serially between two steps,
 * so it is two passes that vectorise (GNU vector arithmetic, four lanes):
 * the largest value, with any NaN or +inf noticed on the way, then the
 * first index holding it. Equal values are equal however the lanes met
 * them (+0 and -0 included), so it is the same index as the one-pass scan
 * with a strict compare gives. */
typedef float sampler_f32x4 __attribute__((vector_size(16)));
typedef int32_t sampler_i32x4 __attribute__((vector_size(16)));

static la_status argmax_checked(const float *logits, int32_t n, int32_t *best_out) {
    const sampler_f32x4 inf = {INFINITY, INFINITY, INFINITY, INFINITY};
    sampler_f32x4 m = -inf;
    sampler_i32x4 bad = {0, 0, 0, 0};
    int32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        sampler_f32x4 x;
        memcpy(&x, logits + i, sizeof x);
        bad |= ~(x < inf); /* NaN or +inf */
        const sampler_i32x4 gt = x > m;
        m = (sampler_f32x4)(((sampler_i32x4)x & gt) | ((sampler_i32x4)m & ~gt));
    }
    float best_value = -INFINITY;
    for (int k = 0; k < 4; k++) best_value = m[k] > best_value ? m[k] : best_value;
    bool any_bad = bad[0] | bad[1] | bad[2] | bad[3];
    for (; i < n; i++) {
        any_bad |= !(logits[i] < INFINITY);
        best_value = logits[i] > best_value ? logits[i] : best_value;
    }
    for (i = 0; any_bad && i < n; i++) /* the first bad one, for the message */
        if (!(logits[i] < INFINITY)) return la_fail(LA_ERR_ARGUMENT, "sampler: logit of token %d is %g", (int)i, (double)logits[i]);
    if (best_value == -INFINITY) return la_fail(LA_ERR_ARGUMENT, "sampler: every one of the %d logits is -inf", (int)n);
    for (i = 0; logits[i] != best_value;) i++;
    *best_out = i;
    return LA_OK;
}

/* a ranks before b: more likely, then lower id (so ties are deterministic). */
static bool ranks_before(const la_candidate *a, const la_candidate *b) {
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int compare_rank(const void *pa, const void *pb) {
    const la_candidate *a = pa, *b = pb;
    return ranks_before(a, b) ? -1 : ranks_before(b, a) ? 1 : 0;
}

/* heap[0] is the candidate ranking last among those kept. */
static void sift_down(la_candidate *heap, int32_t n, int32_t i) {
    for (;;) {
        int32_t worst = i, l = 2 * i + 1, r = l + 1;
        if (l < n && ranks_before(&heap[worst], &heap[l])) worst = l;
        if (r < n && ranks_before(&heap[worst], &heap[r])) worst = r;
        if (worst == i) return;
        la_candidate t = heap[i];
        heap[i] = heap[worst];
        heap[worst] = t;
        i = worst;
    }
}

/* The k best tokens, sorted best first, in cand[0..k). O(V log k). */
static void select_top_k(const float *logits, int32_t n_vocab, int32_t k, la_candidate *cand) {
    for (int32_t i = 0; i < k; i++) cand[i] = (la_candidate){.id = i, .logit = logits[i]};
    for (int32_t i = k / 2 - 1; i >= 0; i--) sift_down(cand, k, i);
    for (int32_t i = k; i < n_vocab; i++) {
        la_candidate c = {.id = i, .logit = logits[i]};
        if (ranks_before(&c, &cand[0])) {
            cand[0] = c;
            sift_down(cand, k, 0);
        }
    }
    qsort(cand, (size_t)k, sizeof *cand, compare_rank);
}

/* Fill s->cand[0 .. *n_kept) with the tokens that survive the filters, their
 * unnormalised weights, and *total = their sum. Candidates end up sorted best
 * first whenever top-k or top-p is active. */
static la_status filter(la_sampler *s, const float *logits, int32_t *n_kept, double *total) {
    int32_t best = 0;
    la_status st = argmax_checked(logits, s->n_vocab, &best);
    if (st) return st;
    const double max_logit = logits[best], inv_t = 1.0 / s->p.temperature;
    la_candidate *cand = s->cand;
    int32_t n = s->n_vocab;
    bool sorted = false;
    if (s->p.top_k > 0 && s->p.top_k < n) {
        n = s->p.top_k;
        select_top_k(logits, s->n_vocab, n, cand);
        sorted = true;
    } else {
        for (int32_t i = 0; i < n; i++) cand[i] = (la_candidate){.id = i, .logit = logits[i]};
    }
    double sum = 0;
    for (int32_t i = 0; i < n; i++) {
        /* The best token gets exactly 1 even when inv_t overflows to inf;
         * -inf logits get 0. */
        double d = (double)cand[i].logit - max_logit;
        cand[i].weight = d == 0 ? 1.0 : exp(d * inv_t);
        sum += cand[i].weight;
    }
    if (s->p.top_p < 1.0f) {
        const double target = (double)s->p.top_p * sum;
        if (!sorted) {
            /* Move the tokens above the prefilter share to the front; sort
             * only them when they reach the target mass. */
            const double floor_weight = LA_TOP_P_PREFILTER_SHARE * sum;
            int32_t n_big = 0;
            double big_sum = 0;
            for (int32_t i = 0; i < n; i++)
                if (cand[i].weight >= floor_weight) {
                    la_candidate t = cand[n_big];
                    cand[n_big] = cand[i];
                    cand[i] = t;
                    big_sum += cand[n_big++].weight;
                }
            qsort(cand, (size_t)(big_sum >= target ? n_big : n), sizeof *cand, compare_rank);
        }
        double cum = 0;
        int32_t keep = 0;
        while (keep < n && cum < target) cum += cand[keep++].weight;
        n = keep;
        sum = cum;
    }
    *n_kept = n;
    *total = sum;
    return LA_OK;
}

la_status la_sampler_sample(la_sampler *s, const float *logits, int32_t *token) {
    if (!s || !logits || !token) return la_fail(LA_ERR_NULL, "la_sampler_sample: %s is NULL",
                                                !s ? "sampler" : !logits ? "logits" : "token");
    la_status st;
    if (s->p.temperature <= 0.0f) {
        if ((st = argmax_checked(logits, s->n_vocab, token))) return st;
        return la_succeed();
    }
    int32_t n;
    double total;
    if ((st = filter(s, logits, &n, &total))) return st;
    const double u = uniform01(s->rng) * total;
    double cum = 0;
    int32_t pick = -1;
    for (int32_t i = 0; i < n; i++) {
        if (s->cand[i].weight <= 0) continue;
        pick = i; /* rounding can leave u just above the final sum: keep the last positive one */
        cum += s->cand[i].weight;
        if (cum > u) break;
    }
    *token = s->cand[pick].id; /* pick >= 0: the best candidate has weight exp(0) = 1 */
    return la_succeed();
}

la_status la_sampler_distribution(la_sampler *s, const float *logits, float *probs) {
    if (!s || !logits || !probs) return la_fail(LA_ERR_NULL, "la_sampler_distribution: %s is NULL",
                                                !s ? "sampler" : !logits ? "logits" : "probs");
    for (int32_t i = 0; i < s->n_vocab; i++) probs[i] = 0.0f;
    la_status st;
    if (s->p.temperature <= 0.0f) {
        int32_t best = 0;
        if ((st = argmax_checked(logits, s->n_vocab, &best))) return st;
        probs[best] = 1.0f;
        return la_succeed();
    }
    int32_t n;
    double total;
    if ((st = filter(s, logits, &n, &total))) return st;
    for (int32_t i = 0; i < n; i++) probs[s->cand[i].id] = (float)(s->cand[i].weight / total);
    return la_succeed();
}
