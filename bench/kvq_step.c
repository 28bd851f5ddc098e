/* One layer of decode over an int8 (or int4) KV cache at the model's shape (9 query heads over 3 KV
 * heads, D 64, page 256, groups 32, window 32), L keys, rotating over 8 layers so the codes come from
 * memory as in the model: ms per la_kv_cache_decode call (best and median of ROUNDS rounds of REPS
 * calls), CPU ms, and a checksum of the output (equal checksums: bit-identical kernels).
 *   cc -O2 -Iinclude bench/kvq_step.c build/liblongattn.a -fopenmp -lm -o /tmp/kvq_step
 *   /tmp/kvq_step [L] [THREADS] [q8|q4]; environment REPS (50), ROUNDS (5), TAG (a label), LAYERS (8) */
#define _GNU_SOURCE
#include "longattn.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(clockid_t c) { struct timespec t; clock_gettime(c, &t); return t.tv_sec * 1e3 + t.tv_nsec * 1e-6; }
static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }
int main(int argc, char **argv) {
    const int64_t L = argc > 1 ? atoll(argv[1]) : 8192; const int threads = argc > 2 ? atoi(argv[2]) : 2;
    const int q4 = argc > 3 && !strcmp(argv[3], "q4");
    const int reps = getenv("REPS") ? atoi(getenv("REPS")) : 50, rounds = getenv("ROUNDS") ? atoi(getenv("ROUNDS")) : 5;
    /* rotate over layers so the data comes from memory as in the model (30 x 3.5 MB); LAYERS=1: from L3 */
    const int layers = getenv("LAYERS") ? atoi(getenv("LAYERS")) : 8;
    const int64_t Hkv = 3, H = 9, D = 64;
    la_context *ctx; if (la_context_create(&ctx, threads)) return 1;
    la_kv_cache_params p = la_kv_cache_params_default();
    p.n_layers = layers, p.n_kv_heads = Hkv, p.head_dim = D, p.page_size = 256, p.max_tokens = L + 64, p.max_seqs = 1;
    p.quant = q4 ? LA_KV_Q4 : LA_KV_Q8, p.quant_key_group = 32, p.quant_value_group = q4 ? 16 : 32, p.quant_window = 32;
    la_kv_cache *c; if (la_kv_cache_create(&p, &c)) { fprintf(stderr, "%s\n", la_last_error()); return 1; }
    const int64_t chunk = 512; float *k = malloc(sizeof(float) * chunk * Hkv * D), *v = malloc(sizeof(float) * chunk * Hkv * D);
    int32_t *pos = malloc(sizeof(int32_t) * chunk); uint64_t r = 88172645463325252ull;
    for (int l = 0; l < layers; l++)
        for (int64_t at = 0; at < L; at += chunk) {
            int64_t n = L - at < chunk ? L - at : chunk;
            for (int64_t i = 0; i < n * Hkv * D; i++) { r ^= r << 13, r ^= r >> 7, r ^= r << 17;
                k[i] = (float)((double)(r >> 11) / 9007199254740992.0 * 8 - 4); v[i] = (float)((double)(r & 0xffff) / 65536.0 * 2 - 1); }
            for (int64_t i = 0; i < n; i++) pos[i] = (int32_t)(at + i);
            if (la_kv_cache_append(c, l, 0, n, k, v, pos)) { fprintf(stderr, "%s\n", la_last_error()); return 1; }
        }
    float *q = malloc(sizeof(float) * H * D), *o = malloc(sizeof(float) * H * D);
    for (int i = 0; i < H * D; i++) { r ^= r << 13, r ^= r >> 7, r ^= r << 17; q[i] = (float)((double)(r >> 11) / 9007199254740992.0 * 2 - 1); }
    la_tensor qt = la_tensor_contiguous(q, LA_F32, 4, (int64_t[]){1, 1, H, D}), ot = la_tensor_contiguous(o, LA_F32, 4, (int64_t[]){1, 1, H, D});
    la_attention_params ap = la_attention_params_default(); ap.causal = true;
    for (int i = 0; i < 20; i++) if (la_kv_cache_decode(ctx, &ap, c, i % layers, 0, &qt, &ot, NULL)) { fprintf(stderr, "%s\n", la_last_error()); return 1; }
    double w[64], cpu[64];
    for (int ro = 0; ro < rounds; ro++) {
        double w0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_PROCESS_CPUTIME_ID);
        for (int i = 0; i < reps; i++) la_kv_cache_decode(ctx, &ap, c, i % layers, 0, &qt, &ot, NULL);
        w[ro] = (now(CLOCK_MONOTONIC) - w0) / reps, cpu[ro] = (now(CLOCK_PROCESS_CPUTIME_ID) - c0) / reps;
    }
    double cs = 0; for (int i = 0; i < H * D; i++) cs += o[i];
    double ws[64]; memcpy(ws, w, sizeof(double) * rounds); qsort(ws, rounds, sizeof(double), cmp); qsort(cpu, rounds, sizeof(double), cmp);
    printf("{\"bin\":\"%s\",\"L\":%lld,\"ms_best\":%.4f,\"ms_median\":%.4f,\"cpu_ms_best\":%.4f,\"checksum\":%.9g}\n", getenv("TAG") ? getenv("TAG") : "?", (long long)L, ws[0], ws[rounds / 2], cpu[0], cs);
    return 0;
}
