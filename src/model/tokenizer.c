/* Tokenizers from GGUF metadata.
 *
 * Byte-level BPE ("gpt2"): text is split on special tokens, then by the
 * pre-tokeniser regexes that tokenizer.ggml.pre names (PCRE2, Unicode
 * properties), each piece's bytes are mapped to GPT-2's printable code
 * points and merged pairwise by merge rank.
 * SentencePiece-style ("llama"): spaces become U+2581, symbols are UTF-8
 * characters merged by the highest vocabulary score, and characters not in
 * the vocabulary fall back to <0xXX> byte tokens. */
#include "longattn_model.h"

#include "base/base.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

enum { TOKEN_NORMAL = 1, TOKEN_UNKNOWN = 2, TOKEN_CONTROL = 3, TOKEN_USER_DEFINED = 4, TOKEN_UNUSED = 5, TOKEN_BYTE = 6 };
enum { KIND_BPE, KIND_SPM };
#define MAX_REGEXES 3

typedef struct {
    char *text;
    int32_t len;
    int32_t type;
    float score;
} token;

/* open-addressing hash: string -> id */
typedef struct {
    int32_t *slots; /* id + 1, 0 = empty */
    uint64_t mask;
} str_map;

/* (left, right) -> (rank, merged id) */
typedef struct {
    uint64_t *keys; /* (left << 32 | right) + 1, 0 = empty */
    int32_t *rank, *merged;
    uint64_t mask;
} pair_map;

struct la_tokenizer {
    int kind;
    int32_t n_vocab;
    token *tokens;
    str_map vocab;
    pair_map merges;
    int32_t bos, eos, eot, unk;
    bool add_bos, add_space_prefix;
    int32_t byte_token[256];      /* BPE: id of each byte's mapped char; SPM: <0xXX> */
    char byte_char[256][4];       /* BPE: UTF-8 of each byte's code point */
    int16_t cp_byte[512];         /* BPE: code point (< 512) -> byte, -1 if none */
    int32_t *specials;            /* control/user-defined ids, longest first */
    int32_t n_specials;
    pcre2_code *re[MAX_REGEXES];
    int n_re;
    bool *eog;
};

static uint64_t fnv1a(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static int32_t vocab_find(const la_tokenizer *t, const char *s, size_t n) {
    for (uint64_t i = fnv1a(s, n) & t->vocab.mask;; i = (i + 1) & t->vocab.mask) {
        int32_t e = t->vocab.slots[i];
        if (!e) return -1;
        const token *tk = &t->tokens[e - 1];
        if ((size_t)tk->len == n && !memcmp(tk->text, s, n)) return e - 1;
    }
}

static uint64_t mix(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    return k ^ (k >> 33);
}

static bool merge_find(const la_tokenizer *t, int32_t a, int32_t b, int32_t *rank, int32_t *merged) {
    if (!t->merges.keys) return false;
    uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
    for (uint64_t i = mix(key) & t->merges.mask;; i = (i + 1) & t->merges.mask) {
        if (!t->merges.keys[i]) return false;
        if (t->merges.keys[i] == key) {
            *rank = t->merges.rank[i];
            *merged = t->merges.merged[i];
            return true;
        }
    }
}

/* GPT-2's map from bytes to printable code points. */
static void byte_map(la_tokenizer *t) {
    int n = 0;
    for (int i = 0; i < 512; i++) t->cp_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
        uint32_t cp = printable ? (uint32_t)b : 256u + (uint32_t)n++;
        t->cp_byte[cp] = (int16_t)b;
        char *u = t->byte_char[b];
        if (cp < 0x80) u[0] = (char)cp, u[1] = 0;
        else u[0] = (char)(0xC0 | cp >> 6), u[1] = (char)(0x80 | (cp & 63)), u[2] = 0;
    }
}

