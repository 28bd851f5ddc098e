/* Titans neural memory (linear memory), forward: the chunk-parallel form
 * and the recurrent form (token by token; the decode step is it with one
 * token and chunk 1), written once and compiled per ISA.
 *
 * Per (sequence, query head), a chunk of n tokens from memory M and
 * momentum S (include/longattn.h has the recurrence): every gradient of the
 * chunk is taken at M, so with R[j] = 2 theta_j (M^T k_j - v_j) the update
 * of token j is k_j R[j]^T and, unrolling S and M over the chunk,
 *   M_t = b_t M + c_t S - sum_{j<=t} W[t][j] k_j R[j]^T
 *   S_t = P_t S - sum_{j<=t} E[t][j] k_j R[j]^T
 * with the scalar kernels E[t][j] = prod_{j<s<=t} eta_s, W[t][j] =
 * (1 - alpha_t) W[t-1][j] + E[t][j] (W[j][j] = 1), b_t = prod_{s<=t}
 * (1 - alpha_s), P_t = prod_{s<=t} eta_s, c_t = (1 - alpha_t) c_{t-1} + P_t.
 * So Y = diag(b) Q M + diag(c) Q S - (W . Q K^T) R: five tile GEMMs per
 * chunk (R, Q M, Q S, Q K^T, (W . Q K^T) R) and two for the states, all
 * products of factors in [0, 1] for gates in range (no divisions, no
 * exp of differences). Items (sequence, head) are spread over the threads;
 * each has its own scratch in the workspace. */
#include "backend/titans_problem.h"
#include "base/parallel.h"
#include "cpu/linear/state_rows.h"
#include "cpu/tile_gemm.h"

#define TT_PAD 16 /* every padded size a multiple of 16 floats: all four ISAs' LA_VL divide it */

/* The decode step prefetches the next memory and momentum of its thread's
 * run of items on AVX2 only (as the delta rule's, delta_common.h): on Zen 1
 * its column blocks, 128 bytes of every 512-byte row, ran at 0.62-0.65 of
 * the read-modify-write bandwidth, with the hints at 0.88-0.90; the
 * AVX-512 copies are as they were measured (no hints, dynamic schedule). */
#define TT_STEP_PF_NEXT (LA_VL == 8)

/* The lines [j0, j0 + bytes) of row d of a state (rows ld floats apart). */
static inline void tt_prefetch_cols(const float *X, int64_t ld, int64_t d, int64_t j0, int bytes) {
    for (int x = 0; x < bytes; x += 64) la_prefetch_t0((const char *)(X + d * ld + j0) + x);
}

typedef struct {
    int64_t C, Cp, Dk, Dkp, Dv, Dvp;
} tt_dims;

typedef struct {
    float *M, *S, *Mc, *Q, *K, *KT, *R, *Y, *T, *A, *E, *W, *eta, *theta, *alpha, *b, *c, *P;
} tt_scratch;

static tt_dims dims_of(const la_titans_problem *p) {
    const int64_t C = p->form == LA_LINEAR_CHUNKED ? p->chunk : 1;
    tt_dims d = {.C = C, .Cp = tg_round_up(C, TT_PAD), .Dk = p->Dk, .Dkp = tg_round_up(p->Dk, TT_PAD), .Dv = p->Dv,
                 .Dvp = tg_round_up(p->Dv, TT_PAD)};
    return d;
}

static size_t scratch_floats(const tt_dims *d) {
    return (size_t)(3 * d->Dk * d->Dvp + 2 * d->C * d->Dkp + d->Dkp * d->Cp + 3 * d->C * d->Dvp + 3 * d->C * d->Cp +
                    6 * d->C);
}

static tt_scratch scratch_at(float *base, const tt_dims *d) {
    tt_scratch w;
    w.M = base;
    w.S = w.M + d->Dk * d->Dvp;
    w.Mc = w.S + d->Dk * d->Dvp;
    w.Q = w.Mc + d->Dk * d->Dvp;
    w.K = w.Q + d->C * d->Dkp;
    w.KT = w.K + d->C * d->Dkp;
    w.R = w.KT + d->Dkp * d->Cp;
    w.Y = w.R + d->C * d->Dvp;
    w.T = w.Y + d->C * d->Dvp;
    w.A = w.T + d->C * d->Dvp;
    w.E = w.A + d->C * d->Cp;
    w.W = w.E + d->C * d->Cp;
    w.eta = w.W + d->C * d->Cp;
    w.theta = w.eta + d->C;
    w.alpha = w.theta + d->C;
    w.b = w.alpha + d->C;
    w.c = w.b + d->C;
    w.P = w.c + d->C;
    return w;
}

