/* The paged KV cache (la_kv_cache) against a dense reference cache: appends
 * of random sizes across page boundaries read back exactly (after rounding
 * to the page dtype) with their positions; decode over the cache's views
 * equals decode over the dense copy; compaction keeps the kept entries'
 * contents and positions, makes per-head lengths ragged, frees the pages
 * it empties (bytes accounted, and the OS pages no longer resident); bad
 * arguments rejected with nothing changed. */
#include "base/base.h"
#include "longattn.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct {
    la_kv_cache_params p;
    float *k, *v;   /* [layers][heads][seqs][max_tokens][D], rounded to the page dtype */
    int32_t *pos;   /* [layers][heads][seqs][max_tokens] */
    int64_t *len;   /* [layers][heads][seqs] */
} dense;

static int64_t at(const dense *d, int64_t l, int64_t h, int64_t s) {
    return (l * d->p.n_kv_heads + h) * d->p.max_seqs + s;
}

static float round_to(la_dtype t, float x) {
    char buf[4];
    la_store_f32(buf, t, 0, x);
    return la_load_f32(buf, t, 0);
}

static void dense_append(dense *d, int64_t l, int64_t s, int64_t n, const float *k, const float *v, const int32_t *pos) {
    const int64_t H = d->p.n_kv_heads, D = d->p.head_dim, T = d->p.max_tokens;
    for (int64_t h = 0; h < H; h++) {
        int64_t *len = &d->len[at(d, l, h, s)];
        for (int64_t i = 0; i < n; i++) {
            for (int64_t e = 0; e < D; e++) {
                d->k[(at(d, l, h, s) * T + *len + i) * D + e] = round_to(d->p.dtype, k[(i * H + h) * D + e]);
                d->v[(at(d, l, h, s) * T + *len + i) * D + e] = round_to(d->p.dtype, v[(i * H + h) * D + e]);
            }
            d->pos[at(d, l, h, s) * T + *len + i] = pos[i];
        }
        *len += n;
    }
}

/* Every head of every (layer, seq): length, contents and positions. */
static void check_same(const la_kv_cache *c, const dense *d, const char *when) {
    const int64_t H = d->p.n_kv_heads, D = d->p.head_dim, T = d->p.max_tokens;
    float *k = tu_alloc(sizeof(float) * (size_t)(T * D)), *v = tu_alloc(sizeof(float) * (size_t)(T * D));
    int64_t bad = 0;
    size_t pages = 0;
    for (int64_t l = 0; l < d->p.n_layers; l++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t s = 0; s < d->p.max_seqs; s++) {
                const int64_t n = d->len[at(d, l, h, s)];
                pages += (size_t)((n + d->p.page_size - 1) / d->p.page_size);
                if (la_kv_cache_len(c, l, h, s) != n) {
                    bad++;
                    continue;
                }
                const int32_t *pos;
                int64_t np;
                TU_EXPECT_STATUS(la_kv_cache_positions(c, l, h, s, &pos, &np), LA_OK);
                TU_EXPECT_STATUS(la_kv_cache_read(c, l, h, s, 0, n, k, v), LA_OK);
                bad += np != n || memcmp(pos, d->pos + at(d, l, h, s) * T, sizeof(int32_t) * (size_t)n) != 0;
                bad += memcmp(k, d->k + at(d, l, h, s) * T * D, sizeof(float) * (size_t)(n * D)) != 0;
                bad += memcmp(v, d->v + at(d, l, h, s) * T * D, sizeof(float) * (size_t)(n * D)) != 0;
            }
    tu_check(bad == 0, "%s (%s): %lld heads differ from the dense cache", when, la_dtype_name(d->p.dtype), (long long)bad);
    const size_t want = pages * (size_t)(d->p.page_size * D) * la_dtype_size(d->p.dtype) * 2;
    tu_check(la_kv_cache_bytes(c) == want, "%s: %zu bytes accounted, want %zu", when, la_kv_cache_bytes(c), want);
    free(k), free(v);
}

/* Decode of G query heads per KV head over a view of (layer, head or all,
 * seq 0..seqs) against decode over the dense rows of the same entries. */
