/* Linear attention with decay, forward: the chunk-parallel form (the
 * prefill kernel) and the recurrent form (token by token; the decode step
 * is it with one token), written once and compiled per ISA.
 *
 * Per (sequence, head), with Q~ = scale phi(Q), K~ = phi(K) and the decay
 * factors a_t = exp(g_t) (scalars or per key channel), a chunk of n tokens
 * starting from state S does, as in Lightning Attention-2 and fla's chunk
 * kernels:
 *   A[i][j] = sum_d Q~[i][d] K~[j][d] prod_{j<s<=i} a_s[d]    (j <= i; else 0)
 *   O = A V + (P . Q~) S          P[i] = prod_{s<=i} a_s      (the decay since the chunk began)
 *   S = P[n-1] . S + ((R . K~)^T V)  R[j] = prod_{j<s<n} a_s  (the decay to the chunk's end)
 * A and the three products run through the register-blocked tile GEMM;
 * with scalar decays A is Q~ K~^T masked and scaled afterwards. With
 * per-channel decays A is taken in sub-blocks of LIN_SUB tokens: a block
 * below the diagonal (rows I, columns J < I) is one GEMM of Q~ decayed from
 * I's start and K~ decayed to J's end times the blocks between (every
 * factor a product over a run of tokens, in [0, 1]); the diagonal blocks
 * are dot products with the running factor. Normalisation appends a column of ones to
 * V, so the denominator is the state's column Dv and O's column Dv.
 * The chunk's whole decay is exp of the sum of its log decays
 * (linear_common.h says why: decays near 1 over long runs); P and R are
 * exp of such sums for scalar decays and running products of the factors
 * per channel (channel_prefix says why), and the score block's
 * E[i][j] = prod_{j<s<=i} a_s stays a product of at most chunk_size
 * factors.
 * Items are spread over the threads, each with its own scratch in the
 * workspace: (sequence, head) for the recurrent and non-causal forms, and
 * (sequence, up to LIN_HG heads) for the chunked one, which runs its heads
 * chunk by chunk (chunked_item says why). Below
 * the diagonal, a row block's per-channel scores are one product against
 * a panel of all the earlier columns (Kb transposed once, each column
 * block scaled by the decay between); the diagonal blocks go row by row,
 * their dot products summed across lanes together. */
#include "cpu/linear/linear_common.h"

/* Tokens per sub-block of the per-channel scores: one GEMM tile's width
 * on every ISA (a multiple of LA_VL), small enough that the diagonal
 * blocks' direct dot products stay a small share of the work. */
#define LIN_SUB 16

/* Channel vectors whose per-token chains (running decay products, sums of
 * log decays) run side by side: one at a time, a loop waits on each step's
 * latency. */
#define LIN_CHAINS 4

/* Tokens ahead of the one loaded whose rows' first lines are prefetched
 * (2 lines each: ~3-4% less CPU time than none at H 8, 16K; whole runs, 2
 * or 8 tokens ahead, were slower). */
#define LIN_AHEAD 4

/* Heads per chunked item at most (their states share a thread's scratch). */
#define LIN_HG 4

/* Per-thread scratch, in floats. Chunked: S, Q, K, K^T, V, A, O, the decay
 * rows, two running vectors; per-channel scores add Q~ and K~ decayed within
 * their sub-block and the sub-blocks' total decays. Recurrent: the same
 * with one-token chunks. */
/* The rows a chunked item loads and stores per head: Q, K, the decay
 * factors and log decays ([C][Dkp] each), V and O ([C][Dvp]) and the scalar
 * factors (C). Head 0's are the scratch's own; heads 1 .. LIN_HG - 1 have
 * theirs after it. */
static size_t io_floats(const lin_dims *d) { return (size_t)(4 * d->C * d->Dkp + 2 * d->C * d->Dvp + d->C); }

static size_t scratch_floats(const lin_dims *d) {
    return (size_t)(LIN_HG - 1) * io_floats(d) + (size_t)(LIN_HG * d->Dk * d->Dvp + 3 * d->C * d->Dkp + d->Dkp * d->Cp + 2 * d->C * d->Dvp + d->C * d->Cp +
                    2 * d->Dkp + d->C + 2 * d->C * d->Dkp + (d->Cp / LIN_SUB + 1) * d->Dkp + d->Dkp +
                    3 * d->C * d->Dkp + d->Dkp + 3 * d->C + d->Dkp * d->Cp);
}

