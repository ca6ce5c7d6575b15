/* SPDX-License-Identifier: MIT */
/*
 * test_runtime_docker.c - the Docker runtime against a real Docker Engine
 * with the test image plane-test-echo:1 (scripts/docker-up.sh starts the
 * engine and builds it), and the async Docker client on its own. Containers
 * run with host networking. Without a reachable engine (or without the
 * image) every engine test prints SKIP and passes, so a plain `make unit`
 * works anywhere.
 *
 * Backend ids start with "ut<pid>-"; an atexit handler removes the
 * containers of this test process even when an assertion fails, and each
 * test first sweeps what an earlier, killed run left.
 */
#include <curl/curl.h>
#include <errno.h>
#include <stdarg.h>
#include <time.h>
#include <unistd.h>

#include "../../src/common/xalloc.h"
#include "../../src/drone/docker_client.h"
#include "engine_api.h"
#include "runtime_harness.h"

#define SOCK ENGINE_SOCK
#define IMAGE "plane-test-echo:1"
#define UNREACHABLE_IMAGE "127.0.0.1:9/plane-test-missing:1" /* a closed port on loopback */

/* ---- blocking helpers (tests may block; the runtime never does) -------- */

/* Removes the containers named /plane-<prefix>*, or every unit test's ("ut") when prefix is "ut". */
static void remove_ours(const char *prefix)
{
    json_t *list = engine_api_json("/containers/json?all=1");
    size_t i;
    json_t *c;
    char *want = xasprintf("/plane-%s", prefix);

    json_array_foreach(list, i, c) {
        const char *name = json_string_value(json_array_get(json_object_get(c, "Names"), 0));
        if (name && strncmp(name, want, strlen(want)) == 0) {
            char *path = xasprintf("/containers/%s?force=1", json_string_value(json_object_get(c, "Id")));
            engine_api("DELETE", path, NULL, NULL);
            free(path);
        }
    }
    json_decref(list);
    free(want);
}

static char g_prefix[32];

static void cleanup_at_exit(void)
{
    remove_ours(g_prefix);
    engine_api("DELETE", "/containers/plane-unit-unlabelled?force=1", NULL, NULL);
}

/* True if the engine and the test image are there; otherwise says SKIP. */
static bool docker_ready(void)
{
    char *body = NULL;
    int st;

    curl_global_init(CURL_GLOBAL_DEFAULT);
    st = engine_api("GET", "/_ping", NULL, &body);
    free(body);
    if (st != 200) {
        printf("  SKIP: no Docker Engine answers on %s (scripts/docker-up.sh starts one)\n", SOCK);
        return false;
    }
    if (engine_api("GET", "/images/" IMAGE "/json", NULL, NULL) != 200) {
        printf("  SKIP: no image %s (scripts/docker-up.sh builds it)\n", IMAGE);
        return false;
    }
    snprintf(g_prefix, sizeof(g_prefix), "ut%d-", (int)getpid());
    remove_ours("ut"); /* what killed runs left */
    atexit(cleanup_at_exit);
    return true;
}

static const char *bid(const char *name)
{
    static char ids[8][64];
    static int next;
    char *out = ids[next++ % 8];

    snprintf(out, sizeof(ids[0]), "%s%s", g_prefix, name);
    return out;
}

/* {"image":IMAGE,"pull_policy":"Never","env":{K:V...}} from "K=V" (NULL-terminated). */
static json_t *echo_exe(const char *first, ...)
{
    va_list ap;

    va_start(ap, first);
    json_t *env = harness_env(first, ap);
    va_end(ap);
    return json_pack("{s:s, s:s, s:o}", "image", IMAGE, "pull_policy", "Never", "env", env);
}

static void open_docker(struct harness *h, struct runtime_config *cfg)
{
    struct runtime_config c = {0};

    if (cfg)
        c = *cfg;
    c.docker_network = "host";
    harness_open(h, "docker", &c);
}

static json_t *inspect(const char *backend)
{
    char *path = xasprintf("/containers/plane-%s/json", backend);
    json_t *j = engine_api_json(path);

    free(path);
    return j;
}

static bool container_running(const char *backend)
{
    json_t *j = inspect(backend);
    bool r = json_is_true(json_object_get(json_object_get(j, "State"), "Running"));

    json_decref(j);
    return r;
}

