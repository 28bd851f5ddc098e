/* Decode attention (la_attention_decode) against the float64 reference on
 * K/V gathered through the page table: 1 to 4 queries, random page tables,
 * awkward cache lengths, every head dim, GQA ratio, K/V dtype, option and
 * SIMD level (the cases and their checks are in decode_case.c, run by the
 * case harness); plus bad inputs that must fail without writing. */
#include "cases.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static bool quick;
static harness_list list;

typedef attn_decode_spec dc_case;

static void add_case(const dc_case *c) { harness_add(&list, attn_decode_case(c)); }

static la_attention_params P(void) { return la_attention_params_default(); }

static void cases(void) {
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
            add_case(&c);
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
            add_case(&c);
        }
    dc_case base = {.B = 2, .Lq = 2, .H = 8, .Hkv = 2, .D = 64, .block_size = 16, .seqlens = {300, 129},
                    .kv_dt = LA_F16, .with_lse = true, .threads = 2, .p = P()};
    dc_case c = base;
    c.name = "long cache, many chunks merge";
    c.B = 1, c.seqlens[0] = quick ? 2100 : 5003, c.p.causal = 1, c.block_size = 256, c.kv_dt = LA_F32;
    add_case(&c);
    c = base, c.name = "window + sinks";
    c.p.causal = 1, c.p.window_left = 50, c.p.sinks = 4;
    add_case(&c);
    c = base, c.name = "softcap + alibi";
    c.p.softcap = 6, c.alibi = true, c.p.causal = 1;
    add_case(&c);
    c = base, c.name = "sigmoid";
    c.p.score = LA_SCORE_SIGMOID, c.p.sigmoid_bias = -5, c.p.causal = 1;
    add_case(&c);
    c = base, c.name = "non-causal, window right";
    c.p.window_left = 10, c.p.window_right = 3;
    add_case(&c);
    c = base, c.name = "strided q/out, no lse, 1 thread";
    c.strided_q = true, c.with_lse = false, c.threads = 1, c.p.causal = 1;
    add_case(&c);
    c = base, c.name = "contiguous cache with capacity > seqlen";
    c.block_size = 0, c.cap = 333, c.seqlens[0] = 333, c.seqlens[1] = 5, c.p.causal = 1;
    add_case(&c);
    c = base, c.name = "Lq 4 > seqlen 2 (rows that see nothing)";
    c.Lq = 4, c.seqlens[0] = 2, c.seqlens[1] = 0, c.p.causal = 1;
    add_case(&c);
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
    cases();
    harness_check(&list, &rng);
    harness_list_free(&list);
    bad_inputs(&rng);
    return tu_finish();
}
