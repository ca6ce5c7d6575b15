/* SPDX-License-Identifier: MIT */
/*
 * test_route_cache.c - unit tests of src/proxy/route_cache.c (the shared
 * token -> route LRU with its waiters, spec §16.2) and of the connection
 * monitor's KeepAlive schedule (src/proxy/monitor.c, §16.3) that routes
 * feed.
 */
#include <string.h>

#include <jansson.h>

#include "../../src/common/buf.h"
#include "../../src/common/list.h"
#include "../../src/proxy/monitor.h"
#include "../../src/proxy/route_cache.h"
#include "test.h"

struct wakes {
    unsigned mask;
    unsigned count;
};

static void wake(void *arg, unsigned worker)
{
    struct wakes *w = arg;

    w->mask |= 1u << worker;
    w->count++;
}

static struct route *make_route(const char *backend, const char *address, struct monitor *m)
{
    struct buf err = BUF_INIT;
    json_t *info = json_pack("{s:s, s:s, s:s, s:s, s:s, s:{s:i, s:s}, s:n}", "backend_id", backend, "address",
                             address, "secret_token", "sec", "cluster", "localhost:9090", "user", "alice",
                             "user_data", "b", 2, "a", "x", "subdomain");
    struct route *r = route_from_json(info, m, &err);

    json_decref(info);
    buf_release(&err);
    return r;
}

static unsigned take(struct route_cache *c, unsigned worker, struct route_waiter **out, unsigned max)
{
    struct list_node done, *pos, *tmp;
    unsigned n = 0;

    list_init(&done);
    route_cache_take_done(c, worker, &done);
    list_for_each_safe(pos, tmp, &done) {
        list_remove(pos);
        if (n < max)
            out[n] = list_entry(pos, struct route_waiter, node);
        n++;
    }
    return n;
}

TEST(route_cache_hits_misses_and_lru_eviction)
{
    struct wakes wk = {0};
    struct route_cache *c = route_cache_new(3, 1, wake, &wk);
    struct route_waiter w[5];
    struct route *r = make_route("b1", "127.0.0.1:1000", NULL), *got;
    bool ask;

    memset(w, 0, sizeof(w));
    /* Never connected: a miss is "none" and nothing is cached. */
    ASSERT_EQ(route_cache_lookup(c, "t0", 2, &w[0], &got, &ask), ROUTE_NONE);
    ASSERT_EQ(route_cache_size(c), 0);
    route_cache_set_link(c, ROUTE_LINK_UP);
    ASSERT_EQ(route_cache_lookup(c, "t1", 2, &w[0], &got, &ask), ROUTE_WAIT);
    ASSERT_TRUE(ask);
    route_cache_resolve(c, "t1", r);
    ASSERT_EQ(wk.mask, 1);
    struct route_waiter *done[4];
    ASSERT_EQ(take(c, 0, done, 4), 1);
    ASSERT_TRUE(done[0] == &w[0]);
    ASSERT_EQ(w[0].result, ROUTE_FOUND);
    ASSERT_TRUE(w[0].route == r);
    route_put(w[0].route);
    /* Now a hit, with a reference of its own. */
    ASSERT_EQ(route_cache_lookup(c, "t1", 2, &w[1], &got, &ask), ROUTE_FOUND);
    ASSERT_TRUE(got == r);
    route_put(got);
    /* Unsolicited answers are cached too; "none" is cached. */
    route_cache_resolve(c, "t2", NULL);
    route_cache_resolve(c, "t3", r);
    ASSERT_EQ(route_cache_lookup(c, "t2", 2, &w[1], &got, &ask), ROUTE_NONE);
    ASSERT_EQ(route_cache_size(c), 3);
    /* t1 was used least recently (t2 and t3 since): a fourth entry evicts it. */
    ASSERT_EQ(route_cache_lookup(c, "t3", 2, &w[1], &got, &ask), ROUTE_FOUND);
    route_put(got);
    route_cache_resolve(c, "t4", r);
    ASSERT_EQ(route_cache_size(c), 3);
    ASSERT_EQ(route_cache_lookup(c, "t1", 2, &w[2], &got, &ask), ROUTE_WAIT);
    ASSERT_TRUE(ask);
    /* A lookup in flight is never evicted: fill up with answers, t1 stays pending. */
    route_cache_resolve(c, "t5", r);
    route_cache_resolve(c, "t6", r);
    route_cache_resolve(c, "t7", r);
    ASSERT_EQ(route_cache_lookup(c, "t1", 2, &w[3], &got, &ask), ROUTE_WAIT);
    ASSERT_FALSE(ask);
    route_cache_cancel(c, &w[2]);
    route_cache_cancel(c, &w[3]);
    route_cache_cancel(c, &w[3]); /* harmless twice */
    route_put(r);
    route_cache_free(c);
}