static void check_decode(la_context *ctx, const la_kv_cache *c, const dense *d, int64_t l, int64_t head, uint64_t *rng) {
    const int64_t Hkv = head < 0 ? d->p.n_kv_heads : 1, G = 2, H = Hkv * G, D = d->p.head_dim, B = d->p.max_seqs;
    const int64_t T = d->p.max_tokens;
    la_kv_view view;
    TU_EXPECT_STATUS(la_kv_cache_view(c, l, head, 0, B, &view), LA_OK);
    float *q = tu_alloc(sizeof(float) * (size_t)(B * H * D)), *o1 = tu_alloc(sizeof(float) * (size_t)(B * H * D));
    float *o2 = tu_alloc(sizeof(float) * (size_t)(B * H * D));
    float *kd = tu_alloc(sizeof(float) * (size_t)(B * T * Hkv * D)), *vd = tu_alloc(sizeof(float) * (size_t)(B * T * Hkv * D));
    int32_t lens[8];
    tu_fill(rng, q, LA_F32, B * H * D, -1, 1);
    for (int64_t s = 0; s < B; s++) {
        lens[s] = (int32_t)d->len[at(d, l, head < 0 ? 0 : head, s)];
        for (int64_t t = 0; t < lens[s]; t++)
            for (int64_t h = 0; h < Hkv; h++) {
                const int64_t src = (at(d, l, head < 0 ? h : head, s) * T + t) * D, dst = ((s * T + t) * Hkv + h) * D;
                memcpy(kd + dst, d->k + src, sizeof(float) * (size_t)D);
                memcpy(vd + dst, d->v + src, sizeof(float) * (size_t)D);
            }
    }
    la_attention_params p = la_attention_params_default();
    la_tensor qt = la_tensor_contiguous(q, LA_F32, 4, (int64_t[]){B, 1, H, D});
    la_tensor ot1 = la_tensor_contiguous(o1, LA_F32, 4, (int64_t[]){B, 1, H, D});
    la_tensor ot2 = la_tensor_contiguous(o2, LA_F32, 4, (int64_t[]){B, 1, H, D});
    la_tensor kt = la_tensor_contiguous(kd, LA_F32, 4, (int64_t[]){B, T, Hkv, D});
    la_tensor vt = la_tensor_contiguous(vd, LA_F32, 4, (int64_t[]){B, T, Hkv, D});
    la_kv_layout dl = {.seqlens_k = lens};
    TU_EXPECT_STATUS(la_attention_decode(ctx, &p, &qt, &view.k, &view.v, &view.layout, &ot1, NULL), LA_OK);
    TU_EXPECT_STATUS(la_attention_decode(ctx, &p, &qt, &kt, &vt, &dl, &ot2, NULL), LA_OK);
    double worst = 0;
    for (int64_t i = 0; i < B * H * D; i++) worst = fmax(worst, fabs((double)o1[i] - o2[i]));
    /* the same values widened to f32 in the same order: the same bits */
    tu_check(worst == 0, "decode over the view of layer %lld head %lld (%s) differs from dense by %.3g", (long long)l,
             (long long)head, la_dtype_name(d->p.dtype), worst);
    free(q), free(o1), free(o2), free(kd), free(vd);
}

/* A cache of p's parameters and its empty dense twin (freed by dense_free). */
static la_kv_cache *make_pair(const la_kv_cache_params *p, dense *d) {
    la_kv_cache *c = NULL;
    TU_EXPECT_STATUS(la_kv_cache_create(p, &c), LA_OK);
    const int64_t heads = p->n_layers * p->n_kv_heads * p->max_seqs, T = p->max_tokens;
    *d = (dense){.p = *p, .k = tu_alloc(sizeof(float) * (size_t)(heads * T * p->head_dim)),
                 .v = tu_alloc(sizeof(float) * (size_t)(heads * T * p->head_dim)),
                 .pos = tu_alloc(sizeof(int32_t) * (size_t)(heads * T)), .len = calloc((size_t)heads, sizeof(int64_t))};
    return c;
}
static void dense_free(dense *d) { free(d->k), free(d->v), free(d->pos), free(d->len); }

