/* Aaren (attention as an RNN), forward and backward, written once and
 * compiled per ISA.
 *
 * A state is (m, u, w): the running max of the scores s_i = scale q . k_i,
 * the numerator sum exp(s_i - m) v_i and the denominator sum exp(s_i - m);
 * the output of a prefix is u / w. Two states combine associatively:
 *   m = max(mA, mB), u = exp(mA - m) uA + exp(mB - m) uB, w likewise,
 * with exp(-inf - m) taken as 0 (the empty state has m = -inf), so every
 * factor is exp of a number <= 0 and nothing overflows.
 * Recurrent form: an item is (sequence, head), token by token. Chunked
 * form: the scan's parallelism is only needed where the (sequence, head)
 * pairs do not already keep every thread busy, and the scan costs a
 * second read of every key and value (at long L, from memory: the old
 * three-phase scan over all of a head's chunks ran 2.2x slower per token at
 * 1M than at 4K). So:
 *  - when the pairs keep the threads evenly busy (dense: a multiple of the
 *    threads, or at least 8 per thread; varlen: at least 8 per thread and
 *    no pair more than 1/8 of a thread's share), each pair runs in one
 *    pass from its initial state: keys and values read once, outputs
 *    written once, one state per pair (the recurrent form's arithmetic).
 *    Each thread owns a contiguous run of pairs (about equal tokens) and
 *    walks time outside them, AAREN_TILE tokens of each pair in turn, so
 *    it reads one contiguous span of every key, value and output row, and
 *    asks for the next tile's rows before running the current one;
 *  - else a two-level scan, pair after pair with the whole team on each:
 *    the sequence goes by rounds of one block per thread (whole chunks,
 *    about 512 KB of keys and values: they stay in the thread's L2 between
 *    the block's two sweeps); each thread reduces its block to a state,
 *    a barrier, then each reruns its block from the carry combined with
 *    the states of the blocks before its own, writing the outputs, and
 *    every thread advances the carry over the round's states (the same
 *    combines in the same order: identical copies). The round's states
 *    alternate between two buffers of one state per thread, so one
 *    barrier per round suffices and the workspace is O(threads), not O(L).
 * Backward, per (sequence, head), with lse_t = m_t + log w_t (non
 * decreasing in t) and delta_t = dout_t . o_t from a recomputing forward
 * sweep, then in reverse with R_t = sum_{t'>=t} exp(lse_t - lse_t') dout_t'
 * and r_t likewise over delta (factors <= 1):
 *   p_t = exp(s_t - lse_t), dv_t = p_t R_t, ds_t = p_t (v_t . R_t - r_t),
 *   dk_t = scale ds_t q, dq += scale ds_t k_t;
 * the initial state's gradient is e R_0, -e r_0 and e (u0 . R_0 - w0 r_0)
 * for u, w and m, e = exp(m0 - lse_0). A gradient (du, dw, dm) reaching
 * the final state (u_L, w_L, m_L) enters as one more output after the last
 * token, at lse_L = lse of the last token: R and r start at w_L du and
 * -w_L dw (exp(s_t - m_L) du = p_t exp(lse_t - lse_L) w_L du), and m_L =
 * max(m0, s_i) passes dm - u_L . du - w_L dw to the score that set it (or
 * to m0). dq sums over sequences through a partial row per (sequence, head)
 * in the workspace. */
#include "cpu/linear/scan_common.h"

typedef struct {
    int64_t Dkp, Dvp, S; /* S: floats of a stored state (u padded, w, m) */
} aaren_dims;

static aaren_dims dims_of(const la_aaren_problem *p) {
    aaren_dims d = {.Dkp = scan_pad(p->Dk), .Dvp = scan_pad(p->Dv)};
    d.S = d.Dvp + 2;
    return d;
}

/* Tokens of a block of the chunked form's two-level scan: whole chunks,
 * about AAREN_BLOCK_BYTES of keys and values. */
#define AAREN_BLOCK_BYTES (512 * 1024)
static int64_t block_tokens(const la_aaren_problem *p) {
    const int64_t per_token = (p->Dk + p->Dv) * (int64_t)sizeof(float), k = AAREN_BLOCK_BYTES / per_token / p->chunk;
    return (k > 1 ? k : 1) * p->chunk;
}

