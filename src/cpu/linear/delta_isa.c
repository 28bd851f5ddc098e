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
 *   (I + A) [U | -W] = [beta V | -beta pre K]  (a unit lower-triangular solve)
 *   Vn = U - W S                               (the corrected values beta_t u_t)
 *   O  = ((Q K^T) . E, j <= i) Vn + (pre . Q) S
 *   S  = pre[n-1] S + (suf . K)^T Vn
 * The products K K^T, Q K^T, W S, A Vn, Q S and K^T Vn run through the
 * register-blocked tile GEMM (tile_gemm.h); the solve is row by row, each
 * row an AXPY over the Dv + Dk columns of [U | -W] per earlier row. pre,
 * suf and the chunk's whole decay are exp of sums of log decays and E a
 * product of factors in [0, 1] (linear_common.h says why: saturated gates
 * give exact zeros, never -inf - -inf).
 * Items (sequence, head) are spread over the threads; each thread has its
 * own scratch in the workspace. */
#include "cpu/linear/delta_common.h"

/* Per-thread scratch, in floats. Chunked: S, Q, K, K^T, [U | -W], A, O and
 * five per-token scalars. Recurrent: S and four rows. */
static size_t scratch_floats(const delta_dims *d) {
    const int64_t ldr = d->Dvp + d->Dkp;
    return (size_t)(d->Dk * d->Dvp + 2 * d->C * d->Dkp + d->Dkp * d->Cp + d->C * ldr + d->C * d->Cp +
                    d->C * d->Dvp + 5 * d->Cp + 4 * (d->Dkp + d->Dvp));
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
    float *S, *Q, *K, *KT, *R, *A, *O, *beta, *lg, *a, *pre, *suf, *q, *k, *v, *u;
} fwd_scratch;

static fwd_scratch scratch_at(float *base, const delta_dims *d) {
    fwd_scratch w;
    w.S = base;
    w.Q = w.S + d->Dk * d->Dvp;
    w.K = w.Q + d->C * d->Dkp;
    w.KT = w.K + d->C * d->Dkp;
    w.R = w.KT + d->Dkp * d->Cp;
    w.A = w.R + d->C * (d->Dvp + d->Dkp);
    w.O = w.A + d->C * d->Cp;
    w.beta = w.O + d->C * d->Dvp;
    w.lg = w.beta + d->Cp;
    w.a = w.lg + d->Cp;
    w.pre = w.a + d->Cp;
    w.suf = w.pre + d->Cp;
    w.q = w.suf + d->Cp;
    w.k = w.q + d->Dkp + d->Dvp;
    w.v = w.k + d->Dkp + d->Dvp;
    w.u = w.v + d->Dkp + d->Dvp;
    return w;
}

/* Rows i of R [n][ldr] become (I + A)^{-1} R, A strictly lower triangular
 * [n][lda] (its diagonal and above are not read). */
static void unit_lower_solve(float *R, int64_t ldr, const float *A, int64_t lda, int64_t n) {
    for (int64_t i = 1; i < n; i++) {
        float *ri = R + i * ldr;
        for (int64_t j = 0; j < i; j++) {
            const float aij = A[i * lda + j];
            if (aij == 0.0f) continue;
            const vf av = vf_set1(aij);
            const float *rj = R + j * ldr;
            for (int64_t c = 0; c < ldr; c += LA_VL) vf_store(ri + c, vf_load(ri + c) - av * vf_load(rj + c));
        }
    }
}

