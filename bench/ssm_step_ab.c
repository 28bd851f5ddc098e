/* The Mamba-1 decode step (la_selective_scan_decode) of two or more builds
 * of liblongattn.so in one process, taking turns round by round, on a state
 * small enough for L2 (default 64 sequences x 128 channels x N 16 = 512 KB)
 * and one thread: the step's instructions alone, without DRAM and without
 * the swings of a shared host's bandwidth, so steps of a few percent can be
 * told apart where `longattn bench linear --op mamba --pass decode` (a 128
 * MB state) cannot. Time is the thread's CPU time; per round the ratio of
 * each library's time to the first's, whose median and quartiles are
 * printed (the least disturbed figure on a busy host).
 *
 *   cc -O2 -Iinclude bench/ssm_step_ab.c -o /tmp/ssm_step_ab -ldl -lm
 *   cp build/liblongattn.so /tmp/old.so     # before the change; rebuild, then
 *   OMP_WAIT_POLICY=passive /tmp/ssm_step_ab /tmp/old.so build/liblongattn.so
 *
 * Environment: SEQS, CHANNELS (the state's shape; N is 16), REPS (steps
 * timed per round, default 100), ROUNDS (default 40), LONGATTN_SIMD as for
 * the library.
 *
 * OP=gla times the GLA chunked forward instead (la_linear_attention_forward,
 * per-channel decay, f32, B 1, the peer's shape: H 8, D 128, chunk 64) over
 * TOKENS tokens (default 4096) on THREADS threads (default 2), REPS calls
 * per round (default 2), by the process's CPU time per call: the wall time
 * of `bench linear` on the shared host mostly counts other programs' turns.
 * Inputs in the bench's ranges (log decays in [log 0.9, 0]); at 4096 tokens
 * they are 64 MB, so DRAM (and the neighbours' share of it) stays in. */
#define _GNU_SOURCE
#include "longattn.h"

#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_LIBS 8
#define MAX_ROUNDS 512

typedef la_status (*ctx_create_fn)(la_context **, int);
typedef la_status (*decode_fn)(la_context *, const la_ssm_params *, const la_ssm_inputs *, la_tensor *, la_tensor *);
typedef la_ssm_params (*params_fn)(void);
typedef la_tensor (*tensor_fn)(void *, la_dtype, int, const int64_t *);

typedef la_linear_params (*lin_params_fn)(void);
typedef la_status (*lin_fwd_fn)(la_context *, const la_linear_params *, const la_tensor *, const la_tensor *,
                                const la_tensor *, const la_tensor *, const la_tensor *, la_tensor *, la_tensor *);

static double process_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static double thread_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static int64_t env_int(const char *name, int64_t dflt) {
    const char *s = getenv(name);
    return s ? atoll(s) : dflt;
}

