/* longattn_model: real GGUF Llama-family models on longattn's attention.
 *
 * The public header of liblongattn_model (link it with liblongattn; it adds
 * PCRE2 for the tokenizer's Unicode pre-tokenizer regexes). Load a model,
 * tokenize, evaluate tokens with logits out, sample, format chat prompts,
 * generate, free. Every function reports failures as liblongattn does: a
 * la_status, and a message in la_last_error(). The command-line tool uses
 * nothing but this header and longattn.h. */
#ifndef LONGATTN_MODEL_H
#define LONGATTN_MODEL_H

#include "longattn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* --------------------------------------------------- tokenizer */

/* Tokenizers read from GGUF metadata: byte-level BPE (tokenizer.ggml.model =
 * "gpt2", pre-tokenised with PCRE2 by the regex tokenizer.ggml.pre names) and
 * SentencePiece-style ("llama", with scores). */
typedef struct la_tokenizer la_tokenizer;

/* *out is NULL after any failure. */
LA_API la_status la_tokenizer_from_gguf(const la_gguf *g, la_tokenizer **out);
LA_API void la_tokenizer_free(la_tokenizer *t);

LA_API int32_t la_tokenizer_vocab_size(const la_tokenizer *t);
LA_API int32_t la_tokenizer_bos(const la_tokenizer *t);   /* -1 if none */
LA_API int32_t la_tokenizer_eos(const la_tokenizer *t);   /* -1 if none */
LA_API bool la_tokenizer_add_bos(const la_tokenizer *t);  /* tokenizer.ggml.add_bos_token, or the model's default */
/* True for tokens that end generation (eos, eot, <|im_end|>, <|eot_id|> ...). */
LA_API bool la_tokenizer_is_eog(const la_tokenizer *t, int32_t id);
/* Id of a token by its exact text (e.g. "<|im_start|>"), or -1. */
LA_API int32_t la_tokenizer_find(const la_tokenizer *t, const char *text);

/* Encode UTF-8 (or arbitrary bytes) into *ids (malloc'd, caller frees).
 * parse_special: text like "<|im_start|>" becomes its special token. */
LA_API la_status la_tokenize(const la_tokenizer *t, const char *text, size_t len, bool add_bos, bool parse_special,
                      int32_t **ids, int64_t *n);

/* Bytes one token decodes to (for streaming); special tokens give their text
 * only when render_special. Returns the length written (<= cap), or the
 * length needed if larger than cap (buf NULL: the length needed); 0 for t
 * NULL or an id outside the vocabulary. */
LA_API int64_t la_token_to_bytes(const la_tokenizer *t, int32_t id, bool render_special, char *buf, int64_t cap);
/* Whole sequence to bytes (malloc'd, NUL-terminated, caller frees).
 * LA_ERR_NULL, LA_ERR_ARGUMENT (n < 0, an id outside the vocabulary). */
LA_API la_status la_detokenize(const la_tokenizer *t, const int32_t *ids, int64_t n, bool render_special, char **text,
                        size_t *len);

/* ------------------------------------------------------- model */

/* Llama-family models from GGUF (architectures `llama` and `qwen2`):
 * configuration, weights, and sessions that own a KV cache and run the
 * forward pass through the library's attention. la_model_load reads the
 * file into anonymous memory on 2 MB pages where Linux grants transparent
 * huge pages on request (/sys/kernel/mm/transparent_hugepage/enabled is
 * `always` or `madvise`): each generated token streams every weight, and
 * 4 KB page-cache pages read ~10% slower. The process then holds its own
 * copy of the file (its resident size grows by the file's size; the page
 * cache's copy stays reclaimable). The file is memory-mapped instead
 * (shared, reclaimable pages) where huge pages are not offered, where the
 * file is over a quarter of the machine's physical memory, or with
 * LONGATTN_MODEL_MMAP=1 in the environment. */
typedef enum { LA_ROPE_NORM = 0, LA_ROPE_NEOX = 1 } la_rope_kind;

