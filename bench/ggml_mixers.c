/* Peer benchmark: ggml's CPU ops for the linear mixers, as shipped in
 * llama-cpp-python's build of llama.cpp, on the shapes of `longattn bench
 * linear`: B = 1, f32, H = 8 heads of Dk = Dv = 128 for the matrix-state
 * mixers, D_inner 1536 with N 16 for the Mamba-1 scan.
 *
 *   gla          GGML_OP_GATED_LINEAR_ATTN: per-key-channel decay g (a
 *                factor in (0, 1), not a log), beside `--decay channel`
 *   gated_delta  GGML_OP_GATED_DELTA_NET with scalar log-gate per head and
 *                token, after ggml_l2_norm of q and k (longattn's bench sets
 *                qk_l2norm); "gated_delta_op" times the op alone
 *   mamba        GGML_OP_SSM_SCAN in its Mamba-1 form (head_dim 1, A
 *                [N, D_inner]) with what longattn's selective scan also
 *                computes around it: dt + bias before (ggml applies softplus
 *                inside the op), then y + D*x and y * silu(z), as llama.cpp's
 *                Mamba layer builds them; "mamba_op" times the op alone
 *   rwkv7        GGML_OP_RWKV_WKV7 (RWKV-7's generalised delta rule with a
 *                per-channel decay); longattn has no RWKV-7 op, the closest
 *                is its gated delta rule
 *
 * All of them run recurrently, token by token, parallel over heads (over
 * channels for the scan). Inputs are filled once; the graph is computed
 * once to warm up, then three times, and the best time (and the least
 * process CPU time, cpu_ms) is printed as one
 * JSON line per point in the format of `longattn bench linear --json`, with
 * "backend":"ggml" and the ggml version that ran.
 * usage: ggml_mixers THREADS [L,L,...] [op,op,...]
 * Build and run with bench/ggml-mixers-peer.sh. */
