/* longattn bench: kernel speed as ratios to this machine's ceilings measured
 * in the same run. `bench peak`, `bench attention`, `bench decode`. */
#include "cli.h"
#include "longattn.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define MAX_LIST 16

typedef struct {
    bool json, quick;
    int threads;
    int64_t B, H, Hkv;
    int64_t L[MAX_LIST], D[MAX_LIST];
    int nL, nD;
    int causal[2], ncausal;
    la_dtype dtype[3];
    int ndtype;
    bool fwd, bwd;
    double budget_s; /* skip points expected to take longer than this */
} options;

typedef struct {
    double fma, bf16, bf16_effective, read_gbps;
    la_simd simd;
} ceilings;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- memory: peak RSS of the process since the last reset ---- */

static double read_status_kb(const char *field) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    double kb = 0;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, field, n)) kb = atof(line + n + 1);
    fclose(f);
    return kb;
}

static void reset_peak_rss(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f) {
        fputs("5", f); /* resets VmHWM to the current RSS */
        fclose(f);
    }
}

/* ---- argument lists ---- */

static int parse_list(const char *s, int64_t *out, int max) {
    int n = 0;
    while (*s && n < max) {
        char *end;
        long long v = strtoll(s, &end, 10);
        if (end == s || v <= 0) return -1;
        out[n++] = v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return n;
}

static int parse_dtypes(const char *s, la_dtype *out) {
    int n = 0;
    char buf[64];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *tok = strtok(buf, ","); tok && n < 3; tok = strtok(NULL, ",")) {
        if (!strcmp(tok, "f32")) out[n++] = LA_F32;
        else if (!strcmp(tok, "bf16")) out[n++] = LA_BF16;
        else if (!strcmp(tok, "f16")) out[n++] = LA_F16;
        else return -1;
    }
    return n;
}

static void usage(void) {
    fprintf(stderr,
            "usage: longattn bench peak|attention|decode [--json] [--quick] [--threads N]\n"
            "       attention: [--L 512,1024,...] [--D 64,128] [--causal 0,1] [--dtype f32,bf16,f16]\n"
            "                  [--pass fwd,bwd] [--B 1] [--H 8] [--Hkv 8] [--budget SECONDS]\n"
            "       decode:    [--L 1024,...,32768] [--dtype f32,bf16,f16]\n");
}

static int parse_options(int argc, char **argv, options *o, bool decode) {
    memset(o, 0, sizeof *o);
    o->B = 1, o->H = decode ? 32 : 8, o->Hkv = 8, o->budget_s = 20;
    o->nL = 0, o->nD = 0, o->ncausal = 0, o->ndtype = 0;
    o->fwd = o->bwd = true;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        bool takes = true;
        if (!strcmp(a, "--json")) o->json = true, takes = false;
        else if (!strcmp(a, "--quick")) o->quick = true, takes = false;
        else if (!val) return usage(), -1;
        else if (!strcmp(a, "--threads")) o->threads = atoi(val);
        else if (!strcmp(a, "--L")) o->nL = parse_list(val, o->L, MAX_LIST);
        else if (!strcmp(a, "--D")) o->nD = parse_list(val, o->D, MAX_LIST);
        else if (!strcmp(a, "--B")) o->B = atoll(val);
        else if (!strcmp(a, "--H")) o->H = atoll(val);
        else if (!strcmp(a, "--Hkv")) o->Hkv = atoll(val);
        else if (!strcmp(a, "--budget")) o->budget_s = atof(val);
        else if (!strcmp(a, "--dtype")) o->ndtype = parse_dtypes(val, o->dtype);
        else if (!strcmp(a, "--causal")) {
            o->ncausal = 0;
            for (const char *s = val; *s && o->ncausal < 2; s++)
                if (*s == '0' || *s == '1') o->causal[o->ncausal++] = *s - '0';
                else if (*s != ',') o->ncausal = -1;
        } else if (!strcmp(a, "--pass")) {
            o->fwd = strstr(val, "fwd") != NULL;
            o->bwd = strstr(val, "bwd") != NULL;
        } else {
            fprintf(stderr, "longattn bench: unknown option %s\n", a);
            return usage(), -1;
        }
        if (takes) i++;
        if (o->nL < 0 || o->nD < 0 || o->ndtype < 0 || o->ncausal < 0 || o->B <= 0 || o->H <= 0 || o->Hkv <= 0) {
            fprintf(stderr, "longattn bench: bad value for %s\n", a);
            return -1;
        }
    }