typedef struct {
    char arch[32];
    int64_t n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff;
    int64_t n_ctx_train;                    /* context_length (2048 when absent); a file's value < 1 is LA_ERR_FORMAT */
    float rms_eps, rope_theta, rope_scale;  /* rope_scale: linear position scaling factor (1 = none) */
    la_rope_kind rope_kind;
    int64_t rope_dims;                      /* dims rotated per head (<= head_dim) */
    bool qkv_bias;                          /* qwen2 */
    bool tied_output;                       /* output head shares token_embd */
} la_model_config;

typedef struct la_model la_model;
typedef struct la_session la_session;

LA_API la_status la_model_load(const char *path, la_model **out);
LA_API void la_model_free(la_model *m);
LA_API const la_model_config *la_model_config_of(const la_model *m);
LA_API const la_tokenizer *la_model_tokenizer(const la_model *m);
LA_API const la_gguf *la_model_gguf(const la_model *m);

/* A session holds the KV cache (an la_kv_cache whose pages are committed
 * as tokens arrive, never beyond max_ctx) and scratch. ctx supplies threads
 * and SIMD level. Keys are stored after RoPE, each with its position.
 *
 * Reproducible: a token's logits depend only on the tokens before it and
 * on whether it was evaluated alone (a single-token step, whose products
 * round activations to int8 as llama.cpp does) or with others (prefill, f32
 * activations): not on max_ctx, the thread count, the page size or how a
 * prompt is cut into la_session_eval calls of two or more tokens.
 *
 * Rounding of activations: a prefill multiplies f32 activations by the
 * dequantised weights (about 1e-4 from a float64 forward of the same
 * weights), except for its output head when only the last token's logits
 * are asked for (one row); a single-token step rounds every product's
 * activations to int8 per 32-element block, as llama.cpp does.
 * exact_decode makes both use f32 activations (la_matmul_f32): then a
 * token's logits are the same whether it ran alone or in a batch up to the
 * f32 summation order of attention (prefill's exact forward against
 * decode's split-K), on SmolLM2-135M about 3e-4 of the logits' range on
 * average and 7e-4 at worst over 1000 tokens of bench/data/ppl-text.txt
 * (int8-rounded: 2e-2 on average, 5e-2 to 1.4e-1 at worst), at the cost of
 * dequantising every weight block to f32 for one token. Use it to compare
 * KV-cache policies or quantisation without the rounding noise.
 *
 * With a quantised cache (kv_quant), a prefill attends over the cache as it
 * holds the chunk's tokens after appending them (dequantised), so results
 * also depend on how the prompt is cut into chunks: a chunk's own tokens
 * may already sit in quantised groups. */
/* The most tokens a session may hold. */
#define LA_SESSION_MAX_CTX ((int64_t)1 << 30)

