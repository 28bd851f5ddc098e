/* Titans neural memory, backward, written once and compiled per ISA. With
 * chunk_size > 1 chunk by chunk (the chunked backward further below); with
 * chunk_size 1 by backpropagation through the token-by-token recurrence
 * (include/longattn.h; the same function the chunked forward computes), as
 * follows. Per (sequence, query head):
 *  a forward sweep keeps checkpoints of (M, S) every `seg` tokens (a
 *  multiple of chunk_size, about max(64, sqrt(L))); the reverse sweep
 *  recomputes each segment's per-token states from its checkpoint and walks
 *  its tokens backwards with the adjoints dM, dS and dMc (the gradient
 *  reaching the chunk's start memory through the chunk's gradients):
 *   dM += q dy^T; dq = M_t dy; dS += dM
 *   dalpha = -<dM, M_{t-1}>; deta = <dS, S_{t-1}>
 *   e = Mc^T k - v, r = 2 theta e; dr = -dS^T k
 *   dtheta = 2 <dr, e>; dv = -2 theta dr; dk = -dS r + 2 theta Mc dr
 *   dMc += 2 theta k dr^T; dS *= eta; dM *= 1 - alpha
 *   at a chunk's first token dM += dMc (Mc is the memory entering it).
 * Grouped heads: an item is (sequence, K/V head); its query heads run one
 * after another and sum dk, dv in an f32 buffer of the sequence's length. */
#include "backend/titans_problem.h"
#include "base/parallel.h"
#include "cpu/linear/state_rows.h"
#include "cpu/tile_gemm.h"

#include <math.h>

#define TB_PAD 16
#define TB_MIN_SEG 64 /* checkpoint spacing at least this: the recompute buffer stays small beside the work */

typedef struct {
    int64_t Dk, Dkp, Dv, Dvp, seg, nseg, St; /* St: floats of one (M, S) pair */
    int64_t C, Cp;                           /* chunk > 1: the chunked backward's chunk, padded */
} tb_dims;

/* The chunked backward's per-chunk buffers (chunk_size > 1). */
typedef struct {
    float *Q, *K, *dQ, *dK, *Kx;                          /* [C][Dkp] */
    float *V, *G, *R, *dY, *QM, *QS, *KdM, *KdS, *dR;     /* [C][Dvp] */
    float *QK, *dA, *W, *E, *gW;                          /* [C][Cp] */
    float *MT, *ST, *dMT, *dST;                           /* [Dv][Dkp] */
    float *eta, *theta, *keep, *b, *c, *P, *db, *dc, *dw, *de, *dkeep, *deta, *dth; /* [C] */
} tb_chunk;

typedef struct {
    float *ck, *ts, *Mc, *dM, *dS, *dMc, *q, *k, *v, *dy, *e, *r, *dr, *dq, *dk, *acc;
    tb_chunk c;
} tb_scratch;

static tb_dims dims_of(const la_titans_problem *p) {
    tb_dims d = {.Dk = p->Dk, .Dkp = tg_round_up(p->Dk, TB_PAD), .Dv = p->Dv, .Dvp = tg_round_up(p->Dv, TB_PAD)};
    int64_t want = (int64_t)ceil(sqrt((double)p->L));
    if (want < TB_MIN_SEG) want = TB_MIN_SEG;
    d.seg = (want + p->chunk - 1) / p->chunk * p->chunk;
    d.nseg = (p->L + d.seg - 1) / d.seg;
    d.St = 2 * d.Dk * d.Dvp;
    d.C = p->chunk > 1 ? p->chunk : 0;
    d.Cp = tg_round_up(d.C, TB_PAD);
    return d;
}

static size_t chunk_floats(const tb_dims *d) {
    if (!d->C) return 0;
    return (size_t)(5 * d->C * d->Dkp + 9 * d->C * d->Dvp + 5 * d->C * d->Cp + 4 * d->Dv * d->Dkp + 13 * d->C);
}

static size_t acc_floats(const la_titans_problem *p, const tb_dims *d) {
    return p->H / p->Hkv > 1 ? (size_t)(p->L * (d->Dkp + d->Dvp)) : 0;
}

/* seg <= max(sqrt(L), 64) + chunk and nseg <= L: every product below fits (L < 2^62, St <= 2^19). */
static size_t scratch_floats(const la_titans_problem *p, const tb_dims *d) {
    return (size_t)((d->nseg + 1) * d->St + (d->seg + 1) * d->St + 4 * d->Dk * d->Dvp + 4 * d->Dkp + 6 * d->Dvp) +
           acc_floats(p, d) + chunk_floats(d);
}

la_status LA_ISA_FN(la_cpu_titans_backward_workspace)(const la_titans_problem *p, size_t *bytes) {
    const tb_dims d = dims_of(p);
    const int nthreads = p->threads > 0 ? p->threads : 1;
    if ((double)scratch_floats(p, &d) * sizeof(float) * nthreads > (double)SIZE_MAX / 2 ||
        !la_mul_size(scratch_floats(p, &d) * sizeof(float), (size_t)nthreads, bytes))
        return la_fail(LA_ERR_OVERFLOW, "Titans backward workspace size overflows");
    return LA_OK;
}