static int prepare_status(struct harness *h, json_t *x, struct result *r)
{
    memset(r, 0, sizeof(*r));
    runtime_prepare(h->rt, x, on_result, r);
    wait_result(h, r, 10000);
    return r->status;
}

/* ---- the client alone --------------------------------------------------- */

struct client_result {
    bool done;
    int status, error;
    char message[256];
    char body[512];
    int lines;
    bool headers;
};

static void client_done(void *arg, const struct docker_response *res)
{
    struct client_result *r = arg;

    r->done = true;
    r->status = res->status;
    r->error = res->error;
    snprintf(r->message, sizeof(r->message), "%s", res->message ? res->message : "");
    snprintf(r->body, sizeof(r->body), "%s", res->body ? res->body : "");
}

static void client_line(void *arg, int status, const char *line, size_t len)
{
    struct client_result *r = arg;

    (void)len;
    if (!line)
        r->headers = status == 200;
    else
        r->lines++;
}

static void never_called(void *arg, const struct docker_response *res)
{
    (void)arg;
    (void)res;
    test_fail(__FILE__, __LINE__, "a cancelled request's callback ran");
}

static bool client_result_done(void *arg)
{
    return ((struct client_result *)arg)->done;
}

TEST(docker_client_without_an_engine)
{
    uv_loop_t loop;
    struct client_result r = {0};
    struct docker_client *c;

    uv_loop_init(&loop);
    c = docker_client_new(&loop, "/nonexistent/docker.sock", NULL, NULL);
    struct docker_request_spec s = {.method = "GET", .path = "/version", .on_done = client_done, .arg = &r};
    docker_request_start(c, &s);
    ASSERT_FALSE(r.done); /* never from inside the call */
    ASSERT_TRUE(test_run_until(&loop, 5000, client_result_done, &r));
    ASSERT_TRUE(r.error < 0);
    ASSERT_EQ(r.status, 0);
    ASSERT_CONTAINS(r.message, "/nonexistent/docker.sock");
    docker_client_close(c);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_OK(uv_loop_close(&loop));

    struct buf b = BUF_INIT;
    docker_url_escape(&b, "{\"label\":[\"a b\"]}");
    ASSERT_STR_EQ(buf_cstr(&b), "%7B%22label%22%3A%5B%22a%20b%22%5D%7D");
    buf_release(&b);
}

TEST(docker_client_plain_stream_cancel_close)
{
    uv_loop_t loop;
    struct client_result v = {0}, ev = {0}, nf = {0};
    struct docker_client *c;

    if (!docker_ready())
        return;
    uv_loop_init(&loop);
    c = docker_client_new(&loop, SOCK, NULL, NULL);
    struct docker_request_spec s = {.method = "GET", .path = "/version", .on_done = client_done, .arg = &v};
    docker_request_start(c, &s);
    s.path = "/containers/plane-no-such-container/json";
    s.arg = &nf;
    docker_request_start(c, &s);
    ASSERT_TRUE(test_run_until(&loop, 5000, client_result_done, &v));
    ASSERT_EQ(v.status, 200);
    ASSERT_CONTAINS(v.body, "\"ApiVersion\"");
    ASSERT_TRUE(test_run_until(&loop, 5000, client_result_done, &nf));
    ASSERT_EQ(nf.status, 404);
    ASSERT_CONTAINS(nf.message, "No such container");

    /* A finite stream: every event of the last hour, line by line. */
    char *path = xasprintf("/events?since=%ld&until=%ld", (long)time(NULL) - 3600, (long)time(NULL));
    struct docker_request_spec st = {
        .method = "GET", .path = path, .on_line = client_line, .on_done = client_done, .arg = &ev,
    };
    docker_request_start(c, &st);
    ASSERT_TRUE(test_run_until(&loop, 5000, client_result_done, &ev));
    ASSERT_EQ(ev.status, 200);
    ASSERT_EQ(ev.error, 0);
    ASSERT_TRUE(ev.headers);
    free(path);

    /* An endless stream, cancelled; another left open when the client closes. */
    struct docker_request_spec endless = {
        .method = "GET", .path = "/events", .on_line = client_line, .on_done = never_called, .arg = &ev,
    };
    struct docker_request *r1 = docker_request_start(c, &endless);
    docker_request_start(c, &endless);
    test_run_for(&loop, 100);
    docker_request_cancel(r1);
    test_run_for(&loop, 50);
    docker_client_close(c);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_OK(uv_loop_close(&loop));
}

/* ---- the runtime --------------------------------------------------------- */

