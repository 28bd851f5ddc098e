/* Decode attention (la_attention_decode) against the float64 reference on
 * K/V gathered through the page table: 1 to 4 queries, random page tables,
 * awkward cache lengths, every head dim, GQA ratio, K/V dtype, option and
 * SIMD level; plus bad inputs that must fail without writing. */
#include "attention_ref.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static bool quick;

typedef struct {
    const char *name;
    int64_t B, Lq, H, Hkv, D;
    int64_t cap;          /* contiguous: cache capacity per sequence */
    int64_t block_size;   /* > 0: paged */
    int32_t seqlens[4];   /* keys in use per sequence (B <= 4) */
    la_dtype kv_dt;
    bool alibi, strided_q, with_lse;
    int threads;
    la_attention_params p;
} dc_case;

/* Tolerance |got - want| <= atol + rtol |want|: q is f32 and K/V are exact
 * in their storage dtype in both computations, so only the kernel's f32
 * arithmetic differs: dot products over D <= 512, the vector exp, partial
 * sums merged over chunks of up to ~5k keys. Worst seen ~1e-6 on outputs of
 * size ~0.05; 2e-5 + 2e-4 relative leaves a wide margin. */
#define ATOL 2e-5
#define RTOL 2e-4
#define LSE_ATOL 5e-5

