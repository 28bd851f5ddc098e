/* The delta rule and gated delta rule, backward, compiled per ISA, in two
 * forms picked by params.form: the chunked (WY) backward by recomputation
 * (below, chunked_head_backward) and the recurrent form's backward, token
 * by token (recurrent_head_backward). Both first store the state at every
 * chunk boundary (chunk_size tokens apart).
 *
 * Recurrent: per (sequence, query head), with P = a_t S_{t-1}, u = v_t - P^T k_t,
 * S_t = P + beta k u^T, o_t = scale S_t^T q_t and dS the gradient reaching
 * S_t from later tokens (dfinal_state at the end):
 *   dS += scale q do^T            dq = scale S_t do
 *   dvn = dS^T k                  (the gradient of beta u)
 *   dv = beta dvn                 dbeta = dvn . u
 *   dk = dS (beta u) - beta P dvn
 *   dP = dS - beta k dvn^T        dg = <dP, P>      dS_{t-1} = a dP
 * then through the L2 normalisation x^ = x r, r = (|x|^2 + eps)^-1/2:
 * dx = r (dx^ - x^ (x^ . dx^)). The backward sweep recomputes each
 * chunk's states from its checkpoint (chunk_size + 1 states) and walks its
 * tokens in reverse: O(Dk Dv) vector work per token.
 *
 * Chunked: per chunk, from its checkpoint S and the gradient dS reaching
 * its end, with the chunk's forward recomputed by delta_chunk_prepare
 * (P = (Q K^T) . E, Vn, T, B as delta_common.h names them, Wn = -W):
 *   dVn = P^T dO + (suf . K) dS            dWn = dVn S^T     dR = [dVn | dWn]
 *   dQ  = (dO Vn^T . E) K + pre . (dO S^T)  dK = (dO Vn^T . E)^T Q + suf . (Vn dS^T)
 *   dS_prev = pre[n-1] dS + (pre . Q)^T dO + Wn^T dVn
 *   dB = T^T dR,  dT = dR B^T,  dA = -T^T dT T^T (strictly lower)
 *   A = beta . (K K^T) . E:  dbeta += rowsum(dA . K K^T . E),  dK += Ab K + Ab^T K, Ab = dA . beta . E
 *   B = [beta V | -beta pre K]:  dV = beta dB_v,  dbeta, dK, dpre from dB_k
 * and the log decays' gradient from every factor built on them: with G the
 * chunk's running sum of g, each E[i][j] = exp(G_i - G_j) term z = dE E
 * adds z to dG_i and takes it from dG_j, pre[i] adds pre dpre to dG_i,
 * suf[j] adds suf dsuf to dG_{n-1} and takes it from dG_j; dg_t is the sum
 * of dG_i over i >= t in the chunk (the state carries the rest). Every
 * product is a tile GEMM; the elementwise parts are O(C^2) per chunk.
 * Items are (sequence, k/v head): the query heads sharing a k/v head run in
 * one item, so no two threads write one gradient row. dk, dv rows go out
 * chunk by chunk (the first head of the group stores, the others add in
 * f32); a half-precision dk or dv with grouped heads is summed in f32
 * scratch as long as the sequence instead (dkv_accumulate). */
#include "cpu/linear/delta_common.h"

typedef struct {
    int64_t nck; /* checkpoints per sequence */
    int64_t Lmax;
} bwd_sizes;

static bwd_sizes sizes_of(const la_delta_problem *p) {
    bwd_sizes s = {.Lmax = p->L > 0 ? p->L : 1};
    s.nck = (s.Lmax + p->chunk - 1) / p->chunk;
    return s;
}

static bool chunked(const la_delta_problem *p) { return p->form == LA_LINEAR_CHUNKED; }

/* Floats of the chunked backward's own buffers (beside delta_chunk's). */
static size_t chunked_floats(const delta_dims *d) {
    const int64_t ldr = delta_ldr(d);
    return (size_t)(6 * d->C * d->Cp + d->C * d->Dvp + 5 * d->C * d->Dkp + 2 * d->C * ldr + ldr * d->Cp +
                    d->Dvp * d->Cp + 2 * d->Dvp * d->Dkp + 6 * d->Cp);
}