la_status LA_ISA_FN(la_cpu_titans_workspace)(const la_titans_problem *p, size_t *bytes) {
    const tt_dims d = dims_of(p);
    const int nthreads = p->threads > 0 ? p->threads : 1;
    if (!la_mul_size(scratch_floats(&d) * sizeof(float), (size_t)nthreads, bytes))
        return la_fail(LA_ERR_OVERFLOW, "Titans workspace size overflows");
    return LA_OK;
}

/* X [Dk][Dvp] = the state of (sequence n, head h), or 0. */
static void load_state(float *X, const la_linear_state *st, const tt_dims *d, int64_t n, int64_t h) {
    state_rows_load(X, d->Dvp, st, n, h, d->Dk, d->Dv);
}

static void store_state(const la_linear_state *st, const float *X, const tt_dims *d, int64_t n, int64_t h) {
    state_rows_store(st, X, d->Dvp, n, h, d->Dk, d->Dv);
}

static float gate_at(const la_attn_operand *g, int64_t bt, int64_t t, int64_t h) {
    return *(const float *)la_attn_at(g, bt, t, h);
}

/* dst[0..n) = a dst + s src, n a multiple of LA_VL. */
static void axpby(float *dst, float a, const float *src, float s, int64_t n) {
    const vf av = vf_set1(a), sv = vf_set1(s);
    for (int64_t x = 0; x < n; x += LA_VL) vf_store(dst + x, vf_fma(av, vf_load(dst + x), sv * vf_load(src + x)));
}

static void tt_prefetch_row(const char *r, int64_t bytes) {
    for (int64_t o = 0; o < bytes; o += 64) la_prefetch_t0(r + o);
    la_prefetch_t0(r + bytes - 1);
}

/* Part k of TT_PF_PARTS of the next chunk's rows of q, k, v and out
 * (tokens [t, t + n) of head h, key/value head hk), requested while this
 * chunk computes: the parts go out between its products, so the rows
 * stream in under the GEMMs instead of stalling the row loads (and the
 * output's stores) at the chunk's start. */
#define TT_PF_PARTS 8

static void tt_prefetch_part(const la_titans_problem *p, const tt_dims *dm, int64_t bt, int64_t t, int64_t n,
                             int64_t h, int64_t hk, int k) {
    const int64_t lo = n * k / TT_PF_PARTS, hi = n * (k + 1) / TT_PF_PARTS;
    for (int64_t i = lo; i < hi; i++) {
        tt_prefetch_row(la_attn_at(&p->q, bt, t + i, h), dm->Dk * (int64_t)la_dtype_size(p->q.dtype));
        tt_prefetch_row(la_attn_at(&p->k, bt, t + i, hk), dm->Dk * (int64_t)la_dtype_size(p->k.dtype));
        tt_prefetch_row(la_attn_at(&p->v, bt, t + i, hk), dm->Dv * (int64_t)la_dtype_size(p->v.dtype));
        tt_prefetch_row(la_attn_at(&p->out, bt, t + i, h), dm->Dv * (int64_t)la_dtype_size(p->out.dtype));
    }
}