static int64_t chunk_of(const la_linear_problem *p) { return p->form == LA_LINEAR_CHUNKED ? p->chunk : 1; }

la_status LA_ISA_FN(la_cpu_linear_workspace)(const la_linear_problem *p, size_t *bytes) {
    const lin_dims d = lin_dims_of(p, chunk_of(p));
    const int nthreads = p->threads > 0 ? p->threads : 1;
    if (!la_mul_size(scratch_floats(&d) * sizeof(float), (size_t)nthreads, bytes))
        return la_fail(LA_ERR_OVERFLOW, "linear attention workspace size overflows");
    return LA_OK;
}

typedef struct {
    float *S, *Q, *K, *KT, *V, *A, *O, *dec, *run, *e, *a, *Qb, *Kb, *tot, *M, *lg, *pre, *suf, *total, *spre,
        *ssuf, *KP, *io;
} fwd_scratch;

static fwd_scratch scratch_at(float *base, const lin_dims *d) {
    fwd_scratch w;
    w.S = base;
    w.Q = w.S + LIN_HG * d->Dk * d->Dvp;
    w.K = w.Q + d->C * d->Dkp;
    w.KT = w.K + d->C * d->Dkp;
    w.V = w.KT + d->Dkp * d->Cp;
    w.A = w.V + d->C * d->Dvp;
    w.O = w.A + d->C * d->Cp;
    w.dec = w.O + d->C * d->Dvp;
    w.run = w.dec + d->C * d->Dkp;
    w.e = w.run + d->Dkp;
    w.a = w.e + d->Dkp;
    w.Qb = w.a + d->C;
    w.Kb = w.Qb + d->C * d->Dkp;
    w.tot = w.Kb + d->C * d->Dkp;
    w.M = w.tot + (d->Cp / LIN_SUB + 1) * d->Dkp;
    w.lg = w.M + d->Dkp;          /* log decays: [C][Dkp] rows, or C scalars */
    w.pre = w.lg + d->C * d->Dkp; /* per channel: [C][Dkp] */
    w.suf = w.pre + d->C * d->Dkp;
    w.total = w.suf + d->C * d->Dkp;
    w.spre = w.total + d->Dkp; /* scalar: C each */
    w.ssuf = w.spre + d->C;
    w.KP = w.ssuf + d->C; /* per channel: [Dkp][Cp] */
    w.io = w.KP + d->Dkp * d->Cp;
    return w;
}

/* The scratch as head e of a chunked item sees it: its own rows (e > 0:
 * io block e - 1), everything else shared. */
static fwd_scratch head_view(const fwd_scratch *w0, const lin_dims *d, int64_t e) {
    fwd_scratch w = *w0;
    if (e == 0) return w;
    float *io = w0->io + (size_t)(e - 1) * io_floats(d);
    w.Q = io;
    w.K = w.Q + d->C * d->Dkp;
    w.dec = w.K + d->C * d->Dkp;
    w.lg = w.dec + d->C * d->Dkp;
    w.V = w.lg + d->C * d->Dkp;
    w.O = w.V + d->C * d->Dvp;
    w.a = w.O + d->C * d->Dvp;
    return w;
}

/* out row t = O's row, divided by the denominator column with normalisation. */
static void store_out(const la_linear_problem *p, const lin_dims *dm, float *o, int64_t bt, int64_t t, int64_t h) {
    if (p->normalize) {
        const float inv = 1.0f / (o[dm->Dv] + p->norm_eps);
        for (int64_t d = 0; d < dm->Dv; d++) o[d] *= inv;
    }
    tg_store_row(la_attn_at(&p->out, bt, t, h), p->out.dtype, o, dm->Dv);
}

/* The running decayed q of diag_row for LIN_CHAINS x LA_VL channels
 * [d, d + G LA_VL) in registers: acc[j - i0] += qe . K~[j], then qe *=
 * a_j, for j from i down to i0 (j a constant after unrolling, so acc stays
 * in registers where the ISA has enough). */
