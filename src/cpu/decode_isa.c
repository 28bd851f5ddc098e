/* Decode attention: a few query tokens against a long K/V cache, written once
 * and compiled per instruction set (see isa.h).
 *
 * Decoding is bound by reading the cache, so the kernel is shaped around
 * streaming it once:
 *  - Work item = one sequence and one chunk of its keys, for ALL K/V heads:
 *    the rows of token t for every head are adjacent in a [.., Hkv, D]
 *    cache, so an item reads contiguous memory (one head at a time would
 *    stride by Hkv * D and miss the TLB on every key of a long cache).
 *  - Each K/V row is loaded once and used for the G * Lq query rows that
 *    share its head (grouped-query attention).
 *  - Keys go in blocks of LA_VL, so the online softmax's exp is a vector op.
 * Chunks are spread over threads; each leaves (max, sum, accumulator) per
 * query row and the partials are merged by log-sum-exp. */
#include "isa.h"
#include "tile_gemm.h"

#include "core/attention_problem.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* Keys per work item at least: below this the merge and per-item set-up
 * cost more than the split gains. */
#define MIN_CHUNK 64
/* Items per thread we aim for, so uneven sequences still balance. */
#define ITEMS_PER_THREAD 4

typedef struct {
    const la_attn_problem *p;
    int64_t b, lk, R, Dp; /* R = H * Lq query rows of the sequence */
    const float *q;       /* [R][Dp] scaled queries, row r = h * Lq + i */
    const int64_t *lo, *hi; /* [R] visible key range per row */
} seq_state;

static const char *row_ptr(const la_attn_problem *p, const la_attn_operand *o, int64_t b, int64_t t, int64_t hk) {
    if (p->block_table) {
        int64_t blk = p->block_table[b * p->blocks_per_seq + t / p->block_size];
        return la_attn_at(o, blk, t % p->block_size, hk);
    }
    return la_attn_at(o, b, t, hk);
}

/* Clamp a key offset relative to a block start into [-1, LA_VL] so the
 * lane comparisons below run in 32 bits. */
static inline int32_t lane_bound(int64_t x) { return x < -1 ? -1 : x > LA_VL ? LA_VL : (int32_t)x; }

/* a[0..Dp) += sum_e p[e] * v[e][0..Dp). Each output vector is a chain of
 * LA_VL dependent FMAs, so ACC_VECTORS of them advance side by side to
 * cover the FMA latency (one chain at a time ran at a quarter of the
 * FMA rate). */
#define ACC_VECTORS 8
static inline void accumulate_pv(float *a, const float *const *v, vf p, int64_t Dp) {
    int64_t d = 0;
    for (; d + ACC_VECTORS * LA_VL <= Dp; d += ACC_VECTORS * LA_VL) {
        vf o[ACC_VECTORS];
        for (int k = 0; k < ACC_VECTORS; k++) o[k] = vf_load(a + d + k * LA_VL);
        for (int e = 0; e < LA_VL; e++) {
            const vf pe = vf_set1(p[e]);
            for (int k = 0; k < ACC_VECTORS; k++) o[k] = vf_fma(pe, vf_load(v[e] + d + k * LA_VL), o[k]);
        }
        for (int k = 0; k < ACC_VECTORS; k++) vf_store(a + d + k * LA_VL, o[k]);
    }
    for (; d < Dp; d += LA_VL) {
        vf o = vf_load(a + d);
        for (int e = 0; e < LA_VL; e++) o = vf_fma(vf_set1(p[e]), vf_load(v[e] + d), o);
        vf_store(a + d, o);
    }
}

