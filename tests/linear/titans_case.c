/* The Titans neural memory as a harness case for `longattn bench linear`:
 * la_titans_forward (chunked) on a dense f32 batch with unit-norm keys and
 * gates in range, against the float64 recurrence of tests/ref/titans_ref
 * (test_titans.c checks every form, shape and option; this case exists to
 * be timed). */
#include "linear_cases.h"
#include "test_util.h"
#include "titans_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    harness_case base; /* first: the harness sees this */
    int64_t B, H, L, D, chunk;
    bool bwd; /* la_titans_backward instead (no reference: test_titans checks it) */
    tu_buf q, k, v, eta, theta, alpha, out;
    tu_buf dq, dk, dv, deta, dtheta, dalpha;
    double *want;
} tt_bench_case;

static void describe(const harness_case *hc, harness_fields *f) {
    const tt_bench_case *c = (const tt_bench_case *)hc;
    harness_field_str(f, "dtype", "f32");
    harness_field_int(f, "B", c->B);
    harness_field_int(f, "H", c->H);
    harness_field_int(f, "L", c->L);
    harness_field_int(f, "Dk", c->D);
    harness_field_int(f, "Dv", c->D);
    /* the linear rows' columns: one table */
    harness_field_str(f, "decay", "gates");
    harness_field_str(f, "feature", "titans");
    harness_field_str(f, "form", "chunked");
    harness_field_int(f, "chunk", c->chunk);
    harness_field_str(f, "pass", c->bwd ? "bwd" : "fwd");
}

/* The chunked algorithm's own work per (sequence, head) and chunk of n
 * tokens: K M, Q M, Q S (3 x 2 n D^2), Q K^T and (W . Q K^T) R (2 x 2 n^2
 * D), the two state updates (2 x 2 n D^2). */
static double flops(const harness_case *hc) {
    const tt_bench_case *c = (const tt_bench_case *)hc;
    const double D = (double)c->D, C = (double)c->chunk, L = (double)c->L;
    /* backward: the chunk's rows and R three times (checkpoint sweep, segment recompute, backward: 3 x 2 n D^2),
       its state step twice (2 x 4 n D^2), then Q M, Q S, K dM', K dS', dQ, dK and the start states' adjoints
       (24 n D^2) and the four n x n products (8 n^2 D) */
    if (c->bwd) return (double)(c->B * c->H) * (L * 38 * D * D + L * 8 * C * D);
    return (double)(c->B * c->H) * (L * 10 * D * D + L * 4 * C * D);
}

static double bytes(const harness_case *hc) {
    const tt_bench_case *c = (const tt_bench_case *)hc;
    return (double)(c->B * c->L * c->H) * 4.0 * (double)(4 * c->D + 3);
}

static void poison(harness_case *hc) {
    tt_bench_case *c = (tt_bench_case *)hc;
    if (!c->bwd) { /* backward: out holds dout, an input */
        tu_buf_poison(&c->out);
        return;
    }
    tu_buf *g[6] = {&c->dq, &c->dk, &c->dv, &c->deta, &c->dtheta, &c->dalpha};
    for (int i = 0; i < 6; i++) tu_buf_poison(g[i]);
}

static bool setup(harness_case *hc, uint64_t seed) {
    tt_bench_case *c = (tt_bench_case *)hc;
    uint64_t rng = seed;
    const int64_t tok[4] = {c->B, c->L, c->H, c->D}, gate[3] = {c->B, c->L, c->H};
    tu_buf *t4[4] = {&c->q, &c->k, &c->v, &c->out};
    for (int i = 0; i < 4; i++)
        if (!tu_buf_init(t4[i], LA_F32, 4, tok, false, false)) return false;
    tu_buf *t3[3] = {&c->eta, &c->theta, &c->alpha};
    for (int i = 0; i < 3; i++)
        if (!tu_buf_init(t3[i], LA_F32, 3, gate, false, false)) return false;
    if (c->bwd) {
        tu_buf *g4[3] = {&c->dq, &c->dk, &c->dv}, *g3[3] = {&c->deta, &c->dtheta, &c->dalpha};
        for (int i = 0; i < 3; i++)
            if (!tu_buf_init(g4[i], LA_F32, 4, tok, false, false) || !tu_buf_init(g3[i], LA_F32, 3, gate, false, false))
                return false;
    }
    tu_fill(&rng, c->q.t.data, LA_F32, (int64_t)c->q.elems, -1, 1);
    tu_fill(&rng, c->v.t.data, LA_F32, (int64_t)c->v.elems, -1, 1);
    tu_fill(&rng, c->k.t.data, LA_F32, (int64_t)c->k.elems, -1, 1);
    float *k = c->k.t.data;
    for (size_t r = 0; r < c->k.elems / (size_t)c->D; r++) { /* unit-norm keys, as Titans feeds its memory */
        double n2 = 0;
        for (int64_t d = 0; d < c->D; d++) n2 += (double)k[r * (size_t)c->D + (size_t)d] * k[r * (size_t)c->D + (size_t)d];
        for (int64_t d = 0; d < c->D; d++) k[r * (size_t)c->D + (size_t)d] /= (float)sqrt(n2);
    }
    tu_fill(&rng, c->eta.t.data, LA_F32, (int64_t)c->eta.elems, 0.5, 1);
    tu_fill(&rng, c->theta.t.data, LA_F32, (int64_t)c->theta.elems, 0, 0.1);
    tu_fill(&rng, c->alpha.t.data, LA_F32, (int64_t)c->alpha.elems, 0, 0.1);
    if (c->bwd) tu_fill(&rng, c->out.t.data, LA_F32, (int64_t)c->out.elems, -1, 1); /* out holds dout */
    poison(hc);
    return true;
}

