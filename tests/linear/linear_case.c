/* The linear mixers as a harness case: la_linear_attention_forward (either
 * form, or two calls carrying the state), the decode step token by token,
 * or the backward, against the float64 recurrence of tests/ref/linear_ref. */
#include "linear_cases.h"
#include "linear_ref.h"
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    harness_case base; /* first: the harness sees this */
    linear_spec s;
    bool varlen;
    int64_t nseq, T, Dvs; /* sequences; tokens per sequence (dense) or packed */
    int64_t Df;           /* the feature dim: the state's rows */
    float *proj, *dproj;  /* Hedgehog: W and dL/dW [H][Dk][Dm] */
    double *want_dproj;
    int32_t cu[LIN_MAX_SEQS + 1];
    float head_decay[LIN_MAX_HEADS];
    la_linear_params p;
    tu_buf q, k, v, g, s0, out, sT, mid, dout, dsT, dq, dk, dv, dg, ds0;
    bool has_g;
    /* reference, [seq][head][t][...] per output; states [seq][head][Dk][Dvs] */
    double *want_out, *want_state, *want_dq, *want_dk, *want_dv, *want_dg, *want_ds0;
    double dg_terms; /* the largest term of dg's sums (linear_ref_backward) */
} lin_case;

/* Tolerances: |got - want| <= ATOL * max|want| + RTOL |want| per element,
 * the max taken over the whole output (states and outputs grow with L
 * without decay). Inputs are exact in both computations; the error is the
 * kernels' f32 sums over up to ~4k tokens in a different order (chunked vs
 * token by token), seen up to ~3e-6 of the largest element: 3e-5 is a 10x
 * margin. An output in bf16 / f16 adds one rounding (2^-9 / 2^-11). The
 * backward sums over twice the terms (two sweeps): the same margin holds. */
static void tolerance(la_dtype out_dt, double *atol, double *rtol) {
    *atol = 3e-5;
    *rtol = 1e-4;
    if (out_dt == LA_BF16) *atol = 1e-3, *rtol = 4e-3;
    if (out_dt == LA_F16) *atol = 2e-4, *rtol = 1e-3;
}

static int64_t seq_len(const lin_case *c, int64_t b) { return c->varlen ? c->cu[b + 1] - c->cu[b] : c->s.L; }
static int64_t seq_t0(const lin_case *c, int64_t b) { return c->varlen ? c->cu[b] : 0; }

/* idx of element (sequence b, token t of it, head h, d) of a [B, L, H, D] / [T, H, D] tensor */
static void index_of(const lin_case *c, int64_t b, int64_t t, int64_t h, int64_t d, int64_t *idx) {
    if (c->varlen) idx[0] = seq_t0(c, b) + t, idx[1] = h, idx[2] = d;
    else idx[0] = b, idx[1] = t, idx[2] = h, idx[3] = d;
}

static bool tok_buf(lin_case *c, tu_buf *b, la_dtype dt, int64_t heads, int64_t D, bool has_d) {
    int64_t shape[4];
    int n = 0;
    if (!c->varlen) shape[n++] = c->s.B;
    shape[n++] = c->T;
    shape[n++] = heads;
    if (has_d) shape[n++] = D;
    return tu_buf_init(b, dt, n, shape, c->s.strided && has_d, false);
}

static bool state_buf(lin_case *c, tu_buf *b) {
    return tu_buf_init(b, LA_F32, 4, (int64_t[]){c->nseq, c->s.H, c->Df, c->Dvs}, false, false);
}

static void describe(const harness_case *hc, harness_fields *f) {
    const lin_case *c = (const lin_case *)hc;
    static const char *const decay[] = {"none", "head", "token", "channel"};
    harness_field_str(f, "dtype", la_dtype_name(c->s.dt));
    if (c->varlen) harness_field_int(f, "seqs", c->nseq);
    else harness_field_int(f, "B", c->s.B);
    harness_field_int(f, "H", c->s.H);
    harness_field_int(f, "L", c->T);
    harness_field_int(f, "Dk", c->s.Dk);
    harness_field_int(f, "Dv", c->s.Dv);
    harness_field_str(f, "decay", decay[c->s.p.decay]);
    static const char *const feature[] = {"identity", "elu1", "relu", "taylor", "hedgehog"};
    harness_field_str(f, "feature", feature[c->s.p.feature]);
    if (c->s.p.non_causal) harness_field_str(f, "mask", "non-causal");
    harness_field_str(f, "form", c->s.run == LIN_RUN_DECODE ? "decode"
                                 : c->s.p.form == LA_LINEAR_CHUNKED || c->s.run == LIN_RUN_BACKWARD ? "chunked"
                                                                                                     : "recurrent");
    harness_field_int(f, "chunk", c->s.p.chunk_size);
    harness_field_str(f, "pass", c->s.run == LIN_RUN_BACKWARD ? "bwd" : "fwd");
}

