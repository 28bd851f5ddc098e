/* Perplexity scoring the ppl and eval subcommands share: llama.cpp's
 * chunked scheme (each chunk from an empty cache, BOS first, the second half
 * of its predictions scored). */
#ifndef LA_PPL_SCORE_H
#define LA_PPL_SCORE_H

#include "longattn_model.h"

#include <stdint.h>

/* Tokens per la_session_eval call. The scored half needs all its logits, so
 * a batch costs batch x n_vocab floats (256 x 49152 x 4 B = 48 MiB for
 * SmolLM2): big enough for an efficient matrix-matrix prefill, small enough
 * that --ctx 8192 does not need gigabytes of logits. */
#define PPL_EVAL_BATCH 256

typedef struct {
    double nll, nll2; /* sums of -log p and its square */
    int64_t count;
} ppl_tally;

/* Perplexity and its standard error by the delta method:
 * PPL = exp(mean), sd(PPL) ~ PPL * sd(mean). */
void tally_result(const ppl_tally *t, double *ppl, double *err);

/* Evaluate one chunk of n_ctx tokens from an empty cache (its first token
 * replaced by bos when bos >= 0) and add its scored predictions to t.
 * logits: PPL_EVAL_BATCH x n_vocab floats of scratch. */
la_status score_chunk(la_session *s, const int32_t *tokens, int64_t n_ctx, int32_t bos, int64_t n_vocab,
                      float *logits, ppl_tally *t);

#endif