#ifdef _OPENMP
    if (o->threads <= 0) o->threads = omp_get_max_threads();
#else
    o->threads = 1;
#endif
    return 0;
}

static ceilings measure_ceilings(const options *o) {
    ceilings c;
    c.simd = la_simd_detected();
    double secs = o->quick ? 0.3 : 1.0;
    c.fma = la_peak_fma_gflops(c.simd, o->threads, secs);
    c.bf16 = la_peak_bf16_gflops(c.simd, o->threads, secs);
    /* bf16 and f16 inputs reach the FMA units widened to f32 (the kernels
     * use no BF16 dot instruction yet), so their ceiling is the faster of
     * the FP32 FMA peak and the BF16 dot peak: on a Xeon with AVX512_BF16
     * vdpbf16ps measured slower than f32 FMA, which must not flatter bf16. */
    c.bf16_effective = c.bf16 > c.fma ? c.bf16 : c.fma;
    c.read_gbps = la_peak_read_gbps(o->threads, (size_t)(o->quick ? 256 : 512) << 20);
    if (o->json)
        printf("{\"op\":\"peak\",\"simd\":\"%s\",\"threads\":%d,\"fp32_fma_gflops\":%.1f,\"bf16_dot_gflops\":%.1f,"
               "\"bf16_ceiling_gflops\":%.1f,\"read_gbps\":%.2f}\n",
               la_simd_name(c.simd), o->threads, c.fma, c.bf16, c.bf16_effective, c.read_gbps);
    else
        printf("ceilings (%s, %d threads): FP32 FMA %.1f GFLOP/s, BF16 dot %s%.1f GFLOP/s, read bandwidth %.1f GB/s\n",
               la_simd_name(c.simd), o->threads, c.fma, c.bf16 > 0 ? "" : "(none; bf16 runs as f32 FMA) ",
               c.bf16 > 0 ? c.bf16 : c.fma, c.read_gbps);
    fflush(stdout);
    return c;
}

/* ---- exact attention ---- */

static void fill(void *p, la_dtype t, size_t n, uint64_t seed) {
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        float x = (float)((double)(seed >> 40) / (double)(1ull << 24)) * 2 - 1;
        if (t == LA_F32) ((float *)p)[i] = x;
        else {
            uint32_t u;
            memcpy(&u, &x, 4);
            ((uint16_t *)p)[i] = t == LA_BF16 ? (uint16_t)(u >> 16) : (uint16_t)0x3800; /* f16: 0.5 */
        }
    }
}

static double load(const void *p, la_dtype t, size_t i) {
    if (t == LA_F32) return ((const float *)p)[i];
    uint16_t h = ((const uint16_t *)p)[i];
    if (t == LA_BF16) {
        uint32_t u = (uint32_t)h << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    int e = (h >> 10) & 31, m = h & 1023;
    double x = e == 0 ? ldexp(m, -24) : ldexp(1024 + m, e - 25);
    return h & 0x8000 ? -x : x;
}

/* Largest |out - exact| over a few sampled query rows of head 0, with the
 * exact output computed in float64 in O(L D) per row. */
static double sampled_error(const la_tensor *q, const la_tensor *k, const la_tensor *v, const la_tensor *out, int64_t L,
                            int64_t D, int causal) {
    const int64_t rows[] = {0, 1, L / 3, L / 2, L - 1};
    double worst = 0, *s = malloc(sizeof(double) * (size_t)L);
    if (!s) return NAN;
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        int64_t i = rows[r], nk = causal ? i + 1 : L;
        double m = -INFINITY, sum = 0;
        for (int64_t j = 0; j < nk; j++) {
            double dot = 0;
            for (int64_t d = 0; d < D; d++)
                dot += load(q->data, q->dtype, (size_t)(i * q->stride[1] + d)) *
                       load(k->data, k->dtype, (size_t)(j * k->stride[1] + d));
            s[j] = dot / sqrt((double)D);
            if (s[j] > m) m = s[j];
        }
        for (int64_t j = 0; j < nk; j++) sum += exp(s[j] - m);
        for (int64_t d = 0; d < D; d++) {
            double o = 0;
            for (int64_t j = 0; j < nk; j++) o += exp(s[j] - m) * load(v->data, v->dtype, (size_t)(j * v->stride[1] + d));
            double e = fabs(o / sum - ((const float *)out->data)[i * out->stride[1] + d]);
            if (e > worst) worst = e;
        }
    }
    free(s);
    return worst;
}

