/* The exact attention backward as a harness case: la_attention_backward's
 * dq, dk, dv against the float64 reference.
 *
 * out and lse come from the float64 reference forward, rounded to the
 * tensors' dtypes as a training framework would have stored them, so the
 * backward is judged on its own; with library_forward (and always in perf
 * mode) they come from la_attention_forward instead. */
#include "attention_common.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    harness_case base; /* first: the harness sees this */
    attn_backward_spec s;
    attn_layout l;
    float slopes[ATTN_MAX_HEADS];
    la_attention_params p;
    bool sigmoid;
    tu_buf q, k, v, dout, out, lse, dq, dk, dv;
    /* reference: gradients in [token][head][D] order; blind rows (a query
     * that sees no key, a key no query sees) per token */
    double *dq_ref, *dk_ref, *dv_ref;
    bool *q_blind, *k_blind;
} bw_case;

/* Tolerance on max|got - want| relative to max|want| of the tensor.
 * f32 end to end: f32 accumulation over up to ~4k keys and the ~2-ulp vector
 * exp; the softmax term p (dp - delta) cancels and can cost a digit. The
 * worst seen is ~3e-6 (L = 4097), so 3e-5 leaves a 10x margin.
 * Half precision: the inputs are exact in both computations, but out is
 * stored rounded (bf16 eps 2^-8, f16 2^-10) and delta = dout . out inherits
 * that error, as in every FA2-style backward; gradients stored in the input
 * dtype are rounded once more. Worst seen is about one eps of the scale
 * (3.3e-3 bf16, 4e-4 f16): allow four, 1.5e-2 and 4e-3. */
static double tolerance(const attn_backward_spec *s) {
    bool rounded = s->out_dt != LA_F32 || s->grad_dt != LA_F32; /* half inputs alone are exact */
    if (rounded && s->dt == LA_BF16) return 1.5e-2;
    if (rounded && s->dt == LA_F16) return 4e-3;
    return 3e-5;
}

static void describe(const harness_case *hc, harness_fields *f) {
    const bw_case *c = (const bw_case *)hc;
    attn_describe(f, &c->l, c->s.dt, c->s.H, c->s.Hkv, c->s.D, c->s.p.causal, "bwd");
    if (c->s.show_deterministic) harness_field_int(f, "deterministic", c->s.p.deterministic);
}

/* FlashAttention's count: the backward is 2.5 forwards. */
static double flops(const harness_case *hc) {
    const bw_case *c = (const bw_case *)hc;
    return 2.5 * attn_forward_flops(&c->l, c->s.H, c->s.D, c->s.p.causal);
}

/* q, k, v, out, dout and lse read once; dq, dk, dv written once. */
static double bytes(const harness_case *hc) {
    const bw_case *c = (const bw_case *)hc;
    double nq = (double)(c->l.Tq * c->s.H * c->s.D), nk = (double)(c->l.Tk * c->s.Hkv * c->s.D);
    double in = (double)la_dtype_size(c->s.dt), grad = (double)la_dtype_size(c->s.grad_dt);
    double dout = c->s.dout_f32 ? 4 : in;
    return nq * (in + (double)la_dtype_size(c->s.out_dt) + dout + grad) + nk * 2 * (in + grad) +
           (c->sigmoid ? 0 : 4.0 * (double)(c->l.Tq * c->s.H));
}

static void poison(harness_case *hc) {
    bw_case *c = (bw_case *)hc;
    tu_buf_poison(&c->dq), tu_buf_poison(&c->dk), tu_buf_poison(&c->dv);
}

