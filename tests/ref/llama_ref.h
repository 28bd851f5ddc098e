/* Float64 reference of the Llama-family forward pass (llama, qwen2), written
 * from the model's equations, not from the library: dense causal attention
 * over every position, weights given as float64 matrices. */
#ifndef LA_LLAMA_REF_H
#define LA_LLAMA_REF_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    double *attn_norm, *ffn_norm;  /* [E] */
    double *wq, *wk, *wv, *wo;     /* [out][in], as GGUF stores rows */
    double *bq, *bk, *bv;          /* NULL when the architecture has no QKV bias */
    double *gate, *up, *down;
} ref_llama_layer;

typedef struct {
    int64_t n_vocab, n_embd, n_layer, n_head, n_head_kv, n_ff, rope_dims;
    double rms_eps, rope_theta, rope_scale; /* rope_scale: positions are divided by it */
    bool rope_neox;                         /* pairs (i, i + dims/2) instead of (2i, 2i + 1) */
    double *tok_embd;                       /* [V][E] */
    double *output;                         /* [V][E]; may alias tok_embd (tied) */
    double *out_norm;                       /* [E] */
    ref_llama_layer *layers;
    /* Activation rounding of single-token quantised products (llama.cpp's
     * scheme for Q4_0/Q4_1/Q8_0 weights): the input of a product is rounded
     * per 32-block to int8 steps of max|x| / 127 when its weights are of such
     * a type (round_attn: q, k, v, o; round_ffn: gate, up, down;
     * round_output) and its position is flagged: round_at[i] for the layer
     * products of position i, round_logits_at[i] for its output head. NULL
     * flags: exact products everywhere. */
    bool round_attn, round_ffn, round_output;
    const bool *round_at, *round_logits_at;
} ref_llama;

/* logits[i * V + v] for tokens[0..n) at positions 0..n-1. */
void ref_llama_forward(const ref_llama *m, const int32_t *tokens, int64_t n, double *logits);

#endif
