/* How fast can this host read a decode's KV cache, by access pattern?
 *
 * The cache is f32 pages at 32K tokens, 8 K/V heads, D 128 (134 MB for K and
 * as much for V, head-major as in the KV cache), mmap'd. Each pattern is
 * timed with 1 and 2 threads, best of 4:
 *   seq_halves            each thread streams one contiguous half (as
 *                         la_peak_read_gbps measures the ceiling);
 *   items_K_then_V        the decode's work items (head, 256-key chunk), K
 *                         chunk then V chunk, handed out dynamically;
 *   items_KV_interleaved  the same items reading K and V in alternate 64-byte
 *                         steps (two streams at once).
 * Argument 1 (optional, 0 or 1): madvise(MADV_HUGEPAGE) the buffers.
 * Results and reading: BENCHMARKS.md, section s18-dec.
 *
 *   cc -O2 -mavx2 -mfma -fopenmp bench/decode_read_probe.c -o /tmp/rd && /tmp/rd 0 && /tmp/rd 1
 */
#include "decode_probe.h"

#include <immintrin.h>
#include <omp.h>

enum { PATTERN_SEQUENTIAL, PATTERN_K_THEN_V, PATTERN_INTERLEAVED, PATTERN_COUNT };

/* Sums n bytes (a multiple of 128) into four accumulators: enough independent
 * adds that the loads, not the adds, set the pace. */
static inline __m256 sum_stream(const char *p, size_t n, __m256 acc)
{
    __m256 a0 = acc, a1 = _mm256_setzero_ps(), a2 = a1, a3 = a1;
    for (size_t i = 0; i < n; i += 128) {
        a0 = _mm256_add_ps(a0, _mm256_load_ps((const float *)(p + i)));
        a1 = _mm256_add_ps(a1, _mm256_load_ps((const float *)(p + i + 32)));
        a2 = _mm256_add_ps(a2, _mm256_load_ps((const float *)(p + i + 64)));
        a3 = _mm256_add_ps(a3, _mm256_load_ps((const float *)(p + i + 96)));
    }
    return _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
}

/* Sums n bytes of two streams, alternating 64 bytes of each. */
static inline __m256 sum_two_streams(const char *p, const char *q, size_t n, __m256 acc)
{
    __m256 a0 = acc, a1 = _mm256_setzero_ps(), a2 = a1, a3 = a1;
    for (size_t i = 0; i < n; i += 64) {
        a0 = _mm256_add_ps(a0, _mm256_load_ps((const float *)(p + i)));
        a1 = _mm256_add_ps(a1, _mm256_load_ps((const float *)(p + i + 32)));
        a2 = _mm256_add_ps(a2, _mm256_load_ps((const float *)(q + i)));
        a3 = _mm256_add_ps(a3, _mm256_load_ps((const float *)(q + i + 32)));
    }
    return _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
}

static float read_once(const char *k, const char *v, int pattern, int threads)
{
    float total = 0;
    if (pattern == PATTERN_SEQUENTIAL) {
#pragma omp parallel num_threads(threads) reduction(+ : total)
        {
            /* K and V as one 2 x region_bytes range, split in equal halves. */
            int id = omp_get_thread_num();
            size_t all = 2 * region_bytes, lo = all / threads * id, hi = all / threads * (id + 1);
            __m256 acc = _mm256_setzero_ps();
            for (size_t o = lo; o < hi; o += 1 << 20)
                acc = sum_stream(o < region_bytes ? k + o : v + (o - region_bytes), 1 << 20, acc);
            total += acc[0];
        }
        return total;
    }
#pragma omp parallel num_threads(threads) reduction(+ : total)
    {
        __m256 acc = _mm256_setzero_ps();
#pragma omp for schedule(dynamic, 1)
        for (int item = 0; item < KV_HEADS * (TOKENS / CHUNK); item++) {
            int head = item / (TOKENS / CHUNK), chunk = item % (TOKENS / CHUNK);
            size_t at = head * head_bytes + (size_t)chunk * chunk_bytes;
            if (pattern == PATTERN_K_THEN_V) {
                acc = sum_stream(k + at, chunk_bytes, acc);
                acc = sum_stream(v + at, chunk_bytes, acc);
            } else {
                acc = sum_two_streams(k + at, v + at, chunk_bytes, acc);
            }
        }
        total += acc[0];
    }
    return total;
}

int main(int argc, char **argv)
{
    int huge_pages = argc > 1 && atoi(argv[1]);
    char *k = map_region(huge_pages), *v = map_region(huge_pages);
    static const char *names[PATTERN_COUNT] = {"seq_halves", "items_K_then_V", "items_KV_interleaved"};

    for (int round = 0; round < 2; round++)
        for (int threads = 1; threads <= 2; threads++)
            for (int pattern = 0; pattern < PATTERN_COUNT; pattern++) {
                double best = 1e9;
                float sink = 0; /* keeps the sums alive */
                for (int rep = 0; rep < 4; rep++) {
                    double t0 = seconds_now();
                    sink += read_once(k, v, pattern, threads);
                    double t = seconds_now() - t0;
                    if (t < best)
                        best = t;
                }
                printf("huge=%d th=%d %-22s %.2f ms %.2f GB/s (%g)\n", huge_pages, threads,
                       names[pattern], best * 1e3, 2.0 * region_bytes / best / 1e9,
                       sink > 1e30 ? 1.0 : 0.0);
            }
    return 0;
}