/* Rows of per-thread scratch, each row_floats long: enough for a key row,
 * a value row or a whole state. */
#define AAREN_ROWS 9
static int64_t row_floats(const aaren_dims *d) { return (d->Dkp > d->Dvp ? d->Dkp : d->Dvp) + SCAN_PAD; }

static int threads_of(const la_aaren_problem *p) { return p->head.threads > 0 ? p->head.threads : 1; }

static size_t thread_floats(const la_aaren_problem *p, bool backward) {
    const aaren_dims d = dims_of(p);
    size_t f = (size_t)(AAREN_ROWS * row_floats(&d));
    if (backward) f += (size_t)(2 * p->head.L);
    return f;
}

/* Backward: dq's partial rows. Forward (chunked): one state per pair (the
 * one-pass form) or the two buffers of one state per thread (the two-level
 * scan), whichever is larger. */
static size_t shared_floats(const la_aaren_problem *p, bool backward) {
    const aaren_dims d = dims_of(p);
    const int64_t pairs = p->head.num_seqs * p->H, ring = 2 * threads_of(p);
    if (backward) return (size_t)(pairs * d.Dkp);
    return p->form == LA_SCAN_CHUNKED ? (size_t)((pairs > ring ? pairs : ring) * d.S) : 0;
}

/* Whether the chunked form runs each (sequence, head) pair in one pass:
 * one thread, or the pairs keep nthreads evenly busy (see the top). */
static bool one_pass(const la_aaren_problem *p, int nthreads) {
    const int64_t pairs = p->head.num_seqs * p->H;
    if (nthreads <= 1) return true;
    if (!p->head.cu) return pairs % nthreads == 0 || pairs >= 8 * (int64_t)nthreads;
    int64_t total = 0, longest = 0;
    for (int64_t b = 0; b < p->head.num_seqs; b++) {
        const int64_t len = p->head.cu[b + 1] - p->head.cu[b];
        total += len;
        if (len > longest) longest = len;
    }
    return pairs >= 8 * (int64_t)nthreads && 8 * (int64_t)nthreads * longest <= total * p->H;
}

la_status LA_ISA_FN(la_cpu_aaren_workspace)(const la_aaren_problem *p, bool backward, size_t *bytes) {
    const int nthreads = threads_of(p);
    size_t f;
    if (!la_mul_size(thread_floats(p, backward), (size_t)nthreads, &f) ||
        !la_mul_size(f + shared_floats(p, backward), sizeof(float), bytes))
        return la_fail(LA_ERR_OVERFLOW, "Aaren workspace size overflows");
    return LA_OK;
}

typedef struct {
    float *q, *k, *k2, *v, *o, *R, *dout, *dq, *st; /* rows */
    float *lse, *delta;                        /* backward: one per token */
} aaren_scratch;

static aaren_scratch scratch_at(float *base, const aaren_dims *d, int64_t L) {
    aaren_scratch s;
    float **rows[AAREN_ROWS - 1] = {&s.q, &s.k, &s.dq, &s.v, &s.o, &s.R, &s.dout, &s.k2};
    for (int i = 0; i < AAREN_ROWS - 1; i++) *rows[i] = base + i * row_floats(d);
    s.st = base + (AAREN_ROWS - 1) * row_floats(d);
    s.lse = base + AAREN_ROWS * row_floats(d);
    s.delta = s.lse + L;
    return s;
}

/* exp(a - m) with exp(-inf - m) = 0 (m >= a). */
static inline float rescale(float a, float m) { return a == -INFINITY ? 0.0f : expf(a - m); }

static void state_empty(float *st, const aaren_dims *d) {
    memset(st, 0, (size_t)(d->Dvp + 1) * sizeof(float));
    st[d->Dvp + 1] = -INFINITY;
}