static void run_random(la_context *ctx, la_dtype dt, uint64_t *rng) {
    la_kv_cache_params p = la_kv_cache_params_default();
    p.n_layers = 2, p.n_kv_heads = 3, p.head_dim = 16, p.page_size = 5, p.max_tokens = 37, p.max_seqs = 2;
    p.dtype = dt;
    dense d;
    la_kv_cache *c = make_pair(&p, &d);
    if (!c) {
        dense_free(&d);
        return;
    }
    const int64_t H = p.n_kv_heads, D = p.head_dim, T = p.max_tokens, heads = p.n_layers * H * p.max_seqs;
    float *k = tu_alloc(sizeof(float) * (size_t)(T * H * D)), *v = tu_alloc(sizeof(float) * (size_t)(T * H * D));
    int32_t pos[64];
    check_same(c, &d, "empty");
    /* appends of 0..11 rows until each (layer, seq) holds 30 */
    for (int round = 0; round < 12; round++)
        for (int64_t l = 0; l < p.n_layers; l++)
            for (int64_t s = 0; s < p.max_seqs; s++) {
                const int64_t have = d.len[at(&d, l, 0, s)], n = tu_randint(rng, 0, 11);
                const int64_t take = n < 30 - have ? n : 30 - have;
                tu_fill(rng, k, LA_F32, take * H * D, -2, 2);
                tu_fill(rng, v, LA_F32, take * H * D, -2, 2);
                for (int64_t i = 0; i < take; i++) pos[i] = (int32_t)(1000 * s + have + i);
                TU_EXPECT_STATUS(la_kv_cache_append(c, l, s, take, k, v, pos), LA_OK);
                dense_append(&d, l, s, take, k, v, pos);
            }
    check_same(c, &d, "after appends");
    /* all heads at once, read back as [n, H, D] */
    {
        const int64_t n = d.len[at(&d, 1, 0, 1)];
        TU_EXPECT_STATUS(la_kv_cache_read(c, 1, -1, 1, 0, n, k, v), LA_OK);
        int64_t bad = 0;
        for (int64_t t = 0; t < n; t++)
            for (int64_t h = 0; h < H; h++)
                bad += memcmp(k + (t * H + h) * D, d.k + (at(&d, 1, h, 1) * T + t) * D, sizeof(float) * (size_t)D) != 0;
        tu_check(bad == 0, "read of all heads: %lld rows differ", (long long)bad);
    }
    for (int64_t l = 0; l < p.n_layers; l++) check_decode(ctx, c, &d, l, -1, rng);

    /* compaction of head 1 of layer 0, both sequences: random slots */
    for (int64_t s = 0; s < p.max_seqs; s++) {
        const int64_t n = d.len[at(&d, 0, 1, s)];
        int32_t slots[64];
        int64_t nd = 0;
        for (int64_t t = 0; t < n; t++)
            if (tu_uniform(rng, 0, 1) < 0.6) slots[nd++] = (int32_t)t;
        TU_EXPECT_STATUS(la_kv_cache_compact(c, 0, 1, s, slots, nd), LA_OK);
        int64_t w = 0, next = 0, base = at(&d, 0, 1, s) * T;
        for (int64_t t = 0; t < n; t++) {
            if (next < nd && slots[next] == t) {
                next++;
                continue;
            }
            memmove(d.k + (base + w) * D, d.k + (base + t) * D, sizeof(float) * (size_t)D);
            memmove(d.v + (base + w) * D, d.v + (base + t) * D, sizeof(float) * (size_t)D);
            d.pos[base + w] = d.pos[base + t];
            w++;
        }
        d.len[at(&d, 0, 1, s)] = w;
    }
    check_same(c, &d, "after compaction");
    la_kv_view view;
    TU_EXPECT_STATUS(la_kv_cache_view(c, 0, -1, 0, 2, &view), LA_ERR_ARGUMENT);
    tu_check(strstr(la_last_error(), "ragged") != NULL, "ragged view message: %s", la_last_error());
    for (int64_t h = 0; h < H; h++) check_decode(ctx, c, &d, 0, h, rng);
    /* appends go after each head's own end */
    tu_fill(rng, k, LA_F32, 4 * H * D, -2, 2);
    tu_fill(rng, v, LA_F32, 4 * H * D, -2, 2);
    for (int i = 0; i < 4; i++) pos[i] = 500 + i;
    TU_EXPECT_STATUS(la_kv_cache_append(c, 0, 0, 4, k, v, pos), LA_OK);
    dense_append(&d, 0, 0, 4, k, v, pos);
    check_same(c, &d, "append after compaction");
    for (int64_t h = 0; h < H; h++) check_decode(ctx, c, &d, 0, h, rng);

    TU_EXPECT_STATUS(la_kv_cache_reset(c, 1), LA_OK);
    for (int64_t l = 0; l < p.n_layers; l++)
        for (int64_t h = 0; h < H; h++) d.len[at(&d, l, h, 1)] = 0;
    check_same(c, &d, "after reset of seq 1");
    TU_EXPECT_STATUS(la_kv_cache_reset(c, -1), LA_OK);
    memset(d.len, 0, sizeof(int64_t) * (size_t)heads);
    check_same(c, &d, "after reset of all");
    la_kv_cache_destroy(c);
    dense_free(&d), free(k), free(v);
}

/* Pages emptied by compaction leave memory: with 16 KB pages, the OS pages
 * of a head's dropped pages are no longer resident. */
