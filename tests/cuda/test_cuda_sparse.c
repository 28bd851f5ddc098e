/* The CUDA block-sparse forward and backward (la_block_sparse_forward and
 * la_block_sparse_backward on CUDA tensors): out and lse, and dQ, dK, dV,
 * against the float64 reference restricted to the listed blocks and extra
 * columns (ref_attn_opts.keep) and against the CPU backend's sparse kernels
 * on the same inputs (cross-backend), on fresh random indexes over awkward
 * shapes: lengths 1, 63, 65, 1000, 4097, GQA, causal or not, block sizes
 * below, at and above the kernels' 64-row items and key tiles, empty
 * lists, complete lists (which must also match the dense CUDA forward and
 * backward), extra key columns inside and outside the listed blocks, every
 * score-rule option, varlen batches; outputs poisoned. Then bad inputs,
 * each with its status and nothing written: an index in device memory, an
 * unsorted index, an unsorted column list. Both forward kernels: the Hopper
 * wgmma one (the default there for head dims up to 128, without columns)
 * and the mma.sync one.
 *
 * Skips (exit 77, ctest SKIP_RETURN_CODE) where no CUDA device is usable. */
#include "attention_ref.h"
#include "cuda_test_util.h"
#include "sparse_util.h"

#include <stdlib.h>

typedef tu_buf buf;

/* LONGATTN_TEST_QUICK: short lengths only (the compute-sanitizer runs). */
static bool quick;
/* the backward too (the first round only: it does not depend on the forward
 * kernel picked by LA_CUDA_SPARSE_KERNEL) */
static bool with_bwd = true;

typedef struct {
    const char *name;
    int64_t B, Lq, Lk; /* dense batch when nseq == 0 */
    int nseq;          /* varlen: lengths below */
    int32_t lens_q[6], lens_k[6];
    int64_t H, Hkv, D, bs;
    double share; /* of key blocks listed: 1 complete, 0 empty */
    double cols;  /* > 0: each row lists each key as an extra column with this probability */
    bool bwd;     /* also the backward (dout random; out and lse from the reference) */
    la_dtype dt, out_dt;
    bool strided, alibi, want_lse;
    la_attention_params p;
} sp_case;

static void idx_of(bool varlen, int64_t b, int64_t off, int64_t i, int64_t h, int64_t d, int64_t *idx) {
    if (varlen) idx[0] = off + i, idx[1] = h, idx[2] = d;
    else idx[0] = b, idx[1] = i, idx[2] = h, idx[3] = d;
}

/* An index over nseq sequences (query lengths lq[], key lengths lk[]):
 * q_blocks of the longest query sequence; each row lists each of its
 * sequence's key blocks with probability share. Freed by
 * la_block_index_free. */
static la_block_index random_index(uint64_t *rng, int64_t nseq, int64_t H, const int64_t *lq, const int64_t *lk,
                                   int64_t bs, double share) {
    int64_t maxq = 0, maxkb = 0;
    for (int64_t b = 0; b < nseq; b++) {
        maxq = lq[b] > maxq ? lq[b] : maxq;
        const int64_t kb = (lk[b] + bs - 1) / bs;
        maxkb = kb > maxkb ? kb : maxkb;
    }
    const int64_t qb = (maxq + bs - 1) / bs, rows = nseq * H * qb;
    la_block_index x = {.block_size = bs, .num_seqs = nseq, .heads = H, .q_blocks = qb};
    x.offsets = malloc(sizeof(int64_t) * (size_t)(rows + 1));
    x.key_blocks = malloc(sizeof(int32_t) * (size_t)(rows * maxkb + 1));
    x.offsets[0] = 0;
    for (int64_t r = 0; r < rows; r++) {
        const int64_t b = r / (H * qb), kb = (lk[b] + bs - 1) / bs;
        int64_t n = x.offsets[r];
        for (int64_t j = 0; j < kb; j++)
            if (share >= 1 || tu_uniform(rng, 0, 1) < share) x.key_blocks[n++] = (int32_t)j;
        x.offsets[r + 1] = n;
    }
    return x;
}

/* Extra key columns for x: each row lists each key of its sequence with
 * probability share, inside its listed blocks or not. */
static void random_columns(uint64_t *rng, la_block_index *x, const int64_t *lk, double share) {
    const int64_t rows = x->num_seqs * x->heads * x->q_blocks, per_seq = x->heads * x->q_blocks;
    int64_t maxk = 1;
    for (int64_t b = 0; b < x->num_seqs; b++) maxk = lk[b] > maxk ? lk[b] : maxk;
    x->col_offsets = malloc(sizeof(int64_t) * (size_t)(rows + 1));
    x->key_cols = malloc(sizeof(int32_t) * (size_t)(rows * maxk + 1));
    x->col_offsets[0] = 0;
    for (int64_t r = 0; r < rows; r++) {
        int64_t n = x->col_offsets[r];
        for (int64_t j = 0; j < lk[r / per_seq]; j++)
            if (tu_uniform(rng, 0, 1) < share) x->key_cols[n++] = (int32_t)j;
        x->col_offsets[r + 1] = n;
    }
}

/* Tolerance |got - want| <= atol + rtol |want|: the dense CUDA forward's
 * (tests/cuda/test_cuda_attention.c, where the reasons are): P rounded to
 * the inputs' type, atol 4e-3 bf16 / 1e-3 f16 (x8 for sigmoid weights,
 * whose sums are not normalised), rtol for a 16-bit out's rounding. The CPU
 * sparse kernel (f32, P not rounded) is held to the same tolerance; the
 * dense CUDA forward (also within it of the reference) to twice it. */
static void tolerance(const sp_case *c, double *atol, double *rtol) {
    *atol = c->dt == LA_BF16 ? 4e-3 : 1e-3;
    *rtol = c->out_dt == LA_F32 ? 1e-4 : c->out_dt == LA_BF16 ? 8e-3 : 2e-3;
    if (c->p.score == LA_SCORE_SIGMOID) *atol *= 8;
}
#define LSE_ATOL 2e-4

/* What the backward check takes over from the forward's case. */
typedef struct {
    bool varlen;
    int64_t nseq, Tq, Tk;
    const int32_t *cu_q, *cu_k;
    const int64_t *lqs, *lks, *qs, *ks, *ls;
    int nd;
    const float *slopes;
    const double *want, *want_lse; /* the reference forward, [rows][H][D] and [rows][H] */
} fwd_state;

