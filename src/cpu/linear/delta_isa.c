/* The delta rule and gated delta rule, forward: the chunk-parallel WY /
 * UT-transform form (fla's chunk_delta_rule / chunk_gated_delta_rule) and
 * the recurrent form (token by token; the decode step is it with one
 * token), written once and compiled per ISA.
 *
 * Per (sequence, query head), a chunk of n tokens starting from state S,
 * with a_t = exp(g_t), pre[i] = prod_{s<=i} a_s (the decay since the chunk
 * began), suf[j] = prod_{j<s<n} a_s (to its end), E[i][j] = prod_{j<s<=i}
 * a_s, K and Q the (normalised) rows, Q carrying the scale:
 *   A[i][j] = beta_i (k_i . k_j) E[i][j]       (j < i; else 0)
 *   [U | -W] = T [beta V | -beta pre K]       T = (I + A)^{-1}, unit lower triangular
 *   Vn = U - W S                               (the corrected values beta_t u_t)
 *   O  = ((Q K^T) . E, j <= i) Vn + (pre . Q) S
 *   S  = pre[n-1] S + (suf . K)^T Vn
 * T comes from forward substitution on the identity (n^3 / 6); the
 * products K K^T, T [..], Q K^T, W S, A Vn, Q S and K^T Vn run through the
 * register-blocked tile GEMM (tile_gemm.h). The chunk's common part (up to
 * Vn) is delta_chunk_prepare in delta_common.h, shared with the backward.
 * Items (sequence, head) are spread over the threads; each thread has its
 * own scratch in the workspace. */
#include "cpu/linear/delta_common.h"

/* Per-thread scratch, in floats. Chunked: S, the chunk's buffers
 * (delta_common.h), the scores P and O. Recurrent: S and four rows. */
static size_t scratch_floats(const delta_dims *d) {
    return (size_t)(d->Dk * d->Dvp) + delta_chunk_floats(d) + (size_t)(d->C * d->Cp + d->C * d->Dvp) +
           (size_t)(4 * (d->Dkp + d->Dvp));
}

static int64_t chunk_of(const la_delta_problem *p) { return p->form == LA_LINEAR_CHUNKED ? p->chunk : 1; }

la_status LA_ISA_FN(la_cpu_delta_workspace)(const la_delta_problem *p, size_t *bytes) {
    const delta_dims d = delta_dims_of(p, chunk_of(p));
    const int nthreads = p->threads > 0 ? p->threads : 1;
    if (!la_mul_size(scratch_floats(&d) * sizeof(float), (size_t)nthreads, bytes))
        return la_fail(LA_ERR_OVERFLOW, "delta rule workspace size overflows");
    return LA_OK;
}

typedef struct {
    float *S, *P, *O, *q, *k, *v, *u;
    delta_chunk c;
} fwd_scratch;

static fwd_scratch scratch_at(float *base, const delta_dims *d) {
    fwd_scratch w;
    w.S = base;
    w.c = delta_chunk_at(w.S + d->Dk * d->Dvp, d);
    w.P = w.S + d->Dk * d->Dvp + delta_chunk_floats(d);
    w.O = w.P + d->C * d->Cp;
    w.q = w.O + d->C * d->Dvp;
    w.k = w.q + d->Dkp + d->Dvp;
    w.v = w.k + d->Dkp + d->Dvp;
    w.u = w.v + d->Dkp + d->Dvp;
    return w;
}

static void chunked_item(const la_delta_problem *p, const delta_dims *dm, fwd_scratch *w, int64_t b, int64_t h) {
    const int64_t bt = p->cu ? 0 : b, hk = h / (p->H / p->Hkv), Dk = dm->Dk, Dkp = dm->Dkp, Dvp = dm->Dvp,
                  Cp = dm->Cp, ldr = delta_ldr(dm);
    delta_chunk *c = &w->c;
    int64_t t0, len;
    la_delta_seq(p, b, &t0, &len);
    delta_load_state(w->S, &p->state_in, dm, b, h);
    /* f32 output rows without padding: the products write them in place
     * (O then a copy per row was one more pass over O) */
    const bool direct = p->out.dtype == LA_F32 && dm->Dv == Dvp;
    for (int64_t c0 = 0; c0 < len; c0 += dm->C) {
        const int64_t n = len - c0 < dm->C ? len - c0 : dm->C;
        const float total = delta_chunk_prepare(p, dm, c, bt, h, hk, t0 + c0, n, w->S, t0 + len);
        float *o = w->O;
        int64_t ldo = Dvp;
        if (direct) o = (float *)la_attn_at(&p->out, bt, t0 + c0, h), ldo = p->out.token_stride;
        /* O = (Q K^T . E) Vn + (pre . Q) S */
        /* each row tile over its columns up to the diagonal only (E is 0 after it) */
        for (int64_t i0 = 0; i0 < n; i0 += TG_MR) {
            const int64_t m = n - i0 < TG_MR ? n - i0 : TG_MR, nc = tg_round_up(i0 + m, LA_VL);
            tg_gemm(m, nc, Dk, c->Q + i0 * Dkp, Dkp, 1, c->KT, Cp, w->P + i0 * Cp, Cp, false);
            for (int64_t i = i0; i < i0 + m; i++) lin_mul(w->P + i * Cp, c->E + i * Cp, nc);
            tg_gemm(m, Dvp, i0 + m, w->P + i0 * Cp, Cp, 1, c->R, ldr, o + i0 * ldo, ldo, false);
        }
        for (int64_t i = 0; i < n; i++) lin_scale(c->Q + i * Dkp, Dkp, c->pre[i]);
        tg_gemm(n, Dvp, Dk, c->Q, Dkp, 1, w->S, Dvp, o, ldo, true);
        if (!direct)
            for (int64_t i = 0; i < n; i++)
                tg_store_row(la_attn_at(&p->out, bt, t0 + c0 + i, h), p->out.dtype, w->O + i * Dvp, dm->Dv);
        /* S = total S + (suf . K)^T Vn, per row tile of S: its decay, then
         * its product, while its rows are in L1 (a separate pass over S
         * read and wrote it from L2 once more) */
        for (int64_t j = 0; j < n; j++) lin_scale(c->K + j * Dkp, Dkp, c->suf[j]);
        for (int64_t d0 = 0; d0 < Dk; d0 += TG_MR) {
            const int64_t m = Dk - d0 < TG_MR ? Dk - d0 : TG_MR;
            if (total != 1.0f)
                for (int64_t d = d0; d < d0 + m; d++) lin_scale(w->S + d * Dvp, Dvp, total);
            tg_gemm(m, Dvp, n, c->K + d0, 1, Dkp, c->R, ldr, w->S + d0 * Dvp, Dvp, true);
        }
    }
    delta_store_state(&p->state_out, w->S, dm, b, h);
}