static void check_pages_freed(void) {
    la_kv_cache_params p = la_kv_cache_params_default();
    p.head_dim = 64, p.page_size = 64, p.max_tokens = 256, p.dtype = LA_F32;
    la_kv_cache *c = NULL;
    TU_EXPECT_STATUS(la_kv_cache_create(&p, &c), LA_OK);
    if (!c) return;
    float *k = tu_alloc(sizeof(float) * 256 * 64);
    int32_t pos[256], slots[256];
    for (int i = 0; i < 256; i++) pos[i] = i, slots[i] = i + 70;
    tu_fill(&(uint64_t){7}, k, LA_F32, 256 * 64, -1, 1);
    TU_EXPECT_STATUS(la_kv_cache_append(c, 0, 0, 256, k, k, pos), LA_OK);
    la_kv_view view;
    TU_EXPECT_STATUS(la_kv_cache_view(c, 0, 0, 0, 1, &view), LA_OK);
    const size_t os = (size_t)sysconf(_SC_PAGESIZE), bytes = 256 * 64 * sizeof(float);
    unsigned char res[64] = {0};
    size_t n_os = bytes / os;
    if (n_os > sizeof res) n_os = sizeof res;
    mincore(view.k.data, n_os * os, res);
    int resident = 0;
    for (size_t i = 0; i < n_os; i++) resident += res[i] & 1;
    tu_check(resident == (int)n_os, "%d of %zu OS pages resident after filling", resident, n_os);
    TU_EXPECT_STATUS(la_kv_cache_compact(c, 0, 0, 0, slots, 186), LA_OK); /* keep 70: two pages */
    tu_check(la_kv_cache_bytes(c) == 2 * 64 * 64 * sizeof(float) * 2, "bytes %zu after compaction to 70",
             la_kv_cache_bytes(c));
    mincore(view.k.data, n_os * os, res);
    const size_t kept = 2 * 64 * 64 * sizeof(float) / os;
    int freed_resident = 0;
    for (size_t i = kept; i < n_os; i++) freed_resident += res[i] & 1;
    tu_check(freed_resident == 0, "%d OS pages of dropped cache pages still resident", freed_resident);
    la_kv_cache_destroy(c);
    free(k);
}

/* OS pages of [p, p + bytes) resident (p page-aligned). */
static size_t resident_pages(const void *p, size_t bytes) {
    const size_t os = (size_t)sysconf(_SC_PAGESIZE), n = bytes / os;
    unsigned char *res = tu_alloc(n ? n : 1);
    size_t r = 0;
    if (mincore((void *)p, n * os, res) == 0)
        for (size_t i = 0; i < n; i++) r += res[i] & 1;
    free(res);
    return r;
}

/* Regions of 2 MB or more (max_tokens x page bytes) commit and free in
 * 2 MB steps on huge pages (kv_cache.c). f32 at D 128 is 512 bytes a row:
 * a region of 9000 rows is 4.6 MB, so sequence 1's region starts inside a
 * step that sequence 0's ends in. Appends across the steps read back
 * exactly and decode as the dense cache; compaction frees the whole steps
 * it empties, not the shared one; a reset of everything leaves nothing
 * resident, and the cache takes appends again. */
