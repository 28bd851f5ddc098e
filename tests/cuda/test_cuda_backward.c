/* The CUDA attention backward: dQ, dK, dV against the float64 reference on
 * fresh random inputs over awkward shapes and every option, and against the
 * CPU backend's backward on the same inputs (cross-backend); poisoned
 * outputs; deterministic mode run twice gives bit-identical gradients; bad
 * inputs return their status.
 *
 * The forward's out and lse given to both backends come from the float64
 * reference (out f32, or rounded to the inputs' type where a case says so),
 * so both backends differentiate the same function.
 *
 * Skips (exit 77) where no CUDA device is usable, printing why. */
#include "attention_ref.h"
#include "cuda_test_util.h"

#include <stdlib.h>

typedef tu_buf buf;

static bool quick; /* LONGATTN_TEST_QUICK: short lengths only (compute-sanitizer) */

typedef struct {
    const char *name;
    int64_t B, Lq, Lk; /* dense batch when nseq == 0 */
    int nseq;
    int32_t lens_q[6], lens_k[6];
    int64_t H, Hkv, D;
    la_dtype dt, grad_dt, out_dt, dout_dt; /* inputs; dq/dk/dv; the forward's out; dout */
    bool strided, alibi, twice;            /* twice: deterministic, run two times */
    la_attention_params p;
} bwd_case;

static void idx_of(bool varlen, int64_t b, int64_t off, int64_t i, int64_t h, int64_t d, int64_t *idx) {
    if (varlen) idx[0] = off + i, idx[1] = h, idx[2] = d;
    else idx[0] = b, idx[1] = i, idx[2] = h, idx[3] = d;
}

/* Tolerance per gradient tensor: |got - want| <= atol + rtol |want| with
 * atol = TOL x max |want| over the tensor. The kernels round P and dS to the
 * inputs' 16-bit type before their products (relative 2^-9 bf16, 2^-11
 * f16, each element) and accumulate in f32; the error of a gradient element
 * is then about that fraction of the sums' magnitude, a few times it at
 * worst over thousands of elements: TOL 1e-2 bf16, 3e-3 f16. A 16-bit
 * gradient adds one rounding: rtol 8e-3 bf16, 2e-3 f16 (1e-4 for f32).
 * The relative norm ||err|| / ||want|| must stay under TOL / 2. The CPU
 * backward (f32 throughout) is held to the same bounds against the GPU. */
static double grad_tol(const bwd_case *c) { return c->dt == LA_BF16 ? 1e-2 : 3e-3; }
static double grad_rtol(const bwd_case *c) {
    return c->grad_dt == LA_F32 ? 1e-4 : c->grad_dt == LA_BF16 ? 8e-3 : 2e-3;
}

/* Compare one gradient tensor with the reference [rows][heads][D] (rows in
 * packed order) and with the CPU result; prints and checks. */
