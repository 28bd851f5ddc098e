/* FlexPrefill's per-head choice (la_sparse_select_flex): each head's lists
 * are exactly those of block top-k (la_sparse_select_topk with gamma, sink
 * and local blocks) when its divergence is at most tau and of
 * vertical-slash (la_sparse_select_vslash) otherwise; the divergence it
 * reports equals the one recomputed here in double from the dense
 * probabilities and the pooled estimate; tau 1 (above sqrt(ln 2)) is all
 * top-k; every index valid, deterministic, its quality as recomputed; bad
 * budgets rejected with their statuses. */
#include "select_check.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static bool same_row(const la_block_index *a, const la_block_index *b, int64_t r) {
    const int64_t na = a->offsets[r + 1] - a->offsets[r], nb = b->offsets[r + 1] - b->offsets[r];
    return na == nb && !memcmp(a->key_blocks + a->offsets[r], b->key_blocks + b->offsets[r], sizeof(int32_t) * (size_t)na);
}

/* The divergence of head h of sequence b, from the header's words. */
static double want_divergence(const sc_problem *P, int64_t bs, int64_t b, int64_t h) {
    const int64_t D = P->D, G = P->H / P->Hkv, nqb = (P->L + bs - 1) / bs, nkb = (P->Lk + bs - 1) / bs;
    const int64_t i0 = (nqb - 1) * bs, i1 = P->L;
    const double scale = 1 / sqrt((double)D);
    double *truth = calloc((size_t)nkb, sizeof(double)), *est = malloc(sizeof(double) * (size_t)nkb);
    double *s = malloc(sizeof(double) * (size_t)P->Lk), qbar[64] = {0};
    int64_t rows = 0;
    for (int64_t i = i0; i < i1; i++) {
        double m = -INFINITY, z = 0;
        for (int64_t j = 0; j < P->Lk; j++) {
            s[j] = -INFINITY;
            if (!sc_visible(&P->p, i, j, P->L, P->Lk)) continue;
            double dot = 0;
            for (int64_t d = 0; d < D; d++)
                dot += tu_get(&P->q.t, (int64_t[]){b, i, h, d}) * tu_get(&P->k.t, (int64_t[]){b, j, h / G, d});
            s[j] = scale * dot;
            m = fmax(m, s[j]);
        }
        if (m == -INFINITY) continue;
        rows++;
        for (int64_t j = 0; j < P->Lk; j++) z += s[j] == -INFINITY ? 0 : exp(s[j] - m);
        for (int64_t j = 0; j < P->Lk; j++) truth[j / bs] += s[j] == -INFINITY ? 0 : exp(s[j] - m) / z;
    }
    for (int64_t i = i0; i < i1; i++)
        for (int64_t d = 0; d < D; d++) qbar[d] += tu_get(&P->q.t, (int64_t[]){b, i, h, d}) / (double)(i1 - i0);
    double m = -INFINITY, z = 0, js = 0;
    for (int64_t kb = 0; kb < nkb; kb++) {
        est[kb] = -INFINITY;
        if (!sc_block_visible(&P->p, nqb - 1, kb, bs, P->L, P->Lk)) continue;
        const int64_t j0 = kb * bs, j1 = j0 + bs < P->Lk ? j0 + bs : P->Lk;
        double dot = 0;
        for (int64_t d = 0; d < D; d++) {
            double kd = 0;
            for (int64_t j = j0; j < j1; j++) kd += tu_get(&P->k.t, (int64_t[]){b, j, h / G, d});
            dot += qbar[d] * kd / (double)(j1 - j0);
        }
        est[kb] = scale * dot + log((double)(j1 - j0));
        m = fmax(m, est[kb]);
    }
    for (int64_t kb = 0; kb < nkb; kb++) z += est[kb] == -INFINITY ? 0 : exp(est[kb] - m);
    for (int64_t kb = 0; kb < nkb && rows; kb++) {
        const double a = est[kb] == -INFINITY ? 0 : exp(est[kb] - m) / z, c = truth[kb] / (double)rows, mid = (a + c) / 2;
        if (a > 0) js += 0.5 * a * log(a / mid);
        if (c > 0) js += 0.5 * c * log(c / mid);
    }
    free(truth), free(est), free(s);
    return rows ? sqrt(fmax(js, 0)) : NAN;
}

