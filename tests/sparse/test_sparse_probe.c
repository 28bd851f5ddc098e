/* Block top-k with probe rows (la_sparse_topk.probe_rows > 0): every index
 * valid, never listing a block the rule hides, deterministic across
 * thread counts, its quality figures equal to the brute-force ones; a
 * single heavy key ("needle") that block means average away is found by
 * the probes; with the queries of each block equal and no causal mask the
 * probes' estimate is the exact block mass, so coverage gamma gives recall
 * >= gamma (recomputed from the dense probabilities); the choice parser's
 * probe=N option; bad budgets rejected. A coverage per query head
 * (la_sparse_select_topk_heads): each head's lists those of
 * la_sparse_select_topk at its coverage, or static's at 0, with or without
 * probes, a K/V head's query heads all streaming among the cases, and
 * with keys past the panels' packing piece; bad coverages and options
 * rejected. */
#include "select_check.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void random_cases(uint64_t *rng, la_context *ctx) {
    const int n_cases = getenv("LONGATTN_TEST_QUICK") ? 6 : 16;
    for (int n = 0; n < n_cases; n++) {
        sc_problem R;
        sc_make_random(&R, rng, true);
        la_sparse_topk to = {.block_size = tu_randint(rng, 1, 40), .gamma = (float)tu_uniform(rng, 0.3, 1),
                             .top_k = tu_randint(rng, 0, 1) ? 0 : tu_randint(rng, 1, 3),
                             .sink_blocks = tu_randint(rng, 0, 2), .local_blocks = tu_randint(rng, 0, 2),
                             .probe_rows = tu_randint(rng, 1, 6)};
        if (n == 0) to.gamma = 1, to.top_k = 0;
        char what[192];
        snprintf(what, sizeof what, "probe %d (L %lld Lk %lld bs %lld gamma %.2f top_k %lld probes %lld causal %d window %lld sinks %lld softcap %g)", n,
                 (long long)R.L, (long long)R.Lk, (long long)to.block_size, (double)to.gamma, (long long)to.top_k,
                 (long long)to.probe_rows, R.p.causal, (long long)R.p.window_left, (long long)R.p.sinks,
                 (double)R.p.softcap);
        la_block_index a;
        sc_check_selector(ctx, &R, sc_run_topk, &to, what, &a);
        /* a sliding window's left edge seen by no probe (keys [i0, i1 - P)
         * shifted by the window, fewer than a block: at most 2 blocks) is forced too */
        const int64_t unseen = R.p.window_left >= 0 ? 2 : 0;
        for (int64_t r = 0; to.top_k > 0 && r < a.num_seqs * a.heads * a.q_blocks; r++)
            tu_check(a.offsets[r + 1] - a.offsets[r] <= to.top_k + to.sink_blocks + to.local_blocks + unseen,
                     "%s: row %lld lists more than top_k + forced", what, (long long)r);
        if (n == 0) { /* gamma 1: every block with any estimated mass; density 1 unless a block underflows */
            double recall, density;
            sc_brute_quality(&R, &a, &recall, &density);
            tu_check(isnan(recall) || recall > 1 - 1e-6, "%s: gamma 1 gives recall %.9f", what, recall);
        }
        la_block_index_free(&a);
        sc_drop(&R);
    }
}

/* q all along u = (1, ..., 1); keys of every block along u (score 4 each),
 * but in block 9 the keys are ~0 except one at 8u (score 32): its block
 * mean scores below every other block's, its true mass is nearly all. */
