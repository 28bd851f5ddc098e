/* Linear attention with decay, backward, in the chunked form: written once,
 * compiled per ISA. Per (sequence, head), with the forward's notation
 * (linear_isa.c: Q~ = scale phi(Q), K~ = phi(K), factors a_t, E[i][j] =
 * prod_{j<s<=i} a_s, P[i] = prod_{s<=i} a_s, R[j] = prod_{j<s<n} a_s),
 * two sweeps over the chunks and nothing stored per chunk:
 *
 *  forward sweep, state S^T (the forward's state, transposed):
 *   dQ~[i] = sum_{j<=i} E[i][j] . K~[j] (dO[i] . V[j]) + P[i] . (S dO[i])
 *  reverse sweep, state G (the gradient reaching the state at the chunk's
 *  end, starting from dfinal_state):
 *   dK~[j] = sum_{i>=j} E[i][j] . Q~[i] (dO[i] . V[j]) + R[j] . (G V[j])
 *   dV[j]  = sum_{i>=j} A[i][j] dO[i] + G^T (R[j] . K~[j])
 *   G      = P[n-1] . G + sum_i (P[i] . Q~[i]) dO[i]^T;  dinitial_state = G at the start
 *  the log decays: with b_t = sum_{s<=t} g_s, dL/db_t = Q~[t] . dQ~[t] -
 *  K~[t] . dK~[t] (+ sum_e dS_T[d][e] S_T[d][e] at the last token), and
 *  dg_t = sum_{i>=t} dL/db_i (summed over d for a per-token scalar): the
 *  forward sweep stores the q part in dg, the reverse sweep, which walks
 *  the tokens backwards, completes it into the suffix sum.
 * Grouped heads: an item is (sequence, K/V head); its G query heads run one
 * after another and, for G > 1, sum dK~ and dV in an f32 buffer of the
 * sequence's length before storing them. */
#include "cpu/linear/linear_common.h"

/* Tokens per sub-block of the per-channel intra-chunk terms (as in the
 * forward, linear_isa.c): blocks below the diagonal run as tile GEMMs. */
#define LIN_SUB 16

typedef struct {
    float *S, *RT, *Q, *K, *V, *dO, *VT, *KT, *A, *Pm, *dQK, *dV, *T, *dec, *pre, *suf, *e, *run, *a, *pa, *sa, *PB, *SB, *QB, *tot, *M, *KM, *KMT, *lg, *acc;
    float *nrm; /* normalisation: (1/den, dO's z entry) per token of the sequence, or NULL */
    float *dW;  /* Hedgehog: this thread's dL/dW [H][Dx][Dm], or NULL */
} bwd_scratch;

/* Per-thread floats past the fixed scratch: the grouped heads' dk (input
 * space, Dxp) and dv sums over the sequence, normalisation's two floats per
 * token, Hedgehog's dW. */
typedef struct {
    size_t acc, nrm, dW;
} bwd_extra;

static int64_t dx_pad(const la_linear_problem *p) { return tg_round_up(p->Dx, LIN_PAD); }

static size_t scratch_floats(const la_linear_backward_problem *bp, const lin_dims *d, bwd_extra *x) {
    const la_linear_problem *p = &bp->fwd;
    const int64_t G = p->H / p->Hkv;
    /* L times at most 2^11 floats, and H Dx Dm < 2^60 (checked by the op): each fits */
    x->acc = G > 1 ? (size_t)(p->L * (dx_pad(p) + d->Dvp)) : 0;
    x->nrm = p->normalize ? (size_t)(2 * p->L) : 0;
    x->dW = bp->dproj ? (size_t)(p->H * p->Dx * p->Dm) : 0;
    return (size_t)(d->Dk * d->Dvp + d->Dvp * d->Dkp + 7 * d->C * d->Dkp + 3 * d->C * d->Dvp + d->Dvp * d->Cp +
                    d->Dkp * d->Cp + 2 * d->C * d->Cp + 2 * d->Dkp + 3 * d->C + 3 * d->C * d->Dkp +
                    (d->Cp / LIN_SUB + 1) * d->Dkp + d->Dkp + 2 * LIN_SUB * d->Dkp + d->C * d->Dkp);
}

static size_t per_thread_floats(const la_linear_backward_problem *bp, const lin_dims *d, bwd_extra *x, bool *ok) {
    size_t n = scratch_floats(bp, d, x), t;
    *ok = !__builtin_add_overflow(x->acc, x->nrm, &t) && !__builtin_add_overflow(t, x->dW, &t) &&
          !__builtin_add_overflow(n, t, &n) && n < SIZE_MAX / sizeof(float);
    return n;
}