/* Rows of the dk, dv accumulators: the sequence's (grouped heads summing
 * in f32 scratch) or one chunk's (flushed to the tensors chunk by chunk). */
static int64_t acc_rows(const la_delta_problem *p, const delta_dims *d) {
    return p->dkv_accumulate ? sizes_of(p).Lmax : d->C;
}

/* Per-thread scratch, in floats: dk and dv accumulators [acc_rows][Dkp + Dvp],
 * the checkpoints, dS, and then for the recurrent form one chunk's states
 * and a dozen rows, for the chunked form S, a delta_chunk and its own
 * buffers. */
static bool scratch_floats(const la_delta_problem *p, const delta_dims *d, size_t *out) {
    const bwd_sizes s = sizes_of(p);
    const size_t st = (size_t)(d->Dk * d->Dvp), row = (size_t)(d->Dkp + d->Dvp);
    size_t acc, ck;
    /* states: the checkpoints, dS, and one chunk's C + 1 (recurrent) or S (chunked) */
    const size_t states = (size_t)s.nck + 1 + (chunked(p) ? 1 : (size_t)d->C + 1);
    if (!la_mul_size((size_t)acc_rows(p, d), row, &acc) || !la_mul_size(states, st, &ck)) return false;
    const size_t form = chunked(p) ? delta_chunk_floats(d) + chunked_floats(d) : 12 * row;
    *out = acc + ck + form;
    return *out >= acc && *out >= ck;
}

la_status LA_ISA_FN(la_cpu_delta_backward_workspace)(const la_delta_problem *p, size_t *bytes) {
    const delta_dims d = delta_dims_of(p, p->chunk);
    const int nthreads = p->threads > 0 ? p->threads : 1;
    size_t f;
    if (!scratch_floats(p, &d, &f) || !la_mul_size(f, sizeof(float), &f) || !la_mul_size(f, (size_t)nthreads, bytes))
        return la_fail(LA_ERR_OVERFLOW, "delta rule backward workspace size overflows");
    return LA_OK;
}

typedef struct {
    float *dkacc, *dvacc, *ck, *dS, *Sb; /* Sb: recurrent, C + 1 states; chunked: S */
    /* recurrent rows */
    float *q, *k, *v, *u, *dout, *dq, *dk, *dvn, *pk, *vn;
    /* chunked */
    delta_chunk c;
    float *P, *dP, *dT, *X2, *TT, *dA, *dO, *Ks, *X, *Y, *dQ, *dKc, *dR, *dB, *BT, *VnT, *ST, *dST, *dpre, *dsuf,
        *zrow, *zcol, *dG, *dbeta;
} bwd_scratch;

static bwd_scratch scratch_at(float *base, const la_delta_problem *p, const delta_dims *d) {
    const bwd_sizes s = sizes_of(p);
    const int64_t st = d->Dk * d->Dvp, row = d->Dkp + d->Dvp, ldr = delta_ldr(d), C = d->C, Cp = d->Cp;
    bwd_scratch w = {0};
    w.dkacc = base;
    w.dvacc = w.dkacc + acc_rows(p, d) * d->Dkp;
    w.ck = w.dvacc + acc_rows(p, d) * d->Dvp;
    w.dS = w.ck + s.nck * st;
    w.Sb = w.dS + st;
    if (!chunked(p)) {
        w.q = w.Sb + (C + 1) * st;
        w.k = w.q + row;
        w.v = w.k + row;
        w.u = w.v + row;
        w.dout = w.u + row;
        w.dq = w.dout + row;
        w.dk = w.dq + row;
        w.dvn = w.dk + row;
        w.pk = w.dvn + row;
        w.vn = w.pk + row;
        return w;
    }
    float *x = w.Sb + st;
    w.c = delta_chunk_at(x, d);
    x += delta_chunk_floats(d);
    float **cc[] = {&w.P, &w.dP, &w.dT, &w.X2, &w.TT, &w.dA};
    for (int i = 0; i < 6; i++) *cc[i] = x, x += C * Cp;
    w.dO = x, x += C * d->Dvp;
    float **ck[] = {&w.Ks, &w.X, &w.Y, &w.dQ, &w.dKc};
    for (int i = 0; i < 5; i++) *ck[i] = x, x += C * d->Dkp;
    w.dR = x, x += C * ldr;
    w.dB = x, x += C * ldr;
    w.BT = x, x += ldr * Cp;
    w.VnT = x, x += d->Dvp * Cp;
    w.ST = x, x += d->Dvp * d->Dkp;
    w.dST = x, x += d->Dvp * d->Dkp;
    float **cs[] = {&w.dpre, &w.dsuf, &w.zrow, &w.zcol, &w.dG, &w.dbeta};
    for (int i = 0; i < 6; i++) *cs[i] = x, x += Cp;
    return w;
}