/* Token by token. The decode step (one state in and out, in place) works
 * on the caller's state directly when its rows need no padding (Dv a
 * multiple of LIN_PAD): copying it to scratch and back would double the
 * step's memory traffic. next: the thread's next item (-1: none), whose
 * state the step prefetches when both are the caller's, in place. */
static void recurrent_item(const la_delta_problem *p, const delta_dims *dm, fwd_scratch *w, int64_t b, int64_t h,
                           int64_t next) {
    const int64_t bt = p->cu ? 0 : b, hk = h / (p->H / p->Hkv), Dk = dm->Dk, Dkp = dm->Dkp, Dvp = dm->Dvp;
    int64_t t0, len;
    la_delta_seq(p, b, &t0, &len);
    const la_linear_state *st = &p->state_in;
    const bool in_place = st->data && st->data == p->state_out.data && dm->Dv == Dvp;
    float *S = w->S;
    int64_t lds = Dvp;
    const float *nS = NULL;
    if (in_place) {
        S = st->data + b * st->seq_stride + h * st->head_stride, lds = st->row_stride;
        if (next >= 0) nS = st->data + next / p->H * st->seq_stride + next % p->H * st->head_stride;
    } else {
        delta_load_state(S, st, dm, b, h);
    }
    float *o = w->O;
    for (int64_t t = t0; t < t0 + len; t++) {
        delta_load_qk(w->q, la_attn_at(&p->q, bt, t, h), p->q.dtype, Dk, Dkp, p->l2norm, p->scale);
        delta_load_qk(w->k, la_attn_at(&p->k, bt, t, hk), p->k.dtype, Dk, Dkp, p->l2norm, 1.0f);
        tg_load_row(w->v, la_attn_at(&p->v, bt, t, hk), p->v.dtype, dm->Dv, Dvp);
        delta_step(S, lds, Dk, Dvp, w->q, w->k, w->v, delta_beta(p, bt, t, h), expf(delta_log_decay(p, bt, t, h)),
                   w->u, o, nS, lds);
        tg_store_row(la_attn_at(&p->out, bt, t, h), p->out.dtype, o, dm->Dv);
    }
    if (!in_place) delta_store_state(&p->state_out, S, dm, b, h);
}

la_status LA_ISA_FN(la_cpu_delta_forward_kernel)(const la_delta_problem *p, void *mem) {
    const delta_dims dm = delta_dims_of(p, chunk_of(p));
    const int nthreads = p->threads > 0 ? p->threads : 1;
    const size_t per_thread = scratch_floats(&dm);
    const int64_t items = p->num_seqs * p->H;
    /* the decode step (one token per sequence): each thread a contiguous run of items, so that
       its next item, whose state it prefetches, is known (the items are equal in work) */
    const bool step = DELTA_STEP_PF_NEXT && p->form != LA_LINEAR_CHUNKED && !p->cu && p->L == 1;
#pragma omp parallel num_threads(nthreads)
    {
        fwd_scratch w = scratch_at((float *)mem + (size_t)la_thread_id() * per_thread, &dm);
        if (step) {
            int64_t lo, hi;
            la_split_range(items, la_thread_id(), la_team_size(), &lo, &hi);
            for (int64_t it = lo; it < hi; it++)
                recurrent_item(p, &dm, &w, it / p->H, it % p->H, it + 1 < hi ? it + 1 : -1);
        } else {
#pragma omp for schedule(dynamic, 1)
            for (int64_t it = 0; it < items; it++) {
                if (p->form == LA_LINEAR_CHUNKED) chunked_item(p, &dm, &w, it / p->H, it % p->H);
                else recurrent_item(p, &dm, &w, it / p->H, it % p->H, -1);
            }
        }
    }
    return LA_OK;
}
