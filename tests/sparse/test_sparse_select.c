/* The selectors (la_sparse_select_static, _topk, _vslash) and the
 * quality measure (la_block_index_quality): every index valid, never listing
 * a block the rule hides, deterministic (the same index at any thread
 * count), the static patterns exactly as documented, top-k and
 * vertical-slash finding a planted block or column, top-k listing
 * everything at gamma 1 (then sparse attention
 * equals dense); recall and density equal to what the dense probability
 * matrix and the element-wise rule give, computed here independently; bad
 * budgets and arguments rejected with their statuses. */
#include "select_check.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void static_cases(uint64_t *rng, la_context *ctx) {
    la_attention_params causal = la_attention_params_default();
    causal.causal = 1;
    /* A-shape, exactly: sink 0, the diagonal block and the one before */
    sc_problem P;
    sc_make(&P, rng, 1, 256, 256, 2, 1, 16, causal, false);
    la_sparse_static o = la_sparse_static_default();
    o.sink_blocks = 1, o.local_blocks = 2, o.block_size = 64;
    la_block_index x;
    TU_EXPECT_STATUS(la_sparse_select_static(&o, &P.p, &P.q.t, &P.k.t, &x), LA_OK);
    sc_check_valid(&P, &x, "A-shape");
    bool exact = x.q_blocks == 4;
    for (int64_t h = 0; h < 2 && exact; h++)
        for (int64_t qb = 0; qb < 4; qb++)
            for (int64_t kb = 0; kb < 4; kb++) exact &= sc_listed(&x, 0, h, qb, kb) == (kb == 0 || kb == qb || kb == qb - 1);
    tu_check(exact, "A-shape: not {0, qb - 1, qb} per query block");
    sc_check_quality(ctx, &P, &x, "A-shape");
    la_block_index_free(&x);
    sc_drop(&P);

    /* random shapes and options: valid, deterministic, quality agrees */
    for (int n = 0; n < 8; n++) {
        sc_problem R;
        sc_make_random(&R, rng, false);
        la_sparse_static so = {.block_size = tu_randint(rng, 1, 40), .sink_blocks = tu_randint(rng, 0, 2),
                               .local_blocks = tu_randint(rng, 0, 3), .stride = tu_randint(rng, 0, 3),
                               .global_blocks = tu_randint(rng, 0, 1)};
        char what[128];
        snprintf(what, sizeof what, "static %d (L %lld Lk %lld bs %lld causal %d)", n, (long long)R.L,
                 (long long)R.Lk, (long long)so.block_size, R.p.causal);
        la_block_index a;
        sc_check_selector(ctx, &R, sc_run_static, &so, what, &a);
        la_block_index_free(&a);
        sc_drop(&R);
    }
}

static void topk_cases(uint64_t *rng, la_context *ctx) {
    /* a planted block: keys of block 5 point along every query's direction */
    sc_problem P;
    sc_make_planted(&P, rng, 5 * 32, 6 * 32, 3.0);
    la_sparse_topk o = la_sparse_topk_default();
    o.block_size = 32, o.top_k = 1;
    la_block_index x;
    TU_EXPECT_STATUS(la_sparse_select_topk(ctx, &o, &P.p, &P.q.t, &P.k.t, &x), LA_OK);
    sc_check_valid(&P, &x, "planted");
    bool found = true;
    for (int64_t qb = 7; qb < 16; qb++) found &= sc_listed(&x, 0, 0, qb, 5);
    tu_check(found, "planted: top-1 misses the planted key block 5");
    la_sparse_quality q;
    TU_EXPECT_STATUS(la_block_index_quality(ctx, &P.p, &P.q.t, &P.k.t, &x, 0, 1, &q), LA_OK);
    sc_check_quality(ctx, &P, &x, "planted");
    la_block_index_free(&x);
    sc_drop(&P);

    for (int n = 0; n < 8; n++) {
        sc_problem R;
        sc_make_random(&R, rng, true);
        la_sparse_topk to = {.block_size = tu_randint(rng, 1, 40), .gamma = (float)tu_uniform(rng, 0.3, 1),
                             .top_k = tu_randint(rng, 0, 1) ? 0 : tu_randint(rng, 1, 3),
                             .sink_blocks = tu_randint(rng, 0, 2), .local_blocks = tu_randint(rng, 0, 2)};
        if (n == 0) to.gamma = 1, to.top_k = 0;
        char what[160];
        snprintf(what, sizeof what, "topk %d (L %lld Lk %lld bs %lld gamma %.2f top_k %lld causal %d)", n,
                 (long long)R.L, (long long)R.Lk, (long long)to.block_size, (double)to.gamma, (long long)to.top_k,
                 R.p.causal);
        la_block_index a;
        sc_check_selector(ctx, &R, sc_run_topk, &to, what, &a);
        for (int64_t r = 0; to.top_k > 0 && r < a.num_seqs * a.heads * a.q_blocks; r++)
            tu_check(a.offsets[r + 1] - a.offsets[r] <= to.top_k + to.sink_blocks + to.local_blocks,
                     "%s: row %lld lists more than top_k + forced", what, (long long)r);
        if (n == 0) { /* gamma 1: every visible block, so the density is 1 */
            la_sparse_quality qq;
            la_block_index_quality(ctx, &R.p, &R.q.t, &R.k.t, &a, 0, 1, &qq);
            tu_check(qq.density == 1 || isnan(qq.density), "%s: gamma 1 gives density %g", what, qq.density);
        }
        la_block_index_free(&a);
        sc_drop(&R);
    }
}

