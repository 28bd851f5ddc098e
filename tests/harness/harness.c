/* The two runners of the case harness (see harness.h): check mode for ctest
 * and perf mode for `longattn bench`. Only longattn.h and test_util. */
#include "harness.h"

#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- fields */

static harness_field *next_field(harness_fields *fs, const char *key) {
    if (fs->n >= HARNESS_MAX_FIELDS) return NULL; /* a describe() that prints more is a bug: drop */
    harness_field *f = &fs->f[fs->n++];
    snprintf(f->key, sizeof f->key, "%s", key);
    return f;
}

void harness_field_int(harness_fields *fs, const char *key, int64_t value) {
    harness_field *f = next_field(fs, key);
    if (!f) return;
    snprintf(f->value, sizeof f->value, "%lld", (long long)value);
    f->quoted = false;
}

void harness_field_num(harness_fields *fs, const char *key, double value) {
    harness_field *f = next_field(fs, key);
    if (!f) return;
    if (isfinite(value)) snprintf(f->value, sizeof f->value, "%.4g", value);
    else snprintf(f->value, sizeof f->value, "null"); /* JSON has no NaN */
    f->quoted = false;
}

void harness_field_str(harness_fields *fs, const char *key, const char *value) {
    harness_field *f = next_field(fs, key);
    if (!f) return;
    snprintf(f->value, sizeof f->value, "%s", value);
    f->quoted = true;
}

/* ------------------------------------------------------------------ list */

void harness_add(harness_list *list, harness_case *c) {
    if (list->n == list->cap) {
        list->cap = list->cap ? 2 * list->cap : 16;
        harness_case **grown = realloc(list->items, sizeof *grown * (size_t)list->cap);
        if (!grown) {
            fprintf(stderr, "harness: out of memory for the case list\n");
            exit(2);
        }
        list->items = grown;
    }
    list->items[list->n++] = c;
}

void harness_list_free(harness_list *list) {
    for (int i = 0; i < list->n; i++) free(list->items[i]);
    free(list->items);
    memset(list, 0, sizeof *list);
}

/* ------------------------------------------------------------ check mode */

/* Poison, run and check at every SIMD level the CPU has. */
static void check_levels(harness_case *c, la_context *ctx) {
    const harness_ops *ops = c->ops;
    if (ops->prepare) {
        la_status s = ops->prepare(c, ctx);
        tu_check(s == LA_OK, "%s: before the run: status %s (%s)", c->name, la_status_name(s), la_last_error());
        if (s != LA_OK) return;
    }
    la_simd levels[LA_SIMD_COUNT];
    int nl = tu_simd_levels(levels);
    for (int li = 0; li < nl; li++) {
        const char *level = la_simd_name(levels[li]);
        la_context_set_simd(ctx, levels[li]);
        ops->poison(c);
        la_status s = ops->run(c, ctx);
        tu_check(s == LA_OK, "%s [%s]: status %s (%s)", c->name, level, la_status_name(s), la_last_error());
        if (s == LA_OK) ops->check(c, level, true);
    }
}

static void check_case(harness_case *c, uint64_t seed) {
    const harness_ops *ops = c->ops;
    la_clear_error();
    bool ready = ops->setup(c, seed);
    tu_check(ready, "%s: setup failed: %s", c->name,
             la_last_error()[0] ? la_last_error() : "could not allocate its tensors");
    if (ready) {
        ops->reference(c, false);
        la_context *ctx = NULL;
        la_status s = la_context_create(&ctx, c->threads);
        tu_check(s == LA_OK, "%s: la_context_create: %s (%s)", c->name, la_status_name(s), la_last_error());
        if (s == LA_OK) check_levels(c, ctx);
        la_context_destroy(ctx);
    }
    ops->teardown(c);
}

void harness_check(const harness_list *list, uint64_t *rng) {
    for (int i = 0; i < list->n; i++) check_case(list->items[i], tu_next(rng));
}

/* ------------------------------------------------------------- perf mode */

/* Peak RSS of the process since the last reset (Linux; 0 elsewhere). */
static double read_status_kb(const char *field) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    double kb = 0;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, field, n)) kb = atof(line + n + 1);
    fclose(f);
    return kb;
}

static void reset_peak_rss(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f) {
        fputs("5", f); /* resets VmHWM to the current RSS */
        fclose(f);
    }
}

typedef struct {
    double ms, cpu_ms, rss_mb, workspace_bytes; /* cpu_ms: the process's CPU time over the run, median */
    la_status status;
    char error[256]; /* la_last_error() of a failed first run */
} timing;

#define MAX_SAMPLES 25

