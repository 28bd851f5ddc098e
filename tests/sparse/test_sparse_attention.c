/* Block-sparse attention (la_block_sparse_forward / _backward) against the
 * float64 reference restricted to the listed blocks (ref_attn_opts.keep),
 * at every SIMD level: fresh random awkward shapes (length 1, lengths off
 * the block, GQA, causal / window / sinks / softcap / ALiBi / sigmoid),
 * complete lists (which must also equal la_attention_forward) and random
 * ones, strided views, poisoned outputs; then bad indexes, each with its
 * status and nothing written. */
#include "attention_ref.h"
#include "sparse_util.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char name[160];
    int64_t B, Lq, Lk, H, Hkv, D, bs;
    double share; /* of key blocks listed; 1 = complete */
    double cols;  /* > 0: each row also lists each key as an extra column with this probability */
    bool strided, alibi, backward;
    int threads;
    la_attention_params p;
} sp_spec;

/* Forward tolerances as the dense forward's (tests/attention/forward_case.c):
 * f32 arithmetic over D <= 512 and a few thousand keys. Backward: the dense
 * backward's 3e-5 of the gradient's scale, the scale at least 0.1: inputs
 * are of size 1, and where every row sees one key (a window of 0) the true
 * dq, dk are all 0 while f32 leaves the rounding of dp - delta, dout . v
 * summed two ways, up to ~4e-7 after GQA sums 4 heads (seen 3.4e-7). */
#define OUT_ATOL 2e-5
#define OUT_RTOL 2e-4
#define LSE_ATOL 5e-5
#define GRAD_TOL 3e-5

static double *to_double(const tu_buf *t, int64_t b, int64_t L, int64_t h, int64_t D) {
    double *x = malloc(sizeof(double) * (size_t)(L * D + 1));
    for (int64_t i = 0; i < L; i++)
        for (int64_t d = 0; d < D; d++) x[i * D + d] = tu_get(&t->t, (int64_t[]){b, i, h, d});
    return x;
}

typedef struct {
    double worst;  /* |got - want| beyond tolerance, as a share of it (<= 1 passes) */
    int64_t nan;
} cmp;

static void cmp_out(cmp *c, double got, double want, double atol, double rtol) {
    if (isnan(got) != isnan(want) || (isinf(want) && got != want)) {
        c->nan++;
        return;
    }
    if (isinf(want) || isnan(want)) return;
    double e = fabs(got - want) / (atol + rtol * fabs(want));
    if (e > c->worst) c->worst = e;
}