la_status LA_ISA_FN(la_cpu_linear_backward_workspace)(const la_linear_problem *p, size_t *bytes) {
    const la_linear_backward_problem *bp = (const la_linear_backward_problem *)p;
    const lin_dims d = lin_dims_of(p, p->chunk);
    const int nthreads = p->threads > 0 ? p->threads : 1;
    bwd_extra x;
    bool ok;
    const size_t n = per_thread_floats(bp, &d, &x, &ok);
    if (!ok || !la_mul_size(n * sizeof(float), (size_t)nthreads, bytes))
        return la_fail(LA_ERR_OVERFLOW, "linear attention backward workspace size overflows");
    return LA_OK;
}

static bwd_scratch scratch_at(float *base, const lin_dims *d, const bwd_extra *x) {
    bwd_scratch w;
    const int64_t C = d->C, Dkp = d->Dkp, Dvp = d->Dvp, Cp = d->Cp;
    w.S = base;
    w.RT = w.S + d->Dk * Dvp;
    w.Q = w.RT + Dvp * Dkp;
    w.K = w.Q + C * Dkp;
    w.dQK = w.K + C * Dkp;
    w.T = w.dQK + C * Dkp;
    w.dec = w.T + C * Dkp;
    w.pre = w.dec + C * Dkp;
    w.suf = w.pre + C * Dkp;
    w.V = w.suf + C * Dkp;
    w.dO = w.V + C * Dvp;
    w.dV = w.dO + C * Dvp;
    w.VT = w.dV + C * Dvp;
    w.KT = w.VT + Dvp * Cp;
    w.A = w.KT + Dkp * Cp;
    w.Pm = w.A + C * Cp;
    w.e = w.Pm + C * Cp;
    w.run = w.e + Dkp;
    w.a = w.run + Dkp;
    w.pa = w.a + C;
    w.sa = w.pa + C;
    w.PB = w.sa + C;
    w.SB = w.PB + C * Dkp;
    w.QB = w.SB + C * Dkp;
    w.tot = w.QB + C * Dkp;
    w.M = w.tot + (Cp / LIN_SUB + 1) * Dkp;
    w.KM = w.M + Dkp;
    w.KMT = w.KM + LIN_SUB * Dkp;
    w.lg = w.KMT + LIN_SUB * Dkp; /* log decays: [C][Dkp] rows, or C scalars */
    float *extra = w.lg + C * Dkp;
    w.acc = x->acc ? extra : NULL;
    w.nrm = x->nrm ? extra + x->acc : NULL;
    w.dW = x->dW ? extra + x->acc + x->nrm : NULL;
    return w;
}

/* Loads a chunk's rows and its decay products: P (pre) and R (suf). */
static void load_chunk(const la_linear_backward_problem *bp, const lin_dims *dm, bwd_scratch *w, int64_t bt,
                       int64_t t0, int64_t n, int64_t h, int64_t hk) {
    const la_linear_problem *p = &bp->fwd;
    const int64_t Dkp = dm->Dkp, Dvp = dm->Dvp;
    const bool channel = lin_channel(p);
    for (int64_t i = 0; i < n; i++) {
        const int64_t t = t0 + i;
        lin_load_feature(w->Q + i * Dkp, la_attn_at(&p->q, bt, t, h), p->q.dtype, p, h, Dkp, p->scale);
        lin_load_feature(w->K + i * Dkp, la_attn_at(&p->k, bt, t, hk), p->k.dtype, p, h, Dkp, 1.0f);
        lin_load_value(w->V + i * Dvp, p, dm, bt, t, hk);
        tg_load_row(w->dO + i * Dvp, la_attn_at(&bp->dout, bt, t, h), bp->dout.dtype, dm->Dv, Dvp);
        if (channel) {
            lin_decay_row(w->dec + i * Dkp, w->lg + i * Dkp, p, dm, bt, t, h);
        } else {
            w->lg[i] = lin_log_decay_scalar(p, bt, t, h);
            w->a[i] = expf(w->lg[i]);
        }
    }
    /* pre[n-1] (pa[n-1]) is the chunk's whole decay; e and KMT are free here (run is not) */
    if (channel) lin_run_decay_rows(w->lg, n, Dkp, w->pre, w->suf, w->e, w->KMT);
    else lin_run_decays(w->lg, n, w->pa, w->sa);
}

/* dst[i] += f[i] . src[i] for n rows of Dkp: f the per-row decay (scalar or row). */
static void add_decayed(float *dst, const float *src, const float *rows, const float *scal, bool channel, int64_t n,
                        int64_t Dkp) {
    for (int64_t i = 0; i < n; i++) {
        float *d = dst + i * Dkp;
        const float *s = src + i * Dkp;
        if (channel)
            for (int64_t x = 0; x < Dkp; x += LA_VL)
                vf_store(d + x, vf_fma(vf_load(rows + i * Dkp + x), vf_load(s + x), vf_load(d + x)));
        else
            for (int64_t x = 0; x < Dkp; x += LA_VL)
                vf_store(d + x, vf_fma(vf_set1(scal[i]), vf_load(s + x), vf_load(d + x)));
    }
}

