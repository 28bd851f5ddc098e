/* Harness cases of the KV cache: decode through la_kv_cache_decode over
 * float or quantised pages (kvq_case.c), for `longattn bench kvquant`. */
#ifndef LA_KV_CASES_H
#define LA_KV_CASES_H

#include "harness.h"

typedef struct {
    const char *name;
    la_kv_quant quant; /* LA_KV_QUANT_NONE: dtype pages */
    la_dtype dtype;
    int64_t L, H, Hkv, D;
    int threads;
} kv_decode_spec;

harness_case *kv_decode_case(const kv_decode_spec *s);

/* Bound on the error of one score that int8 pages make by rounding the
 * query to int8 per key group of kg tokens (kvq_case.c says why), for
 * query row q (unscaled) against the n keys k read back, scores scale q.k. */
double kv_q8_score_error(const float *q, const float *k, int64_t n, int64_t D, int64_t kg, double scale);

/* f32, f16, q8 and q4 caches at each length, one series per cache type. */
typedef struct {
    const int64_t *L;
    int nL;
    int64_t H, Hkv, D;
} kv_decode_sweep;
void kv_decode_sweep_cases(harness_list *list, const kv_decode_sweep *s);

#endif
