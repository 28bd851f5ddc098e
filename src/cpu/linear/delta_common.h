/* Pieces the delta-rule kernels share (forward and backward): loading q and
 * k (L2-normalised by option), beta and the decay factor of a token, and
 * the recurrent step. Include from the per-ISA kernel files only.
 *
 * Rows are padded to multiples of LIN_PAD floats (linear_common.h) and the
 * padding is zero, so whole-vector loops over a row are exact. */
#ifndef LA_CPU_DELTA_COMMON_H
#define LA_CPU_DELTA_COMMON_H

#include "backend/delta_problem.h"
#include "cpu/linear/linear_common.h"

/* fla's l2norm: x / sqrt(sum x^2 + eps). */
#define DELTA_L2_EPS 1e-6f

typedef struct {
    int64_t C, Cp, Dk, Dkp, Dv, Dvp;
} delta_dims;

static inline delta_dims delta_dims_of(const la_delta_problem *p, int64_t C) {
    delta_dims d = {.C = C, .Cp = tg_round_up(C, LIN_PAD), .Dk = p->Dk, .Dkp = tg_round_up(p->Dk, LIN_PAD),
                    .Dv = p->Dv, .Dvp = tg_round_up(p->Dv, LIN_PAD)};
    return d;
}

/* dst[0..Dkp) = mul * x / sqrt(|x|^2 + eps) (or mul * x without l2norm),
 * zero padded; returns 1 / sqrt(|x|^2 + eps) (1 without l2norm). */
static inline float delta_load_qk(float *dst, const char *src, la_dtype t, int64_t Dk, int64_t Dkp, bool l2norm,
                                  float mul) {
    tg_load_row(dst, src, t, Dk, Dkp);
    float r = 1.0f;
    if (l2norm) r = 1.0f / sqrtf(lin_dot(dst, dst, Dkp) + DELTA_L2_EPS);
    if (r * mul != 1.0f) lin_scale(dst, Dkp, r * mul);
    return r;
}

static inline float delta_beta(const la_delta_problem *p, int64_t bt, int64_t t, int64_t h) {
    return la_load_f32(la_attn_at(&p->beta, bt, t, h), p->beta.dtype, 0);
}

/* The token's log decay (0 ungated). */
static inline float delta_log_decay(const la_delta_problem *p, int64_t bt, int64_t t, int64_t h) {
    return p->g.data ? *(const float *)la_attn_at(&p->g, bt, t, h) : 0.0f;
}

/* One token on S [Dk][Dvp] in place: S = a S; u = v - S^T k; S += beta k
 * u^T; o = S^T q (o NULL: not wanted). u [Dvp] is scratch and returns
 * u = v - (a S_prev)^T k. q carries the scale. */
static inline void delta_step(float *S, int64_t Dk, int64_t Dvp, const float *q, const float *k, const float *v,
                              float beta, float a, float *u, float *o) {
    for (int64_t j = 0; j < Dvp; j += LA_VL) vf_store(u + j, vf_load(v + j));
    const vf av = vf_set1(a);
    for (int64_t d = 0; d < Dk; d++) {
        float *row = S + d * Dvp;
        const vf kd = vf_set1(k[d]);
        for (int64_t j = 0; j < Dvp; j += LA_VL) {
            vf s = vf_load(row + j) * av;
            vf_store(row + j, s);
            vf_store(u + j, vf_load(u + j) - kd * s);
        }
    }
    if (o)
        for (int64_t j = 0; j < Dvp; j += LA_VL) vf_store(o + j, vf_set1(0));
    const vf bv = vf_set1(beta);
    for (int64_t d = 0; d < Dk; d++) {
        float *row = S + d * Dvp;
        const vf kb = vf_set1(k[d]) * bv, qd = vf_set1(o ? q[d] : 0.0f);
        for (int64_t j = 0; j < Dvp; j += LA_VL) {
            vf s = vf_fma(kb, vf_load(u + j), vf_load(row + j));
            vf_store(row + j, s);
            if (o) vf_store(o + j, vf_fma(qd, s, vf_load(o + j)));
        }
    }
}

/* S [Dk][Dvp] = the state of (sequence n, head h), or 0. */
static inline void delta_load_state(float *S, const la_linear_state *st, const delta_dims *dm, int64_t n,
                                    int64_t h) {
    for (int64_t i = 0; i < dm->Dk; i++) {
        float *row = S + i * dm->Dvp;
        memset(row, 0, (size_t)dm->Dvp * sizeof(float));
        if (st->data)
            memcpy(row, st->data + n * st->seq_stride + h * st->head_stride + i * st->row_stride,
                   (size_t)dm->Dv * sizeof(float));
    }
}

static inline void delta_store_state(const la_linear_state *st, const float *S, const delta_dims *dm, int64_t n,
                                     int64_t h) {
    if (!st->data) return;
    for (int64_t i = 0; i < dm->Dk; i++)
        memcpy(st->data + n * st->seq_stride + h * st->head_stride + i * st->row_stride, S + i * dm->Dvp,
               (size_t)dm->Dv * sizeof(float));
}

#endif
