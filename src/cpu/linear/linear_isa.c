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
 * per channel (decay_row_sum says why), and the score block's
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

/* Tokens ahead of the one loaded whose rows are prefetched, every line of
 * each tensor's run (on Zen 5 at H 8, 16K: 14% less time than the first two
 * lines alone, which Zen 1 and the Xeon preferred; 2 to 8 tokens ahead
 * measured the same; BENCHMARKS.md, s19-gla). */
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

/* LIN_CHAINS x LA_VL channels [d, d + G LA_VL) of chunk_decays: each
 * pass over the rows carries two running products per channel vector, the
 * sub-block's (reset at each sub-block's edge) and the chunk's. */
static inline __attribute__((always_inline)) void decay_group(const fwd_scratch *w, int64_t Dkp, int64_t n, int64_t d,
                                                              const int G) {
    vf eb[LIN_CHAINS], ec[LIN_CHAINS];
#pragma GCC unroll 4
    for (int c = 0; c < G; c++) ec[c] = vf_set1(1.0f);
    for (int64_t i0 = 0; i0 < n; i0 += LIN_SUB) {
        const int64_t i1 = n < i0 + LIN_SUB ? n : i0 + LIN_SUB;
#pragma GCC unroll 4
        for (int c = 0; c < G; c++) eb[c] = vf_set1(1.0f);
        for (int64_t i = i0; i < i1; i++)
#pragma GCC unroll 4
            for (int c = 0; c < G; c++) {
                const int64_t x = i * Dkp + d + c * LA_VL;
                const vf a = vf_load(w->dec + x), q = vf_load(w->Q + x);
                eb[c] *= a, ec[c] *= a;
                vf_store(w->Qb + x, q * eb[c]);
                vf_store(w->pre + x, q * ec[c]);
            }
#pragma GCC unroll 4
        for (int c = 0; c < G; c++) vf_store(w->tot + i0 / LIN_SUB * Dkp + d + c * LA_VL, eb[c]);
    }
#pragma GCC unroll 4
    for (int c = 0; c < G; c++) ec[c] = vf_set1(1.0f);
    for (int64_t j1 = n; j1 > 0; j1 = (j1 - 1) / LIN_SUB * LIN_SUB) {
        const int64_t j0 = (j1 - 1) / LIN_SUB * LIN_SUB;
#pragma GCC unroll 4
        for (int c = 0; c < G; c++) eb[c] = vf_set1(1.0f);
        for (int64_t j = j1 - 1; j >= j0; j--)
#pragma GCC unroll 4
            for (int c = 0; c < G; c++) {
                const int64_t x = j * Dkp + d + c * LA_VL;
                const vf a = vf_load(w->dec + x), k = vf_load(w->K + x);
                vf_store(w->Kb + x, k * eb[c]);
                vf_store(w->suf + x, k * ec[c]);
                eb[c] *= a, ec[c] *= a;
            }
    }
}

/* The chunk's decayed copies of Q~ and K~, running products of the
 * factors, LIN_CHAINS channel vectors' chains in registers side by side:
 * per sub-block of LIN_SUB rows, Qb[i] = Q~[i] decayed from the block's
 * start through i, Kb[j] = K~[j] decayed after j to the block's end, tot =
 * the block's whole decay (the per-channel scores' operands); per chunk,
 * pre[i] = P[i] . Q~[i] and suf[j] = R[j] . K~[j] (the state products'
 * operands). One pass over Q~, K~ and the factors feeds both, where a
 * pass per use read them twice. The chunk's products are taken in the
 * order of the separate prefix and suffix passes they replace, so the
 * outputs are bitwise the same. */
static void chunk_decays(const fwd_scratch *w, int64_t Dkp, int64_t n) {
    int64_t d = 0;
    for (; d + LIN_CHAINS * LA_VL <= Dkp; d += LIN_CHAINS * LA_VL) decay_group(w, Dkp, n, d, LIN_CHAINS);
    for (; d < Dkp; d += LA_VL) decay_group(w, Dkp, n, d, 1);
}

/* A [n][Cp] of a chunk with per-channel decays (the K^T panel is scratch):
 *   A[i][j] = sum_d Q~[i][d] K~[j][d] prod_{j<s<=i} a_s[d]   (j <= i), 0 above. */