static void run_spec(const sp_spec *s, uint64_t *rng) {
    const int64_t B = s->B, Lq = s->Lq, Lk = s->Lk, H = s->H, Hkv = s->Hkv, D = s->D, G = H / Hkv;
    const int64_t qs[4] = {B, Lq, H, D}, ks[4] = {B, Lk, Hkv, D}, ls[3] = {B, Lq, H};
    tu_buf q = tu_buf_new(LA_F32, 4, qs, s->strided, false), k = tu_buf_new(LA_F32, 4, ks, s->strided, false);
    tu_buf v = tu_buf_new(LA_F32, 4, ks, s->strided, false), out = tu_buf_new(LA_F32, 4, qs, s->strided, false);
    tu_buf lse = tu_buf_new(LA_F32, 3, ls, s->strided, true), dense = tu_buf_new(LA_F32, 4, qs, false, false);
    tu_buf dout = tu_buf_new(LA_F32, 4, qs, false, false), dq = tu_buf_new(LA_F32, 4, qs, s->strided, false);
    tu_buf dk = tu_buf_new(LA_F32, 4, ks, s->strided, false), dv = tu_buf_new(LA_F32, 4, ks, s->strided, false);
    tu_fill(rng, q.t.data, LA_F32, (int64_t)q.elems, -1, 1);
    tu_fill(rng, k.t.data, LA_F32, (int64_t)k.elems, -1, 1);
    tu_fill(rng, v.t.data, LA_F32, (int64_t)v.elems, -1, 1);
    tu_fill(rng, dout.t.data, LA_F32, (int64_t)dout.elems, -1, 1);
    float slopes[64];
    for (int64_t h = 0; h < H; h++) slopes[h] = (float)tu_uniform(rng, 0.01, 0.3);
    la_attention_params p = s->p;
    if (s->alibi) p.alibi_slopes = slopes;
    const bool softmax = p.score == LA_SCORE_SOFTMAX;
    la_block_index x = sparse_random_index(rng, B, H, Lq, Lk, s->bs, s->share);
    if (s->cols > 0) sparse_random_columns(rng, &x, Lk, s->cols);

    /* reference, per (sequence, head), restricted to the listed blocks */
    double *want = malloc(sizeof(double) * (size_t)(B * H * Lq * D)), *want_lse = malloc(sizeof(double) * (size_t)(B * H * Lq));
    double *want_dq = calloc((size_t)(B * H * Lq * D), sizeof(double));
    double *want_dk = calloc((size_t)(B * Hkv * Lk * D + 1), sizeof(double)), *want_dv = calloc((size_t)(B * Hkv * Lk * D + 1), sizeof(double));
    unsigned char *keep = malloc((size_t)(Lq * Lk + 1));
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++) {
            const int64_t hk = h / G;
            double *qd = to_double(&q, b, Lq, h, D), *kd = to_double(&k, b, Lk, hk, D), *vd = to_double(&v, b, Lk, hk, D);
            sparse_keep_mask(&x, b, h, Lq, Lk, keep);
            ref_attn_opts o = {.scale = p.scale > 0 ? p.scale : 1 / sqrt((double)D), .causal = p.causal,
                               .window_left = p.window_left, .window_right = p.window_right, .sinks = p.sinks,
                               .softcap = p.softcap, .alibi_slope = s->alibi ? slopes[h] : 0,
                               .sigmoid = !softmax, .sigmoid_bias = p.sigmoid_bias, .keep = keep};
            ref_attention_forward(&o, Lq, Lk, D, qd, kd, vd, want + (b * H + h) * Lq * D, want_lse + (b * H + h) * Lq);
            if (s->backward) {
                double *dod = to_double(&dout, b, Lq, h, D);
                ref_attention_backward(&o, Lq, Lk, D, qd, kd, vd, dod, want_dq + (b * H + h) * Lq * D,
                                       want_dk + (b * Hkv + hk) * Lk * D, want_dv + (b * Hkv + hk) * Lk * D);
                free(dod);
            }
            free(qd), free(kd), free(vd);
        }

    la_context *ctx;
    la_context_create(&ctx, s->threads);
    if (s->share >= 1) { /* the complete list is dense attention */
        tu_buf_poison(&dense);
        la_status st = la_attention_forward(ctx, &p, &q.t, &k.t, &v.t, &dense.t, NULL);
        tu_check(st == LA_OK, "%s: dense forward %s", s->name, la_last_error());
    }
    la_simd levels[LA_SIMD_COUNT];
    const int nl = tu_simd_levels(levels);
    for (int li = 0; li < nl; li++) {
        const char *lv = la_simd_name(levels[li]);
        la_context_set_simd(ctx, levels[li]);
        tu_buf_poison(&out), tu_buf_poison(&lse);
        la_status st = la_block_sparse_forward(ctx, &p, &q.t, &k.t, &v.t, &x, &out.t, softmax ? &lse.t : NULL);
        tu_check(st == LA_OK, "%s [%s]: forward %s (%s)", s->name, lv, la_status_name(st), la_last_error());
        if (st) continue;
        cmp co = {0}, cl = {0}, cd = {0};
        for (int64_t b = 0; b < B; b++)
            for (int64_t i = 0; i < Lq; i++)
                for (int64_t h = 0; h < H; h++) {
                    for (int64_t d = 0; d < D; d++) {
                        double got = tu_get(&out.t, (int64_t[]){b, i, h, d});
                        cmp_out(&co, got, want[((b * H + h) * Lq + i) * D + d], OUT_ATOL, OUT_RTOL);
                        if (s->share >= 1) cmp_out(&cd, got, tu_get(&dense.t, (int64_t[]){b, i, h, d}), 1e-5, 1e-4);
                    }
                    if (softmax) cmp_out(&cl, tu_get(&lse.t, (int64_t[]){b, i, h}), want_lse[(b * H + h) * Lq + i], LSE_ATOL, 1e-6);
                }
        tu_check(co.worst <= 1 && co.nan == 0 && cl.worst <= 1 && cl.nan == 0,
                 "%s [%s]: out error %.3g x tolerance (%lld NaN/inf mismatches), lse %.3g (%lld)", s->name, lv,
                 co.worst, (long long)co.nan, cl.worst, (long long)cl.nan);
        tu_check(cd.worst <= 1 && cd.nan == 0, "%s [%s]: complete list differs from dense by %.3g x tolerance",
                 s->name, lv, cd.worst);
        tu_check(tu_buf_outside_poisoned(&out) && (!softmax || tu_buf_outside_poisoned(&lse)),
                 "%s [%s]: wrote outside the out / lse views", s->name, lv);
        if (!s->backward) continue;
        tu_buf_poison(&dq), tu_buf_poison(&dk), tu_buf_poison(&dv);
        st = la_block_sparse_backward(ctx, &p, &q.t, &k.t, &v.t, &x, &out.t, &dout.t, softmax ? &lse.t : NULL, &dq.t,
                                      &dk.t, &dv.t);
        tu_check(st == LA_OK, "%s [%s]: backward %s (%s)", s->name, lv, la_status_name(st), la_last_error());
        if (st) continue;
        const struct { const char *n; tu_buf *t; const double *w; int64_t heads, L; } g[3] = {
            {"dq", &dq, want_dq, H, Lq}, {"dk", &dk, want_dk, Hkv, Lk}, {"dv", &dv, want_dv, Hkv, Lk}};
        for (int gi = 0; gi < 3; gi++) {
            double scale = 0.1, worst = 0; /* a floor: see GRAD_TOL */
            int64_t n = B * g[gi].heads * g[gi].L * D;
            for (int64_t e = 0; e < n; e++) scale = fmax(scale, fabs(g[gi].w[e]));
            for (int64_t b = 0; b < B; b++)
                for (int64_t h = 0; h < g[gi].heads; h++)
                    for (int64_t i = 0; i < g[gi].L; i++)
                        for (int64_t d = 0; d < D; d++) {
                            double got = tu_get(&g[gi].t->t, (int64_t[]){b, i, h, d});
                            double e = fabs(got - g[gi].w[((b * g[gi].heads + h) * g[gi].L + i) * D + d]) / scale;
                            worst = isnan(e) ? INFINITY : fmax(worst, e);
                        }
            tu_check(worst <= GRAD_TOL && tu_buf_outside_poisoned(g[gi].t),
                     "%s [%s] %s: error %.3g of scale %.3g (tolerance %.1g), or written outside its view", s->name,
                     lv, g[gi].n, worst, scale, GRAD_TOL);
        }
    }
    la_context_destroy(ctx);
    la_block_index_free(&x);
    free(want), free(want_lse), free(want_dq), free(want_dk), free(want_dv), free(keep);
    tu_buf *bufs[] = {&q, &k, &v, &out, &lse, &dense, &dout, &dq, &dk, &dv};
    for (int i = 0; i < 10; i++) tu_buf_free(bufs[i]);
}

