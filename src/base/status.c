#include "base.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* One message per thread so concurrent callers never see each other's errors. */
static _Thread_local char last_error[1024]; /* la_env_check names up to four variables */

static const char *const status_names[LA_STATUS_COUNT] = {
    [LA_OK] = "LA_OK",
    [LA_ERR_NULL] = "LA_ERR_NULL",
    [LA_ERR_SHAPE] = "LA_ERR_SHAPE",
    [LA_ERR_DTYPE] = "LA_ERR_DTYPE",
    [LA_ERR_STRIDE] = "LA_ERR_STRIDE",
    [LA_ERR_OVERFLOW] = "LA_ERR_OVERFLOW",
    [LA_ERR_UNSUPPORTED] = "LA_ERR_UNSUPPORTED",
    [LA_ERR_ARGUMENT] = "LA_ERR_ARGUMENT",
    [LA_ERR_SEQLENS] = "LA_ERR_SEQLENS",
    [LA_ERR_NOMEM] = "LA_ERR_NOMEM",
    [LA_ERR_WORKSPACE] = "LA_ERR_WORKSPACE",
    [LA_ERR_DEVICE] = "LA_ERR_DEVICE",
    [LA_ERR_IO] = "LA_ERR_IO",
    [LA_ERR_FORMAT] = "LA_ERR_FORMAT",
};

const char *la_status_name(la_status s) {
    if ((unsigned)s >= LA_STATUS_COUNT) return "LA_ERR_UNKNOWN";
    return status_names[s];
}

const char *la_last_error(void) { return last_error; }

la_status la_set_error(la_status s, const char *fmt, ...) {
    /* Formatted apart first: a caller may wrap the previous message
     * (la_fail(st, "...: %s", la_last_error())), and vsnprintf from the
     * buffer it writes into is undefined (it garbled such messages). */
    char msg[sizeof last_error] = "(no message: la_set_error's fmt was NULL)";
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
    }
    memcpy(last_error, msg, sizeof msg);
    return s;
}

la_status la_clear_error(void) {
    last_error[0] = 0;
    return LA_OK;
}

double la_clock_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