static void check_huge_regions(la_context *ctx, uint64_t *rng) {
    la_kv_cache_params p = la_kv_cache_params_default();
    p.n_layers = 1, p.n_kv_heads = 1, p.head_dim = 128, p.page_size = 16, p.max_tokens = 9000, p.max_seqs = 2;
    p.dtype = LA_F32;
    dense d;
    la_kv_cache *c = make_pair(&p, &d);
    if (!c) {
        dense_free(&d);
        return;
    }
    enum { CHUNK = 300, FILL = 8900 };
    const int64_t D = p.head_dim, T = p.max_tokens;
    const size_t row = (size_t)D * sizeof(float), step = (size_t)2 << 20, region = (size_t)T * row;
    float *k = tu_alloc(sizeof(float) * CHUNK * (size_t)D), *v = tu_alloc(sizeof(float) * CHUNK * (size_t)D);
    int32_t *pos = tu_alloc(sizeof(int32_t) * FILL);
    for (int64_t s = 0; s < p.max_seqs; s++)
        while (d.len[s] < FILL) {
            int64_t n = tu_randint(rng, 1, CHUNK);
            if (n > FILL - d.len[s]) n = FILL - d.len[s];
            tu_fill(rng, k, LA_F32, n * D, -2, 2);
            tu_fill(rng, v, LA_F32, n * D, -2, 2);
            for (int64_t i = 0; i < n; i++) pos[i] = (int32_t)(d.len[s] + i);
            TU_EXPECT_STATUS(la_kv_cache_append(c, 0, s, n, k, v, pos), LA_OK);
            dense_append(&d, 0, s, n, k, v, pos);
        }
    check_same(c, &d, "2 MB steps: after appends");
    check_decode(ctx, c, &d, 0, -1, rng);
    la_kv_view view;
    TU_EXPECT_STATUS(la_kv_cache_view(c, 0, 0, 0, p.max_seqs, &view), LA_OK);
    const char *base = view.k.data;
    tu_check(((uintptr_t)base & (step - 1)) == 0, "a cache of 4.6 MB regions is not 2 MB-aligned: %p", (void *)base);
    /* sequence 0 keeps every 89th row from a random one (100 rows): its step
     * [2 MB, 4 MB) empties; [4 MB, 6 MB) holds sequence 1's first rows too */
    int32_t *slots = pos;
    int64_t nd = 0;
    const int64_t first = tu_randint(rng, 0, 88);
    for (int64_t t = 0; t < FILL; t++)
        if (t % 89 != first) slots[nd++] = (int32_t)t;
    TU_EXPECT_STATUS(la_kv_cache_compact(c, 0, 0, 0, slots, nd), LA_OK);
    int64_t w = 0, next = 0;
    for (int64_t t = 0; t < FILL; t++) {
        if (next < nd && slots[next] == t) {
            next++;
            continue;
        }
        memmove(d.k + w * D, d.k + t * D, row);
        memmove(d.v + w * D, d.v + t * D, row);
        d.pos[w++] = d.pos[t];
    }
    d.len[0] = w;
    check_same(c, &d, "2 MB steps: after compaction");
    check_decode(ctx, c, &d, 0, -1, rng);
    tu_check(resident_pages(base + step, step) == 0, "%zu OS pages resident in the step compaction emptied",
             resident_pages(base + step, step));
    TU_EXPECT_STATUS(la_kv_cache_reset(c, -1), LA_OK);
    tu_check(resident_pages(base, 2 * region) == 0, "%zu OS pages resident after a reset of every sequence",
             resident_pages(base, 2 * region));
    d.len[0] = d.len[1] = 0;
    check_same(c, &d, "2 MB steps: after reset");
    for (int64_t s = 0; s < p.max_seqs; s++) {
        tu_fill(rng, k, LA_F32, 50 * D, -2, 2);
        tu_fill(rng, v, LA_F32, 50 * D, -2, 2);
        for (int i = 0; i < 50; i++) pos[i] = 7 * i;
        TU_EXPECT_STATUS(la_kv_cache_append(c, 0, s, 50, k, v, pos), LA_OK);
        dense_append(&d, 0, s, 50, k, v, pos);
    }
    check_same(c, &d, "2 MB steps: appends after reset");
    la_kv_cache_destroy(c);
    dense_free(&d), free(k), free(v), free(pos);
}

