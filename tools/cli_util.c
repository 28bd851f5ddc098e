#include "cli_util.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

bool cli_parse_sparse(const char *cmd, const char *text, la_sparse_choice *out) {
    if (!la_sparse_choice_parse(text, out)) return true;
    fprintf(stderr, "%s: --sparse: %s\n", cmd, la_last_error());
    return false;
}

bool cli_parse_kv_type(const char *cmd, const char *option, const char *text, la_dtype *out, la_kv_quant *quant) {
    const la_dtype types[] = {LA_F32, LA_BF16, LA_F16};
    for (int i = 0; i < 3; i++)
        if (!strcmp(text, la_dtype_name(types[i]))) {
            *out = types[i];
            *quant = LA_KV_QUANT_NONE;
            return true;
        }
    if (!strcmp(text, "q8") || !strcmp(text, "int8") || !strcmp(text, "q4") || !strcmp(text, "int4")) {
        *quant = strchr(text, '8') ? LA_KV_Q8 : LA_KV_Q4;
        return true;
    }
    fprintf(stderr, "%s: %s expects f32, bf16, f16, q8 (int8) or q4 (int4), got '%s'\n", cmd, option, text);
    return false;
}

const char *cli_kv_type_name(la_dtype type, la_kv_quant quant) {
    return quant == LA_KV_Q8 ? "q8" : quant == LA_KV_Q4 ? "q4" : la_dtype_name(type);
}

/* strto* skip leading white space: " -1" would pass a check of text[0] and
 * " 7" would read as 7. A number starts at its first character. */
static bool starts_blank(const char *text) { return isspace((unsigned char)text[0]) != 0; }

bool cli_parse_i64(const char *cmd, const char *option, const char *text, int64_t lo, int64_t hi, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text || *end || starts_blank(text) || v < lo || v > hi) {
        fprintf(stderr, "%s: %s expects an integer in [%" PRId64 ", %" PRId64 "], got '%s'\n", cmd, option, lo, hi,
                text);
        return false;
    }
    *out = v;
    return true;
}

bool cli_parse_threads(const char *cmd, const char *text, int64_t *out) {
    if (!cli_parse_i64(cmd, "--threads", text, 1, 4096, out)) return false;
    /* more threads than cores only time-slice them: every barrier then waits
     * for a descheduled thread (4096 on 2 cores took the load to ~900) */
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    if (online > 0 && *out > online)
        fprintf(stderr, "%s: warning: --threads %" PRId64 " is more than the %ld CPUs online; the extra threads share cores and slow the run\n",
                cmd, *out, online);
    return true;
}

bool cli_default_threads(const char *cmd, int64_t *threads) {
    if (*threads > 0) return true;
    la_context *ctx;
    if (la_context_create(&ctx, 0)) return true; /* the command's own context creation will say why */
    const int n = la_context_threads(ctx);
    la_context_destroy(ctx);
    /* OMP_NUM_THREADS=99999 was taken as is: the run made no progress in minutes on 2 cores. The
     * library caps the OpenMP default at 4096, so the count asked for is read here (its first
     * value: OMP_NUM_THREADS may list one per nesting level) to refuse it as --threads would */
    const char *omp = getenv("OMP_NUM_THREADS");
    const long long asked = omp ? strtoll(omp, NULL, 10) : 0;
    if (n > 4096 || asked > 4096) {
        fprintf(stderr, "%s: the default thread count (OMP_NUM_THREADS%s%s%s) is %lld, past the 4096 --threads takes; "
                        "give --threads N\n", cmd, omp ? "='" : "", omp ? omp : " unset", omp ? "'" : "",
                asked > n ? asked : (long long)n);
        return false;
    }
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    if (online > 0 && n > online)
        fprintf(stderr, "%s: warning: the default thread count (OMP_NUM_THREADS='%s') is %d, more than the %ld CPUs "
                        "online; the extra threads share cores and slow the run\n", cmd, omp ? omp : "", n, online);
    *threads = n;
    return true;
}

bool cli_parse_u64(const char *cmd, const char *option, const char *text, uint64_t *out) {
    char *end;
    errno = 0;
    /* base 10, as every other integer option: base 0 read "010" as 8 and
     * refused "08" and "09" (octal digits) */
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || end == text || *end || text[0] == '-' || starts_blank(text)) {
        fprintf(stderr, "%s: %s expects a non-negative integer, got '%s'\n", cmd, option, text);
        return false;
    }
    *out = v;
    return true;
}

bool cli_parse_f32(const char *cmd, const char *option, const char *text, float lo, float hi, float *out) {
    double v;
    if (!la_parse_decimal(text, strlen(text), &v) || !(v >= lo && v <= hi)) {
        fprintf(stderr, "%s: %s expects a number in [%g, %g], got '%s'\n", cmd, option, (double)lo,
                (double)hi, text);
        return false;
    }
    *out = (float)v;
    return true;
}

