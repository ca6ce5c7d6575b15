/* SPDX-License-Identifier: MIT */
/*
 * line_reader.c - newline framing with a cap on line length (see line_reader.h).
 */
#include <string.h>

#include "line_reader.h"

void line_reader_init(struct line_reader *r, size_t max_line)
{
    buf_init(&r->pending, max_line);
    r->max_line = max_line;
    r->skipping = 0;
}

void line_reader_release(struct line_reader *r)
{
    buf_release(&r->pending);
    r->skipping = 0;
}

int line_reader_feed(struct line_reader *r, const char *data, size_t len, line_fn *fn, void *arg)
{
    while (len > 0) {
        const char *nl = memchr(data, '\n', len);
        size_t chunk = nl ? (size_t)(nl - data) : len;
        int rc = 0;

        if (r->skipping) {
            r->skipping += chunk;
            if (nl) {
                rc = fn(arg, NULL, r->skipping);
                r->skipping = 0;
            }
        } else if (buf_append(&r->pending, data, chunk) < 0) {
            /* Too long: forget what we have and skip to the newline. */
            r->skipping = r->pending.len + chunk;
            buf_reset(&r->pending);
            if (nl) {
                rc = fn(arg, NULL, r->skipping);
                r->skipping = 0;
            }
        } else if (nl) {
            size_t n = r->pending.len;
            if (n > 0 && r->pending.data[n - 1] == '\r')
                r->pending.data[--n] = '\0';
            rc = fn(arg, buf_cstr(&r->pending), n);
            buf_reset(&r->pending);
        }
        if (!nl)
            return 0;
        data = nl + 1;
        len -= chunk + 1;
        if (rc)
            return rc;
    }
    return 0;
}