static void no_exit(void *arg, const char *id, int code)
{
    (void)arg;
    (void)id;
    (void)code;
}

TEST(docker_runtime_without_an_engine)
{
    struct harness h;
    struct runtime_config cfg = {.docker_socket = "/nonexistent/docker.sock"};
    struct result r = {0};
    json_t *x = json_pack("{s:s}", "image", "plane-test-echo:1");
    struct spawn_spec spec = {.backend_id = "b1", .executable = x};

    /* Bad settings fail at open. */
    uv_loop_t loop;
    struct runtime *rt = NULL;
    struct buf err = BUF_INIT;
    struct runtime_config bad = {.loop = &loop, .on_exit = no_exit, .docker_log_config = "{\"Config\":{}}"};
    uv_loop_init(&loop);
    ASSERT_EQ(runtime_open(&rt, runtime_find("docker"), &bad, &err), -EINVAL);
    ASSERT_CONTAINS(buf_cstr(&err), "--log-config");
    buf_reset(&err);
    bad.docker_log_config = NULL;
    bad.mount_base = "relative/dir";
    ASSERT_EQ(runtime_open(&rt, runtime_find("docker"), &bad, &err), -EINVAL);
    ASSERT_CONTAINS(buf_cstr(&err), "--mount-base");
    ASSERT_OK(uv_loop_close(&loop));
    buf_release(&err);

    /* No engine: every operation fails clearly, later, and nothing hangs. */
    cfg.docker_network = "host";
    harness_open(&h, "docker", &cfg);
    runtime_prepare(h.rt, x, on_result, &r);
    ASSERT_FALSE(r.done);
    wait_result(&h, &r, 5000);
    ASSERT_TRUE(r.status < 0);
    ASSERT_CONTAINS(r.error, "/nonexistent/docker.sock");
    memset(&r, 0, sizeof(r));
    runtime_spawn(h.rt, &spec, on_result, &r);
    wait_result(&h, &r, 5000);
    ASSERT_TRUE(r.status < 0);
    ASSERT_CONTAINS(r.error, "cannot create container for backend b1");
    memset(&r, 0, sizeof(r));
    runtime_terminate(h.rt, "b1", false, on_result, &r);
    wait_result(&h, &r, 5000);
    ASSERT_TRUE(r.status < 0);
    ASSERT_CONTAINS(r.error, "cannot stop backend b1");
    memset(&r, 0, sizeof(r));
    ASSERT_EQ(ready_status(&h, "b1", 1, 5000, &r), -ESRCH);
    runtime_cleanup(h.rt, 0);
    test_run_for(&h.loop, 300); /* the events stream keeps retrying meanwhile */
    ASSERT_EQ(h.nexits, 0);
    json_decref(x);
    harness_close(&h);
}

