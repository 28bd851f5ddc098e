/* Titans neural memory (la_titans_*): the chunked form, the recurrent form,
 * the decode step token by token and two calls carrying the state, each
 * against the float64 recurrence (tests/ref/titans_ref) at every SIMD
 * level, on awkward lengths, grouped heads, varlen batches with an empty
 * sequence, initial states and bf16 / f16 inputs; then bad inputs, each
 * with its status and a message. */
#include "test_util.h"
#include "titans_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef enum { TT_CHUNKED, TT_RECURRENT, TT_DECODE, TT_SPLIT, TT_BACKWARD } tt_run;

typedef struct {
    const char *name;
    int64_t B, L; /* dense when nseq == 0 */
    int nseq;
    int32_t lens[6];
    int64_t H, Hkv, Dk, Dv, chunk;
    la_dtype dt, out_dt;
    tt_run run;
    int64_t split_at;
    bool init, strided;
    bool dfinal; /* backward: gradients reaching the final states */
} tt_spec;

typedef struct {
    const tt_spec *s;
    bool varlen;
    int64_t nseq, T;
    int32_t cu[7];
    tu_buf q, k, v, eta, theta, alpha, out, m0, s0, m1, s1, mm, sm;
    tu_buf dout, dmT, dsT, dq, dk, dv, deta, dth, dal; /* backward; m1, s1 take dmemory_in, dmomentum_in */
} tt_case;

static int64_t seq_len(const tt_case *c, int64_t b) { return c->varlen ? c->cu[b + 1] - c->cu[b] : c->s->L; }

static void index_of(const tt_case *c, int64_t b, int64_t t, int64_t h, int64_t d, int64_t *idx) {
    if (c->varlen) idx[0] = c->cu[b] + t, idx[1] = h, idx[2] = d;
    else idx[0] = b, idx[1] = t, idx[2] = h, idx[3] = d;
}

static tu_buf tok_buf(const tt_case *c, la_dtype dt, int64_t heads, int64_t D, bool has_d) {
    int64_t shape[4];
    int n = 0;
    if (!c->varlen) shape[n++] = c->s->B;
    shape[n++] = c->T;
    shape[n++] = heads;
    if (has_d) shape[n++] = D;
    return tu_buf_new(dt, n, shape, c->s->strided && has_d, !has_d && c->s->strided);
}

static tu_buf state_buf(const tt_case *c) {
    return tu_buf_new(LA_F32, 4, (int64_t[]){c->nseq, c->s->H, c->s->Dk, c->s->Dv}, false, false);
}

/* k rows of unit norm (as Titans feeds its memory), gates in range: eta in
 * [0.5, 1], theta in [0, 0.1], alpha in [0, 0.1]. */
static void setup(tt_case *c, const tt_spec *s, uint64_t *rng) {
    memset(c, 0, sizeof *c);
    c->s = s;
    c->varlen = s->nseq > 0;
    c->nseq = c->varlen ? s->nseq : s->B;
    c->T = s->L;
    if (c->varlen) {
        for (int i = 0; i < s->nseq; i++) c->cu[i + 1] = c->cu[i] + s->lens[i];
        c->T = c->cu[s->nseq];
    }
    c->q = tok_buf(c, s->dt, s->H, s->Dk, true);
    c->k = tok_buf(c, s->dt, s->Hkv, s->Dk, true);
    c->v = tok_buf(c, s->dt, s->Hkv, s->Dv, true);
    c->out = tok_buf(c, s->out_dt, s->H, s->Dv, true);
    c->eta = tok_buf(c, LA_F32, s->H, 0, false);
    c->theta = tok_buf(c, LA_F32, s->H, 0, false);
    c->alpha = tok_buf(c, LA_F32, s->H, 0, false);
    int64_t idx[4];
    for (int64_t b = 0; b < c->nseq; b++)
        for (int64_t t = 0; t < seq_len(c, b); t++) {
            for (int64_t h = 0; h < s->H; h++) {
                for (int64_t d = 0; d < s->Dk; d++) index_of(c, b, t, h, d, idx), tu_set(&c->q.t, idx, tu_uniform(rng, -1, 1));
                index_of(c, b, t, h, 0, idx);
                tu_set(&c->eta.t, idx, tu_uniform(rng, 0.5, 1));
                tu_set(&c->theta.t, idx, tu_uniform(rng, 0, 0.1));
                tu_set(&c->alpha.t, idx, tu_uniform(rng, 0, 0.1));
            }
            for (int64_t h = 0; h < s->Hkv; h++) {
                double kk[LA_MAX_HEAD_DIM], n2 = 0;
                for (int64_t d = 0; d < s->Dk; d++) kk[d] = tu_uniform(rng, -1, 1), n2 += kk[d] * kk[d];
                for (int64_t d = 0; d < s->Dk; d++) index_of(c, b, t, h, d, idx), tu_set(&c->k.t, idx, kk[d] / sqrt(n2));
                for (int64_t e = 0; e < s->Dv; e++) index_of(c, b, t, h, e, idx), tu_set(&c->v.t, idx, tu_uniform(rng, -1, 1));
            }
        }
    if (s->init) {
        c->m0 = state_buf(c), c->s0 = state_buf(c);
        tu_fill(rng, c->m0.t.data, LA_F32, (int64_t)c->m0.elems, -0.5, 0.5);
        tu_fill(rng, c->s0.t.data, LA_F32, (int64_t)c->s0.elems, -0.1, 0.1);
    }
    c->m1 = state_buf(c), c->s1 = state_buf(c);
    if (s->run == TT_SPLIT) c->mm = state_buf(c), c->sm = state_buf(c);
    if (s->run == TT_BACKWARD) {
        c->dout = tok_buf(c, s->out_dt, s->H, s->Dv, true);
        tu_fill(rng, c->dout.t.data, s->out_dt, (int64_t)c->dout.elems, -1, 1);
        if (s->dfinal) {
            c->dmT = state_buf(c), c->dsT = state_buf(c);
            tu_fill(rng, c->dmT.t.data, LA_F32, (int64_t)c->dmT.elems, -1, 1);
            tu_fill(rng, c->dsT.t.data, LA_F32, (int64_t)c->dsT.elems, -1, 1);
        }
        c->dq = tok_buf(c, s->out_dt, s->H, s->Dk, true);
        c->dk = tok_buf(c, s->out_dt, s->Hkv, s->Dk, true);
        c->dv = tok_buf(c, s->out_dt, s->Hkv, s->Dv, true);
        c->deta = tok_buf(c, LA_F32, s->H, 0, false);
        c->dth = tok_buf(c, LA_F32, s->H, 0, false);
        c->dal = tok_buf(c, LA_F32, s->H, 0, false);
    }
}

