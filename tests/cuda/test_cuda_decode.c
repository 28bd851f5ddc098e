/* The CUDA decode attention: f32 queries (1 to 4 tokens per sequence)
 * against bf16/f16 K/V caches, contiguous or paged through random block
 * tables (blocks not in order, unused entries -1), sequence lengths 0, 1,
 * odd and long; against the float64 reference over the same keys and
 * against the CPU decode on the same inputs; poisoned outputs; bad inputs
 * return their status.
 *
 * Skips (exit 77) where no CUDA device is usable, printing why. */
#include "attention_ref.h"
#include "cuda_test_util.h"

#include <stdlib.h>

typedef tu_buf buf;

static bool quick; /* LONGATTN_TEST_QUICK: short lengths only (compute-sanitizer) */

typedef struct {
    const char *name;
    int64_t B, Lq, H, Hkv, D;
    int32_t lens[8];    /* sequence b has lens[b % 8] keys */
    int64_t block_size; /* 0: contiguous cache */
    la_dtype kv_dt;
    bool alibi, with_lse, no_seqlens; /* no_seqlens: contiguous, every sequence at capacity */
    la_attention_params p;
} dec_case;

/* out: |got - want| <= atol + rtol |want|. The scores use q split in two
 * 16-bit halves (about 16 mantissa bits, exact K), so they are near f32;
 * P is rounded to the cache's type before P V (2^-9 bf16, 2^-11 f16 per
 * weight), moving out by at most that times max |v| = 1: atol 2x that
 * (4e-3 bf16, 1e-3 f16), x8 for sigmoid whose weights are not normalised
 * (sums under ~8 here). out is f32: rtol 1e-4. lse in f32 from near-exact
 * scores: 2e-4 absolute, as the forward's test. */
#define LSE_ATOL 2e-4