static float *dW_of(const la_linear_problem *p, const bwd_scratch *w, int64_t h) {
    return w->dW ? w->dW + h * p->Dx * p->Dm : NULL;
}

/* Row t of the gradient of a feature-mapped input (head hin of `in`) from
 * dphi~, the gradient reaching scale * phi: through the map of query head h
 * (lin_feature_grad; dphi~ is overwritten). */
static void store_feature_grad(const la_linear_problem *p, const bwd_scratch *w, const la_attn_operand *out,
                               const la_attn_operand *in, int64_t bt, int64_t t, int64_t hin, int64_t h, float *dphi,
                               float scale) {
    _Alignas(64) float dx[LA_MAX_HEAD_DIM];
    lin_feature_grad(dx, dphi, la_attn_at(in, bt, t, hin), in->dtype, p, h, scale, dW_of(p, w, h));
    tg_store_row(la_attn_at(out, bt, t, hin), out->dtype, dx, p->Dx);
}

/* dK~ rows (dK) and dV rows (w->dV) of a chunk of n tokens from c0: stored,
 * or for grouped heads summed over the group (in input space) into w->acc. */
static void store_kv_grads(const la_linear_backward_problem *bp, const lin_dims *dm, bwd_scratch *w, int64_t bt,
                           int64_t t0, int64_t c0, int64_t n, int64_t h, int64_t hk, bool first_head, float *dK) {
    const la_linear_problem *p = &bp->fwd;
    const int64_t Dkp = dm->Dkp, Dvp = dm->Dvp, Dxp = dx_pad(p);
    for (int64_t j = 0; j < n; j++) {
        const int64_t t = t0 + c0 + j;
        float *dk = dK + j * Dkp, *dv = w->dV + j * Dvp;
        if (!w->acc) {
            store_feature_grad(p, w, &bp->dk, &p->k, bt, t, hk, h, dk, 1.0f);
            tg_store_row(la_attn_at(&bp->dv, bt, t, hk), bp->dv.dtype, dv, dm->Dv);
            continue;
        }
        _Alignas(64) float dx[LA_MAX_HEAD_DIM];
        lin_feature_grad(dx, dk, la_attn_at(&p->k, bt, t, hk), p->k.dtype, p, h, 1.0f, dW_of(p, w, h));
        float *ak = w->acc + (c0 + j) * (Dxp + Dvp), *av = ak + Dxp;
        if (first_head) {
            memcpy(ak, dx, (size_t)p->Dx * sizeof(float));
            memcpy(av, dv, (size_t)dm->Dv * sizeof(float));
        } else {
            for (int64_t x = 0; x < p->Dx; x++) ak[x] += dx[x];
            for (int64_t x = 0; x < dm->Dv; x++) av[x] += dv[x];
        }
    }
}

/* Per-channel decays within the sub-blocks of a chunk: PB[i] = prod of a_s
 * from i's block start through i, SB[j] = prod after j to its block's end,
 * tot[I] = block I's whole product, QB = Q~ . PB. */
static void block_decays(const lin_dims *dm, bwd_scratch *w, int64_t n) {
    const int64_t Dkp = dm->Dkp;
    for (int64_t i0 = 0; i0 < n; i0 += LIN_SUB) {
        const int64_t i1 = n < i0 + LIN_SUB ? n : i0 + LIN_SUB;
        for (int64_t d = 0; d < Dkp; d++) w->M[d] = 1.0f;
        for (int64_t i = i0; i < i1; i++) {
            lin_mul(w->M, w->dec + i * Dkp, Dkp);
            memcpy(w->PB + i * Dkp, w->M, (size_t)Dkp * sizeof(float));
            for (int64_t d = 0; d < Dkp; d += LA_VL)
                vf_store(w->QB + i * Dkp + d, vf_load(w->Q + i * Dkp + d) * vf_load(w->M + d));
        }
        memcpy(w->tot + i0 / LIN_SUB * Dkp, w->M, (size_t)Dkp * sizeof(float));
        for (int64_t d = 0; d < Dkp; d++) w->M[d] = 1.0f;
        for (int64_t j = i1 - 1; j >= i0; j--) {
            memcpy(w->SB + j * Dkp, w->M, (size_t)Dkp * sizeof(float));
            lin_mul(w->M, w->dec + j * Dkp, Dkp);
        }
    }
}

