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

/* How far la_kv_cache_decode's int8 queries (a quantised cache without
 * quant_exact_queries) may move one score of query row q (D wide, softmax
 * scale `scale`) over the keys k [n][D] read back from a cache of `levels`
 * code values (255 or 15): the kernel rounds qf_d = scale q_d s_d (s_d the
 * key group's channel scale) to int8 with sq = max_d |qf_d| / 127, so each
 * |qf_d - sq q8_d| <= sq / 2, and adds the errors' sum times the codes'
 * middle (levels / 2) back: a score moves by at most D (levels / 2) sq / 2.
 * s_d is at most the channel's read-back range over levels - 1 (the group's
 * true range exceeds it by at most half a step and the f16 rounding of the
 * pair; 2^-9 for that). Each softmax weight then moves by a factor within
 * e^(+-2 bound), the output by at most (e^(2 bound) - 1) times half its
 * values' spread, the log-sum-exp by the bound. */
double kvq_int8_query_bound(const float *q, const float *k, int64_t n, int64_t D, double scale, int levels);

/* f32, f16, q8 and q4 caches at each length, one series per cache type. */
typedef struct {
    const int64_t *L;
    int nL;
    int64_t H, Hkv, D;
} kv_decode_sweep;
void kv_decode_sweep_cases(harness_list *list, const kv_decode_sweep *s);

#endif
