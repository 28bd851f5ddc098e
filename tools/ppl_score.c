/* Perplexity scoring shared by longattn ppl and longattn eval. */
#include "ppl_score.h"

#include <math.h>
#include <string.h>

/* -log softmax(logits)[target], in double. */
static double token_nll(const float *logits, int64_t n_vocab, int32_t target) {
    float max = logits[0];
    for (int64_t i = 1; i < n_vocab; i++) max = logits[i] > max ? logits[i] : max;
    double sum = 0;
    for (int64_t i = 0; i < n_vocab; i++) sum += exp((double)logits[i] - max);
    return log(sum) - ((double)logits[target] - max);
}

void tally_result(const ppl_tally *t, double *ppl, double *err) {
    double mean = t->nll / (double)t->count, var = t->nll2 / (double)t->count - mean * mean;
    *ppl = exp(mean);
    *err = t->count > 1 && var > 0 ? *ppl * sqrt(var / (double)(t->count - 1)) : 0;
}

la_status score_chunk(la_session *s, const int32_t *tokens, int64_t n_ctx, int32_t bos, int64_t n_vocab,
                      float *logits, ppl_tally *t) {
    const int64_t first = n_ctx / 2;
    int32_t batch[PPL_EVAL_BATCH];
    la_session_reset(s);
    for (int64_t start = 0; start < n_ctx; start += PPL_EVAL_BATCH) {
        int64_t n = n_ctx - start < PPL_EVAL_BATCH ? n_ctx - start : PPL_EVAL_BATCH;
        memcpy(batch, tokens + start, (size_t)n * sizeof *batch);
        if (start == 0 && bos >= 0) batch[0] = bos;
        bool scored = start + n > first; /* logits of positions first .. n_ctx-2 are scored */
        la_status st = la_session_eval(s, batch, n, scored ? logits : NULL, scored);
        if (st) return st;
        if (!scored) continue;
        for (int64_t i = start > first ? start : first; i < start + n && i < n_ctx - 1; i++) {
            double nll = token_nll(logits + (i - start) * n_vocab, n_vocab, tokens[i + 1]);
            t->nll += nll;
            t->nll2 += nll * nll;
            t->count++;
        }
    }
    return LA_OK;
}