static void chunked_item(const la_delta_problem *p, const delta_dims *dm, fwd_scratch *w, int64_t b, int64_t h) {
    const int64_t bt = p->cu ? 0 : b, hk = h / (p->H / p->Hkv), Dk = dm->Dk, Dkp = dm->Dkp, Dvp = dm->Dvp,
                  Cp = dm->Cp, ldr = Dvp + Dkp;
    int64_t t0, len;
    la_delta_seq(p, b, &t0, &len);
    delta_load_state(w->S, &p->state_in, dm, b, h);
    float *U = w->R, *Wn = w->R + Dvp; /* [U | -W]: U becomes Vn */
    for (int64_t c0 = 0; c0 < len; c0 += dm->C) {
        const int64_t n = len - c0 < dm->C ? len - c0 : dm->C;
        for (int64_t i = 0; i < n; i++) {
            const int64_t t = t0 + c0 + i;
            delta_load_qk(w->Q + i * Dkp, la_attn_at(&p->q, bt, t, h), p->q.dtype, Dk, Dkp, p->l2norm, p->scale);
            delta_load_qk(w->K + i * Dkp, la_attn_at(&p->k, bt, t, hk), p->k.dtype, Dk, Dkp, p->l2norm, 1.0f);
            tg_load_row(U + i * ldr, la_attn_at(&p->v, bt, t, hk), p->v.dtype, dm->Dv, Dvp);
            w->beta[i] = delta_beta(p, bt, t, h);
            w->lg[i] = delta_log_decay(p, bt, t, h);
            w->a[i] = expf(w->lg[i]);
        }
        const float total = lin_run_decays(w->lg, n, w->pre, w->suf);
        for (int64_t i = 0; i < n; i++) {
            lin_scale(U + i * ldr, Dvp, w->beta[i]);
            const vf m = vf_set1(-w->beta[i] * w->pre[i]);
            for (int64_t d = 0; d < Dkp; d += LA_VL) vf_store(Wn + i * ldr + d, m * vf_load(w->K + i * Dkp + d));
        }
        /* A = beta . (K K^T . E), strictly below the diagonal */
        lin_transpose(w->KT, Cp, w->K, Dkp, n, Dk);
        tg_gemm(n, Cp, Dk, w->K, Dkp, 1, w->KT, Cp, w->A, Cp, false);
        lin_mask_scalar(w->A, Cp, w->a, n);
        for (int64_t i = 0; i < n; i++) lin_scale(w->A + i * Cp, Cp, w->beta[i]);
        unit_lower_solve(w->R, ldr, w->A, Cp, n);
        /* Vn = U - W S */
        tg_gemm(n, Dvp, Dk, Wn, ldr, 1, w->S, Dvp, U, ldr, true);
        /* O = (Q K^T . E) Vn + (pre . Q) S */
        tg_gemm(n, Cp, Dk, w->Q, Dkp, 1, w->KT, Cp, w->A, Cp, false);
        lin_mask_scalar(w->A, Cp, w->a, n);
        tg_gemm(n, Dvp, n, w->A, Cp, 1, U, ldr, w->O, Dvp, false);
        for (int64_t i = 0; i < n; i++) lin_scale(w->Q + i * Dkp, Dkp, w->pre[i]);
        tg_gemm(n, Dvp, Dk, w->Q, Dkp, 1, w->S, Dvp, w->O, Dvp, true);
        for (int64_t i = 0; i < n; i++)
            tg_store_row(la_attn_at(&p->out, bt, t0 + c0 + i, h), p->out.dtype, w->O + i * Dvp, dm->Dv);
        /* S = total S + (suf . K)^T Vn */
        for (int64_t j = 0; j < n; j++) lin_scale(w->K + j * Dkp, Dkp, w->suf[j]);
        if (total != 1.0f)
            for (int64_t d = 0; d < Dk; d++) lin_scale(w->S + d * Dvp, Dvp, total);
        tg_gemm(Dk, Dvp, n, w->K, 1, Dkp, U, ldr, w->S, Dvp, true);
    }
    delta_store_state(&p->state_out, w->S, dm, b, h);
}

static void recurrent_item(const la_delta_problem *p, const delta_dims *dm, fwd_scratch *w, int64_t b, int64_t h) {
    const int64_t bt = p->cu ? 0 : b, hk = h / (p->H / p->Hkv), Dk = dm->Dk, Dkp = dm->Dkp, Dvp = dm->Dvp;
    int64_t t0, len;
    la_delta_seq(p, b, &t0, &len);
    delta_load_state(w->S, &p->state_in, dm, b, h);
    float *o = w->O;
    for (int64_t t = t0; t < t0 + len; t++) {
        delta_load_qk(w->q, la_attn_at(&p->q, bt, t, h), p->q.dtype, Dk, Dkp, p->l2norm, p->scale);
        delta_load_qk(w->k, la_attn_at(&p->k, bt, t, hk), p->k.dtype, Dk, Dkp, p->l2norm, 1.0f);
        tg_load_row(w->v, la_attn_at(&p->v, bt, t, hk), p->v.dtype, dm->Dv, Dvp);
        delta_step(w->S, Dk, Dvp, w->q, w->k, w->v, delta_beta(p, bt, t, h), expf(delta_log_decay(p, bt, t, h)),
                   w->u, o);
        tg_store_row(la_attn_at(&p->out, bt, t, h), p->out.dtype, o, dm->Dv);
    }
    delta_store_state(&p->state_out, w->S, dm, b, h);
}

la_status LA_ISA_FN(la_cpu_delta_forward_kernel)(const la_delta_problem *p, void *mem) {
    const delta_dims dm = delta_dims_of(p, chunk_of(p));
    const int nthreads = p->threads > 0 ? p->threads : 1;
    const size_t per_thread = scratch_floats(&dm);
    const int64_t items = p->num_seqs * p->H;
#pragma omp parallel num_threads(nthreads)
    {
        fwd_scratch w = scratch_at((float *)mem + (size_t)la_thread_id() * per_thread, &dm);
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < items; it++) {
            if (p->form == LA_LINEAR_CHUNKED) chunked_item(p, &dm, &w, it / p->H, it % p->H);
            else recurrent_item(p, &dm, &w, it / p->H, it % p->H);
        }
    }
    return LA_OK;
}
