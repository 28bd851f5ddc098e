/* Decode over one layer of KV pages (la_kv_cache_decode, 32 query heads over
 * 8 K/V heads, D 128; DD_SHAPE=1: SmolLM2's 9 / 3, D 64; f32 or f16 pages, or
 * q8 / q4 with the cache's default groups and window): per round the read
 * ceiling (la_peak_read_gbps), then 15 calls: best and median ms, their
 * ratios to the ceiling, CPU ms per call. For A/B runs of two builds
 * alternated in one script (s18-dec, BENCHMARKS.md).
 *   cc -O2 -Iinclude bench/kv_decode_ab.c build/liblongattn.a -fopenmp -lm -o /tmp/dd
 *   /tmp/dd f32|f16|q8|q4 L ROUNDS THREADS [PAGE_SIZE] */
#include <longattn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { CALLS = 15 };

static double seconds(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}
static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
/* Uniform in [-1, 1): a fixed LCG, so both builds of an A/B see the same cache. */
static float next_uniform(unsigned *s) {
    *s = *s * 1664525u + 1013904223u;
    return (*s >> 8) * (2.0f / 16777216) - 1;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s f32|f16|q8|q4 L ROUNDS THREADS [PAGE_SIZE]\n", argv[0]);
        return 2;
    }
    la_dtype dtype = !strcmp(argv[1], "f16") ? LA_F16 : LA_F32;
    int64_t L = atoll(argv[2]);
    int rounds = atoi(argv[3]), threads = atoi(argv[4]);
    int64_t H = 32, Hkv = 8, D = 128;
    if (getenv("DD_SHAPE")) H = 9, Hkv = 3, D = 64;

    la_kv_cache_params p = la_kv_cache_params_default();
    p.n_kv_heads = Hkv;
    p.head_dim = D;
    p.max_tokens = L;
    p.dtype = dtype;
    p.quant = !strcmp(argv[1], "q8") ? LA_KV_Q8 : !strcmp(argv[1], "q4") ? LA_KV_Q4 : LA_KV_QUANT_NONE;
    if (argc > 5) p.page_size = atoll(argv[5]);
    la_kv_cache *cache;
    if (la_kv_cache_create(&p, &cache)) {
        fprintf(stderr, "la_kv_cache_create: %s\n", la_last_error());
        return 1;
    }
    /* Fill the cache in appends of up to 1024 tokens. */
    int64_t step = L < 1024 ? L : 1024, row = Hkv * D;
    float *k = malloc(sizeof(float) * step * row), *v = malloc(sizeof(float) * step * row);
    int32_t *pos = malloc(sizeof(int32_t) * step);
    unsigned seed = 1;
    for (int64_t t0 = 0; t0 < L; t0 += step) {
        for (int64_t i = 0; i < step * row; i++) {
            k[i] = next_uniform(&seed);
            v[i] = next_uniform(&seed);
        }
        for (int64_t i = 0; i < step; i++) pos[i] = (int32_t)(t0 + i);
        if (la_kv_cache_append(cache, 0, 0, step, k, v, pos)) {
            fprintf(stderr, "la_kv_cache_append: %s\n", la_last_error());
            return 1;
        }
    }
    float *q = malloc(sizeof(float) * H * D), *o = malloc(sizeof(float) * H * D);
    for (int64_t i = 0; i < H * D; i++) q[i] = (i % 7) * 0.1f - 0.3f;
    la_context *ctx;
    la_context_create(&ctx, threads);
    la_attention_params ap = la_attention_params_default();
    ap.causal = 1;
    la_tensor qt = la_tensor_contiguous(q, LA_F32, 4, (int64_t[]){1, 1, H, D});
    la_tensor ot = la_tensor_contiguous(o, LA_F32, 4, (int64_t[]){1, 1, H, D});
    double bytes = (double)la_kv_cache_bytes(cache);

    for (int r = 0; r < rounds; r++) {
        double ceiling = la_peak_read_gbps(threads, (size_t)512 << 20), t[CALLS], cpu = 0;
        for (int i = 0; i < CALLS; i++) {
            double c0 = seconds(CLOCK_PROCESS_CPUTIME_ID), t0 = seconds(CLOCK_MONOTONIC);
            if (la_kv_cache_decode(ctx, &ap, cache, 0, 0, &qt, &ot, NULL)) {
                fprintf(stderr, "la_kv_cache_decode: %s\n", la_last_error());
                return 1;
            }
            t[i] = seconds(CLOCK_MONOTONIC) - t0;
            cpu += seconds(CLOCK_PROCESS_CPUTIME_ID) - c0;
        }
        qsort(t, CALLS, sizeof(double), by_value);
        double best = t[0], median = t[CALLS / 2];
        printf("%s L=%lld th=%d ceil %.2f GB/s  best %.2f ms med %.2f ms  ratio best %.3f med %.3f"
               " cpu_ms %.1f  out %g\n",
               argv[1], (long long)L, threads, ceiling, best * 1e3, median * 1e3,
               bytes / best / 1e9 / ceiling, bytes / median / 1e9 / ceiling, cpu / CALLS * 1e3, o[5]);
        fflush(stdout);
    }
    /* Whether the kernel gave the pool transparent huge pages (s18-dec measured their effect). */
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, "AnonHugePages")) printf("  %s", line);
    if (f) fclose(f);
    return 0;
}
