/* The exact attention forward as a harness case: la_attention_forward's out
 * and lse against the float64 reference, every row or a sampled few. */
#include "attention_common.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    harness_case base; /* first: the harness sees this */
    attn_forward_spec s;
    attn_layout l;
    float slopes[ATTN_MAX_HEADS];
    la_attention_params p;
    bool with_lse;
    tu_buf q, k, v, out, lse;
    /* The reference rows: row row_i[r] of sequence row_seq[r], grouped by
     * sequence; want [nrows][H][D], want_lse [nrows][H]. */
    int64_t nrows, *row_seq, *row_i;
    double *want, *want_lse;
} fw_case;

/* Tolerances on |got - want| <= atol + rtol |want| per element.
 * Inputs are exact in their dtype in both computations, so the error is the
 * kernel's f32 arithmetic: dot products over D <= 512, the ~2-ulp vector exp
 * and sums over up to ~4k keys, worst seen ~2e-6 on outputs of size ~0.1:
 * atol 2e-5 with rtol 2e-4 is a 10x margin. An output stored in bf16 or f16
 * adds one rounding (relative 2^-9 and 2^-11 at worst). lse is a log of a
 * sum: its absolute error is the relative error of the sum, ~1e-6. */
static void tolerance(la_dtype out_dt, double *atol, double *rtol) {
    *atol = 2e-5;
    *rtol = 2e-4;
    if (out_dt == LA_BF16) *atol = 1e-4, *rtol = 4e-3;
    if (out_dt == LA_F16) *atol = 5e-5, *rtol = 1e-3;
}
#define LSE_ATOL 5e-5
#define LSE_RTOL 1e-6

static void describe(const harness_case *hc, harness_fields *f) {
    const fw_case *c = (const fw_case *)hc;
    attn_describe(f, &c->l, c->s.dt, c->s.H, c->s.Hkv, c->s.D, c->s.p.causal, "fwd");
    if (c->s.show_deterministic) harness_field_int(f, "deterministic", c->s.p.deterministic);
}

static double flops(const harness_case *hc) {
    const fw_case *c = (const fw_case *)hc;
    return attn_forward_flops(&c->l, c->s.H, c->s.D, c->s.p.causal);
}

/* q, k, v read once, out (and lse) written once. */
static double bytes(const harness_case *hc) {
    const fw_case *c = (const fw_case *)hc;
    double in = (double)la_dtype_size(c->s.dt), nq = (double)(c->l.Tq * c->s.H * c->s.D);
    double nk = (double)(c->l.Tk * c->s.Hkv * c->s.D);
    return nq * (in + (double)la_dtype_size(c->s.out_dt)) + 2 * nk * in + (c->with_lse ? 4.0 * (double)(c->l.Tq * c->s.H) : 0);
}

static void poison(harness_case *hc) {
    fw_case *c = (fw_case *)hc;
    tu_buf_poison(&c->out);
    tu_buf_poison(&c->lse);
}

static bool setup(harness_case *hc, uint64_t seed) {
    fw_case *c = (fw_case *)hc;
    const attn_layout *l = &c->l;
    uint64_t rng = seed;
    bool ok = tu_buf_init(&c->q, c->s.dt, l->nd, l->qshape, c->s.strided, false);
    ok &= tu_buf_init(&c->k, c->s.dt, l->nd, l->kshape, c->s.strided, false);
    ok &= tu_buf_init(&c->v, c->s.dt, l->nd, l->kshape, c->s.strided, false);
    ok &= tu_buf_init(&c->out, c->s.out_dt, l->nd, l->qshape, c->s.strided, false);
    ok &= tu_buf_init(&c->lse, LA_F32, l->nd - 1, l->lse_shape, c->s.strided, true);
    if (!ok) return false;
    tu_fill(&rng, c->q.t.data, c->s.dt, (int64_t)c->q.elems, -1, 1);
    tu_fill(&rng, c->k.t.data, c->s.dt, (int64_t)c->k.elems, -1, 1);
    tu_fill(&rng, c->v.t.data, c->s.dt, (int64_t)c->v.elems, -1, 1);
    for (int64_t h = 0; h < c->s.H && h < ATTN_MAX_HEADS; h++) c->slopes[h] = (float)tu_uniform(&rng, 0.01, 0.3);
    c->p = attn_params(&c->s.p, l, c->slopes, c->s.alibi);
    poison(hc);
    return true;
}

static la_status run(harness_case *hc, la_context *ctx) {
    fw_case *c = (fw_case *)hc;
    return la_attention_forward(ctx, &c->p, &c->q.t, &c->k.t, &c->v.t, &c->out.t, c->with_lse ? &c->lse.t : NULL);
}

/* Rows to reference: all of them, or a spread of five per sequence (first,
 * second, a third, half way, last) for a benchmark's long shapes. */
static void choose_rows(fw_case *c, bool sampled) {
    c->row_seq = tu_alloc(sizeof(int64_t) * (size_t)(c->l.Tq + 1));
    c->row_i = tu_alloc(sizeof(int64_t) * (size_t)(c->l.Tq + 1));
    c->nrows = 0;
    for (int64_t b = 0; b < c->l.nseq; b++) {
        int64_t lq = attn_seq_of(&c->l, b).lq;
        int64_t spread[5] = {0, 1, lq / 3, lq / 2, lq - 1};
        int64_t n = sampled ? 5 : lq, last = -1;
        for (int64_t r = 0; r < n; r++) {
            int64_t i = sampled ? spread[r] : r;
            if (i <= last || i >= lq) continue; /* the spread repeats on short sequences */
            c->row_seq[c->nrows] = b, c->row_i[c->nrows++] = i, last = i;
        }
    }
}

