/* The block index as 64-key tile lists (sparse_tiles.h): one pass over each
 * row's blocks and columns, merged in key order, then (transposed) a
 * counting sort of the same tiles by key tile. */
#include "cuda/attention/sparse_tiles.h"

#include <stdlib.h>
#include <string.h>

/* Tiles of one row at most: a block of bs keys meets ceil(bs / 64) + 1
 * tiles, a column one; never more than the sequence's tiles. */
static int64_t row_bound(int64_t blocks, int64_t cols, int64_t bs, int64_t lk) {
    const int64_t span = bs < lk ? bs : lk, per = (span + LA_SPARSE_TILE - 1) / LA_SPARSE_TILE + 1;
    const int64_t tiles = (lk + LA_SPARSE_TILE - 1) / LA_SPARSE_TILE;
    const int64_t n = blocks * per + cols;
    return n < tiles ? n : tiles;
}

static int64_t row_cols(const la_block_list *x, int64_t r) {
    return x->col_offsets ? x->col_offsets[r + 1] - x->col_offsets[r] : 0;
}

int64_t la_sparse_tiles_bound(const la_block_list *x, const la_attn_problem *p) {
    int64_t n = 0;
    const int64_t per_seq = p->H * x->q_blocks;
    for (int64_t b = 0; b < p->num_seqs; b++) {
        int64_t q0, lq, k0, lk;
        la_attn_seq(p, b, &q0, &lq, &k0, &lk);
        for (int64_t r = b * per_seq; r < (b + 1) * per_seq; r++)
            n += row_bound(x->offsets[r + 1] - x->offsets[r], row_cols(x, r), x->block_size, lk);
    }
    return n;
}

/* Append keys [a, e) to the row's tiles (ending at *n): the last tile's
 * mask grows when the range starts inside it (ranges come in key order). */
static void add_range(la_sparse_tile *t, int64_t first, int64_t *n, int64_t a, int64_t e) {
    while (a < e) {
        const int64_t kt = a / LA_SPARSE_TILE, lo = a - kt * LA_SPARSE_TILE;
        const int64_t hi = e - kt * LA_SPARSE_TILE < LA_SPARSE_TILE ? e - kt * LA_SPARSE_TILE : LA_SPARSE_TILE;
        const uint64_t bits = (hi - lo == 64 ? ~0ull : ((1ull << (hi - lo)) - 1)) << lo;
        if (*n > first && t[*n - 1].tile == kt) t[*n - 1].keep |= bits;
        else t[(*n)++] = (la_sparse_tile){.keep = bits, .tile = (int32_t)kt, .head = 0};
        a = (kt + 1) * LA_SPARSE_TILE;
    }
}

void la_sparse_tile_cache_free(la_sparse_tile_cache *cache) {
    free(cache->mem);
    cache->mem = NULL, cache->bytes = 0;
}

static size_t round64(size_t n) { return (n + 63) & ~(size_t)63; }

/* The transposition's write-combining: each bucket's tiles are staged WC
 * at a time (one cache line) in a small contiguous buffer and then copied
 * out together. Writing each tile straight to its bucket touched a
 * different page per tile (buckets lie a list apart): 4M tiles, 32K
 * non-causal complete, took 170 ms that way on this host (loaded 2-core
 * VM, 2026-12-03). */
enum { WC = 4 };