static const char *const *pre_regexes(const char *pre, int *n) {
    static const char *const gpt2[] = {
        "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"};
    static const char *const digits_then_gpt2[] = {
        "\\p{N}", "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"};
    static const char *const llama3[] = {
        "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
        "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"};
    static const char *const qwen2[] = {
        "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
        "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"};
    if (!strcmp(pre, "smollm") || !strcmp(pre, "starcoder") || !strcmp(pre, "refact") || !strcmp(pre, "codeshell"))
        return *n = 2, digits_then_gpt2;
    if (!strcmp(pre, "llama3") || !strcmp(pre, "llama-bpe") || !strcmp(pre, "llama-v3")) return *n = 1, llama3;
    if (!strcmp(pre, "qwen2") || !strcmp(pre, "deepseek-r1-qwen")) return *n = 1, qwen2;
    return *n = 1, gpt2;
}

void la_tokenizer_free(la_tokenizer *t) {
    if (!t) return;
    for (int32_t i = 0; t->tokens && i < t->n_vocab; i++) free(t->tokens[i].text);
    free(t->tokens);
    free(t->vocab.slots);
    free(t->merges.keys);
    free(t->merges.rank);
    free(t->merges.merged);
    free(t->specials);
    free(t->eog);
    for (int i = 0; i < t->n_re; i++) pcre2_code_free(t->re[i]);
    free(t);
}

static int32_t opt_id(const la_gguf *g, const char *key, int32_t n_vocab) {
    int64_t v;
    if (!la_gguf_find(g, key) || la_gguf_get_int(g, key, &v) || v < 0 || v >= n_vocab) return -1;
    return (int32_t)v;
}

/* Longest special tokens first, so "<|im_start|>" wins over a prefix of it. */
static void sort_specials(la_tokenizer *t) {
    for (int32_t i = 1; i < t->n_specials; i++)
        for (int32_t j = i; j > 0 && t->tokens[t->specials[j]].len > t->tokens[t->specials[j - 1]].len; j--) {
            int32_t x = t->specials[j];
            t->specials[j] = t->specials[j - 1], t->specials[j - 1] = x;
        }
}

static la_status load_vocab(la_tokenizer *t, const la_gguf *g) {
    const la_gguf_kv *toks = la_gguf_find(g, "tokenizer.ggml.tokens");
    if (!toks || toks->type != LA_GGUF_ARRAY || toks->elem_type != LA_GGUF_STRING || toks->count == 0 ||
        toks->count > INT32_MAX / 4)
        return la_fail(LA_ERR_FORMAT, "tokenizer.ggml.tokens is missing or not a non-empty array of strings");
    t->n_vocab = (int32_t)toks->count;
    const la_gguf_kv *types = la_gguf_find(g, "tokenizer.ggml.token_type");
    const la_gguf_kv *scores = la_gguf_find(g, "tokenizer.ggml.scores");
    if (types && (types->type != LA_GGUF_ARRAY || types->count != toks->count))
        return la_fail(LA_ERR_FORMAT, "tokenizer.ggml.token_type has %llu entries for %d tokens",
                       (unsigned long long)(types ? types->count : 0), t->n_vocab);
    if (scores && (scores->type != LA_GGUF_ARRAY || scores->count != toks->count))
        return la_fail(LA_ERR_FORMAT, "tokenizer.ggml.scores has %llu entries for %d tokens",
                       (unsigned long long)scores->count, t->n_vocab);
    t->tokens = calloc((size_t)t->n_vocab, sizeof *t->tokens);
    uint64_t cap = 1;
    while (cap < (uint64_t)t->n_vocab * 2) cap <<= 1;
    t->vocab.slots = calloc(cap, sizeof *t->vocab.slots);
    t->vocab.mask = cap - 1;
    t->eog = calloc((size_t)t->n_vocab, 1);
    t->specials = calloc((size_t)t->n_vocab, sizeof *t->specials);
    if (!t->tokens || !t->vocab.slots || !t->eog || !t->specials) return la_fail(LA_ERR_NOMEM, "tokenizer allocation failed");
    const void *cur = toks->value;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        la_gguf_str s;
        cur = la_gguf_array_str_next(cur, &s);
        token *tk = &t->tokens[i];
        tk->text = malloc(s.len + 1);
        if (!tk->text) return la_fail(LA_ERR_NOMEM, "tokenizer allocation failed");
        memcpy(tk->text, s.data, s.len);
        tk->text[s.len] = 0;
        tk->len = (int32_t)s.len;
        int64_t ty = TOKEN_NORMAL;
        if (types && la_gguf_array_int(types, (uint64_t)i, &ty)) return la_fail(LA_ERR_FORMAT, "token_type is not integers");
        tk->type = (int32_t)ty;
        if (scores && la_gguf_array_f32(scores, (uint64_t)i, &tk->score)) return la_fail(LA_ERR_FORMAT, "scores are not numbers");
        if ((ty == TOKEN_CONTROL || ty == TOKEN_USER_DEFINED) && tk->len > 0) t->specials[t->n_specials++] = i;
        if (vocab_find(t, tk->text, (size_t)tk->len) >= 0) continue; /* duplicates: first wins */
        uint64_t h = fnv1a(tk->text, (size_t)tk->len) & t->vocab.mask;
        while (t->vocab.slots[h]) h = (h + 1) & t->vocab.mask;
        t->vocab.slots[h] = i + 1;
    }
    sort_specials(t);
    return LA_OK;
}