#include <ggml-cpu.h>
#include <ggml.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Seconds on a clock: CLOCK_MONOTONIC (wall) or CLOCK_PROCESS_CPUTIME_ID
 * (all threads' CPU time: on a shared machine, where wall time counts the
 * time other programs held the cores, the two sides compare by it as
 * well, as longattn bench's cpu_ms). */
static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double now(void) { return clock_s(CLOCK_MONOTONIC); }
static double cpu_now(void) { return clock_s(CLOCK_PROCESS_CPUTIME_ID); }

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static float uniform(float lo, float hi) {
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return lo + (hi - lo) * (float)((rng_state >> 40) * (1.0 / 16777216.0));
}

static struct ggml_tensor *filled(struct ggml_context *ctx, int n, const int64_t *ne, float lo, float hi) {
    struct ggml_tensor *t = ggml_new_tensor(ctx, GGML_TYPE_F32, n, ne);
    float *d = t->data;
    for (int64_t i = 0; i < ggml_nelements(t); i++) d[i] = uniform(lo, hi);
    return t;
}

static struct ggml_tensor *zeros(struct ggml_context *ctx, int n, const int64_t *ne) {
    struct ggml_tensor *t = ggml_new_tensor(ctx, GGML_TYPE_F32, n, ne);
    memset(t->data, 0, ggml_nbytes(t));
    return t;
}

enum { H = 8, S = 128, D_INNER = 1536, N_STATE = 16 };

/* Builds the graph of one mixer at length L; returns its output node. */
static struct ggml_tensor *build(struct ggml_context *ctx, const char *op, int64_t L) {
    const int64_t tok3[3] = {S, H, L}, tok4[4] = {S, H, L, 1};
    if (!strcmp(op, "gla")) {
        struct ggml_tensor *k = filled(ctx, 3, tok3, -1, 1), *v = filled(ctx, 3, tok3, -1, 1),
                           *q = filled(ctx, 3, tok3, -1, 1), *g = filled(ctx, 3, tok3, 0.90f, 0.9999f);
        const int64_t st[2] = {(int64_t)S * S * H, 1};
        return ggml_gated_linear_attn(ctx, k, v, q, g, zeros(ctx, 2, st), 1.0f / sqrtf((float)S));
    }
    if (!strcmp(op, "gated_delta") || !strcmp(op, "gated_delta_op")) {
        const int64_t gate[4] = {1, H, L, 1}, st[4] = {S, S, H, 1};
        struct ggml_tensor *q = filled(ctx, 4, tok4, -1, 1), *k = filled(ctx, 4, tok4, -1, 1),
                           *v = filled(ctx, 4, tok4, -1, 1), *g = filled(ctx, 4, gate, -0.3f, 0),
                           *beta = filled(ctx, 4, gate, 0, 1);
        if (!strcmp(op, "gated_delta")) q = ggml_l2_norm(ctx, q, 1e-6f), k = ggml_l2_norm(ctx, k, 1e-6f);
        else { /* the op alone: unit keys keep the recurrence bounded */
            float *kd = k->data, *qd = q->data;
            for (int64_t r = 0; r < (int64_t)H * L; r++) {
                double nk = 0, nq = 0;
                for (int i = 0; i < S; i++) nk += kd[r * S + i] * kd[r * S + i], nq += qd[r * S + i] * qd[r * S + i];
                for (int i = 0; i < S; i++) kd[r * S + i] /= (float)sqrt(nk), qd[r * S + i] /= (float)sqrt(nq);
            }
        }
        return ggml_gated_delta_net(ctx, q, k, v, g, beta, zeros(ctx, 4, st), 1);
    }
    if (!strcmp(op, "mamba") || !strcmp(op, "mamba_op")) {
        const int64_t s_ne[4] = {N_STATE, 1, D_INNER, 1}, x_ne[4] = {1, D_INNER, L, 1}, dt_ne[3] = {D_INNER, L, 1},
                      a_ne[2] = {N_STATE, D_INNER}, bc_ne[4] = {N_STATE, 1, L, 1}, d_ne[1] = {D_INNER};
        struct ggml_tensor *x = filled(ctx, 4, x_ne, -1, 1), *dt = filled(ctx, 3, dt_ne, -3, 1),
                           *A = filled(ctx, 2, a_ne, -2.7f, -0.37f), *B = filled(ctx, 4, bc_ne, -1, 1),
                           *C = filled(ctx, 4, bc_ne, -1, 1);
        struct ggml_tensor *ids = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, 1);
        ((int32_t *)ids->data)[0] = 0;
        const bool full = !strcmp(op, "mamba");
        struct ggml_tensor *bias = NULL, *Dskip = NULL, *z = NULL;
        if (full) {
            bias = filled(ctx, 1, d_ne, -1, 0.5f), Dskip = filled(ctx, 1, d_ne, -1, 1);
            z = filled(ctx, 3, dt_ne, -2, 2);
            dt = ggml_add(ctx, dt, bias);
        }
        struct ggml_tensor *out = ggml_ssm_scan(ctx, zeros(ctx, 4, s_ne), x, dt, A, B, C, ids, 1);
        if (!full) return out;
        /* the scan's y: the first D_INNER * L floats of its output */
        struct ggml_tensor *y = ggml_view_2d(ctx, out, D_INNER, L, D_INNER * sizeof(float), 0);
        struct ggml_tensor *x2 = ggml_reshape_2d(ctx, x, D_INNER, L);
        y = ggml_add(ctx, y, ggml_mul(ctx, x2, Dskip));
        return ggml_mul(ctx, y, ggml_silu(ctx, ggml_reshape_2d(ctx, z, D_INNER, L)));
    }
    if (!strcmp(op, "rwkv7")) {
        struct ggml_tensor *r = filled(ctx, 3, tok3, -1, 1), *w = filled(ctx, 3, tok3, 0.90f, 0.9999f),
                           *k = filled(ctx, 3, tok3, -1, 1), *v = filled(ctx, 3, tok3, -1, 1),
                           *a = filled(ctx, 3, tok3, -1, 1), *b = ggml_new_tensor(ctx, GGML_TYPE_F32, 3, tok3);
        /* RWKV-7's removal term: a = -kappa, b = kappa * alpha with kappa a unit
           vector and alpha in [0, 1], so the transition diag(w) - alpha kappa
           kappa^T stays contractive */
        float *ad = a->data, *bd = b->data;
        for (int64_t row = 0; row < (int64_t)H * L; row++) {
            double n = 0;
            for (int i = 0; i < S; i++) n += ad[row * S + i] * ad[row * S + i];
            float alpha = uniform(0, 1);
            for (int i = 0; i < S; i++) {
                float kappa = ad[row * S + i] / (float)sqrt(n);
                ad[row * S + i] = -kappa, bd[row * S + i] = kappa * alpha;
            }
        }
        const int64_t st[2] = {(int64_t)S * S * H, 1};
        return ggml_rwkv_wkv7(ctx, r, w, k, v, a, b, zeros(ctx, 2, st));
    }
    return NULL;
}

