/* SPDX-License-Identifier: MIT */
/*
 * monitor.c - backend activity and keepalives (see monitor.h).
 *
 * A backend record is interned by id in a mutex-protected table, so every
 * route to the same backend shares one record. Workers only flip atomics:
 * "recent" on a proxied request, "active" up and down for upgraded
 * connections. The first activity of a backend that is not being watched
 * queues it for the control loop (one atomic exchange decides who queues),
 * which sends KeepAlive at once and then visits it every period (7 s): still in
 * use (open connections, or a request since the last visit) means another
 * KeepAlive, idle means it is forgotten until it is used again.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../common/list.h"
#include "../common/log.h"
#include "../common/xalloc.h"
#include "monitor.h"

#define INTERN_BUCKETS 1024

struct watch;

struct backend_act {
    atomic_int refs;
    atomic_bool recent;    /* a request since the last visit */
    atomic_bool monitored; /* watched, or queued to be */
    atomic_bool removed;   /* BackendRemoved was received */
    atomic_int active;     /* open upgraded connections */
    struct monitor *m;     /* borrowed; outlives the record */
    struct backend_act *hnext; /* intern table chain (under m->lock) */
    struct list_node seen;     /* in m->seen while queued (under m->lock) */
    struct watch *watch;       /* control loop only: its schedule, or NULL */
    char id[];
};

struct watch {
    uv_timer_t timer;
    struct backend_act *b; /* owned reference */
};

struct monitor {
    uv_loop_t *loop; /* borrowed */
    monitor_send_fn *send;
    void *send_arg;
    unsigned period_ms;
    uv_mutex_t lock;
    struct backend_act *table[INTERN_BUCKETS]; /* under lock */
    struct list_node seen;                      /* first-seen queue, under lock; each holds a ref */
    uv_async_t async;                           /* wakes the control loop for the queue */
    unsigned watched;
    unsigned open_handles;
    bool closing;
};

static unsigned hash_id(const char *s)
{
    uint32_t h = 2166136261u;

    while (*s)
        h = (h ^ (unsigned char)*s++) * 16777619u;
    return h % INTERN_BUCKETS;
}

struct backend_act *backend_act_get(struct backend_act *b)
{
    atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
    return b;
}

struct backend_act *monitor_intern(struct monitor *m, const char *backend_id)
{
    unsigned h = hash_id(backend_id);
    struct backend_act *b;

    uv_mutex_lock(&m->lock);
    for (b = m->table[h]; b; b = b->hnext)
        if (strcmp(b->id, backend_id) == 0)
            break;
    if (b) {
        backend_act_get(b);
    } else {
        size_t n = strlen(backend_id);
        b = xcalloc(1, sizeof(*b) + n + 1);
        memcpy(b->id, backend_id, n + 1);
        atomic_init(&b->refs, 1);
        b->m = m;
        list_init(&b->seen);
        b->hnext = m->table[h];
        m->table[h] = b;
    }
    uv_mutex_unlock(&m->lock);
    return b;
}

void backend_act_put(struct backend_act *b)
{
    struct monitor *m;
    struct backend_act **pp;

    if (!b || atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1)
        return;
    m = b->m;
    uv_mutex_lock(&m->lock);
    /* It may have been interned again between the decrement and the lock. */
    if (atomic_load(&b->refs) != 0) {
        uv_mutex_unlock(&m->lock);
        return;
    }
    for (pp = &m->table[hash_id(b->id)]; *pp; pp = &(*pp)->hnext) {
        if (*pp == b) {
            *pp = b->hnext;
            break;
        }
    }
    uv_mutex_unlock(&m->lock);
    free(b);
}

const char *backend_act_id(const struct backend_act *b)
{
    return b->id;
}

bool backend_act_removed(const struct backend_act *b)
{
    return atomic_load_explicit(&b->removed, memory_order_relaxed);
}

static void queue_first_seen(struct monitor *m, struct backend_act *b)
{
    uv_mutex_lock(&m->lock);
    if (!m->closing) {
        list_insert_tail(&m->seen, &b->seen);
        backend_act_get(b);
        uv_async_send(&m->async);
    }
    uv_mutex_unlock(&m->lock);
}

static void maybe_first_seen(struct monitor *m, struct backend_act *b)
{
    /* A load first: the shared cache line is written once per period, not per request. */
    if (!atomic_load_explicit(&b->monitored, memory_order_relaxed) &&
        !atomic_exchange_explicit(&b->monitored, true, memory_order_acq_rel))
        queue_first_seen(m, b);
}

void monitor_touch(struct monitor *m, struct backend_act *b)
{
    if (!atomic_load_explicit(&b->recent, memory_order_relaxed))
        atomic_store_explicit(&b->recent, true, memory_order_relaxed);
    maybe_first_seen(m, b);
}

void monitor_conn_open(struct monitor *m, struct backend_act *b)
{
    atomic_fetch_add_explicit(&b->active, 1, memory_order_relaxed);
    maybe_first_seen(m, b);
}