static la_status load_merges(la_tokenizer *t, const la_gguf *g) {
    const la_gguf_kv *m = la_gguf_find(g, "tokenizer.ggml.merges");
    if (!m || m->type != LA_GGUF_ARRAY || m->elem_type != LA_GGUF_STRING)
        return la_fail(LA_ERR_FORMAT, "tokenizer.ggml.merges is missing or not an array of strings");
    uint64_t cap = 1;
    while (cap < m->count * 2 + 2) cap <<= 1;
    t->merges.keys = calloc(cap, sizeof *t->merges.keys);
    t->merges.rank = malloc(cap * sizeof *t->merges.rank);
    t->merges.merged = malloc(cap * sizeof *t->merges.merged);
    if (!t->merges.keys || !t->merges.rank || !t->merges.merged) return la_fail(LA_ERR_NOMEM, "merge table allocation failed");
    t->merges.mask = cap - 1;
    const void *cur = m->value;
    char buf[512];
    for (uint64_t r = 0; r < m->count; r++) {
        la_gguf_str s;
        cur = la_gguf_array_str_next(cur, &s);
        const char *sp = s.len > 1 ? memchr(s.data + 1, ' ', s.len - 1) : NULL;
        if (!sp || s.len >= sizeof buf)
            return la_fail(LA_ERR_FORMAT, "merge %llu is not two tokens separated by a space", (unsigned long long)r);
        size_t la = (size_t)(sp - s.data), lb = s.len - la - 1;
        int32_t a = vocab_find(t, s.data, la), b = vocab_find(t, sp + 1, lb);
        memcpy(buf, s.data, la);
        memcpy(buf + la, sp + 1, lb);
        int32_t ab = vocab_find(t, buf, la + lb);
        if (a < 0 || b < 0 || ab < 0)
            return la_fail(LA_ERR_FORMAT, "merge %llu '%.*s' names a token not in the vocabulary", (unsigned long long)r,
                           (int)s.len, s.data);
        uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
        uint64_t i = mix(key) & t->merges.mask;
        while (t->merges.keys[i] && t->merges.keys[i] != key) i = (i + 1) & t->merges.mask;
        if (t->merges.keys[i]) continue; /* repeated merge: the first rank wins */
        t->merges.keys[i] = key;
        t->merges.rank[i] = (int32_t)r;
        t->merges.merged[i] = ab;
    }
    return LA_OK;
}

