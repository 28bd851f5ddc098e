/* Text generation on a session: prefill the prompt in chunks, then sample
 * one token at a time until an end-of-generation token, the token limit, the
 * session's context limit, or the caller says stop. Tokens are handed to a
 * callback as they come, so a front end can stream them. */
#ifndef LA_GENERATE_H
#define LA_GENERATE_H

#include "model.h"
#include "sampler.h"

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
     * has no getter for it). Generation stops cleanly when it is full. */
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
la_generate_params la_generate_params_default(void);

/* Continue session s of model m (s may already hold tokens) with the prompt,
 * then generate. The prompt must be non-empty and fit in p->max_ctx.
 * stats may be NULL. */
la_status la_generate(const la_model *m, la_session *s, la_sampler *sampler, const int32_t *prompt, int64_t n_prompt,
                      const la_generate_params *p, la_generate_stats *stats);

#endif
