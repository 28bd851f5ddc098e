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
 * round in (an OS page that still holds someone's rows is never freed).
 *
 * Where one (layer, head, sequence) region is 2 MB or more, its layer's
 * reservation is 2 MB-aligned and advised as transparent huge pages
 * (MADV_HUGEPAGE), and its commits and frees go in 2 MB steps: a decode
 * over 32K tokens streams hundreds of MB, and on 4 KB pages each 4 KB is
 * a TLB miss and a stop for the hardware prefetchers (s22: q8 at 32K
 * 2.9 against 3.5 ms). The cost: up to one huge page per region past its
 * last row, committed early. Smaller regions (a small model's heads at 8K)
 * keep 4 KB pages, so a short context does not pay 2 MB a head.
 *
 * Quantised caches (params.quant, format in backend/kvq_problem.h): the
 * reservations hold quantised pages for slots [0, qlen) of each (layer,
 * head, sequence); slots [qlen, len) sit in an f32 window of
 * quant_window + 2 key groups rows. An append lands in the window; when it
 * holds quant_window + key_group rows, its oldest key_group rows become one
 * key group (keys per channel, values per token) and leave it. So the
 * window keeps between quant_window and quant_window + key_group - 1 of the
 * most recent entries, and qlen is a multiple of the key group. */
#include "base/base.h"
#include "backend/kvq_problem.h"
#include "kv/kv_internal.h"
#include "ops/kvquant/kvq_decode.h"
#include "ops/validate.h"

#include <math.h>

#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

struct la_kv_cache {
    la_kv_cache_params p;
    size_t es;             /* bytes per element (float caches) */
    int64_t pages;         /* pages per (layer, head, sequence) */
    size_t row_bytes;      /* head_dim elements (float caches) */
    size_t kpage, vpage;   /* bytes of one K / V page */
    size_t kreg, vreg;     /* one (layer, head, sequence) of K / V: pages * page bytes */
    size_t klayer, vlayer; /* one layer of K / V: heads * seqs regions */
    size_t kgran, vgran;   /* commit and free steps of the K / V reservations: the OS page or HUGE_PAGE */
    size_t kres, vres;     /* bytes of one layer's K / V reservation: klayer rounded up to its step */
    size_t pos_region;     /* bytes of one (layer, head, sequence)'s positions */
    char **k, **v;         /* [layers] reservations */
    int32_t *pos;          /* reservation: [layers][heads][seqs][max_tokens] */
    int32_t *len;          /* [layers][heads][seqs] entries held */
    int32_t *block_table;  /* [seqs][pages]: s * pages + i */
    /* quantised caches only */
    la_kvq_format f;
    int32_t *qlen;         /* [layers][heads][seqs] entries in quantised pages */
    float *wk, *wv;        /* [layers][heads][seqs][window_rows][head_dim] */
};

la_kv_cache_params la_kv_cache_params_default(void) {
    return (la_kv_cache_params){.n_layers = 1, .n_kv_heads = 1, .head_dim = 64, .page_size = 256,
                                .max_tokens = 4096, .max_seqs = 1, .dtype = LA_F16, .quant = LA_KV_QUANT_NONE,
                                .quant_key_group = 32, .quant_value_group = 32, .quant_window = 32};
}

static size_t os_page(void) {
    long s = sysconf(_SC_PAGESIZE);
    return s > 0 ? (size_t)s : 4096;
}

#define HUGE_PAGE ((size_t)2 << 20)

/* The commit step for regions of region_bytes each. */
static size_t commit_step(size_t region_bytes) {
#ifdef MADV_HUGEPAGE
    if (region_bytes >= HUGE_PAGE && os_page() < HUGE_PAGE) return HUGE_PAGE;
#endif
    return os_page();
}

/* bytes (a multiple of step) of address space aligned to step, no access. */
static void *reserve(size_t bytes, size_t step) {
    if (step <= os_page()) {
        void *p = mmap(NULL, bytes ? bytes : 1, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        return p == MAP_FAILED ? NULL : p;
    }
    /* over-map by one step, then trim both ends to the aligned span */
    const size_t span = bytes + step;
    char *p = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return NULL;
    char *a = (char *)(((uintptr_t)p + step - 1) / step * step);
    if (a > p) munmap(p, (size_t)(a - p));
    if (p + span > a + bytes) munmap(a + bytes, (size_t)(p + span - (a + bytes)));
#ifdef MADV_HUGEPAGE
    madvise(a, bytes, MADV_HUGEPAGE); /* advice: where the OS has THP off, 4 KB pages as before */
#endif
    return a;
}

/* Make bytes [off, off + n) of a reservation writable, rounding out to step. */
static bool commit(void *base, size_t off, size_t n, size_t step) {
    if (!n) return true;
    size_t a = off / step * step, b = (off + n + step - 1) / step * step;
    return mprotect((char *)base + a, b - a, PROT_READ | PROT_WRITE) == 0;
}

/* Give back the whole steps inside bytes [off, off + n). */
static void release(void *base, size_t off, size_t n, size_t step) {
    size_t a = (off + step - 1) / step * step, b = (off + n) / step * step;
    if (b <= a) return;
    madvise((char *)base + a, b - a, MADV_DONTNEED);
    mprotect((char *)base + a, b - a, PROT_NONE);
}

static int64_t head_index(const la_kv_cache *c, int64_t layer, int64_t head, int64_t seq) {
    return (layer * c->p.n_kv_heads + head) * c->p.max_seqs + seq;
}
static size_t region_off(const la_kv_cache *c, size_t region_bytes, int64_t head, int64_t seq) {
    return (size_t)(head * c->p.max_seqs + seq) * region_bytes;
}
static bool quantised(const la_kv_cache *c) { return c->p.quant != LA_KV_QUANT_NONE; }
/* Written without len + page_size - 1, which overflows for len near INT64_MAX. */
static int64_t pages_for(const la_kv_cache *c, int64_t len) {
    return len / c->p.page_size + (len % c->p.page_size != 0);
}

static la_status check_quant(const la_kv_cache_params *p) {
    if (p->quant == LA_KV_QUANT_NONE) return LA_OK;
    if (p->quant != LA_KV_Q8 && p->quant != LA_KV_Q4)
        return la_fail(LA_ERR_ARGUMENT, "la_kv_cache_create: quant %d is not LA_KV_QUANT_NONE, LA_KV_Q8 or LA_KV_Q4",
                       (int)p->quant);
    if (p->quant_key_group <= 0 || p->quant_key_group > LA_KV_QUANT_MAX_GROUP || p->page_size % p->quant_key_group)
        return la_fail(LA_ERR_ARGUMENT,
                       "la_kv_cache_create: quant_key_group is %lld; must be in [1, %d] and divide page_size %lld",
                       (long long)p->quant_key_group, LA_KV_QUANT_MAX_GROUP, (long long)p->page_size);
    if (p->quant_value_group <= 0 || p->head_dim % p->quant_value_group)
        return la_fail(LA_ERR_ARGUMENT,
                       "la_kv_cache_create: quant_value_group is %lld; must be > 0 and divide head_dim %lld",
                       (long long)p->quant_value_group, (long long)p->head_dim);
    if (p->quant_window < 0 || p->quant_window > LA_KV_QUANT_MAX_WINDOW)
        return la_fail(LA_ERR_ARGUMENT, "la_kv_cache_create: quant_window is %lld; must be in [0, %d]",
                       (long long)p->quant_window, LA_KV_QUANT_MAX_WINDOW);
    return LA_OK;
}

la_status la_kv_cache_create(const la_kv_cache_params *p, la_kv_cache **out) {
    if (out) *out = NULL;
    if (!p || !out) return la_fail(LA_ERR_NULL, "la_kv_cache_create: %s is NULL", !p ? "params" : "out");
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
    if (p->quant == LA_KV_QUANT_NONE && p->dtype != LA_F32 && p->dtype != LA_BF16 && p->dtype != LA_F16)
        return la_fail(LA_ERR_DTYPE, "la_kv_cache_create: dtype %d is not f32, bf16 or f16", (int)p->dtype);
    la_status st = check_quant(p);
    if (st) return st;
    /* lengths, quantised lengths and block ids are int32 */
    if (p->max_tokens > INT32_MAX)
        return la_fail(LA_ERR_OVERFLOW, "la_kv_cache_create: max_tokens is %lld; entries per head are counted in "
                       "int32, at most %d", (long long)p->max_tokens, INT32_MAX);
    const bool q = p->quant != LA_KV_QUANT_NONE;
    la_kv_cache c = {.p = *p, .es = q ? 1 : la_dtype_size(p->dtype)};
    c.pages = pages_for(&c, p->max_tokens);
    c.row_bytes = (size_t)p->head_dim * c.es;
    /* a page's bytes: a page_size far beyond max_tokens (allowed) must not
     * wrap them to a small number (then the reservation was a few bytes and
     * the failure NOMEM "0 bytes", or worse) */
    bool page_fits;
    if (q) {
        const int bits = p->quant == LA_KV_Q8 ? 8 : 4;
        const size_t code_row = (size_t)p->head_dim * (size_t)bits / 8, ps = (size_t)p->page_size;
        /* codes, then f16 (scale, zero) per channel per key group / per value group per token */
        size_t codes, kscales, vscales;
        page_fits = la_mul_size(code_row, ps, &codes) &&
                    la_mul_size(ps / (size_t)p->quant_key_group, (size_t)p->head_dim * 4, &kscales) &&
                    la_mul_size(ps, (size_t)(p->head_dim / p->quant_value_group) * 4, &vscales) &&
                    codes <= SIZE_MAX - kscales && codes <= SIZE_MAX - vscales;
        c.f = (la_kvq_format){.bits = bits, .D = p->head_dim, .page_size = p->page_size,
                              .key_group = p->quant_key_group, .value_group = p->quant_value_group,
                              .code_row = code_row,
                              .k_page = page_fits ? codes + kscales : 0,
                              .v_page = page_fits ? codes + vscales : 0,
                              .window_rows = p->quant_window + 2 * p->quant_key_group};
        c.kpage = c.f.k_page, c.vpage = c.f.v_page;
    } else {
        page_fits = la_mul_size(c.row_bytes, (size_t)p->page_size, &c.kpage);
        c.vpage = c.kpage;
    }
    int64_t blocks, heads_seqs, entries;
    size_t pos_bytes, win_elems = 0;
    if (!page_fits || !la_mul_i64(p->max_seqs, c.pages, &blocks) || blocks > INT32_MAX ||
        !la_mul_i64(p->n_kv_heads, p->max_seqs, &heads_seqs) || !la_mul_i64(heads_seqs, p->n_layers, &entries) ||
        !la_mul_size(c.kpage, (size_t)c.pages, &c.kreg) || !la_mul_size(c.vpage, (size_t)c.pages, &c.vreg) ||
        !la_mul_size(c.kreg, (size_t)heads_seqs, &c.klayer) || !la_mul_size(c.vreg, (size_t)heads_seqs, &c.vlayer) ||
        !la_mul_size((size_t)c.pages * (size_t)p->page_size, sizeof(int32_t), &c.pos_region) ||
        !la_mul_size(c.pos_region, (size_t)entries, &pos_bytes) || c.klayer > (size_t)INT64_MAX / 2 ||
        c.vlayer > (size_t)INT64_MAX / 2 ||
        (q && !la_mul_size((size_t)entries, (size_t)(c.f.window_rows * p->head_dim), &win_elems)))
        return la_fail(LA_ERR_OVERFLOW,
                       "la_kv_cache_create: %lld sequences x %lld tokens (pages of %lld) x %lld heads x %lld dims "
                       "do not fit: block ids must fit int32 and bytes size_t",
                       (long long)p->max_seqs, (long long)p->max_tokens, (long long)p->page_size,
                       (long long)p->n_kv_heads, (long long)p->head_dim);
    c.kgran = commit_step(c.kreg), c.vgran = commit_step(c.vreg);
    c.kres = (c.klayer + c.kgran - 1) / c.kgran * c.kgran, c.vres = (c.vlayer + c.vgran - 1) / c.vgran * c.vgran;
    /* Address space beyond 2^47 bytes (x86-64's and arm64's user half)
     * cannot be reserved: refused before any allocation (2^40 layers of a
     * few pages each passed every check above) */
    size_t space;
    if (c.kres > SIZE_MAX - c.vres || !la_mul_size(c.kres + c.vres, (size_t)p->n_layers, &space) ||
        space > SIZE_MAX - pos_bytes || space + pos_bytes > (size_t)1 << 47)
        return la_fail(LA_ERR_NOMEM, "la_kv_cache_create: %lld layers of %zu bytes of K and V pages need more "
                       "address space than a process has (2^47 bytes)", (long long)p->n_layers,
                       c.kres > SIZE_MAX - c.vres ? SIZE_MAX : c.kres + c.vres);
    la_kv_cache *h = calloc(1, sizeof *h);
    if (!h) return la_fail(LA_ERR_NOMEM, "la_kv_cache_create: no memory for the cache");
    *h = c;
    h->k = calloc((size_t)p->n_layers, sizeof *h->k);
    h->v = calloc((size_t)p->n_layers, sizeof *h->v);
    h->len = calloc((size_t)entries, sizeof *h->len);
    h->block_table = malloc(sizeof(int32_t) * (size_t)blocks);
    h->pos = reserve(pos_bytes, os_page());
    bool ok = h->k && h->v && h->len && h->block_table && h->pos;
    if (ok && q) {
        /* calloc of this size maps zero pages: a window costs memory once written */
        h->qlen = calloc((size_t)entries, sizeof *h->qlen);
        h->wk = calloc(win_elems, sizeof(float));
        h->wv = calloc(win_elems, sizeof(float));
        ok = h->qlen && h->wk && h->wv;
    }
    for (int64_t l = 0; ok && l < p->n_layers; l++) {
        h->k[l] = reserve(h->kres, h->kgran);
        h->v[l] = reserve(h->vres, h->vgran);
        ok = h->k[l] && h->v[l];
    }
    if (!ok) {
        la_kv_cache_destroy(h);
        return la_fail(LA_ERR_NOMEM, "la_kv_cache_create: could not reserve %zu bytes of address space per layer",
                       c.klayer + c.vlayer);
    }
    for (int64_t i = 0; i < blocks; i++) h->block_table[i] = (int32_t)i;
    *out = h;
    return la_succeed();
}

void la_kv_cache_destroy(la_kv_cache *c) {
    if (!c) return;
    /* la_kv_cache_create reserves the layers in order and stops at the
     * first failure: walking all n_layers after a failed create of 2^40
     * layers (whose arrays were never allocated) took hours */
    for (int64_t l = 0; c->k && c->v && l < c->p.n_layers && (c->k[l] || c->v[l]); l++) {
        if (c->k[l]) munmap(c->k[l], c->kres ? c->kres : 1);
        if (c->v[l]) munmap(c->v[l], c->vres ? c->vres : 1);
    }
    if (c->pos) {
        size_t n = c->pos_region * (size_t)(c->p.n_layers * c->p.n_kv_heads * c->p.max_seqs);
        munmap(c->pos, n ? n : 1);
    }
    free(c->k), free(c->v), free(c->len), free(c->block_table);
    free(c->qlen), free(c->wk), free(c->wv);
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

/* Commit the K/V pages slots [0, need) of (layer, head, seq) use, given
 * that [0, have) are committed (slots: len for a float cache, qlen for a
 * quantised one). */
static bool commit_pages(la_kv_cache *c, int64_t layer, int64_t head, int64_t seq, int64_t have, int64_t need) {
    const int64_t a = pages_for(c, have), b = pages_for(c, need);
    if (b <= a) return true;
    return commit(c->k[layer], region_off(c, c->kreg, head, seq) + (size_t)a * c->kpage, (size_t)(b - a) * c->kpage,
                  c->kgran) &&
           commit(c->v[layer], region_off(c, c->vreg, head, seq) + (size_t)a * c->vpage, (size_t)(b - a) * c->vpage,
                  c->vgran);
}
/* Give back the K/V pages past slot `keep` that held slots up to `had`. */
static void release_pages(la_kv_cache *c, int64_t layer, int64_t head, int64_t seq, int64_t keep, int64_t had) {
    const int64_t a = pages_for(c, keep), b = pages_for(c, had);
    if (b <= a) return;
    release(c->k[layer], region_off(c, c->kreg, head, seq) + (size_t)a * c->kpage, (size_t)(b - a) * c->kpage, c->kgran);
    release(c->v[layer], region_off(c, c->vreg, head, seq) + (size_t)a * c->vpage, (size_t)(b - a) * c->vpage, c->vgran);
}
static int32_t *positions_of(const la_kv_cache *c, int64_t layer, int64_t head, int64_t seq) {
    return (int32_t *)((char *)c->pos + (size_t)head_index(c, layer, head, seq) * c->pos_region);
}
static bool commit_positions(la_kv_cache *c, int64_t layer, int64_t head, int64_t seq, int64_t have, int64_t need) {
    const int64_t a = pages_for(c, have), b = pages_for(c, need);
    const size_t pp = (size_t)c->p.page_size * sizeof(int32_t), off = (size_t)head_index(c, layer, head, seq) * c->pos_region;
    return b <= a || commit(c->pos, off + (size_t)a * pp, (size_t)(b - a) * pp, os_page());
}
static void release_positions(la_kv_cache *c, int64_t layer, int64_t head, int64_t seq, int64_t keep, int64_t had) {
    const int64_t a = pages_for(c, keep), b = pages_for(c, had);
    const size_t pp = (size_t)c->p.page_size * sizeof(int32_t), off = (size_t)head_index(c, layer, head, seq) * c->pos_region;
    if (b > a) release(c->pos, off + (size_t)a * pp, (size_t)(b - a) * pp, os_page());
}

static char *row_at(const la_kv_cache *c, char *layer_base, int64_t head, int64_t seq, int64_t slot) {
    return layer_base + region_off(c, c->kreg, head, seq) + (size_t)slot * c->row_bytes;
}

/* ---- quantised pages (format: backend/kvq_problem.h) ---- */

static char *kpage_of(const la_kv_cache *c, int64_t layer, int64_t head, int64_t seq, int64_t slot) {
    return c->k[layer] + region_off(c, c->kreg, head, seq) + (size_t)(slot / c->p.page_size) * c->kpage;
}
static char *vpage_of(const la_kv_cache *c, int64_t layer, int64_t head, int64_t seq, int64_t slot) {
    return c->v[layer] + region_off(c, c->vreg, head, seq) + (size_t)(slot / c->p.page_size) * c->vpage;
}
static float *window_k(const la_kv_cache *c, int64_t layer, int64_t head, int64_t seq) {
    return c->wk + (size_t)head_index(c, layer, head, seq) * (size_t)(c->f.window_rows * c->p.head_dim);
}
static float *window_v(const la_kv_cache *c, int64_t layer, int64_t head, int64_t seq) {
    return c->wv + (size_t)head_index(c, layer, head, seq) * (size_t)(c->f.window_rows * c->p.head_dim);
}

static void put_code(uint8_t *row, int bits, int64_t d, int code) {
    if (bits == 8) {
        row[d] = (uint8_t)code;
    } else {
        uint8_t *b = &row[d / 2];
        *b = d % 2 ? (uint8_t)((*b & 15) | code << 4) : (uint8_t)((*b & 0xF0) | code);
    }
}

/* Asymmetric quantisation of values x[0..n) (stride `stride`): zero = min
 * and scale = (max - min) / levels, both rounded to f16 first and the codes
 * taken against the rounded pair, so x is within scale / 2 (plus the f16
 * rounding of the pair) of zero + scale * code. */
static void quantise_run(const float *x, int64_t n, int64_t stride, int bits, uint16_t *scale, uint16_t *zero,
                         int *codes) {
    float mn = INFINITY, mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        const float a = x[i * stride];
        mn = a < mn ? a : mn;
        mx = a > mx ? a : mx;
    }
    const int levels = (1 << bits) - 1;
    *scale = la_f32_to_f16((mx - mn) / (float)levels);
    *zero = la_f32_to_f16(mn);
    const float s = la_f16_to_f32(*scale), z = la_f16_to_f32(*zero), inv = s > 0 ? 1.0f / s : 0.0f;
    for (int64_t i = 0; i < n; i++) {
        const float t = nearbyintf((x[i * stride] - z) * inv);
        codes[i] = !(t >= 0) ? 0 : t > (float)levels ? levels : (int)t; /* NaN: 0 */
    }
}

/* Key group starting at slot (a multiple of key_group): kg rows of keys
 * [kg][D] f32, per channel over the group's tokens. */
static void store_key_group(la_kv_cache *c, int64_t layer, int64_t head, int64_t seq, int64_t slot, const float *rows) {
    const la_kvq_format *f = &c->f;
    const int64_t D = f->D, kg = f->key_group;
    char *page = kpage_of(c, layer, head, seq, slot);
    uint16_t *sz = (uint16_t *)la_kvq_key_scales(f, page, (slot % f->page_size) / kg);
    int codes[LA_KV_QUANT_MAX_GROUP];
    uint8_t *gc = (uint8_t *)la_kvq_key_codes(f, page, (slot % f->page_size) / kg);
    for (int64_t d = 0; d < D; d++) {
        quantise_run(rows + d, kg, D, f->bits, &sz[d], &sz[D + d], codes);
        for (int64_t t = 0; t < kg; t++) put_code(gc, f->bits, d * kg + t, codes[t]); /* channel-major */
    }
}
/* One token's values, per group of value_group channels. */
static void store_value_row(la_kv_cache *c, int64_t layer, int64_t head, int64_t seq, int64_t slot, const float *row) {
    const la_kvq_format *f = &c->f;
    const int64_t vg = f->value_group, t = slot % f->page_size;
    char *page = vpage_of(c, layer, head, seq, slot);
    uint16_t *sz = (uint16_t *)la_kvq_value_scales(f, page, t);
    uint8_t *codes_row = (uint8_t *)page + (size_t)t * f->code_row;
    int codes[LA_MAX_HEAD_DIM];
    for (int64_t g = 0; g < f->D / vg; g++) {
        quantise_run(row + g * vg, vg, 1, f->bits, &sz[2 * g], &sz[2 * g + 1], codes);
        for (int64_t d = 0; d < vg; d++) put_code(codes_row, f->bits, g * vg + d, codes[d]);
    }
}
/* Dequantised key and value of a quantised slot (k or v may be NULL). */
static void load_quantised(const la_kv_cache *c, int64_t layer, int64_t head, int64_t seq, int64_t slot, float *k,
                           float *v) {
    const la_kvq_format *f = &c->f;
    const int64_t D = f->D, t = slot % f->page_size;
    if (k) {
        const char *page = kpage_of(c, layer, head, seq, slot);
        const int64_t kg = f->key_group;
        const uint16_t *sz = la_kvq_key_scales(f, page, t / kg);
        const uint8_t *gc = la_kvq_key_codes(f, page, t / kg);
        for (int64_t d = 0; d < D; d++)
            k[d] = la_f16_to_f32(sz[D + d]) + la_f16_to_f32(sz[d]) * (float)la_kvq_code(gc, f->bits, d * kg + t % kg);
    }
    if (v) {
        const char *page = vpage_of(c, layer, head, seq, slot);
        const uint16_t *sz = la_kvq_value_scales(f, page, t);
        const uint8_t *row = (const uint8_t *)page + (size_t)t * f->code_row;
        for (int64_t d = 0; d < D; d++) {
            const int64_t g = d / f->value_group;
            v[d] = la_f16_to_f32(sz[2 * g + 1]) + la_f16_to_f32(sz[2 * g]) * (float)la_kvq_code(row, f->bits, d);
        }
    }
}

/* While the window holds quantise_at() rows or more, its oldest key group
 * moves to the quantised pages (committed by the caller). */
static int64_t quantise_at(const la_kv_cache *c) { return c->p.quant_window + c->f.key_group; }
static void flush_window(la_kv_cache *c, int64_t layer, int64_t head, int64_t seq) {
    const int64_t i = head_index(c, layer, head, seq), D = c->p.head_dim, kg = c->f.key_group;
    float *wk = window_k(c, layer, head, seq), *wv = window_v(c, layer, head, seq);
    while (c->len[i] - c->qlen[i] >= quantise_at(c)) {
        const int64_t q = c->qlen[i];
        store_key_group(c, layer, head, seq, q, wk);
        for (int64_t t = 0; t < kg; t++) store_value_row(c, layer, head, seq, q + t, wv + t * D);
        const size_t rest = (size_t)((c->len[i] - q - kg) * D) * sizeof(float);
        memmove(wk, wk + kg * D, rest);
        memmove(wv, wv + kg * D, rest);
        c->qlen[i] = (int32_t)(q + kg);
    }
}
/* qlen after n more entries arrive at (len, qlen). */
static int64_t qlen_after(const la_kv_cache *c, int64_t len, int64_t qlen, int64_t n) {
    const int64_t over = len + n - qlen - quantise_at(c);
    return over < 0 ? qlen : qlen + (over / c->f.key_group + 1) * c->f.key_group;
}

la_status la_kv_cache_append(la_kv_cache *c, int64_t layer, int64_t seq, int64_t n, const float *k, const float *v,
                             const int32_t *positions) {
    la_status st = check_index(c, "la_kv_cache_append", layer, 0, false, seq);
    if (st) return st;
    if (n < 0) return la_fail(LA_ERR_ARGUMENT, "la_kv_cache_append: n is %lld; must be >= 0", (long long)n);
    if (n && (!k || !v || !positions))
        return la_fail(LA_ERR_NULL, "la_kv_cache_append: %s is NULL", !k ? "k" : !v ? "v" : "positions");
    la_status al;
    if ((al = la_check_aligned(k, sizeof(float), "la_kv_cache_append: k")) ||
        (al = la_check_aligned(v, sizeof(float), "la_kv_cache_append: v")) ||
        (al = la_check_aligned(positions, sizeof *positions, "la_kv_cache_append: positions")))
        return al;
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
    for (int64_t h = 0; h < Hkv; h++) {
        const int64_t i = head_index(c, layer, h, seq), len = c->len[i];
        const int64_t have = quantised(c) ? c->qlen[i] : len;
        const int64_t need = quantised(c) ? qlen_after(c, len, c->qlen[i], n) : len + n;
        if (!commit_pages(c, layer, h, seq, have, need) || !commit_positions(c, layer, h, seq, len, len + n))
            return la_fail(LA_ERR_NOMEM, "la_kv_cache_append: the system refused to commit pages for %lld entries",
                           (long long)n);
    }
    for (int64_t h = 0; h < Hkv; h++) {
        const int64_t hi = head_index(c, layer, h, seq);
        int32_t *len = &c->len[hi], *pos = positions_of(c, layer, h, seq);
        for (int64_t i = 0; i < n; i++) {
            const float *ks = k + (i * Hkv + h) * D, *vs = v + (i * Hkv + h) * D;
            pos[*len] = positions[i];
            if (quantised(c)) {
                const int64_t w = *len - c->qlen[hi];
                memcpy(window_k(c, layer, h, seq) + w * D, ks, sizeof(float) * (size_t)D);
                memcpy(window_v(c, layer, h, seq) + w * D, vs, sizeof(float) * (size_t)D);
                (*len)++;
                flush_window(c, layer, h, seq);
                continue;
            }
            char *kr = row_at(c, c->k[layer], h, seq, *len), *vr = row_at(c, c->v[layer], h, seq, *len);
            if (c->p.dtype == LA_F32) {
                memcpy(kr, ks, c->row_bytes);
                memcpy(vr, vs, c->row_bytes);
            } else {
                for (int64_t d = 0; d < D; d++) {
                    la_store_f32(kr, c->p.dtype, d, ks[d]);
                    la_store_f32(vr, c->p.dtype, d, vs[d]);
                }
            }
            (*len)++;
        }
    }
    return la_succeed();
}

int64_t la_kv_cache_len(const la_kv_cache *c, int64_t layer, int64_t head, int64_t seq) {
    if (!c || layer < 0 || layer >= c->p.n_layers || head < 0 || head >= c->p.n_kv_heads || seq < 0 ||
        seq >= c->p.max_seqs)
        return -1;
    return c->len[head_index(c, layer, head, seq)];
}

int64_t la_kv_cache_settled_len(const la_kv_cache *c, int64_t layer, int64_t head, int64_t seq) {
    if (la_kv_cache_len(c, layer, head, seq) < 0) return -1;
    const int64_t i = head_index(c, layer, head, seq);
    return quantised(c) ? c->qlen[i] : c->len[i];
}

la_status la_kv_cache_positions(const la_kv_cache *c, int64_t layer, int64_t head, int64_t seq,
                                const int32_t **positions, int64_t *len) {
    la_status st = check_index(c, "la_kv_cache_positions", layer, head, false, seq);
    if (st) return st;
    if (!positions || !len) return la_fail(LA_ERR_NULL, "la_kv_cache_positions: %s is NULL", !positions ? "positions" : "len");
    *positions = positions_of(c, layer, head, seq);
    *len = c->len[head_index(c, layer, head, seq)];
    return la_succeed();
}

/* Slot `slot` of (layer, head, seq) as f32 (k or v may be NULL). */
static void load_entry(const la_kv_cache *c, int64_t layer, int64_t head, int64_t seq, int64_t slot, float *k, float *v) {
    const int64_t D = c->p.head_dim;
    if (quantised(c)) {
        const int64_t q = c->qlen[head_index(c, layer, head, seq)];
        if (slot < q) {
            load_quantised(c, layer, head, seq, slot, k, v);
        } else {
            if (k) memcpy(k, window_k(c, layer, head, seq) + (slot - q) * D, sizeof(float) * (size_t)D);
            if (v) memcpy(v, window_v(c, layer, head, seq) + (slot - q) * D, sizeof(float) * (size_t)D);
        }
        return;
    }
    const char *kr = row_at(c, c->k[layer], head, seq, slot), *vr = row_at(c, c->v[layer], head, seq, slot);
    for (int64_t d = 0; d < D; d++) {
        if (k) k[d] = la_load_f32(kr, c->p.dtype, d);
        if (v) v[d] = la_load_f32(vr, c->p.dtype, d);
    }
}

la_status la_kv_cache_read(const la_kv_cache *c, int64_t layer, int64_t head, int64_t seq, int64_t first, int64_t n,
                           float *k, float *v) {
    la_status st = check_index(c, "la_kv_cache_read", layer, head, true, seq);
    if (st) return st;
    const int64_t h0 = head < 0 ? 0 : head, h1 = head < 0 ? c->p.n_kv_heads : head + 1, D = c->p.head_dim;
    if (first < 0 || n < 0)
        return la_fail(LA_ERR_ARGUMENT, "la_kv_cache_read: first %lld and n %lld must be >= 0", (long long)first,
                       (long long)n);
    la_status al;
    if ((al = la_check_aligned(k, sizeof(float), "la_kv_cache_read: k")) ||
        (al = la_check_aligned(v, sizeof(float), "la_kv_cache_read: v")))
        return al;
    for (int64_t h = h0; h < h1; h++) {
        const int64_t len = c->len[head_index(c, layer, h, seq)];
        if (first > len || n > len - first)
            return la_fail(LA_ERR_ARGUMENT,
                           "la_kv_cache_read: %lld entries from %lld of layer %lld head %lld seq %lld; it holds %lld",
                           (long long)n, (long long)first, (long long)layer, (long long)h, (long long)seq,
                           (long long)len);
    }
    const int64_t nh = h1 - h0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t h = h0; h < h1; h++)
            load_entry(c, layer, h, seq, first + i, k ? k + (i * nh + h - h0) * D : NULL,
                       v ? v + (i * nh + h - h0) * D : NULL);
    return la_succeed();
}

la_status la_kv_cache_view(const la_kv_cache *c, int64_t layer, int64_t head, int64_t seq0, int64_t n_seqs,
                           la_kv_view *out) {
    la_status st = check_index(c, "la_kv_cache_view", layer, head, true, seq0);
    if (st) return st;
    if (!out) return la_fail(LA_ERR_NULL, "la_kv_cache_view: out is NULL");
    if (quantised(c))
        return la_fail(LA_ERR_UNSUPPORTED,
                       "la_kv_cache_view: the cache's pages are quantised (no tensor view); use la_kv_cache_decode");
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
    const int64_t head_stride = (int64_t)(c->kreg / c->es) * c->p.max_seqs;
    const size_t off = region_off(c, c->kreg, h0, 0);
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

/* Float pages with a bf16 or f16 out (the header's "out like q (f32, bf16
 * or f16)", which quantised pages always took; la_attention_decode writes
 * f32 or q's dtype, so it was LA_ERR_DTYPE here): the decode into an f32
 * scratch, each element rounded once into out. out's own checks first. */
static la_status decode_rounded_out(la_context *ctx, const la_attention_params *p, const la_kv_cache *c, int64_t layer,
                                    int64_t seq0, const la_tensor *q, la_tensor *out, la_tensor *lse) {
    la_status st;
    if ((st = la_check_tensor(q, "q", 4, 0)) || (st = la_check_tensor(out, "out", 4, 0)) ||
        (st = la_check_no_self_overlap(out, "out")))
        return st;
    for (int i = 0; i < 4; i++)
        if (out->shape[i] != q->shape[i])
            return la_fail(LA_ERR_SHAPE, "la_kv_cache_decode: out dim %d is %lld; q's is %lld", i,
                           (long long)out->shape[i], (long long)q->shape[i]);
    const la_arg_memory mem[] = {{"out", out}, {"lse", lse}, {"q", q}};
    if ((st = la_check_arg_memory(ctx, mem, 3, 2))) return st;
    const int64_t B = q->shape[0], Lq = q->shape[1], H = q->shape[2], D = q->shape[3];
    size_t n;
    if (!la_mul_size((size_t)(B * Lq), (size_t)(H * D), &n) || n > SIZE_MAX / sizeof(float))
        return la_fail(LA_ERR_OVERFLOW, "la_kv_cache_decode: out has too many elements");
    float *tmp = malloc(sizeof(float) * (n ? n : 1));
    if (!tmp) return la_fail(LA_ERR_NOMEM, "la_kv_cache_decode: no memory for %zu f32 outputs", n);
    la_tensor t = la_tensor_contiguous(tmp, LA_F32, 4, q->shape);
    if (!(st = la_kv_cache_decode(ctx, p, c, layer, seq0, q, &t, lse)))
        for (int64_t b = 0; b < B; b++)
            for (int64_t i = 0; i < Lq; i++)
                for (int64_t h = 0; h < H; h++) {
                    char *row = (char *)out->data + (size_t)(b * out->stride[0] + i * out->stride[1] +
                                                             h * out->stride[2]) * la_dtype_size(out->dtype);
                    const float *src = tmp + ((b * Lq + i) * H + h) * D;
                    for (int64_t d = 0; d < D; d++) la_store_f32(row, out->dtype, d, src[d]);
                }
    free(tmp);
    return st;
}

la_status la_kv_cache_decode(la_context *ctx, const la_attention_params *p, const la_kv_cache *c, int64_t layer,
                             int64_t seq0, const la_tensor *q, la_tensor *out, la_tensor *lse) {
    la_status st = check_index(c, "la_kv_cache_decode", layer, 0, false, seq0);
    if (st) return st;
    if (!q) return la_fail(LA_ERR_NULL, "la_kv_cache_decode: q is NULL");
    if (!quantised(c) && ctx && out && (out->dtype == LA_BF16 || out->dtype == LA_F16) && q->dtype == LA_F32 &&
        out->device.kind == LA_DEVICE_CPU)
        return decode_rounded_out(ctx, p, c, layer, seq0, q, out, lse);
    if (!quantised(c)) {
        la_kv_view view;
        if (q->ndim != 4 || q->shape[0] <= 0)
            return la_fail(LA_ERR_SHAPE, "la_kv_cache_decode: q must be [n_seqs, Lq, H, D] with n_seqs >= 1");
        if (q->shape[0] > c->p.max_seqs - seq0) /* as the quantised pages' check says it */
            return la_fail(LA_ERR_ARGUMENT, "la_kv_cache_decode: sequences [%lld, %lld) are outside the cache's [0, %lld)",
                           (long long)seq0, (long long)(seq0 + q->shape[0]), (long long)c->p.max_seqs);
        bool ragged = false;
        for (int64_t s = seq0; s < seq0 + q->shape[0]; s++)
            for (int64_t h = 1; h < c->p.n_kv_heads; h++)
                ragged |= c->len[head_index(c, layer, h, s)] != c->len[head_index(c, layer, 0, s)];
        if (!ragged) {
            if ((st = la_kv_cache_view(c, layer, -1, seq0, q->shape[0], &view))) return st;
            return la_attention_decode(ctx, p, q, &view.k, &view.v, &view.layout, out, lse);
        }
        /* ragged heads (after per-head eviction): one call per KV head over
         * the slices of q, out and lse holding its query heads; each row's
         * arithmetic is the same as in the all-heads call */
        const int64_t Hkv = c->p.n_kv_heads;
        if (!out || !p) return la_fail(LA_ERR_NULL, "la_kv_cache_decode: %s is NULL", !out ? "out" : "params");
        if (out->ndim != 4 || q->shape[2] % Hkv || out->shape[2] != q->shape[2] || (lse && (lse->ndim != 3 || lse->shape[2] != q->shape[2])))
            return la_fail(LA_ERR_SHAPE, "la_kv_cache_decode: q has %lld heads; out and lse must match it and it must be a "
                           "multiple of the cache's %lld KV heads", (long long)q->shape[2], (long long)Hkv);
        const int64_t G = q->shape[2] / Hkv;
        for (int64_t hk = 0; hk < Hkv; hk++) {
            /* the slice's query heads are hk * G .. : ALiBi's slopes too (each KV head's queries took
             * slopes [0, G) before, wrong for every head past the first group) */
            la_attention_params ph = *p;
            if (p->alibi_slopes) ph.alibi_slopes = p->alibi_slopes + hk * G;
            la_tensor qh = *q, oh = *out, lh = lse ? *lse : (la_tensor){0};
            qh.shape[2] = oh.shape[2] = G;
            qh.data = (char *)q->data + (size_t)(hk * G * q->stride[2]) * la_dtype_size(q->dtype);
            oh.data = (char *)out->data + (size_t)(hk * G * out->stride[2]) * la_dtype_size(out->dtype);
            if (lse) {
                lh.shape[2] = G;
                lh.data = (char *)lse->data + (size_t)(hk * G * lse->stride[2]) * la_dtype_size(lse->dtype);
            }
            if ((st = la_kv_cache_view(c, layer, hk, seq0, q->shape[0], &view)) ||
                (st = la_attention_decode(ctx, &ph, &qh, &view.k, &view.v, &view.layout, &oh, lse ? &lh : NULL)))
                return st;
        }
        return la_succeed();
    }
    const int64_t first = head_index(c, layer, 0, 0);
    const size_t wl = (size_t)first * (size_t)(c->f.window_rows * c->p.head_dim);
    const la_kvq_layer kv = {.f = c->f, .k = c->k[layer], .v = c->v[layer], .k_region = c->kreg, .v_region = c->vreg,
                             .wk = c->wk + wl, .wv = c->wv + wl, .len = c->len + first, .qlen = c->qlen + first,
                             .region_seqs = c->p.max_seqs, .exact_queries = c->p.quant_exact_queries};
    return la_kvq_decode(ctx, "la_kv_cache_decode", p, q, &kv, seq0, c->p.n_kv_heads, out, lse);
}

/* Compaction of a quantised head: groups before the first dropped slot stay;
 * after it, each run of key_group kept entries that were all quantised
 * becomes a group again: moved as it is (codes and scales) when it was one
 * whole group before, else dequantised and quantised anew (one more rounding
 * for those entries). The kept entries past the last such run go to the
 * window (dequantised if they were quantised), which then flushes whole
 * groups as an append would. qlen only shrinks, so every page it needs is
 * committed already. */
static la_status compact_quantised(la_kv_cache *c, int64_t layer, int64_t head, int64_t seq, const int32_t *slots,
                                   int64_t n_drop) {
    const int64_t hi = head_index(c, layer, head, seq), D = c->p.head_dim, kg = c->f.key_group;
    const int64_t len = c->len[hi], oq = c->qlen[hi], n_keep = len - n_drop, g0 = slots[0] / kg;
    int32_t *kept = malloc(sizeof(int32_t) * (size_t)(n_keep > 0 ? n_keep : 1));
    float *tk = malloc(sizeof(float) * (size_t)((c->f.window_rows + kg) * D));
    float *tv = malloc(sizeof(float) * (size_t)((c->f.window_rows + kg) * D));
    if (!kept || !tk || !tv) {
        free(kept), free(tk), free(tv);
        return la_fail(LA_ERR_NOMEM, "la_kv_cache_compact: no memory to rebuild %lld entries", (long long)n_keep);
    }
    for (int64_t r = 0, w = 0, next = 0; r < len; r++) {
        if (next < n_drop && slots[next] == r) next++;
        else kept[w++] = (int32_t)r;
    }
    int32_t *pos = positions_of(c, layer, head, seq);
    /* kept[i] == i below idx: those groups stay (a drop inside the window
     * leaves every quantised group as it is) */
    int64_t idx = g0 * kg < oq ? g0 * kg : oq;
    const int64_t cv = c->f.D / c->f.value_group;
    for (; idx + kg <= n_keep && kept[idx + kg - 1] < oq; idx += kg) {
        const int64_t src = kept[idx];
        const bool whole = src % kg == 0 && kept[idx + kg - 1] == src + kg - 1;
        if (whole && src == idx) continue;
        if (whole) {
            /* codes, the group's key scales, its tokens' value scales (src > idx: moving down is safe in order) */
            char *kd = kpage_of(c, layer, head, seq, idx), *ks = kpage_of(c, layer, head, seq, src);
            char *vd = vpage_of(c, layer, head, seq, idx), *vs = vpage_of(c, layer, head, seq, src);
            const int64_t td = idx % c->p.page_size, ts = src % c->p.page_size;
            memmove(kd + (size_t)td * c->f.code_row, ks + (size_t)ts * c->f.code_row, (size_t)kg * c->f.code_row);
            memmove(vd + (size_t)td * c->f.code_row, vs + (size_t)ts * c->f.code_row, (size_t)kg * c->f.code_row);
            memmove((void *)la_kvq_key_scales(&c->f, kd, td / kg), la_kvq_key_scales(&c->f, ks, ts / kg),
                    (size_t)D * 4);
            memmove((void *)la_kvq_value_scales(&c->f, vd, td), la_kvq_value_scales(&c->f, vs, ts),
                    (size_t)(kg * cv) * 4);
        } else {
            for (int64_t t = 0; t < kg; t++) load_quantised(c, layer, head, seq, kept[idx + t], tk + t * D, tv + t * D);
            store_key_group(c, layer, head, seq, idx, tk);
            for (int64_t t = 0; t < kg; t++) store_value_row(c, layer, head, seq, idx + t, tv + t * D);
        }
        for (int64_t t = 0; t < kg; t++) pos[idx + t] = pos[kept[idx + t]];
    }
    /* the rest into the window, through tk/tv (fewer than key_group were
     * quantised, the others were window rows: at most window_rows + kg - 2) */
    {
        for (int64_t i = idx; i < n_keep; i++) {
            const int64_t src = kept[i];
            load_entry(c, layer, head, seq, src, tk + (i - idx) * D, tv + (i - idx) * D);
            pos[i] = pos[src];
        }
        memcpy(window_k(c, layer, head, seq), tk, sizeof(float) * (size_t)((n_keep - idx) * D));
        memcpy(window_v(c, layer, head, seq), tv, sizeof(float) * (size_t)((n_keep - idx) * D));
    }
    c->qlen[hi] = (int32_t)idx;
    c->len[hi] = (int32_t)n_keep;
    flush_window(c, layer, head, seq);
    release_pages(c, layer, head, seq, c->qlen[hi], oq);
    release_positions(c, layer, head, seq, n_keep, len);
    free(kept), free(tk), free(tv);
    return LA_OK;
}

la_status la_kv_cache_compact(la_kv_cache *c, int64_t layer, int64_t head, int64_t seq, const int32_t *slots,
                              int64_t n_drop) {
    la_status st = check_index(c, "la_kv_cache_compact", layer, head, false, seq);
    if (st) return st;
    if (n_drop < 0) return la_fail(LA_ERR_ARGUMENT, "la_kv_cache_compact: n_drop is %lld; must be >= 0", (long long)n_drop);
    if (n_drop && !slots) return la_fail(LA_ERR_NULL, "la_kv_cache_compact: slots is NULL");
    if ((st = la_check_aligned(slots, sizeof *slots, "la_kv_cache_compact: slots"))) return st;
    int32_t *len = &c->len[head_index(c, layer, head, seq)];
    /* before reading slots: more than the head holds cannot be strictly increasing indices below it */
    if (n_drop > *len)
        return la_fail(LA_ERR_ARGUMENT, "la_kv_cache_compact: n_drop %lld is more than the %d entries held",
                       (long long)n_drop, *len);
    for (int64_t i = 0; i < n_drop; i++) {
        if (slots[i] < 0 || slots[i] >= *len)
            return la_fail(LA_ERR_ARGUMENT, "la_kv_cache_compact: slots[%lld] = %d is outside [0, %d)", (long long)i,
                           slots[i], *len);
        if (i && slots[i] <= slots[i - 1])
            return la_fail(LA_ERR_ARGUMENT, "la_kv_cache_compact: slots[%lld] = %d does not follow %d; slots must be "
                           "strictly increasing",
                           (long long)i, slots[i], slots[i - 1]);
    }
    if (!n_drop) return la_succeed();
    if (quantised(c)) {
        if ((st = compact_quantised(c, layer, head, seq, slots, n_drop))) return st;
        return la_succeed();
    }
    int32_t *pos = positions_of(c, layer, head, seq);
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
    release_pages(c, layer, head, seq, w, old);
    release_positions(c, layer, head, seq, w, old);
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
                const int64_t i = head_index(c, l, h, s);
                release_pages(c, l, h, s, 0, quantised(c) ? c->qlen[i] : c->len[i]);
                release_positions(c, l, h, s, 0, c->len[i]);
                c->len[i] = 0;
                if (quantised(c)) c->qlen[i] = 0;
            }
    if (seq < 0 || c->p.max_seqs == 1) /* every region empty: also the steps two neighbours shared */
        for (int64_t l = 0; l < c->p.n_layers; l++) {
            release(c->k[l], 0, c->kres, c->kgran);
            release(c->v[l], 0, c->vres, c->vgran);
        }
    return la_succeed();
}

size_t la_kv_cache_bytes(const la_kv_cache *c) {
    if (!c) return 0;
    size_t bytes = 0;
    const int64_t n = c->p.n_layers * c->p.n_kv_heads * c->p.max_seqs;
    const size_t window = (size_t)(c->f.window_rows * c->p.head_dim) * sizeof(float) * 2;
    for (int64_t i = 0; i < n; i++) {
        if (!quantised(c)) {
            bytes += (size_t)pages_for(c, c->len[i]) * (c->kpage + c->vpage);
            continue;
        }
        /* quantised pages with their scales, and the window's rows (all of
         * them once the head holds an entry: they are its memory) */
        bytes += (size_t)pages_for(c, c->qlen[i]) * (c->kpage + c->vpage) + (c->len[i] ? window : 0);
    }
    return bytes;
}