static void vslash_cases(uint64_t *rng, la_context *ctx) {
    /* a planted column: key 300 points along every query's direction */
    sc_problem P;
    sc_make_planted(&P, rng, 300, 301, 4.0);
    la_sparse_vslash o = la_sparse_vslash_default();
    o.block_size = 32, o.vertical = 1, o.slash = 0;
    la_block_index x;
    TU_EXPECT_STATUS(la_sparse_select_vslash(ctx, &o, &P.p, &P.q.t, &P.k.t, &x), LA_OK);
    sc_check_valid(&P, &x, "vslash planted");
    bool ok = true;
    for (int64_t qb = 0; qb < 16; qb++) /* column 300's block, block 0 and the local band, nothing else */
        for (int64_t kb = 0; kb < 16; kb++)
            ok &= sc_listed(&x, 0, 0, qb, kb) ==
                  (kb <= qb && (kb == 0 || kb == 300 / 32 || kb == qb || kb == qb - 1));
    tu_check(ok, "vslash planted: head 0 is not {0, 9, qb - 1, qb} per query block");
    sc_check_quality(ctx, &P, &x, "vslash planted");
    la_block_index_free(&x);
    sc_drop(&P);

    for (int n = 0; n < 8; n++) {
        sc_problem R;
        sc_make_random(&R, rng, false);
        la_sparse_vslash vo = {.block_size = tu_randint(rng, 1, 40), .last_queries = tu_randint(rng, 0, 80),
                               .vertical = tu_randint(rng, 0, 20), .slash = tu_randint(rng, 0, 20)};
        char what[160];
        snprintf(what, sizeof what, "vslash %d (L %lld Lk %lld bs %lld last %lld v %lld s %lld causal %d)", n,
                 (long long)R.L, (long long)R.Lk, (long long)vo.block_size, (long long)vo.last_queries,
                 (long long)vo.vertical, (long long)vo.slash, R.p.causal);
        la_block_index a;
        sc_check_selector(ctx, &R, sc_run_vslash, &vo, what, &a);
        la_block_index_free(&a);
        sc_drop(&R);
    }
}