/* The chunked algorithm's own work per (sequence, head) and chunk of n
 * tokens: Q K^T and A V over the n x n block (2 n^2 (Dk + Dv)), the state's
 * two products (4 n Dk Dv). The backward recomputes these and does about
 * twice as many again: counted as 3x. Recurrent and decode: 4 Dk Dv per token. */
static double flops(const harness_case *hc) {
    const lin_case *c = (const lin_case *)hc;
    const double Dk = (double)c->Df, Dv = (double)c->Dvs, C = (double)c->s.p.chunk_size;
    double total = 0;
    for (int64_t b = 0; b < c->nseq; b++) {
        const double L = (double)seq_len(c, b);
        if (c->s.run == LIN_RUN_DECODE || (c->s.run != LIN_RUN_BACKWARD && c->s.p.form == LA_LINEAR_RECURRENT))
            total += L * 4 * Dk * Dv;
        else
            total += (L * 2 * C * (Dk + Dv) + L * 4 * Dk * Dv) * (c->s.run == LIN_RUN_BACKWARD ? 3 : 1);
    }
    return total * (double)c->s.H;
}

static double bytes(const harness_case *hc) {
    const lin_case *c = (const lin_case *)hc;
    const double es = (double)la_dtype_size(c->s.dt), tok = (double)(c->nseq > 0 ? c->T * (c->varlen ? 1 : c->s.B) : 0);
    return tok * es * (double)(c->s.H * c->s.Dk + c->s.Hkv * (c->s.Dk + c->s.Dv)) +
           tok * (double)la_dtype_size(c->s.out_dt) * (double)(c->s.H * c->s.Dv);
}

static void poison(harness_case *hc) {
    lin_case *c = (lin_case *)hc;
    tu_buf *outs[] = {&c->out, &c->sT, &c->mid, &c->dq, &c->dk, &c->dv, &c->dg, &c->ds0};
    for (int i = 0; i < 8; i++)
        if (outs[i]->t.data) tu_buf_poison(outs[i]);
    if (c->dproj)
        for (int64_t i = 0; i < c->s.H * c->s.Dk * c->s.Dm; i++) c->dproj[i] = NAN;
}

static double draw_gate(lin_gate mode, uint64_t *rng) {
    switch (mode) {
    case LIN_GATE_NEAR_ONE: return -tu_uniform(rng, 0, 1e-3);
    case LIN_GATE_NEAR_ZERO: return -tu_uniform(rng, 5, 40);
    case LIN_GATE_TINY: return tu_uniform(rng, 0, 1) < 0.5 ? -1e-6 : -2e-6;
    case LIN_GATE_SATURATED: {
        double u = tu_uniform(rng, 0, 1);
        return u < 0.1 ? -INFINITY : u < 0.2 ? -1e30 : -tu_uniform(rng, 0, 0.3);
    }
    default: return -tu_uniform(rng, 0, 0.3);
    }
}