static void check_errors(void) {
    la_kv_cache_params p = la_kv_cache_params_default();
    la_kv_cache *c = (la_kv_cache *)&p;
    TU_EXPECT_STATUS(la_kv_cache_create(NULL, &c), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_kv_cache_create(&p, NULL), LA_ERR_NULL);
    const struct { int64_t *f; int64_t bad; la_status want; } cases[] = {
        {&p.n_layers, 0, LA_ERR_SHAPE}, {&p.n_kv_heads, -1, LA_ERR_SHAPE}, {&p.head_dim, 12, LA_ERR_SHAPE},
        {&p.head_dim, 520, LA_ERR_SHAPE}, {&p.page_size, 0, LA_ERR_SHAPE}, {&p.max_tokens, 0, LA_ERR_SHAPE},
        {&p.max_seqs, 0, LA_ERR_SHAPE}, {&p.max_seqs, (int64_t)1 << 40, LA_ERR_OVERFLOW}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        la_kv_cache_params q = p;
        *(int64_t *)((char *)&q + ((char *)cases[i].f - (char *)&p)) = cases[i].bad;
        c = (la_kv_cache *)&p;
        TU_EXPECT_STATUS(la_kv_cache_create(&q, &c), cases[i].want);
        tu_check(c == NULL, "case %zu: a failed create left out set", i);
    }
    la_kv_cache_params q = p;
    q.dtype = (la_dtype)7;
    TU_EXPECT_STATUS(la_kv_cache_create(&q, &c), LA_ERR_DTYPE);

    p.n_layers = 2, p.n_kv_heads = 2, p.head_dim = 8, p.page_size = 4, p.max_tokens = 10, p.max_seqs = 1;
    TU_EXPECT_STATUS(la_kv_cache_create(&p, &c), LA_OK);
    if (!c) return;
    float k[11 * 2 * 8] = {0};
    int32_t pos[11] = {0}, slots[3] = {2, 1, 0};
    TU_EXPECT_STATUS(la_kv_cache_append(c, 2, 0, 1, k, k, pos), LA_ERR_ARGUMENT);
    TU_EXPECT_STATUS(la_kv_cache_append(c, -1, 0, 1, k, k, pos), LA_ERR_ARGUMENT);
    TU_EXPECT_STATUS(la_kv_cache_append(c, 0, 1, 1, k, k, pos), LA_ERR_ARGUMENT);
    TU_EXPECT_STATUS(la_kv_cache_append(c, 0, 0, -1, k, k, pos), LA_ERR_ARGUMENT);
    TU_EXPECT_STATUS(la_kv_cache_append(c, 0, 0, 1, NULL, k, pos), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_kv_cache_append(c, 0, 0, 1, k, k, NULL), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_kv_cache_append(c, 0, 0, 11, k, k, pos), LA_ERR_ARGUMENT);
    TU_EXPECT_STATUS(la_kv_cache_append(NULL, 0, 0, 1, k, k, pos), LA_ERR_NULL);
    tu_check(la_kv_cache_len(c, 0, 0, 0) == 0 && la_kv_cache_bytes(c) == 0, "a refused append changed the cache");
    TU_EXPECT_STATUS(la_kv_cache_append(c, 0, 0, 6, k, k, pos), LA_OK);
    TU_EXPECT_STATUS(la_kv_cache_append(c, 0, 0, 5, k, k, pos), LA_ERR_ARGUMENT); /* 6 + 5 > 10 */
    tu_check(strstr(la_last_error(), "do not fit") != NULL, "full message: %s", la_last_error());
    TU_EXPECT_STATUS(la_kv_cache_compact(c, 0, 0, 0, slots, 3), LA_ERR_ARGUMENT); /* decreasing */
    slots[0] = 3, slots[1] = 6;
    TU_EXPECT_STATUS(la_kv_cache_compact(c, 0, 0, 0, slots, 2), LA_ERR_ARGUMENT); /* 6 >= len */
    TU_EXPECT_STATUS(la_kv_cache_compact(c, 0, 2, 0, slots, 1), LA_ERR_ARGUMENT); /* head */
    TU_EXPECT_STATUS(la_kv_cache_compact(c, 0, 0, 0, NULL, 1), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_kv_cache_compact(c, 0, 0, 0, slots, -1), LA_ERR_ARGUMENT);
    tu_check(la_kv_cache_len(c, 0, 0, 0) == 6, "a refused compaction changed the length");
    float out[16 * 8];
    TU_EXPECT_STATUS(la_kv_cache_read(c, 0, 0, 0, 4, 3, out, out), LA_ERR_ARGUMENT);
    TU_EXPECT_STATUS(la_kv_cache_read(c, 0, -2, 0, 0, 1, out, out), LA_ERR_ARGUMENT);
    TU_EXPECT_STATUS(la_kv_cache_read(c, 0, 0, 0, -1, 1, out, out), LA_ERR_ARGUMENT);
    la_kv_view view;
    TU_EXPECT_STATUS(la_kv_cache_view(c, 0, -1, 0, 2, &view), LA_ERR_ARGUMENT);
    TU_EXPECT_STATUS(la_kv_cache_view(c, 0, -1, 0, 1, NULL), LA_ERR_NULL);
    const int32_t *pp;
    int64_t n;
    TU_EXPECT_STATUS(la_kv_cache_positions(c, 0, 0, 0, NULL, &n), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_kv_cache_positions(c, 0, 0, 0, &pp, NULL), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_kv_cache_reset(c, 1), LA_ERR_ARGUMENT);
    TU_EXPECT_STATUS(la_kv_cache_reset(NULL, 0), LA_ERR_NULL);
    tu_check(la_kv_cache_len(c, 0, 5, 0) == -1 && la_kv_cache_len(NULL, 0, 0, 0) == -1, "len of a bad index");
    tu_check(la_kv_cache_bytes(NULL) == 0 && la_kv_cache_params_of(NULL) == NULL, "NULL cache queries");
    tu_check(la_kv_cache_params_of(c)->page_size == 4, "params read back");
    la_kv_cache_destroy(c);
    la_kv_cache_destroy(NULL);
}

/* StreamingLLM: parsing, the entries it keeps on 40 appended tokens, and
 * decode over what it kept equals decode over the full cache with the same
 * sinks and window as a mask. */