static void poison(tt_case *c) {
    tu_buf *outs[] = {&c->out, &c->m1, &c->s1, &c->mm, &c->sm, &c->dq, &c->dk, &c->dv, &c->deta, &c->dth, &c->dal};
    for (int i = 0; i < 11; i++)
        if (outs[i]->t.data) tu_buf_poison(outs[i]);
}

static void teardown(tt_case *c) {
    tu_buf *all[] = {&c->q, &c->k, &c->v, &c->eta, &c->theta, &c->alpha, &c->out, &c->m0, &c->s0, &c->m1, &c->s1,
                     &c->mm, &c->sm, &c->dout, &c->dmT, &c->dsT, &c->dq, &c->dk, &c->dv, &c->deta, &c->dth, &c->dal};
    for (int i = 0; i < 22; i++)
        if (all[i]->t.data) tu_buf_free(all[i]);
}

static la_tensor token_range(const la_tensor *t, int64_t from, int64_t n) {
    la_tensor v = *t;
    v.data = (char *)t->data + from * t->stride[1] * (int64_t)la_dtype_size(t->dtype);
    v.shape[1] = n;
    return v;
}

static la_tensor token_at(const la_tensor *t, int64_t i) {
    la_tensor v = token_range(t, i, 1);
    for (int d = 1; d < t->ndim - 1; d++) v.shape[d] = t->shape[d + 1], v.stride[d] = t->stride[d + 1];
    v.ndim = t->ndim - 1;
    return v;
}

static la_status run(tt_case *c, la_context *ctx) {
    const tt_spec *s = c->s;
    la_titans_params p = la_titans_params_default();
    p.chunk_size = s->chunk;
    p.form = s->run == TT_RECURRENT ? LA_LINEAR_RECURRENT : LA_LINEAR_CHUNKED;
    if (c->varlen) p.cu_seqlens = c->cu, p.num_seqs = c->nseq;
    const la_tensor *m0 = s->init ? &c->m0.t : NULL, *s0 = s->init ? &c->s0.t : NULL;
    la_status st;
    switch (s->run) {
    case TT_CHUNKED:
    case TT_RECURRENT:
        return la_titans_forward(ctx, &p, &c->q.t, &c->k.t, &c->v.t, &c->eta.t, &c->theta.t, &c->alpha.t, m0, s0,
                                 &c->out.t, &c->m1.t, &c->s1.t);
    case TT_SPLIT: {
        const int64_t a = s->split_at, b = c->T - a;
        la_tensor in1[6], in2[6], o1 = token_range(&c->out.t, 0, a), o2 = token_range(&c->out.t, a, b);
        const la_tensor *src[6] = {&c->q.t, &c->k.t, &c->v.t, &c->eta.t, &c->theta.t, &c->alpha.t};
        for (int i = 0; i < 6; i++) in1[i] = token_range(src[i], 0, a), in2[i] = token_range(src[i], a, b);
        if ((st = la_titans_forward(ctx, &p, &in1[0], &in1[1], &in1[2], &in1[3], &in1[4], &in1[5], m0, s0, &o1,
                                    &c->mm.t, &c->sm.t)))
            return st;
        return la_titans_forward(ctx, &p, &in2[0], &in2[1], &in2[2], &in2[3], &in2[4], &in2[5], &c->mm.t, &c->sm.t,
                                 &o2, &c->m1.t, &c->s1.t);
    }
    case TT_BACKWARD:
        return la_titans_backward(ctx, &p, &c->q.t, &c->k.t, &c->v.t, &c->eta.t, &c->theta.t, &c->alpha.t, m0, s0,
                                  &c->dout.t, s->dfinal ? &c->dmT.t : NULL, s->dfinal ? &c->dsT.t : NULL, &c->dq.t,
                                  &c->dk.t, &c->dv.t, &c->deta.t, &c->dth.t, &c->dal.t, &c->m1.t, &c->s1.t);
    case TT_DECODE: {
        if (m0) memcpy(c->m1.t.data, c->m0.t.data, c->m0.elems * sizeof(float)), memcpy(c->s1.t.data, c->s0.t.data, c->s0.elems * sizeof(float));
        else memset(c->m1.t.data, 0, c->m1.elems * sizeof(float)), memset(c->s1.t.data, 0, c->s1.elems * sizeof(float));
        for (int64_t t = 0; t < c->T; t++) {
            la_tensor qt = token_at(&c->q.t, t), kt = token_at(&c->k.t, t), vt = token_at(&c->v.t, t),
                      et = token_at(&c->eta.t, t), tht = token_at(&c->theta.t, t), at = token_at(&c->alpha.t, t),
                      ot = token_at(&c->out.t, t);
            if ((st = la_titans_decode(ctx, &p, &qt, &kt, &vt, &et, &tht, &at, &c->m1.t, &c->s1.t, &ot))) return st;
        }
        return LA_OK;
    }
    }
    return LA_ERR_ARGUMENT;
}

/* Tolerances: |got - want| <= ATOL * max|want| + RTOL |want| over each
 * output. The memory is a contraction for gates in range (unit keys, theta
 * <= 0.1, eta <= 1, alpha >= 0), so f32 rounding does not compound with L:
 * both forms' f32 sums were seen within 2.4e-7 of the largest element
 * (every case, 4097 tokens included); 5e-6 is a 20x margin. bf16 / f16
 * outputs add one rounding (2^-9 / 2^-11 relative). */
#define TT_ATOL 5e-6
#define TT_RTOL 1e-5
/* The backward's adjoints run over the same contraction backwards: seen
 * within 2.6e-7 of each gradient's largest element (every case, 1000
 * tokens included); 5e-6 is a 20x margin. */
#define BWD_ATOL 5e-6
#define BWD_RTOL 1e-5
static void tolerance(la_dtype out_dt, double *atol, double *rtol) {
    *atol = TT_ATOL, *rtol = TT_RTOL;
    if (out_dt == LA_BF16) *atol = 1e-3, *rtol = 4e-3;
    if (out_dt == LA_F16) *atol = 2e-4, *rtol = 1e-3;
}

typedef struct {
    int64_t bad, n;
    double worst, scale;
} tally_t;

static void tally_add(tally_t *r, double got, double want, double atol, double rtol) {
    const double e = isnan(got) ? INFINITY : fabs(got - want);
    r->n++;
    if (!(e <= atol * r->scale + rtol * fabs(want))) r->bad++;
    if (e / r->scale > r->worst) r->worst = e / r->scale;
}

static double vmax(const double *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(x[i]));
    return m > 0 ? m : 1;
}

