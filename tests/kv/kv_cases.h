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

/* The int8 softmax weights' share of an output's error (la_kv_cache_decode
 * on int8 pages without quant_exact_queries), in units of half the spread
 * of the output channel's value group (over the entries read back), for
 * query row q over the first n entries (keys k [n][D], softmax scale
 * `scale`). Per chunk c of 256 slots (la_kv_cache_decode's fixed split)
 * and value group the kernel rounds the weights w_t = p_t s_t (p_t =
 * e^(score_t - m_c) <= 1, m_c the chunk's max; s_t the token's group scale)
 * to 8 bits with sig = max_t w_t / 255, so each |e_t| <= sig / 2 <=
 * max_t s_t / 510, and adds 127.5 sum_t e_t back: the chunk's unnormalised
 * sum moves by at most n_c 127.5 max_t s_t / 510. 127.5 s_t is at most
 * half the group's read-back spread (times 1 + 2^-9, as for the keys). The
 * merged output divides sum_c e^(m_c - M) n_c (that) by sum_t e^(score_t -
 * M): returns rho / 510, rho = sum_c n_c e^(m_c - M) / sum_t e^(score_t -
 * M) over the exact scores. With the int8 queries' scores (within Delta of
 * these, kvq_int8_query_bound) the share is at most e^(2 Delta) times this. */
double kvq_int8_weight_share(const float *q, const float *k, int64_t n, int64_t D, double scale);

/* f32, f16, q8 and q4 caches at each length, one series per cache type. */
typedef struct {
    const int64_t *L;
    int nL;
    int64_t H, Hkv, D;
} kv_decode_sweep;
void kv_decode_sweep_cases(harness_list *list, const kv_decode_sweep *s);

#endif
