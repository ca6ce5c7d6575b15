/* SPDX-License-Identifier: MIT */
/*
 * route_cache.c - the shared route LRU (see route_cache.h).
 *
 * Entries live in a chained hash table and on one LRU list (most recently
 * used first). Entries with a lookup in flight are never evicted: their
 * waiters need the answer. Negative answers are cached like positive ones
 * and are only evicted, never re-asked (spec §20 item 7).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "../common/buf.h"
#include "../common/json_util.h"
#include "../common/log.h"
#include "../common/xalloc.h"
#include "h1.h"
#include "monitor.h"
#include "route_cache.h"

enum entry_state { ENTRY_PENDING, ENTRY_ROUTE, ENTRY_NONE };

struct entry {
    struct list_node lru;      /* in c->lru */
    struct entry *hnext;       /* hash chain */
    enum entry_state state;
    struct route *route;       /* owned reference with ENTRY_ROUTE */
    struct list_node waiters;  /* of struct route_waiter, while pending */
    size_t len;
    char token[];
};

struct route_cache {
    uv_mutex_t lock;
    size_t capacity, count;
    size_t nbuckets;            /* a power of two */
    struct entry **buckets;
    struct list_node lru;
    enum route_link link;
    unsigned nworkers;
    struct list_node done[ROUTE_CACHE_MAX_WORKERS];
    route_wake_fn *wake;
    void *wake_arg;
};

/* ---- routes ---- */

static void render(struct buf *b, const char *name, const char *value)
{
    /* §16.1 step 6: a value that is not a legal header value is silently left out. */
    if (value && h1_value_is_legal(value, strlen(value)))
        buf_printf(b, "%s: %s\r\n", name, value);
}

struct route *route_from_json(const json_t *info, struct monitor *m, struct buf *err)
{
    const char *id = json_get_str(info, "backend_id");
    const char *address = json_get_str(info, "address");
    const char *cluster = json_get_str(info, "cluster");
    const char *secret = json_get_str(info, "secret_token");
    const char *user = json_get_str(info, "user");
    const char *subdomain = json_get_str(info, "subdomain");
    json_t *user_data = json_object_get(info, "user_data");
    struct buf pre = BUF_INIT, post = BUF_INIT;
    struct route *r;

    if (!json_is_object(info) || !id || !address || !cluster || !*id) {
        buf_printf(err, "route info without backend_id, address or cluster");
        return NULL;
    }
    if (strlen(address) >= NET_ADDR_LEN) {
        buf_printf(err, "backend %s: address '%s' is too long", id, address);
        return NULL;
    }
    r = xcalloc(1, sizeof(*r));
    if (net_addr_parse(address, &r->sa) < 0) {
        buf_printf(err, "backend %s: cannot parse address '%s'", id, address);
        free(r);
        return NULL;
    }
    atomic_init(&r->refs, 1);
    atomic_init(&r->removed, false);
    memcpy(r->address, address, strlen(address) + 1);
    r->backend_id = xstrdup(id);
    r->cluster = xstrdup(cluster);
    r->subdomain = subdomain ? xstrdup(subdomain) : NULL;
    render(&pre, "x-verified-username", user);
    if (user_data && !json_is_null(user_data)) {
        /* serde_json writes opaque objects compact with sorted keys (§0). */
        json_t *sorted = json_sorted_copy(user_data);
        char *text = json_dumps(sorted, JSON_COMPACT | JSON_ENCODE_ANY);
        render(&pre, "x-verified-user-data", text);
        free(text);
        json_decref(sorted);
    }
    render(&post, "x-verified-backend", id);
    render(&post, "x-verified-secret", secret ? secret : "");
    r->verified_pre = buf_detach(&pre);
    r->verified_post = buf_detach(&post);
    r->act = m ? monitor_intern(m, id) : NULL;
    return r;
}

struct route *route_get(struct route *r)
{
    atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
    return r;
}

void route_put(struct route *r)
{
    if (!r || atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) != 1)
        return;
    backend_act_put(r->act);
    free(r->backend_id);
    free(r->cluster);
    free(r->subdomain);
    free(r->verified_pre);
    free(r->verified_post);
    free(r);
}

bool route_is_removed(const struct route *r)
{
    return atomic_load_explicit(&r->removed, memory_order_relaxed) || (r->act && backend_act_removed(r->act));
}

/* ---- the table ---- */