static void state_load(float *st, const la_scan_array *a, const la_aaren_problem *p, const aaren_dims *d,
                       int64_t b, int64_t h) {
    if (!a->data) {
        state_empty(st, d);
        return;
    }
    const float *src = la_scan_row(a, b, h);
    memset(st, 0, (size_t)d->Dvp * sizeof(float));
    memcpy(st, src, (size_t)p->Dv * sizeof(float));
    st[d->Dvp] = src[p->Dv];
    st[d->Dvp + 1] = src[p->Dv + 1];
}

static void state_store(const float *st, const la_scan_array *a, const la_aaren_problem *p, const aaren_dims *d,
                        int64_t b, int64_t h) {
    if (!a->data) return;
    float *dst = la_scan_row(a, b, h);
    memcpy(dst, st, (size_t)p->Dv * sizeof(float));
    dst[p->Dv] = st[d->Dvp];
    dst[p->Dv + 1] = st[d->Dvp + 1];
}

/* acc = acc (+) x, both states. */
static void state_combine(float *acc, const float *x, const aaren_dims *d) {
    const float ma = acc[d->Dvp + 1], mb = x[d->Dvp + 1], m = ma > mb ? ma : mb;
    const float fa = rescale(ma, m), fb = rescale(mb, m);
    const vf fav = vf_set1(fa), fbv = vf_set1(fb);
    for (int64_t j = 0; j < d->Dvp; j += LA_VL) vf_store(acc + j, vf_fma(fav, vf_load(acc + j), fbv * vf_load(x + j)));
    acc[d->Dvp] = fa * acc[d->Dvp] + fb * x[d->Dvp];
    acc[d->Dvp + 1] = m;
}

static float dot(const float *a, const float *b, int64_t n) {
    vf s = vf_set1(0);
    for (int64_t i = 0; i < n; i += LA_VL) s = vf_fma(vf_load(a + i), vf_load(b + i), s);
    return vf_reduce_add(s);
}

/* The head's query, scaled, padded. */
static void load_query(const la_aaren_problem *p, const aaren_dims *d, float *q, int64_t h) {
    const float *src = la_scan_row(&p->q, 0, h);
    for (int64_t i = 0; i < d->Dkp; i++) q[i] = i < p->Dk ? p->scale * src[i] : 0;
}

/* One token into the state: returns its score. */
static float step(const la_aaren_problem *p, const aaren_dims *d, aaren_scratch *s, float *st, int64_t bt, int64_t t,
                  int64_t h) {
    tg_load_row(s->k, la_attn_at(&p->k, bt, t, h), p->k.dtype, p->Dk, d->Dkp);
    tg_load_row(s->v, la_attn_at(&p->v, bt, t, h), p->v.dtype, p->Dv, d->Dvp);
    const float sc = dot(s->q, s->k, d->Dkp), m0 = st[d->Dvp + 1], m = sc > m0 ? sc : m0;
    const float a = rescale(m0, m), e = expf(sc - m);
    const vf av = vf_set1(a), ev = vf_set1(e);
    for (int64_t j = 0; j < d->Dvp; j += LA_VL) vf_store(st + j, vf_fma(av, vf_load(st + j), ev * vf_load(s->v + j)));
    st[d->Dvp] = a * st[d->Dvp] + e;
    st[d->Dvp + 1] = m;
    return sc;
}

/* o = u / w. */
static void output_of(const aaren_dims *d, const float *st, float *o) {
    const vf inv = vf_set1(1.0f / st[d->Dvp]);
    for (int64_t j = 0; j < d->Dvp; j += LA_VL) vf_store(o + j, vf_load(st + j) * inv);
}

/* Tokens [c0, c1) of sequence b from state st, outputs written when out. */
static void run_tokens(const la_aaren_problem *p, const aaren_dims *d, aaren_scratch *s, float *st, int64_t b,
                       int64_t h, int64_t c0, int64_t c1, bool out) {
    const int64_t bt = p->head.cu ? 0 : b;
    int64_t t0, len;
    la_scan_seq(&p->head, b, &t0, &len);
    for (int64_t t = t0 + c0; t < t0 + c1; t++) {
        step(p, d, s, st, bt, t, h);
        if (!out) continue;
        output_of(d, st, s->o);
        tg_store_row(la_attn_at(&p->out, bt, t, h), p->out.dtype, s->o, p->Dv);
    }
}

