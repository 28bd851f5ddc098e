/* The one-token weight products of a SmolLM2-135M layer (q/k/v 960 x 576,
 * o 576 x 576, gate/up 3072 x 576, down 576 x 1536, Q4_1) over 30 layers'
 * worth of random weights, each layer after an 8 MB read of another buffer
 * on both threads (a stand-in for the attention's cache stream, so the
 * weights come from DRAM as in generation). Prints each product's mean
 * time per call and GB/s of weights; no model file needed. For A/B of the
 * matvec kernels' prefetch and threading between two builds.
 *
 *   cc -O2 -Iinclude bench/matvec_layers.c build/liblongattn.a -fopenmp -lm -o /tmp/matvec_layers
 *   /tmp/matvec_layers [COLD=1] [LAYERS=30] [REPS=30]
 *
 * COLD=0 skips the 8 MB read; LAYERS=1 COLD=0 keeps one layer's weights in
 * cache (the kernels' own speed). */
#define _GNU_SOURCE
#include "longattn.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec * 1e-3;
}

static uint64_t rs = 88172645463325252ull;
static uint64_t rnd(void) {
    rs ^= rs << 13, rs ^= rs >> 7, rs ^= rs << 17;
    return rs;
}

/* rows x cols of Q4_1 (20-byte blocks: f16 d, f16 m, 16 bytes of nibbles),
 * d in [2^-7, 2^-6), m negative and small: finite products */
static void *q4_1(int64_t rows, int64_t cols) {
    const size_t n = (size_t)(rows * cols / 32 * 20);
    uint8_t *p = aligned_alloc(64, (n + 63) / 64 * 64);
    if (!p) exit(1);
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)rnd();
    for (size_t b = 0; b < n / 20; b++) {
        const uint16_t d = (uint16_t)(0x2000 | (rnd() & 0x3ff)), m = (uint16_t)(0xa000 | (rnd() & 0x3ff));
        memcpy(p + b * 20, &d, 2), memcpy(p + b * 20 + 2, &m, 2);
    }
    return p;
}

#define MAXL 30

int main(int argc, char **argv) {
    const int cold = argc > 1 ? atoi(argv[1]) : 1, reps = argc > 3 ? atoi(argv[3]) : 30;
    int nl = argc > 2 ? atoi(argv[2]) : MAXL;
    nl = nl < 1 ? 1 : nl > MAXL ? MAXL : nl;
    la_context *ctx;
    if (la_context_create(&ctx, 2)) return 1;
    void *wq[MAXL], *wk[MAXL], *wv[MAXL], *wo[MAXL], *wg[MAXL], *wu[MAXL], *wd[MAXL];
    for (int l = 0; l < nl; l++)
        wq[l] = q4_1(576, 576), wk[l] = q4_1(192, 576), wv[l] = q4_1(192, 576), wo[l] = q4_1(576, 576),
        wg[l] = q4_1(1536, 576), wu[l] = q4_1(1536, 576), wd[l] = q4_1(576, 1536);
    const size_t flush = 64u << 20, part = 8u << 20;
    char *fl = malloc(flush);
    if (!fl) return 1;
    memset(fl, 1, flush);
    static float x[1536], y[3][1536];
    for (int i = 0; i < 1536; i++) x[i] = (float)(rnd() % 2000) / 1000.0f - 1;
    double t[4] = {0};
    long sink = 0;
    for (int it = 0; it < reps; it++)
        for (int l = 0; l < nl; l++) {
            if (cold) {
                long s = 0;
                const size_t off = (size_t)((it * nl + l) % (int)(flush / part)) * part;
#pragma omp parallel for num_threads(2) reduction(+ : s)
                for (size_t i = off; i < off + part; i += 64) s += fl[i];
                sink += s;
            }
            const la_matvec_job qkv[3] = {{LA_GGML_Q4_1, wq[l], 576, y[0]}, {LA_GGML_Q4_1, wk[l], 192, y[1]},
                                          {LA_GGML_Q4_1, wv[l], 192, y[2]}},
                                o = {LA_GGML_Q4_1, wo[l], 576, y[0]},
                                gu[2] = {{LA_GGML_Q4_1, wg[l], 1536, y[0]}, {LA_GGML_Q4_1, wu[l], 1536, y[1]}},
                                dn = {LA_GGML_Q4_1, wd[l], 576, y[0]};
            const double a = now_us();
            la_matvec_batch(ctx, qkv, 3, 576, x);
            const double b = now_us();
            la_matvec_batch(ctx, &o, 1, 576, x);
            const double c = now_us();
            la_matvec_batch(ctx, gu, 2, 576, x);
            const double d = now_us();
            la_matvec_batch(ctx, &dn, 1, 1536, x);
            const double e = now_us();
            t[0] += b - a, t[1] += c - b, t[2] += d - c, t[3] += e - d;
        }
    const double bytes[4] = {960 * 576 * 0.625, 576 * 576 * 0.625, 3072 * 576 * 0.625, 576 * 1536 * 0.625};
    const char *name[4] = {"q/k/v", "o", "gate/up", "down"};
    for (int i = 0; i < 4; i++)
        printf("%-8s %7.2f us %6.1f GB/s\n", name[i], t[i] / reps / nl, bytes[i] / (t[i] / reps / nl) / 1e3);
    la_context_destroy(ctx);
    return sink == 42; /* keeps the flush reads */
}
