/* A mixer's f32 state between the caller's [N, H, Dk, Dv'] layout and a
 * kernel's working copy: Dk rows of `cols` floats, ld apart, the columns
 * past `cols` zero (the kernels run whole vectors over the padding). */
#ifndef LA_CPU_LINEAR_STATE_ROWS_H
#define LA_CPU_LINEAR_STATE_ROWS_H

#include "backend/linear_problem.h"

#include <string.h>

/* S = the state of (sequence n, head h), or 0 where none was given. */
static inline void state_rows_load(float *S, int64_t ld, const la_linear_state *st, int64_t n, int64_t h,
                                   int64_t rows, int64_t cols) {
    for (int64_t i = 0; i < rows; i++) {
        float *row = S + i * ld;
        int64_t copied = 0;
        if (st->data) {
            memcpy(row, st->data + n * st->seq_stride + h * st->head_stride + i * st->row_stride,
                   (size_t)cols * sizeof(float));
            copied = cols;
        }
        memset(row + copied, 0, (size_t)(ld - copied) * sizeof(float));
    }
}

static inline void state_rows_store(const la_linear_state *st, const float *S, int64_t ld, int64_t n, int64_t h,
                                    int64_t rows, int64_t cols) {
    if (!st->data) return;
    for (int64_t i = 0; i < rows; i++)
        memcpy(st->data + n * st->seq_stride + h * st->head_stride + i * st->row_stride, S + i * ld,
               (size_t)cols * sizeof(float));
}

#endif