/* Tokens per step of the one-pass form's walk over its pairs. */
#define AAREN_TILE 64

/* Asks for the key and value rows of head h, tokens [c0, c0 + AAREN_TILE)
 * of sequence b, ahead of their use (the tile after the one about to run:
 * the memory's latency then overlaps a tile of work). */
static void prefetch_tile(const la_aaren_problem *p, int64_t b, int64_t h, int64_t c0, int64_t len) {
    const int64_t bt = p->head.cu ? 0 : b, c1 = c0 + AAREN_TILE < len ? c0 + AAREN_TILE : len;
    int64_t t0, n;
    la_scan_seq(&p->head, b, &t0, &n);
    const int64_t kb = p->Dk * (int64_t)la_dtype_size(p->k.dtype), vb = p->Dv * (int64_t)la_dtype_size(p->v.dtype),
                  ob = p->Dv * (int64_t)la_dtype_size(p->out.dtype);
    for (int64_t t = t0 + c0; t < t0 + c1; t++) {
        const char *k = la_attn_at(&p->k, bt, t, h), *v = la_attn_at(&p->v, bt, t, h);
        char *out = la_attn_at(&p->out, bt, t, h);
        for (int64_t o = 0; o < kb; o += 64) __builtin_prefetch(k + o, 0, 3);
        for (int64_t o = 0; o < vb; o += 64) __builtin_prefetch(v + o, 0, 3);
        for (int64_t o = 0; o < ob; o += 64) __builtin_prefetch(out + o, 1, 3);
    }
}

/* The one-pass form, called by every thread of the team: its run of pairs,
 * time in the outer loop (AAREN_TILE tokens, then the next pair's), so the
 * thread reads one contiguous span of every key and value row (its heads';
 * a pair at a time over the whole sequence read 256 bytes of each row and
 * left the prefetchers fetching the neighbours' lines too). states: one
 * per pair. */
static void forward_runs(const la_aaren_problem *p, const aaren_dims *d, aaren_scratch *s, float *states) {
    int64_t lo, hi;
    scan_token_run(&p->head, p->H, la_thread_id(), la_team_size(), &lo, &hi);
    for (int64_t it = lo; it < hi; it++) state_load(states + it * d->S, &p->state_in, p, d, it / p->H, it % p->H);
    for (int64_t c0 = 0; c0 < p->head.L; c0 += AAREN_TILE)
        for (int64_t it = lo; it < hi; it++) {
            const int64_t b = it / p->H, h = it % p->H;
            int64_t t0, len;
            la_scan_seq(&p->head, b, &t0, &len);
            if (c0 >= len) continue;
            load_query(p, d, s->q, h);
            prefetch_tile(p, b, h, c0 + AAREN_TILE, len);
            run_tokens(p, d, s, states + it * d->S, b, h, c0, c0 + AAREN_TILE < len ? c0 + AAREN_TILE : len, true);
        }
    for (int64_t it = lo; it < hi; it++) state_store(states + it * d->S, &p->state_out, p, d, it / p->H, it % p->H);
}

/* The two-level scan of the chunked form (see the top), called by every
 * thread of the team; ring: two buffers of nthreads states. */
static void forward_blocked(const la_aaren_problem *p, const aaren_dims *d, aaren_scratch *s, float *ring) {
    const int tid = la_thread_id(), team = la_team_size();
    const int64_t pairs = p->head.num_seqs * p->H, T = block_tokens(p);
    float *carry = s->st, *in = s->R; /* R: a row the forward has no other use for */
    int64_t round = 0;
    for (int64_t pr = 0; pr < pairs; pr++) {
        const int64_t b = pr / p->H, h = pr % p->H;
        int64_t t0, len;
        la_scan_seq(&p->head, b, &t0, &len);
        load_query(p, d, s->q, h);
        state_load(carry, &p->state_in, p, d, b, h);
        for (int64_t base = 0; base < len; base += team * T, round++) {
            float *states = ring + (round & 1) * team * d->S;
            const int64_t c0 = base + tid * T < len ? base + tid * T : len, c1 = c0 + T < len ? c0 + T : len;
            state_empty(states + tid * d->S, d);
            run_tokens(p, d, s, states + tid * d->S, b, h, c0, c1, false);
#pragma omp barrier
            memcpy(in, carry, (size_t)d->S * sizeof(float));
            for (int j = 0; j < tid; j++) state_combine(in, states + j * d->S, d);
            run_tokens(p, d, s, in, b, h, c0, c1, true);
            for (int j = 0; j < team; j++) state_combine(carry, states + j * d->S, d);
        }
        if (tid == 0) state_store(carry, &p->state_out, p, d, b, h);
    }
}

