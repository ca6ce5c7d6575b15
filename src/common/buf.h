/* SPDX-License-Identifier: MIT */
/*
 * buf.h - a growable byte buffer with a size cap. Invariants: data is NULL or
 * NUL-terminated at data[len]; len never exceeds max (when max is not 0);
 * a released buffer can be reused. Appends that would pass the cap fail
 * with -ENOBUFS and leave the buffer unchanged, so untrusted input can be
 * collected without a separate length check at every call site.
 */
#ifndef PLANE_BUF_H
#define PLANE_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
    char *data;   /* owned; NULL until the first append */
    size_t len;   /* bytes in use, excluding the terminating NUL */
    size_t alloc; /* bytes allocated */
    size_t max;   /* cap on len; 0 means no cap */
};

#define BUF_INIT {0}

void buf_init(struct buf *b, size_t max);
/* Frees the storage; the buffer is empty and reusable, with the same cap. */
void buf_release(struct buf *b);
/* Empties the buffer but keeps its storage. */
void buf_reset(struct buf *b);
/* 0, or -ENOBUFS if the result would pass the cap (buffer unchanged). */
int buf_append(struct buf *b, const void *data, size_t n);
int buf_append_str(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Drops the first n bytes (all of them if n >= len). */
void buf_consume(struct buf *b, size_t n);
/* Never NULL: "" for an empty buffer. Borrowed; valid until the next change. */
const char *buf_cstr(const struct buf *b);
/* Gives the storage to the caller (never NULL) and leaves the buffer empty. */
char *buf_detach(struct buf *b);

#endif
