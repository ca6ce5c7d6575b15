/* SPDX-License-Identifier: MIT */
/*
 * xalloc.h - allocation that never returns NULL. We ship daemons: running out
 * of memory is not a condition any caller can recover from, so the x* wrappers
 * abort with a message instead of making every call site check.
 */
#ifndef PLANE_XALLOC_H
#define PLANE_XALLOC_H

#include <stdarg.h>
#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* Like asprintf(3), but the result is returned and never NULL. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *xvasprintf(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

#endif