static void fill(float *x, int64_t n, uint64_t *rng, float lo, float hi) {
    for (int64_t i = 0; i < n; i++) {
        *rng = *rng * 6364136223846793005ULL + 1442695040888963407ULL;
        x[i] = lo + (hi - lo) * (float)((*rng >> 40) / 16777216.0);
    }
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void report(char **argv, int nlib, int64_t rounds, double ns[][MAX_ROUNDS], const char *unit) {
    for (int l = 0; l < nlib; l++) {
        double q[MAX_ROUNDS], t[MAX_ROUNDS];
        for (int64_t r = 0; r < rounds; r++) q[r] = ns[l][r] / ns[0][r], t[r] = ns[l][r];
        qsort(q, (size_t)rounds, sizeof q[0], cmp_double);
        qsort(t, (size_t)rounds, sizeof t[0], cmp_double);
        printf("{\"lib\":\"%s\",\"%s_best\":%.3f,\"%s_median\":%.3f,\"vs_first_median\":%.3f,"
               "\"vs_first_q1\":%.3f,\"vs_first_q3\":%.3f}\n",
               argv[l + 1], unit, t[0], unit, t[rounds / 2], q[rounds / 2], q[rounds / 4], q[3 * rounds / 4]);
    }
}

/* Open each library (each copy keeps its own symbols), look up the op's
 * entry `op` and its params default `params` and la_tensor_contiguous, and
 * make a context of `threads` in each. */
static int open_libs(int nlib, char **argv, const char *op, const char *params, int threads, void *op_fn[],
                     void *params_fn_out[], tensor_fn tensor[], la_context *ctx[]) {
    for (int l = 0; l < nlib; l++) {
        void *lib = dlopen(argv[l + 1], RTLD_NOW | RTLD_LOCAL);
        if (!lib) return fprintf(stderr, "%s\n", dlerror()), 1;
        ctx_create_fn create = (ctx_create_fn)dlsym(lib, "la_context_create");
        op_fn[l] = dlsym(lib, op);
        params_fn_out[l] = dlsym(lib, params);
        tensor[l] = (tensor_fn)dlsym(lib, "la_tensor_contiguous");
        if (!create || !op_fn[l] || !params_fn_out[l] || !tensor[l] || create(&ctx[l], threads) != LA_OK) return 1;
    }
    return 0;
}

/* OP=gla: the GLA chunked forward, process CPU ms per call. */
static int gla_ab(int nlib, char **argv) {
    const int64_t L = env_int("TOKENS", 4096), H = 8, D = 128, reps = env_int("REPS", 2),
                  rounds = env_int("ROUNDS", 40);
    const int threads = (int)env_int("THREADS", 2);
    if (L < 1 || reps < 1 || rounds < 1 || rounds > MAX_ROUNDS) return 2;
    const int64_t n = L * H * D;
    float *q = malloc(sizeof(float) * n), *k = malloc(sizeof(float) * n), *v = malloc(sizeof(float) * n),
          *g = malloc(sizeof(float) * n), *o = malloc(sizeof(float) * n);
    if (!q || !k || !v || !g || !o) return 1;
    uint64_t rng = 1;
    fill(q, n, &rng, -1, 1);
    fill(k, n, &rng, -1, 1);
    fill(v, n, &rng, -1, 1);
    fill(g, n, &rng, logf(0.9f), 0);
    void *fwd_sym[MAX_LIBS], *params_sym[MAX_LIBS];
    tensor_fn tensor[MAX_LIBS];
    la_context *ctx[MAX_LIBS];
    if (open_libs(nlib, argv, "la_linear_attention_forward", "la_linear_params_default", threads, fwd_sym, params_sym,
                  tensor, ctx))
        return 1;
    lin_fwd_fn fwd[MAX_LIBS];
    lin_params_fn params[MAX_LIBS];
    for (int l = 0; l < nlib; l++) fwd[l] = (lin_fwd_fn)fwd_sym[l], params[l] = (lin_params_fn)params_sym[l];
    static double ms[MAX_LIBS][MAX_ROUNDS];
    const int64_t shape[4] = {1, L, H, D};
    for (int64_t r = 0; r < rounds; r++)
        for (int l = 0; l < nlib; l++) {
            la_tensor tq = tensor[l](q, LA_F32, 4, shape), tk = tensor[l](k, LA_F32, 4, shape),
                      tv = tensor[l](v, LA_F32, 4, shape), tg = tensor[l](g, LA_F32, 4, shape),
                      to = tensor[l](o, LA_F32, 4, shape);
            la_linear_params p = params[l]();
            p.decay = LA_DECAY_CHANNEL;
            if (fwd[l](ctx[l], &p, &tq, &tk, &tv, &tg, NULL, &to, NULL) != LA_OK) return 1; /* warm-up */
            const double t0 = process_ns();
            for (int64_t i = 0; i < reps; i++)
                if (fwd[l](ctx[l], &p, &tq, &tk, &tv, &tg, NULL, &to, NULL) != LA_OK) return 1;
            ms[l][r] = (process_ns() - t0) / (double)reps * 1e-6;
        }
    report(argv, nlib, rounds, ms, "cpu_ms");
    return 0;
}

int main(int argc, char **argv) {
    const int nlib = argc - 1;
    const int64_t B = env_int("SEQS", 64), C = env_int("CHANNELS", 128), N = 16, reps = env_int("REPS", 100),
                  rounds = env_int("ROUNDS", 40);
    if (nlib < 1 || nlib > MAX_LIBS || rounds < 1 || rounds > MAX_ROUNDS || B < 1 || C < 1 || reps < 1) {
        fprintf(stderr, "usage: %s LIB.so [LIB.so ...] (at most %d; ROUNDS <= %d)\n", argv[0], MAX_LIBS, MAX_ROUNDS);
        return 2;
    }
    const char *op = getenv("OP");
    if (op && !strcmp(op, "gla")) return gla_ab(nlib, argv);
    /* the bench's value ranges (tests/linear/mixer_decode_case.c) */
    float *u = malloc(sizeof(float) * B * C), *delta = malloc(sizeof(float) * B * C),
          *Bm = malloc(sizeof(float) * B * N), *Cm = malloc(sizeof(float) * B * N), *A = malloc(sizeof(float) * C * N),
          *h = malloc(sizeof(float) * B * C * N), *out = malloc(sizeof(float) * B * C);
    if (!u || !delta || !Bm || !Cm || !A || !h || !out) return 1;
    uint64_t rng = 1;
    fill(u, B * C, &rng, -1, 1);
    fill(delta, B * C, &rng, -3, 0);
    fill(Bm, B * N, &rng, -1, 1);
    fill(Cm, B * N, &rng, -1, 1);
    fill(A, C * N, &rng, -2, -0.1f);
    fill(h, B * C * N, &rng, -1, 1);
    void *decode_sym[MAX_LIBS], *params_sym[MAX_LIBS];
    tensor_fn tensor[MAX_LIBS];
    la_context *ctx[MAX_LIBS];
    if (open_libs(nlib, argv, "la_selective_scan_decode", "la_ssm_params_default", 1, decode_sym, params_sym, tensor,
                  ctx))
        return 1;
    decode_fn decode[MAX_LIBS];
    params_fn params[MAX_LIBS];
    for (int l = 0; l < nlib; l++) decode[l] = (decode_fn)decode_sym[l], params[l] = (params_fn)params_sym[l];
    static double ns[MAX_LIBS][MAX_ROUNDS];
    for (int64_t r = 0; r < rounds; r++)
        for (int l = 0; l < nlib; l++) {
            la_tensor tu = tensor[l](u, LA_F32, 2, (int64_t[]){B, C}),
                      td = tensor[l](delta, LA_F32, 2, (int64_t[]){B, C}),
                      tA = tensor[l](A, LA_F32, 2, (int64_t[]){C, N}), tB = tensor[l](Bm, LA_F32, 2, (int64_t[]){B, N}),
                      tC = tensor[l](Cm, LA_F32, 2, (int64_t[]){B, N}),
                      th = tensor[l](h, LA_F32, 3, (int64_t[]){B, C, N}),
                      to = tensor[l](out, LA_F32, 2, (int64_t[]){B, C});
            const la_ssm_params p = params[l]();
            const la_ssm_inputs in = {.u = &tu, .delta = &td, .A = &tA, .B = &tB, .C = &tC};
            for (int i = 0; i < 5; i++) decode[l](ctx[l], &p, &in, &th, &to); /* the state back in L2 */
            const double t0 = thread_ns();
            for (int64_t i = 0; i < reps; i++)
                if (decode[l](ctx[l], &p, &in, &th, &to) != LA_OK) return 1;
            ns[l][r] = (thread_ns() - t0) / (double)(reps * B * C);
        }
    report(argv, nlib, rounds, ns, "ns_per_channel");
    return 0;
}