la_status la_tokenizer_from_gguf(const la_gguf *g, la_tokenizer **out) {
    if (out) *out = NULL;
    if (!g || !out) return la_fail(LA_ERR_NULL, "gguf or out is NULL");
    la_gguf_str model;
    la_status st = la_gguf_get_str(g, "tokenizer.ggml.model", &model);
    if (st) return st;
    la_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return la_fail(LA_ERR_NOMEM, "tokenizer allocation failed");
    if (model.len == 4 && !memcmp(model.data, "gpt2", 4)) t->kind = KIND_BPE;
    else if (model.len == 5 && !memcmp(model.data, "llama", 5)) t->kind = KIND_SPM;
    else {
        la_tokenizer_free(t);
        return la_fail(LA_ERR_FORMAT, "tokenizer model '%.*s' is not supported (gpt2 and llama are)", (int)model.len,
                       model.data);
    }
    if ((st = load_vocab(t, g)) || (t->kind == KIND_BPE && (st = load_merges(t, g)))) {
        la_tokenizer_free(t);
        return st;
    }
    t->bos = opt_id(g, "tokenizer.ggml.bos_token_id", t->n_vocab);
    t->eos = opt_id(g, "tokenizer.ggml.eos_token_id", t->n_vocab);
    t->eot = opt_id(g, "tokenizer.ggml.eot_token_id", t->n_vocab);
    t->unk = opt_id(g, "tokenizer.ggml.unknown_token_id", t->n_vocab);
    int64_t flag;
    t->add_bos = t->kind == KIND_SPM;
    if (la_gguf_find(g, "tokenizer.ggml.add_bos_token") && !la_gguf_get_int(g, "tokenizer.ggml.add_bos_token", &flag))
        t->add_bos = flag != 0;
    t->add_space_prefix = t->kind == KIND_SPM;
    if (la_gguf_find(g, "tokenizer.ggml.add_space_prefix") &&
        !la_gguf_get_int(g, "tokenizer.ggml.add_space_prefix", &flag))
        t->add_space_prefix = flag != 0;
    static const char *const eog_texts[] = {"<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<end_of_turn>",
                                            "</s>"};
    for (size_t i = 0; i < sizeof eog_texts / sizeof eog_texts[0]; i++) {
        int32_t id = vocab_find(t, eog_texts[i], strlen(eog_texts[i]));
        if (id >= 0 && t->tokens[id].type == TOKEN_CONTROL) t->eog[id] = true;
    }
    if (t->eos >= 0) t->eog[t->eos] = true;
    if (t->eot >= 0) t->eog[t->eot] = true;
    if (t->kind == KIND_BPE) {
        byte_map(t);
        /* Some vocabularies (SmolLM2's) lack tokens for a few bytes that
         * never occur in training text (controls, bytes invalid in UTF-8):
         * such bytes are dropped, as llama.cpp drops them. */
        for (int b = 0; b < 256; b++) t->byte_token[b] = vocab_find(t, t->byte_char[b], strlen(t->byte_char[b]));
        la_gguf_str pre = {"default", 7};
        if (la_gguf_find(g, "tokenizer.ggml.pre")) la_gguf_get_str(g, "tokenizer.ggml.pre", &pre);
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(pre.len < 63 ? pre.len : 63), pre.data);
        const char *const *exprs = pre_regexes(name, &t->n_re);
        for (int i = 0; i < t->n_re; i++) {
            int err;
            PCRE2_SIZE off;
            t->re[i] = pcre2_compile((PCRE2_SPTR)exprs[i], PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK,
                                     &err, &off, NULL);
            if (!t->re[i]) {
                t->n_re = i;
                la_tokenizer_free(t);
                return la_fail(LA_ERR_FORMAT, "pre-tokenizer regex %d failed to compile at %zu", i, (size_t)off);
            }
            pcre2_jit_compile(t->re[i], PCRE2_JIT_COMPLETE); /* optional speed-up; falls back to the interpreter */
        }
    } else {
        for (int b = 0; b < 256; b++) {
            char hex[8];
            snprintf(hex, sizeof hex, "<0x%02X>", b);
            t->byte_token[b] = vocab_find(t, hex, 6);
        }
    }
    *out = t;
    return la_succeed();
}

int32_t la_tokenizer_vocab_size(const la_tokenizer *t) { return t ? t->n_vocab : 0; }
int32_t la_tokenizer_bos(const la_tokenizer *t) { return t ? t->bos : -1; }
int32_t la_tokenizer_eos(const la_tokenizer *t) { return t ? t->eos : -1; }
bool la_tokenizer_add_bos(const la_tokenizer *t) { return t && t->add_bos && t->bos >= 0; }
bool la_tokenizer_is_eog(const la_tokenizer *t, int32_t id) { return t && id >= 0 && id < t->n_vocab && t->eog[id]; }
int32_t la_tokenizer_find(const la_tokenizer *t, const char *text) {
    return t && text ? vocab_find(t, text, strlen(text)) : -1;
}

/* ---- output buffer ---- */

typedef struct {
    int32_t *ids;
    int64_t n, cap;
    bool oom;
} id_list;

