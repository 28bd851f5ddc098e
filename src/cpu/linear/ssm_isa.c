/* The selective scan (Mamba-1), forward and backward, written once and
 * compiled per ISA; and the dispatcher of the scan family's backend slots
 * (the convolution in conv1d_isa.c, Aaren in aaren_isa.c).
 *
 * Per channel d the recurrence is elementwise over the state index n:
 *   h[n] = exp(dt A[d][n]) h[n] + dt u B[n],   y = C . h + Dskip u
 * so every form vectorises over n (rows padded to SCAN_PAD with A, B, C 0:
 * the padded lanes of h stay 0) and spreads (sequence, channel) over
 * threads. The factor exp(dt A) is exp of a number <= 0: 0 for a huge dt,
 * 1 for dt = 0, never NaN (scan_exp, like vf_exp, gives 0 below -87, -inf included;
 * the recurrent forward uses scan_exp, the chunked forward and the decode
 * step scan_exp2 of dt log2(e) A, the backward vf_exp).
 *
 * Chunked form (the prefill kernel, as Mamba's CUDA kernel stages chunks
 * in shared memory): a block is SSM_CB channels of one group of one
 * sequence; per chunk of tokens a thread stages the group's B and C rows
 * once (converted to f32, padded) for all its blocks of that group, and per
 * block loads u, delta, z and runs each channel's scan over the chunk with
 * its state carried from the previous chunk (details above
 * chunked_forward). Recurrent form: one channel at a time, one token at a
 * time.
 *
 * Backward, by recomputation: an item is a slice of the channels of one
 * group of one sequence (one slice, the whole group, when the (sequence,
 * group) pairs already cover the threads); dB and dC sum over the group's
 * channels, so the first slice writes them and the others keep partial
 * rows in the workspace, added once every item is done. Per channel a
 * forward sweep stores h at every chunk start, then the chunks run in
 * reverse, each recomputing its h rows from its checkpoint and walking
 * back with dh:
 *   dy = dout silu(z), dC += dy h_t, dh += dy C, dB += dh dt u,
 *   ddt = sum_n dh (exp(dt A) A h_{t-1} + B u), dA += dh exp(dt A) dt h_{t-1},
 *   du = dy Dskip + dt (dh . B), dh = exp(dt A) dh.
 * dA, dDskip and ddelta_bias sum over sequences: each sequence writes its
 * own partial rows in the workspace, summed after the items. */
#include "cpu/linear/scan_common.h"

/* Channels per chunked item: the u/delta/z rows of a token load in one
 * piece, and the B, C rows staged for a chunk serve this many channels. */
#define SSM_CB 16

la_status LA_ISA_FN(la_cpu_conv1d_workspace)(const la_conv1d_problem *p, size_t *bytes);
la_status LA_ISA_FN(la_cpu_conv1d_forward)(const la_conv1d_problem *p, void *ws);
la_status LA_ISA_FN(la_cpu_conv1d_backward)(const la_conv1d_backward_problem *p, void *ws);
la_status LA_ISA_FN(la_cpu_aaren_workspace)(const la_aaren_problem *p, bool backward, size_t *bytes);
la_status LA_ISA_FN(la_cpu_aaren_forward)(const la_aaren_problem *p, void *ws);
la_status LA_ISA_FN(la_cpu_aaren_backward)(const la_aaren_backward_problem *p, void *ws);

static int nthreads_of(const la_scan_head *h) { return h->threads > 0 ? h->threads : 1; }

static float dt_of(const la_ssm_problem *p, float delta, float bias) {
    const float x = delta + bias;
    return p->softplus ? scan_softplus(x) : x;
}

static float bias_of(const la_ssm_problem *p, int64_t d) {
    return p->delta_bias.data ? la_scan_row(&p->delta_bias, 0, 0)[d] : 0.0f;
}

static float skip_of(const la_ssm_problem *p, int64_t d) {
    return p->Dskip.data ? la_scan_row(&p->Dskip, 0, 0)[d] : 0.0f;
}

/* The item's state row of channel d: the initial state or 0. */
static void load_state(const la_ssm_problem *p, float *h, int64_t b, int64_t d, int64_t Np) {
    if (p->state_in.data) memcpy(h, la_scan_row(&p->state_in, b, d), (size_t)p->N * sizeof(float));
    else memset(h, 0, (size_t)p->N * sizeof(float));
    for (int64_t n = p->N; n < Np; n++) h[n] = 0;
}

static void store_state(const la_ssm_problem *p, const float *h, int64_t b, int64_t d) {
    if (p->state_out.data) memcpy(la_scan_row(&p->state_out, b, d), h, (size_t)p->N * sizeof(float));
}

/* One token of one channel: h advanced, returns C . h. */
static inline float scan_step(float *h, const float *A, const float *Bt, const float *Ct, float dt, float u,
                              int64_t Np) {
    const vf dtv = vf_set1(dt), duv = vf_set1(dt * u);
    vf y = vf_set1(0);
    for (int64_t n = 0; n < Np; n += LA_VL) {
        vf hn = vf_fma(scan_exp(dtv * vf_load(A + n)), vf_load(h + n), duv * vf_load(Bt + n));
        vf_store(h + n, hn);
        y = vf_fma(vf_load(Ct + n), hn, y);
    }
    return vf_reduce_add(y);
}

static float gate_out(const la_ssm_problem *p, float y, int64_t bt, int64_t t, int64_t d) {
    return p->z.data ? y * scan_silu(scan_get(&p->z, bt, t, d)) : y;
}

/* ---- forward ---- */

static bool is_step(const la_ssm_problem *p);
static size_t step_scratch_floats(const la_ssm_problem *p);

/* Per thread: recurrent, A, h, B and C rows (Np each); chunked, a chunk's
 * B and C rows [C][Np] and u, dt, y rows [C][SSM_CB] (the blocks' states
 * in the shared part, fwd_shared_floats). */
static size_t fwd_scratch_floats(const la_ssm_problem *p) {
    const int64_t Np = scan_pad(p->N);
    if (is_step(p)) return step_scratch_floats(p);
    if (p->form != LA_SCAN_CHUNKED) return (size_t)(4 * Np + SCAN_PAD);
    return (size_t)(2 * p->chunk * Np + 3 * p->chunk * SSM_CB + SCAN_PAD);
}

static int64_t blocks_of(const la_ssm_problem *p);
static int64_t block_floats(const la_ssm_problem *p);

static size_t fwd_shared_floats(const la_ssm_problem *p) {
    return p->form == LA_SCAN_CHUNKED && !is_step(p) ? (size_t)(blocks_of(p) * block_floats(p)) : 0;
}

static void recurrent_item(const la_ssm_problem *p, float *w, int64_t b, int64_t d) {
    const int64_t Np = scan_pad(p->N), bt = p->head.cu ? 0 : b, g = d / (p->D / p->G);
    float *A = w, *h = A + Np, *Bt = h + Np, *Ct = Bt + Np;
    int64_t t0, len;
    la_scan_seq(&p->head, b, &t0, &len);
    /* the decode step (state in place) on the caller's row and A's row directly when unpadded */
    const bool in_place = p->state_in.data && p->state_in.data == p->state_out.data && p->N == Np;
    if (p->N == Np) A = la_scan_row(&p->A, 0, d);
    else scan_load_param_row(A, &p->A, d, p->N, Np);
    if (in_place) h = la_scan_row(&p->state_in, b, d);
    else load_state(p, h, b, d, Np);
    const float bias = bias_of(p, d), skip = skip_of(p, d);
    for (int64_t t = t0; t < t0 + len; t++) {
        tg_load_row(Bt, la_attn_at(&p->B, bt, t, g), p->B.dtype, p->N, Np);
        tg_load_row(Ct, la_attn_at(&p->C, bt, t, g), p->C.dtype, p->N, Np);
        const float u = scan_get(&p->u, bt, t, d), dt = dt_of(p, scan_get(&p->delta, bt, t, d), bias);
        const float y = scan_step(h, A, Bt, Ct, dt, u, Np) + skip * u;
        scan_put(&p->out, bt, t, d, gate_out(p, y, bt, t, d));
    }
    if (!in_place) store_state(p, h, b, d);
}

