/* The generation loop: chunked prefill, then sample / eval one token at a
 * time. The first token is sampled from the prefill's logits, so n tokens
 * cost n - 1 decode passes (the last token is never fed back). */
#include "longattn_model.h"

#include "base/base.h"
#include "model/sampler.h"

#include <stdlib.h>

la_generate_params la_generate_params_default(void) {
    return (la_generate_params){.max_new_tokens = 256, .prefill_chunk = LA_PREFILL_CHUNK_DEFAULT};
}

static la_status prefill(la_session *s, const int32_t *prompt, int64_t n_prompt, const la_generate_params *p,
                         float *logits) {
    const int64_t chunk = p->prefill_chunk > 0 ? p->prefill_chunk : LA_PREFILL_CHUNK_DEFAULT;
    for (int64_t done = 0; done < n_prompt;) {
        int64_t n = n_prompt - done < chunk ? n_prompt - done : chunk;
        /* Never leave one token for a chunk of its own: a lone token runs the
         * single-token path (int8-rounded activations), so its result would
         * depend on where the chunks fall. With this, any prefill_chunk >= 2
         * gives the same bits. */
        if (n_prompt - done - n == 1) n++;
        /* Only the last chunk's last row of logits is needed. */
        la_status st = la_session_eval(s, prompt + done, n, done + n == n_prompt ? logits : NULL, false);
        if (st) return st;
        done += n;
        if (p->on_prefill) p->on_prefill(p->user, done, n_prompt);
    }
    return LA_OK;
}

la_status la_generate(const la_model *m, la_session *s, la_sampler *sampler, const int32_t *prompt, int64_t n_prompt,
                      const la_generate_params *p, la_generate_stats *stats) {
    if (!m || !s || !sampler || !prompt || !p)
        return la_fail(LA_ERR_NULL, "la_generate: %s is NULL",
                       !m ? "model m" : !s ? "session s" : !sampler ? "sampler" : !prompt ? "prompt" : "params p");
    /* the logits buffer and the token checks are sized by m: a session of another model overruns them */
    if (la_session_model(s) != m)
        return la_fail(LA_ERR_ARGUMENT, "la_generate: session s was made for another model than m");
    if (n_prompt <= 0) return la_fail(LA_ERR_ARGUMENT, "la_generate: n_prompt is %lld; must be > 0", (long long)n_prompt);
    if (p->max_ctx <= 0)
        return la_fail(LA_ERR_ARGUMENT, "la_generate: p->max_ctx is %lld; set it to the session's max_ctx",
                       (long long)p->max_ctx);
    /* the session's own capacity (its cache holds max_ctx positions) bounds a larger p->max_ctx: generation
     * stops there as LA_STOP_CONTEXT, where it failed with "context full" after handing out tokens */
    const int64_t own = la_kv_cache_params_of(la_session_kv_cache(s))->max_tokens;
    const int64_t max_ctx = p->max_ctx < own ? p->max_ctx : own;
    const int64_t start = la_session_pos(s);
    int64_t end_of_prompt;
    if (!la_add_i64(start, n_prompt, &end_of_prompt) || end_of_prompt > max_ctx)
        return la_fail(LA_ERR_ARGUMENT, "la_generate: %lld prompt tokens after %lld cached ones exceed max_ctx %lld",
                       (long long)n_prompt, (long long)start, (long long)max_ctx);
    const la_tokenizer *tok = la_model_tokenizer(m);
    const int64_t n_vocab = la_model_config_of(m)->n_vocab;
    /* the sampler reads its own n_vocab logits from a buffer of the model's */
    if (la_sampler_vocab(sampler) != n_vocab)
        return la_fail(LA_ERR_ARGUMENT, "la_generate: the sampler was made for %d tokens; the model has %lld",
                       (int)la_sampler_vocab(sampler), (long long)n_vocab);
    for (int64_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= n_vocab)
            return la_fail(LA_ERR_ARGUMENT, "la_generate: prompt[%lld] = %d is not a token id (vocabulary %lld)",
                           (long long)i, (int)prompt[i], (long long)n_vocab);
    float *logits = malloc((size_t)n_vocab * sizeof *logits);
    if (!logits) return la_fail(LA_ERR_NOMEM, "la_generate: no memory for %lld logits", (long long)n_vocab);

    la_generate_stats st_out = {.n_prompt = n_prompt, .eog_token = -1, .stop = LA_STOP_LIMIT};
    double t0 = la_clock_seconds();
    /* one prompt for the KV policy however many chunks feed it (snapkv selects at its end) */
    la_status st = la_session_prompt(s, true);
    if (!st) st = prefill(s, prompt, n_prompt, p, logits);
    const la_status closed = la_session_prompt(s, false);
    if (!st) st = closed;
    double t1 = la_clock_seconds();
    st_out.prompt_seconds = t1 - t0;
    const int64_t limit = p->max_new_tokens;
    while (st == LA_OK && (limit < 0 || st_out.n_generated < limit)) {
        int32_t token;
        if ((st = la_sampler_sample(sampler, logits, &token))) break;
        if (la_tokenizer_is_eog(tok, token)) {
            st_out.stop = LA_STOP_EOG;
            st_out.eog_token = token;
            break;
        }
        st_out.n_generated++;
        if (p->on_token && !p->on_token(p->user, token)) {
            st_out.stop = LA_STOP_CALLER;
            break;
        }
        if (st_out.n_generated == limit) break; /* no pass for a token nothing will follow */
        if (la_session_pos(s) >= max_ctx) {
            st_out.stop = LA_STOP_CONTEXT;
            break;
        }
        st = la_session_eval(s, &token, 1, logits, false);
        st_out.n_decode++;
    }
    st_out.decode_seconds = la_clock_seconds() - t1;
    free(logits);
    if (st) return st; /* the failing call's message stands */
    st_out.prompt_tps = st_out.prompt_seconds > 0 ? (double)n_prompt / st_out.prompt_seconds : 0;
    st_out.decode_tps = st_out.decode_seconds > 0 && st_out.n_decode > 0 ? (double)st_out.n_decode / st_out.decode_seconds : 0;
    if (stats) *stats = st_out;
    return la_succeed();
}
