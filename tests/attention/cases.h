/* Cases of the attention ops for the case harness (tests/harness/harness.h):
 * a spec of shapes and options in, a harness_case out. The test programs
 * list their awkward specs; `longattn bench` builds its sweeps with the
 * generators at the bottom. Every case checks against tests/ref/attention_ref. */
#ifndef LA_ATTENTION_CASES_H
#define LA_ATTENTION_CASES_H

#include "harness.h"
#include "longattn.h"

#include <stdbool.h>
#include <stdint.h>

#define ATTN_MAX_SEQS 6   /* varlen sequences per case */
#define ATTN_MAX_HEADS 64 /* query heads of a case with ALiBi (its slopes) */

/* Exact attention forward (la_attention_forward): out and lse. */
typedef struct {
    const char *name;  /* in check mode's messages */
    int64_t B, Lq, Lk; /* dense batch when nseq == 0 */
    int nseq;          /* varlen: lengths below */
    int32_t lens_q[ATTN_MAX_SEQS], lens_k[ATTN_MAX_SEQS];
    int64_t H, Hkv, D;
    la_dtype dt, out_dt;
    bool strided;  /* tensors are views over [B][H][L][D + 8] memory (tu_buf_new) */
    bool alibi;    /* random per-head slopes */
    bool want_lse; /* pass lse (softmax only) */
    int threads;
    la_attention_params p; /* options; the case attaches slopes and cu_seqlens */
    bool show_deterministic; /* bench: the row carries p.deterministic (bench attention --deterministic) */
} attn_forward_spec;

harness_case *attn_forward_case(const attn_forward_spec *s);

/* Exact attention backward (la_attention_backward): dq, dk, dv. out and lse
 * come from the float64 reference forward, rounded to their dtypes as a
 * training framework would have stored them, unless library_forward. */
typedef struct {
    const char *name;  /* in check mode's messages */
    int64_t B, Lq, Lk; /* dense batch when nseq == 0 */
    int nseq;          /* varlen: lengths below */
    int32_t lens_q[ATTN_MAX_SEQS], lens_k[ATTN_MAX_SEQS];
    int64_t H, Hkv, D;
    la_dtype dt, out_dt, grad_dt;
    bool strided, alibi;
    int threads;
    la_attention_params p;
    bool nested;          /* call from inside the caller's own OpenMP parallel region */
    bool dout_f32;        /* dout in f32 rather than the inputs' dtype */
    bool library_forward; /* out and lse from la_attention_forward, as in training (always so in perf
                             mode, which computes no reference first) */
    bool show_deterministic; /* bench: the row carries p.deterministic (bench attention --deterministic) */
} attn_backward_spec;

harness_case *attn_backward_case(const attn_backward_spec *s);

/* Decode attention (la_attention_decode) over a contiguous or paged cache. */
typedef struct {
    const char *name;         /* in check mode's messages */
    int64_t B, Lq, H, Hkv, D; /* B <= 4 */
    int64_t cap;              /* contiguous: cache capacity per sequence */
    int64_t block_size;       /* > 0: paged, blocks shuffled in a random table */
    int32_t seqlens[4];       /* keys in use per sequence */
    la_dtype kv_dt;
    bool alibi, strided_q, with_lse; /* strided_q: q and out over [B][H][Lq][D + 8] memory */
    bool head_major;                 /* k/v memory [Hkv][blocks or B][block_size or cap][D] (the KV cache's pages) */
    int threads;
    la_attention_params p;
} attn_decode_spec;

harness_case *attn_decode_case(const attn_decode_spec *s);

/* ---- benchmark sweeps: every combination, lengths innermost ---- */

typedef struct {
    int64_t B, H, Hkv;
    const int64_t *L;
    int nL;
    const int64_t *D;
    int nD;
    const int *causal;
    int ncausal;
    const la_dtype *dtype;
    int ndtype;
    /* la_attention_params.deterministic, 0 and/or 1; NULL: 0 alone, and no
     * row prints it. A backward-only option: backward rows are timed at each
     * value, forward rows (which it does not change) once, at the first. */
    const int *deterministic;
    int ndeterministic;
    bool fwd, bwd;
} attn_sweep;

/* Dense q/k/v of one dtype, out, dout and gradients f32, lse passed. */
void attn_sweep_cases(harness_list *list, const attn_sweep *s);

typedef struct {
    int64_t H, Hkv, D;
    const int64_t *L;
    int nL;
    const la_dtype *dtype;
    int ndtype;
    bool paged;       /* also the paged cache (blocks of DECODE_SWEEP_BLOCK), after the flat one */
} decode_sweep;

#define DECODE_SWEEP_BLOCK 256

/* One sequence, one causal query token, no lse. */
void decode_sweep_cases(harness_list *list, const decode_sweep *s);

#endif
