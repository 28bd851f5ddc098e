/* Exact attention backward (la_attention_backward) against the float64
 * reference: dq, dk, dv of random inputs over awkward shapes, every option,
 * dtype and SIMD level, plus bad-input cases that must fail without writing.
 *
 * out and lse come from the float64 reference forward, rounded to the
 * tensors' dtypes as a training framework would have stored them, so the
 * backward is judged on its own; a few cases take them from the library's
 * forward instead, to check the two agree on conventions. */
#include "attention_ref.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static bool quick;

/* ---- tensors: contiguous, or a strided view of [B][H][L][D + pad] memory ---- */

typedef tu_buf buf; /* contiguous, or strided over [B][H][L][D + 8] memory: see tu_buf_new */

static void drop(buf *b) {
    free(b->t.data);
    b->t.data = NULL;
}

/* Is every backing element still the poison pattern? */
static bool still_poisoned(const buf *b) {
    for (size_t i = 0; i < b->elems; i++) {
        if (b->t.dtype == LA_F32) {
            if (!isnan(((float *)b->t.data)[i])) return false;
        } else {
            uint16_t want = b->t.dtype == LA_BF16 ? 0x7fc1 : 0x7e01;
            if (((uint16_t *)b->t.data)[i] != want) return false;
        }
    }
    return true;
}

/* Are the backing elements outside the view (row padding, the gaps of a
 * strided layout) still poison? A kernel must write only its view. */
static bool padding_untouched(const buf *b) {
    bool *inside = calloc(b->elems + 1, 1);
    int64_t idx[LA_MAX_DIMS] = {0}, n = la_tensor_numel(&b->t);
    for (int64_t e = 0; e < n; e++) {
        int64_t off = 0, rest = e;
        for (int d = b->t.ndim - 1; d >= 0; d--) {
            idx[d] = rest % b->t.shape[d];
            rest /= b->t.shape[d];
            off += idx[d] * b->t.stride[d];
        }
        inside[off] = true;
    }
    bool ok = true;
    for (size_t i = 0; i < b->elems && ok; i++) {
        if (inside[i]) continue;
        if (b->t.dtype == LA_F32) ok = isnan(((float *)b->t.data)[i]);
        else ok = ((uint16_t *)b->t.data)[i] == (b->t.dtype == LA_BF16 ? 0x7fc1 : 0x7e01);
    }
    free(inside);
    return ok;
}

/* ---- one case ---- */

typedef struct {
    const char *name;
    int64_t B, Lq, Lk;     /* dense batch when nseq == 0 */
    int nseq;              /* varlen: sequence lengths below */
    int32_t lens_q[6], lens_k[6];
    int64_t H, Hkv, D;
    la_dtype dt, out_dt, grad_dt;
    bool strided, alibi;
    int threads;
    la_attention_params p;
    bool nested;   /* call from inside the caller's own OpenMP parallel region */
    bool dout_f32; /* dout in f32 rather than the inputs' dtype */
    bool library_forward; /* out and lse from la_attention_forward, as in training */
} bw_case;

/* Index of element (seq, row, head, d) in tensor coordinates. */
static void idx_of(bool varlen, int64_t b, int64_t off, int64_t i, int64_t h, int64_t d, int64_t *idx) {
    if (varlen) {
        idx[0] = off + i;
        idx[1] = h;
        idx[2] = d;
    } else {
        idx[0] = b;
        idx[1] = i;
        idx[2] = h;
        idx[3] = d;
    }
}

/* Visibility, written again from the reference's documented rule. */
static bool sees(const la_attention_params *p, int64_t i, int64_t j, int64_t lq, int64_t lk) {
    int64_t diag = i + lk - lq;
    int64_t hi = p->causal ? diag + 1 : p->window_right >= 0 ? diag + p->window_right + 1 : lk;
    int64_t lo = p->window_left >= 0 ? diag - p->window_left : 0;
    return j < hi && j < lk && (j >= lo || j < p->sinks);
}

/* Compare tensor t (logical rows x H x D, in the order of idx_of) with want. */
typedef struct {
    double worst;      /* largest |got - want| / scale */
    double scale;      /* max |want| */
    int64_t bad_zero;  /* elements of blind rows that are not exactly 0 */
} cmp_result;

