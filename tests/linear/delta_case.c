/* The delta rule as a harness case: la_delta_rule_forward (either form, or
 * two calls carrying the state), the decode step token by token, or the
 * backward, against the float64 recurrence of tests/ref/delta_ref. */
#include "delta_cases.h"
#include "delta_ref.h"
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    harness_case base; /* first: the harness sees this */
    delta_spec s;
    bool varlen;
    int64_t nseq, T;
    int32_t cu[DELTA_MAX_SEQS + 1];
    la_delta_params p;
    tu_buf q, k, v, beta, g, s0, out, sT, mid, dout, dsT, dq, dk, dv, dbeta, dg, ds0;
    /* reference, [seq][head][t][...] per output; states [seq][head][Dk][Dv] */
    double *want_out, *want_state, *want_dq, *want_dk, *want_dv, *want_dbeta, *want_dg;
} delta_case_t;

/* Tolerances: |got - want| <= ATOL * max|want| + RTOL |want| per element,
 * the max over the whole output. Inputs are exact in both computations;
 * the error is the kernels' f32 arithmetic in another order (the chunked
 * form's triangular solve and products vs token by token). With |k| <= 1
 * and beta in [0, 1] each step is a contraction, so errors do not compound
 * over the sequence; the chunked solve's entries stay O(1). Seen up to
 * ~3e-7 of the largest element (L up to 1000, every ISA): 3e-5 keeps a
 * 100x margin, as the linear mixers' tolerance does. An
 * output in bf16 / f16 adds one rounding (2^-9 / 2^-11). */
static void tolerance(la_dtype out_dt, double *atol, double *rtol) {
    *atol = 3e-5;
    *rtol = 1e-4;
    if (out_dt == LA_BF16) *atol = 1e-3, *rtol = 4e-3;
    if (out_dt == LA_F16) *atol = 2e-4, *rtol = 1e-3;
}

static int64_t seq_len(const delta_case_t *c, int64_t b) { return c->varlen ? c->cu[b + 1] - c->cu[b] : c->s.L; }

/* idx of (sequence b, token t, head h, d) of a [B, L, H(, D)] / [T, H(, D)] tensor */
static int index_of(const delta_case_t *c, int64_t b, int64_t t, int64_t h, int64_t d, int64_t *idx) {
    int n = 0;
    if (c->varlen) idx[n++] = c->cu[b] + t;
    else idx[n++] = b, idx[n++] = t;
    idx[n++] = h;
    idx[n++] = d;
    return n;
}

static bool tok_buf(delta_case_t *c, tu_buf *b, la_dtype dt, int64_t heads, int64_t D, bool has_d) {
    int64_t shape[4];
    int n = 0;
    if (!c->varlen) shape[n++] = c->s.B;
    shape[n++] = c->T;
    shape[n++] = heads;
    if (has_d) shape[n++] = D;
    return tu_buf_init(b, dt, n, shape, c->s.strided && has_d, false);
}

static bool state_buf(delta_case_t *c, tu_buf *b) {
    return tu_buf_init(b, LA_F32, 4, (int64_t[]){c->nseq, c->s.H, c->s.Dk, c->s.Dv}, false, false);
}

static void describe(const harness_case *hc, harness_fields *f) {
    const delta_case_t *c = (const delta_case_t *)hc;
    harness_field_str(f, "dtype", la_dtype_name(c->s.dt));
    if (c->varlen) harness_field_int(f, "seqs", c->nseq);
    else harness_field_int(f, "B", c->s.B);
    harness_field_int(f, "H", c->s.H);
    harness_field_int(f, "L", c->T);
    harness_field_int(f, "Dk", c->s.Dk);
    harness_field_int(f, "Dv", c->s.Dv);
    harness_field_str(f, "mixer", c->s.p.gated ? "gated_delta" : "delta");
    harness_field_str(f, "form", c->s.run == DELTA_RUN_DECODE ? "decode"
                                 : c->s.p.form == LA_LINEAR_CHUNKED ? "chunked"
                                                                    : "recurrent");
    harness_field_int(f, "chunk", c->s.p.chunk_size);
    harness_field_str(f, "pass", c->s.run == DELTA_RUN_BACKWARD ? "bwd" : "fwd");
}