static void check_backward(tt_case *c, const char *level);

/* The reference over the stored inputs, compared with the outputs. */
static void check(tt_case *c, const char *level) {
    if (c->s->run == TT_BACKWARD) {
        check_backward(c, level);
        return;
    }
    const tt_spec *s = c->s;
    const int64_t H = s->H, Dk = s->Dk, Dv = s->Dv, G = H / s->Hkv, Lm = c->T > 0 ? c->T : 1, NS = Dk * Dv;
    /* decode steps are per token: the reference with chunk 1 */
    const int64_t chunk = s->run == TT_DECODE ? 1 : s->chunk;
    double *q = tu_alloc(sizeof(double) * (size_t)(Lm * Dk)), *k = tu_alloc(sizeof(double) * (size_t)(Lm * Dk));
    double *v = tu_alloc(sizeof(double) * (size_t)(Lm * Dv)), *gt = tu_alloc(sizeof(double) * (size_t)(3 * Lm));
    double *want = tu_alloc(sizeof(double) * (size_t)(c->nseq * H * Lm * Dv));
    double *wm = tu_alloc(sizeof(double) * (size_t)(c->nseq * H * NS)), *ws = tu_alloc(sizeof(double) * (size_t)(c->nseq * H * NS));
    int64_t idx[4];
    for (int64_t b = 0; b < c->nseq; b++)
        for (int64_t h = 0; h < H; h++) {
            const int64_t L = seq_len(c, b), sh = b * H + h;
            for (int64_t t = 0; t < L; t++) {
                for (int64_t d = 0; d < Dk; d++) {
                    index_of(c, b, t, h, d, idx), q[t * Dk + d] = tu_get(&c->q.t, idx);
                    index_of(c, b, t, h / G, d, idx), k[t * Dk + d] = tu_get(&c->k.t, idx);
                }
                for (int64_t e = 0; e < Dv; e++) index_of(c, b, t, h / G, e, idx), v[t * Dv + e] = tu_get(&c->v.t, idx);
                index_of(c, b, t, h, 0, idx);
                gt[t] = tu_get(&c->eta.t, idx), gt[Lm + t] = tu_get(&c->theta.t, idx), gt[2 * Lm + t] = tu_get(&c->alpha.t, idx);
            }
            double *M = wm + sh * NS, *S = ws + sh * NS;
            for (int64_t i = 0; i < NS; i++) {
                M[i] = s->init ? ((const float *)c->m0.t.data)[sh * NS + i] : 0;
                S[i] = s->init ? ((const float *)c->s0.t.data)[sh * NS + i] : 0;
            }
            titans_ref_head x = {.L = L, .Dk = Dk, .Dv = Dv, .chunk = chunk, .q = q, .k = k, .v = v, .eta = gt,
                                 .theta = gt + Lm, .alpha = gt + 2 * Lm};
            titans_ref_forward(&x, want + sh * Lm * Dv, M, S);
        }
    double atol, rtol;
    tolerance(s->out_dt, &atol, &rtol);
    tally_t r = {.scale = 0};
    for (int64_t b = 0; b < c->nseq; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t t = 0; t < seq_len(c, b); t++)
                for (int64_t e = 0; e < Dv; e++) r.scale = fmax(r.scale, fabs(want[((b * H + h) * Lm + t) * Dv + e]));
    if (r.scale == 0) r.scale = 1;
    for (int64_t b = 0; b < c->nseq; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t t = 0; t < seq_len(c, b); t++)
                for (int64_t e = 0; e < Dv; e++) {
                    index_of(c, b, t, h, e, idx);
                    tally_add(&r, tu_get(&c->out.t, idx), want[((b * H + h) * Lm + t) * Dv + e], atol, rtol);
                }
    tu_check(r.bad == 0, "%s [%s]: out: %lld of %lld off, worst |err| %.3g of max |want| %.3g", s->name, level,
             (long long)r.bad, (long long)r.n, r.worst, r.scale);
    const double *wst[2] = {wm, ws};
    const tu_buf *got[2] = {&c->m1, &c->s1};
    static const char *const sn[2] = {"memory", "momentum"};
    for (int i = 0; i < 2; i++) { /* the states: f32 always, the f32 tolerance */
        tally_t t = {.scale = vmax(wst[i], (size_t)(c->nseq * H * NS))};
        for (int64_t j = 0; j < c->nseq * H * NS; j++) tally_add(&t, ((const float *)got[i]->t.data)[j], wst[i][j], TT_ATOL, TT_RTOL);
        tu_check(t.bad == 0, "%s [%s]: final %s: %lld of %lld off, worst |err| %.3g of max |want| %.3g", s->name,
                 level, sn[i], (long long)t.bad, (long long)t.n, t.worst, t.scale);
    }
    if (s->strided) tu_check(tu_buf_outside_poisoned(&c->out), "%s [%s]: out written outside its view", s->name, level);
    free(q), free(k), free(v), free(gt), free(want), free(wm), free(ws);
}

static void run_case(const tt_spec *s, uint64_t *rng) {
    tt_case c;
    setup(&c, s, rng);
    la_context *ctx;
    TU_EXPECT_STATUS(la_context_create(&ctx, 2), LA_OK);
    la_simd levels[LA_SIMD_COUNT];
    const int nl = tu_simd_levels(levels);
    for (int li = 0; li < nl; li++) {
        la_context_set_simd(ctx, levels[li]);
        poison(&c);
        la_status st = run(&c, ctx);
        tu_check(st == LA_OK, "%s [%s]: status %s (%s)", s->name, la_simd_name(levels[li]), la_status_name(st),
                 la_last_error());
        if (st == LA_OK) check(&c, la_simd_name(levels[li]));
    }
    la_context_destroy(ctx);
    teardown(&c);
}

static tt_spec base(const char *name, int64_t L, int64_t chunk, tt_run run) {
    tt_spec s = {.name = name, .B = 2, .L = L, .H = 2, .Hkv = 2, .Dk = 16, .Dv = 16, .chunk = chunk, .dt = LA_F32,
                 .out_dt = LA_F32, .run = run};
    return s;
}

