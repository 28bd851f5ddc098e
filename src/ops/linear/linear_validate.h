/* Checks the linear mixers' entry points share (linear.c defines them;
 * titans.c uses them too). */
#ifndef LA_OPS_LINEAR_VALIDATE_H
#define LA_OPS_LINEAR_VALIDATE_H

#include "ops/backends.h"
#include "ops/validate.h"

/* (la_check_shaped and la_check_packed_seqlens: ops/validate.h) */

/* The backend of the tensors' device (NULL entries skipped), or NULL with
 * LA_ERR_DEVICE set when they disagree or the build has none. */
const la_backend *la_linear_backend_of(const la_tensor *const *t, int n);

/* The layout every mixer call shares: q, k, v as [B, L, H, D], packed as
 * [T, H, D] with cu_seqlens (tokens true), or the decode step's [B, H, D]
 * (tokens false, no cu_seqlens). */
typedef struct {
    int64_t num_seqs;  /* B, or num_seqs with cu_seqlens */
    int64_t L;         /* dense: tokens per sequence; packed: the longest; decode: 1 */
    int64_t H, Hkv, Dk, Dv;
    const int32_t *cu; /* cu_seqlens when packed, else NULL */
    bool varlen;
    int nd;            /* q's rank */
    unsigned zero;     /* the dims that may be empty (the token dim), as la_check_shaped takes them */
} la_mixer_layout;

/* Copies a layout's sizes into a problem struct (la_linear_problem,
 * la_delta_problem and la_titans_problem name them alike). */
#define LA_MIXER_TAKE_LAYOUT(P, m)                                                                              \
    ((P)->num_seqs = (m).num_seqs, (P)->L = (m).L, (P)->cu = (m).cu, (P)->H = (m).H, (P)->Hkv = (m).Hkv,         \
     (P)->Dk = (m).Dk, (P)->Dv = (m).Dv)

la_status la_mixer_check_layout(const la_tensor *q, const la_tensor *k, const la_tensor *v, bool tokens,
                                const int32_t *cu_seqlens, int64_t num_seqs, la_mixer_layout *out);

/* A [N, H, Dk, Dv'] f32 state tensor as the kernels take it (zero for NULL). */
la_linear_state la_linear_state_of(const la_tensor *t);

#endif
