/* SPDX-License-Identifier: MIT */
/*
 * test_runtime_mock.c - the mock runtime through the runtime interface:
 * the shared port and its header routing, every hook, terminate during
 * each step, exits during terminate, and cancellation.
 */
#include <errno.h>

#include "runtime_harness.h"

static json_t *hooks(const char *json)
{
    json_t *h = json_loads(json, 0, NULL);

    ASSERT_NOT_NULL(h);
    return json_pack("{s:s, s:o}", "image", "mock", "mock", h);
}

TEST(mock_spawn_ready_http_and_soft_terminate)
{
    struct harness h;
    struct result t = {0};
    json_t *x = hooks("{}");
    int status;
    char *body;

    harness_open(&h, "mock", NULL);
    uint16_t p1 = spawn_ok(&h, "b1", x);
    uint16_t p2 = spawn_ok(&h, "b2", x);
    ASSERT_EQ(p1, p2); /* one port for all */
    ASSERT_OK(ready_status(&h, "b1", p1, 3000, NULL));

    ASSERT_OK(test_http_get(&h.loop, p1, "/x?y=1", "x-verified-backend: b2\r\n", &status, &body));
    ASSERT_EQ(status, 200);
    ASSERT_CONTAINS(body, "\"backend_id\":\"b2\"");
    ASSERT_CONTAINS(body, "\"path\":\"/x?y=1\"");
    free(body);
    ASSERT_OK(test_http_get(&h.loop, p1, "/", "x-verified-backend: nope\r\n", &status, &body));
    ASSERT_EQ(status, 404);
    free(body);

    runtime_terminate(h.rt, "b1", false, on_result, &t);
    wait_result(&h, &t, 2000);
    ASSERT_OK(t.status);
    ASSERT_TRUE(t.was_running);
    wait_exits(&h, 1, 2000);
    ASSERT_EQ(exit_code_of(&h, "b1"), 0);
    /* Gone: the shared port no longer answers for it, and terminate says so. */
    ASSERT_OK(test_http_get(&h.loop, p1, "/", "x-verified-backend: b1\r\n", &status, &body));
    ASSERT_EQ(status, 404);
    free(body);
    memset(&t, 0, sizeof(t));
    runtime_terminate(h.rt, "b1", true, on_result, &t);
    wait_result(&h, &t, 2000);
    ASSERT_FALSE(t.was_running);
    json_decref(x);
    harness_close(&h); /* b2 still running: close must clean it up */
}

TEST(mock_hard_terminate_and_ignored_soft)
{
    struct harness h;
    struct runtime_config cfg = {.grace_ms = 200};
    struct result t = {0};
    json_t *x = hooks("{\"ignore_soft_terminate\":true}");

    harness_open(&h, "mock", &cfg);
    spawn_ok(&h, "b1", x);
    spawn_ok(&h, "b2", x);
    runtime_terminate(h.rt, "b1", true, on_result, &t);
    wait_exits(&h, 1, 2000);
    ASSERT_EQ(exit_code_of(&h, "b1"), 137);
    uint64_t t0 = uv_now(&h.loop);
    runtime_terminate(h.rt, "b2", false, NULL, NULL);
    wait_exits(&h, 2, 3000);
    ASSERT_EQ(exit_code_of(&h, "b2"), 137);
    ASSERT_TRUE(uv_now(&h.loop) - t0 >= 190); /* only after the grace period */
    json_decref(x);
    harness_close(&h);
}

TEST(mock_hooks_fail_each_step)
{
    struct harness h;
    struct result r = {0};
    json_t *x = hooks("{\"prepare_error\":\"no such image\",\"spawn_error\":\"no room\"}");
    struct spawn_spec spec = {.backend_id = "b1", .executable = x};

    harness_open(&h, "mock", NULL);
    runtime_prepare(h.rt, x, on_result, &r);
    wait_result(&h, &r, 2000);
    ASSERT_EQ(r.status, -EIO);
    ASSERT_STR_EQ(r.error, "no such image");
    memset(&r, 0, sizeof(r));
    runtime_spawn(h.rt, &spec, on_result, &r);
    wait_result(&h, &r, 2000);
    ASSERT_STR_EQ(r.error, "no room");
    json_decref(x);

    x = hooks("{\"ready_error\":\"crashed\"}");
    uint16_t port = spawn_ok(&h, "b2", x);
    ASSERT_EQ(ready_status(&h, "b2", port, 2000, &r), -EIO);
    ASSERT_STR_EQ(r.error, "crashed");
    json_decref(x);
    harness_close(&h);
    ASSERT_EQ(h.nexits, 0); /* a failed spawn never reports an exit */
}

TEST(mock_never_ready_times_out)
{
    struct harness h;
    struct runtime_config cfg = {.ready_timeout_ms = 300};
    json_t *x = hooks("{\"never_ready\":true}");

    harness_open(&h, "mock", &cfg);
    uint16_t port = spawn_ok(&h, "b1", x);
    ASSERT_EQ(ready_status(&h, "b1", port, 3000, NULL), -ETIMEDOUT);
    json_decref(x);
    harness_close(&h);
}