/* A random spec: awkward lengths (1, off the block), GQA, a random mix of
 * the rule's options, a random share of blocks. */
static sp_spec random_spec(uint64_t *rng, int n, bool quick) {
    static const int64_t dims[] = {8, 32, 64, 80};
    static const int64_t sizes[] = {1, 16, 32, 64, 100};
    sp_spec s = {.B = tu_randint(rng, 1, 2), .H = 4, .threads = (int)tu_randint(rng, 1, 3)};
    s.Hkv = tu_randint(rng, 0, 2) == 0 ? 4 : tu_randint(rng, 0, 1) ? 2 : 1;
    s.D = dims[tu_randint(rng, 0, 3)];
    s.bs = sizes[tu_randint(rng, 0, 4)];
    const int64_t maxL = quick ? 150 : 300;
    s.Lq = tu_randint(rng, 0, 5) == 0 ? 1 : tu_randint(rng, 1, maxL);
    s.Lk = tu_randint(rng, 0, 2) == 0 ? s.Lq : tu_randint(rng, 1, maxL);
    s.share = tu_randint(rng, 0, 3) == 0 ? 1.0 : tu_uniform(rng, 0.05, 0.9);
    if (tu_randint(rng, 0, 2) == 0) s.cols = tu_uniform(rng, 0.01, 0.3);
    s.strided = tu_randint(rng, 0, 2) == 0;
    s.backward = tu_randint(rng, 0, 1);
    s.p = la_attention_params_default();
    s.p.causal = (int)tu_randint(rng, 0, 1);
    if (tu_randint(rng, 0, 2) == 0) s.p.window_left = tu_randint(rng, 0, 80);
    if (!s.p.causal && tu_randint(rng, 0, 3) == 0) s.p.window_right = tu_randint(rng, 0, 40);
    if (tu_randint(rng, 0, 2) == 0) s.p.sinks = tu_randint(rng, 1, 20);
    if (tu_randint(rng, 0, 3) == 0) s.p.softcap = (float)tu_uniform(rng, 2, 10);
    s.alibi = tu_randint(rng, 0, 3) == 0;
    if (tu_randint(rng, 0, 4) == 0) s.p.score = LA_SCORE_SIGMOID, s.p.sigmoid_bias = -3;
    snprintf(s.name, sizeof s.name,
             "random %d: B=%lld Lq=%lld Lk=%lld H=%lld Hkv=%lld D=%lld bs=%lld share=%.2f cols=%.2f causal=%d window=(%lld,%lld) "
             "sinks=%lld softcap=%g alibi=%d %s strided=%d threads=%d%s",
             n, (long long)s.B, (long long)s.Lq, (long long)s.Lk, (long long)s.H, (long long)s.Hkv, (long long)s.D,
             (long long)s.bs, s.share, s.cols, s.p.causal, (long long)s.p.window_left, (long long)s.p.window_right,
             (long long)s.p.sinks, (double)s.p.softcap, s.alibi, s.p.score ? "sigmoid" : "softmax", s.strided,
             s.threads, s.backward ? " +bwd" : "");
    return s;
}

