/* la_attention_kv_append on the CPU: every (new, cache) dtype pair,
 * contiguous and paged caches with shuffled block tables, 0 to 33 new rows,
 * strided new rows; the cache afterwards must equal the one built from the
 * definition byte for byte (new rows rounded to the cache's dtype, every
 * other element still poison). Then appending a sequence in pieces and
 * decoding over the cache equals decoding over a cache written directly;
 * and bad inputs fail with their status, a message, and nothing written. */
#include "kv_append_cases.h"
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void random_cases(uint64_t *rng, la_context *ctx) {
    kva_spec specs[64];
    const int n = kva_specs(specs, 64);
    for (int i = 0; i < n; i++) {
        kva_case c;
        kva_build(rng, &specs[i], &c);
        la_status s = la_attention_kv_append(ctx, &c.layout, &c.k_new.t, &c.v_new.t, &c.k_cache.t, &c.v_cache.t);
        tu_check(s == LA_OK, "case %d: %s", i, la_last_error());
        tu_check(kva_same(&c.k_cache, &c.k_want) && kva_same(&c.v_cache, &c.v_want),
                 "case %d (B=%lld n=%lld D=%lld page %lld, %s -> %s): cache differs from the definition", i,
                 (long long)c.s.B, (long long)c.s.n, (long long)c.s.D, (long long)c.s.block_size,
                 la_dtype_name(c.s.new_dt), la_dtype_name(c.s.cache_dt));
        kva_free(&c);
    }
}

/* A sequence appended in pieces of 1, 5 and 64 rows, then decoded: equal
 * (bit for bit) to decoding the same rows written in one append. */
static void pieces_then_decode(uint64_t *rng, la_context *ctx) {
    enum { L = 150, HKV = 2, H = 4, D = 64, PAGE = 16, BPS = (L + PAGE - 1) / PAGE };
    tu_buf kall = tu_buf_new(LA_F32, 4, (int64_t[]){1, L, HKV, D}, false, false);
    tu_buf vall = tu_buf_new(LA_F32, 4, (int64_t[]){1, L, HKV, D}, false, false);
    tu_fill(rng, kall.t.data, LA_F32, (int64_t)kall.elems, -1, 1);
    tu_fill(rng, vall.t.data, LA_F32, (int64_t)vall.elems, -1, 1);
    tu_buf kc[2], vc[2];
    int32_t table[BPS];
    for (int i = 0; i < BPS; i++) table[i] = BPS - 1 - i;
    for (int w = 0; w < 2; w++) {
        kc[w] = tu_buf_new(LA_F16, 4, (int64_t[]){BPS, PAGE, HKV, D}, false, false);
        vc[w] = tu_buf_new(LA_F16, 4, (int64_t[]){BPS, PAGE, HKV, D}, false, false);
        tu_buf_poison(&kc[w]), tu_buf_poison(&vc[w]);
        int32_t len = 0;
        la_kv_layout lay = {.seqlens_k = &len, .block_table = table, .blocks_per_seq = BPS};
        const int64_t pieces[2][4] = {{L, 0, 0, 0}, {1, 5, 64, L - 70}};
        for (int p = 0; p < 4 && pieces[w][p]; p++) {
            la_tensor kn = kall.t, vn = vall.t;
            kn.shape[1] = vn.shape[1] = pieces[w][p];
            kn.data = (float *)kall.t.data + (int64_t)len * HKV * D;
            vn.data = (float *)vall.t.data + (int64_t)len * HKV * D;
            la_status s = la_attention_kv_append(ctx, &lay, &kn, &vn, &kc[w].t, &vc[w].t);
            tu_check(s == LA_OK, "append piece %d: %s", p, la_last_error());
            len += (int32_t)pieces[w][p];
        }
    }
    tu_check(kva_same(&kc[0], &kc[1]) && kva_same(&vc[0], &vc[1]), "appending in pieces differs from one append");
    tu_buf q = tu_buf_new(LA_F32, 4, (int64_t[]){1, 1, H, D}, false, false);
    tu_fill(rng, q.t.data, LA_F32, (int64_t)q.elems, -1, 1);
    float got[2][H * D];
    for (int w = 0; w < 2; w++) {
        int32_t len = L;
        la_kv_layout lay = {.seqlens_k = &len, .block_table = table, .blocks_per_seq = BPS};
        la_tensor out = la_tensor_contiguous(got[w], LA_F32, 4, (int64_t[]){1, 1, H, D});
        la_attention_params p = la_attention_params_default();
        la_status s = la_attention_decode(ctx, &p, &q.t, &kc[w].t, &vc[w].t, &lay, &out, NULL);
        tu_check(s == LA_OK, "decode: %s", la_last_error());
    }
    tu_check(memcmp(got[0], got[1], sizeof got[0]) == 0, "decode over the pieces' cache differs");
    for (int w = 0; w < 2; w++) tu_buf_free(&kc[w]), tu_buf_free(&vc[w]);
    tu_buf_free(&kall), tu_buf_free(&vall), tu_buf_free(&q);
}

