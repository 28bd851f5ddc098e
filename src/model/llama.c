/* Llama-family forward pass (architectures `llama` and `qwen2`) on the
 * library's attention. Weights stay as the GGUF file has them (read into
 * memory on 2 MB pages where the OS grants them, else mapped); only the
 * small norm and bias vectors are widened to f32 at load. */
#include "longattn_model.h"

#include "base/base.h"
#include "model/sparse_heads.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    const la_gguf_tensor *wq, *wk, *wv, *wo, *gate, *up, *down;
    float *attn_norm, *ffn_norm, *bq, *bk, *bv; /* owned f32 copies; biases NULL unless qwen2 */
} layer;

struct la_model {
    la_model_config cfg;
    la_gguf *gguf;
    void *file_copy; /* the file on 2 MB pages (free), or NULL: la_gguf_open mapped it */
    la_tokenizer *tok;
    const la_gguf_tensor *tok_embd, *output;
    float *out_norm;
    layer *layers;
};

/* One layer's cache read back as f32 for prefill: rows [0, len) equal the
 * cache's entries [0, len), cap rows allocated. */
typedef struct {
    float *k, *v;
    int64_t cap, len;
} prefill_kv;

struct la_session {
    const la_model *m;
    la_context *ctx;
    int64_t max_ctx, pos, chunk;      /* chunk: scratch rows */
    la_kv_cache *kv;                  /* per layer, KV head: the keys (after RoPE) and values */
    la_kv_policy policy;              /* applied to each layer after its attention */
    la_sparse_choice sparse;          /* prefill's selector (LA_SPARSE_NONE: dense) */
    la_sparse_routing_state **routing; /* routing: per layer, made at its first prefill, kept across calls */
    float *head_gamma;                 /* NULL, or per (layer, head) coverage for topk (sparse_head_gamma) */
    double *head_score;                /* NULL, or the caller's sparse_head_score accumulators */
    int64_t *sp_listed, *sp_visible;   /* per layer: prefill key blocks computed / visible (la_session_sparse_counts) */
    void (*on_attention)(void *user, int64_t layer, const la_tensor *q, const la_tensor *k);
    void *on_attention_user;
    la_kv_policy_state *pstate;       /* h2o, snapkv, quest, duo: scores, bounds, ragged attention */
    bool prompt_open;                 /* la_session_prompt: evals continue one prompt */
    prefill_kv *pkv;                  /* [n_layer] with a mirror, else [1]: prefill's f32 K/V (reserve_prefill) */
    bool kv_mirror;                   /* pkv mirrors each layer's cache across chunks (full policy, float pages) */
    bool exact;                       /* f32 activations for one-row products (exact_decode) */
    int32_t *positions;               /* [chunk] positions of the chunk's tokens */
    float *x, *xn, *q, *kn, *vn, *att, *ffa, *ffb, *logits_tmp;
    float *rope_cs;                   /* [chunk][rope_dims/2][2] cos, sin of the chunk's positions */
};

/* ---------------------------------------------------------------- load */

static la_status find_tensor(const la_model *m, const char *name, int64_t ne0, int64_t ne1, bool optional,
                             const la_gguf_tensor **out) {
    const la_gguf_tensor *t = la_gguf_tensor_find(m->gguf, name);
    *out = t;
    if (!t) return optional ? LA_OK : la_fail(LA_ERR_FORMAT, "model tensor '%s' is missing", name);
    int64_t want_dims = ne1 > 0 ? 2 : 1;
    if (t->ne[0] != ne0 || (ne1 > 0 && t->ne[1] != ne1) || (ne1 <= 0 && t->ne[1] != 1) || t->ne[2] != 1 || t->ne[3] != 1)
        return la_fail(LA_ERR_FORMAT, "model tensor '%s' is [%lld, %lld, %lld]; expected %lld-d [%lld, %lld]", name,
                       (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)want_dims,
                       (long long)ne0, (long long)(ne1 > 0 ? ne1 : 1));
    return LA_OK;
}

static la_status vector_copy(const la_model *m, const char *name, int64_t n, bool optional, float **out) {
    const la_gguf_tensor *t;
    la_status st = find_tensor(m, name, n, 0, optional, &t);
    *out = NULL;
    if (st || !t) return st;
    *out = malloc(sizeof(float) * (size_t)n);
    if (!*out) return la_fail(LA_ERR_NOMEM, "could not allocate '%s'", name);
    la_dequantize_row(t->type, t->data, *out, n);
    return LA_OK;
}

static la_status meta_int(const la_gguf *g, const char *arch, const char *key, int64_t *out, int64_t fallback) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    if (!la_gguf_find(g, k)) {
        if (fallback < 0) return la_fail(LA_ERR_FORMAT, "metadata key '%s' is missing", k);
        *out = fallback;
        return LA_OK;
    }
    return la_gguf_get_int(g, k, out);
}

static la_status meta_f32(const la_gguf *g, const char *arch, const char *key, float *out, float fallback) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    if (!la_gguf_find(g, k)) {
        *out = fallback;
        return LA_OK;
    }
    return la_gguf_get_f32(g, k, out);
}