static void compare(const bwd_case *c, const char *what, const buf *got, const buf *cpu, const double *want,
                    int64_t nseq, const int32_t *cu, int64_t L, int64_t heads, int64_t D) {
    const bool varlen = c->nseq > 0;
    double maxw = 0;
    int64_t rows = varlen ? cu[nseq] : nseq * L;
    for (int64_t e = 0; e < rows * heads * D; e++) maxw = fabs(want[e]) > maxw ? fabs(want[e]) : maxw;
    const double atol = grad_tol(c) * (maxw > 0 ? maxw : 1), rtol = grad_rtol(c);
    int64_t bad = 0, bad_cpu = 0, idx[4];
    double worst = 0, worst_cpu = 0, err2 = 0, ref2 = 0;
    for (int64_t b = 0; b < nseq; b++) {
        int64_t off = varlen ? cu[b] : 0, n = varlen ? cu[b + 1] - cu[b] : L;
        for (int64_t i = 0; i < n; i++)
            for (int64_t h = 0; h < heads; h++)
                for (int64_t d = 0; d < D; d++) {
                    idx_of(varlen, b, off, i, h, d, idx);
                    const double w = want[((varlen ? off + i : b * L + i) * heads + h) * D + d];
                    const double g = tu_get(&got->t, idx), x = tu_get(&cpu->t, idx);
                    if (!tu_close(g, w, atol, rtol)) bad++;
                    if (!tu_close(g, x, atol, rtol)) bad_cpu++;
                    const double e = isnan(g) ? INFINITY : fabs(g - w), ec = isnan(g) ? INFINITY : fabs(g - x);
                    worst = e > worst ? e : worst, worst_cpu = ec > worst_cpu ? ec : worst_cpu;
                    err2 += e * e, ref2 += w * w;
                }
    }
    /* A gradient that is exactly zero (every row sees one key, so P = 1 and
     * dS = P (dP - delta) cancels) has no relative error: there the GPU's
     * 16-bit dP against its f32 delta leaves ~1e-3 absolute, bf16 rounding
     * of dout (seed 436915934270852). Judge it by the RMS error instead. */
    const double rel = ref2 > 0 ? sqrt(err2 / ref2) : sqrt(err2 / (double)(rows * heads * D > 0 ? rows * heads * D : 1));
    printf("  %s: max|ref| %.2e worst |err| %.2e rel-norm %.2e vs CPU %.2e\n", what, maxw, worst, rel, worst_cpu);
    tu_check(bad == 0, "%s %s: %lld elements off the reference, worst |err| %.3g (atol %.2e rtol %.1e)", c->name,
             what, (long long)bad, worst, atol, rtol);
    tu_check(rel <= grad_tol(c) / 2, "%s %s: rel-norm %.3g over %.1e", c->name, what, rel, grad_tol(c) / 2);
    tu_check(bad_cpu == 0, "%s %s: %lld elements off the CPU backward, worst |diff| %.3g", c->name, what,
             (long long)bad_cpu, worst_cpu);
}

static bool same_bytes(const buf *a, const buf *b) {
    return memcmp(a->t.data, b->t.data, a->elems * la_dtype_size(a->t.dtype)) == 0;
}