static la_status run(harness_case *hc, la_context *ctx) {
    tt_bench_case *c = (tt_bench_case *)hc;
    la_titans_params p = la_titans_params_default();
    p.chunk_size = c->chunk;
    if (c->bwd)
        return la_titans_backward(ctx, &p, &c->q.t, &c->k.t, &c->v.t, &c->eta.t, &c->theta.t, &c->alpha.t, NULL, NULL,
                                  &c->out.t, NULL, NULL, &c->dq.t, &c->dk.t, &c->dv.t, &c->deta.t, &c->dtheta.t,
                                  &c->dalpha.t, NULL, NULL);
    return la_titans_forward(ctx, &p, &c->q.t, &c->k.t, &c->v.t, &c->eta.t, &c->theta.t, &c->alpha.t, NULL, NULL,
                             &c->out.t, NULL, NULL);
}

/* [b][h][t][e]; the recurrence is linear in L: the whole problem, always. */
static bool reference(harness_case *hc, bool sampled) {
    tt_bench_case *c = (tt_bench_case *)hc;
    (void)sampled;
    if (c->bwd) return false;
    const int64_t L = c->L, D = c->D, H = c->H;
    double *in = tu_alloc(sizeof(double) * (size_t)(L * (3 * D + 3) + 2 * D * D));
    double *q = in, *k = q + L * D, *v = k + L * D, *g = v + L * D, *M = g + 3 * L, *S = M + D * D;
    c->want = tu_alloc(sizeof(double) * (size_t)(c->B * H * L * D + 1));
    const float *fq = c->q.t.data, *fk = c->k.t.data, *fv = c->v.t.data;
    const float *fg[3] = {c->eta.t.data, c->theta.t.data, c->alpha.t.data};
    for (int64_t b = 0; b < c->B; b++)
        for (int64_t h = 0; h < H; h++) {
            for (int64_t t = 0; t < L; t++) {
                const size_t row = (size_t)(((b * L + t) * H + h) * D);
                for (int64_t d = 0; d < D; d++) q[t * D + d] = fq[row + (size_t)d], k[t * D + d] = fk[row + (size_t)d],
                                                v[t * D + d] = fv[row + (size_t)d];
                for (int i = 0; i < 3; i++) g[i * L + t] = fg[i][(b * L + t) * H + h];
            }
            memset(M, 0, sizeof(double) * (size_t)(2 * D * D));
            titans_ref_head x = {.L = L, .Dk = D, .Dv = D, .chunk = c->chunk, .q = q, .k = k, .v = v, .eta = g,
                                 .theta = g + L, .alpha = g + 2 * L};
            titans_ref_forward(&x, c->want + (b * H + h) * L * D, M, S);
        }
    free(in);
    return true;
}

/* test_titans.c's tolerance: 5e-6 of the largest element (20x what was seen). */
static double check(harness_case *hc, const char *label, bool tally) {
    tt_bench_case *c = (tt_bench_case *)hc;
    const int64_t L = c->L, D = c->D, H = c->H;
    const float *out = c->out.t.data;
    double scale = 0, worst = 0;
    int64_t bad = 0;
    for (int64_t i = 0; i < c->B * H * L * D; i++) scale = fmax(scale, fabs(c->want[i]));
    if (scale == 0) scale = 1;
    for (int64_t b = 0; b < c->B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t t = 0; t < L; t++)
                for (int64_t e = 0; e < D; e++) {
                    const double w = c->want[((b * H + h) * L + t) * D + e], x = out[((b * L + t) * H + h) * D + e];
                    const double err = isnan(x) ? INFINITY : fabs(x - w) / scale;
                    if (!(err <= 5e-6)) bad++;
                    worst = fmax(worst, err);
                }
    if (tally) tu_check(bad == 0, "%s [%s]: out: %lld off, worst %.3g", c->base.name, label, (long long)bad, worst);
    return worst;
}

static void teardown(harness_case *hc) {
    tt_bench_case *c = (tt_bench_case *)hc;
    tu_buf *all[] = {&c->q, &c->k, &c->v, &c->eta, &c->theta, &c->alpha, &c->out,
                     &c->dq, &c->dk, &c->dv, &c->deta, &c->dtheta, &c->dalpha};
    for (int i = 0; i < 13; i++) tu_buf_free(all[i]);
    free(c->want);
    c->want = NULL;
}

static const harness_ops titans_ops = {.op = "linear", HARNESS_CASE_CALLBACKS};

harness_case *titans_case(const char *name, int64_t B, int64_t H, int64_t L, int64_t D, int64_t chunk, bool bwd) {
    tt_bench_case *c = harness_case_new(sizeof *c, &titans_ops, name, 0, harness_compute_ceiling(LA_F32));
    c->B = B, c->H = H, c->L = L, c->D = D, c->chunk = chunk, c->bwd = bwd;
    c->base.tokens = L;
    return &c->base;
}