static void check_cases(uint64_t *rng, bool quick) {
    char name[160];
    static const char *const rn[] = {"chunked", "recurrent", "decode", "two calls"};
    /* lengths around the chunk, several chunk sizes, both forms; the decode loop (per-token steps) */
    const int64_t chunks[] = {1, 7, 16, 64};
    for (size_t ci = 0; ci < sizeof chunks / sizeof chunks[0]; ci++) {
        const int64_t C = chunks[ci], lens[] = {1, C > 1 ? C - 1 : 2, C + 1, 3 * C + 5, 1000, 4097};
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
            for (int run = 0; run < 3; run++) {
                if (lens[li] == 4097 && (quick || run != TT_CHUNKED)) continue;
                if (run == TT_DECODE && (C != 1 || lens[li] > 1000)) continue;
                snprintf(name, sizeof name, "chunk %lld L=%lld %s", (long long)C, (long long)lens[li], rn[run]);
                tt_spec s = base(name, lens[li], C, (tt_run)run);
                if (lens[li] >= 1000) s.B = 1;
                s.init = li % 2 == 1;
                run_case(&s, rng);
            }
    }
    /* the decode step after a prefill: continues with per-token steps from the state */
    {
        tt_spec s = base("decode from a state", 40, 1, TT_DECODE);
        s.init = true;
        run_case(&s, rng);
    }
    /* grouped heads, odd dims, dtypes, strided views */
    for (int run = 0; run < 3; run++) {
        snprintf(name, sizeof name, "GQA 4/2 Dk=5 Dv=19 %s", rn[run]);
        tt_spec s = base(name, 70, run == TT_DECODE ? 1 : 16, (tt_run)run);
        s.H = 4, s.Hkv = 2, s.Dk = 5, s.Dv = 19, s.init = true;
        run_case(&s, rng);
    }
    const la_dtype dts[] = {LA_BF16, LA_F16};
    for (int i = 0; i < 2; i++)
        for (int same = 0; same < 2; same++) {
            snprintf(name, sizeof name, "%s in, %s out", la_dtype_name(dts[i]), same ? la_dtype_name(dts[i]) : "f32");
            tt_spec s = base(name, 50, 16, TT_CHUNKED);
            s.dt = dts[i], s.out_dt = same ? dts[i] : LA_F32;
            run_case(&s, rng);
        }
    for (int run = 0; run < 3; run++) {
        snprintf(name, sizeof name, "strided views %s", rn[run]);
        tt_spec s = base(name, 37, run == TT_DECODE ? 1 : 16, (tt_run)run);
        s.strided = true, s.init = true;
        run_case(&s, rng);
    }
    {
        tt_spec s = base("Dk=64 Dv=48 chunk 32", 150, 32, TT_CHUNKED);
        s.Dk = 64, s.Dv = 48, s.B = 1;
        run_case(&s, rng);
    }
    /* varlen with an empty sequence */
    for (int run = 0; run < 2; run++) {
        snprintf(name, sizeof name, "varlen %s", rn[run]);
        tt_spec s = base(name, 0, 16, (tt_run)run);
        s.nseq = 4, s.lens[0] = 17, s.lens[1] = 0, s.lens[2] = 1, s.lens[3] = 40, s.init = run == 0;
        run_case(&s, rng);
    }
    /* an empty dense batch: the states pass through */
    {
        tt_spec s = base("L=0", 0, 16, TT_CHUNKED);
        s.init = true;
        run_case(&s, rng);
    }
    /* two calls = one over the concatenation (split at a chunk boundary; any split with chunk 1) */
    const int64_t splits[][2] = {{16, 48}, {1, 37}, {7, 35}};
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "two calls chunk %lld split %lld", (long long)splits[i][0], (long long)splits[i][1]);
        tt_spec s = base(name, 83, splits[i][0], TT_SPLIT);
        s.split_at = splits[i][1], s.init = i != 1;
        run_case(&s, rng);
    }
}

/* ---- backward ---- */

/* One token tensor (heads x D per token; D 0: a gate [.., H]) against its
 * reference [seq][head][t][D]. */
static void compare_tok(const tt_case *c, const tu_buf *got, const double *want, int64_t heads, int64_t D,
                        const char *what, const char *level, double atol, double rtol) {
    const int64_t Lm = c->T > 0 ? c->T : 1, W = D ? D : 1;
    tally_t r = {.scale = 0};
    int64_t idx[4];
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1 && r.scale == 0) r.scale = 1;
        for (int64_t b = 0; b < c->nseq; b++)
            for (int64_t h = 0; h < heads; h++)
                for (int64_t t = 0; t < seq_len(c, b); t++)
                    for (int64_t e = 0; e < W; e++) {
                        const double w = want[((b * heads + h) * Lm + t) * W + e];
                        if (pass == 0) {
                            r.scale = fmax(r.scale, fabs(w));
                            continue;
                        }
                        index_of(c, b, t, h, e, idx);
                        tally_add(&r, tu_get(&got->t, idx), w, atol, rtol);
                    }
    }
    tu_check(r.bad == 0, "%s [%s]: %s: %lld of %lld off, worst |err| %.3g of max |want| %.3g", c->s->name, level, what,
             (long long)r.bad, (long long)r.n, r.worst, r.scale);
}