static void chunked_item(const la_titans_problem *p, const tt_dims *dm, tt_scratch *w, int64_t b, int64_t h) {
    const int64_t bt = p->cu ? 0 : b, hk = h / (p->H / p->Hkv), Dk = dm->Dk, Dkp = dm->Dkp, Dvp = dm->Dvp,
                  Cp = dm->Cp;
    int64_t t0, len;
    la_titans_seq(p, b, &t0, &len);
    load_state(w->M, &p->mem_in, dm, b, h);
    load_state(w->S, &p->mom_in, dm, b, h);
    for (int64_t c0 = 0; c0 < len; c0 += dm->C) {
        const int64_t n = len - c0 < dm->C ? len - c0 : dm->C, c1 = c0 + n,
                      n1 = len - c1 < dm->C ? len - c1 : dm->C; /* the next chunk: n1 tokens from c1 */
#define TT_PF(k) tt_prefetch_part(p, dm, bt, t0 + c1, n1, h, hk, k)
        for (int64_t i = 0; i < n; i++) {
            const int64_t t = t0 + c0 + i;
            tg_load_row(w->Q + i * Dkp, la_attn_at(&p->q, bt, t, h), p->q.dtype, Dk, Dkp);
            tg_load_row(w->K + i * Dkp, la_attn_at(&p->k, bt, t, hk), p->k.dtype, Dk, Dkp);
            tg_load_row(w->T + i * Dvp, la_attn_at(&p->v, bt, t, hk), p->v.dtype, dm->Dv, Dvp);
            w->eta[i] = gate_at(&p->eta, bt, t, h);
            w->theta[i] = gate_at(&p->theta, bt, t, h);
            w->alpha[i] = gate_at(&p->alpha, bt, t, h);
        }
        /* the scalar kernels: scans over the chunk */
        float bb = 1, pp = 1, cc = 0;
        for (int64_t t = 0; t < n; t++) {
            const float keep = 1.0f - w->alpha[t];
            bb *= keep, pp *= w->eta[t], cc = keep * cc + pp;
            w->b[t] = bb, w->P[t] = pp, w->c[t] = cc;
        }
        for (int64_t j = 0; j < n; j++) {
            float e = 1, wk = 1;
            w->E[j * Cp + j] = 1, w->W[j * Cp + j] = 1;
            for (int64_t t = j + 1; t < n; t++) {
                e *= w->eta[t];
                wk = (1.0f - w->alpha[t]) * wk + e;
                w->E[t * Cp + j] = e, w->W[t * Cp + j] = wk;
            }
        }
        /* R = 2 diag(theta) (K M - V): the gradients at the chunk's start memory */
        TT_PF(0);
        tg_gemm(n, Dvp, Dk, w->K, Dkp, 1, w->M, Dvp, w->R, Dvp, false);
        for (int64_t j = 0; j < n; j++) axpby(w->R + j * Dvp, 2 * w->theta[j], w->T + j * Dvp, -2 * w->theta[j], Dvp);
        /* Y = diag(b) Q M + diag(c) Q S - (W . Q K^T) R */
        TT_PF(1);
        tg_gemm(n, Dvp, Dk, w->Q, Dkp, 1, w->M, Dvp, w->Y, Dvp, false);
        TT_PF(2);
        tg_gemm(n, Dvp, Dk, w->Q, Dkp, 1, w->S, Dvp, w->T, Dvp, false);
        for (int64_t i = 0; i < n; i++) axpby(w->Y + i * Dvp, w->b[i], w->T + i * Dvp, w->c[i], Dvp);
        for (int64_t d = 0; d < Dk; d++) {
            float *row = w->KT + d * Cp;
            for (int64_t j = 0; j < n; j++) row[j] = w->K[j * Dkp + d];
            for (int64_t j = n; j < Cp; j++) row[j] = 0;
        }
        TT_PF(3);
        tg_gemm(n, Cp, Dk, w->Q, Dkp, 1, w->KT, Cp, w->A, Cp, false);
        for (int64_t i = 0; i < n; i++) {
            float *row = w->A + i * Cp;
            for (int64_t j = 0; j <= i; j++) row[j] *= -w->W[i * Cp + j];
            for (int64_t j = i + 1; j < n; j++) row[j] = 0;
        }
        TT_PF(4);
        tg_gemm(n, Dvp, n, w->A, Cp, 1, w->R, Dvp, w->Y, Dvp, true);
        for (int64_t i = 0; i < n; i++)
            tg_store_row(la_attn_at(&p->out, bt, t0 + c0 + i, h), p->out.dtype, w->Y + i * Dvp, dm->Dv);
        /* the states at the chunk's end: M = b M + c S - K^T diag(W[n-1]) R, S = P S - K^T diag(E[n-1]) R */
        const int64_t l = n - 1;
        for (int64_t d = 0; d < Dk; d++) {
            axpby(w->M + d * Dvp, w->b[l], w->S + d * Dvp, w->c[l], Dvp);
            for (int64_t x = 0; x < Dvp; x++) w->S[d * Dvp + x] *= w->P[l];
        }
        for (int64_t d = 0; d < Dk; d++) /* KT rows scaled by -W[n-1][j], then by E / W for S */
            for (int64_t j = 0; j < n; j++) w->KT[d * Cp + j] *= -w->W[l * Cp + j];
        TT_PF(5);
        tg_gemm(Dk, Dvp, n, w->KT, Cp, 1, w->R, Dvp, w->M, Dvp, true);
        for (int64_t d = 0; d < Dk; d++)
            for (int64_t j = 0; j < n; j++) w->KT[d * Cp + j] = -w->K[j * Dkp + d] * w->E[l * Cp + j];
        TT_PF(6);
        tg_gemm(Dk, Dvp, n, w->KT, Cp, 1, w->R, Dvp, w->S, Dvp, true);
        TT_PF(7);
#undef TT_PF
    }
    store_state(&p->mem_out, w->M, dm, b, h);
    store_state(&p->mom_out, w->S, dm, b, h);
}