TEST(docker_spawn_env_labels_ready_http_soft_terminate)
{
    struct harness h;
    struct result r = {0}, t = {0};
    struct acquired_key key = {.name = "k1", .namespace = "", .tag = "", .token = 77};
    json_t *x;
    char want[64];
    int status;
    char *body;

    if (!docker_ready())
        return;
    x = echo_exe("FOO=bar", "PORT=1", "SESSION_BACKEND_ID=spoofed", (char *)NULL);
    const char *id = bid("b1");
    struct spawn_spec spec = {.backend_id = id, .executable = x, .key = &key, .static_token = "s.tok"};
    open_docker(&h, NULL);
    ASSERT_OK(prepare_status(&h, x, &r));
    memset(&r, 0, sizeof(r));
    runtime_spawn(h.rt, &spec, on_result, &r);
    ASSERT_FALSE(r.done);
    wait_result(&h, &r, 10000);
    ASSERT_OK(r.status);
    ASSERT_TRUE(r.port >= 30000 && r.port < 32000);
    ASSERT_TRUE(strlen(r.container_id) >= 12);
    ASSERT_OK(ready_status(&h, id, r.port, 5000, NULL));

    ASSERT_OK(test_http_get(&h.loop, r.port, "/", NULL, &status, &body));
    ASSERT_EQ(status, 200);
    snprintf(want, sizeof(want), "\"PORT\":\"%u\"", r.port);
    ASSERT_CONTAINS(body, want); /* ours win over the user's env */
    snprintf(want, sizeof(want), "\"SESSION_BACKEND_ID\":\"%s\"", id);
    ASSERT_CONTAINS(body, want);
    ASSERT_CONTAINS(body, "\"SESSION_BACKEND_KEY\":\"k1\"");
    ASSERT_CONTAINS(body, "\"SESSION_BACKEND_FENCING_TOKEN\":\"77\"");
    ASSERT_CONTAINS(body, "\"SESSION_BACKEND_STATIC_TOKEN\":\"s.tok\"");
    ASSERT_CONTAINS(body, "\"FOO\":\"bar\"");
    free(body);

    json_t *j = inspect(id);
    ASSERT_NOT_NULL(j);
    ASSERT_TRUE(strncmp(json_string_value(json_object_get(j, "Id")), r.container_id, 12) == 0);
    /* The spawn names the container's process on this host: the lease fence's handle on it. */
    ASSERT_EQ(r.pid, json_integer_value(json_object_get(json_object_get(j, "State"), "Pid")));
    ASSERT_TRUE(r.pid > 0);
    json_t *labels = json_object_get(json_object_get(j, "Config"), "Labels");
    ASSERT_STR_EQ(json_string_value(json_object_get(labels, "dev.plane.backend")), "true");
    ASSERT_STR_EQ(json_string_value(json_object_get(labels, "dev.plane.backend.id")), id);
    ASSERT_STR_EQ(json_string_value(json_object_get(json_object_get(j, "HostConfig"), "NetworkMode")), "host");
    json_decref(j);

    runtime_terminate(h.rt, id, false, on_result, &t);
    wait_exits(&h, 1, 10000);
    ASSERT_EQ(exit_code_of(&h, id), 0); /* the echo backend exits 0 on SIGTERM */
    wait_result(&h, &t, 5000);
    ASSERT_OK(t.status);
    ASSERT_TRUE(t.was_running);
    ASSERT_FALSE(container_running(id));
    memset(&t, 0, sizeof(t));
    runtime_terminate(h.rt, id, true, on_result, &t);
    wait_result(&h, &t, 5000);
    ASSERT_OK(t.status);
    ASSERT_FALSE(t.was_running); /* already gone is not an error */
    test_run_for(&h.loop, 100);
    ASSERT_EQ(h.nexits, 1); /* die and stop events: reported once */
    json_decref(x);
    harness_close(&h);
}

TEST(docker_hard_terminate_grace_and_own_exit)
{
    struct harness h;
    struct runtime_config cfg = {.grace_ms = 1000};
    json_t *stubborn, *quits;
    struct result t = {0};

    if (!docker_ready())
        return;
    stubborn = echo_exe("ECHO_IGNORE_SIGTERM=1", (char *)NULL);
    quits = echo_exe("ECHO_EXIT_AFTER_MS=300", "ECHO_EXIT_CODE=3", (char *)NULL);
    open_docker(&h, &cfg);
    const char *b1 = bid("b1"), *b2 = bid("b2"), *b3 = bid("b3");
    uint16_t p1 = spawn_ok(&h, b1, stubborn);
    uint16_t p2 = spawn_ok(&h, b2, stubborn);
    ASSERT_NE(p1, p2);
    ASSERT_OK(ready_status(&h, b1, p1, 5000, NULL));
    ASSERT_OK(ready_status(&h, b2, p2, 5000, NULL));
    runtime_terminate(h.rt, b1, true, on_result, &t);
    wait_exits(&h, 1, 5000);
    ASSERT_EQ(exit_code_of(&h, b1), 137);
    wait_result(&h, &t, 5000);
    ASSERT_TRUE(t.was_running);

    uint64_t t0 = uv_now(&h.loop);
    runtime_terminate(h.rt, b2, false, NULL, NULL);
    test_run_for(&h.loop, 300);
    ASSERT_EQ(h.nexits, 1); /* ignores SIGTERM */
    wait_exits(&h, 2, 5000);
    ASSERT_EQ(exit_code_of(&h, b2), 137);
    ASSERT_TRUE(uv_now(&h.loop) - t0 >= 900);

    spawn_ok(&h, b3, quits);
    wait_exits(&h, 3, 5000);
    ASSERT_EQ(exit_code_of(&h, b3), 3);
    memset(&t, 0, sizeof(t));
    runtime_terminate(h.rt, b3, false, on_result, &t);
    wait_result(&h, &t, 5000);
    ASSERT_OK(t.status);
    ASSERT_FALSE(t.was_running);
    json_decref(stubborn);
    json_decref(quits);
    harness_close(&h);
}