void monitor_conn_close(struct monitor *m, struct backend_act *b)
{
    (void)m;
    atomic_fetch_sub_explicit(&b->active, 1, memory_order_relaxed);
}

/* ---- the control loop side ---- */

static void release_handle(struct monitor *m)
{
    if (--m->open_handles == 0) {
        uv_mutex_destroy(&m->lock);
        free(m);
    }
}

static void handle_closed(uv_handle_t *h)
{
    release_handle(h->data);
}

static void watch_closed(uv_handle_t *h)
{
    struct watch *w = h->data;
    struct monitor *m = w->b->m;

    backend_act_put(w->b); /* needs m: its handle count keeps it alive */
    free(w);
    release_handle(m);
}

static void forget(struct monitor *m, struct watch *w)
{
    w->b->watch = NULL;
    m->watched--;
    uv_timer_stop(&w->timer);
    uv_close((uv_handle_t *)&w->timer, watch_closed);
}

static void visit(uv_timer_t *t)
{
    struct watch *w = t->data;
    struct backend_act *b = w->b;
    struct monitor *m = b->m;

    if (atomic_load(&b->active) > 0 || atomic_exchange(&b->recent, false)) {
        m->send(m->send_arg, b->id);
        return;
    }
    atomic_store(&b->monitored, false);
    /* A request between the check and the store saw "monitored" and queued nothing. */
    if (atomic_load(&b->recent) && !atomic_exchange(&b->monitored, true)) {
        atomic_store(&b->recent, false);
        m->send(m->send_arg, b->id);
        return;
    }
    log_debug("backend %s idle, no more keepalives", b->id);
    forget(m, w);
}

static void seen_cb(uv_async_t *a)
{
    struct monitor *m = a->data;
    struct list_node q, *pos, *tmp;

    list_init(&q);
    uv_mutex_lock(&m->lock);
    if (!list_empty(&m->seen)) {
        /* Move the whole queue to q. */
        q.next = m->seen.next;
        q.prev = m->seen.prev;
        q.next->prev = &q;
        q.prev->next = &q;
        list_init(&m->seen);
    }
    uv_mutex_unlock(&m->lock);
    list_for_each_safe(pos, tmp, &q) {
        struct backend_act *b = list_entry(pos, struct backend_act, seen);
        list_remove(&b->seen);
        if (m->closing || b->watch) {
            if (!m->closing)
                m->send(m->send_arg, b->id);
            backend_act_put(b);
            continue;
        }
        struct watch *w = xcalloc(1, sizeof(*w));
        w->b = b; /* the queue's reference moves to the watch */
        b->watch = w;
        m->watched++;
        m->open_handles++;
        uv_timer_init(m->loop, &w->timer);
        w->timer.data = w;
        uv_timer_start(&w->timer, visit, m->period_ms, m->period_ms);
        m->send(m->send_arg, b->id);
    }
}

struct monitor *monitor_new(uv_loop_t *loop, unsigned period_ms, monitor_send_fn *send, void *arg)
{
    struct monitor *m = xcalloc(1, sizeof(*m));

    m->loop = loop;
    m->period_ms = period_ms ? period_ms : MONITOR_PERIOD_MS;
    m->send = send;
    m->send_arg = arg;
    uv_mutex_init(&m->lock);
    list_init(&m->seen);
    uv_async_init(loop, &m->async, seen_cb);
    m->async.data = m;
    m->open_handles = 1;
    return m;
}

void monitor_removed(struct monitor *m, const char *backend_id)
{
    struct backend_act *b;

    uv_mutex_lock(&m->lock);
    for (b = m->table[hash_id(backend_id)]; b; b = b->hnext)
        if (strcmp(b->id, backend_id) == 0)
            break;
    if (b)
        backend_act_get(b);
    uv_mutex_unlock(&m->lock);
    if (!b)
        return;
    atomic_store(&b->removed, true);
    if (b->watch)
        forget(m, b->watch);
    atomic_store(&b->monitored, false);
    backend_act_put(b);
}

unsigned monitor_watched(const struct monitor *m)
{
    return m->watched;
}

void monitor_free(struct monitor *m)
{
    struct list_node *pos, *tmp;

    if (!m)
        return;
    uv_mutex_lock(&m->lock);
    m->closing = true;
    uv_mutex_unlock(&m->lock);
    /* Drain what was queued; watches end with their timers. */
    seen_cb(&m->async);
    for (unsigned i = 0; i < INTERN_BUCKETS; i++)
        for (struct backend_act *b = m->table[i]; b; b = b->hnext)
            if (b->watch)
                forget(m, b->watch);
    list_for_each_safe(pos, tmp, &m->seen) {
        list_remove(pos);
        backend_act_put(list_entry(pos, struct backend_act, seen));
    }
    uv_close((uv_handle_t *)&m->async, handle_closed);
}
