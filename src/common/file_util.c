/* SPDX-License-Identifier: MIT */
/*
 * file_util.c - atomic whole-file writes (see file_util.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "file_util.h"
#include "names.h"
#include "xalloc.h"

int file_write_atomic(const char *path, const void *data, size_t len, mode_t mode, struct buf *err)
{
    char suffix[9];
    char *tmp, *dir_copy = NULL;
    const char *p = data;
    int fd, dfd, rc = 0;

    random_alnum(suffix, 8);
    tmp = xasprintf("%s.tmp-%s", path, suffix);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd == -1) {
        rc = -errno;
        buf_printf(err, "cannot write '%s': %s", tmp, strerror(-rc));
        goto out;
    }
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n == -1 && errno == EINTR)
            continue;
        if (n == -1) {
            rc = -errno;
            break;
        }
        p += n;
        len -= (size_t)n;
    }
    if (rc == 0 && fsync(fd) == -1)
        rc = -errno;
    if (close(fd) == -1 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) == -1)
        rc = -errno;
    if (rc < 0) {
        buf_printf(err, "cannot write '%s': %s", path, strerror(-rc));
        unlink(tmp);
        goto out;
    }
    /* The rename itself survives a crash once the directory is synced. */
    dir_copy = xstrdup(path);
    dfd = open(dirname(dir_copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd != -1) {
        fsync(dfd);
        close(dfd);
    }
out:
    free(dir_copy);
    free(tmp);
    return rc;
}
