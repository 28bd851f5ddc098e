/* The CUDA attention forward: outputs and lse against the float64 reference
 * on fresh random inputs over awkward shapes and every option, the CUDA
 * result against the CPU backend's on the same inputs (cross-backend),
 * poisoned outputs, strided views, a caller's stream, and bad inputs that
 * must fail with their status and write nothing.
 *
 * Skips (exit 77, ctest SKIP_RETURN_CODE) where no CUDA device is usable,
 * as on CI, printing why.
 *
 * Not tested, because it cannot be detected in general: a host pointer that
 * CUDA can address (pinned or registered memory) passes as device memory;
 * plain malloc memory in a CUDA tensor is caught (LA_ERR_DEVICE). */
#include "attention_ref.h"
#include "cuda_test_util.h"

#include <stdlib.h>

typedef tu_buf buf;

/* LONGATTN_TEST_QUICK: short lengths only (the compute-sanitizer runs);
 * LONGATTN_TEST_FWD_ONLY: one forward kernel only (see main). */
static bool quick;

typedef struct {
    const char *name;
    int64_t B, Lq, Lk; /* dense batch when nseq == 0 */
    int nseq;          /* varlen: lengths below */
    int32_t lens_q[6], lens_k[6];
    int64_t H, Hkv, D;
    la_dtype dt, out_dt;
    bool strided, alibi, want_lse, stream;
    la_attention_params p;
} cu_case;

static void idx_of(bool varlen, int64_t b, int64_t off, int64_t i, int64_t h, int64_t d, int64_t *idx) {
    if (varlen) idx[0] = off + i, idx[1] = h, idx[2] = d;
    else idx[0] = b, idx[1] = i, idx[2] = h, idx[3] = d;
}

/* Tolerance |got - want| <= atol + rtol |want|, per element. The inputs are
 * exact in their 16-bit type in every computation; the GPU kernel rounds
 * the weights P to that type before P V (relative 2^-9 for bf16, 2^-11 for
 * f16, each weight), so out moves by at most that times sum_j p_ij |v_j| <=
 * max |v| = 1: atol 2x that bound (4e-3 bf16, 1e-3 f16). A bf16 or f16 out
 * adds one rounding of the result: rtol 4x 2^-9 (8e-3) or 4x 2^-11 (2e-3).
 * Sigmoid weights are not normalised, so their sum (up to Lk) scales the P
 * rounding: the atol is multiplied by 8 for sigmoid cases (their sums stay
 * under ~8 with bias -log(Lk) or short windows). lse is computed in f32
 * from exact scores: 2e-4 absolute covers the approximate exp2/log and
 * the sums over 4k keys. The CPU backend (f32, no rounding of P) is held
 * to the same tolerance against the GPU. */
static void tolerance(const cu_case *c, double *atol, double *rtol) {
    *atol = c->dt == LA_BF16 ? 4e-3 : 1e-3;
    *rtol = c->out_dt == LA_F32 ? 1e-4 : c->out_dt == LA_BF16 ? 8e-3 : 2e-3;
    if (c->p.score == LA_SCORE_SIGMOID) *atol *= 8;
}
#define LSE_ATOL 2e-4