/* Gradient tolerance, test_cuda_backward.c's (the reasons are there):
 * |got - want| <= TOL max|want| + rtol |want|, TOL 1e-2 bf16 / 3e-3 f16,
 * rtol for a 16-bit gradient's rounding; the relative norm under TOL / 2.
 * The CPU sparse backward (f32) is held to the same bounds; the dense CUDA
 * backward (complete lists, itself within them of the reference) to twice
 * them. */
static void compare_grad(const sp_case *c, const fwd_state *f, const char *what, const buf *got, const buf *cpu,
                         const buf *dense, const double *want, bool keys, int64_t heads) {
    const double tol = c->dt == LA_BF16 ? 1e-2 : 3e-3;
    const double rtol = c->out_dt == LA_F32 ? 1e-4 : c->out_dt == LA_BF16 ? 8e-3 : 2e-3;
    const int64_t D = c->D, rows = keys ? f->Tk : f->Tq;
    double maxw = 0;
    for (int64_t e = 0; e < rows * heads * D; e++) maxw = fabs(want[e]) > maxw ? fabs(want[e]) : maxw;
    /* q, k, v and dout are drawn from [-1, 1], so a gradient's terms are of
     * order 1e-1..1. A tensor whose largest element is far below that (a row
     * that sees one key: dS = P (dP - delta) cancels to round-off) is judged
     * against that floor, not its own size: otherwise both backends' f32
     * round-off (5.6e-8 where max|ref| was 4.5e-7, seed 1512328837) fails.
     * The floor is 1e-3: with a 1e-4 floor, a columns case over ~1000 queries
     * (seed 432539362890602) missed by 1.1e-6 against 3e-7, the f16 rounding
     * of dS (2^-11) times sums of |dS| |q| that cancel to below 1e-4. */
    const double grad_floor = 1e-3, scale = maxw > grad_floor ? maxw : grad_floor;
    const double atol = tol * scale;
    int64_t bad = 0, bad_cpu = 0, bad_dense = 0, idx[4];
    double worst = 0, worst_cpu = 0, err2 = 0, ref2 = 0;
    for (int64_t b = 0; b < f->nseq; b++) {
        const int32_t *cu = keys ? f->cu_k : f->cu_q;
        const int64_t off = f->varlen ? cu[b] : 0, n = keys ? f->lks[b] : f->lqs[b], L = keys ? f->ks[1] : f->qs[1];
        for (int64_t i = 0; i < n; i++)
            for (int64_t h = 0; h < heads; h++)
                for (int64_t d = 0; d < D; d++) {
                    idx_of(f->varlen, b, off, i, h, d, idx);
                    const double w = want[((f->varlen ? off + i : b * L + i) * heads + h) * D + d];
                    const double g = tu_get(&got->t, idx), x = tu_get(&cpu->t, idx);
                    bad += !tu_close(g, w, atol, rtol), bad_cpu += !tu_close(g, x, atol, rtol);
                    if (dense) bad_dense += !tu_close(g, tu_get(&dense->t, idx), 2 * atol, 2 * rtol);
                    const double e = isnan(g) ? INFINITY : fabs(g - w), ec = isnan(g) ? INFINITY : fabs(g - x);
                    worst = e > worst ? e : worst, worst_cpu = ec > worst_cpu ? ec : worst_cpu;
                    err2 += e * e, ref2 += w * w;
                }
    }
    /* relative to the floor's RMS where the gradient is all zero or below it */
    const double count = (double)(rows * heads * D > 0 ? rows * heads * D : 1);
    const double rel = sqrt(err2 / (ref2 > count * grad_floor * grad_floor ? ref2 : count * grad_floor * grad_floor));
    printf("    %s: max|ref| %.2e worst |err| %.2e rel-norm %.2e vs CPU %.2e\n", what, maxw, worst, rel, worst_cpu);
    tu_check(bad == 0, "%s %s: %lld elements off the reference, worst |err| %.3g (atol %.2e rtol %.1e)", c->name,
             what, (long long)bad, worst, atol, rtol);
    tu_check(rel <= tol / 2, "%s %s: rel-norm %.3g over %.1e", c->name, what, rel, tol / 2);
    tu_check(bad_cpu == 0, "%s %s: %lld elements off the CPU sparse backward, worst |diff| %.3g", c->name, what,
             (long long)bad_cpu, worst_cpu);
    tu_check(bad_dense == 0, "%s %s: complete list: %lld elements off the dense CUDA backward", c->name, what,
             (long long)bad_dense);
    if (c->strided) tu_check(tu_buf_outside_poisoned(got), "%s: %s written outside its view", c->name, what);
}

/* The backward of a forward case: out and lse from the float64 reference
 * (f32, so both backends differentiate the same function, as
 * test_cuda_backward.c does), dout random; the CUDA gradients against the
 * restricted reference, the CPU sparse backward and (complete lists) the
 * dense CUDA backward. Gradients in the case's out dtype, poisoned. */
