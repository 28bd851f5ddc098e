/* The routing selector (la_sparse_select_routing and its state): the
 * k-means objective never rises across rounds with decay 0 and falls
 * overall across calls with the EMA; the same seed and calls give the same
 * index and objective at any thread count; every index valid (nothing the
 * rule hides), its recall and density equal to the dense recomputation;
 * a planted cluster routes its query block to its key block; bad budgets,
 * states and arguments rejected with their statuses (out zeroed, state
 * unchanged). */
#include "select_check.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Objective values of the state's last call (at most 64). */
static int64_t objective(const la_sparse_routing_state *st, double *v) {
    int64_t n = 0;
    la_status s = la_sparse_routing_objective(st, v, 64, &n);
    tu_check(s == LA_OK, "objective: %s", la_last_error());
    return n;
}

/* Queries of block qb_planted and keys of block kb_planted of head 0 along
 * one direction (plus noise): a tight cluster among random points. */
static void plant(uint64_t *rng, sc_problem *P, int64_t bs, int64_t qb_planted, int64_t kb_planted) {
    for (int64_t i = qb_planted * bs; i < (qb_planted + 1) * bs; i++)
        for (int64_t d = 0; d < P->D; d++) tu_set(&P->q.t, (int64_t[]){0, i, 0, d}, (d == 0) + 0.05 * tu_uniform(rng, -1, 1));
    for (int64_t j = kb_planted * bs; j < (kb_planted + 1) * bs; j++)
        for (int64_t d = 0; d < P->D; d++) tu_set(&P->k.t, (int64_t[]){0, j, 0, d}, (d == 0) + 0.05 * tu_uniform(rng, -1, 1));
}

static void objective_decreases(uint64_t *rng, la_context *ctx) {
    la_attention_params causal = la_attention_params_default();
    causal.causal = 1;
    sc_problem P;
    sc_make(&P, rng, 2, 256, 256, 4, 2, 16, causal, false);
    plant(rng, &P, 32, 5, 2);
    la_sparse_routing_state *st;
    TU_EXPECT_STATUS(la_sparse_routing_state_create(&st, 4, 16, 6, 11), LA_OK);
    la_sparse_routing o = la_sparse_routing_default();
    o.block_size = 32, o.iterations = 6, o.decay = 0;
    la_block_index x;
    TU_EXPECT_STATUS(la_sparse_select_routing(ctx, &o, st, &P.p, &P.q.t, &P.k.t, &x), LA_OK);
    double v[64];
    int64_t n = objective(st, v);
    tu_check(n == 7, "objective count %lld, want iterations + 1 = 7", (long long)n);
    bool mono = true;
    /* Lloyd's rounds on the sphere: assignment and normalised means each
     * lower the mean 1 - cosine; double sums, so 1e-12 of slack */
    for (int64_t t = 0; t + 1 < n && t + 1 < 64; t++) mono &= v[t + 1] <= v[t] + 1e-12;
    tu_check(mono && v[n - 1] < v[0], "decay 0: objective not decreasing: %.9f %.9f %.9f ... %.9f", v[0], v[1], v[2],
             v[n - 1]);
    sc_check_valid(&P, &x, "routing planted");
    bool found = true;
    for (int64_t h = 0; h < 1; h++) found &= sc_listed(&x, 0, h, 5, 2);
    tu_check(found, "routing planted: query block 5 does not list key block 2");
    sc_check_quality(ctx, &P, &x, "routing planted");
    la_block_index_free(&x);
    la_sparse_routing_state_free(st);

    /* the EMA across calls: the objective falls from the first call's first
     * round to the third call's last */
    TU_EXPECT_STATUS(la_sparse_routing_state_create(&st, 4, 16, 6, 12), LA_OK);
    o.decay = 0.5f, o.iterations = 1;
    double first = NAN, last = NAN;
    for (int c = 0; c < 3; c++) {
        TU_EXPECT_STATUS(la_sparse_select_routing(ctx, &o, st, &P.p, &P.q.t, &P.k.t, &x), LA_OK);
        n = objective(st, v);
        if (c == 0) first = v[0];
        last = v[n - 1];
        la_block_index_free(&x);
    }
    tu_check(last < first, "decay 0.5 over 3 calls: objective %.9f -> %.9f does not fall", first, last);
    /* iterations 0: routes with the centroids as they are, one value */
    o.iterations = 0;
    TU_EXPECT_STATUS(la_sparse_select_routing(ctx, &o, st, &P.p, &P.q.t, &P.k.t, &x), LA_OK);
    n = objective(st, v);
    tu_check(n == 1 && fabs(v[0] - last) < 1e-12, "iterations 0: %lld values, %.12f vs the last call's %.12f",
             (long long)n, v[0], last);
    sc_check_valid(&P, &x, "routing iterations 0");
    la_block_index_free(&x);
    la_sparse_routing_state_free(st);
    sc_drop(&P);
}

