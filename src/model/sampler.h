/* What the library's own callers of a sampler need beyond
 * longattn_model.h (sampler.c). */
#ifndef LA_MODEL_SAMPLER_H
#define LA_MODEL_SAMPLER_H

#include "longattn_model.h"

/* The n_vocab the sampler was made for: the logits it reads (0 for NULL). */
int32_t la_sampler_vocab(const la_sampler *s);

#endif