/* The backward against titans_ref_backward (BWD_ATOL says why its tolerance). */
static void check_backward(tt_case *c, const char *level) {
    const tt_spec *s = c->s;
    const int64_t H = s->H, Hkv = s->Hkv, Dk = s->Dk, Dv = s->Dv, G = H / Hkv, Lm = c->T > 0 ? c->T : 1, NS = Dk * Dv;
    const size_t nt = (size_t)(c->nseq * H * Lm);
    double *in = tu_alloc(sizeof(double) * (size_t)(Lm * (2 * Dk + 2 * Dv + 3)));
    double *q = in, *k = q + Lm * Dk, *v = k + Lm * Dk, *gt = v + Lm * Dv, *dy = gt + 3 * Lm;
    double *g = tu_alloc(sizeof(double) * (size_t)(Lm * (2 * Dk + Dv + 3)));
    double *wq = tu_alloc(sizeof(double) * nt * (size_t)Dk);
    double *wk = tu_alloc(sizeof(double) * (size_t)(c->nseq * Hkv * Lm * Dk));
    double *wv = tu_alloc(sizeof(double) * (size_t)(c->nseq * Hkv * Lm * Dv)), *wg = tu_alloc(sizeof(double) * nt * 3);
    double *wm = tu_alloc(sizeof(double) * (size_t)(c->nseq * H * NS));
    double *ws = tu_alloc(sizeof(double) * (size_t)(c->nseq * H * NS)), *st = tu_alloc(sizeof(double) * (size_t)(4 * NS));
    memset(wk, 0, sizeof(double) * (size_t)(c->nseq * Hkv * Lm * Dk));
    memset(wv, 0, sizeof(double) * (size_t)(c->nseq * Hkv * Lm * Dv));
    int64_t idx[4];
    for (int64_t b = 0; b < c->nseq; b++)
        for (int64_t h = 0; h < H; h++) {
            const int64_t L = seq_len(c, b), sh = b * H + h;
            for (int64_t t = 0; t < L; t++) {
                for (int64_t d = 0; d < Dk; d++) {
                    index_of(c, b, t, h, d, idx), q[t * Dk + d] = tu_get(&c->q.t, idx);
                    index_of(c, b, t, h / G, d, idx), k[t * Dk + d] = tu_get(&c->k.t, idx);
                }
                for (int64_t e = 0; e < Dv; e++) {
                    index_of(c, b, t, h / G, e, idx), v[t * Dv + e] = tu_get(&c->v.t, idx);
                    index_of(c, b, t, h, e, idx), dy[t * Dv + e] = tu_get(&c->dout.t, idx);
                }
                index_of(c, b, t, h, 0, idx);
                gt[t] = tu_get(&c->eta.t, idx), gt[Lm + t] = tu_get(&c->theta.t, idx);
                gt[2 * Lm + t] = tu_get(&c->alpha.t, idx);
            }
            for (int64_t i = 0; i < NS; i++) {
                st[i] = s->init ? ((const float *)c->m0.t.data)[sh * NS + i] : 0;
                st[NS + i] = s->init ? ((const float *)c->s0.t.data)[sh * NS + i] : 0;
                st[2 * NS + i] = s->dfinal ? ((const float *)c->dmT.t.data)[sh * NS + i] : 0;
                st[3 * NS + i] = s->dfinal ? ((const float *)c->dsT.t.data)[sh * NS + i] : 0;
            }
            titans_ref_head x = {.L = L, .Dk = Dk, .Dv = Dv, .chunk = s->chunk, .q = q, .k = k, .v = v, .eta = gt,
                                 .theta = gt + Lm, .alpha = gt + 2 * Lm};
            double *gq = g, *gk = gq + Lm * Dk, *gv = gk + Lm * Dk, *gg = gv + Lm * Dv;
            titans_ref_backward(&x, st, st + NS, dy, st + 2 * NS, st + 3 * NS, gq, gk, gv, gg, gg + Lm, gg + 2 * Lm,
                                wm + sh * NS, ws + sh * NS);
            const int64_t skv = b * Hkv + h / G;
            for (int64_t t = 0; t < L; t++) {
                for (int64_t d = 0; d < Dk; d++)
                    wq[(sh * Lm + t) * Dk + d] = gq[t * Dk + d], wk[(skv * Lm + t) * Dk + d] += gk[t * Dk + d];
                for (int64_t e = 0; e < Dv; e++) wv[(skv * Lm + t) * Dv + e] += gv[t * Dv + e];
                for (int i = 0; i < 3; i++) wg[(size_t)i * nt + (size_t)(sh * Lm + t)] = gg[i * Lm + t];
            }
        }
    double atol = BWD_ATOL, rtol = BWD_RTOL;
    if (s->out_dt == LA_BF16) atol = 1e-3, rtol = 4e-3;
    if (s->out_dt == LA_F16) atol = 2e-4, rtol = 1e-3;
    compare_tok(c, &c->dq, wq, H, Dk, "dq", level, atol, rtol);
    compare_tok(c, &c->dk, wk, Hkv, Dk, "dk", level, atol, rtol);
    compare_tok(c, &c->dv, wv, Hkv, Dv, "dv", level, atol, rtol);
    const tu_buf *gb[3] = {&c->deta, &c->dth, &c->dal};
    static const char *const gn[3] = {"deta", "dtheta", "dalpha"};
    for (int i = 0; i < 3; i++) compare_tok(c, gb[i], wg + (size_t)i * nt, H, 0, gn[i], level, BWD_ATOL, BWD_RTOL);
    const double *wst[2] = {wm, ws};
    const tu_buf *got[2] = {&c->m1, &c->s1};
    static const char *const sn[2] = {"dmemory_in", "dmomentum_in"};
    for (int i = 0; i < 2; i++) {
        tally_t t = {.scale = vmax(wst[i], (size_t)(c->nseq * H * NS))};
        for (int64_t j = 0; j < c->nseq * H * NS; j++)
            tally_add(&t, ((const float *)got[i]->t.data)[j], wst[i][j], BWD_ATOL, BWD_RTOL);
        tu_check(t.bad == 0, "%s [%s]: %s: %lld of %lld off, worst |err| %.3g of max |want| %.3g", s->name, level,
                 sn[i], (long long)t.bad, (long long)t.n, t.worst, t.scale);
    }
    if (s->strided)
        tu_check(tu_buf_outside_poisoned(&c->dq) && tu_buf_outside_poisoned(&c->dk) && tu_buf_outside_poisoned(&c->dv),
                 "%s [%s]: a gradient written outside its view", s->name, level);
    free(in), free(g), free(wq), free(wk), free(wv), free(wg), free(wm), free(ws), free(st);
}

/* The reference backward against central differences of its forward. */
static double ref_loss(const titans_ref_head *x, const double *M0, const double *S0, const double *dout,
                       const double *dMT, const double *dST) {
    const int64_t n = x->Dk * x->Dv;
    double out[64], M[16], S[16], l = 0;
    memcpy(M, M0, sizeof(double) * (size_t)n), memcpy(S, S0, sizeof(double) * (size_t)n);
    titans_ref_forward(x, out, M, S);
    for (int64_t i = 0; i < x->L * x->Dv; i++) l += dout[i] * out[i];
    for (int64_t i = 0; i < n; i++) l += dMT[i] * M[i] + dST[i] * S[i];
    return l;
}