static la_status read_config(la_model *m) {
    la_model_config *c = &m->cfg;
    la_gguf_str arch;
    la_status st = la_gguf_get_str(m->gguf, "general.architecture", &arch);
    if (st) return st;
    snprintf(c->arch, sizeof c->arch, "%.*s", (int)(arch.len < 31 ? arch.len : 31), arch.data);
    bool llama = !strcmp(c->arch, "llama"), qwen2 = !strcmp(c->arch, "qwen2");
    if (!llama && !qwen2) return la_fail(LA_ERR_UNSUPPORTED, "architecture '%s' is not supported (llama, qwen2)", c->arch);
    const la_gguf *g = m->gguf;
    if ((st = meta_int(g, c->arch, "embedding_length", &c->n_embd, -1)) ||
        (st = meta_int(g, c->arch, "block_count", &c->n_layer, -1)) ||
        (st = meta_int(g, c->arch, "feed_forward_length", &c->n_ff, -1)) ||
        (st = meta_int(g, c->arch, "attention.head_count", &c->n_head, -1)) ||
        (st = meta_int(g, c->arch, "attention.head_count_kv", &c->n_head_kv, c->n_head)) ||
        (st = meta_int(g, c->arch, "context_length", &c->n_ctx_train, 2048)) ||
        (st = meta_f32(g, c->arch, "attention.layer_norm_rms_epsilon", &c->rms_eps, 1e-5f)) ||
        (st = meta_f32(g, c->arch, "rope.freq_base", &c->rope_theta, 10000.0f)))
        return st;
    if (c->n_embd <= 0 || c->n_layer <= 0 || c->n_layer > 4096 || c->n_head <= 0 || c->n_head_kv <= 0 ||
        c->n_ff <= 0 || c->n_embd % c->n_head || c->n_head % c->n_head_kv)
        return la_fail(LA_ERR_FORMAT, "inconsistent model sizes: embd %lld, layers %lld, heads %lld/%lld, ff %lld",
                       (long long)c->n_embd, (long long)c->n_layer, (long long)c->n_head, (long long)c->n_head_kv,
                       (long long)c->n_ff);
    /* a NaN, infinite or negative epsilon, or a base that is not a finite
     * number > 0, loaded and then gave NaN logits at every token */
    if (!(c->rms_eps >= 0) || !isfinite(c->rms_eps))
        return la_fail(LA_ERR_FORMAT, "attention.layer_norm_rms_epsilon is %g; must be finite and >= 0",
                       (double)c->rms_eps);
    if (!(c->rope_theta > 0) || !isfinite(c->rope_theta))
        return la_fail(LA_ERR_FORMAT, "rope.freq_base is %g; must be finite and > 0", (double)c->rope_theta);
    /* 0, or negative as an i32, loaded: a caller sizing its context by it
     * (the CLI's default --ctx) then had none, or -5 tokens */
    if (c->n_ctx_train < 1)
        return la_fail(LA_ERR_FORMAT, "context_length is %lld; must be >= 1", (long long)c->n_ctx_train);
    c->head_dim = c->n_embd / c->n_head;
    if ((st = meta_int(g, c->arch, "rope.dimension_count", &c->rope_dims, c->head_dim))) return st;
    if (c->rope_dims <= 0 || c->rope_dims > c->head_dim || c->rope_dims % 2)
        return la_fail(LA_ERR_FORMAT, "rope.dimension_count %lld does not fit head_dim %lld", (long long)c->rope_dims,
                       (long long)c->head_dim);
    c->rope_scale = 1.0f;
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", c->arch);
    la_gguf_str stype;
    if (la_gguf_find(g, key) && !la_gguf_get_str(g, key, &stype) && stype.len == 6 && !memcmp(stype.data, "linear", 6)) {
        if ((st = meta_f32(g, c->arch, "rope.scaling.factor", &c->rope_scale, 1.0f))) return st;
        if (!(c->rope_scale > 0) || !isfinite(c->rope_scale))
            return la_fail(LA_ERR_FORMAT, "rope.scaling.factor is %g; must be finite and > 0", (double)c->rope_scale);
    }
    c->rope_kind = qwen2 ? LA_ROPE_NEOX : LA_ROPE_NORM;
    c->qkv_bias = qwen2;
    return LA_OK;
}

static la_status load_weights(la_model *m) {
    la_model_config *c = &m->cfg;
    const int64_t E = c->n_embd, KV = c->n_head_kv * c->head_dim;
    la_status st;
    const la_gguf_tensor *emb = la_gguf_tensor_find(m->gguf, "token_embd.weight");
    if (!emb) return la_fail(LA_ERR_FORMAT, "model tensor 'token_embd.weight' is missing");
    c->n_vocab = emb->ne[1];
    if ((st = find_tensor(m, "token_embd.weight", E, c->n_vocab, false, &m->tok_embd)) ||
        (st = find_tensor(m, "output.weight", E, c->n_vocab, true, &m->output)) ||
        (st = vector_copy(m, "output_norm.weight", E, false, &m->out_norm)))
        return st;
    c->tied_output = m->output == NULL;
    if (!m->output) m->output = m->tok_embd;
    m->layers = calloc((size_t)c->n_layer, sizeof *m->layers);
    if (!m->layers) return la_fail(LA_ERR_NOMEM, "could not allocate layers");
    for (int64_t l = 0; l < c->n_layer; l++) {
        layer *L = &m->layers[l];
        char n[96];
#define NAME(s) (snprintf(n, sizeof n, "blk.%lld." s, (long long)l), n)
        if ((st = vector_copy(m, NAME("attn_norm.weight"), E, false, &L->attn_norm)) ||
            (st = vector_copy(m, NAME("ffn_norm.weight"), E, false, &L->ffn_norm)) ||
            (st = find_tensor(m, NAME("attn_q.weight"), E, E, false, &L->wq)) ||
            (st = find_tensor(m, NAME("attn_k.weight"), E, KV, false, &L->wk)) ||
            (st = find_tensor(m, NAME("attn_v.weight"), E, KV, false, &L->wv)) ||
            (st = find_tensor(m, NAME("attn_output.weight"), E, E, false, &L->wo)) ||
            (st = find_tensor(m, NAME("ffn_gate.weight"), E, c->n_ff, false, &L->gate)) ||
            (st = find_tensor(m, NAME("ffn_up.weight"), E, c->n_ff, false, &L->up)) ||
            (st = find_tensor(m, NAME("ffn_down.weight"), c->n_ff, E, false, &L->down)))
            return st;
        if (c->qkv_bias &&
            ((st = vector_copy(m, NAME("attn_q.bias"), E, false, &L->bq)) ||
             (st = vector_copy(m, NAME("attn_k.bias"), KV, false, &L->bk)) ||
             (st = vector_copy(m, NAME("attn_v.bias"), KV, false, &L->bv))))
            return st;
#undef NAME
    }
    return LA_OK;
}

/* A generated token reads every weight once, from DRAM. A file mapping
 * stays on the page cache's 4 KB pages, where the hardware prefetchers stop
 * at every page's end; on 2 MB pages the same reads are faster (a plain
 * two-thread read 24-26 against 33-35 GB/s, and SmolLM2-135M's one-token
 * products with it, BENCHMARKS s28-hp). So where the kernel grants
 * transparent huge pages on request (enabled: always or madvise), the model
 * reads its file into anonymous memory advised MADV_HUGEPAGE; the page
 * cache's copy stays clean, for the OS to reclaim. Elsewhere, for a file
 * over a quarter of physical memory (a private copy of a large model could
 * push the machine into swap), with LONGATTN_MODEL_MMAP=1, or if any step
 * fails, it maps the file (la_gguf_open, whose errors then name the
 * problem). */