static void random_cases(uint64_t *rng, la_context *ctx, bool quick) {
    for (int n = 0; n < (quick ? 5 : 10); n++) {
        la_attention_params p = la_attention_params_default();
        p.causal = (int)tu_randint(rng, 0, 1);
        if (tu_randint(rng, 0, 2) == 0) p.window_left = tu_randint(rng, 0, 60);
        if (tu_randint(rng, 0, 2) == 0) p.sinks = tu_randint(rng, 1, 10);
        const int64_t L = tu_randint(rng, 1, 160), Lk = tu_randint(rng, 0, 1) ? L : tu_randint(rng, 1, 160);
        const int64_t H = 4, Hkv = tu_randint(rng, 0, 1) ? 2 : 4, D = 8 * tu_randint(rng, 1, 3);
        sc_problem R;
        sc_make(&R, rng, tu_randint(rng, 1, 2), L, Lk, H, Hkv, D, p, tu_randint(rng, 0, 1));
        la_sparse_routing o = {.block_size = tu_randint(rng, 1, 40), .members = tu_randint(rng, 0, 1) ? 0 : tu_randint(rng, 1, 30),
                               .iterations = tu_randint(rng, 0, 3), .decay = (float)tu_uniform(rng, 0, 0.95),
                               .sink_blocks = tu_randint(rng, 0, 2), .local_blocks = tu_randint(rng, 0, 2)};
        const int64_t C = tu_randint(rng, 1, 8);
        const uint64_t seed = (uint64_t)tu_randint(rng, 0, 1000);
        char what[200];
        snprintf(what, sizeof what, "routing %d (L %lld Lk %lld D %lld bs %lld C %lld w %lld it %lld decay %.2f causal %d)",
                 n, (long long)L, (long long)Lk, (long long)D, (long long)o.block_size, (long long)C,
                 (long long)o.members, (long long)o.iterations, (double)o.decay, p.causal);
        la_sparse_routing_state *s1, *s2;
        TU_EXPECT_STATUS(la_sparse_routing_state_create(&s1, H, D, C, seed), LA_OK);
        TU_EXPECT_STATUS(la_sparse_routing_state_create(&s2, H, D, C, seed), LA_OK);
        la_context *one;
        la_context_create(&one, 1);
        bool same = true;
        for (int call = 0; call < 2; call++) { /* the second call starts from the first's centroids */
            la_block_index a, b;
            TU_EXPECT_STATUS(la_sparse_select_routing(ctx, &o, s1, &R.p, &R.q.t, &R.k.t, &a), LA_OK);
            TU_EXPECT_STATUS(la_sparse_select_routing(one, &o, s2, &R.p, &R.q.t, &R.k.t, &b), LA_OK);
            sc_check_valid(&R, &a, what);
            double va[64], vb[64];
            int64_t na = objective(s1, va), nb = objective(s2, vb);
            same &= sc_same_index(&a, &b) && na == nb && !memcmp(va, vb, sizeof(double) * (size_t)(na < 64 ? na : 64));
            if (call == 1) sc_check_quality(ctx, &R, &a, what);
            la_block_index_free(&a), la_block_index_free(&b);
        }
        tu_check(same, "%s: 3 threads and 1 differ (index or objective) for the same seed", what);
        la_context_destroy(one);
        la_sparse_routing_state_free(s1), la_sparse_routing_state_free(s2);
        sc_drop(&R);
    }
}