static bool setup(harness_case *hc, uint64_t seed) {
    lin_case *c = (lin_case *)hc;
    uint64_t rng = seed;
    const linear_spec *s = &c->s;
    const bool bwd = s->run == LIN_RUN_BACKWARD;
    const la_dtype gdt = bwd ? s->out_dt : LA_F32;
    bool ok = tok_buf(c, &c->q, s->dt, s->H, s->Dk, true) && tok_buf(c, &c->k, s->dt, s->Hkv, s->Dk, true) &&
              tok_buf(c, &c->v, s->dt, s->Hkv, s->Dv, true);
    if (!ok) return false;
    tu_fill(&rng, c->q.t.data, s->dt, (int64_t)c->q.elems, -1, 1);
    tu_fill(&rng, c->k.t.data, s->dt, (int64_t)c->k.elems, -1, 1);
    tu_fill(&rng, c->v.t.data, s->dt, (int64_t)c->v.elems, -1, 1);
    if (c->has_g) {
        if (!tok_buf(c, &c->g, LA_F32, s->H, s->Dk, s->p.decay == LA_DECAY_CHANNEL)) return false;
        float *g = c->g.t.data;
        for (size_t i = 0; i < c->g.elems; i++) g[i] = (float)draw_gate(s->gate, &rng);
    }
    for (int64_t h = 0; h < s->H && h < LIN_MAX_HEADS; h++)
        c->head_decay[h] = s->gate == LIN_GATE_NEAR_ONE    ? -1e-4f * (float)(h + 1)
                           : s->gate == LIN_GATE_TINY      ? -1e-6f * (float)(h + 1)
                           : s->gate == LIN_GATE_NEAR_ZERO ? -30.0f
                                                           : (float)log(1 - pow(2, -5.0 - (double)h));
    if (s->init_state) {
        if (!state_buf(c, &c->s0)) return false;
        tu_fill(&rng, c->s0.t.data, LA_F32, (int64_t)c->s0.elems, -1, 1);
        if (s->p.normalize) {
            /* the running denominator z (the state's last column) starts
             * positive, as a real one is for non-negative feature maps: a
             * uniform(-1, 1) z put denominators near 0 and made out = num / den
             * ill-conditioned (seed 4644655803827) */
            float *z = c->s0.t.data;
            for (size_t i = (size_t)c->Dvs - 1; i < c->s0.elems; i += (size_t)c->Dvs)
                z[i] = (float)tu_uniform(&rng, 0.2, 1);
        }
    }
    if (bwd) {
        ok = tok_buf(c, &c->dout, s->out_dt, s->H, s->Dv, true) && tok_buf(c, &c->dq, gdt, s->H, s->Dk, true) &&
             tok_buf(c, &c->dk, gdt, s->Hkv, s->Dk, true) && tok_buf(c, &c->dv, gdt, s->Hkv, s->Dv, true);
        if (ok && c->has_g) ok = tok_buf(c, &c->dg, LA_F32, s->H, s->Dk, s->p.decay == LA_DECAY_CHANNEL);
        if (ok && s->want_state) ok = state_buf(c, &c->ds0);
        if (ok && s->dfinal) ok = state_buf(c, &c->dsT);
        if (!ok) return false;
        tu_fill(&rng, c->dout.t.data, s->out_dt, (int64_t)c->dout.elems, -1, 1);
        if (s->dfinal) tu_fill(&rng, c->dsT.t.data, LA_F32, (int64_t)c->dsT.elems, -1, 1);
    } else {
        if (!tok_buf(c, &c->out, s->out_dt, s->H, s->Dv, true)) return false;
        if ((s->want_state || s->run == LIN_RUN_DECODE) && !state_buf(c, &c->sT)) return false;
        if (s->run == LIN_RUN_SPLIT && !state_buf(c, &c->mid)) return false;
    }
    if (s->p.feature == LA_FEATURE_HEDGEHOG) {
        const int64_t n = s->H * s->Dk * s->Dm;
        c->proj = tu_alloc(sizeof(float) * (size_t)n);
        /* a projection of the usual initial size, 1 / sqrt(Dk): with entries of
         * size 1 the feature softmax saturates (near one-hot features) */
        const double w = 1.0 / sqrt((double)s->Dk);
        for (int64_t i = 0; i < n; i++) c->proj[i] = (float)tu_uniform(&rng, -w, w);
        if (bwd) c->dproj = tu_alloc(sizeof(float) * (size_t)n);
    }
    c->p = s->p;
    c->p.feature_proj = c->proj, c->p.feature_proj_dim = c->proj ? s->Dm : 0, c->p.feature_proj_grad = c->dproj;
    c->p.head_log_decay = s->p.decay == LA_DECAY_HEAD ? c->head_decay : NULL;
    if (c->varlen) c->p.cu_seqlens = c->cu, c->p.num_seqs = c->nseq;
    poison(hc);
    return true;
}

