/* Token sampling from logits: greedy, or temperature then top-k then top-p
 * (nucleus) then a draw from the sampler's own PRNG, so a seed fixes the
 * sequence on every platform. No repetition penalties: the sampler keeps no
 * history beyond its PRNG state. */
#ifndef LA_SAMPLER_H
#define LA_SAMPLER_H

#include "longattn.h"

#include <stdbool.h>

typedef struct {
    float temperature; /* <= 0: greedy (argmax, lowest id on ties); otherwise logits / temperature */
    int32_t top_k;     /* keep the k most likely tokens; <= 0: off */
    float top_p;       /* keep the smallest most-likely prefix whose mass reaches top_p; 1: off; in (0, 1] */
    uint64_t seed;     /* PRNG seed; the same seed gives the same draws */
} la_sampler_params;

/* temperature 0.8, top_k 40, top_p 0.95 (llama.cpp's defaults), seed 0. */
la_sampler_params la_sampler_params_default(void);

typedef struct la_sampler la_sampler;

la_status la_sampler_new(const la_sampler_params *p, int32_t n_vocab, la_sampler **out);
void la_sampler_free(la_sampler *s);
/* Restart the PRNG from `seed`. */
void la_sampler_reseed(la_sampler *s, uint64_t seed);

/* Draw one token id from logits[0 .. n_vocab). Non-finite logits fail with
 * LA_ERR_ARGUMENT (+inf or NaN mean the forward pass went wrong; -inf is a
 * masked token and is accepted as long as one logit is finite). */
la_status la_sampler_sample(la_sampler *s, const float *logits, int32_t *token);

/* The distribution la_sampler_sample draws from: probs[0 .. n_vocab), zero
 * for tokens the filters removed, summing to 1. Greedy gives a one-hot
 * vector. For tests and for showing the sampler's view of a step. */
la_status la_sampler_distribution(la_sampler *s, const float *logits, float *probs);

#endif
