/* SPDX-License-Identifier: MIT */
/*
 * rules.c - paths, tokens and hosts of proxied requests (see rules.h).
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../common/xalloc.h"
#include "rules.h"

/* Skips "scheme://authority" of an absolute-form target; NULL if it is not one. */
static const char *skip_authority(const char *t, size_t len, const char **end)
{
    const char *p = t, *e = t + len;

    *end = e;
    while (p < e && (isalnum((unsigned char)*p) || *p == '+' || *p == '-' || *p == '.'))
        p++;
    if (p == t || e - p < 3 || memcmp(p, "://", 3) != 0)
        return NULL;
    p += 3;
    while (p < e && *p != '/' && *p != '?' && *p != '#')
        p++;
    return p;
}

/*
 * The path and query of an origin-form or absolute-form target; an
 * absolute-form target without a path has the path "/".
 */
static bool split_path_query(const char *target, size_t len, struct rules_target *out)
{
    const char *t = target, *e = target + len, *q;

    if (len == 0)
        return false;
    if (*t != '/') {
        t = skip_authority(target, len, &e);
        if (!t)
            return false;
        if (t == e || *t != '/') {
            out->path = "/";
            out->path_len = 1;
            out->query = t;
            out->query_len = (size_t)(e - t);
            return true;
        }
    }
    q = memchr(t, '?', (size_t)(e - t));
    out->path = t;
    out->path_len = (size_t)((q ? q : e) - t);
    out->query = q ? q : e;
    out->query_len = q ? (size_t)(e - q) : 0;
    return true;
}

enum rules_kind rules_split_target(const char *target, size_t len, struct rules_target *out)
{
    const char *t, *seg_end;

    memset(out, 0, sizeof(*out));
    if (!split_path_query(target, len, out))
        return RULES_BAD;
    t = out->path;
    if (out->path_len == 6 && memcmp(t, "/ready", 6) == 0)
        return RULES_READY;
    if (out->path_len == 1)
        return RULES_ROOT;
    seg_end = memchr(t + 1, '/', out->path_len - 1);
    if (!seg_end)
        seg_end = t + out->path_len;
    out->token = t + 1;
    out->token_len = (size_t)(seg_end - out->token);
    if (out->token_len == 0)
        return RULES_BAD;
    out->is_static = out->token_len >= 2 && out->token[0] == 's' && out->token[1] == '.';
    if (out->is_static) {
        out->fwd_path = out->path;
        out->fwd_path_len = out->path_len;
    } else if (seg_end == t + out->path_len) {
        out->fwd_path = "/";
        out->fwd_path_len = 1;
    } else {
        out->fwd_path = seg_end;
        out->fwd_path_len = (size_t)(t + out->path_len - seg_end);
    }
    return RULES_TOKEN;
}

int rules_check_host(const char *host, size_t host_len, const char *cluster, const char *subdomain)
{
    size_t clen = strlen(cluster);
    const char *sub = NULL;
    size_t sub_len = 0;

    if (host_len >= 4 && memcmp(host + host_len - 4, ":443", 4) == 0)
        host_len -= 4;
    if (host_len == clen && memcmp(host, cluster, clen) == 0) {
        sub = NULL;
    } else if (host_len > clen && memcmp(host + host_len - clen, cluster, clen) == 0 &&
               host[host_len - clen - 1] == '.') {
        sub = host;
        sub_len = host_len - clen - 1;
    } else {
        return 403;
    }
    if (subdomain && (!sub || sub_len != strlen(subdomain) || memcmp(sub, subdomain, sub_len) != 0))
        return 403;
    return 0;
}

char *rules_normalize_url(const char *url)
{
    const char *sep = strstr(url, "://"), *auth, *rest;
    char *out, *p;

    if (!sep || (size_t)(sep - url) > 16)
        return NULL;
    if (!((sep - url == 4 && strncasecmp(url, "http", 4) == 0) || (sep - url == 5 && strncasecmp(url, "https", 5) == 0)))
        return NULL;
    auth = sep + 3;
    rest = auth + strcspn(auth, "/?#");
    if (rest == auth)
        return NULL;
    for (const char *c = url; *c; c++)
        if ((unsigned char)*c <= 0x20 || *c == 0x7f)
            return NULL;
    out = xasprintf("%.*s%s%s", (int)(rest - url), url, *rest == '/' ? "" : "/", rest);
    /* Scheme and host are case-insensitive; the url crate writes them in lower case. */
    for (p = out; p < out + (rest - url); p++)
        *p = (char)tolower((unsigned char)*p);
    return out;
}

char *rules_https_location(const char *host, size_t host_len, const char *target, size_t target_len)
{
    size_t n = host_len;
    struct rules_target t;

    if (host_len == 0)
        return NULL;
    for (size_t i = 0; i < host_len; i++) {
        unsigned char ch = (unsigned char)host[i];
        if (ch <= 0x20 || ch == 0x7f || ch == '/' || ch == '?' || ch == '#' || ch == '@' || ch == '\\')
            return NULL;
    }
    if (host[0] == '[') {
        const char *close = memchr(host, ']', host_len);
        if (!close)
            return NULL;
        n = (size_t)(close - host) + 1;
        if (n < host_len && host[n] != ':')
            return NULL;
    } else {
        const char *colon = memchr(host, ':', host_len);
        if (colon)
            n = (size_t)(colon - host);
    }
    if (n == 0)
        return NULL;
    for (size_t i = n + 1; i < host_len; i++)
        if (!isdigit((unsigned char)host[i]))
            return NULL;
    if (!split_path_query(target, target_len, &t))
        return NULL;
    return xasprintf("https://%.*s%.*s%.*s", (int)n, host, (int)t.path_len, t.path, (int)t.query_len, t.query);
}