static void run_case(uint64_t *rng, const dec_case *c) {
    const int64_t B = c->B, Lq = c->Lq, H = c->H, Hkv = c->Hkv, D = c->D, G = H / Hkv;
    const bool paged = c->block_size > 0, sigmoid = c->p.score == LA_SCORE_SIGMOID;
    int64_t maxlen = 0;
    for (int64_t b = 0; b < B; b++) maxlen = c->lens[b % 8] > maxlen ? c->lens[b % 8] : maxlen;
    const int64_t bs = paged ? c->block_size : 0;
    const int64_t bps = paged ? (maxlen + bs - 1) / bs + 1 : 0; /* one spare block per sequence */
    const int64_t cap = paged ? bps * bs : (c->no_seqlens ? maxlen : maxlen + 3);
    const int64_t nblocks = paged ? B * bps + 3 : B;
    int32_t *table = NULL;
    if (paged) {
        /* a random permutation of the blocks, dealt to the sequences in order */
        int32_t *perm = tu_alloc(sizeof(int32_t) * (size_t)nblocks);
        for (int64_t i = 0; i < nblocks; i++) perm[i] = (int32_t)i;
        for (int64_t i = nblocks - 1; i > 0; i--) {
            int64_t j = tu_randint(rng, 0, i);
            int32_t t = perm[i];
            perm[i] = perm[j], perm[j] = t;
        }
        table = tu_alloc(sizeof(int32_t) * (size_t)(B * bps));
        for (int64_t b = 0, n = 0; b < B; b++)
            for (int64_t blk = 0; blk < bps; blk++)
                table[b * bps + blk] = blk * bs < c->lens[b % 8] ? perm[n++] : -1; /* unused entries: never read */
        free(perm);
    }
    int32_t *seqlens = tu_alloc(sizeof(int32_t) * (size_t)B);
    for (int64_t b = 0; b < B; b++) seqlens[b] = c->no_seqlens ? (int32_t)cap : c->lens[b % 8];
    const int64_t qs[4] = {B, Lq, H, D}, ks[4] = {nblocks, paged ? bs : cap, Hkv, D}, ls[3] = {B, Lq, H};
    buf q = tu_buf_new(LA_F32, 4, qs, false, false), k = tu_buf_new(c->kv_dt, 4, ks, false, false);
    buf v = tu_buf_new(c->kv_dt, 4, ks, false, false), out = tu_buf_new(LA_F32, 4, qs, false, false);
    buf lse = tu_buf_new(LA_F32, 3, ls, false, true), out_cpu = tu_buf_new(LA_F32, 4, qs, false, false);
    buf lse_cpu = tu_buf_new(LA_F32, 3, ls, false, true);
    tu_fill(rng, q.t.data, LA_F32, (int64_t)q.elems, -1, 1);
    tu_fill(rng, k.t.data, c->kv_dt, (int64_t)k.elems, -1, 1);
    tu_fill(rng, v.t.data, c->kv_dt, (int64_t)v.elems, -1, 1);
    float slopes[64];
    for (int64_t h = 0; h < H; h++) slopes[h] = (float)tu_uniform(rng, 0.01, 0.3);
    la_attention_params p = c->p;
    if (c->alibi) p.alibi_slopes = slopes;
    la_kv_layout layout = {.seqlens_k = c->no_seqlens ? NULL : seqlens, .block_table = table, .blocks_per_seq = bps};
    const bool with_lse = c->with_lse && !sigmoid;

    /* float64 reference over each sequence's keys, gathered */
    double *want = tu_alloc(8 * (size_t)(B * Lq * H * D)), *want_lse = tu_alloc(8 * (size_t)(B * Lq * H));
    const int64_t kn = maxlen > cap ? maxlen : cap;
    double *hq = tu_alloc(8 * (size_t)(Lq * D)), *ho = tu_alloc(8 * (size_t)(Lq * D)), *hl = tu_alloc(8 * (size_t)Lq);
    double *hk = tu_alloc(8 * (size_t)(kn * D + 1)), *hv = tu_alloc(8 * (size_t)(kn * D + 1));
    for (int64_t b = 0; b < B; b++) {
        const int64_t len = seqlens[b];
        for (int64_t h = 0; h < H; h++) {
            int64_t idx[4];
            for (int64_t t = 0; t < len; t++)
                for (int64_t d = 0; d < D; d++) {
                    idx[0] = paged ? table[b * bps + t / bs] : b, idx[1] = paged ? t % bs : t, idx[2] = h / G;
                    idx[3] = d;
                    hk[t * D + d] = tu_get(&k.t, idx);
                    hv[t * D + d] = tu_get(&v.t, idx);
                }
            for (int64_t i = 0; i < Lq; i++)
                for (int64_t d = 0; d < D; d++) {
                    idx[0] = b, idx[1] = i, idx[2] = h, idx[3] = d;
                    hq[i * D + d] = tu_get(&q.t, idx);
                }
            ref_attn_opts o = {.scale = p.scale > 0 ? p.scale : 1 / sqrt((double)D), .causal = p.causal,
                               .window_left = p.window_left, .window_right = p.window_right, .sinks = p.sinks,
                               .softcap = p.softcap, .alibi_slope = c->alibi ? slopes[h] : 0, .sigmoid = sigmoid,
                               .sigmoid_bias = p.sigmoid_bias};
            ref_attention_forward(&o, Lq, len, D, hq, hk, hv, ho, hl);
            for (int64_t i = 0; i < Lq; i++) {
                memcpy(want + ((b * Lq + i) * H + h) * D, ho + i * D, 8 * (size_t)D);
                want_lse[(b * Lq + i) * H + h] = hl[i];
            }
        }
    }

    la_context *ctx;
    la_context_create(&ctx, 0);
    tu_poison(out_cpu.t.data, LA_F32, (int64_t)out_cpu.elems);
    la_status s = la_attention_decode(ctx, &p, &q.t, &k.t, &v.t, &layout, &out_cpu.t, with_lse ? &lse_cpu.t : NULL);
    tu_check(s == LA_OK, "%s: CPU status %s (%s)", c->name, la_status_name(s), la_last_error());

    tu_poison(out.t.data, LA_F32, (int64_t)out.elems);
    tu_poison(lse.t.data, LA_F32, (int64_t)lse.elems);
    dev_buf dq = to_device(&q), dk = to_device(&k), dv = to_device(&v), dout = to_device(&out), dl = to_device(&lse);
    s = la_attention_decode(ctx, &p, &dq.t, &dk.t, &dv.t, &layout, &dout.t, with_lse ? &dl.t : NULL);
    tu_check(s == LA_OK, "%s: CUDA status %s (%s)", c->name, la_status_name(s), la_last_error());
    cuda_ok(cudaDeviceSynchronize(), "synchronize after the decode");
    from_device(&out, &dout);
    from_device(&lse, &dl);

    const double atol = (c->kv_dt == LA_BF16 ? 4e-3 : 1e-3) * (sigmoid ? 8 : 1), rtol = 1e-4;
    int64_t bad = 0, bad_cpu = 0, bad_lse = 0;
    double worst = 0, worst_cpu = 0, worst_lse = 0;
    for (int64_t b = 0; b < B && s == LA_OK; b++)
        for (int64_t i = 0; i < Lq; i++)
            for (int64_t h = 0; h < H; h++) {
                int64_t idx[4] = {b, i, h, 0};
                for (int64_t d = 0; d < D; d++) {
                    idx[3] = d;
                    const double g = tu_get(&out.t, idx), w = want[((b * Lq + i) * H + h) * D + d];
                    const double x = tu_get(&out_cpu.t, idx);
                    if (!tu_close(g, w, atol, rtol)) bad++;
                    if (!tu_close(g, x, atol, rtol)) bad_cpu++;
                    const double e = isnan(g) ? INFINITY : fabs(g - w), ec = isnan(g) ? INFINITY : fabs(g - x);
                    worst = e > worst ? e : worst, worst_cpu = ec > worst_cpu ? ec : worst_cpu;
                }
                if (with_lse) {
                    const double g = tu_get(&lse.t, idx), w = want_lse[(b * Lq + i) * H + h];
                    if (!tu_close(g, w, LSE_ATOL, 1e-6)) bad_lse++;
                    const double e = isinf(g) && g == w ? 0 : isnan(g) ? INFINITY : fabs(g - w);
                    worst_lse = e > worst_lse ? e : worst_lse;
                }
            }
    printf("%-50s worst |err| %.2e  vs CPU %.2e  lse %.2e\n", c->name, worst, worst_cpu, worst_lse);
    tu_check(bad == 0, "%s: %lld out elements off the reference, worst |err| %.3g (atol %.1e)", c->name,
             (long long)bad, worst, atol);
    tu_check(bad_cpu == 0, "%s: %lld out elements off the CPU decode, worst |diff| %.3g", c->name, (long long)bad_cpu,
             worst_cpu);
    tu_check(bad_lse == 0, "%s: %lld lse rows off, worst |err| %.3g", c->name, (long long)bad_lse, worst_lse);
    la_context_destroy(ctx);
    cudaFree(dq.mem), cudaFree(dk.mem), cudaFree(dv.mem), cudaFree(dout.mem), cudaFree(dl.mem);
    tu_buf_free(&q), tu_buf_free(&k), tu_buf_free(&v), tu_buf_free(&out), tu_buf_free(&lse), tu_buf_free(&out_cpu);
    tu_buf_free(&lse_cpu);
    free(table), free(seqlens), free(want), free(want_lse), free(hq), free(ho), free(hl), free(hk), free(hv);
}

