/* la_sparse_choice_parse and la_sparse_select: every selector name with a
 * good budget parses to its kind and budget, and la_sparse_select gives
 * exactly the index of that selector called with its defaults and the
 * budget as the header maps it; bad texts and budgets are LA_ERR_ARGUMENT
 * with a message (out untouched), NULLs LA_ERR_NULL. */
#include "select_check.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    uint64_t rng = tu_seed();
    la_context *ctx;
    la_context_create(&ctx, 2);
    la_attention_params p = la_attention_params_default();
    p.causal = 1;
    sc_problem P;
    sc_make(&P, &rng, 1, 300, 300, 4, 2, 16, p, false);
    struct { const char *text; la_sparse_kind kind; double budget; } good[] = {
        {"none", LA_SPARSE_NONE, 0},          {"static:3", LA_SPARSE_STATIC, 3}, {"topk:0.8", LA_SPARSE_TOPK, 0.8},
        {"topk:4", LA_SPARSE_TOPK, 4},        {"vslash:16", LA_SPARSE_VSLASH, 16}, {"hip:2", LA_SPARSE_HIP, 2},
        {"chunks:1", LA_SPARSE_CHUNKS, 1},    {"flex:0.9", LA_SPARSE_FLEX, 0.9}, {"routing:4", LA_SPARSE_ROUTING, 4}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        la_sparse_choice c = {LA_SPARSE_KIND_COUNT, -1};
        TU_EXPECT_STATUS(la_sparse_choice_parse(good[i].text, &c), LA_OK);
        tu_check(c.kind == good[i].kind && c.budget == good[i].budget, "%s: parsed as kind %d budget %g", good[i].text,
                 (int)c.kind, c.budget);
        if (c.kind == LA_SPARSE_NONE) {
            la_block_index x;
            TU_EXPECT_STATUS(la_sparse_select(ctx, &c, &p, &P.q.t, &P.k.t, &x), LA_ERR_ARGUMENT);
            continue;
        }
        la_block_index a, b = {0};
        TU_EXPECT_STATUS(la_sparse_select(ctx, &c, &p, &P.q.t, &P.k.t, &a), LA_OK);
        const int64_t n = (int64_t)c.budget;
        la_status s = LA_OK;
        switch (c.kind) {
        case LA_SPARSE_STATIC: {
            la_sparse_static o = la_sparse_static_default();
            o.local_blocks = n;
            s = la_sparse_select_static(&o, &p, &P.q.t, &P.k.t, &b);
            break;
        }
        case LA_SPARSE_TOPK: {
            la_sparse_topk o = la_sparse_topk_default();
            if (c.budget <= 1) o.gamma = (float)c.budget;
            else o.top_k = n;
            s = la_sparse_select_topk(ctx, &o, &p, &P.q.t, &P.k.t, &b);
            break;
        }
        case LA_SPARSE_VSLASH: {
            la_sparse_vslash o = la_sparse_vslash_default();
            o.vertical = o.slash = n;
            s = la_sparse_select_vslash(ctx, &o, &p, &P.q.t, &P.k.t, &b);
            break;
        }
        case LA_SPARSE_HIP: {
            la_sparse_hip o = la_sparse_hip_default();
            o.top_k = n;
            s = la_sparse_select_hip(ctx, &o, &p, &P.q.t, &P.k.t, &b);
            break;
        }
        case LA_SPARSE_CHUNKS: {
            la_sparse_chunks o = la_sparse_chunks_default();
            o.top_k = n;
            s = la_sparse_select_chunks(ctx, &o, &p, &P.q.t, &P.k.t, &b);
            break;
        }
        case LA_SPARSE_FLEX: {
            la_sparse_flex o = la_sparse_flex_default();
            o.gamma = (float)c.budget;
            s = la_sparse_select_flex(ctx, &o, &p, &P.q.t, &P.k.t, &b, NULL);
            break;
        }
        default: {
            la_sparse_routing o = la_sparse_routing_default();
            la_sparse_routing_state *st;
            la_sparse_routing_state_create(&st, 4, 16, n, 0);
            s = la_sparse_select_routing(ctx, &o, st, &p, &P.q.t, &P.k.t, &b);
            la_sparse_routing_state_free(st);
        }
        }
        tu_check(s == LA_OK && sc_same_index(&a, &b), "%s: la_sparse_select differs from the selector's own call",
                 good[i].text);
        sc_check_valid(&P, &a, good[i].text);
        la_block_index_free(&a), la_block_index_free(&b);
    }
    const char *bad[] = {"", "topk", "topk:", "topk:x", "topk:0.5x", "dense:1", "static:0", "static:1.5", "static:-2",
                         "topk:1.5", "topk:0", "topk:nan", "hip:0", "flex:1.5", "flex:0", "routing:70000",
                         "vslash:inf", "chunks:2e30", ":3", "none:1", "Static:2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        la_sparse_choice c = {LA_SPARSE_HIP, 7};
        TU_EXPECT_STATUS(la_sparse_choice_parse(bad[i], &c), LA_ERR_ARGUMENT);
        tu_check(c.kind == LA_SPARSE_HIP && c.budget == 7, "'%s': out changed on failure", bad[i]);
    }
    la_sparse_choice c;
    TU_EXPECT_STATUS(la_sparse_choice_parse(NULL, &c), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_sparse_choice_parse("hip:2", NULL), LA_ERR_NULL);
    la_block_index x;
    TU_EXPECT_STATUS(la_sparse_select(ctx, NULL, &p, &P.q.t, &P.k.t, &x), LA_ERR_NULL);
    c = (la_sparse_choice){LA_SPARSE_KIND_COUNT, 1};
    TU_EXPECT_STATUS(la_sparse_select(ctx, &c, &p, &P.q.t, &P.k.t, &x), LA_ERR_ARGUMENT);
    c = (la_sparse_choice){LA_SPARSE_HIP, 2.5};
    TU_EXPECT_STATUS(la_sparse_select(ctx, &c, &p, &P.q.t, &P.k.t, &x), LA_ERR_ARGUMENT);
    tu_check(x.offsets == NULL, "la_sparse_select: out not zeroed on failure");
    sc_drop(&P);
    la_context_destroy(ctx);
    return tu_finish();
}