static void run_case(uint64_t *rng, const dc_case *c) {
    const int64_t B = c->B, Lq = c->Lq, H = c->H, Hkv = c->Hkv, D = c->D, G = H / Hkv;
    const bool paged = c->block_size > 0;
    int64_t blocks_per_seq = 0, num_blocks = 0;
    int32_t *table = NULL;
    int64_t kshape[4];
    if (paged) {
        int64_t maxlen = 1;
        for (int b = 0; b < B; b++)
            if (c->seqlens[b] > maxlen) maxlen = c->seqlens[b];
        blocks_per_seq = (maxlen + c->block_size - 1) / c->block_size + 1; /* one spare */
        num_blocks = B * blocks_per_seq + 3;                               /* some never used */
        table = tu_alloc(sizeof(int32_t) * (size_t)(B * blocks_per_seq));
        int32_t *perm = tu_alloc(sizeof(int32_t) * (size_t)num_blocks);
        for (int64_t i = 0; i < num_blocks; i++) perm[i] = (int32_t)i;
        for (int64_t i = num_blocks - 1; i > 0; i--) { /* distinct, shuffled block ids */
            int64_t j = tu_randint(rng, 0, i);
            int32_t t = perm[i];
            perm[i] = perm[j], perm[j] = t;
        }
        for (int64_t i = 0; i < B * blocks_per_seq; i++) table[i] = perm[i];
        free(perm);
        kshape[0] = num_blocks, kshape[1] = c->block_size;
    } else {
        kshape[0] = B, kshape[1] = c->cap;
    }
    kshape[2] = Hkv, kshape[3] = D;
    int64_t kn = kshape[0] * kshape[1] * Hkv * D, qn = B * Lq * H * D;
    void *k = tu_alloc((size_t)kn * la_dtype_size(c->kv_dt)), *v = tu_alloc((size_t)kn * la_dtype_size(c->kv_dt));
    tu_fill(rng, k, c->kv_dt, kn, -1, 1);
    tu_fill(rng, v, c->kv_dt, kn, -1, 1);
    la_tensor tk = la_tensor_contiguous(k, c->kv_dt, 4, kshape), tv = la_tensor_contiguous(v, c->kv_dt, 4, kshape);
    /* q and out optionally as [B, H, Lq, D + 8] memory viewed as [B, Lq, H, D] */
    int64_t row = c->strided_q ? D + 8 : D, qmem = B * Lq * H * row;
    float *q = tu_alloc(sizeof(float) * (size_t)qmem), *out = tu_alloc(sizeof(float) * (size_t)qmem);
    float *lse = tu_alloc(sizeof(float) * (size_t)(B * Lq * H));
    tu_fill(rng, q, LA_F32, qmem, -1, 1);
    la_tensor tq = la_tensor_contiguous(q, LA_F32, 4, (int64_t[]){B, Lq, H, D});
    if (c->strided_q) {
        tq.stride[1] = row, tq.stride[2] = Lq * row, tq.stride[0] = H * Lq * row;
    }
    la_tensor to = tq;
    to.data = out;
    la_tensor tl = la_tensor_contiguous(lse, LA_F32, 3, (int64_t[]){B, Lq, H});
    float slopes[64];
    for (int64_t h = 0; h < H; h++) slopes[h] = (float)tu_uniform(rng, 0.01, 0.2);
    la_attention_params p = c->p;
    if (c->alibi) p.alibi_slopes = slopes;
    la_kv_layout layout = {.seqlens_k = c->seqlens, .block_table = table, .blocks_per_seq = blocks_per_seq};
    const bool sigmoid = p.score == LA_SCORE_SIGMOID, with_lse = c->with_lse && !sigmoid;

    /* reference: gather each sequence's keys through the table */
    double *want = tu_alloc(sizeof(double) * (size_t)qn), *want_lse = tu_alloc(sizeof(double) * (size_t)(B * Lq * H));
    int64_t maxk = 1;
    for (int b = 0; b < B; b++)
        if (c->seqlens[b] > maxk) maxk = c->seqlens[b];
    double *hq = tu_alloc(8 * (size_t)(Lq * D)), *ho = tu_alloc(8 * (size_t)(Lq * D)), *hl = tu_alloc(8 * (size_t)Lq);
    double *hk = tu_alloc(8 * (size_t)(maxk * D)), *hv = tu_alloc(8 * (size_t)(maxk * D));
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++) {
            int64_t lk = c->seqlens[b];
            for (int64_t j = 0; j < lk; j++) {
                int64_t blk = paged ? table[b * blocks_per_seq + j / c->block_size] : b;
                int64_t r = paged ? j % c->block_size : j;
                for (int64_t d = 0; d < D; d++) {
                    int64_t idx[4] = {blk, r, h / G, d};
                    hk[j * D + d] = tu_get(&tk, idx);
                    hv[j * D + d] = tu_get(&tv, idx);
                }
            }
            for (int64_t i = 0; i < Lq; i++)
                for (int64_t d = 0; d < D; d++) hq[i * D + d] = tu_get(&tq, (int64_t[]){b, i, h, d});
            ref_attn_opts o = {.scale = p.scale > 0 ? p.scale : 1 / sqrt((double)D), .causal = p.causal,
                               .window_left = p.window_left, .window_right = p.window_right, .sinks = p.sinks,
                               .softcap = p.softcap, .alibi_slope = c->alibi ? slopes[h] : 0, .sigmoid = sigmoid,
                               .sigmoid_bias = p.sigmoid_bias};
            ref_attention_forward(&o, Lq, lk, D, hq, hk, hv, ho, hl);
            for (int64_t i = 0; i < Lq; i++) {
                memcpy(want + ((b * Lq + i) * H + h) * D, ho + i * D, sizeof(double) * (size_t)D);
                want_lse[(b * Lq + i) * H + h] = hl[i];
            }
        }

    la_context *ctx;
    la_context_create(&ctx, c->threads);
    la_simd levels[LA_SIMD_COUNT];
    int nl = tu_simd_levels(levels);
    for (int li = 0; li < nl; li++) {
        la_context_set_simd(ctx, levels[li]);
        tu_poison(out, LA_F32, qmem);
        tu_poison(lse, LA_F32, B * Lq * H);
        la_status s = la_attention_decode(ctx, &p, &tq, &tk, &tv, paged || c->seqlens[0] >= 0 ? &layout : NULL, &to,
                                          with_lse ? &tl : NULL);
        tu_check(s == LA_OK, "%s [%s]: status %s (%s)", c->name, la_simd_name(levels[li]), la_status_name(s),
                 la_last_error());
        if (s != LA_OK) continue;
        int64_t bad = 0, bad_lse = 0, outside = 0;
        double worst = 0;
        for (int64_t b = 0; b < B; b++)
            for (int64_t i = 0; i < Lq; i++)
                for (int64_t h = 0; h < H; h++) {
                    for (int64_t d = 0; d < D; d++) {
                        double got = tu_get(&to, (int64_t[]){b, i, h, d}), w = want[((b * Lq + i) * H + h) * D + d];
                        if (!tu_close(got, w, ATOL, RTOL)) bad++;
                        if (!isnan(got) && fabs(got - w) > worst) worst = fabs(got - w);
                    }
                    if (with_lse && !tu_close(lse[(b * Lq + i) * H + h], want_lse[(b * Lq + i) * H + h], LSE_ATOL, 1e-6))
                        bad_lse++;
                }
        if (c->strided_q)
            for (int64_t e = 0; e < qmem; e++)
                if (e % row >= D && !isnan(out[e])) outside++;
        tu_check(bad == 0, "%s [%s]: %lld out elements off (worst %.3g)", c->name, la_simd_name(levels[li]),
                 (long long)bad, worst);
        tu_check(bad_lse == 0, "%s [%s]: %lld lse off", c->name, la_simd_name(levels[li]), (long long)bad_lse);
        tu_check(outside == 0, "%s [%s]: %lld writes outside the out view", c->name, la_simd_name(levels[li]),
                 (long long)outside);
    }
    la_context_destroy(ctx);
    free(k), free(v), free(q), free(out), free(lse), free(table), free(want), free(want_lse);
    free(hq), free(ho), free(hl), free(hk), free(hv);
}