TEST(route_cache_waiters_across_workers_share_one_lookup)
{
    struct wakes wk = {0};
    struct route_cache *c = route_cache_new(10, 3, wake, &wk);
    struct route_waiter a = {.worker = 0}, b = {.worker = 2}, x = {.worker = 2};
    struct route *r = make_route("b1", "127.0.0.1:1000", NULL), *got;
    struct route_waiter *done[4];
    bool ask;

    route_cache_set_link(c, ROUTE_LINK_UP);
    ASSERT_EQ(route_cache_lookup(c, "tok", 3, &a, &got, &ask), ROUTE_WAIT);
    ASSERT_TRUE(ask);
    ASSERT_EQ(route_cache_lookup(c, "tok", 3, &b, &got, &ask), ROUTE_WAIT);
    ASSERT_FALSE(ask); /* the second waits on the first lookup */
    ASSERT_EQ(route_cache_lookup(c, "tok", 3, &x, &got, &ask), ROUTE_WAIT);
    route_cache_cancel(c, &x); /* its connection went away */
    route_cache_resolve(c, "tok", r);
    route_put(r); /* the cache and the waiters hold their own references */
    ASSERT_EQ(wk.mask, 1u | 4u);
    ASSERT_EQ(take(c, 1, done, 4), 0);
    ASSERT_EQ(take(c, 2, done, 4), 1);
    ASSERT_TRUE(done[0] == &b && b.result == ROUTE_FOUND);
    ASSERT_EQ(take(c, 0, done, 4), 1);
    ASSERT_TRUE(done[0] == &a && a.result == ROUTE_FOUND && a.route == b.route);
    ASSERT_STR_EQ(a.route->backend_id, "b1");
    route_put(a.route);
    route_put(b.route);
    route_cache_free(c);
}

TEST(route_cache_link_down_answers_lookups_in_flight)
{
    struct wakes wk = {0};
    struct route_cache *c = route_cache_new(10, 1, wake, &wk);
    struct route_waiter a = {0}, b = {0};
    struct route *r = make_route("b1", "127.0.0.1:1000", NULL), *got;
    struct route_waiter *done[4];
    bool ask;

    route_cache_set_link(c, ROUTE_LINK_UP);
    route_cache_resolve(c, "cached", r);
    ASSERT_EQ(route_cache_lookup(c, "new", 3, &a, &got, &ask), ROUTE_WAIT);
    route_cache_set_link(c, ROUTE_LINK_DOWN);
    ASSERT_EQ(take(c, 0, done, 4), 1);
    ASSERT_EQ(a.result, ROUTE_UNAVAILABLE);
    ASSERT_NULL(a.route);
    /* Down: misses are unavailable (§21), hits still answered from the cache. */
    ASSERT_EQ(route_cache_lookup(c, "new", 3, &b, &got, &ask), ROUTE_UNAVAILABLE);
    ASSERT_EQ(route_cache_lookup(c, "cached", 6, &b, &got, &ask), ROUTE_FOUND);
    route_put(got);
    route_cache_set_link(c, ROUTE_LINK_UP);
    ASSERT_EQ(route_cache_lookup(c, "new", 3, &b, &got, &ask), ROUTE_WAIT);
    ASSERT_TRUE(ask);
    route_cache_cancel(c, &b);
    route_put(r);
    route_cache_free(c);
}

TEST(route_cache_backend_removed_turns_routes_to_none)
{
    struct wakes wk = {0};
    struct route_cache *c = route_cache_new(10, 1, wake, &wk);
    struct route *r1 = make_route("b1", "127.0.0.1:1000", NULL), *r2 = make_route("b2", "127.0.0.1:2000", NULL);
    struct route *held, *got;
    struct route_waiter w = {0};
    bool ask;

    route_cache_set_link(c, ROUTE_LINK_UP);
    route_cache_resolve(c, "dyn", r1);
    route_cache_resolve(c, "s.static", r1);
    route_cache_resolve(c, "other", r2);
    ASSERT_EQ(route_cache_lookup(c, "dyn", 3, &w, &held, &ask), ROUTE_FOUND);
    ASSERT_FALSE(route_is_removed(held));
    route_cache_remove_backend(c, "b1");
    /* A connection holding the route learns it is gone without asking the cache. */
    ASSERT_TRUE(route_is_removed(held));
    route_put(held);
    ASSERT_EQ(route_cache_lookup(c, "dyn", 3, &w, &got, &ask), ROUTE_NONE);
    ASSERT_EQ(route_cache_lookup(c, "s.static", 8, &w, &got, &ask), ROUTE_NONE);
    ASSERT_EQ(route_cache_lookup(c, "other", 5, &w, &got, &ask), ROUTE_FOUND);
    route_put(got);
    route_put(r1);
    route_put(r2);
    route_cache_free(c);
}