static void run_case(uint64_t *rng, const bwd_case *c) {
    const bool varlen = c->nseq > 0;
    const int64_t H = c->H, Hkv = c->Hkv, D = c->D, G = H / Hkv;
    int32_t cu_q[8] = {0}, cu_k[8] = {0};
    const int64_t nseq = varlen ? c->nseq : c->B;
    for (int i = 0; i < c->nseq; i++) {
        cu_q[i + 1] = cu_q[i] + c->lens_q[i];
        cu_k[i + 1] = cu_k[i] + c->lens_k[i];
    }
    const int64_t Tq = varlen ? cu_q[c->nseq] : c->B * c->Lq, Tk = varlen ? cu_k[c->nseq] : c->B * c->Lk;
    const int nd = varlen ? 3 : 4;
    int64_t qs[4] = {c->B, c->Lq, H, D}, ks[4] = {c->B, c->Lk, Hkv, D}, ls[3] = {c->B, c->Lq, H};
    if (varlen) {
        qs[0] = Tq, qs[1] = H, qs[2] = D;
        ks[0] = Tk, ks[1] = Hkv, ks[2] = D;
        ls[0] = Tq, ls[1] = H;
    }
    buf q = tu_buf_new(c->dt, nd, qs, c->strided, false), k = tu_buf_new(c->dt, nd, ks, c->strided, false);
    buf v = tu_buf_new(c->dt, nd, ks, c->strided, false), dout = tu_buf_new(c->dout_dt, nd, qs, c->strided, false);
    buf out = tu_buf_new(c->out_dt, nd, qs, c->strided, false), lse = tu_buf_new(LA_F32, nd - 1, ls, c->strided, true);
    buf g[3], gc[3], g2[3]; /* dq, dk, dv: CUDA, CPU, CUDA's second run */
    for (int x = 0; x < 3; x++) {
        const int64_t *shape = x == 0 ? qs : ks;
        g[x] = tu_buf_new(c->grad_dt, nd, shape, c->strided, false);
        gc[x] = tu_buf_new(c->grad_dt, nd, shape, c->strided, false);
        g2[x] = tu_buf_new(c->grad_dt, nd, shape, c->strided, false);
    }
    tu_fill(rng, q.t.data, c->dt, (int64_t)q.elems, -1, 1);
    tu_fill(rng, k.t.data, c->dt, (int64_t)k.elems, -1, 1);
    tu_fill(rng, v.t.data, c->dt, (int64_t)v.elems, -1, 1);
    tu_fill(rng, dout.t.data, c->dout_dt, (int64_t)dout.elems, -1, 1);
    float slopes[64];
    for (int64_t h = 0; h < H; h++) slopes[h] = (float)tu_uniform(rng, 0.01, 0.3);
    la_attention_params p = c->p;
    if (c->alibi) p.alibi_slopes = slopes;
    if (varlen) p.cu_seqlens_q = cu_q, p.cu_seqlens_k = cu_k, p.num_seqs = c->nseq;
    const bool sigmoid = p.score == LA_SCORE_SIGMOID;

    /* float64 forward (out, lse into the input tensors) and gradients */
    double *wq = tu_alloc(8 * (size_t)(Tq * H * D + 1)), *wk = tu_alloc(8 * (size_t)(Tk * Hkv * D + 1));
    double *wv = tu_alloc(8 * (size_t)(Tk * Hkv * D + 1));
    memset(wk, 0, 8 * (size_t)(Tk * Hkv * D + 1));
    memset(wv, 0, 8 * (size_t)(Tk * Hkv * D + 1));
    int64_t maxq = 1, maxk = 1;
    for (int64_t b = 0; b < nseq; b++) {
        int64_t lq = varlen ? c->lens_q[b] : c->Lq, lk = varlen ? c->lens_k[b] : c->Lk;
        maxq = lq > maxq ? lq : maxq, maxk = lk > maxk ? lk : maxk;
    }
    const size_t nq = (size_t)(maxq * D), nk = (size_t)(maxk * D);
    double *hq = tu_alloc(8 * nq), *hdo = tu_alloc(8 * nq), *ho = tu_alloc(8 * nq), *hl = tu_alloc(8 * (size_t)maxq);
    double *hdq = tu_alloc(8 * nq), *hk = tu_alloc(8 * nk), *hv = tu_alloc(8 * nk), *hdk = tu_alloc(8 * nk),
           *hdv = tu_alloc(8 * nk);
    for (int64_t b = 0; b < nseq; b++) {
        const int64_t qo = varlen ? cu_q[b] : 0, ko = varlen ? cu_k[b] : 0;
        const int64_t lq = varlen ? c->lens_q[b] : c->Lq, lk = varlen ? c->lens_k[b] : c->Lk;
        int64_t idx[4];
        for (int64_t hk_ = 0; hk_ < Hkv; hk_++) {
            for (int64_t j = 0; j < lk; j++)
                for (int64_t d = 0; d < D; d++) {
                    idx_of(varlen, b, ko, j, hk_, d, idx);
                    hk[j * D + d] = tu_get(&k.t, idx);
                    hv[j * D + d] = tu_get(&v.t, idx);
                }
            memset(hdk, 0, 8 * nk);
            memset(hdv, 0, 8 * nk);
            for (int64_t gi = 0; gi < G; gi++) {
                const int64_t h = hk_ * G + gi;
                ref_attn_opts o = {.scale = p.scale > 0 ? p.scale : 1 / sqrt((double)D), .causal = p.causal,
                                   .window_left = p.window_left, .window_right = p.window_right, .sinks = p.sinks,
                                   .softcap = p.softcap, .alibi_slope = c->alibi ? slopes[h] : 0, .sigmoid = sigmoid,
                                   .sigmoid_bias = p.sigmoid_bias};
                for (int64_t i = 0; i < lq; i++)
                    for (int64_t d = 0; d < D; d++) {
                        idx_of(varlen, b, qo, i, h, d, idx);
                        hq[i * D + d] = tu_get(&q.t, idx);
                        hdo[i * D + d] = tu_get(&dout.t, idx);
                    }
                ref_attention_forward(&o, lq, lk, D, hq, hk, hv, ho, hl);
                ref_attention_backward(&o, lq, lk, D, hq, hk, hv, hdo, hdq, hdk, hdv);
                for (int64_t i = 0; i < lq; i++) {
                    for (int64_t d = 0; d < D; d++) {
                        idx_of(varlen, b, qo, i, h, d, idx);
                        tu_set(&out.t, idx, ho[i * D + d]);
                    }
                    idx_of(varlen, b, qo, i, h, 0, idx);
                    tu_set(&lse.t, idx, hl[i]);
                    memcpy(wq + (((varlen ? qo + i : b * c->Lq + i)) * H + h) * D, hdq + i * D, 8 * (size_t)D);
                }
            }
            for (int64_t j = 0; j < lk; j++) {
                const int64_t row = (varlen ? ko + j : b * c->Lk + j) * Hkv + hk_;
                memcpy(wk + row * D, hdk + j * D, 8 * (size_t)D);
                memcpy(wv + row * D, hdv + j * D, 8 * (size_t)D);
            }
        }
    }

    /* the CPU backend on the same inputs */
    la_context *ctx;
    la_context_create(&ctx, 0);
    for (int x = 0; x < 3; x++) tu_poison(gc[x].t.data, c->grad_dt, (int64_t)gc[x].elems);
    la_status s = la_attention_backward(ctx, &p, &q.t, &k.t, &v.t, &out.t, &dout.t, sigmoid ? NULL : &lse.t, &gc[0].t,
                                        &gc[1].t, &gc[2].t);
    tu_check(s == LA_OK, "%s: CPU status %s (%s)", c->name, la_status_name(s), la_last_error());

    /* the CUDA backend, gradients poisoned */
    dev_buf dq_ = to_device(&q), dk_ = to_device(&k), dv_ = to_device(&v), ddo = to_device(&dout), dout_ = to_device(&out);
    dev_buf dl = to_device(&lse), dg[3];
    for (int x = 0; x < 3; x++) {
        tu_poison(g[x].t.data, c->grad_dt, (int64_t)g[x].elems);
        dg[x] = to_device(&g[x]);
    }
    s = la_attention_backward(ctx, &p, &dq_.t, &dk_.t, &dv_.t, &dout_.t, &ddo.t, sigmoid ? NULL : &dl.t, &dg[0].t,
                              &dg[1].t, &dg[2].t);
    tu_check(s == LA_OK, "%s: CUDA status %s (%s)", c->name, la_status_name(s), la_last_error());
    cuda_ok(cudaDeviceSynchronize(), "synchronize after the backward");
    for (int x = 0; x < 3; x++) from_device(&g[x], &dg[x]);
    printf("%s\n", c->name);
    if (s == LA_OK) {
        compare(c, "dq", &g[0], &gc[0], wq, nseq, cu_q, c->Lq, H, D);
        compare(c, "dk", &g[1], &gc[1], wk, nseq, cu_k, c->Lk, Hkv, D);
        compare(c, "dv", &g[2], &gc[2], wv, nseq, cu_k, c->Lk, Hkv, D);
        for (int x = 0; x < 3 && c->strided; x++)
            tu_check(tu_buf_outside_poisoned(&g[x]), "%s: gradient %d written outside its view", c->name, x);
    }
    if (c->twice && s == LA_OK) {
        for (int x = 0; x < 3; x++) {
            tu_poison(g2[x].t.data, c->grad_dt, (int64_t)g2[x].elems);
            cuda_ok(cudaMemcpy(dg[x].mem, g2[x].t.data, g2[x].elems * la_dtype_size(c->grad_dt),
                               cudaMemcpyHostToDevice), "re-poison");
        }
        s = la_attention_backward(ctx, &p, &dq_.t, &dk_.t, &dv_.t, &dout_.t, &ddo.t, sigmoid ? NULL : &dl.t, &dg[0].t,
                                  &dg[1].t, &dg[2].t);
        cuda_ok(cudaDeviceSynchronize(), "synchronize after the second backward");
        for (int x = 0; x < 3; x++) from_device(&g2[x], &dg[x]);
        tu_check(s == LA_OK && same_bytes(&g[0], &g2[0]) && same_bytes(&g[1], &g2[1]) && same_bytes(&g[2], &g2[2]),
                 "%s: deterministic backward run twice differs", c->name);
        printf("  deterministic: second run bit-identical: %s\n",
               same_bytes(&g[0], &g2[0]) && same_bytes(&g[1], &g2[1]) && same_bytes(&g[2], &g2[2]) ? "yes" : "NO");
    }
    la_context_destroy(ctx);
    cudaFree(dq_.mem), cudaFree(dk_.mem), cudaFree(dv_.mem), cudaFree(ddo.mem), cudaFree(dout_.mem), cudaFree(dl.mem);
    for (int x = 0; x < 3; x++) cudaFree(dg[x].mem), tu_buf_free(&g[x]), tu_buf_free(&gc[x]), tu_buf_free(&g2[x]);
    tu_buf_free(&q), tu_buf_free(&k), tu_buf_free(&v), tu_buf_free(&dout), tu_buf_free(&out), tu_buf_free(&lse);
    free(wq), free(wk), free(wv), free(hq), free(hdo), free(ho), free(hl), free(hdq), free(hk), free(hv), free(hdk),
        free(hdv);
}