static bool setup(harness_case *hc, uint64_t seed) {
    bw_case *c = (bw_case *)hc;
    const attn_layout *l = &c->l;
    const bool st = c->s.strided;
    uint64_t rng = seed;
    bool ok = tu_buf_init(&c->q, c->s.dt, l->nd, l->qshape, st, false);
    ok &= tu_buf_init(&c->k, c->s.dt, l->nd, l->kshape, st, false);
    ok &= tu_buf_init(&c->v, c->s.dt, l->nd, l->kshape, st, false);
    ok &= tu_buf_init(&c->dout, c->s.dout_f32 ? LA_F32 : c->s.dt, l->nd, l->qshape, st, false);
    ok &= tu_buf_init(&c->out, c->s.out_dt, l->nd, l->qshape, st, false);
    ok &= tu_buf_init(&c->lse, LA_F32, l->nd - 1, l->lse_shape, st, true);
    ok &= tu_buf_init(&c->dq, c->s.grad_dt, l->nd, l->qshape, st, false);
    ok &= tu_buf_init(&c->dk, c->s.grad_dt, l->nd, l->kshape, st, false);
    ok &= tu_buf_init(&c->dv, c->s.grad_dt, l->nd, l->kshape, st, false);
    if (!ok) return false;
    tu_fill(&rng, c->q.t.data, c->s.dt, (int64_t)c->q.elems, -1, 1);
    tu_fill(&rng, c->k.t.data, c->s.dt, (int64_t)c->k.elems, -1, 1);
    tu_fill(&rng, c->v.t.data, c->s.dt, (int64_t)c->v.elems, -1, 1);
    tu_fill(&rng, c->dout.t.data, c->dout.t.dtype, (int64_t)c->dout.elems, -1, 1);
    tu_buf_poison(&c->out);
    tu_buf_poison(&c->lse);
    for (int64_t h = 0; h < c->s.H && h < ATTN_MAX_HEADS; h++) c->slopes[h] = (float)tu_uniform(&rng, 0.01, 0.3);
    c->p = attn_params(&c->s.p, l, c->slopes, c->s.alibi);
    poison(hc);
    return true;
}

/* out and lse from the library's forward: its conventions (natural log,
 * -inf for a row that sees nothing) must be what the backward expects. */
static la_status prepare(harness_case *hc, la_context *ctx) {
    bw_case *c = (bw_case *)hc;
    if (!c->s.library_forward && c->dq_ref) return LA_OK; /* the reference stored them */
    tu_buf_poison(&c->out);
    return la_attention_forward(ctx, &c->p, &c->q.t, &c->k.t, &c->v.t, &c->out.t, c->sigmoid ? NULL : &c->lse.t);
}

static la_status call(bw_case *c, la_context *ctx) {
    return la_attention_backward(ctx, &c->p, &c->q.t, &c->k.t, &c->v.t, &c->out.t, &c->dout.t,
                                 c->sigmoid ? NULL : &c->lse.t, &c->dq.t, &c->dk.t, &c->dv.t);
}

static la_status run(harness_case *hc, la_context *ctx) {
    bw_case *c = (bw_case *)hc;
    if (!c->s.nested) return call(c, ctx);
    /* A plain call first leaves every thread's scratch dirty, so a
     * reduction over threads that do not exist would show. */
    call(c, ctx);
    poison(hc);
    /* Nested parallelism is off by default: the library's region gets one
     * thread though the context asks for more. */
    la_status s = LA_ERR_ARGUMENT;
#pragma omp parallel num_threads(2)
    {
#pragma omp single
        s = call(c, ctx);
    }
    return s;
}

/* Visibility, written again from the reference's documented rule. */
static bool sees(const la_attention_params *p, int64_t i, int64_t j, int64_t lq, int64_t lk) {
    int64_t diag = i + lk - lq;
    int64_t hi = p->causal ? diag + 1 : p->window_right >= 0 ? diag + p->window_right + 1 : lk;
    int64_t lo = p->window_left >= 0 ? diag - p->window_left : 0;
    return j < hi && j < lk && (j >= lo || j < p->sinks);
}

/* Blind rows: a query that sees no key, a key that no query sees. Their
 * gradients are structurally 0 and must come out exactly 0. */
static void find_blind_rows(bw_case *c) {
    c->q_blind = tu_alloc((size_t)c->l.Tq + 1);
    c->k_blind = tu_alloc((size_t)c->l.Tk + 1);
    for (int64_t b = 0; b < c->l.nseq; b++) {
        attn_seq s = attn_seq_of(&c->l, b);
        for (int64_t i = 0; i < s.lq; i++) c->q_blind[s.q0 + i] = true;
        for (int64_t j = 0; j < s.lk; j++) c->k_blind[s.k0 + j] = true;
        for (int64_t i = 0; i < s.lq; i++)
            for (int64_t j = 0; j < s.lk; j++)
                if (sees(&c->p, i, j, s.lq, s.lk)) c->q_blind[s.q0 + i] = c->k_blind[s.k0 + j] = false;
    }
}

/* Per-head scratch of the reference: one sequence's rows as [L][D]. */
typedef struct {
    double *q, *dout, *out, *dq, *lse, *k, *v, *dk, *dv;
} head_rows;

