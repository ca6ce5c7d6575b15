/* SPDX-License-Identifier: MIT */
/*
 * events.c - in-process publish/subscribe (see events.h). Subscriptions
 * removed during a publish are only marked, and freed when the outermost
 * publish finishes, so iteration never touches freed memory.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "../common/list.h"
#include "../common/xalloc.h"
#include "events.h"

struct event_sub {
    struct list_node node;
    struct events *e;
    enum event_kind kind;
    char *key; /* owned; NULL for all */
    event_fn *fn;
    void *arg;
    bool dead;
};

struct events {
    struct list_node subs;
    int depth; /* nested publishes in progress */
    event_fn *forward;
    void *forward_arg;
};

struct events *events_new(void)
{
    struct events *e = xcalloc(1, sizeof(*e));

    list_init(&e->subs);
    return e;
}

static void sub_free(struct event_sub *s)
{
    list_remove(&s->node);
    free(s->key);
    free(s);
}

void events_free(struct events *e)
{
    struct list_node *pos, *tmp;

    if (!e)
        return;
    list_for_each_safe(pos, tmp, &e->subs)
        sub_free(list_entry(pos, struct event_sub, node));
    free(e);
}

struct event_sub *events_subscribe(struct events *e, enum event_kind kind, const char *key, event_fn *fn, void *arg)
{
    struct event_sub *s = xcalloc(1, sizeof(*s));

    s->e = e;
    s->kind = kind;
    s->key = key ? xstrdup(key) : NULL;
    s->fn = fn;
    s->arg = arg;
    list_insert_tail(&e->subs, &s->node);
    return s;
}

void events_unsubscribe(struct event_sub *s)
{
    if (!s)
        return;
    if (s->e->depth > 0)
        s->dead = true;
    else
        sub_free(s);
}

void events_set_forwarder(struct events *e, event_fn *fn, void *arg)
{
    e->forward = fn;
    e->forward_arg = arg;
}

void events_publish(struct events *e, enum event_kind kind, const char *key, const json_t *payload)
{
    events_deliver(e, kind, key, payload);
    if (e->forward)
        e->forward(e->forward_arg, kind, key, payload);
}

void events_deliver(struct events *e, enum event_kind kind, const char *key, const json_t *payload)
{
    struct list_node *pos, *tmp;

    e->depth++;
    for (pos = e->subs.next; pos != &e->subs; pos = pos->next) {
        struct event_sub *s = list_entry(pos, struct event_sub, node);
        if (s->dead || s->kind != kind || (s->key && (!key || strcmp(s->key, key) != 0)))
            continue;
        s->fn(s->arg, kind, key, payload);
    }
    if (--e->depth == 0) {
        list_for_each_safe(pos, tmp, &e->subs) {
            struct event_sub *s = list_entry(pos, struct event_sub, node);
            if (s->dead)
                sub_free(s);
        }
    }
}
