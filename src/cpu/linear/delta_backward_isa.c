/* The delta rule and gated delta rule, backward: the recurrent form's
 * backward, token by token from the last, over states recomputed per chunk
 * from checkpoints (compiled per ISA).
 *
 * Per (sequence, query head), with P = a_t S_{t-1}, u = v_t - P^T k_t,
 * S_t = P + beta k u^T, o_t = scale S_t^T q_t and dS the gradient reaching
 * S_t from later tokens (dfinal_state at the end):
 *   dS += scale q do^T            dq = scale S_t do
 *   dvn = dS^T k                  (the gradient of beta u)
 *   dv = beta dvn                 dbeta = dvn . u
 *   dk = dS (beta u) - beta P dvn
 *   dP = dS - beta k dvn^T        dg = <dP, P>      dS_{t-1} = a dP
 * then through the L2 normalisation x^ = x r, r = (|x|^2 + eps)^-1/2:
 * dx = r (dx^ - x^ (x^ . dx^)). A first sweep stores the state at each
 * chunk boundary; the backward sweep then recomputes the chunk's states
 * from its checkpoint (chunk_size + 1 states) and walks its tokens in
 * reverse. Work per token is O(Dk Dv) in every pass; it is not the chunked
 * (WY-form) backward, whose dense products would be faster.
 * Items are (sequence, k/v head): the query heads sharing a k/v head run in
 * one item and sum their dk, dv in f32 scratch of the sequence's length,
 * so no two threads write one gradient row. */
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

/* Per-thread scratch, in floats: dk and dv accumulators [Lmax][Dkp + Dvp],
 * the checkpoints, one chunk's states, dS and a dozen rows. */
static bool scratch_floats(const la_delta_problem *p, const delta_dims *d, size_t *out) {
    const bwd_sizes s = sizes_of(p);
    const size_t st = (size_t)(d->Dk * d->Dvp), row = (size_t)(d->Dkp + d->Dvp);
    size_t acc, ck;
    if (!la_mul_size((size_t)s.Lmax, row, &acc) || !la_mul_size((size_t)s.nck + (size_t)d->C + 2, st, &ck))
        return false;
    *out = acc + ck + 12 * row;
    return *out >= acc;
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
    float *dkacc, *dvacc, *ck, *Sb, *dS, *q, *k, *v, *u, *dout, *dq, *dk, *dvn, *pk, *vn;
} bwd_scratch;

static bwd_scratch scratch_at(float *base, const la_delta_problem *p, const delta_dims *d) {
    const bwd_sizes s = sizes_of(p);
    const int64_t st = d->Dk * d->Dvp, row = d->Dkp + d->Dvp;
    bwd_scratch w;
    w.dkacc = base;
    w.dvacc = w.dkacc + s.Lmax * d->Dkp;
    w.ck = w.dvacc + s.Lmax * d->Dvp;
    w.Sb = w.ck + s.nck * st;
    w.dS = w.Sb + (d->C + 1) * st;
    w.q = w.dS + st;
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

/* dx^ -> dx through x^ = x r: r (dx^ - x^ (x^ . dx^)), in place. */
static void l2norm_backward(float *dx, const float *xh, float r, int64_t Dkp) {
    const vf c = vf_set1(lin_dot(xh, dx, Dkp)), rv = vf_set1(r);
    for (int64_t d = 0; d < Dkp; d += LA_VL) vf_store(dx + d, rv * (vf_load(dx + d) - c * vf_load(xh + d)));
}

static void add_row(float *acc, const float *x, int64_t n) {
    for (int64_t d = 0; d < n; d += LA_VL) vf_store(acc + d, vf_load(acc + d) + vf_load(x + d));
}

/* The backward of query head h of sequence b; dk, dv summed into the
 * item's accumulators (token-relative rows). */
static void head_backward(const la_delta_backward_problem *bp, const delta_dims *dm, bwd_scratch *w, int64_t b,
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
            delta_step(S, Dk, Dvp, NULL, w->k, w->v, delta_beta(p, bt, t, h), expf(delta_log_decay(p, bt, t, h)),
                       w->u, NULL);
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
            delta_step(next, Dk, Dvp, NULL, w->k, w->v, delta_beta(p, bt, t, h), expf(delta_log_decay(p, bt, t, h)),
                       w->u, NULL);
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
            float *dvrow = w->dvacc + (t - t0) * Dvp;
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
            add_row(w->dkacc + (t - t0) * Dkp, w->dk, Dkp);
            tg_store_row(la_attn_at(&bp->dq, bt, t, h), bp->dq.dtype, w->dq, Dk);
            la_store_f32(la_attn_at(&bp->dbeta, bt, t, h), bp->dbeta.dtype, 0, dbeta);
            if (bp->dg.data) *(float *)la_attn_at(&bp->dg, bt, t, h) = a * vf_reduce_add(dgv);
        }
    }
    delta_store_state(&bp->dstate_in, w->dS, dm, b, h);
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
            memset(w.dkacc, 0, (size_t)(len * dm.Dkp) * sizeof(float));
            memset(w.dvacc, 0, (size_t)(len * dm.Dvp) * sizeof(float));
            for (int64_t h = hk * G; h < (hk + 1) * G; h++) head_backward(bp, &dm, &w, b, h);
            for (int64_t t = 0; t < len; t++) {
                tg_store_row(la_attn_at(&bp->dk, bt, t0 + t, hk), bp->dk.dtype, w.dkacc + t * dm.Dkp, dm.Dk);
                tg_store_row(la_attn_at(&bp->dv, bt, t0 + t, hk), bp->dv.dtype, w.dvacc + t * dm.Dvp, dm.Dv);
            }
        }
    }
    return LA_OK;
}
