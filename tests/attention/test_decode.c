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
    /* head-major K/V (the KV cache's layout): blocks read in place, a copy
     * where a block crosses a page or ends short; awkward page sizes and
     * lengths (1, page - 1, page + 1, none a multiple of any tile), query
     * rows per K/V head 1, 3, 5, 8 (groups of 4 and a remainder) */
    static const struct { int64_t H, Hkv, Lq, D, bs; la_dtype t; } hm[] = {
        {6, 2, 1, 64, 16, LA_F16},  {8, 2, 2, 128, 17, LA_F32}, {10, 2, 1, 64, 15, LA_BF16},
        {3, 3, 1, 128, 0, LA_F16},  {12, 4, 1, 40, 7, LA_F16},  {4, 1, 2, 64, 1, LA_F32},
        {9, 3, 1, 64, 256, LA_F16}, {16, 2, 1, 128, 32, LA_BF16}};
    for (size_t i = 0; i < sizeof hm / sizeof hm[0]; i++) {
        dc_case c = {.B = 4, .Lq = hm[i].Lq, .H = hm[i].H, .Hkv = hm[i].Hkv, .D = hm[i].D, .cap = 700,
                     .block_size = hm[i].bs, .seqlens = {1, 15, 17, quick ? 333 : 613}, .kv_dt = hm[i].t,
                     .head_major = true, .with_lse = true, .threads = 1 + (int)(i % 3), .p = P()};
        c.p.causal = 1;
        snprintf(name, sizeof name, "head-major H=%lld Hkv=%lld Lq=%lld D=%lld block %lld %s", (long long)c.H,
                 (long long)c.Hkv, (long long)c.Lq, (long long)c.D, (long long)c.block_size, la_dtype_name(c.kv_dt));
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
    c = base, c.name = "window + sinks, head-major";
    c.p.causal = 1, c.p.window_left = 50, c.p.sinks = 4, c.head_major = true;
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

/* One logical cache [L][Hkv][D] (raw elements of es bytes in src) laid out
 * flat or in pages of bs tokens (identity table), token-major ([.., Hkv, D])
 * or head-major ([Hkv][..][D]). */
typedef struct {
    char *mem;
    la_tensor t;
    int32_t *table;
    int64_t nb;
} lay_buf;

static bool make_layout(lay_buf *o, const char *src, la_dtype dt, int64_t L, int64_t Hkv, int64_t D, int64_t bs,
                        bool head_major) {
    const size_t es = la_dtype_size(dt);
    const int64_t rows = bs ? bs : L, nb = bs ? (L + bs - 1) / bs : 1;
    o->nb = nb;
    o->mem = calloc((size_t)(nb * rows * Hkv * D), es);
    o->table = malloc(sizeof(int32_t) * (size_t)nb);
    if (!o->mem || !o->table) return false;
    for (int64_t i = 0; i < nb; i++) o->table[i] = (int32_t)i;
    o->t = la_tensor_contiguous(o->mem, dt, 4, (int64_t[]){nb, rows, Hkv, D});
    if (head_major) {
        const int64_t st[4] = {rows * D, D, nb * rows * D, 1};
        memcpy(o->t.stride, st, sizeof st);
    }
    for (int64_t t = 0; t < L; t++)
        for (int64_t h = 0; h < Hkv; h++) {
            const int64_t at = (t / rows) * o->t.stride[0] + (t % rows) * o->t.stride[1] + h * o->t.stride[2];
            memcpy(o->mem + (size_t)at * es, src + (size_t)((t * Hkv + h) * D) * es, (size_t)D * es);
        }
    return true;
}

/* The decode's result depends on the keys' positions only: the same cache
 * in every layout (flat or paged by 7, 16 or 32, token- or head-major, so
 * blocks read in place, copied, or split by a page) and any thread count
 * gives the same bits. */
static void layouts_agree(uint64_t *rng) {
    const int64_t H = 12, Hkv = 3, D = 64, Lq = 2, L = quick ? 203 : 613;
    static const la_dtype types[] = {LA_F32, LA_F16, LA_BF16};
    static const struct { int64_t bs; bool hm; } lays[] = {{0, false}, {0, true}, {7, true}, {16, true}, {32, false}, {7, false}};
    enum { NL = sizeof lays / sizeof lays[0] };
    float *q = malloc(sizeof(float) * (size_t)(Lq * H * D)), *out = malloc(sizeof(float) * (size_t)(Lq * H * D) * NL * 2);
    float *lse = malloc(sizeof(float) * (size_t)(Lq * H) * NL * 2);
    char *k = malloc(sizeof(float) * (size_t)(L * Hkv * D)), *v = malloc(sizeof(float) * (size_t)(L * Hkv * D));
    la_context *ctx;
    la_context_create(&ctx, 1);
    tu_check(q && out && lse && k && v && ctx, "layouts agree: allocations");
    for (int lv = 0; lv < LA_SIMD_COUNT * 3 && q && out && lse && k && v && ctx; lv++) {
        if (la_context_set_simd(ctx, (la_simd)(lv / 3)) != LA_OK) continue; /* a level this CPU lacks */
        const la_dtype dt = types[lv % 3];
        tu_fill(rng, q, LA_F32, Lq * H * D, -1, 1);
        tu_fill(rng, k, dt, L * Hkv * D, -1, 1);
        tu_fill(rng, v, dt, L * Hkv * D, -1, 1);
        int32_t len = (int32_t)L;
        la_attention_params p = P();
        p.causal = 1;
        const la_tensor tq = la_tensor_contiguous(q, LA_F32, 4, (int64_t[]){1, Lq, H, D});
        int n = 0;
        for (int li = 0; li < NL; li++) {
            lay_buf kb = {0}, vb = {0};
            if (make_layout(&kb, k, dt, L, Hkv, D, lays[li].bs, lays[li].hm) &&
                make_layout(&vb, v, dt, L, Hkv, D, lays[li].bs, lays[li].hm))
                for (int threads = 1; threads <= 2; threads++, n++) {
                    float *o = out + (size_t)n * (size_t)(Lq * H * D), *l = lse + (size_t)n * (size_t)(Lq * H);
                    tu_poison(o, LA_F32, Lq * H * D);
                    tu_poison(l, LA_F32, Lq * H);
                    la_tensor to = la_tensor_contiguous(o, LA_F32, 4, (int64_t[]){1, Lq, H, D});
                    la_tensor tl = la_tensor_contiguous(l, LA_F32, 3, (int64_t[]){1, Lq, H});
                    la_kv_layout lay = {.seqlens_k = &len, .block_table = lays[li].bs ? kb.table : NULL,
                                        .blocks_per_seq = lays[li].bs ? kb.nb : 0};
                    la_context_set_threads(ctx, threads);
                    la_status st = la_attention_decode(ctx, &p, &tq, &kb.t, &vb.t, &lay, &to, &tl);
                    tu_check(st == LA_OK, "layouts agree %s simd %d: layout %d threads %d: %s", la_dtype_name(dt),
                             lv / 3, li, threads, la_last_error());
                    /* exact: the same bits as the flat token-major call */
                    tu_check(!memcmp(o, out, sizeof(float) * (size_t)(Lq * H * D)) &&
                                 !memcmp(l, lse, sizeof(float) * (size_t)(Lq * H)),
                             "layouts agree %s simd %d: layout %d (block %lld, %s) threads %d differs from flat "
                             "token-major",
                             la_dtype_name(dt), lv / 3, li, (long long)lays[li].bs, lays[li].hm ? "head-major" : "token-major",
                             threads);
                }
            free(kb.mem), free(kb.table), free(vb.mem), free(vb.table);
        }
    }
    la_context_destroy(ctx);
    free(q), free(out), free(lse), free(k), free(v);
}

int main(void) {
    uint64_t rng = tu_seed();
    const char *qe = getenv("LONGATTN_TEST_QUICK");
    quick = qe && *qe && *qe != '0';
    cases();
    harness_check(&list, &rng);
    harness_list_free(&list);
    bad_inputs(&rng);
    layouts_agree(&rng);
    return tu_finish();
}
