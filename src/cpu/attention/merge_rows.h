/* The log-sum-exp merge of one row, written once for la_attention_merge's
 * kernel (merge_isa.c) and decode's merge of its key chunks (decode_isa.c).
 * Include from per-ISA kernel files, after isa.h.
 *
 * A part is a row x_i of D values with a log-scale s_i and a mass m_i:
 *   out = sum_i exp(s_i - M) x_i / Z,   lse = M + log Z,
 *   Z = sum_i exp(s_i - M) m_i,         M = max_i s_i.
 * An attention output and its lse is the part (x = out, s = lse, m = 1);
 * softmax partials over a key chunk, acc = sum_j exp(s_j - mx) v_j and
 * l = sum_j exp(s_j - mx), are the part (x = acc, s = mx, m = l), so decode
 * merges its chunks without normalising each one first. Shifting by M keeps
 * every weight in [0, 1]: no overflow whatever the lses.
 *
 * Special log-scales: a part with s = -inf saw no key and is skipped (its
 * x is not read, so NaN there does not leak); when every part has -inf the
 * row is out 0, lse -inf. A NaN or +inf s makes the row out NaN and lse NaN:
 * the merge is undefined and says so rather than guessing. */
#ifndef LA_CPU_MERGE_ROWS_H
#define LA_CPU_MERGE_ROWS_H

#include "cpu/isa.h"

typedef struct {
    const char *x;   /* D values of dtype */
    la_dtype dtype;
    float log_scale; /* s */
    float mass;      /* m */
} merge_part;

/* acc[0..D) = w * x (first part) or acc + w * x, for one storage dtype
 * (a constant after inlining, so each dtype gets its own loop). */
static inline __attribute__((always_inline)) void merge_axpy(float *acc, const char *x, const la_dtype t, float w,
                                                             int64_t D, bool first) {
    const vf wv = vf_set1(w);
    const int64_t es = (int64_t)la_dtype_size(t);
    int64_t d = 0;
    if (first) {
        for (; d + LA_VL <= D; d += LA_VL) vf_store(acc + d, wv * vf_load_any(x + d * es, t));
        for (; d < D; d++) acc[d] = w * la_load_f32(x, t, d);
    } else {
        for (; d + LA_VL <= D; d += LA_VL) vf_store(acc + d, vf_fma(wv, vf_load_any(x + d * es, t), vf_load(acc + d)));
        for (; d < D; d++) acc[d] += w * la_load_f32(x, t, d);
    }
}

static inline void merge_add_part(float *acc, const merge_part *pt, float w, int64_t D, bool first) {
    switch (pt->dtype) {
    case LA_BF16: merge_axpy(acc, pt->x, LA_BF16, w, D, first); break;
    case LA_F16: merge_axpy(acc, pt->x, LA_F16, w, D, first); break;
    default: merge_axpy(acc, pt->x, LA_F32, w, D, first); break;
    }
}

static inline void merge_fill(float *acc, float x, int64_t D) {
    for (int64_t d = 0; d < D; d++) acc[d] = x;
}

/* acc[0..D) = the merge of parts[0..n) (n >= 1); returns the row's lse.
 * sum_only: out = sum_i x_i (partials of sigmoid attention, which has no
 * normaliser); log-scales and masses are ignored and 0 is returned. */
static inline float merge_row(const merge_part *parts, int64_t n, int64_t D, bool sum_only, float *acc) {
    if (sum_only) {
        for (int64_t i = 0; i < n; i++) merge_add_part(acc, &parts[i], 1.0f, D, i == 0);
        return 0.0f;
    }
    float M = -INFINITY;
    bool undefined = false;
    for (int64_t i = 0; i < n; i++) {
        const float s = parts[i].log_scale;
        undefined |= isnan(s);
        M = s > M ? s : M;
    }
    if (undefined || M == INFINITY) {
        merge_fill(acc, NAN, D);
        return NAN;
    }
    if (M == -INFINITY) {
        merge_fill(acc, 0.0f, D);
        return -INFINITY;
    }
    float Z = 0;
    bool first = true;
    for (int64_t i = 0; i < n; i++) {
        if (parts[i].log_scale == -INFINITY) continue;
        const float w = expf(parts[i].log_scale - M);
        Z += w * parts[i].mass;
        merge_add_part(acc, &parts[i], w, D, first);
        first = false;
    }
    const float inv = 1.0f / Z; /* Z >= the mass of the part at M, > 0 */
    int64_t d = 0;
    for (; d + LA_VL <= D; d += LA_VL) vf_store(acc + d, vf_load(acc + d) * inv);
    for (; d < D; d++) acc[d] *= inv;
    return M + logf(Z);
}

/* dst[0..D) = acc[0..D) in dtype t (rounded to nearest even). */
static inline void merge_store_row(char *dst, la_dtype t, const float *acc, int64_t D) {
    const int64_t es = (int64_t)la_dtype_size(t);
    int64_t d = 0;
    for (; d + LA_VL <= D; d += LA_VL) vf_store_any(dst + d * es, t, vf_load(acc + d));
    for (; d < D; d++) la_store_f32(dst, t, d, acc[d]);
}

/* Decode's chunks are items of one parallel loop; a group of rows is merged
 * by the thread that finishes its last chunk, not after a barrier: each
 * finished item counts itself in its group's counter, and the thread that
 * brings it to n sees every other item's stores (acquire-release on the
 * counter's chain of updates). The merge reads the chunks in their own
 * order whoever runs it, so results do not depend on the thread. */
static inline bool merge_group_done(int32_t *count, int32_t n) {
    return __atomic_add_fetch(count, 1, __ATOMIC_ACQ_REL) == n;
}
/* The same for k finished items counted at once (a thread's run of them). */
static inline bool merge_group_add(int32_t *count, int32_t k, int32_t n) {
    return __atomic_add_fetch(count, k, __ATOMIC_ACQ_REL) == n;
}

#endif