int main(int argc, char **argv) {
    const int threads = argc > 1 ? atoi(argv[1]) : 2;
    char Ls[256] = "4096,16384", ops[256] = "gla,gated_delta,gated_delta_op,mamba,mamba_op,rwkv7";
    if (argc > 2) snprintf(Ls, sizeof Ls, "%s", argv[2]);
    if (argc > 3) snprintf(ops, sizeof ops, "%s", argv[3]);
    const char *pyver = getenv("LLAMA_CPP_PYTHON_VERSION");
    ggml_cpu_init();
    char opbuf[256];
    snprintf(opbuf, sizeof opbuf, "%s", ops);
    for (char *sv_op = NULL, *op = strtok_r(opbuf, ",", &sv_op); op; op = strtok_r(NULL, ",", &sv_op)) {
        char lbuf[256];
        snprintf(lbuf, sizeof lbuf, "%s", Ls);
        for (char *sv_l = NULL, *ls = strtok_r(lbuf, ",", &sv_l); ls; ls = strtok_r(NULL, ",", &sv_l)) {
            const int64_t L = atoll(ls);
            const bool scan = !strncmp(op, "mamba", 5);
            /* inputs, output (y and state), intermediates of the extra ops */
            size_t per_tok = scan ? (size_t)(12 * D_INNER + 2 * N_STATE) * 4 : (size_t)(8 * S * H) * 4;
            size_t mem = per_tok * (size_t)L + (size_t)S * S * H * 4 * 3 + (size_t)D_INNER * N_STATE * 4 * 3 + (128u << 20);
            struct ggml_init_params ip = {mem, NULL, false};
            struct ggml_context *ctx = ggml_init(ip);
            struct ggml_tensor *out = build(ctx, op, L);
            if (!out) {
                fprintf(stderr, "ggml_mixers: unknown op %s\n", op);
                return 2;
            }
            struct ggml_cgraph *g = ggml_new_graph(ctx);
            ggml_build_forward_expand(g, out);
            ggml_graph_compute_with_ctx(ctx, g, threads); /* warm-up */
            double best = 1e30, cpu_best = 1e30;
            for (int r = 0; r < 3; r++) {
                double t0 = now(), c0 = cpu_now();
                ggml_graph_compute_with_ctx(ctx, g, threads);
                double t = now() - t0, c = cpu_now() - c0;
                if (t < best) best = t;
                if (c < cpu_best) cpu_best = c;
            }
            /* a finite output says the recurrence stayed bounded */
            const float *od = out->data;
            int finite = 1;
            for (int64_t i = 0; i < ggml_nelements(out); i += 997) finite &= isfinite(od[i]) != 0;
            if (scan)
                printf("{\"op\":\"linear\",\"mixer\":\"%s\",\"backend\":\"ggml\",\"ggml\":\"%s\",\"ggml_commit\":\"%s\","
                       "\"llama_cpp_python\":\"%s\",\"threads\":%d,\"dtype\":\"f32\",\"B\":1,\"L\":%lld,\"D\":%d,"
                       "\"N\":%d,\"pass\":\"fwd\",\"ms\":%.3f,\"cpu_ms\":%.3f,\"tokens_per_s\":%.0f,\"finite\":%s}\n",
                       op, ggml_version(), ggml_commit(), pyver ? pyver : "?", threads, (long long)L, D_INNER, N_STATE,
                       best * 1e3, cpu_best * 1e3, (double)L / best, finite ? "true" : "false");
            else
                printf("{\"op\":\"linear\",\"mixer\":\"%s\",\"backend\":\"ggml\",\"ggml\":\"%s\",\"ggml_commit\":\"%s\","
                       "\"llama_cpp_python\":\"%s\",\"threads\":%d,\"dtype\":\"f32\",\"B\":1,\"H\":%d,\"L\":%lld,"
                       "\"D\":%d,\"pass\":\"fwd\",\"ms\":%.3f,\"cpu_ms\":%.3f,\"tokens_per_s\":%.0f,\"finite\":%s}\n",
                       op, ggml_version(), ggml_commit(), pyver ? pyver : "?", threads, H, (long long)L, S, best * 1e3,
                       cpu_best * 1e3, (double)L / best, finite ? "true" : "false");
            fflush(stdout);
            ggml_free(ctx);
        }
    }
    return 0;
}