static void push(id_list *l, int32_t id) {
    if (l->n == l->cap) {
        int64_t cap = l->cap ? l->cap * 2 : 64;
        int32_t *p = realloc(l->ids, sizeof(int32_t) * (size_t)cap);
        if (!p) {
            l->oom = true;
            return;
        }
        l->ids = p, l->cap = cap;
    }
    l->ids[l->n++] = id;
}

/* ---- BPE ---- */

/* A candidate merge of bpe_long: symbols left and right (adjacent when
 * pushed, holding ids a and b then), ordered by rank, then position. */
typedef struct {
    int32_t rank, a, b;
    int64_t left, right;
} bpe_pair;

static bool pair_before(const bpe_pair *x, const bpe_pair *y) {
    return x->rank < y->rank || (x->rank == y->rank && x->left < y->left);
}

static void pair_push(bpe_pair *heap, int64_t *n, bpe_pair p) {
    int64_t i = (*n)++;
    for (; i > 0 && pair_before(&p, &heap[(i - 1) / 2]); i = (i - 1) / 2) heap[i] = heap[(i - 1) / 2];
    heap[i] = p;
}

static bpe_pair pair_pop(bpe_pair *heap, int64_t *n) {
    bpe_pair top = heap[0], last = heap[--*n];
    int64_t i = 0;
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && pair_before(&heap[c + 1], &heap[c])) c++;
        if (!pair_before(&heap[c], &last)) break;
        heap[i] = heap[c], i = c;
    }
    if (*n) heap[i] = last;
    return top;
}

static void pair_offer(const la_tokenizer *t, const int32_t *sym, int64_t l, int64_t r, bpe_pair *heap, int64_t *n) {
    int32_t rank, merged;
    if (l >= 0 && r >= 0 && merge_find(t, sym[l], sym[r], &rank, &merged))
        pair_push(heap, n, (bpe_pair){rank, sym[l], sym[r], l, r});
}

/* bpe_word's merges for a long pre-token (a run of one character can be
 * the whole text): the symbols as a linked list and the candidate pairs in
 * a heap, O(k log k) where the scan is O(k^2), with the same result: the
 * lowest rank first, the leftmost of equal ranks. A popped pair whose
 * symbols changed since it was pushed is stale and skipped. */
static la_status bpe_long(const la_tokenizer *t, int32_t *sym, int64_t k) {
    int64_t *next = malloc(sizeof(int64_t) * (size_t)k), *prev = malloc(sizeof(int64_t) * (size_t)k), n = 0;
    bpe_pair *heap = malloc(sizeof(bpe_pair) * (size_t)(3 * k)); /* k - 1 pairs, then at most 2 per merge */
    if (!next || !prev || !heap) {
        free(next), free(prev), free(heap);
        return la_fail(LA_ERR_NOMEM, "tokenizer: no memory to merge a pre-token of %lld symbols", (long long)k);
    }
    for (int64_t i = 0; i < k; i++) prev[i] = i - 1, next[i] = i + 1 < k ? i + 1 : -1;
    for (int64_t i = 0; i + 1 < k; i++) pair_offer(t, sym, i, i + 1, heap, &n);
    while (n) {
        const bpe_pair p = pair_pop(heap, &n);
        if (next[p.left] != p.right || sym[p.left] != p.a || sym[p.right] != p.b) continue;
        int32_t rank, merged;
        if (!merge_find(t, p.a, p.b, &rank, &merged)) continue; /* found when pushed: cannot fail */
        sym[p.left] = merged;
        sym[p.right] = INT32_MIN; /* removed */
        next[p.left] = next[p.right];
        if (next[p.left] >= 0) prev[next[p.left]] = p.left;
        pair_offer(t, sym, prev[p.left], p.left, heap, &n);
        pair_offer(t, sym, p.left, next[p.left], heap, &n);
    }
    int64_t m = 0;
    for (int64_t i = 0; i >= 0; i = next[i]) sym[m++] = sym[i];
    for (int64_t i = m; i < k; i++) sym[i] = -1;
    free(next), free(prev), free(heap);
    return LA_OK;
}

/* Merge the symbols of one pre-token: repeatedly the adjacent pair of the
 * lowest rank. Words are short, so a linear scan per merge is cheapest;
 * long ones go to bpe_long. */