/* One token on columns [j0, j0 + nb LA_VL) of the memory M and momentum S
 * (nb <= LA_STEP_NB, a constant at each call, so r and y are registers), the
 * gradient taken at Mc: r = 2 theta (Mc^T k - v); S = eta S - k r^T; M =
 * keep M + S; y = M^T q. One pass over the block's rows of Mc for r, then
 * one over S and M for the update and y. (The old step kept r and y in
 * memory, loaded and stored with every row.) nM and nS, or NULL: states
 * whose same lines are prefetched, M's in the first pass, S's in the
 * second (each beside the pass that reads its own state's lines). */
static inline __attribute__((always_inline)) void tt_step_cols(float *M, int64_t ldm, const float *Mc, int64_t ldc,
                                                               float *S, int64_t lds, int64_t Dk, const float *q,
                                                               const float *k, const float *v, float eta, float theta,
                                                               float keep, float *y, int64_t j0, const int nb,
                                                               const float *nM, const float *nS) {
    vf r[LA_STEP_NB], acc[LA_STEP_NB];
    for (int b = 0; b < nb; b++) r[b] = acc[b] = vf_set1(0);
    for (int64_t d = 0; d < Dk; d++) {
        const float *mrow = Mc + d * ldc + j0;
        if (nM) tt_prefetch_cols(nM, ldm, d, j0, nb * LA_VL * (int)sizeof(float));
        const vf kd = vf_set1(k[d]);
        for (int b = 0; b < nb; b++) r[b] = vf_fma(kd, vf_load(mrow + b * LA_VL), r[b]);
    }
    const vf th = vf_set1(2 * theta);
    for (int b = 0; b < nb; b++) r[b] = th * (r[b] - vf_load(v + j0 + b * LA_VL));
    const vf ev = vf_set1(eta), kv = vf_set1(keep);
    for (int64_t d = 0; d < Dk; d++) {
        float *srow = S + d * lds + j0, *mrow = M + d * ldm + j0;
        if (nS) tt_prefetch_cols(nS, lds, d, j0, nb * LA_VL * (int)sizeof(float));
        const vf kd = vf_set1(k[d]), qd = vf_set1(q[d]);
        for (int b = 0; b < nb; b++) {
            const vf sn = ev * vf_load(srow + b * LA_VL) - kd * r[b];
            const vf mn = vf_fma(kv, vf_load(mrow + b * LA_VL), sn);
            vf_store(srow + b * LA_VL, sn);
            vf_store(mrow + b * LA_VL, mn);
            acc[b] = vf_fma(qd, mn, acc[b]);
        }
    }
    for (int b = 0; b < nb; b++) vf_store(y + j0 + b * LA_VL, acc[b]);
}

/* Token by token; with chunk > 1 the gradients are taken at Mc, the memory
 * at the start of the token's chunk (chunk 1: at M itself). The decode step
 * (memory and momentum updated in place) works on the caller's states
 * directly when their rows need no padding (Dv a multiple of TT_PAD):
 * copying them to scratch and back would add two passes over each. Per
 * token the memory is read twice (Mc^T k, then the update; a block's rows
 * stay in cache between the two) and the momentum once, each written once,
 * the output accumulated in the update's pass (tt_step_cols). next: the
 * thread's next item (-1: none), whose states are prefetched in place. */