static la_attention_params P(void) { return la_attention_params_default(); }

static bwd_case base_case(void) {
    return (bwd_case){.B = 2, .Lq = 150, .Lk = 150, .H = 4, .Hkv = 2, .D = 64, .dt = LA_BF16, .grad_dt = LA_F32,
                      .out_dt = LA_F32, .dout_dt = LA_BF16, .p = P()};
}

static void shape_cases(uint64_t *rng) {
    static const int64_t lens[] = {1, 63, 65, 1000};
    char name[128];
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
        for (int causal = 0; causal < 2; causal++) {
            const int64_t L = lens[li];
            if (quick && L > 100) continue;
            bwd_case c = base_case();
            c.B = L >= 1000 ? 1 : 2, c.Lq = c.Lk = L, c.H = 4, c.Hkv = 1, c.p.causal = causal;
            snprintf(name, sizeof name, "L=%lld causal=%d mqa D=64", (long long)L, causal);
            c.name = name;
            run_case(rng, &c);
        }
    static const int64_t dims[] = {64, 128, 256, 72, 200};
    for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++)
        for (int causal = 0; causal < 2; causal++) {
            if (quick && causal) continue;
            bwd_case c = base_case();
            c.Lq = 77, c.Lk = 300, c.H = 8, c.Hkv = 2, c.D = dims[di], c.p.causal = causal;
            snprintf(name, sizeof name, "D=%lld Lq<Lk causal=%d gqa4", (long long)dims[di], causal);
            c.name = name;
            run_case(rng, &c);
        }
    static const int64_t ratios[] = {1, 4, 8};
    for (size_t ri = 0; ri < 3; ri++) {
        bwd_case c = base_case();
        c.B = 1, c.Lq = 200, c.Lk = 130, c.H = 8, c.Hkv = 8 / ratios[ri], c.D = 128, c.p.causal = 1;
        c.grad_dt = LA_BF16;
        snprintf(name, sizeof name, "gqa ratio %lld, Lq>Lk causal, bf16 grads", (long long)ratios[ri]);
        c.name = name;
        run_case(rng, &c);
    }
}

