/* Quantised KV pages: the storage format the cache writes (src/kv) and the
 * decode kernel reads (src/cpu/kvquant), and the decode problem over them.
 *
 * Each (layer, K or V, KV head, sequence) of a quantised la_kv_cache holds
 * its entries in two parts: slots [0, qlen) in quantised pages, slots
 * [qlen, len) in an f32 window (the recent tokens, KIVI's residual).
 * qlen is a multiple of the key group.
 *
 * Codes are unsigned, asymmetric (x = zero + scale * code; code in [0, 255]
 * for int8, [0, 15] for int4), scales and zeros f16:
 *  - K page: codes, key_group * code_row bytes per key group of the page,
 *    channel-major within the group (element (d, t) of the group's token t
 *    at index d * key_group + t: la_kvq_key_codes), then per key group
 *    (key_group tokens) scale[D] and zero[D]: one pair per channel, over
 *    the group's tokens (KIVI's per-channel keys). Channel-major because
 *    the scales are per channel: q.k puts the group's tokens in the lanes
 *    and multiplies a channel's codes by one broadcast query element (no
 *    lane-sum tree per key), and compaction moves whole groups as they are.
 *  - V page: codes [page_size][code_row], then per token [D / value_group]
 *    pairs (scale, zero): one per group of value_group channels of the
 *    token (per-token values).
 * int4 packs element 2i of a V row or of a key group's index in the low
 * nibble of byte i, 2i + 1 in the high one.
 * Key groups never cross a page (key_group divides page_size). */
#ifndef LA_BACKEND_KVQ_PROBLEM_H
#define LA_BACKEND_KVQ_PROBLEM_H

#include "backend/attention_problem.h"

typedef struct {
    int bits;                      /* 8 or 4 */
    int64_t D, page_size, key_group, value_group;
    size_t code_row;               /* bytes of one row of codes: D or D / 2 */
    size_t k_page, v_page;         /* bytes of one K / V page, codes and scales */
    int64_t window_rows;           /* f32 rows in one (head, sequence)'s window */
} la_kvq_format;

/* Code i of a packed run (a V row, or a key group's channel-major codes):
 * the byte for int8, else the low (even i) or high (odd i) nibble. */
static inline int la_kvq_code(const uint8_t *codes, int bits, int64_t i) {
    return bits == 8 ? codes[i] : i % 2 ? codes[i / 2] >> 4 : codes[i / 2] & 15;
}
/* The codes of key group g of a K page: [D][key_group], channel-major. */
static inline const uint8_t *la_kvq_key_codes(const la_kvq_format *f, const char *page, int64_t g) {
    return (const uint8_t *)page + (size_t)(g * f->key_group) * f->code_row;
}
/* The (scale, zero) pairs of key group g of a K page: scale[D] then zero[D]. */
static inline const uint16_t *la_kvq_key_scales(const la_kvq_format *f, const char *page, int64_t g) {
    return (const uint16_t *)(page + f->code_row * (size_t)f->page_size) + g * 2 * f->D;
}
/* The (scale, zero) pairs of token t of a V page, D / value_group of them. */
static inline const uint16_t *la_kvq_value_scales(const la_kvq_format *f, const char *page, int64_t t) {
    return (const uint16_t *)(page + f->code_row * (size_t)f->page_size) + t * 2 * (f->D / f->value_group);
}

/* One layer of a quantised cache: region r = head * region_seqs + seq holds
 * K pages at k + r * k_region, V pages at v + r * v_region, window rows at
 * wk/wv + r * window_rows * D, and len[r] entries of which qlen[r] are
 * quantised. */
typedef struct {
    la_kvq_format f;
    const char *k, *v;
    size_t k_region, v_region;
    const float *wk, *wv;
    const int32_t *len, *qlen;
    int64_t region_seqs;
    /* q.k in f32 (the cache's quant_exact_queries); else, where the CPU has
     * AVX512-VNNI and AVX512-VBMI, with the scaled query rounded to int8
     * per (row, key group) (src/cpu/kvquant/kvq_decode_isa.c) */
    bool exact_queries;
} la_kvq_layer;

/* Decode over sequences [seq0, seq0 + num_seqs) of one layer: q and out
 * [num_seqs, Lq, H, D] (out f32, lse f32 [num_seqs, Lq, H] or absent); each
 * query row of KV head hk (heads hk * H / Hkv ...) attends the entries of
 * (hk, seq), causal bottom-right when `causal` (row i of Lq sees slots
 * below len - Lq + i + 1), with scores scale * q . k and softmax. */
typedef struct {
    la_kvq_layer kv;
    int64_t seq0, num_seqs, Lq, H, Hkv;
    float scale;
    bool causal;
    la_attn_operand q, out, lse;
    la_simd simd;
    int threads;
} la_kvq_decode_problem;

#endif