static la_status bpe_word(const la_tokenizer *t, const char *s, size_t n, id_list *out, int32_t *sym) {
    enum { SCAN_MAX = 64 };
    int64_t k = 0;
    for (size_t i = 0; i < n; i++) sym[k++] = t->byte_token[(uint8_t)s[i]];
    if (k > SCAN_MAX) {
        la_status st = bpe_long(t, sym, k);
        if (st) return st;
    } else {
        for (;;) {
            int32_t best_rank = INT32_MAX, best_merged = -1, rank, merged;
            int64_t best = -1;
            for (int64_t i = 0; i + 1 < k; i++)
                if (merge_find(t, sym[i], sym[i + 1], &rank, &merged) && rank < best_rank)
                    best_rank = rank, best_merged = merged, best = i;
            if (best < 0) break;
            sym[best] = best_merged;
            memmove(sym + best + 1, sym + best + 2, sizeof(int32_t) * (size_t)(k - best - 2));
            k--;
        }
    }
    for (int64_t i = 0; i < k; i++)
        if (sym[i] >= 0) push(out, sym[i]);
    return LA_OK;
}

typedef struct {
    size_t start, len;
} span;

typedef struct {
    span *v;
    size_t n, cap;
} span_list;

static bool span_push(span_list *l, size_t start, size_t len) {
    if (!len) return true;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        span *p = realloc(l->v, sizeof(span) * cap);
        if (!p) return false;
        l->v = p, l->cap = cap;
    }
    l->v[l->n++] = (span){start, len};
    return true;
}

/* Split each span by one regex: matches become spans and so does the text
 * between them (as llama.cpp's splitter does). */
static la_status regex_split(pcre2_code *re, const char *text, span_list *in, span_list *out) {
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    if (!md) return la_fail(LA_ERR_NOMEM, "regex match data");
    for (size_t i = 0; i < in->n; i++) {
        size_t pos = in->v[i].start, end = in->v[i].start + in->v[i].len, last = pos;
        while (pos < end) {
            int rc = pcre2_match(re, (PCRE2_SPTR)text, end, pos, PCRE2_NO_UTF_CHECK, md, NULL);
            if (rc < 0) break;
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            if (ov[1] == ov[0]) { /* empty match: step one character */
                pos = ov[0] + 1;
                while (pos < end && ((uint8_t)text[pos] & 0xC0) == 0x80) pos++;
                continue;
            }
            if (!span_push(out, last, ov[0] - last) || !span_push(out, ov[0], ov[1] - ov[0])) {
                pcre2_match_data_free(md);
                return la_fail(LA_ERR_NOMEM, "pre-tokenizer spans");
            }
            pos = last = ov[1];
        }
        if (!span_push(out, last, end - last)) {
            pcre2_match_data_free(md);
            return la_fail(LA_ERR_NOMEM, "pre-tokenizer spans");
        }
    }
    pcre2_match_data_free(md);
    return LA_OK;
}

/* Bytes that are not valid UTF-8 cannot go through PCRE2's UTF mode; they
 * are pre-tokens of their own (each byte still has a BPE token). */
static size_t utf8_valid_prefix(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!len || i + len > n) return i;
        uint32_t cp = len == 1 ? c : len == 2 ? c & 31 : len == 3 ? c & 15 : c & 7;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return i;
            cp = cp << 6 | (s[i + k] & 63);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
            (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
            return i;
        i += len;
    }
    return n;
}

static la_status bpe_text(const la_tokenizer *t, const char *text, size_t len, id_list *out) {
    la_status st = LA_OK;
    int32_t *sym = malloc(sizeof(int32_t) * (len + 1));
    if (!sym) return la_fail(LA_ERR_NOMEM, "tokenizer scratch");
    size_t pos = 0;
    while (pos < len && !st) {
        size_t valid = utf8_valid_prefix((const uint8_t *)text + pos, len - pos);
        if (valid == 0) { /* one invalid byte */
            if (t->byte_token[(uint8_t)text[pos]] >= 0) push(out, t->byte_token[(uint8_t)text[pos]]);
            pos++;
            continue;
        }
        span_list a = {0}, b = {0};
        span_push(&a, pos, valid);
        for (int r = 0; r < t->n_re && !st; r++) {
            b.n = 0;
            st = regex_split(t->re[r], text, &a, &b);
            span_list tmp = a;
            a = b, b = tmp;
        }
        for (size_t i = 0; i < a.n && !st; i++) st = bpe_word(t, text + a.v[i].start, a.v[i].len, out, sym);
        free(a.v), free(b.v);
        pos += valid;
    }
    free(sym);
    return st;
}

