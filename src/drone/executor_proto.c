/* SPDX-License-Identifier: MIT */
/*
 * executor_proto.c - parse and build executor protocol lines (spec §15;
 * see executor_proto.h). Field order on output follows Plane's structs;
 * opaque executables are written with sorted keys, as serde_json does.
 */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

#include "../common/json_util.h"
#include "../common/log.h"
#include "../common/xalloc.h"
#include "executor_proto.h"

static const struct {
    enum exec_kind kind;
    const char *name;
} kinds[] = {
    {EXEC_PREPARE, "Prepare"},
    {EXEC_SPAWN, "Spawn"},
    {EXEC_TERMINATE, "Terminate"},
    {EXEC_WAIT_FOR_BACKEND, "WaitForBackend"},
    {EXEC_PREPARE_RESULT, "PrepareResult"},
    {EXEC_SPAWN_RESULT, "SpawnResult"},
    {EXEC_TERMINATE_RESULT, "TerminateResult"},
    {EXEC_WAIT_RESULT, "WaitForBackendResult"},
    {EXEC_ERROR, "Error"},
    {EXEC_METRICS, "MetricsMessage"},
    {EXEC_TERMINATE_EVENT, "TerminateEvent"},
    {EXEC_HELLO, "ExecutorHello"},
    {EXEC_PROCESS, "BackendProcess"},
};

const char *exec_kind_name(enum exec_kind kind)
{
    for (size_t i = 0; i < ARRAY_SIZE(kinds); i++)
        if (kinds[i].kind == kind)
            return kinds[i].name;
    return "Unknown";
}

enum exec_kind exec_response_kind(enum exec_kind request)
{
    switch (request) {
    case EXEC_PREPARE:
        return EXEC_PREPARE_RESULT;
    case EXEC_SPAWN:
        return EXEC_SPAWN_RESULT;
    case EXEC_TERMINATE:
        return EXEC_TERMINATE_RESULT;
    case EXEC_WAIT_FOR_BACKEND:
        return EXEC_WAIT_RESULT;
    default:
        return EXEC_UNKNOWN;
    }
}

/* Writes "what: msg" (or just msg) to err; returns -EINVAL. */
static int fail(struct buf *err, const char *what, const char *msg)
{
    if (what)
        buf_printf(err, "%s: %s", what, msg);
    else
        buf_append_str(err, msg);
    return -EINVAL;
}

/* A JSON string without embedded NULs, or NULL. */
static const char *plain_string(const json_t *v)
{
    if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
        return NULL;
    return json_string_value(v);
}

static int parse_key(const json_t *v, struct acquired_key *k, struct buf *err)
{
    const json_t *key = json_object_get(v, "key");
    const json_t *dl = json_object_get(v, "deadlines");
    const json_t *ns, *tag;

    if (!json_is_object(v) || !json_is_object(key) || !json_is_object(dl))
        return fail(err, "Spawn", "AcquiredKey needs \"key\" and \"deadlines\" objects");
    k->name = plain_string(json_object_get(key, "name"));
    ns = json_object_get(key, "namespace");
    tag = json_object_get(key, "tag");
    k->namespace = ns ? plain_string(ns) : "";
    k->tag = tag ? plain_string(tag) : "";
    if (!k->name || !k->namespace || !k->tag)
        return fail(err, "Spawn", "key name, namespace and tag must be strings");
    if (!json_get_int(dl, "renew_at", 0, &k->renew_at) ||
        !json_get_int(dl, "soft_terminate_at", 0, &k->soft_terminate_at) ||
        !json_get_int(dl, "hard_terminate_at", 0, &k->hard_terminate_at) ||
        !json_is_integer(json_object_get(v, "token")))
        return fail(err, "Spawn", "deadlines and token must be integers");
    k->token = json_integer_value(json_object_get(v, "token"));
    return 0;
}

/* {"Ok":X} or {"Err":Y}: sets *ok and returns the inner value, or NULL. */
static const json_t *result_inner(const json_t *v, bool *ok)
{
    if (!json_is_object(v) || json_object_size(v) != 1)
        return NULL;
    if (json_object_get(v, "Ok")) {
        *ok = true;
        return json_object_get(v, "Ok");
    }
    *ok = false;
    return json_object_get(v, "Err");
}

