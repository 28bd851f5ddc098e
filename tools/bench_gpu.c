/* longattn bench attention|decode|sparse --backend cuda: the CUDA kernels
 * timed through the public API alone (device memory by la_device_alloc,
 * completion by la_context_synchronize), so the CLI needs no CUDA toolkit.
 *
 * attention: la_attention_forward (--pass fwd, the default) or the forward
 *   then la_attention_backward (--pass bwd), bf16 [B, L, H, D] in and out,
 *   lse f32. B x L = --tokens (16384) for L in 1K..--tokens, plus L 64K at
 *   batch 1 (or the lengths --L lists), causal and not; --deterministic 0,1
 *   (with --pass bwd) times them at each la_attention_params.deterministic,
 *   and the rows carry it. TFLOP/s count 4 D flops per visible
 *   (query, key) pair for the forward, 14 for forward + backward (the
 *   forward's two products and the backward's five, the usual convention).
 * decode: la_attention_decode, f32 q [B, 1, 32, D] over a bf16 cache of 8
 *   K/V heads: 8 x 8K, 8 x 128K, 1 x 32K, 1 x 128K, 1 x 512K contiguous and
 *   8 x 128K in 256-token pages dealt in random order. GB/s count the K and V
 *   bytes read once; of_copy is that over the copy ceiling.
 * sparse: la_block_sparse_forward (and backward with --pass bwd) beside the
 *   dense call at B 1, L 8K..128K (or --L), block 64: the complete list, then
 *   each query block's diagonal block (causal) plus every other visible block
 *   with probability 0.5, 0.25, 0.1, 0.03 (host index copied per call).
 *
 * The first line is the ceiling this run measures: device-to-device copy
 * (bytes read + written per second). A row's ms is the median over --iters
 * calls (after 3 warm-up calls), each call alone: started on an idle device
 * and timed on the host until la_context_synchronize returns; a shape's
 * attention rows (causal and not, each --deterministic value) take their
 * calls in turns, so they meet the same clock state (time_calls_n); decode rows
 * add stream_ms, --iters calls back to back, per call. The bf16 matrix
 * ceiling and the PyTorch peers come from bench/peers_gpu.py, which runs
 * these rows in its own run. */
#include "cli.h"
#include "longattn.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_LENS 16

typedef struct {
    int64_t H, D, tokens, lens[MAX_LENS];
    int nlens, iters;
    bool bwd; /* forward + backward rows */
    int det[2], ndet; /* attention: la_attention_params.deterministic values; ndet 0: not given (0, unprinted) */
} gpu_options;

static const la_device gpu = {LA_DEVICE_CUDA, 0};

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int fail(const char *what, la_status s) {
    fprintf(stderr, "longattn bench --backend cuda: %s: %s: %s\n", what, la_status_name(s), la_last_error());
    return 1;
}