TEST(docker_prepare_policies_and_bad_executables)
{
    struct harness h;
    struct result r = {0};
    json_t *x;

    if (!docker_ready())
        return;
    open_docker(&h, NULL);
    x = json_pack("{s:s, s:s}", "image", IMAGE, "pull_policy", "Never");
    ASSERT_OK(prepare_status(&h, x, &r));
    json_decref(x);
    x = json_pack("{s:s}", "image", IMAGE); /* IfNotPresent: present, no pull */
    ASSERT_OK(prepare_status(&h, x, &r));
    json_decref(x);
    x = json_pack("{s:s, s:s}", "image", "plane-test-missing:1", "pull_policy", "Never");
    ASSERT_EQ(prepare_status(&h, x, &r), -ENOENT);
    ASSERT_CONTAINS(r.error, "not present and pull_policy is Never");
    json_decref(x);
    /* Pulls fail quickly and clearly when the registry cannot be reached. The
     * registry named is a closed port on loopback, so the engine's attempt
     * stays on this machine (a bare name would send it to Docker Hub). */
    x = json_pack("{s:s, s:s, s:{s:s, s:s}}", "image", UNREACHABLE_IMAGE, "pull_policy", "Always",
                  "credentials", "username", "u", "password", "p");
    ASSERT_NE(prepare_status(&h, x, &r), 0);
    ASSERT_CONTAINS(r.error, "cannot pull image '" UNREACHABLE_IMAGE "'");
    json_decref(x);
    x = json_pack("{s:s}", "image", UNREACHABLE_IMAGE);
    ASSERT_NE(prepare_status(&h, x, &r), 0);
    ASSERT_CONTAINS(r.error, "cannot pull image");
    json_decref(x);

    static const char *const bad[] = {
        "{\"image\":\"\"}",
        "{\"image\":\"x y\"}",
        "{\"image\":\"x\",\"pull_policy\":\"Sometimes\"}",
        "{\"image\":\"x\",\"env\":{\"A\":1}}",
        "{\"image\":\"x\",\"resource_limits\":{\"memory_limit_bytes\":-1}}",
        "{\"image\":\"x\",\"mount\":3}",
        "[\"x\"]",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        x = json_loads(bad[i], 0, NULL);
        ASSERT_NOT_NULL(x);
        ASSERT_EQ(prepare_status(&h, x, &r), -EINVAL);
        memset(&r, 0, sizeof(r));
        struct spawn_spec spec = {.backend_id = bid("bad"), .executable = x};
        runtime_spawn(h.rt, &spec, on_result, &r);
        wait_result(&h, &r, 5000);
        ASSERT_EQ(r.status, -EINVAL);
        json_decref(x);
    }

    /* spawn of a missing image: a clear error and no exit event. */
    x = json_pack("{s:s}", "image", "plane-test-missing:1");
    memset(&r, 0, sizeof(r));
    struct spawn_spec spec = {.backend_id = bid("missing"), .executable = x};
    runtime_spawn(h.rt, &spec, on_result, &r);
    wait_result(&h, &r, 5000);
    ASSERT_EQ(r.status, -ENOENT);
    ASSERT_CONTAINS(r.error, "image 'plane-test-missing:1' is not present");
    json_decref(x);
    test_run_for(&h.loop, 100);
    ASSERT_EQ(h.nexits, 0);
    harness_close(&h);
}

