/* Block-sparse attention as a harness case for `longattn bench sparse`:
 * prepare runs the selector (timed), measures the index's recall on
 * sampled rows and its density (la_block_index_quality), and times the
 * dense kernel at the same shape (best of two runs); the timed run is la_block_sparse_forward.
 * Its results are the selection time, density, recall, the dense time and
 * the speed-up. The work it reports is the dense forward's FLOPs times the
 * density (the blocks it computes). Correctness is tested by
 * tests/sparse/test_sparse_*.c, so it offers no sampled reference. */
#include "sparse_cases.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Rows sampled for recall: enough for two digits (recall is a mean of
 * shares in [0, 1]), few enough to cost well under the sparse run at 8K+. */
#define RECALL_ROWS 256

typedef struct {
    harness_case base; /* first: the harness sees this */
    sparse_spec s;
    tu_buf q, k, v, out, lse;
    la_block_index index;
    la_sparse_quality quality;
    double select_ms, dense_ms;
    bool measured;
} sp_case;

static const char *selector_name(sparse_selector s) {
    static const char *names[] = {"static", "topk", "vslash", "routing", "hip", "chunks", "flex"};
    return (unsigned)s < sizeof names / sizeof names[0] ? names[s] : "?";
}

static void describe(const harness_case *hc, harness_fields *f) {
    const sp_case *c = (const sp_case *)hc;
    harness_field_str(f, "dtype", "f32");
    harness_field_int(f, "B", c->s.B);
    harness_field_int(f, "H", c->s.H);
    harness_field_int(f, "Hkv", c->s.Hkv);
    harness_field_int(f, "L", c->s.L);
    harness_field_int(f, "D", c->s.D);
    harness_field_int(f, "causal", c->s.causal);
    harness_field_str(f, "selector", selector_name(c->s.selector));
    harness_field_int(f, "block", c->s.block_size ? c->s.block_size : LA_SPARSE_BLOCK_DEFAULT);
    if (c->s.selector == SPARSE_STATIC) {
        harness_field_int(f, "local", c->s.local_blocks);
    } else if (c->s.selector == SPARSE_VSLASH) {
        harness_field_int(f, "vertical", c->s.vertical);
        harness_field_int(f, "slash", c->s.slash);
        harness_field_int(f, "columns", c->s.columns);
    } else if (c->s.selector == SPARSE_ROUTING) {
        harness_field_int(f, "clusters", c->s.clusters);
    } else if (c->s.selector == SPARSE_HIP) {
        harness_field_int(f, "top_k", c->s.top_k);
    } else if (c->s.selector == SPARSE_CHUNKS) {
        harness_field_int(f, "chunk_blocks", c->s.chunk_blocks);
        harness_field_int(f, "top_k", c->s.top_k);
    } else if (c->s.selector == SPARSE_FLEX) {
        char g[32];
        snprintf(g, sizeof g, "%.2f/%.3f", c->s.gamma, c->s.tau);
        harness_field_str(f, "gamma_tau", g);
    } else if (c->s.top_k > 0) {
        harness_field_int(f, "top_k", c->s.top_k);
    } else {
        char g[16];
        snprintf(g, sizeof g, "%.2f", c->s.gamma);
        harness_field_str(f, "gamma", g);
    }
    harness_field_str(f, "pass", "fwd");
}

static double dense_flops(const sp_case *c) {
    double f = 4.0 * (double)c->s.B * (double)c->s.H * (double)c->s.L * (double)c->s.L * (double)c->s.D;
    return c->s.causal ? f / 2 : f;
}

static double flops(const harness_case *hc) {
    const sp_case *c = (const sp_case *)hc;
    return dense_flops(c) * (c->measured && isfinite(c->quality.density) ? c->quality.density : 1.0);
}

static double bytes(const harness_case *hc) {
    const sp_case *c = (const sp_case *)hc;
    return 4.0 * (double)c->s.B * (double)c->s.L * (double)(2 * c->s.H + 2 * c->s.Hkv) * (double)c->s.D;
}