static void bad_arguments(uint64_t *rng, la_context *ctx) {
    la_attention_params p = la_attention_params_default();
    sc_problem P;
    sc_make(&P, rng, 1, 64, 64, 2, 1, 8, p, false);
    la_sparse_routing_state *st = (la_sparse_routing_state *)1;
    TU_EXPECT_STATUS(la_sparse_routing_state_create(NULL, 2, 8, 4, 1), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_sparse_routing_state_create(&st, 0, 8, 4, 1), LA_ERR_ARGUMENT);
    tu_check(st == NULL, "state_create: *out not NULL on failure");
    TU_EXPECT_STATUS(la_sparse_routing_state_create(&st, 2, 0, 4, 1), LA_ERR_ARGUMENT);
    TU_EXPECT_STATUS(la_sparse_routing_state_create(&st, 2, 8, 0, 1), LA_ERR_ARGUMENT);
    TU_EXPECT_STATUS(la_sparse_routing_state_create(&st, 2, 8, 65537, 1), LA_ERR_ARGUMENT);
    TU_EXPECT_STATUS(la_sparse_routing_state_create(&st, INT64_MAX / 2, 8, 4, 1), LA_ERR_OVERFLOW);
    TU_EXPECT_STATUS(la_sparse_routing_state_create(&st, 2, 8, 4, 1), LA_OK);
    la_sparse_routing good = la_sparse_routing_default();
    la_block_index x;
    TU_EXPECT_STATUS(la_sparse_select_routing(ctx, &good, st, &p, &P.q.t, &P.k.t, &x), LA_OK);
    la_block_index_free(&x);
    double before[64], after[64];
    const int64_t nbefore = objective(st, before);
#define BAD(field, value, want)                                                                      \
    do {                                                                                              \
        la_sparse_routing o = good;                                                                   \
        o.field = value;                                                                              \
        TU_EXPECT_STATUS(la_sparse_select_routing(ctx, &o, st, &p, &P.q.t, &P.k.t, &x), want);        \
        tu_check(x.offsets == NULL && x.block_size == 0, "routing %s: out not zeroed on failure", #field); \
    } while (0)
    BAD(members, -1, LA_ERR_ARGUMENT);
    BAD(iterations, -1, LA_ERR_ARGUMENT);
    BAD(iterations, 1001, LA_ERR_ARGUMENT);
    BAD(decay, 1.0f, LA_ERR_ARGUMENT);
    BAD(decay, -0.1f, LA_ERR_ARGUMENT);
    BAD(decay, NAN, LA_ERR_ARGUMENT);
    BAD(sink_blocks, -1, LA_ERR_ARGUMENT);
    BAD(local_blocks, -1, LA_ERR_ARGUMENT);
    BAD(block_size, -1, LA_ERR_ARGUMENT);
#undef BAD
    TU_EXPECT_STATUS(la_sparse_select_routing(ctx, &good, NULL, &p, &P.q.t, &P.k.t, &x), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_sparse_select_routing(ctx, NULL, st, &p, &P.q.t, &P.k.t, &x), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_sparse_select_routing(NULL, &good, st, &p, &P.q.t, &P.k.t, &x), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_sparse_select_routing(ctx, &good, st, &p, &P.q.t, &P.k.t, NULL), LA_ERR_NULL);
    la_sparse_routing_state *wrong;
    TU_EXPECT_STATUS(la_sparse_routing_state_create(&wrong, 3, 8, 4, 1), LA_OK);
    TU_EXPECT_STATUS(la_sparse_select_routing(ctx, &good, wrong, &p, &P.q.t, &P.k.t, &x), LA_ERR_SHAPE);
    la_sparse_routing_state_free(wrong);
    TU_EXPECT_STATUS(la_sparse_routing_state_create(&wrong, 2, 16, 4, 1), LA_OK);
    TU_EXPECT_STATUS(la_sparse_select_routing(ctx, &good, wrong, &p, &P.q.t, &P.k.t, &x), LA_ERR_SHAPE);
    int64_t cnt = -1;
    TU_EXPECT_STATUS(la_sparse_routing_objective(wrong, NULL, 0, &cnt), LA_OK);
    tu_check(cnt == 0, "objective before any call: count %lld, want 0", (long long)cnt);
    la_sparse_routing_state_free(wrong);
    la_tensor k3 = P.k.t;
    k3.shape[3] = 16;
    TU_EXPECT_STATUS(la_sparse_select_routing(ctx, &good, st, &p, &P.q.t, &k3, &x), LA_ERR_SHAPE);
    const int64_t nafter = objective(st, after);
    tu_check(nafter == nbefore && !memcmp(before, after, sizeof(double) * (size_t)nafter),
             "a failed call changed the state's objective");
    TU_EXPECT_STATUS(la_sparse_routing_objective(NULL, after, 4, &cnt), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_sparse_routing_objective(st, NULL, 4, &cnt), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_sparse_routing_objective(st, after, 4, NULL), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_sparse_routing_objective(st, after, -1, &cnt), LA_ERR_ARGUMENT);
    la_sparse_routing_state_free(st);
    la_sparse_routing_state_free(NULL);
    sc_drop(&P);
}

int main(void) {
    const bool quick = getenv("LONGATTN_TEST_QUICK") != NULL;
    uint64_t rng = tu_seed();
    la_context *ctx;
    la_context_create(&ctx, 3);
    objective_decreases(&rng, ctx);
    random_cases(&rng, ctx, quick);
    bad_arguments(&rng, ctx);
    la_context_destroy(ctx);
    return tu_finish();
}
