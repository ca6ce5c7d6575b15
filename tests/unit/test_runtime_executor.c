/* SPDX-License-Identifier: MIT */
/*
 * test_runtime_executor.c - the executor client runtime against our own
 * executor server (serving the mock runtime) on one loop: every operation
 * through the socket, queueing before the server exists, requests in
 * flight when the server goes away, reconciliation after a restart, and a
 * server that answers nonsense.
 */
#include <errno.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "../../src/common/xalloc.h"
#include "../../src/drone/executor_server.h"
#include "runtime_harness.h"

struct server_side {
    struct runtime *rt;
    struct executor_server *srv;
    bool rt_closed;
};

static void server_start(uv_loop_t *loop, const char *path, struct server_side *s, unsigned ready_timeout_ms)
{
    struct runtime_config cfg = {.loop = loop, .ready_timeout_ms = ready_timeout_ms};
    struct buf err = BUF_INIT;

    memset(s, 0, sizeof(*s));
    s->srv = executor_server_new(loop);
    cfg.on_exit = executor_server_on_exit;
    cfg.on_metrics = executor_server_on_metrics;
    cfg.cb_arg = s->srv;
    if (runtime_open(&s->rt, runtime_find("mock"), &cfg, &err) != 0 ||
        executor_server_listen(s->srv, path, s->rt, &err) != 0)
        test_fail(__FILE__, __LINE__, "server: %s", buf_cstr(&err));
    buf_release(&err);
}

static void rt_closed(void *arg)
{
    ((struct server_side *)arg)->rt_closed = true;
}

static bool server_gone(void *arg)
{
    return ((struct server_side *)arg)->rt_closed;
}

static void server_stop(uv_loop_t *loop, struct server_side *s)
{
    executor_server_close(s->srv);
    runtime_close(s->rt, rt_closed, s);
    ASSERT_TRUE(test_run_until(loop, 3000, server_gone, s));
}

static json_t *hooks(const char *json)
{
    return json_pack("{s:s, s:o}", "image", "mock", "mock", json_loads(json, 0, NULL));
}

static char *sock_path(struct harness *h)
{
    return xasprintf("%s/exec.sock", h->dir);
}

static void open_client(struct harness *h, const char *path)
{
    /* The harness makes the loop and directory; reopen it with the socket set. */
    struct runtime_config cfg = {.executor_socket = path};
    struct buf err = BUF_INIT;

    cfg.loop = &h->loop;
    cfg.on_exit = h->rt->on_exit;
    cfg.on_metrics = h->rt->on_metrics;
    cfg.cb_arg = h;
    runtime_close(h->rt, NULL, NULL);
    uv_run(&h->loop, UV_RUN_NOWAIT);
    if (runtime_open(&h->rt, runtime_find("executor"), &cfg, &err) != 0)
        test_fail(__FILE__, __LINE__, "%s", buf_cstr(&err));
    buf_release(&err);
}

static void client_harness(struct harness *h, char **path)
{
    harness_open(h, "mock", NULL); /* any runtime: replaced below, on the same loop */
    *path = sock_path(h);
    open_client(h, *path);
}

TEST(executor_client_full_cycle)
{
    struct harness h;
    struct server_side s;
    struct result r = {0}, t = {0};
    char *path;
    json_t *x = hooks("{}");
    json_t *bad = hooks("{\"prepare_error\":\"no such image\"}");
    json_t *never = hooks("{\"never_ready\":true}");
    int status;
    char *body;

    client_harness(&h, &path);
    server_start(&h.loop, path, &s, 300);
    runtime_prepare(h.rt, bad, on_result, &r);
    wait_result(&h, &r, 3000);
    ASSERT_NE(r.status, 0);
    ASSERT_STR_EQ(r.error, "no such image");

    uint16_t port = spawn_ok(&h, "b1", x);
    ASSERT_OK(ready_status(&h, "b1", port, 3000, NULL));
    ASSERT_OK(test_http_get(&h.loop, port, "/", "x-verified-backend: b1\r\n", &status, &body));
    ASSERT_EQ(status, 200);
    ASSERT_CONTAINS(body, "\"backend_id\":\"b1\"");
    free(body);
    runtime_terminate(h.rt, "b1", false, on_result, &t);
    wait_exits(&h, 1, 3000);
    wait_result(&h, &t, 3000);
    ASSERT_TRUE(t.was_running);
    ASSERT_EQ(exit_code_of(&h, "b1"), 0);

    port = spawn_ok(&h, "b2", never);
    ASSERT_EQ(ready_status(&h, "b2", port, 3000, NULL), -ETIMEDOUT); /* StartupTimeout on the wire */
    memset(&t, 0, sizeof(t));
    runtime_terminate(h.rt, "b2", true, on_result, &t);
    wait_exits(&h, 2, 3000);
    ASSERT_EQ(exit_code_of(&h, "b2"), 137);

    server_stop(&h.loop, &s);
    json_decref(x);
    json_decref(bad);
    json_decref(never);
    harness_close(&h);
    free(path);
}