static void run_case(uint64_t *rng, const cu_case *c) {
    const bool varlen = c->nseq > 0;
    const int64_t H = c->H, Hkv = c->Hkv, D = c->D, G = H / Hkv;
    int32_t cu_q[8] = {0}, cu_k[8] = {0};
    int64_t nseq = varlen ? c->nseq : c->B;
    for (int i = 0; i < c->nseq; i++) {
        cu_q[i + 1] = cu_q[i] + c->lens_q[i];
        cu_k[i + 1] = cu_k[i] + c->lens_k[i];
    }
    int64_t Tq = varlen ? cu_q[c->nseq] : c->B * c->Lq, Tk = varlen ? cu_k[c->nseq] : c->B * c->Lk;
    int nd = varlen ? 3 : 4;
    int64_t qs[4] = {c->B, c->Lq, H, D}, ks[4] = {c->B, c->Lk, Hkv, D}, ls[3] = {c->B, c->Lq, H};
    if (varlen) {
        qs[0] = Tq, qs[1] = H, qs[2] = D;
        ks[0] = Tk, ks[1] = Hkv, ks[2] = D;
        ls[0] = Tq, ls[1] = H;
    }
    buf q = tu_buf_new(c->dt, nd, qs, c->strided, false), k = tu_buf_new(c->dt, nd, ks, c->strided, false);
    buf v = tu_buf_new(c->dt, nd, ks, c->strided, false), out = tu_buf_new(c->out_dt, nd, qs, c->strided, false);
    buf lse = tu_buf_new(LA_F32, nd - 1, ls, c->strided, true);
    buf out_cpu = tu_buf_new(c->out_dt, nd, qs, c->strided, false), lse_cpu = tu_buf_new(LA_F32, nd - 1, ls, c->strided, true);
    tu_fill(rng, q.t.data, c->dt, (int64_t)q.elems, -1, 1);
    tu_fill(rng, k.t.data, c->dt, (int64_t)k.elems, -1, 1);
    tu_fill(rng, v.t.data, c->dt, (int64_t)v.elems, -1, 1);
    float slopes[64];
    for (int64_t h = 0; h < H; h++) slopes[h] = (float)tu_uniform(rng, 0.01, 0.3);
    la_attention_params p = c->p;
    if (c->alibi) p.alibi_slopes = slopes;
    if (varlen) p.cu_seqlens_q = cu_q, p.cu_seqlens_k = cu_k, p.num_seqs = c->nseq;
    const bool sigmoid = p.score == LA_SCORE_SIGMOID, with_lse = c->want_lse && !sigmoid;

    /* float64 reference of every (sequence, head) */
    double *want = tu_alloc(sizeof(double) * (size_t)(Tq * H * D + 1)), *want_lse = tu_alloc(8 * (size_t)(Tq * H + 1));
    int64_t maxq = 1, maxk = 1;
    for (int64_t b = 0; b < nseq; b++) {
        int64_t lq = varlen ? c->lens_q[b] : c->Lq, lk = varlen ? c->lens_k[b] : c->Lk;
        maxq = lq > maxq ? lq : maxq, maxk = lk > maxk ? lk : maxk;
    }
    double *hq = tu_alloc(8 * (size_t)(maxq * D)), *ho = tu_alloc(8 * (size_t)(maxq * D)), *hl = tu_alloc(8 * (size_t)maxq);
    double *hk = tu_alloc(8 * (size_t)(maxk * D)), *hv = tu_alloc(8 * (size_t)(maxk * D));
    for (int64_t b = 0; b < nseq; b++) {
        int64_t qo = varlen ? cu_q[b] : 0, ko = varlen ? cu_k[b] : 0, idx[4];
        int64_t lq = varlen ? c->lens_q[b] : c->Lq, lk = varlen ? c->lens_k[b] : c->Lk;
        for (int64_t h = 0; h < H; h++) {
            ref_attn_opts o = {.scale = p.scale > 0 ? p.scale : 1 / sqrt((double)D), .causal = p.causal,
                               .window_left = p.window_left, .window_right = p.window_right, .sinks = p.sinks,
                               .softcap = p.softcap, .alibi_slope = c->alibi ? slopes[h] : 0, .sigmoid = sigmoid,
                               .sigmoid_bias = p.sigmoid_bias};
            for (int64_t i = 0; i < lq; i++)
                for (int64_t d = 0; d < D; d++) idx_of(varlen, b, qo, i, h, d, idx), hq[i * D + d] = tu_get(&q.t, idx);
            for (int64_t j = 0; j < lk; j++)
                for (int64_t d = 0; d < D; d++) {
                    idx_of(varlen, b, ko, j, h / G, d, idx);
                    hk[j * D + d] = tu_get(&k.t, idx);
                    hv[j * D + d] = tu_get(&v.t, idx);
                }
            ref_attention_forward(&o, lq, lk, D, hq, hk, hv, ho, hl);
            for (int64_t i = 0; i < lq; i++) {
                int64_t row = (varlen ? qo + i : b * c->Lq + i) * H + h;
                memcpy(want + row * D, ho + i * D, sizeof(double) * (size_t)D);
                want_lse[row] = hl[i];
            }
        }
    }

    /* the CPU backend on the same inputs */
    la_context *ctx;
    la_context_create(&ctx, 0);
    tu_poison(out_cpu.t.data, c->out_dt, (int64_t)out_cpu.elems);
    tu_poison(lse_cpu.t.data, LA_F32, (int64_t)lse_cpu.elems);
    la_status s = la_attention_forward(ctx, &p, &q.t, &k.t, &v.t, &out_cpu.t, with_lse ? &lse_cpu.t : NULL);
    tu_check(s == LA_OK, "%s: CPU status %s (%s)", c->name, la_status_name(s), la_last_error());

    /* the CUDA backend, outputs poisoned */
    tu_poison(out.t.data, c->out_dt, (int64_t)out.elems);
    tu_poison(lse.t.data, LA_F32, (int64_t)lse.elems);
    dev_buf dq = to_device(&q), dk = to_device(&k), dv = to_device(&v), dout = to_device(&out), dlse = to_device(&lse);
    cudaStream_t stream = NULL;
    if (c->stream) {
        cuda_ok(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
        la_context_set_cuda_stream(ctx, stream);
    }
    s = la_attention_forward(ctx, &p, &dq.t, &dk.t, &dv.t, &dout.t, with_lse ? &dlse.t : NULL);
    tu_check(s == LA_OK, "%s: CUDA status %s (%s)", c->name, la_status_name(s), la_last_error());
    cuda_ok(c->stream ? cudaStreamSynchronize(stream) : cudaDeviceSynchronize(), "synchronize after the forward");
    from_device(&out, &dout);
    from_device(&lse, &dlse);

    double atol, rtol;
    tolerance(c, &atol, &rtol);
    int64_t bad = 0, bad_lse = 0, bad_cpu = 0;
    double worst = 0, worst_lse = 0, worst_cpu = 0, err2 = 0, ref2 = 0;
    for (int64_t b = 0; b < nseq && s == LA_OK; b++) {
        int64_t qo = varlen ? cu_q[b] : 0, lq = varlen ? c->lens_q[b] : c->Lq, idx[4];
        for (int64_t i = 0; i < lq; i++)
            for (int64_t h = 0; h < H; h++) {
                int64_t row = (varlen ? qo + i : b * c->Lq + i) * H + h;
                for (int64_t d = 0; d < D; d++) {
                    idx_of(varlen, b, qo, i, h, d, idx);
                    double got = tu_get(&out.t, idx), w = want[row * D + d], cpu = tu_get(&out_cpu.t, idx);
                    if (!tu_close(got, w, atol, rtol)) bad++;
                    if (!tu_close(got, cpu, atol, rtol)) bad_cpu++;
                    double e = isnan(got) ? INFINITY : fabs(got - w), ec = isnan(got) ? INFINITY : fabs(got - cpu);
                    worst = e > worst ? e : worst, worst_cpu = ec > worst_cpu ? ec : worst_cpu;
                    err2 += e * e, ref2 += w * w;
                }
                if (with_lse) {
                    idx_of(varlen, b, qo, i, h, 0, idx);
                    double got = tu_get(&lse.t, idx);
                    if (!tu_close(got, want_lse[row], LSE_ATOL, 1e-6)) bad_lse++;
                    double e = isinf(got) && got == want_lse[row] ? 0 : isnan(got) ? INFINITY : fabs(got - want_lse[row]);
                    worst_lse = e > worst_lse ? e : worst_lse;
                }
            }
    }
    double rel = ref2 > 0 ? sqrt(err2 / ref2) : sqrt(err2);
    printf("%-46s worst |err| %.2e  rel-norm %.2e  vs CPU %.2e  lse %.2e\n", c->name, worst, rel, worst_cpu, worst_lse);
    tu_check(bad == 0, "%s: %lld out elements off the reference, worst |err| %.3g (atol %.1e rtol %.1e)", c->name,
             (long long)bad, worst, atol, rtol);
    tu_check(bad_cpu == 0, "%s: %lld out elements off the CPU backend, worst |diff| %.3g", c->name, (long long)bad_cpu,
             worst_cpu);
    tu_check(bad_lse == 0, "%s: %lld lse rows off, worst |err| %.3g", c->name, (long long)bad_lse, worst_lse);
    if (c->strided) {
        tu_check(tu_buf_outside_poisoned(&out), "%s: out written outside its view", c->name);
        if (with_lse) tu_check(tu_buf_outside_poisoned(&lse), "%s: lse written outside its view", c->name);
    }
    if (stream) cudaStreamDestroy(stream);
    la_context_destroy(ctx);
    cudaFree(dq.mem), cudaFree(dk.mem), cudaFree(dv.mem), cudaFree(dout.mem), cudaFree(dlse.mem);
    free(q.t.data), free(k.t.data), free(v.t.data), free(out.t.data), free(lse.t.data);
    free(out_cpu.t.data), free(lse_cpu.t.data);
    free(want), free(want_lse), free(hq), free(ho), free(hl), free(hk), free(hv);
}

static la_attention_params P(void) { return la_attention_params_default(); }

static void shape_cases(uint64_t *rng) {
    static const int64_t lens[] = {1, 63, 65, 1000, 4097};
    char name[128];
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
        for (int causal = 0; causal < 2; causal++) {
            int64_t L = lens[li];
            if (quick && L > 100) continue;
            cu_case c = {.B = L > 1000 ? 1 : 2, .Lq = L, .Lk = L, .H = L > 1000 ? 2 : 4, .Hkv = 1, .D = 64,
                         .dt = LA_BF16, .out_dt = LA_BF16, .want_lse = true, .p = P()};
            c.p.causal = causal;
            snprintf(name, sizeof name, "L=%lld causal=%d mqa D=64", (long long)L, causal);
            c.name = name;
            run_case(rng, &c);
        }
    static const int64_t dims[] = {64, 128, 256, 72, 8, 200};
    for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++)
        for (int causal = 0; causal < 2; causal++) {
            if (quick && causal) continue;
            cu_case c = {.B = 2, .Lq = 77, .Lk = 300, .H = 8, .Hkv = 2, .D = dims[di], .dt = LA_BF16,
                         .out_dt = LA_BF16, .want_lse = true, .p = P()};
            c.p.causal = causal;
            snprintf(name, sizeof name, "D=%lld Lq<Lk causal=%d gqa4", (long long)dims[di], causal);
            c.name = name;
            run_case(rng, &c);
        }
    static const int64_t ratios[] = {1, 4, 8};
    for (size_t ri = 0; ri < 3; ri++) {
        cu_case c = {.B = 1, .Lq = 200, .Lk = 130, .H = 8, .Hkv = 8 / ratios[ri], .D = 128, .dt = LA_BF16,
                     .out_dt = LA_F32, .want_lse = true, .p = P()};
        c.p.causal = 1;
        snprintf(name, sizeof name, "gqa ratio %lld, Lq>Lk causal, f32 out", (long long)ratios[ri]);
        c.name = name;
        run_case(rng, &c);
    }
    if (quick) return;
    cu_case big = {.name = "L=2000 D=128 H=4 gqa2 causal", .B = 1, .Lq = 2000, .Lk = 2000, .H = 4, .Hkv = 2,
                   .D = 128, .dt = LA_BF16, .out_dt = LA_BF16, .want_lse = true, .p = P()};
    big.p.causal = 1;
    run_case(rng, &big);
}