static bool huge_pages_on_request(void) {
#ifdef MADV_HUGEPAGE
    const char *e = getenv("LONGATTN_MODEL_MMAP");
    if (e && !strcmp(e, "1")) return false;
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (!f) return false;
    char line[128];
    const bool on = fgets(line, sizeof line, f) && (strstr(line, "[always]") || strstr(line, "[madvise]"));
    fclose(f);
    return on;
#else
    return false;
#endif
}

#define HUGE_PAGE ((size_t)2 << 20)

/* The whole file at path in fresh memory on 2 MB pages (2 MB-aligned and
 * advised, as cpu/peak's ceiling buffer): true with m->file_copy and *size
 * set, false with nothing held. */
static bool read_file_on_huge_pages(const char *path, la_model *m, size_t *size) {
    const int fd = open(path, O_RDONLY);
    if (fd < 0) return false;
    struct stat sb;
    void *a = NULL;
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    const uint64_t quarter = pages > 0 && page > 0 ? (uint64_t)pages / 4 * (uint64_t)page : 0;
    const bool fits = !fstat(fd, &sb) && S_ISREG(sb.st_mode) && sb.st_size > 0 && (uint64_t)sb.st_size <= quarter &&
                      (uint64_t)sb.st_size <= SIZE_MAX - HUGE_PAGE;
    const size_t bytes = fits ? ((size_t)sb.st_size + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE : 0;
    if (!fits || posix_memalign(&a, HUGE_PAGE, bytes)) {
        close(fd);
        return false;
    }
#ifdef MADV_HUGEPAGE
    madvise(a, bytes, MADV_HUGEPAGE);
#endif
    size_t done = 0;
    while (done < (size_t)sb.st_size) {
        const ssize_t n = pread(fd, (char *)a + done, (size_t)sb.st_size - done, (off_t)done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        done += (size_t)n;
    }
    close(fd);
    if (done < (size_t)sb.st_size) { /* a read error or a file that shrank: map it instead */
        free(a);
        return false;
    }
    m->file_copy = a;
    *size = (size_t)sb.st_size;
    return true;
}

static la_status open_model_file(const char *path, la_model *m) {
    size_t size;
    if (path && huge_pages_on_request() && read_file_on_huge_pages(path, m, &size))
        return la_gguf_open_memory(m->file_copy, size, &m->gguf);
    return la_gguf_open(path, &m->gguf);
}

la_status la_model_load(const char *path, la_model **out) {
    if (!out) return la_fail(LA_ERR_NULL, "out is NULL");
    *out = NULL;
    la_model *m = calloc(1, sizeof *m);
    if (!m) return la_fail(LA_ERR_NOMEM, "could not allocate a model");
    la_status st = open_model_file(path, m);
    if (!st) st = read_config(m);
    if (!st) st = load_weights(m);
    if (!st) st = la_tokenizer_from_gguf(m->gguf, &m->tok);
    if (!st && la_tokenizer_vocab_size(m->tok) > m->cfg.n_vocab)
        st = la_fail(LA_ERR_FORMAT, "tokenizer has %d tokens but the embedding only %lld rows",
                     la_tokenizer_vocab_size(m->tok), (long long)m->cfg.n_vocab);
    if (st) {
        la_model_free(m);
        return st;
    }
    *out = m;
    return la_succeed();
}

void la_model_free(la_model *m) {
    if (!m) return;
    for (int64_t l = 0; m->layers && l < m->cfg.n_layer; l++) {
        layer *L = &m->layers[l];
        free(L->attn_norm), free(L->ffn_norm), free(L->bq), free(L->bk), free(L->bv);
    }
    free(m->layers);
    free(m->out_norm);
    la_tokenizer_free(m->tok);
    la_gguf_close(m->gguf);
    free(m->file_copy);
    free(m);
}

const la_model_config *la_model_config_of(const la_model *m) { return m ? &m->cfg : NULL; }
const la_tokenizer *la_model_tokenizer(const la_model *m) { return m ? m->tok : NULL; }
const la_gguf *la_model_gguf(const la_model *m) { return m ? m->gguf : NULL; }

/* ------------------------------------------------------------- session */

/* Prefill chunk: rows of scratch per forward call. Longer prompts are fed
 * in pieces of this many tokens. */
#define SESSION_CHUNK 512

/* Prefill attends with la_attention_forward, which takes one dense K/V of
 * q's dtype: a layer's cache is read back as f32 into pk (the values
 * decode reads, so prefill and decode see the same rounded K/V). Grows
 * geometrically with the context; the rows it holds move with it. */
static la_status reserve_prefill(la_session *s, prefill_kv *pk, int64_t tokens) {
    if (tokens <= pk->cap) return LA_OK;
    int64_t cap = pk->cap ? pk->cap : 32;
    while (cap < tokens) cap *= 2;
    if (cap > s->max_ctx) cap = s->max_ctx;
    const la_model_config *c = &s->m->cfg;
    size_t row = (size_t)(c->n_head_kv * c->head_dim) * sizeof(float);
    float *k = realloc(pk->k, row * (size_t)cap), *v = k ? realloc(pk->v, row * (size_t)cap) : NULL;
    if (k) pk->k = k;
    if (!k || !v) return la_fail(LA_ERR_NOMEM, "could not grow the prefill's K/V copy to %lld tokens", (long long)cap);
    pk->v = v;
    pk->cap = cap;
    return LA_OK;
}

/* The cache was reset or compacted: every layer's copy is read again
 * whole at its next prefill (the buffers stay). */
static void forget_prefill_kv(la_session *s) {
    for (int64_t l = 0; l < (s->kv_mirror ? s->m->cfg.n_layer : 1); l++) s->pkv[l].len = 0;
}

/* A decode step does not read the copy: give it back, so a session costs
 * its cache alone while it generates (the next prefill reads the layer
 * once, then grows by chunks again). */
static void release_prefill_kv(prefill_kv *pk) {
    free(pk->k), free(pk->v);
    *pk = (prefill_kv){0};
}

/* Layer layer_i's cache entries [0, L) as f32 in pk: with the mirror only
 * the entries appended since its last prefill (decode steps' and this
 * chunk's) are read; without, all of them. */
static la_status read_prefill_kv(la_session *s, int64_t layer_i, int64_t L, prefill_kv **out) {
    prefill_kv *pk = &s->pkv[s->kv_mirror ? layer_i : 0];
    const int64_t KV = s->m->cfg.n_head_kv * s->m->cfg.head_dim;
    if (!s->kv_mirror || pk->len > L) pk->len = 0;
    la_status st = reserve_prefill(s, pk, L);
    if (st) return st;
    /* the new entries, widened to f32 one element at a time (~0.7 s of an
     * 8K prefill, which one thread did while the other slept): a piece of
     * the tokens per thread */
    const int64_t at = pk->len, n = L - at;
    const int pieces = n >= 64 * la_context_threads(s->ctx) ? la_context_threads(s->ctx) : 1;
    bool failed = false;
#pragma omp parallel for num_threads(pieces) schedule(static) reduction(|| : failed) if (pieces > 1)
    for (int t = 0; t < pieces; t++) {
        const int64_t i0 = at + n * t / pieces, i1 = at + n * (t + 1) / pieces;
        failed = la_kv_cache_read(s->kv, layer_i, -1, 0, i0, i1 - i0, pk->k + i0 * KV, pk->v + i0 * KV) || failed;
    }
    /* a failure's message stays with its thread: read again here for it */
    if (failed && (st = la_kv_cache_read(s->kv, layer_i, -1, 0, at, n, pk->k + at * KV, pk->v + at * KV))) return st;
    pk->len = L;
    *out = pk;
    return LA_OK;
}

la_session_params la_session_params_default(void) {
    return (la_session_params){.max_ctx = 0, .kv_type = LA_F16, .kv_page_size = LA_SESSION_PAGE_DEFAULT,
                               .kv_policy = {.kind = LA_KV_POLICY_FULL}, .sparse = {.kind = LA_SPARSE_NONE}};
}

la_status la_session_new(const la_model *m, la_context *ctx, int64_t max_ctx, la_session **out) {
    la_session_params p = la_session_params_default();
    p.max_ctx = max_ctx;
    return la_session_new_with(m, ctx, &p, out);
}

la_status la_session_new_with(const la_model *m, la_context *ctx, const la_session_params *p, la_session **out) {
    if (out) *out = NULL;
    if (!m || !ctx || !p || !out) return la_fail(LA_ERR_NULL, "model, ctx, params or out is NULL");
    const int64_t max_ctx = p->max_ctx;
    if (max_ctx <= 0 || max_ctx > LA_SESSION_MAX_CTX)
        return la_fail(LA_ERR_ARGUMENT, "max_ctx is %lld; must be in [1, 2^30]", (long long)max_ctx);
    if (p->kv_quant == LA_KV_QUANT_NONE && p->kv_type != LA_F32 && p->kv_type != LA_BF16 && p->kv_type != LA_F16)
        return la_fail(LA_ERR_ARGUMENT, "kv_type %d is not f32, bf16 or f16", (int)p->kv_type);
    if (p->kv_quant != LA_KV_QUANT_NONE && p->kv_quant != LA_KV_Q8 && p->kv_quant != LA_KV_Q4)
        return la_fail(LA_ERR_ARGUMENT, "kv_quant %d is not LA_KV_QUANT_NONE, LA_KV_Q8 or LA_KV_Q4", (int)p->kv_quant);
    if (la_kv_policy_validate(&p->kv_policy))
        return la_fail(LA_ERR_ARGUMENT, "kv_policy is not valid (%s); use la_kv_policy_parse", la_last_error());
    if (p->kv_page_size <= 0)
        return la_fail(LA_ERR_ARGUMENT, "kv_page_size is %lld; must be > 0", (long long)p->kv_page_size);
    if (la_sparse_choice_validate(&p->sparse))
        return la_fail(LA_ERR_ARGUMENT, "sparse is not valid (%s); use la_sparse_choice_parse", la_last_error());
    const la_model_config *c = &m->cfg;
    const int64_t nhg = c->n_layer * c->n_head;
    if (p->sparse_head_gamma) {
        if (p->sparse.kind != LA_SPARSE_TOPK || !(p->sparse.budget > 0 && p->sparse.budget <= 1))
            return la_fail(LA_ERR_ARGUMENT, "sparse_head_gamma needs the topk selector with a coverage budget in (0, 1]");
        for (int64_t i = 0; i < nhg; i++)
            if (!(p->sparse_head_gamma[i] >= 0 && p->sparse_head_gamma[i] <= 1))
                return la_fail(LA_ERR_ARGUMENT, "sparse_head_gamma[%lld] is %g; must be in [0, 1]", (long long)i,
                               (double)p->sparse_head_gamma[i]);
    }
    la_session *s = calloc(1, sizeof *s);
    if (!s) return la_fail(LA_ERR_NOMEM, "could not allocate a session");
    s->m = m; /* from here on la_session_free undoes a partial session */
    s->sp_listed = calloc((size_t)c->n_layer, sizeof *s->sp_listed);
    s->sp_visible = calloc((size_t)c->n_layer, sizeof *s->sp_visible);
    if (p->sparse_head_gamma && (s->head_gamma = malloc(sizeof(float) * (size_t)nhg)))
        memcpy(s->head_gamma, p->sparse_head_gamma, sizeof(float) * (size_t)nhg);
    if (!s->sp_listed || !s->sp_visible || (p->sparse_head_gamma && !s->head_gamma)) {
        la_session_free(s);
        return la_fail(LA_ERR_NOMEM, "could not allocate a session");
    }
    s->ctx = ctx, s->max_ctx = max_ctx, s->policy = p->kv_policy, s->sparse = p->sparse;
    s->on_attention = p->on_attention, s->on_attention_user = p->on_attention_user;
    s->head_score = p->sparse_head_score;
    s->exact = p->exact_decode;
    s->chunk = max_ctx < SESSION_CHUNK ? max_ctx : SESSION_CHUNK;
    la_kv_cache_params kp = la_kv_cache_params_default();
    kp.n_layers = c->n_layer, kp.n_kv_heads = c->n_head_kv, kp.head_dim = c->head_dim;
    kp.page_size = p->kv_policy.kind == LA_KV_POLICY_QUEST && p->kv_policy.page > 0 ? p->kv_policy.page : p->kv_page_size;
    kp.max_tokens = max_ctx, kp.max_seqs = 1, kp.dtype = p->kv_type;
    if ((kp.quant = p->kv_quant) != LA_KV_QUANT_NONE) {
        /* KIVI's groups of 32, where they divide; int4 values in groups of
         * 16 channels (SmolLM2-135M, ctx 512: perplexity +3.8% over f16 with
         * 32, +1.8% with 16; int8 +0.05% with 32) */
        int64_t a = 32, b = kp.page_size, t, vg = kp.quant == LA_KV_Q4 ? 16 : 32;
        while (b) t = a % b, a = b, b = t;
        while (kp.head_dim % vg) vg /= 2;
        kp.quant_key_group = a, kp.quant_value_group = vg, kp.quant_window = 32;
        kp.quant_exact_queries = p->exact_decode; /* f32 queries in q.k too (else int8, as llama.cpp's q8_0 Q) */
    }
    la_status st = la_kv_cache_create(&kp, &s->kv);
    if (!st && la_kv_policy_has_state(&p->kv_policy)) st = la_kv_policy_state_create(&p->kv_policy, s->kv, &s->pstate);
    /* Prefill attends over an f32 copy of each layer's cache. With the
     * full policy and float pages an entry never changes once appended, so
     * the copy is kept per layer across chunks and calls and grows by the
     * rows appended since (re-reading the whole layer every chunk was ~10%
     * of an 8K prefill). Evicting policies compact the cache and quantised
     * pages re-quantise their f32 window, so those re-read the layer every
     * chunk into one buffer. The copy costs 8 bytes per K/V element (f32 K
     * and V): SmolLM2-135M at 8K (30 layers x 3 KV heads x 64) 360 MiB, twice
     * its f16 cache, while a prompt runs; the first decode step frees it. */
    s->kv_mirror = p->kv_policy.kind == LA_KV_POLICY_FULL && kp.quant == LA_KV_QUANT_NONE;
    if (!st && !(s->pkv = calloc(s->kv_mirror ? (size_t)c->n_layer : 1, sizeof *s->pkv)))
        st = la_fail(LA_ERR_NOMEM, "could not allocate a session");
    if (st) {
        la_session_free(s);
        return st;
    }
    const size_t n = (size_t)s->chunk, E = (size_t)c->n_embd, KV = (size_t)(c->n_head_kv * c->head_dim);
    s->positions = malloc(sizeof(int32_t) * n);
    s->x = malloc(sizeof(float) * n * E);
    s->xn = malloc(sizeof(float) * n * E);
    s->q = malloc(sizeof(float) * n * E);
    s->att = malloc(sizeof(float) * n * E);
    s->kn = malloc(sizeof(float) * n * KV);
    s->vn = malloc(sizeof(float) * n * KV);
    s->ffa = malloc(sizeof(float) * n * (size_t)c->n_ff);
    s->ffb = malloc(sizeof(float) * n * (size_t)c->n_ff);
    s->logits_tmp = malloc(sizeof(float) * (size_t)c->n_vocab);
    s->rope_cs = malloc(sizeof(float) * n * (size_t)c->rope_dims);
    if (!s->positions || !s->x || !s->xn || !s->q || !s->att || !s->kn || !s->vn || !s->ffa || !s->ffb ||
        !s->logits_tmp || !s->rope_cs) {
        la_session_free(s);
        return la_fail(LA_ERR_NOMEM, "could not allocate session buffers");
    }
    *out = s;
    return la_succeed();
}

la_status la_session_sparse_counts(const la_session *s, int64_t layer, int64_t *listed, int64_t *visible) {
    if (!s || !listed || !visible) return la_fail(LA_ERR_NULL, "session, listed or visible is NULL");
    if (layer < 0 || layer >= s->m->cfg.n_layer)
        return la_fail(LA_ERR_ARGUMENT, "layer %lld is out of [0, %lld)", (long long)layer, (long long)s->m->cfg.n_layer);
    *listed = s->sp_listed[layer], *visible = s->sp_visible[layer];
    return la_succeed();
}

void la_session_free(la_session *s) {
    if (!s) return;
    free(s->sp_listed), free(s->sp_visible), free(s->head_gamma);
    la_kv_cache_destroy(s->kv);
    la_kv_policy_state_destroy(s->pstate);
    for (int64_t l = 0; s->routing && l < s->m->cfg.n_layer; l++) la_sparse_routing_state_free(s->routing[l]);
    free(s->routing);
    for (int64_t l = 0; s->pkv && l < (s->kv_mirror ? s->m->cfg.n_layer : 1); l++) free(s->pkv[l].k), free(s->pkv[l].v);
    free(s->pkv), free(s->positions);
    free(s->x), free(s->xn), free(s->q), free(s->att), free(s->kn), free(s->vn);
    free(s->ffa), free(s->ffb), free(s->logits_tmp), free(s->rope_cs);
    free(s);
}

void la_session_reset(la_session *s) {
    if (!s) return;
    s->pos = 0, s->prompt_open = false;
    la_kv_cache_reset(s->kv, -1);
    la_kv_policy_state_reset(s->pstate);
    forget_prefill_kv(s);
}
int64_t la_session_pos(const la_session *s) { return s ? s->pos : 0; }
size_t la_session_kv_bytes(const la_session *s) { return s ? la_kv_cache_bytes(s->kv) : 0; }
const la_model *la_session_model(const la_session *s) { return s ? s->m : NULL; }
const la_kv_cache *la_session_kv_cache(const la_session *s) { return s ? s->kv : NULL; }
const la_kv_policy_state *la_session_kv_policy_state(const la_session *s) { return s ? s->pstate : NULL; }

/* SwiGLU's e^x, four lanes at a time in GNU vector arithmetic (SSE2, the
 * build's baseline; a call to expf does not vectorise): x = k ln 2 + r
 * with |r| <= ln 2 / 2 (ln 2 in two parts, Cody and Waite), e^r by its
 * degree-6 Taylor polynomial, 2^k put into the exponent bits. Within 5 ulp
 * of e^x (measured over [-100, 100]); x is clamped to [-87, 88] so the
 * result stays a finite normal float. */
typedef float f32x4 __attribute__((vector_size(16)));
typedef int32_t i32x4 __attribute__((vector_size(16)));

static inline f32x4 exp4(f32x4 x) {
    const i32x4 below = x < -87.0f, above = x > 88.0f;
    const f32x4 lo = (f32x4){0} - 87.0f, hi = (f32x4){0} + 88.0f;
    x = (f32x4)(((i32x4)x & ~(below | above)) | ((i32x4)lo & below) | ((i32x4)hi & above));
    const float round = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    const f32x4 kf = (x * 1.44269504f + round) - round;
    const f32x4 r = (x - kf * 0.693145751953125f) - kf * 1.42860682030941723e-6f;
    f32x4 p = r * (1.0f / 720) + 1.0f / 120;
    p = p * r + 1.0f / 24, p = p * r + 1.0f / 6, p = p * r + 0.5f;
    p = p * r + 1.0f, p = p * r + 1.0f;
    return p * (f32x4)((__builtin_convertvector(kf, i32x4) + 127) << 23);
}

/* gate = silu(gate) * up, in place. */
static void swiglu(float *restrict gate, const float *restrict up, int64_t n) {
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
        f32x4 g, u;
        memcpy(&g, gate + j, sizeof g), memcpy(&u, up + j, sizeof u);
        g = g / (1.0f + exp4(-g)) * u;
        memcpy(gate + j, &g, sizeof g);
    }
    for (; j < n; j++) gate[j] = gate[j] / (1.0f + expf(-gate[j])) * up[j];
}

/* The chunk's element-wise steps run on the context's threads when they
 * have enough rows to pay for the fork (a decode step's one row does not). */
#define ROWS_MIN_PARALLEL 8

/* for (i = 0; i < n; i++) body, on `threads` threads from ROWS_MIN_PARALLEL
 * rows. Fewer rows (a decode step's one) run without entering OpenMP at
 * all: a parallel region whose if clause is false still makes a team of
 * one in libgomp (a malloc and a free, 5 a layer). */
#define FOR_ROWS(i, n, threads, ...)                                                                                  \
    do {                                                                                                              \
        if ((n) >= ROWS_MIN_PARALLEL) {                                                                               \
            _Pragma("omp parallel for num_threads(threads) schedule(static)") for (int64_t i = 0; i < (n); i++)       \
                __VA_ARGS__                                                                                           \
        } else {                                                                                                      \
            for (int64_t i = 0; i < (n); i++) __VA_ARGS__                                                             \
        }                                                                                                             \
    } while (0)

static void rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps) {
    double ss = 0;
    for (int64_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float r = 1.0f / sqrtf((float)(ss / (double)n) + eps);
    for (int64_t i = 0; i < n; i++) out[i] = x[i] * r * w[i];
}

/* cos and sin of each rotated pair's angle at position pos:
 * theta_i = pos / scale * base^(-2i/dims), computed once per token for all
 * layers. */
static void rope_angles(float *cs, const la_model_config *c, int64_t pos) {
    for (int64_t i = 0; i < c->rope_dims / 2; i++) {
        double theta = (double)pos / c->rope_scale * pow(c->rope_theta, -2.0 * (double)i / (double)c->rope_dims);
        cs[2 * i] = (float)cos(theta), cs[2 * i + 1] = (float)sin(theta);
    }
}

/* Rotate heads of one token by its angles: NORM pairs (2i, 2i+1), NEOX
 * pairs (i, i + dims/2). */
static void rope(float *x, int64_t heads, const la_model_config *c, const float *cs) {
    const int64_t D = c->head_dim, half = c->rope_dims / 2;
    const bool norm = c->rope_kind == LA_ROPE_NORM;
    for (int64_t h = 0; h < heads; h++) {
        float *p = x + h * D;
        for (int64_t i = 0; i < half; i++) {
            int64_t a = norm ? 2 * i : i, b = norm ? 2 * i + 1 : i + half;
            float x0 = p[a], x1 = p[b];
            p[a] = x0 * cs[2 * i] - x1 * cs[2 * i + 1];
            p[b] = x0 * cs[2 * i + 1] + x1 * cs[2 * i];
        }
    }
}

/* A single token's products: x rounded to int8 per block (as llama.cpp),
 * or f32 throughout in exact_decode mode. */
static la_status matvecs(la_session *s, const la_matvec_job *jobs, int n_jobs, int64_t cols, const float *in) {
    return (s->exact ? la_matvec_batch_f32 : la_matvec_batch)(s->ctx, jobs, n_jobs, cols, in);
}

static la_status project(la_session *s, const la_gguf_tensor *w, const float *in, int64_t n, float *out) {
    if (n == 1) return matvecs(s, &(la_matvec_job){w->type, w->data, w->ne[1], out}, 1, w->ne[0], in);
    return (s->exact ? la_matmul_f32 : la_matmul)(s->ctx, w->type, w->data, w->ne[1], w->ne[0], in, n, out);
}

/* Two or three products of the same input: one batched matvec for a single
 * token (one preparation of x, one parallel region), else matmuls. */
static la_status project3(la_session *s, const la_gguf_tensor *w0, float *y0, const la_gguf_tensor *w1, float *y1,
                          const la_gguf_tensor *w2, float *y2, const float *in, int64_t n) {
    if (n == 1) {
        la_matvec_job jobs[3] = {{w0->type, w0->data, w0->ne[1], y0}, {w1->type, w1->data, w1->ne[1], y1}};
        if (w2) jobs[2] = (la_matvec_job){w2->type, w2->data, w2->ne[1], y2};
        return matvecs(s, jobs, w2 ? 3 : 2, w0->ne[0], in);
    }
    la_status st = project(s, w0, in, n, y0);
    if (!st) st = project(s, w1, in, n, y1);
    if (!st && w2) st = project(s, w2, in, n, y2);
    return st;
}

/* sparse_head_score: how far the residual stream x moves when one head
 * alone goes streaming (its sink and local blocks only) while the others
 * keep this layer's attention output s->att: per head h, |W_o e_h|^2 /
 * |x|^2 over the n rows, e_h the streaming output minus s->att in head h's
 * columns (zero elsewhere). A local stand-in for the loss change: W_o
 * weighs the head's error by what the layer does with it, and |x| by how
 * large an error the stream absorbs at this depth. One extra sparse
 * attention and H products with W_o per layer: calibration runs only. */
static la_status score_heads(la_session *s, int64_t layer_i, int64_t n, const la_attention_params *p,
                             const la_tensor *q, const la_tensor *k, const la_tensor *v) {
    const la_model_config *c = &s->m->cfg;
    const int64_t H = c->n_head, D = c->head_dim, HD = H * D, E = c->n_embd;
    float *os = malloc(sizeof(float) * (size_t)(n * HD)), *pad = malloc(sizeof(float) * (size_t)(n * HD));
    float *out = malloc(sizeof(float) * (size_t)(n * E));
    la_status st = os && pad && out ? LA_OK : la_fail(LA_ERR_NOMEM, "out of memory for the head scores");
    la_block_index x = {0};
    const la_sparse_static so = la_model_stream_opts(&s->sparse);
    la_tensor ot = la_tensor_contiguous(os, LA_F32, 4, (int64_t[]){1, n, H, D});
    if (!st) st = la_sparse_select_static(&so, p, q, k, &x);
    if (!st) st = la_block_sparse_forward(s->ctx, p, q, k, v, &x, &ot, NULL);
    la_block_index_free(&x);
    double xx = 0;
    for (int64_t i = 0; i < n * E; i++) xx += (double)s->x[i] * s->x[i];
    if (!st) memset(pad, 0, sizeof(float) * (size_t)(n * HD));
    for (int64_t h = 0; h < H && !st; h++) {
        for (int64_t i = 0; i < n; i++)
            for (int64_t d = 0; d < D; d++) pad[i * HD + h * D + d] = os[i * HD + h * D + d] - s->att[i * HD + h * D + d];
        st = project(s, s->m->layers[layer_i].wo, pad, n, out);
        for (int64_t i = 0; i < n; i++) memset(pad + i * HD + h * D, 0, sizeof(float) * (size_t)D); /* zero again */
        if (st) break;
        double ee = 0;
        for (int64_t i = 0; i < n * E; i++) ee += (double)out[i] * out[i];
        s->head_score[layer_i * H + h] += xx > 0 ? ee / xx : 0;
    }
    free(os), free(pad), free(out);
    return st;
}

/* Attention of n new tokens (already in the cache at [pos, pos + n)) over
 * the whole cache, through the library's attention: decode straight over
 * the cache's pages for one token, exact attention over an f32 copy for a
 * prefill (read_prefill_kv). */
static la_status attend(la_session *s, int64_t layer_i, int64_t n) {
    const la_model_config *c = &s->m->cfg;
    /* the cache's entries (s->pos + n for the full cache, fewer after eviction) */
    const int64_t H = c->n_head, Hkv = c->n_head_kv, D = c->head_dim, L = la_kv_cache_len(s->kv, layer_i, 0, 0);
    la_attention_params p = la_attention_params_default();
    p.causal = 1;
    la_tensor q = la_tensor_contiguous(s->q, LA_F32, 4, (int64_t[]){1, n, H, D});
    la_tensor o = la_tensor_contiguous(s->att, LA_F32, 4, (int64_t[]){1, n, H, D});
    la_status st;
    /* stateful policies: ragged heads, Quest's pages (src/kv/policy_state.c) */
    if (s->pstate) return la_kv_policy_attend(s->pstate, s->ctx, &p, s->kv, layer_i, s->q, n, H, s->att);
    if (n == 1) {
        if (s->kv_mirror) release_prefill_kv(&s->pkv[layer_i]);
        return la_kv_cache_decode(s->ctx, &p, s->kv, layer_i, 0, &q, &o, NULL); /* float or quantised pages */
    }
    prefill_kv *pk;
    if ((st = read_prefill_kv(s, layer_i, L, &pk))) return st;
    la_tensor k = la_tensor_contiguous(pk->k, LA_F32, 4, (int64_t[]){1, L, Hkv, D});
    la_tensor v = la_tensor_contiguous(pk->v, LA_F32, 4, (int64_t[]){1, L, Hkv, D});
    if (s->on_attention) s->on_attention(s->on_attention_user, layer_i, &q, &k);
    /* block-sparse prefill past the choice's dense layers: select, then attend */
    /* dense attention's key blocks, for la_session_sparse_counts: query
     * block [i0, i1) of the n new rows sees keys up to L - n + i1 */
    const int64_t bs = LA_SPARSE_BLOCK_DEFAULT;
    int64_t visible = 0;
    for (int64_t i0 = 0; i0 < n; i0 += bs) visible += (L - n + (i0 + bs < n ? i0 + bs : n) + bs - 1) / bs;
    s->sp_visible[layer_i] += visible * H;
    if (s->sparse.kind != LA_SPARSE_NONE && layer_i >= s->sparse.dense_layers) {
        la_block_index x;
        if (s->head_gamma) {
            st = la_model_select_heads(s->ctx, &s->sparse, s->head_gamma + layer_i * H, &p, &q, &k, &x);
        } else if (s->sparse.kind == LA_SPARSE_ROUTING) { /* centroids carried across calls, per layer */
            if (!s->routing && !(s->routing = calloc((size_t)c->n_layer, sizeof *s->routing)))
                return la_fail(LA_ERR_NOMEM, "out of memory for the routing states");
            if (!s->routing[layer_i] && (st = la_sparse_routing_state_create(&s->routing[layer_i], H, D,
                                                                              (int64_t)s->sparse.budget, 0)))
                return st;
            la_sparse_routing ro = la_sparse_routing_default();
            if (s->sparse.sink_blocks) ro.sink_blocks = s->sparse.sink_blocks;
            if (s->sparse.local_blocks) ro.local_blocks = s->sparse.local_blocks;
            st = la_sparse_select_routing(s->ctx, &ro, s->routing[layer_i], &p, &q, &k, &x);
        } else {
            st = la_sparse_select(s->ctx, &s->sparse, &p, &q, &k, &x);
        }
        if (!st) {
            /* in blocks of bs tokens whatever the index's block size */
            s->sp_listed[layer_i] += x.offsets[x.num_seqs * x.heads * x.q_blocks] * x.block_size * x.block_size / (bs * bs);
            st = la_block_sparse_forward(s->ctx, &p, &q, &k, &v, &x, &o, NULL);
        }
        la_block_index_free(&x);
    } else {
        s->sp_listed[layer_i] += visible * H;
        st = la_attention_forward(s->ctx, &p, &q, &k, &v, &o, NULL);
    }
    if (!st && s->head_score && layer_i >= s->sparse.dense_layers) st = score_heads(s, layer_i, n, &p, &q, &k, &v);
    return st;
}

static la_status forward_chunk(la_session *s, const int32_t *tokens, int64_t n, float *logits, bool all_logits,
                               bool prompt_end) {
    const la_model *m = s->m;
    const la_model_config *c = &m->cfg;
    const int64_t E = c->n_embd, KV = c->n_head_kv * c->head_dim, F = c->n_ff;
    const int threads = la_context_threads(s->ctx);
    la_status st;
    for (int64_t i = 0; i < n; i++) s->positions[i] = (int32_t)(s->pos + i);
    size_t emb_row;
    if ((st = la_ggml_row_bytes(m->tok_embd->type, E, &emb_row))) return st;
    for (int64_t i = 0; i < n; i++) rope_angles(s->rope_cs + i * c->rope_dims, c, s->pos + i);
    for (int64_t i = 0; i < n; i++)
        la_dequantize_row(m->tok_embd->type, (const char *)m->tok_embd->data + (size_t)tokens[i] * emb_row, s->x + i * E, E);
    for (int64_t l = 0; l < c->n_layer; l++) {
        const layer *L = &m->layers[l];
        FOR_ROWS(i, n, threads, { rmsnorm(s->xn + i * E, s->x + i * E, L->attn_norm, E, c->rms_eps); });
        if ((st = project3(s, L->wq, s->q, L->wk, s->kn, L->wv, s->vn, s->xn, n))) return st;
        FOR_ROWS(i, n, threads, {
            if (L->bq)
                for (int64_t j = 0; j < E; j++) s->q[i * E + j] += L->bq[j];
            if (L->bk)
                for (int64_t j = 0; j < KV; j++) s->kn[i * KV + j] += L->bk[j], s->vn[i * KV + j] += L->bv[j];
            rope(s->q + i * E, c->n_head, c, s->rope_cs + i * c->rope_dims);
            rope(s->kn + i * KV, c->n_head_kv, c, s->rope_cs + i * c->rope_dims);
        });
        if ((st = la_kv_cache_append(s->kv, l, 0, n, s->kn, s->vn, s->positions))) return st;
        if ((st = attend(s, l, n)) ||
            (st = s->pstate ? la_kv_policy_update(s->pstate, s->ctx, s->kv, l, s->q, n, c->n_head, 0)
                            : la_kv_cache_apply_policy(s->kv, &s->policy, l, 0)))
            return st;
        /* snapkv selects once the whole prompt is in: its window is the prompt's real end */
        if (prompt_end && s->pstate && (st = la_kv_policy_end_prompt(s->pstate, s->ctx, s->kv, l))) return st;
        if ((st = project(s, L->wo, s->att, n, s->xn))) return st;
        FOR_ROWS(i, n, threads, {
            for (int64_t j = i * E; j < (i + 1) * E; j++) s->x[j] += s->xn[j];
            rmsnorm(s->xn + i * E, s->x + i * E, L->ffn_norm, E, c->rms_eps);
        });
        if ((st = project3(s, L->gate, s->ffa, L->up, s->ffb, NULL, NULL, s->xn, n))) return st;
        FOR_ROWS(i, n, threads, { swiglu(s->ffa + i * F, s->ffb + i * F, F); });
        if ((st = project(s, L->down, s->ffa, n, s->xn))) return st;
        FOR_ROWS(i, n, threads, {
            for (int64_t j = i * E; j < (i + 1) * E; j++) s->x[j] += s->xn[j];
        });
    }
    s->pos += n;
    if (!logits) return LA_OK;
    const int64_t first = all_logits ? 0 : n - 1, rows = n - first;
    for (int64_t i = first; i < n; i++) rmsnorm(s->xn + (i - first) * E, s->x + i * E, m->out_norm, E, c->rms_eps);
    return project(s, m->output, s->xn, rows, logits);
}

/* After a failed chunk, drop the entries its layers appended past pos, so
 * the cache again holds exactly the tokens the session has run; returns
 * st with the failing call's message (the compactions clear it). */
static la_status drop_unfinished(la_session *s, la_status st) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s", la_last_error());
    const la_model_config *c = &s->m->cfg;
    for (int64_t l = 0; l < c->n_layer; l++)
        for (int64_t h = 0; h < c->n_head_kv; h++) {
            const int32_t *pos;
            int64_t len = 0, keep;
            la_kv_cache_positions(s->kv, l, h, 0, &pos, &len);
            for (keep = len; keep > 0 && pos[keep - 1] >= s->pos;) keep--; /* the chunk's entries are last */
            for (int64_t i = keep; i < len; i++) s->positions[i - keep] = (int32_t)i;
            if (len > keep) la_kv_cache_compact(s->kv, l, h, 0, s->positions, len - keep);
        }
    forget_prefill_kv(s);
    return la_set_error(st, "%s", msg);
}

