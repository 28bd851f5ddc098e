/* Small test harness shared by every test program: seeded random inputs,
 * poisoning, element access through strides, and a pass/fail tally whose
 * exit status is the verdict. */
#ifndef LA_TEST_UTIL_H
#define LA_TEST_UTIL_H

#include "longattn.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Seed from LONGATTN_TEST_SEED, else from the clock; printed on failure. */
uint64_t tu_seed(void);
uint64_t tu_next(uint64_t *state);
double tu_uniform(uint64_t *state, double lo, double hi); /* [lo, hi) */
int64_t tu_randint(uint64_t *state, int64_t lo, int64_t hi); /* [lo, hi] */

/* Fill n elements at data (contiguous) with uniform values in [lo, hi). */
void tu_fill(uint64_t *state, void *data, la_dtype t, int64_t n, double lo, double hi);
/* Fill with NaN so any element a kernel fails to write fails the check. */
void tu_poison(void *data, la_dtype t, int64_t n);

double tu_get(const la_tensor *t, const int64_t *idx);
void tu_set(la_tensor *t, const int64_t *idx, double x);

/* Relative-and-absolute closeness: |got - want| <= atol + rtol * |want|;
 * NaN never passes unless both are NaN; infinities must match exactly. */
bool tu_close(double got, double want, double atol, double rtol);

/* Tally. tu_check records one check; a failure prints the message and the seed. */
void tu_check(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define TU_EXPECT_STATUS(call, want)                                                              \
    do {                                                                                          \
        la_status got_ = (call);                                                                  \
        tu_check(got_ == (want), "%s:%d %s returned %s, want %s (%s)", __FILE__, __LINE__, #call, \
                 la_status_name(got_), la_status_name(want), la_last_error());                    \
    } while (0)
/* Print "N passed, N failed" and return the exit status. */
int tu_finish(void);
int tu_failures(void);

/* A tensor over its own backing memory (elems elements, plus one spare
 * byte). Contiguous, or with strided: q/k/v-like tensors ([B, L, H, D] or
 * [T, H, D]) viewed over heads-outermost memory [B][H][L][D + 8] or
 * [H][T][D + 8], and lse-like tensors ([B, L, H] or [T, H]) with 3 unused
 * floats after every token's row, so kernels that ignore strides or write
 * outside the view fail. */
typedef struct {
    la_tensor t;
    size_t elems;
} tu_buf;
tu_buf tu_buf_new(la_dtype dt, int ndim, const int64_t *shape, bool strided, bool is_lse);
/* The same, returning false (data NULL) when memory runs out, for callers
 * that report it rather than stop (the benchmark). */
bool tu_buf_init(tu_buf *b, la_dtype dt, int ndim, const int64_t *shape, bool strided, bool is_lse);
void tu_buf_free(tu_buf *b);
void tu_buf_poison(tu_buf *b);
/* Is every backing element outside the view (row padding, the gaps of a
 * strided layout) still poison? A kernel must write only its view. */
bool tu_buf_outside_poisoned(const tu_buf *b);
/* Is every backing element still poison (nothing written at all)? */
bool tu_buf_all_poisoned(const tu_buf *b);

/* SIMD levels this CPU can run, lowest first. */
int tu_simd_levels(la_simd *levels);

/* malloc that fails the test program on NULL (tests only). */
void *tu_alloc(size_t bytes);

#endif
