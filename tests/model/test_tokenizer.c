/* Tokenizers on small vocabularies built here (no real model): exact ids
 * worked out by hand, special tokens, BOS, end-of-generation, round trips of
 * random bytes and random UTF-8, and malformed metadata. */
#include "gguf_writer.h"
#include "longattn_model.h"
#include "test_util.h"

#include <stdlib.h>
#include <string.h>

/* File images the loaded tokenizers' GGUF views point into; freed at exit. */
static void *images[16];
static int n_images;

static la_tokenizer *load(gguf_writer *w, la_status want, la_gguf **keep) {
    void *img;
    size_t n;
    gw_finish(w, &img, &n);
    gw_free(w);
    la_gguf *g = NULL;
    la_tokenizer *t = NULL;
    TU_EXPECT_STATUS(la_gguf_open_memory(img, n, &g), LA_OK);
    la_status s = g ? la_tokenizer_from_gguf(g, &t) : LA_ERR_NULL;
    tu_check(s == want, "tokenizer load: got %s (%s), want %s", la_status_name(s), la_last_error(), la_status_name(want));
    if (!t) {
        la_gguf_close(g);
        free(img);
        return NULL;
    }
    *keep = g;
    images[n_images++] = img;
    return t;
}

/* Byte-level BPE over the 256 GPT-2 byte characters plus merges. Byte b maps
 * to itself when printable (33..126, 161..172, 174..255), else to 256 + k. */
static void bpe_vocab(const char ***toks, int32_t **types, int *n) {
    static char store[300][8];
    static const char *t[300];
    static int32_t ty[300];
    int k = 0, extra = 0;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
        unsigned cp = printable ? (unsigned)b : 256u + (unsigned)extra++;
        if (cp < 0x80) store[k][0] = (char)cp, store[k][1] = 0;
        else store[k][0] = (char)(0xC0 | cp >> 6), store[k][1] = (char)(0x80 | (cp & 63)), store[k][2] = 0;
        t[k] = store[k], ty[k] = 1, k++;
    }
    /* 256 "he", 257 "ll", 258 "hell", 259 "hello", 260 "Ġw" (space + w), 261 <|end|> */
    const char *more[] = {"he", "ll", "hell", "hello", "\xc4\xa0w", "<|end|>"};
    for (int i = 0; i < 6; i++) t[k] = more[i], ty[k] = i == 5 ? 3 : 1, k++;
    *toks = t, *types = ty, *n = k;
}

static void test_bpe(uint64_t *rng) {
    const char **toks;
    int32_t *types;
    int n;
    bpe_vocab(&toks, &types, &n);
    const char *merges[] = {"h e", "l l", "he ll", "hell o", "\xc4\xa0 w"};
    gguf_writer *w = gw_new(3, 0);
    gw_kv_str(w, "tokenizer.ggml.model", "gpt2");
    gw_kv_str(w, "tokenizer.ggml.pre", "default");
    gw_kv_arr_str(w, "tokenizer.ggml.tokens", toks, (uint64_t)n);
    gw_kv_arr_i32(w, "tokenizer.ggml.token_type", types, (uint64_t)n);
    gw_kv_arr_str(w, "tokenizer.ggml.merges", merges, 5);
    gw_kv_u32(w, "tokenizer.ggml.bos_token_id", 261);
    gw_kv_u32(w, "tokenizer.ggml.eos_token_id", 261);
    la_gguf *g = NULL;
    la_tokenizer *t = load(w, LA_OK, &g);
    if (!t) return;
    /* "hello world": pre-tokens "hello", " world"; "hello" merges h+e, l+l,
     * he+ll, hell+o -> 259; " world" -> Ġ+w -> 260, then o r l d bytes */
    int32_t *ids;
    int64_t k;
    TU_EXPECT_STATUS(la_tokenize(t, "hello world", 11, false, false, &ids, &k), LA_OK);
    /* byte b's token is vocabulary entry b here (entries are in byte order) */
    const int32_t want[] = {259, 260, 'o', 'r', 'l', 'd'};
    tu_check(k == 6 && !memcmp(ids, want, sizeof want), "hello world -> [hello][Ġw][o][r][l][d] (%lld tokens)",
             (long long)k);
    free(ids);
    TU_EXPECT_STATUS(la_tokenize(t, "he<|end|>he", 11, true, true, &ids, &k), LA_OK);
    tu_check(k == 4 && ids[0] == 261 && ids[1] == 256 && ids[2] == 261 && ids[3] == 256, "special token parsed, bos added");
    free(ids);
    TU_EXPECT_STATUS(la_tokenize(t, "<|end|>", 7, false, false, &ids, &k), LA_OK);
    tu_check(k == 7, "special token as text when not parsed (%lld)", (long long)k);
    free(ids);
    tu_check(la_tokenizer_is_eog(t, 261) && !la_tokenizer_is_eog(t, 259), "eog");
    tu_check(la_tokenizer_find(t, "hello") == 259 && la_tokenizer_find(t, "nope") == -1, "find");
    /* round trips: random bytes (every byte has a token here) and UTF-8 */
    for (int r = 0; r < 2000; r++) {
        char buf[64];
        int len = (int)tu_randint(rng, 0, 63);
        for (int i = 0; i < len; i++) buf[i] = (char)tu_next(rng);
        char *back = NULL;
        size_t blen = 0;
        if (la_tokenize(t, buf, (size_t)len, false, false, &ids, &k) != LA_OK) {
            tu_check(false, "tokenize random bytes: %s", la_last_error());
            break;
        }
        la_detokenize(t, ids, k, false, &back, &blen);
        tu_check(back && blen == (size_t)len && !memcmp(back, buf, (size_t)len), "random bytes round trip %d", r);
        free(ids), free(back);
    }
    la_tokenizer_free(t);
    la_gguf_close(g);
}