static void compare(const bw_case *c, const buf *t, const double *want, const bool *blind, int64_t heads,
                    const int32_t *cu, int64_t nseq, int64_t L, cmp_result *r) {
    bool varlen = c->nseq > 0;
    memset(r, 0, sizeof *r);
    for (int64_t b = 0; b < nseq; b++) {
        int64_t off = varlen ? cu[b] : 0, len = varlen ? cu[b + 1] - cu[b] : L;
        for (int64_t i = 0; i < len; i++)
            for (int64_t h = 0; h < heads; h++)
                for (int64_t d = 0; d < c->D; d++) {
                    int64_t lin = ((varlen ? off + i : b * L + i) * heads + h) * c->D + d;
                    if (fabs(want[lin]) > r->scale) r->scale = fabs(want[lin]);
                }
    }
    double scale = r->scale > 0 ? r->scale : 1;
    for (int64_t b = 0; b < nseq; b++) {
        int64_t off = varlen ? cu[b] : 0, len = varlen ? cu[b + 1] - cu[b] : L;
        for (int64_t i = 0; i < len; i++)
            for (int64_t h = 0; h < heads; h++)
                for (int64_t d = 0; d < c->D; d++) {
                    int64_t idx[4], lin = ((varlen ? off + i : b * L + i) * heads + h) * c->D + d;
                    idx_of(varlen, b, off, i, h, d, idx);
                    double got = tu_get(&t->t, idx), w = want[lin];
                    if (blind[varlen ? off + i : b * L + i] && got != 0) r->bad_zero++;
                    double e = isnan(got) ? INFINITY : fabs(got - w) / scale;
                    if (e > r->worst) r->worst = e;
                }
    }
}

/* Tolerance on max|got - want| relative to max|want| of the tensor.
 * f32 end to end: f32 accumulation over up to ~4k keys and the ~2-ulp vector
 * exp; the softmax term p (dp - delta) cancels and can cost a digit. The
 * worst seen is ~3e-6 (L = 4097), so 3e-5 leaves a 10x margin.
 * Half precision: the inputs are exact in both computations, but out is
 * stored rounded (bf16 eps 2^-8, f16 2^-10) and delta = dout . out inherits
 * that error, as in every FA2-style backward; gradients stored in the input
 * dtype are rounded once more. Worst seen is about one eps of the scale
 * (3.3e-3 bf16, 4e-4 f16): allow four, 1.5e-2 and 4e-3. */
static double tolerance(const bw_case *c) {
    bool rounded = c->out_dt != LA_F32 || c->grad_dt != LA_F32; /* half inputs alone are exact */
    if (rounded && c->dt == LA_BF16) return 1.5e-2;
    if (rounded && c->dt == LA_F16) return 4e-3;
    return 3e-5;
}

