/* longattn info MODEL.gguf: the file's metadata and tensor table. */
#include "cli.h"
#include "longattn.h"

#include <stdio.h>
#include <string.h>

static const char *const type_names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array",
                                         "u64", "i64", "f64"};

static void print_str(la_gguf_str s, size_t max) {
    size_t n = s.len < max ? (size_t)s.len : max;
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s.data[i];
        if (c == '\n') fputs("\\n", stdout);
        else if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 32) printf("\\x%02x", c);
        else putchar(c);
    }
    putchar('"');
    if (s.len > max) printf("... (%llu bytes)", (unsigned long long)s.len);
}

static void print_scalar(la_gguf_type t, const void *p) {
    switch (t) {
    case LA_GGUF_F32: { float f; memcpy(&f, p, 4); printf("%g", f); break; }
    case LA_GGUF_F64: { double d; memcpy(&d, p, 8); printf("%g", d); break; }
    case LA_GGUF_BOOL: printf("%s", *(const unsigned char *)p ? "true" : "false"); break;
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
        else printf("(u64 out of range)");
    }
    }
}

int cmd_info(int argc, char **argv) {
    if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        printf("usage: longattn info MODEL.gguf\n");
        return 0;
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
        printf("  %.*s [%s", (int)kv->key.len, kv->key.data, type_names[kv->type]);
        if (kv->type == LA_GGUF_ARRAY) {
            printf(" of %llu %s] = [", (unsigned long long)kv->count, type_names[kv->elem_type]);
            for (uint64_t j = 0; j < kv->count && j < 6; j++) {
                if (j) printf(", ");
                if (kv->elem_type == LA_GGUF_STRING) {
                    la_gguf_str s;
                    la_gguf_array_str(kv, j, &s);
                    print_str(s, 40);
                } else {
                    float f;
                    int64_t v;
                    if (kv->elem_type == LA_GGUF_F32 || kv->elem_type == LA_GGUF_F64) {
                        la_gguf_array_f32(kv, j, &f);
                        printf("%g", f);
                    } else if (la_gguf_array_int(kv, j, &v) == LA_OK) {
                        printf("%lld", (long long)v);
                    }
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
        printf("  %-32s %-6s %-24s %12zu %12llu\n", t->name, la_ggml_type_name(t->type), dims, t->nbytes,
               (unsigned long long)t->offset);
        total += t->nbytes;
        params += (uint64_t)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);
    }
    printf("\n  %llu parameters in %.1f MiB of tensor data\n", (unsigned long long)params, (double)total / 1048576.0);
    la_gguf_close(g);
    return 0;
}