static void check_backward(uint64_t *rng, const sp_case *c, la_context *ctx, const la_attention_params *p,
                           const la_block_index *x, const fwd_state *f, const buf *q, const buf *k, const buf *v,
                           const dev_buf *d_q, const dev_buf *d_k, const dev_buf *d_v) {
    const int64_t H = c->H, Hkv = c->Hkv, D = c->D, G = H / Hkv;
    const bool sigmoid = p->score == LA_SCORE_SIGMOID, complete = c->share >= 1;
    buf o = tu_buf_new(LA_F32, f->nd, f->qs, false, false), l = tu_buf_new(LA_F32, f->nd - 1, f->ls, false, true);
    buf go = tu_buf_new(c->dt, f->nd, f->qs, c->strided, false);
    buf g[3], gc[3], gd[3]; /* dq, dk, dv: CUDA sparse, CPU sparse, CUDA dense */
    for (int t = 0; t < 3; t++) {
        const int64_t *shape = t == 0 ? f->qs : f->ks;
        g[t] = tu_buf_new(c->out_dt, f->nd, shape, c->strided, false);
        gc[t] = tu_buf_new(c->out_dt, f->nd, shape, c->strided, false);
        gd[t] = tu_buf_new(c->out_dt, f->nd, shape, c->strided, false);
        tu_poison(g[t].t.data, c->out_dt, (int64_t)g[t].elems);
        tu_poison(gc[t].t.data, c->out_dt, (int64_t)gc[t].elems);
        tu_poison(gd[t].t.data, c->out_dt, (int64_t)gd[t].elems);
    }
    tu_fill(rng, go.t.data, c->dt, (int64_t)go.elems, -1, 1);
    int64_t idx[4];
    for (int64_t b = 0; b < f->nseq; b++) {
        const int64_t qo = f->varlen ? f->cu_q[b] : 0;
        for (int64_t i = 0; i < f->lqs[b]; i++)
            for (int64_t h = 0; h < H; h++) {
                const int64_t row = (f->varlen ? qo + i : b * f->qs[1] + i) * H + h;
                for (int64_t d = 0; d < D; d++) idx_of(f->varlen, b, qo, i, h, d, idx), tu_set(&o.t, idx, f->want[row * D + d]);
                idx_of(f->varlen, b, qo, i, h, 0, idx);
                tu_set(&l.t, idx, f->want_lse[row]);
            }
    }
    la_status s = la_block_sparse_backward(ctx, p, &q->t, &k->t, &v->t, x, &o.t, &go.t, sigmoid ? NULL : &l.t,
                                           &gc[0].t, &gc[1].t, &gc[2].t);
    tu_check(s == LA_OK, "%s: CPU backward status %s (%s)", c->name, la_status_name(s), la_last_error());
    dev_buf d_o = to_device(&o), d_l = to_device(&l), d_go = to_device(&go), d_g[3], d_gd[3];
    for (int t = 0; t < 3; t++) d_g[t] = to_device(&g[t]), d_gd[t] = to_device(&gd[t]);
    s = la_block_sparse_backward(ctx, p, &d_q->t, &d_k->t, &d_v->t, x, &d_o.t, &d_go.t, sigmoid ? NULL : &d_l.t,
                                 &d_g[0].t, &d_g[1].t, &d_g[2].t);
    tu_check(s == LA_OK, "%s: CUDA backward status %s (%s)", c->name, la_status_name(s), la_last_error());
    if (complete) {
        la_status sd = la_attention_backward(ctx, p, &d_q->t, &d_k->t, &d_v->t, &d_o.t, &d_go.t,
                                             sigmoid ? NULL : &d_l.t, &d_gd[0].t, &d_gd[1].t, &d_gd[2].t);
        tu_check(sd == LA_OK, "%s: dense CUDA backward status %s (%s)", c->name, la_status_name(sd), la_last_error());
    }
    cuda_ok(cudaDeviceSynchronize(), "synchronize after the backward");
    for (int t = 0; t < 3; t++) from_device(&g[t], &d_g[t]), from_device(&gd[t], &d_gd[t]);

    /* float64 reference: dK and dV summed over each K/V head's group */
    double *w[3] = {tu_alloc(8 * (size_t)(f->Tq * H * D + 1)), tu_alloc(8 * (size_t)(f->Tk * Hkv * D + 1)),
                    tu_alloc(8 * (size_t)(f->Tk * Hkv * D + 1))};
    memset(w[1], 0, 8 * (size_t)(f->Tk * Hkv * D + 1)), memset(w[2], 0, 8 * (size_t)(f->Tk * Hkv * D + 1));
    int64_t maxq = 1, maxk = 1;
    for (int64_t b = 0; b < f->nseq; b++) maxq = f->lqs[b] > maxq ? f->lqs[b] : maxq, maxk = f->lks[b] > maxk ? f->lks[b] : maxk;
    double *hq = tu_alloc(8 * (size_t)(maxq * D)), *hdo = tu_alloc(8 * (size_t)(maxq * D)), *hdq = tu_alloc(8 * (size_t)(maxq * D));
    double *hk = tu_alloc(8 * (size_t)(maxk * D)), *hv = tu_alloc(8 * (size_t)(maxk * D));
    double *hdk = tu_alloc(8 * (size_t)(maxk * D)), *hdv = tu_alloc(8 * (size_t)(maxk * D));
    unsigned char *keep = tu_alloc((size_t)(maxq * maxk + 1));
    for (int64_t b = 0; b < f->nseq && s == LA_OK; b++) {
        const int64_t qo = f->varlen ? f->cu_q[b] : 0, ko = f->varlen ? f->cu_k[b] : 0, lq = f->lqs[b], lk = f->lks[b];
        for (int64_t h = 0; h < H; h++) {
            sparse_keep_mask(x, b, h, lq, lk, keep);
            ref_attn_opts ro = {.scale = p->scale > 0 ? p->scale : 1 / sqrt((double)D), .causal = p->causal,
                                .window_left = p->window_left, .window_right = p->window_right, .sinks = p->sinks,
                                .softcap = p->softcap, .alibi_slope = c->alibi ? f->slopes[h] : 0, .sigmoid = sigmoid,
                                .sigmoid_bias = p->sigmoid_bias, .keep = keep};
            for (int64_t i = 0; i < lq; i++)
                for (int64_t d = 0; d < D; d++) {
                    idx_of(f->varlen, b, qo, i, h, d, idx);
                    hq[i * D + d] = tu_get(&q->t, idx), hdo[i * D + d] = tu_get(&go.t, idx);
                }
            for (int64_t j = 0; j < lk; j++)
                for (int64_t d = 0; d < D; d++) {
                    idx_of(f->varlen, b, ko, j, h / G, d, idx);
                    hk[j * D + d] = tu_get(&k->t, idx), hv[j * D + d] = tu_get(&v->t, idx);
                }
            memset(hdk, 0, 8 * (size_t)(maxk * D)), memset(hdv, 0, 8 * (size_t)(maxk * D));
            ref_attention_backward(&ro, lq, lk, D, hq, hk, hv, hdo, hdq, hdk, hdv);
            for (int64_t i = 0; i < lq; i++)
                memcpy(w[0] + ((f->varlen ? qo + i : b * f->qs[1] + i) * H + h) * D, hdq + i * D, 8 * (size_t)D);
            for (int64_t j = 0; j < lk; j++)
                for (int64_t d = 0; d < D; d++) {
                    const int64_t e = ((f->varlen ? ko + j : b * f->ks[1] + j) * Hkv + h / G) * D + d;
                    w[1][e] += hdk[j * D + d], w[2][e] += hdv[j * D + d];
                }
        }
    }
    static const char *const names[3] = {"dq", "dk", "dv"};
    for (int t = 0; t < 3 && s == LA_OK; t++)
        compare_grad(c, f, names[t], &g[t], &gc[t], complete ? &gd[t] : NULL, w[t], t > 0, t ? Hkv : H);
    for (int t = 0; t < 3; t++) {
        cudaFree(d_g[t].mem), cudaFree(d_gd[t].mem);
        free(g[t].t.data), free(gc[t].t.data), free(gd[t].t.data), free(w[t]);
    }
    cudaFree(d_o.mem), cudaFree(d_l.mem), cudaFree(d_go.mem);
    free(o.t.data), free(l.t.data), free(go.t.data);
    free(hq), free(hdo), free(hdq), free(hk), free(hv), free(hdk), free(hdv), free(keep);
}