/* KM [LIN_SUB][Dkp] = K~[J] . SB[J] . M (the key block decayed to the row block I's start) */
static void key_block(const lin_dims *dm, bwd_scratch *w, int64_t j0) {
    const int64_t Dkp = dm->Dkp;
    for (int64_t j = 0; j < LIN_SUB; j++)
        for (int64_t d = 0; d < Dkp; d += LA_VL)
            vf_store(w->KM + j * Dkp + d,
                     vf_load(w->K + (j0 + j) * Dkp + d) * vf_load(w->SB + (j0 + j) * Dkp + d) * vf_load(w->M + d));
}

/* dQ~[i] = sum_{j<=i} Pm[i][j] (E[i][j] . K~[j]) with per-channel decays:
 * diagonal blocks directly, blocks below as PB . (Pm[I][J] KM). */
static void channel_dq(const lin_dims *dm, bwd_scratch *w, int64_t n) {
    const int64_t Dkp = dm->Dkp, Cp = dm->Cp, nb = (n + LIN_SUB - 1) / LIN_SUB;
    memset(w->dQK, 0, (size_t)(n * Dkp) * sizeof(float));
    for (int64_t I = 0; I < nb; I++) {
        const int64_t i0 = I * LIN_SUB, i1 = n < i0 + LIN_SUB ? n : i0 + LIN_SUB;
        for (int64_t j = i0; j < i1; j++) {
            for (int64_t d = 0; d < Dkp; d++) w->e[d] = 1.0f;
            const float *kj = w->K + j * Dkp;
            for (int64_t i = j; i < i1; i++) {
                if (i > j) lin_mul(w->e, w->dec + i * Dkp, Dkp);
                const vf pij = vf_set1(w->Pm[i * Cp + j]);
                float *dq = w->dQK + i * Dkp;
                for (int64_t x = 0; x < Dkp; x += LA_VL)
                    vf_store(dq + x, vf_fma(pij * vf_load(w->e + x), vf_load(kj + x), vf_load(dq + x)));
            }
        }
        for (int64_t d = 0; d < Dkp; d++) w->M[d] = 1.0f;
        for (int64_t J = I - 1; J >= 0; J--) {
            key_block(dm, w, J * LIN_SUB);
            tg_gemm(i1 - i0, Dkp, LIN_SUB, w->Pm + i0 * Cp + J * LIN_SUB, Cp, 1, w->KM, Dkp, w->T, Dkp, false);
            for (int64_t i = i0; i < i1; i++)
                for (int64_t x = 0; x < Dkp; x += LA_VL)
                    vf_store(w->dQK + i * Dkp + x, vf_fma(vf_load(w->PB + i * Dkp + x), vf_load(w->T + (i - i0) * Dkp + x),
                                                         vf_load(w->dQK + i * Dkp + x)));
            lin_mul(w->M, w->tot + J * Dkp, Dkp);
        }
    }
}

/* A[i][j] and dK~[j] = sum_{i>=j} Pm[i][j] (E[i][j] . Q~[i]) with
 * per-channel decays: diagonal blocks directly; below, A[I][J] = QB[I]
 * KM^T and dK~[J] += SB[J] . M . (Pm[I][J]^T QB[I]). */
static void channel_scores_dk(const lin_dims *dm, bwd_scratch *w, int64_t n, float *dK) {
    const int64_t Dk = dm->Dk, Dkp = dm->Dkp, Cp = dm->Cp, nb = (n + LIN_SUB - 1) / LIN_SUB;
    memset(dK, 0, (size_t)(n * Dkp) * sizeof(float));
    memset(w->A, 0, (size_t)(n * Cp) * sizeof(float));
    for (int64_t I = 0; I < nb; I++) {
        const int64_t i0 = I * LIN_SUB, i1 = n < i0 + LIN_SUB ? n : i0 + LIN_SUB;
        for (int64_t j = i0; j < i1; j++) {
            for (int64_t d = 0; d < Dkp; d++) w->e[d] = 1.0f;
            const float *kj = w->K + j * Dkp;
            float *dk = dK + j * Dkp;
            for (int64_t i = j; i < i1; i++) {
                if (i > j) lin_mul(w->e, w->dec + i * Dkp, Dkp);
                const float *qi = w->Q + i * Dkp;
                w->A[i * Cp + j] = lin_dot3(qi, w->e, kj, Dkp);
                const vf pij = vf_set1(w->Pm[i * Cp + j]);
                for (int64_t x = 0; x < Dkp; x += LA_VL)
                    vf_store(dk + x, vf_fma(pij * vf_load(w->e + x), vf_load(qi + x), vf_load(dk + x)));
            }
        }
        for (int64_t d = 0; d < Dkp; d++) w->M[d] = 1.0f;
        for (int64_t J = I - 1; J >= 0; J--) {
            const int64_t j0 = J * LIN_SUB;
            key_block(dm, w, j0);
            lin_transpose(w->KMT, LIN_SUB, w->KM, Dkp, LIN_SUB, Dk);
            tg_gemm(i1 - i0, LIN_SUB, Dk, w->QB + i0 * Dkp, Dkp, 1, w->KMT, LIN_SUB, w->A + i0 * Cp + j0, Cp, false);
            tg_gemm(LIN_SUB, Dkp, i1 - i0, w->Pm + i0 * Cp + j0, 1, Cp, w->QB + i0 * Dkp, Dkp, w->T, Dkp, false);
            for (int64_t j = 0; j < LIN_SUB; j++)
                for (int64_t x = 0; x < Dkp; x += LA_VL)
                    vf_store(dK + (j0 + j) * Dkp + x,
                             vf_fma(vf_load(w->SB + (j0 + j) * Dkp + x) * vf_load(w->M + x), vf_load(w->T + j * Dkp + x),
                                    vf_load(dK + (j0 + j) * Dkp + x)));
            lin_mul(w->M, w->tot + J * Dkp, Dkp);
        }
    }
}

