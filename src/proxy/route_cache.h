/* SPDX-License-Identifier: MIT */
/*
 * route_cache.h - token -> route, shared by every worker loop (spec §16.2).
 *
 * An LRU of at most `capacity` tokens, each a route, "none", or a lookup in
 * flight. A miss makes the caller ask the controller (once per token while
 * the lookup is in flight: later misses for that token wait on the same
 * answer). Waiters are intrusive (struct route_waiter, embedded in the
 * caller's connection); when an answer arrives they are moved to their
 * worker's done list and the worker is woken through a callback, so an
 * answer received on the control loop reaches connections on any loop.
 * Everything is behind one mutex, held only for table operations.
 */
#ifndef PLANE_PROXY_ROUTE_CACHE_H
#define PLANE_PROXY_ROUTE_CACHE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include <jansson.h>

#include "../common/list.h"
#include "../common/net.h"

#define ROUTE_CACHE_SIZE 1000 /* §19 */
#define ROUTE_CACHE_MAX_WORKERS 64

struct backend_act;
struct buf;
struct monitor;
struct route_cache;

/* A resolved route (RouteInfo, §8.2): immutable once made, refcounted, any thread. */
struct route {
    atomic_int refs;
    atomic_bool removed;          /* BackendRemoved arrived for its backend */
    struct backend_act *act;      /* owned reference; NULL without a monitor */
    char *backend_id;             /* owned */
    char *cluster;                /* owned */
    char *subdomain;              /* owned; NULL if the route has none */
    char address[NET_ADDR_LEN];   /* "IP:PORT" */
    struct sockaddr_storage sa;   /* address, parsed */
    char *verified_pre;           /* owned: "x-verified-username"/"-user-data" lines, maybe "" */
    char *verified_post;          /* owned: "x-verified-backend"/"-secret" lines */
};

/*
 * A route from a RouteInfo object; m (may be NULL) interns its backend's
 * activity record. NULL (and one line in err) if info is not a usable
 * RouteInfo. The caller owns the reference.
 */
struct route *route_from_json(const json_t *info, struct monitor *m, struct buf *err);
struct route *route_get(struct route *r);
/* Drops a reference; NULL is fine. */
void route_put(struct route *r);
/* BackendRemoved arrived for the route's backend since it was made. */
bool route_is_removed(const struct route *r);

enum route_result {
    ROUTE_FOUND,       /* *out is a new reference */
    ROUTE_NONE,        /* no such route: 410 */
    ROUTE_WAIT,        /* the waiter is queued; its result comes to the worker's done list */
    ROUTE_UNAVAILABLE, /* the controller link is down: 503 */
};

enum route_link {
    ROUTE_LINK_NEVER, /* never connected: misses are "none" (§16.2) */
    ROUTE_LINK_UP,
    ROUTE_LINK_DOWN,  /* was connected: misses and lookups in flight are unavailable (§21) */
};

struct route_waiter {
    struct list_node node;   /* in an entry's waiters, or a done list */
    unsigned worker;         /* set by the caller before the lookup */
    bool queued;             /* node is in one of the cache's lists */
    enum route_result result;
    struct route *route;     /* with ROUTE_FOUND, a reference for the waiter */
};

/* Called (on the thread answering) when worker has results to take. */
typedef void route_wake_fn(void *arg, unsigned worker);

struct route_cache *route_cache_new(size_t capacity, unsigned nworkers, route_wake_fn *wake, void *arg);
/* Frees every entry; no waiter may be queued any more. NULL is fine. */
void route_cache_free(struct route_cache *c);
/*
 * Looks up token (len bytes). On ROUTE_WAIT, w is queued and *ask tells
 * whether this caller must send the RouteInfoRequest (the first miss).
 */
enum route_result route_cache_lookup(struct route_cache *c, const char *token, size_t len,
                                     struct route_waiter *w, struct route **out, bool *ask);
/* Takes w out of wherever it is queued and drops its route; harmless if not queued. */
void route_cache_cancel(struct route_cache *c, struct route_waiter *w);
/* A RouteInfoResponse: r (borrowed; NULL for none) becomes the token's entry, waiters are answered. */
void route_cache_resolve(struct route_cache *c, const char *token, struct route *r);
/* BackendRemoved: every route to the backend becomes "none". */
void route_cache_remove_backend(struct route_cache *c, const char *backend_id);
/* The controller link changed; DOWN answers every lookup in flight with ROUTE_UNAVAILABLE. */
void route_cache_set_link(struct route_cache *c, enum route_link state);
/* Moves the worker's answered waiters to out (an initialised list head). */
void route_cache_take_done(struct route_cache *c, unsigned worker, struct list_node *out);
/* Entries in the cache, lookups in flight included. */
size_t route_cache_size(struct route_cache *c);

#endif