static void run_case(uint64_t *rng, const sp_case *c) {
    const bool varlen = c->nseq > 0;
    const int64_t H = c->H, Hkv = c->Hkv, D = c->D, G = H / Hkv;
    int32_t cu_q[8] = {0}, cu_k[8] = {0};
    const int64_t nseq = varlen ? c->nseq : c->B;
    int64_t lqs[8], lks[8];
    for (int64_t b = 0; b < nseq; b++) {
        lqs[b] = varlen ? c->lens_q[b] : c->Lq, lks[b] = varlen ? c->lens_k[b] : c->Lk;
        if (varlen) cu_q[b + 1] = cu_q[b] + c->lens_q[b], cu_k[b + 1] = cu_k[b] + c->lens_k[b];
    }
    const int64_t Tq = varlen ? cu_q[nseq] : c->B * c->Lq, Tk = varlen ? cu_k[nseq] : c->B * c->Lk;
    const int nd = varlen ? 3 : 4;
    int64_t qs[4] = {c->B, c->Lq, H, D}, ks[4] = {c->B, c->Lk, Hkv, D}, ls[3] = {c->B, c->Lq, H};
    if (varlen) {
        qs[0] = Tq, qs[1] = H, qs[2] = D;
        ks[0] = Tk, ks[1] = Hkv, ks[2] = D;
        ls[0] = Tq, ls[1] = H;
    }
    buf q = tu_buf_new(c->dt, nd, qs, c->strided, false), k = tu_buf_new(c->dt, nd, ks, c->strided, false);
    buf v = tu_buf_new(c->dt, nd, ks, c->strided, false), out = tu_buf_new(c->out_dt, nd, qs, c->strided, false);
    buf lse = tu_buf_new(LA_F32, nd - 1, ls, c->strided, true);
    buf out_cpu = tu_buf_new(c->out_dt, nd, qs, c->strided, false), lse_cpu = tu_buf_new(LA_F32, nd - 1, ls, c->strided, true);
    buf dense = tu_buf_new(c->out_dt, nd, qs, c->strided, false);
    tu_fill(rng, q.t.data, c->dt, (int64_t)q.elems, -1, 1);
    tu_fill(rng, k.t.data, c->dt, (int64_t)k.elems, -1, 1);
    tu_fill(rng, v.t.data, c->dt, (int64_t)v.elems, -1, 1);
    float slopes[64];
    for (int64_t h = 0; h < H; h++) slopes[h] = (float)tu_uniform(rng, 0.01, 0.3);
    la_attention_params p = c->p;
    if (c->alibi) p.alibi_slopes = slopes;
    if (varlen) p.cu_seqlens_q = cu_q, p.cu_seqlens_k = cu_k, p.num_seqs = c->nseq;
    const bool sigmoid = p.score == LA_SCORE_SIGMOID, with_lse = c->want_lse && !sigmoid;
    la_block_index x = random_index(rng, nseq, H, lqs, lks, c->bs, c->share);
    if (c->cols > 0) random_columns(rng, &x, lks, c->cols);

    /* float64 reference of every (sequence, head), restricted to the lists */
    double *want = tu_alloc(sizeof(double) * (size_t)(Tq * H * D + 1)), *want_lse = tu_alloc(8 * (size_t)(Tq * H + 1));
    int64_t maxq = 1, maxk = 1;
    for (int64_t b = 0; b < nseq; b++) maxq = lqs[b] > maxq ? lqs[b] : maxq, maxk = lks[b] > maxk ? lks[b] : maxk;
    double *hq = tu_alloc(8 * (size_t)(maxq * D)), *ho = tu_alloc(8 * (size_t)(maxq * D)), *hl = tu_alloc(8 * (size_t)maxq);
    double *hk = tu_alloc(8 * (size_t)(maxk * D)), *hv = tu_alloc(8 * (size_t)(maxk * D));
    unsigned char *keep = tu_alloc((size_t)(maxq * maxk + 1));
    for (int64_t b = 0; b < nseq; b++) {
        const int64_t qo = varlen ? cu_q[b] : 0, ko = varlen ? cu_k[b] : 0, lq = lqs[b], lk = lks[b];
        int64_t idx[4];
        for (int64_t h = 0; h < H; h++) {
            sparse_keep_mask(&x, b, h, lq, lk, keep);
            ref_attn_opts o = {.scale = p.scale > 0 ? p.scale : 1 / sqrt((double)D), .causal = p.causal,
                               .window_left = p.window_left, .window_right = p.window_right, .sinks = p.sinks,
                               .softcap = p.softcap, .alibi_slope = c->alibi ? slopes[h] : 0, .sigmoid = sigmoid,
                               .sigmoid_bias = p.sigmoid_bias, .keep = keep};
            for (int64_t i = 0; i < lq; i++)
                for (int64_t d = 0; d < D; d++) idx_of(varlen, b, qo, i, h, d, idx), hq[i * D + d] = tu_get(&q.t, idx);
            for (int64_t j = 0; j < lk; j++)
                for (int64_t d = 0; d < D; d++) {
                    idx_of(varlen, b, ko, j, h / G, d, idx);
                    hk[j * D + d] = tu_get(&k.t, idx);
                    hv[j * D + d] = tu_get(&v.t, idx);
                }
            ref_attention_forward(&o, lq, lk, D, hq, hk, hv, ho, hl);
            for (int64_t i = 0; i < lq; i++) {
                const int64_t row = (varlen ? qo + i : b * c->Lq + i) * H + h;
                memcpy(want + row * D, ho + i * D, sizeof(double) * (size_t)D);
                want_lse[row] = hl[i];
            }
        }
    }

    /* the CPU backend's sparse kernel on the same inputs */
    la_context *ctx;
    la_context_create(&ctx, 0);
    tu_poison(out_cpu.t.data, c->out_dt, (int64_t)out_cpu.elems);
    tu_poison(lse_cpu.t.data, LA_F32, (int64_t)lse_cpu.elems);
    la_status s = la_block_sparse_forward(ctx, &p, &q.t, &k.t, &v.t, &x, &out_cpu.t, with_lse ? &lse_cpu.t : NULL);
    tu_check(s == LA_OK, "%s: CPU status %s (%s)", c->name, la_status_name(s), la_last_error());

    /* the CUDA backend, outputs poisoned; with a complete list, the dense
     * CUDA forward too */
    tu_poison(out.t.data, c->out_dt, (int64_t)out.elems);
    tu_poison(lse.t.data, LA_F32, (int64_t)lse.elems);
    tu_poison(dense.t.data, c->out_dt, (int64_t)dense.elems);
    dev_buf dq = to_device(&q), dk = to_device(&k), dv = to_device(&v), dout = to_device(&out), dlse = to_device(&lse);
    dev_buf ddense = to_device(&dense);
    s = la_block_sparse_forward(ctx, &p, &dq.t, &dk.t, &dv.t, &x, &dout.t, with_lse ? &dlse.t : NULL);
    tu_check(s == LA_OK, "%s: CUDA status %s (%s)", c->name, la_status_name(s), la_last_error());
    const bool complete = c->share >= 1; /* (extra columns then all lie in listed blocks) */
    if (complete) {
        la_status sd = la_attention_forward(ctx, &p, &dq.t, &dk.t, &dv.t, &ddense.t, NULL);
        tu_check(sd == LA_OK, "%s: dense CUDA status %s (%s)", c->name, la_status_name(sd), la_last_error());
    }
    cuda_ok(cudaDeviceSynchronize(), "synchronize after the forward");
    from_device(&out, &dout);
    from_device(&lse, &dlse);
    from_device(&dense, &ddense);

    double atol, rtol;
    tolerance(c, &atol, &rtol);
    int64_t bad = 0, bad_lse = 0, bad_cpu = 0, bad_dense = 0;
    double worst = 0, worst_lse = 0, worst_cpu = 0, worst_dense = 0;
    for (int64_t b = 0; b < nseq && s == LA_OK; b++) {
        const int64_t qo = varlen ? cu_q[b] : 0;
        int64_t idx[4];
        for (int64_t i = 0; i < lqs[b]; i++)
            for (int64_t h = 0; h < H; h++) {
                const int64_t row = (varlen ? qo + i : b * c->Lq + i) * H + h;
                for (int64_t d = 0; d < D; d++) {
                    idx_of(varlen, b, qo, i, h, d, idx);
                    const double got = tu_get(&out.t, idx), w = want[row * D + d], cpu = tu_get(&out_cpu.t, idx);
                    bad += !tu_close(got, w, atol, rtol);
                    bad_cpu += !tu_close(got, cpu, atol, rtol);
                    const double e = isnan(got) ? INFINITY : fabs(got - w), ec = isnan(got) ? INFINITY : fabs(got - cpu);
                    worst = e > worst ? e : worst, worst_cpu = ec > worst_cpu ? ec : worst_cpu;
                    if (complete) {
                        const double dn = tu_get(&dense.t, idx), ed = isnan(got) ? INFINITY : fabs(got - dn);
                        bad_dense += !tu_close(got, dn, 2 * atol, 2 * rtol);
                        worst_dense = ed > worst_dense ? ed : worst_dense;
                    }
                }
                if (with_lse) {
                    idx_of(varlen, b, qo, i, h, 0, idx);
                    const double got = tu_get(&lse.t, idx);
                    bad_lse += !tu_close(got, want_lse[row], LSE_ATOL, 1e-6);
                    const double e = isinf(got) && got == want_lse[row] ? 0 : isnan(got) ? INFINITY : fabs(got - want_lse[row]);
                    worst_lse = e > worst_lse ? e : worst_lse;
                }
            }
    }
    printf("%-50s worst |err| %.2e  vs CPU %.2e  vs dense %.2e  lse %.2e\n", c->name, worst, worst_cpu, worst_dense,
           worst_lse);
    tu_check(bad == 0, "%s: %lld out elements off the reference, worst |err| %.3g (atol %.1e rtol %.1e)", c->name,
             (long long)bad, worst, atol, rtol);
    tu_check(bad_cpu == 0, "%s: %lld out elements off the CPU sparse kernel, worst |diff| %.3g", c->name,
             (long long)bad_cpu, worst_cpu);
    tu_check(bad_dense == 0, "%s: complete list: %lld out elements off the dense CUDA forward, worst |diff| %.3g",
             c->name, (long long)bad_dense, worst_dense);
    tu_check(bad_lse == 0, "%s: %lld lse rows off, worst |err| %.3g", c->name, (long long)bad_lse, worst_lse);
    if (c->strided) {
        tu_check(tu_buf_outside_poisoned(&out), "%s: out written outside its view", c->name);
        if (with_lse) tu_check(tu_buf_outside_poisoned(&lse), "%s: lse written outside its view", c->name);
    }
    if (c->bwd && s == LA_OK) {
        const fwd_state f = {.varlen = varlen, .nseq = nseq, .Tq = Tq, .Tk = Tk, .cu_q = cu_q, .cu_k = cu_k,
                             .lqs = lqs, .lks = lks, .qs = qs, .ks = ks, .ls = ls, .nd = nd, .slopes = slopes,
                             .want = want, .want_lse = want_lse};
        check_backward(rng, c, ctx, &p, &x, &f, &q, &k, &v, &dq, &dk, &dv);
    }
    la_context_destroy(ctx);
    la_block_index_free(&x);
    cudaFree(dq.mem), cudaFree(dk.mem), cudaFree(dv.mem), cudaFree(dout.mem), cudaFree(dlse.mem), cudaFree(ddense.mem);
    free(q.t.data), free(k.t.data), free(v.t.data), free(out.t.data), free(lse.t.data);
    free(out_cpu.t.data), free(lse_cpu.t.data), free(dense.t.data);
    free(want), free(want_lse), free(hq), free(ho), free(hl), free(hk), free(hv), free(keep);
}