typedef struct {
    int64_t max_ctx;      /* tokens the session may hold, in [1, LA_SESSION_MAX_CTX] */
    la_dtype kv_type;     /* K/V page element type: LA_F16 (default, as llama.cpp), LA_BF16 or LA_F32 */
    int64_t kv_page_size; /* tokens per KV page, > 0 */
    /* KV policy (la_kv_policy_parse), per layer after each la_session_eval
     * chunk (full: none): attention runs over the entries kept so far plus
     * the new tokens; afterwards each head keeps what the policy keeps
     * (streaming: sinks + recent window; h2o scores the chunk's queries'
     * attention first; snapkv selects once, after the last chunk of a
     * multi-token la_session_eval (or when la_session_prompt closes a
     * prompt fed in several calls), voted by the prompt's last queries;
     * duo evicts on its streaming heads only;
     * quest evicts nothing and picks pages for each single-token step).
     * Heads may then hold different numbers of entries; attention runs
     * head by head when they do. A duo score file is read at
     * la_session_new_with; quest's page option sets the cache's page size
     * in place of kv_page_size. */
    la_kv_policy kv_policy;
    /* Prefill attention (la_session_eval of two or more tokens): dense
     * (LA_SPARSE_NONE), or block-sparse with this selector and budget
     * (la_sparse_select, then la_block_sparse_forward) in every layer
     * from sparse.dense_layers on (the layers before it run dense).
     * Single-token steps stay dense. la_sparse_choice_parse reads
     * "SELECTOR:BUDGET[,OPTION=N...]"; negative options are
     * LA_ERR_ARGUMENT here. Under a stateful kv_policy (h2o, snapkv,
     * quest, duo) the prefill attends through the policy, densely: sparse
     * does not apply there (la_session_sparse_counts counts nothing). Routing keeps one k-means state per layer for
     * the session's life (centroids move across calls, as the selector's
     * state is meant to; la_session_reset keeps them). */
    la_sparse_choice sparse;
    /* Per-head coverage (la_sparse_calibrate, la_sparse_gammas_read,
     * la_sparse_heads_split): NULL, or n_layer x n_head gammas in [0, 1],
     * [layer * n_head + head], used in place of sparse.budget by each query
     * head of each sparse layer; sparse must then be topk with a coverage
     * budget (<= 1). Coverage 0 makes a streaming head (DuoAttention's
     * split): only the sink and local blocks topk forces (sparse's sink and
     * local options, else topk's defaults 1 and 1), no probe rows. Copied
     * at la_session_new_with. */
    const float *sparse_head_gamma;
    /* Head scores for la_sparse_heads_split: NULL, or n_layer x n_head
     * accumulators [layer * n_head + head] (the caller's memory, not
     * cleared) to which every multi-token la_session_eval adds, in each
     * layer from sparse.dense_layers on, how far that layer's residual
     * stream x moves when the head alone goes streaming (sink and local
     * blocks as for coverage 0) while the others keep the layer's
     * attention output (dense, or sparse's): |W_o e|^2 / |x|^2 over the
     * chunk's rows, e the head's streaming output minus its output, zero
     * in the other heads' columns. Costs an extra sparse attention and
     * n_head products with W_o per layer: for calibration runs. Not
     * computed under a stateful kv_policy. */
    double *sparse_head_score;
    /* Attention inputs, for inspection (e.g. dumping them to measure a
     * sparse selector's recall on real attention): when not NULL, called in
     * every multi-token la_session_eval, layer by layer, just before the
     * layer's attention, with its queries q [1, n, n_head, head_dim] (f32,
     * after RoPE) and the keys k [1, L, n_head_kv, head_dim] they attend to
     * (f32 copy of the cache, the n new tokens last; causal bottom-right).
     * The tensors live only during the call. Not called under a stateful
     * kv_policy (h2o, snapkv, quest, duo), whose heads are ragged. */
    void (*on_attention)(void *user, int64_t layer, const la_tensor *q, const la_tensor *k);
    void *on_attention_user;
    /* Quantised KV pages (la_kv_cache_params.quant): LA_KV_QUANT_NONE
     * (default: kv_type pages), LA_KV_Q8 or LA_KV_Q4, with key groups of
     * gcd(32, kv_page_size) tokens, value groups of gcd(32, head_dim)
     * channels for int8 and gcd(16, head_dim) for int4, and a 32-token f32
     * window; kv_type is then unused. Every policy runs on them
     * (quest reads the pages it picks back dequantised). On SmolLM2-135M (perplexity, 4608
     * tokens in windows of 512): int8 +0.10% over f16, int4 +2.8%. */
    la_kv_quant kv_quant;
    /* f32 activations in single-token steps and in the prefill's output
     * head (see "Rounding of activations" above), and with kv_quant f32
     * queries in the decode's q.k (la_kv_cache_params.quant_exact_queries;
     * else rounded to int8 per key group where the CPU has AVX512-VNNI and
     * VBMI); false by default. */
    bool exact_decode;
} la_session_params;

/* max_ctx 0 (must be set), f16 pages of LA_SESSION_PAGE_DEFAULT tokens,
 * the full cache, dense prefill, not quantised, int8-rounded single-token
 * steps. */