static inline __attribute__((always_inline)) void diag_group(const fwd_scratch *w, int64_t Dkp, int64_t i0, int64_t i,
                                                             int64_t d, const int G, vf *acc) {
    vf e[LIN_CHAINS];
#pragma GCC unroll 4
    for (int c = 0; c < G; c++) e[c] = vf_load(w->Q + i * Dkp + d + c * LA_VL);
#pragma GCC unroll 16
    for (int jj = LIN_SUB - 1; jj >= 0; jj--) {
        if (i0 + jj > i) continue;
        const float *kj = w->K + (i0 + jj) * Dkp + d, *aj = w->dec + (i0 + jj) * Dkp + d;
#pragma GCC unroll 4
        for (int c = 0; c < G; c++) {
            acc[jj] = vf_fma(e[c], vf_load(kj + c * LA_VL), acc[jj]);
            e[c] *= vf_load(aj + c * LA_VL);
        }
    }
}

/* Row i of a diagonal block (columns i0 .. i0 + LIN_SUB - 1) into out:
 * A[i][j] = Q~[i] . K~[j] prod_{j<s<=i} a_s for j <= i, 0 after i; the
 * decayed q runs from j = i down, one factor per step (every factor a
 * product of decays in [0, 1]), and the row's LIN_SUB dot products are
 * summed across lanes together. */
static void diag_row(const fwd_scratch *w, int64_t Dkp, int64_t i0, int64_t i, float *out) {
    vf acc[LIN_SUB];
#pragma GCC unroll 16
    for (int jj = 0; jj < LIN_SUB; jj++) acc[jj] = vf_set1(0);
    int64_t d = 0;
    for (; d + LIN_CHAINS * LA_VL <= Dkp; d += LIN_CHAINS * LA_VL) diag_group(w, Dkp, i0, i, d, LIN_CHAINS, acc);
    for (; d < Dkp; d += LA_VL) diag_group(w, Dkp, i0, i, d, 1, acc);
    for (int jj = 0; jj < LIN_SUB; jj += LA_VL) vf_store(out + jj, vf_transpose_sum(acc + jj));
}

/* LIN_CHAINS x LA_VL channels [d, d + G LA_VL) of block_decays. */
static inline __attribute__((always_inline)) void block_group(const fwd_scratch *w, int64_t Dkp, int64_t i0,
                                                              int64_t i1, int64_t d, const int G, float *tot) {
    vf e[LIN_CHAINS];
#pragma GCC unroll 4
    for (int c = 0; c < G; c++) e[c] = vf_set1(1.0f);
    for (int64_t i = i0; i < i1; i++)
#pragma GCC unroll 4
        for (int c = 0; c < G; c++) {
            const int64_t x = i * Dkp + d + c * LA_VL;
            e[c] *= vf_load(w->dec + x);
            vf_store(w->Qb + x, vf_load(w->Q + x) * e[c]);
        }
#pragma GCC unroll 4
    for (int c = 0; c < G; c++) vf_store(tot + d + c * LA_VL, e[c]), e[c] = vf_set1(1.0f);
    for (int64_t j = i1 - 1; j >= i0; j--)
#pragma GCC unroll 4
        for (int c = 0; c < G; c++) {
            const int64_t x = j * Dkp + d + c * LA_VL;
            vf_store(w->Kb + x, vf_load(w->K + x) * e[c]);
            e[c] *= vf_load(w->dec + x);
        }
}

/* A sub-block's rows [i0, i1): Qb[i] = Q~[i] decayed from the block's start
 * through i, Kb[j] = K~[j] decayed after j to the block's end, tot = the
 * block's whole decay; running products of the factors, the decay of
 * LIN_CHAINS channel vectors in registers. */
static void block_decays(const fwd_scratch *w, int64_t Dkp, int64_t i0, int64_t i1, float *tot) {
    int64_t d = 0;
    for (; d + LIN_CHAINS * LA_VL <= Dkp; d += LIN_CHAINS * LA_VL) block_group(w, Dkp, i0, i1, d, LIN_CHAINS, tot);
    for (; d < Dkp; d += LA_VL) block_group(w, Dkp, i0, i1, d, 1, tot);
}