la_status la_session_prompt(la_session *s, bool open) {
    if (!s) return la_fail(LA_ERR_NULL, "la_session_prompt: session is NULL");
    const bool close = s->prompt_open && !open;
    s->prompt_open = open;
    /* the window's queries are kept in the policy state: selecting after the last layer is the same */
    for (int64_t l = 0; close && s->pstate && l < s->m->cfg.n_layer; l++) {
        la_status st = la_kv_policy_end_prompt(s->pstate, s->ctx, s->kv, l);
        if (st) return st;
    }
    return la_succeed();
}

la_status la_session_eval(la_session *s, const int32_t *tokens, int64_t n, float *logits, bool all_logits) {
    if (!s || (!tokens && n)) return la_fail(LA_ERR_NULL, "session or tokens is NULL");
    if (n <= 0) return la_fail(LA_ERR_ARGUMENT, "n is %lld; must be > 0", (long long)n);
    if (n > s->max_ctx - s->pos) /* not pos + n, which wraps for n near INT64_MAX */
        return la_fail(LA_ERR_ARGUMENT, "context full: %lld cached + %lld new tokens exceed max_ctx %lld",
                       (long long)s->pos, (long long)n, (long long)s->max_ctx);
    const int64_t V = s->m->cfg.n_vocab;
    for (int64_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= V)
            return la_fail(LA_ERR_ARGUMENT, "token %d at %lld is outside the vocabulary of %lld", tokens[i], (long long)i,
                           (long long)V);
    for (int64_t done = 0; done < n;) {
        int64_t len = n - done < s->chunk ? n - done : s->chunk;
        /* A lone last token would run the single-token path (int8-rounded
         * activations) while its neighbours ran the prefill's f32 path, so
         * results would depend on the chunk size: end on two tokens instead
         * (s->chunk is 512 whenever n can exceed it). */
        if (n - done - len == 1) len--;
        bool last = done + len == n;
        float *out = !logits ? NULL : all_logits ? logits + done * V : last ? logits : NULL;
        la_status st = forward_chunk(s, tokens + done, len, out, all_logits, last && n > 1 && !s->prompt_open);
        if (st) return drop_unfinished(s, st);
        done += len;
    }
    return la_succeed();
}
