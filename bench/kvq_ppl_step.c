/* Perplexity through the decode path: as `longattn ppl` (chunks of CTX
 * tokens, the second half of each scored, BOS first when the model adds
 * one), but the scored half is evaluated one token at a time, so every
 * prediction comes from a single-token step whose attention is
 * la_kv_cache_decode over the cache's pages (quantised ones read in place
 * by the kvq decode kernel). `longattn ppl` evaluates batches of 256
 * tokens (prefill: attention over an f32 copy of the cache), which never
 * runs that kernel. Prints the perplexity and a checksum of every scored
 * logit's bits (equal checksums: bit-identical logits).
 *   cc -O2 -Iinclude bench/kvq_ppl_step.c -Lbuild -llongattn_model -llongattn -Wl,-rpath,$PWD/build -fopenmp -lm \
 *      -o /tmp/kvq_ppl
 *   /tmp/kvq_ppl MODEL TEXT CTX f16|q8|q4 [EXACT 0|1] [BYTES (default 20000)] [THREADS (2)] */
#include "longattn.h"
#include "longattn_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s MODEL TEXT CTX f16|q8|q4 [EXACT] [BYTES] [THREADS]\n", argv[0]);
        return 2;
    }
    const int64_t ctx_n = atoll(argv[3]);
    const bool exact = argc > 5 && atoi(argv[5]);
    const long bytes = argc > 6 ? atol(argv[6]) : 20000;
    const int threads = argc > 7 ? atoi(argv[7]) : 2;
    FILE *f = fopen(argv[2], "rb");
    if (!f) return perror(argv[2]), 1;
    char *text = malloc((size_t)bytes + 1);
    const size_t len = fread(text, 1, (size_t)bytes, f);
    fclose(f);
    la_model *m = NULL;
    if (la_model_load(argv[1], &m)) return fprintf(stderr, "%s\n", la_last_error()), 1;
    const la_tokenizer *tok = la_model_tokenizer(m);
    const bool add_bos = la_tokenizer_add_bos(tok);
    int32_t *tokens = NULL;
    int64_t n_tokens = 0;
    if (la_tokenize(tok, text, len, add_bos, false, &tokens, &n_tokens)) return fprintf(stderr, "%s\n", la_last_error()), 1;
    const int64_t V = la_model_config_of(m)->n_vocab, n_chunks = n_tokens / ctx_n, first = ctx_n / 2;
    la_context *ctx = NULL;
    la_context_create(&ctx, threads);
    la_session_params sp = la_session_params_default();
    sp.max_ctx = ctx_n, sp.exact_decode = exact;
    if (!strcmp(argv[4], "q8")) sp.kv_quant = LA_KV_Q8;
    else if (!strcmp(argv[4], "q4")) sp.kv_quant = LA_KV_Q4;
    la_session *s = NULL;
    if (la_session_new_with(m, ctx, &sp, &s)) return fprintf(stderr, "%s\n", la_last_error()), 1;
    float *logits = malloc(sizeof(float) * (size_t)V);
    const int32_t bos = add_bos ? la_tokenizer_bos(tok) : -1;
    double nll = 0, nll2 = 0;
    int64_t count = 0;
    uint64_t sum = 0;
    for (int64_t c = 0; c < n_chunks; c++) {
        int32_t *t = tokens + c * ctx_n, t0 = t[0];
        if (bos >= 0) t[0] = bos;
        la_session_reset(s);
        /* the unscored first half as one batch, then positions first .. ctx - 2 (scored, as ppl) alone */
        if (la_session_eval(s, t, first, NULL, false)) return fprintf(stderr, "%s\n", la_last_error()), 1;
        for (int64_t i = first; i < ctx_n - 1; i++) {
            if (la_session_eval(s, t + i, 1, logits, false)) return fprintf(stderr, "%s\n", la_last_error()), 1;
            float mx = logits[0];
            for (int64_t v = 1; v < V; v++) mx = logits[v] > mx ? logits[v] : mx;
            double z = 0;
            for (int64_t v = 0; v < V; v++) z += exp((double)logits[v] - mx);
            const double e = log(z) - ((double)logits[t[i + 1]] - mx);
            nll += e, nll2 += e * e, count++;
            for (int64_t v = 0; v < V; v++) {
                uint32_t b;
                memcpy(&b, &logits[v], 4);
                sum = sum * 1099511628211ull + b;
            }
        }
        t[0] = t0;
    }
    const double mean = nll / (double)count, var = nll2 / (double)count - mean * mean;
    printf("{\"kv\":\"%s\",\"exact\":%d,\"ctx\":%lld,\"scored\":%lld,\"ppl\":%.4f,\"err\":%.4f,\"checksum\":\"%016llx\"}\n",
           argv[4], (int)exact, (long long)ctx_n, (long long)count, exp(mean), exp(mean) * sqrt(var / (double)(count - 1)),
           (unsigned long long)sum);
    la_session_free(s), la_context_destroy(ctx), la_model_free(m);
    free(tokens), free(text), free(logits);
    return 0;
}
