/* Extra key columns of the block index (la_block_index.col_offsets /
 * key_cols): the kernel's accuracy with columns is covered by
 * test_sparse_attention.c (random specs with columns, against the float64
 * reference restricted to blocks and columns, forward and backward, every
 * SIMD level). Here: a column inside a listed block is computed once (the
 * output equals the index without it, bit for bit), every key of a block
 * as columns equals listing the block, the column checks (each bad index
 * its status and a message, nothing written), la_block_index_quality with
 * columns against the dense probabilities, and vertical-slash with its
 * vertical columns as columns (valid, deterministic, a planted column
 * found exactly, fewer keys than the block form). */
#include "select_check.h"
#include "sparse_util.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    tu_buf q, k, v, out;
} qkv;

static qkv qkv_new(uint64_t *rng, int64_t B, int64_t L, int64_t H, int64_t Hkv, int64_t D) {
    qkv t = {.q = tu_buf_new(LA_F32, 4, (int64_t[]){B, L, H, D}, false, false),
             .k = tu_buf_new(LA_F32, 4, (int64_t[]){B, L, Hkv, D}, false, false),
             .v = tu_buf_new(LA_F32, 4, (int64_t[]){B, L, Hkv, D}, false, false),
             .out = tu_buf_new(LA_F32, 4, (int64_t[]){B, L, H, D}, false, false)};
    tu_fill(rng, t.q.t.data, LA_F32, (int64_t)t.q.elems, -1, 1);
    tu_fill(rng, t.k.t.data, LA_F32, (int64_t)t.k.elems, -1, 1);
    tu_fill(rng, t.v.t.data, LA_F32, (int64_t)t.v.elems, -1, 1);
    return t;
}

static void qkv_free(qkv *t) { tu_buf_free(&t->q), tu_buf_free(&t->k), tu_buf_free(&t->v), tu_buf_free(&t->out); }

/* Forward with x into a fresh buffer (f32, contiguous), at every SIMD level
 * compared with forward of y: worst absolute difference. */
static double diff_indexes(la_context *ctx, const la_attention_params *p, qkv *t, const la_block_index *x,
                           const la_block_index *y) {
    tu_buf o2 = tu_buf_new(LA_F32, 4, t->out.t.shape, false, false);
    la_simd levels[LA_SIMD_COUNT];
    const int nl = tu_simd_levels(levels);
    double worst = 0;
    for (int li = 0; li < nl; li++) {
        la_context_set_simd(ctx, levels[li]);
        tu_buf_poison(&t->out), tu_buf_poison(&o2);
        la_status a = la_block_sparse_forward(ctx, p, &t->q.t, &t->k.t, &t->v.t, x, &t->out.t, NULL);
        la_status b = la_block_sparse_forward(ctx, p, &t->q.t, &t->k.t, &t->v.t, y, &o2.t, NULL);
        if (a || b) {
            worst = INFINITY;
            continue;
        }
        for (size_t e = 0; e < o2.elems; e++) {
            double d = fabs((double)((float *)t->out.t.data)[e] - ((float *)o2.t.data)[e]);
            worst = isnan(d) ? INFINITY : fmax(worst, d);
        }
    }
    tu_buf_free(&o2);
    return worst;
}

/* Columns inside listed blocks change nothing; a whole block as columns is
 * the block. */
static void columns_vs_blocks(uint64_t *rng) {
    const int64_t B = 1, L = 190, H = 2, Hkv = 1, D = 16, bs = 32, nqb = 6, nkb = 6, rows = B * H * nqb;
    qkv t = qkv_new(rng, B, L, H, Hkv, D);
    la_attention_params p = la_attention_params_default();
    p.causal = 1;
    la_context *ctx;
    la_context_create(&ctx, 2);
    la_block_index a = sparse_random_index(rng, B, H, L, L, bs, 0.5), b = a;
    /* b: a's lists plus, as columns, random keys of its listed blocks only */
    b.col_offsets = malloc(sizeof(int64_t) * (rows + 1));
    b.key_cols = malloc(sizeof(int32_t) * (size_t)(rows * L));
    b.col_offsets[0] = 0;
    for (int64_t r = 0; r < rows; r++) {
        int64_t n = b.col_offsets[r];
        for (int64_t e = a.offsets[r]; e < a.offsets[r + 1]; e++)
            for (int64_t j = a.key_blocks[e] * bs; j < (a.key_blocks[e] + 1) * bs && j < L; j++)
                if (tu_uniform(rng, 0, 1) < 0.5) b.key_cols[n++] = (int32_t)j;
        b.col_offsets[r + 1] = n;
    }
    double d = diff_indexes(ctx, &p, &t, &a, &b);
    tu_check(d == 0, "columns inside listed blocks changed the output by %.3g (must be computed once)", d);
    /* c: nothing listed; every key of a's blocks as a column */
    la_block_index c = {.block_size = bs, .num_seqs = B, .heads = H, .q_blocks = nqb};
    c.offsets = calloc(rows + 1, sizeof(int64_t));
    c.col_offsets = malloc(sizeof(int64_t) * (rows + 1));
    c.key_cols = malloc(sizeof(int32_t) * (size_t)(rows * L));
    c.col_offsets[0] = 0;
    for (int64_t r = 0; r < rows; r++) {
        int64_t n = c.col_offsets[r];
        for (int64_t e = a.offsets[r]; e < a.offsets[r + 1]; e++)
            for (int64_t j = a.key_blocks[e] * bs; j < (a.key_blocks[e] + 1) * bs && j < L; j++) c.key_cols[n++] = (int32_t)j;
        c.col_offsets[r + 1] = n;
    }
    /* f32 online softmax over other key groupings: rounding only */
    d = diff_indexes(ctx, &p, &t, &a, &c);
    tu_check(d <= 1e-5, "every key of the blocks as columns differs from the blocks by %.3g (tolerance 1e-5)", d);
    (void)nkb;
    la_context_destroy(ctx);
    la_block_index_free(&a), la_block_index_free(&c);
    free(b.col_offsets), free(b.key_cols);
    qkv_free(&t);
}