static la_attention_params P(void) { return la_attention_params_default(); }

static dec_case base_case(void) {
    dec_case c = {.B = 4, .Lq = 1, .H = 8, .Hkv = 2, .D = 128, .lens = {0, 1, 77, 1500}, .block_size = 16,
                  .kv_dt = LA_BF16, .with_lse = true, .p = P()};
    c.p.causal = 1;
    return c;
}

static void cases(uint64_t *rng) {
    char name[160];
    /* lengths 0, 1, odd, long; Lq 1..4; paged and contiguous; GQA 1/4/8 */
    static const int64_t ratios[] = {1, 4, 8};
    for (int64_t lq = 1; lq <= 4; lq++)
        for (int ri = 0; ri < 3; ri++) {
            if (quick && lq > 2) continue;
            dec_case c = base_case();
            c.Lq = lq, c.Hkv = 8 / ratios[ri];
            if (quick) c.lens[3] = 300;
            snprintf(name, sizeof name, "paged 16, Lq=%lld gqa %lld, lens 0/1/77/%d", (long long)lq,
                     (long long)ratios[ri], c.lens[3]);
            c.name = name;
            run_case(rng, &c);
        }
    static const int64_t dims[] = {64, 128, 256, 72};
    for (int di = 0; di < 4; di++)
        for (int f16 = 0; f16 < 2; f16++) {
            dec_case c = base_case();
            c.D = dims[di], c.kv_dt = f16 ? LA_F16 : LA_BF16, c.Lq = 2, c.block_size = 64;
            c.lens[0] = 5, c.lens[3] = quick ? 200 : 999;
            snprintf(name, sizeof name, "paged 64, D=%lld %s, Lq=2", (long long)dims[di], f16 ? "f16" : "bf16");
            c.name = name;
            run_case(rng, &c);
        }
    dec_case c = base_case();
    c.name = "contiguous with seqlens";
    c.block_size = 0, c.Lq = 3;
    run_case(rng, &c);
    c = base_case(), c.name = "contiguous at capacity (no seqlens), not causal";
    c.block_size = 0, c.no_seqlens = true, c.p.causal = 0, c.lens[0] = 40, c.lens[1] = 40, c.lens[2] = 40,
    c.lens[3] = 40;
    run_case(rng, &c);
    c = base_case(), c.name = "page size 40, gqa 8, Lq=2 (16 rows)";
    c.block_size = 40, c.H = 16, c.Lq = 2, c.lens[3] = quick ? 300 : 1500;
    run_case(rng, &c);
    c = base_case(), c.name = "batch 70 (lengths copied to the device, not in the arguments), page 32";
    c.B = 70, c.block_size = 32, c.lens[3] = 200, c.lens[4] = 33, c.lens[5] = 64, c.lens[6] = 2, c.lens[7] = 95;
    run_case(rng, &c);
    c = base_case(), c.name = "page size 1 (every key its own block)";
    c.block_size = 1, c.lens[3] = 130;
    run_case(rng, &c);
    c = base_case(), c.name = "mqa 32 heads, Lq=3: two row groups";
    c.H = 32, c.Hkv = 1, c.Lq = 3, c.D = 64;
    run_case(rng, &c);
    c = base_case(), c.name = "window 100 + sinks 4, Lq=4";
    c.Lq = 4, c.p.window_left = 100, c.p.sinks = 4;
    run_case(rng, &c);
    c = base_case(), c.name = "softcap 5, alibi, scale 0.2";
    c.p.softcap = 5, c.alibi = true, c.p.scale = 0.2f, c.Lq = 2;
    run_case(rng, &c);
    c = base_case(), c.name = "sigmoid, bias -log(1500), window 300";
    c.p.score = LA_SCORE_SIGMOID, c.p.sigmoid_bias = -logf(1500), c.p.window_left = 300, c.Lq = 2;
    run_case(rng, &c);
    c = base_case(), c.name = "no lse, f16";
    c.with_lse = false, c.kv_dt = LA_F16;
    run_case(rng, &c);
    /* many splits (the plan gives short caches one): empty splits, the
     * merge of many partials, the rows kernel's splits */
    static const char *forced[] = {"3", "17"};
    for (int fi = 0; fi < 2; fi++) {
        setenv("LA_CUDA_DECODE_SPLITS", forced[fi], 1);
        c = base_case();
        snprintf(name, sizeof name, "%s splits forced: paged 16, gqa 4, lens 0/1/77/%d", forced[fi], quick ? 300 : 1500);
        c.lens[3] = quick ? 300 : 1500, c.name = name;
        run_case(rng, &c);
        c = base_case();
        snprintf(name, sizeof name, "%s splits forced: gqa 8, Lq=4 (rows kernel), window 200 + sinks 3", forced[fi]);
        c.H = 16, c.Lq = 4, c.p.window_left = 200, c.p.sinks = 3, c.lens[3] = quick ? 300 : 1500, c.name = name;
        run_case(rng, &c);
        c = base_case();
        snprintf(name, sizeof name, "%s splits forced: sigmoid, contiguous, D=64", forced[fi]);
        c.p.score = LA_SCORE_SIGMOID, c.p.sigmoid_bias = -logf(500), c.block_size = 0, c.D = 64, c.name = name;
        run_case(rng, &c);
        unsetenv("LA_CUDA_DECODE_SPLITS");
    }
    if (!quick) {
        c = base_case(), c.name = "long: 2 sequences of 20000 and 3333 keys, Lq=2";
        c.B = 2, c.lens[0] = 20000, c.lens[1] = 3333, c.Lq = 2, c.block_size = 256;
        run_case(rng, &c);
        c = base_case(), c.name = "pages of 24 (not a multiple of the 16-key tile), window 2000 + sinks 20";
        c.B = 2, c.lens[0] = 20000, c.lens[1] = 2100, c.Lq = 1, c.block_size = 24, c.p.window_left = 2000,
        c.p.sinks = 20;
        run_case(rng, &c);
        c = base_case(), c.name = "batch 1, 33000 keys, gqa 4, not causal";
        c.B = 1, c.lens[0] = 33000, c.p.causal = 0, c.block_size = 128;
        run_case(rng, &c);
    }
}