static tb_scratch scratch_at(float *base, const la_titans_problem *p, const tb_dims *d) {
    tb_scratch w;
    const int64_t n = d->Dk * d->Dvp;
    w.ck = base;
    w.ts = w.ck + (d->nseg + 1) * d->St;
    w.Mc = w.ts + (d->seg + 1) * d->St;
    w.dM = w.Mc + n;
    w.dS = w.dM + n;
    w.dMc = w.dS + n;
    w.q = w.dMc + n;
    w.k = w.q + d->Dkp;
    w.dq = w.k + d->Dkp;
    w.dk = w.dq + d->Dkp;
    w.v = w.dk + d->Dkp;
    w.dy = w.v + d->Dvp;
    w.e = w.dy + d->Dvp;
    w.r = w.e + d->Dvp;
    w.dr = w.r + d->Dvp;
    w.acc = acc_floats(p, d) ? w.dr + 2 * d->Dvp : NULL;
    float *f = w.dr + 2 * d->Dvp + acc_floats(p, d);
    tb_chunk *c = &w.c;
    float **kp[] = {&c->Q, &c->K, &c->dQ, &c->dK, &c->Kx};
    for (int i = 0; i < 5; i++) *kp[i] = f, f += d->C * d->Dkp;
    float **vp[] = {&c->V, &c->G, &c->R, &c->dY, &c->QM, &c->QS, &c->KdM, &c->KdS, &c->dR};
    for (int i = 0; i < 9; i++) *vp[i] = f, f += d->C * d->Dvp;
    float **cp[] = {&c->QK, &c->dA, &c->W, &c->E, &c->gW};
    for (int i = 0; i < 5; i++) *cp[i] = f, f += d->C * d->Cp;
    float **tp[] = {&c->MT, &c->ST, &c->dMT, &c->dST};
    for (int i = 0; i < 4; i++) *tp[i] = f, f += d->Dv * d->Dkp;
    float **sp[] = {&c->eta, &c->theta, &c->keep, &c->b, &c->c, &c->P, &c->db, &c->dc, &c->dw, &c->de, &c->dkeep,
                    &c->deta, &c->dth};
    for (int i = 0; i < 13; i++) *sp[i] = f, f += d->C;
    return w;
}

/* X [Dk][Dvp] = the state of (sequence n, head h), or 0. */
static void load_state(float *X, const la_linear_state *st, const tb_dims *d, int64_t n, int64_t h) {
    state_rows_load(X, d->Dvp, st, n, h, d->Dk, d->Dv);
}

static void store_state(const la_linear_state *st, const float *X, const tb_dims *d, int64_t n, int64_t h) {
    state_rows_store(st, X, d->Dvp, n, h, d->Dk, d->Dv);
}

static float gate_at(const la_attn_operand *g, int64_t bt, int64_t t, int64_t h) {
    return *(const float *)la_attn_at(g, bt, t, h);
}

/* e = Mc^T k - v (Dvp; padding 0). */
static void residual(float *e, const float *Mc, const float *k, const float *v, const tb_dims *d) {
    for (int64_t x = 0; x < d->Dvp; x += LA_VL) vf_store(e + x, -vf_load(v + x));
    for (int64_t i = 0; i < d->Dk; i++) {
        const vf ki = vf_set1(k[i]);
        for (int64_t x = 0; x < d->Dvp; x += LA_VL) vf_store(e + x, vf_fma(ki, vf_load(Mc + i * d->Dvp + x), vf_load(e + x)));
    }
}

static void load_token(const la_titans_problem *p, const tb_dims *d, tb_scratch *w, int64_t bt, int64_t t, int64_t h,
                       int64_t hk) {
    tg_load_row(w->q, la_attn_at(&p->q, bt, t, h), p->q.dtype, d->Dk, d->Dkp);
    tg_load_row(w->k, la_attn_at(&p->k, bt, t, hk), p->k.dtype, d->Dk, d->Dkp);
    tg_load_row(w->v, la_attn_at(&p->v, bt, t, hk), p->v.dtype, d->Dv, d->Dvp);
}

/* (M, S) at dst = one step from (M, S) at src for the loaded token, gradient at Mc. */
static void step(float *dst, const float *src, const float *Mc, const tb_dims *d, tb_scratch *w, float eta,
                 float theta, float keep) {
    const int64_t n = d->Dk * d->Dvp;
    residual(w->r, Mc, w->k, w->v, d);
    for (int64_t x = 0; x < d->Dvp; x++) w->r[x] *= 2 * theta;
    const vf ev = vf_set1(eta), kv = vf_set1(keep);
    for (int64_t i = 0; i < d->Dk; i++) {
        const vf ki = vf_set1(w->k[i]);
        for (int64_t x = 0; x < d->Dvp; x += LA_VL) {
            const int64_t o = i * d->Dvp + x;
            const vf s = ev * vf_load(src + n + o) - ki * vf_load(w->r + x);
            vf_store(dst + n + o, s);
            vf_store(dst + o, vf_fma(kv, vf_load(src + o), s));
        }
    }
}