/* The algorithm's own work per (sequence, head). Chunked, per token of a
 * chunk of C: K K^T and Q K^T over full C x C blocks (4 C Dk), T [beta V |
 * beta K] (2 C (Dk + Dv)), A Vn (2 C Dv), and the three state products
 * W S, Q S, K^T Vn (6 Dk Dv); the C^3 / 6 of T itself is left out. Recurrent and decode: 7 Dk Dv
 * per token (two passes over S). Recurrent backward: two recomputing
 * sweeps (14) and two backward passes (12): 26 Dk Dv per token. Chunked
 * backward: the chunk's forward part twice (sweep and recomputation:
 * 2 (2 C Dk + 2 C (Dk + Dv) + 2 Dk Dv)) plus the sweep's state update
 * (2 Dk Dv), then P, dQ, dK^T Q, Ab K, Ab^T K (10 C Dk), dVn's and dP's
 * products with V (4 C Dv), dT and dB (4 C (Dk + Dv)), T^T dT T^T (4 C^2)
 * and seven state-sized products (14 Dk Dv). */
static double flops(const harness_case *hc) {
    const delta_case_t *c = (const delta_case_t *)hc;
    const double Dk = (double)c->s.Dk, Dv = (double)c->s.Dv, C = (double)c->s.p.chunk_size;
    double per_token;
    if (c->s.run == DELTA_RUN_BACKWARD && c->s.p.form == LA_LINEAR_CHUNKED)
        per_token = 2 * (2 * C * Dk + 2 * C * (Dk + Dv) + 2 * Dk * Dv) + 2 * Dk * Dv + 10 * C * Dk + 4 * C * Dv +
                    4 * C * (Dk + Dv) + 4 * C * C + 14 * Dk * Dv;
    else if (c->s.run == DELTA_RUN_BACKWARD) per_token = 26 * Dk * Dv;
    else if (c->s.run == DELTA_RUN_DECODE || c->s.p.form == LA_LINEAR_RECURRENT) per_token = 7 * Dk * Dv;
    else per_token = 4 * C * Dk + 2 * C * (Dk + Dv) + 2 * C * Dv + 6 * Dk * Dv;
    const double tokens = (double)(c->varlen ? c->T : c->T * c->s.B);
    return tokens * per_token * (double)c->s.H;
}

/* Inputs read and outputs written; the decode step also reads and writes
 * every head's f32 state once per token (the least it must move). */
static double bytes(const harness_case *hc) {
    const delta_case_t *c = (const delta_case_t *)hc;
    const double es = (double)la_dtype_size(c->s.dt), tok = (double)(c->varlen ? c->T : c->T * c->s.B);
    double b = tok * es * (double)(c->s.H * c->s.Dk + c->s.Hkv * (c->s.Dk + c->s.Dv)) +
               tok * (double)la_dtype_size(c->s.out_dt) * (double)(c->s.H * c->s.Dv);
    if (c->s.run == DELTA_RUN_DECODE) b += tok * 2 * 4 * (double)(c->s.H * c->s.Dk * c->s.Dv);
    return b;
}

static void poison(harness_case *hc) {
    delta_case_t *c = (delta_case_t *)hc;
    tu_buf *outs[] = {&c->out, &c->sT, &c->mid, &c->dq, &c->dk, &c->dv, &c->dbeta, &c->dg, &c->ds0};
    for (int i = 0; i < 9; i++)
        if (outs[i]->t.data) tu_buf_poison(outs[i]);
}

static double draw_gate(delta_gate mode, uint64_t *rng) {
    switch (mode) {
    case DELTA_GATE_NEAR_ONE: return -tu_uniform(rng, 0, 1e-3);
    case DELTA_GATE_NEAR_ZERO: return -tu_uniform(rng, 5, 40);
    case DELTA_GATE_SATURATED: {
        double u = tu_uniform(rng, 0, 1);
        return u < 0.1 ? -INFINITY : u < 0.2 ? -1e30 : -tu_uniform(rng, 0, 0.3);
    }
    default: return -tu_uniform(rng, 0, 0.3);
    }
}