la_status LA_ISA_FN(la_cpu_aaren_forward)(const la_aaren_problem *p, void *mem) {
    const aaren_dims d = dims_of(p);
    const int nthreads = threads_of(p);
    const size_t per_thread = thread_floats(p, false);
    float *shared = (float *)mem + (size_t)nthreads * per_thread;
    const int64_t pairs = p->head.num_seqs * p->H;
    const bool blocked = p->form == LA_SCAN_CHUNKED && !one_pass(p, nthreads);
#pragma omp parallel num_threads(nthreads)
    {
        aaren_scratch s = scratch_at((float *)mem + (size_t)la_thread_id() * per_thread, &d, 0);
        if (blocked) {
            forward_blocked(p, &d, &s, shared);
        } else if (p->form == LA_SCAN_CHUNKED) {
            forward_runs(p, &d, &s, shared);
        } else {
#pragma omp for schedule(dynamic, 1)
            for (int64_t it = 0; it < pairs; it++) {
                const int64_t b = it / p->H, h = it % p->H;
                int64_t t0, len;
                la_scan_seq(&p->head, b, &t0, &len);
                load_query(p, &d, s.q, h);
                state_load(s.st, &p->state_in, p, &d, b, h);
                run_tokens(p, &d, &s, s.st, b, h, 0, len, true);
                state_store(s.st, &p->state_out, p, &d, b, h);
            }
        }
    }
    return LA_OK;
}