static size_t hash_token(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;

    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return (size_t)(h ^ (h >> 32));
}

static struct entry **find_slot(struct route_cache *c, const char *token, size_t len)
{
    struct entry **pp = &c->buckets[hash_token(token, len) & (c->nbuckets - 1)];

    for (; *pp; pp = &(*pp)->hnext)
        if ((*pp)->len == len && memcmp((*pp)->token, token, len) == 0)
            break;
    return pp;
}

static void entry_unlink(struct route_cache *c, struct entry *e)
{
    struct entry **pp = find_slot(c, e->token, e->len);

    if (*pp == e)
        *pp = e->hnext;
    list_remove(&e->lru);
    c->count--;
    route_put(e->route);
    free(e);
}

static void evict_if_full(struct route_cache *c)
{
    struct list_node *pos;

    if (c->count < c->capacity)
        return;
    for (pos = c->lru.prev; pos != &c->lru; pos = pos->prev) {
        struct entry *e = list_entry(pos, struct entry, lru);
        if (e->state != ENTRY_PENDING) {
            entry_unlink(c, e);
            return;
        }
    }
}

static struct entry *entry_new(struct route_cache *c, const char *token, size_t len)
{
    struct entry *e;
    struct entry **pp;

    evict_if_full(c);
    e = xcalloc(1, sizeof(*e) + len + 1);
    memcpy(e->token, token, len);
    e->len = len;
    list_init(&e->waiters);
    pp = &c->buckets[hash_token(token, len) & (c->nbuckets - 1)];
    e->hnext = *pp;
    *pp = e;
    /* list_insert_tail at the head's next position = most recent first */
    e->lru.next = c->lru.next;
    e->lru.prev = &c->lru;
    c->lru.next->prev = &e->lru;
    c->lru.next = &e->lru;
    c->count++;
    return e;
}

static void touch_lru(struct route_cache *c, struct entry *e)
{
    list_remove(&e->lru);
    e->lru.next = c->lru.next;
    e->lru.prev = &c->lru;
    c->lru.next->prev = &e->lru;
    c->lru.next = &e->lru;
}

struct route_cache *route_cache_new(size_t capacity, unsigned nworkers, route_wake_fn *wake, void *arg)
{
    struct route_cache *c = xcalloc(1, sizeof(*c));

    if (nworkers > ROUTE_CACHE_MAX_WORKERS)
        BUG("route cache: %u workers", nworkers);
    uv_mutex_init(&c->lock);
    c->capacity = capacity ? capacity : 1;
    c->nbuckets = 16;
    while (c->nbuckets < c->capacity * 2)
        c->nbuckets *= 2;
    c->buckets = xcalloc(c->nbuckets, sizeof(*c->buckets));
    list_init(&c->lru);
    c->nworkers = nworkers;
    for (unsigned i = 0; i < nworkers; i++)
        list_init(&c->done[i]);
    c->wake = wake;
    c->wake_arg = arg;
    c->link = ROUTE_LINK_NEVER;
    return c;
}

void route_cache_free(struct route_cache *c)
{
    struct list_node *pos, *tmp;

    if (!c)
        return;
    list_for_each_safe(pos, tmp, &c->lru) {
        struct entry *e = list_entry(pos, struct entry, lru);
        if (!list_empty(&e->waiters))
            BUG("route cache freed with waiters");
        route_put(e->route);
        free(e);
    }
    free(c->buckets);
    uv_mutex_destroy(&c->lock);
    free(c);
}

enum route_result route_cache_lookup(struct route_cache *c, const char *token, size_t len,
                                     struct route_waiter *w, struct route **out, bool *ask)
{
    enum route_result res;
    struct entry *e;

    *out = NULL;
    *ask = false;
    uv_mutex_lock(&c->lock);
    e = *find_slot(c, token, len);
    if (e) {
        switch (e->state) {
        case ENTRY_ROUTE:
            touch_lru(c, e);
            *out = route_get(e->route);
            res = ROUTE_FOUND;
            break;
        case ENTRY_NONE:
            touch_lru(c, e);
            res = ROUTE_NONE;
            break;
        default:
            list_insert_tail(&e->waiters, &w->node);
            w->queued = true;
            w->route = NULL;
            res = ROUTE_WAIT;
            break;
        }
    } else if (c->link == ROUTE_LINK_NEVER) {
        res = ROUTE_NONE; /* §16.2: never connected, a miss is none (not cached) */
    } else if (c->link == ROUTE_LINK_DOWN) {
        res = ROUTE_UNAVAILABLE;
    } else {
        e = entry_new(c, token, len);
        e->state = ENTRY_PENDING;
        list_insert_tail(&e->waiters, &w->node);
        w->queued = true;
        w->route = NULL;
        *ask = true;
        res = ROUTE_WAIT;
    }
    uv_mutex_unlock(&c->lock);
    return res;
}