static double draw_beta(delta_beta_mode mode, uint64_t *rng) {
    switch (mode) {
    case DELTA_BETA_NEAR_ZERO: return tu_uniform(rng, 0, 1e-3);
    case DELTA_BETA_NEAR_ONE: return 1 - tu_uniform(rng, 0, 1e-3);
    default: return tu_uniform(rng, 0, 1);
    }
}

static bool setup(harness_case *hc, uint64_t seed) {
    delta_case_t *c = (delta_case_t *)hc;
    uint64_t rng = seed;
    const delta_spec *s = &c->s;
    const bool bwd = s->run == DELTA_RUN_BACKWARD;
    const la_dtype bdt = s->beta_in_dt ? s->dt : LA_F32;
    bool ok = tok_buf(c, &c->q, s->dt, s->H, s->Dk, true) && tok_buf(c, &c->k, s->dt, s->Hkv, s->Dk, true) &&
              tok_buf(c, &c->v, s->dt, s->Hkv, s->Dv, true) && tok_buf(c, &c->beta, bdt, s->H, 0, false);
    if (!ok) return false;
    /* without normalisation the keys stay in |k| <= 1, where the delta rule is a contraction */
    const double kr = s->p.qk_l2norm ? 1 : 1 / sqrt((double)s->Dk);
    tu_fill(&rng, c->q.t.data, s->dt, (int64_t)c->q.elems, -1, 1);
    tu_fill(&rng, c->k.t.data, s->dt, (int64_t)c->k.elems, -kr, kr);
    tu_fill(&rng, c->v.t.data, s->dt, (int64_t)c->v.elems, -1, 1);
    for (size_t i = 0; i < c->beta.elems; i++) {
        double b = draw_beta(s->beta, &rng);
        if (bdt == LA_F32) ((float *)c->beta.t.data)[i] = (float)b;
        else tu_fill(&rng, (char *)c->beta.t.data + i * la_dtype_size(bdt), bdt, 1, b, b);
    }
    if (s->p.gated) {
        if (!tok_buf(c, &c->g, LA_F32, s->H, 0, false)) return false;
        float *g = c->g.t.data;
        for (size_t i = 0; i < c->g.elems; i++) g[i] = (float)draw_gate(s->gate, &rng);
    }
    if (s->init_state) {
        if (!state_buf(c, &c->s0)) return false;
        tu_fill(&rng, c->s0.t.data, LA_F32, (int64_t)c->s0.elems, -1, 1);
    }
    if (bwd) {
        const la_dtype gdt = s->out_dt;
        ok = tok_buf(c, &c->dout, s->out_dt, s->H, s->Dv, true) && tok_buf(c, &c->dq, gdt, s->H, s->Dk, true) &&
             tok_buf(c, &c->dk, gdt, s->Hkv, s->Dk, true) && tok_buf(c, &c->dv, gdt, s->Hkv, s->Dv, true) &&
             tok_buf(c, &c->dbeta, LA_F32, s->H, 0, false);
        if (ok && s->p.gated) ok = tok_buf(c, &c->dg, LA_F32, s->H, 0, false);
        if (ok && s->want_state) ok = state_buf(c, &c->ds0);
        if (ok && s->dfinal) ok = state_buf(c, &c->dsT);
        if (!ok) return false;
        tu_fill(&rng, c->dout.t.data, s->out_dt, (int64_t)c->dout.elems, -1, 1);
        if (s->dfinal) tu_fill(&rng, c->dsT.t.data, LA_F32, (int64_t)c->dsT.elems, -1, 1);
    } else {
        if (!tok_buf(c, &c->out, s->out_dt, s->H, s->Dv, true)) return false;
        if ((s->want_state || s->run == DELTA_RUN_DECODE) && !state_buf(c, &c->sT)) return false;
        if (s->run == DELTA_RUN_SPLIT && !state_buf(c, &c->mid)) return false;
    }
    c->p = s->p;
    if (c->varlen) c->p.cu_seqlens = c->cu, c->p.num_seqs = c->nseq;
    poison(hc);
    return true;
}

