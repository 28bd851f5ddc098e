/* Single-token generation steps of the model session at a long context,
 * without the prefill that would put the context there (an 8K prefill is
 * ~80 s on a 2-core host, its steps ~2 s): every layer's cache is filled
 * with CTX random entries through la_kv_cache_append, then STEPS tokens are
 * run one at a time. The step reads the same bytes and does the same work
 * as after a real prompt (attention cost does not depend on the values);
 * the text it makes is meaningless. Prints one JSON line: wall and process
 * CPU ms per step (best and median of ROUNDS rounds of STEPS steps), for
 * A/B of two builds in alternating runs of this program.
 *
 *   cc -O2 -Iinclude bench/gen_step.c build/liblongattn_model.a build/liblongattn.a \
 *      -fopenmp -lm -lpcre2-8 -o /tmp/gen_step
 *   /tmp/gen_step models/SmolLM2-135M-Instruct.Q4_1.gguf [f16|q8] [CTX] [THREADS]
 *
 * Environment: STEPS (default 16), ROUNDS (default 4). */
#define _GNU_SOURCE
#include "longattn.h"
#include "longattn_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

#define CHECK(x)                                                                                                      \
    do {                                                                                                              \
        if (x) {                                                                                                      \
            fprintf(stderr, "gen_step: %s\n", la_last_error());                                                      \
            return 1;                                                                                                 \
        }                                                                                                             \
    } while (0)

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: gen_step MODEL [f16|q8|f32] [CTX] [THREADS]\n");
        return 2;
    }
    const char *type = argc > 2 ? argv[2] : "f16";
    const int64_t ctx_len = argc > 3 ? atoll(argv[3]) : 8192;
    const int threads = argc > 4 ? atoi(argv[4]) : 2;
    const int steps = getenv("STEPS") ? atoi(getenv("STEPS")) : 16, rounds = getenv("ROUNDS") ? atoi(getenv("ROUNDS")) : 4;
    if (steps <= 0 || rounds <= 0 || rounds > 64 || ctx_len <= 0) return 2;
    la_model *m;
    la_context *ctx;
    la_session *s;
    CHECK(la_model_load(argv[1], &m));
    CHECK(la_context_create(&ctx, threads));
    const la_model_config *c = la_model_config_of(m);
    la_session_params p = la_session_params_default();
    p.max_ctx = ctx_len + (int64_t)steps * rounds + 16;
    if (!strcmp(type, "q8")) p.kv_quant = LA_KV_Q8;
    else if (!strcmp(type, "f32")) p.kv_type = LA_F32;
    CHECK(la_session_new_with(m, ctx, &p, &s));

    /* the cache's entries: keys and values of the size real ones have */
    const int64_t KV = c->n_head_kv * c->head_dim, chunk = 512;
    float *k = malloc(sizeof(float) * (size_t)(chunk * KV)), *v = malloc(sizeof(float) * (size_t)(chunk * KV));
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)chunk);
    float *logits = malloc(sizeof(float) * (size_t)c->n_vocab);
    if (!k || !v || !pos || !logits) return 1;
    uint64_t r = 88172645463325252ull;
    la_kv_cache *kv = (la_kv_cache *)la_session_kv_cache(s); /* a benchmark's shortcut: the session reads it back */
    for (int64_t l = 0; l < c->n_layer; l++)
        for (int64_t at = 0; at < ctx_len; at += chunk) {
            int64_t n = ctx_len - at < chunk ? ctx_len - at : chunk;
            for (int64_t i = 0; i < n * KV; i++) {
                r ^= r << 13, r ^= r >> 7, r ^= r << 17;
                k[i] = (float)((double)(r >> 11) / 9007199254740992.0 * 8 - 4);
                v[i] = (float)((double)(r & 0xffff) / 65536.0 * 2 - 1);
            }
            for (int64_t i = 0; i < n; i++) pos[i] = (int32_t)(at + i);
            CHECK(la_kv_cache_append(kv, l, 0, n, k, v, pos));
        }
    int32_t tok = 1;
    for (int i = 0; i < 4; i++) CHECK(la_session_eval(s, &tok, 1, logits, false)); /* warm: pages, threads */
    double wall[64], cpu[64];
    for (int ro = 0; ro < rounds; ro++) {
        double w0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_PROCESS_CPUTIME_ID);
        for (int i = 0; i < steps; i++) {
            CHECK(la_session_eval(s, &tok, 1, logits, false));
            int best = 0; /* greedy, as generation would */
            for (int64_t j = 1; j < c->n_vocab; j++) best = logits[j] > logits[best] ? (int)j : best;
            tok = best;
        }
        wall[ro] = (now(CLOCK_MONOTONIC) - w0) / steps;
        cpu[ro] = (now(CLOCK_PROCESS_CPUTIME_ID) - c0) / steps;
    }
    double ws[64], cs[64];
    memcpy(ws, wall, sizeof(double) * (size_t)rounds), memcpy(cs, cpu, sizeof(double) * (size_t)rounds);
    qsort(ws, (size_t)rounds, sizeof(double), cmp), qsort(cs, (size_t)rounds, sizeof(double), cmp);
    printf("{\"kv\":\"%s\",\"ctx\":%lld,\"threads\":%d,\"steps\":%d,\"rounds\":%d,\"ms_best\":%.3f,\"ms_median\":%.3f,"
           "\"tok_s_best\":%.2f,\"cpu_ms_best\":%.3f,\"cpu_ms_median\":%.3f,\"kv_bytes\":%zu,\"last_token\":%d}\n",
           type, (long long)ctx_len, threads, steps, rounds, ws[0], ws[rounds / 2], 1e3 / ws[0], cs[0], cs[rounds / 2],
           la_session_kv_bytes(s), tok);
    la_session_free(s);
    la_context_destroy(ctx);
    la_model_free(m);
    free(k), free(v), free(pos), free(logits);
    return 0;
}