/* The accumulator row of token i of the chunk starting at c0. */
static int64_t acc_row(const la_delta_problem *p, int64_t c0, int64_t i) { return p->dkv_accumulate ? c0 + i : i; }

/* Without dkv_accumulate, the chunk's n rows of dk, dv go out once its
 * tokens are done: stored by the group's first head, added to in f32 by
 * the others (the item owns the whole group), then zeroed for the next. */
static void flush_chunk(const la_delta_backward_problem *bp, const delta_dims *dm, bwd_scratch *w, int64_t b,
                        int64_t h, int64_t c0, int64_t n) {
    const la_delta_problem *p = &bp->fwd;
    if (p->dkv_accumulate) return;
    const int64_t bt = p->cu ? 0 : b, G = p->H / p->Hkv, hk = h / G;
    int64_t t0, len;
    la_delta_seq(p, b, &t0, &len);
    for (int64_t i = 0; i < n; i++) {
        float *dk = w->dkacc + i * dm->Dkp, *dv = w->dvacc + i * dm->Dvp;
        char *ok = la_attn_at(&bp->dk, bt, t0 + c0 + i, hk), *ov = la_attn_at(&bp->dv, bt, t0 + c0 + i, hk);
        if (h % G != 0) { /* f32 here: a half-precision dk or dv with grouped heads accumulates */
            for (int64_t d = 0; d < dm->Dk; d++) dk[d] += ((const float *)ok)[d];
            for (int64_t d = 0; d < dm->Dv; d++) dv[d] += ((const float *)ov)[d];
        }
        tg_store_row(ok, bp->dk.dtype, dk, dm->Dk);
        tg_store_row(ov, bp->dv.dtype, dv, dm->Dv);
        memset(dk, 0, (size_t)dm->Dkp * sizeof(float));
        memset(dv, 0, (size_t)dm->Dvp * sizeof(float));
    }
}

/* dx^ -> dx through x^ = x r: r (dx^ - x^ (x^ . dx^)), in place. */
static void l2norm_backward(float *dx, const float *xh, float r, int64_t Dkp) {
    const vf c = vf_set1(lin_dot(xh, dx, Dkp)), rv = vf_set1(r);
    for (int64_t d = 0; d < Dkp; d += LA_VL) vf_store(dx + d, rv * (vf_load(dx + d) - c * vf_load(xh + d)));
}

static void add_row(float *acc, const float *x, int64_t n) {
    for (int64_t d = 0; d < n; d += LA_VL) vf_store(acc + d, vf_load(acc + d) + vf_load(x + d));
}

/* The recurrent backward of query head h of sequence b; dk, dv summed into
 * the item's accumulators (token-relative rows). */