/* The chunked form runs with the block's channels in the vector lanes:
 * h [N][SSM_CB] (state index n by rows, channel by lane), so a token's
 * step is, per n, one exp, two FMAs and a broadcast of B[n] and C[n] for
 * LA_VL channels at once, and y needs no horizontal sum. Lanes of channels
 * past the block's end run with A = 0, u = 0: their h stays 0. The exp is
 * the decode step's scan_exp2 of dt log2(e) A (about half of scan_exp's
 * vector instructions, which were most of the step's).
 *
 * The blocks ((sequence, group, SSM_CB channels), in that order) are split
 * over the threads in contiguous runs of about equal tokens, and each
 * thread walks time in the outer loop: per chunk, its blocks one after
 * another, each from its state kept in the workspace. So a thread reads
 * one contiguous span of every token row of u, delta, z and out (its
 * blocks' channels: the hardware prefetchers follow it) and stages a
 * group's B and C rows once per chunk for all its blocks of that group.
 * (Block by block over the whole sequence instead, each block read 64
 * bytes of every 4 KB-apart row: at 1M tokens, with the inputs far beyond
 * the caches, the scan ran 1.9x slower per token than at 4K.) */

/* A block's state in the workspace's shared part: A transposed and h
 * ([N][SSM_CB] each), then delta bias and skip D ([SSM_CB] each). */
static int64_t block_floats(const la_ssm_problem *p) { return 2 * p->N * SSM_CB + 2 * SSM_CB; }

static int64_t blocks_per_group(const la_ssm_problem *p) { return (p->D / p->G + SSM_CB - 1) / SSM_CB; }

static int64_t blocks_of(const la_ssm_problem *p) { return p->head.num_seqs * p->G * blocks_per_group(p); }

/* Block it: sequence b, group g, first channel d0, cb channels. */
static void block_at(const la_ssm_problem *p, int64_t it, int64_t *b, int64_t *g, int64_t *d0, int64_t *cb) {
    const int64_t bpg = blocks_per_group(p), per_seq = p->G * bpg, per_group = p->D / p->G, r = it % per_seq;
    const int64_t blk = r % bpg;
    *b = it / per_seq;
    *g = r / bpg;
    *d0 = *g * per_group + blk * SSM_CB;
    *cb = per_group - blk * SSM_CB < SSM_CB ? per_group - blk * SSM_CB : SSM_CB;
}

static void block_begin(const la_ssm_problem *p, float *st, int64_t b, int64_t d0, int64_t cb) {
    const int64_t N = p->N;
    float *At = st, *h = At + N * SSM_CB, *bias = h + N * SSM_CB, *skip = bias + SSM_CB;
    memset(st, 0, (size_t)block_floats(p) * sizeof(float));
    for (int64_t c = 0; c < cb; c++) {
        const float *Ar = la_scan_row(&p->A, 0, d0 + c);
        for (int64_t k = 0; k < N; k++) At[k * SSM_CB + c] = Ar[k];
        if (p->state_in.data) {
            const float *s = la_scan_row(&p->state_in, b, d0 + c);
            for (int64_t k = 0; k < N; k++) h[k * SSM_CB + c] = s[k];
        }
        bias[c] = bias_of(p, d0 + c);
        skip[c] = skip_of(p, d0 + c);
    }
}

static void block_end(const la_ssm_problem *p, const float *st, int64_t b, int64_t d0, int64_t cb) {
    const float *h = st + p->N * SSM_CB;
    if (p->state_out.data)
        for (int64_t c = 0; c < cb; c++) {
            float *s = la_scan_row(&p->state_out, b, d0 + c);
            for (int64_t k = 0; k < p->N; k++) s[k] = h[k * SSM_CB + c];
        }
}

/* Tokens [t, t + n) of the block (state st) through the scan; B and C rows
 * staged in w unless `staged` (the thread's previous block, of the same
 * sequence and group, staged them for this chunk). */
static void block_chunk(const la_ssm_problem *p, float *w, float *st, bool staged, int64_t b, int64_t g, int64_t d0,
                        int64_t cb, int64_t t, int64_t n) {
    const int64_t N = p->N, Np = scan_pad(N), bt = p->head.cu ? 0 : b, C = p->chunk;
    float *Bc = w, *Cc = Bc + C * Np, *uc = Cc + C * Np, *dtc = uc + C * SSM_CB, *yc = dtc + C * SSM_CB;
    const float *At = st, *bias = st + 2 * N * SSM_CB, *skip = bias + SSM_CB;
    float *h = st + N * SSM_CB;
    for (int64_t i = 0; i < n; i++) {
        if (!staged) {
            tg_load_row(Bc + i * Np, la_attn_at(&p->B, bt, t + i, g), p->B.dtype, N, Np);
            tg_load_row(Cc + i * Np, la_attn_at(&p->C, bt, t + i, g), p->C.dtype, N, Np);
        }
        tg_load_row(uc + i * SSM_CB, la_attn_at(&p->u, bt, t + i, d0), p->u.dtype, cb, SSM_CB);
        tg_load_row(dtc + i * SSM_CB, la_attn_at(&p->delta, bt, t + i, d0), p->delta.dtype, cb, SSM_CB);
        for (int64_t c = 0; c < SSM_CB; c += LA_VL) {
            const vf x = vf_load(dtc + i * SSM_CB + c) + vf_load(bias + c);
            vf_store(dtc + i * SSM_CB + c, p->softplus ? scan_softplus_v(x) : x);
        }
    }
    for (int64_t i = 0; i < n; i++) {
        const float *Bi = Bc + i * Np, *Ci = Cc + i * Np;
        for (int64_t c = 0; c < SSM_CB; c += LA_VL) {
            const vf dt = vf_load(dtc + i * SSM_CB + c), u = vf_load(uc + i * SSM_CB + c), du = dt * u,
                     dt2 = dt * 1.44269504088896341f;
            vf y0 = vf_load(skip + c) * u, y1 = vf_set1(0);
            int64_t k = 0;
            for (; k + 2 <= N; k += 2) {
                float *h0 = h + k * SSM_CB + c, *h1 = h0 + SSM_CB;
                const vf a0 = scan_exp2(dt2, vf_load(At + k * SSM_CB + c)),
                         a1 = scan_exp2(dt2, vf_load(At + (k + 1) * SSM_CB + c));
                const vf x0 = vf_fma(a0, vf_load(h0), du * Bi[k]), x1 = vf_fma(a1, vf_load(h1), du * Bi[k + 1]);
                vf_store(h0, x0);
                vf_store(h1, x1);
                y0 = vf_fma(vf_set1(Ci[k]), x0, y0);
                y1 = vf_fma(vf_set1(Ci[k + 1]), x1, y1);
            }
            if (k < N) {
                float *h0 = h + k * SSM_CB + c;
                const vf x0 = vf_fma(scan_exp2(dt2, vf_load(At + k * SSM_CB + c)), vf_load(h0), du * Bi[k]);
                vf_store(h0, x0);
                y0 = vf_fma(vf_set1(Ci[k]), x0, y0);
            }
            vf_store(yc + i * SSM_CB + c, y0 + y1);
        }
    }
    for (int64_t i = 0; i < n; i++) {
        float *y = yc + i * SSM_CB;
        if (p->z.data) {
            _Alignas(64) float zr[SSM_CB];
            tg_load_row(zr, la_attn_at(&p->z, bt, t + i, d0), p->z.dtype, cb, SSM_CB);
            for (int64_t c = 0; c < SSM_CB; c += LA_VL) {
                const vf z = vf_load(zr + c);
                vf_store(y + c, vf_load(y + c) * (z * scan_sigmoid_v(z)));
            }
        }
        tg_store_row(la_attn_at(&p->out, bt, t + i, d0), p->out.dtype, y, cb);
    }
}

/* The chunked forward, called by every thread of the team; blk: the
 * blocks' states. */
static void chunked_forward(const la_ssm_problem *p, float *w, float *blk) {
    const int64_t bf = block_floats(p), C = p->chunk;
    int64_t lo, hi;
    scan_token_run(&p->head, p->G * blocks_per_group(p), la_thread_id(), la_team_size(), &lo, &hi);
    for (int64_t it = lo; it < hi; it++) {
        int64_t b, g, d0, cb;
        block_at(p, it, &b, &g, &d0, &cb);
        block_begin(p, blk + it * bf, b, d0, cb);
    }
    for (int64_t c0 = 0; c0 < p->head.L; c0 += C) {
        int64_t sb = -1, sg = -1; /* the sequence and group whose B, C rows are staged for this chunk */
        for (int64_t it = lo; it < hi; it++) {
            int64_t b, g, d0, cb, t0, len;
            block_at(p, it, &b, &g, &d0, &cb);
            la_scan_seq(&p->head, b, &t0, &len);
            if (c0 >= len) continue;
            block_chunk(p, w, blk + it * bf, b == sb && g == sg, b, g, d0, cb, t0 + c0, len - c0 < C ? len - c0 : C);
            sb = b, sg = g;
        }
    }
    for (int64_t it = lo; it < hi; it++) {
        int64_t b, g, d0, cb;
        block_at(p, it, &b, &g, &d0, &cb);
        block_end(p, blk + it * bf, b, d0, cb);
    }
}

