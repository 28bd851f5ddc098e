/* What the forward and backward attention cases share: the layout of a
 * dense or variable-length batch, tensor indices, reference options. */
#ifndef LA_ATTENTION_COMMON_H
#define LA_ATTENTION_COMMON_H

#include "attention_ref.h"
#include "cases.h"

typedef struct {
    bool varlen;
    int64_t nseq;      /* B, or num_seqs */
    int64_t B, Lq, Lk; /* dense */
    int32_t cu_q[ATTN_MAX_SEQS + 1], cu_k[ATTN_MAX_SEQS + 1]; /* varlen offsets */
    int64_t Tq, Tk;    /* query and key tokens in all */
    int nd;            /* tensor rank: 4 dense, 3 varlen */
    int64_t qshape[4], kshape[4], lse_shape[3];
} attn_layout;

void attn_layout_init(attn_layout *l, int64_t B, int64_t Lq, int64_t Lk, int nseq, const int32_t *lens_q,
                      const int32_t *lens_k, int64_t H, int64_t Hkv, int64_t D);

/* Sequence b: its first query and key token (in 0..Tq, 0..Tk) and lengths. */
typedef struct {
    int64_t q0, lq, k0, lk;
} attn_seq;
attn_seq attn_seq_of(const attn_layout *l, int64_t b);

/* Tensor index of (sequence b starting at token t0, its row i, head h, d). */
void attn_index(const attn_layout *l, int64_t b, int64_t t0, int64_t i, int64_t h, int64_t d, int64_t *idx);

/* Attach what the spec's params cannot hold: slopes and cu_seqlens. */
la_attention_params attn_params(const la_attention_params *spec, const attn_layout *l, const float *slopes,
                                bool alibi);

/* The reference's options for head h. */
ref_attn_opts attn_ref_opts(const la_attention_params *p, int64_t D, double alibi_slope);

/* The harness fields naming a case's shape (dtype, batch or sequences,
 * heads, lengths, D, causal) and its pass. */
void attn_describe(harness_fields *f, const attn_layout *l, la_dtype dt, int64_t H, int64_t Hkv, int64_t D,
                   int causal, const char *pass);

/* FLOPs of the forward as FlashAttention counts them: 4 H lq lk D per
 * sequence, halved when causal (the backward is 2.5 times this). */
double attn_forward_flops(const attn_layout *l, int64_t H, int64_t D, int causal);

#endif
