/* SPDX-License-Identifier: MIT */
/*
 * test_executor_proto.c - the executor line codec: every message of spec
 * §15 parsed and written, byte-exact where Plane's shape is fixed, and bad
 * lines rejected with enough left over to answer them.
 */
#include <errno.h>

#include "../../src/drone/executor_proto.h"
#include "test.h"

static void parse_ok(const char *line, struct exec_msg *m)
{
    struct buf err = BUF_INIT;
    int rc = exec_msg_parse(line, strlen(line), m, &err);

    if (rc != 0)
        test_fail(__FILE__, __LINE__, "parse of %s failed: %s", line, buf_cstr(&err));
    buf_release(&err);
}

static int parse_err(const char *line, struct exec_msg *m, struct buf *err)
{
    return exec_msg_parse(line, strlen(line), m, err);
}

TEST(proto_parse_requests)
{
    struct exec_msg m;

    parse_ok("{\"id\":\"a1\",\"message\":{\"Prepare\":{\"image\":\"x\"}}}", &m);
    ASSERT_EQ(m.kind, EXEC_PREPARE);
    ASSERT_STR_EQ(m.id, "a1");
    ASSERT_STR_EQ(json_string_value(json_object_get(m.executable, "image")), "x");
    exec_msg_release(&m);

    parse_ok("{\"id\":\"a2\",\"message\":{\"Spawn\":[\"b1\",{\"command\":[\"x\"]},"
             "{\"key\":{\"name\":\"k\",\"namespace\":\"ns\",\"tag\":\"t\"},"
             "\"deadlines\":{\"renew_at\":1,\"soft_terminate_at\":2,\"hard_terminate_at\":3},\"token\":99},"
             "\"s.tok\"]}}",
             &m);
    ASSERT_EQ(m.kind, EXEC_SPAWN);
    ASSERT_STR_EQ(m.backend_id, "b1");
    ASSERT_TRUE(m.has_key);
    ASSERT_STR_EQ(m.key.name, "k");
    ASSERT_STR_EQ(m.key.namespace, "ns");
    ASSERT_STR_EQ(m.key.tag, "t");
    ASSERT_EQ(m.key.renew_at, 1);
    ASSERT_EQ(m.key.soft_terminate_at, 2);
    ASSERT_EQ(m.key.hard_terminate_at, 3);
    ASSERT_EQ(m.key.token, 99);
    ASSERT_STR_EQ(m.static_token, "s.tok");
    exec_msg_release(&m);

    parse_ok("{\"id\":\"a3\",\"message\":{\"Spawn\":[\"b1\",{},null,null]}}", &m);
    ASSERT_FALSE(m.has_key);
    ASSERT_NULL(m.static_token);
    exec_msg_release(&m);

    parse_ok("{\"id\":\"a4\",\"message\":{\"Terminate\":[\"b1\",true]}}", &m);
    ASSERT_EQ(m.kind, EXEC_TERMINATE);
    ASSERT_TRUE(m.hard);
    exec_msg_release(&m);

    parse_ok("{\"id\":\"a5\",\"message\":{\"WaitForBackend\":[\"b1\",\"127.0.0.1:80\"]}}", &m);
    ASSERT_EQ(m.kind, EXEC_WAIT_FOR_BACKEND);
    ASSERT_STR_EQ(m.address, "127.0.0.1:80");
    exec_msg_release(&m);
}

