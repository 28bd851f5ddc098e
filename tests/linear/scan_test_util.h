/* Helpers the state-space, convolution and Aaren test programs share:
 * batches of sequences (dense [B, L, ..] or varlen packed [T, ..]),
 * contiguous test tensors, reading a sequence's rows out as float64 for the
 * references, comparing results against them, and the bad-input verdict
 * (status and a message). */
#ifndef LA_SCAN_TEST_UTIL_H
#define LA_SCAN_TEST_UTIL_H

#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ST_MAX_SEQS 6

static inline bool st_quick(void) {
    const char *q = getenv("LONGATTN_TEST_QUICK");
    return q && atoi(q) != 0;
}

/* A batch: dense (nseq sequences of L tokens) or varlen (lens, packed). */
typedef struct {
    bool varlen;
    int nseq;
    int64_t L;                    /* dense: tokens per sequence */
    int32_t cu[ST_MAX_SEQS + 1];  /* varlen */
} st_batch;

static inline st_batch st_dense(int nseq, int64_t L) {
    st_batch b = {.varlen = false, .nseq = nseq, .L = L};
    return b;
}

static inline st_batch st_varlen(int nseq, const int32_t *lens) {
    st_batch b = {.varlen = true, .nseq = nseq};
    for (int i = 0; i < nseq; i++) b.cu[i + 1] = b.cu[i] + lens[i];
    return b;
}

static inline int64_t st_len(const st_batch *b, int s) { return b->varlen ? b->cu[s + 1] - b->cu[s] : b->L; }
static inline int64_t st_tokens(const st_batch *b) { return b->varlen ? b->cu[b->nseq] : (int64_t)b->nseq * b->L; }

/* A token tensor [B, L, rest...] or [T, rest...] (nrest trailing dims). */
static inline tu_buf st_tok(const st_batch *b, la_dtype dt, int nrest, const int64_t *rest) {
    int64_t shape[LA_MAX_DIMS];
    int nd = 0;
    if (b->varlen) shape[nd++] = b->cu[b->nseq];
    else shape[nd++] = b->nseq, shape[nd++] = b->L;
    for (int i = 0; i < nrest; i++) shape[nd++] = rest[i];
    return tu_buf_new(dt, nd, shape, false, false);
}

static inline tu_buf st_plain(la_dtype dt, int nd, const int64_t *shape) {
    return tu_buf_new(dt, nd, shape, false, false);
}

static inline void st_fill(uint64_t *rng, tu_buf *b, double lo, double hi) {
    tu_fill(rng, b->t.data, b->t.dtype, la_tensor_numel(&b->t), lo, hi);
}

/* The leading index of token t of sequence s into idx; returns how many. */
static inline int st_lead(const st_batch *b, int s, int64_t t, int64_t *idx) {
    if (b->varlen) {
        idx[0] = b->cu[s] + t;
        return 1;
    }
    idx[0] = s, idx[1] = t;
    return 2;
}

/* Sequence s of a token tensor as float64 [len][rest elements]. */
static inline double *st_read_seq(const st_batch *b, const tu_buf *x, int s, int nrest) {
    const int64_t len = st_len(b, s);
    int64_t per = 1;
    const int lead = b->varlen ? 1 : 2;
    for (int i = 0; i < nrest; i++) per *= x->t.shape[lead + i];
    double *out = tu_alloc(sizeof(double) * (size_t)(len * per + 1));
    int64_t idx[LA_MAX_DIMS];
    for (int64_t t = 0; t < len; t++)
        for (int64_t e = 0; e < per; e++) {
            int nl = st_lead(b, s, t, idx);
            int64_t rest = e;
            for (int i = nrest - 1; i >= 0; i--) {
                idx[nl + i] = rest % x->t.shape[lead + i];
                rest /= x->t.shape[lead + i];
            }
            out[t * per + e] = tu_get(&x->t, idx);
        }
    return out;
}

/* All elements of a plain tensor (parameters, states) as float64, row-major;
 * `first` fixes dim 0 when >= 0 (one sequence's state). */