static void recurrent_head_backward(const la_delta_backward_problem *bp, const delta_dims *dm, bwd_scratch *w, int64_t b,
                          int64_t h) {
    const la_delta_problem *p = &bp->fwd;
    const int64_t bt = p->cu ? 0 : b, hk = h / (p->H / p->Hkv), Dk = dm->Dk, Dkp = dm->Dkp, Dvp = dm->Dvp,
                  st = Dk * Dvp, C = dm->C;
    int64_t t0, len;
    la_delta_seq(p, b, &t0, &len);
    const bool l2 = p->l2norm;
    /* sweep 1: checkpoints at the chunk boundaries */
    float *S = w->Sb;
    delta_load_state(S, &p->state_in, dm, b, h);
    for (int64_t c0 = 0, c = 0; c0 < len; c0 += C, c++) {
        memcpy(w->ck + c * st, S, (size_t)st * sizeof(float));
        const int64_t n = len - c0 < C ? len - c0 : C;
        for (int64_t t = t0 + c0; t < t0 + c0 + n; t++) {
            delta_load_qk(w->k, la_attn_at(&p->k, bt, t, hk), p->k.dtype, Dk, Dkp, l2, 1.0f);
            tg_load_row(w->v, la_attn_at(&p->v, bt, t, hk), p->v.dtype, dm->Dv, Dvp);
            delta_step(S, Dvp, Dk, Dvp, NULL, w->k, w->v, delta_beta(p, bt, t, h), expf(delta_log_decay(p, bt, t, h)),
                       w->u, NULL, NULL, 0);
        }
    }
    /* the gradient reaching the final state */
    delta_load_state(w->dS, &bp->dstate_out, dm, b, h);
    const int64_t nch = (len + C - 1) / C;
    for (int64_t c = nch - 1; c >= 0; c--) {
        const int64_t c0 = c * C, n = len - c0 < C ? len - c0 : C;
        /* the chunk's states: Sb[i] is the state before its token i */
        memcpy(w->Sb, w->ck + c * st, (size_t)st * sizeof(float));
        for (int64_t i = 0; i < n; i++) {
            const int64_t t = t0 + c0 + i;
            float *next = w->Sb + (i + 1) * st;
            memcpy(next, w->Sb + i * st, (size_t)st * sizeof(float));
            delta_load_qk(w->k, la_attn_at(&p->k, bt, t, hk), p->k.dtype, Dk, Dkp, l2, 1.0f);
            tg_load_row(w->v, la_attn_at(&p->v, bt, t, hk), p->v.dtype, dm->Dv, Dvp);
            delta_step(next, Dvp, Dk, Dvp, NULL, w->k, w->v, delta_beta(p, bt, t, h), expf(delta_log_decay(p, bt, t, h)),
                       w->u, NULL, NULL, 0);
        }
        for (int64_t i = n - 1; i >= 0; i--) {
            const int64_t t = t0 + c0 + i;
            const float rq = delta_load_qk(w->q, la_attn_at(&p->q, bt, t, h), p->q.dtype, Dk, Dkp, l2, 1.0f);
            const float rk = delta_load_qk(w->k, la_attn_at(&p->k, bt, t, hk), p->k.dtype, Dk, Dkp, l2, 1.0f);
            tg_load_row(w->v, la_attn_at(&p->v, bt, t, hk), p->v.dtype, dm->Dv, Dvp);
            tg_load_row(w->dout, la_attn_at(&bp->dout, bt, t, h), bp->dout.dtype, dm->Dv, Dvp);
            const float beta = delta_beta(p, bt, t, h), a = expf(delta_log_decay(p, bt, t, h)), scale = p->scale;
            const float *Sp = w->Sb + i * st, *St = w->Sb + (i + 1) * st;
            for (int64_t j = 0; j < Dvp; j += LA_VL) {
                vf_store(w->dvn + j, vf_set1(0));
                vf_store(w->pk + j, vf_set1(0));
            }
            /* pass A: dq, dS += scale q do^T, dvn = dS^T k, pk = Sp^T k */
            for (int64_t d = 0; d < Dk; d++) {
                float *ds = w->dS + d * Dvp;
                const float *sp = Sp + d * Dvp;
                w->dq[d] = scale * lin_dot(St + d * Dvp, w->dout, Dvp);
                const vf qd = vf_set1(scale * w->q[d]), kd = vf_set1(w->k[d]);
                for (int64_t j = 0; j < Dvp; j += LA_VL) {
                    vf x = vf_fma(qd, vf_load(w->dout + j), vf_load(ds + j));
                    vf_store(ds + j, x);
                    vf_store(w->dvn + j, vf_fma(kd, x, vf_load(w->dvn + j)));
                    vf_store(w->pk + j, vf_fma(kd, vf_load(sp + j), vf_load(w->pk + j)));
                }
            }
            for (int64_t d = Dk; d < Dkp; d++) w->dq[d] = 0;
            /* u = v - a pk, vn = beta u; dv = beta dvn, dbeta = dvn . u */
            const vf av = vf_set1(a), bv = vf_set1(beta);
            for (int64_t j = 0; j < Dvp; j += LA_VL) {
                vf u = vf_load(w->v + j) - av * vf_load(w->pk + j);
                vf_store(w->u + j, u);
                vf_store(w->vn + j, bv * u);
            }
            const float dbeta = lin_dot(w->dvn, w->u, Dvp);
            float *dvrow = w->dvacc + acc_row(p, c0, i) * Dvp;
            for (int64_t j = 0; j < Dvp; j += LA_VL)
                vf_store(dvrow + j, vf_fma(bv, vf_load(w->dvn + j), vf_load(dvrow + j)));
            /* pass B: dk, dP = dS - beta k dvn^T, dg = a <dP, Sp>, dS = a dP */
            vf dgv = vf_set1(0);
            const float ba = beta * a;
            for (int64_t d = 0; d < Dk; d++) {
                float *ds = w->dS + d * Dvp;
                const float *sp = Sp + d * Dvp;
                const vf bk = vf_set1(beta * w->k[d]);
                vf dk1 = vf_set1(0), dk2 = vf_set1(0);
                for (int64_t j = 0; j < Dvp; j += LA_VL) {
                    const vf x = vf_load(ds + j), s = vf_load(sp + j), dvn = vf_load(w->dvn + j);
                    dk1 = vf_fma(x, vf_load(w->vn + j), dk1);
                    dk2 = vf_fma(s, dvn, dk2);
                    const vf dP = x - bk * dvn;
                    dgv = vf_fma(dP, s, dgv);
                    vf_store(ds + j, av * dP);
                }
                w->dk[d] = vf_reduce_add(dk1) - ba * vf_reduce_add(dk2);
            }
            for (int64_t d = Dk; d < Dkp; d++) w->dk[d] = 0;
            if (l2) {
                l2norm_backward(w->dq, w->q, rq, Dkp);
                l2norm_backward(w->dk, w->k, rk, Dkp);
            }
            add_row(w->dkacc + acc_row(p, c0, i) * Dkp, w->dk, Dkp);
            tg_store_row(la_attn_at(&bp->dq, bt, t, h), bp->dq.dtype, w->dq, Dk);
            la_store_f32(la_attn_at(&bp->dbeta, bt, t, h), bp->dbeta.dtype, 0, dbeta);
            if (bp->dg.data) *(float *)la_attn_at(&bp->dg, bt, t, h) = a * vf_reduce_add(dgv);
        }
        flush_chunk(bp, dm, w, b, h, c0, n);
    }
    delta_store_state(&bp->dstate_in, w->dS, dm, b, h);
}