TEST(proto_parse_responses_and_events)
{
    struct exec_msg m;

    parse_ok("{\"id\":\"r\",\"message\":{\"SpawnResult\":{\"Ok\":{\"container_id\":\"c\",\"port\":8080}}}}", &m);
    ASSERT_EQ(m.kind, EXEC_SPAWN_RESULT);
    ASSERT_EQ(m.status, 0);
    ASSERT_EQ(m.port, 8080);
    ASSERT_STR_EQ(m.container_id, "c");
    exec_msg_release(&m);

    parse_ok("{\"id\":\"r\",\"message\":{\"SpawnResult\":{\"Err\":\"no image\"}}}", &m);
    ASSERT_EQ(m.status, -EIO);
    ASSERT_STR_EQ(m.error, "no image");
    exec_msg_release(&m);

    parse_ok("{\"id\":\"r\",\"message\":{\"TerminateResult\":{\"Ok\":false}}}", &m);
    ASSERT_FALSE(m.was_running);
    exec_msg_release(&m);

    parse_ok("{\"id\":\"r\",\"message\":{\"WaitForBackendResult\":{\"Err\":\"StartupTimeout\"}}}", &m);
    ASSERT_EQ(m.status, -ETIMEDOUT);
    exec_msg_release(&m);

    parse_ok("{\"id\":\"r\",\"message\":{\"WaitForBackendResult\":{\"Err\":{\"Other\":\"boom\"}}}}", &m);
    ASSERT_EQ(m.status, -EIO);
    ASSERT_STR_EQ(m.error, "boom");
    exec_msg_release(&m);

    parse_ok("{\"id\":null,\"message\":{\"TerminateEvent\":{\"backend_id\":\"b\",\"exit_code\":null}}}", &m);
    ASSERT_EQ(m.kind, EXEC_TERMINATE_EVENT);
    ASSERT_NULL(m.id);
    ASSERT_EQ(m.exit_code, RUNTIME_EXIT_UNKNOWN);
    exec_msg_release(&m);

    parse_ok("{\"message\":{\"TerminateEvent\":{\"backend_id\":\"b\",\"exit_code\":137}}}", &m);
    ASSERT_EQ(m.exit_code, 137);
    exec_msg_release(&m);

    parse_ok("{\"id\":null,\"message\":{\"MetricsMessage\":{\"backend_id\":\"b\",\"mem_used\":1,\"mem_total\":2,"
             "\"mem_active\":3,\"mem_inactive\":4,\"mem_unevictable\":5,\"mem_limit\":6,\"cpu_used\":7,"
             "\"sys_cpu\":8}}}",
             &m);
    ASSERT_EQ(m.metrics.mem_limit, 6);
    ASSERT_EQ(m.metrics.sys_cpu, 8);
    exec_msg_release(&m);
}

TEST(proto_rejects_bad_lines)
{
    static const char *const bad[] = {
        "",
        "garbage",
        "[]",
        "{}",
        "{\"id\":5,\"message\":{\"Prepare\":{}}}",
        "{\"id\":\"x\",\"message\":\"Prepare\"}",
        "{\"id\":\"x\",\"message\":{\"Prepare\":{},\"Spawn\":[]}}",
        "{\"id\":\"x\",\"message\":{\"Spawn\":[\"b\"]}}",
        "{\"id\":\"x\",\"message\":{\"Spawn\":[1,{}]}}",
        "{\"id\":\"x\",\"message\":{\"Spawn\":[\"b\",{},{\"key\":1},null]}}",
        "{\"id\":\"x\",\"message\":{\"Terminate\":[\"b\",\"yes\"]}}",
        "{\"id\":\"x\",\"message\":{\"WaitForBackend\":[\"b\"]}}",
        "{\"id\":\"x\",\"message\":{\"SpawnResult\":{\"Ok\":{\"container_id\":\"c\",\"port\":70000}}}}",
        "{\"id\":\"x\",\"message\":{\"SpawnResult\":{}}}",
        "{\"id\":null,\"message\":{\"TerminateEvent\":{\"backend_id\":\"b\",\"exit_code\":\"3\"}}}",
        "{\"id\":null,\"message\":{\"MetricsMessage\":{\"backend_id\":\"b\",\"mem_used\":-1}}}",
        "{\"id\":\"x\",\"id\":\"y\",\"message\":{\"Prepare\":{}}}",
        "{\"id\":\"x\",\"message\":{\"Nope\":{}}}",
        "{\"id\":\"b\\u0000c\",\"message\":{\"Prepare\":{}}}",
    };
    struct exec_msg m;
    struct buf err = BUF_INIT;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        buf_reset(&err);
        if (parse_err(bad[i], &m, &err) != -EINVAL)
            test_fail(__FILE__, __LINE__, "accepted: %s", bad[i]);
        ASSERT_TRUE(err.len > 0);
        exec_msg_release(&m);
    }
    /* The id and kind survive a bad payload, so the server can answer. */
    buf_reset(&err);
    ASSERT_EQ(parse_err("{\"id\":\"q\",\"message\":{\"Spawn\":\"x\"}}", &m, &err), -EINVAL);
    ASSERT_STR_EQ(m.id, "q");
    ASSERT_EQ(m.kind, EXEC_SPAWN);
    exec_msg_release(&m);
    buf_release(&err);
}