/* Bad column arrays: each its status and a message; nothing written. */
static void bad_columns(uint64_t *rng) {
    const int64_t B = 1, L = 100, H = 2, D = 8, bs = 32, rows = B * H * 4;
    qkv t = qkv_new(rng, B, L, H, H, D);
    la_attention_params p = la_attention_params_default();
    la_context *ctx;
    la_context_create(&ctx, 1);
    int64_t off[9], coff[9];
    int32_t ids[16], cols[32];
    for (int64_t r = 0; r <= rows; r++) off[r] = r, coff[r] = 2 * r;
    for (int64_t e = 0; e < rows; e++) ids[e] = 0;
    for (int64_t e = 0; e < 2 * rows; e++) cols[e] = (int32_t)(e % 2 == 0 ? 40 : 99);
    la_block_index good = {.block_size = bs, .num_seqs = B, .heads = H, .q_blocks = 4, .offsets = off,
                           .key_blocks = ids, .col_offsets = coff, .key_cols = cols};
#define BAD(mutate, want)                                                                                     \
    do {                                                                                                      \
        la_block_index x = good;                                                                              \
        int64_t c2[9];                                                                                        \
        int32_t k2[32];                                                                                       \
        memcpy(c2, coff, sizeof coff), memcpy(k2, cols, sizeof cols);                                         \
        x.col_offsets = c2, x.key_cols = k2;                                                                  \
        mutate;                                                                                               \
        tu_buf_poison(&t.out);                                                                                \
        TU_EXPECT_STATUS(la_block_sparse_forward(ctx, &p, &t.q.t, &t.k.t, &t.v.t, &x, &t.out.t, NULL), want); \
        TU_EXPECT_STATUS(la_block_index_check(&x, B, H, L, L), want);                                         \
        tu_check(want == LA_OK || tu_buf_all_poisoned(&t.out), "%s: wrote out on failure", #mutate);         \
    } while (0)
    BAD((void)0, LA_OK);
    BAD(x.key_cols = NULL, LA_ERR_NULL);
    BAD((x.col_offsets = NULL, x.key_cols = NULL), LA_OK); /* no columns */
    BAD(c2[0] = 1, LA_ERR_SEQLENS);
    BAD(c2[3] = 1, LA_ERR_SEQLENS);
    BAD(k2[1] = 100, LA_ERR_SEQLENS);
    BAD(k2[0] = -1, LA_ERR_SEQLENS);
    BAD(k2[1] = 40, LA_ERR_ARGUMENT);
    BAD((k2[0] = 99, k2[1] = 40), LA_ERR_ARGUMENT);
    BAD(x.col_offsets = (int64_t *)((char *)c2 + 4), LA_ERR_ARGUMENT);
    BAD(x.key_cols = (int32_t *)((char *)k2 + 2), LA_ERR_ARGUMENT);
    BAD((memset(c2, 0, sizeof c2), x.key_cols = NULL), LA_OK); /* rows without columns need no array */
#undef BAD
    /* an output over the column arrays */
    la_tensor over = la_tensor_contiguous(cols, LA_F32, 4, (int64_t[]){1, 1, 1, 8});
    la_tensor lse_over = la_tensor_contiguous(coff, LA_F32, 3, (int64_t[]){B, L, H});
    (void)over;
    TU_EXPECT_STATUS(la_block_sparse_forward(ctx, &p, &t.q.t, &t.k.t, &t.v.t, &good, &t.out.t, &lse_over),
                     LA_ERR_ARGUMENT);
    la_context_destroy(ctx);
    qkv_free(&t);
}

/* Recall and density with columns, against the dense probabilities. */
static void quality_with_columns(uint64_t *rng, la_context *ctx) {
    for (int n = 0; n < 6; n++) {
        la_attention_params p = la_attention_params_default();
        p.causal = (int)tu_randint(rng, 0, 1);
        if (tu_randint(rng, 0, 2) == 0) p.window_left = tu_randint(rng, 0, 60);
        if (tu_randint(rng, 0, 2) == 0) p.sinks = tu_randint(rng, 1, 10);
        const int64_t L = tu_randint(rng, 1, 150), bs = tu_randint(rng, 1, 40);
        sc_problem P;
        sc_make(&P, rng, tu_randint(rng, 1, 2), L, L, 4, 2, 8, p, tu_randint(rng, 0, 1));
        la_block_index x = sparse_random_index(rng, P.B, P.H, L, L, bs, tu_uniform(rng, 0, 0.5));
        sparse_random_columns(rng, &x, L, tu_uniform(rng, 0.01, 0.3));
        char what[96];
        snprintf(what, sizeof what, "quality with columns %d (L %lld bs %lld causal %d)", n, (long long)L,
                 (long long)bs, p.causal);
        TU_EXPECT_STATUS(la_block_index_check(&x, P.B, P.H, L, L), LA_OK);
        sc_check_quality(ctx, &P, &x, what);
        la_block_index_free(&x);
        sc_drop(&P);
    }
}

static void vslash_columns(uint64_t *rng, la_context *ctx) {
    /* a planted column: key 300 points along every query's direction */
    sc_problem P;
    sc_make_planted(&P, rng, 300, 301, 4.0);
    la_sparse_vslash o = la_sparse_vslash_default();
    o.block_size = 32, o.vertical = 1, o.slash = 0, o.columns = 1;
    la_block_index x, xb;
    TU_EXPECT_STATUS(la_sparse_select_vslash(ctx, &o, &P.p, &P.q.t, &P.k.t, &x), LA_OK);
    sc_check_valid(&P, &x, "vslash columns planted");
    bool ok = x.col_offsets != NULL;
    for (int64_t qb = 0; qb < 16 && ok; qb++) { /* blocks: 0 and the local band; column 300 from block 9 on */
        for (int64_t kb = 0; kb < 16; kb++) ok &= sc_listed(&x, 0, 0, qb, kb) == (kb <= qb && (kb == 0 || kb >= qb - 1));
        const int64_t r = qb, n = x.col_offsets[r + 1] - x.col_offsets[r];
        ok &= qb < 9 || qb - 1 <= 9 ? n == 0 : n == 1 && x.key_cols[x.col_offsets[r]] == 300;
    }
    tu_check(ok, "vslash columns planted: head 0 is not blocks {0, qb - 1, qb} + column 300");
    sc_check_quality(ctx, &P, &x, "vslash columns planted");
    o.columns = 0;
    TU_EXPECT_STATUS(la_sparse_select_vslash(ctx, &o, &P.p, &P.q.t, &P.k.t, &xb), LA_OK);
    la_sparse_quality qc, qbk;
    TU_EXPECT_STATUS(la_block_index_quality(ctx, &P.p, &P.q.t, &P.k.t, &x, 0, 1, &qc), LA_OK);
    TU_EXPECT_STATUS(la_block_index_quality(ctx, &P.p, &P.q.t, &P.k.t, &xb, 0, 1, &qbk), LA_OK);
    tu_check(qc.density < qbk.density && qc.columns > 0,
             "vslash columns: density %.4f (%lld columns) not below the block form's %.4f", qc.density,
             (long long)qc.columns, qbk.density);
    la_block_index_free(&x), la_block_index_free(&xb);
    sc_drop(&P);

    for (int n = 0; n < 8; n++) {
        sc_problem R;
        sc_make_random(&R, rng, false);
        la_sparse_vslash vo = {.block_size = tu_randint(rng, 1, 40), .last_queries = tu_randint(rng, 0, 80),
                               .vertical = tu_randint(rng, 0, 20), .slash = tu_randint(rng, 0, 20), .columns = 1};
        char what[160];
        snprintf(what, sizeof what, "vslash columns %d (L %lld Lk %lld bs %lld last %lld v %lld s %lld causal %d)", n,
                 (long long)R.L, (long long)R.Lk, (long long)vo.block_size, (long long)vo.last_queries,
                 (long long)vo.vertical, (long long)vo.slash, R.p.causal);
        la_block_index a;
        sc_check_selector(ctx, &R, sc_run_vslash, &vo, what, &a);
        la_block_index_free(&a);
        sc_drop(&R);
    }
}

int main(void) {
    uint64_t rng = tu_seed();
    la_context *ctx;
    la_context_create(&ctx, 3);
    columns_vs_blocks(&rng);
    bad_columns(&rng);
    quality_with_columns(&rng, ctx);
    vslash_columns(&rng, ctx);
    la_context_destroy(ctx);
    return tu_finish();
}