static void needle(uint64_t *rng, la_context *ctx) {
    la_attention_params causal = la_attention_params_default();
    causal.causal = 1;
    sc_problem P;
    const int64_t L = 640, D = 16, bs = 32;
    sc_make(&P, rng, 1, L, L, 2, 1, D, causal, false); /* scale 1/4 */
    for (int64_t i = 0; i < L; i++)
        for (int64_t h = 0; h < 2; h++)
            for (int64_t d = 0; d < D; d++) tu_set(&P.q.t, (int64_t[]){0, i, h, d}, 1 + 0.05 * tu_uniform(rng, -1, 1));
    for (int64_t j = 0; j < L; j++)
        for (int64_t d = 0; d < D; d++) {
            const bool in9 = j / bs == 9;
            const double v = j == 9 * bs + 13 ? 8.0 : in9 ? 0.05 * tu_uniform(rng, -1, 1) : 1.0;
            tu_set(&P.k.t, (int64_t[]){0, j, 0, d}, v);
        }
    la_sparse_topk o = la_sparse_topk_default();
    o.block_size = bs, o.top_k = 1, o.probe_rows = 2;
    la_block_index x, xm;
    TU_EXPECT_STATUS(la_sparse_select_topk(ctx, &o, &P.p, &P.q.t, &P.k.t, &x), LA_OK);
    o.probe_rows = 0;
    TU_EXPECT_STATUS(la_sparse_select_topk(ctx, &o, &P.p, &P.q.t, &P.k.t, &xm), LA_OK);
    sc_check_valid(&P, &x, "needle");
    bool found = true, mean_found = true;
    for (int64_t qb = 11; qb < L / bs; qb++)
        for (int64_t h = 0; h < 2; h++) found &= sc_listed(&x, 0, h, qb, 9), mean_found &= sc_listed(&xm, 0, h, qb, 9);
    tu_check(found, "needle: the probes' top-1 misses key block 9");
    tu_check(!mean_found, "needle: block means found block 9 too (the case no longer tells the estimates apart)");
    double recall, density, rm, dm;
    sc_brute_quality(&P, &x, &recall, &density);
    sc_brute_quality(&P, &xm, &rm, &dm);
    /* rows 0..(9 * bs + 13) do not see the needle; past it nearly all mass is there */
    tu_check(recall > rm + 0.3, "needle: recall %.4f with probes, %.4f with block means", recall, rm);
    sc_check_quality(ctx, &P, &x, "needle");
    la_block_index_free(&x), la_block_index_free(&xm);
    sc_drop(&P);
}

/* Non-causal, each query block's rows equal: the probes (the mean = each
 * row, and rows themselves) see exactly the true block masses, so coverage
 * gamma of the estimate is recall >= gamma. Structured keys: a few heavy
 * blocks and a spread. */
static void exact_coverage(uint64_t *rng, la_context *ctx) {
    const int64_t L = 300, Lk = 700, H = 4, Hkv = 2, D = 16, bs = 25;
    la_attention_params p = la_attention_params_default();
    sc_problem P;
    sc_make(&P, rng, 1, L, Lk, H, Hkv, D, p, false);
    for (int64_t qb = 0; qb * bs < L; qb++)
        for (int64_t h = 0; h < H; h++) {
            double row[16];
            for (int64_t d = 0; d < D; d++) row[d] = tu_uniform(rng, -2, 2);
            for (int64_t i = qb * bs; i < L && i < (qb + 1) * bs; i++)
                for (int64_t d = 0; d < D; d++) tu_set(&P.q.t, (int64_t[]){0, i, h, d}, row[d]);
        }
    for (int64_t j = 0; j < Lk; j++)
        for (int64_t g = 0; g < Hkv; g++) {
            const double amp = (j / bs) % 5 == 2 ? 2.5 : 0.7;
            for (int64_t d = 0; d < D; d++) tu_set(&P.k.t, (int64_t[]){0, j, g, d}, amp * tu_uniform(rng, -1, 1));
        }
    const float gammas[3] = {0.5f, 0.8f, 0.95f};
    for (int gi = 0; gi < 3; gi++) {
        la_sparse_topk o = {.block_size = bs, .gamma = gammas[gi], .probe_rows = 1 + gi, .sink_blocks = 0,
                            .local_blocks = 0};
        char what[64];
        snprintf(what, sizeof what, "exact coverage gamma %.2f", (double)gammas[gi]);
        la_block_index x;
        sc_check_selector(ctx, &P, sc_run_topk, &o, what, &x);
        double recall, density;
        sc_brute_quality(&P, &x, &recall, &density);
        /* f32 scores and sums against double: 1e-4 */
        tu_check(recall >= gammas[gi] - 1e-4, "%s: recall %.5f", what, recall);
        tu_check(density < 1, "%s: density %.3f (nothing skipped)", what, density);
        la_block_index_free(&x);
    }
    sc_drop(&P);
}