static sp_case base_case(const char *name, int64_t B, int64_t L, int64_t H, int64_t Hkv, int64_t D, int64_t bs,
                         double share, int causal) {
    sp_case c = {.name = name, .B = B, .Lq = L, .Lk = L, .H = H, .Hkv = Hkv, .D = D, .bs = bs, .share = share,
                 .dt = LA_BF16, .out_dt = LA_BF16, .want_lse = true, .p = la_attention_params_default()};
    c.p.causal = causal;
    c.bwd = with_bwd && L <= 1000;
    return c;
}

static void shape_cases(uint64_t *rng) {
    static const int64_t lens[] = {1, 63, 65, 1000, 4097};
    char name[128];
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
        for (int causal = 0; causal < 2; causal++) {
            const int64_t L = lens[li];
            if (quick && L > 100) continue;
            snprintf(name, sizeof name, "L=%lld causal=%d mqa D=64 half the blocks", (long long)L, causal);
            sp_case c = base_case(name, L > 1000 ? 1 : 2, L, L > 1000 ? 2 : 4, 1, 64, 64, 0.5, causal);
            run_case(rng, &c);
        }
    /* complete lists: dense attention */
    for (int causal = 0; causal < 2; causal++) {
        snprintf(name, sizeof name, "complete list L=%d causal=%d gqa2 D=128", quick ? 130 : 1000, causal);
        sp_case c = base_case(name, 1, quick ? 130 : 1000, 4, 2, 128, 64, 1, causal);
        run_case(rng, &c);
    }
    sp_case e = base_case("empty lists (out 0, lse -inf)", 2, 200, 2, 1, 64, 64, 0, 1);
    run_case(rng, &e);
    /* block sizes: under the 64-row item (idle rows), at it, over it and
     * not a multiple of the key tile (part-empty tiles, runs joined) */
    static const int64_t sizes[] = {1, 16, 37, 100, 128, 200};
    static const int64_t dims[] = {64, 128, 256};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++)
        for (size_t di = 0; di < 3; di++) {
            const int64_t bs = sizes[si], L = bs == 1 ? 70 : quick ? 150 : 530;
            snprintf(name, sizeof name, "block %lld D=%lld L=%lld causal gqa4", (long long)bs, (long long)dims[di],
                     (long long)L);
            sp_case c = base_case(name, 1, L, 8, 2, dims[di], bs, tu_uniform(rng, 0.3, 0.8), 1);
            run_case(rng, &c);
            if (si == 3) { /* and complete, non-causal */
                snprintf(name, sizeof name, "block %lld D=%lld L=%lld complete", (long long)bs, (long long)dims[di],
                         (long long)L);
                c = base_case(name, 1, L, 4, 2, dims[di], bs, 1, 0);
                run_case(rng, &c);
            }
        }
    static const int64_t odd_dims[] = {72, 8, 200};
    for (size_t di = 0; di < 3; di++) {
        snprintf(name, sizeof name, "D=%lld Lq<Lk causal gqa4", (long long)odd_dims[di]);
        sp_case c = base_case(name, 2, 0, 8, 2, odd_dims[di], 64, 0.6, 1);
        c.Lq = 77, c.Lk = 300;
        run_case(rng, &c);
    }
    sp_case g = base_case("Lq>Lk causal gqa8 f32 out", 1, 0, 8, 1, 128, 64, 0.7, 1);
    g.Lq = 300, g.Lk = 130, g.out_dt = LA_F32;
    run_case(rng, &g);
}

