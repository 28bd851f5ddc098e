/* Peer benchmark: ggml's CPU flash attention (GGML_OP_FLASH_ATTN_EXT), as
 * shipped in llama-cpp-python's build of llama.cpp, on the shapes of
 * `longattn bench attention`: f32 Q, f16 K/V, B = 1, H = Hkv = 8. Prints one
 * JSON line per point in longattn's format with backend "ggml".
 * Build and run with bench/ggml-peer.sh. */
#include <ggml-cpu.h>
#include <ggml.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2, D = argc > 2 ? atoi(argv[2]) : 128, causal = argc > 3 ? atoi(argv[3]) : 0;
    const int H = 8, Ls[] = {512, 1024, 2048, 4096, 8192};
    ggml_cpu_init();
    for (size_t li = 0; li < sizeof Ls / sizeof Ls[0]; li++) {
        const int L = Ls[li];
        size_t mem = (size_t)L * H * D * (4 + 2 + 2 + 4) + (size_t)L * L * 2 + (64u << 20);
        struct ggml_init_params ip = {mem, NULL, false};
        struct ggml_context *ctx = ggml_init(ip);
        struct ggml_tensor *q = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, D, L, H, 1);
        struct ggml_tensor *k = ggml_new_tensor_4d(ctx, GGML_TYPE_F16, D, L, H, 1);
        struct ggml_tensor *v = ggml_new_tensor_4d(ctx, GGML_TYPE_F16, D, L, H, 1);
        struct ggml_tensor *mask = NULL;
        float *qd = q->data;
        ggml_fp16_t *kd = k->data, *vd = v->data;
        for (int64_t i = 0; i < (int64_t)L * H * D; i++) {
            qd[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
            kd[i] = ggml_fp32_to_fp16((float)((i * 40503u) % 1000) / 1000.0f - 0.5f);
            vd[i] = ggml_fp32_to_fp16((float)((i * 9176u) % 1000) / 1000.0f - 0.5f);
        }
        if (causal) {
            mask = ggml_new_tensor_4d(ctx, GGML_TYPE_F16, L, L, 1, 1);
            ggml_fp16_t *md = mask->data, zero = ggml_fp32_to_fp16(0), ninf = ggml_fp32_to_fp16(-INFINITY);
            for (int64_t i = 0; i < L; i++)
                for (int64_t j = 0; j < L; j++) md[i * L + j] = j <= i ? zero : ninf;
        }
        struct ggml_tensor *out = ggml_flash_attn_ext(ctx, q, k, v, mask, 1.0f / sqrtf((float)D), 0.0f, 0.0f);
        struct ggml_cgraph *g = ggml_new_graph(ctx);
        ggml_build_forward_expand(g, out);
        ggml_graph_compute_with_ctx(ctx, g, threads); /* warm-up */
        double best = 1e30;
        int reps = L <= 2048 ? 5 : 3;
        for (int r = 0; r < reps; r++) {
            double t0 = now();
            ggml_graph_compute_with_ctx(ctx, g, threads);
            double t = now() - t0;
            if (t < best) best = t;
        }
        double flops = 4.0 * H * (double)L * L * D / (causal ? 2 : 1);
        printf("{\"op\":\"attention\",\"backend\":\"ggml\",\"threads\":%d,\"dtype\":\"f32q/f16kv\",\"B\":1,\"H\":%d,"
               "\"Hkv\":%d,\"L\":%d,\"D\":%d,\"causal\":%d,\"pass\":\"fwd\",\"ms\":%.3f,\"gflops\":%.2f}\n",
               threads, H, H, L, D, causal, best * 1e3, flops / best / 1e9);
        fflush(stdout);
        ggml_free(ctx);
    }
    return 0;
}