/* The first `n` tokens from token `from` of a dense [B, L, ...] tensor. */
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
    lin_case *c = (lin_case *)hc;
    const la_tensor *g = c->has_g ? &c->g.t : NULL, *s0 = c->s.init_state ? &c->s0.t : NULL;
    la_status st;
    switch (c->s.run) {
    case LIN_RUN_FORWARD:
        return la_linear_attention_forward(ctx, &c->p, &c->q.t, &c->k.t, &c->v.t, g, s0, &c->out.t,
                                           c->s.want_state ? &c->sT.t : NULL);
    case LIN_RUN_SPLIT: {
        const int64_t a = c->s.split_at, b = c->T - a;
        la_tensor q1 = token_range(&c->q.t, 0, a), k1 = token_range(&c->k.t, 0, a), v1 = token_range(&c->v.t, 0, a),
                  o1 = token_range(&c->out.t, 0, a), q2 = token_range(&c->q.t, a, b), k2 = token_range(&c->k.t, a, b),
                  v2 = token_range(&c->v.t, a, b), o2 = token_range(&c->out.t, a, b);
        la_tensor g1, g2;
        if (g) g1 = token_range(g, 0, a), g2 = token_range(g, a, b);
        if ((st = la_linear_attention_forward(ctx, &c->p, &q1, &k1, &v1, g ? &g1 : NULL, s0, &o1, &c->mid.t)))
            return st;
        return la_linear_attention_forward(ctx, &c->p, &q2, &k2, &v2, g ? &g2 : NULL, &c->mid.t, &o2,
                                           c->s.want_state ? &c->sT.t : NULL);
    }
    case LIN_RUN_DECODE: {
        float *S = c->sT.t.data;
        if (s0) memcpy(S, c->s0.t.data, c->s0.elems * sizeof(float));
        else memset(S, 0, c->sT.elems * sizeof(float));
        for (int64_t t = 0; t < c->T; t++) {
            la_tensor qt = token_at(&c->q.t, t), kt = token_at(&c->k.t, t), vt = token_at(&c->v.t, t),
                      ot = token_at(&c->out.t, t), gt;
            if (g) gt = token_at(g, t);
            if ((st = la_linear_attention_decode(ctx, &c->p, &qt, &kt, &vt, g ? &gt : NULL, &c->sT.t, &ot))) return st;
        }
        return LA_OK;
    }
    case LIN_RUN_BACKWARD:
        return la_linear_attention_backward(ctx, &c->p, &c->q.t, &c->k.t, &c->v.t, g, s0, &c->dout.t,
                                            c->s.dfinal ? &c->dsT.t : NULL, &c->dq.t, &c->dk.t, &c->dv.t,
                                            g ? &c->dg.t : NULL, c->s.want_state ? &c->ds0.t : NULL);
    }
    return LA_ERR_ARGUMENT;
}

static double *ref_alloc(size_t n) { return tu_alloc(sizeof(double) * (n + 1)); }