#define LA_SESSION_PAGE_DEFAULT 256
LA_API la_session_params la_session_params_default(void);
/* *out is NULL after any failure. */
LA_API la_status la_session_new_with(const la_model *m, la_context *ctx, const la_session_params *p, la_session **out);
/* la_session_new_with the defaults and this max_ctx. */
LA_API la_status la_session_new(const la_model *m, la_context *ctx, int64_t max_ctx, la_session **out);
LA_API void la_session_free(la_session *s);
LA_API void la_session_reset(la_session *s);          /* forget all tokens */
/* Tokens evaluated since the session was made or reset: the next token's
 * position, which max_ctx bounds. Under an evicting kv_policy the cache
 * holds fewer (la_kv_cache_len of la_session_kv_cache). 0 for NULL. */
LA_API int64_t la_session_pos(const la_session *s);
/* Bytes of the KV pages in use (la_kv_cache_bytes). */
LA_API size_t la_session_kv_bytes(const la_session *s);
/* The model the session was made for (la_generate refuses another). NULL for NULL. */
LA_API const la_model *la_session_model(const la_session *s);
/* The session's cache, for inspection (positions, per-head lengths). */
LA_API const la_kv_cache *la_session_kv_cache(const la_session *s);
/* The state of a stateful kv_policy (h2o, snapkv, quest, duo), for
 * inspection (la_kv_policy_state_scores, _is_retrieval); NULL otherwise. */
LA_API const la_kv_policy_state *la_session_kv_policy_state(const la_session *s);

/* Append n tokens at the current position and run them (as one
 * matrix-matrix prefill when n > 1). logits: n x n_vocab when all_logits,
 * else n_vocab for the last token; may be NULL. Errors: LA_ERR_NULL (s or
 * tokens), LA_ERR_ARGUMENT (n < 1, a token outside [0, n_vocab), or
 * la_session_pos + n past max_ctx), checked before anything runs: the
 * session is then unchanged. */
LA_API la_status la_session_eval(la_session *s, const int32_t *tokens, int64_t n, float *logits, bool all_logits);
/* Mark where a prompt fed in several la_session_eval calls begins and ends,
 * for policies that select once per prompt (snapkv): while open, a
 * multi-token la_session_eval does not end the prompt; closing it (open
 * false) ends it, so snapkv selects in every layer, voted by the last
 * queries of all the calls. la_generate opens it around its chunked
 * prefill. Without it each multi-token la_session_eval is a prompt of its
 * own. Errors: LA_ERR_NULL; those of la_kv_policy_end_prompt. */
LA_API la_status la_session_prompt(la_session *s, bool open);

/* Block-sparse prefill's work per layer since the session was made
 * (la_session_reset keeps it): key blocks (of LA_SPARSE_BLOCK_DEFAULT
 * tokens, summed over query heads and query blocks) the prefill computed,
 * and those dense attention would have computed (the causally visible
 * ones); a dense layer counts listed = visible. Single-token steps and
 * stateful kv_policies are not counted. Errors: LA_ERR_NULL,
 * LA_ERR_ARGUMENT (layer out of range). */
LA_API la_status la_session_sparse_counts(const la_session *s, int64_t layer, int64_t *listed, int64_t *visible);

/* ------------------------------------- per-head sparse coverage */

/* Per-head coverage for the topk selector (la_session_params.
 * sparse_head_gamma), from a calibration run: la_sparse_calibrate_observe,
 * given as on_attention, runs the topk selector of `choice` (its probe,
 * sink and local options) at each coverage of a fixed ladder (0.9, 0.95,
 * 0.98, 0.99, 0.995, 0.998, 0.999) on every sparse layer's q and k and
 * counts each query head's listed blocks. la_sparse_calibrate_finish then
 * gives each head the coverage that minimises the total listed blocks
 * while the heads' mean uncovered share (1 - gamma) stays at most 1 -
 * target (a Lagrange multiplier, bisected): heads whose mass is
 * concentrated get a high coverage cheaply, diffuse heads a lower one. */
typedef struct la_sparse_calib la_sparse_calib;
/* The ladder's ends: the targets la_sparse_calibrate_finish accepts. */
#define LA_SPARSE_CALIB_TARGET_MIN 0.9
#define LA_SPARSE_CALIB_TARGET_MAX 0.999
/* choice: topk (any budget; its options are used). LA_ERR_NULL,
 * LA_ERR_ARGUMENT (another selector, n_layer or n_head < 1), LA_ERR_NOMEM. */
