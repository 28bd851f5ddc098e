/* GGUF reader: files written by tests/ref/gguf_writer read back field by
 * field (v2 and v3, default and other alignments, every tensor type, from
 * memory and from a file), then corrupt and hostile files, each of which
 * must give its error without a crash (the suite also runs under ASan). */
#include "gguf_writer.h"
#include "longattn.h"
#include "quant_ref.h"
#include "test_util.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const int types[] = {REF_F32, REF_F16, REF_BF16, REF_Q8_0, REF_Q4_0, REF_Q4_1, REF_Q4_K, REF_Q6_K};
#define NT (int)(sizeof types / sizeof types[0])

static uint8_t *tensor_data[NT];
static size_t tensor_bytes[NT];

static gguf_writer *sample(uint32_t version, uint32_t alignment) {
    gguf_writer *w = gw_new(version, alignment);
    gw_kv_str(w, "general.architecture", "llama");
    gw_kv_u32(w, "llama.block_count", 30);
    gw_kv_i32(w, "test.negative", -7);
    gw_kv_u64(w, "test.big", 1ull << 40);
    gw_kv_f32(w, "llama.rope.freq_base", 100000.0f);
    gw_kv_bool(w, "test.flag", true);
    const char *toks[] = {"a", "bc", "", "<|im_end|>"};
    gw_kv_arr_str(w, "tokenizer.ggml.tokens", toks, 4);
    float scores[] = {0.5f, -1.0f, 2.0f};
    gw_kv_arr_f32(w, "tokenizer.ggml.scores", scores, 3);
    int32_t tt[] = {1, 3, 4};
    gw_kv_arr_i32(w, "tokenizer.ggml.token_type", tt, 3);
    for (int i = 0; i < NT; i++) {
        char name[64];
        snprintf(name, sizeof name, "blk.%d.weight", i);
        int64_t ne[2] = {256, 3};
        gw_tensor(w, name, (uint32_t)types[i], 2, ne, tensor_data[i], tensor_bytes[i]);
    }
    return w;
}

static void check_sample(la_gguf *g, uint32_t version) {
    tu_check(la_gguf_version(g) == version, "version");
    int64_t v;
    float f;
    la_gguf_str s;
    TU_EXPECT_STATUS(la_gguf_get_int(g, "llama.block_count", &v), LA_OK);
    tu_check(v == 30, "u32 value");
    TU_EXPECT_STATUS(la_gguf_get_int(g, "test.negative", &v), LA_OK);
    tu_check(v == -7, "i32 value");
    TU_EXPECT_STATUS(la_gguf_get_int(g, "test.big", &v), LA_OK);
    tu_check(v == 1ll << 40, "u64 value");
    TU_EXPECT_STATUS(la_gguf_get_f32(g, "llama.rope.freq_base", &f), LA_OK);
    tu_check(f == 100000.0f, "f32 value");
    TU_EXPECT_STATUS(la_gguf_get_int(g, "test.flag", &v), LA_OK);
    tu_check(v == 1, "bool value");
    TU_EXPECT_STATUS(la_gguf_get_str(g, "general.architecture", &s), LA_OK);
    tu_check(s.len == 5 && !memcmp(s.data, "llama", 5), "string value");
    TU_EXPECT_STATUS(la_gguf_get_int(g, "general.architecture", &v), LA_ERR_FORMAT);
    TU_EXPECT_STATUS(la_gguf_get_int(g, "missing.key", &v), LA_ERR_FORMAT);
    TU_EXPECT_STATUS(la_gguf_get_str(g, "llama.block_count", &s), LA_ERR_FORMAT);
    const la_gguf_kv *toks = la_gguf_find(g, "tokenizer.ggml.tokens");
    tu_check(toks && toks->count == 4 && toks->elem_type == LA_GGUF_STRING, "string array");
    TU_EXPECT_STATUS(la_gguf_array_str(toks, 3, &s), LA_OK);
    tu_check(s.len == 10 && !memcmp(s.data, "<|im_end|>", 10), "string array element");
    TU_EXPECT_STATUS(la_gguf_array_str(toks, 2, &s), LA_OK);
    tu_check(s.len == 0, "empty string element");
    TU_EXPECT_STATUS(la_gguf_array_str(toks, 4, &s), LA_ERR_ARGUMENT);
    const void *cur = toks->value;
    cur = la_gguf_array_str_next(cur, &s);
    cur = la_gguf_array_str_next(cur, &s);
    tu_check(s.len == 2 && !memcmp(s.data, "bc", 2), "string array walk");
    TU_EXPECT_STATUS(la_gguf_array_f32(la_gguf_find(g, "tokenizer.ggml.scores"), 2, &f), LA_OK);
    tu_check(f == 2.0f, "f32 array element");
    TU_EXPECT_STATUS(la_gguf_array_int(la_gguf_find(g, "tokenizer.ggml.token_type"), 1, &v), LA_OK);
    tu_check(v == 3, "i32 array element");
    tu_check(la_gguf_tensor_count(g) == NT, "tensor count");
    for (int i = 0; i < NT; i++) {
        char name[64];
        snprintf(name, sizeof name, "blk.%d.weight", i);
        const la_gguf_tensor *t = la_gguf_tensor_find(g, name);
        tu_check(t != NULL, "tensor %s found", name);
        if (!t) continue;
        tu_check(t->type == (la_ggml_type)types[i] && t->n_dims == 2 && t->ne[0] == 256 && t->ne[1] == 3 &&
                     t->ne[2] == 1 && t->nbytes == tensor_bytes[i],
                 "tensor %s record", name);
        tu_check(!memcmp(t->data, tensor_data[i], tensor_bytes[i]), "tensor %s data", name);
    }
    tu_check(la_gguf_tensor_find(g, "nope") == NULL, "absent tensor");
}