/* Bad inputs: each returns its status and writes nothing. */
static void bad_inputs(uint64_t *rng) {
    enum { B = 2, H = 4, HKV = 2, D = 64, BS = 16, NB = 6 };
    buf q = tu_buf_new(LA_F32, 4, (int64_t[]){B, 1, H, D}, false, false);
    buf k = tu_buf_new(LA_BF16, 4, (int64_t[]){NB, BS, HKV, D}, false, false);
    buf o = tu_buf_new(LA_F32, 4, (int64_t[]){B, 1, H, D}, false, false);
    tu_fill(rng, q.t.data, LA_F32, (int64_t)q.elems, -1, 1);
    tu_fill(rng, k.t.data, LA_BF16, (int64_t)k.elems, -1, 1);
    tu_poison(o.t.data, LA_F32, (int64_t)o.elems);
    dev_buf dq = to_device(&q), dk = to_device(&k), dout = to_device(&o);
    void *wide;
    cuda_ok(cudaMalloc(&wide, (size_t)NB * BS * HKV * D * 4 + 64), "cudaMalloc");
    int32_t table[6] = {3, 1, 0, 5, 2, 4}, lens[2] = {40, 17};
    la_context *ctx;
    la_context_create(&ctx, 2);
#define BAD(label, want, ...)                                                                                    \
    do {                                                                                                         \
        la_attention_params p = P();                                                                             \
        la_tensor xq = dq.t, xk = dk.t, xv = dk.t, xo = dout.t;                                                  \
        int32_t tb[6];                                                                                           \
        memcpy(tb, table, sizeof tb);                                                                            \
        la_kv_layout L = {.seqlens_k = lens, .block_table = tb, .blocks_per_seq = 3};                            \
        __VA_ARGS__;                                                                                             \
        la_status s = la_attention_decode(ctx, &p, &xq, &xk, &xv, &L, &xo, NULL);                                \
        cudaDeviceSynchronize();                                                                                 \
        cu_check_rejected(label, s, want, &o, &dout, "out");                                                     \
    } while (0)
    BAD("host pointer in a CUDA tensor", LA_ERR_DEVICE, xk.data = k.t.data);
    BAD("mixed devices (out on the CPU)", LA_ERR_DEVICE, xo = o.t);
    BAD("f32 cache", LA_ERR_UNSUPPORTED, xk.data = xv.data = wide; xk.dtype = xv.dtype = LA_F32);
    BAD("block id past the cache", LA_ERR_SEQLENS, tb[1] = NB);
    BAD("negative block id in use", LA_ERR_SEQLENS, tb[3] = -1);
    BAD("seqlen past the table", LA_ERR_SEQLENS, L.blocks_per_seq = 2; tb[2] = 3; tb[3] = 4);
    BAD("valid call after the bad ones", LA_OK, (void)0);
#undef BAD
    la_context_destroy(ctx);
    cudaFree(wide), cudaFree(dq.mem), cudaFree(dk.mem), cudaFree(dout.mem);
    tu_buf_free(&q), tu_buf_free(&k), tu_buf_free(&o);
}

int main(void) {
    if (!la_cuda_available()) {
        printf("SKIP: %s\n", la_last_error());
        return 77;
    }
    uint64_t rng = tu_seed();
    const char *qe = getenv("LONGATTN_TEST_QUICK");
    quick = qe && *qe && *qe != '0';
    bad_inputs(&rng);
    cases(&rng);
    return tu_finish();
}