static void check_streaming(la_context *ctx, uint64_t *rng) {
    la_kv_policy pol;
    TU_EXPECT_STATUS(la_kv_policy_parse("full", &pol), LA_OK);
    tu_check(pol.kind == LA_KV_POLICY_FULL, "full parsed as %d", (int)pol.kind);
    TU_EXPECT_STATUS(la_kv_policy_parse("streaming:12", &pol), LA_OK);
    tu_check(pol.kind == LA_KV_POLICY_STREAMING && pol.budget == 12 && pol.sinks == LA_KV_STREAMING_SINKS,
             "streaming:12 parsed wrong");
    const char *bad[] = {"", "streaming", "streaming:", "streaming:4", "streaming:-3", "streaming:12x", "lru:12",
                         "streaming:99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        la_kv_policy q;
        TU_EXPECT_STATUS(la_kv_policy_parse(bad[i], &q), LA_ERR_ARGUMENT);
        tu_check(strstr(la_last_error(), "KV policy") != NULL, "'%s': message '%s'", bad[i], la_last_error());
    }
    TU_EXPECT_STATUS(la_kv_policy_parse(NULL, &pol), LA_ERR_NULL);

    la_kv_cache_params p = la_kv_cache_params_default();
    p.n_kv_heads = 2, p.head_dim = 16, p.page_size = 4, p.max_tokens = 64, p.dtype = LA_F32;
    la_kv_cache *c = NULL;
    TU_EXPECT_STATUS(la_kv_cache_create(&p, &c), LA_OK);
    if (!c) return;
    enum { N = 40, H = 2, D = 16, G = 3 };
    float *k = tu_alloc(sizeof(float) * N * H * D), *v = tu_alloc(sizeof(float) * N * H * D);
    int32_t pos[N];
    for (int i = 0; i < N; i++) pos[i] = i;
    tu_fill(rng, k, LA_F32, N * H * D, -2, 2);
    tu_fill(rng, v, LA_F32, N * H * D, -2, 2);
    TU_EXPECT_STATUS(la_kv_cache_append(c, 0, 0, N, k, v, pos), LA_OK);
    TU_EXPECT_STATUS(la_kv_policy_parse("streaming:12", &pol), LA_OK);
    TU_EXPECT_STATUS(la_kv_cache_apply_policy(c, &pol, 0, 0), LA_OK);
    bool kept_right = true;
    float row[D];
    for (int h = 0; h < H; h++) {
        const int32_t *pp;
        int64_t n;
        TU_EXPECT_STATUS(la_kv_cache_positions(c, 0, h, 0, &pp, &n), LA_OK);
        kept_right &= n == 12;
        for (int64_t i = 0; kept_right && i < n; i++) {
            const int32_t want = i < 4 ? (int32_t)i : (int32_t)(N - 12 + i);
            kept_right &= pp[i] == want;
            la_kv_cache_read(c, 0, h, 0, i, 1, row, NULL);
            kept_right &= !memcmp(row, k + ((int64_t)want * H + h) * D, sizeof row);
        }
    }
    tu_check(kept_right, "streaming:12 did not keep positions 0..3 and 28..39 with their keys");
    tu_check(la_kv_cache_bytes(c) == 2 * 3 * 4 * D * sizeof(float) * 2, "bytes %zu after streaming:12",
             la_kv_cache_bytes(c));

    float q[H * G * D], o1[H * G * D], o2[H * G * D];
    tu_fill(rng, q, LA_F32, H * G * D, -1, 1);
    la_kv_view view;
    TU_EXPECT_STATUS(la_kv_cache_view(c, 0, -1, 0, 1, &view), LA_OK);
    la_attention_params ap = la_attention_params_default();
    ap.causal = 1;
    la_tensor qt = la_tensor_contiguous(q, LA_F32, 4, (int64_t[]){1, 1, H * G, D});
    la_tensor ot1 = la_tensor_contiguous(o1, LA_F32, 4, (int64_t[]){1, 1, H * G, D});
    la_tensor ot2 = la_tensor_contiguous(o2, LA_F32, 4, (int64_t[]){1, 1, H * G, D});
    TU_EXPECT_STATUS(la_attention_decode(ctx, &ap, &qt, &view.k, &view.v, &view.layout, &ot1, NULL), LA_OK);
    la_tensor kt = la_tensor_contiguous(k, LA_F32, 4, (int64_t[]){1, N, H, D});
    la_tensor vt = la_tensor_contiguous(v, LA_F32, 4, (int64_t[]){1, N, H, D});
    ap.sinks = 4, ap.window_left = 12 - 4 - 1; /* the last query sees keys 0..3 and 32..39 */
    TU_EXPECT_STATUS(la_attention_decode(ctx, &ap, &qt, &kt, &vt, NULL, &ot2, NULL), LA_OK);
    double worst = 0;
    for (int i = 0; i < H * G * D; i++) worst = fmax(worst, fabs((double)o1[i] - o2[i]));
    tu_check(worst < 1e-5, "decode over the streaming cache differs from the masked full cache by %.3g", worst);
    la_kv_policy badp = {.kind = LA_KV_POLICY_STREAMING, .budget = 3, .sinks = 4};
    TU_EXPECT_STATUS(la_kv_cache_apply_policy(c, &badp, 0, 0), LA_ERR_ARGUMENT);
    TU_EXPECT_STATUS(la_kv_cache_apply_policy(c, &pol, 1, 0), LA_ERR_ARGUMENT);
    TU_EXPECT_STATUS(la_kv_cache_apply_policy(NULL, &pol, 0, 0), LA_ERR_NULL);
    la_kv_cache_destroy(c);
    free(k), free(v);
}