static void run_case(uint64_t *rng, const bw_case *c) {
    const bool varlen = c->nseq > 0;
    const int64_t H = c->H, Hkv = c->Hkv, D = c->D, G = H / Hkv;
    int32_t cu_q[8] = {0}, cu_k[8] = {0};
    int64_t nseq = varlen ? c->nseq : c->B, Tq, Tk;
    if (varlen) {
        for (int i = 0; i < c->nseq; i++) {
            cu_q[i + 1] = cu_q[i] + c->lens_q[i];
            cu_k[i + 1] = cu_k[i] + c->lens_k[i];
        }
        Tq = cu_q[c->nseq];
        Tk = cu_k[c->nseq];
    } else {
        Tq = c->B * c->Lq;
        Tk = c->B * c->Lk;
    }
    int64_t qs[4], ks[4], ls[3];
    int nd = varlen ? 3 : 4;
    if (varlen) {
        qs[0] = Tq, qs[1] = H, qs[2] = D;
        ks[0] = Tk, ks[1] = Hkv, ks[2] = D;
        ls[0] = Tq, ls[1] = H;
    } else {
        qs[0] = c->B, qs[1] = c->Lq, qs[2] = H, qs[3] = D;
        ks[0] = c->B, ks[1] = c->Lk, ks[2] = Hkv, ks[3] = D;
        ls[0] = c->B, ls[1] = c->Lq, ls[2] = H;
    }
    const bool st = c->strided;
    buf q = tu_buf_new(c->dt, nd, qs, st, false), k = tu_buf_new(c->dt, nd, ks, st, false), v = tu_buf_new(c->dt, nd, ks, st, false);
    buf dout = tu_buf_new(c->dout_f32 ? LA_F32 : c->dt, nd, qs, st, false), out = tu_buf_new(c->out_dt, nd, qs, st, false);
    buf lse = tu_buf_new(LA_F32, nd - 1, ls, st, true);
    buf dq = tu_buf_new(c->grad_dt, nd, qs, st, false), dk = tu_buf_new(c->grad_dt, nd, ks, st, false),
        dv = tu_buf_new(c->grad_dt, nd, ks, st, false);
    tu_fill(rng, q.t.data, c->dt, (int64_t)q.elems, -1, 1);
    tu_fill(rng, k.t.data, c->dt, (int64_t)k.elems, -1, 1);
    tu_fill(rng, v.t.data, c->dt, (int64_t)v.elems, -1, 1);
    tu_fill(rng, dout.t.data, dout.t.dtype, (int64_t)dout.elems, -1, 1);
    tu_poison(lse.t.data, LA_F32, (int64_t)lse.elems);
    float slopes[64];
    for (int64_t h = 0; h < H; h++) slopes[h] = (float)tu_uniform(rng, 0.01, 0.3);

    la_attention_params p = c->p;
    if (c->alibi) p.alibi_slopes = slopes;
    if (varlen) {
        p.cu_seqlens_q = cu_q;
        p.cu_seqlens_k = cu_k;
        p.num_seqs = c->nseq;
    }
    const bool sigmoid = p.score == LA_SCORE_SIGMOID;

    /* Reference, one (sequence, head) at a time, on the stored (rounded) inputs. */
    size_t nq_ref = (size_t)(Tq * H * D), nk_ref = (size_t)(Tk * Hkv * D);
    double *dq_ref = tu_alloc(sizeof(double) * nq_ref), *dk_ref = tu_alloc(sizeof(double) * nk_ref),
           *dv_ref = tu_alloc(sizeof(double) * nk_ref);
    memset(dk_ref, 0, sizeof(double) * nk_ref);
    memset(dv_ref, 0, sizeof(double) * nk_ref);
    int64_t maxq = varlen ? 0 : c->Lq, maxk = varlen ? 0 : c->Lk;
    for (int i = 0; i < c->nseq; i++) {
        if (c->lens_q[i] > maxq) maxq = c->lens_q[i];
        if (c->lens_k[i] > maxk) maxk = c->lens_k[i];
    }
    size_t qn = (size_t)((maxq ? maxq : 1) * D), kn = (size_t)((maxk ? maxk : 1) * D);
    double *hq = tu_alloc(8 * qn), *hdo = tu_alloc(8 * qn), *ho = tu_alloc(8 * qn), *hdq = tu_alloc(8 * qn);
    double *hk = tu_alloc(8 * kn), *hv = tu_alloc(8 * kn), *hdk = tu_alloc(8 * kn), *hdv = tu_alloc(8 * kn);
    double *hlse = tu_alloc(8 * (size_t)(maxq ? maxq : 1));
    for (int64_t b = 0; b < nseq; b++) {
        int64_t qo = varlen ? cu_q[b] : 0, ko = varlen ? cu_k[b] : 0;
        int64_t lq = varlen ? cu_q[b + 1] - cu_q[b] : c->Lq, lk = varlen ? cu_k[b + 1] - cu_k[b] : c->Lk;
        for (int64_t h = 0; h < H; h++) {
            int64_t hkv = h / G, idx[4];
            ref_attn_opts o = {.scale = p.scale > 0 ? p.scale : 1 / sqrt((double)D), .causal = p.causal,
                               .window_left = p.window_left, .window_right = p.window_right, .sinks = p.sinks,
                               .softcap = p.softcap, .alibi_slope = c->alibi ? slopes[h] : 0, .sigmoid = sigmoid,
                               .sigmoid_bias = p.sigmoid_bias};
            for (int64_t i = 0; i < lq; i++)
                for (int64_t d = 0; d < D; d++) {
                    idx_of(varlen, b, qo, i, h, d, idx);
                    hq[i * D + d] = tu_get(&q.t, idx);
                    hdo[i * D + d] = tu_get(&dout.t, idx);
                }
            for (int64_t j = 0; j < lk; j++)
                for (int64_t d = 0; d < D; d++) {
                    idx_of(varlen, b, ko, j, hkv, d, idx);
                    hk[j * D + d] = tu_get(&k.t, idx);
                    hv[j * D + d] = tu_get(&v.t, idx);
                    hdk[j * D + d] = hdv[j * D + d] = 0;
                }
            ref_attention_forward(&o, lq, lk, D, hq, hk, hv, ho, hlse);
            ref_attention_backward(&o, lq, lk, D, hq, hk, hv, hdo, hdq, hdk, hdv);
            for (int64_t i = 0; i < lq; i++) {
                for (int64_t d = 0; d < D; d++) {
                    idx_of(varlen, b, qo, i, h, d, idx);
                    tu_set(&out.t, idx, ho[i * D + d]);
                    dq_ref[((varlen ? qo + i : b * c->Lq + i) * H + h) * D + d] = hdq[i * D + d];
                }
                if (!sigmoid) {
                    idx_of(varlen, b, qo, i, h, 0, idx);
                    tu_set(&lse.t, idx, hlse[i]);
                }
            }
            for (int64_t j = 0; j < lk; j++)
                for (int64_t d = 0; d < D; d++) {
                    int64_t lin = ((varlen ? ko + j : b * c->Lk + j) * Hkv + hkv) * D + d;
                    dk_ref[lin] += hdk[j * D + d];
                    dv_ref[lin] += hdv[j * D + d];
                }
        }
    }

    /* Blind rows: a query that sees no key, a key that no query sees. Their
     * gradients are structurally 0 and must come out exactly 0. */
    bool *q_blind = tu_alloc((size_t)Tq + 1), *k_blind = tu_alloc((size_t)Tk + 1);
    for (int64_t b = 0; b < nseq; b++) {
        int64_t qo = varlen ? cu_q[b] : b * c->Lq, ko = varlen ? cu_k[b] : b * c->Lk;
        int64_t lq = varlen ? cu_q[b + 1] - cu_q[b] : c->Lq, lk = varlen ? cu_k[b + 1] - cu_k[b] : c->Lk;
        for (int64_t i = 0; i < lq; i++) q_blind[qo + i] = true;
        for (int64_t j = 0; j < lk; j++) k_blind[ko + j] = true;
        for (int64_t i = 0; i < lq; i++)
            for (int64_t j = 0; j < lk; j++)
                if (sees(&p, i, j, lq, lk)) q_blind[qo + i] = k_blind[ko + j] = false;
    }

    la_context *ctx;
    TU_EXPECT_STATUS(la_context_create(&ctx, c->threads), LA_OK);
    if (c->library_forward) {
        tu_poison(out.t.data, c->out_dt, (int64_t)out.elems);
        la_status s = la_attention_forward(ctx, &p, &q.t, &k.t, &v.t, &out.t, sigmoid ? NULL : &lse.t);
        tu_check(s == LA_OK, "%s: forward status %s (%s)", c->name, la_status_name(s), la_last_error());
    }
    la_simd levels[LA_SIMD_COUNT];
    int nl = tu_simd_levels(levels);
    double tol = tolerance(c);
    for (int li = 0; li < nl; li++) {
        la_context_set_simd(ctx, levels[li]);
        tu_poison(dq.t.data, c->grad_dt, (int64_t)dq.elems);
        tu_poison(dk.t.data, c->grad_dt, (int64_t)dk.elems);
        tu_poison(dv.t.data, c->grad_dt, (int64_t)dv.elems);
        la_status s = LA_ERR_ARGUMENT;
        if (c->nested) {
            /* A plain call first leaves every thread's scratch dirty, so a
             * reduction over threads that do not exist would show. */
            la_attention_backward(ctx, &p, &q.t, &k.t, &v.t, &out.t, &dout.t, sigmoid ? NULL : &lse.t, &dq.t, &dk.t,
                                  &dv.t);
            tu_poison(dq.t.data, c->grad_dt, (int64_t)dq.elems);
            tu_poison(dk.t.data, c->grad_dt, (int64_t)dk.elems);
            tu_poison(dv.t.data, c->grad_dt, (int64_t)dv.elems);
            /* Nested parallelism is off by default: the library's region gets
             * one thread though the context asks for more. */
#pragma omp parallel num_threads(2)
            {
#pragma omp single
                s = la_attention_backward(ctx, &p, &q.t, &k.t, &v.t, &out.t, &dout.t, sigmoid ? NULL : &lse.t, &dq.t,
                                          &dk.t, &dv.t);
            }
        } else {
            s = la_attention_backward(ctx, &p, &q.t, &k.t, &v.t, &out.t, &dout.t, sigmoid ? NULL : &lse.t, &dq.t,
                                      &dk.t, &dv.t);
        }
        tu_check(s == LA_OK, "%s [%s]: status %s (%s)", c->name, la_simd_name(levels[li]), la_status_name(s),
                 la_last_error());
        if (s != LA_OK) continue;
        struct {
            const char *n;
            const buf *t;
            const double *want;
            const bool *blind;
            int64_t heads;
            const int32_t *cu;
            int64_t L;
        } outs[3] = {{"dq", &dq, dq_ref, q_blind, H, cu_q, c->Lq},
                     {"dk", &dk, dk_ref, k_blind, Hkv, cu_k, c->Lk},
                     {"dv", &dv, dv_ref, k_blind, Hkv, cu_k, c->Lk}};
        for (int o = 0; o < 3; o++) {
            cmp_result r;
            compare(c, outs[o].t, outs[o].want, outs[o].blind, outs[o].heads, outs[o].cu, nseq, outs[o].L, &r);
            /* see tolerance(); blind rows must be exactly 0, not poison */
            tu_check(padding_untouched(outs[o].t), "%s [%s] %s: wrote outside its view", c->name,
                     la_simd_name(levels[li]), outs[o].n);
            tu_check(r.worst <= tol && r.bad_zero == 0,
                     "%s [%s] %s: max error %.3g of scale %.3g (tolerance %.1g), %lld elements of blind rows not 0",
                     c->name, la_simd_name(levels[li]), outs[o].n, r.worst, r.scale, tol, (long long)r.bad_zero);
        }
    }
    la_context_destroy(ctx);
    free(q_blind), free(k_blind);
    free(dq_ref), free(dk_ref), free(dv_ref), free(hq), free(hdo), free(ho), free(hdq), free(hk), free(hv);
    free(hdk), free(hdv), free(hlse);
    drop(&q), drop(&k), drop(&v), drop(&dout), drop(&out), drop(&lse), drop(&dq), drop(&dk), drop(&dv);
}