static void cases(uint64_t *rng, la_context *ctx) {
    int64_t heads_v = 0, heads_t = 0;
    for (int n = 0; n < 10; n++) {
        la_attention_params p = la_attention_params_default();
        p.causal = (int)tu_randint(rng, 0, 1);
        if (tu_randint(rng, 0, 2) == 0) p.window_left = tu_randint(rng, 0, 60);
        if (tu_randint(rng, 0, 2) == 0) p.sinks = tu_randint(rng, 1, 10);
        int64_t L = tu_randint(rng, 1, 160), Lk = tu_randint(rng, 0, 1) ? L : tu_randint(rng, 1, 160);
        if (n == 1) L = Lk = 150; /* tau 0 below: several key blocks, so heads diverge */
        sc_problem R;
        sc_make(&R, rng, tu_randint(rng, 1, 2), L, Lk, 4, tu_randint(rng, 0, 1) ? 2 : 4, 8 * tu_randint(rng, 1, 2), p, false);
        la_sparse_flex fo = {.block_size = n == 1 ? 16 : tu_randint(rng, 1, 40), .gamma = (float)tu_uniform(rng, 0.3, 1),
                             .tau = n == 0 ? 1.0f : n == 1 ? 0.0f : (float)tu_uniform(rng, 0, 0.1), .vertical = tu_randint(rng, 0, 20),
                             .slash = tu_randint(rng, 0, 20), .sink_blocks = tu_randint(rng, 0, 2),
                             .local_blocks = tu_randint(rng, 0, 2)};
        char what[200];
        snprintf(what, sizeof what, "flex %d (L %lld Lk %lld bs %lld gamma %.2f tau %.3f v %lld s %lld causal %d)", n,
                 (long long)L, (long long)Lk, (long long)fo.block_size, (double)fo.gamma, (double)fo.tau,
                 (long long)fo.vertical, (long long)fo.slash, p.causal);
        const int64_t nbh = R.B * R.H;
        double div[64], div1[64];
        la_block_index a, b, tk, vs;
        la_context *one;
        la_context_create(&one, 1);
        TU_EXPECT_STATUS(la_sparse_select_flex(ctx, &fo, &R.p, &R.q.t, &R.k.t, &a, div), LA_OK);
        TU_EXPECT_STATUS(la_sparse_select_flex(one, &fo, &R.p, &R.q.t, &R.k.t, &b, div1), LA_OK);
        la_context_destroy(one);
        la_sparse_topk to = {.block_size = fo.block_size, .gamma = fo.gamma, .sink_blocks = fo.sink_blocks,
                             .local_blocks = fo.local_blocks};
        la_sparse_vslash vo = {.block_size = fo.block_size, .vertical = fo.vertical, .slash = fo.slash};
        TU_EXPECT_STATUS(la_sparse_select_topk(ctx, &to, &R.p, &R.q.t, &R.k.t, &tk), LA_OK);
        TU_EXPECT_STATUS(la_sparse_select_vslash(ctx, &vo, &R.p, &R.q.t, &R.k.t, &vs), LA_OK);
        sc_check_valid(&R, &a, what);
        tu_check(sc_same_index(&a, &b) && !memcmp(div, div1, sizeof(double) * (size_t)nbh),
                 "%s: differs between 3 threads and 1", what);
        bool follows = true, close = true;
        int64_t nv = 0;
        double worst = 0;
        for (int64_t bh = 0; bh < nbh; bh++) {
            const bool v = div[bh] > fo.tau;
            nv += v;
            for (int64_t qb = 0; qb < a.q_blocks; qb++) follows &= same_row(&a, v ? &vs : &tk, bh * a.q_blocks + qb);
            const double w = want_divergence(&R, fo.block_size, bh / R.H, bh % R.H);
            /* f32 dots in the library against double here */
            const bool ok = isnan(w) ? isnan(div[bh]) : fabs(div[bh] - w) <= 1e-4;
            if (!ok) worst = fmax(worst, isnan(w - div[bh]) ? INFINITY : fabs(div[bh] - w));
            close &= ok;
            close &= isnan(div[bh]) || (div[bh] >= 0 && div[bh] <= sqrt(log(2.0)) + 1e-9);
        }
        heads_v += nv, heads_t += nbh - nv;
        tu_check(follows, "%s: a head's lists are not its choice's selector's", what);
        tu_check(close, "%s: divergence off the recomputed one by %.3g (tolerance 1e-4)", what, worst);
        tu_check(n != 0 || nv == 0, "%s: tau 1 yet %lld vertical-slash heads", what, (long long)nv);
        sc_check_quality(ctx, &R, &a, what);
        la_block_index_free(&a), la_block_index_free(&b), la_block_index_free(&tk), la_block_index_free(&vs);
        sc_drop(&R);
    }
    tu_check(heads_v > 0 && heads_t > 0, "both choices should occur over the cases: %lld vertical-slash, %lld top-k heads",
             (long long)heads_v, (long long)heads_t);
}