const char *cli_value(const char *cmd, int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        fprintf(stderr, "%s: %s needs a value\n", cmd, argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

const char *cli_option_value(const char *cmd, int argc, char **argv, int *i, const char *const *known) {
    for (const char *const *k = known; *k; k++)
        if (!strcmp(argv[*i], *k)) return cli_value(cmd, argc, argv, i);
    fprintf(stderr, "%s: unknown option '%s'\n", cmd, argv[*i]);
    return NULL;
}

char *cli_read_file(const char *cmd, const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "%s: cannot open '%s': %s\n", cmd, path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) break;
        errno = 0;
        n += fread(buf + n, 1, cap - n - 1, f);
        if (n < cap - 1) break;
        /* an endless file (/dev/zero, a generator piped in) took all the
         * machine's memory: stop at 1 GiB, far past any prompt or text scored */
        if (cap >= (size_t)1 << 30) {
            fprintf(stderr, "%s: '%s' holds more than 1 GiB; longer texts are not read\n", cmd, path);
            free(buf);
            fclose(f);
            return NULL;
        }
        char *grown = cap <= SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
        if (!grown) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = grown;
        cap *= 2;
    }
    const bool failed = ferror(f);
    const int why = errno; /* fread's reason, such as EISDIR for a directory */
    fclose(f);
    if (!buf || failed) {
        fprintf(stderr, "%s: cannot read '%s': %s\n", cmd, path,
                !buf ? "out of memory" : why ? strerror(why) : "read error");
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

int cli_fail(const char *cmd, const char *what, la_status st) {
    fprintf(stderr, "%s: %s: %s: %s\n", cmd, what, la_status_name(st), la_last_error());
    return 1;
}

int64_t cli_model_ctx(const char *cmd, const char *option, int64_t requested, const la_model_config *cfg) {
    int64_t ctx = requested > 0 ? requested : cfg->n_ctx_train;
    if (ctx > LA_SESSION_MAX_CTX) ctx = LA_SESSION_MAX_CTX;
    if (cfg->n_ctx_train > 0 && ctx > cfg->n_ctx_train)
        fprintf(stderr, "%s: warning: %s %lld is beyond the model's trained context of %lld tokens\n", cmd, option,
                (long long)ctx, (long long)cfg->n_ctx_train);
    return ctx;
}

double cli_kv_bytes_per_token(const la_model_config *cfg, la_dtype type, la_kv_quant quant) {
    /* q8: a byte a code, q4 half a byte; each group of 32 (16 for int4 values)
     * adds an f16 scale and zero: 4 bytes per 32 or 16 elements */
    const double elem = quant == LA_KV_Q8   ? 1.0 + 4.0 / 32
                        : quant == LA_KV_Q4 ? 0.5 + 4.0 / 16
                                            : (double)la_dtype_size(type);
    return 2.0 * (double)cfg->n_layer * (double)cfg->n_head_kv * (double)cfg->head_dim * elem;
}

bool cli_fits_memory(const char *cmd, const char *option, int64_t tokens, double need, const char *what) {
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page <= 0) return true; /* unknown: let the run find out */
    const double have = (double)pages * (double)page;
    if (need <= have) return true;
    fprintf(stderr, "%s: %s %lld needs about %.1f GB (%s), more than this machine's %.1f GB of memory\n", cmd, option,
            (long long)tokens, need / 1e9, what, have / 1e9);
    return false;
}

bool cli_sparse_fits_model(const char *cmd, const la_sparse_choice *choice, const la_model_config *cfg) {
    if (choice->kind == LA_SPARSE_NONE || choice->dense_layers <= cfg->n_layer) return true;
    fprintf(stderr, "%s: --sparse: dense-layers=%lld is more than the model's %lld layers\n", cmd,
            (long long)choice->dense_layers, (long long)cfg->n_layer);
    return false;
}

bool cli_sparse_heads(const char *cmd, const char *path, const la_model_config *cfg, float **gamma) {
    *gamma = malloc(sizeof(float) * (size_t)(cfg->n_layer * cfg->n_head));
    if (!*gamma) {
        fprintf(stderr, "%s: out of memory\n", cmd);
        return false;
    }
    la_status st = la_sparse_gammas_read(path, cfg->n_layer, cfg->n_head, *gamma);
    if (st) {
        cli_fail(cmd, "--sparse-heads", st);
        free(*gamma);
        *gamma = NULL;
        return false;
    }
    return true;
}

bool cli_needs_topk(const char *cmd, const char *option, const la_sparse_choice *choice, bool coverage) {
    if (choice->kind == LA_SPARSE_TOPK && (!coverage || (choice->budget > 0 && choice->budget <= 1))) return true;
    fprintf(stderr, "%s: %s needs --sparse topk:%s\n", cmd, option,
            coverage ? "G with a coverage G in (0, 1]" : "BUDGET");
    return false;
}

bool cli_parse_path(const char *cmd, const char *option, const char *text) {
    if (*text) return true;
    fprintf(stderr, "%s: %s expects a file path, got ''\n", cmd, option);
    return false;
}

bool cli_output_ok(const char *cmd, const char *option, const char *path, bool prefix) {
    char dir[4096];
    const char *slash = strrchr(path, '/');
    struct stat sb;
    if (!slash) snprintf(dir, sizeof dir, ".");
    else snprintf(dir, sizeof dir, "%.*s", slash == path ? 1 : (int)(slash - path), path);
    /* a file where the directory should be: access() says "Permission
     * denied" (it is not searchable), which misleads */
    if (access(dir, W_OK | X_OK)) {
        const int err = errno, why = !stat(dir, &sb) && !S_ISDIR(sb.st_mode) ? ENOTDIR : err;
        fprintf(stderr, "%s: %s %s: cannot write into '%s': %s\n", cmd, option, path, dir, strerror(why));
        return false;
    }
    if (!prefix && !stat(path, &sb) && S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "%s: %s %s: is a directory\n", cmd, option, path);
        return false;
    }
    return true;
}