/* Causal masks and windows over many key tiles at the head dims the
 * 176-key kernel takes (72-128): the diagonal band masked inside a tile,
 * bottom-right alignment with Lq < Lk and Lq > Lk (rows that see no key),
 * windows whose start moves through the tiles. */
static void ranged_cases(uint64_t *rng) {
    if (quick) return;
    cu_case base = {.B = 1, .Lq = 4097, .Lk = 4097, .H = 2, .Hkv = 1, .D = 128, .dt = LA_BF16, .out_dt = LA_BF16,
                    .want_lse = true, .p = P()};
    cu_case c = base;
    c.name = "wide: causal L 4097 D 128";
    c.p.causal = 1;
    run_case(rng, &c);
    c = base, c.name = "wide: causal Lq 1500 < Lk 3001 D 96 f16";
    c.Lq = 1500, c.Lk = 3001, c.D = 96, c.dt = c.out_dt = LA_F16, c.p.causal = 1;
    run_case(rng, &c);
    c = base, c.name = "wide: causal Lq 3001 > Lk 1200 D 128, f32 out";
    c.Lq = 3001, c.Lk = 1200, c.out_dt = LA_F32, c.p.causal = 1;
    run_case(rng, &c);
    c = base, c.name = "wide: window left 500 causal L 2500 D 72";
    c.Lq = c.Lk = 2500, c.D = 72, c.p.causal = 1, c.p.window_left = 500;
    run_case(rng, &c);
    c = base, c.name = "wide: window (300, 200) L 2100, gqa2";
    c.Lq = c.Lk = 2100, c.H = 4, c.Hkv = 2, c.p.window_left = 300, c.p.window_right = 200;
    run_case(rng, &c);
}

