/* The black-box contract checks' harness (tests/api): a status check that
 * also wants a message, and a few buffers. It includes nothing but the
 * public headers and libc, as an outside user's program would: these tests
 * must not see src/. */
#ifndef LA_API_CONTRACT_H
#define LA_API_CONTRACT_H

#include "longattn.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int contract_failures, contract_checks;

/* got must be want; a failure must leave a message naming what was wrong. */
static inline void contract_status(la_status got, la_status want, const char *expr, int line) {
    const char *msg = la_last_error();
    contract_checks++;
    if (got != want) {
        contract_failures++;
        fprintf(stderr, "FAIL line %d: %s\n  got %s (%s), want %s\n", line, expr, la_status_name(got),
                msg ? msg : "(null)", la_status_name(want));
    } else if (want != LA_OK && (!msg || strlen(msg) < 4)) {
        contract_failures++;
        fprintf(stderr, "FAIL line %d: %s\n  %s without a message\n", line, expr, la_status_name(got));
    } else if (want == LA_OK && (!msg || msg[0])) {
        /* la_last_error: "" after success; a stale message would be taken for this call's */
        contract_failures++;
        fprintf(stderr, "FAIL line %d: %s\n  LA_OK left the message '%s'\n", line, expr, msg ? msg : "(null)");
    }
}
#define EXPECT(call, want) contract_status((call), (want), #call, __LINE__)
#define EXPECT_OK(call) contract_status((call), LA_OK, #call, __LINE__)

static inline void contract_true(int ok, const char *expr, int line) {
    contract_checks++;
    if (!ok) {
        contract_failures++;
        fprintf(stderr, "FAIL line %d: %s\n", line, expr);
    }
}
#define CHECK(cond) contract_true((cond) != 0, #cond, __LINE__)

/* Each string of the array must be refused by PARSE(string, OUT) with
 * LA_ERR_ARGUMENT and a message. */
#define EXPECT_PARSE_REFUSES(parse, strings, out)                                                     \
    for (size_t i_ = 0; i_ < sizeof(strings) / sizeof(strings)[0]; i_++) {                          \
        la_status s_ = parse((strings)[i_], (out));                                                  \
        if (s_ != LA_ERR_ARGUMENT || !la_last_error()[0]) {                                          \
            contract_failures++;                                                                     \
            fprintf(stderr, "FAIL: %s(\"%s\") gave %s\n", #parse, (strings)[i_], la_status_name(s_)); \
        }                                                                                            \
        contract_checks++;                                                                           \
    }

static inline int contract_exit(const char *name) {
    printf("%s: %d checks, %d failed\n", name, contract_checks, contract_failures);
    return contract_failures != 0;
}

/* 256-byte aligned, zeroed; freed at exit by the caller's contract_free_all. */
enum { CONTRACT_MAX_BUFS = 256 };
static void *contract_bufs[CONTRACT_MAX_BUFS];
static int contract_nbufs;
static inline void *buf(size_t bytes) {
    size_t n = (bytes + 255) / 256 * 256;
    void *p = aligned_alloc(256, n ? n : 256);
    if (!p || contract_nbufs == CONTRACT_MAX_BUFS) {
        fprintf(stderr, "out of memory in the test\n");
        exit(1);
    }
    memset(p, 0, n ? n : 256);
    return contract_bufs[contract_nbufs++] = p;
}
static inline void contract_free_all(void) {
    for (int i = 0; i < contract_nbufs; i++) free(contract_bufs[i]);
    contract_nbufs = 0;
}

/* Deterministic values in [-1, 1): these tests check statuses, not numbers. */
static inline float *filled(size_t n) {
    float *p = buf(n * sizeof(float));
    uint32_t s = 0x9e3779b9u;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        p[i] = (float)(s >> 8) / (float)(1u << 23) - 1.0f;
    }
    return p;
}

static inline la_tensor t4(void *data, int64_t a, int64_t b, int64_t c, int64_t d) {
    return la_tensor_contiguous(data, LA_F32, 4, (int64_t[]){a, b, c, d});
}
static inline la_tensor t3(void *data, int64_t a, int64_t b, int64_t c) {
    return la_tensor_contiguous(data, LA_F32, 3, (int64_t[]){a, b, c});
}
static inline la_tensor t2(void *data, int64_t a, int64_t b) { return la_tensor_contiguous(data, LA_F32, 2, (int64_t[]){a, b}); }
static inline la_tensor t1(void *data, int64_t a) { return la_tensor_contiguous(data, LA_F32, 1, (int64_t[]){a}); }

/* An aligned address no call may read: validation must reject views of it
 * (overflowing sizes) before touching memory. */
#define FAKE_PTR ((void *)(uintptr_t)0x100000)

#endif
