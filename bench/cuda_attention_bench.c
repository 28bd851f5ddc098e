/* Times longattn's CUDA attention with CUDA events, on random data.
 *
 *   longattn_cuda_bench [--op fwd|fwdbwd|decode|sparse|sparse_fwdbwd] [--heads 16] [--dim 128] [--tokens 16384] [--len L]...
 *                       [--iters 20]
 *
 * fwd (default): la_attention_forward, bf16 inputs [B, L, H, D], out bf16,
 *   lse f32. Without --len: B x L = --tokens for L in 1K..16K, plus L = 64K
 *   at batch 1; each shape causal and not. TFLOP/s count 4 D flops per
 *   visible (query, key) pair (2 for Q K^T, 2 for P V).
 * fwdbwd: the forward then la_attention_backward (dout bf16, gradients
 *   bf16), timed together, on the same shapes. TFLOP/s count 14 D flops per
 *   visible pair (the forward's two products and the backward's five, the
 *   usual convention; longattn's backward computes seven).
 * decode: la_attention_decode, f32 q [B, 1, 32, D] over a bf16 cache of 8
 *   K/V heads, contiguous [B, L, 8, D], at B x L = 8 x 8K, 8 x 128K, 1 x 32K,
 *   1 x 128K, 1 x 512K, and 8 x 128K paged (256-token pages dealt in random
 *   order). GB/s count the K and V bytes read once.
 * sparse: la_block_sparse_forward beside la_attention_forward at B 1,
 *   L = 8K..128K (or --len), causal and not, block size 64: the complete
 *   list, then each query block's diagonal block (causal) plus every other
 *   visible block with probability 0.5, 0.25, 0.1, 0.03. density: the
 *   listed visible (query, key) pairs over the dense call's; TFLOP/s count
 *   4 D flops per listed visible pair; speedup: dense ms / sparse ms. The
 *   time includes the copy of the host index to the device.
 * sparse_fwdbwd: the same, each call the forward then the backward
 *   (la_block_sparse_backward beside la_attention_backward; dout and
 *   gradients bf16); TFLOP/s count 14 D flops per listed visible pair (as
 *   fwdbwd). The sparse time includes the host's tile lists for the
 *   backward and their copy.
 * Each JSON line is the median of `--iters` timed calls after 3 warm-up
 * calls, each call timed alone between two events (decode also prints
 * stream_ms, the time per call of `--iters` calls run back to back). */
#include "longattn.h"

#include <cuda_runtime_api.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

#define CHECK(call)                                                                        \
    do {                                                                                   \
        cudaError_t e_ = (call);                                                           \
        if (e_ != cudaSuccess) {                                                           \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            return 1;                                                                      \
        }                                                                                  \
    } while (0)

