/* SPDX-License-Identifier: MIT */
/*
 * cert_file.h - the proxy's certificate file (spec §16.5): JSON
 * {"cert": PEM chain, "key": PEM private key}, mode 0600, replaced
 * atomically; and what the proxy needs to know of a chain (its expiry).
 */
#ifndef PLANE_PROXY_CERT_FILE_H
#define PLANE_PROXY_CERT_FILE_H

#include <stdint.h>

struct buf;

/* Reads path: *chain and *key (owned) on 0; -errno with a line in err (-ENOENT: no file). */
int cert_file_read(const char *path, char **chain, char **key, struct buf *err);
/* Writes path atomically with mode 0600. 0, or -errno with a line in err. */
int cert_file_write(const char *path, const char *chain, const char *key, struct buf *err);
/* The first certificate's notAfter as epoch ms. 0, or -EINVAL with a line in err. */
int cert_not_after(const char *chain, int64_t *epoch_ms, struct buf *err);

#endif
