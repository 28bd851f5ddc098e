/* The hierarchical pruning selector (la_sparse_select_hip) and the chunk
 * selector (la_sparse_select_chunks): a planted key block (chunk) found,
 * a budget past the blocks (chunks) listing every visible block (density
 * 1), every index valid (nothing the rule hides), deterministic (3 threads
 * and 1 give the same index), recall and density equal to the dense
 * recomputation, top_k bounding the lists; bad budgets rejected with their
 * statuses and out zeroed. */
#include "select_check.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double density(la_context *ctx, const sc_problem *P, const la_block_index *x) {
    la_sparse_quality q;
    la_status s = la_block_index_quality(ctx, &P->p, &P->q.t, &P->k.t, x, 0, 1, &q);
    return s ? -1 : q.density;
}

static void hip_cases(uint64_t *rng, la_context *ctx) {
    sc_problem P;
    sc_make_planted(&P, rng, 5 * 32, 6 * 32, 3.0);
    la_sparse_hip o = la_sparse_hip_default();
    o.block_size = 32, o.top_k = 1, o.probes = 16, o.sink_blocks = 0, o.local_blocks = 0;
    la_block_index x;
    TU_EXPECT_STATUS(la_sparse_select_hip(ctx, &o, &P.p, &P.q.t, &P.k.t, &x), LA_OK);
    sc_check_valid(&P, &x, "hip planted");
    bool found = true;
    for (int64_t qb = 6; qb < 16; qb++) found &= sc_listed(&x, 0, 0, qb, 5) && x.offsets[qb + 1] - x.offsets[qb] == 1;
    tu_check(found, "hip planted: top-1 is not the planted key block 5 alone");
    sc_check_quality(ctx, &P, &x, "hip planted");
    la_block_index_free(&x);
    o.top_k = 16, o.probes = 1; /* every range kept: every visible block */
    TU_EXPECT_STATUS(la_sparse_select_hip(ctx, &o, &P.p, &P.q.t, &P.k.t, &x), LA_OK);
    tu_check(density(ctx, &P, &x) == 1, "hip top_k >= blocks: density %g, want 1", density(ctx, &P, &x));
    la_block_index_free(&x);
    sc_drop(&P);

    for (int n = 0; n < 8; n++) {
        sc_problem R;
        sc_make_random(&R, rng, true);
        la_sparse_hip ho = {.block_size = tu_randint(rng, 1, 40), .top_k = tu_randint(rng, 1, 4),
                            .probes = tu_randint(rng, 0, 3), .sink_blocks = tu_randint(rng, 0, 2),
                            .local_blocks = tu_randint(rng, 0, 2)};
        char what[160];
        snprintf(what, sizeof what, "hip %d (L %lld Lk %lld bs %lld top_k %lld probes %lld causal %d)", n,
                 (long long)R.L, (long long)R.Lk, (long long)ho.block_size, (long long)ho.top_k, (long long)ho.probes,
                 R.p.causal);
        la_block_index a;
        sc_check_selector(ctx, &R, sc_run_hip, &ho, what, &a);
        for (int64_t r = 0; r < a.num_seqs * a.heads * a.q_blocks; r++)
            tu_check(a.offsets[r + 1] - a.offsets[r] <= ho.top_k + ho.sink_blocks + ho.local_blocks,
                     "%s: row %lld lists more than top_k + forced", what, (long long)r);
        la_block_index_free(&a);
        sc_drop(&R);
    }
}