static void option_cases(uint64_t *rng) {
    cu_case base = {.B = 2, .Lq = 300, .Lk = 300, .H = 4, .Hkv = 2, .D = 128, .dt = LA_BF16, .out_dt = LA_BF16,
                    .want_lse = true, .p = P()};
    cu_case c = base;
    c.name = "f16 in, f16 out";
    c.dt = c.out_dt = LA_F16, c.p.causal = 1;
    run_case(rng, &c);
    c = base, c.name = "f16 in, f32 out, strided";
    c.dt = LA_F16, c.out_dt = LA_F32, c.strided = true;
    run_case(rng, &c);
    c = base, c.name = "bf16 strided, caller's stream";
    c.strided = true, c.stream = true, c.p.causal = 1;
    run_case(rng, &c);
    c = base, c.name = "window left 70 causal";
    c.p.causal = 1, c.p.window_left = 70;
    run_case(rng, &c);
    c = base, c.name = "window (5, 9) non-causal";
    c.p.window_left = 5, c.p.window_right = 9;
    run_case(rng, &c);
    c = base, c.name = "sinks 4 + window 100 causal";
    c.p.causal = 1, c.p.window_left = 100, c.p.sinks = 4;
    run_case(rng, &c);
    c = base, c.name = "sinks 70 + window 3, Lq<Lk";
    c.Lq = 50, c.p.causal = 1, c.p.window_left = 3, c.p.sinks = 70;
    run_case(rng, &c);
    c = base, c.name = "softcap 5, scale 0.3";
    c.p.softcap = 5, c.p.scale = 0.3f;
    run_case(rng, &c);
    c = base, c.name = "alibi causal";
    c.alibi = true, c.p.causal = 1;
    run_case(rng, &c);
    c = base, c.name = "sigmoid bias -log(L) causal";
    c.p.score = LA_SCORE_SIGMOID, c.p.sigmoid_bias = -logf(300), c.p.causal = 1;
    run_case(rng, &c);
    c = base, c.name = "sigmoid window softcap alibi";
    c.p.score = LA_SCORE_SIGMOID, c.p.window_left = 20, c.p.window_right = 7, c.p.softcap = 3, c.alibi = true;
    run_case(rng, &c);
    c = base, c.name = "everything, strided";
    c.strided = true, c.p.causal = 1, c.p.window_left = 50, c.p.sinks = 2, c.p.softcap = 8, c.alibi = true;
    run_case(rng, &c);
    /* scale 2: scores spread over tens of log2 units, so a row's max rises
     * past the Hopper kernel's slack (8) after its first tile as well as
     * within it: both branches of the running max, O, l and lse */
    c = base, c.name = "scale 2, Lk 1000";
    c.p.scale = 2.0f, c.Lk = 1000;
    run_case(rng, &c);
    c = base, c.name = "scale 2 causal, Lq<Lk";
    c.p.scale = 2.0f, c.p.causal = 1, c.Lq = 130, c.Lk = 1000;
    run_case(rng, &c);
    c = base, c.name = "no lse";
    c.want_lse = false, c.p.causal = 1;
    run_case(rng, &c);
    c = base, c.name = "Lk = 0";
    c.Lk = 0;
    run_case(rng, &c);
    for (int r = 0; r < (quick ? 2 : 12); r++) {
        c = base;
        c.name = "random combination";
        c.Lq = tu_randint(rng, 1, 260), c.Lk = tu_randint(rng, 1, 260);
        c.Hkv = tu_randint(rng, 1, 2), c.H = c.Hkv * tu_randint(rng, 1, 4), c.D = 8 * tu_randint(rng, 1, 32);
        cu_random_rule(rng, &c.p);
        c.alibi = tu_randint(rng, 0, 1);
        c.strided = tu_randint(rng, 0, 1);
        c.dt = tu_randint(rng, 0, 1) ? LA_BF16 : LA_F16;
        c.out_dt = tu_randint(rng, 0, 1) ? LA_F32 : c.dt;
        run_case(rng, &c);
    }
}