/* The chunked (WY) backward of query head h of sequence b (the file's
 * header gives the formulas); dk, dv summed into the item's accumulators. */
static void chunked_head_backward(const la_delta_backward_problem *bp, const delta_dims *dm, bwd_scratch *w,
                                  int64_t b, int64_t h) {
    const la_delta_problem *p = &bp->fwd;
    const int64_t bt = p->cu ? 0 : b, hk = h / (p->H / p->Hkv), Dk = dm->Dk, Dkp = dm->Dkp, Dvp = dm->Dvp,
                  Dv = dm->Dv, Cp = dm->Cp, ldr = delta_ldr(dm), st = Dk * Dvp, C = dm->C;
    delta_chunk *c = &w->c;
    float *S = w->Sb, *dS = w->dS;
    int64_t t0, len;
    la_delta_seq(p, b, &t0, &len);
    /* sweep 1: the chunked forward's states at the chunk boundaries */
    delta_load_state(S, &p->state_in, dm, b, h);
    for (int64_t c0 = 0, ci = 0; c0 < len; c0 += C, ci++) {
        memcpy(w->ck + ci * st, S, (size_t)st * sizeof(float));
        const int64_t n = len - c0 < C ? len - c0 : C;
        const float total = delta_chunk_prepare(p, dm, c, bt, h, hk, t0 + c0, n, S, t0 + len);
        for (int64_t j = 0; j < n; j++) lin_scale(c->K + j * Dkp, Dkp, c->suf[j]);
        if (total != 1.0f)
            for (int64_t d = 0; d < Dk; d++) lin_scale(S + d * Dvp, Dvp, total);
        tg_gemm(Dk, Dvp, n, c->K, 1, Dkp, c->R, ldr, S, Dvp, true);
    }
    delta_load_state(dS, &bp->dstate_out, dm, b, h);
    const int64_t nch = (len + C - 1) / C;
    for (int64_t ci = nch - 1; ci >= 0; ci--) {
        const int64_t c0 = ci * C, n = len - c0 < C ? len - c0 : C;
        memcpy(S, w->ck + ci * st, (size_t)st * sizeof(float));
        const float total = delta_chunk_prepare(p, dm, c, bt, h, hk, t0 + c0, n, S, t0 + len);
        float *Vn = c->R, *Wn = c->R + Dvp, *dVn = w->dR, *dWn = w->dR + Dvp;
        for (int64_t i = 0; i < n; i++)
            tg_load_row(w->dO + i * Dvp, la_attn_at(&bp->dout, bt, t0 + c0 + i, h), bp->dout.dtype, Dv, Dvp);
        for (int64_t i = 0; i < Cp; i++) w->zrow[i] = w->zcol[i] = w->dbeta[i] = 0;
        /* P = (Q K^T) . E; S^T and dS^T panels */
        tg_gemm(n, Cp, Dk, c->Q, Dkp, 1, c->KT, Cp, w->P, Cp, false);
        for (int64_t i = 0; i < n; i++) lin_mul(w->P + i * Cp, c->E + i * Cp, Cp);
        lin_transpose(w->ST, Dkp, S, Dvp, Dk, Dv);
        lin_transpose(w->dST, Dkp, dS, Dvp, Dk, Dv);
        /* dVn = P^T dO + (suf . K) dS */
        tg_gemm(n, Dvp, n, w->P, 1, Cp, w->dO, Dvp, dVn, ldr, false);
        for (int64_t j = 0; j < n; j++) {
            const vf sj = vf_set1(c->suf[j]);
            for (int64_t d = 0; d < Dkp; d += LA_VL) vf_store(w->Ks + j * Dkp + d, sj * vf_load(c->K + j * Dkp + d));
        }
        tg_gemm(n, Dvp, Dk, w->Ks, Dkp, 1, dS, Dvp, dVn, ldr, true);
        /* X = Vn dS^T: dsuf_j = K_j . X_j, dK_j = suf_j X_j */
        tg_gemm(n, Dkp, Dv, Vn, ldr, 1, w->dST, Dkp, w->X, Dkp, false);
        for (int64_t j = 0; j < n; j++) {
            w->dsuf[j] = lin_dot(c->K + j * Dkp, w->X + j * Dkp, Dkp);
            const vf sj = vf_set1(c->suf[j]);
            for (int64_t d = 0; d < Dkp; d += LA_VL) vf_store(w->dKc + j * Dkp + d, sj * vf_load(w->X + j * Dkp + d));
        }
        /* dP = dO Vn^T; the decay terms dP . P; Dm = dP . E into dP */
        lin_transpose(w->VnT, Cp, Vn, ldr, n, Dv);
        tg_gemm(n, Cp, Dv, w->dO, Dvp, 1, w->VnT, Cp, w->dP, Cp, false);
        for (int64_t i = 0; i < n; i++) {
            float *dp = w->dP + i * Cp;
            const float *pp = w->P + i * Cp, *e = c->E + i * Cp;
            for (int64_t j = 0; j < i; j++) { /* E_ii = 1 carries no decay */
                const float z = dp[j] * pp[j];
                w->zrow[i] += z;
                w->zcol[j] += z;
            }
            lin_mul(dp, e, Cp);
        }
        tg_gemm(n, Dkp, n, w->dP, Cp, 1, c->K, Dkp, w->dQ, Dkp, false);
        tg_gemm(n, Dkp, n, w->dP, 1, Cp, c->Q, Dkp, w->dKc, Dkp, true);
        /* Y = dO S^T: dpre_i = Q_i . Y_i, dQ_i += pre_i Y_i */
        tg_gemm(n, Dkp, Dv, w->dO, Dvp, 1, w->ST, Dkp, w->Y, Dkp, false);
        for (int64_t i = 0; i < n; i++) {
            w->dpre[i] = lin_dot(c->Q + i * Dkp, w->Y + i * Dkp, Dkp);
            const vf pi = vf_set1(c->pre[i]);
            for (int64_t d = 0; d < Dkp; d += LA_VL)
                vf_store(w->dQ + i * Dkp + d, vf_fma(pi, vf_load(w->Y + i * Dkp + d), vf_load(w->dQ + i * Dkp + d)));
        }
        /* dWn = dVn S^T */
        tg_gemm(n, Dkp, Dv, dVn, ldr, 1, w->ST, Dkp, dWn, ldr, false);
        /* dS_prev = total dS + (pre . Q)^T dO + Wn^T dVn (Ks reused for pre . Q) */
        const float dtotal = lin_dot(dS, S, st);
        for (int64_t i = 0; i < n; i++) {
            const vf pi = vf_set1(c->pre[i]);
            for (int64_t d = 0; d < Dkp; d += LA_VL) vf_store(w->Ks + i * Dkp + d, pi * vf_load(c->Q + i * Dkp + d));
        }
        if (total != 1.0f) lin_scale(dS, st, total);
        tg_gemm(Dk, Dvp, n, w->Ks, 1, Dkp, w->dO, Dvp, dS, Dvp, true);
        tg_gemm(Dk, Dvp, n, Wn, 1, ldr, dVn, ldr, dS, Dvp, true);
        /* dT = dR B^T, dB = T^T dR, dA = -(T^T dT) T^T below the diagonal */
        lin_transpose(w->BT, Cp, c->B, ldr, n, ldr);
        tg_gemm(n, Cp, ldr, w->dR, ldr, 1, w->BT, Cp, w->dT, Cp, false);
        tg_gemm(n, ldr, n, c->T, 1, Cp, w->dR, ldr, w->dB, ldr, false);
        tg_gemm(n, Cp, n, c->T, 1, Cp, w->dT, Cp, w->X2, Cp, false);
        lin_transpose(w->TT, Cp, c->T, Cp, n, n);
        tg_gemm(n, Cp, n, w->X2, Cp, 1, w->TT, Cp, w->dA, Cp, false);
        /* A = beta . KE: dbeta, the decay terms, then Ab = dA . beta . E into dA */
        for (int64_t i = 0; i < n; i++) {
            float *da = w->dA + i * Cp;
            const float *ke = c->KE + i * Cp, *e = c->E + i * Cp;
            float db = 0;
            for (int64_t j = 0; j < i; j++) {
                const float g = -da[j];
                db += g * ke[j];
                const float z = g * c->beta[i] * ke[j];
                w->zrow[i] += z;
                w->zcol[j] += z;
                da[j] = g * c->beta[i] * e[j];
            }
            for (int64_t j = i; j < Cp; j++) da[j] = 0;
            w->dbeta[i] += db;
        }
        tg_gemm(n, Dkp, n, w->dA, Cp, 1, c->K, Dkp, w->dKc, Dkp, true);
        tg_gemm(n, Dkp, n, w->dA, 1, Cp, c->K, Dkp, w->dKc, Dkp, true);
        /* B = [beta V | -beta pre K] */
        for (int64_t i = 0; i < n; i++) {
            const float *dbv = w->dB + i * ldr, *dbk = w->dB + i * ldr + Dvp;
            const float bi = c->beta[i], pi = c->pre[i], ck = lin_dot(dbk, c->K + i * Dkp, Dkp);
            w->dbeta[i] += lin_dot(dbv, c->V + i * Dvp, Dvp) - pi * ck;
            w->dpre[i] -= bi * ck;
            const vf m = vf_set1(-bi * pi), bv = vf_set1(bi);
            for (int64_t d = 0; d < Dkp; d += LA_VL)
                vf_store(w->dKc + i * Dkp + d, vf_fma(m, vf_load(dbk + d), vf_load(w->dKc + i * Dkp + d)));
            float *dvrow = w->dvacc + acc_row(p, c0, i) * Dvp;
            for (int64_t j = 0; j < Dvp; j += LA_VL) vf_store(dvrow + j, vf_fma(bv, vf_load(dbv + j), vf_load(dvrow + j)));
        }
        /* the log decays: dG per token, then dg_t = sum over i >= t of dG_i */
        if (bp->dg.data) {
            /* suf[n-1] is the empty product: it adds and takes nothing, and
               leaving it out of both keeps its O(1) term from cancelling
               in f32 against the small rest when decays are near 0 */
            float sufsum = 0;
            for (int64_t i = 0; i < n; i++) {
                w->dG[i] = c->pre[i] * w->dpre[i] + w->zrow[i] - w->zcol[i];
                if (i < n - 1) {
                    w->dG[i] -= c->suf[i] * w->dsuf[i];
                    sufsum += c->suf[i] * w->dsuf[i];
                }
            }
            if (n > 0) w->dG[n - 1] += total * dtotal + sufsum;
            float run = 0;
            for (int64_t i = n - 1; i >= 0; i--) {
                run += w->dG[i];
                *(float *)la_attn_at(&bp->dg, bt, t0 + c0 + i, h) = run;
            }
        }
        /* q and k through the scale and the L2 normalisation */
        for (int64_t i = 0; i < n; i++) {
            const int64_t t = t0 + c0 + i;
            float *dq = w->dQ + i * Dkp, *dk = w->dKc + i * Dkp;
            const float *q = c->Q + i * Dkp, *k = c->K + i * Dkp;
            /* Q = scale r q: dq = r (scale dQ - Q (Q . dQ) / scale) with l2norm, scale dQ without */
            const float corr = p->l2norm ? lin_dot(q, dq, Dkp) / (p->scale * p->scale) : 0.0f;
            const vf sc = vf_set1(p->scale * c->rq[i]), cr = vf_set1(corr * c->rq[i] * p->scale);
            for (int64_t d = 0; d < Dkp; d += LA_VL) vf_store(dq + d, sc * vf_load(dq + d) - cr * vf_load(q + d));
            if (p->l2norm) l2norm_backward(dk, k, c->rk[i], Dkp);
            tg_store_row(la_attn_at(&bp->dq, bt, t, h), bp->dq.dtype, dq, Dk);
            add_row(w->dkacc + acc_row(p, c0, i) * Dkp, dk, Dkp);
            la_store_f32(la_attn_at(&bp->dbeta, bt, t, h), bp->dbeta.dtype, 0, w->dbeta[i]);
        }
        flush_chunk(bp, dm, w, b, h, c0, n);
    }
    delta_store_state(&bp->dstate_in, dS, dm, b, h);
}