static void chunk_cases(uint64_t *rng, la_context *ctx) {
    sc_problem P;
    sc_make_planted(&P, rng, 128, 192, 3.0); /* chunk 2 of 2 blocks of 32 */
    la_sparse_chunks o = la_sparse_chunks_default();
    o.block_size = 32, o.chunk_blocks = 2, o.top_k = 1, o.local_blocks = 1;
    la_block_index x;
    TU_EXPECT_STATUS(la_sparse_select_chunks(ctx, &o, &P.p, &P.q.t, &P.k.t, &x), LA_OK);
    sc_check_valid(&P, &x, "chunks planted");
    bool exact = true; /* rows from 192 on pick chunk 2: blocks {0, 1} (first chunk), {4, 5}, the diagonal */
    for (int64_t qb = 6; qb < 16; qb++)
        for (int64_t kb = 0; kb < 16; kb++)
            exact &= sc_listed(&x, 0, 0, qb, kb) == (kb <= 1 || kb == 4 || kb == 5 || kb == qb);
    tu_check(exact, "chunks planted: head 0 is not {0, 1, 4, 5, qb} from query block 6 on");
    sc_check_quality(ctx, &P, &x, "chunks planted");
    la_block_index_free(&x);
    o.top_k = 100;
    TU_EXPECT_STATUS(la_sparse_select_chunks(ctx, &o, &P.p, &P.q.t, &P.k.t, &x), LA_OK);
    tu_check(density(ctx, &P, &x) == 1, "chunks top_k >= chunks: density %g, want 1", density(ctx, &P, &x));
    la_block_index_free(&x);
    sc_drop(&P);

    for (int n = 0; n < 8; n++) {
        sc_problem R;
        sc_make_random(&R, rng, true);
        la_sparse_chunks co = {.block_size = tu_randint(rng, 1, 40), .chunk_blocks = tu_randint(rng, 1, 5),
                               .top_k = tu_randint(rng, 0, 3), .local_blocks = tu_randint(rng, 0, 2)};
        char what[160];
        snprintf(what, sizeof what, "chunks %d (L %lld Lk %lld bs %lld chunk %lld top_k %lld causal %d)", n,
                 (long long)R.L, (long long)R.Lk, (long long)co.block_size, (long long)co.chunk_blocks,
                 (long long)co.top_k, R.p.causal);
        la_block_index a;
        sc_check_selector(ctx, &R, sc_run_chunks, &co, what, &a);
        la_block_index_free(&a);
        sc_drop(&R);
    }
}