/* The reference of head h of sequence b: stores out and lse into the
 * tensors (rounded to their dtypes) and accumulates the gradients. */
static void reference_head(bw_case *c, int64_t b, int64_t h, head_rows *w) {
    const int64_t H = c->s.H, Hkv = c->s.Hkv, D = c->s.D, hkv = h / (H / Hkv);
    attn_seq s = attn_seq_of(&c->l, b);
    int64_t idx[4];
    ref_attn_opts o = attn_ref_opts(&c->p, D, c->s.alibi ? c->slopes[h] : 0);
    for (int64_t i = 0; i < s.lq; i++)
        for (int64_t d = 0; d < D; d++) {
            attn_index(&c->l, b, s.q0, i, h, d, idx);
            w->q[i * D + d] = tu_get(&c->q.t, idx);
            w->dout[i * D + d] = tu_get(&c->dout.t, idx);
        }
    for (int64_t j = 0; j < s.lk; j++)
        for (int64_t d = 0; d < D; d++) {
            attn_index(&c->l, b, s.k0, j, hkv, d, idx);
            w->k[j * D + d] = tu_get(&c->k.t, idx);
            w->v[j * D + d] = tu_get(&c->v.t, idx);
            w->dk[j * D + d] = w->dv[j * D + d] = 0;
        }
    ref_attention_forward(&o, s.lq, s.lk, D, w->q, w->k, w->v, w->out, w->lse);
    ref_attention_backward(&o, s.lq, s.lk, D, w->q, w->k, w->v, w->dout, w->dq, w->dk, w->dv);
    for (int64_t i = 0; i < s.lq; i++) {
        for (int64_t d = 0; d < D; d++) {
            attn_index(&c->l, b, s.q0, i, h, d, idx);
            tu_set(&c->out.t, idx, w->out[i * D + d]);
            c->dq_ref[((s.q0 + i) * H + h) * D + d] = w->dq[i * D + d];
        }
        if (!c->sigmoid) {
            attn_index(&c->l, b, s.q0, i, h, 0, idx);
            tu_set(&c->lse.t, idx, w->lse[i]);
        }
    }
    for (int64_t j = 0; j < s.lk; j++)
        for (int64_t d = 0; d < D; d++) {
            int64_t lin = ((s.k0 + j) * Hkv + hkv) * D + d;
            c->dk_ref[lin] += w->dk[j * D + d];
            c->dv_ref[lin] += w->dv[j * D + d];
        }
}

/* dk and dv sum over every query row: there is no sampled reference. */
static bool reference(harness_case *hc, bool sampled) {
    bw_case *c = (bw_case *)hc;
    if (sampled) return false;
    const int64_t H = c->s.H, D = c->s.D;
    size_t nq = (size_t)(c->l.Tq * H * D), nk = (size_t)(c->l.Tk * c->s.Hkv * D);
    c->dq_ref = tu_alloc(sizeof(double) * nq);
    c->dk_ref = tu_alloc(sizeof(double) * nk);
    c->dv_ref = tu_alloc(sizeof(double) * nk);
    memset(c->dk_ref, 0, sizeof(double) * nk);
    memset(c->dv_ref, 0, sizeof(double) * nk);
    int64_t maxq = 1, maxk = 1;
    for (int64_t b = 0; b < c->l.nseq; b++) {
        attn_seq s = attn_seq_of(&c->l, b);
        if (s.lq > maxq) maxq = s.lq;
        if (s.lk > maxk) maxk = s.lk;
    }
    size_t qn = 8 * (size_t)(maxq * D), kn = 8 * (size_t)(maxk * D);
    head_rows w = {tu_alloc(qn), tu_alloc(qn), tu_alloc(qn), tu_alloc(qn), tu_alloc(8 * (size_t)maxq),
                   tu_alloc(kn), tu_alloc(kn), tu_alloc(kn), tu_alloc(kn)};
    for (int64_t b = 0; b < c->l.nseq; b++)
        for (int64_t h = 0; h < H; h++) reference_head(c, b, h, &w);
    free(w.q), free(w.dout), free(w.out), free(w.dq), free(w.lse), free(w.k), free(w.v), free(w.dk), free(w.dv);
    find_blind_rows(c);
    return true;
}

typedef struct {
    double worst;     /* largest |got - want| / scale */
    double scale;     /* max |want| */
    int64_t bad_zero; /* elements of blind rows that are not exactly 0 */
} cmp_result;

