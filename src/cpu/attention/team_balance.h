/* How evenly a team of threads shares equal work items: the forward and the
 * backward pick between splitting one (sequence, K/V head) group over the
 * team and giving threads whole groups by it. */
#ifndef LA_CPU_TEAM_BALANCE_H
#define LA_CPU_TEAM_BALANCE_H

#include <stdint.h>

/* Busy fraction of `threads` threads sharing `items` equal work items. */
static inline double la_team_balance(int64_t items, int threads) {
    int64_t rounds = (items + threads - 1) / threads;
    return rounds ? (double)items / (double)(rounds * threads) : 1.0;
}

#endif