/* (M, S) at cur advanced over tokens [t, t + sn) of one segment. */
typedef void (*tb_advance)(const la_titans_problem *p, const tb_dims *d, tb_scratch *w, int64_t bt, int64_t t,
                           int64_t sn, int64_t h, int64_t hk, float *cur);

/* The forward sweep both backwards start with: (M, S) from the initial
 * states through the sequence by `advance`, checkpointed at each segment's
 * start (w->ck[sg], sg = 0..nseg; the last is the final state). Returns
 * nseg. */
static int64_t forward_checkpoints(const la_titans_problem *p, const tb_dims *d, tb_scratch *w, int64_t b, int64_t h,
                                   int64_t hk, tb_advance advance) {
    const int64_t bt = p->cu ? 0 : b;
    int64_t t0, len;
    la_titans_seq(p, b, &t0, &len);
    load_state(w->ck, &p->mem_in, d, b, h);
    load_state(w->ck + d->Dk * d->Dvp, &p->mom_in, d, b, h);
    const int64_t nseg = (len + d->seg - 1) / d->seg;
    for (int64_t sg = 0; sg < nseg; sg++) {
        const int64_t s0 = sg * d->seg, sn = len - s0 < d->seg ? len - s0 : d->seg;
        memcpy(w->ts, w->ck + sg * d->St, (size_t)d->St * sizeof(float));
        advance(p, d, w, bt, t0 + s0, sn, h, hk, w->ts);
        memcpy(w->ck + (sg + 1) * d->St, w->ts, (size_t)d->St * sizeof(float));
    }
    return nseg;
}

/* Token by token, every gradient of a chunk at its start memory (Mc). */
static void advance_tokens(const la_titans_problem *p, const tb_dims *d, tb_scratch *w, int64_t bt, int64_t t,
                           int64_t sn, int64_t h, int64_t hk, float *cur) {
    for (int64_t i = 0; i < sn; i++) {
        if (i % p->chunk == 0) memcpy(w->Mc, cur, (size_t)(d->Dk * d->Dvp) * sizeof(float));
        load_token(p, d, w, bt, t + i, h, hk);
        step(cur, cur, w->Mc, d, w, gate_at(&p->eta, bt, t + i, h), gate_at(&p->theta, bt, t + i, h),
             1.0f - gate_at(&p->alpha, bt, t + i, h));
    }
}