/* la_kv_cache_decode on ragged heads (one call per KV head over its query
 * heads' slices) with ALiBi: query head h takes slope h, as on even heads.
 * Each KV head's call took slopes [0, G) before (outputs off by ~1e4 of
 * the tolerance on heads past the first group). float64 reference. */
static void check_decode_ragged_alibi(la_context *ctx, uint64_t *rng) {
    enum { HKV = 3, G = 2, H = HKV * G, DD = 16, N = 40 };
    la_kv_cache_params p = la_kv_cache_params_default();
    p.n_kv_heads = HKV, p.head_dim = DD, p.page_size = 8, p.max_tokens = 64, p.dtype = LA_F32;
    la_kv_cache *c = NULL;
    TU_EXPECT_STATUS(la_kv_cache_create(&p, &c), LA_OK);
    if (!c) return;
    float k[N * HKV * DD], v[N * HKV * DD], q[H * DD], out[H * DD], lse[H], slopes[H];
    int32_t pos[N];
    tu_fill(rng, k, LA_F32, N * HKV * DD, -1, 1);
    tu_fill(rng, v, LA_F32, N * HKV * DD, -1, 1);
    tu_fill(rng, q, LA_F32, H * DD, -1, 1);
    for (int i = 0; i < N; i++) pos[i] = i;
    for (int h = 0; h < H; h++) slopes[h] = 0.05f + 0.3f * (float)h;
    TU_EXPECT_STATUS(la_kv_cache_append(c, 0, 0, N, k, v, pos), LA_OK);
    const int32_t drop[3] = {2, 7, 30};
    TU_EXPECT_STATUS(la_kv_cache_compact(c, 0, 1, 0, drop, 3), LA_OK); /* head 1 holds 37, the others 40 */
    la_attention_params ap = la_attention_params_default();
    ap.causal = 1, ap.alibi_slopes = slopes;
    la_tensor tq = la_tensor_contiguous(q, LA_F32, 4, (int64_t[]){1, 1, H, DD});
    la_tensor to = la_tensor_contiguous(out, LA_F32, 4, (int64_t[]){1, 1, H, DD});
    la_tensor tl = la_tensor_contiguous(lse, LA_F32, 3, (int64_t[]){1, 1, H});
    TU_EXPECT_STATUS(la_kv_cache_decode(ctx, &ap, c, 0, 0, &tq, &to, &tl), LA_OK);
    double worst = 0;
    for (int h = 0; h < H; h++) {
        const int64_t len = la_kv_cache_len(c, 0, h / G, 0);
        float kh[N * DD], vh[N * DD];
        TU_EXPECT_STATUS(la_kv_cache_read(c, 0, h / G, 0, 0, len, kh, vh), LA_OK);
        double s[N], m = -INFINITY, z = 0, o[DD] = {0};
        for (int64_t j = 0; j < len; j++) {
            double dot = 0;
            for (int d = 0; d < DD; d++) dot += (double)q[h * DD + d] * kh[j * DD + d];
            s[j] = dot / sqrt((double)DD) - slopes[h] * (double)(len - 1 - j);
            m = fmax(m, s[j]);
        }
        for (int64_t j = 0; j < len; j++) {
            const double w = exp(s[j] - m);
            z += w;
            for (int d = 0; d < DD; d++) o[d] += w * vh[j * DD + d];
        }
        for (int d = 0; d < DD; d++) worst = fmax(worst, fabs(out[h * DD + d] - o[d] / z));
        worst = fmax(worst, fabs(lse[h] - (m + log(z))));
    }
    tu_check(worst < 1e-5, "ragged decode with ALiBi: off by %.3g", worst);
    la_kv_cache_destroy(c);
}

int main(void) {
    uint64_t rng = tu_seed();
    la_context *ctx;
    la_context_create(&ctx, 2);
    const la_dtype types[] = {LA_F32, LA_BF16, LA_F16};
    for (int i = 0; i < 3; i++) run_random(ctx, types[i], &rng);
    check_pages_freed();
    check_huge_regions(ctx, &rng);
    check_errors();
    check_streaming(ctx, &rng);
    check_decode_ragged_alibi(ctx, &rng);
    la_context_destroy(ctx);
    return tu_finish();
}
