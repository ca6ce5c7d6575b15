/* SPDX-License-Identifier: MIT */
/*
 * rules.h - the Plane-specific decisions about one request (spec §16.1
 * steps 1-5): what the path asks for, which token it carries and what path
 * goes upstream, whether the Host fits the route's cluster and subdomain,
 * and the root redirect URL. Pure functions over byte spans.
 */
#ifndef PLANE_PROXY_RULES_H
#define PLANE_PROXY_RULES_H

#include <stdbool.h>
#include <stddef.h>

#define RULES_MAX_TOKEN 256 /* a longer first segment cannot be a token */

enum rules_kind {
    RULES_BAD,   /* not a path we can route: 400 */
    RULES_READY, /* "/ready" */
    RULES_ROOT,  /* "/" */
    RULES_TOKEN, /* "/<token>[/rest]" */
};

/* Spans into the request-target the caller passed in (except fwd_path "/"). */
struct rules_target {
    const char *path;     /* the path, token included, no query */
    size_t path_len;
    const char *query;    /* "?..." or empty */
    size_t query_len;
    const char *token;
    size_t token_len;
    const char *fwd_path; /* what goes upstream before the query */
    size_t fwd_path_len;
    bool is_static;       /* an "s." token: the path goes upstream unchanged */
};

/*
 * Splits a request-target (origin-form, or absolute-form whose path is
 * used) per §16.1: "/ready", "/", or the token in the first segment with
 * the forwarded path (dynamic tokens are stripped, "/" if nothing follows;
 * static tokens are kept). An empty token, or a target that is neither
 * form, is RULES_BAD.
 */
enum rules_kind rules_split_target(const char *target, size_t len, struct rules_target *out);
/*
 * §16.1 step 5: 0 if host (the Host value) fits cluster and the route's
 * subdomain (NULL if none), else 403. A trailing ":443" is ignored; all
 * comparisons are byte for byte.
 */
int rules_check_host(const char *host, size_t host_len, const char *cluster, const char *subdomain);
/*
 * The --root-redirect-url as a Location value, normalised as the url crate
 * does the simple cases (scheme and host lower-cased, "/" for an empty
 * path). NULL if it is not an absolute http(s) URL. Owned by caller.
 */
char *rules_normalize_url(const char *url);
/*
 * §16.6: the Location for the HTTPS redirect, "https://<host without
 * port><target>", or NULL if host is empty or unparseable. Owned by caller.
 */
char *rules_https_location(const char *host, size_t host_len, const char *target, size_t target_len);

#endif
