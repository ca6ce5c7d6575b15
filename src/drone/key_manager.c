/* SPDX-License-Identifier: MIT */
/*
 * key_manager.c - key lease loops, one timer per backend (see key_manager.h).
 * Each wake-up does the first of these that is due (spec §12): hard
 * terminate and stop; soft terminate and sleep until the hard deadline;
 * send a renewal and sleep until the soft deadline; or sleep until renew_at.
 */
#include <stdlib.h>
#include <string.h>

#include "../common/clock.h"
#include "../common/list.h"
#include "../common/log.h"
#include "../common/xalloc.h"
#include "key_manager.h"

struct lease {
    struct list_node node;
    struct key_manager *km;
    char *id;
    int64_t renew_at, soft_at, hard_at; /* boot-time ms */
    int64_t asked_epoch, asked_boot;    /* the last renewal request: its local_time, and when */
    uv_timer_t timer;
    bool renew_sent, soft_done, hard_done; /* for the current deadlines */
};

struct key_manager {
    uv_loop_t *loop;
    struct key_manager_hooks hooks;
    struct list_node leases;
    bool connected;
    uv_timer_t watch; /* every second: leases whose time came while loop timers stood still */
};

#define WATCH_MS 1000

static struct lease *find(const struct key_manager *km, const char *id)
{
    struct list_node *pos, *tmp;

    list_for_each_safe(pos, tmp, (struct list_node *)&km->leases) {
        struct lease *l = list_entry(pos, struct lease, node);
        if (strcmp(l->id, id) == 0)
            return l;
    }
    return NULL;
}

static void tick(uv_timer_t *t);

static void sleep_until(struct lease *l, int64_t when)
{
    int64_t now = clock_boot_ms();

    uv_timer_start(&l->timer, tick, when > now ? (uint64_t)(when - now) : 0, 0);
}

static void tick(uv_timer_t *t)
{
    struct lease *l = t->data;
    struct key_manager *km = l->km;
    int64_t now = clock_boot_ms();
    char *id = l->id;

    if (now >= l->hard_at) {
        if (!l->hard_done) {
            l->hard_done = true;
            log_warn("backend %s: key lease lost, hard-terminating", id);
            km->hooks.expire(km->hooks.arg, id, TERMINATION_HARD);
        }
        return;
    }
    if (now >= l->soft_at) {
        if (!l->soft_done) {
            l->soft_done = true;
            log_warn("backend %s: key lease not renewed, soft-terminating", id);
            km->hooks.expire(km->hooks.arg, id, TERMINATION_SOFT);
            if (find(km, id) != l)
                return; /* the hook let go of the lease */
        }
        sleep_until(l, l->hard_at);
        return;
    }
    if (now >= l->renew_at) {
        /* Once per set of deadlines (timers may wake a little early, before the next deadline). */
        if (km->connected && !l->renew_sent) {
            l->renew_sent = true;
            l->asked_epoch = clock_epoch_ms();
            l->asked_boot = clock_boot_ms();
            km->hooks.renew(km->hooks.arg, id, l->asked_epoch);
        }
        if (find(km, id) != l)
            return;
        sleep_until(l, l->soft_at);
        return;
    }
    sleep_until(l, l->renew_at);
}

/*
 * Takes deadlines d (the drone's wall clock) into boot time. Those of a
 * renewal count from when its request was sent (they are its local_time
 * plus offsets); the earlier of that and a reading now is kept, so a clock
 * step in between can only shorten the lease.
 */
static void set_deadlines(struct lease *l, const struct key_deadlines *d, bool renewal)
{
    int64_t epoch = clock_epoch_ms(), boot = clock_boot_ms();
    int64_t shift = boot - epoch;

    if (renewal && l->asked_boot) {
        int64_t sent = l->asked_boot - l->asked_epoch;
        if (sent < shift)
            shift = sent;
    }
    l->renew_at = d->renew_at + shift;
    l->soft_at = d->soft_terminate_at + shift;
    l->hard_at = d->hard_terminate_at + shift;
    l->renew_sent = l->soft_done = l->hard_done = false;
    if (l->km->hooks.deadlines)
        l->km->hooks.deadlines(l->km->hooks.arg, l->id, l->soft_at, l->hard_at);
}

