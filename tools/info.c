/* longattn info MODEL.gguf: the file's metadata and tensor table. */
#include "cli.h"
#include "longattn.h"

#include <stdio.h>
#include <string.h>

static const char *const type_names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array",
                                         "u64", "i64", "f64"};

/* Bytes as text, control bytes escaped: keys and tensor names are bytes
 * from the file, and a newline or an escape sequence in one broke the
 * listing (or drove the terminal). */
static int print_bytes(const char *data, size_t n) {
    int width = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)data[i];
        if (c == '\n') width += printf("\\n");
        else if (c == '"' || c == '\\') width += printf("\\%c", c);
        else if (c < 32 || c == 127) width += printf("\\x%02x", c);
        else width += putchar(c) != EOF;
    }
    return width; /* characters printed */
}

static void print_str(la_gguf_str s, size_t max) {
    size_t n = s.len < max ? (size_t)s.len : max;
    putchar('"');
    print_bytes(s.data, n);
    putchar('"');
    if (s.len > max) printf("... (%llu bytes)", (unsigned long long)s.len);
}

/* Bytes one value of a fixed-size type takes in the file. */
static size_t scalar_size(la_gguf_type t) {
    switch (t) {
    case LA_GGUF_U8: case LA_GGUF_I8: case LA_GGUF_BOOL: return 1;
    case LA_GGUF_U16: case LA_GGUF_I16: return 2;
    case LA_GGUF_U32: case LA_GGUF_I32: case LA_GGUF_F32: return 4;
    default: return 8; /* u64, i64, f64 */
    }
}

/* One value of a fixed-size type (or a string record) at p, as the file
 * holds it: u64 past INT64_MAX printed "(u64 out of range)", an f64 array
 * element went through float (1e300 printed inf). */
static void print_scalar(la_gguf_type t, const void *p) {
    switch (t) {
    case LA_GGUF_F32: { float f; memcpy(&f, p, 4); printf("%g", f); break; }
    case LA_GGUF_F64: { double d; memcpy(&d, p, 8); printf("%g", d); break; }
    case LA_GGUF_BOOL: printf("%s", *(const unsigned char *)p ? "true" : "false"); break;
    case LA_GGUF_U64: { uint64_t u; memcpy(&u, p, 8); printf("%llu", (unsigned long long)u); break; }
    case LA_GGUF_STRING: {
        uint64_t len;
        memcpy(&len, p, 8);
        print_str((la_gguf_str){(const char *)p + 8, len}, 120);
        break;
    }
    default: {
        la_gguf_kv kv = {.type = LA_GGUF_ARRAY, .elem_type = t, .count = 1, .value = p};
        int64_t v = 0;
        if (la_gguf_array_int(&kv, 0, &v) == LA_OK) printf("%lld", (long long)v);
    }
    }
}

int cmd_info(int argc, char **argv) {
    /* as run's and ppl's --help, wherever it stands before an unknown option: "info --help x" said
     * "unknown option '--help'" */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: longattn info MODEL.gguf\n");
            return 0;
        }
        if (argv[i][0] == '-') break;
    }
    if (argc != 2 || argv[1][0] == '-' || !argv[1][0]) { /* "": no file, as -m "" elsewhere */
        /* as every other subcommand, an option it does not know is named */
        for (int i = 1; i < argc; i++)
            if (argv[i][0] == '-') {
                fprintf(stderr, "longattn info: unknown option '%s'\n", argv[i]);
                break;
            }
        if (argc == 2 && !argv[1][0]) fprintf(stderr, "longattn info: expects a file path, got ''\n");
        fprintf(stderr, "usage: longattn info MODEL.gguf\n");
        return 2;
    }
    la_gguf *g;
    if (la_gguf_open(argv[1], &g) != LA_OK) {
        fprintf(stderr, "longattn info: %s\n", la_last_error());
        return 1;
    }
    printf("%s: GGUF v%u, %lld metadata keys, %lld tensors\n\n", argv[1], la_gguf_version(g),
           (long long)la_gguf_kv_count(g), (long long)la_gguf_tensor_count(g));
    for (int64_t i = 0; i < la_gguf_kv_count(g); i++) {
        const la_gguf_kv *kv = la_gguf_kv_at(g, i);
        printf("  ");
        print_bytes(kv->key.data, (size_t)kv->key.len);
        printf(" [%s", type_names[kv->type]);
        if (kv->type == LA_GGUF_ARRAY) {
            printf(" of %llu %s] = [", (unsigned long long)kv->count, type_names[kv->elem_type]);
            for (uint64_t j = 0; j < kv->count && j < 6; j++) {
                if (j) printf(", ");
                if (kv->elem_type == LA_GGUF_STRING) {
                    la_gguf_str s;
                    la_gguf_array_str(kv, j, &s);
                    print_str(s, 40);
                } else {
                    print_scalar(kv->elem_type, (const char *)kv->value + j * scalar_size(kv->elem_type));
                }
            }
            printf("%s]\n", kv->count > 6 ? ", ..." : "");
        } else {
            printf("] = ");
            print_scalar(kv->type, kv->value);
            putchar('\n');
        }
    }
    printf("\n  %-32s %-6s %-24s %12s %12s\n", "tensor", "type", "dims", "bytes", "offset");
    uint64_t total = 0, params = 0;
    for (int64_t i = 0; i < la_gguf_tensor_count(g); i++) {
        const la_gguf_tensor *t = la_gguf_tensor_at(g, i);
        char dims[64];
        int n = snprintf(dims, sizeof dims, "[");
        for (int d = 0; d < t->n_dims; d++) n += snprintf(dims + n, sizeof dims - (size_t)n, d ? ", %lld" : "%lld", (long long)t->ne[d]);
        snprintf(dims + n, sizeof dims - (size_t)n, "]");
        printf("  ");
        const int width = print_bytes(t->name, strlen(t->name));
        printf("%*s %-6s %-24s %12zu %12llu\n", width < 32 ? 32 - width : 0, "", la_ggml_type_name(t->type), dims, t->nbytes,
               (unsigned long long)t->offset);
        total += t->nbytes;
        params += (uint64_t)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);
    }
    printf("\n  %llu parameters in %.1f MiB of tensor data\n", (unsigned long long)params, (double)total / 1048576.0);
    la_gguf_close(g);
    return 0;
}