/* A [n][Cp] of a chunk with per-channel decays (the K^T panel is scratch):
 *   A[i][j] = sum_d Q~[i][d] K~[j][d] prod_{j<s<=i} a_s[d]   (j <= i), 0 above. */
static void channel_scores(const lin_dims *dm, fwd_scratch *w, int64_t n) {
    const int64_t Dk = dm->Dk, Dkp = dm->Dkp, Cp = dm->Cp, nb = (n + LIN_SUB - 1) / LIN_SUB;
    memset(w->A, 0, (size_t)(n * Cp) * sizeof(float));
    for (int64_t I = 0; I < nb; I++) {
        const int64_t i0 = I * LIN_SUB, i1 = n < i0 + LIN_SUB ? n : i0 + LIN_SUB;
        block_decays(w, Dkp, i0, i1, w->tot + I * Dkp);
        /* the diagonal block, row by row: qe = Q~[i] decayed back from i to
         * j (a running product, one factor per step), A[i][j] = qe . K~[j];
         * the row's LIN_SUB dot products are summed across lanes together */
        for (int64_t i = i0; i < i1; i++) diag_row(w, Dkp, i0, i, w->A + i * Cp + i0);
    }
    /* below the diagonal: row block I against all the columns before it in
     * one product, Qb[I] KP^T, where KP's column block J is Kb[J] decayed by
     * M, the total decay of the blocks between J and I (J < I is full, as
     * only the last block may be short). Kb is transposed once (KT), and
     * each panel's column block J is a row segment of KT scaled by M[d]. */
    if (nb < 2) return;
    lin_transpose(w->KT, Cp, w->Kb, Dkp, n, Dk);
    for (int64_t I = 1; I < nb; I++) {
        const int64_t i0 = I * LIN_SUB, i1 = n < i0 + LIN_SUB ? n : i0 + LIN_SUB;
        float *M = w->M, *KP = w->KP;
        const float *KT = w->KT;
        for (int64_t d = 0; d < Dkp; d++) M[d] = 1.0f;
        for (int64_t J = I - 1; J >= 0; J--) {
            const int64_t j0 = J * LIN_SUB;
            for (int64_t d = 0; d < Dk; d++) {
                const vf m = vf_set1(M[d]);
                for (int64_t j = 0; j < LIN_SUB; j += LA_VL)
                    vf_store(KP + d * i0 + j0 + j, vf_load(KT + d * Cp + j0 + j) * m);
            }
            lin_mul(M, w->tot + J * Dkp, Dkp);
        }
        tg_gemm(i1 - i0, i0, Dk, w->Qb + i0 * Dkp, Dkp, 1, w->KP, i0, w->A + i0 * Cp, Cp, false);
    }
}

/* Rows t0 + c0 + i (i < n) of heads h0 .. h0 + hg - 1 of sequence b into
 * the heads' scratch views W[e], each tensor's rows of the heads in turn:
 * a token's rows of neighbouring heads are neighbours in memory, so each
 * tensor's reads run hg rows in sequence (one head's rows lie H D elements
 * apart, a page or more, where the hardware's streaming prefetchers, which
 * stay within a page, see one row at a time). end: the sequence's end. */