static void check_reference_gradients(uint64_t *rng) {
    enum { L = 9, Dk = 3, Dv = 2 };
    for (int chunk = 1; chunk <= 4; chunk += 3) {
        double q[L * Dk], k[L * Dk], v[L * Dv], eta[L], th[L], al[L], M0[Dk * Dv], S0[Dk * Dv], dout[L * Dv];
        double dMT[Dk * Dv], dST[Dk * Dv], dq[L * Dk], dk[L * Dk], dv[L * Dv], deta[L], dth[L], dal[L], dM0[Dk * Dv],
            dS0[Dk * Dv];
        for (int i = 0; i < L * Dk; i++) q[i] = tu_uniform(rng, -1, 1), k[i] = tu_uniform(rng, -1, 1);
        for (int i = 0; i < L * Dv; i++) v[i] = tu_uniform(rng, -1, 1), dout[i] = tu_uniform(rng, -1, 1);
        for (int i = 0; i < L; i++)
            eta[i] = tu_uniform(rng, 0.5, 1), th[i] = tu_uniform(rng, 0, 0.2), al[i] = tu_uniform(rng, 0, 0.2);
        for (int i = 0; i < Dk * Dv; i++)
            M0[i] = tu_uniform(rng, -1, 1), S0[i] = tu_uniform(rng, -1, 1), dMT[i] = tu_uniform(rng, -1, 1),
            dST[i] = tu_uniform(rng, -1, 1);
        titans_ref_head x = {.L = L, .Dk = Dk, .Dv = Dv, .chunk = chunk, .q = q, .k = k, .v = v, .eta = eta,
                             .theta = th, .alpha = al};
        titans_ref_backward(&x, M0, S0, dout, dMT, dST, dq, dk, dv, deta, dth, dal, dM0, dS0);
        struct { double *x, *grad; int n; const char *name; } vars[] = {
            {q, dq, L * Dk, "dq"}, {k, dk, L * Dk, "dk"}, {v, dv, L * Dv, "dv"}, {eta, deta, L, "deta"},
            {th, dth, L, "dtheta"}, {al, dal, L, "dalpha"}, {M0, dM0, Dk * Dv, "dM0"}, {S0, dS0, Dk * Dv, "dS0"}};
        /* float64 central differences, step 1e-6: truncation ~1e-12, rounding ~1e-10; 1e-6 a wide margin */
        const double step = 1e-6;
        for (int vi = 0; vi < 8; vi++) {
            double worst = 0;
            for (int i = 0; i < vars[vi].n; i++) {
                const double keep = vars[vi].x[i];
                vars[vi].x[i] = keep + step;
                const double lp = ref_loss(&x, M0, S0, dout, dMT, dST);
                vars[vi].x[i] = keep - step;
                const double lm = ref_loss(&x, M0, S0, dout, dMT, dST);
                vars[vi].x[i] = keep;
                const double fd = (lp - lm) / (2 * step), e = fabs(fd - vars[vi].grad[i]) / (1 + fabs(fd));
                if (e > worst) worst = e;
            }
            tu_check(worst < 1e-6, "reference backward %s (chunk %d): worst relative error %.3g vs finite differences",
                     vars[vi].name, chunk, worst);
        }
    }
}

static void check_backward_cases(uint64_t *rng, bool quick) {
    char name[160];
    const int64_t chunks[] = {1, 7, 16};
    for (size_t ci = 0; ci < 3; ci++) {
        const int64_t C = chunks[ci], lens[] = {1, C > 1 ? C - 1 : 2, C + 1, 100, 1000};
        for (size_t li = 0; li < 5; li++) {
            if (quick && lens[li] == 1000 && C != 16) continue;
            snprintf(name, sizeof name, "backward chunk %lld L=%lld", (long long)C, (long long)lens[li]);
            tt_spec s = base(name, lens[li], C, TT_BACKWARD);
            if (lens[li] >= 100) s.B = 1;
            s.init = li % 2 == 1, s.dfinal = li % 2 == 0;
            run_case(&s, rng);
        }
    }
    tt_spec s = base("backward GQA 4/2 Dk=5 Dv=19", 70, 16, TT_BACKWARD);
    s.H = 4, s.Hkv = 2, s.Dk = 5, s.Dv = 19, s.init = s.dfinal = true;
    run_case(&s, rng);
    s = base("backward varlen GQA 4/1 bf16", 0, 8, TT_BACKWARD);
    s.nseq = 4, s.lens[0] = 17, s.lens[1] = 0, s.lens[2] = 1, s.lens[3] = 40, s.H = 4, s.Hkv = 1;
    s.init = s.dfinal = true, s.dt = s.out_dt = LA_BF16;
    run_case(&s, rng);
    s = base("backward strided views", 37, 8, TT_BACKWARD);
    s.strided = true, s.init = true;
    run_case(&s, rng);
}