static void option_cases(uint64_t *rng) {
    const sp_case base = base_case("", 2, 300, 4, 2, 128, 64, 0.6, 0);
    sp_case c = base;
    c.name = "f16 in, f16 out, causal";
    c.dt = c.out_dt = LA_F16, c.p.causal = 1;
    run_case(rng, &c);
    c = base, c.name = "f16 in, f32 out, strided";
    c.dt = LA_F16, c.out_dt = LA_F32, c.strided = true;
    run_case(rng, &c);
    c = base, c.name = "window left 70 causal";
    c.p.causal = 1, c.p.window_left = 70;
    run_case(rng, &c);
    c = base, c.name = "window left 70 causal, complete list";
    c.p.causal = 1, c.p.window_left = 70, c.share = 1;
    run_case(rng, &c);
    c = base, c.name = "window (5, 9) non-causal";
    c.p.window_left = 5, c.p.window_right = 9;
    run_case(rng, &c);
    c = base, c.name = "sinks 4 + window 100 causal";
    c.p.causal = 1, c.p.window_left = 100, c.p.sinks = 4;
    run_case(rng, &c);
    c = base, c.name = "sinks 70 + window 3, Lq<Lk, block 16";
    c.Lq = 50, c.p.causal = 1, c.p.window_left = 3, c.p.sinks = 70, c.bs = 16;
    run_case(rng, &c);
    c = base, c.name = "softcap 5, scale 0.3";
    c.p.softcap = 5, c.p.scale = 0.3f;
    run_case(rng, &c);
    c = base, c.name = "alibi causal";
    c.alibi = true, c.p.causal = 1;
    run_case(rng, &c);
    c = base, c.name = "sigmoid bias -log(L) causal";
    c.p.score = LA_SCORE_SIGMOID, c.p.sigmoid_bias = -logf(300), c.p.causal = 1;
    run_case(rng, &c);
    c = base, c.name = "everything, strided";
    c.strided = true, c.p.causal = 1, c.p.window_left = 50, c.p.sinks = 2, c.p.softcap = 8, c.alibi = true;
    run_case(rng, &c);
    c = base, c.name = "no lse";
    c.want_lse = false, c.p.causal = 1;
    run_case(rng, &c);
    c = base, c.name = "Lk = 0";
    c.Lk = 0;
    run_case(rng, &c);
    for (int r = 0; r < (quick ? 2 : 12); r++) {
        c = base;
        c.name = "random combination";
        c.Lq = tu_randint(rng, 1, 260), c.Lk = tu_randint(rng, 1, 260);
        c.Hkv = tu_randint(rng, 1, 2), c.H = c.Hkv * tu_randint(rng, 1, 4), c.D = 8 * tu_randint(rng, 1, 32);
        c.bs = tu_randint(rng, 0, 1) ? 64 : tu_randint(rng, 1, 150);
        c.share = tu_uniform(rng, 0, 1);
        cu_random_rule(rng, &c.p);
        c.alibi = tu_randint(rng, 0, 1);
        c.strided = tu_randint(rng, 0, 1);
        c.dt = tu_randint(rng, 0, 1) ? LA_BF16 : LA_F16;
        c.out_dt = tu_randint(rng, 0, 1) ? LA_F32 : c.dt;
        run_case(rng, &c);
    }
}