static void fixed_specs(uint64_t *rng) {
    la_attention_params causal = la_attention_params_default();
    causal.causal = 1;
    const la_attention_params full = la_attention_params_default();
    sp_spec list[] = {
        {.name = "complete, causal, bs 64, L 200 (off the block), gqa2", .B = 1, .Lq = 200, .Lk = 200, .H = 4,
         .Hkv = 2, .D = 64, .bs = 64, .share = 1, .backward = true, .threads = 2, .p = causal},
        {.name = "complete, bs 128 > the kernels' 96, L 300", .B = 1, .Lq = 300, .Lk = 300, .H = 2, .Hkv = 1,
         .D = 32, .bs = 128, .share = 1, .backward = true, .threads = 2, .p = causal},
        {.name = "half the blocks, bs 7, Lq 1", .B = 2, .Lq = 1, .Lk = 90, .H = 2, .Hkv = 2, .D = 16, .bs = 7,
         .share = 0.5, .backward = true, .threads = 2, .p = causal},
        {.name = "nothing listed: out 0, lse -inf, gradients 0", .B = 1, .Lq = 70, .Lk = 70, .H = 2, .Hkv = 1,
         .D = 8, .bs = 16, .share = 0, .backward = true, .threads = 2, .p = causal},
        {.name = "extra columns only, bs 64, L 230, more than 96 columns a row", .B = 1, .Lq = 230, .Lk = 230, .H = 2,
         .Hkv = 1, .D = 32, .bs = 64, .share = 0, .cols = 0.6, .backward = true, .threads = 2, .p = causal},
        {.name = "complete list + columns inside it: computed once, equal to dense", .B = 1, .Lq = 150, .Lk = 150,
         .H = 2, .Hkv = 2, .D = 16, .bs = 32, .share = 1, .cols = 0.3, .backward = true, .threads = 2, .p = causal},
        {.name = "columns, bs 128 > the kernels' 96, non-causal", .B = 2, .Lq = 100, .Lk = 300, .H = 2, .Hkv = 1,
         .D = 16, .bs = 128, .share = 0.3, .cols = 0.1, .backward = true, .threads = 2,
         .p = full},
    };
    for (size_t i = 0; i < sizeof list / sizeof list[0]; i++) run_spec(&list[i], rng);
}

/* A varlen batch: packed [T, H, D] tensors, q_blocks of the longest query
 * sequence, key-block ids below each sequence's own count (an id past a
 * shorter sequence's keys is LA_ERR_SEQLENS); forward and backward against
 * the restricted reference per sequence, at every SIMD level. */