#define EXPECT_REJECT(call, want)                                                                              \
    do {                                                                                                        \
        la_status got_ = (call);                                                                                \
        tu_check(got_ == (want) && la_last_error()[0] != 0, "%s:%d %s returned %s (message \"%s\"), want %s", \
                 __FILE__, __LINE__, #call, la_status_name(got_), la_last_error(), la_status_name(want));       \
    } while (0)

static void check_bad_inputs(void) {
    enum { B = 2, L = 5, H = 4, Hkv = 2, Dk = 8, Dv = 4 };
    static float q[B * L * H * Dk], k[B * L * Hkv * Dk], v[B * L * Hkv * Dv], e[B * L * H], th[B * L * H],
        al[B * L * H], out[B * L * H * Dv], m[B * H * Dk * Dv], s[B * H * Dk * Dv], m2[B * H * Dk * Dv],
        s2[B * H * Dk * Dv];
    la_context *ctx;
    TU_EXPECT_STATUS(la_context_create(&ctx, 1), LA_OK);
    la_tensor tq = la_tensor_contiguous(q, LA_F32, 4, (int64_t[]){B, L, H, Dk});
    la_tensor tk = la_tensor_contiguous(k, LA_F32, 4, (int64_t[]){B, L, Hkv, Dk});
    la_tensor tv = la_tensor_contiguous(v, LA_F32, 4, (int64_t[]){B, L, Hkv, Dv});
    la_tensor te = la_tensor_contiguous(e, LA_F32, 3, (int64_t[]){B, L, H});
    la_tensor tth = la_tensor_contiguous(th, LA_F32, 3, (int64_t[]){B, L, H});
    la_tensor ta = la_tensor_contiguous(al, LA_F32, 3, (int64_t[]){B, L, H});
    la_tensor to = la_tensor_contiguous(out, LA_F32, 4, (int64_t[]){B, L, H, Dv});
    la_tensor tm = la_tensor_contiguous(m, LA_F32, 4, (int64_t[]){B, H, Dk, Dv});
    la_tensor ts = la_tensor_contiguous(s, LA_F32, 4, (int64_t[]){B, H, Dk, Dv});
    la_tensor tm2 = la_tensor_contiguous(m2, LA_F32, 4, (int64_t[]){B, H, Dk, Dv});
    la_tensor ts2 = la_tensor_contiguous(s2, LA_F32, 4, (int64_t[]){B, H, Dk, Dv});
    la_titans_params p = la_titans_params_default();
    TU_EXPECT_STATUS(la_titans_forward(ctx, &p, &tq, &tk, &tv, &te, &tth, &ta, &tm, &ts, &to, &tm2, &ts2), LA_OK);
    EXPECT_REJECT(la_titans_forward(NULL, &p, &tq, &tk, &tv, &te, &tth, &ta, NULL, NULL, &to, NULL, NULL), LA_ERR_NULL);
    EXPECT_REJECT(la_titans_forward(ctx, NULL, &tq, &tk, &tv, &te, &tth, &ta, NULL, NULL, &to, NULL, NULL), LA_ERR_NULL);
    EXPECT_REJECT(la_titans_forward(ctx, &p, &tq, &tk, &tv, NULL, &tth, &ta, NULL, NULL, &to, NULL, NULL), LA_ERR_NULL);
    EXPECT_REJECT(la_titans_forward(ctx, &p, &tq, &tk, &tv, &te, &tth, &ta, NULL, NULL, NULL, NULL, NULL), LA_ERR_NULL);
    /* shapes: k's length, heads that do not divide, a gate of the wrong shape, states of the wrong shape */
    la_tensor bad = tk;
    bad.shape[1] = L - 1;
    EXPECT_REJECT(la_titans_forward(ctx, &p, &tq, &bad, &tv, &te, &tth, &ta, NULL, NULL, &to, NULL, NULL), LA_ERR_SHAPE);
    la_tensor k3 = la_tensor_contiguous(k, LA_F32, 4, (int64_t[]){B, L, 3, Dk / 2});
    la_tensor v3 = la_tensor_contiguous(v, LA_F32, 4, (int64_t[]){B, L, 3, 1});
    la_tensor q3 = la_tensor_contiguous(q, LA_F32, 4, (int64_t[]){B, L, H, Dk / 2});
    la_tensor o3 = la_tensor_contiguous(out, LA_F32, 4, (int64_t[]){B, L, H, 1});
    EXPECT_REJECT(la_titans_forward(ctx, &p, &q3, &k3, &v3, &te, &tth, &ta, NULL, NULL, &o3, NULL, NULL), LA_ERR_SHAPE);
    la_tensor e4 = la_tensor_contiguous(e, LA_F32, 4, (int64_t[]){B, L, H, 1});
    EXPECT_REJECT(la_titans_forward(ctx, &p, &tq, &tk, &tv, &e4, &tth, &ta, NULL, NULL, &to, NULL, NULL), LA_ERR_SHAPE);
    la_tensor eh = la_tensor_contiguous(e, LA_F32, 3, (int64_t[]){B, L, Hkv});
    EXPECT_REJECT(la_titans_forward(ctx, &p, &tq, &tk, &tv, &te, &eh, &ta, NULL, NULL, &to, NULL, NULL), LA_ERR_SHAPE);
    la_tensor sh = la_tensor_contiguous(m, LA_F32, 4, (int64_t[]){B, Hkv, Dk, Dv});
    EXPECT_REJECT(la_titans_forward(ctx, &p, &tq, &tk, &tv, &te, &tth, &ta, &sh, NULL, &to, NULL, NULL), LA_ERR_SHAPE);
    EXPECT_REJECT(la_titans_forward(ctx, &p, &tq, &tk, &tv, &te, &tth, &ta, NULL, NULL, &to, NULL, &sh), LA_ERR_SHAPE);
    /* dtypes: a bf16 gate, a bf16 state, mixed inputs */
    bad = te, bad.dtype = LA_BF16;
    EXPECT_REJECT(la_titans_forward(ctx, &p, &tq, &tk, &tv, &bad, &tth, &ta, NULL, NULL, &to, NULL, NULL), LA_ERR_DTYPE);
    bad = tm, bad.dtype = LA_BF16;
    EXPECT_REJECT(la_titans_forward(ctx, &p, &tq, &tk, &tv, &te, &tth, &ta, &bad, NULL, &to, NULL, NULL), LA_ERR_DTYPE);
    bad = tk, bad.dtype = LA_F16;
    EXPECT_REJECT(la_titans_forward(ctx, &p, &tq, &bad, &tv, &te, &tth, &ta, NULL, NULL, &to, NULL, NULL), LA_ERR_DTYPE);
    /* options */
    la_titans_params pb = p;
    pb.chunk_size = 0;
    EXPECT_REJECT(la_titans_forward(ctx, &pb, &tq, &tk, &tv, &te, &tth, &ta, NULL, NULL, &to, NULL, NULL), LA_ERR_ARGUMENT);
    pb.chunk_size = 2048;
    EXPECT_REJECT(la_titans_forward(ctx, &pb, &tq, &tk, &tv, &te, &tth, &ta, NULL, NULL, &to, NULL, NULL), LA_ERR_UNSUPPORTED);
    pb = p, pb.form = LA_LINEAR_FORM_COUNT;
    EXPECT_REJECT(la_titans_forward(ctx, &pb, &tq, &tk, &tv, &te, &tth, &ta, NULL, NULL, &to, NULL, NULL), LA_ERR_ARGUMENT);
    /* outputs over inputs or each other */
    la_tensor oq = la_tensor_contiguous(q, LA_F32, 4, (int64_t[]){B, L, H, Dv});
    EXPECT_REJECT(la_titans_forward(ctx, &p, &tq, &tk, &tv, &te, &tth, &ta, NULL, NULL, &oq, NULL, NULL), LA_ERR_ARGUMENT);
    EXPECT_REJECT(la_titans_forward(ctx, &p, &tq, &tk, &tv, &te, &tth, &ta, &tm, &ts, &to, &tm, NULL), LA_ERR_ARGUMENT);
    EXPECT_REJECT(la_titans_forward(ctx, &p, &tq, &tk, &tv, &te, &tth, &ta, NULL, NULL, &to, &tm2, &tm2), LA_ERR_ARGUMENT);
    /* bad cu_seqlens */
    la_tensor pq = la_tensor_contiguous(q, LA_F32, 3, (int64_t[]){B * L, H, Dk});
    la_tensor pk = la_tensor_contiguous(k, LA_F32, 3, (int64_t[]){B * L, Hkv, Dk});
    la_tensor pv = la_tensor_contiguous(v, LA_F32, 3, (int64_t[]){B * L, Hkv, Dv});
    la_tensor pe = la_tensor_contiguous(e, LA_F32, 2, (int64_t[]){B * L, H});
    la_tensor pth = la_tensor_contiguous(th, LA_F32, 2, (int64_t[]){B * L, H});
    la_tensor pa = la_tensor_contiguous(al, LA_F32, 2, (int64_t[]){B * L, H});
    la_tensor po = la_tensor_contiguous(out, LA_F32, 3, (int64_t[]){B * L, H, Dv});
    int32_t cu_ok[4] = {0, 4, 4, B * L}, cu_dec[4] = {0, 6, 4, B * L}, cu_end[4] = {0, 4, 5, B * L + 1};
    la_titans_params pv_ = p;
    pv_.cu_seqlens = cu_ok, pv_.num_seqs = 3;
    TU_EXPECT_STATUS(la_titans_forward(ctx, &pv_, &pq, &pk, &pv, &pe, &pth, &pa, NULL, NULL, &po, NULL, NULL), LA_OK);
    pv_.cu_seqlens = cu_dec;
    EXPECT_REJECT(la_titans_forward(ctx, &pv_, &pq, &pk, &pv, &pe, &pth, &pa, NULL, NULL, &po, NULL, NULL), LA_ERR_SEQLENS);
    pv_.cu_seqlens = cu_end;
    EXPECT_REJECT(la_titans_forward(ctx, &pv_, &pq, &pk, &pv, &pe, &pth, &pa, NULL, NULL, &po, NULL, NULL), LA_ERR_SEQLENS);
    pv_.cu_seqlens = cu_ok, pv_.num_seqs = 0;
    EXPECT_REJECT(la_titans_forward(ctx, &pv_, &pq, &pk, &pv, &pe, &pth, &pa, NULL, NULL, &po, NULL, NULL), LA_ERR_ARGUMENT);
    pv_.num_seqs = 3;
    /* decode: shapes, a missing state, cu_seqlens */
    la_tensor dq = la_tensor_contiguous(q, LA_F32, 3, (int64_t[]){B, H, Dk});
    la_tensor dk = la_tensor_contiguous(k, LA_F32, 3, (int64_t[]){B, Hkv, Dk});
    la_tensor dv = la_tensor_contiguous(v, LA_F32, 3, (int64_t[]){B, Hkv, Dv});
    la_tensor de = la_tensor_contiguous(e, LA_F32, 2, (int64_t[]){B, H});
    la_tensor dth = la_tensor_contiguous(th, LA_F32, 2, (int64_t[]){B, H});
    la_tensor da = la_tensor_contiguous(al, LA_F32, 2, (int64_t[]){B, H});
    la_tensor dout = la_tensor_contiguous(out, LA_F32, 3, (int64_t[]){B, H, Dv});
    TU_EXPECT_STATUS(la_titans_decode(ctx, &p, &dq, &dk, &dv, &de, &dth, &da, &tm, &ts, &dout), LA_OK);
    EXPECT_REJECT(la_titans_decode(ctx, &p, &dq, &dk, &dv, &de, &dth, &da, NULL, &ts, &dout), LA_ERR_NULL);
    EXPECT_REJECT(la_titans_decode(ctx, &p, &dq, &dk, &dv, &de, &dth, &da, &tm, &tm, &dout), LA_ERR_ARGUMENT);
    EXPECT_REJECT(la_titans_decode(ctx, &p, &tq, &tk, &tv, &te, &tth, &ta, &tm, &ts, &to), LA_ERR_SHAPE);
    EXPECT_REJECT(la_titans_decode(ctx, &pv_, &dq, &dk, &dv, &de, &dth, &da, &tm, &ts, &dout), LA_ERR_ARGUMENT);
    EXPECT_REJECT(la_titans_decode(ctx, &p, &dq, &dk, &dv, &de, &dth, &da, &sh, &ts, &dout), LA_ERR_SHAPE);
    /* backward: a missing gate gradient, gradients of the wrong shape, over an input or each other */
    static float gq[B * L * H * Dk], gk[B * L * Hkv * Dk], gv[B * L * Hkv * Dv], ge[B * L * H], gth[B * L * H],
        ga[B * L * H];
    la_tensor tgq = la_tensor_contiguous(gq, LA_F32, 4, (int64_t[]){B, L, H, Dk});
    la_tensor tgk = la_tensor_contiguous(gk, LA_F32, 4, (int64_t[]){B, L, Hkv, Dk});
    la_tensor tgv = la_tensor_contiguous(gv, LA_F32, 4, (int64_t[]){B, L, Hkv, Dv});
    la_tensor tge = la_tensor_contiguous(ge, LA_F32, 3, (int64_t[]){B, L, H});
    la_tensor tgth = la_tensor_contiguous(gth, LA_F32, 3, (int64_t[]){B, L, H});
    la_tensor tga = la_tensor_contiguous(ga, LA_F32, 3, (int64_t[]){B, L, H});
    TU_EXPECT_STATUS(la_titans_backward(ctx, &p, &tq, &tk, &tv, &te, &tth, &ta, &tm, &ts, &to, NULL, NULL, &tgq, &tgk,
                                        &tgv, &tge, &tgth, &tga, &tm2, &ts2),
                     LA_OK);
    EXPECT_REJECT(la_titans_backward(ctx, &p, &tq, &tk, &tv, &te, &tth, &ta, NULL, NULL, &to, NULL, NULL, &tgq, &tgk,
                                     &tgv, &tge, NULL, &tga, NULL, NULL),
                  LA_ERR_NULL);
    EXPECT_REJECT(la_titans_backward(ctx, &p, &tq, &tk, &tv, &te, &tth, &ta, NULL, NULL, &to, NULL, NULL, &tgk, &tgk,
                                     &tgv, &tge, &tgth, &tga, NULL, NULL),
                  LA_ERR_SHAPE);
    EXPECT_REJECT(la_titans_backward(ctx, &p, &tq, &tk, &tv, &te, &tth, &ta, NULL, NULL, &to, NULL, NULL, &tgq, &tgk,
                                     &tgv, &tge, &tge, &tga, NULL, NULL),
                  LA_ERR_ARGUMENT);
    EXPECT_REJECT(la_titans_backward(ctx, &p, &tq, &tk, &tv, &te, &tth, &ta, NULL, NULL, &to, NULL, NULL, &tgq, &tgk,
                                     &tgv, &tge, &tgth, &ta, NULL, NULL),
                  LA_ERR_ARGUMENT);
    EXPECT_REJECT(la_titans_backward(ctx, &p, &tq, &tk, &tv, &te, &tth, &ta, NULL, NULL, &to, &sh, NULL, &tgq, &tgk,
                                     &tgv, &tge, &tgth, &tga, NULL, NULL),
                  LA_ERR_SHAPE);
    pb = p, pb.chunk_size = 0;
    EXPECT_REJECT(la_titans_backward(ctx, &pb, &tq, &tk, &tv, &te, &tth, &ta, NULL, NULL, &to, NULL, NULL, &tgq, &tgk,
                                     &tgv, &tge, &tgth, &tga, NULL, NULL),
                  LA_ERR_ARGUMENT);
    la_context_destroy(ctx);
}

int main(void) {
    uint64_t rng = tu_seed();
    check_reference_gradients(&rng);
    check_cases(&rng, getenv("LONGATTN_TEST_QUICK") != NULL);
    check_backward_cases(&rng, getenv("LONGATTN_TEST_QUICK") != NULL);
    check_bad_inputs();
    return tu_finish();
}