static inline double *st_read_plain(const tu_buf *x, int64_t first) {
    const int nd = x->t.ndim;
    int64_t n = 1;
    for (int i = first >= 0 ? 1 : 0; i < nd; i++) n *= x->t.shape[i];
    double *out = tu_alloc(sizeof(double) * (size_t)(n + 1));
    int64_t idx[LA_MAX_DIMS];
    for (int64_t e = 0; e < n; e++) {
        int64_t rest = e;
        for (int i = nd - 1; i >= (first >= 0 ? 1 : 0); i--) {
            idx[i] = rest % x->t.shape[i];
            rest /= x->t.shape[i];
        }
        if (first >= 0) idx[0] = first;
        out[e] = tu_get(&x->t, idx);
    }
    return out;
}

/* Worst |got - want| / (atol + rtol |want|) over sequence s of a token tensor
 * (<= 1 passes; INFINITY for a NaN). */
static inline double st_err_seq(const st_batch *b, const tu_buf *x, int s, int nrest, const double *want, double atol,
                                double rtol) {
    double *got = st_read_seq(b, x, s, nrest);
    const int lead = b->varlen ? 1 : 2;
    int64_t per = 1;
    for (int i = 0; i < nrest; i++) per *= x->t.shape[lead + i];
    double worst = 0;
    for (int64_t i = 0; i < st_len(b, s) * per; i++) {
        const double e = got[i] == want[i] ? 0 : fabs(got[i] - want[i]) / (atol + rtol * fabs(want[i])); /* equal infinities pass */
        if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
    }
    free(got);
    return worst;
}

static inline double st_err_plain(const tu_buf *x, int64_t first, const double *want, double atol, double rtol) {
    double *got = st_read_plain(x, first);
    int64_t n = 1;
    for (int i = first >= 0 ? 1 : 0; i < x->t.ndim; i++) n *= x->t.shape[i];
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        const double e = got[i] == want[i] ? 0 : fabs(got[i] - want[i]) / (atol + rtol * fabs(want[i])); /* equal infinities pass */
        if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
    }
    free(got);
    return worst;
}

/* Copy sequence rows [t0, t1) of every sequence of a dense token tensor into
 * a new dense tensor (for two calls carrying the state). */
static inline tu_buf st_slice(const tu_buf *x, int64_t t0, int64_t t1) {
    int64_t shape[LA_MAX_DIMS];
    for (int i = 0; i < x->t.ndim; i++) shape[i] = x->t.shape[i];
    shape[1] = t1 - t0;
    tu_buf r = tu_buf_new(x->t.dtype, x->t.ndim, shape, false, false);
    int64_t per = 1;
    for (int i = 2; i < x->t.ndim; i++) per *= shape[i];
    const size_t es = la_dtype_size(x->t.dtype);
    for (int64_t b = 0; b < shape[0]; b++)
        memcpy((char *)r.t.data + (size_t)(b * shape[1] * per) * es,
               (const char *)x->t.data + (size_t)((b * x->t.shape[1] + t0) * per) * es, (size_t)(shape[1] * per) * es);
    return r;
}

/* Token t of every sequence of a dense token tensor as a [B, rest...] view (no copy). */
static inline la_tensor st_token_view(const tu_buf *x, int64_t t) {
    la_tensor v = x->t;
    const size_t es = la_dtype_size(x->t.dtype);
    v.data = (char *)x->t.data + (size_t)(t * x->t.stride[1]) * es;
    v.ndim = x->t.ndim - 1;
    v.shape[0] = x->t.shape[0], v.stride[0] = x->t.stride[0];
    for (int i = 1; i < v.ndim; i++) v.shape[i] = x->t.shape[i + 1], v.stride[i] = x->t.stride[i + 1];
    return v;
}

/* A rejected call: the status wanted and a message saying why. */
#define ST_EXPECT_BAD(call, want)                                                                              \
    do {                                                                                                       \
        la_clear_error();                                                                                      \
        la_status got_ = (call);                                                                               \
        tu_check(got_ == (want) && la_last_error()[0] != 0, "%s:%d %s returned %s, want %s (message \"%s\")", \
                 __FILE__, __LINE__, #call, la_status_name(got_), la_status_name(want), la_last_error());     \
    } while (0)

#endif
