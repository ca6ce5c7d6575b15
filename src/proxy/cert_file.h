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
/* The first certificate's notBefore and notAfter as epoch ms. 0, or -EINVAL with a line in err. */
int cert_validity(const char *chain, int64_t *not_before, int64_t *not_after, struct buf *err);
/*
 * When a certificate valid from not_before to not_after is due for renewal:
 * 30 days before its end (§16.5), or with a third of its life left if it
 * lives less than 90 days (so a short-lived certificate is not renewed
 * again and again).
 */
int64_t cert_renew_at(int64_t not_before, int64_t not_after, int64_t window_ms);

#endif