LA_API la_status la_sparse_calibrate_new(la_context *ctx, const la_sparse_choice *choice, int64_t n_layer,
                                         int64_t n_head, la_sparse_calib **out);
/* An on_attention callback (user: the la_sparse_calib). Its first error is
 * kept and returned by _finish. */
LA_API void la_sparse_calibrate_observe(void *cal, int64_t layer, const la_tensor *q, const la_tensor *k);
/* gamma: n_layer x n_head; layers before choice.dense_layers (and heads
 * never observed) get target, in [LA_SPARSE_CALIB_TARGET_MIN, _MAX]. Errors: LA_ERR_NULL,
 * LA_ERR_ARGUMENT, the first error of an observation. */
LA_API la_status la_sparse_calibrate_finish(const la_sparse_calib *cal, double target, float *gamma);
/* The key blocks the observations listed, over the observed layers' heads,
 * had each head run at gamma[layer * n_head + head] (ladder values; -1 if
 * one is not, or cal or gamma is NULL): the work a gamma assignment buys
 * on the calibration text, e.g. per-head against one gamma everywhere. */
LA_API double la_sparse_calibrate_blocks(const la_sparse_calib *cal, const float *gamma);
LA_API void la_sparse_calibrate_free(la_sparse_calib *cal);
/* DuoAttention-style head split from sparse_head_score: of the heads in
 * layers [dense_layers, n_layer), the share `share` (rounded down) with the
 * lowest scores get coverage 0 (streaming), the others gamma; the dense
 * layers' heads get gamma. Ties go to the lower index. Errors:
 * LA_ERR_NULL, LA_ERR_ARGUMENT (share not in [0, 1], gamma not in (0, 1],
 * sizes < 1, dense_layers not in [0, n_layer], a score negative or not
 * finite), LA_ERR_NOMEM. */
LA_API la_status la_sparse_heads_split(const double *score, int64_t n_layer, int64_t n_head, int64_t dense_layers,
                                       double share, float gamma, float *out);
/* The file: a header line "longattn-sparse-gammas 1 LAYERS HEADS", then
 * one line of HEADS gammas per layer; '#' lines before the header are
 * comments. _read checks the header against n_layer and n_head and every
 * value (finite, in [0, 1]): LA_ERR_NULL, LA_ERR_ARGUMENT (n_layer or
 * n_head outside [1, 2^20]; _write: a gamma outside [0, 1] or NaN, so it
 * never writes a file _read refuses), LA_ERR_IO (cannot open or write),
 * LA_ERR_FORMAT (anything else wrong, with the line). */
LA_API la_status la_sparse_gammas_write(const char *path, const float *gamma, int64_t n_layer, int64_t n_head);
LA_API la_status la_sparse_gammas_read(const char *path, int64_t n_layer, int64_t n_head, float *gamma);

/* ------------------------------------------- duo calibration */

/* DuoAttention-style head scores for the "duo" KV policy (longattn.h):
 * n_prompts synthetic retrieval prompts, built in code (no download): a
 * haystack of `context` tokens of varied filler sentences with the fact
 * "The secret code for CITY is DDDDDDD." inserted at depth (i + 0.5) /
 * n_prompts, then "Question: What is the secret code for CITY? Answer: The
 * secret code for CITY is DDDDDDD." Each prompt runs in a session whose h2o
 * policy keeps every entry, so la_kv_policy_state_scores is the exact
 * attention mass each entry received; scores[layer * n_head_kv + head] is
 * the mass the question and answer tokens put on the fact's tokens,
 * divided by (those tokens x query heads per KV head), averaged over the
 * prompts: in [0, 1], high for heads that retrieve. seed picks the filler,
 * city and digits. */
typedef struct {
    int64_t n_prompts; /* [1, 4096] */
    int64_t context;   /* haystack tokens, [16, 2^24] */
    uint64_t seed;
} la_duo_params;