static la_attention_params P(void) { return la_attention_params_default(); }

static void cases(uint64_t *rng) {
    static const int64_t dims[] = {8, 40, 64, 80, 128, 256, 512};
    char name[160];
    for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++)
        for (int paged = 0; paged < 2; paged++) {
            dc_case c = {.B = 2, .Lq = 1 + (int64_t)(di % 4), .H = 8, .Hkv = 2, .D = dims[di], .cap = 700,
                         .block_size = paged ? 16 : 0, .seqlens = {613, 97}, .kv_dt = (la_dtype)(di % 3),
                         .with_lse = true, .threads = 2, .p = P()};
            c.p.causal = 1;
            snprintf(name, sizeof name, "D=%lld Lq=%lld %s %s", (long long)c.D, (long long)c.Lq,
                     paged ? "paged16" : "contiguous", la_dtype_name(c.kv_dt));
            c.name = name;
            run_case(rng, &c);
        }
    static const int64_t ratios[] = {1, 4, 8};
    static const int64_t blocks[] = {1, 7, 16};
    for (int ri = 0; ri < 3; ri++)
        for (int bi = 0; bi < 3; bi++) {
            dc_case c = {.B = 3, .Lq = 1 + bi, .Hkv = 2, .H = 2 * ratios[ri], .D = 64, .block_size = blocks[bi],
                         .seqlens = {0, 1, 45}, .kv_dt = LA_BF16, .with_lse = true, .threads = 3, .p = P()};
            c.p.causal = 1;
            snprintf(name, sizeof name, "gqa%lld block %lld, seqlens 0/1/45", (long long)ratios[ri], (long long)blocks[bi]);
            c.name = name;
            run_case(rng, &c);
        }
    dc_case base = {.B = 2, .Lq = 2, .H = 8, .Hkv = 2, .D = 64, .block_size = 16, .seqlens = {300, 129},
                    .kv_dt = LA_F16, .with_lse = true, .threads = 2, .p = P()};
    dc_case c = base;
    c.name = "long cache, many chunks merge";
    c.B = 1, c.seqlens[0] = quick ? 2100 : 5003, c.p.causal = 1, c.block_size = 256, c.kv_dt = LA_F32;
    run_case(rng, &c);
    c = base, c.name = "window + sinks";
    c.p.causal = 1, c.p.window_left = 50, c.p.sinks = 4;
    run_case(rng, &c);
    c = base, c.name = "softcap + alibi";
    c.p.softcap = 6, c.alibi = true, c.p.causal = 1;
    run_case(rng, &c);
    c = base, c.name = "sigmoid";
    c.p.score = LA_SCORE_SIGMOID, c.p.sigmoid_bias = -5, c.p.causal = 1;
    run_case(rng, &c);
    c = base, c.name = "non-causal, window right";
    c.p.window_left = 10, c.p.window_right = 3;
    run_case(rng, &c);
    c = base, c.name = "strided q/out, no lse, 1 thread";
    c.strided_q = true, c.with_lse = false, c.threads = 1, c.p.causal = 1;
    run_case(rng, &c);
    c = base, c.name = "contiguous cache with capacity > seqlen";
    c.block_size = 0, c.cap = 333, c.seqlens[0] = 333, c.seqlens[1] = 5, c.p.causal = 1;
    run_case(rng, &c);
    c = base, c.name = "Lq 4 > seqlen 2 (rows that see nothing)";
    c.Lq = 4, c.seqlens[0] = 2, c.seqlens[1] = 0, c.p.causal = 1;
    run_case(rng, &c);
}