void cli_sparse_report(const char *cmd, const la_session *s, const la_model_config *cfg) {
    int64_t all_listed = 0, all_visible = 0;
    for (int64_t l = 0; l < cfg->n_layer; l++) {
        int64_t listed, visible;
        if (la_session_sparse_counts(s, l, &listed, &visible)) return;
        all_listed += listed, all_visible += visible;
    }
    /* nothing counted: no prefill of two or more tokens, or a stateful policy's, which is dense (a density of
     * 0.000 per layer said the opposite) */
    if (!all_visible) {
        fprintf(stderr, "%s: no block-sparse prefill ran (single tokens are dense, and under a stateful KV policy, "
                        "h2o, snapkv, quest or duo, the prefill attends densely through the policy)\n", cmd);
        return;
    }
    fprintf(stderr, "%s: sparse density per layer (key blocks computed / dense):", cmd);
    for (int64_t l = 0; l < cfg->n_layer; l++) {
        int64_t listed, visible;
        if (la_session_sparse_counts(s, l, &listed, &visible)) return;
        fprintf(stderr, " %.3f", visible ? (double)listed / (double)visible : 0.0);
    }
    fprintf(stderr, "\n%s: sparse density, all layers: %.4f\n", cmd, (double)all_listed / (double)all_visible);
}

bool cli_output_written(void) { return fflush(stdout) == 0 && !ferror(stdout); }

/* Bytes of the well-formed UTF-8 sequence at s (1 to 4), or 0 when it
 * starts no such sequence (a stray or cut byte, an overlong form, a
 * surrogate, past U+10FFFF). s is NUL-terminated: a NUL ends the check. */
static int utf8_len(const unsigned char *s) {
    const int n = s[0] < 0x80 ? 1 : s[0] >= 0xC2 && s[0] <= 0xDF ? 2 : (s[0] & 0xF0) == 0xE0 ? 3
                  : s[0] >= 0xF0 && s[0] <= 0xF4 ? 4 : 0;
    for (int i = 1; i < n; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    if (n == 3) {
        const unsigned cp = (s[0] & 0x0Fu) << 12 | (s[1] & 0x3Fu) << 6 | (s[2] & 0x3Fu);
        if (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    }
    if (n == 4) {
        const unsigned cp = (s[0] & 0x07u) << 18 | (s[1] & 0x3Fu) << 12 | (s[2] & 0x3Fu) << 6 | (s[3] & 0x3Fu);
        if (cp < 0x10000 || cp > 0x10FFFF) return 0;
    }
    return n;
}

/* A JSON string: JSON text is UTF-8, so a byte that is not (a reply cut
 * inside a character, a --kv file name's bytes) becomes U+FFFD; printed
 * as it was, a JSON reader failed on the whole line. */
void cli_json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        const int n = utf8_len(c);
        if (*c == '"' || *c == '\\') fprintf(f, "\\%c", *c);
        else if (*c == '\n') fputs("\\n", f);
        else if (*c < 0x20 || *c == 0x7F) fprintf(f, "\\u%04x", *c);
        else if (!n) fputs("\\ufffd", f);
        else fwrite(c, 1, (size_t)n, f), c += n - 1;
    }
    fputc('"', f);
}