static void varlen_case(uint64_t *rng) {
    enum { NS = 3, H = 4, HKV = 2, D = 16, BS = 16 };
    const int32_t lq[NS] = {37, 1, 70}, lk[NS] = {50, 20, 70};
    int32_t cu_q[NS + 1] = {0}, cu_k[NS + 1] = {0};
    for (int b = 0; b < NS; b++) cu_q[b + 1] = cu_q[b] + lq[b], cu_k[b + 1] = cu_k[b] + lk[b];
    const int64_t Tq = cu_q[NS], Tk = cu_k[NS], qblocks = (70 + BS - 1) / BS, rows = NS * H * qblocks;
    tu_buf q = tu_buf_new(LA_F32, 3, (int64_t[]){Tq, H, D}, false, false);
    tu_buf k = tu_buf_new(LA_F32, 3, (int64_t[]){Tk, HKV, D}, false, false), v = tu_buf_new(LA_F32, 3, (int64_t[]){Tk, HKV, D}, false, false);
    tu_buf out = tu_buf_new(LA_F32, 3, (int64_t[]){Tq, H, D}, false, false), lse = tu_buf_new(LA_F32, 2, (int64_t[]){Tq, H}, false, true);
    tu_buf dout = tu_buf_new(LA_F32, 3, (int64_t[]){Tq, H, D}, false, false), dq = tu_buf_new(LA_F32, 3, (int64_t[]){Tq, H, D}, false, false);
    tu_buf dk = tu_buf_new(LA_F32, 3, (int64_t[]){Tk, HKV, D}, false, false), dv = tu_buf_new(LA_F32, 3, (int64_t[]){Tk, HKV, D}, false, false);
    tu_buf *ins[] = {&q, &k, &v, &dout};
    for (int i = 0; i < 4; i++) tu_fill(rng, ins[i]->t.data, LA_F32, (int64_t)ins[i]->elems, -1, 1);
    la_attention_params p = la_attention_params_default();
    p.causal = 1, p.cu_seqlens_q = cu_q, p.cu_seqlens_k = cu_k, p.num_seqs = NS;
    int64_t off[NS * H * 5 + 1];
    int32_t ids[NS * H * 5 * 5];
    la_block_index x = {.block_size = BS, .num_seqs = NS, .heads = H, .q_blocks = qblocks, .offsets = off, .key_blocks = ids};
    off[0] = 0;
    for (int64_t r = 0; r < rows; r++) {
        const int64_t b = r / (H * qblocks), kblocks = (lk[b] + BS - 1) / BS;
        off[r + 1] = off[r];
        for (int32_t j = 0; j < kblocks; j++)
            if (tu_uniform(rng, 0, 1) < 0.6) ids[off[r + 1]++] = j;
    }
    double *want = calloc((size_t)(Tq * H * D), sizeof(double)), *want_lse = calloc((size_t)(Tq * H), sizeof(double));
    double *wdq = calloc((size_t)(Tq * H * D), sizeof(double)), *wdk = calloc((size_t)(Tk * HKV * D), sizeof(double));
    double *wdv = calloc((size_t)(Tk * HKV * D), sizeof(double));
    unsigned char keep[70 * 70];
    for (int b = 0; b < NS; b++)
        for (int64_t h = 0; h < H; h++) {
            const int64_t hk = h / (H / HKV);
            double qd[70 * D], kd[70 * D], vd[70 * D], od[70 * D], ld[70], dod[70 * D], dqd[70 * D];
            double dkd[70 * D] = {0}, dvd[70 * D] = {0};
            for (int64_t i = 0; i < lq[b]; i++)
                for (int64_t d = 0; d < D; d++) {
                    qd[i * D + d] = tu_get(&q.t, (int64_t[]){cu_q[b] + i, h, d});
                    dod[i * D + d] = tu_get(&dout.t, (int64_t[]){cu_q[b] + i, h, d});
                }
            for (int64_t j = 0; j < lk[b]; j++)
                for (int64_t d = 0; d < D; d++)
                    kd[j * D + d] = tu_get(&k.t, (int64_t[]){cu_k[b] + j, hk, d}),
                    vd[j * D + d] = tu_get(&v.t, (int64_t[]){cu_k[b] + j, hk, d});
            sparse_keep_mask(&x, b, h, lq[b], lk[b], keep);
            ref_attn_opts o = {.scale = 1 / sqrt((double)D), .causal = 1, .window_left = -1, .window_right = -1,
                               .keep = keep};
            ref_attention_forward(&o, lq[b], lk[b], D, qd, kd, vd, od, ld);
            ref_attention_backward(&o, lq[b], lk[b], D, qd, kd, vd, dod, dqd, dkd, dvd);
            for (int64_t i = 0; i < lq[b]; i++) {
                want_lse[(cu_q[b] + i) * H + h] = ld[i];
                for (int64_t d = 0; d < D; d++)
                    want[((cu_q[b] + i) * H + h) * D + d] = od[i * D + d], wdq[((cu_q[b] + i) * H + h) * D + d] = dqd[i * D + d];
            }
            for (int64_t j = 0; j < lk[b]; j++)
                for (int64_t d = 0; d < D; d++)
                    wdk[((cu_k[b] + j) * HKV + hk) * D + d] += dkd[j * D + d], wdv[((cu_k[b] + j) * HKV + hk) * D + d] += dvd[j * D + d];
        }
    la_context *ctx;
    la_context_create(&ctx, 2);
    la_simd levels[LA_SIMD_COUNT];
    const int nl = tu_simd_levels(levels);
    for (int li = 0; li < nl; li++) {
        la_context_set_simd(ctx, levels[li]);
        tu_buf_poison(&out), tu_buf_poison(&lse), tu_buf_poison(&dq), tu_buf_poison(&dk), tu_buf_poison(&dv);
        la_status st = la_block_sparse_forward(ctx, &p, &q.t, &k.t, &v.t, &x, &out.t, &lse.t);
        la_status sb = st ? st : la_block_sparse_backward(ctx, &p, &q.t, &k.t, &v.t, &x, &out.t, &dout.t, &lse.t, &dq.t, &dk.t, &dv.t);
        tu_check(st == LA_OK && sb == LA_OK, "varlen [%s]: %s", la_simd_name(levels[li]), la_last_error());
        if (st || sb) continue;
        cmp co = {0}, cl = {0};
        double worst = 0;
        for (int64_t t = 0; t < Tq; t++)
            for (int64_t h = 0; h < H; h++) {
                cmp_out(&cl, tu_get(&lse.t, (int64_t[]){t, h}), want_lse[t * H + h], LSE_ATOL, 1e-6);
                for (int64_t d = 0; d < D; d++) {
                    cmp_out(&co, tu_get(&out.t, (int64_t[]){t, h, d}), want[(t * H + h) * D + d], OUT_ATOL, OUT_RTOL);
                    worst = fmax(worst, fabs(tu_get(&dq.t, (int64_t[]){t, h, d}) - wdq[(t * H + h) * D + d]));
                }
            }
        for (int64_t t = 0; t < Tk; t++)
            for (int64_t h = 0; h < HKV; h++)
                for (int64_t d = 0; d < D; d++) {
                    worst = fmax(worst, fabs(tu_get(&dk.t, (int64_t[]){t, h, d}) - wdk[(t * HKV + h) * D + d]));
                    worst = fmax(worst, fabs(tu_get(&dv.t, (int64_t[]){t, h, d}) - wdv[(t * HKV + h) * D + d]));
                }
        tu_check(co.worst <= 1 && co.nan == 0 && cl.worst <= 1 && cl.nan == 0 && worst <= GRAD_TOL,
                 "varlen [%s]: out %.3g x tol (%lld), lse %.3g x tol (%lld), gradients off by %.3g",
                 la_simd_name(levels[li]), co.worst, (long long)co.nan, cl.worst, (long long)cl.nan, worst);
    }
    /* sequence 1 has 20 keys: 2 key blocks; id 2 is out of its range though the longest has 5 */
    const int64_t r1 = 1 * H * qblocks; /* its first row; lists at most 2 ids, so the arrays have room */
    if (off[r1 + 1] == off[r1]) { /* empty: make room for one id */
        memmove(ids + off[r1] + 1, ids + off[r1], sizeof(int32_t) * (size_t)(off[rows] - off[r1]));
        for (int64_t r = r1 + 1; r <= rows; r++) off[r]++;
    }
    ids[off[r1]] = 2;
    TU_EXPECT_STATUS(la_block_sparse_forward(ctx, &p, &q.t, &k.t, &v.t, &x, &out.t, &lse.t), LA_ERR_SEQLENS);
    la_context_destroy(ctx);
    free(want), free(want_lse), free(wdq), free(wdk), free(wdv);
    tu_buf *all[] = {&q, &k, &v, &out, &lse, &dout, &dq, &dk, &dv};
    for (int i = 0; i < 9; i++) tu_buf_free(all[i]);
}