/* With normalisation out = O[:Dv] / (O[Dv] + eps), O the chunk's
 * unnormalised outputs (the state's z column rides as value column Dv).
 * Computes O from the chunk's scores and ST (the state at the chunk's start,
 * transposed) and turns dO into the gradient reaching O: [dout / den,
 * -(dout . out) / den]; nf keeps (1/den, that last entry) per token for the
 * reverse sweep. The backward is then the unnormalised one over Dv + 1 columns. */
static void normalise_dout(const la_linear_problem *p, const lin_dims *dm, bwd_scratch *w, int64_t n, const float *ST,
                           float *nf) {
    const int64_t Dk = dm->Dk, Dkp = dm->Dkp, Dv = dm->Dv, Dvp = dm->Dvp, Cp = dm->Cp;
    const bool channel = lin_channel(p);
    if (channel) { /* A as a side product of the dK pass, with Pm = 0 */
        memset(w->Pm, 0, (size_t)(n * Cp) * sizeof(float));
        block_decays(dm, w, n);
        channel_scores_dk(dm, w, n, w->T);
    } else {
        lin_transpose(w->KT, Cp, w->K, Dkp, n, Dk);
        tg_gemm(n, Cp, Dk, w->Q, Dkp, 1, w->KT, Cp, w->A, Cp, false);
        lin_mask_scalar(w->A, Cp, w->a, n);
    }
    float *O = w->dV, *qp = w->T;
    tg_gemm(n, Dvp, n, w->A, Cp, 1, w->V, Dvp, O, Dvp, false);
    for (int64_t i = 0; i < n; i++) {
        memcpy(qp, w->Q + i * Dkp, (size_t)Dkp * sizeof(float));
        if (channel) lin_mul(qp, w->pre + i * Dkp, Dkp);
        else lin_scale(qp, Dkp, w->pa[i]);
        float *o = O + i * Dvp, *dO = w->dO + i * Dvp;
        for (int64_t e = 0; e <= Dv; e++) o[e] += lin_dot(qp, ST + e * Dkp, Dkp);
        const float inv = 1.0f / (o[Dv] + p->norm_eps);
        float c = 0;
        for (int64_t e = 0; e < Dv; e++) c += dO[e] * o[e] * inv;
        lin_scale(dO, Dvp, inv);
        dO[Dv] = -c * inv;
        nf[2 * i] = inv, nf[2 * i + 1] = dO[Dv];
    }
}

/* Non-causal (no decay), per query head: S_L = S_0 + K~^T V; dQ~ = dO S_L^T;
 * G = dfinal_state + Q~^T dO; dK~ = V G^T, dV = K~ G; dinitial_state = G. */
