/* SPDX-License-Identifier: MIT */
/*
 * line_reader.h - splits a byte stream into newline-terminated lines, the
 * framing of the executor protocol (spec §15.1). Bytes arrive in arbitrary
 * pieces; each complete line is handed to a callback without its "\n" (and
 * without a "\r" before it). A line longer than the cap is skipped up to its
 * newline and reported once as dropped, so a peer cannot make us buffer
 * without bound.
 */
#ifndef PLANE_LINE_READER_H
#define PLANE_LINE_READER_H

#include <stddef.h>

#include "buf.h"

/*
 * Called once per complete line. line is NUL-terminated and borrowed for the
 * call; line is NULL (and len the bytes skipped so far) for an overlong line.
 * Return 0 to go on, non-zero to stop feeding (e.g. the owner is closing).
 */
typedef int line_fn(void *arg, const char *line, size_t len);

struct line_reader {
    struct buf pending; /* an incomplete line */
    size_t max_line;    /* longest accepted line, excluding "\n" */
    size_t skipping;    /* > 0 while discarding the rest of an overlong line */
};

void line_reader_init(struct line_reader *r, size_t max_line);
void line_reader_release(struct line_reader *r);
/* Returns 0, or the callback's non-zero value when it asked to stop. */
int line_reader_feed(struct line_reader *r, const char *data, size_t len, line_fn *fn, void *arg);

#endif
