/* Private helpers of the key-management formats (schsm/keymgmt_formats.h). */
#ifndef SKS_SCHSM_KEYMGMT_UTIL_H
#define SKS_SCHSM_KEYMGMT_UTIL_H

#include <stdarg.h>
#include <stdio.h>

/* Writes the message into err (if any) and returns 0, so failures read `return fail(...)`. */
static inline int __attribute__((format(printf, 3, 4))) schsm_km_fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return 0;
}

/* Lower-case hex of n bytes into out (2n + 1 bytes). */
static inline void schsm_km_hex(const unsigned char *b, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = 0;
}

#endif