/* Tokens [from, from + n) of a dense [B, L, ...] tensor. */
static la_tensor token_range(const la_tensor *t, int64_t from, int64_t n) {
    la_tensor v = *t;
    v.data = (char *)t->data + from * t->stride[1] * (int64_t)la_dtype_size(t->dtype);
    v.shape[1] = n;
    return v;
}

/* Token t of a dense [B, L, H(, D)] tensor as [B, H(, D)]. */
static la_tensor token_at(const la_tensor *t, int64_t i) {
    la_tensor v = token_range(t, i, 1);
    for (int d = 1; d < t->ndim - 1; d++) v.shape[d] = t->shape[d + 1], v.stride[d] = t->stride[d + 1];
    v.ndim = t->ndim - 1;
    return v;
}

static la_status run(harness_case *hc, la_context *ctx) {
    delta_case_t *c = (delta_case_t *)hc;
    const la_tensor *g = c->s.p.gated ? &c->g.t : NULL, *s0 = c->s.init_state ? &c->s0.t : NULL;
    la_status st;
    switch (c->s.run) {
    case DELTA_RUN_FORWARD:
        return la_delta_rule_forward(ctx, &c->p, &c->q.t, &c->k.t, &c->v.t, &c->beta.t, g, s0, &c->out.t,
                                     c->s.want_state ? &c->sT.t : NULL);
    case DELTA_RUN_SPLIT: {
        const int64_t a = c->s.split_at, b = c->T - a;
        const la_tensor *in[] = {&c->q.t, &c->k.t, &c->v.t, &c->beta.t, g, &c->out.t};
        la_tensor x1[6], x2[6];
        for (int i = 0; i < 6; i++)
            if (in[i]) x1[i] = token_range(in[i], 0, a), x2[i] = token_range(in[i], a, b);
        if ((st = la_delta_rule_forward(ctx, &c->p, &x1[0], &x1[1], &x1[2], &x1[3], g ? &x1[4] : NULL, s0, &x1[5],
                                        &c->mid.t)))
            return st;
        return la_delta_rule_forward(ctx, &c->p, &x2[0], &x2[1], &x2[2], &x2[3], g ? &x2[4] : NULL, &c->mid.t,
                                     &x2[5], c->s.want_state ? &c->sT.t : NULL);
    }
    case DELTA_RUN_DECODE: {
        float *S = c->sT.t.data;
        if (s0) memcpy(S, c->s0.t.data, c->s0.elems * sizeof(float));
        else memset(S, 0, c->sT.elems * sizeof(float));
        for (int64_t t = 0; t < c->T; t++) {
            la_tensor qt = token_at(&c->q.t, t), kt = token_at(&c->k.t, t), vt = token_at(&c->v.t, t),
                      bt = token_at(&c->beta.t, t), ot = token_at(&c->out.t, t), gt;
            if (g) gt = token_at(g, t);
            if ((st = la_delta_rule_decode(ctx, &c->p, &qt, &kt, &vt, &bt, g ? &gt : NULL, &c->sT.t, &ot)))
                return st;
        }
        return LA_OK;
    }
    case DELTA_RUN_BACKWARD:
        return la_delta_rule_backward(ctx, &c->p, &c->q.t, &c->k.t, &c->v.t, &c->beta.t, g, s0, &c->dout.t,
                                      c->s.dfinal ? &c->dsT.t : NULL, &c->dq.t, &c->dk.t, &c->dv.t, &c->dbeta.t,
                                      g ? &c->dg.t : NULL, c->s.want_state ? &c->ds0.t : NULL);
    }
    return LA_ERR_ARGUMENT;
}

static double *ref_alloc(size_t n) { return tu_alloc(sizeof(double) * (n + 1)); }

