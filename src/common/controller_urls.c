/* SPDX-License-Identifier: MIT */
/*
 * controller_urls.c - parse and rotate controller URLs (see controller_urls.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "controller_urls.h"
#include "url.h"
#include "xalloc.h"

int controller_urls_parse(struct controller_urls *u, const char *list, const char *path, struct buf *err)
{
    char *copy = xstrdup(list), *save = NULL;
    int rc = 0;

    memset(u, 0, sizeof(*u));
    for (char *one = strtok_r(copy, ",", &save); one && rc == 0; one = strtok_r(NULL, ",", &save)) {
        struct url p;
        if (url_parse(one, &p) < 0) {
            buf_printf(err, "invalid --controller-url '%s'", one);
            rc = -EINVAL;
            break;
        }
        if (strcmp(p.scheme, "https") == 0 || strcmp(p.scheme, "wss") == 0) {
            buf_printf(err, "TLS to the controller is not supported yet ('%s')", one);
            rc = -EPROTONOSUPPORT;
        } else {
            char *authority = url_authority(&p);
            u->socket = xrealloc(u->socket, (u->n + 1) * sizeof(*u->socket));
            u->bearer = xrealloc(u->bearer, (u->n + 1) * sizeof(*u->bearer));
            u->socket[u->n] = xasprintf("ws://%s%s", authority, path);
            u->bearer[u->n] = p.user ? xstrdup(p.user) : NULL;
            u->n++;
            free(authority);
        }
        url_release(&p);
    }
    free(copy);
    if (rc == 0 && u->n == 0) {
        buf_printf(err, "--controller-url names no controller");
        rc = -EINVAL;
    }
    if (rc < 0)
        controller_urls_release(u);
    return rc;
}

void controller_urls_release(struct controller_urls *u)
{
    for (size_t i = 0; i < u->n; i++) {
        free(u->socket[i]);
        free(u->bearer[i]);
    }
    free(u->socket);
    free(u->bearer);
    memset(u, 0, sizeof(*u));
}

void controller_urls_next(struct controller_urls *u)
{
    if (u->n)
        u->at = (u->at + 1) % u->n;
}

char *controller_urls_append(char *list, const char *value)
{
    char *joined = list ? xasprintf("%s,%s", list, value) : xstrdup(value);

    free(list);
    return joined;
}
