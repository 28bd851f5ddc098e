/* One case harness for tests and benchmarks, in the manner of ggml's
 * test-backend-ops: an op's case is described once and serves both ctest
 * (correctness at every SIMD level) and `longattn bench` (timing, as ratios
 * to ceilings measured beside each timed row).
 *
 * A case is a struct whose first member is a harness_case; its ops say
 * everything the two runners need: what the case is (describe, flops,
 * bytes, ceiling), how to make its data (setup, poison), how to run it
 * through the public API (prepare, run), and how to judge it against the
 * float64 reference of tests/ref/ (reference, check). Uses only longattn.h,
 * so the CLI links it.
 *
 * Check mode (harness_check, for ctest), per case:
 *   setup(seed) -> reference(all rows) -> prepare(ctx) ->
 *   for every SIMD level the CPU has: poison, run, check(tally)
 * Perf mode (harness_perf, for bench), per case:
 *   setup(seed) -> prepare(ctx) -> poison -> ceiling, warm-up and timed runs,
 *   ceiling again (the higher one counts) -> reference(sampled) and check
 *   (no tally) for the err_vs_exact field -> teardown
 *
 * Adding an op:
 *  1. Its float64 reference in tests/ref/ (written from the op's documented
 *     semantics, slow and obviously right).
 *  2. Its case in tests/<family>/<op>_case.c: a struct with harness_case
 *     first, the harness_ops functions below, and a constructor taking a
 *     spec of shapes and options (declare it in the family's cases.h).
 *     Tolerances sit beside the check that uses them, with why.
 *  3. Its cases: a test program tests/<family>/test_<op>.c that adds the
 *     awkward shapes and options to a harness_list, calls harness_check
 *     and returns tu_finish() (bad-input tests stay plain code there), and,
 *     for the benchmark, a sweep generator (tests/<family>/sweeps.c) whose
 *     list `longattn bench` hands to harness_perf.
 * tests/CMakeLists.txt globs the new files. No loop here, in the test
 * programs or in tools/bench.c is edited: the runners only see the ops. */
#ifndef LA_HARNESS_H
#define LA_HARNESS_H

#include "longattn.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- what a case prints: its shape and options, as bench JSON fields ---- */

#define HARNESS_MAX_FIELDS 12

typedef struct {
    char key[16];
    char value[32];
    bool quoted; /* a JSON string rather than a number */
} harness_field;

typedef struct {
    harness_field f[HARNESS_MAX_FIELDS];
    int n;
} harness_fields;

void harness_field_int(harness_fields *fs, const char *key, int64_t value);
void harness_field_str(harness_fields *fs, const char *key, const char *value);
/* A number to 4 significant digits; null when not finite. */
void harness_field_num(harness_fields *fs, const char *key, double value);

/* ---- the case ---- */

/* Which ceiling a case's speed is a ratio to. Compute-bound cases report
 * GFLOP/s against a peak FLOP rate; bandwidth-bound ones GB/s against the
 * read bandwidth. */
typedef enum {
    HARNESS_CEIL_FP32_FMA, /* f32 inputs: the FP32 FMA peak */
    HARNESS_CEIL_BF16,     /* bf16/f16 inputs: the faster of the FP32 FMA and BF16 dot peaks (the
                              kernels widen to f32, so a slow vdpbf16ps must not flatter them) */
    HARNESS_CEIL_READ_BW,  /* memory-bound: read bandwidth */
    HARNESS_CEIL_AMX_BF16  /* ran on AMX tiles (la_matmul's amx_bf16 path): the TDPBF16PS peak */
} harness_ceiling;

/* The ceiling's name in a row ("ceiling" field): fp32_fma, bf16, read_bw, amx_bf16. */
const char *harness_ceiling_name(harness_ceiling kind);

typedef struct harness_case harness_case;