static void chunk_load(const la_linear_problem *p, const lin_dims *dm, const fwd_scratch *W, int64_t b, int64_t h0,
                       int64_t hg, int64_t t0, int64_t c0, int64_t n, int64_t end) {
    const int64_t bt = p->cu ? 0 : b, rep = p->H / p->Hkv, Dkp = dm->Dkp, Dvp = dm->Dvp;
    const bool channel = lin_channel(p);
    for (int64_t i = 0; i < n; i++) {
        const int64_t t = t0 + c0 + i;
        /* the first two lines of each tensor's run LIN_AHEAD tokens on, a
         * new page each: the streamer picks the run up from there */
        if (t + LIN_AHEAD < end) {
            const int64_t ta = t + LIN_AHEAD;
            __builtin_prefetch(la_attn_at(&p->q, bt, ta, h0), 0, 3);
            __builtin_prefetch(la_attn_at(&p->q, bt, ta, h0) + 64, 0, 3);
            __builtin_prefetch(la_attn_at(&p->k, bt, ta, h0 / rep), 0, 3);
            __builtin_prefetch(la_attn_at(&p->k, bt, ta, h0 / rep) + 64, 0, 3);
            __builtin_prefetch(la_attn_at(&p->v, bt, ta, h0 / rep), 0, 3);
            __builtin_prefetch(la_attn_at(&p->v, bt, ta, h0 / rep) + 64, 0, 3);
            if (p->g.data) {
                __builtin_prefetch(la_attn_at(&p->g, bt, ta, h0), 0, 3);
                __builtin_prefetch(la_attn_at(&p->g, bt, ta, h0) + 64, 0, 3);
            }
        }
        for (int64_t e = 0; e < hg; e++)
            lin_load_feature(W[e].Q + i * Dkp, la_attn_at(&p->q, bt, t, h0 + e), p->q.dtype, p, h0 + e, Dkp, p->scale);
        for (int64_t e = 0; e < hg; e++)
            lin_load_feature(W[e].K + i * Dkp, la_attn_at(&p->k, bt, t, (h0 + e) / rep), p->k.dtype, p, h0 + e, Dkp,
                             1.0f);
        for (int64_t e = 0; e < hg; e++) lin_load_value(W[e].V + i * Dvp, p, dm, bt, t, (h0 + e) / rep);
        for (int64_t e = 0; e < hg; e++) {
            if (channel) {
                lin_decay_row(W[e].dec + i * Dkp, W[e].lg + i * Dkp, p, dm, bt, t, h0 + e);
            } else {
                W[e].lg[i] = lin_log_decay_scalar(p, bt, t, h0 + e);
                W[e].a[i] = expf(W[e].lg[i]);
            }
        }
    }
}

/* Per-channel decays inside a chunk, without an exp per element beyond
 * the factor's own: the prefix P[i] = prod_{s<=i} a_s and the suffix
 * R[j] = prod_{j<s<n} a_s as running products of the factors (at most
 * chunk_size of them in [0, 1]: a saturated gate gives an exact 0, and
 * their rounding, ~chunk_size ulps, stays in this chunk's output and
 * contribution to the state), each applied as it runs, one register per
 * LA_VL channels. The whole chunk's decay, which multiplies the state
 * chunk after chunk and would compound a product's rounding (decays near
 * 1 over 1M tokens), stays exp of the sum of the log decays
 * (linear_common.h). Each run is a chain of dependent vector operations
 * (one per token); LIN_CHAINS channel vectors run side by side. */
static void channel_total(const float *lg, int64_t n, int64_t Dkp, float *total) {
    int64_t d = 0;
    for (; d + LIN_CHAINS * LA_VL <= Dkp; d += LIN_CHAINS * LA_VL) {
        vf acc[LIN_CHAINS];
#pragma GCC unroll 4
        for (int c = 0; c < LIN_CHAINS; c++) acc[c] = vf_set1(0);
        for (int64_t i = 0; i < n; i++)
#pragma GCC unroll 4
            for (int c = 0; c < LIN_CHAINS; c++) acc[c] += vf_load(lg + i * Dkp + d + c * LA_VL);
#pragma GCC unroll 4
        for (int c = 0; c < LIN_CHAINS; c++) vf_store(total + d + c * LA_VL, vf_exp(acc[c]));
    }
    for (; d < Dkp; d += LA_VL) {
        vf acc = vf_set1(0);
        for (int64_t i = 0; i < n; i++) acc += vf_load(lg + i * Dkp + d);
        vf_store(total + d, vf_exp(acc));
    }
}

/* Q[i] *= P[i]. */
static void channel_prefix(float *Q, const float *dec, int64_t n, int64_t Dkp) {
    int64_t d = 0;
    for (; d + LIN_CHAINS * LA_VL <= Dkp; d += LIN_CHAINS * LA_VL) {
        vf e[LIN_CHAINS];
#pragma GCC unroll 4
        for (int c = 0; c < LIN_CHAINS; c++) e[c] = vf_set1(1.0f);
        for (int64_t i = 0; i < n; i++)
#pragma GCC unroll 4
            for (int c = 0; c < LIN_CHAINS; c++) {
                float *qi = Q + i * Dkp + d + c * LA_VL;
                e[c] *= vf_load(dec + i * Dkp + d + c * LA_VL);
                vf_store(qi, vf_load(qi) * e[c]);
            }
    }
    for (; d < Dkp; d += LA_VL) {
        vf e = vf_set1(1.0f);
        for (int64_t i = 0; i < n; i++) {
            e *= vf_load(dec + i * Dkp + d);
            vf_store(Q + i * Dkp + d, vf_load(Q + i * Dkp + d) * e);
        }
    }
}