/* Bad indexes: each its status, nothing written. */
static void bad_indexes(uint64_t *rng) {
    const int64_t B = 1, L = 100, H = 2, D = 8, bs = 32;
    const int64_t qs[4] = {B, L, H, D}, ls[3] = {B, L, H};
    tu_buf q = tu_buf_new(LA_F32, 4, qs, false, false), out = tu_buf_new(LA_F32, 4, qs, false, false);
    tu_buf lse = tu_buf_new(LA_F32, 3, ls, false, true);
    tu_fill(rng, q.t.data, LA_F32, (int64_t)q.elems, -1, 1);
    la_attention_params p = la_attention_params_default();
    la_context *ctx;
    la_context_create(&ctx, 1);
    const int64_t rows = B * H * 4; /* ceil(100 / 32) query blocks */
    int64_t off[9];
    int32_t ids[64];
    for (int64_t r = 0; r <= rows; r++) off[r] = 2 * r;
    for (int64_t e = 0; e < 2 * rows; e++) ids[e] = (int32_t)(e % 2 == 0 ? 0 : 3);
    la_block_index good = {.block_size = bs, .num_seqs = B, .heads = H, .q_blocks = 4, .offsets = off, .key_blocks = ids};
#define BAD(mutate, want)                                                                              \
    do {                                                                                               \
        la_block_index x = good;                                                                       \
        int64_t o2[9];                                                                                 \
        int32_t i2[64];                                                                                \
        memcpy(o2, off, sizeof off), memcpy(i2, ids, sizeof ids);                                      \
        x.offsets = o2, x.key_blocks = i2;                                                             \
        mutate;                                                                                        \
        tu_buf_poison(&out);                                                                           \
        TU_EXPECT_STATUS(la_block_sparse_forward(ctx, &p, &q.t, &q.t, &q.t, &x, &out.t, &lse.t), want); \
        TU_EXPECT_STATUS(la_block_index_check(&x, B, H, L, L), want);                                  \
        tu_check(want == LA_OK || tu_buf_all_poisoned(&out), "%s: wrote out on failure", #mutate);     \
    } while (0)
    BAD((void)0, LA_OK);
    BAD(x.block_size = 0, LA_ERR_ARGUMENT);
    BAD(x.block_size = LA_SPARSE_BLOCK_MAX + 1, LA_ERR_ARGUMENT);
    BAD(x.q_blocks = 3, LA_ERR_SHAPE);
    BAD(x.heads = 1, LA_ERR_SHAPE);
    BAD(x.num_seqs = 2, LA_ERR_SHAPE);
    BAD(x.offsets = NULL, LA_ERR_NULL);
    BAD(x.key_blocks = NULL, LA_ERR_NULL);
    BAD(o2[0] = 1, LA_ERR_SEQLENS);
    BAD(o2[3] = 9, LA_ERR_SEQLENS);
    BAD(i2[1] = 4, LA_ERR_SEQLENS);
    BAD(i2[1] = -1, LA_ERR_SEQLENS);
    BAD((i2[0] = 3, i2[1] = 0), LA_ERR_ARGUMENT);
    BAD(i2[1] = 0, LA_ERR_ARGUMENT);
    BAD(x.offsets = (int64_t *)((char *)o2 + 4), LA_ERR_ARGUMENT);
    BAD(x.num_seqs = INT64_MAX / 2, LA_ERR_SHAPE);
#undef BAD
    /* an output over the index's arrays */
    la_block_index x = good;
    la_tensor over = la_tensor_contiguous(ids, LA_F32, 3, (int64_t[]){B, L, H});
    TU_EXPECT_STATUS(la_block_sparse_forward(ctx, &p, &q.t, &q.t, &q.t, &x, &out.t, &over), LA_ERR_ARGUMENT);
    TU_EXPECT_STATUS(la_block_sparse_forward(ctx, &p, &q.t, &q.t, &q.t, NULL, &out.t, &lse.t), LA_ERR_NULL);
    la_context_destroy(ctx);
    tu_buf_free(&q), tu_buf_free(&out), tu_buf_free(&lse);
}

int main(void) {
    const bool quick = getenv("LONGATTN_TEST_QUICK") != NULL;
    uint64_t rng = tu_seed();
    fixed_specs(&rng);
    const int n = quick ? 12 : 40;
    for (int i = 0; i < n; i++) {
        sp_spec s = random_spec(&rng, i, quick);
        run_spec(&s, &rng);
    }
    varlen_case(&rng);
    bad_indexes(&rng);
    return tu_finish();
}