static void varlen_cases(uint64_t *rng) {
    cu_case c = {.name = "varlen with an empty sequence", .nseq = 5, .lens_q = {5, 0, 130, 1, 700},
                 .lens_k = {5, 3, 150, 70, 650}, .H = 8, .Hkv = 2, .D = 128, .dt = LA_BF16, .out_dt = LA_BF16,
                 .want_lse = true, .p = P()};
    c.p.causal = 1;
    run_case(rng, &c);
    c.name = "varlen strided f16 window";
    c.strided = true, c.dt = c.out_dt = LA_F16, c.p.window_left = 9;
    run_case(rng, &c);
    cu_case e = {.name = "varlen empty keys", .nseq = 3, .lens_q = {4, 90, 2}, .lens_k = {0, 120, 0}, .H = 2,
                 .Hkv = 1, .D = 64, .dt = LA_BF16, .out_dt = LA_F32, .want_lse = true, .p = P()};
    run_case(rng, &e);
}

/* The Hopper forward's key split of its last rounds (forward_sm90.cu, the
 * default where every row sees every key): at least 2 G work items (G the
 * SMs, 132 on an H200) that are not a whole number of rounds, so items of
 * the last two rounds are cut into key pieces on two blocks and merged.
 * 288 items of 128 query rows here (the second tile of each head nearly
 * empty: Lq 129), key tiles ending part-full; elsewhere (fewer SMs, other
 * GPUs) the same cases run unsplit. */