static void backward_pair(const la_aaren_backward_problem *bp, const aaren_dims *d, aaren_scratch *s, float *st,
                          float *dqp, int64_t b, int64_t h) {
    const la_aaren_problem *p = &bp->fwd;
    const int64_t bt = p->head.cu ? 0 : b;
    int64_t t0, len;
    la_scan_seq(&p->head, b, &t0, &len);
    load_query(p, d, s->q, h);
    state_load(st, &p->state_in, p, d, b, h);
    const float m0 = st[d->Dvp + 1], w0 = st[d->Dvp];
    const float *dT = bp->dstate_out.data ? la_scan_row(&bp->dstate_out, b, h) : NULL; /* (du, dw, dm) */
    float u0dotR = 0; /* u0 . R_0, formed below against the loaded u0 */
    memcpy(s->k2, st, (size_t)d->Dvp * sizeof(float)); /* u0 */
    int64_t amax = -1; /* the token whose score set the final m (-1: m0) */
    for (int64_t i = 0; i < len; i++) {
        const int64_t t = t0 + i;
        const float before = st[d->Dvp + 1];
        step(p, d, s, st, bt, t, h);
        if (st[d->Dvp + 1] > before) amax = i;
        output_of(d, st, s->o);
        tg_load_row(s->dout, la_attn_at(&bp->dout, bt, t, h), bp->dout.dtype, p->Dv, d->Dvp);
        s->lse[i] = st[d->Dvp + 1] + logf(st[d->Dvp]);
        s->delta[i] = dot(s->dout, s->o, d->Dvp);
    }
    memset(s->R, 0, (size_t)d->Dvp * sizeof(float));
    memset(dqp, 0, (size_t)d->Dkp * sizeof(float));
    float r = 0, dm = 0;
    if (dT && len > 0) { /* the final state's gradient: st holds (u_L, w_L, m_L) */
        const float wL = st[d->Dvp];
        float udu = 0;
        for (int64_t j = 0; j < p->Dv; j++) s->R[j] = wL * dT[j], udu += st[j] * dT[j];
        r = -wL * dT[p->Dv];
        dm = dT[p->Dv + 1] - udu - wL * dT[p->Dv];
    }
    for (int64_t i = len - 1; i >= 0; i--) {
        const int64_t t = t0 + i;
        const float f = i < len - 1 ? expf(s->lse[i] - s->lse[i + 1]) : 1.0f; /* R, r: 0 or the final state's */
        tg_load_row(s->dout, la_attn_at(&bp->dout, bt, t, h), bp->dout.dtype, p->Dv, d->Dvp);
        const vf fv = vf_set1(f);
        for (int64_t j = 0; j < d->Dvp; j += LA_VL) vf_store(s->R + j, vf_fma(fv, vf_load(s->R + j), vf_load(s->dout + j)));
        r = f * r + s->delta[i];
        tg_load_row(s->k, la_attn_at(&p->k, bt, t, h), p->k.dtype, p->Dk, d->Dkp);
        tg_load_row(s->v, la_attn_at(&p->v, bt, t, h), p->v.dtype, p->Dv, d->Dvp);
        const float pt = expf(dot(s->q, s->k, d->Dkp) - s->lse[i]);
        const float ds = pt * (dot(s->v, s->R, d->Dvp) - r) + (i == amax ? dm : 0.0f);
        for (int64_t j = 0; j < d->Dvp; j += LA_VL) vf_store(s->o + j, vf_set1(pt) * vf_load(s->R + j));
        tg_store_row(la_attn_at(&bp->dv, bt, t, h), bp->dv.dtype, s->o, p->Dv);
        /* dk = scale ds q (s->q holds scale q); dq += scale ds k */
        for (int64_t j = 0; j < d->Dkp; j += LA_VL) {
            vf_store(s->o + j, vf_set1(ds) * vf_load(s->q + j));
            vf_store(dqp + j, vf_fma(vf_set1(ds * p->scale), vf_load(s->k + j), vf_load(dqp + j)));
        }
        tg_store_row(la_attn_at(&bp->dk, bt, t, h), bp->dk.dtype, s->o, p->Dk);
    }
    if (!bp->dstate_in.data) return;
    float *g = la_scan_row(&bp->dstate_in, b, h);
    if (len == 0) { /* the final state is the initial one */
        for (int64_t j = 0; j < p->Dv + 2; j++) g[j] = dT ? dT[j] : 0.0f;
        return;
    }
    const float e = m0 == -INFINITY ? 0.0f : expf(m0 - s->lse[0]);
    u0dotR = dot(s->k2, s->R, d->Dvp);
    for (int64_t j = 0; j < p->Dv; j++) g[j] = e * s->R[j];
    g[p->Dv] = -e * r;
    g[p->Dv + 1] = e * (u0dotR - w0 * r) + (amax < 0 && m0 != -INFINITY ? dm : 0.0f);
}

la_status LA_ISA_FN(la_cpu_aaren_backward)(const la_aaren_backward_problem *bp, void *mem) {
    const la_aaren_problem *p = &bp->fwd;
    const aaren_dims d = dims_of(p);
    const int nthreads = p->head.threads > 0 ? p->head.threads : 1;
    const size_t per_thread = thread_floats(p, true);
    float *part = (float *)mem + (size_t)nthreads * per_thread;
    const int64_t pairs = p->head.num_seqs * p->H;
#pragma omp parallel num_threads(nthreads)
    {
        aaren_scratch s = scratch_at((float *)mem + (size_t)la_thread_id() * per_thread, &d, p->head.L);
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < pairs; it++)
            backward_pair(bp, &d, &s, s.st, part + it * d.Dkp, it / p->H, it % p->H);
#pragma omp for schedule(static)
        for (int64_t h = 0; h < p->H; h++) {
            float *row = la_scan_row(&bp->dq, 0, h);
            for (int64_t i = 0; i < p->Dk; i++) {
                float acc = 0;
                for (int64_t b = 0; b < p->head.num_seqs; b++) acc += part[(b * p->H + h) * d.Dkp + i];
                row[i] = acc;
            }
        }
    }
    return LA_OK;
}