TEST(docker_limits_and_metrics)
{
    struct harness h;
    struct runtime_config cfg = {.metrics_interval_ms = 1000};
    struct result r = {0};
    json_t *x, *j;

    if (!docker_ready())
        return;
    x = echo_exe((char *)NULL);
    json_object_set_new(x, "resource_limits",
                        json_pack("{s:I, s:I, s:I, s:I}", "memory_limit_bytes", (json_int_t)(64 << 20), "cpu_period",
                                  (json_int_t)1000000, "cpu_period_percent", (json_int_t)80, "cpu_time_limit",
                                  (json_int_t)100));
    open_docker(&h, &cfg);
    const char *id = bid("lim");
    spawn_ok(&h, id, x);
    j = inspect(id);
    json_t *hc = json_object_get(j, "HostConfig");
    ASSERT_EQ(json_integer_value(json_object_get(hc, "Memory")), 64 << 20);
    ASSERT_EQ(json_integer_value(json_object_get(hc, "CpuPeriod")), 1000000);
    ASSERT_EQ(json_integer_value(json_object_get(hc, "CpuQuota")), 800000); /* §14.3 */
    json_t *ul = json_array_get(json_object_get(hc, "Ulimits"), 0);
    ASSERT_STR_EQ(json_string_value(json_object_get(ul, "Name")), "cpu");
    ASSERT_EQ(json_integer_value(json_object_get(ul, "Hard")), 100);
    json_decref(j);

    /* Samples come every second from Docker; the first one only primes the deltas. */
    uint64_t t0 = uv_now(&h.loop);
    while (h.nmetrics < 2 && uv_now(&h.loop) - t0 < 8000)
        test_run_for(&h.loop, 100);
    ASSERT_TRUE(h.nmetrics >= 2);
    ASSERT_STR_EQ(h.last_metrics.backend_id, id);
    ASSERT_EQ(h.last_metrics.mem_limit, 64 << 20);
    ASSERT_TRUE(h.last_metrics.mem_used > 0 && h.last_metrics.mem_used < (64 << 20));
    ASSERT_TRUE(h.last_metrics.sys_cpu > 0);
    int n = h.nmetrics;
    test_run_for(&h.loop, 500);
    ASSERT_TRUE(h.nmetrics <= n + 1); /* at most one per interval */

    /* A disk limit the storage driver refuses: a clear error, not a silent success. */
    json_object_set_new(x, "resource_limits", json_pack("{s:I}", "disk_limit_bytes", (json_int_t)(100 << 20)));
    struct spawn_spec spec = {.backend_id = bid("disk"), .executable = x};
    runtime_spawn(h.rt, &spec, on_result, &r);
    wait_result(&h, &r, 10000);
    if (r.status == 0) {
        printf("  note: this engine's storage driver applies disk limits\n");
    } else {
        ASSERT_CONTAINS(r.error, "disk_limit_bytes");
    }
    json_decref(x);
    harness_close(&h);
}

TEST(docker_wait_ready_ends_when_the_container_dies)
{
    struct harness h;
    struct runtime_config cfg = {.ready_timeout_ms = 500};
    struct result r = {0};
    json_t *never, *dies;

    if (!docker_ready())
        return;
    never = echo_exe("ECHO_NEVER_LISTEN=1", (char *)NULL);
    dies = echo_exe("ECHO_NEVER_LISTEN=1", "ECHO_EXIT_AFTER_MS=300", "ECHO_EXIT_CODE=4", (char *)NULL);
    open_docker(&h, &cfg);
    uint16_t p = spawn_ok(&h, bid("never"), never);
    ASSERT_EQ(ready_status(&h, bid("never"), p, 5000, NULL), -ETIMEDOUT);
    runtime_terminate(h.rt, bid("never"), true, NULL, NULL);

    harness_close(&h);
    cfg.ready_timeout_ms = 20000;
    open_docker(&h, &cfg);
    p = spawn_ok(&h, bid("dies"), dies);
    uint64_t t0 = uv_now(&h.loop);
    ASSERT_NE(ready_status(&h, bid("dies"), p, 5000, &r), 0);
    ASSERT_CONTAINS(r.error, "exited with code 4");
    ASSERT_TRUE(uv_now(&h.loop) - t0 < 3000);
    ASSERT_EQ(exit_code_of(&h, bid("dies")), 4);

    memset(&r, 0, sizeof(r));
    ASSERT_EQ(ready_status(&h, bid("nobody"), 1, 2000, &r), -ESRCH);
    json_decref(never);
    json_decref(dies);
    harness_close(&h);
}

TEST(docker_terminate_during_spawn_and_same_id_again)
{
    struct harness h;
    struct result s = {0}, t = {0};
    json_t *x;

    if (!docker_ready())
        return;
    x = echo_exe((char *)NULL);
    open_docker(&h, NULL);
    const char *id = bid("race");
    struct spawn_spec spec = {.backend_id = id, .executable = x};
    runtime_spawn(h.rt, &spec, on_result, &s);
    runtime_terminate(h.rt, id, true, on_result, &t); /* before the container even exists */
    wait_result(&h, &s, 10000);
    ASSERT_OK(s.status);
    wait_result(&h, &t, 10000);
    ASSERT_OK(t.status);
    ASSERT_TRUE(t.was_running); /* held until the spawn was done, then delivered */
    wait_exits(&h, 1, 5000);
    ASSERT_EQ(exit_code_of(&h, id), 137);

    /* The exited container still holds the name: a new spawn replaces it. */
    memset(&s, 0, sizeof(s));
    runtime_spawn(h.rt, &spec, on_result, &s);
    wait_result(&h, &s, 10000);
    ASSERT_OK(s.status);
    ASSERT_OK(ready_status(&h, id, s.port, 5000, NULL));
    memset(&t, 0, sizeof(t));
    runtime_spawn(h.rt, &spec, on_result, &t);
    wait_result(&h, &t, 5000);
    ASSERT_EQ(t.status, -EEXIST);
    json_decref(x);
    harness_close(&h);
}