/* bf16 of uniform [-1, 1) by a xorshift generator: never zeros (METHOD.md). */
static void fill_random(uint16_t *h, size_t n, uint64_t seed) {
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        float f = (float)((s >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
        uint32_t u;
        memcpy(&u, &f, 4);
        h[i] = (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
    }
}

static int run_shape(la_context *ctx, int64_t B, int64_t L, int64_t H, int64_t D, int iters, void *buf[9],
                     bool with_bwd) {
    la_device dev = {LA_DEVICE_CUDA, 0};
    la_tensor q = la_tensor_contiguous(buf[0], LA_BF16, 4, (int64_t[]){B, L, H, D});
    la_tensor k = la_tensor_contiguous(buf[1], LA_BF16, 4, (int64_t[]){B, L, H, D});
    la_tensor v = la_tensor_contiguous(buf[2], LA_BF16, 4, (int64_t[]){B, L, H, D});
    la_tensor o = la_tensor_contiguous(buf[3], LA_BF16, 4, (int64_t[]){B, L, H, D});
    la_tensor l = la_tensor_contiguous(buf[4], LA_F32, 3, (int64_t[]){B, L, H});
    la_tensor dout = la_tensor_contiguous(buf[5], LA_BF16, 4, (int64_t[]){B, L, H, D});
    la_tensor dq = la_tensor_contiguous(buf[6], LA_BF16, 4, (int64_t[]){B, L, H, D});
    la_tensor dk = la_tensor_contiguous(buf[7], LA_BF16, 4, (int64_t[]){B, L, H, D});
    la_tensor dv = la_tensor_contiguous(buf[8], LA_BF16, 4, (int64_t[]){B, L, H, D});
    q.device = k.device = v.device = o.device = l.device = dev;
    dout.device = dq.device = dk.device = dv.device = dev;
    cudaEvent_t e0, e1;
    CHECK(cudaEventCreate(&e0));
    CHECK(cudaEventCreate(&e1));
    float *ms = calloc((size_t)iters, sizeof(float));
    for (int causal = 0; causal < 2; causal++) {
        la_attention_params p = la_attention_params_default();
        p.causal = causal;
        for (int i = 0; i < 3 + iters; i++) {
            CHECK(cudaEventRecord(e0, 0));
            la_status s = la_attention_forward(ctx, &p, &q, &k, &v, &o, &l);
            if (s == LA_OK && with_bwd) s = la_attention_backward(ctx, &p, &q, &k, &v, &o, &dout, &l, &dq, &dk, &dv);
            if (s != LA_OK) {
                fprintf(stderr, "la_attention_%s: %s: %s\n", with_bwd ? "forward/backward" : "forward",
                        la_status_name(s), la_last_error());
                return 1;
            }
            CHECK(cudaEventRecord(e1, 0));
            CHECK(cudaEventSynchronize(e1));
            if (i >= 3) CHECK(cudaEventElapsedTime(&ms[i - 3], e0, e1));
        }
        CHECK(cudaGetLastError());
        qsort(ms, (size_t)iters, sizeof(float), cmp_float);
        double med = ms[iters / 2] * 1e-3;
        double pairs = causal ? (double)L * (double)(L + 1) / 2 : (double)L * (double)L;
        double flops = (with_bwd ? 14.0 : 4.0) * (double)B * (double)H * (double)D * pairs;
        printf("{\"op\":\"%s\",\"backend\":\"cuda\",\"dtype\":\"bf16\",\"B\":%lld,\"L\":%lld,\"H\":%lld,"
               "\"D\":%lld,\"causal\":%d,\"ms\":%.4f,\"min_ms\":%.4f,\"tflops\":%.1f}\n",
               with_bwd ? "attention_fwdbwd" : "attention_fwd", (long long)B, (long long)L, (long long)H, (long long)D,
               causal, med * 1e3, ms[0], flops / med * 1e-12);
        fflush(stdout);
    }
    free(ms);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    return 0;
}

/* n bytes of device memory with random bf16 in [-1, 1): a 64 MB random
 * block copied over and over (the values only need to be non-zero and
 * varied for timing). */
static int fill_device(void *dst, size_t n, uint64_t seed) {
    const size_t chunk = (size_t)64 << 20;
    uint16_t *host = malloc(chunk);
    if (!host) return 1;
    fill_random(host, chunk / 2, seed);
    for (size_t off = 0; off < n; off += chunk)
        CHECK(cudaMemcpy((char *)dst + off, host, n - off < chunk ? n - off : chunk, cudaMemcpyHostToDevice));
    free(host);
    return 0;
}

/* One decode shape: f32 q [B, 1, H, D] over a bf16 cache of L keys per
 * sequence, contiguous (page 0) or in pages of `page` tokens dealt in
 * random order. */
static int run_decode(la_context *ctx, int64_t B, int64_t L, int64_t H, int64_t Hkv, int64_t D, int64_t page,
                      int iters) {
    la_device dev = {LA_DEVICE_CUDA, 0};
    const size_t kv = (size_t)(B * L * Hkv * D), nq = (size_t)(B * H * D);
    void *k, *v, *q, *o;
    CHECK(cudaMalloc(&k, kv * 2));
    CHECK(cudaMalloc(&v, kv * 2));
    CHECK(cudaMalloc(&q, nq * 4));
    CHECK(cudaMalloc(&o, nq * 4));
    if (fill_device(k, kv * 2, 11) || fill_device(v, kv * 2, 12) || fill_device(q, nq * 4, 13)) return 1;
    const int64_t nblocks = page ? B * L / page : B;
    la_tensor tq = la_tensor_contiguous(q, LA_F32, 4, (int64_t[]){B, 1, H, D});
    la_tensor to = la_tensor_contiguous(o, LA_F32, 4, (int64_t[]){B, 1, H, D});
    la_tensor tk = la_tensor_contiguous(k, LA_BF16, 4, (int64_t[]){nblocks, page ? page : L, Hkv, D});
    la_tensor tv = la_tensor_contiguous(v, LA_BF16, 4, (int64_t[]){nblocks, page ? page : L, Hkv, D});
    tq.device = to.device = tk.device = tv.device = dev;
    int32_t *table = NULL, *lens = malloc(sizeof(int32_t) * (size_t)B);
    for (int64_t b = 0; b < B; b++) lens[b] = (int32_t)L;
    if (page) {
        table = malloc(sizeof(int32_t) * (size_t)nblocks);
        uint64_t st = 0x2545f4914f6cdd1dull;
        for (int64_t i = 0; i < nblocks; i++) table[i] = (int32_t)i;
        for (int64_t i = nblocks - 1; i > 0; i--) {
            st ^= st << 13, st ^= st >> 7, st ^= st << 17;
            int64_t j = (int64_t)(st % (uint64_t)(i + 1));
            int32_t t = table[i];
            table[i] = table[j], table[j] = t;
        }
    }
    la_kv_layout layout = {.seqlens_k = lens, .block_table = table, .blocks_per_seq = page ? L / page : 0};
    la_attention_params p = la_attention_params_default();
    p.causal = 1;
    cudaEvent_t e0, e1;
    CHECK(cudaEventCreate(&e0));
    CHECK(cudaEventCreate(&e1));
    float *ms = calloc((size_t)iters, sizeof(float));
    for (int i = 0; i < 3 + iters; i++) {
        CHECK(cudaEventRecord(e0, 0));
        la_status s = la_attention_decode(ctx, &p, &tq, &tk, &tv, &layout, &to, NULL);
        if (s != LA_OK) {
            fprintf(stderr, "la_attention_decode: %s: %s\n", la_status_name(s), la_last_error());
            return 1;
        }
        CHECK(cudaEventRecord(e1, 0));
        CHECK(cudaEventSynchronize(e1));
        if (i >= 3) CHECK(cudaEventElapsedTime(&ms[i - 3], e0, e1));
    }
    qsort(ms, (size_t)iters, sizeof(float), cmp_float);
    /* stream_ms: `iters` calls back to back between two events, per call
     * (the host's per-call work then overlaps the device's) */
    float stream = 0;
    CHECK(cudaEventRecord(e0, 0));
    for (int i = 0; i < iters; i++)
        if (la_attention_decode(ctx, &p, &tq, &tk, &tv, &layout, &to, NULL) != LA_OK) return 1;
    CHECK(cudaEventRecord(e1, 0));
    CHECK(cudaEventSynchronize(e1));
    CHECK(cudaEventElapsedTime(&stream, e0, e1));
    const double med = ms[iters / 2] * 1e-3, bytes = 2.0 * (double)kv * 2;
    printf("{\"op\":\"decode\",\"backend\":\"cuda\",\"dtype\":\"bf16\",\"B\":%lld,\"L\":%lld,\"H\":%lld,\"Hkv\":%lld,"
           "\"D\":%lld,\"page\":%lld,\"ms\":%.4f,\"min_ms\":%.4f,\"stream_ms\":%.4f,\"gbps\":%.1f}\n",
           (long long)B, (long long)L, (long long)H, (long long)Hkv, (long long)D, (long long)page, med * 1e3, ms[0],
           stream / iters, bytes / med * 1e-9);
    fflush(stdout);
    free(ms), free(table), free(lens);
    cudaEventDestroy(e0), cudaEventDestroy(e1);
    cudaFree(k), cudaFree(v), cudaFree(q), cudaFree(o);
    return 0;
}

/* Median ms of `iters` calls of the forward (and the backward when
 * with_bwd), dense (index NULL) or sparse; t: q, k, v, out, lse, dout, dq,
 * dk, dv. */
static int time_forward(la_context *ctx, const la_attention_params *p, const la_tensor *t, const la_block_index *index,
                        int iters, bool with_bwd, double *med_ms) {
    cudaEvent_t e0, e1;
    CHECK(cudaEventCreate(&e0));
    CHECK(cudaEventCreate(&e1));
    float *ms = calloc((size_t)iters, sizeof(float));
    for (int i = 0; i < 3 + iters; i++) {
        CHECK(cudaEventRecord(e0, 0));
        la_status s = index ? la_block_sparse_forward(ctx, p, &t[0], &t[1], &t[2], index, (la_tensor *)&t[3],
                                                      (la_tensor *)&t[4])
                            : la_attention_forward(ctx, p, &t[0], &t[1], &t[2], (la_tensor *)&t[3], (la_tensor *)&t[4]);
        la_tensor *g = (la_tensor *)t;
        if (s == LA_OK && with_bwd)
            s = index ? la_block_sparse_backward(ctx, p, &t[0], &t[1], &t[2], index, &t[3], &t[5], &t[4], &g[6], &g[7],
                                                 &g[8])
                      : la_attention_backward(ctx, p, &t[0], &t[1], &t[2], &t[3], &t[5], &t[4], &g[6], &g[7], &g[8]);
        if (s != LA_OK) {
            fprintf(stderr, "%s: %s: %s\n", index ? "la_block_sparse_forward/backward" : "la_attention_forward/backward",
                    la_status_name(s), la_last_error());
            return 1;
        }
        CHECK(cudaEventRecord(e1, 0));
        CHECK(cudaEventSynchronize(e1));
        if (i >= 3) CHECK(cudaEventElapsedTime(&ms[i - 3], e0, e1));
    }
    qsort(ms, (size_t)iters, sizeof(float), cmp_float);
    *med_ms = ms[iters / 2];
    free(ms);
    cudaEventDestroy(e0), cudaEventDestroy(e1);
    return 0;
}

/* Block-sparse forward beside the dense one at B 1, length L (see the top). */
static int run_sparse(la_context *ctx, int64_t L, int64_t H, int64_t D, int iters, void *buf[9], bool with_bwd) {
    const int64_t bs = 64, nb = (L + bs - 1) / bs, rows = H * nb;
    la_device dev = {LA_DEVICE_CUDA, 0};
    la_tensor t[9];
    for (int i = 0; i < 9; i++) t[i] = la_tensor_contiguous(buf[i], LA_BF16, 4, (int64_t[]){1, L, H, D});
    t[4] = la_tensor_contiguous(buf[4], LA_F32, 3, (int64_t[]){1, L, H});
    for (int i = 0; i < 9; i++) t[i].device = dev;
    la_block_index x = {.block_size = bs, .num_seqs = 1, .heads = H, .q_blocks = nb};
    x.offsets = malloc(sizeof(int64_t) * (size_t)(rows + 1));
    x.key_blocks = malloc(sizeof(int32_t) * (size_t)(rows * nb));
    if (!x.offsets || !x.key_blocks) return 1;
    static const double shares[] = {1, 0.5, 0.25, 0.1, 0.03};
    for (int causal = 0; causal < 2; causal++) {
        la_attention_params p = la_attention_params_default();
        p.causal = causal;
        double dense_ms;
        if (time_forward(ctx, &p, t, NULL, iters, with_bwd, &dense_ms)) return 1;
        const double dense_pairs = causal ? (double)L * (double)(L + 1) / 2 : (double)L * (double)L;
        for (size_t si = 0; si < sizeof shares / sizeof shares[0]; si++) {
            uint64_t st = 0x9e3779b97f4a7c15ull + si;
            double pairs = 0; /* listed visible pairs, all heads */
            x.offsets[0] = 0;
            for (int64_t r = 0; r < rows; r++) {
                const int64_t qb = r % nb, last = causal ? qb : nb - 1, qrows = qb * bs + bs < L ? bs : L - qb * bs;
                int64_t n = x.offsets[r];
                for (int64_t kb = 0; kb <= last; kb++) {
                    st ^= st << 13, st ^= st >> 7, st ^= st << 17;
                    const bool diag = causal && kb == qb;
                    if (!diag && shares[si] < 1 && (double)(st >> 11) * (1.0 / 9007199254740992.0) >= shares[si])
                        continue;
                    x.key_blocks[n++] = (int32_t)kb;
                    const int64_t keys = kb * bs + bs < L ? bs : L - kb * bs;
                    pairs += diag ? (double)qrows * (double)(qrows + 1) / 2 : (double)qrows * (double)keys;
                }
                x.offsets[r + 1] = n;
            }
            double ms;
            if (time_forward(ctx, &p, t, &x, iters, with_bwd, &ms)) return 1;
            printf("{\"op\":\"%s\",\"backend\":\"cuda\",\"dtype\":\"bf16\",\"B\":1,\"L\":%lld,\"H\":%lld,"
                   "\"D\":%lld,\"causal\":%d,\"block\":%lld,\"share\":%.2f,\"density\":%.4f,\"ms\":%.4f,"
                   "\"dense_ms\":%.4f,\"speedup\":%.2f,\"tflops\":%.1f}\n",
                   with_bwd ? "sparse_fwdbwd" : "sparse_fwd", (long long)L, (long long)H, (long long)D, causal, (long long)bs, shares[si],
                   pairs / ((double)H * dense_pairs), ms, dense_ms, dense_ms / ms,
                   (with_bwd ? 14.0 : 4.0) * (double)D * pairs / (ms * 1e9));
            fflush(stdout);
        }
    }
    free(x.offsets), free(x.key_blocks);
    return 0;
}

int main(int argc, char **argv) {
    int64_t H = 16, D = 128, tokens = 16384, lens[16];
    int nlens = 0, iters = 20;
    const char *op = "fwd";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--heads")) H = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--dim")) D = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--tokens")) tokens = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--len") && nlens < 16) lens[nlens++] = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--iters")) iters = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--op")) op = argv[i + 1];
        else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    const bool decode = !strcmp(op, "decode"), sparse = !strncmp(op, "sparse", 6);
    const bool with_bwd = !strcmp(op, "fwdbwd") || !strcmp(op, "sparse_fwdbwd");
    if (!decode && strcmp(op, "fwdbwd") && strcmp(op, "sparse") && strcmp(op, "sparse_fwdbwd") && strcmp(op, "fwd")) {
        fprintf(stderr, "--op is fwd, fwdbwd, decode, sparse or sparse_fwdbwd\n");
        return 2;
    }
    if (!la_cuda_available()) {
        fprintf(stderr, "no CUDA: %s\n", la_last_error());
        return 77;
    }
    la_context *ctx;
    la_context_create(&ctx, 1);
    int rc = 0;
    if (decode) {
        static const int64_t shapes[][3] = {{8, 8192, 0},   {8, 131072, 0},  {1, 32768, 0},
                                            {1, 131072, 0}, {1, 524288, 0}, {8, 131072, 256}};
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0] && !rc; i++)
            rc = run_decode(ctx, shapes[i][0], shapes[i][1], 32, 8, D, shapes[i][2], iters);
        la_context_destroy(ctx);
        return rc;
    }
    if (nlens == 0)
        for (int64_t L = sparse ? 8192 : 1024; L <= (sparse ? 131072 : tokens); L *= 2) lens[nlens++] = L;
    int64_t max_tok = tokens > 65536 ? tokens : 65536;
    for (int i = 0; i < nlens; i++) max_tok = lens[i] > max_tok ? lens[i] : max_tok;
    size_t n = (size_t)(max_tok * H * D);
    void *buf[9];
    for (int i = 0; i < 9; i++) {
        if (i == 4) continue;
        CHECK(cudaMalloc(&buf[i], n * 2));
        if (fill_device(buf[i], n * 2, (uint64_t)i + 1)) return 1;
    }
    CHECK(cudaMalloc(&buf[4], (size_t)(max_tok * H) * 4));
    for (int i = 0; i < nlens && !rc && sparse; i++) rc = run_sparse(ctx, lens[i], H, D, iters, buf, with_bwd);
    for (int i = 0; i < nlens && !rc && !sparse; i++) {
        int64_t L = lens[i], B = tokens / L > 0 ? tokens / L : 1;
        rc = run_shape(ctx, B, L, H, D, iters, buf, with_bwd);
    }
    if (!rc && !sparse && nlens > 0 && lens[nlens - 1] < 65536)
        rc = run_shape(ctx, 1, 65536, H, D, iters > 5 ? 5 : iters, buf, with_bwd);
    la_context_destroy(ctx);
    for (int i = 0; i < 9; i++) cudaFree(buf[i]);
    return rc;
}
