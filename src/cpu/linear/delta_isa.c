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
 * register-blocked tile GEMM (tile_gemm.h). pre,
 * suf and the chunk's whole decay are exp of sums of log decays and E a
 * product of factors in [0, 1] (linear_common.h says why: saturated gates
 * give exact zeros, never -inf - -inf).
 * Items (sequence, head) are spread over the threads; each thread has its
 * own scratch in the workspace. */
#include "cpu/linear/delta_common.h"

/* Per-thread scratch, in floats. Chunked: S, Q, K, K^T, the right-hand
 * sides and [U | -W], A, T, O and five per-token scalars. Recurrent: S and
 * four rows. */
static size_t scratch_floats(const delta_dims *d) {
    const int64_t ldr = d->Dvp + d->Dkp;
    return (size_t)(d->Dk * d->Dvp + 2 * d->C * d->Dkp + d->Dkp * d->Cp + 2 * d->C * ldr + 2 * d->C * d->Cp +
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
    float *S, *Q, *K, *KT, *B, *R, *A, *T, *O, *beta, *lg, *a, *pre, *suf, *q, *k, *v, *u;
} fwd_scratch;

static fwd_scratch scratch_at(float *base, const delta_dims *d) {
    fwd_scratch w;
    w.S = base;
    w.Q = w.S + d->Dk * d->Dvp;
    w.K = w.Q + d->C * d->Dkp;
    w.KT = w.K + d->C * d->Dkp;
    w.B = w.KT + d->Dkp * d->Cp;
    w.R = w.B + d->C * (d->Dvp + d->Dkp);
    w.A = w.R + d->C * (d->Dvp + d->Dkp);
    w.T = w.A + d->C * d->Cp;
    w.O = w.T + d->C * d->Cp;
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

/* T [n][ld] = (I + A)^{-1}, A strictly lower triangular [n][ld] (its
 * diagonal and above are not read), by forward substitution on the
 * identity: T_i = e_i - sum_{j<i} A_ij T_j (n^3 / 6 multiply-adds, small
 * beside the products with T that follow, which then run as one GEMM
 * instead of a row-by-row solve over the Dk + Dv columns). */
static void unit_lower_inverse(float *T, const float *A, int64_t ld, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float *ti = T + i * ld;
        memset(ti, 0, (size_t)ld * sizeof(float));
        ti[i] = 1.0f;
        const int64_t w = tg_round_up(i, LA_VL); /* rows j < i have zeros past column i - 1 */
        for (int64_t j = 0; j < i; j++) {
            const float aij = A[i * ld + j];
            if (aij == 0.0f) continue;
            const vf av = vf_set1(aij);
            const float *tj = T + j * ld;
            for (int64_t c = 0; c < w; c += LA_VL) vf_store(ti + c, vf_load(ti + c) - av * vf_load(tj + c));
        }
    }
}

static void chunked_item(const la_delta_problem *p, const delta_dims *dm, fwd_scratch *w, int64_t b, int64_t h) {
    const int64_t bt = p->cu ? 0 : b, hk = h / (p->H / p->Hkv), Dk = dm->Dk, Dkp = dm->Dkp, Dvp = dm->Dvp,
                  Cp = dm->Cp, ldr = Dvp + Dkp;
    int64_t t0, len;
    la_delta_seq(p, b, &t0, &len);
    delta_load_state(w->S, &p->state_in, dm, b, h);
    float *U = w->R, *Wn = w->R + Dvp; /* [U | -W] = T B: U becomes Vn */
    for (int64_t c0 = 0; c0 < len; c0 += dm->C) {
        const int64_t n = len - c0 < dm->C ? len - c0 : dm->C;
        for (int64_t i = 0; i < n; i++) {
            const int64_t t = t0 + c0 + i;
            delta_load_qk(w->Q + i * Dkp, la_attn_at(&p->q, bt, t, h), p->q.dtype, Dk, Dkp, p->l2norm, p->scale);
            delta_load_qk(w->K + i * Dkp, la_attn_at(&p->k, bt, t, hk), p->k.dtype, Dk, Dkp, p->l2norm, 1.0f);
            tg_load_row(w->B + i * ldr, la_attn_at(&p->v, bt, t, hk), p->v.dtype, dm->Dv, Dvp);
            w->beta[i] = delta_beta(p, bt, t, h);
            w->lg[i] = delta_log_decay(p, bt, t, h);
            w->a[i] = expf(w->lg[i]);
        }
        const float total = lin_run_decays(w->lg, n, w->pre, w->suf);
        for (int64_t i = 0; i < n; i++) {
            lin_scale(w->B + i * ldr, Dvp, w->beta[i]);
            const vf m = vf_set1(-w->beta[i] * w->pre[i]);
            for (int64_t d = 0; d < Dkp; d += LA_VL)
                vf_store(w->B + i * ldr + Dvp + d, m * vf_load(w->K + i * Dkp + d));
        }
        /* A = beta . (K K^T . E), strictly below the diagonal */
        lin_transpose(w->KT, Cp, w->K, Dkp, n, Dk);
        tg_gemm(n, Cp, Dk, w->K, Dkp, 1, w->KT, Cp, w->A, Cp, false);
        lin_mask_scalar(w->A, Cp, w->a, n);
        for (int64_t i = 0; i < n; i++) lin_scale(w->A + i * Cp, Cp, w->beta[i]);
        unit_lower_inverse(w->T, w->A, Cp, n);
        tg_gemm(n, ldr, n, w->T, Cp, 1, w->B, ldr, w->R, ldr, false);
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