/* ---- the decode step: one token per sequence ----
 *
 * (Through the chunked kernel with chunk 1 every call transposed each
 * block's A and state into the workspace and back: three times the
 * state's traffic, 0.07 of the read bandwidth.) Here the state rows are
 * read and written in place, once: an item is (sequence, group, span of
 * STEP_CB channels), the items split over the threads in contiguous runs
 * (one contiguous span of every state, u, delta, z and out row per
 * thread); per span u, delta (+ bias, softplus) and z are loaded and
 * activated as vectors and the token's B and C rows staged once per
 * (sequence, group); per channel h runs over n in vectors, and LA_VL
 * channels' C . h sums come out of one transposed sum. Rows whose N is
 * not a multiple of LA_VL go through a zero-padded copy. Sequences of
 * length 0 (varlen) pass their state through.
 *
 * At N 16 (Mamba's) a channel's row is one AVX-512 vector, so the step
 * was bound by its instructions, not by memory (on Zen 4 the state
 * streamed in and out at about 3x the rate the step consumed it): the
 * exp is scan_exp2 (a degree-5 polynomial; on AVX-512 a 16-entry table
 * and a degree-3 one, 10 vector instructions with dt A fused in, where
 * scan_exp took 19), whole blocks of rows back to back take step_dense1/2
 * (constant strides, no per-row pointers on the stack), the
 * per-channel constants stay in registers (no calls in the row loop), the
 * LA_VL rows of a block are unrolled with their C . h tree merged as they
 * come (step_rows: no stack round trip), softplus takes no division
 * (scan_softplus_v), the u / delta / bias / skip / out rows of a whole f32
 * span are vector loads and stores, and the items are walked without
 * divisions. On AVX2 (Zen 1, N 16: two vectors a row) a span's rows are
 * updated in one pass and their C . h sums taken in a second
 * (step_dense2), and the exps (degree 4 there) drop their clamps where no dt A can reach
 * them (step_in_range, from each span's largest |A|, found once a call). */

static bool is_step(const la_ssm_problem *p) { return p->form == LA_SCAN_CHUNKED && p->head.L <= 1; }

/* Channels per item of the step: the per-channel work before the state
 * rows (u, delta, softplus, dt log2(e), dt u) is a vector loop over them,
 * independent iterations that overlap; per block of 16 it was a serial
 * chain of ~100 cycles ahead of every 16 rows (a fifth of the step).
 * (128 on AVX2: 2-3% less time with the state in L2 on Zen 1, 2% more
 * from DRAM at 2 threads.) */
#define STEP_CB 64

static int64_t step_spans(const la_ssm_problem *p) { return (p->D / p->G + STEP_CB - 1) / STEP_CB; }

/* Per thread: B, C, A, h and a zero row [Np] each; u, dt, z, bias, skip,
 * y, dt log2(e) and dt u [STEP_CB]; then the largest |A| of each span's
 * rows [G spans] (step_forward). */
static size_t step_scratch_floats(const la_ssm_problem *p) {
    return (size_t)(5 * scan_pad(p->N) + 8 * STEP_CB + SCAN_PAD + p->G * step_spans(p));
}

static float *step_amax_slots(const la_ssm_problem *p, float *w) { return w + 5 * scan_pad(p->N) + 8 * STEP_CB + SCAN_PAD; }

/* dst[0..STEP_CB) = channels d0..d0+cb of token t0 of sequence bt of o,
 * 0 past cb. A whole f32 block is vector loads (no dtype size call, whose
 * call also cost the exp constants their registers). */
static inline void step_load(float *dst, const la_attn_operand *o, int64_t bt, int64_t t0, int64_t d0, int64_t cb) {
    if (o->dtype == LA_F32 && cb == STEP_CB && o->head_stride == 1) {
        const float *src = (const float *)o->data + bt * o->batch_stride + t0 * o->token_stride + d0;
        for (int64_t c = 0; c < STEP_CB; c += LA_VL) vf_store(dst + c, vf_load(src + c));
    } else {
        tg_load_row(dst, la_attn_at(o, bt, t0, d0), o->dtype, cb, STEP_CB);
    }
}

/* dst[0..STEP_CB) = the per-channel parameter a (delta bias or skip D) of
 * channels d0..d0+cb, 0 past cb; false (dst untouched) without one: the
 * callers skip the term (two rep stos of 256 bytes per span were a tenth
 * of the step's per-span work on Zen 1). */
static inline bool step_param(float *dst, const la_scan_array *a, int64_t d0, int64_t cb) {
    const float *src = a->data ? la_scan_row(a, 0, 0) + d0 : NULL;
    if (!src) return false;
    if (cb == STEP_CB) {
        for (int64_t c = 0; c < STEP_CB; c += LA_VL) vf_store(dst + c, vf_load(src + c));
    } else {
        for (int64_t c = 0; c < STEP_CB; c++) dst[c] = c < cb ? src[c] : 0.0f;
    }
    return true;
}

/* The state is read STEP_PF_BYTES ahead of the row being updated, one
 * row's lines per row, so the requests spread over the channels' work.
 * (Requested a whole item ahead at once, 64 rows in a burst, the hints
 * themselves stalled on the full miss queue: 15% of the step on Zen 4.)
 * For a contiguous state the address is the row of a channel to come;
 * otherwise a hint that may miss, nothing worse: a hint never faults, and
 * the address is formed as an integer, so no pointer leaves its array. */
#ifndef STEP_PF_BYTES
#define STEP_PF_BYTES 4096
#endif

static inline void step_prefetch_row(const float *row, int64_t N) {
    for (int64_t o = 0; o < N * (int64_t)sizeof(float); o += 64)
        la_prefetch_t0((const char *)((uintptr_t)row + STEP_PF_BYTES + (uintptr_t)o));
}

/* The two halves of the pair sum of (a, b) at level l of vf_transpose_sum's
 * tree (a the earlier of the two; the sum is *x + *y): on AVX-512
 * blend(a, b) and one two-source permute (lanes with bit l set take b's),
 * one shuffle where vf_transpose_sum takes two (15 fewer per 16 channels;
 * its 30 shuffles were a sixth of the step). */
static inline void step_pair(int l, vf a, vf b, vf *x, vf *y) {
#if defined(LA_ISA_AVX512)
    static const int32_t swap[4][16] = {
        {1, 16, 3, 18, 5, 20, 7, 22, 9, 24, 11, 26, 13, 28, 15, 30},
        {2, 3, 16, 17, 6, 7, 20, 21, 10, 11, 24, 25, 14, 15, 28, 29},
        {4, 5, 6, 7, 16, 17, 18, 19, 12, 13, 14, 15, 24, 25, 26, 27},
        {8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23}};
    static const __mmask16 upper[4] = {0xAAAA, 0xCCCC, 0xF0F0, 0xFF00};
    *x = (vf)_mm512_mask_blend_ps(upper[l], (__m512)a, (__m512)b);
    *y = (vf)_mm512_permutex2var_ps((__m512)a, _mm512_loadu_si512(swap[l]), (__m512)b);
#elif defined(LA_ISA_AVX2)
    /* Within the 128-bit halves (vshufps) at levels 0 and 1, the halves
       swapped at level 2: lane-crossing even/odd shuffles compiled to two
       vpermd and a blend each, 28 vpermd per 8 channels (3 uops each on
       Zen 1). The sums come out in another lane order at the inner levels
       (after level 0, a's pairs then b's in each half; after level 1, one
       lane per input in each half), the same channel order at the end;
       step_rows' C multiplies at level 0 see the same shuffle of C. */
    const __m256 av = (__m256)a, bv = (__m256)b;
    if (l == 0 || l == 1) {
        *x = (vf)_mm256_shuffle_ps(av, bv, 0x88);
        *y = (vf)_mm256_shuffle_ps(av, bv, 0xDD);
    } else {
        *x = (vf)_mm256_insertf128_ps(av, _mm256_castps256_ps128(bv), 1);
        *y = (vf)_mm256_insertf128_ps(bv, _mm256_extractf128_ps(av, 1), 0);
    }
#else
    (void)l;
    *x = __builtin_shufflevector(a, b, LA_EVEN_LANES);
    *y = __builtin_shufflevector(a, b, LA_ODD_LANES);
#endif
}

