/* la_sparse_choice_parse and la_sparse_select: every selector name with a
 * good budget (and options: sink=, local=, dense-layers=) parses to its
 * kind, budget and options, and la_sparse_select gives exactly the index
 * of that selector called with its defaults, the budget and the options
 * as the header maps them; bad texts, budgets and options are
 * LA_ERR_ARGUMENT with a message (out untouched), NULLs LA_ERR_NULL. */
#include "select_check.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The selector's own call with the choice's budget and options, as the
 * header maps them. */
static la_status own_call(la_context *ctx, const la_sparse_choice *cp, const la_attention_params *pp,
                          const sc_problem *PP, la_block_index *bp) {
    const la_sparse_choice c = *cp;
    const la_attention_params p = *pp;
    const sc_problem P = *PP;
    la_block_index b = {0};
    const int64_t n = (int64_t)c.budget;
    la_status s = LA_OK;
    switch (c.kind) {
    case LA_SPARSE_STATIC: {
        la_sparse_static o = la_sparse_static_default();
        o.local_blocks = n;
        if (c.sink_blocks) o.sink_blocks = c.sink_blocks;
        s = la_sparse_select_static(&o, &p, &P.q.t, &P.k.t, &b);
        break;
    }
    case LA_SPARSE_TOPK: {
        la_sparse_topk o = la_sparse_topk_default();
        if (c.budget <= 1) o.gamma = (float)c.budget;
        else o.top_k = n;
        if (c.sink_blocks) o.sink_blocks = c.sink_blocks;
        if (c.local_blocks) o.local_blocks = c.local_blocks;
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
        if (c.sink_blocks) o.sink_blocks = c.sink_blocks;
        if (c.local_blocks) o.local_blocks = c.local_blocks;
        s = la_sparse_select_hip(ctx, &o, &p, &P.q.t, &P.k.t, &b);
        break;
    }
    case LA_SPARSE_CHUNKS: {
        la_sparse_chunks o = la_sparse_chunks_default();
        o.top_k = n;
        if (c.local_blocks) o.local_blocks = c.local_blocks;
        s = la_sparse_select_chunks(ctx, &o, &p, &P.q.t, &P.k.t, &b);
        break;
    }
    case LA_SPARSE_FLEX: {
        la_sparse_flex o = la_sparse_flex_default();
        o.gamma = (float)c.budget;
        if (c.sink_blocks) o.sink_blocks = c.sink_blocks;
        if (c.local_blocks) o.local_blocks = c.local_blocks;
        s = la_sparse_select_flex(ctx, &o, &p, &P.q.t, &P.k.t, &b, NULL);
        break;
    }
    default: {
        la_sparse_routing o = la_sparse_routing_default();
        if (c.sink_blocks) o.sink_blocks = c.sink_blocks;
        if (c.local_blocks) o.local_blocks = c.local_blocks;
        la_sparse_routing_state *st;
        la_sparse_routing_state_create(&st, 4, 16, n, 0);
        s = la_sparse_select_routing(ctx, &o, st, &p, &P.q.t, &P.k.t, &b);
        la_sparse_routing_state_free(st);
    }
    }
    *bp = b;
    return s;
}