static la_status open_image(const uint8_t *buf, size_t n) {
    la_gguf *g = NULL;
    la_status s = la_gguf_open_memory(buf, n, &g);
    la_gguf_close(g);
    return s;
}

/* Overwrite the u64 after the first occurrence of `needle` (a key or name). */
static uint8_t *patch_after(const uint8_t *img, size_t n, const char *needle, size_t skip, const void *val, size_t vn) {
    uint8_t *c = tu_alloc(n);
    memcpy(c, img, n);
    size_t nl = strlen(needle);
    for (size_t i = 0; i + nl < n; i++)
        if (!memcmp(c + i, needle, nl)) {
            memcpy(c + i + nl + skip, val, vn);
            return c;
        }
    return c;
}

static void corrupt_cases(void) {
    gguf_writer *w = sample(3, 0);
    uint8_t *img;
    size_t n;
    gw_finish(w, (void **)&img, &n);
    gw_free(w);
    TU_EXPECT_STATUS(open_image(img, n), LA_OK);
    /* every truncation that loses a byte of data fails cleanly; only the
     * alignment padding after the last tensor may go */
    size_t last = tensor_bytes[NT - 1], data_end = n - ((last + 31) / 32 * 32 - last);
    int64_t accepted = 0;
    for (size_t cut = 0; cut < data_end; cut++)
        if (open_image(img, cut) == LA_OK) accepted++;
    tu_check(accepted == 0, "%lld truncated images accepted", (long long)accepted);

    uint8_t *c = tu_alloc(n);
#define CASE(label, want, ...)                                                                  \
    do {                                                                                        \
        memcpy(c, img, n);                                                                      \
        __VA_ARGS__;                                                                            \
        la_status s_ = open_image(c, n);                                                        \
        tu_check(s_ == (want), "corrupt '%s': got %s (%s)", label, la_status_name(s_), la_last_error()); \
    } while (0)
    uint32_t u32;
    uint64_t u64;
    CASE("bad magic", LA_ERR_FORMAT, c[0] = 'X');
    CASE("version 1", LA_ERR_FORMAT, u32 = 1; memcpy(c + 4, &u32, 4));
    CASE("version 4", LA_ERR_FORMAT, u32 = 4; memcpy(c + 4, &u32, 4));
    CASE("huge tensor count", LA_ERR_FORMAT, u64 = 1ull << 60; memcpy(c + 8, &u64, 8));
    CASE("huge key count", LA_ERR_FORMAT, u64 = 1ull << 60; memcpy(c + 16, &u64, 8));
    CASE("more keys than present", LA_ERR_FORMAT, u64 = 40; memcpy(c + 16, &u64, 8));
    CASE("key length past the end", LA_ERR_FORMAT, u64 = 1ull << 40; memcpy(c + 24, &u64, 8));
    CASE("empty key", LA_ERR_FORMAT, u64 = 0; memcpy(c + 24, &u64, 8));
    free(c);
    /* cases that need a different structure: patch specific fields */
    u32 = 77;
    c = patch_after(img, n, "general.architecture", 0, &u32, 4);
    tu_check(open_image(c, n) == LA_ERR_FORMAT, "unknown value type: %s", la_last_error());
    free(c);
    u32 = 9; /* array element type: array (nested) */
    c = patch_after(img, n, "tokenizer.ggml.scores", 4, &u32, 4);
    tu_check(open_image(c, n) == LA_ERR_FORMAT, "nested array: %s", la_last_error());
    free(c);
    u64 = 1ull << 61; /* array count past the end */
    c = patch_after(img, n, "tokenizer.ggml.scores", 8, &u64, 8);
    tu_check(open_image(c, n) == LA_ERR_FORMAT, "array past the end: %s", la_last_error());
    free(c);
    u32 = 5; /* n_dims */
    c = patch_after(img, n, "blk.0.weight", 0, &u32, 4);
    tu_check(open_image(c, n) == LA_ERR_FORMAT, "n_dims 5: %s", la_last_error());
    free(c);
    u64 = 0; /* zero dim */
    c = patch_after(img, n, "blk.0.weight", 4, &u64, 8);
    tu_check(open_image(c, n) == LA_ERR_FORMAT, "zero dim: %s", la_last_error());
    free(c);
    u64 = 100; /* ne[0] not a multiple of Q8_0's 32 (blk.3) */
    c = patch_after(img, n, "blk.3.weight", 4, &u64, 8);
    tu_check(open_image(c, n) == LA_ERR_FORMAT, "ne0 not a block multiple: %s", la_last_error());
    free(c);
    u64 = 1ull << 62; /* dims whose product overflows */
    c = patch_after(img, n, "blk.0.weight", 4, &u64, 8);
    {
        uint8_t *c2 = patch_after(c, n, "blk.0.weight", 12, &u64, 8);
        tu_check(open_image(c2, n) == LA_ERR_FORMAT, "overflowing dims: %s", la_last_error());
        free(c2);
    }
    free(c);
    u32 = 5; /* unknown tensor type (Q4_2, removed) */
    c = patch_after(img, n, "blk.0.weight", 4 + 16, &u32, 4);
    tu_check(open_image(c, n) == LA_ERR_FORMAT, "unknown tensor type: %s", la_last_error());
    free(c);
    u64 = 3; /* misaligned offset */
    c = patch_after(img, n, "blk.0.weight", 4 + 16 + 4, &u64, 8);
    tu_check(open_image(c, n) == LA_ERR_FORMAT, "misaligned offset: %s", la_last_error());
    free(c);
    u64 = 1ull << 40; /* data past the end */
    c = patch_after(img, n, "blk.0.weight", 4 + 16 + 4, &u64, 8);
    tu_check(open_image(c, n) == LA_ERR_FORMAT, "data past the end: %s", la_last_error());
    free(c);
    c = patch_after(img, n, "blk.1.weight", 0, "blk.0", 5); /* duplicate name: blk.0.weight twice */
    tu_check(open_image(c, n) == LA_ERR_FORMAT, "duplicate tensor name: %s", la_last_error());
    free(c);
    free(img);

    /* duplicate key and bad alignment, built directly */
    w = gw_new(3, 0);
    gw_kv_u32(w, "a.key", 1);
    gw_kv_u32(w, "a.key", 2);
    gw_finish(w, (void **)&img, &n);
    TU_EXPECT_STATUS(open_image(img, n), LA_ERR_FORMAT);
    gw_free(w);
    free(img);
    w = gw_new(3, 0);
    gw_kv_u32(w, "general.alignment", 24);
    gw_finish(w, (void **)&img, &n);
    TU_EXPECT_STATUS(open_image(img, n), LA_ERR_FORMAT);
    gw_free(w);
    free(img);
    w = gw_new(3, 0);
    gw_kv_str(w, "general.alignment", "32");
    gw_finish(w, (void **)&img, &n);
    TU_EXPECT_STATUS(open_image(img, n), LA_ERR_FORMAT);
    gw_free(w);
    free(img);
    la_gguf *g;
    TU_EXPECT_STATUS(la_gguf_open("/nonexistent/model.gguf", &g), LA_ERR_IO);
    TU_EXPECT_STATUS(la_gguf_open(NULL, &g), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_gguf_open_memory(NULL, 10, &g), LA_ERR_NULL);
}