static bool reference(harness_case *hc, bool sampled) {
    delta_case_t *c = (delta_case_t *)hc;
    (void)sampled; /* the recurrence is linear in L: the whole problem, always */
    const delta_spec *s = &c->s;
    const int64_t H = s->H, Hkv = s->Hkv, Dk = s->Dk, Dv = s->Dv, G = H / Hkv, NS = Dk * Dv;
    const size_t nsh = (size_t)(c->nseq * H), Lm = (size_t)c->T;
    const bool bwd = s->run == DELTA_RUN_BACKWARD;
    double *q = ref_alloc(Lm * Dk), *k = ref_alloc(Lm * Dk), *v = ref_alloc(Lm * Dv), *beta = ref_alloc(Lm),
           *g = ref_alloc(Lm);
    double *st = ref_alloc((size_t)NS), *dsT = ref_alloc((size_t)NS), *dout = ref_alloc(Lm * Dv);
    double *dq = ref_alloc(Lm * Dk), *dk = ref_alloc(Lm * Dk), *dv = ref_alloc(Lm * Dv), *db = ref_alloc(Lm),
           *dg = ref_alloc(Lm);
    c->want_state = ref_alloc(nsh * (size_t)NS);
    if (bwd) {
        c->want_dq = ref_alloc(nsh * Lm * Dk), c->want_dbeta = ref_alloc(nsh * Lm), c->want_dg = ref_alloc(nsh * Lm);
        c->want_dk = calloc((size_t)(c->nseq * Hkv) * Lm * Dk + 1, sizeof(double));
        c->want_dv = calloc((size_t)(c->nseq * Hkv) * Lm * Dv + 1, sizeof(double));
    } else {
        c->want_out = ref_alloc(nsh * Lm * Dv);
    }
    int64_t idx[4];
    for (int64_t b = 0; b < c->nseq; b++) {
        const int64_t L = seq_len(c, b);
        for (int64_t h = 0; h < H; h++) {
            const int64_t hk = h / G, sh = b * H + h;
            for (int64_t t = 0; t < L; t++) {
                for (int64_t d = 0; d < Dk; d++) {
                    index_of(c, b, t, h, d, idx);
                    q[t * Dk + d] = tu_get(&c->q.t, idx);
                    index_of(c, b, t, hk, d, idx);
                    k[t * Dk + d] = tu_get(&c->k.t, idx);
                }
                for (int64_t e = 0; e < Dv; e++) {
                    index_of(c, b, t, hk, e, idx);
                    v[t * Dv + e] = tu_get(&c->v.t, idx);
                    if (bwd) index_of(c, b, t, h, e, idx), dout[t * Dv + e] = tu_get(&c->dout.t, idx);
                }
                index_of(c, b, t, h, 0, idx);
                beta[t] = tu_get(&c->beta.t, idx);
                g[t] = s->p.gated ? tu_get(&c->g.t, idx) : 0;
            }
            for (int64_t i = 0; i < NS; i++) {
                st[i] = s->init_state ? ((const float *)c->s0.t.data)[sh * NS + i] : 0;
                dsT[i] = s->dfinal ? ((const float *)c->dsT.t.data)[sh * NS + i] : 0;
            }
            delta_ref_head x = {.L = L, .Dk = Dk, .Dv = Dv, .q = q, .k = k, .v = v, .beta = beta,
                                .g = s->p.gated ? g : NULL, .l2norm = s->p.qk_l2norm != 0,
                                .scale = s->p.scale > 0 ? s->p.scale : 1 / sqrt((double)Dk)};
            if (!bwd) {
                delta_ref_forward(&x, c->want_out + (size_t)sh * Lm * Dv, st);
                memcpy(c->want_state + sh * NS, st, sizeof(double) * (size_t)NS);
                continue;
            }
            delta_ref_backward(&x, st, dout, s->dfinal ? dsT : NULL, dq, dk, dv, db, dg, c->want_state + sh * NS);
            memcpy(c->want_dq + (size_t)sh * Lm * Dk, dq, sizeof(double) * (size_t)(L * Dk));
            memcpy(c->want_dbeta + (size_t)sh * Lm, db, sizeof(double) * (size_t)L);
            memcpy(c->want_dg + (size_t)sh * Lm, dg, sizeof(double) * (size_t)L);
            double *wk = c->want_dk + (size_t)(b * Hkv + hk) * Lm * Dk, *wv = c->want_dv + (size_t)(b * Hkv + hk) * Lm * Dv;
            for (int64_t i = 0; i < L * Dk; i++) wk[i] += dk[i];
            for (int64_t i = 0; i < L * Dv; i++) wv[i] += dv[i];
        }
    }
    free(q), free(k), free(v), free(beta), free(g), free(st), free(dsT), free(dout);
    free(dq), free(dk), free(dv), free(db), free(dg);
    return true;
}