TEST(route_from_json_renders_the_verified_headers)
{
    struct buf err = BUF_INIT;
    json_t *info;
    struct route *r;

    r = make_route("b1", "[::1]:8080", NULL);
    ASSERT_NOT_NULL(r);
    ASSERT_STR_EQ(r->verified_pre, "x-verified-username: alice\r\nx-verified-user-data: {\"a\":\"x\",\"b\":2}\r\n");
    ASSERT_STR_EQ(r->verified_post, "x-verified-backend: b1\r\nx-verified-secret: sec\r\n");
    ASSERT_NULL(r->subdomain);
    ASSERT_STR_EQ(r->address, "[::1]:8080");
    route_put(r);
    /* Static token routes: no user, no user data, empty secret; a bad user is left out. */
    info = json_pack("{s:s, s:s, s:s, s:s, s:s, s:n, s:s}", "backend_id", "b2", "address", "127.0.0.1:1",
                     "secret_token", "", "cluster", "c", "user", "bad\nname", "user_data", "subdomain", "sub");
    r = route_from_json(info, NULL, &err);
    json_decref(info);
    ASSERT_NOT_NULL(r);
    ASSERT_STR_EQ(r->verified_pre, "");
    ASSERT_STR_EQ(r->verified_post, "x-verified-backend: b2\r\nx-verified-secret: \r\n");
    ASSERT_STR_EQ(r->subdomain, "sub");
    route_put(r);
    /* Unusable answers. */
    info = json_pack("{s:s, s:s, s:s}", "backend_id", "b3", "address", "not an address", "cluster", "c");
    ASSERT_NULL(route_from_json(info, NULL, &err));
    ASSERT_CONTAINS(buf_cstr(&err), "b3");
    json_decref(info);
    info = json_pack("{s:s}", "backend_id", "b4");
    ASSERT_NULL(route_from_json(info, NULL, &err));
    json_decref(info);
    buf_release(&err);
}

struct sent {
    char ids[32][16];
    unsigned n;
};

static void record_send(void *arg, const char *backend_id)
{
    struct sent *s = arg;

    if (s->n < 32)
        snprintf(s->ids[s->n], sizeof(s->ids[0]), "%s", backend_id);
    s->n++;
}

static bool sent_one(void *arg)
{
    return ((struct sent *)arg)->n >= 1;
}

TEST(monitor_keepalives_follow_activity)
{
    uv_loop_t loop;
    struct sent s = {0};
    struct monitor *m;
    struct backend_act *a, *b, *again;

    uv_loop_init(&loop);
    m = monitor_new(&loop, 100, record_send, &s);
    a = monitor_intern(m, "busy");
    b = monitor_intern(m, "ws");
    again = monitor_intern(m, "busy");
    ASSERT_TRUE(a == again); /* one record per backend, whatever the token */
    backend_act_put(again);
    /* First activity: a KeepAlive at once. */
    monitor_touch(m, a);
    monitor_touch(m, a);
    ASSERT_TRUE(test_run_until(&loop, 1000, sent_one, &s));
    ASSERT_EQ(s.n, 1);
    ASSERT_STR_EQ(s.ids[0], "busy");
    ASSERT_EQ(monitor_watched(m), 1);
    /* An open upgraded connection: a KeepAlive every period, with no other traffic. */
    monitor_conn_open(m, b);
    test_run_for(&loop, 450);
    unsigned ws = 0, busy = 0;
    for (unsigned i = 0; i < s.n && i < 32; i++)
        if (strcmp(s.ids[i], "ws") == 0)
            ws++;
        else
            busy++;
    ASSERT_TRUE(ws >= 4);
    ASSERT_TRUE(busy <= 2); /* touched once: one more KeepAlive at most, then forgotten */
    ASSERT_EQ(monitor_watched(m), 1);
    /* Closed: forgotten after a quiet period; BackendRemoved forgets at once. */
    monitor_conn_close(m, b);
    test_run_for(&loop, 300);
    ASSERT_EQ(monitor_watched(m), 0);
    monitor_touch(m, a);
    test_run_for(&loop, 20);
    ASSERT_EQ(monitor_watched(m), 1);
    monitor_removed(m, "busy");
    ASSERT_EQ(monitor_watched(m), 0);
    ASSERT_TRUE(backend_act_removed(a));
    backend_act_put(a);
    backend_act_put(b);
    monitor_free(m);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_EQ(uv_loop_close(&loop), 0);
}