/* Float64 outputs, one (sequence, head) at a time on the stored inputs. */
static bool reference(harness_case *hc, bool sampled) {
    lin_case *c = (lin_case *)hc;
    (void)sampled; /* the recurrence is linear in L: the whole problem, always */
    const linear_spec *s = &c->s;
    const int64_t H = s->H, Dk = s->Dk, Dv = s->Dv, Dvs = c->Dvs, Gq = H / s->Hkv, Df = c->Df, NS = Df * Dvs;
    const int64_t Dm = s->Dm;
    const size_t nsh = (size_t)(c->nseq * H), Lm = (size_t)c->T;
    const bool bwd = s->run == LIN_RUN_BACKWARD;
    double *q = ref_alloc(Lm * Dk), *k = ref_alloc(Lm * Dk), *v = ref_alloc(Lm * Dv), *g = ref_alloc(Lm * Df);
    double *W = ref_alloc((size_t)(Dk * Dm));
    double *st = ref_alloc((size_t)NS), *dsT = ref_alloc((size_t)NS), *dout = ref_alloc(Lm * Dv);
    double *dq = ref_alloc(Lm * Dk), *dk = ref_alloc(Lm * Dk), *dv = ref_alloc(Lm * Dv), *dg = ref_alloc(Lm * Df);
    c->want_state = ref_alloc(nsh * (size_t)NS);
    if (bwd) {
        c->want_dq = ref_alloc(nsh * Lm * Dk), c->want_dg = ref_alloc(nsh * Lm * Df);
        c->want_dproj = ref_alloc((size_t)(H * Dk * Dm));
        memset(c->want_dproj, 0, sizeof(double) * (size_t)(H * Dk * Dm));
        c->want_dk = ref_alloc((size_t)(c->nseq * s->Hkv) * Lm * Dk);
        c->want_dv = ref_alloc((size_t)(c->nseq * s->Hkv) * Lm * Dv);
        memset(c->want_dk, 0, sizeof(double) * (size_t)(c->nseq * s->Hkv) * Lm * Dk);
        memset(c->want_dv, 0, sizeof(double) * (size_t)(c->nseq * s->Hkv) * Lm * Dv);
    } else {
        c->want_out = ref_alloc(nsh * Lm * Dv);
    }
    c->dg_terms = 0;
    int64_t idx[4];
    for (int64_t b = 0; b < c->nseq; b++) {
        const int64_t L = seq_len(c, b);
        for (int64_t h = 0; h < H; h++) {
            const int64_t hk = h / Gq, sh = b * H + h;
            for (int64_t t = 0; t < L; t++) {
                for (int64_t d = 0; d < Dk; d++) {
                    index_of(c, b, t, h, d, idx);
                    q[t * Dk + d] = tu_get(&c->q.t, idx);
                    index_of(c, b, t, hk, d, idx);
                    k[t * Dk + d] = tu_get(&c->k.t, idx);
                }
                for (int64_t d = 0; d < Df; d++) { /* per channel only with Df == Dk */
                    g[t * Df + d] = s->p.decay == LA_DECAY_HEAD ? c->head_decay[h] : 0;
                    int64_t gi[4];
                    index_of(c, b, t, h, s->p.decay == LA_DECAY_CHANNEL ? d : 0, gi);
                    if (s->p.decay == LA_DECAY_CHANNEL || s->p.decay == LA_DECAY_TOKEN) g[t * Df + d] = tu_get(&c->g.t, gi);
                }
                for (int64_t e = 0; e < Dv; e++) {
                    index_of(c, b, t, hk, e, idx);
                    v[t * Dv + e] = tu_get(&c->v.t, idx);
                    if (bwd) index_of(c, b, t, h, e, idx), dout[t * Dv + e] = tu_get(&c->dout.t, idx);
                }
            }
            for (int64_t i = 0; i < NS; i++) {
                st[i] = s->init_state ? ((const float *)c->s0.t.data)[sh * NS + i] : 0;
                dsT[i] = s->dfinal ? ((const float *)c->dsT.t.data)[sh * NS + i] : 0;
            }
            for (int64_t i = 0; c->proj && i < Dk * Dm; i++) W[i] = c->proj[h * Dk * Dm + i];
            const bool own_scale = s->p.feature == LA_FEATURE_TAYLOR || s->p.feature == LA_FEATURE_HEDGEHOG;
            linear_ref_head x = {.L = L, .Dk = Dk, .Dv = Dv, .q = q, .k = k, .v = v,
                                 .g = s->p.decay == LA_DECAY_NONE ? NULL : g, .feature = s->p.feature,
                                 .proj = W, .Dm = Dm, .non_causal = s->p.non_causal != 0,
                                 .normalize = s->p.normalize != 0, .eps = s->p.norm_eps,
                                 .scale = s->p.scale > 0 ? s->p.scale : own_scale ? 1 : 1 / sqrt((double)Dk)};
            if (!bwd) {
                linear_ref_forward(&x, c->want_out + (size_t)sh * Lm * Dv, st);
                memcpy(c->want_state + sh * NS, st, sizeof(double) * (size_t)NS);
                continue;
            }
            double terms;
            linear_ref_backward(&x, st, dout, s->dfinal ? dsT : NULL, dq, dk, dv, dg, c->want_state + sh * NS,
                                c->want_dproj + h * Dk * Dm, &terms);
            if (terms > c->dg_terms) c->dg_terms = terms;
            memcpy(c->want_dq + (size_t)sh * Lm * Dk, dq, sizeof(double) * (size_t)(L * Dk));
            double *wg = c->want_dg + (size_t)sh * Lm * Df, *wk = c->want_dk + (size_t)(b * s->Hkv + hk) * Lm * Dk,
                   *wv = c->want_dv + (size_t)(b * s->Hkv + hk) * Lm * Dv;
            for (int64_t t = 0; t < L; t++) {
                double sum = 0;
                for (int64_t d = 0; d < Df; d++) sum += dg[t * Df + d], wg[t * Df + d] = dg[t * Df + d];
                if (s->p.decay == LA_DECAY_TOKEN) wg[t * Df] = sum;
                for (int64_t d = 0; d < Dk; d++) wk[t * Dk + d] += dk[t * Dk + d];
                for (int64_t e = 0; e < Dv; e++) wv[t * Dv + e] += dv[t * Dv + e];
            }
        }
    }
    free(W), free(q), free(k), free(v), free(g), free(st), free(dsT), free(dout), free(dq), free(dk), free(dv), free(dg);
    return true;
}