static void noncausal_backward(const la_linear_backward_problem *bp, const lin_dims *dm, bwd_scratch *w, int64_t b,
                               int64_t h, int64_t hk, bool first_head) {
    const la_linear_problem *p = &bp->fwd;
    const int64_t bt = p->cu ? 0 : b, Dk = dm->Dk, Dkp = dm->Dkp, Dv = dm->Dvs, Dvp = dm->Dvp, Cp = dm->Cp;
    int64_t t0, len;
    la_linear_seq(p, b, &t0, &len);
    lin_load_state(w->S, &p->state_in, dm, b, h);
    for (int64_t c0 = 0; c0 < len; c0 += dm->C) {
        const int64_t n = len - c0 < dm->C ? len - c0 : dm->C;
        load_chunk(bp, dm, w, bt, t0 + c0, n, h, hk);
        tg_gemm(Dk, Dvp, n, w->K, 1, Dkp, w->V, Dvp, w->S, Dvp, true);
    }
    float *ST = w->RT, *G = w->S;
    lin_transpose(ST, Dkp, w->S, Dvp, Dk, Dv);
    lin_load_state(G, &bp->dstate_out, dm, b, h);
    for (int64_t c0 = 0; c0 < len; c0 += dm->C) {
        const int64_t n = len - c0 < dm->C ? len - c0 : dm->C;
        load_chunk(bp, dm, w, bt, t0 + c0, n, h, hk);
        if (p->normalize) { /* O^T = S_L^T Q~^T, then dO as in normalise_dout */
            lin_transpose(w->KT, Cp, w->Q, Dkp, n, Dk);
            tg_gemm(Dv, Cp, Dk, ST, Dkp, 1, w->KT, Cp, w->VT, Cp, false);
            for (int64_t i = 0; i < n; i++) {
                float *dO = w->dO + i * Dvp;
                const float inv = 1.0f / (w->VT[dm->Dv * Cp + i] + p->norm_eps);
                float c = 0;
                for (int64_t e = 0; e < dm->Dv; e++) c += dO[e] * w->VT[e * Cp + i] * inv;
                lin_scale(dO, Dvp, inv);
                dO[dm->Dv] = -c * inv;
            }
        }
        tg_gemm(n, Dkp, Dv, w->dO, Dvp, 1, ST, Dkp, w->dQK, Dkp, false);
        tg_gemm(Dk, Dvp, n, w->Q, 1, Dkp, w->dO, Dvp, G, Dvp, true);
        for (int64_t i = 0; i < n; i++)
            store_feature_grad(p, w, &bp->dq, &p->q, bt, t0 + c0 + i, h, h, w->dQK + i * Dkp, p->scale);
    }
    float *GT = w->RT;
    lin_transpose(GT, Dkp, G, Dvp, Dk, Dv);
    for (int64_t c0 = 0; c0 < len; c0 += dm->C) {
        const int64_t n = len - c0 < dm->C ? len - c0 : dm->C;
        load_chunk(bp, dm, w, bt, t0 + c0, n, h, hk);
        tg_gemm(n, Dkp, Dv, w->V, Dvp, 1, GT, Dkp, w->dQK, Dkp, false);
        tg_gemm(n, Dvp, Dk, w->K, Dkp, 1, G, Dvp, w->dV, Dvp, false);
        store_kv_grads(bp, dm, w, bt, t0, c0, n, h, hk, first_head, w->dQK);
    }
    lin_store_state(&bp->dstate_in, G, dm, b, h);
}

/* The forward sweep: dq and the q part of dL/db into dg; returns S_T in w->S
 * (transposed, [Dv][Dkp] rows in w->RT). */
static void forward_sweep(const la_linear_backward_problem *bp, const lin_dims *dm, bwd_scratch *w, int64_t b,
                          int64_t h, int64_t hk) {
    const la_linear_problem *p = &bp->fwd;
    /* Dv: the value columns of the math, the z column included with normalisation */
    const int64_t bt = p->cu ? 0 : b, Dk = dm->Dk, Dkp = dm->Dkp, Dv = dm->Dvs, Dvp = dm->Dvp, Cp = dm->Cp;
    const bool channel = lin_channel(p);
    int64_t t0, len;
    la_linear_seq(p, b, &t0, &len);
    float *ST = w->RT; /* [Dvp][Dkp]: S^T, rows past Dv unused */
    lin_load_state(w->S, &p->state_in, dm, b, h);
    lin_transpose(ST, Dkp, w->S, Dvp, Dk, Dv);
    for (int64_t c0 = 0; c0 < len; c0 += dm->C) {
        const int64_t n = len - c0 < dm->C ? len - c0 : dm->C;
        load_chunk(bp, dm, w, bt, t0 + c0, n, h, hk);
        if (p->normalize) normalise_dout(p, dm, w, n, ST, w->nrm + 2 * c0);
        /* Pm[i][j] = dO[i] . V[j] (masked and decayed for scalar decays) */
        lin_transpose(w->VT, Cp, w->V, Dvp, n, Dv);
        tg_gemm(n, Cp, Dv, w->dO, Dvp, 1, w->VT, Cp, w->Pm, Cp, false);
        if (channel) {
            block_decays(dm, w, n);
            channel_dq(dm, w, n);
        } else {
            lin_mask_scalar(w->Pm, Cp, w->a, n);
            tg_gemm(n, Dkp, n, w->Pm, Cp, 1, w->K, Dkp, w->dQK, Dkp, false);
        }
        /* + P[i] . (S dO[i]) */
        tg_gemm(n, Dkp, Dv, w->dO, Dvp, 1, ST, Dkp, w->T, Dkp, false);
        add_decayed(w->dQK, w->T, w->pre, w->pa, channel, n, Dkp);
        for (int64_t i = 0; i < n; i++) {
            const int64_t t = t0 + c0 + i;
            float *dq = w->dQK + i * Dkp;
            if (p->g.data) { /* the q part of dL/db_t */
                float *dg = (float *)la_attn_at(&bp->dg, bt, t, h);
                if (channel)
                    for (int64_t d = 0; d < Dk; d++) dg[d] = w->Q[i * Dkp + d] * dq[d];
                else
                    dg[0] = lin_dot(w->Q + i * Dkp, dq, Dkp);
            }
            store_feature_grad(p, w, &bp->dq, &p->q, bt, t, h, h, dq, p->scale);
        }
        /* S^T = (decay over the chunk) . S^T + V^T (R . K~) */
        for (int64_t e = 0; e < Dv; e++) {
            if (channel) lin_mul(ST + e * Dkp, w->pre + (n - 1) * Dkp, Dkp);
            else lin_scale(ST + e * Dkp, Dkp, w->pa[n - 1]);
        }
        for (int64_t j = 0; j < n; j++) {
            if (channel) lin_mul(w->K + j * Dkp, w->suf + j * Dkp, Dkp);
            else lin_scale(w->K + j * Dkp, Dkp, w->sa[j]);
        }
        tg_gemm(Dv, Dkp, n, w->V, 1, Dvp, w->K, Dkp, ST, Dkp, true);
    }
}