static void backward_head(const la_titans_backward_problem *bp, const tb_dims *d, tb_scratch *w, int64_t b, int64_t h,
                          int64_t hk, bool first_head) {
    const la_titans_problem *p = &bp->fwd;
    const int64_t bt = p->cu ? 0 : b, Dk = d->Dk, Dvp = d->Dvp, n = Dk * Dvp, C = p->chunk;
    int64_t t0, len;
    la_titans_seq(p, b, &t0, &len);
    const int64_t nseg = forward_checkpoints(p, d, w, b, h, hk, advance_tokens);
    /* reverse sweep */
    load_state(w->dM, &bp->dmem_out, d, b, h);
    load_state(w->dS, &bp->dmom_out, d, b, h);
    memset(w->dMc, 0, (size_t)n * sizeof(float));
    for (int64_t sg = nseg - 1; sg >= 0; sg--) {
        const int64_t s0 = sg * d->seg, sn = len - s0 < d->seg ? len - s0 : d->seg;
        memcpy(w->ts, w->ck + sg * d->St, (size_t)d->St * sizeof(float));
        for (int64_t i = 0; i < sn; i++) {
            const int64_t t = t0 + s0 + i;
            load_token(p, d, w, bt, t, h, hk);
            step(w->ts + (i + 1) * d->St, w->ts + i * d->St, w->ts + (i - i % C) * d->St, d, w,
                 gate_at(&p->eta, bt, t, h), gate_at(&p->theta, bt, t, h), 1.0f - gate_at(&p->alpha, bt, t, h));
        }
        for (int64_t i = sn - 1; i >= 0; i--) {
            const int64_t t = t0 + s0 + i;
            const float *M = w->ts + (i + 1) * d->St, *Mp = w->ts + i * d->St, *Sp = Mp + n,
                        *Mc = w->ts + (i - i % C) * d->St;
            const float eta = gate_at(&p->eta, bt, t, h), theta = gate_at(&p->theta, bt, t, h),
                        keep = 1.0f - gate_at(&p->alpha, bt, t, h);
            load_token(p, d, w, bt, t, h, hk);
            tg_load_row(w->dy, la_attn_at(&bp->dout, bt, t, h), bp->dout.dtype, d->Dv, Dvp);
            /* y = M^T q; M = keep M_p + S; S = eta S_p - k r^T */
            vf da = vf_set1(0), de = vf_set1(0);
            for (int64_t x = 0; x < Dvp; x += LA_VL) vf_store(w->dr + x, vf_set1(0));
            for (int64_t r = 0; r < Dk; r++) {
                const vf qr = vf_set1(w->q[r]), kr = vf_set1(w->k[r]);
                vf dq = vf_set1(0);
                for (int64_t x = 0; x < Dvp; x += LA_VL) {
                    const int64_t o = r * Dvp + x;
                    const vf dy = vf_load(w->dy + x);
                    dq = vf_fma(vf_load(M + o), dy, dq);
                    const vf dm = vf_fma(qr, dy, vf_load(w->dM + o));
                    const vf ds = vf_load(w->dS + o) + dm;
                    vf_store(w->dM + o, dm);
                    vf_store(w->dS + o, ds);
                    da = vf_fma(dm, vf_load(Mp + o), da);
                    de = vf_fma(ds, vf_load(Sp + o), de);
                    vf_store(w->dr + x, vf_load(w->dr + x) - kr * ds);
                }
                w->dq[r] = vf_reduce_add(dq);
            }
            residual(w->e, Mc, w->k, w->v, d);
            float dth = 0;
            for (int64_t x = 0; x < d->Dv; x++) dth += 2 * w->dr[x] * w->e[x];
            *(float *)la_attn_at(&bp->dalpha, bt, t, h) = -vf_reduce_add(da);
            *(float *)la_attn_at(&bp->deta, bt, t, h) = vf_reduce_add(de);
            *(float *)la_attn_at(&bp->dtheta, bt, t, h) = dth;
            tg_store_row(la_attn_at(&bp->dq, bt, t, h), bp->dq.dtype, w->dq, Dk);
            /* dk = -dS r + 2 theta Mc dr; dMc += 2 theta k dr^T; then dS *= eta, dM *= keep */
            const vf tt = vf_set1(2 * theta), ev = vf_set1(eta), kv = vf_set1(keep);
            for (int64_t r = 0; r < Dk; r++) {
                const vf kr = vf_set1(w->k[r]);
                vf acc = vf_set1(0);
                for (int64_t x = 0; x < Dvp; x += LA_VL) {
                    const int64_t o = r * Dvp + x;
                    const vf dr = vf_load(w->dr + x), ds = vf_load(w->dS + o);
                    acc = vf_fma(tt, vf_load(Mc + o) * dr - ds * vf_load(w->e + x), acc);
                    vf_store(w->dMc + o, vf_fma(tt * kr, dr, vf_load(w->dMc + o)));
                    vf_store(w->dS + o, ds * ev);
                    vf_store(w->dM + o, vf_load(w->dM + o) * kv);
                }
                w->dk[r] = vf_reduce_add(acc);
            }
            for (int64_t x = 0; x < Dvp; x++) w->dr[x] *= -2 * theta; /* now dv */
            if (i % C == 0) /* Mc is the memory entering this token */
                for (int64_t o = 0; o < n; o += LA_VL) {
                    vf_store(w->dM + o, vf_load(w->dM + o) + vf_load(w->dMc + o));
                    vf_store(w->dMc + o, vf_set1(0));
                }
            if (!w->acc) {
                tg_store_row(la_attn_at(&bp->dk, bt, t, hk), bp->dk.dtype, w->dk, Dk);
                tg_store_row(la_attn_at(&bp->dv, bt, t, hk), bp->dv.dtype, w->dr, d->Dv);
                continue;
            }
            float *ak = w->acc + (s0 + i) * (d->Dkp + Dvp), *av = ak + d->Dkp;
            for (int64_t x = 0; x < Dk; x++) ak[x] = first_head ? w->dk[x] : ak[x] + w->dk[x];
            for (int64_t x = 0; x < d->Dv; x++) av[x] = first_head ? w->dr[x] : av[x] + w->dr[x];
        }
    }
    store_state(&bp->dmem_in, w->dM, d, b, h);
    store_state(&bp->dmom_in, w->dS, d, b, h);
}