/* The process's CPU time, all threads (0 where the clock is missing). On a
 * shared machine a run's CPU time over the threads it ran on is what its
 * wall time would be alone, less the waits it really had (idle threads
 * spin in OpenMP's default wait policy: OMP_WAIT_POLICY=passive keeps them
 * out of it). */
static double cpu_seconds(void) {
#ifdef CLOCK_PROCESS_CPUTIME_ID
    struct timespec ts;
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) == 0) return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
#endif
    return 0;
}

static void sort_doubles(double *x, int n) {
    for (int i = 1; i < n; i++) /* insertion sort */
        for (int j = i; j > 0 && x[j] < x[j - 1]; j--) {
            double y = x[j];
            x[j] = x[j - 1], x[j - 1] = y;
        }
}

/* Bytes that, written, push everything else out of the caches: twice the
 * last-level cache this CPU reports (64 MiB when it reports none). */
static size_t eviction_bytes(void) {
    long llc = 0;
#ifdef _SC_LEVEL3_CACHE_SIZE
    llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
    if (llc <= 0) llc = 32L << 20;
    return 2 * (size_t)llc;
}

/* Read and write a buffer of eviction_bytes() (ordinary stores: a large
 * memset may use non-temporal ones, which evict nothing). */
static void evict_caches(void) {
    static unsigned char *buf;
    static size_t n;
    if (!buf) {
        n = eviction_bytes();
        if (!(buf = calloc(n, 1))) return;
    }
    for (size_t i = 0; i < n; i += 64) buf[i]++;
}

/* Warm up once (measuring the memory the call adds), then repeat until the
 * time budget is spent; the median counts. cold: caches evicted before
 * each repeat. */
static timing time_run(harness_case *c, la_context *ctx, double budget_s, bool cold) {
    timing t = {0};
    reset_peak_rss();
    double t0 = la_clock_seconds();
    t.status = c->ops->run(c, ctx);
    double first = la_clock_seconds() - t0;
    t.workspace_bytes = (double)la_context_workspace_bytes(ctx);
    t.rss_mb = read_status_kb("VmHWM:") / 1024.0;
    if (t.status != LA_OK) {
        snprintf(t.error, sizeof t.error, "%s", la_last_error());
        return t;
    }
    double samples[MAX_SAMPLES], cpu[MAX_SAMPLES], spent = 0;
    int n = 0;
    while (n < MAX_SAMPLES && (n < 3 || spent < budget_s)) {
        if (cold) evict_caches();
        const double c0 = cpu_seconds();
        t0 = la_clock_seconds();
        c->ops->run(c, ctx);
        samples[n] = la_clock_seconds() - t0;
        cpu[n] = cpu_seconds() - c0;
        spent += samples[n++];
        if (first > budget_s) break; /* one slow sample is enough */
    }
    sort_doubles(samples, n);
    sort_doubles(cpu, n);
    t.cpu_ms = cpu[n / 2] * 1e3;
    t.ms = samples[n / 2] * 1e3;
    return t;
}

/* The ceiling a case is a ratio to, measured now, at the context's level. */
static double measure_ceiling(harness_ceiling kind, la_simd simd, const harness_perf_opts *o) {
    if (kind == HARNESS_CEIL_READ_BW) return la_peak_read_gbps(o->threads, o->bandwidth_bytes);
    if (kind == HARNESS_CEIL_AMX_BF16) return la_peak_amx_bf16_gflops(o->threads, o->ceiling_s);
    double fma = la_peak_fma_gflops(simd, o->threads, o->ceiling_s);
    if (kind == HARNESS_CEIL_FP32_FMA) return fma;
    double bf16 = la_peak_bf16_gflops(simd, o->threads, o->ceiling_s);
    return bf16 > fma ? bf16 : fma;
}

const char *harness_ceiling_name(harness_ceiling kind) {
    switch (kind) {
    case HARNESS_CEIL_FP32_FMA: return "fp32_fma";
    case HARNESS_CEIL_BF16: return "bf16";
    case HARNESS_CEIL_READ_BW: return "read_bw";
    case HARNESS_CEIL_AMX_BF16: return "amx_bf16";
    }
    return "unknown";
}

static bool bandwidth_bound(const harness_case *c) { return c->ceiling == HARNESS_CEIL_READ_BW; }

/* The work the ratio and the skip estimate scale with. */
static double work(const harness_case *c) { return bandwidth_bound(c) ? c->ops->bytes(c) : c->ops->flops(c); }

static void print_json_string(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') printf("\\%c", ch);
        else if (ch < 0x20) printf("\\u%04x", ch);
        else putchar(ch);
    }
    putchar('"');
}