/*
 * Loop timers run on CLOCK_MONOTONIC, which stands still while the host is
 * suspended: a lease due during a suspend would only be acted on that long
 * after the resume. Once a second, every lease whose renewal time (in boot
 * time) has come gets its turn now; tick() does whatever is due, once.
 */
static void watch_cb(uv_timer_t *t)
{
    struct key_manager *km = t->data;
    struct list_node *pos, *tmp;
    int64_t now = clock_boot_ms();

    list_for_each_safe(pos, tmp, &km->leases) {
        struct lease *l = list_entry(pos, struct lease, node);
        if (now >= l->renew_at && !l->hard_done)
            tick(&l->timer);
    }
}

struct key_manager *key_manager_new(uv_loop_t *loop, const struct key_manager_hooks *hooks)
{
    struct key_manager *km = xcalloc(1, sizeof(*km));

    km->loop = loop;
    km->hooks = *hooks;
    list_init(&km->leases);
    uv_timer_init(loop, &km->watch);
    km->watch.data = km;
    uv_timer_start(&km->watch, watch_cb, WATCH_MS, WATCH_MS);
    return km;
}

static void lease_closed(uv_handle_t *h)
{
    struct lease *l = h->data;

    free(l->id);
    free(l);
}

static void lease_free(struct lease *l)
{
    list_remove(&l->node);
    uv_timer_stop(&l->timer);
    uv_close((uv_handle_t *)&l->timer, lease_closed);
}

static void watch_closed(uv_handle_t *h)
{
    free(h->data);
}

void key_manager_free(struct key_manager *km)
{
    struct list_node *pos, *tmp;

    if (!km)
        return;
    list_for_each_safe(pos, tmp, &km->leases)
        lease_free(list_entry(pos, struct lease, node));
    uv_close((uv_handle_t *)&km->watch, watch_closed);
}

bool key_manager_register(struct key_manager *km, const char *backend_id, const struct key_deadlines *d)
{
    struct lease *l;

    if (find(km, backend_id))
        return false;
    l = xcalloc(1, sizeof(*l));
    l->km = km;
    l->id = xstrdup(backend_id);
    uv_timer_init(km->loop, &l->timer);
    l->timer.data = l;
    list_insert_tail(&km->leases, &l->node);
    set_deadlines(l, d, false);
    if (l->soft_at <= clock_boot_ms())
        log_warn("backend %s: its key's soft deadline has already passed", backend_id);
    sleep_until(l, l->renew_at);
    return true;
}

void key_manager_update(struct key_manager *km, const char *backend_id, const struct key_deadlines *d)
{
    struct lease *l = find(km, backend_id);

    if (!l)
        return;
    set_deadlines(l, d, true);
    sleep_until(l, l->renew_at);
}

void key_manager_unregister(struct key_manager *km, const char *backend_id)
{
    struct lease *l = find(km, backend_id);

    if (l)
        lease_free(l);
}

bool key_manager_has(const struct key_manager *km, const char *backend_id)
{
    return find(km, backend_id) != NULL;
}

bool key_manager_deadlines(const struct key_manager *km, const char *backend_id, int64_t *soft_at, int64_t *hard_at)
{
    const struct lease *l = find(km, backend_id);

    if (!l)
        return false;
    *soft_at = l->soft_at;
    *hard_at = l->hard_at;
    return true;
}

void key_manager_set_connected(struct key_manager *km, bool connected)
{
    struct list_node *pos, *tmp;

    km->connected = connected;
    if (!connected)
        return;
    /* A new connection: every loop starts over, renewing at once where due (a renewal sent on
     * the old connection may never be answered). */
    list_for_each_safe(pos, tmp, &km->leases) {
        struct lease *l = list_entry(pos, struct lease, node);
        l->renew_sent = false;
        if (!l->hard_done)
            sleep_until(l, 0);
    }
}