TEST(proto_encode_matches_plane_shapes)
{
    struct runtime_result ok = {.container_id = (char *)"c1", .port = 8080, .was_running = true};
    struct runtime_result err = {.status = -EIO, .error = (char *)"bad"};
    struct runtime_result timeout = {.status = -ETIMEDOUT, .error = (char *)"slow"};
    struct acquired_key key = {.name = "k", .namespace = "", .tag = "t", .renew_at = 1, .soft_terminate_at = 2,
                               .hard_terminate_at = 3, .token = 7};
    json_t *exe = json_loads("{\"image\":\"i\",\"env\":{\"B\":\"1\",\"A\":\"2\"}}", 0, NULL);
    struct spawn_spec spec = {.backend_id = "b1", .executable = exe, .key = &key, .static_token = NULL};
    struct backend_metrics met = {.backend_id = "b1", .mem_used = 1, .mem_total = 2, .mem_active = 3,
                                  .mem_inactive = 4, .mem_unevictable = 5, .mem_limit = 6, .cpu_used = 7, .sys_cpu = 8};
    const char *ids[] = {"a", "b"};
    char *s;

#define EXPECT(expr, want)                                                                                   \
    do {                                                                                                     \
        s = (expr);                                                                                          \
        ASSERT_STR_EQ(s, want);                                                                              \
        free(s);                                                                                             \
    } while (0)
    EXPECT(exec_encode_prepare("i1", exe),
           "{\"id\":\"i1\",\"message\":{\"Prepare\":{\"env\":{\"A\":\"2\",\"B\":\"1\"},\"image\":\"i\"}}}\n");
    EXPECT(exec_encode_spawn("i2", &spec),
           "{\"id\":\"i2\",\"message\":{\"Spawn\":[\"b1\",{\"env\":{\"A\":\"2\",\"B\":\"1\"},\"image\":\"i\"},"
           "{\"key\":{\"name\":\"k\",\"namespace\":\"\",\"tag\":\"t\"},\"deadlines\":{\"renew_at\":1,"
           "\"soft_terminate_at\":2,\"hard_terminate_at\":3},\"token\":7},null]}}\n");
    EXPECT(exec_encode_terminate("i3", "b1", false), "{\"id\":\"i3\",\"message\":{\"Terminate\":[\"b1\",false]}}\n");
    EXPECT(exec_encode_wait("i4", "b1", "1.2.3.4:5"),
           "{\"id\":\"i4\",\"message\":{\"WaitForBackend\":[\"b1\",\"1.2.3.4:5\"]}}\n");
    EXPECT(exec_encode_result(EXEC_PREPARE_RESULT, "r", &ok), "{\"id\":\"r\",\"message\":{\"PrepareResult\":{\"Ok\":null}}}\n");
    EXPECT(exec_encode_result(EXEC_SPAWN_RESULT, "r", &ok),
           "{\"id\":\"r\",\"message\":{\"SpawnResult\":{\"Ok\":{\"container_id\":\"c1\",\"port\":8080}}}}\n");
    EXPECT(exec_encode_result(EXEC_TERMINATE_RESULT, "r", &ok),
           "{\"id\":\"r\",\"message\":{\"TerminateResult\":{\"Ok\":true}}}\n");
    EXPECT(exec_encode_result(EXEC_SPAWN_RESULT, "r", &err), "{\"id\":\"r\",\"message\":{\"SpawnResult\":{\"Err\":\"bad\"}}}\n");
    EXPECT(exec_encode_result(EXEC_WAIT_RESULT, "r", &err),
           "{\"id\":\"r\",\"message\":{\"WaitForBackendResult\":{\"Err\":{\"Other\":\"bad\"}}}}\n");
    EXPECT(exec_encode_result(EXEC_WAIT_RESULT, "r", &timeout),
           "{\"id\":\"r\",\"message\":{\"WaitForBackendResult\":{\"Err\":\"StartupTimeout\"}}}\n");
    EXPECT(exec_encode_exit("b1", 3), "{\"id\":null,\"message\":{\"TerminateEvent\":{\"backend_id\":\"b1\",\"exit_code\":3}}}\n");
    EXPECT(exec_encode_exit("b1", RUNTIME_EXIT_UNKNOWN),
           "{\"id\":null,\"message\":{\"TerminateEvent\":{\"backend_id\":\"b1\",\"exit_code\":null}}}\n");
    EXPECT(exec_encode_metrics(&met),
           "{\"id\":null,\"message\":{\"MetricsMessage\":{\"backend_id\":\"b1\",\"mem_used\":1,\"mem_total\":2,"
           "\"mem_active\":3,\"mem_inactive\":4,\"mem_unevictable\":5,\"mem_limit\":6,\"cpu_used\":7,\"sys_cpu\":8}}}\n");
    EXPECT(exec_encode_hello(ids, 2), "{\"id\":null,\"message\":{\"ExecutorHello\":{\"backends\":[\"a\",\"b\"]}}}\n");
#undef EXPECT
    json_decref(exe);
}

