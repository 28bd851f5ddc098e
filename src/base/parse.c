#include "base.h"

#include <errno.h>
#include <stdlib.h>

/* strtod alone also skips leading blanks and takes hex ("0x0.8"), "inf"
 * and "nan", and returns 0 for an underflow: none of which a number typed
 * into an option string (a budget, a share) should be. */
bool la_parse_decimal(const char *s, size_t n, double *out) {
    char buf[64];
    if (!s || !out || !n || n >= sizeof buf) return false;
    memcpy(buf, s, n), buf[n] = 0;
    const char *p = buf + (buf[0] == '-' || buf[0] == '+');
    const size_t whole = strspn(p, "0123456789");
    p += whole;
    size_t fraction = 0;
    if (*p == '.') fraction = strspn(++p, "0123456789"), p += fraction;
    if (!whole && !fraction) return false;
    if (*p == 'e' || *p == 'E') {
        p++;
        p += *p == '-' || *p == '+';
        const size_t exp_digits = strspn(p, "0123456789");
        if (!exp_digits) return false;
        p += exp_digits;
    }
    if (p != buf + n) return false; /* a NUL among the n bytes ends the number early: not all of it */
    char *end;
    errno = 0;
    const double v = strtod(buf, &end);
    if (end != p || errno == ERANGE) return false;
    *out = v;
    return true;
}
