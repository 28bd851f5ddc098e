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
 * with scalar decays A is Q~ K~^T masked and scaled afterwards, with
 * per-channel decays each A[i][j] is a dot product with the running factor
 * (O(n^2 Dk) multiplies, no exp). Normalisation appends a column of ones to
 * V, so the denominator is the state's column Dv and O's column Dv.
 * Items (sequence, head) are spread over the threads; each has its own
 * scratch in the workspace. */
#include "cpu/linear/linear_common.h"

/* Per-thread scratch, in floats. Chunked: S, Q, K, K^T, V, A, O, the decay
 * rows and two running vectors. Recurrent: the same with one-token chunks. */
static size_t scratch_floats(const lin_dims *d) {
    return (size_t)(d->Dk * d->Dvp + 3 * d->C * d->Dkp + d->Dkp * d->Cp + 2 * d->C * d->Dvp + d->C * d->Cp +
                    2 * d->Dkp + d->C);
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
    float *S, *Q, *K, *KT, *V, *A, *O, *dec, *run, *e, *a;
} fwd_scratch;

static fwd_scratch scratch_at(float *base, const lin_dims *d) {
    fwd_scratch w;
    w.S = base;
    w.Q = w.S + d->Dk * d->Dvp;
    w.K = w.Q + d->C * d->Dkp;
    w.KT = w.K + d->C * d->Dkp;
    w.V = w.KT + d->Dkp * d->Cp;
    w.A = w.V + d->C * d->Dvp;
    w.O = w.A + d->C * d->Cp;
    w.dec = w.O + d->C * d->Dvp;
    w.run = w.dec + d->C * d->Dkp;
    w.e = w.run + d->Dkp;
    w.a = w.e + d->Dkp;
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

static void chunked_item(const la_linear_problem *p, const lin_dims *dm, fwd_scratch *w, int64_t b, int64_t h) {
    const int64_t bt = p->cu ? 0 : b, hk = h / (p->H / p->Hkv), Dk = dm->Dk, Dkp = dm->Dkp, Dvp = dm->Dvp,
                  Cp = dm->Cp;
    const bool channel = lin_channel(p);
    int64_t t0, len;
    la_linear_seq(p, b, &t0, &len);
    lin_load_state(w->S, &p->state_in, dm, b, h);
    for (int64_t c0 = 0; c0 < len; c0 += dm->C) {
        const int64_t n = len - c0 < dm->C ? len - c0 : dm->C;
        for (int64_t i = 0; i < n; i++) {
            const int64_t t = t0 + c0 + i;
            lin_load_feature(w->Q + i * Dkp, la_attn_at(&p->q, bt, t, h), p->q.dtype, Dk, Dkp, p->feature, p->scale);
            lin_load_feature(w->K + i * Dkp, la_attn_at(&p->k, bt, t, hk), p->k.dtype, Dk, Dkp, p->feature, 1.0f);
            lin_load_value(w->V + i * Dvp, p, dm, bt, t, hk);
            if (channel) lin_decay_row(w->dec + i * Dkp, p, dm, bt, t, h);
            else w->a[i] = lin_decay_scalar(p, bt, t, h);
        }
        /* A: the intra-chunk scores, decayed and causally masked */
        if (channel) {
            memset(w->A, 0, (size_t)(n * Cp) * sizeof(float));
            for (int64_t j = 0; j < n; j++) {
                for (int64_t d = 0; d < Dkp; d++) w->e[d] = 1.0f;
                for (int64_t i = j; i < n; i++) {
                    if (i > j) lin_mul(w->e, w->dec + i * Dkp, Dkp);
                    w->A[i * Cp + j] = lin_dot3(w->Q + i * Dkp, w->e, w->K + j * Dkp, Dkp);
                }
            }
        } else {
            lin_transpose(w->KT, Cp, w->K, Dkp, n, Dk);
            tg_gemm(n, Cp, Dk, w->Q, Dkp, 1, w->KT, Cp, w->A, Cp, false);
            lin_mask_scalar(w->A, Cp, w->a, n);
        }
        tg_gemm(n, Dvp, n, w->A, Cp, 1, w->V, Dvp, w->O, Dvp, false);
        /* the state's contribution: Q~ rows scaled by the decay since the chunk began */
        if (channel) {
            for (int64_t d = 0; d < Dkp; d++) w->run[d] = 1.0f;
            for (int64_t i = 0; i < n; i++) {
                lin_mul(w->run, w->dec + i * Dkp, Dkp);
                lin_mul(w->Q + i * Dkp, w->run, Dkp);
            }
        } else {
            float pre = 1.0f;
            for (int64_t i = 0; i < n; i++) {
                pre *= w->a[i];
                lin_scale(w->Q + i * Dkp, Dkp, pre);
            }
        }
        tg_gemm(n, Dvp, Dk, w->Q, Dkp, 1, w->S, Dvp, w->O, Dvp, true);
        for (int64_t i = 0; i < n; i++) store_out(p, dm, w->O + i * Dvp, bt, t0 + c0 + i, h);
        /* S = (decay over the chunk) S + (K~ decayed to the chunk's end)^T V */
        if (channel) {
            for (int64_t d = 0; d < Dkp; d++) w->run[d] = 1.0f;
            for (int64_t j = n - 1; j >= 0; j--) {
                lin_mul(w->K + j * Dkp, w->run, Dkp);
                lin_mul(w->run, w->dec + j * Dkp, Dkp);
            }
            for (int64_t d = 0; d < Dk; d++) lin_scale(w->S + d * Dvp, Dvp, w->run[d]);
        } else {
            float suf = 1.0f;
            for (int64_t j = n - 1; j >= 0; j--) {
                lin_scale(w->K + j * Dkp, Dkp, suf);
                suf *= w->a[j];
            }
            if (suf != 1.0f)
                for (int64_t d = 0; d < Dk; d++) lin_scale(w->S + d * Dvp, Dvp, suf);
        }
        tg_gemm(Dk, Dvp, n, w->K, 1, Dkp, w->V, Dvp, w->S, Dvp, true);
    }
    lin_store_state(&p->state_out, w->S, dm, b, h);
}

/* Token by token: S = a . S + k~ v^T, o = q~ S. */
static void recurrent_item(const la_linear_problem *p, const lin_dims *dm, fwd_scratch *w, int64_t b, int64_t h) {
    const int64_t bt = p->cu ? 0 : b, hk = h / (p->H / p->Hkv), Dk = dm->Dk, Dkp = dm->Dkp, Dvp = dm->Dvp;
    const bool channel = lin_channel(p);
    int64_t t0, len;
    la_linear_seq(p, b, &t0, &len);
    lin_load_state(w->S, &p->state_in, dm, b, h);
    float *q = w->Q, *k = w->K, *v = w->V, *o = w->O, *dec = w->dec;
    for (int64_t t = t0; t < t0 + len; t++) {
        lin_load_feature(q, la_attn_at(&p->q, bt, t, h), p->q.dtype, Dk, Dkp, p->feature, p->scale);
        lin_load_feature(k, la_attn_at(&p->k, bt, t, hk), p->k.dtype, Dk, Dkp, p->feature, 1.0f);
        lin_load_value(v, p, dm, bt, t, hk);
        float a = 1.0f;
        if (channel) lin_decay_row(dec, p, dm, bt, t, h);
        else a = lin_decay_scalar(p, bt, t, h);
        for (int64_t j = 0; j < Dvp; j += LA_VL) vf_store(o + j, vf_set1(0));
        for (int64_t d = 0; d < Dk; d++) {
            float *row = w->S + d * Dvp;
            const vf ad = vf_set1(channel ? dec[d] : a), kd = vf_set1(k[d]), qd = vf_set1(q[d]);
            for (int64_t j = 0; j < Dvp; j += LA_VL) {
                vf s = vf_fma(vf_load(row + j), ad, kd * vf_load(v + j));
                vf_store(row + j, s);
                vf_store(o + j, vf_fma(qd, s, vf_load(o + j)));
            }
        }
        store_out(p, dm, o, bt, t, h);
    }
    lin_store_state(&p->state_out, w->S, dm, b, h);
}

la_status LA_ISA_FN(la_cpu_linear_forward_kernel)(const la_linear_problem *p, void *mem) {
    const lin_dims dm = lin_dims_of(p, chunk_of(p));
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
