/* Llama-family models from GGUF (architectures `llama` and `qwen2`):
 * configuration, memory-mapped weights, and sessions that own a KV cache and
 * run the forward pass through the library's attention. */
#ifndef LA_MODEL_H
#define LA_MODEL_H

#include "gguf.h"
#include "tokenizer.h"

typedef enum { LA_ROPE_NORM = 0, LA_ROPE_NEOX = 1 } la_rope_kind;

typedef struct {
    char arch[32];
    int64_t n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_ctx_train;
    float rms_eps, rope_theta, rope_scale;  /* rope_scale: linear position scaling factor (1 = none) */
    la_rope_kind rope_kind;
    int64_t rope_dims;                      /* dims rotated per head (<= head_dim) */
    bool qkv_bias;                          /* qwen2 */
    bool tied_output;                       /* output head shares token_embd */
} la_model_config;

typedef struct la_model la_model;
typedef struct la_session la_session;

la_status la_model_load(const char *path, la_model **out);
void la_model_free(la_model *m);
const la_model_config *la_model_config_of(const la_model *m);
const la_tokenizer *la_model_tokenizer(const la_model *m);
const la_gguf *la_model_gguf(const la_model *m);

/* A session holds the KV cache (grown as tokens arrive, never beyond
 * max_ctx) and scratch. ctx supplies threads and SIMD level. */
la_status la_session_new(const la_model *m, la_context *ctx, int64_t max_ctx, la_session **out);
void la_session_free(la_session *s);
void la_session_reset(la_session *s);          /* forget all tokens */
int64_t la_session_pos(const la_session *s);   /* tokens in the cache */
size_t la_session_kv_bytes(const la_session *s);

/* Append n tokens at the current position and run them (as one
 * matrix-matrix prefill when n > 1). logits: n x n_vocab when all_logits,
 * else n_vocab for the last token; may be NULL. */
la_status la_session_eval(la_session *s, const int32_t *tokens, int64_t n, float *logits, bool all_logits);

#endif
