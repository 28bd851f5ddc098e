/* The tokenizer on the real model (SmolLM2-135M-Instruct, byte-level BPE
 * with the "smollm" pre-tokenizer), against ids from the reference
 * tokenizer, llama.cpp. The model is fetched by scripts/get-model.sh, which
 * `make test` runs first; a missing model is a failure, not a skip.
 *
 * Expected ids were obtained with llama-cpp-python 0.3.36 (llama.cpp built
 * from its PyPI source package) on the same file:
 *   llama_cpp.Llama(model_path=..., vocab_only=True).tokenize(text.encode(), add_bos=False, special=True) */
#include "longattn_model.h"
#include "test_util.h"

#include <stdlib.h>
#include <string.h>

#define MODEL "models/SmolLM2-135M-Instruct.Q4_1.gguf"

static const struct {
    const char *text;
    int n;
    int32_t ids[40];
} cases[] = {
    {"Hello world", 2, {19556, 905}},
    {"The capital of France is Paris.", 7, {504, 3575, 282, 4649, 314, 7042, 30}},
    {"  leading and trailing spaces  ", 6, {216, 2899, 284, 35079, 5600, 256}},
    {"line one\nline two\n\n\ttabbed", 9, {1311, 582, 198, 1311, 827, 1116, 197, 15999, 5776}},
    {"def f(x):\n    return x**2 + 1  # square", 16, {1604, 275, 24, 104, 727, 472, 1003, 1792, 828, 34, 1232, 216, 33, 216, 907, 5222}},
    {"Numbers: 12345 3.14159 -42 1,000,000", 29, {39006, 42, 216, 33, 34, 35, 36, 37, 216, 35, 30, 33, 36, 33, 37, 41, 731, 36, 34, 216, 33, 28, 32, 32, 32, 28, 32, 32, 32}},
    {"don't I'll we've they're it's", 10, {12420, 982, 339, 3060, 392, 3543, 502, 2316, 357, 506}},
    {"caf\xc3""\xa9"" na\xc3""\xaf""ve r\xc3""\xa9""sum\xc3""\xa9"" Z\xc3""\xbc""rich", 12, {83, 1939, 2756, 15486, 46494, 412, 2756, 5422, 2756, 1777, 7170, 5130}},
    {"\xe6""\x97""\xa5""\xe6""\x9c""\xac""\xe8""\xaa""\x9e""\xe3""\x81""\xae""\xe3""\x83""\x86""\xe3""\x82""\xad""\xe3""\x82""\xb9""\xe3""\x83""\x88""\xe3""\x81""\xa8""\xe4""\xb8""\xad""\xe6""\x96""\x87""", 19, {23274, 115, 40993, 179, 120, 248, 26453, 11100, 224, 10391, 251, 10391, 134, 11100, 226, 7365, 118, 28589, 29184}},
    {"emoji \xf0""\x9f""\x98""\x80""\xf0""\x9f""\x8e""\x89""\xf0""\x9f""\x91""\x8d""\xf0""\x9f""\x8f""\xbd"" done", 14, {391, 33777, 40303, 218, 10813, 232, 227, 10813, 235, 231, 10813, 233, 138, 2294}},
    {"<|im_start|>user\nHi<|im_end|>", 5, {1, 4093, 198, 26843, 2}},
};

int main(void) {
    tu_seed();
    la_gguf *g = NULL;
    la_tokenizer *t = NULL;
    la_status s = la_gguf_open(MODEL, &g);
    tu_check(s == LA_OK, "open %s: %s (run scripts/get-model.sh)", MODEL, la_last_error());
    if (s == LA_OK) TU_EXPECT_STATUS(la_tokenizer_from_gguf(g, &t), LA_OK);
    if (!t) {
        la_gguf_close(g);
        return tu_finish();
    }
    tu_check(la_tokenizer_vocab_size(t) == 49152, "vocabulary size");
    tu_check(la_tokenizer_bos(t) == 1 && la_tokenizer_eos(t) == 2, "bos/eos ids");
    tu_check(!la_tokenizer_add_bos(t), "SmolLM2 adds no BOS");
    tu_check(la_tokenizer_is_eog(t, 2) && !la_tokenizer_is_eog(t, 1) && !la_tokenizer_is_eog(t, 504), "end-of-generation");
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int32_t *ids = NULL;
        int64_t n = 0;
        TU_EXPECT_STATUS(la_tokenize(t, cases[c].text, strlen(cases[c].text), false, true, &ids, &n), LA_OK);
        bool same = n == cases[c].n && ids && !memcmp(ids, cases[c].ids, sizeof(int32_t) * (size_t)n);
        tu_check(same, "ids of case %zu ('%s'): got %lld tokens, llama.cpp %d", c, cases[c].text, (long long)n, cases[c].n);
        char *back = NULL;
        size_t len = 0;
        TU_EXPECT_STATUS(la_detokenize(t, ids, n, true, &back, &len), LA_OK);
        tu_check(back && len == strlen(cases[c].text) && !memcmp(back, cases[c].text, len), "round trip of case %zu", c);
        free(back);
        free(ids);
    }
    /* special tokens are plain text unless parsed */
    int32_t *ids = NULL;
    int64_t n = 0;
    TU_EXPECT_STATUS(la_tokenize(t, "<|im_end|>", 10, false, false, &ids, &n), LA_OK);
    tu_check(n > 1, "unparsed <|im_end|> is several tokens (%lld)", (long long)n);
    free(ids);
    /* long input: 200 KB of text tokenizes and round-trips */
    size_t big = 200000;
    char *text = malloc(big + 1);
    for (size_t i = 0; i < big; i++) text[i] = "the quick brown fox jumps over 13 lazy dogs\n"[i % 44];
    text[big] = 0;
    TU_EXPECT_STATUS(la_tokenize(t, text, big, false, false, &ids, &n), LA_OK);
    char *back = NULL;
    size_t len = 0;
    TU_EXPECT_STATUS(la_detokenize(t, ids, n, false, &back, &len), LA_OK);
    tu_check(back && len == big && !memcmp(back, text, big), "200 KB round trip (%lld tokens)", (long long)n);
    free(back), free(ids), free(text);
    la_tokenizer_free(t);
    la_gguf_close(g);
    return tu_finish();
}