static void option_cases(uint64_t *rng) {
    bwd_case c = base_case();
    c.name = "f16 everything 16-bit";
    c.dt = c.grad_dt = c.out_dt = c.dout_dt = LA_F16, c.p.causal = 1;
    run_case(rng, &c);
    c = base_case(), c.name = "bf16 out, f32 dout, strided";
    c.out_dt = LA_BF16, c.dout_dt = LA_F32, c.strided = true;
    run_case(rng, &c);
    c = base_case(), c.name = "window left 40 causal";
    c.p.causal = 1, c.p.window_left = 40;
    run_case(rng, &c);
    c = base_case(), c.name = "window (5, 9) non-causal";
    c.p.window_left = 5, c.p.window_right = 9;
    run_case(rng, &c);
    c = base_case(), c.name = "sinks 4 + window 70 causal";
    c.p.causal = 1, c.p.window_left = 70, c.p.sinks = 4;
    run_case(rng, &c);
    c = base_case(), c.name = "softcap 5, scale 0.3";
    c.p.softcap = 5, c.p.scale = 0.3f;
    run_case(rng, &c);
    c = base_case(), c.name = "alibi causal";
    c.alibi = true, c.p.causal = 1;
    run_case(rng, &c);
    c = base_case(), c.name = "sigmoid bias -log(L) causal";
    c.p.score = LA_SCORE_SIGMOID, c.p.sigmoid_bias = -logf(150), c.p.causal = 1;
    run_case(rng, &c);
    c = base_case(), c.name = "sigmoid window softcap alibi";
    c.p.score = LA_SCORE_SIGMOID, c.p.window_left = 20, c.p.window_right = 7, c.p.softcap = 3, c.alibi = true;
    run_case(rng, &c);
    c = base_case(), c.name = "everything, strided, bf16 grads";
    c.strided = true, c.grad_dt = LA_BF16, c.p.causal = 1, c.p.window_left = 50, c.p.sinks = 2, c.p.softcap = 8;
    c.alibi = true;
    run_case(rng, &c);
    c = base_case(), c.name = "deterministic, run twice";
    c.D = 128, c.Lq = c.Lk = 300, c.p.causal = 1, c.p.deterministic = 1, c.twice = true;
    run_case(rng, &c);
    /* out, dout and dq all 16-bit: the vector pass 1 (workspace zeroed there)
     * and the vector dQ conversion of the Hopper kernel */
    c = base_case(), c.name = "all bf16 D=128 causal, several tiles";
    c.D = 128, c.B = 2, c.Lq = quick ? 70 : 333, c.Lk = quick ? 90 : 400, c.p.causal = 1;
    c.out_dt = c.dout_dt = c.grad_dt = LA_BF16;
    run_case(rng, &c);
    c = base_case(), c.name = "Lk = 0 (dq zero)";
    c.Lk = 0;
    run_case(rng, &c);
    for (int r = 0; r < (quick ? 2 : 8); r++) {
        c = base_case();
        c.name = "random combination";
        c.Lq = tu_randint(rng, 1, 200), c.Lk = tu_randint(rng, 1, 200);
        c.Hkv = tu_randint(rng, 1, 2), c.H = c.Hkv * tu_randint(rng, 1, 4), c.D = 8 * tu_randint(rng, 1, 32);
        cu_random_rule(rng, &c.p);
        c.alibi = tu_randint(rng, 0, 1);
        c.strided = tu_randint(rng, 0, 1);
        c.dt = tu_randint(rng, 0, 1) ? LA_BF16 : LA_F16;
        c.dout_dt = tu_randint(rng, 0, 1) ? LA_F32 : c.dt;
        c.grad_dt = tu_randint(rng, 0, 1) ? LA_F32 : c.dt;
        run_case(rng, &c);
    }
}