typedef struct {
    int64_t bad, n;
    double worst, scale; /* worst |err| / max |want| */
} tally_t;

/* Compare a token tensor ([seq][head][t][D] reference; D 0: per head, no d dim). */
static tally_t compare_tokens(const delta_case_t *c, const tu_buf *got, const double *want, int64_t heads, int64_t D,
                              double atol, double rtol) {
    tally_t r = {0};
    const size_t Lm = (size_t)c->T, Dw = (size_t)(D ? D : 1);
    int64_t idx[4];
    for (int pass = 0; pass < 2; pass++)
        for (int64_t b = 0; b < c->nseq; b++)
            for (int64_t h = 0; h < heads; h++)
                for (int64_t t = 0; t < seq_len(c, b); t++)
                    for (int64_t d = 0; d < (int64_t)Dw; d++) {
                        const double w = want[((size_t)(b * heads + h) * Lm + (size_t)t) * Dw + (size_t)d];
                        if (pass == 0) {
                            if (fabs(w) > r.scale) r.scale = fabs(w);
                            continue;
                        }
                        if (r.scale == 0) r.scale = 1;
                        index_of(c, b, t, h, d, idx);
                        double x = tu_get(&got->t, idx), e = isnan(x) ? INFINITY : fabs(x - w);
                        r.n++;
                        if (!(e <= atol * r.scale + rtol * fabs(w))) r.bad++;
                        if (e / r.scale > r.worst) r.worst = e / r.scale;
                    }
    return r;
}

static tally_t compare_state(const tu_buf *got, const double *want, double atol, double rtol) {
    tally_t r = {0};
    const float *x = got->t.data;
    for (size_t i = 0; i < got->elems; i++)
        if (fabs(want[i]) > r.scale) r.scale = fabs(want[i]);
    if (r.scale == 0) r.scale = 1;
    for (size_t i = 0; i < got->elems; i++) {
        double e = isnan(x[i]) ? INFINITY : fabs(x[i] - want[i]);
        r.n++;
        if (!(e <= atol * r.scale + rtol * fabs(want[i]))) r.bad++;
        if (e / r.scale > r.worst) r.worst = e / r.scale;
    }
    return r;
}

static double note(const delta_case_t *c, const char *label, bool tally, const char *what, tally_t r, double worst) {
    if (tally)
        tu_check(r.bad == 0, "%s [%s]: %s: %lld of %lld elements off, worst |err| %.3g of max |want| %.3g",
                 c->base.name, label, what, (long long)r.bad, (long long)r.n, r.worst, r.scale);
    return r.worst > worst ? r.worst : worst;
}

static double check(harness_case *hc, const char *label, bool tally) {
    delta_case_t *c = (delta_case_t *)hc;
    const delta_spec *s = &c->s;
    double atol, rtol, worst = 0;
    tolerance(s->out_dt, &atol, &rtol);
    if (s->run == DELTA_RUN_BACKWARD) {
        worst = note(c, label, tally, "dq", compare_tokens(c, &c->dq, c->want_dq, s->H, s->Dk, atol, rtol), worst);
        worst = note(c, label, tally, "dk", compare_tokens(c, &c->dk, c->want_dk, s->Hkv, s->Dk, atol, rtol), worst);
        worst = note(c, label, tally, "dv", compare_tokens(c, &c->dv, c->want_dv, s->Hkv, s->Dv, atol, rtol), worst);
        /* dbeta and dg are f32 sums over Dk Dv products: the f32 output's tolerance */
        worst = note(c, label, tally, "dbeta", compare_tokens(c, &c->dbeta, c->want_dbeta, s->H, 0, 3e-5, 1e-4), worst);
        if (s->p.gated)
            worst = note(c, label, tally, "dg", compare_tokens(c, &c->dg, c->want_dg, s->H, 0, 3e-5, 1e-4), worst);
        if (s->want_state)
            worst = note(c, label, tally, "dinitial_state", compare_state(&c->ds0, c->want_state, 3e-5, 1e-4), worst);
        if (tally && s->strided)
            tu_check(tu_buf_outside_poisoned(&c->dq) && tu_buf_outside_poisoned(&c->dk) &&
                         tu_buf_outside_poisoned(&c->dv),
                     "%s [%s]: a gradient written outside its view", c->base.name, label);
        return worst;
    }
    worst = note(c, label, tally, "out", compare_tokens(c, &c->out, c->want_out, s->H, s->Dv, atol, rtol), worst);
    if (s->want_state || s->run == DELTA_RUN_DECODE)
        worst = note(c, label, tally, "final state", compare_state(&c->sT, c->want_state, 3e-5, 1e-4), worst);
    if (tally && s->strided)
        tu_check(tu_buf_outside_poisoned(&c->out), "%s [%s]: out written outside its view", c->base.name, label);
    return worst;
}