static inline vf step_merge(int l, vf a, vf b) {
    vf x, y;
    step_pair(l, a, b, &x, &y);
    return x + y;
}

/* log2(LA_VL): the levels of the tree. */
#define STEP_LEVELS (LA_VL == 16 ? 4 : LA_VL == 8 ? 3 : 2)

/* Lane e of the result is the sum of v[e]'s lanes (v overwritten), as
 * vf_transpose_sum. */
static inline vf step_transpose_sum(vf *v) {
#pragma GCC unroll 4
    for (int l = 0; l < STEP_LEVELS; l++)
#pragma GCC unroll 8
        for (int k = 0; k < LA_VL >> (l + 1); k++) v[k] = step_merge(l, v[2 * k], v[2 * k + 1]);
    return v[0];
}

/* One vector of a channel's state row through the token, h = exp(dt A) h +
 * dt u B, read from hs and written to hd (the same row in place); dtv =
 * dt log2(e) (exp(dt A) = 2^(dt log2(e) A), scan_exp2), duv = dt u; pre 1:
 * A holds exp(dt A) itself; pre 2: hs holds the new h already, only read
 * (step_dense2's AVX2 form). */
static inline __attribute__((always_inline)) vf step_vec(const float *A, const float *hs, float *hd, const float *Bt,
                                                         vf dtv, vf duv, const int pre) {
    if (pre == 2) return vf_load(hs);
    const vf e = pre ? vf_load(A) : scan_exp2(dtv, vf_load(A));
    const vf hn = vf_fma(e, vf_load(hs), duv * vf_load(Bt));
    vf_store(hd, hn);
    return hn;
}

/* A whole row (n_end floats, a multiple of LA_VL); returns the lanes of C . h. */
static inline __attribute__((always_inline)) vf step_row(const float *A, const float *hs, float *hd, const float *Bt,
                                                         const float *Ct, float dt2, float du, int64_t n_end,
                                                         const int pre) {
    const vf dtv = vf_set1(dt2), duv = vf_set1(du);
    /* the first product a multiply: an FMA onto zero made the compiler copy C's register first */
    vf y = vf_load(Ct) * step_vec(A, hs, hd, Bt, dtv, duv, pre);
    for (int64_t n = LA_VL; n < n_end; n += LA_VL)
        y = vf_fma(vf_load(Ct + n), step_vec(A + n, hs + n, hd + n, Bt + n, dtv, duv, pre), y);
    return y;
}

/* The C . h sums of channels 0..nc (nc may pass LA_VL: the first LA_VL
 * count) in the lanes, their rows (n_end floats, a multiple of LA_VL) by
 * stride from A, hs and hd. The sums' tree runs as the rows come (level
 * l merges when channel j's low l + 1 bits are all ones), so at most
 * STEP_LEVELS partial sums are live and every row's vector stays in a
 * register: the LA_VL channels unrolled, no stack round trip. With one
 * vector per row (Mamba's N 16 on AVX-512) C multiplies inside the first
 * level's pair sum, x C + y C' (C' = C shuffled as y), one multiply per
 * pair of rows fewer. */
static inline __attribute__((always_inline)) vf step_rows(const float *A, int64_t as, const float *hs, int64_t hss,
                                                          float *hd, int64_t hds, const float *Bt, const float *Ct,
                                                          const float *dt2, const float *du, int64_t nc,
                                                          int64_t n_end, const int pre) {
    const bool one = n_end == LA_VL;
    vf part[STEP_LEVELS + 1], prev = vf_set1(0), cx = vf_set1(0), cy = vf_set1(0);
    if (one) step_pair(0, vf_load(Ct), vf_load(Ct), &cx, &cy);
#pragma GCC unroll 16
    for (int j = 0; j < LA_VL; j++) {
        vf s = vf_set1(0);
        if (j < nc) {
            if (STEP_PF_BYTES > 0 && pre != 2) step_prefetch_row(hs + j * hss, n_end);
            s = one ? step_vec(A + j * as, hs + j * hss, hd + j * hds, Bt, vf_set1(dt2[j]), vf_set1(du[j]), pre)
                    : step_row(A + j * as, hs + j * hss, hd + j * hds, Bt, Ct, dt2[j], du[j], n_end, pre);
        }
        int l = 0;
        if (one) {
            if (!(j & 1)) {
                prev = s;
                continue;
            }
            vf x, y;
            step_pair(0, prev, s, &x, &y);
            s = vf_fma(cx, x, cy * y);
            l = 1;
        }
        for (; l < STEP_LEVELS && (j >> l & 1); l++) s = step_merge(l, part[l], s);
        part[l] = s;
    }
    return part[STEP_LEVELS];
}

/* Blocks of LA_VL channels whose rows (nr floats: one vector, Mamba's N 16
 * on AVX-512, or two, N 16 on AVX2) lie back to back in A and the state
 * (as the API lays them out): strides and counts are constants, so the
 * unrolled rows address by fixed offsets from three pointers. (In
 * step_block's general loop the compiler kept a pointer per unrolled row
 * for each of A, hs and hd, 48 of them, on the stack, and added the stride
 * to each one per block.) ys[c] = C . h of channel c. */
static inline __attribute__((always_inline)) void step_dense_rows(const float *A, const float *hs, float *hd,
                                                                  const float *Bt, const float *Ct, const float *dt2,
                                                                  const float *du, float *ys, int64_t blocks,
                                                                  const int64_t nr, const int pre) {
    for (int64_t i = 0; i < blocks; i++, A += LA_VL * nr, hs += LA_VL * nr, hd += LA_VL * nr) {
        const vf y = step_rows(A, nr, hs, nr, hd, nr, Bt, Ct, dt2 + i * LA_VL, du + i * LA_VL, LA_VL, nr, pre);
        vf_store(ys + i * LA_VL, y);
    }
}

static __attribute__((noinline)) void step_dense1(const float *A, const float *hs, float *hd, const float *Bt,
                                                  const float *Ct, const float *dt2, const float *du, float *ys,
                                                  int64_t blocks) {
    step_dense_rows(A, hs, hd, Bt, Ct, dt2, du, ys, blocks, LA_VL, false);
}

#if defined(LA_ISA_AVX2)
/* 2^f for |f| <= 1/2 in one FMA fewer than scan_exp2_poly (degree 4,
 * 1 + f q(f)), for the decode step alone: its exps are most of its vector
 * work, which bounds it on Zen 1. The linear coefficient is ln 2 itself
 * (rounded to f32) and the other three minimise the largest relative error
 * on [-1/2, 1/2] (fitted for this kernel): 5.3e-6 relative at worst, and
 * 3.3e-5 f^2 near 0, so a slow channel's decay (exact near 1 but for the
 * rounding: an error linear in f would compound over the tokens, as the
 * free fit's 2.4e-5 |f| does) stays within test_ssm's tolerances: at most
 * 2.3e-6 over its pure-decay case's 200 tokens (1e-5 allowed), and the
 * per-token 5.3e-6 contracts with the decays (about 1.3e-5 of the state
 * at worst, at decays near 2^-1/2; 1e-4 allowed). */
static inline vf step_exp2_poly4(vf f) {
    vf q = vf_set1(9.528353810310364e-3f);
    q = vf_fma(q, f, vf_set1(5.5793337523937225e-2f));
    q = vf_fma(q, f, vf_set1(2.402510941028595e-1f));
    q = vf_fma(q, f, vf_set1(6.931471824645996e-1f));
    return vf_fma(q, f, vf_set1(1.0f));
}

/* scan_exp2(s, a) without its clamps (x2 at 127 above, the mask below
 * -125), for |s a| <= 125, where they never act, and with the degree-4
 * polynomial (step_exp2_poly4): 10 vector operations
 * where scan_exp2 takes 14 (on Zen 1 the step's vector work runs at about
 * one 256-bit operation a cycle whatever the chains: the clamps were 11%
 * of its time). s a is fused into t = s a + 1.5 * 2^23 and into r = s a -
 * n, so r is exact but for one rounding (scan_exp2 rounds x = s a first;
 * the two differ by the polynomials' errors, 5.4e-6 relative at most). */
