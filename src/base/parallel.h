/* The OpenMP prologue every threaded kernel shares: who this thread is, how
 * large its team is, and which contiguous share of n items it owns. The one
 * place that knows OpenMP may be compiled out. */
#ifndef LA_PARALLEL_H
#define LA_PARALLEL_H

#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static inline int la_thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* The team actually running: a call from inside the caller's own parallel
 * region gets one thread whatever it asked for. */
static inline int la_team_size(void) {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

/* Thread tid's share [*lo, *hi) of n items split into `team` contiguous
 * runs whose sizes differ by at most one. */
static inline void la_split_range(int64_t n, int tid, int team, int64_t *lo, int64_t *hi) {
    int64_t base = n / team, extra = n % team;
    *lo = tid * base + (tid < extra ? tid : extra);
    *hi = *lo + base + (tid < extra ? 1 : 0);
}

#endif