static void teardown(harness_case *hc) {
    delta_case_t *c = (delta_case_t *)hc;
    tu_buf *all[] = {&c->q, &c->k, &c->v, &c->beta, &c->g, &c->s0, &c->out, &c->sT, &c->mid,
                     &c->dout, &c->dsT, &c->dq, &c->dk, &c->dv, &c->dbeta, &c->dg, &c->ds0};
    for (int i = 0; i < 17; i++) tu_buf_free(all[i]);
    double **w[] = {&c->want_out, &c->want_state, &c->want_dq, &c->want_dk, &c->want_dv, &c->want_dbeta, &c->want_dg};
    for (int i = 0; i < 7; i++) free(*w[i]), *w[i] = NULL;
}

static const harness_ops delta_ops = {.op = "delta", HARNESS_CASE_CALLBACKS};

harness_case *delta_case(const delta_spec *s) {
    delta_case_t *c = harness_case_new(sizeof *c, &delta_ops, s->name, s->threads, harness_compute_ceiling(s->dt));
    c->s = *s;
    c->s.name = c->base.name;
    c->varlen = s->nseq > 0;
    c->nseq = c->varlen ? s->nseq : s->B;
    c->T = s->L;
    if (c->varlen) {
        c->cu[0] = 0;
        for (int i = 0; i < s->nseq; i++) c->cu[i + 1] = c->cu[i] + s->lens[i];
        c->T = c->cu[s->nseq];
    }
    c->base.tokens = c->T;
    return &c->base;
}

void delta_sweep_cases(harness_list *list, const delta_sweep *s) {
    char name[96];
    /* the decode step, token by token over a short prompt: bandwidth-bound */
    if (!s->no_decode) {
        delta_spec d = {.name = name, .B = s->B, .L = 256, .H = s->H, .Hkv = s->H, .Dk = s->D, .Dv = s->D,
                        .dt = LA_F32, .out_dt = LA_F32, .run = DELTA_RUN_DECODE};
        d.p = la_delta_params_default();
        d.p.gated = s->gated;
        d.p.qk_l2norm = 1;
        snprintf(name, sizeof name, "%s decode x256", s->gated ? "gated_delta" : "delta");
        harness_case *c = delta_case(&d);
        c->ceiling = HARNESS_CEIL_READ_BW;
        c->series = 3;
        harness_add(list, c);
    }
    for (int pass = 0; pass < (s->bwd ? 2 : 1); pass++)
        for (int li = 0; li < s->nL; li++) {
            delta_spec d = {.name = name, .B = s->B, .L = s->L[li], .H = s->H, .Hkv = s->H, .Dk = s->D, .Dv = s->D,
                            .dt = LA_F32, .out_dt = LA_F32, .run = pass ? DELTA_RUN_BACKWARD : DELTA_RUN_FORWARD};
            d.p = la_delta_params_default();
            d.p.gated = s->gated;
            d.p.qk_l2norm = 1;
            d.p.chunk_size = s->chunk;
            snprintf(name, sizeof name, "%s %s L=%lld", s->gated ? "gated_delta" : "delta", pass ? "bwd" : "fwd",
                     (long long)s->L[li]);
            harness_case *c = delta_case(&d);
            c->series = pass + 1;
            harness_add(list, c);
        }
}