static void bad_inputs(uint64_t *rng, la_context *ctx) {
    kva_spec spec = {.B = 2, .n = 3, .Hkv = 2, .D = 16, .block_size = 4, .blocks_per_seq = 3,
                     .new_dt = LA_F32, .cache_dt = LA_F16};
    kva_case c;
    kva_build(rng, &spec, &c);
#define BAD(label, want, ...)                                                                                 \
    do {                                                                                                      \
        la_kv_layout lay = c.layout;                                                                          \
        la_tensor kn = c.k_new.t, vn = c.v_new.t, kc = c.k_cache.t, vc = c.v_cache.t;                         \
        la_context *cx = ctx;                                                                                 \
        int32_t lens[2] = {c.seqlens[0], c.seqlens[1]};                                                       \
        lay.seqlens_k = lens;                                                                                 \
        __VA_ARGS__;                                                                                          \
        la_status s = la_attention_kv_append(cx, lay.seqlens_k == (void *)1 ? NULL : &lay, &kn, &vn, &kc, &vc); \
        tu_check(s == (want), "bad input '%s': got %s (%s), want %s", label, la_status_name(s), la_last_error(), \
                 la_status_name(want));                                                                       \
        tu_check(strlen(la_last_error()) > 5, "bad input '%s' has no message", label);                        \
        tu_check(tu_buf_all_poisoned(&c.k_cache) && tu_buf_all_poisoned(&c.v_cache), "bad input '%s' wrote", label); \
        printf("bad input %-40s -> %s: %s\n", label, la_status_name(s), la_last_error());                     \
    } while (0)
    BAD("NULL context", LA_ERR_NULL, cx = NULL);
    BAD("NULL layout", LA_ERR_NULL, lay.seqlens_k = (void *)1);
    BAD("NULL seqlens_k", LA_ERR_NULL, lay.seqlens_k = NULL);
    BAD("blocks_per_seq without a table", LA_ERR_ARGUMENT, lay.block_table = NULL);
    BAD("blocks_per_seq 0", LA_ERR_ARGUMENT, lay.blocks_per_seq = 0);
    BAD("length + n past capacity", LA_ERR_SEQLENS, lens[1] = 10);
    BAD("negative length", LA_ERR_SEQLENS, lens[0] = -1);
    int32_t bad_table[6] = {0, 1, 99, 3, 4, 5};
    BAD("block id out of range", LA_ERR_SEQLENS, lens[0] = 8; lay.block_table = bad_table);
    int32_t shared[6] = {0, 1, 2, 0, 1, 2};
    BAD("block shared by two tables", LA_ERR_ARGUMENT, lens[0] = lens[1] = 0; lay.block_table = shared);
    BAD("v_cache dtype differs from k_cache", LA_ERR_DTYPE, vc.dtype = LA_BF16);
    BAD("k_new / v_new shapes differ", LA_ERR_SHAPE, vn.shape[3] = 8);
    BAD("head dim differs from the cache", LA_ERR_SHAPE, kn.shape[3] = vn.shape[3] = 8);
    BAD("k_cache and v_cache strides differ", LA_ERR_SHAPE, vc.stride[0] = vc.stride[0] * 2; vc.shape[0] = 1);
    BAD("3-D new rows", LA_ERR_SHAPE, kn.ndim = 3);
    BAD("cache overlapping the new rows", LA_ERR_ARGUMENT, kn = c.k_cache.t; kn.shape[0] = 2; kn.shape[1] = 3);
    la_tensor big = c.k_new.t;
    big.shape[1] = INT64_MAX / 4;
    BAD("overflowing new rows", LA_ERR_OVERFLOW, kn = vn = big);
#undef BAD
    kva_free(&c);
}

int main(void) {
    uint64_t rng = tu_seed();
    la_context *ctx;
    if (la_context_create(&ctx, 2)) return 1;
    random_cases(&rng, ctx);
    pieces_then_decode(&rng, ctx);
    bad_inputs(&rng, ctx);
    la_context_destroy(ctx);
    return tu_finish();
}