/* ---- bad inputs: each fails with its status and leaves dq, dk, dv alone ---- */

static void bad_inputs(uint64_t *rng) {
    const int64_t B = 2, L = 9, H = 4, Hkv = 2, D = 16;
    int64_t qs[4] = {B, L, H, D}, ks[4] = {B, L, Hkv, D}, ls[3] = {B, L, H};
    buf q = tu_buf_new(LA_F32, 4, qs, false, false), k = tu_buf_new(LA_F32, 4, ks, false, false), v = tu_buf_new(LA_F32, 4, ks, false, false);
    buf out = tu_buf_new(LA_F32, 4, qs, false, false), dout = tu_buf_new(LA_F32, 4, qs, false, false), lse = tu_buf_new(LA_F32, 3, ls, false, false);
    buf dq = tu_buf_new(LA_F32, 4, qs, false, false), dk = tu_buf_new(LA_F32, 4, ks, false, false), dv = tu_buf_new(LA_F32, 4, ks, false, false);
    buf *ins[] = {&q, &k, &v, &out, &dout, &lse};
    for (int i = 0; i < 6; i++) tu_fill(rng, ins[i]->t.data, LA_F32, (int64_t)ins[i]->elems, -1, 1);
    la_context *ctx;
    la_context_create(&ctx, 2);
    la_attention_params p = la_attention_params_default(), sig = p, causal_wr = p, bad_cu = p;
    sig.score = LA_SCORE_SIGMOID;
    causal_wr.causal = 1;
    causal_wr.window_right = 2;
    int32_t cu[3] = {0, 5, 3};
    bad_cu.cu_seqlens_q = bad_cu.cu_seqlens_k = cu;
    bad_cu.num_seqs = 2;

    la_tensor dq_heads = dq.t, dk_bf16 = dk.t, dout_short = dout.t, out_f16 = out.t, lse_short = lse.t,
              dv_overlap = dv.t, q_d12 = q.t, k_d12 = k.t, v_d12 = v.t, dk_nodata = dk.t;
    dq_heads.shape[2] = 2;
    dq_heads.stride[1] = 2 * D; /* a consistent contiguous view with the wrong head count */
    dq_heads.stride[0] = L * 2 * D;
    dk_bf16.dtype = LA_BF16;
    dout_short.shape[1] = L - 1;
    out_f16.dtype = LA_F16;
    lse_short.shape[2] = H - 1;
    dv_overlap.stride[2] = D / 2;
    q_d12.shape[3] = k_d12.shape[3] = v_d12.shape[3] = 12;
    dk_nodata.data = NULL;
    /* the same memory as a packed varlen batch [B * L, heads, D] */
    la_tensor q3 = la_tensor_contiguous(q.t.data, LA_F32, 3, (int64_t[]){B * L, H, D}), o3 = q3, do3 = q3, dq3 = q3;
    la_tensor k3 = la_tensor_contiguous(k.t.data, LA_F32, 3, (int64_t[]){B * L, Hkv, D}), v3 = k3, dk3 = k3, dv3 = k3;
    la_tensor lse3 = la_tensor_contiguous(lse.t.data, LA_F32, 2, (int64_t[]){B * L, H});
    v3.data = v.t.data, o3.data = out.t.data, do3.data = dout.t.data;
    dq3.data = dq.t.data, dk3.data = dk.t.data, dv3.data = dv.t.data;
    uint8_t small_ws[64];

    struct {
        const char *what;
        la_context *ctx;
        const la_attention_params *p;
        const la_tensor *q, *k, *v, *out, *dout, *lse;
        la_tensor *dq, *dk, *dv;
        la_status want;
        bool small_workspace;
    } cases[] = {
        {"lse missing with softmax", ctx, &p, &q.t, &k.t, &v.t, &out.t, &dout.t, NULL, &dq.t, &dk.t, &dv.t, LA_ERR_NULL},
        {"lse given with sigmoid", ctx, &sig, &q.t, &k.t, &v.t, &out.t, &dout.t, &lse.t, &dq.t, &dk.t, &dv.t, LA_ERR_ARGUMENT},
        {"dq with the wrong head count", ctx, &p, &q.t, &k.t, &v.t, &out.t, &dout.t, &lse.t, &dq_heads, &dk.t, &dv.t, LA_ERR_SHAPE},
        {"dk bf16 for f32 inputs", ctx, &p, &q.t, &k.t, &v.t, &out.t, &dout.t, &lse.t, &dq.t, &dk_bf16, &dv.t, LA_ERR_DTYPE},
        {"dout shorter than q", ctx, &p, &q.t, &k.t, &v.t, &out.t, &dout_short, &lse.t, &dq.t, &dk.t, &dv.t, LA_ERR_SHAPE},
        {"dq NULL", ctx, &p, &q.t, &k.t, &v.t, &out.t, &dout.t, &lse.t, NULL, &dk.t, &dv.t, LA_ERR_NULL},
        {"ctx NULL", NULL, &p, &q.t, &k.t, &v.t, &out.t, &dout.t, &lse.t, &dq.t, &dk.t, &dv.t, LA_ERR_NULL},
        {"params NULL", ctx, NULL, &q.t, &k.t, &v.t, &out.t, &dout.t, &lse.t, &dq.t, &dk.t, &dv.t, LA_ERR_NULL},
        {"causal with window_right 2", ctx, &causal_wr, &q.t, &k.t, &v.t, &out.t, &dout.t, &lse.t, &dq.t, &dk.t, &dv.t, LA_ERR_ARGUMENT},
        {"out f16 for f32 inputs", ctx, &p, &q.t, &k.t, &v.t, &out_f16, &dout.t, &lse.t, &dq.t, &dk.t, &dv.t, LA_ERR_DTYPE},
        {"lse with too few heads", ctx, &p, &q.t, &k.t, &v.t, &out.t, &dout.t, &lse_short, &dq.t, &dk.t, &dv.t, LA_ERR_SHAPE},
        {"dv heads overlapping", ctx, &p, &q.t, &k.t, &v.t, &out.t, &dout.t, &lse.t, &dq.t, &dk.t, &dv_overlap, LA_ERR_STRIDE},
        {"head_dim 12", ctx, &p, &q_d12, &k_d12, &v_d12, &out.t, &dout.t, &lse.t, &dq.t, &dk.t, &dv.t, LA_ERR_UNSUPPORTED},
        {"dk data NULL", ctx, &p, &q.t, &k.t, &v.t, &out.t, &dout.t, &lse.t, &dq.t, &dk_nodata, &dv.t, LA_ERR_NULL},
        {"cu_seqlens not monotone", ctx, &bad_cu, &q3, &k3, &v3, &o3, &do3, &lse3, &dq3, &dk3, &dv3, LA_ERR_SEQLENS},
        {"lent workspace too small", ctx, &p, &q.t, &k.t, &v.t, &out.t, &dout.t, &lse.t, &dq.t, &dk.t, &dv.t, LA_ERR_WORKSPACE, true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tu_poison(dq.t.data, LA_F32, (int64_t)dq.elems);
        tu_poison(dk.t.data, LA_F32, (int64_t)dk.elems);
        tu_poison(dv.t.data, LA_F32, (int64_t)dv.elems);
        if (cases[i].small_workspace) la_context_set_workspace(ctx, small_ws, sizeof small_ws);
        la_status s = la_attention_backward(cases[i].ctx, cases[i].p, cases[i].q, cases[i].k, cases[i].v, cases[i].out,
                                            cases[i].dout, cases[i].lse, cases[i].dq, cases[i].dk, cases[i].dv);
        char msg[256];
        snprintf(msg, sizeof msg, "%s", la_last_error());
        if (cases[i].small_workspace) la_context_set_workspace(ctx, NULL, 0);
        tu_check(s == cases[i].want && msg[0] != 0, "bad input '%s': got %s, want %s (%s)", cases[i].what,
                 la_status_name(s), la_status_name(cases[i].want), msg);
        tu_check(still_poisoned(&dq) && still_poisoned(&dk) && still_poisoned(&dv),
                 "bad input '%s': dq, dk or dv was written", cases[i].what);
    }
    la_context_destroy(ctx);
    buf *all[] = {&q, &k, &v, &out, &dout, &lse, &dq, &dk, &dv};
    for (int i = 0; i < 9; i++) drop(all[i]);
}

int main(void) {
    quick = getenv("LONGATTN_TEST_QUICK") && atoi(getenv("LONGATTN_TEST_QUICK")) != 0;
    uint64_t rng = tu_seed();
    bad_inputs(&rng);

    la_attention_params def = la_attention_params_default(), causal = def, window = def, window_causal = def,
                        sinks = def, softcap = def, sigmoid = def, everything = def, scaled = def;
    causal.causal = 1;
    window.window_left = 20;
    window.window_right = 7;
    window_causal.causal = 1;
    window_causal.window_left = 5;
    sinks.causal = 1;
    sinks.window_left = 16;
    sinks.sinks = 4;
    softcap.softcap = 2.5f;
    sigmoid.score = LA_SCORE_SIGMOID;
    sigmoid.sigmoid_bias = -2.0f;
    everything.causal = 1;
    everything.window_left = 40;
    everything.sinks = 3;
    everything.softcap = 4.0f;
    scaled.scale = 0.3f;

    const la_dtype F = LA_F32, BF = LA_BF16, HF = LA_F16;
    /* name, B, Lq, Lk, nseq, lens_q, lens_k, H, Hkv, D, dtype, out dtype, grad dtype, strided, alibi, threads, params */
    bw_case cases[] = {
        {"L=1 D=8", 1, 1, 1, 0, {0}, {0}, 2, 1, 8, F, F, F, false, false, 2, def},
        {"L=7 D=40 strided", 2, 7, 7, 0, {0}, {0}, 3, 3, 40, F, F, F, true, false, 2, def},
        {"L=63 D=64 causal GQA4", 1, 63, 63, 0, {0}, {0}, 4, 1, 64, F, F, F, false, false, 2, causal},
        {"L=65 D=80 window", 1, 65, 65, 0, {0}, {0}, 2, 2, 80, F, F, F, false, false, 3, window},
        {"Lq=65 Lk=130 D=128 causal", 1, 65, 130, 0, {0}, {0}, 2, 1, 128, F, F, F, false, false, 2, causal},
        {"Lq=130 Lk=65 D=64 causal (rows see nothing)", 1, 130, 65, 0, {0}, {0}, 2, 2, 64, F, F, F, false, false, 2, causal},
        {"Lq=7 Lk=100 causal window (keys seen by none)", 1, 7, 100, 0, {0}, {0}, 2, 1, 32, F, F, F, false, false, 2, window_causal},
        {"L=100 sinks", 1, 100, 100, 0, {0}, {0}, 2, 1, 48, F, F, F, false, false, 2, sinks},
        {"L=90 softcap", 1, 90, 90, 0, {0}, {0}, 2, 2, 64, F, F, F, false, false, 2, softcap},
        {"L=77 alibi causal", 1, 77, 77, 0, {0}, {0}, 4, 2, 32, F, F, F, false, true, 2, causal},
        {"L=70 sigmoid", 1, 70, 70, 0, {0}, {0}, 2, 1, 64, F, F, F, false, false, 2, sigmoid},
        {"L=80 sigmoid causal alibi", 1, 80, 90, 0, {0}, {0}, 2, 2, 40, F, F, F, false, true, 2, sigmoid},
        {"everything bf16", 1, 150, 140, 0, {0}, {0}, 8, 1, 64, BF, BF, BF, false, true, 2, everything},
        {"scale 0.3 f16 grads f32", 2, 33, 47, 0, {0}, {0}, 4, 4, 16, HF, HF, F, true, false, 2, scaled},
        {"bf16 out f32 grads bf16 causal", 1, 129, 129, 0, {0}, {0}, 2, 1, 128, BF, F, BF, false, false, 2, causal},
        {"f16 GQA8 causal", 1, 200, 200, 0, {0}, {0}, 8, 1, 64, HF, F, HF, false, false, 3, causal},
        {"D=256", 1, 70, 70, 0, {0}, {0}, 2, 1, 256, F, F, F, false, false, 2, def},
        {"D=512 bf16 strided", 1, 40, 66, 0, {0}, {0}, 2, 2, 512, BF, BF, F, true, false, 2, def},
        {"varlen with empty sequences", 0, 0, 0, 5, {5, 0, 70, 3, 0}, {9, 0, 40, 0, 12}, 4, 2, 32, F, F, F, false, false, 2, causal},
        {"varlen strided bf16 window", 0, 0, 0, 3, {64, 1, 100}, {80, 7, 65}, 2, 1, 72, BF, BF, BF, true, false, 2, window},
        {"varlen sigmoid f16", 0, 0, 0, 2, {30, 66}, {31, 66}, 2, 2, 24, HF, F, F, false, true, 2, sigmoid},
        {"dense Lk=0 (no keys)", 1, 5, 0, 0, {0}, {0}, 2, 1, 16, F, F, F, false, false, 2, def},
        {"L=1000 D=64 GQA4 causal", 1, 1000, 1000, 0, {0}, {0}, 4, 1, 64, F, F, F, false, false, 2, causal},
        {"L=1000 D=128 bf16", 1, 1000, 1000, 0, {0}, {0}, 2, 2, 128, BF, BF, BF, false, false, 2, def},
        {"Lq=3300 Lk=3200 D=8 GQA2 causal sinks (query chunks)", 1, 3300, 3200, 0, {0}, {0}, 2, 1, 8, BF, BF, F, false, false, 3, sinks},
        {"L=4097 D=64", 1, 4097, 4097, 0, {0}, {0}, 1, 1, 64, F, F, F, false, false, 2, def},
    };
    /* The library's own forward feeding the backward: its out and lse
     * conventions (natural log, -inf for a row that sees nothing) must be
     * what the backward expects. */
    bw_case chained[3] = {cases[5], cases[12], cases[18]};
    char chained_names[3][96];
    for (int i = 0; i < 3; i++) {
        snprintf(chained_names[i], sizeof chained_names[i], "%s, out and lse from la_attention_forward",
                 chained[i].name);
        chained[i].name = chained_names[i];
        chained[i].library_forward = true;
        run_case(&rng, &chained[i]);
    }
    bw_case nested = cases[4];
    nested.name = "called inside the caller's parallel region";
    nested.threads = 3;
    nested.nested = true;
    run_case(&rng, &nested);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bw_case c = cases[i];
        if (quick && c.Lq * c.Lk * c.D > 100000000) { /* the sanitizer run: shrink the big shapes */
            c.Lq = c.Lq * 300 / c.Lk;
            c.Lk = 300;
        }
        run_case(&rng, &c);
    }
    /* Random combinations of every option on small shapes, to reach the
     * interactions the list above does not name (sinks past Lk, zero-width
     * windows, a window right of the diagonal with sinks, ...). */
    const int64_t dims[] = {8, 16, 24, 40, 64, 96, 136};
    const la_dtype dtypes[] = {F, BF, HF};
    char names[40][64];
    for (int i = 0; i < (quick ? 12 : 40); i++) {
        bw_case c;
        memset(&c, 0, sizeof c);
        snprintf(names[i], sizeof names[i], "random case %d", i);
        c.name = names[i];
        c.B = tu_randint(&rng, 1, 2);
        c.Lq = tu_randint(&rng, 1, 220);
        c.Lk = tu_randint(&rng, 1, 220);
        c.Hkv = tu_randint(&rng, 1, 2);
        c.H = c.Hkv * tu_randint(&rng, 1, 3);
        c.D = dims[tu_randint(&rng, 0, 6)];
        c.dt = dtypes[tu_randint(&rng, 0, 2)];
        c.out_dt = tu_randint(&rng, 0, 1) ? c.dt : F;
        c.grad_dt = tu_randint(&rng, 0, 1) ? c.dt : F;
        c.strided = tu_randint(&rng, 0, 1);
        c.dout_f32 = tu_randint(&rng, 0, 1);
        c.alibi = tu_randint(&rng, 0, 3) == 0;
        c.threads = (int)tu_randint(&rng, 1, 3);
        c.p = def;
        c.p.causal = tu_randint(&rng, 0, 1);
        c.p.window_left = tu_randint(&rng, 0, 2) ? -1 : tu_randint(&rng, 0, 80);
        if (!c.p.causal) c.p.window_right = tu_randint(&rng, 0, 2) ? -1 : tu_randint(&rng, 0, 80);
        c.p.sinks = tu_randint(&rng, 0, 2) ? 0 : tu_randint(&rng, 1, 250);
        c.p.softcap = tu_randint(&rng, 0, 3) ? 0.0f : (float)tu_uniform(&rng, 0.5, 5);
        c.p.score = tu_randint(&rng, 0, 3) ? LA_SCORE_SOFTMAX : LA_SCORE_SIGMOID;
        c.p.sigmoid_bias = (float)tu_uniform(&rng, -3, 1);
        c.p.scale = tu_randint(&rng, 0, 1) ? 0.0f : (float)tu_uniform(&rng, 0.05, 0.5);
        run_case(&rng, &c);
    }
    return tu_finish();
}
