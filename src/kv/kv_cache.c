/* The paged K/V cache (include/longattn.h, "KV cache").
 *
 * Memory: one reservation of address space per layer for K and one for V,
 * [heads][seqs][pages][page_size][head_dim] elements, and one for the
 * positions, [layers][heads][seqs][max_tokens] int32. Reserved as
 * PROT_NONE, so it costs no memory; a page is committed (made writable)
 * when an append first reaches it and handed back (MADV_DONTNEED, then
 * PROT_NONE) when compaction or a reset leaves it empty. The rows of one
 * (layer, head, sequence) are thus one array, which keeps compaction a
 * move of rows down, and a view is a strided tensor over the reservation
 * whose block table maps page i of sequence s to block s * pages + i.
 *
 * Cache pages need not be whole OS pages: commits round out to OS pages
 * (a neighbour's boundary page may be committed early: harmless), frees
 * round in (an OS page that still holds someone's rows is never freed). */
#include "base/base.h"

#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

struct la_kv_cache {
    la_kv_cache_params p;
    size_t es;             /* bytes per element */
    int64_t pages;         /* pages per (layer, head, sequence) */
    size_t row_bytes;      /* head_dim elements */
    size_t region_bytes;   /* one (layer, head, sequence) of K or V: pages * page_size rows */
    size_t layer_bytes;    /* one layer of K or V: heads * seqs regions */
    size_t pos_region;     /* bytes of one (layer, head, sequence)'s positions */
    char **k, **v;         /* [layers] reservations */
    int32_t *pos;          /* reservation: [layers][heads][seqs][max_tokens] */
    int32_t *len;          /* [layers][heads][seqs] entries held */
    int32_t *block_table;  /* [seqs][pages]: s * pages + i */
};

la_kv_cache_params la_kv_cache_params_default(void) {
    return (la_kv_cache_params){.n_layers = 1, .n_kv_heads = 1, .head_dim = 64, .page_size = 256,
                                .max_tokens = 4096, .max_seqs = 1, .dtype = LA_F16};
}

static size_t os_page(void) {
    long s = sysconf(_SC_PAGESIZE);
    return s > 0 ? (size_t)s : 4096;
}