typedef struct {
    int64_t bad, n;
    double worst, scale; /* worst |err| / max |want| */
} tally_t;

/* Compare a token tensor ([seq][head][t][D] reference) element by element. */
static tally_t compare_tokens(const lin_case *c, const tu_buf *got, const double *want, int64_t heads, int64_t D,
                              bool has_d, double atol, double rtol, double min_scale) {
    tally_t r = {.scale = min_scale};
    const size_t Lm = (size_t)c->T;
    for (int64_t b = 0; b < c->nseq; b++)
        for (int64_t h = 0; h < heads; h++)
            for (int64_t t = 0; t < seq_len(c, b); t++)
                for (int64_t d = 0; d < D; d++) {
                    double w = want[((size_t)(b * heads + h) * Lm + (size_t)t) * (size_t)(has_d ? D : c->Df) + d];
                    if (fabs(w) > r.scale) r.scale = fabs(w);
                }
    if (r.scale == 0) r.scale = 1;
    int64_t idx[4];
    for (int64_t b = 0; b < c->nseq; b++)
        for (int64_t h = 0; h < heads; h++)
            for (int64_t t = 0; t < seq_len(c, b); t++)
                for (int64_t d = 0; d < D; d++) {
                    double w = want[((size_t)(b * heads + h) * Lm + (size_t)t) * (size_t)(has_d ? D : c->Df) + d];
                    index_of(c, b, t, h, d, idx);
                    double x = tu_get(&got->t, idx), e = isnan(x) ? INFINITY : fabs(x - w);
                    r.n++;
                    if (!(e <= atol * r.scale + rtol * fabs(w))) r.bad++;
                    if (e / r.scale > r.worst) r.worst = e / r.scale;
                }
    return r;
}

static tally_t compare_state(const lin_case *c, const tu_buf *got, const double *want, double atol, double rtol) {
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
    (void)c;
    return r;
}

static double note(const lin_case *c, const char *label, bool tally, const char *what, tally_t r, double worst) {
    if (tally)
        tu_check(r.bad == 0, "%s [%s]: %s: %lld of %lld elements off, worst |err| %.3g of max |want| %.3g",
                 c->base.name, label, what, (long long)r.bad, (long long)r.n, r.worst, r.scale);
    return r.worst > worst ? r.worst : worst;
}