/* K[j] *= R[j]. */
static void channel_suffix(float *K, const float *dec, int64_t n, int64_t Dkp) {
    int64_t d = 0;
    for (; d + LIN_CHAINS * LA_VL <= Dkp; d += LIN_CHAINS * LA_VL) {
        vf e[LIN_CHAINS];
#pragma GCC unroll 4
        for (int c = 0; c < LIN_CHAINS; c++) e[c] = vf_set1(1.0f);
        for (int64_t j = n - 1; j >= 0; j--)
#pragma GCC unroll 4
            for (int c = 0; c < LIN_CHAINS; c++) {
                float *kj = K + j * Dkp + d + c * LA_VL;
                vf_store(kj, vf_load(kj) * e[c]);
                e[c] *= vf_load(dec + j * Dkp + d + c * LA_VL);
            }
    }
    for (; d < Dkp; d += LA_VL) {
        vf e = vf_set1(1.0f);
        for (int64_t j = n - 1; j >= 0; j--) {
            vf_store(K + j * Dkp + d, vf_load(K + j * Dkp + d) * e);
            e *= vf_load(dec + j * Dkp + d);
        }
    }
}

/* One chunk of n tokens of one head, loaded into w, on its state S: its
 * output rows, O's (o = w->O, ldo = Dvp) or the output tensor's own. */
static void chunk_step(const la_linear_problem *p, const lin_dims *dm, fwd_scratch *w, float *S, int64_t n,
                       float *o, int64_t ldo) {
    const int64_t Dk = dm->Dk, Dkp = dm->Dkp, Dvp = dm->Dvp, Cp = dm->Cp;
    const bool channel = lin_channel(p);
    float total = 1.0f;
    if (channel) channel_total(w->lg, n, Dkp, w->total);
    else total = lin_run_decays(w->lg, n, w->spre, w->ssuf);
    /* A: the intra-chunk scores, decayed and causally masked */
    if (channel) {
        channel_scores(dm, w, n);
    } else {
        lin_transpose(w->KT, Cp, w->K, Dkp, n, Dk);
        /* only the column blocks at or before each row tile's diagonal */
        for (int64_t i0 = 0; i0 < n; i0 += TG_MR) {
            const int64_t m = n - i0 < TG_MR ? n - i0 : TG_MR;
            tg_gemm(m, tg_round_up(i0 + m, LA_VL), Dk, w->Q + i0 * Dkp, Dkp, 1, w->KT, Cp, w->A + i0 * Cp, Cp, false);
        }
        lin_mask_scalar(w->A, Cp, w->a, n);
    }
    /* O = A V, each row tile over the columns up to its diagonal (A is 0 after it) */
    for (int64_t i0 = 0; i0 < n; i0 += TG_MR) {
        const int64_t m = n - i0 < TG_MR ? n - i0 : TG_MR;
        tg_gemm(m, Dvp, i0 + m, w->A + i0 * Cp, Cp, 1, w->V, Dvp, o + i0 * ldo, ldo, false);
    }
    /* the state's contribution: Q~ rows scaled by the decay since the chunk began */
    if (channel) channel_prefix(w->Q, w->dec, n, Dkp);
    else
        for (int64_t i = 0; i < n; i++) lin_scale(w->Q + i * Dkp, Dkp, w->spre[i]);
    tg_gemm(n, Dvp, Dk, w->Q, Dkp, 1, S, Dvp, o, ldo, true);
    /* S = (decay over the chunk) S + (K~ decayed to the chunk's end)^T V */
    if (channel) channel_suffix(w->K, w->dec, n, Dkp);
    else
        for (int64_t j = 0; j < n; j++) lin_scale(w->K + j * Dkp, Dkp, w->ssuf[j]);
    if (channel || total != 1.0f)
        for (int64_t d = 0; d < Dk; d++) lin_scale(S + d * Dvp, Dvp, channel ? w->total[d] : total);
    tg_gemm(Dk, Dvp, n, w->K, 1, Dkp, w->V, Dvp, S, Dvp, true);
}