static void bad_budgets(uint64_t *rng, la_context *ctx) {
    la_attention_params p = la_attention_params_default();
    sc_problem P;
    sc_make(&P, rng, 1, 64, 64, 2, 1, 8, p, false);
    la_block_index x;
#define HIP_BAD(field, value, want)                                                                  \
    do {                                                                                              \
        la_sparse_hip o = la_sparse_hip_default();                                                    \
        o.field = value;                                                                              \
        TU_EXPECT_STATUS(la_sparse_select_hip(ctx, &o, &P.p, &P.q.t, &P.k.t, &x), want);              \
        tu_check(x.offsets == NULL && x.block_size == 0, "hip %s: out not zeroed on failure", #field); \
    } while (0)
#define CHUNKS_BAD(field, value, want)                                                                  \
    do {                                                                                                 \
        la_sparse_chunks o = la_sparse_chunks_default();                                                 \
        o.field = value;                                                                                 \
        TU_EXPECT_STATUS(la_sparse_select_chunks(ctx, &o, &P.p, &P.q.t, &P.k.t, &x), want);              \
        tu_check(x.offsets == NULL && x.block_size == 0, "chunks %s: out not zeroed on failure", #field); \
    } while (0)
    HIP_BAD(top_k, 0, LA_ERR_ARGUMENT);
    HIP_BAD(top_k, -1, LA_ERR_ARGUMENT);
    HIP_BAD(probes, -1, LA_ERR_ARGUMENT);
    HIP_BAD(sink_blocks, -1, LA_ERR_ARGUMENT);
    HIP_BAD(local_blocks, -1, LA_ERR_ARGUMENT);
    HIP_BAD(block_size, -1, LA_ERR_ARGUMENT);
    CHUNKS_BAD(chunk_blocks, 0, LA_ERR_ARGUMENT);
    CHUNKS_BAD(top_k, -1, LA_ERR_ARGUMENT);
    CHUNKS_BAD(local_blocks, -1, LA_ERR_ARGUMENT);
    CHUNKS_BAD(block_size, LA_SPARSE_BLOCK_MAX + 1, LA_ERR_ARGUMENT);
#undef HIP_BAD
#undef CHUNKS_BAD
    la_sparse_hip ho = la_sparse_hip_default();
    la_sparse_chunks co = la_sparse_chunks_default();
    ho.top_k = INT64_MAX, co.chunk_blocks = INT64_MAX; /* every range kept; one chunk of all the keys */
    TU_EXPECT_STATUS(la_sparse_select_hip(ctx, &ho, &P.p, &P.q.t, &P.k.t, &x), LA_OK);
    tu_check(density(ctx, &P, &x) == 1, "hip top_k INT64_MAX: density %g", density(ctx, &P, &x));
    la_block_index_free(&x);
    TU_EXPECT_STATUS(la_sparse_select_chunks(ctx, &co, &P.p, &P.q.t, &P.k.t, &x), LA_OK);
    tu_check(density(ctx, &P, &x) == 1, "chunks chunk_blocks INT64_MAX: density %g", density(ctx, &P, &x));
    la_block_index_free(&x);
    ho = la_sparse_hip_default(), co = la_sparse_chunks_default();
    TU_EXPECT_STATUS(la_sparse_select_hip(ctx, NULL, &P.p, &P.q.t, &P.k.t, &x), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_sparse_select_hip(ctx, &ho, &P.p, &P.q.t, &P.k.t, NULL), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_sparse_select_chunks(NULL, &co, &P.p, &P.q.t, &P.k.t, &x), LA_ERR_NULL);
    la_tensor k3 = P.k.t;
    k3.shape[3] = 16;
    TU_EXPECT_STATUS(la_sparse_select_hip(ctx, &ho, &P.p, &P.q.t, &k3, &x), LA_ERR_SHAPE);
    TU_EXPECT_STATUS(la_sparse_select_chunks(ctx, &co, &P.p, &P.q.t, &k3, &x), LA_ERR_SHAPE);
    sc_drop(&P);
}

/* block_size LA_SPARSE_BLOCK_MAX (2^30) is valid: one query block of all
 * 40 queries and one key block, which both selectors list. The chunk
 * selector sized its per-thread scratch by block_size rows (2^30 x D 64
 * floats, 256 GB) and failed with LA_ERR_NOMEM. */
static void block_max(uint64_t *rng, la_context *ctx) {
    la_attention_params p = la_attention_params_default();
    p.causal = 1;
    sc_problem P;
    sc_make(&P, rng, 1, 40, 40, 2, 1, 64, p, false);
    la_block_index x;
    la_sparse_hip ho = la_sparse_hip_default();
    la_sparse_chunks co = la_sparse_chunks_default();
    ho.block_size = co.block_size = LA_SPARSE_BLOCK_MAX;
    TU_EXPECT_STATUS(la_sparse_select_hip(ctx, &ho, &P.p, &P.q.t, &P.k.t, &x), LA_OK);
    tu_check(x.q_blocks == 1 && density(ctx, &P, &x) == 1, "hip block_size 2^30: density %g", density(ctx, &P, &x));
    la_block_index_free(&x);
    TU_EXPECT_STATUS(la_sparse_select_chunks(ctx, &co, &P.p, &P.q.t, &P.k.t, &x), LA_OK);
    tu_check(x.q_blocks == 1 && density(ctx, &P, &x) == 1, "chunks block_size 2^30: density %g", density(ctx, &P, &x));
    la_block_index_free(&x);
    sc_drop(&P);
}

int main(void) {
    uint64_t rng = tu_seed();
    la_context *ctx;
    la_context_create(&ctx, 3);
    hip_cases(&rng, ctx);
    chunk_cases(&rng, ctx);
    bad_budgets(&rng, ctx);
    block_max(&rng, ctx);
    la_context_destroy(ctx);
    return tu_finish();
}
