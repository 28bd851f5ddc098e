/* Cases of the delta rule (la_delta_rule_*) for the case harness
 * (tests/harness/harness.h): a spec in, a harness_case out, checked against
 * tests/ref/delta_ref. tests/linear/test_delta_rule.c lists awkward specs;
 * `longattn bench linear --op delta|gated_delta` builds its sweep with
 * delta_sweep_cases. */
#ifndef LA_DELTA_CASES_H
#define LA_DELTA_CASES_H

#include "harness.h"
#include "longattn.h"

#include <stdbool.h>
#include <stdint.h>

#define DELTA_MAX_SEQS 6

typedef enum {
    DELTA_RUN_FORWARD,  /* one la_delta_rule_forward (p.form picks the form) */
    DELTA_RUN_SPLIT,    /* two forward calls, the state carried at token split_at (dense) */
    DELTA_RUN_DECODE,   /* la_delta_rule_decode token by token (dense) */
    DELTA_RUN_BACKWARD  /* la_delta_rule_backward */
} delta_run;

typedef enum {
    DELTA_GATE_NORMAL,    /* g in [-0.3, 0) */
    DELTA_GATE_NEAR_ONE,  /* g in [-1e-3, 0]: decay ~1 (g near 0) */
    DELTA_GATE_NEAR_ZERO, /* g in [-40, -5]: decay ~0 */
    DELTA_GATE_SATURATED  /* one in five -inf or -1e30, the rest normal */
} delta_gate;

typedef enum {
    DELTA_BETA_NORMAL,    /* beta in [0, 1) */
    DELTA_BETA_NEAR_ZERO, /* beta in [0, 1e-3) */
    DELTA_BETA_NEAR_ONE   /* beta in (1 - 1e-3, 1] */
} delta_beta_mode;

typedef struct {
    const char *name;
    int64_t B, L; /* dense batch when nseq == 0 */
    int nseq;     /* varlen: lengths below */
    int32_t lens[DELTA_MAX_SEQS];
    int64_t H, Hkv, Dk, Dv;
    la_dtype dt, out_dt; /* inputs; out (and the gradients) */
    bool beta_in_dt;     /* beta in the inputs' dtype (else f32) */
    la_delta_params p;   /* options; the case attaches cu_seqlens */
    delta_gate gate;
    delta_beta_mode beta;
    delta_run run;
    int64_t split_at;
    bool init_state, want_state; /* pass an initial state; ask for the final one (or dinitial_state) */
    bool dfinal;                 /* backward: a gradient reaching the final state */
    bool strided;                /* q, k, v, out and the gradients over heads-outermost padded memory */
    int threads;
} delta_spec;

harness_case *delta_case(const delta_spec *s);

/* ---- benchmark sweep: the chunked forward (and backward) at growing lengths ---- */
typedef struct {
    int64_t B, H, D;
    const int64_t *L;
    int nL;
    bool gated;
    int64_t chunk;
    bool bwd;
    bool no_decode; /* leave out the decode row (mixer_sweep.h has its own) */
} delta_sweep;

void delta_sweep_cases(harness_list *list, const delta_sweep *s);

#endif
