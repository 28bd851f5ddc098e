/* Times la_attention_forward on CUDA tensors with CUDA events: bf16 inputs
 * [B, L, H, D] on the GPU, random data, out bf16, lse f32.
 *
 *   longattn_cuda_bench [--heads 16] [--dim 128] [--tokens 16384] [--len L]... [--iters 20]
 *
 * Without --len: B x L = --tokens for L in 1K..16K, plus L = 64K at batch 1.
 * Each shape runs causal and not. Prints one JSON line per measurement:
 * the median of `--iters` timed calls after 3 warm-up calls, each call timed
 * alone between two events, and TFLOP/s counting 4 D flops per visible
 * (query, key) pair (2 for Q K^T, 2 for P V). */
#include "longattn.h"

#include <cuda_runtime_api.h>
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

static int run_shape(la_context *ctx, int64_t B, int64_t L, int64_t H, int64_t D, int iters, void *buf[5]) {
    la_device dev = {LA_DEVICE_CUDA, 0};
    la_tensor q = la_tensor_contiguous(buf[0], LA_BF16, 4, (int64_t[]){B, L, H, D});
    la_tensor k = la_tensor_contiguous(buf[1], LA_BF16, 4, (int64_t[]){B, L, H, D});
    la_tensor v = la_tensor_contiguous(buf[2], LA_BF16, 4, (int64_t[]){B, L, H, D});
    la_tensor o = la_tensor_contiguous(buf[3], LA_BF16, 4, (int64_t[]){B, L, H, D});
    la_tensor l = la_tensor_contiguous(buf[4], LA_F32, 3, (int64_t[]){B, L, H});
    q.device = k.device = v.device = o.device = l.device = dev;
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
            if (s != LA_OK) {
                fprintf(stderr, "la_attention_forward: %s: %s\n", la_status_name(s), la_last_error());
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
        double flops = 4.0 * (double)B * (double)H * (double)D * pairs;
        printf("{\"op\":\"attention_fwd\",\"backend\":\"cuda\",\"dtype\":\"bf16\",\"B\":%lld,\"L\":%lld,\"H\":%lld,"
               "\"D\":%lld,\"causal\":%d,\"ms\":%.4f,\"min_ms\":%.4f,\"tflops\":%.1f}\n",
               (long long)B, (long long)L, (long long)H, (long long)D, causal, med * 1e3, ms[0], flops / med * 1e-12);
        fflush(stdout);
    }
    free(ms);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    return 0;
}

int main(int argc, char **argv) {
    int64_t H = 16, D = 128, tokens = 16384, lens[16];
    int nlens = 0, iters = 20;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--heads")) H = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--dim")) D = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--tokens")) tokens = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--len") && nlens < 16) lens[nlens++] = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--iters")) iters = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (!la_cuda_available()) {
        fprintf(stderr, "no CUDA: %s\n", la_last_error());
        return 77;
    }
    if (nlens == 0)
        for (int64_t L = 1024; L <= tokens; L *= 2) lens[nlens++] = L;
    int64_t max_tok = tokens > 65536 ? tokens : 65536;
    size_t n = (size_t)(max_tok * H * D);
    void *buf[5];
    uint16_t *host = malloc(n * 2);
    for (int i = 0; i < 4; i++) {
        CHECK(cudaMalloc(&buf[i], n * 2));
        fill_random(host, n, (uint64_t)i + 1);
        CHECK(cudaMemcpy(buf[i], host, n * 2, cudaMemcpyHostToDevice));
    }
    CHECK(cudaMalloc(&buf[4], (size_t)(max_tok * H) * 4));
    free(host);
    la_context *ctx;
    la_context_create(&ctx, 1);
    int rc = 0;
    for (int i = 0; i < nlens && !rc; i++) {
        int64_t L = lens[i], B = tokens / L > 0 ? tokens / L : 1;
        rc = run_shape(ctx, B, L, H, D, iters, buf);
    }
    if (!rc && nlens > 0 && lens[nlens - 1] < 65536) rc = run_shape(ctx, 1, 65536, H, D, iters > 5 ? 5 : iters, buf);
    la_context_destroy(ctx);
    for (int i = 0; i < 5; i++) cudaFree(buf[i]);
    return rc;
}