static void recurrent_item(const la_titans_problem *p, const tt_dims *dm, tt_scratch *w, int64_t b, int64_t h,
                           int64_t next) {
    const int64_t bt = p->cu ? 0 : b, hk = h / (p->H / p->Hkv), Dk = dm->Dk, Dkp = dm->Dkp, Dvp = dm->Dvp;
    int64_t t0, len;
    la_titans_seq(p, b, &t0, &len);
    const bool in_place = p->mem_in.data && p->mem_in.data == p->mem_out.data && p->mom_in.data &&
                          p->mom_in.data == p->mom_out.data && dm->Dv == Dvp && p->chunk == 1;
    float *M = w->M, *S = w->S;
    const float *nM = NULL, *nS = NULL;
    int64_t ldm = Dvp, lds = Dvp;
    if (in_place) {
        M = p->mem_in.data + b * p->mem_in.seq_stride + h * p->mem_in.head_stride, ldm = p->mem_in.row_stride;
        S = p->mom_in.data + b * p->mom_in.seq_stride + h * p->mom_in.head_stride, lds = p->mom_in.row_stride;
        if (next >= 0) {
            nM = p->mem_in.data + next / p->H * p->mem_in.seq_stride + next % p->H * p->mem_in.head_stride;
            nS = p->mom_in.data + next / p->H * p->mom_in.seq_stride + next % p->H * p->mom_in.head_stride;
        }
    } else {
        load_state(M, &p->mem_in, dm, b, h);
        load_state(S, &p->mom_in, dm, b, h);
    }
    float *q = w->Q, *k = w->K, *v = w->T, *y = w->Y;
    const float *Mc = p->chunk > 1 ? w->Mc : M;
    const int64_t ldc = p->chunk > 1 ? Dvp : ldm;
    for (int64_t i = 0; i < len; i++) {
        const int64_t t = t0 + i;
        if (p->chunk > 1 && i % p->chunk == 0) memcpy(w->Mc, M, (size_t)(Dk * Dvp) * sizeof(float));
        tg_load_row(q, la_attn_at(&p->q, bt, t, h), p->q.dtype, Dk, Dkp);
        tg_load_row(k, la_attn_at(&p->k, bt, t, hk), p->k.dtype, Dk, Dkp);
        tg_load_row(v, la_attn_at(&p->v, bt, t, hk), p->v.dtype, dm->Dv, Dvp);
        const float eta = gate_at(&p->eta, bt, t, h), theta = gate_at(&p->theta, bt, t, h),
                    keep = 1.0f - gate_at(&p->alpha, bt, t, h);
        int64_t j0 = 0;
        for (; j0 + LA_STEP_NB * LA_VL <= Dvp; j0 += LA_STEP_NB * LA_VL)
            tt_step_cols(M, ldm, Mc, ldc, S, lds, Dk, q, k, v, eta, theta, keep, y, j0, LA_STEP_NB, nM, nS);
        for (; j0 < Dvp; j0 += LA_VL)
            tt_step_cols(M, ldm, Mc, ldc, S, lds, Dk, q, k, v, eta, theta, keep, y, j0, 1, nM, nS);
        tg_store_row(la_attn_at(&p->out, bt, t, h), p->out.dtype, y, dm->Dv);
    }
    if (!in_place) {
        store_state(&p->mem_out, M, dm, b, h);
        store_state(&p->mom_out, S, dm, b, h);
    }
}

la_status LA_ISA_FN(la_cpu_titans_forward_kernel)(const la_titans_problem *p, void *mem) {
    const tt_dims dm = dims_of(p);
    const int nthreads = p->threads > 0 ? p->threads : 1;
    const size_t per_thread = scratch_floats(&dm);
    const int64_t items = p->num_seqs * p->H;
    /* the decode step: each thread a contiguous run of items, so that its next item, whose
       states it prefetches, is known (the items are equal in work) */
    const bool step = TT_STEP_PF_NEXT && p->form != LA_LINEAR_CHUNKED && !p->cu && p->L == 1;
#pragma omp parallel num_threads(nthreads)
    {
        tt_scratch w = scratch_at((float *)mem + (size_t)la_thread_id() * per_thread, &dm);
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