/* 4 prompts of 1024 tokens, seed 1. */
LA_API la_duo_params la_duo_params_default(void);
/* scores: [n_layer x n_head_kv] floats. Errors: LA_ERR_NULL, LA_ERR_ARGUMENT,
 * and the session's (LA_ERR_NOMEM, ...). */
LA_API la_status la_duo_calibrate(const la_model *m, la_context *ctx, const la_duo_params *p, float *scores);
/* Write scores in the format the duo policy reads (longattn.h: a header
 * line "longattn-duo-scores 1 LAYERS KV_HEADS", then one line per layer).
 * LA_ERR_NULL, LA_ERR_ARGUMENT (sizes outside [1, 2^20], a score not
 * finite: the policy would refuse the file; nothing is written), LA_ERR_IO
 * when the file cannot be written. */
LA_API la_status la_duo_scores_write(const char *path, const float *scores, int64_t n_layers, int64_t n_kv_heads);

/* ----------------------------------------------------- sampler */

/* Token sampling from logits: greedy, or temperature then top-k then top-p
 * (nucleus) then a draw from the sampler's own PRNG, so a seed fixes the
 * sequence on every platform. No repetition penalties: the sampler keeps no
 * history beyond its PRNG state. */
typedef struct {
    float temperature; /* <= 0: greedy (argmax, lowest id on ties); otherwise logits / temperature */
    int32_t top_k;     /* keep the k most likely tokens; <= 0: off */
    float top_p;       /* keep the smallest most-likely prefix whose mass reaches top_p; 1: off; in (0, 1] */
    uint64_t seed;     /* PRNG seed; the same seed gives the same draws */
} la_sampler_params;

/* temperature 0.8, top_k 40, top_p 0.95 (llama.cpp's defaults), seed 0. */
LA_API la_sampler_params la_sampler_params_default(void);

typedef struct la_sampler la_sampler;

LA_API la_status la_sampler_new(const la_sampler_params *p, int32_t n_vocab, la_sampler **out);
LA_API void la_sampler_free(la_sampler *s);
/* Restart the PRNG from `seed`. */
LA_API void la_sampler_reseed(la_sampler *s, uint64_t seed);

/* Draw one token id from logits[0 .. n_vocab). Non-finite logits fail with
 * LA_ERR_ARGUMENT (+inf or NaN mean the forward pass went wrong; -inf is a
 * masked token and is accepted as long as one logit is finite). */
LA_API la_status la_sampler_sample(la_sampler *s, const float *logits, int32_t *token);

/* The distribution la_sampler_sample draws from: probs[0 .. n_vocab), zero
 * for tokens the filters removed, summing to 1. Greedy gives a one-hot
 * vector. For tests and for showing the sampler's view of a step. */
LA_API la_status la_sampler_distribution(la_sampler *s, const float *logits, float *probs);

/* -------------------------------------------------------- chat */

/* Chat prompts: recognise the template family named by a model's
 * tokenizer.chat_template metadata and format one system + user turn plus the
 * assistant header the model continues from. Not a Jinja interpreter: the
 * two families longattn knows are written out in chat.c. */
typedef enum {
    LA_CHAT_CHATML = 1, /* <|im_start|>role\n...<|im_end|>\n   (SmolLM2, Qwen2) */
    LA_CHAT_LLAMA3 = 2, /* <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|> */
} la_chat_style;

typedef struct {
    la_chat_style style;
    /* The system turn the template writes when the conversation has none
     * (SmolLM2: "You are a helpful AI assistant named SmolLM, ..."), or NULL.
     * Owned; la_chat_template_free releases it. */
    char *default_system;
} la_chat_template;

/* Recognise a template's source text: "<|im_start|>" means ChatML,
 * "<|start_header_id|>" Llama-3. Anything else is LA_ERR_UNSUPPORTED. */
LA_API la_status la_chat_template_parse(const char *source, size_t len, la_chat_template *out);
/* The same, from the model's tokenizer.chat_template (LA_ERR_UNSUPPORTED
 * naming the key when it is absent). */
LA_API la_status la_chat_template_of_gguf(const la_gguf *g, la_chat_template *out);
LA_API void la_chat_template_free(la_chat_template *t);

