/* Titans neural memory, backward: backpropagation through the token-by-token
 * recurrence (include/longattn.h; the same function the chunked forward
 * computes), written once and compiled per ISA. Per (sequence, query head):
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
#include "cpu/tile_gemm.h"

#include <math.h>

#define TB_PAD 16
#define TB_MIN_SEG 64 /* checkpoint spacing at least this: the recompute buffer stays small beside the work */

typedef struct {
    int64_t Dk, Dkp, Dv, Dvp, seg, nseg, St; /* St: floats of one (M, S) pair */
} tb_dims;

typedef struct {
    float *ck, *ts, *Mc, *dM, *dS, *dMc, *q, *k, *v, *dy, *e, *r, *dr, *dq, *dk, *acc;
} tb_scratch;

static tb_dims dims_of(const la_titans_problem *p) {
    tb_dims d = {.Dk = p->Dk, .Dkp = tg_round_up(p->Dk, TB_PAD), .Dv = p->Dv, .Dvp = tg_round_up(p->Dv, TB_PAD)};
    int64_t want = (int64_t)ceil(sqrt((double)p->L));
    if (want < TB_MIN_SEG) want = TB_MIN_SEG;
    d.seg = (want + p->chunk - 1) / p->chunk * p->chunk;
    d.nseg = (p->L + d.seg - 1) / d.seg;
    d.St = 2 * d.Dk * d.Dvp;
    return d;
}

static size_t acc_floats(const la_titans_problem *p, const tb_dims *d) {
    return p->H / p->Hkv > 1 ? (size_t)(p->L * (d->Dkp + d->Dvp)) : 0;
}

/* seg <= max(sqrt(L), 64) + chunk and nseg <= L: every product below fits (L < 2^62, St <= 2^19). */
static size_t scratch_floats(const la_titans_problem *p, const tb_dims *d) {
    return (size_t)((d->nseg + 1) * d->St + (d->seg + 1) * d->St + 4 * d->Dk * d->Dvp + 4 * d->Dkp + 6 * d->Dvp) +
           acc_floats(p, d);
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
    return w;
}

static void load_state(float *X, const la_linear_state *st, const tb_dims *d, int64_t n, int64_t h) {
    for (int64_t i = 0; i < d->Dk; i++) {
        float *row = X + i * d->Dvp;
        memset(row, 0, (size_t)d->Dvp * sizeof(float));
        if (st->data)
            memcpy(row, st->data + n * st->seq_stride + h * st->head_stride + i * st->row_stride,
                   (size_t)d->Dv * sizeof(float));
    }
}

static void store_state(const la_linear_state *st, const float *X, const tb_dims *d, int64_t n, int64_t h) {
    if (!st->data) return;
    for (int64_t i = 0; i < d->Dk; i++)
        memcpy(st->data + n * st->seq_stride + h * st->head_stride + i * st->row_stride, X + i * d->Dvp,
               (size_t)d->Dv * sizeof(float));
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

static void backward_head(const la_titans_backward_problem *bp, const tb_dims *d, tb_scratch *w, int64_t b, int64_t h,
                          int64_t hk, bool first_head) {
    const la_titans_problem *p = &bp->fwd;
    const int64_t bt = p->cu ? 0 : b, Dk = d->Dk, Dvp = d->Dvp, n = Dk * Dvp, C = p->chunk;
    int64_t t0, len;
    la_titans_seq(p, b, &t0, &len);
    /* forward sweep: checkpoints at each segment's start */
    load_state(w->ck, &p->mem_in, d, b, h);
    load_state(w->ck + n, &p->mom_in, d, b, h);
    const int64_t nseg = (len + d->seg - 1) / d->seg;
    for (int64_t sg = 0; sg < nseg; sg++) {
        const int64_t s0 = sg * d->seg, sn = len - s0 < d->seg ? len - s0 : d->seg;
        float *cur = w->ts;
        memcpy(cur, w->ck + sg * d->St, (size_t)d->St * sizeof(float));
        for (int64_t i = 0; i < sn; i++) {
            const int64_t t = t0 + s0 + i;
            if (i % C == 0) memcpy(w->Mc, cur, (size_t)n * sizeof(float));
            load_token(p, d, w, bt, t, h, hk);
            step(cur, cur, w->Mc, d, w, gate_at(&p->eta, bt, t, h), gate_at(&p->theta, bt, t, h),
                 1.0f - gate_at(&p->alpha, bt, t, h));
        }
        memcpy(w->ck + (sg + 1) * d->St, cur, (size_t)d->St * sizeof(float));
    }
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
            for (int64_t g = 0; g < G; g++) backward_head(bp, &d, &w, b, hk * G + g, hk, g == 0);
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