/* Heads h0 .. h0 + hg - 1 of sequence b, chunk by chunk (states S[e]):
 * the chunk's rows of all hg heads are loaded together (chunk_load says
 * why), each head's chunk runs in turn, then the heads' output rows are
 * stored together, token by token. */
static void chunked_item(const la_linear_problem *p, const lin_dims *dm, fwd_scratch *w, int64_t b, int64_t h0,
                         int64_t hg) {
    const int64_t SS = dm->Dk * dm->Dvp;
    int64_t t0, len;
    la_linear_seq(p, b, &t0, &len);
    fwd_scratch W[LIN_HG];
    for (int64_t e = 0; e < hg; e++) W[e] = head_view(w, dm, e);
    for (int64_t e = 0; e < hg; e++) lin_load_state(w->S + e * SS, &p->state_in, dm, b, h0 + e);
    /* f32 rows as O's, unnormalised: the products write them in place */
    const bool direct = p->out.dtype == LA_F32 && !p->normalize && dm->Dv == dm->Dvp;
    for (int64_t c0 = 0; c0 < len; c0 += dm->C) {
        const int64_t n = len - c0 < dm->C ? len - c0 : dm->C;
        const int64_t bt = p->cu ? 0 : b;
        chunk_load(p, dm, W, b, h0, hg, t0, c0, n, t0 + len);
        for (int64_t e = 0; e < hg; e++) {
            if (direct)
                chunk_step(p, dm, &W[e], w->S + e * SS, n, (float *)la_attn_at(&p->out, bt, t0 + c0, h0 + e),
                           p->out.token_stride);
            else chunk_step(p, dm, &W[e], w->S + e * SS, n, W[e].O, dm->Dvp);
        }
        if (direct) continue;
        for (int64_t i = 0; i < n; i++)
            for (int64_t e = 0; e < hg; e++) store_out(p, dm, W[e].O + i * dm->Dvp, bt, t0 + c0 + i, h0 + e);
    }
    for (int64_t e = 0; e < hg; e++) lin_store_state(&p->state_out, w->S + e * SS, dm, b, h0 + e);
}

/* Token by token: S = a . S + k~ v^T, o = q~ S. The decode step (one
 * state in and out, in place) works on the caller's state directly when its
 * rows need no padding: copying it to scratch and back would add two passes
 * over it to the one the update and the output share. */
static void recurrent_item(const la_linear_problem *p, const lin_dims *dm, fwd_scratch *w, int64_t b, int64_t h) {
    const int64_t bt = p->cu ? 0 : b, hk = h / (p->H / p->Hkv), Dk = dm->Dk, Dkp = dm->Dkp, Dvp = dm->Dvp;
    const bool channel = lin_channel(p);
    int64_t t0, len;
    la_linear_seq(p, b, &t0, &len);
    const la_linear_state *st = &p->state_in;
    const bool in_place = st->data && st->data == p->state_out.data && dm->Dvs == Dvp;
    float *S = w->S;
    int64_t lds = Dvp;
    if (in_place) S = st->data + b * st->seq_stride + h * st->head_stride, lds = st->row_stride;
    else lin_load_state(S, st, dm, b, h);
    float *q = w->Q, *k = w->K, *v = w->V, *o = w->O, *dec = w->dec;
    for (int64_t t = t0; t < t0 + len; t++) {
        lin_load_feature(q, la_attn_at(&p->q, bt, t, h), p->q.dtype, p, h, Dkp, p->scale);
        lin_load_feature(k, la_attn_at(&p->k, bt, t, hk), p->k.dtype, p, h, Dkp, 1.0f);
        lin_load_value(v, p, dm, bt, t, hk);
        float a = 1.0f;
        if (channel) lin_decay_row(dec, w->lg, p, dm, bt, t, h);
        else a = expf(lin_log_decay_scalar(p, bt, t, h));
        for (int64_t j = 0; j < Dvp; j += LA_VL) vf_store(o + j, vf_set1(0));
        for (int64_t d = 0; d < Dk; d++) {
            float *row = S + d * lds;
            const vf ad = vf_set1(channel ? dec[d] : a), kd = vf_set1(k[d]), qd = vf_set1(q[d]);
            for (int64_t j = 0; j < Dvp; j += LA_VL) {
                vf s = vf_fma(vf_load(row + j), ad, kd * vf_load(v + j));
                vf_store(row + j, s);
                vf_store(o + j, vf_fma(qd, s, vf_load(o + j)));
            }
        }
        store_out(p, dm, o, bt, t, h);
    }
    if (!in_place) lin_store_state(&p->state_out, S, dm, b, h);
}