static void channel_scores(const lin_dims *dm, fwd_scratch *w, int64_t n) {
    const int64_t Dk = dm->Dk, Dkp = dm->Dkp, Cp = dm->Cp, nb = (n + LIN_SUB - 1) / LIN_SUB;
    memset(w->A, 0, (size_t)(n * Cp) * sizeof(float));
    chunk_decays(w, Dkp, n);
    for (int64_t I = 0; I < nb; I++) {
        const int64_t i0 = I * LIN_SUB, i1 = n < i0 + LIN_SUB ? n : i0 + LIN_SUB;
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

/* Per-channel decays inside a chunk, without an exp per element beyond
 * the factor's own: the prefix P[i] = prod_{s<=i} a_s and the suffix
 * R[j] = prod_{j<s<n} a_s are running products of the factors (at most
 * chunk_size of them in [0, 1]: a saturated gate gives an exact 0, and
 * their rounding, ~chunk_size ulps, stays in this chunk's output and
 * contribution to the state; chunk_decays). The whole chunk's decay,
 * which multiplies the state chunk after chunk and would compound a
 * product's rounding (decays near 1 over 1M tokens), stays exp of the sum
 * of the log decays (linear_common.h), summed here as the rows load:
 * factor[0..Dkp) = exp(g) of token t (zero padded), sum[0..Dkp) += g
 * (set to g when first). */
static void decay_row_sum(float *factor, float *sum, const la_linear_problem *p, const lin_dims *dm, int64_t bt,
                          int64_t t, int64_t h, bool first) {
    _Alignas(64) float lg[LA_MAX_HEAD_DIM];
    tg_load_row(lg, la_attn_at(&p->g, bt, t, h), LA_F32, dm->Dk, dm->Dkp);
    for (int64_t d = 0; d < dm->Dkp; d += LA_VL) {
        const vf g = vf_load(lg + d);
        vf_store(factor + d, vf_exp(g));
        vf_store(sum + d, first ? g : vf_load(sum + d) + g);
    }
    for (int64_t d = dm->Dk; d < dm->Dkp; d++) factor[d] = 0;
}

/* Every line of row t of heads h0 .. h1 - 1 of x (row_elems elements each). */
static void prefetch_rows(const la_attn_operand *x, int64_t bt, int64_t t, int64_t h0, int64_t h1, int64_t row_elems) {
    const int64_t bytes = row_elems * (int64_t)la_dtype_size(x->dtype);
    for (int64_t h = h0; h < h1; h++) {
        const char *row = la_attn_at(x, bt, t, h);
        for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(row + o, 0, 3);
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
        /* each tensor's run LIN_AHEAD tokens on: a new page each, where the
         * hardware's streamers start cold, so the copies below would wait
         * on memory line by line */
        if (t + LIN_AHEAD < end) {
            const int64_t ta = t + LIN_AHEAD, kv0 = h0 / rep, kv1 = (h0 + hg - 1) / rep + 1;
            prefetch_rows(&p->q, bt, ta, h0, h0 + hg, p->Dx);
            prefetch_rows(&p->k, bt, ta, kv0, kv1, p->Dx);
            prefetch_rows(&p->v, bt, ta, kv0, kv1, dm->Dv);
            if (p->g.data) prefetch_rows(&p->g, bt, ta, h0, h0 + hg, channel ? dm->Dk : 1);
        }
        for (int64_t e = 0; e < hg; e++)
            lin_load_feature(W[e].Q + i * Dkp, la_attn_at(&p->q, bt, t, h0 + e), p->q.dtype, p, h0 + e, Dkp, p->scale);
        for (int64_t e = 0; e < hg; e++)
            lin_load_feature(W[e].K + i * Dkp, la_attn_at(&p->k, bt, t, (h0 + e) / rep), p->k.dtype, p, h0 + e, Dkp,
                             1.0f);
        for (int64_t e = 0; e < hg; e++) lin_load_value(W[e].V + i * Dvp, p, dm, bt, t, (h0 + e) / rep);
        for (int64_t e = 0; e < hg; e++) {
            if (channel) {
                decay_row_sum(W[e].dec + i * Dkp, W[e].lg, p, dm, bt, t, h0 + e, i == 0);
            } else {
                W[e].lg[i] = lin_log_decay_scalar(p, bt, t, h0 + e);
                W[e].a[i] = expf(W[e].lg[i]);
            }
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
    if (channel)
        for (int64_t d = 0; d < Dkp; d += LA_VL) vf_store(w->total + d, vf_exp(vf_load(w->lg + d)));
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
    /* the state's contribution: Q~ rows scaled by the decay since the chunk
     * began (per channel: pre, from chunk_decays) */
    float *qp = w->pre, *kr = w->suf;
    if (!channel) {
        qp = w->Q, kr = w->K;
        for (int64_t i = 0; i < n; i++) lin_scale(w->Q + i * Dkp, Dkp, w->spre[i]);
    }
    tg_gemm(n, Dvp, Dk, qp, Dkp, 1, S, Dvp, o, ldo, true);
    /* S = (decay over the chunk) S + (K~ decayed to the chunk's end)^T V */
    if (!channel)
        for (int64_t j = 0; j < n; j++) lin_scale(w->K + j * Dkp, Dkp, w->ssuf[j]);
    /* per row tile of S: its decay, then its product, while its rows are
     * in L1 (a separate pass over S read and wrote it from L2 once more) */
    const bool decay = channel || total != 1.0f;
    for (int64_t d0 = 0; d0 < Dk; d0 += TG_MR) {
        const int64_t m = Dk - d0 < TG_MR ? Dk - d0 : TG_MR;
        if (decay)
            for (int64_t d = d0; d < d0 + m; d++) lin_scale(S + d * Dvp, Dvp, channel ? w->total[d] : total);
        tg_gemm(m, Dvp, n, kr + d0, 1, Dkp, w->V, Dvp, S + d0 * Dvp, Dvp, true);
    }
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
        /* the decay as S + expm1(g) S (lin_expm1): as cheap as a S, and
         * a decay near 1 keeps its rate over 1M tokens; g = -inf gives 0 */
        float am1 = 0.0f;
        if (channel) lin_decay_row_m1(dec, w->lg, p, dm, bt, t, h);
        else am1 = expm1f(lin_log_decay_scalar(p, bt, t, h));
        for (int64_t j = 0; j < Dvp; j += LA_VL) vf_store(o + j, vf_set1(0));
        for (int64_t d = 0; d < Dk; d++) {
            float *row = S + d * lds;
            const vf ad = vf_set1(channel ? dec[d] : am1), kd = vf_set1(k[d]), qd = vf_set1(q[d]);
            for (int64_t j = 0; j < Dvp; j += LA_VL) {
                const vf r = vf_load(row + j);
                vf s = vf_fma(kd, vf_load(v + j), vf_fma(r, ad, r));
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