static void reverse_sweep(const la_linear_backward_problem *bp, const lin_dims *dm, bwd_scratch *w, int64_t b,
                          int64_t h, int64_t hk, bool first_head) {
    const la_linear_problem *p = &bp->fwd;
    const int64_t bt = p->cu ? 0 : b, Dk = dm->Dk, Dkp = dm->Dkp, Dv = dm->Dvs, Dvp = dm->Dvp, Cp = dm->Cp;
    const bool channel = lin_channel(p);
    int64_t t0, len;
    la_linear_seq(p, b, &t0, &len);
    /* the final state's term of dL/db at the last token: sum_e dS_T[d][e] S_T[d][e] */
    float *run = w->run; /* the running suffix sum of dL/db */
    for (int64_t d = 0; d < Dkp; d++) run[d] = 0;
    lin_load_state(w->S, &bp->dstate_out, dm, b, h); /* G = dfinal_state */
    if (bp->dstate_out.data && p->g.data)
        for (int64_t d = 0; d < Dk; d++)
            for (int64_t e = 0; e < Dv; e++) run[d] += w->S[d * Dvp + e] * w->RT[e * Dkp + d];
    float runs = 0;
    for (int64_t d = 0; d < Dk; d++) runs += run[d];
    const int64_t nchunks = (len + dm->C - 1) / dm->C;
    for (int64_t c = nchunks - 1; c >= 0; c--) {
        const int64_t c0 = c * dm->C, n = len - c0 < dm->C ? len - c0 : dm->C;
        load_chunk(bp, dm, w, bt, t0 + c0, n, h, hk);
        if (p->normalize)
            for (int64_t i = 0; i < n; i++) {
                const float *nf = w->nrm + 2 * (c0 + i);
                lin_scale(w->dO + i * Dvp, Dvp, nf[0]); /* dO's padding is 0: the z entry too */
                w->dO[i * Dvp + dm->Dv] = nf[1];
            }
        float *G = w->S, *GT = w->RT;
        lin_transpose(GT, Dkp, G, Dvp, Dk, Dv);
        lin_transpose(w->VT, Cp, w->V, Dvp, n, Dv);
        tg_gemm(n, Cp, Dv, w->dO, Dvp, 1, w->VT, Cp, w->Pm, Cp, false);
        float *dK = w->dQK;
        if (channel) {
            block_decays(dm, w, n);
            channel_scores_dk(dm, w, n, dK);
        } else {
            lin_mask_scalar(w->Pm, Cp, w->a, n);
            lin_transpose(w->KT, Cp, w->K, Dkp, n, Dk);
            tg_gemm(n, Cp, Dk, w->Q, Dkp, 1, w->KT, Cp, w->A, Cp, false);
            lin_mask_scalar(w->A, Cp, w->a, n);
            tg_gemm(n, Dkp, n, w->Pm, 1, Cp, w->Q, Dkp, dK, Dkp, false); /* Pm^T Q~ */
        }
        /* + R[j] . (G V[j]) */
        tg_gemm(n, Dkp, Dv, w->V, Dvp, 1, GT, Dkp, w->T, Dkp, false);
        add_decayed(dK, w->T, w->suf, w->sa, channel, n, Dkp);
        /* dV = A^T dO + G^T (R . K~) */
        tg_gemm(n, Dvp, n, w->A, 1, Cp, w->dO, Dvp, w->dV, Dvp, false);
        /* dg: complete the suffix sums, tokens backwards */
        if (p->g.data)
            for (int64_t i = n - 1; i >= 0; i--) {
                float *dg = (float *)la_attn_at(&bp->dg, bt, t0 + c0 + i, h);
                const float *ki = w->K + i * Dkp, *dk = dK + i * Dkp;
                if (channel) {
                    for (int64_t d = 0; d < Dk; d++) dg[d] = run[d] += dg[d] - ki[d] * dk[d];
                } else {
                    dg[0] = runs += dg[0] - lin_dot(ki, dk, Dkp);
                }
            }
        for (int64_t j = 0; j < n; j++) {
            if (channel) lin_mul(w->K + j * Dkp, w->suf + j * Dkp, Dkp);
            else lin_scale(w->K + j * Dkp, Dkp, w->sa[j]);
        }
        tg_gemm(n, Dvp, Dk, w->K, Dkp, 1, G, Dvp, w->dV, Dvp, true);
        /* G = P[n-1] . G + (P . Q~)^T dO */
        for (int64_t d = 0; d < Dk; d++) lin_scale(G + d * Dvp, Dvp, channel ? w->pre[(n - 1) * Dkp + d] : w->pa[n - 1]);
        for (int64_t i = 0; i < n; i++) {
            if (channel) lin_mul(w->Q + i * Dkp, w->pre + i * Dkp, Dkp);
            else lin_scale(w->Q + i * Dkp, Dkp, w->pa[i]);
        }
        tg_gemm(Dk, Dvp, n, w->Q, 1, Dkp, w->dO, Dvp, G, Dvp, true);
        store_kv_grads(bp, dm, w, bt, t0, c0, n, h, hk, first_head, dK);
    }
    lin_store_state(&bp->dstate_in, w->S, dm, b, h);
}