static void bad_budgets(uint64_t *rng, la_context *ctx) {
    la_attention_params p = la_attention_params_default();
    sc_problem P;
    sc_make(&P, rng, 1, 64, 64, 2, 1, 8, p, false);
    la_block_index x;
    double div[2] = {-7, -7};
#define BAD(field, value, want)                                                                        \
    do {                                                                                                \
        la_sparse_flex o = la_sparse_flex_default();                                                    \
        o.field = value;                                                                                \
        TU_EXPECT_STATUS(la_sparse_select_flex(ctx, &o, &P.p, &P.q.t, &P.k.t, &x, div), want);          \
        tu_check(x.offsets == NULL && x.block_size == 0 && div[0] == -7, "flex %s: out or divergence written on failure", #field); \
    } while (0)
    BAD(gamma, 0, LA_ERR_ARGUMENT);
    BAD(gamma, 1.5f, LA_ERR_ARGUMENT);
    BAD(gamma, NAN, LA_ERR_ARGUMENT);
    BAD(tau, -0.1f, LA_ERR_ARGUMENT);
    BAD(tau, NAN, LA_ERR_ARGUMENT);
    BAD(tau, INFINITY, LA_ERR_ARGUMENT);
    BAD(vertical, -1, LA_ERR_ARGUMENT);
    BAD(slash, -1, LA_ERR_ARGUMENT);
    BAD(sink_blocks, -1, LA_ERR_ARGUMENT);
    BAD(local_blocks, -1, LA_ERR_ARGUMENT);
    BAD(block_size, -1, LA_ERR_ARGUMENT);
#undef BAD
    la_sparse_flex o = la_sparse_flex_default();
    la_attention_params sig = p;
    sig.score = LA_SCORE_SIGMOID;
    TU_EXPECT_STATUS(la_sparse_select_flex(ctx, &o, &sig, &P.q.t, &P.k.t, &x, NULL), LA_ERR_UNSUPPORTED);
    TU_EXPECT_STATUS(la_sparse_select_flex(ctx, NULL, &p, &P.q.t, &P.k.t, &x, NULL), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_sparse_select_flex(ctx, &o, &p, &P.q.t, &P.k.t, NULL, NULL), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_sparse_select_flex(ctx, &o, &p, &P.q.t, &P.k.t, &x, NULL), LA_OK);
    la_block_index_free(&x);
    sc_drop(&P);
}

int main(void) {
    uint64_t rng = tu_seed();
    la_context *ctx;
    la_context_create(&ctx, 3);
    cases(&rng, ctx);
    bad_budgets(&rng, ctx);
    la_context_destroy(ctx);
    return tu_finish();
}
