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

/* f32, f16, q8 and q4 caches at each length, one series per cache type. */
typedef struct {
    const int64_t *L;
    int nL;
    int64_t H, Hkv, D;
} kv_decode_sweep;
void kv_decode_sweep_cases(harness_list *list, const kv_decode_sweep *s);

#endif