static void test_spm(uint64_t *rng) {
    /* pieces with scores; <0xXX> byte tokens for fallback */
    static char bytes[256][8];
    const char *toks[300];
    float scores[300];
    int32_t types[300];
    int n = 0;
    toks[n] = "<unk>", scores[n] = 0, types[n++] = 2;
    toks[n] = "<s>", scores[n] = 0, types[n++] = 3;
    toks[n] = "</s>", scores[n] = 0, types[n++] = 3;
    for (int b = 0; b < 256; b++) {
        snprintf(bytes[b], sizeof bytes[b], "<0x%02X>", b);
        toks[n] = bytes[b], scores[n] = 0, types[n++] = 6;
    }
    const char *pieces[] = {"\xe2\x96\x81", "a", "b", "c", "\xe2\x96\x81" "a", "ab", "\xe2\x96\x81" "ab", "abc"};
    const float piece_scores[] = {-1, -2, -2, -2, -3, -4, -1, -5};
    for (int i = 0; i < 8; i++) toks[n] = pieces[i], scores[n] = piece_scores[i], types[n++] = 1;
    gguf_writer *w = gw_new(3, 0);
    gw_kv_str(w, "tokenizer.ggml.model", "llama");
    gw_kv_arr_str(w, "tokenizer.ggml.tokens", toks, (uint64_t)n);
    gw_kv_arr_f32(w, "tokenizer.ggml.scores", scores, (uint64_t)n);
    gw_kv_arr_i32(w, "tokenizer.ggml.token_type", types, (uint64_t)n);
    gw_kv_u32(w, "tokenizer.ggml.bos_token_id", 1);
    gw_kv_u32(w, "tokenizer.ggml.eos_token_id", 2);
    la_gguf *g = NULL;
    la_tokenizer *t = load(w, LA_OK, &g);
    if (!t) return;
    /* ids: 3 specials, 256 bytes, then the pieces from 259 */
    const int32_t sp = 259, ab_sp = 265;
    int32_t *ids;
    int64_t k;
    /* "ab ab": "▁ab▁ab" (prefix space); best merges: ▁ab (score -1) twice */
    TU_EXPECT_STATUS(la_tokenize(t, "ab ab", 5, true, false, &ids, &k), LA_OK);
    tu_check(k == 3 && ids[0] == 1 && ids[1] == ab_sp && ids[2] == ab_sp, "SPM merges by score (%lld)", (long long)k);
    free(ids);
    /* "z" is not a piece: byte fallback <0x7A> = 3 + 0x7A */
    TU_EXPECT_STATUS(la_tokenize(t, "a z", 3, false, false, &ids, &k), LA_OK);
    tu_check(k == 3 && ids[0] == 263 && ids[1] == sp && ids[2] == 3 + 'z', "SPM byte fallback (%lld tokens)", (long long)k);
    free(ids);
    for (int r = 0; r < 1000; r++) {
        char buf[48];
        int len = (int)tu_randint(rng, 1, 47);
        for (int i = 0; i < len; i++) buf[i] = "ab c\xc3\xa9z"[tu_randint(rng, 0, 6)];
        char *back = NULL;
        size_t blen = 0;
        la_tokenize(t, buf, (size_t)len, false, false, &ids, &k);
        la_detokenize(t, ids, k, false, &back, &blen);
        /* the prefix space the tokenizer adds comes back: compare after it */
        tu_check(back && blen == (size_t)len + 1 && back[0] == ' ' && !memcmp(back + 1, buf, (size_t)len),
                 "SPM round trip %d", r);
        free(ids), free(back);
    }
    la_tokenizer_free(t);
    la_gguf_close(g);
}

static void test_bad_metadata(void) {
    la_gguf *g = NULL;
    gguf_writer *w = gw_new(3, 0);
    gw_kv_str(w, "tokenizer.ggml.model", "gpt2");
    tu_check(load(w, LA_ERR_FORMAT, &g) == NULL, "missing tokens array");
    w = gw_new(3, 0);
    gw_kv_str(w, "tokenizer.ggml.model", "wordpiece");
    const char *toks[] = {"a", "b"};
    gw_kv_arr_str(w, "tokenizer.ggml.tokens", toks, 2);
    tu_check(load(w, LA_ERR_FORMAT, &g) == NULL, "unknown model type");
    w = gw_new(3, 0);
    gw_kv_str(w, "tokenizer.ggml.model", "gpt2");
    gw_kv_arr_str(w, "tokenizer.ggml.tokens", toks, 2);
    const char *merges[] = {"a q"};
    gw_kv_arr_str(w, "tokenizer.ggml.merges", merges, 1);
    tu_check(load(w, LA_ERR_FORMAT, &g) == NULL, "merge naming an unknown token");
    w = gw_new(3, 0);
    gw_kv_str(w, "tokenizer.ggml.model", "llama");
    gw_kv_arr_str(w, "tokenizer.ggml.tokens", toks, 2);
    float sc[] = {1};
    gw_kv_arr_f32(w, "tokenizer.ggml.scores", sc, 1);
    tu_check(load(w, LA_ERR_FORMAT, &g) == NULL, "scores length mismatch");
    w = gw_new(3, 0);
    tu_check(load(w, LA_ERR_FORMAT, &g) == NULL, "no tokenizer at all");
}

int main(void) {
    uint64_t rng = tu_seed();
    test_bpe(&rng);
    test_spm(&rng);
    test_bad_metadata();
    for (int i = 0; i < n_images; i++) free(images[i]);
    return tu_finish();
}