TEST(proto_round_trip)
{
    struct acquired_key key = {.name = "k", .namespace = "n", .tag = "", .token = 1234567890123LL};
    json_t *exe = json_pack("{s:[s,s]}", "command", "a", "b");
    struct spawn_spec spec = {.backend_id = "b9", .executable = exe, .key = &key, .static_token = "s.x"};
    char *line = exec_encode_spawn("id", &spec);
    struct exec_msg m;

    parse_ok(line, &m);
    ASSERT_STR_EQ(m.backend_id, "b9");
    ASSERT_EQ(m.key.token, 1234567890123LL);
    ASSERT_STR_EQ(m.static_token, "s.x");
    ASSERT_TRUE(json_equal((json_t *)m.executable, exe));
    exec_msg_release(&m);
    free(line);
    json_decref(exe);
}

TEST(proto_backend_process_extension)
{
    char *line = exec_encode_process("b9", 4242, "pid:[4026531836]");
    struct exec_msg m;
    struct buf err = BUF_INIT;

    ASSERT_STR_EQ(line, "{\"id\":null,\"message\":{\"BackendProcess\":{\"backend_id\":\"b9\",\"pid\":4242,"
                        "\"pid_ns\":\"pid:[4026531836]\"}}}\n");
    parse_ok(line, &m);
    ASSERT_EQ(m.kind, EXEC_PROCESS);
    ASSERT_STR_EQ(m.backend_id, "b9");
    ASSERT_EQ(m.pid, 4242);
    ASSERT_STR_EQ(m.pid_ns, "pid:[4026531836]");
    exec_msg_release(&m);
    free(line);
    static const char *const bad[] = {
        "{\"id\":null,\"message\":{\"BackendProcess\":{\"backend_id\":\"b\",\"pid\":1,\"pid_ns\":\"x\"}}}",
        "{\"id\":null,\"message\":{\"BackendProcess\":{\"backend_id\":\"b\",\"pid\":-4,\"pid_ns\":\"x\"}}}",
        "{\"id\":null,\"message\":{\"BackendProcess\":{\"backend_id\":\"b\",\"pid\":3000000000,\"pid_ns\":\"x\"}}}",
        "{\"id\":null,\"message\":{\"BackendProcess\":{\"backend_id\":\"b\",\"pid\":5}}}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ASSERT_EQ(exec_msg_parse(bad[i], strlen(bad[i]), &m, &err), -EINVAL);
        exec_msg_release(&m);
        buf_reset(&err);
    }
    buf_release(&err);
    ASSERT_TRUE(strncmp(exec_pid_namespace(), "pid:[", 5) == 0);
}