/* ---- the chunked backward (chunk_size > 1) ----
 * Per chunk of n tokens from (M, S) at its start, with the forward's
 * scalar kernels b, c, P, E, W (titans_isa.c), G = K M - V, R = 2 diag(theta) G,
 *   Y  = diag(b) Q M + diag(c) Q S - A R,  A = W . (Q K^T) (j <= t)
 *   M' = b_l M + c_l S - K^T diag(w) R,   S' = P_l S - K^T diag(e) R
 * (w, e: the last rows of W, E). Given dY and the adjoints dM', dS' of the
 * chunk's end states:
 *   dR = -A^T dY - diag(w) K dM' - diag(e) K dS';  dw_j = -(K dM')_j . R_j, de likewise
 *   dA = -dY R^T: dW = (Q K^T) . dA, d(Q K^T) = W . dA
 *   dQ = diag(b) dY M^T + diag(c) dY S^T + d(QK^T) K
 *   dtheta_j = 2 dR_j . G_j, dG = 2 diag(theta) dR, dV = -dG
 *   dK = d(QK^T)^T Q + dG M^T - diag(w) R dM'^T - diag(e) R dS'^T
 *   dM = b_l dM' + Q^T diag(b) dY + K^T dG,  dS = c_l dM' + P_l dS' + Q^T diag(c) dY
 * and db_t = dY_t . (Q M)_t (+ <dM', M> at l), dc_t likewise with S (+ <dM', S>),
 * dP_l = <dS', S>; the scalar kernels' recurrences are then walked back to
 * deta and dalpha (O(n^2) scalars). The chunk-start states come from the
 * segment checkpoints, one chunk step at a time. */

static float vdot(const float *a, const float *b, int64_t n) {
    vf s = vf_set1(0);
    for (int64_t i = 0; i < n; i += LA_VL) s = vf_fma(vf_load(a + i), vf_load(b + i), s);
    return vf_reduce_add(s);
}

/* dst [Dv][Dkp] = X^T for X [Dk][Dvp]. */
static void transpose(float *dst, const float *X, const tb_dims *d) {
    for (int64_t x = 0; x < d->Dv; x++) {
        float *row = dst + x * d->Dkp;
        for (int64_t i = 0; i < d->Dk; i++) row[i] = X[i * d->Dvp + x];
        for (int64_t i = d->Dk; i < d->Dkp; i++) row[i] = 0;
    }
}

/* The chunk's rows, gates, scalar kernels, G and R from M at its start. */
static void chunk_prepare(const la_titans_problem *p, const tb_dims *d, tb_chunk *c, int64_t bt, int64_t t0, int64_t n,
                          int64_t h, int64_t hk, const float *M) {
    const int64_t Dkp = d->Dkp, Dvp = d->Dvp, Cp = d->Cp;
    for (int64_t i = 0; i < n; i++) {
        const int64_t t = t0 + i;
        tg_load_row(c->Q + i * Dkp, la_attn_at(&p->q, bt, t, h), p->q.dtype, d->Dk, Dkp);
        tg_load_row(c->K + i * Dkp, la_attn_at(&p->k, bt, t, hk), p->k.dtype, d->Dk, Dkp);
        tg_load_row(c->V + i * Dvp, la_attn_at(&p->v, bt, t, hk), p->v.dtype, d->Dv, Dvp);
        c->eta[i] = gate_at(&p->eta, bt, t, h);
        c->theta[i] = gate_at(&p->theta, bt, t, h);
        c->keep[i] = 1.0f - gate_at(&p->alpha, bt, t, h);
    }
    float bb = 1, pp = 1, cc = 0;
    for (int64_t t = 0; t < n; t++) {
        bb *= c->keep[t], pp *= c->eta[t], cc = c->keep[t] * cc + pp;
        c->b[t] = bb, c->P[t] = pp, c->c[t] = cc;
    }
    for (int64_t j = 0; j < n; j++) {
        float e = 1, wk = 1;
        c->E[j * Cp + j] = 1, c->W[j * Cp + j] = 1;
        for (int64_t t = j + 1; t < n; t++) {
            e *= c->eta[t];
            wk = c->keep[t] * wk + e;
            c->E[t * Cp + j] = e, c->W[t * Cp + j] = wk;
        }
    }
    /* G = K M - V, R = 2 theta G */
    tg_gemm(n, Dvp, d->Dk, c->K, Dkp, 1, M, Dvp, c->G, Dvp, false);
    for (int64_t j = 0; j < n; j++) {
        const vf tv = vf_set1(2 * c->theta[j]);
        for (int64_t x = 0; x < Dvp; x += LA_VL) {
            const vf g = vf_load(c->G + j * Dvp + x) - vf_load(c->V + j * Dvp + x);
            vf_store(c->G + j * Dvp + x, g);
            vf_store(c->R + j * Dvp + x, tv * g);
        }
    }
}

/* (M, S) one chunk on, after chunk_prepare. */
static void chunk_advance(const tb_dims *d, tb_chunk *c, int64_t n, float *M, float *S) {
    const int64_t Dk = d->Dk, Dkp = d->Dkp, Dvp = d->Dvp, Cp = d->Cp, l = n - 1;
    const vf bv = vf_set1(c->b[l]), cv = vf_set1(c->c[l]), pv = vf_set1(c->P[l]);
    for (int64_t o = 0; o < Dk * Dvp; o += LA_VL) {
        const vf m = vf_load(M + o), s = vf_load(S + o);
        vf_store(M + o, vf_fma(bv, m, cv * s));
        vf_store(S + o, pv * s);
    }
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < Dkp; i++) c->Kx[j * Dkp + i] = -c->W[l * Cp + j] * c->K[j * Dkp + i];
    tg_gemm(Dk, Dvp, n, c->Kx, 1, Dkp, c->R, Dvp, M, Dvp, true);
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < Dkp; i++) c->Kx[j * Dkp + i] = -c->E[l * Cp + j] * c->K[j * Dkp + i];
    tg_gemm(Dk, Dvp, n, c->Kx, 1, Dkp, c->R, Dvp, S, Dvp, true);
}