typedef struct {
    double ms, rss_mb, extra_bytes; /* extra_bytes: the op's workspace (memory beyond inputs and outputs) */
    la_status status;
} timing;

typedef la_status (*op_fn)(la_context *, void *);

/* Warm up once (measuring the memory the call adds), then repeat until the
 * time budget for the point is spent; report the median. */
static timing time_op(la_context *ctx, op_fn fn, void *arg, double point_budget_s) {
    timing t = {0};
    reset_peak_rss();
    double t0 = now();
    t.status = fn(ctx, arg);
    double first = now() - t0;
    t.extra_bytes = (double)la_context_workspace_bytes(ctx);
    t.rss_mb = read_status_kb("VmHWM:") / 1024.0;
    if (t.status != LA_OK) return t;
    double samples[25];
    int n = 0;
    double spent = 0;
    while (n < 25 && (n < 3 || spent < point_budget_s)) {
        t0 = now();
        fn(ctx, arg);
        samples[n] = now() - t0;
        spent += samples[n++];
        if (first > point_budget_s && n >= 1) break; /* one slow sample is enough */
    }
    for (int i = 1; i < n; i++) /* insertion sort */
        for (int j = i; j > 0 && samples[j] < samples[j - 1]; j--) {
            double x = samples[j];
            samples[j] = samples[j - 1], samples[j - 1] = x;
        }
    t.ms = samples[n / 2] * 1e3;
    return t;
}

typedef struct {
    la_attention_params p;
    la_tensor q, k, v, out, lse, dout, dq, dk, dv;
} attn_args;

static la_status run_fwd(la_context *ctx, void *a) {
    attn_args *x = a;
    return la_attention_forward(ctx, &x->p, &x->q, &x->k, &x->v, &x->out, &x->lse);
}

static la_status run_bwd(la_context *ctx, void *a) {
    attn_args *x = a;
    return la_attention_backward(ctx, &x->p, &x->q, &x->k, &x->v, &x->out, &x->dout, &x->lse, &x->dq, &x->dk, &x->dv);
}

static void print_header(bool json, bool decode) {
    if (json) return;
    if (decode)
        printf("%-7s %-5s %7s %5s %8s %9s %8s %7s %9s\n", "dtype", "cache", "L", "D", "ms", "GB/s", "ratio", "rss_MB",
               "B/token");
    else
        printf("%-5s %-5s %6s %4s %3s %9s %9s %7s %8s %9s %9s\n", "dtype", "pass", "L", "D", "c", "ms", "GFLOP/s",
               "ratio", "rss_MB", "B/token", "err");
}