static la_attention_params params(const sp_case *c) {
    la_attention_params p = la_attention_params_default();
    p.causal = c->s.causal;
    return p;
}

static bool setup(harness_case *hc, uint64_t seed) {
    sp_case *c = (sp_case *)hc;
    const int64_t qs[4] = {c->s.B, c->s.L, c->s.H, c->s.D}, ks[4] = {c->s.B, c->s.L, c->s.Hkv, c->s.D},
                  ls[3] = {c->s.B, c->s.L, c->s.H};
    if (!tu_buf_init(&c->q, LA_F32, 4, qs, false, false) || !tu_buf_init(&c->k, LA_F32, 4, ks, false, false) ||
        !tu_buf_init(&c->v, LA_F32, 4, ks, false, false) || !tu_buf_init(&c->out, LA_F32, 4, qs, false, false) ||
        !tu_buf_init(&c->lse, LA_F32, 3, ls, false, true))
        return false;
    uint64_t rng = seed;
    tu_fill(&rng, c->q.t.data, LA_F32, (int64_t)c->q.elems, -1, 1);
    tu_fill(&rng, c->k.t.data, LA_F32, (int64_t)c->k.elems, -1, 1);
    tu_fill(&rng, c->v.t.data, LA_F32, (int64_t)c->v.elems, -1, 1);
    tu_buf_poison(&c->out), tu_buf_poison(&c->lse);
    return true;
}

static void poison(harness_case *hc) {
    sp_case *c = (sp_case *)hc;
    tu_buf_poison(&c->out), tu_buf_poison(&c->lse);
}

/* Select (timed), measure the index, time the dense kernel: the faster of
 * two runs, so the first run's page faults and cold caches do not flatter
 * the speed-up (the harness warms the sparse run up too). */
static la_status prepare(harness_case *hc, la_context *ctx) {
    sp_case *c = (sp_case *)hc;
    la_attention_params p = params(c);
    la_status s;
    double t0 = la_clock_seconds();
    if (c->s.selector == SPARSE_STATIC) {
        la_sparse_static o = la_sparse_static_default();
        o.block_size = c->s.block_size, o.local_blocks = c->s.local_blocks;
        s = la_sparse_select_static(&o, &p, &c->q.t, &c->k.t, &c->index);
    } else if (c->s.selector == SPARSE_VSLASH) {
        la_sparse_vslash o = la_sparse_vslash_default();
        o.block_size = c->s.block_size, o.vertical = c->s.vertical, o.slash = c->s.slash;
        o.columns = c->s.columns;
        s = la_sparse_select_vslash(ctx, &o, &p, &c->q.t, &c->k.t, &c->index);
    } else if (c->s.selector == SPARSE_ROUTING) {
        la_sparse_routing o = la_sparse_routing_default();
        la_sparse_routing_state *st;
        o.block_size = c->s.block_size;
        s = la_sparse_routing_state_create(&st, c->s.H, c->s.D, c->s.clusters, 1);
        if (!s) s = la_sparse_select_routing(ctx, &o, st, &p, &c->q.t, &c->k.t, &c->index);
        la_sparse_routing_state_free(st);
    } else if (c->s.selector == SPARSE_HIP) {
        la_sparse_hip o = la_sparse_hip_default();
        o.block_size = c->s.block_size, o.top_k = c->s.top_k;
        s = la_sparse_select_hip(ctx, &o, &p, &c->q.t, &c->k.t, &c->index);
    } else if (c->s.selector == SPARSE_CHUNKS) {
        la_sparse_chunks o = la_sparse_chunks_default();
        o.block_size = c->s.block_size, o.chunk_blocks = c->s.chunk_blocks, o.top_k = c->s.top_k;
        s = la_sparse_select_chunks(ctx, &o, &p, &c->q.t, &c->k.t, &c->index);
    } else if (c->s.selector == SPARSE_FLEX) {
        la_sparse_flex o = la_sparse_flex_default();
        o.block_size = c->s.block_size, o.gamma = c->s.gamma, o.tau = c->s.tau, o.vertical = c->s.vertical,
        o.slash = c->s.slash;
        s = la_sparse_select_flex(ctx, &o, &p, &c->q.t, &c->k.t, &c->index, NULL);
    } else {
        la_sparse_topk o = la_sparse_topk_default();
        o.block_size = c->s.block_size, o.gamma = c->s.gamma, o.top_k = c->s.top_k;
        s = la_sparse_select_topk(ctx, &o, &p, &c->q.t, &c->k.t, &c->index);
    }
    c->select_ms = (la_clock_seconds() - t0) * 1e3;
    if (s) return s;
    if ((s = la_block_index_quality(ctx, &p, &c->q.t, &c->k.t, &c->index, RECALL_ROWS, 1, &c->quality))) return s;
    c->dense_ms = INFINITY;
    for (int rep = 0; rep < 2; rep++) {
        t0 = la_clock_seconds();
        if ((s = la_attention_forward(ctx, &p, &c->q.t, &c->k.t, &c->v.t, &c->out.t, &c->lse.t))) return s;
        double ms = (la_clock_seconds() - t0) * 1e3;
        if (ms < c->dense_ms) c->dense_ms = ms;
    }
    c->measured = true;
    return LA_OK;
}