la_status LA_ISA_FN(la_cpu_linear_backward_kernel)(const la_linear_backward_problem *bp, void *mem) {
    const la_linear_problem *p = &bp->fwd;
    const lin_dims dm = lin_dims_of(p, p->chunk);
    const int nthreads = p->threads > 0 ? p->threads : 1;
    bwd_extra x;
    bool ok;
    const size_t per_thread = per_thread_floats(bp, &dm, &x, &ok);
    const int64_t G = p->H / p->Hkv, items = p->num_seqs * p->Hkv, Dxp = dx_pad(p);
    for (int t = 0; t < nthreads && x.dW; t++)
        memset(scratch_at((float *)mem + (size_t)t * per_thread, &dm, &x).dW, 0, x.dW * sizeof(float));
#pragma omp parallel num_threads(nthreads)
    {
        bwd_scratch w = scratch_at((float *)mem + (size_t)la_thread_id() * per_thread, &dm, &x);
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < items; it++) {
            const int64_t b = it / p->Hkv, hk = it % p->Hkv, bt = p->cu ? 0 : b;
            for (int64_t g = 0; g < G; g++) {
                if (p->non_causal) {
                    noncausal_backward(bp, &dm, &w, b, hk * G + g, hk, g == 0);
                } else {
                    forward_sweep(bp, &dm, &w, b, hk * G + g, hk);
                    reverse_sweep(bp, &dm, &w, b, hk * G + g, hk, g == 0);
                }
            }
            if (!w.acc) continue;
            int64_t t0, len;
            la_linear_seq(p, b, &t0, &len);
            for (int64_t j = 0; j < len; j++) {
                const float *ak = w.acc + j * (Dxp + dm.Dvp);
                tg_store_row(la_attn_at(&bp->dk, bt, t0 + j, hk), bp->dk.dtype, ak, p->Dx);
                tg_store_row(la_attn_at(&bp->dv, bt, t0 + j, hk), bp->dv.dtype, ak + Dxp, dm.Dv);
            }
        }
        /* dW: the threads' sums, added in thread order (deterministic) */
        if (x.dW) {
#pragma omp for schedule(static)
            for (int64_t e = 0; e < (int64_t)x.dW; e++) {
                float sum = 0;
                for (int t = 0; t < nthreads; t++)
                    sum += scratch_at((float *)mem + (size_t)t * per_thread, &dm, &x).dW[e];
                bp->dproj[e] = sum;
            }
        }
    }
    return LA_OK;
}