la_status la_sparse_tiles_build(const la_block_list *x, const la_attn_problem *p, bool transposed,
                                la_sparse_tile_cache *cache, la_sparse_tile_lists *out) {
    memset(out, 0, sizeof *out);
    if (x->q_blocks > INT32_MAX)
        return la_fail(LA_ERR_UNSUPPORTED, "%lld query blocks: the CUDA block-sparse kernels with extra columns (and "
                       "the backward) take up to 2^31 - 1", (long long)x->q_blocks);
    const int64_t rows = p->num_seqs * p->H * x->q_blocks, per_seq = p->H * x->q_blocks, bs = x->block_size;
    const int64_t bound = la_sparse_tiles_bound(x, p), kt_seq = (p->Lk + LA_SPARSE_TILE - 1) / LA_SPARSE_TILE;
    const int64_t G = p->H / p->Hkv, buckets = p->num_seqs * p->Hkv * kt_seq;
    /* q_off, q_tiles, then (transposed) k_off, k_tiles and the fill counters */
    const size_t q_bytes = round64(sizeof(int64_t) * (size_t)(rows + 1)), t_bytes = round64(sizeof(la_sparse_tile) * (size_t)bound);
    const size_t k_bytes = round64(sizeof(int64_t) * (size_t)(buckets + 1));
    const size_t w_bytes = round64(sizeof(la_sparse_tile) * WC * (size_t)kt_seq + sizeof(int) * (size_t)kt_seq);
    const size_t need = q_bytes + t_bytes + (transposed ? 2 * k_bytes + t_bytes + w_bytes : 0);
    if (cache->bytes < need) {
        la_sparse_tile_cache_free(cache);
        if (!(cache->mem = malloc(need)))
            return la_fail(LA_ERR_NOMEM, "no host memory for the block index's tile lists (%zu bytes)", need);
        cache->bytes = need;
    }
    char *m = cache->mem;
    out->rows = rows, out->k_tiles_per_seq = kt_seq;
    out->q_off = (int64_t *)m, out->q_tiles = (la_sparse_tile *)(m + q_bytes);
    int64_t n = 0;
    out->q_off[0] = 0;
    for (int64_t r = 0; r < rows; r++) {
        int64_t q0, lq, k0, lk;
        la_attn_seq(p, r / per_seq, &q0, &lq, &k0, &lk);
        int64_t nb, nc;
        const int32_t *ids = la_block_list_row(x, p->H, r / per_seq, r / x->q_blocks % p->H, r % x->q_blocks, &nb);
        const int32_t *cols = la_block_list_cols(x, p->H, r / per_seq, r / x->q_blocks % p->H, r % x->q_blocks, &nc);
        const int64_t first = n;
        for (int64_t i = 0, c = 0; i < nb || c < nc;) {
            if (c < nc && (i >= nb || cols[c] < (int64_t)ids[i] * bs)) {
                /* a column before block i: inside block i - 1 (listed) or in
                 * an unlisted block */
                const int64_t col = cols[c++];
                if (!(i > 0 && col / bs == ids[i - 1])) add_range(out->q_tiles, first, &n, col, col + 1);
            } else {
                const int64_t k = (int64_t)ids[i++] * bs;
                add_range(out->q_tiles, first, &n, k, k + bs < lk ? k + bs : lk);
            }
        }
        out->q_off[r + 1] = n;
    }
    if (!transposed) return LA_OK;

    out->k_off = (int64_t *)(m + q_bytes + t_bytes), out->k_tiles = (la_sparse_tile *)(m + q_bytes + t_bytes + k_bytes);
    int64_t *fill = (int64_t *)(m + q_bytes + 2 * t_bytes + k_bytes);
    la_sparse_tile *wc = (la_sparse_tile *)(m + q_bytes + 2 * t_bytes + 2 * k_bytes);
    int *wn = (int *)(wc + WC * kt_seq);
    memset(out->k_off, 0, sizeof(int64_t) * (size_t)(buckets + 1));
    /* row (b, h, qb)'s tile t goes to bucket (b * Hkv + h / G) * kt_seq + t;
     * rows in order (head, then query block, within each bucket); the
     * divisions stay out of the per-tile loops (they cost more than the
     * rest there) */
    for (int pass = 0; pass < 2; pass++) {
        int64_t r = 0;
        for (int64_t b = 0; b < p->num_seqs; b++)
            for (int64_t h = 0; h < p->H; h++) {
                int64_t *cnt = (pass ? fill : out->k_off + 1) + (b * p->Hkv + h / G) * kt_seq;
                const int32_t gi = (int32_t)(h % G);
                if (pass && gi == 0) memset(wn, 0, sizeof(int) * (size_t)kt_seq);
                for (int64_t qb = 0; qb < x->q_blocks; qb++, r++)
                    for (int64_t e = out->q_off[r]; e < out->q_off[r + 1]; e++) {
                        const la_sparse_tile t = out->q_tiles[e];
                        if (!pass) {
                            cnt[t.tile]++;
                            continue;
                        }
                        wc[t.tile * WC + wn[t.tile]] = (la_sparse_tile){.keep = t.keep, .tile = (int32_t)qb, .head = gi};
                        if (++wn[t.tile] == WC) {
                            memcpy(out->k_tiles + cnt[t.tile], wc + t.tile * WC, sizeof(la_sparse_tile) * WC);
                            cnt[t.tile] += WC, wn[t.tile] = 0;
                        }
                    }
                if (pass && gi == G - 1) /* the group's last head: flush its buckets */
                    for (int64_t kt = 0; kt < kt_seq; kt++) {
                        memcpy(out->k_tiles + cnt[kt], wc + kt * WC, sizeof(la_sparse_tile) * (size_t)wn[kt]);
                        cnt[kt] += wn[kt];
                    }
            }
        if (!pass) {
            for (int64_t i = 0; i < buckets; i++) out->k_off[i + 1] += out->k_off[i];
            memcpy(fill, out->k_off, sizeof(int64_t) * (size_t)(buckets + 1));
        }
    }
    return LA_OK;
}