static inline vf step_exp2_inrange(vf s, vf a) {
    const float magic = 12582912.0f;
    const __m256 sv = (__m256)s, av = (__m256)a, t = _mm256_fmadd_ps(sv, av, _mm256_set1_ps(magic));
    const vf p = step_exp2_poly4((vf)_mm256_fmsub_ps(sv, av, _mm256_sub_ps(t, _mm256_set1_ps(magic))));
    vu e, pb;
    memcpy(&e, &t, sizeof e);
    memcpy(&pb, &p, sizeof pb);
    return (vf)(pb + (e << 23));
}

/* The largest |A| over n floats (a multiple of LA_VL) from A; NaN when one
 * is NaN, inf when one is infinite: the largest of the magnitudes' bits as
 * integers (NaN's lie above inf's, inf's above every finite one's). */
static float step_amax(const float *A, int64_t n) {
    __m256i m = _mm256_setzero_si256();
    for (int64_t i = 0; i < n; i += LA_VL)
        m = _mm256_max_epi32(m, _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(A + i)),
                                                 _mm256_set1_epi32(0x7fffffff)));
    int32_t lanes[LA_VL], r = 0;
    memcpy(lanes, &m, sizeof lanes);
    for (int i = 0; i < LA_VL; i++) r = lanes[i] > r ? lanes[i] : r;
    float f;
    memcpy(&f, &r, sizeof f);
    return f;
}

/* Whether every |dt2[c] A[c][n]| of the n channels (a multiple of LA_VL)
 * is at most 125, from amax = the largest |A| of their rows: |dt2| <=
 * 125 / amax for all (false for NaN or inf anywhere; the product's rounding
 * leaves it below 125.001, well inside scan_exp2's unclamped range). */
static bool step_in_range(const float *dt2, int64_t n, float amax) {
    if (!(amax <= 3.4e38f)) return false;
    const float lim = amax > 125.0f / 3.4e38f ? 125.0f / amax : 3.4e38f;
    __m256 ok = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
    for (int64_t c = 0; c < n; c += LA_VL) {
        const __m256 d = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), _mm256_loadu_ps(dt2 + c));
        ok = _mm256_and_ps(ok, _mm256_cmp_ps(d, _mm256_set1_ps(lim), _CMP_LE_OQ));
    }
    return _mm256_movemask_ps(ok) == 0xff;
}
#endif

#if defined(LA_ISA_AVX2)
/* step_dense2's first pass: channels [0, n) of the span, each row's two
 * vectors h = exp(dt A) h + dt u B, written to hd; inrange: every |dt A
 * log2 e| <= 125 (step_in_range), so the exps need no clamps. */
static inline __attribute__((always_inline)) void step_update2(const float *A, const float *hs, float *hd,
                                                               const float *Bt, const float *dt2, const float *du,
                                                               int64_t n, const bool inrange) {
    const vf b0 = vf_load(Bt), b1 = vf_load(Bt + LA_VL);
    for (int64_t c = 0; c < n; c++) {
        const vf dtv = vf_set1(dt2[c]), duv = vf_set1(du[c]);
        const float *a = A + c * 2 * LA_VL, *h = hs + c * 2 * LA_VL;
        float *o = hd + c * 2 * LA_VL;
        if (STEP_PF_BYTES > 0) step_prefetch_row(h, 2 * LA_VL);
        const vf e0 = inrange ? step_exp2_inrange(dtv, vf_load(a)) : scan_exp2(dtv, vf_load(a)),
                 e1 = inrange ? step_exp2_inrange(dtv, vf_load(a + LA_VL)) : scan_exp2(dtv, vf_load(a + LA_VL));
        vf_store(o, vf_fma(e0, vf_load(h), duv * b0));
        vf_store(o + LA_VL, vf_fma(e1, vf_load(h + LA_VL), duv * b1));
    }
}
#endif

/* On AVX2 (Zen 1: 256-bit operations split in two, 16 registers) the
 * span's state rows are updated first, a loop iteration a channel (its two
 * exps and updates), and the C . h sums' pass reads the new rows back (from
 * L1): an exp is a chain of ~12 dependent operations, and with each
 * unrolled row's whole update and sums around it too few chains fit the
 * out-of-order window. (Before: the decays alone first, stored and read
 * back by the rows' update: two stores and loads more per channel, 5% of
 * the step's time on Zen 1, whose vector work runs at about one 256-bit
 * operation a cycle, a store two.) */
static __attribute__((noinline)) void step_dense2(const float *A, const float *hs, float *hd, const float *Bt,
                                                  const float *Ct, const float *dt2, const float *du, float *ys,
                                                  int64_t blocks, bool inrange) {
#if defined(LA_ISA_AVX2)
    if (inrange) step_update2(A, hs, hd, Bt, dt2, du, blocks * LA_VL, true);
    else step_update2(A, hs, hd, Bt, dt2, du, blocks * LA_VL, false);
    step_dense_rows(NULL, hd, hd, Bt, Ct, dt2, du, ys, blocks, 2 * LA_VL, 2);
#else
    (void)inrange;
    step_dense_rows(A, hs, hd, Bt, Ct, dt2, du, ys, blocks, 2 * LA_VL, false);
#endif
}

/* amax: the span's slot of the largest |A| of its rows, < 0 until this
 * thread's first item of the span computes it (A is the same for every
 * sequence). */
