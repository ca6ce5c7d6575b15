/* SPDX-License-Identifier: MIT */
/*
 * store.c - picks the store implementation for a URL and frees rows.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

int store_open(struct store **out, const char *url, struct buf *err)
{
    int rc;

    *out = NULL;
    if (strncmp(url, "postgres://", 11) == 0 || strncmp(url, "postgresql://", 13) == 0) {
        rc = store_pg_ops.open(out, url, err);
        if (rc == 0)
            (*out)->ops = &store_pg_ops;
        return rc;
    }
    if (strncmp(url, "sqlite://", 9) == 0)
        url += 9;
    rc = store_sqlite_ops.open(out, url, err);
    if (rc == 0)
        (*out)->ops = &store_sqlite_ops;
    return rc;
}

void store_close(struct store *s)
{
    if (s)
        s->ops->close(s);
}

void backend_row_release(struct backend_row *r)
{
    free(r->id);
    free(r->cluster);
    free(r->static_token);
    free(r->subdomain);
    free(r->drone_name);
    memset(r, 0, sizeof(*r));
}

void key_row_release(struct key_row *r)
{
    free(r->backend_id);
    free(r->tag);
    free(r->cluster);
    free(r->static_token);
    free(r->subdomain);
    memset(r, 0, sizeof(*r));
}

void route_row_release(struct route_row *r)
{
    free(r->backend_id);
    free(r->secret_token);
    free(r->cluster);
    free(r->user);
    free(r->user_data);
    free(r->subdomain);
    memset(r, 0, sizeof(*r));
}

const char *node_kind_name(enum node_kind k)
{
    return k == NODE_DRONE ? "Drone" : k == NODE_PROXY ? "Proxy" : "AcmeDnsServer";
}
