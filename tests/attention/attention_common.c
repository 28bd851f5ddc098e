#include "attention_common.h"

#include <math.h>
#include <string.h>

void attn_layout_init(attn_layout *l, int64_t B, int64_t Lq, int64_t Lk, int nseq, const int32_t *lens_q,
                      const int32_t *lens_k, int64_t H, int64_t Hkv, int64_t D) {
    memset(l, 0, sizeof *l);
    l->varlen = nseq > 0;
    l->B = B, l->Lq = Lq, l->Lk = Lk;
    l->nseq = l->varlen ? nseq : B;
    for (int i = 0; i < nseq; i++) {
        l->cu_q[i + 1] = l->cu_q[i] + lens_q[i];
        l->cu_k[i + 1] = l->cu_k[i] + lens_k[i];
    }
    l->Tq = l->varlen ? l->cu_q[nseq] : B * Lq;
    l->Tk = l->varlen ? l->cu_k[nseq] : B * Lk;
    l->nd = l->varlen ? 3 : 4;
    if (l->varlen) {
        int64_t q[3] = {l->Tq, H, D}, k[3] = {l->Tk, Hkv, D}, s[2] = {l->Tq, H};
        memcpy(l->qshape, q, sizeof q), memcpy(l->kshape, k, sizeof k), memcpy(l->lse_shape, s, sizeof s);
    } else {
        int64_t q[4] = {B, Lq, H, D}, k[4] = {B, Lk, Hkv, D}, s[3] = {B, Lq, H};
        memcpy(l->qshape, q, sizeof q), memcpy(l->kshape, k, sizeof k), memcpy(l->lse_shape, s, sizeof s);
    }
}

attn_seq attn_seq_of(const attn_layout *l, int64_t b) {
    if (l->varlen)
        return (attn_seq){l->cu_q[b], l->cu_q[b + 1] - l->cu_q[b], l->cu_k[b], l->cu_k[b + 1] - l->cu_k[b]};
    return (attn_seq){b * l->Lq, l->Lq, b * l->Lk, l->Lk};
}

void attn_index(const attn_layout *l, int64_t b, int64_t t0, int64_t i, int64_t h, int64_t d, int64_t *idx) {
    if (l->varlen) {
        idx[0] = t0 + i, idx[1] = h, idx[2] = d;
    } else {
        idx[0] = b, idx[1] = i, idx[2] = h, idx[3] = d;
    }
}

la_attention_params attn_params(const la_attention_params *spec, const attn_layout *l, const float *slopes,
                                bool alibi) {
    la_attention_params p = *spec;
    if (alibi) p.alibi_slopes = slopes;
    if (l->varlen) p.cu_seqlens_q = l->cu_q, p.cu_seqlens_k = l->cu_k, p.num_seqs = l->nseq;
    return p;
}

ref_attn_opts attn_ref_opts(const la_attention_params *p, int64_t D, double alibi_slope) {
    return (ref_attn_opts){.scale = p->scale > 0 ? p->scale : 1 / sqrt((double)D),
                           .causal = p->causal,
                           .window_left = p->window_left,
                           .window_right = p->window_right,
                           .sinks = p->sinks,
                           .softcap = p->softcap,
                           .alibi_slope = alibi_slope,
                           .sigmoid = p->score == LA_SCORE_SIGMOID,
                           .sigmoid_bias = p->sigmoid_bias};
}

double attn_forward_flops(const attn_layout *l, int64_t H, int64_t D, int causal) {
    double flops = 0;
    for (int64_t b = 0; b < l->nseq; b++) {
        attn_seq s = attn_seq_of(l, b);
        flops += 4.0 * (double)H * (double)s.lq * (double)s.lk * (double)D;
    }
    return causal ? flops / 2 : flops;
}

void attn_describe(harness_fields *f, const attn_layout *l, la_dtype dt, int64_t H, int64_t Hkv, int64_t D,
                   int causal, const char *pass) {
    harness_field_str(f, "dtype", la_dtype_name(dt));
    if (l->varlen) harness_field_int(f, "seqs", l->nseq);
    else harness_field_int(f, "B", l->B);
    harness_field_int(f, "H", H);
    harness_field_int(f, "Hkv", Hkv);
    if (!l->varlen && l->Lq == l->Lk) {
        harness_field_int(f, "L", l->Lq);
    } else {
        harness_field_int(f, "Lq", l->varlen ? l->Tq : l->Lq);
        harness_field_int(f, "Lk", l->varlen ? l->Tk : l->Lk);
    }
    harness_field_int(f, "D", D);
    harness_field_int(f, "causal", causal);
    harness_field_str(f, "pass", pass);
}
