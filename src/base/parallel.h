/* The OpenMP prologue every threaded kernel shares: who this thread is, how
 * large its team is, and which contiguous share of n items it owns. The one
 * place that knows OpenMP may be compiled out. */
#ifndef LA_PARALLEL_H
#define LA_PARALLEL_H

#include <stdbool.h>
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

/* Items [0, n) of a parallel loop split as la_split_range into one
 * contiguous range per thread, each taken from its front by its owner in
 * shrinking runs; a thread whose range is done moves the back half of
 * another's unclaimed items into its own and goes on, so the threads
 * finish within about one item of each other whichever came late or ran
 * slower. Each thread's runs follow each other in address order: a run
 * started cold (a new stream for the prefetchers) cost 1.6 us more than a
 * continuing one in the f16 decode (4.3 us against 2.7, Zen 5, 8K), where
 * one shared counter's shrinking runs handed each thread ~8 cold starts a
 * call. OpenMP's guided schedule gives half of a 2-thread loop to the
 * first claim, whose thread then finished the model's decode 5-13 us last
 * (BENCHMARKS s23-imb).
 *
 * The owner's runs are 1 / LA_CLAIM_PART of its unclaimed items (at least
 * one): the run a thread is in when the other finishes is what the other
 * cannot take. 4 measured within noise of 8 and ahead of 2 (s23-imb). */
#define LA_CLAIM_PART 4

typedef struct {
    _Alignas(64) uint64_t range; /* front | back << 32: the owner's unclaimed items */
} la_claim_slot;

static inline uint64_t la_claim_pack(int64_t front, int64_t back) { return (uint64_t)front | (uint64_t)back << 32; }

/* Before the region: `slots` (one per thread asked for) share n < 2^31 items. */
static inline void la_claim_init(la_claim_slot *slots, int nslots, int64_t n) {
    for (int t = 0; t < nslots; t++) {
        int64_t lo, hi;
        la_split_range(n, t, nslots, &lo, &hi);
        slots[t].range = la_claim_pack(lo, hi);
    }
}

/* Thread tid's next run [*lo, *hi); false when no slot holds an item. A
 * team smaller than nslots (a nested call) takes the other slots' items by
 * the same moves; threads past nslots own no slot and run what they take.
 * Only a slot's owner writes it while it is empty, and no value of a slot
 * comes back once it changed (items are handed out once), so a
 * compare-and-swap cannot succeed on a stale one. */
static inline bool la_claim_next(la_claim_slot *slots, int nslots, int tid, int64_t *lo, int64_t *hi) {
    const bool owner = tid < nslots;
    for (;;) {
        if (owner) {
            uint64_t r = __atomic_load_n(&slots[tid].range, __ATOMIC_RELAXED);
            const int64_t f = (int64_t)(uint32_t)r, b = (int64_t)(r >> 32);
            if (f < b) {
                const int64_t size = (b - f + LA_CLAIM_PART - 1) / LA_CLAIM_PART;
                if (__atomic_compare_exchange_n(&slots[tid].range, &r, la_claim_pack(f + size, b), false,
                                                __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
                    *lo = f, *hi = f + size;
                    return true;
                }
                continue; /* a thief took some: look again */
            }
        }
        bool moved = false;
        for (int k = owner ? 1 : 0; k < nslots && !moved; k++) {
            la_claim_slot *v = &slots[(tid + k) % nslots];
            uint64_t vr = __atomic_load_n(&v->range, __ATOMIC_RELAXED);
            for (;;) {
                const int64_t vf = (int64_t)(uint32_t)vr, vb = (int64_t)(vr >> 32), size = (vb - vf + 1) / 2;
                if (vf >= vb) break;
                if (__atomic_compare_exchange_n(&v->range, &vr, la_claim_pack(vf, vb - size), false, __ATOMIC_RELAXED,
                                                __ATOMIC_RELAXED)) {
                    if (!owner) {
                        *lo = vb - size, *hi = vb;
                        return true;
                    }
                    __atomic_store_n(&slots[tid].range, la_claim_pack(vb - size, vb), __ATOMIC_RELAXED);
                    moved = true;
                    break;
                }
            }
        }
        if (!moved) return false;
    }
}

#endif