/* Keys [c0, c1) of one sequence for every head: partial m, l, acc per row. */
static void chunk(const seq_state *s, int64_t c0, int64_t c1, float *kbuf, float *vbuf, float *m, float *l,
                  float *acc) {
    const la_attn_problem *p = s->p;
    const int64_t Lq = p->Lq, G = p->H / p->Hkv, D = p->D, Dp = s->Dp;
    const bool softmax = p->score == LA_SCORE_SOFTMAX, softcap = p->softcap > 0;
    const vi lane = vi_iota();
    for (int64_t r = 0; r < s->R; r++) {
        m[r] = -INFINITY;
        l[r] = 0;
    }
    memset(acc, 0, sizeof(float) * (size_t)(s->R * Dp));
    for (int64_t j0 = c0; j0 < c1; j0 += LA_VL) {
        const int64_t nk = c1 - j0 < LA_VL ? c1 - j0 : LA_VL;
        /* Widen the block's rows into kbuf/vbuf, every head of a token at
         * once: a token's rows of all heads are adjacent, so this streams
         * in address order. Packed, the rows of a head are 4 * Dp bytes
         * apart; in a [.., Hkv, D] cache they are a whole token apart,
         * often 4 KB, and then all map to the same L1 sets. Lanes past nk
         * repeat row 0 (their scores are masked, their weights zero). */
        for (int64_t e = 0; e < nk; e++)
            for (int64_t hk = 0; hk < p->Hkv; hk++) {
                tg_load_row(kbuf + (hk * LA_VL + e) * Dp, row_ptr(p, &p->k, s->b, j0 + e, hk), p->k.dtype, D, Dp);
                tg_load_row(vbuf + (hk * LA_VL + e) * Dp, row_ptr(p, &p->v, s->b, j0 + e, hk), p->v.dtype, D, Dp);
            }
        for (int64_t hk = 0; hk < p->Hkv; hk++) {
            const float *kp[LA_VL], *vp[LA_VL];
            for (int64_t e = 0; e < LA_VL; e++) {
                kp[e] = kbuf + (hk * LA_VL + (e < nk ? e : 0)) * Dp;
                vp[e] = vbuf + (hk * LA_VL + (e < nk ? e : 0)) * Dp;
            }
            for (int64_t r = hk * G * Lq; r < (hk + 1) * G * Lq; r++) {
                const float *q = s->q + r * Dp;
                const int64_t i = r % Lq;
                /* lane e visible: e < nk, key < hi, and key >= lo or a sink */
                vi vis = (lane < lane_bound(nk)) & (lane < lane_bound(s->hi[r] - j0)) &
                         ((lane >= lane_bound(s->lo[r] - j0)) | (lane < lane_bound(p->sinks - j0)));
                bool any = false;
                for (int e = 0; e < LA_VL; e++) any |= vis[e] != 0;
                if (!any) continue;
                /* the block's LA_VL scores of this row: one accumulator per
                 * key, summed across lanes together at the end */
                vf part[LA_VL];
                for (int e = 0; e < LA_VL; e++) part[e] = vf_set1(0);
                for (int64_t d = 0; d < Dp; d += LA_VL) {
                    const vf qv = vf_load(q + d);
                    for (int e = 0; e < LA_VL; e++) part[e] = vf_fma(vf_load(kp[e] + d), qv, part[e]);
                }
                vf sv = vf_transpose_sum(part);
                if (softcap) sv = p->softcap * vf_tanh(sv * (1.0f / p->softcap));
                if (p->alibi_slopes) {
                    const float slope = p->alibi_slopes[r / Lq];
                    const vf dist = (float)(i + s->lk - Lq - j0) - __builtin_convertvector(lane, vf);
                    sv -= slope * vf_abs(dist);
                }
                sv = vf_select(vis, sv, vf_set1(-INFINITY));
                float *a = acc + r * Dp;
                vf pv;
                if (softmax) {
                    float bm = vf_reduce_max(sv);
                    if (bm > m[r]) {
                        float alpha = m[r] == -INFINITY ? 0.0f : expf(m[r] - bm);
                        l[r] *= alpha;
                        vf av = vf_set1(alpha);
                        for (int64_t d = 0; d < Dp; d += LA_VL) vf_store(a + d, vf_load(a + d) * av);
                        m[r] = bm;
                    }
                    pv = vf_exp(sv - m[r]);
                    l[r] += vf_reduce_add(pv);
                } else {
                    /* vf_exp saturates, so sigmoid(-inf) is tiny, not 0: mask it */
                    pv = vf_select(vis, vf_sigmoid(sv + p->sigmoid_bias), vf_set1(0));
                }
                accumulate_pv(a, vp, pv, Dp);
            }
        }
    }
}