static la_status run(harness_case *hc, la_context *ctx) {
    sp_case *c = (sp_case *)hc;
    la_attention_params p = params(c);
    return la_block_sparse_forward(ctx, &p, &c->q.t, &c->k.t, &c->v.t, &c->index, &c->out.t, &c->lse.t);
}

static bool reference(harness_case *hc, bool sampled) {
    (void)hc, (void)sampled;
    return false;
}

static double check(harness_case *hc, const char *label, bool tally) {
    (void)hc, (void)label, (void)tally;
    return NAN;
}

static void results(harness_case *hc, double ms, harness_fields *f) {
    const sp_case *c = (const sp_case *)hc;
    harness_field_num(f, "select_ms", c->select_ms);
    harness_field_num(f, "density", c->quality.density);
    harness_field_num(f, "recall", c->quality.recall);
    harness_field_num(f, "dense_ms", c->dense_ms);
    harness_field_num(f, "speedup", ms > 0 ? c->dense_ms / ms : NAN);
    harness_field_num(f, "speedup_total", ms > 0 ? c->dense_ms / (ms + c->select_ms) : NAN);
}

static void teardown(harness_case *hc) {
    sp_case *c = (sp_case *)hc;
    tu_buf *bufs[] = {&c->q, &c->k, &c->v, &c->out, &c->lse};
    for (int i = 0; i < 5; i++) tu_buf_free(bufs[i]);
    la_block_index_free(&c->index);
    c->measured = false;
}

static const harness_ops ops = {.op = "sparse", HARNESS_CASE_CALLBACKS, .prepare = prepare, .results = results};

harness_case *sparse_case(const sparse_spec *s) {
    sp_case *c = calloc(1, sizeof *c);
    c->base.ops = &ops;
    snprintf(c->base.name, sizeof c->base.name, "%s", s->name ? s->name : "sparse");
    c->base.threads = s->threads;
    c->base.ceiling = HARNESS_CEIL_FP32_FMA;
    c->base.tokens = s->B * s->L;
    c->s = *s;
    c->s.name = NULL;
    return &c->base;
}

void sparse_sweep_cases(harness_list *list, const sparse_sweep *s) {
    int series = 0;
    for (int ci = 0; ci < s->nconfig; ci++) {
        series++;
        for (int li = 0; li < s->nL; li++) {
            sparse_spec sp = s->configs[ci];
            sp.B = 1, sp.H = s->H, sp.Hkv = s->Hkv, sp.D = s->D, sp.L = s->L[li], sp.causal = s->causal;
            harness_case *c = sparse_case(&sp);
            c->series = series;
            harness_add(list, c);
        }
    }
}