/* Compare gradient t ([token][heads][D] in want) over the query (keys =
 * false) or key tokens of every sequence. */
static cmp_result compare(const bw_case *c, const tu_buf *t, const double *want, const bool *blind, int64_t heads,
                          bool keys) {
    const int64_t D = c->s.D;
    cmp_result r = {0};
    for (int64_t b = 0; b < c->l.nseq; b++) {
        attn_seq s = attn_seq_of(&c->l, b);
        int64_t t0 = keys ? s.k0 : s.q0, len = keys ? s.lk : s.lq;
        for (int64_t lin = t0 * heads * D; lin < (t0 + len) * heads * D; lin++)
            if (fabs(want[lin]) > r.scale) r.scale = fabs(want[lin]);
    }
    double scale = r.scale > 0 ? r.scale : 1;
    for (int64_t b = 0; b < c->l.nseq; b++) {
        attn_seq s = attn_seq_of(&c->l, b);
        int64_t t0 = keys ? s.k0 : s.q0, len = keys ? s.lk : s.lq;
        for (int64_t i = 0; i < len; i++)
            for (int64_t h = 0; h < heads; h++)
                for (int64_t d = 0; d < D; d++) {
                    int64_t idx[4], lin = ((t0 + i) * heads + h) * D + d;
                    attn_index(&c->l, b, t0, i, h, d, idx);
                    double got = tu_get(&t->t, idx), w = want[lin];
                    if (blind[t0 + i] && got != 0) r.bad_zero++;
                    double e = isnan(got) ? INFINITY : fabs(got - w) / scale;
                    if (e > r.worst) r.worst = e;
                }
    }
    return r;
}

static double check(harness_case *hc, const char *label, bool tally) {
    bw_case *c = (bw_case *)hc;
    struct {
        const char *name;
        const tu_buf *t;
        const double *want;
        const bool *blind;
        int64_t heads;
        bool keys;
    } grads[3] = {{"dq", &c->dq, c->dq_ref, c->q_blind, c->s.H, false},
                  {"dk", &c->dk, c->dk_ref, c->k_blind, c->s.Hkv, true},
                  {"dv", &c->dv, c->dv_ref, c->k_blind, c->s.Hkv, true}};
    double tol = tolerance(&c->s), worst = 0;
    for (int g = 0; g < 3; g++) {
        cmp_result r = compare(c, grads[g].t, grads[g].want, grads[g].blind, grads[g].heads, grads[g].keys);
        if (r.worst > worst) worst = r.worst;
        if (!tally) continue;
        /* see tolerance(); blind rows must be exactly 0, not poison */
        tu_check(tu_buf_outside_poisoned(grads[g].t), "%s [%s] %s: wrote outside its view", c->base.name, label,
                 grads[g].name);
        tu_check(r.worst <= tol && r.bad_zero == 0,
                 "%s [%s] %s: max error %.3g of scale %.3g (tolerance %.1g), %lld elements of blind rows not 0",
                 c->base.name, label, grads[g].name, r.worst, r.scale, tol, (long long)r.bad_zero);
    }
    return worst;
}

static void teardown(harness_case *hc) {
    bw_case *c = (bw_case *)hc;
    tu_buf *all[] = {&c->q, &c->k, &c->v, &c->dout, &c->out, &c->lse, &c->dq, &c->dk, &c->dv};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) tu_buf_free(all[i]);
    free(c->dq_ref), free(c->dk_ref), free(c->dv_ref), free(c->q_blind), free(c->k_blind);
    c->dq_ref = c->dk_ref = c->dv_ref = NULL;
    c->q_blind = c->k_blind = NULL;
}

static const harness_ops backward_ops = {.op = "attention", HARNESS_CASE_CALLBACKS, .prepare = prepare};

harness_case *attn_backward_case(const attn_backward_spec *s) {
    bw_case *c = harness_case_new(sizeof *c, &backward_ops, s->name, s->threads, harness_compute_ceiling(s->dt));
    c->s = *s;
    c->s.name = c->base.name; /* the caller's name may not outlive this call */
    attn_layout_init(&c->l, s->B, s->Lq, s->Lk, s->nseq, s->lens_q, s->lens_k, s->H, s->Hkv, s->D);
    c->base.tokens = c->l.varlen ? c->l.Tk : s->Lk > s->Lq ? s->Lk : s->Lq;
    c->sigmoid = s->p.score == LA_SCORE_SIGMOID;
    return &c->base;
}
