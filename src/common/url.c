/* SPDX-License-Identifier: MIT */
/*
 * url.c - minimal URL splitting and encoding (see url.h).
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "url.h"
#include "xalloc.h"

int url_parse(const char *text, struct url *u)
{
    const char *p = strstr(text, "://");
    const char *auth, *auth_end, *at, *host_end;

    memset(u, 0, sizeof(*u));
    if (!p || p == text)
        return -EINVAL;
    u->scheme = xstrndup(text, (size_t)(p - text));
    for (char *c = u->scheme; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    if (strcmp(u->scheme, "http") && strcmp(u->scheme, "https") && strcmp(u->scheme, "ws") &&
        strcmp(u->scheme, "wss"))
        goto bad;
    auth = p + 3;
    auth_end = auth + strcspn(auth, "/?#");
    at = memchr(auth, '@', (size_t)(auth_end - auth));
    if (at) {
        u->user = xstrndup(auth, (size_t)(at - auth));
        auth = at + 1;
    }
    if (*auth == '[') {
        const char *close = memchr(auth, ']', (size_t)(auth_end - auth));
        if (!close)
            goto bad;
        u->host = xstrndup(auth + 1, (size_t)(close - auth - 1));
        host_end = close + 1;
    } else {
        host_end = memchr(auth, ':', (size_t)(auth_end - auth));
        if (!host_end)
            host_end = auth_end;
        u->host = xstrndup(auth, (size_t)(host_end - auth));
    }
    if (!*u->host)
        goto bad;
    if (host_end < auth_end && *host_end == ':') {
        char *end;
        long port = strtol(host_end + 1, &end, 10);
        if (end != auth_end || port < 1 || port > 65535)
            goto bad;
        u->port = (int)port;
    } else if (host_end != auth_end) {
        goto bad;
    } else {
        u->port = strcmp(u->scheme, "https") == 0 || strcmp(u->scheme, "wss") == 0 ? 443 : 80;
    }
    u->path = xstrdup(*auth_end ? auth_end : "/");
    if (u->path[0] != '/') {
        char *p2 = xasprintf("/%s", u->path);
        free(u->path);
        u->path = p2;
    }
    return 0;
bad:
    url_release(u);
    return -EINVAL;
}

void url_release(struct url *u)
{
    free(u->scheme);
    free(u->user);
    free(u->host);
    free(u->path);
    memset(u, 0, sizeof(*u));
}

char *url_authority(const struct url *u)
{
    bool v6 = strchr(u->host, ':') != NULL;

    return xasprintf(v6 ? "[%s]:%d" : "%s:%d", u->host, u->port);
}

char *url_encode(const char *s)
{
    struct buf b = BUF_INIT;

    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~')
            buf_append(&b, s, 1);
        else
            buf_printf(&b, "%%%02X", c);
    }
    return buf_detach(&b);
}