static void varlen_cases(uint64_t *rng) {
    sp_case c = {.name = "varlen with an empty sequence", .nseq = 5, .lens_q = {5, 0, 130, 1, 700},
                 .lens_k = {5, 3, 150, 70, 650}, .H = 8, .Hkv = 2, .D = 128, .bs = 64, .share = 0.5,
                 .dt = LA_BF16, .out_dt = LA_BF16, .want_lse = true, .bwd = with_bwd,
                 .p = la_attention_params_default()};
    c.p.causal = 1;
    run_case(rng, &c);
    c.name = "varlen strided f16 window, block 100";
    c.strided = true, c.dt = c.out_dt = LA_F16, c.p.window_left = 9, c.bs = 100;
    run_case(rng, &c);
    sp_case e = {.name = "varlen empty keys, complete", .nseq = 3, .lens_q = {4, 90, 2}, .lens_k = {0, 120, 0},
                 .H = 2, .Hkv = 1, .D = 64, .bs = 64, .share = 1, .dt = LA_BF16, .out_dt = LA_F32, .want_lse = true,
                 .bwd = with_bwd, .p = la_attention_params_default()};
    run_case(rng, &e);
    e.name = "varlen with an empty sequence, extra columns, block 37";
    e.nseq = 4, e.lens_q[3] = 0, e.lens_k[3] = 40, e.bs = 37, e.share = 0.4, e.cols = 0.05, e.p.causal = 1;
    run_case(rng, &e);
}

/* Extra key columns: alone, beside blocks (inside them or not), with every
 * rule option; complete lists plus columns (all inside) equal dense. */
static void column_cases(uint64_t *rng) {
    static const struct { const char *name; int64_t L, bs, D; double share, cols; int causal; } cs[] = {
        {"columns only (empty block lists) causal", 300, 64, 64, 0, 0.05, 1},
        {"columns and half the blocks, block 64", 530, 64, 128, 0.5, 0.03, 1},
        {"columns and blocks, block 37 non-causal", 300, 37, 128, 0.4, 0.1, 0},
        {"columns and blocks, block 100 D=256", 300, 100, 256, 0.5, 0.04, 1},
        {"columns and blocks, block 16 D=72 L=65", 65, 16, 72, 0.5, 0.2, 0},
        {"dense columns, block 128", 1000, 128, 64, 0.2, 0.3, 1},
        {"complete list and columns (all inside)", 200, 64, 128, 1, 0.3, 1},
        {"columns L=1", 1, 64, 64, 0, 1, 0},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
        if (quick && cs[i].L > 600) continue;
        sp_case c = base_case(cs[i].name, 2, cs[i].L, 4, 2, cs[i].D, cs[i].bs, cs[i].share, cs[i].causal);
        c.cols = cs[i].cols;
        run_case(rng, &c);
    }
    sp_case c = base_case("columns, everything, strided f16", 1, 260, 4, 2, 64, 48, 0.3, 1);
    c.cols = 0.08, c.strided = true, c.dt = c.out_dt = LA_F16, c.alibi = true;
    c.p.window_left = 40, c.p.sinks = 3, c.p.softcap = 6;
    run_case(rng, &c);
    c = base_case("columns, sigmoid", 1, 200, 2, 1, 64, 64, 0.3, 1);
    c.cols = 0.1, c.p.score = LA_SCORE_SIGMOID, c.p.sigmoid_bias = -5;
    run_case(rng, &c);
    for (int r = 0; r < (quick ? 2 : 8); r++) {
        c = base_case("columns, random combination", 1, tu_randint(rng, 1, 260), 2, 1, 8 * tu_randint(rng, 1, 32),
                      tu_randint(rng, 0, 1) ? 64 : tu_randint(rng, 1, 150), tu_uniform(rng, 0, 1), 0);
        c.Lk = tu_randint(rng, 1, 260), c.cols = tu_uniform(rng, 0, 0.2);
        cu_random_rule(rng, &c.p);
        c.alibi = tu_randint(rng, 0, 1), c.strided = tu_randint(rng, 0, 1);
        c.dt = tu_randint(rng, 0, 1) ? LA_BF16 : LA_F16;
        c.out_dt = tu_randint(rng, 0, 1) ? LA_F32 : c.dt;
        run_case(rng, &c);
    }
}

/* ---- bad inputs: each gives its status and leaves out untouched ---- */