TEST(mock_exits_on_its_own)
{
    struct harness h;
    json_t *x = hooks("{\"exit_after_ms\":50,\"exit_code\":3,\"ready_delay_ms\":5000}");
    struct result r = {0};

    harness_open(&h, "mock", NULL);
    uint16_t port = spawn_ok(&h, "b1", x);
    /* It exits while we wait for it: the wait ends at once, not at the delay. */
    ASSERT_NE(ready_status(&h, "b1", port, 2000, &r), 0);
    ASSERT_CONTAINS(r.error, "exited");
    wait_exits(&h, 1, 2000);
    ASSERT_EQ(exit_code_of(&h, "b1"), 3);
    json_decref(x);
    harness_close(&h);
}

TEST(mock_terminate_during_prepare_spawn_and_wait)
{
    struct harness h;
    struct result prep = {0}, sp = {0}, t = {0}, w = {0};
    json_t *x = hooks("{\"prepare_delay_ms\":300,\"spawn_delay_ms\":300,\"ready_delay_ms\":300}");
    struct spawn_spec spec = {.backend_id = "b1", .executable = x};

    harness_open(&h, "mock", NULL);
    /* During prepare: there is no backend yet; the drone cancels the prepare. */
    struct runtime_op *op = runtime_prepare(h.rt, x, on_result, &prep);
    runtime_terminate(h.rt, "b1", false, on_result, &t);
    runtime_op_cancel(op);
    wait_result(&h, &t, 2000);
    ASSERT_FALSE(t.was_running);
    test_run_for(&h.loop, 400);
    ASSERT_FALSE(prep.done); /* cancelled: its callback never runs */

    /* During spawn: the start is aborted and nothing runs. */
    memset(&t, 0, sizeof(t));
    runtime_spawn(h.rt, &spec, on_result, &sp);
    test_run_for(&h.loop, 50);
    runtime_terminate(h.rt, "b1", false, on_result, &t);
    wait_result(&h, &t, 2000);
    wait_result(&h, &sp, 2000);
    ASSERT_FALSE(t.was_running);
    ASSERT_EQ(sp.status, -ECANCELED);
    ASSERT_EQ(h.nexits, 0);

    /* During wait: the wait ends with the exit. */
    memset(&t, 0, sizeof(t));
    uint16_t port = spawn_ok(&h, "b2", x);
    char addr[32];
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
    runtime_wait_ready(h.rt, "b2", addr, on_result, &w);
    runtime_terminate(h.rt, "b2", true, on_result, &t);
    wait_result(&h, &w, 2000);
    ASSERT_NE(w.status, 0);
    wait_exits(&h, 1, 2000);
    ASSERT_EQ(exit_code_of(&h, "b2"), 137);
    json_decref(x);
    harness_close(&h);
}

TEST(mock_exit_during_terminate)
{
    struct harness h;
    struct result t1 = {0}, t2 = {0};
    json_t *x = hooks("{\"terminate_delay_ms\":200}");

    harness_open(&h, "mock", NULL);
    spawn_ok(&h, "b1", x);
    runtime_terminate(h.rt, "b1", false, on_result, &t1);
    wait_result(&h, &t1, 2000);
    ASSERT_TRUE(t1.was_running);
    /* A second (hard) terminate while the soft one is under way, then the exit. */
    runtime_terminate(h.rt, "b1", true, on_result, &t2);
    wait_exits(&h, 1, 2000);
    wait_result(&h, &t2, 2000);
    ASSERT_EQ(h.nexits, 1); /* exactly once */
    ASSERT_EQ(exit_code_of(&h, "b1"), 137);
    test_run_for(&h.loop, 300);
    ASSERT_EQ(h.nexits, 1);
    json_decref(x);
    harness_close(&h);
}

TEST(mock_cancel_wait_and_close_with_ops_in_flight)
{
    struct harness h;
    struct result w = {0}, p = {0};
    json_t *x = hooks("{\"ready_delay_ms\":5000,\"prepare_delay_ms\":5000}");

    harness_open(&h, "mock", NULL);
    uint16_t port = spawn_ok(&h, "b1", x);
    char addr[32];
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
    struct runtime_op *op = runtime_wait_ready(h.rt, "b1", addr, on_result, &w);
    test_run_for(&h.loop, 20);
    runtime_op_cancel(op);
    test_run_for(&h.loop, 50);
    ASSERT_FALSE(w.done);
    runtime_prepare(h.rt, x, on_result, &p);
    json_decref(x);
    harness_close(&h); /* callbacks of pending ops do not run after close */
    ASSERT_FALSE(p.done);
}

TEST(mock_duplicate_spawn_and_bad_ids)
{
    struct harness h;
    struct result r = {0};
    json_t *x = hooks("{}");
    struct spawn_spec dup = {.backend_id = "b1", .executable = x};
    struct spawn_spec bad = {.backend_id = "../etc", .executable = x};

    harness_open(&h, "mock", NULL);
    spawn_ok(&h, "b1", x);
    runtime_spawn(h.rt, &dup, on_result, &r);
    wait_result(&h, &r, 2000);
    ASSERT_EQ(r.status, -EEXIST);
    memset(&r, 0, sizeof(r));
    runtime_spawn(h.rt, &bad, on_result, &r);
    wait_result(&h, &r, 2000);
    ASSERT_EQ(r.status, -EINVAL);
    json_decref(x);
    harness_close(&h);
}