static void options(uint64_t *rng, la_context *ctx) {
    la_sparse_choice c;
    TU_EXPECT_STATUS(la_sparse_choice_parse("topk:8,probe=4,dense-layers=3", &c), LA_OK);
    tu_check(c.kind == LA_SPARSE_TOPK && c.budget == 8 && c.probe_rows == 4 && c.dense_layers == 3,
             "topk:8,probe=4,dense-layers=3 parsed as kind %d budget %g probe %lld dense %lld", (int)c.kind, c.budget,
             (long long)c.probe_rows, (long long)c.dense_layers);
    TU_EXPECT_STATUS(la_sparse_choice_parse("topk:0.9", &c), LA_OK);
    tu_check(c.probe_rows == 0, "topk:0.9: probe_rows %lld", (long long)c.probe_rows);
    const char *bad[] = {"topk:8,probe=0", "topk:8,probe=-1", "hip:8,probe=2", "topk:8,probe=2,probe=3",
                         "topk:8,probe=x"};
    for (int i = 0; i < 5; i++) {
        TU_EXPECT_STATUS(la_sparse_choice_parse(bad[i], &c), LA_ERR_ARGUMENT);
        tu_check(strstr(la_last_error(), "probe") != NULL, "'%s': message '%s' does not name probe", bad[i],
                 la_last_error());
    }
    /* the choice runs the same index as the selector */
    sc_problem P;
    sc_make_random(&P, rng, false);
    TU_EXPECT_STATUS(la_sparse_choice_parse("topk:0.8,probe=3", &c), LA_OK);
    la_sparse_topk o = la_sparse_topk_default();
    o.gamma = 0.8f, o.probe_rows = 3;
    la_block_index a, b;
    TU_EXPECT_STATUS(la_sparse_select(ctx, &c, &P.p, &P.q.t, &P.k.t, &a), LA_OK);
    TU_EXPECT_STATUS(la_sparse_select_topk(ctx, &o, &P.p, &P.q.t, &P.k.t, &b), LA_OK);
    tu_check(sc_same_index(&a, &b), "topk:0.8,probe=3 differs from la_sparse_select_topk with probe_rows 3");
    la_block_index_free(&a), la_block_index_free(&b);
    /* a negative probe_rows: LA_ERR_ARGUMENT naming it, out zeroed */
    o.probe_rows = -2;
    TU_EXPECT_STATUS(la_sparse_select_topk(ctx, &o, &P.p, &P.q.t, &P.k.t, &a), LA_ERR_ARGUMENT);
    tu_check(strstr(la_last_error(), "probe_rows") != NULL, "probe_rows -2: message '%s'", la_last_error());
    tu_check(a.offsets == NULL, "probe_rows -2: out not zeroed");
    c.probe_rows = -1;
    TU_EXPECT_STATUS(la_sparse_select(ctx, &c, &P.p, &P.q.t, &P.k.t, &a), LA_ERR_ARGUMENT);
    sc_drop(&P);
}

typedef struct {
    la_sparse_topk o;
    float gamma[4];
    la_sparse_static stream;
} heads_opts;

static la_status run_heads(la_context *ctx, const void *opts, const sc_problem *P, la_block_index *out) {
    const heads_opts *a = opts;
    return la_sparse_select_topk_heads(ctx, &a->o, a->gamma, &a->stream, &P->p, &P->q.t, &P->k.t, out);
}

/* The index equals one thread's (sc_check_selector), and each head's lists
 * la_sparse_select_topk's at its coverage or static's at 0. */
static void check_heads(la_context *ctx, const sc_problem *R, const heads_opts *a, const char *what) {
    la_block_index x, y;
    sc_check_selector(ctx, R, run_heads, a, what, &x);
    la_sparse_static so = a->stream;
    so.block_size = a->o.block_size; /* the heads' block size is opts' */
    for (int64_t h = 0; h < R->H; h++) {
        la_sparse_topk o = a->o;
        o.gamma = a->gamma[h];
        TU_EXPECT_STATUS(a->gamma[h] > 0 ? la_sparse_select_topk(ctx, &o, &R->p, &R->q.t, &R->k.t, &y)
                                         : la_sparse_select_static(&so, &R->p, &R->q.t, &R->k.t, &y),
                         LA_OK);
        tu_check(sc_same_head(&x, &y, h), "%s: head %lld differs from %s", what, (long long)h,
                 a->gamma[h] > 0 ? "la_sparse_select_topk at its coverage" : "static's lists");
        la_block_index_free(&y);
    }
    la_block_index_free(&x);
}

/* Keys past the probes' packing piece (PACK_KEYS, 1024 in select.c), and 1
 * or 2 of 4 query heads probed: a team of 3 packs the panels in pieces
 * and cuts each probed head's query blocks in two halves (the probed
 * count does not split evenly), one thread does neither. */
static void long_keys(uint64_t *rng, la_context *ctx) {
    for (int n = 0; n < 2; n++) {
        la_attention_params p = la_attention_params_default();
        p.causal = 1;
        sc_problem R;
        const int64_t L = tu_randint(rng, 300, 700), Lk = tu_randint(rng, 1100, 2200);
        sc_make(&R, rng, 1, L, Lk, 4, 2, 8, p, false);
        heads_opts a = {.o = {.block_size = tu_randint(rng, 16, 64), .sink_blocks = 1, .local_blocks = 1,
                              .probe_rows = tu_randint(rng, 1, 4)},
                        .stream = la_sparse_static_default()};
        a.stream.local_blocks = 1;
        const int64_t first = tu_randint(rng, 0, 3);
        for (int64_t h = 0; h < 4; h++)
            a.gamma[h] = h == first || (n == 1 && h == (first + 1) % 4) ? (float)tu_uniform(rng, 0.5, 0.99) : 0;
        char what[160];
        snprintf(what, sizeof what, "long keys %d (L %lld Lk %lld bs %lld probes %lld, %d heads probed)", n,
                 (long long)L, (long long)Lk, (long long)a.o.block_size, (long long)a.o.probe_rows, n + 1);
        check_heads(ctx, &R, &a, what);
        sc_drop(&R);
    }
}