static void varlen_cases(uint64_t *rng) {
    bwd_case c = {.name = "varlen with an empty sequence", .nseq = 5, .lens_q = {5, 0, 130, 1, 300},
                  .lens_k = {5, 3, 150, 70, 280}, .H = 8, .Hkv = 2, .D = 128, .dt = LA_BF16, .grad_dt = LA_F32,
                  .out_dt = LA_F32, .dout_dt = LA_BF16, .p = P()};
    c.p.causal = 1;
    run_case(rng, &c);
    c.name = "varlen strided f16 window, f16 grads";
    c.strided = true, c.dt = c.grad_dt = c.dout_dt = LA_F16, c.p.window_left = 9;
    run_case(rng, &c);
    c.name = "varlen all bf16 (vector pass 1 and dQ conversion)";
    c.strided = false, c.dt = c.grad_dt = c.dout_dt = c.out_dt = LA_BF16, c.p.window_left = -1;
    run_case(rng, &c);
    bwd_case e = {.name = "varlen empty keys (dk, dv of nothing; dq zero)", .nseq = 3, .lens_q = {4, 90, 2},
                  .lens_k = {0, 120, 0}, .H = 2, .Hkv = 1, .D = 64, .dt = LA_BF16, .grad_dt = LA_F32,
                  .out_dt = LA_F32, .dout_dt = LA_BF16, .p = P()};
    run_case(rng, &e);
    bwd_case z = e;
    z.name = "varlen empty queries (dk, dv zero)";
    z.lens_q[0] = 0, z.lens_q[1] = 0, z.lens_k[0] = 7;
    run_case(rng, &z);
}

/* The Hopper backward's split of its last partial wave (wgdk, D 128;
 * LA_CUDA_BACKWARD_TAIL, backward_sm90_ws.cu): the last items % SMs key
 * blocks run as p pieces that sum dK / dV through the workspace. With
 * fewer key blocks than SMs every block is split; 144 blocks leave 132 (an
 * H100's or H200's SMs) whole before the pieces; causal blocks near the
 * end see fewer query tiles than pieces (empty pieces, zero sums); Lq < Lk
 * causal has key blocks no query sees. Each case under p = 2, 3, 16 and
 * auto (auto splits non-causal calls only). Varlen calls do not take this
 * kernel: the case checks they are unaffected. */
