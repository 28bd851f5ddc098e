/* Every selector on a varlen batch (cu_seqlens, packed q and k, an empty
 * sequence, one of length 1, lengths off the block): the index has
 * q_blocks of the longest query sequence, each sequence's rows equal to
 * those of the dense call on that sequence alone, rows past a sequence's
 * end empty; la_block_index_check of the varlen problem passes through
 * the sparse forward; routing's state moves through the sequences in
 * order (the same as one dense call per sequence); flex's divergences per
 * sequence; bad cu_seqlens rejected with their statuses. */
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { NS = 4, H = 4, HKV = 2, D = 16, BS = 16 };
static const int32_t LQ[NS] = {37, 0, 1, 70}, LK[NS] = {50, 20, 1, 70};

typedef enum { S_STATIC, S_TOPK, S_VSLASH, S_HIP, S_CHUNKS, S_FLEX, S_ROUTING, S_COUNT } sel;
static const char *NAMES[S_COUNT] = {"static", "topk", "vslash", "hip", "chunks", "flex", "routing"};

static la_status run(sel w, la_context *ctx, la_sparse_routing_state *st, const la_attention_params *p,
                     const la_tensor *q, const la_tensor *k, la_block_index *x, double *div) {
    la_sparse_static so = la_sparse_static_default();
    la_sparse_topk to = la_sparse_topk_default();
    la_sparse_vslash vo = la_sparse_vslash_default();
    la_sparse_hip ho = la_sparse_hip_default();
    la_sparse_chunks co = la_sparse_chunks_default();
    la_sparse_flex fo = la_sparse_flex_default();
    la_sparse_routing ro = la_sparse_routing_default();
    so.block_size = to.block_size = vo.block_size = ho.block_size = co.block_size = fo.block_size = ro.block_size = BS;
    to.gamma = 0.7f, vo.vertical = 8, vo.slash = 4, vo.columns = 1, ho.top_k = 2, co.top_k = 1, co.chunk_blocks = 2;
    fo.tau = 0.05f, fo.vertical = 8, fo.slash = 4;
    switch (w) {
    case S_STATIC: return la_sparse_select_static(&so, p, q, k, x);
    case S_TOPK: return la_sparse_select_topk(ctx, &to, p, q, k, x);
    case S_VSLASH: return la_sparse_select_vslash(ctx, &vo, p, q, k, x);
    case S_HIP: return la_sparse_select_hip(ctx, &ho, p, q, k, x);
    case S_CHUNKS: return la_sparse_select_chunks(ctx, &co, p, q, k, x);
    case S_FLEX: return la_sparse_select_flex(ctx, &fo, p, q, k, x, div);
    default: return la_sparse_select_routing(ctx, &ro, st, p, q, k, x);
    }
}

/* Whether row (b, h, qb) of x equals row (0, h, qb) of y (rows past y's
 * query blocks: empty). */
static bool same_row(const la_block_index *x, int64_t b, int64_t h, int64_t qb, const la_block_index *y) {
    const int64_t r = (b * x->heads + h) * x->q_blocks + qb;
    const int64_t n = x->offsets[r + 1] - x->offsets[r], nc = x->col_offsets ? x->col_offsets[r + 1] - x->col_offsets[r] : 0;
    if (!y || qb >= y->q_blocks) return n == 0 && nc == 0;
    const int64_t ry = h * y->q_blocks + qb, m = y->offsets[ry + 1] - y->offsets[ry],
                  mc = y->col_offsets ? y->col_offsets[ry + 1] - y->col_offsets[ry] : 0;
    return n == m && nc == mc && !memcmp(x->key_blocks + x->offsets[r], y->key_blocks + y->offsets[ry], sizeof(int32_t) * (size_t)n) &&
           (!nc || !memcmp(x->key_cols + x->col_offsets[r], y->key_cols + y->col_offsets[ry], sizeof(int32_t) * (size_t)nc));
}