la_status LA_ISA_FN(la_cpu_delta_backward_kernel)(const la_delta_backward_problem *bp, void *mem) {
    const la_delta_problem *p = &bp->fwd;
    const delta_dims dm = delta_dims_of(p, p->chunk);
    const int nthreads = p->threads > 0 ? p->threads : 1;
    size_t per_thread;
    scratch_floats(p, &dm, &per_thread); /* checked by the workspace call */
    const int64_t items = p->num_seqs * p->Hkv, G = p->H / p->Hkv;
#pragma omp parallel num_threads(nthreads)
    {
        bwd_scratch w = scratch_at((float *)mem + (size_t)la_thread_id() * per_thread, p, &dm);
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < items; it++) {
            const int64_t b = it / p->Hkv, hk = it % p->Hkv, bt = p->cu ? 0 : b;
            int64_t t0, len;
            la_delta_seq(p, b, &t0, &len);
            const int64_t rows = p->dkv_accumulate ? len : dm.C;
            memset(w.dkacc, 0, (size_t)(rows * dm.Dkp) * sizeof(float));
            memset(w.dvacc, 0, (size_t)(rows * dm.Dvp) * sizeof(float));
            for (int64_t h = hk * G; h < (hk + 1) * G; h++)
                (chunked(p) ? chunked_head_backward : recurrent_head_backward)(bp, &dm, &w, b, h);
            for (int64_t t = 0; p->dkv_accumulate && t < len; t++) {
                tg_store_row(la_attn_at(&bp->dk, bt, t0 + t, hk), bp->dk.dtype, w.dkacc + t * dm.Dkp, dm.Dk);
                tg_store_row(la_attn_at(&bp->dv, bt, t0 + t, hk), bp->dv.dtype, w.dvacc + t * dm.Dvp, dm.Dv);
            }
        }
    }
    return LA_OK;
}