static void split_cases(uint64_t *rng) {
    cu_case c = {.name = "key split: 288 items, Lq 129, Lk 700, gqa4 D=128", .B = 9, .Lq = 129, .Lk = 700, .H = 16,
                 .Hkv = 4, .D = 128, .dt = LA_BF16, .out_dt = LA_BF16, .want_lse = true, .p = P()};
    if (quick) c.name = "key split: 288 items, Lq 65, Lk 300, gqa4 D=128", c.B = 18, c.Lq = 65, c.Lk = 300;
    run_case(rng, &c);
    c.name = "key split: D=64 f16, f32 out, softcap, alibi, strided, Lk 520";
    c.D = 64, c.dt = LA_F16, c.out_dt = LA_F32, c.alibi = true, c.strided = true, c.p.softcap = 20.0f;
    c.Lk = quick ? 260 : 520;
    run_case(rng, &c);
    c.name = "key split: D=128 bf16, sinks (every key seen anyway), Lq 300";
    c.D = 128, c.dt = c.out_dt = LA_BF16, c.alibi = c.strided = false, c.p.softcap = 0, c.p.sinks = 3;
    c.B = quick ? 9 : 6, c.Lq = quick ? 129 : 300, c.Lk = quick ? 200 : 700; /* 288 items again */
    run_case(rng, &c);
}

/* The 176-key kernel's split of the last partial wave (forward_sm90_ws.cu,
 * ws_tail_plan; off unless LA_CUDA_FORWARD_TAIL=auto or =<p>, which the
 * caller sets): items % 132 (the H200's SMs) of them run as pieces of at
 * least 6 key tiles, folded by the last piece to finish; Lk past 2112 keys,
 * a partial last key tile and query block, and (third case) whole items
 * before the pieces. */
static void tail_cases(uint64_t *rng) {
    cu_case c = {.name = "tail split: 48 items, Lq 1000, Lk 4500, gqa3 D=128", .B = 1, .Lq = 1000, .Lk = 4500, .H = 6,
                 .Hkv = 2, .D = 128, .dt = LA_BF16, .out_dt = LA_BF16, .want_lse = true, .p = P()};
    if (quick) c.name = "tail split: 18 items, Lq 300, Lk 2300, gqa3 D=128", c.Lq = 300, c.Lk = 2300;
    run_case(rng, &c);
    c = (cu_case){.name = "tail split: D=96 f16, f32 out, Lq 129, Lk 2300, B 3", .B = 3, .Lq = 129, .Lk = 2300, .H = 5,
                  .Hkv = 5, .D = 96, .dt = LA_F16, .out_dt = LA_F32, .want_lse = true, .p = P()};
    run_case(rng, &c);
    c = (cu_case){.name = "tail split: 144 items (12 past 132), Lq 257, Lk 2200, H 48 gqa8", .B = 1, .Lq = 257,
                  .Lk = 2200, .H = 48, .Hkv = 6, .D = 128, .dt = LA_BF16, .out_dt = LA_BF16, .want_lse = true,
                  .p = P()};
    run_case(rng, &c);
}

/* ---- bad inputs: each gives its status and leaves out untouched ---- */

/* More work items (query tile, head, sequence) than the H200's 132 SMs, so
 * a persistent grid's blocks take several each (the Q, K / V ring and turn
 * barriers carried from item to item), with uneven items (causal, Lq < Lk). */
static void persist_cases(uint64_t *rng) {
    cu_case c = {.name = "272 items: B 2 L 2100 H 8 gqa4 D 128", .B = 2, .Lq = 2100, .Lk = 2100, .H = 8, .Hkv = 2,
                 .D = 128, .dt = LA_BF16, .out_dt = LA_BF16, .want_lse = true, .p = P()};
    run_case(rng, &c);
    c = (cu_case){.name = "288 items: Lq 1500 Lk 1700 H 24 gqa3 D 64 causal f16", .B = 1, .Lq = 1500, .Lk = 1700,
                  .H = 24, .Hkv = 8, .D = 64, .dt = LA_F16, .out_dt = LA_F16, .want_lse = true, .p = P()};
    c.p.causal = 1;
    run_case(rng, &c);
}