static int parse_result(struct exec_msg *m, const json_t *v, struct buf *err)
{
    bool ok;
    const json_t *in = result_inner(v, &ok);
    const char *name = exec_kind_name(m->kind);

    if (!in)
        return fail(err, name, "expected {\"Ok\":...} or {\"Err\":...}");
    if (!ok) {
        m->status = -EIO;
        if (m->kind == EXEC_WAIT_RESULT && json_is_string(in) && strcmp(json_string_value(in), "StartupTimeout") == 0) {
            m->status = -ETIMEDOUT;
            m->error = "StartupTimeout";
            return 0;
        }
        if (m->kind == EXEC_WAIT_RESULT && json_is_object(in))
            in = json_object_get(in, "Other");
        m->error = plain_string(in);
        if (!m->error)
            return fail(err, name, "Err must carry a message");
        return 0;
    }
    m->status = 0;
    switch (m->kind) {
    case EXEC_PREPARE_RESULT:
    case EXEC_WAIT_RESULT:
        if (!json_is_null(in))
            return fail(err, name, "Ok must be null");
        return 0;
    case EXEC_TERMINATE_RESULT:
        if (!json_is_boolean(in))
            return fail(err, name, "Ok must be a boolean");
        m->was_running = json_is_true(in);
        return 0;
    case EXEC_SPAWN_RESULT: {
        const json_t *port = json_object_get(in, "port");
        m->container_id = plain_string(json_object_get(in, "container_id"));
        if (!m->container_id || !json_is_integer(port) || json_integer_value(port) < 0 ||
            json_integer_value(port) > 65535)
            return fail(err, name, "Ok needs container_id and a port from 0 to 65535");
        m->port = (uint16_t)json_integer_value(port);
        return 0;
    }
    default:
        BUG("parse_result for kind %d", m->kind);
    }
}