/* One chunk backwards: dM, dS in (the end states' adjoints) and out (the start states'). */
static void chunk_backward(const la_titans_backward_problem *bp, const tb_dims *d, tb_scratch *w, int64_t bt,
                           int64_t t0, int64_t n, int64_t h, int64_t hk, int64_t pos0, bool first_head,
                           const float *M, const float *S) {
    tb_chunk *c = &w->c;
    const int64_t Dk = d->Dk, Dkp = d->Dkp, Dv = d->Dv, Dvp = d->Dvp, Cp = d->Cp, l = n - 1, nn = Dk * Dvp;
    float *dM = w->dM, *dS = w->dS;
    for (int64_t i = 0; i < n; i++)
        tg_load_row(c->dY + i * Dvp, la_attn_at(&bp->dout, bt, t0 + i, h), bp->dout.dtype, Dv, Dvp);
    /* db, dc, dP */
    tg_gemm(n, Dvp, Dk, c->Q, Dkp, 1, M, Dvp, c->QM, Dvp, false);
    tg_gemm(n, Dvp, Dk, c->Q, Dkp, 1, S, Dvp, c->QS, Dvp, false);
    for (int64_t t = 0; t < n; t++) {
        c->db[t] = vdot(c->dY + t * Dvp, c->QM + t * Dvp, Dvp);
        c->dc[t] = vdot(c->dY + t * Dvp, c->QS + t * Dvp, Dvp);
    }
    c->db[l] += vdot(dM, M, nn);
    c->dc[l] += vdot(dM, S, nn);
    const float dPl = vdot(dS, S, nn);
    /* K dM', K dS'; dw, de */
    tg_gemm(n, Dvp, Dk, c->K, Dkp, 1, dM, Dvp, c->KdM, Dvp, false);
    tg_gemm(n, Dvp, Dk, c->K, Dkp, 1, dS, Dvp, c->KdS, Dvp, false);
    for (int64_t j = 0; j < n; j++) {
        c->dw[j] = -vdot(c->KdM + j * Dvp, c->R + j * Dvp, Dvp);
        c->de[j] = -vdot(c->KdS + j * Dvp, c->R + j * Dvp, Dvp);
    }
    /* Q K^T and dA = -dY R^T on j <= t; dW; A = W . QK (in QK); d(QK) = W . dA (in dA) */
    for (int64_t t = 0; t < n; t++) {
        float *qk = c->QK + t * Cp, *da = c->dA + t * Cp, *gw = c->gW + t * Cp;
        for (int64_t j = 0; j <= t; j++) {
            const float x = vdot(c->Q + t * Dkp, c->K + j * Dkp, Dkp), g = -vdot(c->dY + t * Dvp, c->R + j * Dvp, Dvp);
            const float wt = c->W[t * Cp + j];
            gw[j] = x * g;
            qk[j] = wt * x;
            da[j] = wt * g;
        }
        for (int64_t j = t + 1; j < Cp; j++) qk[j] = da[j] = gw[j] = 0;
    }
    for (int64_t j = 0; j < n; j++) c->gW[l * Cp + j] += c->dw[j];
    /* dR = -A^T dY - diag(w) K dM' - diag(e) K dS' */
    tg_gemm(n, Dvp, n, c->QK, 1, Cp, c->dY, Dvp, c->dR, Dvp, false);
    for (int64_t j = 0; j < n; j++) {
        const vf wv = vf_set1(c->W[l * Cp + j]), ev = vf_set1(c->E[l * Cp + j]);
        for (int64_t x = 0; x < Dvp; x += LA_VL) {
            const int64_t o = j * Dvp + x;
            vf_store(c->dR + o, -(vf_load(c->dR + o) + wv * vf_load(c->KdM + o) + ev * vf_load(c->KdS + o)));
        }
    }
    /* dtheta; dG = 2 theta dR (in dR) */
    for (int64_t j = 0; j < n; j++) {
        c->dth[j] = 2 * vdot(c->dR + j * Dvp, c->G + j * Dvp, Dvp);
        const vf tv = vf_set1(2 * c->theta[j]);
        for (int64_t x = 0; x < Dvp; x += LA_VL) vf_store(c->dR + j * Dvp + x, tv * vf_load(c->dR + j * Dvp + x));
    }
    /* diag(b) dY, diag(c) dY (in KdM, KdS); -diag(w) R, -diag(e) R (in QM, QS) */
    for (int64_t t = 0; t < n; t++) {
        const vf bv = vf_set1(c->b[t]), cv = vf_set1(c->c[t]), wv = vf_set1(-c->W[l * Cp + t]),
                 ev = vf_set1(-c->E[l * Cp + t]);
        for (int64_t x = 0; x < Dvp; x += LA_VL) {
            const int64_t o = t * Dvp + x;
            const vf dy = vf_load(c->dY + o), r = vf_load(c->R + o);
            vf_store(c->KdM + o, bv * dy);
            vf_store(c->KdS + o, cv * dy);
            vf_store(c->QM + o, wv * r);
            vf_store(c->QS + o, ev * r);
        }
    }
    transpose(c->MT, M, d);
    transpose(c->ST, S, d);
    transpose(c->dMT, dM, d);
    transpose(c->dST, dS, d);
    /* dQ = diag(b) dY M^T + diag(c) dY S^T + d(QK) K */
    tg_gemm(n, Dkp, Dv, c->KdM, Dvp, 1, c->MT, Dkp, c->dQ, Dkp, false);
    tg_gemm(n, Dkp, Dv, c->KdS, Dvp, 1, c->ST, Dkp, c->dQ, Dkp, true);
    tg_gemm(n, Dkp, n, c->dA, Cp, 1, c->K, Dkp, c->dQ, Dkp, true);
    /* dK = d(QK)^T Q + dG M^T - diag(w) R dM'^T - diag(e) R dS'^T */
    tg_gemm(n, Dkp, n, c->dA, 1, Cp, c->Q, Dkp, c->dK, Dkp, false);
    tg_gemm(n, Dkp, Dv, c->dR, Dvp, 1, c->MT, Dkp, c->dK, Dkp, true);
    tg_gemm(n, Dkp, Dv, c->QM, Dvp, 1, c->dMT, Dkp, c->dK, Dkp, true);
    tg_gemm(n, Dkp, Dv, c->QS, Dvp, 1, c->dST, Dkp, c->dK, Dkp, true);
    /* the start states' adjoints */
    const vf bl = vf_set1(c->b[l]), cl = vf_set1(c->c[l]), pl = vf_set1(c->P[l]);
    for (int64_t o = 0; o < nn; o += LA_VL) {
        const vf m = vf_load(dM + o), s = vf_load(dS + o);
        vf_store(dS + o, vf_fma(cl, m, pl * s));
        vf_store(dM + o, bl * m);
    }
    tg_gemm(Dk, Dvp, n, c->Q, 1, Dkp, c->KdM, Dvp, dM, Dvp, true);
    tg_gemm(Dk, Dvp, n, c->K, 1, Dkp, c->dR, Dvp, dM, Dvp, true);
    tg_gemm(Dk, Dvp, n, c->Q, 1, Dkp, c->KdS, Dvp, dS, Dvp, true);
    /* the scalar kernels back to eta and alpha */
    for (int64_t t = 0; t < n; t++) c->dkeep[t] = 0, c->deta[t] = 0;
    float gb = 0, gc = 0, gp = 0;
    for (int64_t t = l; t >= 0; t--) {
        const float kn = t < l ? c->keep[t + 1] : 0.0f, en = t < l ? c->eta[t + 1] : 0.0f;
        gb = c->db[t] + kn * gb;
        gc = c->dc[t] + kn * gc;
        gp = (t == l ? dPl : 0.0f) + gc + en * gp;
        c->dkeep[t] += (t > 0 ? c->b[t - 1] : 1.0f) * gb + (t > 0 ? c->c[t - 1] : 0.0f) * gc;
        c->deta[t] += (t > 0 ? c->P[t - 1] : 1.0f) * gp;
    }
    for (int64_t j = 0; j < n; j++) {
        float gw = 0, ge = 0;
        for (int64_t t = l; t > j; t--) {
            const float kn = t < l ? c->keep[t + 1] : 0.0f, en = t < l ? c->eta[t + 1] : 0.0f;
            gw = c->gW[t * Cp + j] + kn * gw;
            ge = (t == l ? c->de[j] : 0.0f) + gw + en * ge;
            c->dkeep[t] += c->W[(t - 1) * Cp + j] * gw;
            c->deta[t] += c->E[(t - 1) * Cp + j] * ge;
        }
    }
    /* out: dq, gates; dk, dv (summed over grouped query heads through acc) */
    for (int64_t i = 0; i < n; i++) {
        const int64_t t = t0 + i;
        *(float *)la_attn_at(&bp->dalpha, bt, t, h) = -c->dkeep[i];
        *(float *)la_attn_at(&bp->deta, bt, t, h) = c->deta[i];
        *(float *)la_attn_at(&bp->dtheta, bt, t, h) = c->dth[i];
        tg_store_row(la_attn_at(&bp->dq, bt, t, h), bp->dq.dtype, c->dQ + i * Dkp, Dk);
        float *dv = c->dR + i * Dvp; /* dV = -dG */
        for (int64_t x = 0; x < Dvp; x++) dv[x] = -dv[x];
        if (!w->acc) {
            tg_store_row(la_attn_at(&bp->dk, bt, t, hk), bp->dk.dtype, c->dK + i * Dkp, Dk);
            tg_store_row(la_attn_at(&bp->dv, bt, t, hk), bp->dv.dtype, dv, Dv);
            continue;
        }
        float *ak = w->acc + (pos0 + i) * (Dkp + Dvp), *av = ak + Dkp;
        for (int64_t x = 0; x < Dk; x++) ak[x] = first_head ? c->dK[i * Dkp + x] : ak[x] + c->dK[i * Dkp + x];
        for (int64_t x = 0; x < Dv; x++) av[x] = first_head ? dv[x] : av[x] + dv[x];
    }
}