static void step_block(const la_ssm_problem *p, float *w, bool staged, int64_t b, int64_t g, int64_t d0, int64_t cb,
                       float *amax) {
    const int64_t N = p->N, Np = scan_pad(N), bt = p->head.cu ? 0 : b;
    float *Bt = w, *Ct = Bt + Np, *Ap = Ct + Np, *hp = Ap + Np, *zero = hp + Np, *uc = zero + Np, *dtc = uc + STEP_CB,
          *zc = dtc + STEP_CB, *bias = zc + STEP_CB, *skip = bias + STEP_CB, *yc = skip + STEP_CB, *dt2 = yc + STEP_CB,
          *duc = dt2 + STEP_CB;
    const bool in_place = p->state_in.data == p->state_out.data;
    int64_t t0, len;
    la_scan_seq(&p->head, b, &t0, &len);
    if (len == 0) {
        if (p->state_out.data && !in_place)
            for (int64_t c = 0; c < cb; c++) {
                float *o = la_scan_row(&p->state_out, b, d0 + c);
                if (p->state_in.data) memcpy(o, la_scan_row(&p->state_in, b, d0 + c), (size_t)N * sizeof(float));
                else memset(o, 0, (size_t)N * sizeof(float));
            }
        return;
    }
    if (!staged) {
        tg_load_row(Bt, la_attn_at(&p->B, bt, t0, g), p->B.dtype, N, Np);
        tg_load_row(Ct, la_attn_at(&p->C, bt, t0, g), p->C.dtype, N, Np);
        if (!p->state_in.data) memset(zero, 0, (size_t)Np * sizeof(float));
    }
    step_load(uc, &p->u, bt, t0, d0, cb);
    step_load(dtc, &p->delta, bt, t0, d0, cb);
    if (p->z.data) step_load(zc, &p->z, bt, t0, d0, cb);
    const bool has_bias = step_param(bias, &p->delta_bias, d0, cb), has_skip = step_param(skip, &p->Dskip, d0, cb);
    /* two vectors of channels at a time (STEP_CB is a multiple of 2 LA_VL; past cb the rows are padded),
       their softplus chains interleaved stage by stage: one chain alone overflows Zen 1's window */
    for (int64_t c = 0; c < cb; c += 2 * LA_VL) {
        vf x[2], dt[2];
        for (int i = 0; i < 2; i++) {
            const int64_t k = c + i * LA_VL;
            x[i] = has_bias ? vf_load(dtc + k) + vf_load(bias + k) : vf_load(dtc + k);
        }
        if (p->softplus) {
            const vf y0 = scan_softplus_y(x[0]), y1 = scan_softplus_y(x[1]);
            dt[0] = scan_softplus_fin(x[0], y0);
            dt[1] = scan_softplus_fin(x[1], y1);
        } else {
            dt[0] = x[0], dt[1] = x[1];
        }
        for (int i = 0; i < 2; i++) {
            const int64_t k = c + i * LA_VL;
            vf_store(dt2 + k, dt[i] * 1.44269504088896341f);
            vf_store(duc + k, dt[i] * vf_load(uc + k));
        }
    }
    /* Channel c's rows by stride from the block's first: A, the state read
       (the zero row without one) and the state written (the scratch row
       without one). Two copies of the loop: the direct one (N a multiple
       of LA_VL, the rows used in place) makes no calls, so the exp's
       constants stay in registers across its channels. */
    const float *A0 = la_scan_row(&p->A, 0, d0), *hs0 = p->state_in.data ? la_scan_row(&p->state_in, b, d0) : zero;
    float *ho0 = p->state_out.data ? la_scan_row(&p->state_out, b, d0) : hp;
    const int64_t as = p->A.row_stride, hss = p->state_in.data ? p->state_in.row_stride : 0,
                  hos = p->state_out.data ? p->state_out.row_stride : 0;
    int64_t c_done = 0;
    if ((N == LA_VL || N == 2 * LA_VL) && as == N && hss == N && hos == N) {
        c_done = cb / LA_VL * LA_VL;
        if (N == LA_VL) step_dense1(A0, hs0, ho0, Bt, Ct, dt2, duc, yc, c_done / LA_VL);
        else {
            bool inrange = false;
#if defined(LA_ISA_AVX2)
            /* the exps without their clamps when no dt A can reach them (always, for Mamba's A and dt) */
            if (*amax < 0) *amax = step_amax(A0, c_done * N);
            inrange = step_in_range(dt2, c_done, *amax);
#endif
            step_dense2(A0, hs0, ho0, Bt, Ct, dt2, duc, yc, c_done / LA_VL, inrange);
        }
    }
    for (int64_t c0 = c_done; c0 < cb; c0 += LA_VL) {
        vf y_sums;
        if (N == LA_VL) { /* Mamba's N 16 on AVX-512: one vector per row */
            y_sums = step_rows(A0 + c0 * as, as, hs0 + c0 * hss, hss, ho0 + c0 * hos, hos, Bt, Ct, dt2 + c0, duc + c0,
                               cb - c0, LA_VL, false);
        } else if (N % LA_VL == 0) {
            y_sums = step_rows(A0 + c0 * as, as, hs0 + c0 * hss, hss, ho0 + c0 * hos, hos, Bt, Ct, dt2 + c0, duc + c0,
                               cb - c0, N, false);
        } else { /* through zero-padded copies of A and the state row */
            vf acc[LA_VL];
            for (int j = 0; j < LA_VL; j++) {
                const int64_t c = c0 + j;
                acc[j] = vf_set1(0);
                if (c >= cb) continue;
                scan_load_param_row(Ap, &p->A, d0 + c, N, Np);
                memcpy(hp, hs0 + c * hss, (size_t)N * sizeof(float));
                for (int64_t n = N; n < Np; n++) hp[n] = 0;
                acc[j] = step_row(Ap, hp, hp, Bt, Ct, dt2[c], duc[c], Np, false);
                if (p->state_out.data) memcpy(ho0 + c * hos, hp, (size_t)N * sizeof(float));
            }
            y_sums = step_transpose_sum(acc);
        }
        vf_store(yc + c0, y_sums);
    }
    for (int64_t c0 = 0; c0 < cb; c0 += LA_VL) {
        vf y = has_skip ? vf_fma(vf_load(skip + c0), vf_load(uc + c0), vf_load(yc + c0)) : vf_load(yc + c0);
        if (p->z.data) {
            const vf z = vf_load(zc + c0);
            y *= z * scan_sigmoid_v(z);
        }
        vf_store(yc + c0, y);
    }
    if (p->out.dtype == LA_F32 && cb == STEP_CB && p->out.head_stride == 1) {
        float *o = (float *)p->out.data + bt * p->out.batch_stride + t0 * p->out.token_stride + d0;
        for (int64_t c = 0; c < STEP_CB; c += LA_VL) vf_store(o + c, vf_load(yc + c));
    } else {
        tg_store_row(la_attn_at(&p->out, bt, t0, d0), p->out.dtype, yc, cb);
    }
}

/* A position in the items, walked in order without block_at's divisions
 * (two per item each way, a tenth of the item's time at N 16). */
typedef struct {
    int64_t b, g, blk;
} step_pos;

static void step_next(const la_ssm_problem *p, step_pos *s) {
    if (++s->blk < step_spans(p)) return;
    s->blk = 0;
    if (++s->g < p->G) return;
    s->g = 0;
    s->b++;
}

static int64_t step_d0(const la_ssm_problem *p, const step_pos *s) { return s->g * (p->D / p->G) + s->blk * STEP_CB; }

static int64_t step_cb(const la_ssm_problem *p, const step_pos *s) {
    const int64_t left = p->D / p->G - s->blk * STEP_CB;
    return left < STEP_CB ? left : STEP_CB;
}

static void step_forward(const la_ssm_problem *p, float *w) {
    int64_t lo, hi;
    la_split_range(p->head.num_seqs * p->G * step_spans(p), la_thread_id(), la_team_size(), &lo, &hi);
    if (lo >= hi) return;
    const int64_t per_seq = p->G * step_spans(p);
    float *amax = step_amax_slots(p, w);
    for (int64_t s = 0; s < per_seq; s++) amax[s] = -1.0f;
    step_pos at = {lo / per_seq, lo % per_seq / step_spans(p), lo % step_spans(p)};
    for (int64_t it = lo; it < hi; it++, step_next(p, &at)) {
        /* B and C were staged by this thread's previous item of the same (sequence, group) */
        step_block(p, w, it > lo && at.blk > 0, at.b, at.g, step_d0(p, &at), step_cb(p, &at),
                   amax + at.g * step_spans(p) + at.blk);
    }
}

static la_status ssm_forward(const la_ssm_problem *p, void *mem) {
    const int nthreads = nthreads_of(&p->head);
    const size_t per_thread = fwd_scratch_floats(p);
    float *blk = (float *)mem + (size_t)nthreads * per_thread;
#pragma omp parallel num_threads(nthreads)
    {
        float *w = (float *)mem + (size_t)la_thread_id() * per_thread;
        if (is_step(p)) {
            step_forward(p, w);
        } else if (p->form == LA_SCAN_CHUNKED) {
            chunked_forward(p, w, blk);
        } else {
            /* recurrent (the decode step): a channel's item is one state row, too small to hand out alone */
#pragma omp for schedule(dynamic, 64)
            for (int64_t it = 0; it < p->head.num_seqs * p->D; it++) recurrent_item(p, w, it / p->D, it % p->D);
        }
    }
    return LA_OK;
}

/* ---- backward ---- */

static int64_t chunks_of(const la_ssm_problem *p) { return (p->head.L + p->chunk - 1) / p->chunk; }

/* Per thread: the checkpoints [chunks + 1][N][SSM_CB], a chunk's h rows
 * [C][N][SSM_CB], its B and C rows [C][Np], its u, delta + bias, dt, dout
 * and z rows [C][SSM_CB], and A, dh, dA [N][SSM_CB]. */
static size_t bwd_scratch_floats(const la_ssm_problem *p) {
    const int64_t Np = scan_pad(p->N), C = p->chunk, NW = p->N * SSM_CB;
    return (size_t)((chunks_of(p) + 1) * NW + C * NW + 2 * C * Np + 5 * C * SSM_CB + 3 * NW + SCAN_PAD);
}

/* Channel slices per (sequence, group): 1 when those pairs alone give
 * every thread work; else enough slices to (the pairs' count times the
 * slices reaching the threads), at most one channel each. Slice 0 sums its
 * channels' dB, dC rows into the outputs, the others into partial rows in
 * the workspace, added after the items. */
static int64_t bwd_slices(const la_ssm_problem *p) {
    const int64_t pairs = p->head.num_seqs * p->G, per_group = p->D / p->G, th = nthreads_of(&p->head);
    if (pairs >= th) return 1;
    const int64_t k = (th + pairs - 1) / pairs;
    return k < per_group ? k : per_group;
}

/* The shared part: dA [S, D, N], dDskip and ddelta_bias [S, D] partials;
 * then the extra slices' dB and dC rows [S, G, K - 1, 2, L, N]. */
static size_t bwd_shared_floats(const la_ssm_problem *p) {
    return (size_t)(p->head.num_seqs * p->D * (p->N + 2)) +
           (size_t)(p->head.num_seqs * p->G * (bwd_slices(p) - 1) * 2 * p->head.L * p->N);
}

/* dB (which 0) or dC (1) row of token t (i-th of its sequence): the
 * output's, or the slice's partial row. */