static int get_u64(const json_t *obj, const char *key, uint64_t *out)
{
    const json_t *v = json_object_get(obj, key);

    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return -EINVAL;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int parse_payload(struct exec_msg *m, const json_t *v, struct buf *err)
{
    const char *name = exec_kind_name(m->kind);
    size_t n = json_array_size(v);

    switch (m->kind) {
    case EXEC_PREPARE:
        m->executable = v;
        return 0;
    case EXEC_SPAWN: {
        const json_t *key, *tok;
        if (!json_is_array(v) || n < 2 || n > 4)
            return fail(err, name, "expected [backend_id, executable, key|null, static_token|null]");
        m->backend_id = plain_string(json_array_get(v, 0));
        m->executable = json_array_get(v, 1);
        if (!m->backend_id)
            return fail(err, name, "backend_id must be a string");
        key = json_array_get(v, 2);
        if (key && !json_is_null(key)) {
            if (parse_key(key, &m->key, err) < 0)
                return -EINVAL;
            m->has_key = true;
        }
        tok = json_array_get(v, 3);
        if (tok && !json_is_null(tok) && !(m->static_token = plain_string(tok)))
            return fail(err, name, "static_token must be a string or null");
        return 0;
    }
    case EXEC_TERMINATE:
        if (!json_is_array(v) || n != 2 || !(m->backend_id = plain_string(json_array_get(v, 0))) ||
            !json_is_boolean(json_array_get(v, 1)))
            return fail(err, name, "expected [backend_id, hard]");
        m->hard = json_is_true(json_array_get(v, 1));
        return 0;
    case EXEC_WAIT_FOR_BACKEND:
        if (!json_is_array(v) || n != 2 || !(m->backend_id = plain_string(json_array_get(v, 0))) ||
            !(m->address = plain_string(json_array_get(v, 1))))
            return fail(err, name, "expected [backend_id, \"IP:PORT\"]");
        return 0;
    case EXEC_PREPARE_RESULT:
    case EXEC_SPAWN_RESULT:
    case EXEC_TERMINATE_RESULT:
    case EXEC_WAIT_RESULT:
        return parse_result(m, v, err);
    case EXEC_ERROR:
        if (!(m->error = plain_string(v)))
            return fail(err, name, "expected a message string");
        m->status = -EIO;
        return 0;
    case EXEC_METRICS: {
        struct backend_metrics *x = &m->metrics;
        if (!(x->backend_id = plain_string(json_object_get(v, "backend_id"))) ||
            get_u64(v, "mem_used", &x->mem_used) < 0 || get_u64(v, "mem_total", &x->mem_total) < 0 ||
            get_u64(v, "mem_active", &x->mem_active) < 0 || get_u64(v, "mem_inactive", &x->mem_inactive) < 0 ||
            get_u64(v, "mem_unevictable", &x->mem_unevictable) < 0 ||
            get_u64(v, "mem_limit", &x->mem_limit) < 0 || get_u64(v, "cpu_used", &x->cpu_used) < 0 ||
            get_u64(v, "sys_cpu", &x->sys_cpu) < 0)
            return fail(err, name, "needs backend_id and non-negative integer fields");
        m->backend_id = x->backend_id;
        return 0;
    }
    case EXEC_TERMINATE_EVENT: {
        const json_t *code = json_object_get(v, "exit_code");
        if (!(m->backend_id = plain_string(json_object_get(v, "backend_id"))))
            return fail(err, name, "needs a backend_id string");
        m->exit_code = RUNTIME_EXIT_UNKNOWN;
        if (code && !json_is_null(code)) {
            if (!json_is_integer(code) || json_integer_value(code) < INT32_MIN + 1 ||
                json_integer_value(code) > INT32_MAX)
                return fail(err, name, "exit_code must be a 32-bit integer or null");
            m->exit_code = (int)json_integer_value(code);
        }
        return 0;
    }
    case EXEC_HELLO:
        m->backends = json_object_get(v, "backends");
        if (!json_is_array(m->backends))
            return fail(err, name, "needs a backends array");
        for (size_t i = 0; i < json_array_size(m->backends); i++)
            if (!plain_string(json_array_get(m->backends, i)))
                return fail(err, name, "backends must be strings");
        return 0;
    case EXEC_PROCESS: {
        const json_t *pid = json_object_get(v, "pid");
        if (!(m->backend_id = plain_string(json_object_get(v, "backend_id"))) || !json_is_integer(pid) ||
            json_integer_value(pid) <= 1 || json_integer_value(pid) > INT32_MAX ||
            !(m->pid_ns = plain_string(json_object_get(v, "pid_ns"))))
            return fail(err, name, "needs backend_id, a pid above 1 and pid_ns");
        m->pid = (int)json_integer_value(pid);
        return 0;
    }
    case EXEC_UNKNOWN:
        break;
    }
    BUG("parse_payload for kind %d", m->kind);
}

int exec_msg_parse(const char *line, size_t len, struct exec_msg *m, struct buf *err)
{
    json_error_t jerr;
    const json_t *id, *msg;
    const char *tag;
    json_t *val;

    memset(m, 0, sizeof(*m));
    m->exit_code = RUNTIME_EXIT_UNKNOWN;
    m->root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!m->root) {
        buf_printf(err, "invalid JSON: %s", jerr.text);
        return -EINVAL;
    }
    if (!json_is_object(m->root))
        return fail(err, NULL, "a line must be a JSON object {\"id\":...,\"message\":...}");
    id = json_object_get(m->root, "id");
    if (id && !json_is_null(id) && !(m->id = plain_string(id)))
        return fail(err, NULL, "id must be a string or null");
    msg = json_object_get(m->root, "message");
    if (!json_is_object(msg) || json_object_size(msg) != 1)
        return fail(err, NULL, "message must be an object with one variant tag");
    json_object_foreach((json_t *)msg, tag, val) {
        for (size_t i = 0; i < ARRAY_SIZE(kinds); i++)
            if (strcmp(kinds[i].name, tag) == 0)
                m->kind = kinds[i].kind;
        if (m->kind == EXEC_UNKNOWN) {
            buf_printf(err, "unknown message '%.64s'", tag);
            return -EINVAL;
        }
        return parse_payload(m, val, err);
    }
    return -EINVAL; /* not reached: the object has one member */
}

void exec_msg_release(struct exec_msg *m)
{
    json_decref(m->root);
    memset(m, 0, sizeof(*m));
}

/* {"id":id|null,"message":{tag:payload}}; steals payload. */
static char *envelope(const char *id, enum exec_kind kind, json_t *payload)
{
    json_t *root = json_object();
    json_t *msg = json_object();
    char *line;

    json_object_set_new(root, "id", id ? json_string_safe(id) : json_null());
    json_object_set_new(msg, exec_kind_name(kind), payload);
    json_object_set_new(root, "message", msg);
    line = json_dump_line(root);
    json_decref(root);
    return line;
}

static json_t *opaque(const json_t *v)
{
    return v ? json_sorted_copy(v) : json_null();
}

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

char *exec_encode_prepare(const char *id, const json_t *executable)
{
    return envelope(id, EXEC_PREPARE, opaque(executable));
}