/* Float64 out and lse of the chosen rows, one (sequence, head) at a time on
 * the stored (rounded) inputs. */
static bool reference(harness_case *hc, bool sampled) {
    fw_case *c = (fw_case *)hc;
    const int64_t H = c->s.H, D = c->s.D, G = H / c->s.Hkv;
    choose_rows(c, sampled);
    c->want = tu_alloc(sizeof(double) * (size_t)(c->nrows * H * D + 1));
    c->want_lse = tu_alloc(sizeof(double) * (size_t)(c->nrows * H + 1));
    int64_t maxk = 1;
    for (int64_t b = 0; b < c->l.nseq; b++)
        if (attn_seq_of(&c->l, b).lk > maxk) maxk = attn_seq_of(&c->l, b).lk;
    double *hq = tu_alloc(8 * (size_t)D), *hk = tu_alloc(8 * (size_t)(maxk * D)), *hv = tu_alloc(8 * (size_t)(maxk * D));
    int64_t r0 = 0, idx[4];
    for (int64_t b = 0; b < c->l.nseq; b++) {
        attn_seq sq = attn_seq_of(&c->l, b);
        int64_t r1 = r0;
        while (r1 < c->nrows && c->row_seq[r1] == b) r1++;
        for (int64_t h = 0; h < H && r1 > r0; h++) {
            ref_attn_opts o = attn_ref_opts(&c->p, D, c->s.alibi ? c->slopes[h] : 0);
            for (int64_t j = 0; j < sq.lk; j++)
                for (int64_t d = 0; d < D; d++) {
                    attn_index(&c->l, b, sq.k0, j, h / G, d, idx);
                    hk[j * D + d] = tu_get(&c->k.t, idx);
                    hv[j * D + d] = tu_get(&c->v.t, idx);
                }
            for (int64_t r = r0; r < r1; r++) {
                for (int64_t d = 0; d < D; d++) attn_index(&c->l, b, sq.q0, c->row_i[r], h, d, idx), hq[d] = tu_get(&c->q.t, idx);
                ref_attention_forward_row(&o, c->row_i[r], sq.lq, sq.lk, D, hq, hk, hv, c->want + (r * H + h) * D,
                                          c->want_lse + r * H + h);
            }
        }
        r0 = r1;
    }
    free(hq), free(hk), free(hv);
    return true;
}

static double check(harness_case *hc, const char *label, bool tally) {
    fw_case *c = (fw_case *)hc;
    const int64_t H = c->s.H, D = c->s.D;
    double atol, rtol, worst = 0, worst_lse = 0;
    tolerance(c->s.out_dt, &atol, &rtol);
    int64_t bad = 0, bad_lse = 0, idx[4];
    for (int64_t r = 0; r < c->nrows; r++) {
        int64_t b = c->row_seq[r], t0 = attn_seq_of(&c->l, b).q0;
        for (int64_t h = 0; h < H; h++) {
            for (int64_t d = 0; d < D; d++) {
                attn_index(&c->l, b, t0, c->row_i[r], h, d, idx);
                double got = tu_get(&c->out.t, idx), w = c->want[(r * H + h) * D + d];
                if (!tu_close(got, w, atol, rtol)) bad++;
                double e = isnan(got) ? INFINITY : fabs(got - w);
                if (e > worst) worst = e;
            }
            if (c->with_lse) {
                attn_index(&c->l, b, t0, c->row_i[r], h, 0, idx);
                double got = tu_get(&c->lse.t, idx), w = c->want_lse[r * H + h];
                if (!tu_close(got, w, LSE_ATOL, LSE_RTOL)) bad_lse++;
                double e = isinf(got) && got == w ? 0 : isnan(got) ? INFINITY : fabs(got - w);
                if (e > worst_lse) worst_lse = e;
            }
        }
    }
    if (tally) {
        tu_check(bad == 0, "%s [%s]: %lld out elements off, worst |err| %.3g", c->base.name, label, (long long)bad,
                 worst);
        tu_check(bad_lse == 0, "%s [%s]: %lld lse rows off, worst |err| %.3g", c->base.name, label,
                 (long long)bad_lse, worst_lse);
        if (c->s.strided) {
            tu_check(tu_buf_outside_poisoned(&c->out), "%s [%s]: out written outside its view", c->base.name, label);
            if (c->with_lse)
                tu_check(tu_buf_outside_poisoned(&c->lse), "%s [%s]: lse written outside its view", c->base.name,
                         label);
        }
    }
    return worst;
}

static void teardown(harness_case *hc) {
    fw_case *c = (fw_case *)hc;
    tu_buf_free(&c->q), tu_buf_free(&c->k), tu_buf_free(&c->v), tu_buf_free(&c->out), tu_buf_free(&c->lse);
    free(c->row_seq), free(c->row_i), free(c->want), free(c->want_lse);
    c->row_seq = c->row_i = NULL;
    c->want = c->want_lse = NULL;
}

static const harness_ops forward_ops = {.op = "attention", HARNESS_CASE_CALLBACKS};

harness_case *attn_forward_case(const attn_forward_spec *s) {
    fw_case *c = harness_case_new(sizeof *c, &forward_ops, s->name, s->threads, harness_compute_ceiling(s->dt));
    c->s = *s;
    c->s.name = c->base.name; /* the caller's name may not outlive this call */
    attn_layout_init(&c->l, s->B, s->Lq, s->Lk, s->nseq, s->lens_q, s->lens_k, s->H, s->Hkv, s->D);
    c->base.tokens = c->l.varlen ? c->l.Tk : s->Lk > s->Lq ? s->Lk : s->Lq;
    c->with_lse = s->want_lse && s->p.score != LA_SCORE_SIGMOID;
    return &c->base;
}