static int bench_attention(const options *o, const ceilings *c) {
    static const int64_t default_L[] = {512, 1024, 2048, 4096, 8192, 16384, 32768};
    static const int64_t quick_L[] = {1024, 4096};
    int64_t Ls[MAX_LIST], Ds[MAX_LIST] = {64, 128};
    int nL = o->nL, nD = o->nD ? o->nD : (o->quick ? 1 : 2);
    if (nL) memcpy(Ls, o->L, sizeof(int64_t) * (size_t)nL);
    else if (o->quick) nL = 2, memcpy(Ls, quick_L, sizeof quick_L);
    else nL = 7, memcpy(Ls, default_L, sizeof default_L);
    if (o->nD) memcpy(Ds, o->D, sizeof(int64_t) * (size_t)nD);
    else if (o->quick) Ds[0] = 128;
    int causal[2] = {0, 1}, nc = o->ncausal ? o->ncausal : (o->quick ? 1 : 2);
    if (o->ncausal) memcpy(causal, o->causal, sizeof causal);
    la_dtype dts[3] = {LA_F32, LA_BF16};
    int nt = o->ndtype ? o->ndtype : (o->quick ? 1 : 2);
    if (o->ndtype) memcpy(dts, o->dtype, sizeof dts);
    bool passes[2] = {o->fwd, o->bwd && !o->quick};
    int ok = 0, failed = 0;
    print_header(o->json, false);
    for (int ti = 0; ti < nt; ti++)
        for (int di = 0; di < nD; di++)
            for (int ci = 0; ci < nc; ci++)
                for (int pi = 0; pi < 2; pi++) {
                    if (!passes[pi]) continue;
                    double last_ms = 0;
                    int64_t last_L = 0;
                    for (int li = 0; li < nL; li++) {
                        const int64_t B = o->B, H = o->H, Hkv = o->Hkv, L = Ls[li], D = Ds[di];
                        const la_dtype dt = dts[ti];
                        const char *pass = pi ? "bwd" : "fwd";
                        double flops = 4.0 * (double)(B * H) * (double)L * (double)L * (double)D;
                        if (causal[ci]) flops /= 2;
                        if (pi) flops *= 2.5;
                        if (last_ms > 0) { /* quadratic growth: skip what would blow the budget */
                            double r = (double)L / (double)last_L, est = last_ms * r * r / 1e3;
                            if (est > o->budget_s) {
                                if (o->json)
                                    printf("{\"op\":\"attention\",\"dtype\":\"%s\",\"pass\":\"%s\",\"L\":%lld,\"D\":%lld,"
                                           "\"causal\":%d,\"skipped\":\"estimated %.0f s > budget %.0f s\"}\n",
                                           la_dtype_name(dt), pass, (long long)L, (long long)D, causal[ci], est,
                                           o->budget_s);
                                else
                                    printf("%-5s %-5s %6lld %4lld %3d   skipped (estimated %.0f s > budget)\n",
                                           la_dtype_name(dt), pass, (long long)L, (long long)D, causal[ci], est);
                                continue;
                            }
                        }
                        size_t es = la_dtype_size(dt), nq = (size_t)(B * L * H * D), nk = (size_t)(B * L * Hkv * D);
                        void *q = malloc(nq * es), *k = malloc(nk * es), *v = malloc(nk * es), *out = malloc(nq * 4);
                        float *lse = malloc((size_t)(B * L * H) * 4);
                        void *dout = pi ? malloc(nq * 4) : NULL, *dq = pi ? malloc(nq * 4) : NULL;
                        void *dk = pi ? malloc(nk * 4) : NULL, *dv = pi ? malloc(nk * 4) : NULL;
                        if (!q || !k || !v || !out || !lse || (pi && (!dout || !dq || !dk || !dv))) {
                            fprintf(stderr, "bench: out of memory at L=%lld\n", (long long)L);
                            free(q), free(k), free(v), free(out), free(lse), free(dout), free(dq), free(dk), free(dv);
                            failed++;
                            continue;
                        }
                        fill(q, dt, nq, 1), fill(k, dt, nk, 2), fill(v, dt, nk, 3);
                        memset(out, 0, nq * 4); /* touch outputs first: peak RSS is then inputs + outputs + workspace */
                        memset(lse, 0, (size_t)(B * L * H) * 4);
                        if (pi) memset(dq, 0, nq * 4), memset(dk, 0, nk * 4), memset(dv, 0, nk * 4);
                        attn_args a;
                        a.p = la_attention_params_default();
                        a.p.causal = causal[ci];
                        a.q = la_tensor_contiguous(q, dt, 4, (int64_t[]){B, L, H, D});
                        a.k = la_tensor_contiguous(k, dt, 4, (int64_t[]){B, L, Hkv, D});
                        a.v = la_tensor_contiguous(v, dt, 4, (int64_t[]){B, L, Hkv, D});
                        a.out = la_tensor_contiguous(out, LA_F32, 4, (int64_t[]){B, L, H, D});
                        a.lse = la_tensor_contiguous(lse, LA_F32, 3, (int64_t[]){B, L, H});
                        la_context *ctx;
                        la_context_create(&ctx, o->threads);
                        timing t;
                        double err = NAN;
                        if (pi) {
                            a.dout = la_tensor_contiguous(dout, LA_F32, 4, (int64_t[]){B, L, H, D});
                            fill(dout, LA_F32, nq, 4);
                            a.dq = la_tensor_contiguous(dq, LA_F32, 4, (int64_t[]){B, L, H, D});
                            a.dk = la_tensor_contiguous(dk, LA_F32, 4, (int64_t[]){B, L, Hkv, D});
                            a.dv = la_tensor_contiguous(dv, LA_F32, 4, (int64_t[]){B, L, Hkv, D});
                            la_status s = run_fwd(ctx, &a);
                            t = s ? (timing){.status = s} : time_op(ctx, run_bwd, &a, o->quick ? 0.5 : 2.0);
                        } else {
                            t = time_op(ctx, run_fwd, &a, o->quick ? 0.5 : 2.0);
                            if (t.status == LA_OK && H == Hkv) err = sampled_error(&a.q, &a.k, &a.v, &a.out, L, D, causal[ci]);
                        }
                        la_context_destroy(ctx);
                        free(q), free(k), free(v), free(out), free(lse), free(dout), free(dq), free(dk), free(dv);
                        if (t.status != LA_OK) {
                            printf(o->json ? "{\"op\":\"attention\",\"pass\":\"%s\",\"L\":%lld,\"error\":\"%s\"}\n"
                                           : "%s L=%lld failed: %s\n",
                                   pass, (long long)L, la_last_error());
                            failed++;
                            continue;
                        }
                        double gflops = flops / (t.ms * 1e-3) / 1e9;
                        double peak = dt == LA_F32 ? c->fma : c->bf16_effective;
                        double per_token = t.extra_bytes / (double)L;
                        /* the error is sampled for the forward only; JSON has no NaN */
                        char err_text[32];
                        if (isnan(err)) snprintf(err_text, sizeof err_text, o->json ? "null" : "-");
                        else snprintf(err_text, sizeof err_text, "%.3g", err);
                        if (o->json)
                            printf("{\"op\":\"attention\",\"backend\":\"cpu\",\"simd\":\"%s\",\"threads\":%d,\"dtype\":\"%s\","
                                   "\"B\":%lld,\"H\":%lld,\"Hkv\":%lld,\"L\":%lld,\"D\":%lld,\"causal\":%d,\"pass\":\"%s\","
                                   "\"ms\":%.3f,\"gflops\":%.2f,\"peak_gflops\":%.1f,\"ratio\":%.3f,\"peak_rss_mb\":%.1f,"
                                   "\"bytes_per_token\":%.0f,\"err_vs_exact\":%s}\n",
                                   la_simd_name(c->simd), o->threads, la_dtype_name(dt), (long long)B, (long long)H,
                                   (long long)Hkv, (long long)L, (long long)D, causal[ci], pass, t.ms, gflops, peak,
                                   gflops / peak, t.rss_mb, per_token, o->json ? err_text : "");
                        else
                            printf("%-5s %-5s %6lld %4lld %3d %9.2f %9.1f %7.3f %8.1f %9.0f %9s\n", la_dtype_name(dt),
                                   pass, (long long)L, (long long)D, causal[ci], t.ms, gflops, gflops / peak, t.rss_mb,
                                   per_token, err_text);
                        fflush(stdout);
                        last_ms = t.ms, last_L = L;
                        ok++;
                    }
                }
    return ok > 0 || failed == 0 ? 0 : 1;
}