static void bad_budgets(uint64_t *rng, la_context *ctx) {
    la_attention_params p = la_attention_params_default();
    sc_problem P;
    sc_make(&P, rng, 1, 64, 64, 2, 1, 8, p, false);
    la_block_index x = {.block_size = 99};
    la_sparse_static so = la_sparse_static_default();
    la_sparse_topk to = la_sparse_topk_default();
#define STATIC_BAD(field, value, want)                                                              \
    do {                                                                                             \
        la_sparse_static o = so;                                                                     \
        o.field = value;                                                                             \
        TU_EXPECT_STATUS(la_sparse_select_static(&o, &P.p, &P.q.t, &P.k.t, &x), want);               \
        tu_check(x.offsets == NULL && x.block_size == 0, "static %s: out not zeroed on failure", #field); \
    } while (0)
    STATIC_BAD(sink_blocks, -1, LA_ERR_ARGUMENT);
    STATIC_BAD(local_blocks, -2, LA_ERR_ARGUMENT);
    STATIC_BAD(stride, -1, LA_ERR_ARGUMENT);
    STATIC_BAD(global_blocks, -1, LA_ERR_ARGUMENT);
    STATIC_BAD(block_size, -1, LA_ERR_ARGUMENT);
    STATIC_BAD(block_size, LA_SPARSE_BLOCK_MAX + 1, LA_ERR_ARGUMENT);
#define TOPK_BAD(field, value, want)                                                                 \
    do {                                                                                              \
        la_sparse_topk o = to;                                                                        \
        o.field = value;                                                                              \
        TU_EXPECT_STATUS(la_sparse_select_topk(ctx, &o, &P.p, &P.q.t, &P.k.t, &x), want);             \
        tu_check(x.offsets == NULL, "topk %s: out not zeroed on failure", #field);                   \
    } while (0)
    TOPK_BAD(gamma, 0, LA_ERR_ARGUMENT);
    TOPK_BAD(gamma, 1.5f, LA_ERR_ARGUMENT);
    TOPK_BAD(gamma, NAN, LA_ERR_ARGUMENT);
    TOPK_BAD(top_k, -1, LA_ERR_ARGUMENT);
    TOPK_BAD(sink_blocks, -1, LA_ERR_ARGUMENT);
    TOPK_BAD(local_blocks, -1, LA_ERR_ARGUMENT);
    TOPK_BAD(block_size, -3, LA_ERR_ARGUMENT);
    TU_EXPECT_STATUS(la_sparse_select_topk(ctx, NULL, &P.p, &P.q.t, &P.k.t, &x), LA_ERR_NULL);
    la_sparse_vslash vo = la_sparse_vslash_default();
    vo.vertical = -1;
    TU_EXPECT_STATUS(la_sparse_select_vslash(ctx, &vo, &P.p, &P.q.t, &P.k.t, &x), LA_ERR_ARGUMENT);
    vo = la_sparse_vslash_default(), vo.slash = -1;
    TU_EXPECT_STATUS(la_sparse_select_vslash(ctx, &vo, &P.p, &P.q.t, &P.k.t, &x), LA_ERR_ARGUMENT);
    vo = la_sparse_vslash_default(), vo.last_queries = -1;
    TU_EXPECT_STATUS(la_sparse_select_vslash(ctx, &vo, &P.p, &P.q.t, &P.k.t, &x), LA_ERR_ARGUMENT);
    tu_check(x.offsets == NULL, "vslash: out not zeroed on failure");
    TU_EXPECT_STATUS(la_sparse_select_static(&so, &P.p, &P.q.t, &P.k.t, NULL), LA_ERR_NULL);
    la_attention_params sig = p;
    sig.score = LA_SCORE_SIGMOID;
    TU_EXPECT_STATUS(la_sparse_select_topk(ctx, &to, &sig, &P.q.t, &P.k.t, &x), LA_ERR_UNSUPPORTED);
    vo = la_sparse_vslash_default();
    TU_EXPECT_STATUS(la_sparse_select_vslash(ctx, &vo, &sig, &P.q.t, &P.k.t, &x), LA_ERR_UNSUPPORTED);
    la_attention_params varlen = p;
    int32_t cu[2] = {0, 64};
    varlen.cu_seqlens_q = varlen.cu_seqlens_k = cu, varlen.num_seqs = 1;
    TU_EXPECT_STATUS(la_sparse_select_static(&so, &varlen, &P.q.t, &P.k.t, &x), LA_ERR_SHAPE); /* varlen: packed 3-D */
    la_block_index dummy = {0};
    la_sparse_quality qv;
    TU_EXPECT_STATUS(la_block_index_quality(ctx, &varlen, &P.q.t, &P.k.t, &dummy, 0, 1, &qv), LA_ERR_UNSUPPORTED);
    la_attention_params badp = p;
    badp.window_left = -5;
    TU_EXPECT_STATUS(la_sparse_select_topk(ctx, &to, &badp, &P.q.t, &P.k.t, &x), LA_ERR_ARGUMENT);
    la_tensor k3 = P.k.t;
    k3.shape[3] = 16;
    TU_EXPECT_STATUS(la_sparse_select_static(&so, &p, &P.q.t, &k3, &x), LA_ERR_SHAPE);
    la_tensor q12 = P.q.t, k12 = P.k.t; /* head_dim 4: not a multiple of 8, as in the attention calls */
    q12.shape[3] = k12.shape[3] = 4;
    TU_EXPECT_STATUS(la_sparse_select_static(&so, &p, &q12, &k12, &x), LA_ERR_UNSUPPORTED);
    /* quality: bad sample count, bad index */
    TU_EXPECT_STATUS(la_sparse_select_static(&so, &p, &P.q.t, &P.k.t, &x), LA_OK);
    la_sparse_quality q;
    TU_EXPECT_STATUS(la_block_index_quality(ctx, &p, &P.q.t, &P.k.t, &x, -1, 1, &q), LA_ERR_ARGUMENT);
    TU_EXPECT_STATUS(la_block_index_quality(ctx, &p, &P.q.t, &P.k.t, NULL, 0, 1, &q), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_block_index_quality(ctx, &sig, &P.q.t, &P.k.t, &x, 0, 1, &q), LA_ERR_UNSUPPORTED);
    x.heads = 1;
    TU_EXPECT_STATUS(la_block_index_quality(ctx, &p, &P.q.t, &P.k.t, &x, 0, 1, &q), LA_ERR_SHAPE);
    x.heads = 2;
    la_block_index_free(&x);
    la_block_index_free(NULL);
    sc_drop(&P);
#undef STATIC_BAD
#undef TOPK_BAD
}

/* gamma 1 lists every visible block: sparse attention is dense attention. */
static void topk_complete_equals_dense(uint64_t *rng, la_context *ctx) {
    la_attention_params p = la_attention_params_default();
    p.causal = 1, p.window_left = 90;
    sc_problem P;
    sc_make(&P, rng, 1, 200, 200, 4, 2, 32, p, false);
    tu_buf v = tu_buf_new(LA_F32, 4, (int64_t[]){1, 200, 2, 32}, false, false);
    tu_buf o1 = tu_buf_new(LA_F32, 4, (int64_t[]){1, 200, 4, 32}, false, false);
    tu_buf o2 = tu_buf_new(LA_F32, 4, (int64_t[]){1, 200, 4, 32}, false, false);
    tu_fill(rng, v.t.data, LA_F32, (int64_t)v.elems, -1, 1);
    la_sparse_topk to = la_sparse_topk_default();
    to.gamma = 1;
    la_block_index x;
    TU_EXPECT_STATUS(la_sparse_select_topk(ctx, &to, &P.p, &P.q.t, &P.k.t, &x), LA_OK);
    TU_EXPECT_STATUS(la_block_sparse_forward(ctx, &P.p, &P.q.t, &P.k.t, &v.t, &x, &o1.t, NULL), LA_OK);
    TU_EXPECT_STATUS(la_attention_forward(ctx, &P.p, &P.q.t, &P.k.t, &v.t, &o2.t, NULL), LA_OK);
    double worst = 0;
    for (size_t e = 0; e < o1.elems; e++) worst = fmax(worst, fabs(((float *)o1.t.data)[e] - ((float *)o2.t.data)[e]));
    tu_check(worst < 1e-5, "top-k gamma 1 then sparse forward differs from dense by %.3g", worst);
    la_block_index_free(&x);
    tu_buf_free(&v), tu_buf_free(&o1), tu_buf_free(&o2);
    sc_drop(&P);
}

/* Every diagonal is scored, also those more than Lk right of the diagonal,
 * which rows ending before the keys see (Lq > Lk + 1, not causal): 40
 * queries over 8 keys (diag_i = i - 32), rows 12..19 each on key i - 12
 * (distance -20), the others uniform, so distance -20 holds ~8 of the 40
 * rows' mass and is the one kept diagonal: query block 4 (rows 16..19)
 * lists key block 1 (keys 4..7). The per-distance sums stopped at
 * distance -Lk, so no such diagonal was ever kept. */
static void vslash_far_diagonal(la_context *ctx) {
    enum { LQ = 40, LK = 8, DD = 8 };
    float q[LQ * DD] = {0}, k[LK * DD] = {0};
    for (int j = 0; j < LK; j++) k[j * DD + j] = 1;
    for (int i = 12; i < 20; i++) q[i * DD + (i - 12)] = 40;
    la_tensor tq = la_tensor_contiguous(q, LA_F32, 4, (int64_t[]){1, LQ, 1, DD});
    la_tensor tk = la_tensor_contiguous(k, LA_F32, 4, (int64_t[]){1, LK, 1, DD});
    la_attention_params p = la_attention_params_default();
    la_sparse_vslash o = {.block_size = 4, .last_queries = LQ, .vertical = 0, .slash = 1};
    la_block_index x;
    TU_EXPECT_STATUS(la_sparse_select_vslash(ctx, &o, &p, &tq, &tk, &x), LA_OK);
    if (!x.offsets) return;
    tu_check(sc_listed(&x, 0, 0, 4, 1) && sc_listed(&x, 0, 0, 3, 0) && !sc_listed(&x, 0, 0, 2, 1),
             "vslash: the kept diagonal at distance -20 does not list key block 1 for query block 4");
    la_block_index_free(&x);
}

int main(void) {
    uint64_t rng = tu_seed();
    la_context *ctx;
    la_context_create(&ctx, 3);
    vslash_far_diagonal(ctx);
    static_cases(&rng, ctx);
    topk_cases(&rng, ctx);
    vslash_cases(&rng, ctx);
    topk_complete_equals_dense(&rng, ctx);
    bad_budgets(&rng, ctx);
    la_context_destroy(ctx);
    return tu_finish();
}