int main(void) {
    uint64_t rng = tu_seed();
    for (int i = 0; i < NT; i++) {
        tensor_bytes[i] = (size_t)(256 / ref_block_elems(types[i])) * ref_block_bytes(types[i]) * 3;
        tensor_data[i] = tu_alloc(tensor_bytes[i]);
        ref_random_row(types[i], tensor_data[i], 256 * 3, &rng);
    }
    for (uint32_t version = 2; version <= 3; version++)
        for (uint32_t align = 0; align <= 64; align += 64) {
            gguf_writer *w = sample(version, align);
            void *img;
            size_t n;
            gw_finish(w, &img, &n);
            la_gguf *g = NULL;
            TU_EXPECT_STATUS(la_gguf_open_memory(img, n, &g), LA_OK);
            if (g) check_sample(g, version);
            la_gguf_close(g);
            char path[] = "/tmp/longattn-test-XXXXXX";
            int fd = mkstemp(path);
            close(fd);
            tu_check(gw_write_file(w, path) == 0, "write temp file");
            g = NULL;
            TU_EXPECT_STATUS(la_gguf_open(path, &g), LA_OK);
            if (g) check_sample(g, version);
            la_gguf_close(g);
            unlink(path);
            gw_free(w);
            free(img);
        }
    corrupt_cases();
    for (int i = 0; i < NT; i++) free(tensor_data[i]);
    return tu_finish();
}