/* ---- SentencePiece ---- */

static la_status spm_text(const la_tokenizer *t, const char *text, size_t len, bool prefix, id_list *out) {
    /* spaces to U+2581 ("\xe2\x96\x81"), with the optional leading one */
    size_t cap = (len + 1) * 3 + 1, n = 0;
    char *s = malloc(cap);
    int64_t *start = malloc(sizeof(int64_t) * (cap + 1)), *slen = malloc(sizeof(int64_t) * (cap + 1));
    if (!s || !start || !slen) {
        free(s), free(start), free(slen);
        return la_fail(LA_ERR_NOMEM, "tokenizer scratch");
    }
    if (prefix) memcpy(s, "\xe2\x96\x81", 3), n = 3;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') memcpy(s + n, "\xe2\x96\x81", 3), n += 3;
        else s[n++] = text[i];
    }
    /* symbols = UTF-8 characters (a stray byte is a symbol of its own) */
    int64_t k = 0;
    for (size_t i = 0; i < n;) {
        uint8_t c = (uint8_t)s[i];
        size_t cl = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
        if (cl > n - i || utf8_valid_prefix((const uint8_t *)s + i, cl) != cl) cl = 1;
        start[k] = (int64_t)i, slen[k] = (int64_t)cl, k++;
        i += cl;
    }
    /* merge the adjacent pair whose union has the best score */
    for (;;) {
        float best_score = -INFINITY;
        int64_t best = -1;
        int32_t best_id = -1;
        for (int64_t i = 0; i + 1 < k; i++) {
            int32_t id = vocab_find(t, s + start[i], (size_t)(slen[i] + slen[i + 1]));
            if (id >= 0 && t->tokens[id].score > best_score) best_score = t->tokens[id].score, best = i, best_id = id;
        }
        if (best < 0) break;
        (void)best_id;
        slen[best] += slen[best + 1];
        memmove(start + best + 1, start + best + 2, sizeof(int64_t) * (size_t)(k - best - 2));
        memmove(slen + best + 1, slen + best + 2, sizeof(int64_t) * (size_t)(k - best - 2));
        k--;
    }
    for (int64_t i = 0; i < k; i++) {
        int32_t id = vocab_find(t, s + start[i], (size_t)slen[i]);
        if (id >= 0) {
            push(out, id);
            continue;
        }
        for (int64_t b = 0; b < slen[i]; b++) { /* byte fallback */
            int32_t bt = t->byte_token[(uint8_t)s[start[i] + b]];
            push(out, bt >= 0 ? bt : t->unk >= 0 ? t->unk : 0);
        }
    }
    free(s), free(start), free(slen);
    return LA_OK;
}

la_status la_tokenize(const la_tokenizer *t, const char *text, size_t len, bool add_bos, bool parse_special,
                      int32_t **ids, int64_t *n) {
    if (!t || !ids || !n || (!text && len)) return la_fail(LA_ERR_NULL, "tokenizer, text, ids or n is NULL");
    *ids = NULL;
    *n = 0;
    id_list out = {0};
    if (add_bos && t->bos >= 0) push(&out, t->bos);
    la_status st = LA_OK;
    size_t pos = 0, plain = 0;
    bool first_plain = true;
    while (pos <= len && !st) {
        int32_t hit = -1;
        if (parse_special && pos < len)
            for (int32_t i = 0; i < t->n_specials; i++) {
                const token *tk = &t->tokens[t->specials[i]];
                if ((size_t)tk->len <= len - pos && !memcmp(text + pos, tk->text, (size_t)tk->len)) {
                    hit = t->specials[i];
                    break;
                }
            }
        if (hit < 0 && pos < len) {
            pos++;
            continue;
        }
        if (pos > plain) { /* the plain text before the special token (or the end) */
            if (t->kind == KIND_BPE) st = bpe_text(t, text + plain, pos - plain, &out);
            else st = spm_text(t, text + plain, pos - plain, t->add_space_prefix && first_plain && plain == 0, &out);
            first_plain = false;
        }
        if (hit < 0) break;
        push(&out, hit);
        pos += (size_t)t->tokens[hit].len;
        plain = pos;
    }
    if (st || out.oom) {
        free(out.ids);
        return st ? st : la_fail(LA_ERR_NOMEM, "token list allocation failed");
    }
    *ids = out.ids;
    *n = out.n;
    return la_succeed();
}