TEST(docker_close_leaves_containers_and_a_new_runtime_adopts_them)
{
    struct harness h;
    struct result t = {0};
    json_t *x, *quits;

    if (!docker_ready())
        return;
    x = echo_exe((char *)NULL);
    quits = echo_exe("ECHO_EXIT_AFTER_MS=200", "ECHO_EXIT_CODE=5", (char *)NULL);
    open_docker(&h, NULL);
    const char *keep = bid("keep"), *gone = bid("gone");
    uint16_t port = spawn_ok(&h, keep, x);
    spawn_ok(&h, gone, quits);
    harness_close(&h); /* containers are not killed on close (Plane's drone leaves them) */
    ASSERT_TRUE(container_running(keep));
    usleep(500000); /* "gone" exits while no runtime watches */
    ASSERT_FALSE(container_running(gone));

    open_docker(&h, NULL);
    test_run_for(&h.loop, 300); /* the first reconcile */
    ASSERT_EQ(h.nexits, 0);     /* exited before open: the drone's state store reports those */
    ASSERT_OK(ready_status(&h, keep, port, 5000, NULL));
    runtime_terminate(h.rt, gone, false, on_result, &t);
    wait_result(&h, &t, 5000);
    ASSERT_OK(t.status);
    ASSERT_FALSE(t.was_running);
    memset(&t, 0, sizeof(t));
    runtime_terminate(h.rt, keep, false, on_result, &t);
    wait_exits(&h, 1, 10000);
    ASSERT_EQ(exit_code_of(&h, keep), 0);
    wait_result(&h, &t, 5000);
    ASSERT_TRUE(t.was_running);
    json_decref(x);
    json_decref(quits);
    harness_close(&h);
}

TEST(docker_cleanup_prunes_only_our_stopped_containers)
{
    struct harness h;
    json_t *x, *quits;
    char *body = NULL;

    if (!docker_ready())
        return;
    x = echo_exe((char *)NULL);
    quits = echo_exe("ECHO_EXIT_AFTER_MS=100", "ECHO_EXIT_CODE=0", (char *)NULL);
    ASSERT_EQ(engine_api("POST", "/containers/create?name=plane-unit-unlabelled",
                  "{\"Image\":\"" IMAGE "\",\"HostConfig\":{\"NetworkMode\":\"host\"}}", &body),
              201);
    free(body);
    open_docker(&h, NULL);
    const char *done = bid("done"), *live = bid("live");
    spawn_ok(&h, done, quits);
    spawn_ok(&h, live, x);
    wait_exits(&h, 1, 5000);
    json_t *j = inspect(done);
    ASSERT_NOT_NULL(j); /* exited, still there */
    json_decref(j);

    runtime_cleanup(h.rt, 3600 * 1000); /* too young to prune */
    test_run_for(&h.loop, 500);
    j = inspect(done);
    ASSERT_NOT_NULL(j);
    json_decref(j);
    j = NULL;
    for (int i = 0; i < 100 && (j = inspect(done)); i++) {
        json_decref(j);
        /* Skipped while the previous prune is still running, as a periodic cleanup would be. */
        runtime_cleanup(h.rt, 0);
        test_run_for(&h.loop, 50);
    }
    ASSERT_NULL(j);                   /* ours, stopped: pruned */
    ASSERT_TRUE(container_running(live)); /* ours, running: kept */
    ASSERT_EQ(engine_api("GET", "/containers/plane-unit-unlabelled/json", NULL, NULL), 200); /* not ours: kept */
    engine_api("DELETE", "/containers/plane-unit-unlabelled?force=1", NULL, NULL);
    runtime_terminate(h.rt, live, true, NULL, NULL);
    wait_exits(&h, 2, 5000);
    json_decref(x);
    json_decref(quits);
    harness_close(&h);
}