void route_cache_cancel(struct route_cache *c, struct route_waiter *w)
{
    struct route *r = NULL;

    uv_mutex_lock(&c->lock);
    if (w->queued) {
        list_remove(&w->node);
        w->queued = false;
        r = w->route;
        w->route = NULL;
    }
    uv_mutex_unlock(&c->lock);
    route_put(r);
}

/* Under the lock: answers every waiter of e; returns the workers to wake as a bit mask. */
static uint64_t answer(struct route_cache *c, struct entry *e, enum route_result res, struct route *r)
{
    struct list_node *pos, *tmp;
    uint64_t wake = 0;

    list_for_each_safe(pos, tmp, &e->waiters) {
        struct route_waiter *w = list_entry(pos, struct route_waiter, node);
        list_remove(&w->node);
        w->result = res;
        w->route = r ? route_get(r) : NULL;
        list_insert_tail(&c->done[w->worker], &w->node);
        wake |= 1ull << w->worker;
    }
    return wake;
}

static void wake_workers(struct route_cache *c, uint64_t mask)
{
    for (unsigned i = 0; i < c->nworkers; i++)
        if (mask & (1ull << i))
            c->wake(c->wake_arg, i);
}

void route_cache_resolve(struct route_cache *c, const char *token, struct route *r)
{
    size_t len = strlen(token);
    struct entry *e;
    uint64_t mask;

    uv_mutex_lock(&c->lock);
    e = *find_slot(c, token, len);
    if (!e)
        e = entry_new(c, token, len); /* unsolicited answers are cached too (§16.2) */
    else
        touch_lru(c, e);
    route_put(e->route);
    e->route = r ? route_get(r) : NULL;
    e->state = r ? ENTRY_ROUTE : ENTRY_NONE;
    mask = answer(c, e, r ? ROUTE_FOUND : ROUTE_NONE, r);
    uv_mutex_unlock(&c->lock);
    wake_workers(c, mask);
}

void route_cache_remove_backend(struct route_cache *c, const char *backend_id)
{
    struct list_node *pos;

    uv_mutex_lock(&c->lock);
    for (pos = c->lru.next; pos != &c->lru; pos = pos->next) {
        struct entry *e = list_entry(pos, struct entry, lru);
        if (e->state == ENTRY_ROUTE && strcmp(e->route->backend_id, backend_id) == 0) {
            atomic_store(&e->route->removed, true);
            route_put(e->route);
            e->route = NULL;
            e->state = ENTRY_NONE;
        }
    }
    uv_mutex_unlock(&c->lock);
}

void route_cache_set_link(struct route_cache *c, enum route_link state)
{
    struct list_node *pos, *tmp;
    uint64_t mask = 0;

    uv_mutex_lock(&c->lock);
    c->link = state;
    if (state == ROUTE_LINK_DOWN) {
        list_for_each_safe(pos, tmp, &c->lru) {
            struct entry *e = list_entry(pos, struct entry, lru);
            if (e->state == ENTRY_PENDING) {
                mask |= answer(c, e, ROUTE_UNAVAILABLE, NULL);
                entry_unlink(c, e);
            }
        }
    }
    uv_mutex_unlock(&c->lock);
    wake_workers(c, mask);
}

void route_cache_take_done(struct route_cache *c, unsigned worker, struct list_node *out)
{
    struct list_node *pos, *tmp;

    uv_mutex_lock(&c->lock);
    list_for_each_safe(pos, tmp, &c->done[worker]) {
        struct route_waiter *w = list_entry(pos, struct route_waiter, node);
        list_remove(&w->node);
        w->queued = false;
        list_insert_tail(out, &w->node);
    }
    uv_mutex_unlock(&c->lock);
}

size_t route_cache_size(struct route_cache *c)
{
    size_t n;

    uv_mutex_lock(&c->lock);
    n = c->count;
    uv_mutex_unlock(&c->lock);
    return n;
}