static void bad_inputs(uint64_t *rng) {
    enum { B = 2, H = 4, HKV = 2, D = 32, NB = 6, BS = 8 };
    static float q[B * H * D], out[B * H * D], k[NB * BS * HKV * D], v[NB * BS * HKV * D];
    static uint16_t kh[NB * BS * HKV * D];
    tu_fill(rng, q, LA_F32, B * H * D, -1, 1);
    tu_fill(rng, k, LA_F32, NB * BS * HKV * D, -1, 1);
    tu_fill(rng, v, LA_F32, NB * BS * HKV * D, -1, 1);
    const la_tensor tq = la_tensor_contiguous(q, LA_F32, 4, (int64_t[]){B, 1, H, D});
    const la_tensor to = la_tensor_contiguous(out, LA_F32, 4, (int64_t[]){B, 1, H, D});
    const la_tensor tk = la_tensor_contiguous(k, LA_F32, 4, (int64_t[]){NB, BS, HKV, D});
    const la_tensor tv = la_tensor_contiguous(v, LA_F32, 4, (int64_t[]){NB, BS, HKV, D});
    int32_t table[B * 3] = {0, 1, 2, 3, 4, 5}, table_bad[B * 3] = {0, 1, 2, 3, 9, 5}, lens[B] = {20, 17},
            lens_past[B] = {20, 25}, lens_neg[B] = {-1, 3};
    la_context *ctx;
    la_context_create(&ctx, 2);
#define DBAD(label, want, ...)                                                                      \
    do {                                                                                            \
        la_attention_params p = P();                                                                \
        la_kv_layout L = {.seqlens_k = lens, .block_table = table, .blocks_per_seq = 3};            \
        la_tensor xq = tq, xk = tk, xv = tv, xo = to;                                               \
        la_kv_layout *pL = &L;                                                                      \
        __VA_ARGS__;                                                                                \
        tu_poison(out, LA_F32, B * H * D);                                                          \
        la_status s = la_attention_decode(ctx, &p, &xq, &xk, &xv, pL, &xo, NULL);                   \
        tu_check(s == (want), "decode bad input '%s': got %s (%s), want %s", label, la_status_name(s), \
                 la_last_error(), la_status_name(want));                                            \
        bool untouched = true;                                                                      \
        for (int i = 0; i < B * H * D; i++) untouched &= isnan(out[i]);                             \
        tu_check(s == LA_OK || untouched, "decode bad input '%s' wrote to out", label);             \
    } while (0)
    DBAD("valid paged call", LA_OK, (void)0);
    DBAD("block id out of range", LA_ERR_SEQLENS, L.block_table = table_bad);
    DBAD("seqlen past capacity", LA_ERR_SEQLENS, L.seqlens_k = lens_past);
    DBAD("negative seqlen", LA_ERR_SEQLENS, L.seqlens_k = lens_neg);
    DBAD("paged without seqlens", LA_ERR_NULL, L.seqlens_k = NULL);
    DBAD("blocks_per_seq 0", LA_ERR_ARGUMENT, L.blocks_per_seq = 0);
    DBAD("blocks_per_seq without table", LA_ERR_ARGUMENT, L.block_table = NULL);
    DBAD("cu_seqlens set", LA_ERR_ARGUMENT, p.cu_seqlens_q = lens);
    DBAD("q not f32", LA_ERR_DTYPE, xq.dtype = LA_BF16);
    DBAD("k/v dtype mismatch", LA_ERR_DTYPE, xk.data = kh; xk.dtype = LA_F16);
    DBAD("head dim 12", LA_ERR_UNSUPPORTED, xq.shape[3] = 12; xo.shape[3] = 12; xk.shape[3] = 12; xv.shape[3] = 12);
    DBAD("H not a multiple of Hkv", LA_ERR_SHAPE, xq.shape[2] = 3; xo.shape[2] = 3);
    DBAD("contiguous batch mismatch", LA_ERR_SHAPE, pL = NULL);
    DBAD("out shape", LA_ERR_SHAPE, xo.shape[1] = 2);
    DBAD("window right with causal", LA_ERR_ARGUMENT, p.causal = 1; p.window_right = 2);
    DBAD("null k", LA_ERR_NULL, xk.data = NULL);
    la_tensor tl = la_tensor_contiguous(out, LA_F32, 3, (int64_t[]){B, 1, H});
    la_attention_params ps = P();
    ps.score = LA_SCORE_SIGMOID;
    la_kv_layout L = {.seqlens_k = lens, .block_table = table, .blocks_per_seq = 3};
    TU_EXPECT_STATUS(la_attention_decode(ctx, &ps, &tq, &tk, &tv, &L, (la_tensor *)&to, &tl), LA_ERR_ARGUMENT);
    la_context_destroy(ctx);
}

int main(void) {
    uint64_t rng = tu_seed();
    const char *qe = getenv("LONGATTN_TEST_QUICK");
    quick = qe && *qe && *qe != '0';
    cases(&rng);
    bad_inputs(&rng);
    return tu_finish();
}