la_status LA_ISA_FN(la_cpu_attention_decode_kernel)(la_context *ctx, const la_attn_problem *p) {
    const int nthreads = p->threads > 0 ? p->threads : 1;
    const int64_t B = p->num_seqs, Lq = p->Lq, H = p->H, D = p->D, Dp = tg_round_up(D, LA_VL), R = H * Lq;
    /* Chunk length: enough items to keep every thread busy, never tiny. */
    int64_t want_items = (int64_t)nthreads * ITEMS_PER_THREAD;
    int64_t nchunks = (want_items + B - 1) / B, chunk_len = (p->Lk + nchunks - 1) / nchunks;
    if (chunk_len < MIN_CHUNK) chunk_len = MIN_CHUNK;
    chunk_len = tg_round_up(chunk_len, LA_VL);
    nchunks = p->Lk > 0 ? (p->Lk + chunk_len - 1) / chunk_len : 1;
    const int64_t items = B * nchunks;

    /* Workspace (floats): per item R partial rows (Dp + 2 each); per
     * sequence its scaled queries [R][Dp] and key ranges; per thread one
     * block of K and V rows. */
    size_t part_rows, part, qsz, ranges, per_thread, total, bytes;
    if (!la_mul_size((size_t)items, (size_t)R, &part_rows) || !la_mul_size(part_rows, (size_t)(Dp + 2), &part) ||
        !la_mul_size((size_t)(B * R), (size_t)Dp, &qsz))
        return la_fail(LA_ERR_OVERFLOW, "decode workspace size overflows");
    ranges = (size_t)(B * R) * 2 * (sizeof(int64_t) / sizeof(float));
    per_thread = (size_t)(2 * LA_VL * p->Hkv * Dp);
    total = part + qsz + ranges + per_thread * (size_t)nthreads;
    if (total < part || !la_mul_size(total, sizeof(float), &bytes))
        return la_fail(LA_ERR_OVERFLOW, "decode workspace size overflows");
    void *mem;
    la_status st = la_workspace(ctx, bytes, &mem);
    if (st) return st;
    float *pm = mem, *pl = pm + part_rows, *pacc = pl + part_rows, *qs = pacc + part_rows * (size_t)Dp;
    int64_t *lo = (int64_t *)(qs + qsz), *hi = lo + B * R;
    float *thread_bufs = (float *)(hi + B * R);

#pragma omp parallel num_threads(nthreads)
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        float *kbuf = thread_bufs + (size_t)tid * per_thread, *vbuf = kbuf + LA_VL * p->Hkv * Dp;
#pragma omp for schedule(static)
        for (int64_t br = 0; br < B * R; br++) {
            const int64_t b = br / R, r = br % R, h = r / Lq, i = r % Lq;
            const int64_t lk = p->seqlens_k ? p->seqlens_k[b] : p->Lk;
            tg_load_row(qs + br * Dp, la_attn_at(&p->q, b, i, h), p->q.dtype, D, Dp);
            for (int64_t d = 0; d < D; d++) qs[br * Dp + d] *= p->scale;
            la_attn_key_range(p, i, Lq, lk, &lo[br], &hi[br]);
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < items; it++) {
            const int64_t b = it / nchunks, c = it % nchunks;
            const int64_t lk = p->seqlens_k ? p->seqlens_k[b] : p->Lk;
            seq_state s = {.p = p, .b = b, .lk = lk, .R = R, .Dp = Dp, .q = qs + b * R * Dp, .lo = lo + b * R,
                           .hi = hi + b * R};
            int64_t c0 = c * chunk_len, c1 = c0 + chunk_len < lk ? c0 + chunk_len : lk;
            chunk(&s, c0, c0 < c1 ? c1 : c0, kbuf, vbuf, pm + it * R, pl + it * R, pacc + (size_t)(it * R) * Dp);
        }
        /* merge the chunks of each (sequence, row) by log-sum-exp */
#pragma omp for schedule(static)
        for (int64_t br = 0; br < B * R; br++) {
            const int64_t b = br / R, r = br % R, h = r / Lq, i = r % Lq;
            float M = -INFINITY, L = 0, out[LA_MAX_HEAD_DIM + 16];
            memset(out, 0, sizeof(float) * (size_t)Dp);
            for (int64_t c = 0; c < nchunks; c++) {
                int64_t row = (b * nchunks + c) * R + r;
                if (pm[row] > M) M = pm[row];
            }
            for (int64_t c = 0; c < nchunks; c++) {
                int64_t row = (b * nchunks + c) * R + r;
                float w = 1.0f;
                if (p->score == LA_SCORE_SOFTMAX) {
                    if (pm[row] == -INFINITY) continue;
                    w = expf(pm[row] - M);
                    L += pl[row] * w;
                }
                vf wv = vf_set1(w);
                const float *a = pacc + (size_t)row * Dp;
                for (int64_t d = 0; d < Dp; d += LA_VL) vf_store(out + d, vf_fma(vf_load(a + d), wv, vf_load(out + d)));
            }
            if (p->score == LA_SCORE_SOFTMAX) {
                float inv = L > 0 ? 1.0f / L : 0.0f;
                for (int64_t d = 0; d < D; d++) out[d] *= inv;
            }
            tg_store_row(la_attn_at(&p->out, b, i, h), p->out.dtype, out, D);
            if (p->lse.data) *(float *)la_attn_at(&p->lse, b, i, h) = L > 0 ? M + logf(L) : -INFINITY;
        }
    }
    return LA_OK;
}
