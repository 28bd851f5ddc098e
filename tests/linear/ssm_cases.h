/* Cases of the selective scan (Mamba-1) and Aaren for the case harness
 * (tests/harness/harness.h), checked against tests/ref/ssm_ref: what
 * `longattn bench linear --op mamba|aaren` times. The test programs
 * (test_ssm.c, test_aaren.c) check the awkward shapes directly and one of
 * these cases each at every SIMD level. */
#ifndef LA_SSM_CASES_H
#define LA_SSM_CASES_H

#include "harness.h"
#include "longattn.h"

#include <stdbool.h>
#include <stdint.h>

typedef enum { SCAN_CASE_MAMBA, SCAN_CASE_AAREN } scan_case_op;

typedef struct {
    const char *name;
    scan_case_op op;
    int64_t B, L;
    int64_t D, N, G; /* mamba: channels, state size, groups of B and C */
    int64_t H, Dk, Dv; /* aaren */
    la_scan_form form;
    int64_t chunk;
    bool bwd;
    int threads;
} scan_spec;

harness_case *scan_case(const scan_spec *s);

/* The sweep `longattn bench linear --op mamba|aaren` runs: forward (and
 * backward) at growing lengths. */
void scan_sweep_cases(harness_list *list, scan_case_op op, int64_t B, int64_t width, const int64_t *L, int nL,
                      int64_t chunk, bool bwd);

#endif