#define TEXT_FIELD_WIDTH 7

/* A table column: TEXT_FIELD_WIDTH, or its key's length where longer
 * ("deterministic", "state_MiB"), so that header and rows stay aligned. */
static int field_width(const harness_field *f) {
    const int n = (int)strlen(f->key);
    return n > TEXT_FIELD_WIDTH ? n : TEXT_FIELD_WIDTH;
}

/* `{"op":..,<fields>` (JSON) or the fields as table cells. */
static void print_fields(const harness_case *c, const harness_fields *fs, const harness_perf_opts *o) {
    if (o->json) printf("{\"op\":\"%s\"", c->ops->op);
    for (int i = 0; i < fs->n; i++) {
        const harness_field *f = &fs->f[i];
        if (!o->json) printf("%*s ", field_width(f), f->value);
        else if (f->quoted) printf(",\"%s\":\"%s\"", f->key, f->value);
        else printf(",\"%s\":%s", f->key, f->value);
    }
}

static void print_header(const harness_case *c, const harness_fields *fs, const harness_perf_opts *o) {
    if (o->json) return;
    for (int i = 0; i < fs->n; i++) printf("%*s ", field_width(&fs->f[i]), fs->f[i].key);
    bool bw = bandwidth_bound(c);
    printf("%10s %10s %10s %7s %8s %9s%s %s\n", "ms", bw ? "GB/s" : "GFLOP/s", bw ? "peak_GB/s" : "peak", "ratio",
           "rss_MB", "B/token", o->sampled_error ? "       err" : "", "ceiling");
}

static void print_skip(const harness_case *c, const harness_fields *fs, const harness_perf_opts *o, double est_s) {
    print_fields(c, fs, o);
    if (o->json) printf(",\"skipped\":\"estimated %.0f s > budget %.0f s\"}\n", est_s, o->skip_budget_s);
    else printf("  skipped (estimated %.0f s > budget)\n", est_s);
    fflush(stdout);
}

static void print_failure(const harness_case *c, const harness_fields *fs, const harness_perf_opts *o,
                          const char *why) {
    print_fields(c, fs, o);
    if (o->json) {
        printf(",\"error\":");
        print_json_string(why);
        printf("}\n");
    } else {
        printf("  failed: %s\n", why);
    }
    fflush(stdout);
}

/* The case's after-run fields, if it has any: JSON members, or key=value
 * after the table's columns. */
static void print_results(harness_case *c, const harness_perf_opts *o, double ms) {
    if (!c->ops->results) return;
    harness_fields rs = {0};
    c->ops->results(c, ms, &rs);
    for (int i = 0; i < rs.n; i++) {
        const harness_field *f = &rs.f[i];
        if (!o->json) printf(" %s=%s", f->key, f->value);
        else if (f->quoted) printf(",\"%s\":\"%s\"", f->key, f->value);
        else printf(",\"%s\":%s", f->key, f->value);
    }
}

/* The row: JSON fields as the bench has always printed them. */
static void print_row(harness_case *c, const harness_fields *fs, const harness_perf_opts *o, la_simd simd,
                      const timing *t, harness_ceiling kind, double ceiling, double err) {
    bool bw = bandwidth_bound(c);
    double figure = work(c) / (t->ms * 1e-3) / 1e9, ratio = figure / ceiling;
    double per_token = t->workspace_bytes / (double)(c->tokens > 0 ? c->tokens : 1);
    char err_text[32]; /* JSON has no NaN */
    if (isnan(err)) snprintf(err_text, sizeof err_text, o->json ? "null" : "-");
    else snprintf(err_text, sizeof err_text, "%.3g", err);
    if (!o->json) {
        print_fields(c, fs, o);
        printf(bw ? "%10.4f %10.2f %10.2f" : "%10.3f %10.1f %10.1f", t->ms, figure, ceiling);
        printf(" %7.3f %8.1f %9.0f", ratio, t->rss_mb, per_token);
        if (o->sampled_error) printf(" %9s", err_text);
        printf(" %s", harness_ceiling_name(kind));
        print_results(c, o, t->ms);
        printf("\n");
    } else {
        printf("{\"op\":\"%s\",\"backend\":\"cpu\",\"simd\":\"%s\",\"threads\":%d", c->ops->op, la_simd_name(simd),
               o->threads);
        for (int i = 0; i < fs->n; i++)
            printf(fs->f[i].quoted ? ",\"%s\":\"%s\"" : ",\"%s\":%s", fs->f[i].key, fs->f[i].value);
        if (bw) printf(",\"ms\":%.4f,\"gbps\":%.2f,\"peak_gbps\":%.2f", t->ms, figure, ceiling);
        else printf(",\"ms\":%.3f,\"gflops\":%.2f,\"peak_gflops\":%.1f", t->ms, figure, ceiling);
        printf(",\"ceiling\":\"%s\"", harness_ceiling_name(kind));
        printf(",\"ratio\":%.3f,\"cpu_ms\":%.3f,\"peak_rss_mb\":%.1f,\"bytes_per_token\":%.0f", ratio, t->cpu_ms,
               t->rss_mb, per_token);
        if (c->tokens > 0) printf(",\"tokens_per_s\":%.0f", (double)c->tokens / (t->ms * 1e-3));
        if (o->sampled_error) printf(",\"err_vs_exact\":%s", err_text);
        if (o->cold) printf(",\"caches\":\"cold\"");
        print_results(c, o, t->ms);
        printf("}\n");
    }
    fflush(stdout);
}