static void bad_inputs(uint64_t *rng) {
    enum { B = 1, L = 130, H = 4, HKV = 2, D = 64, BS = 64 };
    buf q = tu_buf_new(LA_BF16, 4, (int64_t[]){B, L, H, D}, false, false);
    buf k = tu_buf_new(LA_BF16, 4, (int64_t[]){B, L, HKV, D}, false, false);
    buf v = tu_buf_new(LA_BF16, 4, (int64_t[]){B, L, HKV, D}, false, false);
    buf o = tu_buf_new(LA_BF16, 4, (int64_t[]){B, L, H, D}, false, false);
    tu_fill(rng, q.t.data, LA_BF16, (int64_t)q.elems, -1, 1);
    tu_fill(rng, k.t.data, LA_BF16, (int64_t)k.elems, -1, 1);
    tu_fill(rng, v.t.data, LA_BF16, (int64_t)v.elems, -1, 1);
    tu_poison(o.t.data, LA_BF16, (int64_t)o.elems);
    dev_buf dq = to_device(&q), dk = to_device(&k), dv = to_device(&v), dout = to_device(&o);
    la_block_index x = sparse_random_index(rng, B, H, L, L, BS, 1), bad = x, cols = x;
    const int64_t rows = B * H * ((L + BS - 1) / BS), nnz = x.offsets[rows];
    /* the same index in device memory */
    int64_t *d_off;
    int32_t *d_ids;
    cuda_ok(cudaMalloc((void **)&d_off, sizeof(int64_t) * (size_t)(rows + 1)), "cudaMalloc");
    cuda_ok(cudaMalloc((void **)&d_ids, sizeof(int32_t) * (size_t)nnz), "cudaMalloc");
    cuda_ok(cudaMemcpy(d_off, x.offsets, sizeof(int64_t) * (size_t)(rows + 1), cudaMemcpyHostToDevice), "upload");
    cuda_ok(cudaMemcpy(d_ids, x.key_blocks, sizeof(int32_t) * (size_t)nnz, cudaMemcpyHostToDevice), "upload");
    /* row 0 unsorted (its lists hold every block: 0 1 2 -> 1 0 2) */
    int32_t *unsorted = malloc(sizeof(int32_t) * (size_t)nnz);
    memcpy(unsorted, x.key_blocks, sizeof(int32_t) * (size_t)nnz);
    unsorted[0] = 1, unsorted[1] = 0;
    /* two extra columns in the last row, unsorted */
    int64_t *col_off = calloc((size_t)(rows + 1), sizeof(int64_t));
    int32_t col[2] = {5, 3};
    col_off[rows] = 2;
    cols.col_offsets = col_off, cols.key_cols = col;
    la_context *ctx;
    la_context_create(&ctx, 2);

#define BAD(label, want, index, ...)                                                                         \
    do {                                                                                                     \
        la_attention_params p = la_attention_params_default();                                               \
        la_tensor xq = dq.t, xk = dk.t, xv = dv.t, xo = dout.t;                                              \
        __VA_ARGS__;                                                                                         \
        la_status s = la_block_sparse_forward(ctx, &p, &xq, &xk, &xv, (index), &xo, NULL);                   \
        cudaDeviceSynchronize();                                                                             \
        cu_check_rejected(label, s, want, &o, &dout, "out");                                                 \
    } while (0)

    bad = x, bad.offsets = d_off, bad.key_blocks = d_ids;
    BAD("index in device memory", LA_ERR_DEVICE, &bad, (void)0);
    bad = x, bad.key_blocks = d_ids;
    BAD("index key_blocks in device memory", LA_ERR_DEVICE, &bad, (void)0);
    bad = x, bad.key_blocks = unsorted;
    BAD("unsorted index", LA_ERR_ARGUMENT, &bad, (void)0);
    bad = x, bad.q_blocks = 1;
    BAD("q_blocks not ceil(L / block_size)", LA_ERR_SHAPE, &bad, (void)0);
    BAD("unsorted extra columns", LA_ERR_ARGUMENT, &cols, (void)0);
    BAD("host pointer in a CUDA tensor", LA_ERR_DEVICE, &x, xk.data = k.t.data);
    BAD("valid call after the bad ones", LA_OK, &x, (void)0);

    /* the backward: a bad index gives its status, nothing written */
    {
        la_attention_params p = la_attention_params_default();
        buf grad = tu_buf_new(LA_BF16, 4, (int64_t[]){B, L, H, D}, false, false);
        buf lse = tu_buf_new(LA_F32, 3, (int64_t[]){B, L, H}, false, true);
        tu_poison(grad.t.data, LA_BF16, (int64_t)grad.elems);
        dev_buf dg = to_device(&grad), dkg = to_device(&k), dvg = to_device(&v), dl = to_device(&lse);
        la_status s = la_block_sparse_forward(ctx, &p, &dq.t, &dk.t, &dv.t, &x, &dout.t, &dl.t);
        tu_check(s == LA_OK, "forward before the backward: %s", la_last_error());
        bad = x, bad.q_blocks = 1;
        s = la_block_sparse_backward(ctx, &p, &dq.t, &dk.t, &dv.t, &bad, &dout.t, &dout.t, &dl.t, &dg.t, &dkg.t, &dvg.t);
        cudaDeviceSynchronize();
        cu_check_rejected("block-sparse backward, q_blocks wrong", s, LA_ERR_SHAPE, &grad, &dg, "dq");
        bad = x, bad.key_blocks = d_ids;
        s = la_block_sparse_backward(ctx, &p, &dq.t, &dk.t, &dv.t, &bad, &dout.t, &dout.t, &dl.t, &dg.t, &dkg.t, &dvg.t);
        cudaDeviceSynchronize();
        cu_check_rejected("block-sparse backward, index in device memory", s, LA_ERR_DEVICE, &grad, &dg, "dq");
        s = la_block_sparse_backward(ctx, &p, &dq.t, &dk.t, &dv.t, &x, &dout.t, &dout.t, &dl.t, &dg.t, &dkg.t, &dvg.t);
        cudaDeviceSynchronize();
        tu_check(s == LA_OK, "block-sparse backward after the bad ones: %s", la_last_error());
        cudaFree(dg.mem), cudaFree(dkg.mem), cudaFree(dvg.mem), cudaFree(dl.mem);
        free(grad.t.data), free(lse.t.data);
    }
    la_context_destroy(ctx);
    cudaFree(d_off), cudaFree(d_ids), cudaFree(dq.mem), cudaFree(dk.mem), cudaFree(dv.mem), cudaFree(dout.mem);
    free(unsorted), free(col_off);
    la_block_index_free(&x);
    free(q.t.data), free(k.t.data), free(v.t.data), free(o.t.data);
}

int main(void) {
    if (!la_cuda_available()) {
        printf("SKIP: %s\n", la_last_error());
        return 77;
    }
    uint64_t rng = tu_seed();
    const char *qe = getenv("LONGATTN_TEST_QUICK");
    quick = qe && *qe && *qe != '0';
    bad_inputs(&rng);
    shape_cases(&rng);
    option_cases(&rng);
    varlen_cases(&rng);
    column_cases(&rng);
    with_bwd = false;
    /* Head dims up to 128 run the wgmma kernel on Hopper: the mma.sync one
     * (what other GPUs run) on the same cases too */
    setenv("LA_CUDA_SPARSE_KERNEL", "mma", 1);
    shape_cases(&rng);
    option_cases(&rng);
    varlen_cases(&rng);
    unsetenv("LA_CUDA_SPARSE_KERNEL");
    return tu_finish();
}