/* bf16 of uniform [-1, 1) by a xorshift generator: never zeros. */
static void fill_random_bf16(uint16_t *h, size_t n, uint64_t seed) {
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        float f = (float)((s >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
        uint32_t u;
        memcpy(&u, &f, 4);
        h[i] = (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
    }
}

/* `bytes` of GPU memory holding varied non-zero values (a 64 MB random
 * block copied over and over: timing needs no more). */
static int alloc_filled(size_t bytes, uint64_t seed, void **out) {
    la_status s = la_device_alloc(gpu, bytes, out);
    if (s) return fail("la_device_alloc", s);
    const size_t chunk = (size_t)64 << 20;
    uint16_t *host = malloc(chunk);
    if (!host) return fprintf(stderr, "longattn bench: out of host memory\n"), 1;
    fill_random_bf16(host, chunk / 2, seed);
    for (size_t off = 0; off < bytes && !s; off += chunk)
        s = la_device_copy((char *)*out + off, gpu, host, (la_device){LA_DEVICE_CPU, 0},
                           bytes - off < chunk ? bytes - off : chunk);
    free(host);
    return s ? fail("la_device_copy", s) : 0;
}

/* The copy ceiling: 1 GiB device to device, best of 5, read + written. */
static int measure_copy(double *gbps) {
    const size_t n = (size_t)1 << 30;
    void *a = NULL, *b = NULL;
    la_status s = la_device_alloc(gpu, n, &a);
    if (!s) s = la_device_alloc(gpu, n, &b);
    double best = 1e30;
    for (int i = 0; i < 6 && !s; i++) {
        const double t0 = now_s();
        s = la_device_copy(b, gpu, a, gpu, n);
        if (i > 0 && now_s() - t0 < best) best = now_s() - t0;
    }
    la_device_free(gpu, a), la_device_free(gpu, b);
    if (s) return fail("the copy ceiling", s);
    *gbps = 2.0 * (double)n / best * 1e-9;
    return 0;
}

/* One timed call: the op, then wait for it. */
typedef la_status (*call_fn)(la_context *ctx, void *arg);

/* n calls timed in turns (call k on args[k]: one of each, then again), so
 * that each row's calls meet the GPU in the same clock state: the clock
 * falls from ~1980 to 1600-1750 MHz some 80 ms into sustained load (H100,
 * nvidia-smi every 20 ms, s31), so timed one row after the other the
 * 16K causal forward ran on the lowered clock its non-causal row had
 * missed (0.89 of it, against 0.98 in ncu's kernel times). */
static int time_calls_n(la_context *ctx, call_fn call, void *const *args, int n, int iters, double *med_ms,
                        double *min_ms) {
    double *ms = malloc(sizeof(double) * (size_t)iters * (size_t)n);
    if (!ms) return 1;
    for (int i = 0; i < 3 + iters; i++)
        for (int k = 0; k < n; k++) {
            const double t0 = now_s();
            la_status s = call(ctx, args[k]);
            if (!s) s = la_context_synchronize(ctx);
            if (s) return free(ms), fail("the timed call", s);
            if (i >= 3) ms[(size_t)k * (size_t)iters + (size_t)(i - 3)] = (now_s() - t0) * 1e3;
        }
    for (int k = 0; k < n; k++) {
        double *m = ms + (size_t)k * (size_t)iters;
        qsort(m, (size_t)iters, sizeof(double), cmp_double);
        med_ms[k] = m[iters / 2];
        if (min_ms) min_ms[k] = m[0];
    }
    free(ms);
    return 0;
}

static int time_calls(la_context *ctx, call_fn call, void *arg, int iters, double *med_ms, double *min_ms) {
    return time_calls_n(ctx, call, &arg, 1, iters, med_ms, min_ms);
}

/* ---- attention and block-sparse attention ---- */

typedef struct {
    la_attention_params p;
    la_tensor t[9]; /* q, k, v, out, lse, dout, dq, dk, dv */
    const la_block_index *index; /* NULL: dense */
    bool with_bwd;
} attn_call;

static la_status run_attention(la_context *ctx, void *arg) {
    attn_call *c = arg;
    la_tensor *t = c->t;
    la_status s = c->index ? la_block_sparse_forward(ctx, &c->p, &t[0], &t[1], &t[2], c->index, &t[3], &t[4])
                           : la_attention_forward(ctx, &c->p, &t[0], &t[1], &t[2], &t[3], &t[4]);
    if (s || !c->with_bwd) return s;
    return c->index ? la_block_sparse_backward(ctx, &c->p, &t[0], &t[1], &t[2], c->index, &t[3], &t[5], &t[4], &t[6],
                                               &t[7], &t[8])
                    : la_attention_backward(ctx, &c->p, &t[0], &t[1], &t[2], &t[3], &t[5], &t[4], &t[6], &t[7], &t[8]);
}

static void attn_tensors(attn_call *c, void *buf[9], int64_t B, int64_t L, int64_t H, int64_t D) {
    for (int i = 0; i < 9; i++) c->t[i] = la_tensor_contiguous(buf[i], LA_BF16, 4, (int64_t[]){B, L, H, D});
    c->t[4] = la_tensor_contiguous(buf[4], LA_F32, 3, (int64_t[]){B, L, H});
    for (int i = 0; i < 9; i++) c->t[i].device = gpu;
}

static double visible_pairs(int64_t L, int causal) {
    return causal ? (double)L * (double)(L + 1) / 2 : (double)L * (double)L;
}

static int attention_rows(la_context *ctx, const gpu_options *o, void *buf[9], int64_t B, int64_t L, bool with_bwd,
                          int iters) {
    attn_call c = {.with_bwd = with_bwd};
    attn_tensors(&c, buf, B, L, o->H, o->D);
    const int ndet = o->ndet ? o->ndet : 1; /* parse takes --deterministic with --pass bwd only */
    attn_call calls[4]; /* causal 0, 1 by each deterministic value, timed in turns (time_calls_n) */
    void *args[4];
    double med[4], min[4];
    const int n = 2 * ndet;
    for (int k = 0; k < n; k++) {
        calls[k] = c;
        calls[k].p = la_attention_params_default();
        calls[k].p.causal = k / ndet;
        calls[k].p.deterministic = o->ndet ? o->det[k % ndet] : 0;
        args[k] = &calls[k];
    }
    if (time_calls_n(ctx, run_attention, args, n, iters, med, min)) return 1;
    for (int k = 0; k < n; k++) {
        const int causal = calls[k].p.causal;
        const double flops = (with_bwd ? 14.0 : 4.0) * (double)(B * o->H * o->D) * visible_pairs(L, causal);
        char det[32] = ""; /* only when --deterministic was given: rows as they always were otherwise */
        if (o->ndet) snprintf(det, sizeof det, ",\"deterministic\":%d", calls[k].p.deterministic);
        printf("{\"op\":\"%s\",\"backend\":\"cuda\",\"dtype\":\"bf16\",\"B\":%lld,\"L\":%lld,\"H\":%lld,"
               "\"D\":%lld,\"causal\":%d%s,\"ms\":%.4f,\"min_ms\":%.4f,\"tflops\":%.1f}\n",
               with_bwd ? "attention_fwdbwd" : "attention_fwd", (long long)B, (long long)L, (long long)o->H,
               (long long)o->D, causal, det, med[k], min[k], flops / med[k] * 1e-9);
    }
    fflush(stdout);
    return 0;
}

/* Each query block's diagonal (causal) plus every other visible block kept
 * with probability `share`; returns the listed visible pairs over all heads. */
static double random_index(la_block_index *x, int64_t L, int causal, double share, uint64_t seed) {
    const int64_t bs = x->block_size, nb = x->q_blocks, rows = x->heads * nb;
    uint64_t st = 0x9e3779b97f4a7c15ull + seed;
    double pairs = 0;
    int64_t *offsets = (int64_t *)x->offsets;
    int32_t *key_blocks = (int32_t *)x->key_blocks;
    offsets[0] = 0;
    for (int64_t r = 0; r < rows; r++) {
        const int64_t qb = r % nb, last = causal ? qb : nb - 1, qrows = qb * bs + bs < L ? bs : L - qb * bs;
        int64_t n = offsets[r];
        for (int64_t kb = 0; kb <= last; kb++) {
            st ^= st << 13, st ^= st >> 7, st ^= st << 17;
            const bool diag = causal && kb == qb;
            if (!diag && share < 1 && (double)(st >> 11) * (1.0 / 9007199254740992.0) >= share) continue;
            key_blocks[n++] = (int32_t)kb;
            const int64_t keys = kb * bs + bs < L ? bs : L - kb * bs;
            pairs += diag ? (double)qrows * (double)(qrows + 1) / 2 : (double)qrows * (double)keys;
        }
        offsets[r + 1] = n;
    }
    return pairs;
}

static int sparse_rows(la_context *ctx, const gpu_options *o, void *buf[9], int64_t L, bool with_bwd) {
    const int64_t bs = 64, nb = (L + bs - 1) / bs, rows = o->H * nb;
    la_block_index x = {.block_size = bs, .num_seqs = 1, .heads = o->H, .q_blocks = nb};
    int64_t *offsets = malloc(sizeof(int64_t) * (size_t)(rows + 1));
    int32_t *key_blocks = malloc(sizeof(int32_t) * (size_t)(rows * nb));
    x.offsets = offsets, x.key_blocks = key_blocks;
    int rc = !offsets || !key_blocks;
    static const double shares[] = {1, 0.5, 0.25, 0.1, 0.03};
    attn_call c = {.with_bwd = with_bwd};
    attn_tensors(&c, buf, 1, L, o->H, o->D);
    for (int causal = 0; causal < 2 && !rc; causal++) {
        c.p = la_attention_params_default();
        c.p.causal = causal;
        c.index = NULL;
        double dense_ms;
        if ((rc = time_calls(ctx, run_attention, &c, o->iters, &dense_ms, NULL))) break;
        for (size_t si = 0; si < sizeof shares / sizeof shares[0] && !rc; si++) {
            const double pairs = random_index(&x, L, causal, shares[si], si);
            double ms;
            c.index = &x;
            if ((rc = time_calls(ctx, run_attention, &c, o->iters, &ms, NULL))) break;
            printf("{\"op\":\"%s\",\"backend\":\"cuda\",\"dtype\":\"bf16\",\"B\":1,\"L\":%lld,\"H\":%lld,\"D\":%lld,"
                   "\"causal\":%d,\"block\":%lld,\"share\":%.2f,\"density\":%.4f,\"ms\":%.4f,\"dense_ms\":%.4f,"
                   "\"speedup\":%.2f,\"tflops\":%.1f}\n",
                   with_bwd ? "sparse_fwdbwd" : "sparse_fwd", (long long)L, (long long)o->H, (long long)o->D, causal,
                   (long long)bs, shares[si], pairs / ((double)o->H * visible_pairs(L, causal)), ms, dense_ms,
                   dense_ms / ms, (with_bwd ? 14.0 : 4.0) * (double)o->D * pairs / (ms * 1e9));
            fflush(stdout);
        }
    }
    free(offsets), free(key_blocks);
    return rc;
}

/* ---- decode ---- */

typedef struct {
    la_attention_params p;
    la_tensor q, k, v, out;
    la_kv_layout layout;
} decode_call;

static la_status run_decode(la_context *ctx, void *arg) {
    decode_call *c = arg;
    return la_attention_decode(ctx, &c->p, &c->q, &c->k, &c->v, &c->layout, &c->out, NULL);
}

static int decode_row(la_context *ctx, const gpu_options *o, int64_t B, int64_t L, int64_t page, double copy_gbps) {
    const int64_t H = 32, Hkv = 8, D = o->D, nblocks = page ? B * L / page : B;
    const size_t kv = (size_t)(B * L * Hkv * D), nq = (size_t)(B * H * D);
    void *k = NULL, *v = NULL, *q = NULL, *out = NULL;
    int32_t *table = page ? malloc(sizeof(int32_t) * (size_t)nblocks) : NULL, *lens = malloc(sizeof(int32_t) * (size_t)B);
    int rc = !lens || (page && !table) || alloc_filled(kv * 2, 11, &k) || alloc_filled(kv * 2, 12, &v) ||
             alloc_filled(nq * 4, 13, &q) || alloc_filled(nq * 4, 14, &out);
    if (!rc) {
        for (int64_t b = 0; b < B; b++) lens[b] = (int32_t)L;
        uint64_t st = 0x2545f4914f6cdd1dull; /* pages dealt in random order */
        for (int64_t i = 0; page && i < nblocks; i++) table[i] = (int32_t)i;
        for (int64_t i = nblocks - 1; page && i > 0; i--) {
            st ^= st << 13, st ^= st >> 7, st ^= st << 17;
            const int64_t j = (int64_t)(st % (uint64_t)(i + 1));
            const int32_t t = table[i];
            table[i] = table[j], table[j] = t;
        }
        decode_call c = {.p = la_attention_params_default()};
        c.p.causal = 1;
        c.q = la_tensor_contiguous(q, LA_F32, 4, (int64_t[]){B, 1, H, D});
        c.out = la_tensor_contiguous(out, LA_F32, 4, (int64_t[]){B, 1, H, D});
        c.k = la_tensor_contiguous(k, LA_BF16, 4, (int64_t[]){nblocks, page ? page : L, Hkv, D});
        c.v = la_tensor_contiguous(v, LA_BF16, 4, (int64_t[]){nblocks, page ? page : L, Hkv, D});
        c.q.device = c.out.device = c.k.device = c.v.device = gpu;
        c.layout = (la_kv_layout){.seqlens_k = lens, .block_table = table, .blocks_per_seq = page ? L / page : 0};
        double med = 0, min = 0, stream_ms = 0;
        rc = time_calls(ctx, run_decode, &c, o->iters, &med, &min);
        if (!rc) { /* back to back: the host's per-call work then overlaps the device's */
            const double t0 = now_s();
            la_status s = LA_OK;
            for (int i = 0; i < o->iters && !s; i++) s = run_decode(ctx, &c);
            if (!s) s = la_context_synchronize(ctx);
            stream_ms = (now_s() - t0) * 1e3 / o->iters;
            if (s) rc = fail("la_attention_decode", s);
        }
        const double gbps = rc ? 0 : 2.0 * (double)kv * 2 / med * 1e-6;
        if (!rc)
            printf("{\"op\":\"decode\",\"backend\":\"cuda\",\"dtype\":\"bf16\",\"B\":%lld,\"L\":%lld,\"H\":%lld,"
                   "\"Hkv\":%lld,\"D\":%lld,\"page\":%lld,\"ms\":%.4f,\"min_ms\":%.4f,\"stream_ms\":%.4f,"
                   "\"gbps\":%.1f,\"of_copy\":%.3f}\n",
                   (long long)B, (long long)L, (long long)H, (long long)Hkv, (long long)D, (long long)page, med, min,
                   stream_ms, gbps, gbps / copy_gbps);
        fflush(stdout);
    }
    free(table), free(lens);
    la_device_free(gpu, k), la_device_free(gpu, v), la_device_free(gpu, q), la_device_free(gpu, out);
    return rc;
}

/* ---- options and the entry ---- */

#define GPU_CMD "longattn bench --backend cuda"

static void gpu_usage(FILE *f) {
    fprintf(f, "usage: longattn bench attention|decode|sparse --backend cuda [--json] [--pass fwd|bwd] [--L N,...]\n"
               "       [--H 16] [--D 128] [--tokens 16384] [--iters 20]: JSON lines timed on GPU 0 through the public\n"
               "       API, after a device copy ceiling; bwd rows time forward + backward. decode takes --L, --D and\n"
               "       --iters alone (32 query heads), sparse all but --tokens (batch 1). --L names each length\n"
               "       once. attention also takes --deterministic 0,1 (default 0; with --pass bwd): the backward\n"
               "       timed at each la_attention_params.deterministic, rows carrying it.\n");
}

/* Digits only, no sign or blank, in [1, hi] (this program links no CLI
 * helpers: it is built where PCRE2, and so the model library, is absent). */
static bool positive(const char *option, const char *text, long long hi, long long *out) {
    char *end = NULL;
    errno = 0;
    *out = isdigit((unsigned char)text[0]) ? strtoll(text, &end, 10) : 0;
    if (*out >= 1 && *out <= hi && !errno && !*end) return true;
    fprintf(stderr, "%s: %s expects an integer in [1, %lld], got '%s'\n", GPU_CMD, option, hi, text);
    return false;
}

/* 0: run; 1: --help was asked (usage printed); -1: a usage error (said). */
static int parse(int argc, char **argv, gpu_options *o) {
    *o = (gpu_options){.H = 16, .D = 128, .tokens = 16384, .iters = 20};
    static const char *const value_options[] = {"--backend", "--pass", "--L", "--H", "--D", "--tokens", "--iters",
                                                "--deterministic", NULL};
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *val;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return gpu_usage(stdout), 1;
        if (!strcmp(a, "--json")) continue; /* rows are always JSON lines */
        bool known = false;
        for (const char *const *k = value_options; *k; k++) known |= !strcmp(a, *k);
        /* the CPU bench's options: "unknown" read as a typo for an option this path lacks */
        static const char *const cpu_only[] = {"--threads", "--quick", "--cold", "--causal", "--dtype", "--budget",
                                               "--chunk", "--decay", "--feature", "--op", "--qk-file", "--type", NULL};
        for (const char *const *k = cpu_only; !known && *k; k++)
            if (!strcmp(a, *k)) return fprintf(stderr, "%s: %s is an option of the CPU bench; not taken on the GPU\n", GPU_CMD, a), -1;
        if (!known) return fprintf(stderr, "%s: unknown option '%s'\n", GPU_CMD, a), -1;
        if (i + 1 == argc) return fprintf(stderr, "%s: %s needs a value\n", GPU_CMD, a), -1;
        val = argv[++i];
        long long n = 0;
        /* decode's rows are 32 query heads at fixed batches, sparse's at batch 1: an option they do not read
         * was dropped in silence */
        const bool decode = !strcmp(argv[1], "decode"), sparse = !strcmp(argv[1], "sparse");
        if ((decode && (!strcmp(a, "--pass") || !strcmp(a, "--H") || !strcmp(a, "--tokens"))) ||
            ((decode || sparse) && !strcmp(a, "--deterministic")) || (sparse && !strcmp(a, "--tokens")))
            return fprintf(stderr, "%s: bench %s does not take %s\n", GPU_CMD, argv[1], a), -1;
        if (!strcmp(a, "--backend")) continue;
        else if (!strcmp(a, "--pass")) {
            if (strcmp(val, "fwd") && strcmp(val, "bwd"))
                return fprintf(stderr, "%s: --pass takes fwd or bwd, got '%s'\n", GPU_CMD, val), -1;
            o->bwd = !strcmp(val, "bwd");
        } else if (!strcmp(a, "--deterministic")) {
            /* 0 and/or 1, each once: "0", "1", "0,1", "1,0" */
            const bool one = (val[0] == '0' || val[0] == '1') && !val[1];
            const bool two = (val[0] == '0' || val[0] == '1') && val[1] == ',' &&
                             (val[2] == '0' || val[2] == '1') && val[2] != val[0] && !val[3];
            if (!one && !two)
                return fprintf(stderr, "%s: --deterministic takes 0, 1 or both (0,1), each once, got '%s'\n",
                               GPU_CMD, val), -1;
            o->ndet = two ? 2 : 1, o->det[0] = val[0] - '0', o->det[1] = two ? val[2] - '0' : 0;
        } else if (!strcmp(a, "--L")) {
            char list[256];
            o->nlens = 0; /* a repeated --L replaces the list, as every repeated option does */
            if (snprintf(list, sizeof list, "%s", val) >= (int)sizeof list)
                return fprintf(stderr, "%s: --L is too long\n", GPU_CMD), -1;
            for (char *tok = list, *comma;; tok = comma + 1) {
                if ((comma = strchr(tok, ','))) *comma = 0;
                long long L;
                if (o->nlens == MAX_LENS) return fprintf(stderr, "%s: --L takes at most %d lengths\n", GPU_CMD, MAX_LENS), -1;
                if (!positive("--L", tok, INT32_MAX, &L)) return -1; /* also an empty item: "", "1,", "1,,2" */
                for (int j = 0; j < o->nlens; j++) /* each item once, as in every list of the CLI */
                    if (o->lens[j] == L) return fprintf(stderr, "%s: --L lists %lld twice\n", GPU_CMD, L), -1;
                o->lens[o->nlens++] = L;
                if (!comma) break;
            }
        } else if (!positive(a, val, !strcmp(a, "--iters") ? 99999 : INT32_MAX, &n)) return -1;
        else if (!strcmp(a, "--H")) o->H = n;
        else if (!strcmp(a, "--D")) o->D = n;
        else if (!strcmp(a, "--tokens")) o->tokens = n;
        else o->iters = (int)n;
    }
    if (o->ndet && !o->bwd) /* the forward ignores it: dropped in silence */
        return fprintf(stderr, "%s: --deterministic changes the backward only: it needs --pass bwd\n", GPU_CMD), -1;
    /* bench_gpu sizes its buffers as max(tokens, 65536, --L) x H x D in int64: past 2^40 elements (2 TiB of
     * bf16) no GPU holds them, and the product could overflow */
    double rows = (double)(o->tokens > 65536 ? o->tokens : 65536);
    for (int i = 0; i < o->nlens; i++) rows = rows > (double)o->lens[i] ? rows : (double)o->lens[i];
    if (rows * (double)o->H * (double)o->D > 1099511627776.0)
        return fprintf(stderr, "%s: --tokens, --L, --H and --D ask for tensors of %.3g elements, past 2^40\n",
                       GPU_CMD, rows * (double)o->H * (double)o->D), -1;
    return 0;
}

int bench_gpu(int argc, char **argv) {
    const char *what = argv[1];
    gpu_options o;
    const int parsed = parse(argc, argv, &o);
    if (parsed) return parsed > 0 ? 0 : 2;
    const bool decode = !strcmp(what, "decode"), sparse = !strcmp(what, "sparse");
    if (!decode && !sparse && strcmp(what, "attention")) {
        fprintf(stderr, "longattn bench %s: no CUDA rows (attention, decode and sparse have them)\n", what);
        return 2;
    }
    if (!la_cuda_available()) {
        fprintf(stderr, "longattn bench --backend cuda: %s\n", la_last_error());
        return 1;
    }
    double copy_gbps;
    if (measure_copy(&copy_gbps)) return 1;
    printf("{\"op\":\"peak\",\"backend\":\"cuda\",\"copy_gbps\":%.1f}\n", copy_gbps);
    la_context *ctx;
    la_status s = la_context_create(&ctx, 1);
    if (s) return fail("la_context_create", s);
    int rc = 0;
    if (decode) {
        static const int64_t shapes[][3] = {{8, 8192, 0},   {8, 131072, 0}, {1, 32768, 0},
                                            {1, 131072, 0}, {1, 524288, 0}, {8, 131072, 256}};
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0] && !rc; i++)
            if (!o.nlens) rc = decode_row(ctx, &o, shapes[i][0], shapes[i][1], shapes[i][2], copy_gbps);
        for (int i = 0; i < o.nlens && !rc; i++) rc = decode_row(ctx, &o, 1, o.lens[i], 0, copy_gbps);
        la_context_destroy(ctx);
        return rc;
    }
    const bool default_lens = !o.nlens;
    if (default_lens)
        for (int64_t L = sparse ? 8192 : 1024; L <= (sparse ? 131072 : o.tokens) && o.nlens < MAX_LENS; L *= 2)
            o.lens[o.nlens++] = L;
    int64_t max_tok = o.tokens > 65536 ? o.tokens : 65536;
    for (int i = 0; i < o.nlens; i++) max_tok = o.lens[i] > max_tok ? o.lens[i] : max_tok;
    const size_t n = (size_t)(max_tok * o.H * o.D);
    void *buf[9] = {0};
    for (int i = 0; i < 9 && !rc; i++) rc = alloc_filled(i == 4 ? (size_t)(max_tok * o.H) * 4 : n * 2, (uint64_t)i + 1, &buf[i]);
    for (int i = 0; i < o.nlens && !rc && sparse; i++) rc = sparse_rows(ctx, &o, buf, o.lens[i], o.bwd);
    for (int i = 0; i < o.nlens && !rc && !sparse; i++) {
        const int64_t L = o.lens[i], B = o.tokens / L > 0 ? o.tokens / L : 1;
        rc = attention_rows(ctx, &o, buf, B, L, o.bwd, o.iters);
    }
    if (!rc && !sparse && default_lens && o.tokens < 65536)
        rc = attention_rows(ctx, &o, buf, 1, 65536, o.bwd, o.iters > 5 ? 5 : o.iters);
    la_context_destroy(ctx);
    for (int i = 0; i < 9; i++) la_device_free(gpu, buf[i]);
    return rc;
}