typedef struct {
    const char *op; /* the JSON "op" field: "attention", "decode" */
    /* Shape and options as bench fields, in print order. */
    void (*describe)(const harness_case *c, harness_fields *out);
    /* Work of one run: floating-point operations (an FMA counts 2) and the
     * bytes it must at least move. The ratio uses the one that matches the
     * ceiling; the skip estimate of a series scales by it. */
    double (*flops)(const harness_case *c);
    double (*bytes)(const harness_case *c);
    /* Allocate and fill the inputs with fresh random data from seed, and
     * poison the outputs. false: out of memory, or a library call refused
     * the case (its reason in la_last_error) (teardown still runs). */
    bool (*setup)(harness_case *c, uint64_t seed);
    /* NaN (the dtype's poison pattern) into every output, so an element a
     * kernel fails to write fails the check. */
    void (*poison)(harness_case *c);
    /* Optional (NULL): library work the run depends on, done once per case
     * (the backward's forward pass). */
    la_status (*prepare)(harness_case *c, la_context *ctx);
    /* The op itself, through the public API only. */
    la_status (*run)(harness_case *c, la_context *ctx);
    /* Float64 reference of every output row (sampled = false), or of a few
     * rows spread over the problem (sampled = true, for a benchmark's long
     * shapes). Returns false when the op has no sampled reference. */
    bool (*reference)(harness_case *c, bool sampled);
    /* Compare the outputs with the reference rows. With tally, record every
     * comparison with tu_check, labelled "name [label]"; either way return
     * the worst error of the outputs (INFINITY for a NaN). */
    double (*check)(harness_case *c, const char *label, bool tally);
    /* Free what setup and reference allocated; the case itself stays. */
    void (*teardown)(harness_case *c);
    /* Optional (NULL): fields known only once the case ran, printed after
     * the timing (block-sparse attention's density, recall, selection time
     * and speed-up over the dense kernel); ms is the row's median time. */
    void (*results)(harness_case *c, double ms, harness_fields *out);
    /* Optional (NULL: c->ceiling): the ceiling of the case's run on ctx,
     * where the kernel the library picks there decides it (la_matmul's
     * amx_bf16 path against the AMX peak, its other paths the FMA one). */
    harness_ceiling (*ceiling_on)(const harness_case *c, la_context *ctx);
} harness_ops;

/* Every case file names its callbacks alike, so its table reads
 * `static const harness_ops ops = {.op = "x", HARNESS_CASE_CALLBACKS};`
 * plus the optional ones (.prepare, .results) it defines. */
#define HARNESS_CASE_CALLBACKS                                                                                  \
    .describe = describe, .flops = flops, .bytes = bytes, .setup = setup, .poison = poison, .run = run,         \
    .reference = reference, .check = check, .teardown = teardown

struct harness_case {
    const harness_ops *ops;
    char name[128];         /* check mode's messages */
    int threads;            /* check mode: the context's threads (<= 0: OpenMP default) */
    harness_ceiling ceiling;
    int64_t tokens;         /* bench: the tokens of one sequence (a dense batch) or all packed ones (varlen);
                               bytes_per_token is the op's workspace over this, tokens_per_s this over the time */
    int series;             /* bench: consecutive cases of one series grow; a case whose time,
                               estimated from the last one timed, is over the budget is skipped */
};

/* The start of every case constructor: a zeroed case of `size` bytes (its
 * own struct, harness_case first) with its ops, a copy of name (NULL: ""),
 * threads and ceiling set. */
void *harness_case_new(size_t size, const harness_ops *ops, const char *name, int threads, harness_ceiling ceiling);

/* The ceiling of a compute-bound case in dtype dt. */
harness_ceiling harness_compute_ceiling(la_dtype dt);

/* A list of heap-allocated cases (each constructor returns one). */
typedef struct {
    harness_case **items;
    int n, cap;
} harness_list;

void harness_add(harness_list *list, harness_case *c);
void harness_list_free(harness_list *list);

/* ---- check mode ---- */

/* Every case at every SIMD level the CPU has; each setup is seeded from
 * rng. Results go to the test_util tally: finish with tu_finish(). */
void harness_check(const harness_list *list, uint64_t *rng);

/* ---- perf mode ---- */

typedef struct {
    bool json;          /* JSON lines, else a table */
    bool sampled_error; /* print err_vs_exact from the sampled reference */
    int threads;
    double time_budget_s;    /* per row: repeat until spent (at least 3 runs, at most 25) */
    double skip_budget_s;    /* skip a row estimated to take longer than this */
    double ceiling_s;        /* length of one compute-ceiling measurement */
    size_t bandwidth_bytes;  /* buffer of one read-bandwidth measurement */
    bool cold;               /* evict the caches before every timed run (not timed): every row then
                                reads its inputs from memory, as the longest rows of a sweep must */
} harness_perf_opts;

/* Time every case; print one line per row. Returns the exit status: 0
 * when no row failed (skipped rows are not failures), else 1, as README
 * says of a benchmark row that failed, so a script sees a sweep's failed
 * row even when the others ran. */
int harness_perf(const harness_list *list, const harness_perf_opts *o);

#endif