static double check(harness_case *hc, const char *label, bool tally) {
    lin_case *c = (lin_case *)hc;
    const linear_spec *s = &c->s;
    double atol, rtol, worst = 0;
    tolerance(s->out_dt, &atol, &rtol);
    if (s->atol > 0) atol = s->atol;
    if (s->run == LIN_RUN_BACKWARD) {
        worst = note(c, label, tally, "dq", compare_tokens(c, &c->dq, c->want_dq, s->H, s->Dk, true, atol, rtol, 0), worst);
        worst = note(c, label, tally, "dk", compare_tokens(c, &c->dk, c->want_dk, s->Hkv, s->Dk, true, atol, rtol, 0), worst);
        worst = note(c, label, tally, "dv", compare_tokens(c, &c->dv, c->want_dv, s->Hkv, s->Dv, true, atol, rtol, 0), worst);
        if (c->has_g) {
            const bool ch = s->p.decay == LA_DECAY_CHANNEL;
            /* dg is a suffix sum over the rest of the sequence (and over Dk
               for a per-token decay) of terms q~.dq~ - k~.dk~ that cancel when
               the decays are near 0: its f32 error is bounded by the number of
               terms times their size (dg_terms) times f32's 6e-8; 2e-6 per
               term is a 30x margin over that linear worst case. */
            const double terms = (double)c->T * (double)(ch ? 1 : c->Df);
            worst = note(c, label, tally, "dg",
                         compare_tokens(c, &c->dg, c->want_dg, s->H, ch ? s->Dk : 1, ch, atol, rtol,
                                        2e-6 * terms * c->dg_terms / atol),
                         worst);
        }
        if (s->want_state)
            worst = note(c, label, tally, "dinitial_state", compare_state(c, &c->ds0, c->want_state, atol, rtol), worst);
        if (c->dproj) { /* a sum over every token of both q and k: the same tolerance, over its largest element */
            tally_t r = {0};
            const int64_t n = s->H * s->Dk * s->Dm;
            for (int64_t i = 0; i < n; i++) r.scale = fmax(r.scale, fabs(c->want_dproj[i]));
            if (r.scale == 0) r.scale = 1;
            for (int64_t i = 0; i < n; i++) {
                const double e = isnan(c->dproj[i]) ? INFINITY : fabs(c->dproj[i] - c->want_dproj[i]);
                r.n++;
                if (!(e <= atol * r.scale + rtol * fabs(c->want_dproj[i]))) r.bad++;
                if (e / r.scale > r.worst) r.worst = e / r.scale;
            }
            worst = note(c, label, tally, "dW (feature_proj_grad)", r, worst);
        }
        if (tally && s->strided)
            tu_check(tu_buf_outside_poisoned(&c->dq) && tu_buf_outside_poisoned(&c->dk) &&
                         tu_buf_outside_poisoned(&c->dv),
                     "%s [%s]: a gradient written outside its view", c->base.name, label);
        return worst;
    }
    worst = note(c, label, tally, "out", compare_tokens(c, &c->out, c->want_out, s->H, s->Dv, true, atol, rtol, 0), worst);
    if (s->want_state || s->run == LIN_RUN_DECODE)
        worst = note(c, label, tally, "final state",
                     compare_state(c, &c->sT, c->want_state, s->atol > 0 ? s->atol : 3e-5, 1e-4), worst);
    if (tally && s->strided)
        tu_check(tu_buf_outside_poisoned(&c->out), "%s [%s]: out written outside its view", c->base.name, label);
    return worst;
}

static void teardown(harness_case *hc) {
    lin_case *c = (lin_case *)hc;
    tu_buf *all[] = {&c->q, &c->k, &c->v, &c->g, &c->s0, &c->out, &c->sT, &c->mid,
                     &c->dout, &c->dsT, &c->dq, &c->dk, &c->dv, &c->dg, &c->ds0};
    for (int i = 0; i < 15; i++) tu_buf_free(all[i]);
    double **w[] = {&c->want_out, &c->want_state, &c->want_dq, &c->want_dk, &c->want_dv, &c->want_dg, &c->want_ds0,
                    &c->want_dproj};
    for (int i = 0; i < 8; i++) free(*w[i]), *w[i] = NULL;
    free(c->proj), free(c->dproj);
    c->proj = c->dproj = NULL;
}

static const harness_ops linear_ops = {.op = "linear", HARNESS_CASE_CALLBACKS};

harness_case *linear_case(const linear_spec *s) {
    lin_case *c = harness_case_new(sizeof *c, &linear_ops, s->name, s->threads, harness_compute_ceiling(s->dt));
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
    c->Dvs = s->Dv + (s->p.normalize ? 1 : 0);
    c->Df = linear_ref_feature_dim(s->p.feature, s->Dk, s->Dm);
    c->has_g = s->p.decay == LA_DECAY_TOKEN || s->p.decay == LA_DECAY_CHANNEL;
    c->base.tokens = c->T; /* as attention's cases: one sequence's tokens, or all packed ones */
    return &c->base;
}