/* Prompt text for one turn: system (NULL: the template's default, if any;
 * "" included as an empty turn), the user's message and the assistant header.
 * The BOS token is not written: tokenise with the tokenizer's add_bos, and
 * with parse_special so the markers become their special tokens.
 * *text is malloc'd and NUL-terminated; *len (may be NULL) excludes the NUL. */
LA_API la_status la_chat_format(const la_chat_template *t, const char *system, const char *user, char **text, size_t *len);

/* -------------------------------------------------- generation */

/* Text generation on a session: prefill the prompt in chunks, then sample
 * one token at a time until an end-of-generation token, the token limit, the
 * session's context limit, or the caller says stop. Tokens are handed to a
 * callback as they come, so a front end can stream them. */
/* Tokens per la_session_eval call while prefilling: large enough that the
 * matrix-matrix prefill reads each weight once per many tokens, small enough
 * that the activations (~ chunk x n_ff floats per layer) stay a few MB for
 * the models longattn runs, and that progress is reported often. */
#define LA_PREFILL_CHUNK_DEFAULT 512

typedef enum {
    LA_STOP_EOG = 0,      /* the model produced an end-of-generation token */
    LA_STOP_LIMIT = 1,    /* max_new_tokens reached */
    LA_STOP_CONTEXT = 2,  /* the session's max_ctx is full */
    LA_STOP_CALLER = 3,   /* on_token returned false */
} la_stop_reason;

typedef struct {
    int64_t max_new_tokens; /* < 0: no limit but the context */
    int64_t prefill_chunk;  /* <= 0: LA_PREFILL_CHUNK_DEFAULT */
    /* Tokens the session may hold: the max_ctx it was created with (model.h
     * has no getter for it). Generation stops cleanly when it is full; a
     * larger value counts as the session's own max_ctx, a smaller one
     * stops generation there. */
    int64_t max_ctx;
    /* After each prefill chunk: tokens done so far of total. May be NULL. */
    void (*on_prefill)(void *user, int64_t done, int64_t total);
    /* Each generated token (end-of-generation tokens excluded); return false
     * to stop. May be NULL. */
    bool (*on_token)(void *user, int32_t token);
    void *user;
} la_generate_params;

typedef struct {
    int64_t n_prompt;      /* tokens prefilled */
    int64_t n_generated;   /* tokens passed to on_token */
    int64_t n_decode;      /* single-token forward passes run after the prefill */
    double prompt_seconds; /* wall time of the prefill */
    double decode_seconds; /* wall time of those forward passes (sampling included) */
    double prompt_tps;     /* n_prompt / prompt_seconds */
    double decode_tps;     /* n_decode / decode_seconds; 0 when none ran */
    la_stop_reason stop;
    int32_t eog_token;     /* the token that ended generation when stop == LA_STOP_EOG, else -1 */
} la_generate_stats;

/* max_new_tokens 256, default chunk, no callbacks; max_ctx must be set. */
LA_API la_generate_params la_generate_params_default(void);

/* Continue session s of model m (s may already hold tokens) with the prompt,
 * then generate. The prompt must be non-empty and fit in p->max_ctx, and
 * the sampler be made for the model's n_vocab (LA_ERR_ARGUMENT otherwise).
 * stats may be NULL. */
LA_API la_status la_generate(const la_model *m, la_session *s, la_sampler *sampler, const int32_t *prompt, int64_t n_prompt,
                      const la_generate_params *p, la_generate_stats *stats);

/* ------------------------------------------------ evaluation tasks */

/* Synthetic long-context tasks in the manner of the needle-in-a-haystack
 * test and RULER (Hsieh et al. 2024), built in code from a seed (nothing is
 * downloaded), and their scorer; `longattn eval` runs them over KV-cache
 * policies. The context is filler sentences (varied, made from word lists
 * by a seeded generator, no digits) with the task's statements inserted
 * between sentences:
 *  - LA_EVAL_NEEDLE: "The special magic number for CITY is NNNNNNN." at
 *    `depth`; the answer is the 7 digits.
 *  - LA_EVAL_MULTIKEY: n_keys such needles, each for another city and
 *    number: the queried one at `depth`, the others at seeded random depths.
 *  - LA_EVAL_VARTRACK: n_chains chains "VAR ABCDE = 12345." then
 *    "VAR FGHIJ = VAR ABCDE." ... (n_hops assignments after the first),
 *    spread evenly through the filler in order; the answers are the names
 *    of the first chain's variables (all hold its value). depth is unused. */