static inline float *grad_row(const la_ssm_backward_problem *bp, float *slice, int which, int64_t bt, int64_t t,
                              int64_t i, int64_t g) {
    if (slice) return slice + (which * bp->fwd.head.L + i) * bp->fwd.N;
    return (float *)la_attn_at(which ? &bp->dC : &bp->dB, bt, t, g);
}

/* The backward of a block of cb <= SSM_CB channels of one group, the
 * channels in the vector lanes as in the chunked forward: a token's rows of
 * u, delta, dout, z and of the gradients are one piece per block, and the
 * per-channel sums (ddt, du) are lane-wise. dB and dC, sums over the
 * channels, take one lane reduction per LA_VL state indices (a transposed
 * sum). Lanes past cb run with A = 0, u = 0, dout = 0: every gradient they
 * add is 0. */
static void backward_block(const la_ssm_backward_problem *bp, float *w, float *part, float *slice, int64_t b,
                           int64_t d0, int64_t cb) {
    const la_ssm_problem *p = &bp->fwd;
    enum { W = SSM_CB };
    const int64_t N = p->N, Np = scan_pad(N), NW = N * W, bt = p->head.cu ? 0 : b, g = d0 / (p->D / p->G),
                  C = p->chunk;
    float *ck = w, *Hc = ck + (chunks_of(p) + 1) * NW, *Bc = Hc + C * NW, *Cc = Bc + C * Np, *uc = Cc + C * Np,
          *xc = uc + C * W, *dtc = xc + C * W, *doc = dtc + C * W, *zc = doc + C * W, *At = zc + C * W,
          *dh = At + NW, *dA = dh + NW;
    int64_t t0, len;
    la_scan_seq(&p->head, b, &t0, &len);
    _Alignas(64) float bias[W] = {0}, skip[W] = {0}, dD[W] = {0}, dbias[W] = {0};
    _Alignas(64) float sumC[LA_MAX_HEAD_DIM + SCAN_PAD], sumB[LA_MAX_HEAD_DIM + SCAN_PAD];
    memset(At, 0, (size_t)NW * sizeof(float));
    memset(ck, 0, (size_t)NW * sizeof(float));
    memset(dh, 0, (size_t)NW * sizeof(float));
    memset(dA, 0, (size_t)NW * sizeof(float));
    for (int64_t c = 0; c < cb; c++) {
        const float *Ar = la_scan_row(&p->A, 0, d0 + c);
        for (int64_t k = 0; k < N; k++) At[k * W + c] = Ar[k];
        if (p->state_in.data) {
            const float *st = la_scan_row(&p->state_in, b, d0 + c);
            for (int64_t k = 0; k < N; k++) ck[k * W + c] = st[k];
        }
        if (bp->dstate_out.data) {
            const float *st = la_scan_row(&bp->dstate_out, b, d0 + c);
            for (int64_t k = 0; k < N; k++) dh[k * W + c] = st[k];
        }
        bias[c] = bias_of(p, d0 + c);
        skip[c] = skip_of(p, d0 + c);
    }
    /* a chunk's rows: B, C [n][Np]; u, x = delta + bias, dt [n][W]; with
     * `all`, dout and z too */
    #define SSM_LOAD_CHUNK(c0, n, all)                                                                           \
        for (int64_t i = 0; i < (n); i++) {                                                                      \
            const int64_t t = t0 + (c0) + i;                                                                     \
            tg_load_row(Bc + i * Np, la_attn_at(&p->B, bt, t, g), p->B.dtype, N, Np);                            \
            if (all) tg_load_row(Cc + i * Np, la_attn_at(&p->C, bt, t, g), p->C.dtype, N, Np);                  \
            tg_load_row(uc + i * W, la_attn_at(&p->u, bt, t, d0), p->u.dtype, cb, W);                           \
            tg_load_row(xc + i * W, la_attn_at(&p->delta, bt, t, d0), p->delta.dtype, cb, W);                   \
            for (int64_t c = 0; c < W; c += LA_VL) {                                                            \
                const vf x = vf_load(xc + i * W + c) + vf_load(bias + c);                                       \
                vf_store(xc + i * W + c, x);                                                                     \
                vf_store(dtc + i * W + c, p->softplus ? scan_softplus_v(x) : x);                                 \
            }                                                                                                    \
            if (all) {                                                                                           \
                tg_load_row(doc + i * W, la_attn_at(&bp->dout, bt, t, d0), bp->dout.dtype, cb, W);              \
                if (p->z.data) tg_load_row(zc + i * W, la_attn_at(&p->z, bt, t, d0), p->z.dtype, cb, W);        \
            }                                                                                                    \
        }
    /* h (rows [N][W]) advanced over token i of the loaded chunk, from hp */
    #define SSM_STEP(h, hp, i)                                                                                   \
        for (int64_t l_ = 0; l_ < W; l_ += LA_VL) {                                                                 \
            const vf dt = vf_load(dtc + (i) * W + l_), du = dt * vf_load(uc + (i) * W + l_);                       \
            for (int64_t k = 0; k < N; k++)                                                                      \
                vf_store((h) + k * W + l_, vf_fma(vf_exp(dt * vf_load(At + k * W + l_)), vf_load((hp) + k * W + l_), \
                                                 du * Bc[(i) * Np + k]));                                        \
        }
    /* forward sweep: h at every chunk start */
    const int64_t nch = (len + C - 1) / C;
    for (int64_t c = 0; c < nch; c++) {
        const int64_t c0 = c * C, n = len - c0 < C ? len - c0 : C;
        float *h = ck + (c + 1) * NW;
        memcpy(h, ck + c * NW, (size_t)NW * sizeof(float));
        SSM_LOAD_CHUNK(c0, n, false)
        for (int64_t i = 0; i < n; i++) SSM_STEP(h, h, i)
    }
    for (int64_t c = nch - 1; c >= 0; c--) {
        const int64_t c0 = c * C, n = len - c0 < C ? len - c0 : C;
        SSM_LOAD_CHUNK(c0, n, true)
        for (int64_t i = 0; i < n; i++) SSM_STEP(Hc + i * NW, i ? Hc + (i - 1) * NW : ck + c * NW, i)
        for (int64_t i = n - 1; i >= 0; i--) {
            const int64_t t = t0 + c0 + i;
            const float *h = Hc + i * NW, *hprev = i ? Hc + (i - 1) * NW : ck + c * NW, *Bt = Bc + i * Np,
                        *Ct = Cc + i * Np;
            for (int64_t k = 0; k < Np; k++) sumC[k] = sumB[k] = 0;
            _Alignas(64) float dyr[W], dur[W], ddr[W], dzr[W];
            for (int64_t c = 0; c < W; c += LA_VL) {
                const vf u = vf_load(uc + i * W + c), dt = vf_load(dtc + i * W + c), dout = vf_load(doc + i * W + c);
                vf dy = dout;
                if (p->z.data) {
                    vf y = vf_load(skip + c) * u;
                    for (int64_t k = 0; k < N; k++) y = vf_fma(vf_set1(Ct[k]), vf_load(h + k * W + c), y);
                    const vf z = vf_load(zc + i * W + c), sg = scan_sigmoid_v(z);
                    dy = dout * (z * sg);
                    vf_store(dzr + c, dout * y * (sg * (1.0f + z * (1.0f - sg))));
                }
                vf_store(dyr + c, dy);
                const vf dtu = dt * u;
                vf ddt = vf_set1(0), dub = vf_set1(0);
                for (int64_t k0 = 0; k0 < N; k0 += LA_VL) {
                    vf tc[LA_VL], tb[LA_VL];
                    for (int64_t e = 0; e < LA_VL; e++) {
                        const int64_t k = k0 + e;
                        if (k >= N) {
                            tc[e] = tb[e] = vf_set1(0);
                            continue;
                        }
                        const vf Ak = vf_load(At + k * W + c), hpk = vf_load(hprev + k * W + c), Bk = vf_set1(Bt[k]);
                        const vf dhk = vf_fma(dy, vf_set1(Ct[k]), vf_load(dh + k * W + c));
                        const vf a = vf_exp(dt * Ak);
                        tc[e] = dy * vf_load(h + k * W + c);
                        tb[e] = dhk * dtu;
                        ddt = vf_fma(dhk, vf_fma(a * Ak, hpk, Bk * u), ddt);
                        dub = vf_fma(dhk, Bk, dub);
                        vf_store(dA + k * W + c, vf_fma(dhk * a * dt, hpk, vf_load(dA + k * W + c)));
                        vf_store(dh + k * W + c, dhk * a);
                    }
                    vf_store(sumC + k0, vf_load(sumC + k0) + vf_transpose_sum(tc));
                    vf_store(sumB + k0, vf_load(sumB + k0) + vf_transpose_sum(tb));
                }
                vf_store(dur + c, dy * vf_load(skip + c) + dt * dub);
                const vf x = vf_load(xc + i * W + c);
                const vf dd = p->softplus ? ddt * scan_sigmoid_v(x) : ddt;
                vf_store(ddr + c, dd);
                vf_store(dD + c, vf_fma(dy, u, vf_load(dD + c)));
                vf_store(dbias + c, vf_load(dbias + c) + dd);
            }
            float *dBt = grad_row(bp, slice, 0, bt, t, c0 + i, g), *dCt = grad_row(bp, slice, 1, bt, t, c0 + i, g);
            for (int64_t k = 0; k < N; k++) dBt[k] += sumB[k], dCt[k] += sumC[k];
            tg_store_row(la_attn_at(&bp->du, bt, t, d0), bp->du.dtype, dur, cb);
            tg_store_row(la_attn_at(&bp->ddelta, bt, t, d0), bp->ddelta.dtype, ddr, cb);
            if (p->z.data) tg_store_row(la_attn_at(&bp->dz, bt, t, d0), bp->dz.dtype, dzr, cb);
        }
    }
    #undef SSM_LOAD_CHUNK
    #undef SSM_STEP
    for (int64_t c = 0; c < cb; c++) {
        const int64_t d = d0 + c;
        if (bp->dstate_in.data) {
            float *st = la_scan_row(&bp->dstate_in, b, d);
            for (int64_t k = 0; k < N; k++) st[k] = dh[k * W + c];
        }
        float *pa = part + (b * p->D + d) * N, *pd = part + p->head.num_seqs * p->D * N + b * p->D + d;
        for (int64_t k = 0; k < N; k++) pa[k] = dA[k * W + c];
        pd[0] = dD[c];
        pd[p->head.num_seqs * p->D] = dbias[c];
    }
}

