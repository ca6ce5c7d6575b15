/* SPDX-License-Identifier: MIT */
/*
 * file_util.h - whole files: written atomically (a temporary file in the
 * same directory, synced, then renamed over the target), so a reader sees
 * the old contents or the new, never a mixture; and read whole.
 */
#ifndef PLANE_FILE_UTIL_H
#define PLANE_FILE_UTIL_H

#include <stddef.h>
#include <sys/types.h>

struct buf;

/* Replaces path with len bytes of data, mode applied from the start. 0, or -errno with a line in err. */
int file_write_atomic(const char *path, const void *data, size_t len, mode_t mode, struct buf *err);

#endif