/* ---- decode ---- */

typedef struct {
    la_attention_params p;
    la_tensor q, k, v, out;
    la_kv_layout layout;
} decode_args;

static la_status run_decode(la_context *ctx, void *a) {
    decode_args *x = a;
    return la_attention_decode(ctx, &x->p, &x->q, &x->k, &x->v, &x->layout, &x->out, NULL);
}

static int bench_decode(const options *o, const ceilings *c) {
    static const int64_t default_L[] = {1024, 4096, 16384, 32768};
    int64_t Ls[MAX_LIST];
    int nL = o->nL;
    if (nL) memcpy(Ls, o->L, sizeof(int64_t) * (size_t)nL);
    else if (o->quick) nL = 1, Ls[0] = 32768;
    else nL = 4, memcpy(Ls, default_L, sizeof default_L);
    la_dtype dts[3] = {LA_F32, LA_BF16, LA_F16};
    int nt = o->ndtype ? o->ndtype : (o->quick ? 1 : 3);
    if (o->ndtype) memcpy(dts, o->dtype, sizeof dts);
    const int64_t H = o->H, Hkv = o->Hkv, D = o->nD ? o->D[0] : 128, block = 256;
    int ok = 0, failed = 0;
    print_header(o->json, true);
    for (int ti = 0; ti < nt; ti++)
        for (int paged = 0; paged < (o->quick ? 1 : 2); paged++)
            for (int li = 0; li < nL; li++) {
                const int64_t L = Ls[li], nblocks = (L + block - 1) / block;
                const la_dtype dt = dts[ti];
                size_t es = la_dtype_size(dt), nk = (size_t)((paged ? nblocks * block : L) * Hkv * D);
                void *k = malloc(nk * es), *v = malloc(nk * es);
                float *q = malloc((size_t)(H * D) * 4), *out = malloc((size_t)(H * D) * 4);
                int32_t *table = malloc(sizeof(int32_t) * (size_t)nblocks), seqlen = (int32_t)L;
                if (!k || !v || !q || !out || !table) {
                    free(k), free(v), free(q), free(out), free(table);
                    failed++;
                    continue;
                }
                fill(k, dt, nk, 5), fill(v, dt, nk, 6), fill(q, LA_F32, (size_t)(H * D), 7);
                for (int64_t i = 0; i < nblocks; i++) table[i] = (int32_t)(nblocks - 1 - i); /* not in order */
                decode_args a;
                a.p = la_attention_params_default();
                a.p.causal = 1;
                a.q = la_tensor_contiguous(q, LA_F32, 4, (int64_t[]){1, 1, H, D});
                a.out = la_tensor_contiguous(out, LA_F32, 4, (int64_t[]){1, 1, H, D});
                int64_t shape[4] = {paged ? nblocks : 1, paged ? block : L, Hkv, D};
                a.k = la_tensor_contiguous(k, dt, 4, shape);
                a.v = la_tensor_contiguous(v, dt, 4, shape);
                a.layout = (la_kv_layout){.seqlens_k = &seqlen, .block_table = paged ? table : NULL,
                                          .blocks_per_seq = paged ? nblocks : 0};
                la_context *ctx;
                la_context_create(&ctx, o->threads);
                timing t = time_op(ctx, run_decode, &a, o->quick ? 0.3 : 1.0);
                la_context_destroy(ctx);
                free(k), free(v), free(q), free(out), free(table);
                const char *cache = paged ? "paged" : "flat";
                if (t.status != LA_OK) {
                    printf(o->json ? "{\"op\":\"decode\",\"L\":%lld,\"error\":\"%s\"}\n" : "decode L=%lld failed: %s\n",
                           (long long)L, la_last_error());
                    failed++;
                    continue;
                }
                double bytes = 2.0 * (double)L * (double)(Hkv * D) * (double)es, gbps = bytes / (t.ms * 1e-3) / 1e9;
                double per_token = t.extra_bytes / (double)L;
                if (o->json)
                    printf("{\"op\":\"decode\",\"backend\":\"cpu\",\"simd\":\"%s\",\"threads\":%d,\"dtype\":\"%s\","
                           "\"cache\":\"%s\",\"B\":1,\"H\":%lld,\"Hkv\":%lld,\"L\":%lld,\"D\":%lld,\"ms\":%.4f,"
                           "\"gbps\":%.2f,\"peak_gbps\":%.2f,\"ratio\":%.3f,\"peak_rss_mb\":%.1f,\"bytes_per_token\":%.0f}\n",
                           la_simd_name(c->simd), o->threads, la_dtype_name(dt), cache, (long long)H, (long long)Hkv,
                           (long long)L, (long long)D, t.ms, gbps, c->read_gbps, gbps / c->read_gbps, t.rss_mb, per_token);
                else
                    printf("%-7s %-5s %7lld %5lld %8.3f %9.2f %8.3f %7.1f %9.0f\n", la_dtype_name(dt), cache, (long long)L,
                           (long long)D, t.ms, gbps, gbps / c->read_gbps, t.rss_mb, per_token);
                fflush(stdout);
                ok++;
            }
    return ok > 0 || failed == 0 ? 0 : 1;
}

int cmd_bench(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage();
        return argc < 2 ? 2 : 0;
    }
    bool decode = !strcmp(argv[1], "decode");
    options o;
    if (parse_options(argc, argv, &o, decode)) return 2;
    if (strcmp(argv[1], "peak") && strcmp(argv[1], "attention") && !decode) {
        fprintf(stderr, "longattn bench: unknown benchmark '%s'\n", argv[1]);
        usage();
        return 2;
    }
    ceilings c = measure_ceilings(&o);
    if (!strcmp(argv[1], "attention")) return bench_attention(&o, &c);
    if (decode) return bench_decode(&o, &c);
    return 0;
}