/* A chunk at a time (chunk_prepare, chunk_advance). */
static void advance_chunks(const la_titans_problem *p, const tb_dims *d, tb_scratch *w, int64_t bt, int64_t t,
                           int64_t sn, int64_t h, int64_t hk, float *cur) {
    for (int64_t c0 = 0; c0 < sn; c0 += d->C) {
        const int64_t cn = sn - c0 < d->C ? sn - c0 : d->C;
        chunk_prepare(p, d, &w->c, bt, t + c0, cn, h, hk, cur);
        chunk_advance(d, &w->c, cn, cur, cur + d->Dk * d->Dvp);
    }
}

static void backward_head_chunked(const la_titans_backward_problem *bp, const tb_dims *d, tb_scratch *w, int64_t b,
                                  int64_t h, int64_t hk, bool first_head) {
    const la_titans_problem *p = &bp->fwd;
    const int64_t bt = p->cu ? 0 : b, n = d->Dk * d->Dvp, C = d->C;
    int64_t t0, len;
    la_titans_seq(p, b, &t0, &len);
    const int64_t nseg = forward_checkpoints(p, d, w, b, h, hk, advance_chunks);
    /* reverse sweep: each segment's chunk-start states recomputed, then its chunks backwards */
    load_state(w->dM, &bp->dmem_out, d, b, h);
    load_state(w->dS, &bp->dmom_out, d, b, h);
    for (int64_t sg = nseg - 1; sg >= 0; sg--) {
        const int64_t s0 = sg * d->seg, sn = len - s0 < d->seg ? len - s0 : d->seg, nc = (sn + C - 1) / C;
        memcpy(w->ts, w->ck + sg * d->St, (size_t)d->St * sizeof(float));
        for (int64_t ci = 0; ci + 1 < nc; ci++) {
            float *nx = w->ts + (ci + 1) * d->St;
            memcpy(nx, w->ts + ci * d->St, (size_t)d->St * sizeof(float));
            chunk_prepare(p, d, &w->c, bt, t0 + s0 + ci * C, C, h, hk, nx);
            chunk_advance(d, &w->c, C, nx, nx + n);
        }
        for (int64_t ci = nc - 1; ci >= 0; ci--) {
            const int64_t c0 = ci * C, cn = sn - c0 < C ? sn - c0 : C;
            const float *M = w->ts + ci * d->St;
            chunk_prepare(p, d, &w->c, bt, t0 + s0 + c0, cn, h, hk, M);
            chunk_backward(bp, d, w, bt, t0 + s0 + c0, cn, h, hk, s0 + c0, first_head, M, M + n);
        }
    }
    store_state(&bp->dmem_in, w->dM, d, b, h);
    store_state(&bp->dmom_in, w->dS, d, b, h);
}

