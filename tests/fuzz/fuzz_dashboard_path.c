/* SPDX-License-Identifier: MIT */
/*
 * fuzz_dashboard_path.c - libFuzzer target for the x-original-path the
 * dashboard asks forward auth about: a client's decoded path segments, any
 * bytes at all, in. What comes out must be fit for a header line (only
 * '/', '%' and RFC 3986 pchar bytes) and must decode back to exactly the
 * segments that went in.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/controller/dashboard.h"

#define MAX_SEGMENTS 8

static int hex(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy = malloc(size + 1), *seg[MAX_SEGMENTS], *out, *p;
    int n = 0;

    memcpy(copy, data, size);
    copy[size] = '\0';
    /* Segments end at '/' (as the router splits) or at a NUL (as C strings do). */
    for (p = copy; n < MAX_SEGMENTS && p <= copy + size; n++) {
        seg[n] = p;
        p += strcspn(p, "/");
        if (*p == '\0')
            break;
        *p++ = '\0';
    }
    if (n < MAX_SEGMENTS)
        n++;
    out = dashboard_auth_path(seg, n);
    /* Decode it again, segment by segment. */
    p = out;
    for (int i = 0; i < n; i++) {
        size_t k = 0, len = strlen(seg[i]);
        if (*p++ != '/')
            abort();
        for (; *p && *p != '/'; k++) {
            unsigned char c = (unsigned char)*p;
            if (c == '%') {
                if (hex(p[1]) < 0 || hex(p[2]) < 0)
                    abort();
                c = (unsigned char)(hex(p[1]) * 16 + hex(p[2]));
                p += 3;
            } else if (c < 0x21 || c > 0x7e || strchr("\"#<>?[\\]^`{|}", c)) {
                abort();
            } else {
                p++;
            }
            if (k >= len || (unsigned char)seg[i][k] != c)
                abort();
        }
        if (k != len)
            abort();
    }
    if (*p)
        abort();
    free(out);
    free(copy);
    return 0;
}