int main(void) {
    uint64_t rng = tu_seed();
    la_context *ctx;
    la_context_create(&ctx, 2);
    la_attention_params p = la_attention_params_default();
    p.causal = 1;
    sc_problem P;
    sc_make(&P, &rng, 1, 300, 300, 4, 2, 16, p, false);
    struct { const char *text; la_sparse_kind kind; double budget; int64_t sink, local, dense; } good[] = {
        {"none", LA_SPARSE_NONE, 0},          {"static:3", LA_SPARSE_STATIC, 3}, {"topk:0.8", LA_SPARSE_TOPK, 0.8},
        {"topk:4", LA_SPARSE_TOPK, 4},        {"vslash:16", LA_SPARSE_VSLASH, 16}, {"hip:2", LA_SPARSE_HIP, 2},
        {"chunks:1", LA_SPARSE_CHUNKS, 1},    {"flex:0.9", LA_SPARSE_FLEX, 0.9}, {"routing:4", LA_SPARSE_ROUTING, 4},
        /* options, in any order; sink / local change the index as the selector's own fields do */
        {"static:2,sink=2", LA_SPARSE_STATIC, 2, 2, 0, 0},
        {"topk:1,sink=2,local=3", LA_SPARSE_TOPK, 1, 2, 3, 0},
        {"topk:0.5,local=2,dense-layers=3", LA_SPARSE_TOPK, 0.5, 0, 2, 3},
        {"vslash:8,dense-layers=0", LA_SPARSE_VSLASH, 8, 0, 0, 0},
        {"hip:1,local=3,sink=1", LA_SPARSE_HIP, 1, 1, 3, 0},
        {"chunks:1,local=4", LA_SPARSE_CHUNKS, 1, 0, 4, 0},
        {"flex:0.8,dense-layers=2,sink=3,local=2", LA_SPARSE_FLEX, 0.8, 3, 2, 2},
        {"routing:3,sink=1,local=2", LA_SPARSE_ROUTING, 3, 1, 2, 0},
        {"topk:2,dense-layers=1073741824", LA_SPARSE_TOPK, 2, 0, 0, (int64_t)1 << 30}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        la_sparse_choice c = {LA_SPARSE_KIND_COUNT, -1, 7, 7, 7};
        TU_EXPECT_STATUS(la_sparse_choice_parse(good[i].text, &c), LA_OK);
        tu_check(c.kind == good[i].kind && c.budget == good[i].budget && c.sink_blocks == good[i].sink &&
                     c.local_blocks == good[i].local && c.dense_layers == good[i].dense,
                 "%s: parsed as kind %d budget %g sink %lld local %lld dense-layers %lld", good[i].text, (int)c.kind,
                 c.budget, (long long)c.sink_blocks, (long long)c.local_blocks, (long long)c.dense_layers);
        if (c.kind == LA_SPARSE_NONE) {
            la_block_index x;
            TU_EXPECT_STATUS(la_sparse_select(ctx, &c, &p, &P.q.t, &P.k.t, &x), LA_ERR_ARGUMENT);
            continue;
        }
        la_block_index a, b = {0};
        TU_EXPECT_STATUS(la_sparse_select(ctx, &c, &p, &P.q.t, &P.k.t, &a), LA_OK);
        la_status s = own_call(ctx, &c, &p, &P, &b);
        tu_check(s == LA_OK && sc_same_index(&a, &b), "%s: la_sparse_select differs from the selector's own call",
                 good[i].text);
        sc_check_valid(&P, &a, good[i].text);
        la_block_index_free(&a), la_block_index_free(&b);
    }
    const char *bad[] = {"", "topk", "topk:", "topk:x", "topk:0.5x", "dense:1", "static:0", "static:1.5", "static:-2",
                         "topk:1.5", "topk:0", "topk:nan", "hip:0", "flex:1.5", "flex:0", "routing:70000",
                         "vslash:inf", "chunks:2e30", ":3", "none:1", "Static:2",
                         /* options */
                         "topk:4,", "topk:4,sink", "topk:4,sink=", "topk:4,sink=0", "topk:4,local=0", "topk:4,sink=-1",
                         "topk:4,sink=1.5", "topk:4,sink=2x", "topk:4,sink= 2", "topk:4,foo=1", "topk:4,=1",
                         "topk:4,sink=1,sink=2", "topk:4,,local=2", "topk:4,local=2,", "topk:4,dense-layers=-1",
                         "topk:4,dense-layers=1073741825", "topk:4,local=99999999999999999999", "vslash:8,sink=1",
                         "vslash:8,local=1", "static:2,local=2", "chunks:1,sink=1", "none,dense-layers=1",
                         "topk:4;local=2", "topk:4 ,local=2", "hip:x,local=2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        la_sparse_choice c = {LA_SPARSE_HIP, 7, 5, 5, 5};
        TU_EXPECT_STATUS(la_sparse_choice_parse(bad[i], &c), LA_ERR_ARGUMENT);
        tu_check(c.kind == LA_SPARSE_HIP && c.budget == 7 && c.sink_blocks == 5 && c.local_blocks == 5 &&
                     c.dense_layers == 5, "'%s': out changed on failure", bad[i]);
        tu_check(la_last_error()[0] != '\0', "'%s': no message", bad[i]);
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
    /* options out of range or not the selector's, set in the struct directly */
    const la_sparse_choice badc[] = {{LA_SPARSE_TOPK, 2, .sink_blocks = -1}, {LA_SPARSE_HIP, 2, .local_blocks = -2},
                                     {LA_SPARSE_TOPK, 2, .dense_layers = -1}, {LA_SPARSE_VSLASH, 8, .sink_blocks = 1},
                                     {LA_SPARSE_VSLASH, 8, .local_blocks = 1}, {LA_SPARSE_STATIC, 2, .local_blocks = 1},
                                     {LA_SPARSE_CHUNKS, 1, .sink_blocks = 2}, {LA_SPARSE_FLEX, 0.9, .sink_blocks = INT64_MAX}};
    for (size_t i = 0; i < sizeof badc / sizeof badc[0]; i++) {
        TU_EXPECT_STATUS(la_sparse_select(ctx, &badc[i], &p, &P.q.t, &P.k.t, &x), LA_ERR_ARGUMENT);
        tu_check(x.offsets == NULL && la_last_error()[0], "bad choice %zu: out not zeroed or no message", i);
    }
    sc_drop(&P);
    la_context_destroy(ctx);
    return tu_finish();
}
