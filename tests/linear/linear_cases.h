/* Cases of the linear mixers (la_linear_attention_*) for the case harness
 * (tests/harness/harness.h): a spec in, a harness_case out, checked against
 * tests/ref/linear_ref. The test program lists awkward specs; `longattn
 * bench linear` builds its sweep with the generator at the bottom. */
#ifndef LA_LINEAR_CASES_H
#define LA_LINEAR_CASES_H

#include "harness.h"
#include "longattn.h"

#include <stdbool.h>
#include <stdint.h>

#define LIN_MAX_SEQS 6
#define LIN_MAX_HEADS 16

/* How the case calls the library. */
typedef enum {
    LIN_RUN_FORWARD,  /* one la_linear_attention_forward (p.form picks the form) */
    LIN_RUN_SPLIT,    /* two forward calls, the state carried at token split_at (dense) */
    LIN_RUN_DECODE,   /* la_linear_attention_decode token by token (dense) */
    LIN_RUN_BACKWARD  /* la_linear_attention_backward: dq, dk, dv, dg, dinitial_state */
} lin_run;

/* The data-dependent log decays (and the fixed per-head ones) drawn. */
typedef enum {
    LIN_GATE_NORMAL,    /* g in [-0.3, 0) */
    LIN_GATE_NEAR_ONE,  /* g in [-1e-3, 0]: decay ~1, long memory */
    LIN_GATE_NEAR_ZERO, /* g in [-40, -5]: decay ~0 */
    LIN_GATE_SATURATED, /* one in five -inf or -1e30, the rest normal */
    LIN_GATE_TINY       /* g -1e-6 or -2e-6 (per head: -1e-6 (h + 1)): exp(g) in f32 is 1 - 2^-20 or so */
} lin_gate;

typedef struct {
    const char *name;
    int64_t B, L;  /* dense batch when nseq == 0 */
    int nseq;      /* varlen: lengths below */
    int32_t lens[LIN_MAX_SEQS];
    int64_t H, Hkv, Dk, Dv;
    int64_t Dm;          /* Hedgehog's projection width (the case draws W [H, Dk, Dm]) */
    la_dtype dt, out_dt; /* inputs; out (and the gradients) */
    la_linear_params p;  /* options; the case attaches head decays and cu_seqlens */
    lin_gate gate;
    lin_run run;
    int64_t split_at;
    bool init_state, want_state; /* pass an initial state; ask for the final one (or dinitial_state) */
    bool dfinal;                 /* backward: a gradient reaching the final state */
    bool strided;                /* q, k, v, out and the gradients over heads-outermost padded memory (tu_buf) */
    int threads;
    double atol; /* out's and the final state's absolute tolerance over their largest |element| (0: the defaults) */
} linear_spec;

harness_case *linear_case(const linear_spec *s);

/* ---- benchmark sweep ---- */
typedef struct {
    int64_t B, H, D;
    const int64_t *L;
    int nL;
    la_decay_kind decay;
    int64_t chunk;
    bool with_attention; /* exact causal attention at the same shapes, as a series of its own */
    bool bwd;
    la_feature_map feature; /* Taylor: Dk 16 (273 features); Hedgehog: D / 2 projections (D features) */
    bool no_titans;         /* leave out the Titans series (mixer_sweep.c adds its own) */
} linear_sweep;

void linear_sweep_cases(harness_list *list, const linear_sweep *s);

/* The Titans memory's chunked forward, or its backward (titans_case.c), dense f32, Dk = Dv = D. */
harness_case *titans_case(const char *name, int64_t B, int64_t H, int64_t L, int64_t D, int64_t chunk, bool bwd);

#endif