static void *reserve(size_t bytes) {
    void *p = mmap(NULL, bytes ? bytes : 1, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

/* Make bytes [off, off + n) of a reservation writable, rounding out. */
static bool commit(void *base, size_t off, size_t n) {
    if (!n) return true;
    const size_t ps = os_page();
    size_t a = off / ps * ps, b = (off + n + ps - 1) / ps * ps;
    return mprotect((char *)base + a, b - a, PROT_READ | PROT_WRITE) == 0;
}

/* Give back the whole OS pages inside bytes [off, off + n). */
static void release(void *base, size_t off, size_t n) {
    const size_t ps = os_page();
    size_t a = (off + ps - 1) / ps * ps, b = (off + n) / ps * ps;
    if (b <= a) return;
    madvise((char *)base + a, b - a, MADV_DONTNEED);
    mprotect((char *)base + a, b - a, PROT_NONE);
}

static int64_t head_index(const la_kv_cache *c, int64_t layer, int64_t head, int64_t seq) {
    return (layer * c->p.n_kv_heads + head) * c->p.max_seqs + seq;
}
static size_t region_off(const la_kv_cache *c, int64_t head, int64_t seq) {
    return (size_t)(head * c->p.max_seqs + seq) * c->region_bytes;
}
static int64_t pages_for(const la_kv_cache *c, int64_t len) { return (len + c->p.page_size - 1) / c->p.page_size; }

la_status la_kv_cache_create(const la_kv_cache_params *p, la_kv_cache **out) {
    if (!p || !out) return la_fail(LA_ERR_NULL, "la_kv_cache_create: %s is NULL", !p ? "params" : "out");
    *out = NULL;
    const struct { const char *name; int64_t v; } sizes[] = {
        {"n_layers", p->n_layers}, {"n_kv_heads", p->n_kv_heads}, {"head_dim", p->head_dim},
        {"page_size", p->page_size}, {"max_tokens", p->max_tokens}, {"max_seqs", p->max_seqs}};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
        if (sizes[i].v <= 0)
            return la_fail(LA_ERR_SHAPE, "la_kv_cache_create: %s is %lld; must be > 0", sizes[i].name,
                           (long long)sizes[i].v);
    if (p->head_dim % 8 || p->head_dim > LA_MAX_HEAD_DIM)
        return la_fail(LA_ERR_SHAPE, "la_kv_cache_create: head_dim is %lld; must be a multiple of 8, at most %d",
                       (long long)p->head_dim, LA_MAX_HEAD_DIM);
    if (p->dtype != LA_F32 && p->dtype != LA_BF16 && p->dtype != LA_F16)
        return la_fail(LA_ERR_DTYPE, "la_kv_cache_create: dtype %d is not f32, bf16 or f16", (int)p->dtype);
    la_kv_cache c = {.p = *p, .es = la_dtype_size(p->dtype)};
    c.pages = pages_for(&c, p->max_tokens);
    int64_t blocks, heads_seqs, entries;
    size_t page_bytes, pos_bytes;
    if (!la_mul_i64(p->max_seqs, c.pages, &blocks) || blocks > INT32_MAX ||
        !la_mul_i64(p->n_kv_heads, p->max_seqs, &heads_seqs) || !la_mul_i64(heads_seqs, p->n_layers, &entries) ||
        !la_mul_size((size_t)p->page_size * (size_t)p->head_dim, c.es, &page_bytes) ||
        !la_mul_size(page_bytes, (size_t)c.pages, &c.region_bytes) ||
        !la_mul_size(c.region_bytes, (size_t)heads_seqs, &c.layer_bytes) ||
        !la_mul_size((size_t)c.pages * (size_t)p->page_size, sizeof(int32_t), &c.pos_region) ||
        !la_mul_size(c.pos_region, (size_t)entries, &pos_bytes) || c.layer_bytes > (size_t)INT64_MAX / 2)
        return la_fail(LA_ERR_OVERFLOW,
                       "la_kv_cache_create: %lld sequences x %lld tokens x %lld heads x %lld dims do not fit: "
                       "block ids must fit int32 and bytes size_t",
                       (long long)p->max_seqs, (long long)p->max_tokens, (long long)p->n_kv_heads,
                       (long long)p->head_dim);
    c.row_bytes = (size_t)p->head_dim * c.es;
    la_kv_cache *h = calloc(1, sizeof *h);
    if (!h) return la_fail(LA_ERR_NOMEM, "la_kv_cache_create: no memory for the cache");
    *h = c;
    h->k = calloc((size_t)p->n_layers, sizeof *h->k);
    h->v = calloc((size_t)p->n_layers, sizeof *h->v);
    h->len = calloc((size_t)entries, sizeof *h->len);
    h->block_table = malloc(sizeof(int32_t) * (size_t)blocks);
    h->pos = reserve(pos_bytes);
    bool ok = h->k && h->v && h->len && h->block_table && h->pos;
    for (int64_t l = 0; ok && l < p->n_layers; l++) {
        h->k[l] = reserve(h->layer_bytes);
        h->v[l] = reserve(h->layer_bytes);
        ok = h->k[l] && h->v[l];
    }
    if (!ok) {
        la_kv_cache_destroy(h);
        return la_fail(LA_ERR_NOMEM, "la_kv_cache_create: could not reserve %zu bytes of address space per layer",
                       2 * c.layer_bytes);
    }
    for (int64_t i = 0; i < blocks; i++) h->block_table[i] = (int32_t)i;
    *out = h;
    return la_succeed();
}

void la_kv_cache_destroy(la_kv_cache *c) {
    if (!c) return;
    for (int64_t l = 0; l < c->p.n_layers; l++) {
        if (c->k && c->k[l]) munmap(c->k[l], c->layer_bytes ? c->layer_bytes : 1);
        if (c->v && c->v[l]) munmap(c->v[l], c->layer_bytes ? c->layer_bytes : 1);
    }
    if (c->pos) {
        size_t n = c->pos_region * (size_t)(c->p.n_layers * c->p.n_kv_heads * c->p.max_seqs);
        munmap(c->pos, n ? n : 1);
    }
    free(c->k), free(c->v), free(c->len), free(c->block_table);
    free(c);
}

const la_kv_cache_params *la_kv_cache_params_of(const la_kv_cache *c) { return c ? &c->p : NULL; }

static la_status check_index(const la_kv_cache *c, const char *fn, int64_t layer, int64_t head, bool head_all,
                             int64_t seq) {
    if (!c) return la_fail(LA_ERR_NULL, "%s: cache is NULL", fn);
    if (layer < 0 || layer >= c->p.n_layers)
        return la_fail(LA_ERR_ARGUMENT, "%s: layer %lld is outside [0, %lld)", fn, (long long)layer,
                       (long long)c->p.n_layers);
    if (head < (head_all ? -1 : 0) || head >= c->p.n_kv_heads)
        return la_fail(LA_ERR_ARGUMENT, "%s: head %lld is outside [%d, %lld)", fn, (long long)head, head_all ? -1 : 0,
                       (long long)c->p.n_kv_heads);
    if (seq < 0 || seq >= c->p.max_seqs)
        return la_fail(LA_ERR_ARGUMENT, "%s: seq %lld is outside [0, %lld)", fn, (long long)seq,
                       (long long)c->p.max_seqs);
    return LA_OK;
}

/* Commit the pages entries [len, len + n) of (layer, head, seq) need. */
static bool commit_entries(la_kv_cache *c, int64_t layer, int64_t head, int64_t seq, int64_t len, int64_t n) {
    const int64_t have = pages_for(c, len), need = pages_for(c, len + n);
    if (need <= have) return true;
    const size_t pb = c->row_bytes * (size_t)c->p.page_size, off = region_off(c, head, seq);
    const size_t pos_page = (size_t)c->p.page_size * sizeof(int32_t);
    const size_t pos_off = (size_t)head_index(c, layer, head, seq) * c->pos_region;
    return commit(c->k[layer], off + (size_t)have * pb, (size_t)(need - have) * pb) &&
           commit(c->v[layer], off + (size_t)have * pb, (size_t)(need - have) * pb) &&
           commit(c->pos, pos_off + (size_t)have * pos_page, (size_t)(need - have) * pos_page);
}

/* Give back the pages past `len` that held entries up to `old`. */
static void release_entries(la_kv_cache *c, int64_t layer, int64_t head, int64_t seq, int64_t len, int64_t old) {
    const int64_t keep = pages_for(c, len), had = pages_for(c, old);
    if (had <= keep) return;
    const size_t pb = c->row_bytes * (size_t)c->p.page_size, off = region_off(c, head, seq);
    const size_t pos_page = (size_t)c->p.page_size * sizeof(int32_t);
    const size_t pos_off = (size_t)head_index(c, layer, head, seq) * c->pos_region;
    release(c->k[layer], off + (size_t)keep * pb, (size_t)(had - keep) * pb);
    release(c->v[layer], off + (size_t)keep * pb, (size_t)(had - keep) * pb);
    release(c->pos, pos_off + (size_t)keep * pos_page, (size_t)(had - keep) * pos_page);
}

static char *row_at(const la_kv_cache *c, char *layer_base, int64_t head, int64_t seq, int64_t slot) {
    return layer_base + region_off(c, head, seq) + (size_t)slot * c->row_bytes;
}

la_status la_kv_cache_append(la_kv_cache *c, int64_t layer, int64_t seq, int64_t n, const float *k, const float *v,
                             const int32_t *positions) {
    la_status st = check_index(c, "la_kv_cache_append", layer, 0, false, seq);
    if (st) return st;
    if (n < 0) return la_fail(LA_ERR_ARGUMENT, "la_kv_cache_append: n is %lld; must be >= 0", (long long)n);
    if (n && (!k || !v || !positions))
        return la_fail(LA_ERR_NULL, "la_kv_cache_append: %s is NULL", !k ? "k" : !v ? "v" : "positions");
    const int64_t Hkv = c->p.n_kv_heads, D = c->p.head_dim;
    for (int64_t h = 0; h < Hkv; h++) {
        const int64_t len = c->len[head_index(c, layer, h, seq)];
        if (n > c->p.max_tokens - len)
            return la_fail(LA_ERR_ARGUMENT,
                           "la_kv_cache_append: layer %lld head %lld seq %lld holds %lld of %lld entries; %lld more do "
                           "not fit",
                           (long long)layer, (long long)h, (long long)seq, (long long)len, (long long)c->p.max_tokens,
                           (long long)n);
    }
    for (int64_t h = 0; h < Hkv; h++)
        if (!commit_entries(c, layer, h, seq, c->len[head_index(c, layer, h, seq)], n))
            return la_fail(LA_ERR_NOMEM, "la_kv_cache_append: the system refused to commit pages for %lld entries",
                           (long long)n);
    for (int64_t h = 0; h < Hkv; h++) {
        int32_t *len = &c->len[head_index(c, layer, h, seq)];
        int32_t *pos = (int32_t *)((char *)c->pos + (size_t)head_index(c, layer, h, seq) * c->pos_region);
        for (int64_t i = 0; i < n; i++) {
            char *kr = row_at(c, c->k[layer], h, seq, *len + i), *vr = row_at(c, c->v[layer], h, seq, *len + i);
            const float *ks = k + (i * Hkv + h) * D, *vs = v + (i * Hkv + h) * D;
            if (c->p.dtype == LA_F32) {
                memcpy(kr, ks, c->row_bytes);
                memcpy(vr, vs, c->row_bytes);
            } else {
                for (int64_t d = 0; d < D; d++) {
                    la_store_f32(kr, c->p.dtype, d, ks[d]);
                    la_store_f32(vr, c->p.dtype, d, vs[d]);
                }
            }
            pos[*len + i] = positions[i];
        }
        *len += (int32_t)n;
    }
    return la_succeed();
}

int64_t la_kv_cache_len(const la_kv_cache *c, int64_t layer, int64_t head, int64_t seq) {
    if (!c || layer < 0 || layer >= c->p.n_layers || head < 0 || head >= c->p.n_kv_heads || seq < 0 ||
        seq >= c->p.max_seqs)
        return -1;
    return c->len[head_index(c, layer, head, seq)];
}

la_status la_kv_cache_positions(const la_kv_cache *c, int64_t layer, int64_t head, int64_t seq,
                                const int32_t **positions, int64_t *len) {
    la_status st = check_index(c, "la_kv_cache_positions", layer, head, false, seq);
    if (st) return st;
    if (!positions || !len) return la_fail(LA_ERR_NULL, "la_kv_cache_positions: %s is NULL", !positions ? "positions" : "len");
    *positions = (const int32_t *)((const char *)c->pos + (size_t)head_index(c, layer, head, seq) * c->pos_region);
    *len = c->len[head_index(c, layer, head, seq)];
    return la_succeed();
}

la_status la_kv_cache_read(const la_kv_cache *c, int64_t layer, int64_t head, int64_t seq, int64_t first, int64_t n,
                           float *k, float *v) {
    la_status st = check_index(c, "la_kv_cache_read", layer, head, true, seq);
    if (st) return st;
    const int64_t h0 = head < 0 ? 0 : head, h1 = head < 0 ? c->p.n_kv_heads : head + 1, D = c->p.head_dim;
    if (first < 0 || n < 0)
        return la_fail(LA_ERR_ARGUMENT, "la_kv_cache_read: first %lld and n %lld must be >= 0", (long long)first,
                       (long long)n);
    for (int64_t h = h0; h < h1; h++) {
        const int64_t len = c->len[head_index(c, layer, h, seq)];
        if (first > len || n > len - first)
            return la_fail(LA_ERR_ARGUMENT,
                           "la_kv_cache_read: entries [%lld, %lld) of layer %lld head %lld seq %lld; it holds %lld",
                           (long long)first, (long long)(first + n), (long long)layer, (long long)h, (long long)seq,
                           (long long)len);
    }
    const int64_t nh = h1 - h0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t h = h0; h < h1; h++) {
            const char *kr = row_at(c, c->k[layer], h, seq, first + i), *vr = row_at(c, c->v[layer], h, seq, first + i);
            float *kd = k ? k + (i * nh + h - h0) * D : NULL, *vd = v ? v + (i * nh + h - h0) * D : NULL;
            for (int64_t d = 0; d < D; d++) {
                if (kd) kd[d] = la_load_f32(kr, c->p.dtype, d);
                if (vd) vd[d] = la_load_f32(vr, c->p.dtype, d);
            }
        }
    return la_succeed();
}

la_status la_kv_cache_view(const la_kv_cache *c, int64_t layer, int64_t head, int64_t seq0, int64_t n_seqs,
                           la_kv_view *out) {
    la_status st = check_index(c, "la_kv_cache_view", layer, head, true, seq0);
    if (st) return st;
    if (!out) return la_fail(LA_ERR_NULL, "la_kv_cache_view: out is NULL");
    if (n_seqs <= 0 || n_seqs > c->p.max_seqs - seq0)
        return la_fail(LA_ERR_ARGUMENT, "la_kv_cache_view: sequences [%lld, %lld) are outside [0, %lld)",
                       (long long)seq0, (long long)(seq0 + n_seqs), (long long)c->p.max_seqs);
    if (head < 0)
        for (int64_t s = seq0; s < seq0 + n_seqs; s++)
            for (int64_t h = 1; h < c->p.n_kv_heads; h++)
                if (c->len[head_index(c, layer, h, s)] != c->len[head_index(c, layer, 0, s)])
                    return la_fail(LA_ERR_ARGUMENT,
                                   "la_kv_cache_view: layer %lld seq %lld is ragged (head 0 holds %d entries, head "
                                   "%lld %d); view its heads one by one",
                                   (long long)layer, (long long)s, c->len[head_index(c, layer, 0, s)], (long long)h,
                                   c->len[head_index(c, layer, h, s)]);
    const int64_t h0 = head < 0 ? 0 : head, D = c->p.head_dim, ps = c->p.page_size;
    const int64_t head_stride = (int64_t)(c->region_bytes / c->es) * c->p.max_seqs;
    const size_t off = region_off(c, h0, 0);
    la_tensor t = {.dtype = c->p.dtype, .ndim = 4,
                   .shape = {c->p.max_seqs * c->pages, ps, head < 0 ? c->p.n_kv_heads : 1, D},
                   .stride = {ps * D, D, head_stride, 1}};
    out->k = t, out->v = t;
    out->k.data = c->k[layer] + off;
    out->v.data = c->v[layer] + off;
    out->layout = (la_kv_layout){.seqlens_k = &c->len[head_index(c, layer, h0, seq0)],
                                 .block_table = c->block_table + seq0 * c->pages,
                                 .blocks_per_seq = c->pages};
    return la_succeed();
}

la_status la_kv_cache_compact(la_kv_cache *c, int64_t layer, int64_t head, int64_t seq, const int32_t *slots,
                              int64_t n_drop) {
    la_status st = check_index(c, "la_kv_cache_compact", layer, head, false, seq);
    if (st) return st;
    if (n_drop < 0) return la_fail(LA_ERR_ARGUMENT, "la_kv_cache_compact: n_drop is %lld; must be >= 0", (long long)n_drop);
    if (n_drop && !slots) return la_fail(LA_ERR_NULL, "la_kv_cache_compact: slots is NULL");
    int32_t *len = &c->len[head_index(c, layer, head, seq)];
    for (int64_t i = 0; i < n_drop; i++) {
        if (slots[i] < 0 || slots[i] >= *len)
            return la_fail(LA_ERR_ARGUMENT, "la_kv_cache_compact: slots[%lld] = %d is outside [0, %d)", (long long)i,
                           slots[i], *len);
        if (i && slots[i] <= slots[i - 1])
            return la_fail(LA_ERR_ARGUMENT, "la_kv_cache_compact: slots[%lld] = %d does not follow %d; slots must be "
                           "strictly increasing",
                           (long long)i, slots[i], slots[i - 1]);
    }
    int32_t *pos = (int32_t *)((char *)c->pos + (size_t)head_index(c, layer, head, seq) * c->pos_region);
    int64_t w = 0, next = 0;
    for (int64_t r = 0; r < *len; r++) {
        if (next < n_drop && slots[next] == r) {
            next++;
            continue;
        }
        if (w != r) {
            memcpy(row_at(c, c->k[layer], head, seq, w), row_at(c, c->k[layer], head, seq, r), c->row_bytes);
            memcpy(row_at(c, c->v[layer], head, seq, w), row_at(c, c->v[layer], head, seq, r), c->row_bytes);
            pos[w] = pos[r];
        }
        w++;
    }
    const int64_t old = *len;
    *len = (int32_t)w;
    release_entries(c, layer, head, seq, w, old);
    return la_succeed();
}

la_status la_kv_cache_reset(la_kv_cache *c, int64_t seq) {
    if (!c) return la_fail(LA_ERR_NULL, "la_kv_cache_reset: cache is NULL");
    if (seq < -1 || seq >= c->p.max_seqs)
        return la_fail(LA_ERR_ARGUMENT, "la_kv_cache_reset: seq %lld is outside [-1, %lld)", (long long)seq,
                       (long long)c->p.max_seqs);
    for (int64_t l = 0; l < c->p.n_layers; l++)
        for (int64_t h = 0; h < c->p.n_kv_heads; h++)
            for (int64_t s = seq < 0 ? 0 : seq; s < (seq < 0 ? c->p.max_seqs : seq + 1); s++) {
                int32_t *len = &c->len[head_index(c, l, h, s)];
                release_entries(c, l, h, s, 0, *len);
                *len = 0;
            }
    return la_succeed();
}

size_t la_kv_cache_bytes(const la_kv_cache *c) {
    if (!c) return 0;
    size_t pages = 0;
    const int64_t n = c->p.n_layers * c->p.n_kv_heads * c->p.max_seqs;
    for (int64_t i = 0; i < n; i++) pages += (size_t)pages_for(c, c->len[i]);
    return pages * c->row_bytes * (size_t)c->p.page_size * 2;
}
