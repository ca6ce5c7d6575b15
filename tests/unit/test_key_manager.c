/* SPDX-License-Identifier: MIT */
/*
 * test_key_manager.c - key lease loops (spec §12): renew when due while
 * connected, soft then hard terminate when renewals stop succeeding, and
 * nothing when they succeed.
 */
#include "../../src/common/clock.h"
#include "../../src/drone/key_manager.h"
#include "test.h"

struct calls {
    int renews, soft, hard;
    int64_t soft_at, hard_at;
};

static void renew(void *arg, const char *id, int64_t local)
{
    struct calls *c = arg;

    (void)id;
    (void)local;
    c->renews++;
}

static void expire(void *arg, const char *id, enum termination_kind kind)
{
    struct calls *c = arg;

    (void)id;
    if (kind == TERMINATION_SOFT) {
        c->soft++;
        c->soft_at = clock_epoch_ms();
    } else {
        c->hard++;
        c->hard_at = clock_epoch_ms();
    }
}

static struct key_deadlines in(int64_t renew_ms, int64_t soft_ms, int64_t hard_ms)
{
    int64_t now = clock_epoch_ms();

    return (struct key_deadlines){now + renew_ms, now + soft_ms, now + hard_ms};
}

TEST(key_lease_expires_without_renewals)
{
    uv_loop_t loop;
    struct calls c = {0};
    struct key_manager_hooks h = {.renew = renew, .expire = expire, .arg = &c};
    struct key_manager *km;

    uv_loop_init(&loop);
    km = key_manager_new(&loop, &h);
    key_manager_set_connected(km, true);
    struct key_deadlines d = in(50, 150, 250);
    ASSERT_TRUE(key_manager_register(km, "b1", &d));
    ASSERT_FALSE(key_manager_register(km, "b1", &d)); /* a resent spawn */
    test_run_for(&loop, 400);
    ASSERT_EQ(c.renews, 1);
    ASSERT_EQ(c.soft, 1);
    ASSERT_EQ(c.hard, 1);
    /* Deadlines are kept in boot time; read back in the wall clock they may differ by a tick. */
    ASSERT_TRUE(c.soft_at >= d.soft_terminate_at - 1 && c.hard_at >= d.hard_terminate_at - 1);
    key_manager_free(km);
    uv_run(&loop, UV_RUN_NOWAIT);
    ASSERT_OK(uv_loop_close(&loop));
}

TEST(key_lease_renewed_in_time_and_offline)
{
    uv_loop_t loop;
    struct calls c = {0};
    struct key_manager_hooks h = {.renew = renew, .expire = expire, .arg = &c};
    struct key_manager *km;

    uv_loop_init(&loop);
    km = key_manager_new(&loop, &h);
    key_manager_set_connected(km, true);
    struct key_deadlines d = in(50, 150, 250);
    key_manager_register(km, "b1", &d);
    for (int i = 0; i < 4; i++) {
        test_run_for(&loop, 60);
        struct key_deadlines next = in(50, 150, 250); /* each renewal answered */
        key_manager_update(km, "b1", &next);
    }
    ASSERT_TRUE(c.renews >= 3);
    ASSERT_EQ(c.soft + c.hard, 0);
    /* Disconnected: no renewals are sent, and the lease runs out. */
    key_manager_set_connected(km, false);
    int before = c.renews;
    test_run_for(&loop, 300);
    ASSERT_EQ(c.renews, before);
    ASSERT_EQ(c.hard, 1);
    key_manager_unregister(km, "b1");
    ASSERT_FALSE(key_manager_has(km, "b1"));
    key_manager_free(km);
    uv_run(&loop, UV_RUN_NOWAIT);
    ASSERT_OK(uv_loop_close(&loop));
}