static la_status ssm_backward(const la_ssm_backward_problem *bp, void *mem) {
    const la_ssm_problem *p = &bp->fwd;
    const int nthreads = nthreads_of(&p->head);
    const size_t per_thread = bwd_scratch_floats(p);
    float *part = (float *)mem + (size_t)nthreads * per_thread;
    const int64_t S = p->head.num_seqs, K = bwd_slices(p), items = S * p->G * K, per_group = p->D / p->G, N = p->N;
    float *slices = part + S * p->D * (N + 2);
    const int64_t slice_floats = 2 * p->head.L * N;
#pragma omp parallel num_threads(nthreads)
    {
        float *w = (float *)mem + (size_t)la_thread_id() * per_thread;
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < items; it++) {
            const int64_t pr = it / K, k = it % K, b = pr / p->G, g = pr % p->G, bt = p->head.cu ? 0 : b;
            int64_t t0, len, lo, hi;
            la_scan_seq(&p->head, b, &t0, &len);
            la_split_range(per_group, (int)k, (int)K, &lo, &hi);
            float *slice = k ? slices + (pr * (K - 1) + k - 1) * slice_floats : NULL;
            for (int64_t i = 0; i < len; i++) {
                memset(grad_row(bp, slice, 0, bt, t0 + i, i, g), 0, (size_t)N * sizeof(float));
                memset(grad_row(bp, slice, 1, bt, t0 + i, i, g), 0, (size_t)N * sizeof(float));
            }
            for (int64_t d = g * per_group + lo; d < g * per_group + hi; d += SSM_CB)
                backward_block(bp, w, part, slice, b, d, g * per_group + hi - d < SSM_CB ? g * per_group + hi - d : SSM_CB);
        }
        /* the extra slices' dB, dC rows into the outputs: one writer per row */
        if (K > 1) {
#pragma omp for schedule(static)
            for (int64_t it = 0; it < S * p->G * p->head.L; it++) {
                const int64_t pr = it / p->head.L, i = it % p->head.L, b = pr / p->G, g = pr % p->G,
                              bt = p->head.cu ? 0 : b;
                int64_t t0, len;
                la_scan_seq(&p->head, b, &t0, &len);
                if (i >= len) continue;
                for (int which = 0; which < 2; which++) {
                    float *row = grad_row(bp, NULL, which, bt, t0 + i, i, g);
                    for (int64_t k = 1; k < K; k++) {
                        const float *src = grad_row(bp, slices + (pr * (K - 1) + k - 1) * slice_floats, which, bt,
                                                    t0 + i, i, g);
                        for (int64_t n = 0; n < N; n++) row[n] += src[n];
                    }
                }
            }
        }
        /* sums over sequences: each channel has one writer */
#pragma omp for schedule(static)
        for (int64_t d = 0; d < p->D; d++) {
            if (bp->dA.data) {
                float *row = la_scan_row(&bp->dA, 0, d);
                for (int64_t n = 0; n < N; n++) {
                    float s = 0;
                    for (int64_t b = 0; b < S; b++) s += part[(b * p->D + d) * N + n];
                    row[n] = s;
                }
            }
            float sD = 0, sb = 0;
            for (int64_t b = 0; b < S; b++) {
                sD += part[S * p->D * N + b * p->D + d];
                sb += part[S * p->D * N + S * p->D + b * p->D + d];
            }
            if (bp->dDskip.data) la_scan_row(&bp->dDskip, 0, 0)[d] = sD;
            if (bp->ddelta_bias.data) la_scan_row(&bp->ddelta_bias, 0, 0)[d] = sb;
        }
    }
    return LA_OK;
}

/* ---- the family's two slots ---- */

la_status LA_ISA_FN(la_cpu_scan_workspace)(const la_scan_head *h, size_t *bytes) {
    size_t floats = 0;
    bool ok = true;
    switch (h->kind) {
    case LA_SCAN_SSM_FORWARD:
        ok = la_mul_size(fwd_scratch_floats((const la_ssm_problem *)h), (size_t)nthreads_of(h), &floats);
        floats += fwd_shared_floats((const la_ssm_problem *)h);
        break;
    case LA_SCAN_SSM_BACKWARD: {
        const la_ssm_problem *p = (const la_ssm_problem *)h;
        ok = la_mul_size(bwd_scratch_floats(p), (size_t)nthreads_of(h), &floats);
        floats += bwd_shared_floats(p);
        break;
    }
    case LA_SCAN_CONV_FORWARD:
    case LA_SCAN_CONV_BACKWARD: return LA_ISA_FN(la_cpu_conv1d_workspace)((const la_conv1d_problem *)h, bytes);
    case LA_SCAN_AAREN_FORWARD:
    case LA_SCAN_AAREN_BACKWARD:
        return LA_ISA_FN(la_cpu_aaren_workspace)((const la_aaren_problem *)h, h->kind == LA_SCAN_AAREN_BACKWARD,
                                                 bytes);
    }
    if (!ok || !la_mul_size(floats, sizeof(float), bytes))
        return la_fail(LA_ERR_OVERFLOW, "selective scan workspace size overflows");
    return LA_OK;
}

la_status LA_ISA_FN(la_cpu_scan_run)(const la_scan_head *h, void *ws) {
    switch (h->kind) {
    case LA_SCAN_SSM_FORWARD: return ssm_forward((const la_ssm_problem *)h, ws);
    case LA_SCAN_SSM_BACKWARD: return ssm_backward((const la_ssm_backward_problem *)h, ws);
    case LA_SCAN_CONV_FORWARD: return LA_ISA_FN(la_cpu_conv1d_forward)((const la_conv1d_problem *)h, ws);
    case LA_SCAN_CONV_BACKWARD: return LA_ISA_FN(la_cpu_conv1d_backward)((const la_conv1d_backward_problem *)h, ws);
    case LA_SCAN_AAREN_FORWARD: return LA_ISA_FN(la_cpu_aaren_forward)((const la_aaren_problem *)h, ws);
    case LA_SCAN_AAREN_BACKWARD: return LA_ISA_FN(la_cpu_aaren_backward)((const la_aaren_backward_problem *)h, ws);
    }
    return la_fail(LA_ERR_UNSUPPORTED, "unknown scan problem kind %d", (int)h->kind);
}