/* Non-causal (no decay): S_L = S_0 + K~^T V over the whole sequence, then
 * O = Q~ S_L, both in chunks of C tokens. */
static void noncausal_item(const la_linear_problem *p, const lin_dims *dm, fwd_scratch *w, int64_t b, int64_t h) {
    const int64_t bt = p->cu ? 0 : b, hk = h / (p->H / p->Hkv), Dk = dm->Dk, Dkp = dm->Dkp, Dvp = dm->Dvp;
    int64_t t0, len;
    la_linear_seq(p, b, &t0, &len);
    lin_load_state(w->S, &p->state_in, dm, b, h);
    for (int64_t c0 = 0; c0 < len; c0 += dm->C) {
        const int64_t n = len - c0 < dm->C ? len - c0 : dm->C;
        for (int64_t i = 0; i < n; i++) {
            const int64_t t = t0 + c0 + i;
            lin_load_feature(w->K + i * Dkp, la_attn_at(&p->k, bt, t, hk), p->k.dtype, p, h, Dkp, 1.0f);
            lin_load_value(w->V + i * Dvp, p, dm, bt, t, hk);
        }
        tg_gemm(Dk, Dvp, n, w->K, 1, Dkp, w->V, Dvp, w->S, Dvp, true);
    }
    for (int64_t c0 = 0; c0 < len; c0 += dm->C) {
        const int64_t n = len - c0 < dm->C ? len - c0 : dm->C;
        for (int64_t i = 0; i < n; i++)
            lin_load_feature(w->Q + i * Dkp, la_attn_at(&p->q, bt, t0 + c0 + i, h), p->q.dtype, p, h, Dkp, p->scale);
        tg_gemm(n, Dvp, Dk, w->Q, Dkp, 1, w->S, Dvp, w->O, Dvp, false);
        for (int64_t i = 0; i < n; i++) store_out(p, dm, w->O + i * Dvp, bt, t0 + c0 + i, h);
    }
    lin_store_state(&p->state_out, w->S, dm, b, h);
}

la_status LA_ISA_FN(la_cpu_linear_forward_kernel)(const la_linear_problem *p, void *mem) {
    const lin_dims dm = lin_dims_of(p, chunk_of(p));
    const int nthreads = p->threads > 0 ? p->threads : 1;
    const size_t per_thread = scratch_floats(&dm);
    /* chunked items take hg heads: the most (up to LIN_HG, dividing H)
     * that still leaves every thread an item */
    const bool chunked = !p->non_causal && p->form == LA_LINEAR_CHUNKED;
    int64_t hg = 1;
    if (chunked)
        for (int64_t g = LIN_HG; g > 1; g--)
            if (p->H % g == 0 && p->num_seqs * (p->H / g) >= nthreads) {
                hg = g;
                break;
            }
    const int64_t groups = p->H / hg, items = p->num_seqs * groups;
#pragma omp parallel num_threads(nthreads)
    {
        fwd_scratch w = scratch_at((float *)mem + (size_t)la_thread_id() * per_thread, &dm);
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < items; it++) {
            if (p->non_causal) noncausal_item(p, &dm, &w, it / p->H, it % p->H);
            else if (chunked) chunked_item(p, &dm, &w, it / groups, it % groups * hg, hg);
            else recurrent_item(p, &dm, &w, it / p->H, it % p->H);
        }
    }
    return LA_OK;
}
