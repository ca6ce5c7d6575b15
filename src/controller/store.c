/* SPDX-License-Identifier: MIT */
/*
 * store.c - picks the store implementation for a URL, answers batched
 * connects on stores without a batch of their own, and frees rows.
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

/* Releases what the first n items found. */
static void held_release(struct held_connect *items, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        key_row_release(&items[i].key);
        items[i].found = items[i].token_made = false;
    }
}

int store_connect_held(struct store *s, struct held_connect *items, size_t n)
{
    int rc = 0;

    for (size_t i = 0; i < n; i++) {
        memset(&items[i].key, 0, sizeof(items[i].key));
        items[i].found = items[i].token_made = false;
    }
    if (s->ops->connect_held) {
        if ((rc = s->ops->connect_held(s, items, n)) < 0)
            held_release(items, n);
        return rc;
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        struct held_connect *h = &items[i];
        rc = s->ops->key_get(s, h->ns, h->name, &h->key);
        if (rc == -ENOENT) {
            rc = 0;
            continue;
        }
        if (rc < 0)
            break;
        h->found = true;
        if (h->now < h->key.expires_at && strcmp(h->key.tag, h->tag) == 0 && !h->key.static_token) {
            rc = s->ops->token_create(s, h->token, h->key.backend_id, h->user, h->auth, h->secret,
                                      h->token_expires_at);
            h->token_made = rc == 0;
        }
    }
    if (rc < 0)
        held_release(items, n);
    return rc;
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