static void tail_cases(uint64_t *rng) {
    static const char *const modes[] = {"2", "3", "16", "auto"};
    char name[160];
    const char *was = getenv("LA_CUDA_BACKWARD_TAIL");
    for (size_t mi = 0; mi < sizeof modes / sizeof modes[0]; mi++) {
        setenv("LA_CUDA_BACKWARD_TAIL", modes[mi], 1);
        bwd_case c = base_case();
        snprintf(name, sizeof name, "tail %s: 12 key blocks all split, Lq %d Lk 700 gqa4 D=128", modes[mi],
                 quick ? 300 : 1000);
        c.name = name, c.B = 1, c.Lq = quick ? 300 : 1000, c.Lk = 700, c.H = 8, c.Hkv = 2, c.D = 128;
        run_case(rng, &c);
        c = base_case();
        snprintf(name, sizeof name, "tail %s: 144 key blocks (12 past 132), Lq 130 Lk 1100 H 16, bf16 grads",
                 modes[mi]);
        c.name = name, c.B = 1, c.Lq = 130, c.Lk = 1100, c.H = c.Hkv = 16, c.D = 128;
        c.out_dt = c.grad_dt = LA_BF16;
        run_case(rng, &c);
        c = base_case();
        snprintf(name, sizeof name, "tail %s: causal B 2 L %d H 2, empty pieces", modes[mi], quick ? 400 : 1000);
        c.name = name, c.B = 2, c.Lq = c.Lk = quick ? 400 : 1000, c.H = c.Hkv = 2, c.D = 128, c.p.causal = 1;
        run_case(rng, &c);
        c = base_case();
        snprintf(name, sizeof name, "tail %s: Lq 77 < Lk 300 causal gqa4, f16 everything 16-bit", modes[mi]);
        c.name = name, c.Lq = 77, c.Lk = 300, c.H = 8, c.Hkv = 2, c.D = 128, c.p.causal = 1;
        c.dt = c.grad_dt = c.out_dt = c.dout_dt = LA_F16;
        run_case(rng, &c);
        c = base_case();
        snprintf(name, sizeof name, "tail %s: strided, f32 dout, Lq 200 Lk 520 gqa2", modes[mi]);
        c.name = name, c.Lq = 200, c.Lk = 520, c.H = 4, c.Hkv = 2, c.D = 128, c.strided = true, c.dout_dt = LA_F32;
        run_case(rng, &c);
        bwd_case v = {.nseq = 3, .lens_q = {130, 1, 300}, .lens_k = {150, 70, 280}, .H = 8, .Hkv = 2, .D = 128,
                      .dt = LA_BF16, .grad_dt = LA_F32, .out_dt = LA_F32, .dout_dt = LA_BF16, .p = P()};
        snprintf(name, sizeof name, "tail %s: varlen (another kernel)", modes[mi]);
        v.name = name;
        run_case(rng, &v);
    }
    if (was) setenv("LA_CUDA_BACKWARD_TAIL", was, 1);
    else unsetenv("LA_CUDA_BACKWARD_TAIL");
}