la_status LA_ISA_FN(la_cpu_titans_backward_kernel)(const la_titans_backward_problem *bp, void *mem) {
    const la_titans_problem *p = &bp->fwd;
    const tb_dims d = dims_of(p);
    const int nthreads = p->threads > 0 ? p->threads : 1;
    const size_t per_thread = scratch_floats(p, &d);
    const int64_t G = p->H / p->Hkv, items = p->num_seqs * p->Hkv;
#pragma omp parallel num_threads(nthreads)
    {
        tb_scratch w = scratch_at((float *)mem + (size_t)la_thread_id() * per_thread, p, &d);
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < items; it++) {
            const int64_t b = it / p->Hkv, hk = it % p->Hkv, bt = p->cu ? 0 : b;
            for (int64_t g = 0; g < G; g++)
                if (d.C) backward_head_chunked(bp, &d, &w, b, hk * G + g, hk, g == 0);
                else backward_head(bp, &d, &w, b, hk * G + g, hk, g == 0);
            if (!w.acc) continue;
            int64_t t0, len;
            la_titans_seq(p, b, &t0, &len);
            for (int64_t j = 0; j < len; j++) {
                const float *ak = w.acc + j * (d.Dkp + d.Dvp);
                tg_store_row(la_attn_at(&bp->dk, bt, t0 + j, hk), bp->dk.dtype, ak, d.Dk);
                tg_store_row(la_attn_at(&bp->dv, bt, t0 + j, hk), bp->dv.dtype, ak + d.Dkp, d.Dv);
            }
        }
    }
    return LA_OK;
}