TEST(executor_client_queues_until_the_server_appears)
{
    struct harness h;
    struct server_side s;
    struct result r = {0};
    char *path;
    json_t *x = hooks("{}");
    struct spawn_spec spec = {.backend_id = "b1", .executable = x};

    client_harness(&h, &path);
    runtime_spawn(h.rt, &spec, on_result, &r);
    test_run_for(&h.loop, 200);
    ASSERT_FALSE(r.done);
    server_start(&h.loop, path, &s, 1000);
    wait_result(&h, &r, 3000);
    ASSERT_OK(r.status);
    server_stop(&h.loop, &s);
    json_decref(x);
    harness_close(&h);
    free(path);
}

TEST(executor_client_survives_a_server_restart)
{
    struct harness h;
    struct server_side s;
    struct result w = {0};
    char *path;
    json_t *x = hooks("{}");
    json_t *slow = hooks("{\"ready_delay_ms\":10000}");

    client_harness(&h, &path);
    server_start(&h.loop, path, &s, 20000);
    spawn_ok(&h, "b1", x);
    uint16_t port = spawn_ok(&h, "b2", slow);
    char addr[32];
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
    runtime_wait_ready(h.rt, "b2", addr, on_result, &w);
    test_run_for(&h.loop, 50);

    /* The server dies with a request in flight: it fails now, not never. */
    server_stop(&h.loop, &s);
    wait_result(&h, &w, 2000);
    ASSERT_EQ(w.status, -ECONNRESET);

    /* A new server runs nothing: the client reports both backends gone. */
    server_start(&h.loop, path, &s, 1000);
    wait_exits(&h, 2, 5000);
    ASSERT_EQ(exit_code_of(&h, "b1"), RUNTIME_EXIT_UNKNOWN);
    ASSERT_EQ(exit_code_of(&h, "b2"), RUNTIME_EXIT_UNKNOWN);
    spawn_ok(&h, "b3", x); /* and works on the new connection */
    server_stop(&h.loop, &s);
    json_decref(x);
    json_decref(slow);
    harness_close(&h);
    free(path);
}

/* A server that answers every request with garbage, then the wrong variant. */
static void *rogue_server(void *arg)
{
    int lfd = *(int *)arg;
    int fd = accept(lfd, NULL, NULL);
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof(buf) - 1);

    if (n > 0) {
        buf[n] = '\0';
        json_t *req = json_loads(buf, JSON_DISABLE_EOF_CHECK, NULL);
        const char *id = json_string_value(json_object_get(req, "id"));
        char *out = xasprintf("not json\n{\"id\":\"unknown\",\"message\":{\"PrepareResult\":{\"Ok\":null}}}\n"
                              "{\"id\":null,\"message\":{\"Spawn\":[]}}\n"
                              "{\"id\":\"%s\",\"message\":{\"TerminateResult\":{\"Ok\":true}}}\n",
                              id ? id : "");
        if (write(fd, out, strlen(out)) < 0) {
            /* the test will notice */
        }
        free(out);
        json_decref(req);
    }
    sleep(1);
    close(fd);
    return NULL;
}

TEST(executor_client_rejects_wrong_answers)
{
    struct harness h;
    struct result r = {0};
    char *path;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    pthread_t t;
    json_t *x = hooks("{}");

    harness_open(&h, "mock", NULL);
    path = sock_path(&h);
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    ASSERT_OK(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)));
    ASSERT_OK(listen(lfd, 1));
    pthread_create(&t, NULL, rogue_server, &lfd);
    open_client(&h, path);
    runtime_prepare(h.rt, x, on_result, &r);
    wait_result(&h, &r, 3000);
    ASSERT_EQ(r.status, -EPROTO);
    ASSERT_STR_EQ(r.error, "Unexpected response from server");
    pthread_join(t, NULL);
    close(lfd);
    json_decref(x);
    harness_close(&h);
    free(path);
}