char *exec_encode_spawn(const char *id, const struct spawn_spec *spec)
{
    json_t *args = json_array();

    json_array_append_new(args, json_string(spec->backend_id));
    json_array_append_new(args, opaque(spec->executable));
    if (spec->key) {
        const struct acquired_key *k = spec->key;
        json_t *ak = json_object();
        json_object_set_new(ak, "key", json_pack("{s:s, s:s, s:s}", "name", k->name ? k->name : "", "namespace",
                                                 k->namespace ? k->namespace : "", "tag", k->tag ? k->tag : ""));
        json_object_set_new(ak, "deadlines",
                            json_pack("{s:I, s:I, s:I}", "renew_at", (json_int_t)k->renew_at, "soft_terminate_at",
                                      (json_int_t)k->soft_terminate_at, "hard_terminate_at",
                                      (json_int_t)k->hard_terminate_at));
        json_object_set_new(ak, "token", json_integer(k->token));
        json_array_append_new(args, ak);
    } else {
        json_array_append_new(args, json_null());
    }
    json_array_append_new(args, str_or_null(spec->static_token));
    return envelope(id, EXEC_SPAWN, args);
}

char *exec_encode_terminate(const char *id, const char *backend_id, bool hard)
{
    return envelope(id, EXEC_TERMINATE, json_pack("[s, b]", backend_id, hard));
}

char *exec_encode_wait(const char *id, const char *backend_id, const char *address)
{
    return envelope(id, EXEC_WAIT_FOR_BACKEND, json_pack("[s, s]", backend_id, address));
}

char *exec_encode_result(enum exec_kind kind, const char *id, const struct runtime_result *res)
{
    const char *msg = res->error ? res->error : "error";
    json_t *inner;

    if (res->status < 0) {
        if (kind == EXEC_WAIT_RESULT)
            inner = res->status == -ETIMEDOUT ? json_string("StartupTimeout")
                                              : json_pack("{s:o}", "Other", json_string_safe(msg));
        else
            inner = json_string_safe(msg);
        return envelope(id, kind, json_pack("{s:o}", "Err", inner));
    }
    switch (kind) {
    case EXEC_PREPARE_RESULT:
    case EXEC_WAIT_RESULT:
        inner = json_null();
        break;
    case EXEC_TERMINATE_RESULT:
        inner = json_boolean(res->was_running);
        break;
    case EXEC_SPAWN_RESULT:
        inner = json_pack("{s:o, s:i}", "container_id", json_string_safe(res->container_id ? res->container_id : ""),
                          "port", (int)res->port);
        break;
    default:
        BUG("exec_encode_result for kind %d", kind);
    }
    return envelope(id, kind, json_pack("{s:o}", "Ok", inner));
}

char *exec_encode_error(const char *id, const char *message)
{
    return envelope(id, EXEC_ERROR, json_string_safe(message));
}

static json_t *u64(uint64_t v)
{
    /* jansson integers are signed 64-bit; nothing real comes near the top. */
    return json_integer(v > INT64_MAX ? INT64_MAX : (json_int_t)v);
}

char *exec_encode_metrics(const struct backend_metrics *m)
{
    json_t *o = json_object();

    json_object_set_new(o, "backend_id", json_string(m->backend_id));
    json_object_set_new(o, "mem_used", u64(m->mem_used));
    json_object_set_new(o, "mem_total", u64(m->mem_total));
    json_object_set_new(o, "mem_active", u64(m->mem_active));
    json_object_set_new(o, "mem_inactive", u64(m->mem_inactive));
    json_object_set_new(o, "mem_unevictable", u64(m->mem_unevictable));
    json_object_set_new(o, "mem_limit", u64(m->mem_limit));
    json_object_set_new(o, "cpu_used", u64(m->cpu_used));
    json_object_set_new(o, "sys_cpu", u64(m->sys_cpu));
    return envelope(NULL, EXEC_METRICS, o);
}

char *exec_encode_exit(const char *backend_id, int exit_code)
{
    json_t *o = json_object();

    json_object_set_new(o, "backend_id", json_string(backend_id));
    json_object_set_new(o, "exit_code", exit_code == RUNTIME_EXIT_UNKNOWN ? json_null() : json_integer(exit_code));
    return envelope(NULL, EXEC_TERMINATE_EVENT, o);
}

char *exec_encode_hello(const char *const *backend_ids, size_t n)
{
    json_t *arr = json_array();

    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, json_string(backend_ids[i]));
    return envelope(NULL, EXEC_HELLO, json_pack("{s:o}", "backends", arr));
}

char *exec_encode_process(const char *backend_id, int pid, const char *pid_ns)
{
    return envelope(NULL, EXEC_PROCESS, json_pack("{s:o, s:i, s:o}", "backend_id", json_string_safe(backend_id), "pid",
                                                  pid, "pid_ns", json_string_safe(pid_ns)));
}

const char *exec_pid_namespace(void)
{
    static char ns[64];

    if (!ns[0]) {
        ssize_t n = readlink("/proc/self/ns/pid", ns, sizeof(ns) - 1);
        ns[n > 0 ? n : 0] = '\0';
    }
    return ns;
}