static void bad_inputs(uint64_t *rng) {
    enum { B = 1, L = 16, H = 4, HKV = 2, D = 64 };
    buf q = tu_buf_new(LA_BF16, 4, (int64_t[]){B, L, H, D}, false, false);
    buf k = tu_buf_new(LA_BF16, 4, (int64_t[]){B, L, HKV, D}, false, false);
    buf v = tu_buf_new(LA_BF16, 4, (int64_t[]){B, L, HKV, D}, false, false);
    buf o = tu_buf_new(LA_BF16, 4, (int64_t[]){B, L, H, D}, false, false);
    tu_fill(rng, q.t.data, LA_BF16, (int64_t)q.elems, -1, 1);
    tu_fill(rng, k.t.data, LA_BF16, (int64_t)k.elems, -1, 1);
    tu_fill(rng, v.t.data, LA_BF16, (int64_t)v.elems, -1, 1);
    tu_poison(o.t.data, LA_BF16, (int64_t)o.elems);
    dev_buf dq = to_device(&q), dk = to_device(&k), dv = to_device(&v), dout = to_device(&o);
    /* room for head dim 264 views: the inputs share the first region (inputs
     * may), out has the second to itself (outputs may overlap nothing) */
    const size_t region = (size_t)B * L * H * 264 * 4;
    char *wide;
    cuda_ok(cudaMalloc((void **)&wide, 2 * region + 64), "cudaMalloc");
    la_context *ctx;
    la_context_create(&ctx, 2);

#define BAD(label, want, ...)                                                                                \
    do {                                                                                                     \
        la_attention_params p = P();                                                                         \
        la_tensor xq = dq.t, xk = dk.t, xv = dv.t, xo = dout.t;                                              \
        __VA_ARGS__;                                                                                         \
        la_status s = la_attention_forward(ctx, &p, &xq, &xk, &xv, &xo, NULL);                                \
        cudaDeviceSynchronize();                                                                             \
        cu_check_rejected(label, s, want, &o, &dout, "out");                                                 \
    } while (0)

    BAD("host pointer in a CUDA tensor", LA_ERR_DEVICE, xk.data = k.t.data);
    BAD("mixed devices (q on the CPU)", LA_ERR_DEVICE, xq = q.t);
    BAD("device index 7", LA_ERR_DEVICE, xq.device.index = 7; xk.device.index = 7; xv.device.index = 7;
        xo.device.index = 7);
    BAD("head dim 264", LA_ERR_UNSUPPORTED, xq.data = wide; xk.data = wide; xv.data = wide; xo.data = wide + region;
        xq.shape[3] = xk.shape[3] = xv.shape[3] = xo.shape[3] = 264;
        xq.stride[2] = xo.stride[2] = xk.stride[2] = xv.stride[2] = 264;
        xq.stride[1] = xo.stride[1] = H * 264; xk.stride[1] = xv.stride[1] = HKV * 264;
        xq.stride[0] = xo.stride[0] = L * H * 264; xk.stride[0] = xv.stride[0] = L * HKV * 264);
    BAD("f32 inputs", LA_ERR_UNSUPPORTED, xq.data = xk.data = xv.data = wide; xo.data = wide + region;
        xq.dtype = xk.dtype = xv.dtype = xo.dtype = LA_F32);
    BAD("misaligned rows (head stride 68)", LA_ERR_UNSUPPORTED, xq.data = wide; xq.stride[2] = 68;
        xq.stride[1] = H * 68; xq.stride[0] = L * H * 68);
    BAD("valid call after the bad ones", LA_OK, (void)0);
    la_context_destroy(ctx);
    cudaFree(wide), cudaFree(dq.mem), cudaFree(dk.mem), cudaFree(dv.mem), cudaFree(dout.mem);
    free(q.t.data), free(k.t.data), free(v.t.data), free(o.t.data);
}