int main(void) {
    uint64_t rng = tu_seed();
    int32_t cu_q[NS + 1] = {0}, cu_k[NS + 1] = {0};
    for (int b = 0; b < NS; b++) cu_q[b + 1] = cu_q[b] + LQ[b], cu_k[b + 1] = cu_k[b] + LK[b];
    const int64_t Tq = cu_q[NS], Tk = cu_k[NS];
    tu_buf q = tu_buf_new(LA_F32, 3, (int64_t[]){Tq, H, D}, true, false), k = tu_buf_new(LA_F32, 3, (int64_t[]){Tk, HKV, D}, false, false);
    tu_buf v = tu_buf_new(LA_F32, 3, (int64_t[]){Tk, HKV, D}, false, false), out = tu_buf_new(LA_F32, 3, (int64_t[]){Tq, H, D}, false, false);
    tu_fill(&rng, q.t.data, LA_F32, (int64_t)q.elems, -1, 1);
    tu_fill(&rng, k.t.data, LA_F32, (int64_t)k.elems, -1, 1);
    tu_fill(&rng, v.t.data, LA_F32, (int64_t)v.elems, -1, 1);
    la_context *ctx;
    la_context_create(&ctx, 2);
    for (int causal = 0; causal < 2; causal++)
        for (int w = 0; w < S_COUNT; w++) {
            la_attention_params p = la_attention_params_default();
            p.causal = causal, p.cu_seqlens_q = cu_q, p.cu_seqlens_k = cu_k, p.num_seqs = NS;
            la_sparse_routing_state *s1 = NULL, *s2 = NULL;
            la_sparse_routing_state_create(&s1, H, D, 3, 5);
            la_sparse_routing_state_create(&s2, H, D, 3, 5);
            la_block_index x;
            double div[NS * H], want_div[NS * H];
            la_status st = run((sel)w, ctx, s1, &p, &q.t, &k.t, &x, div);
            tu_check(st == LA_OK, "%s causal %d: varlen %s", NAMES[w], causal, la_last_error());
            if (st) continue;
            tu_check(x.num_seqs == NS && x.heads == H && x.q_blocks == (70 + BS - 1) / BS,
                     "%s: index %lld x %lld x %lld", NAMES[w], (long long)x.num_seqs, (long long)x.heads, (long long)x.q_blocks);
            bool same = true;
            for (int b = 0; b < NS; b++) {
                la_attention_params pd = la_attention_params_default();
                pd.causal = causal;
                /* the sequence alone, dense: a [1, L, heads, D] view of the packed rows */
                la_tensor qd = q.t, kd = k.t;
                qd.ndim = kd.ndim = 4;
                qd.shape[0] = kd.shape[0] = 1, qd.shape[1] = LQ[b], qd.shape[2] = H, qd.shape[3] = D;
                kd.shape[1] = LK[b], kd.shape[2] = HKV, kd.shape[3] = D;
                qd.stride[3] = q.t.stride[2], qd.stride[2] = q.t.stride[1], qd.stride[1] = q.t.stride[0], qd.stride[0] = q.t.stride[0] * Tq;
                kd.stride[3] = k.t.stride[2], kd.stride[2] = k.t.stride[1], kd.stride[1] = k.t.stride[0], kd.stride[0] = k.t.stride[0] * Tk;
                qd.data = (float *)q.t.data + cu_q[b] * q.t.stride[0];
                kd.data = (float *)k.t.data + cu_k[b] * k.t.stride[0];
                la_block_index y = {0};
                bool have = LQ[b] > 0;
                if (have) {
                    la_status sd = run((sel)w, ctx, s2, &pd, &qd, &kd, &y, want_div + b * H);
                    tu_check(sd == LA_OK, "%s: dense sequence %d %s", NAMES[w], b, la_last_error());
                    have = sd == LA_OK;
                } else {
                    for (int h = 0; h < H; h++) want_div[b * H + h] = NAN;
                }
                for (int h = 0; h < H; h++)
                    for (int64_t qb = 0; qb < x.q_blocks; qb++) same &= same_row(&x, b, h, qb, have ? &y : NULL);
                la_block_index_free(&y);
            }
            tu_check(same, "%s causal %d: varlen rows differ from the sequences' dense calls", NAMES[w], causal);
            if (w == S_FLEX) {
                bool dsame = true;
                for (int e = 0; e < NS * H; e++) dsame &= (isnan(div[e]) && isnan(want_div[e])) || div[e] == want_div[e];
                tu_check(dsame, "flex: varlen divergences differ from the dense calls'");
            }
            /* the index fits the varlen problem: the sparse forward takes it */
            TU_EXPECT_STATUS(la_block_sparse_forward(ctx, &p, &q.t, &k.t, &v.t, &x, &out.t, NULL), LA_OK);
            la_block_index_free(&x);
            la_sparse_routing_state_free(s1), la_sparse_routing_state_free(s2);
        }
    /* bad cu_seqlens, num_seqs, ranks */
    la_attention_params p = la_attention_params_default();
    int32_t bad[NS + 1];
    memcpy(bad, cu_q, sizeof bad);
    p.cu_seqlens_q = bad, p.cu_seqlens_k = cu_k, p.num_seqs = NS;
    la_block_index x;
    bad[2] = bad[1] - 1;
    for (int w = 0; w < S_COUNT; w++) {
        la_sparse_routing_state *s1;
        la_sparse_routing_state_create(&s1, H, D, 3, 5);
        TU_EXPECT_STATUS(run((sel)w, ctx, s1, &p, &q.t, &k.t, &x, NULL), LA_ERR_SEQLENS);
        tu_check(x.offsets == NULL, "%s: out not zeroed on failure", NAMES[w]);
        la_sparse_routing_state_free(s1);
    }
    memcpy(bad, cu_q, sizeof bad);
    bad[0] = 1;
    TU_EXPECT_STATUS(run(S_TOPK, ctx, NULL, &p, &q.t, &k.t, &x, NULL), LA_ERR_SEQLENS);
    bad[0] = 0, bad[NS] = (int32_t)Tq + 1;
    TU_EXPECT_STATUS(run(S_HIP, ctx, NULL, &p, &q.t, &k.t, &x, NULL), LA_ERR_SEQLENS);
    memcpy(bad, cu_q, sizeof bad);
    p.num_seqs = 0;
    TU_EXPECT_STATUS(run(S_CHUNKS, ctx, NULL, &p, &q.t, &k.t, &x, NULL), LA_ERR_ARGUMENT);
    p.num_seqs = NS, p.cu_seqlens_k = NULL;
    TU_EXPECT_STATUS(run(S_STATIC, ctx, NULL, &p, &q.t, &k.t, &x, NULL), LA_ERR_ARGUMENT);
    p.cu_seqlens_k = cu_k;
    la_sparse_routing_state *wrong;
    la_sparse_routing_state_create(&wrong, H + 1, D, 3, 5);
    TU_EXPECT_STATUS(run(S_ROUTING, ctx, wrong, &p, &q.t, &k.t, &x, NULL), LA_ERR_SHAPE);
    la_sparse_routing_state_free(wrong);
    la_context_destroy(ctx);
    tu_buf_free(&q), tu_buf_free(&k), tu_buf_free(&v), tu_buf_free(&out);
    return tu_finish();
}