/* ---- decoding ---- */

static int64_t emit(char *buf, int64_t cap, int64_t at, const char *s, int64_t n) {
    if (at + n <= cap) memcpy(buf + at, s, (size_t)n);
    return at + n;
}

int64_t la_token_to_bytes(const la_tokenizer *t, int32_t id, bool render_special, char *buf, int64_t cap) {
    if (!t || id < 0 || id >= t->n_vocab) return 0;
    if (!buf) cap = 0; /* no buffer: only the length needed */
    const token *tk = &t->tokens[id];
    if (tk->type == TOKEN_CONTROL || tk->type == TOKEN_UNKNOWN || tk->type == TOKEN_UNUSED)
        return render_special ? emit(buf, cap, 0, tk->text, tk->len) : 0;
    if (tk->type == TOKEN_USER_DEFINED) return emit(buf, cap, 0, tk->text, tk->len);
    int64_t n = 0;
    if (t->kind == KIND_SPM) {
        if (tk->type == TOKEN_BYTE && tk->len == 6) {
            char c = (char)strtol(tk->text + 3, NULL, 16);
            return emit(buf, cap, 0, &c, 1);
        }
        for (int32_t i = 0; i < tk->len;) {
            if (i + 3 <= tk->len && !memcmp(tk->text + i, "\xe2\x96\x81", 3)) n = emit(buf, cap, n, " ", 1), i += 3;
            else n = emit(buf, cap, n, tk->text + i, 1), i++;
        }
        return n;
    }
    /* byte-level BPE: each code point maps back to one byte */
    for (int32_t i = 0; i < tk->len;) {
        uint8_t c = (uint8_t)tk->text[i];
        int cl = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : 4;
        if (i + cl > tk->len) cl = tk->len - i;
        uint32_t cp = cl == 1 ? c : cl == 2 ? (uint32_t)(c & 31) << 6 | ((uint8_t)tk->text[i + 1] & 63) : 0xFFFF;
        if (cp < 512 && t->cp_byte[cp] >= 0) {
            char ch = (char)t->cp_byte[cp];
            n = emit(buf, cap, n, &ch, 1);
        } else { /* not from the byte map (hand-added token text): copy it */
            n = emit(buf, cap, n, tk->text + i, cl);
        }
        i += cl;
    }
    return n;
}

la_status la_detokenize(const la_tokenizer *t, const int32_t *ids, int64_t n, bool render_special, char **text,
                        size_t *len) {
    if (!t || !text || (!ids && n)) return la_fail(LA_ERR_NULL, "tokenizer, ids or text is NULL");
    if (n < 0) return la_fail(LA_ERR_ARGUMENT, "la_detokenize: n is %lld; must be >= 0", (long long)n);
    size_t cap = 64, used = 0;
    char *buf = malloc(cap);
    if (!buf) return la_fail(LA_ERR_NOMEM, "detokenize buffer");
    for (int64_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab) {
            free(buf);
            return la_fail(LA_ERR_ARGUMENT, "token id %d at %lld is outside the vocabulary of %d", ids[i], (long long)i,
                           t->n_vocab);
        }
        int64_t need = la_token_to_bytes(t, ids[i], render_special, NULL, 0);
        while (used + (size_t)need + 1 > cap) {
            char *p = realloc(buf, cap * 2);
            if (!p) {
                free(buf);
                return la_fail(LA_ERR_NOMEM, "detokenize buffer");
            }
            buf = p, cap *= 2;
        }
        used += (size_t)la_token_to_bytes(t, ids[i], render_special, buf + used, need);
    }
    buf[used] = 0;
    *text = buf;
    if (len) *len = used;
    return la_succeed();
}