typedef enum { LA_EVAL_NEEDLE = 0, LA_EVAL_MULTIKEY = 1, LA_EVAL_VARTRACK = 2 } la_eval_task;

typedef struct {
    la_eval_task task;
    /* Tokens of the context to build, statements included, in
     * [1, LA_SESSION_MAX_CTX]. Counted as the sum of each sentence's tokens
     * (tokenised with its leading space, no BOS), or of its words when the
     * tokenizer is NULL. Filler is added while it fits (a sentence too long
     * for the room left is skipped for a shorter one), so the context holds
     * at most n_tokens, and less only by fewer tokens than its longest
     * sentence. */
    int64_t n_tokens;
    /* In [0, 1]: the share of the filler's tokens before the (queried)
     * needle, to the nearest sentence boundary. */
    double depth;
    uint64_t seed;    /* the same parameters and seed give the same sample */
    int32_t n_keys;   /* multikey: needles, in [2, 64] (default 4) */
    int32_t n_chains; /* vartrack: chains, in [1, 16] (default 2) */
    int32_t n_hops;   /* vartrack: assignments after each chain's first, in [0, 16] (default 4) */
} la_eval_params;

/* needle, n_tokens 0 (must be set), depth 0.5, seed 0, 4 keys, 2 chains of 4 hops. */
LA_API la_eval_params la_eval_params_default(void);

/* A built sample. Every string is malloc'd and NUL-terminated;
 * la_eval_sample_free releases them. */
typedef struct {
    char *instruction;   /* what to memorise, said before the context */
    char *context;       /* filler with the statements, sentences joined by single spaces */
    char *question;      /* asked after the context */
    char *answer_prefix; /* the reply's opening words, written into the prompt (RULER's answer prefix) */
    char **answers;      /* strings a correct reply contains, n_answers of them */
    int32_t n_answers;
    int32_t max_answer_tokens; /* a reply this long has room for every answer */
    int64_t n_tokens;          /* tokens of context, counted as la_eval_params says */
    int64_t needle_offset;     /* byte offset in context of the queried needle (vartrack: the first chain's first statement) */
    int64_t needle_tokens;     /* context tokens before it, counted the same way */
} la_eval_sample;

/* Build a sample. t may be NULL (words are counted instead of tokens).
 * Errors: LA_ERR_NULL, LA_ERR_ARGUMENT (a parameter outside its range, or
 * n_tokens too small for the statements, naming both counts), LA_ERR_NOMEM,
 * and the tokenizer's. *out is zeroed first, so la_eval_sample_free is safe
 * after a failure. */
LA_API la_status la_eval_build(const la_tokenizer *t, const la_eval_params *p, la_eval_sample *out);
LA_API void la_eval_sample_free(la_eval_sample *s);

/* The prompt: the user turn "instruction\ncontext\nquestion" formatted by
 * the chat template (its default system turn), followed by the answer
 * prefix; tmpl NULL writes the turn and the prefix as plain text joined by
 * newlines. Tokenise with the tokenizer's add_bos and parse_special. */
LA_API la_status la_eval_prompt(const la_eval_sample *s, const la_chat_template *tmpl, char **text, size_t *len);

/* Score a reply (len bytes, not necessarily NUL-terminated): the share of
 * the sample's answers found in it as whole words (the bytes on either side
 * are not letters or digits), in [0, 1]; for a needle that is exact match of
 * the 7 digits. Errors: LA_ERR_NULL. */
LA_API la_status la_eval_score(const la_eval_sample *s, const char *reply, size_t len, double *score);

#ifdef __cplusplus
}
#endif
#endif /* LONGATTN_MODEL_H */
