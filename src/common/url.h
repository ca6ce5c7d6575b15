/* SPDX-License-Identifier: MIT */
/*
 * url.h - the few URL operations Plane's components need: split a base URL
 * such as "http://TOKEN@host:8080/" into scheme, bearer token, host and
 * port, and percent-encode a query value.
 */
#ifndef PLANE_URL_H
#define PLANE_URL_H

#include <stdbool.h>

struct url {
    char *scheme; /* lower case: http, https, ws, wss */
    char *user;   /* the part before '@' (a bearer token), or NULL */
    char *host;   /* without brackets for IPv6 */
    int port;     /* explicit, or the scheme's default */
    char *path;   /* "/" if absent; includes the query */
};

/* 0, or -EINVAL for anything that is not scheme://[user@]host[:port][/path]. */
int url_parse(const char *text, struct url *out);
void url_release(struct url *u);
/* host[:port] as it goes in a Host header or URL (IPv6 bracketed). Owned by caller. */
char *url_authority(const struct url *u);
/* Percent-encodes everything but unreserved characters. Owned by caller. */
char *url_encode(const char *s);

#endif