/* Time one set-up case between two ceiling measurements. Returns the
 * median ms, or 0 after printing why it failed. */
static double perf_timed(harness_case *c, const harness_fields *fs, const harness_perf_opts *o, la_context *ctx) {
    la_status s = c->ops->prepare ? c->ops->prepare(c, ctx) : LA_OK;
    if (s != LA_OK) {
        print_failure(c, fs, o, la_last_error());
        return 0;
    }
    c->ops->poison(c); /* touches the outputs: peak RSS is then inputs + outputs + workspace */
    la_simd simd = la_context_simd(ctx);
    /* A ceiling measured once per run, while a neighbour ran, against a
     * kernel timed after it left gave ratios above 1: measure right before
     * and right after the row and keep the higher. */
    const harness_ceiling kind = c->ops->ceiling_on ? c->ops->ceiling_on(c, ctx) : c->ceiling;
    double before = measure_ceiling(kind, simd, o);
    timing t = time_run(c, ctx, o->time_budget_s, o->cold);
    double after = measure_ceiling(kind, simd, o);
    if (t.status != LA_OK) {
        print_failure(c, fs, o, t.error);
        return 0;
    }
    double err = NAN;
    if (o->sampled_error && c->ops->reference(c, true)) err = c->ops->check(c, "sampled", false);
    print_row(c, fs, o, simd, &t, kind, before > after ? before : after, err);
    return t.ms;
}

static double perf_case(harness_case *c, const harness_fields *fs, const harness_perf_opts *o, uint64_t seed) {
    double ms = 0;
    la_context *ctx = NULL;
    la_clear_error(); /* a setup the library refused leaves its reason; a failed malloc none */
    if (!c->ops->setup(c, seed)) {
        print_failure(c, fs, o, la_last_error()[0] ? la_last_error() : "out of memory");
    } else if (la_context_create(&ctx, o->threads) != LA_OK) {
        print_failure(c, fs, o, la_last_error());
    } else {
        ms = perf_timed(c, fs, o, ctx);
    }
    la_context_destroy(ctx);
    c->ops->teardown(c);
    return ms;
}

int harness_perf(const harness_list *list, const harness_perf_opts *o) {
    int failed = 0, series = 0;
    const char *last_op = NULL;
    double last_ms = 0, last_work = 0; /* the last row timed in this series */
    for (int i = 0; i < list->n; i++) {
        harness_case *c = list->items[i];
        harness_fields fs = {0};
        c->ops->describe(c, &fs);
        if (!last_op || strcmp(c->ops->op, last_op)) print_header(c, &fs, o);
        last_op = c->ops->op;
        if (i == 0 || c->series != series) last_ms = 0;
        series = c->series;
        if (last_ms > 0) { /* grows with the work: skip what would blow the budget */
            double est_s = last_ms * work(c) / last_work / 1e3;
            if (est_s > o->skip_budget_s) {
                print_skip(c, &fs, o, est_s);
                continue;
            }
        }
        double ms = perf_case(c, &fs, o, 1 + (uint64_t)i);
        if (ms > 0) last_ms = ms, last_work = work(c);
        else failed++;
    }
    return failed == 0 ? 0 : 1;
}

void *harness_case_new(size_t size, const harness_ops *ops, const char *name, int threads, harness_ceiling ceiling) {
    harness_case *c = tu_alloc(size);
    memset(c, 0, size);
    c->ops = ops;
    snprintf(c->name, sizeof c->name, "%s", name ? name : "");
    c->threads = threads;
    c->ceiling = ceiling;
    return c;
}

harness_ceiling harness_compute_ceiling(la_dtype dt) {
    return dt == LA_F32 ? HARNESS_CEIL_FP32_FMA : HARNESS_CEIL_BF16;
}