static void per_head_coverage(uint64_t *rng, la_context *ctx) {
    const int n_cases = getenv("LONGATTN_TEST_QUICK") ? 6 : 16;
    for (int n = 0; n < n_cases; n++) {
        sc_problem R;
        sc_make_random(&R, rng, true);
        heads_opts a = {.o = {.block_size = tu_randint(rng, 1, 40), .sink_blocks = tu_randint(rng, 0, 2),
                              .local_blocks = tu_randint(rng, 0, 2), .probe_rows = n % 3 ? tu_randint(rng, 1, 6) : 0},
                        .stream = la_sparse_static_default()};
        a.stream.sink_blocks = tu_randint(rng, 0, 2), a.stream.local_blocks = tu_randint(rng, 1, 3);
        for (int h = 0; h < 4; h++) a.gamma[h] = tu_randint(rng, 0, 2) ? (float)tu_uniform(rng, 0.3, 1) : 0;
        /* every second case: the first K/V head's query heads all stream (its keys never packed) */
        for (int64_t h = 0; n % 2 && h < R.H / R.Hkv; h++) a.gamma[h] = 0;
        char what[192];
        snprintf(what, sizeof what,
                 "per head %d (L %lld Lk %lld Hkv %lld bs %lld probes %lld gamma %.2f %.2f %.2f %.2f)", n,
                 (long long)R.L, (long long)R.Lk, (long long)R.Hkv, (long long)a.o.block_size, (long long)a.o.probe_rows,
                 (double)a.gamma[0], (double)a.gamma[1], (double)a.gamma[2], (double)a.gamma[3]);
        check_heads(ctx, &R, &a, what);
        sc_drop(&R);
    }
    /* bad calls: their status, out zeroed */
    sc_problem P;
    sc_make_random(&P, rng, false);
    heads_opts a = {.o = la_sparse_topk_default(), .gamma = {0.9f, 0, 1, 0.5f}, .stream = la_sparse_static_default()};
    la_block_index x;
    TU_EXPECT_STATUS(la_sparse_select_topk_heads(ctx, &a.o, NULL, &a.stream, &P.p, &P.q.t, &P.k.t, &x), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_sparse_select_topk_heads(ctx, &a.o, a.gamma, NULL, &P.p, &P.q.t, &P.k.t, &x), LA_ERR_NULL);
    const float bad[] = {-0.1f, 1.5f, NAN};
    for (int i = 0; i < 3; i++) {
        a.gamma[2] = bad[i];
        TU_EXPECT_STATUS(run_heads(ctx, &a, &P, &x), LA_ERR_ARGUMENT);
        tu_check(strstr(la_last_error(), "gamma[2]") != NULL && x.offsets == NULL,
                 "gamma[2] = %g: message '%s' does not name it, or out not zeroed", (double)bad[i], la_last_error());
    }
    a.gamma[2] = 1, a.o.top_k = 2;
    TU_EXPECT_STATUS(run_heads(ctx, &a, &P, &x), LA_ERR_ARGUMENT);
    tu_check(strstr(la_last_error(), "top_k") != NULL, "top_k 2: message '%s'", la_last_error());
    a.o.top_k = 0, a.stream.local_blocks = -1;
    TU_EXPECT_STATUS(run_heads(ctx, &a, &P, &x), LA_ERR_ARGUMENT);
    tu_check(strstr(la_last_error(), "local_blocks") != NULL, "stream local_blocks -1: message '%s'", la_last_error());
    a.stream.local_blocks = 1;
    TU_EXPECT_STATUS(run_heads(ctx, &a, &P, &x), LA_OK);
    la_block_index_free(&x);
    sc_drop(&P);
}

int main(void) {
    uint64_t rng = tu_seed();
    la_context *ctx;
    la_context_create(&ctx, 3);
    random_cases(&rng, ctx);
    needle(&rng, ctx);
    exact_coverage(&rng, ctx);
    options(&rng, ctx);
    per_head_coverage(&rng, ctx);
    long_keys(&rng, ctx);
    la_context_destroy(ctx);
    return tu_finish();
}