/* Bad inputs: each returns its status and writes no gradient. */
static void bad_inputs(uint64_t *rng) {
    enum { B = 1, L = 16, H = 4, HKV = 2, D = 64 };
    buf q = tu_buf_new(LA_BF16, 4, (int64_t[]){B, L, H, D}, false, false);
    buf k = tu_buf_new(LA_BF16, 4, (int64_t[]){B, L, HKV, D}, false, false);
    buf g = tu_buf_new(LA_F32, 4, (int64_t[]){B, L, H, D}, false, false);
    buf l = tu_buf_new(LA_F32, 3, (int64_t[]){B, L, H}, false, true);
    tu_fill(rng, q.t.data, LA_BF16, (int64_t)q.elems, -1, 1);
    tu_fill(rng, k.t.data, LA_BF16, (int64_t)k.elems, -1, 1);
    tu_fill(rng, l.t.data, LA_F32, (int64_t)l.elems, 1, 2);
    tu_poison(g.t.data, LA_F32, (int64_t)g.elems);
    dev_buf dq = to_device(&q), dk = to_device(&k), dg = to_device(&g), dl = to_device(&l);
    dev_buf dgk = to_device(&g), dgv = to_device(&g); /* [B, L, HKV, D] views of the same size of memory */
    dgk.t.shape[2] = dgv.t.shape[2] = HKV, dgk.t.stride[1] = dgv.t.stride[1] = HKV * D;
    dgk.t.stride[0] = dgv.t.stride[0] = L * HKV * D;
    /* room for head dim 264 views: the inputs share the first region (inputs
     * may), dq, dk and dv one region each (outputs may overlap nothing) */
    const size_t region = (size_t)B * L * H * 264 * 4;
    char *wide;
    cuda_ok(cudaMalloc((void **)&wide, 4 * region + 64), "cudaMalloc");
    la_context *ctx;
    la_context_create(&ctx, 2);
#define BAD(label, want, ...)                                                                                     \
    do {                                                                                                          \
        la_attention_params p = P();                                                                              \
        la_tensor xq = dq.t, xk = dk.t, xv = dk.t, xo = dq.t, xdo = dq.t, xl = dl.t, gq = dg.t, gk = dgk.t,        \
                  gv = dgv.t;                                                                                     \
        __VA_ARGS__;                                                                                              \
        la_status s = la_attention_backward(ctx, &p, &xq, &xk, &xv, &xo, &xdo, &xl, &gq, &gk, &gv);               \
        cudaDeviceSynchronize();                                                                                  \
        cu_check_rejected(label, s, want, &g, &dg, "dq");                                                         \
    } while (0)
    BAD("host pointer in a CUDA tensor", LA_ERR_DEVICE, xk.data = k.t.data);
    BAD("mixed devices (dq on the CPU)", LA_ERR_DEVICE, gq = g.t);
    BAD("f32 inputs", LA_ERR_UNSUPPORTED, xq.data = xk.data = xv.data = xo.data = xdo.data = wide;
        xq.dtype = xk.dtype = xv.dtype = xo.dtype = xdo.dtype = LA_F32);
    BAD("head dim 264", LA_ERR_UNSUPPORTED, xq.data = xk.data = xv.data = xo.data = xdo.data = wide;
        gq.data = wide + region; gk.data = wide + 2 * region; gv.data = wide + 3 * region;
        xq.shape[3] = xk.shape[3] = xv.shape[3] = xo.shape[3] = xdo.shape[3] = 264;
        gq.shape[3] = gk.shape[3] = gv.shape[3] = 264;
        xq.stride[2] = xo.stride[2] = xdo.stride[2] = xk.stride[2] = xv.stride[2] = 264;
        gq.stride[2] = gk.stride[2] = gv.stride[2] = 264;
        xq.stride[1] = xo.stride[1] = xdo.stride[1] = gq.stride[1] = H * 264;
        xk.stride[1] = xv.stride[1] = gk.stride[1] = gv.stride[1] = HKV * 264;
        xq.stride[0] = xo.stride[0] = xdo.stride[0] = gq.stride[0] = L * H * 264;
        xk.stride[0] = xv.stride[0] = gk.stride[0] = gv.stride[0] = L * HKV * 264);
    BAD("deterministic 2", LA_ERR_ARGUMENT, p.deterministic = 2);
    BAD("valid call after the bad ones", LA_OK, (void)0);
#undef BAD
    la_context_destroy(ctx);
    cudaFree(wide), cudaFree(dq.mem), cudaFree(dk.mem), cudaFree(dg.mem), cudaFree(dgk.mem), cudaFree(dgv.mem), cudaFree(dl.mem);
    tu_buf_free(&q), tu_buf_free(&k), tu_buf_free(&g), tu_buf_free(&l);
}

int main(void) {
    if (!la_cuda_available()) {
        printf("SKIP: %s\n", la_last_error());
        return 77;
    }
    uint64_t rng = tu_seed();
    const char *qe = getenv("LONGATTN_TEST_QUICK");
    quick = qe && *qe && *qe != '0';
    const char *only = getenv("LONGATTN_TEST_BWD_TAIL_ONLY"); /* the split's cases alone (compute-sanitizer) */
    if (only && *only && *only != '0') {
        tail_cases(&rng);
        return tu_finish();
    }
    bad_inputs(&rng);
    shape_cases(&rng);
    option_cases(&rng);
    varlen_cases(&rng);
    tail_cases(&rng);
    return tu_finish();
}