int main(void) {
    if (!la_cuda_available()) {
        printf("SKIP: %s\n", la_last_error());
        return 77;
    }
    uint64_t rng = tu_seed();
    const char *qe = getenv("LONGATTN_TEST_QUICK");
    quick = qe && *qe && *qe != '0';
    /* LONGATTN_TEST_FWD_ONLY=<kernel>: that forward kernel's cases alone (a
     * compute-sanitizer run of one kernel) */
    const char *only = getenv("LONGATTN_TEST_FWD_ONLY");
    if (only && *only) {
        setenv("LA_CUDA_FORWARD_KERNEL", only, 1);
        shape_cases(&rng);
        option_cases(&rng);
        ranged_cases(&rng);
        varlen_cases(&rng);
        split_cases(&rng);
        const bool tail_set = getenv("LA_CUDA_FORWARD_TAIL") != NULL;
        if (!tail_set) setenv("LA_CUDA_FORWARD_TAIL", "auto", 1); /* the split's cases with it on */
        tail_cases(&rng);
        if (!tail_set) unsetenv("LA_CUDA_FORWARD_TAIL");
        if (!quick) persist_cases(&rng);
        return tu_finish();
    }
    bad_inputs(&rng);
    shape_cases(&rng);
    option_cases(&rng);
    ranged_cases(&rng);
    varlen_cases(&rng);
    split_cases(&rng);
    tail_cases(&rng);
    /* Head dims up to 128 run the wgmma kernel on Hopper: check the mma.sync
     * kernel (what other GPUs run) on the same cases too. */
    setenv("LA_CUDA_FORWARD_KERNEL", "mma", 1);
    shape_cases(&rng);
    option_cases(&rng);
    varlen_cases(&rng);
    /* and both loops of the wgmma kernel (S, softmax, P V in turn; the next
     * S overlapped with this tile's softmax), whichever is the default */
    setenv("LA_CUDA_FORWARD_KERNEL", "wgmma-serial", 1);
    shape_cases(&rng);
    option_cases(&rng);
    varlen_cases(&rng);
    setenv("LA_CUDA_FORWARD_KERNEL", "wgmma-pipe", 1);
    shape_cases(&rng);
    option_cases(&rng);
    varlen_cases(&rng);
    /* the serial loop in a persistent grid (items of one block in turn) */
    setenv("LA_CUDA_FORWARD_KERNEL", "wgmma-persist", 1);
    shape_cases(&rng);
    option_cases(&rng);
    varlen_cases(&rng);
    /* the warp-specialised kernel (a producer warp, TMA loads, mbarrier
     * ring), without and with the next S overlapped (the default, run by
     * the passes above too); varlen and unaligned operands fall back */
    setenv("LA_CUDA_FORWARD_KERNEL", "wgmma-ws", 1);
    shape_cases(&rng);
    option_cases(&rng);
    varlen_cases(&rng);
    split_cases(&rng);
    /* the ws kernel over 176-key tiles (the default with the plain softmax
     * and no sinks, for causal masks from 1025 query rows; the
     * last tile's keys past Lk cut inside it, the diagonal band's tiles
     * masked; other cases fall back), with its K / V stages released
     * together; and the 128-key pipelined ws kernel on the cases the
     * 176-key one takes by default */
    setenv("LA_CUDA_FORWARD_KERNEL", "wgmma-ws-176", 1);
    setenv("LA_CUDA_FORWARD_KV_RELEASE", "joint", 1);
    shape_cases(&rng);
    option_cases(&rng);
    ranged_cases(&rng);
    setenv("LA_CUDA_FORWARD_TAIL", "auto", 1);
    tail_cases(&rng);
    unsetenv("LA_CUDA_FORWARD_TAIL");
    unsetenv("LA_CUDA_FORWARD_KV_RELEASE");
    /* its last wave's key split with two pieces an item, and without it (the default) */
    setenv("LA_CUDA_FORWARD_TAIL", "2", 1);
    tail_cases(&rng);
    setenv("LA_CUDA_FORWARD_TAIL", "0", 1);
    tail_cases(&rng);
    unsetenv("LA_CUDA_FORWARD_TAIL");
    setenv("LA_CUDA_FORWARD_KERNEL", "wgmma-ws-pipe", 1);
    shape_cases(&rng);
    option_cases(&rng);
    ranged_cases(&rng);
    varlen_cases(&rng);
    split_cases(&rng);
    /* the same in a persistent grid (one block per SM taking items in turn) */
    setenv("LA_CUDA_FORWARD_KERNEL", "wgmma-ws-persist", 1);
    shape_cases(&rng);
    option_cases(&rng);
    varlen_cases(&rng);
    split_cases(&rng);
    persist_cases(&rng);
    /* the persistent grid's key split (its default on such shapes), and
     * without it */
    setenv("LA_CUDA_FORWARD_KERNEL", "wgmma-persist", 1);
    split_cases(&rng);
    setenv("LA_CUDA_FORWARD_SPLIT", "0", 1);
    split_cases(&rng);
    unsetenv("LA_CUDA_FORWARD_SPLIT");
    unsetenv("LA_CUDA_FORWARD_KERNEL");
    return tu_finish();
}
