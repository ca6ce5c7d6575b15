/* SPDX-License-Identifier: MIT */
/*
 * runtime_docker.c - backends as Docker containers, through the Engine API
 * on its Unix socket (spec §14.2-§14.9), asynchronously on the drone's loop
 * (docker_client.h: libcurl multi driven by libuv; no docker CLI).
 *
 * The executable is Plane's DockerExecutorConfig (§4.6). prepare inspects
 * and pulls the image per pull_policy; spawn creates and starts a container
 * named plane-<backend id>, labelled dev.plane.backend=true (and
 * dev.plane.backend.id=<id>), with the §18 environment and the
 * resource_limits as HostConfig. On the default bridge network the
 * container's 8080/tcp is published on a random host port read back from
 * inspect; with host networking (--docker-network host) we pick a free port
 * ourselves and pass it as PORT. Soft terminate is the Engine's stop (SIGTERM,
 * SIGKILL after the grace period), hard terminate its kill.
 *
 * One long-lived events stream (type container, die/stop/start, our label)
 * reports exits, first event per container wins, and starts a stats stream
 * per running container for metrics. If the stream breaks (dockerd
 * restarting) it is reopened with backoff, and once it is back we list our
 * containers and report every backend we believed running that has exited
 * or vanished meanwhile, so no exit is lost. Closing the runtime leaves
 * containers running, as Plane's drone does: a restarted drone finds them
 * (adopting those still running, so terminate and exits work for them) and
 * its state store terminates them.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/log.h"
#include "../common/names.h"
#include "../common/net.h"
#include "../common/xalloc.h"
#include "docker_client.h"
#include "ready_probe.h"
#include "runtime.h"

#define DEFAULT_SOCKET "/var/run/docker.sock"
#define LABEL "dev.plane.backend"
#define LABEL_ID "dev.plane.backend.id"
#define NAME_PREFIX "plane-"
#define CONTAINER_PORT "8080" /* §14.3, §18 */
#define HOST_PORT_MIN 30000   /* host networking: ours, apart from the process runtime's 20000-29999 */
#define HOST_PORT_MAX 31999   /* and below the kernel's ephemeral range (32768+) */
#define PORT_TRIES 3          /* §14.3: port discovery, 3 tries 100 ms apart */
#define PORT_RETRY_MS 100
#define REQUEST_TIMEOUT_MS 60000L
#define EVENTS_BACKOFF_MIN_MS 100
#define EVENTS_BACKOFF_MAX_MS 5000
#define RECONCILE_TRIES 5

enum pull_policy { PULL_IF_NOT_PRESENT, PULL_ALWAYS, PULL_NEVER };
enum container_state { CONTAINER_STARTING, CONTAINER_RUNNING, CONTAINER_GONE };
enum verdict { VERDICT_ALIVE, VERDICT_EXITED, VERDICT_GONE };

struct docker_runtime {
    struct runtime base; /* must be first */
    struct docker_client *client;
    char *socket_path;        /* owned */
    char *network;            /* owned; NULL: the default bridge */
    char *oci_runtime;        /* owned; HostConfig.Runtime or NULL */
    json_t *log_config;       /* owned; HostConfig.LogConfig or NULL */
    char *mount_base;         /* owned or NULL */
    bool prune_images;
    struct list_node containers; /* of struct container, until freed */
    struct list_node calls;      /* of struct call, in flight */
    struct docker_request *events; /* the events stream, or NULL while down */
    uv_timer_t events_timer;     /* reopens the events stream */
    unsigned events_backoff_ms;
    bool events_up;              /* the stream's headers arrived */
    bool events_warned;          /* said once that the stream is down */
    bool adopted;                /* the first reconcile ran */
    bool released;               /* the first reconcile is over, or cannot happen now */
    struct list_node held;       /* of struct call: waits and terminates held until released */
    bool reconciling;
    bool pruning;
    uint16_t next_port;
};

struct waiter {
    struct list_node node; /* in container->waiters */
    struct runtime_op *op;
    struct container *c; /* a reference */
    struct ready_probe *probe;
};

struct container {
    struct list_node node; /* in runtime->containers */
    struct docker_runtime *drt;
    char *backend_id;      /* owned */
    char *container_id;    /* owned; NULL until created */
    enum container_state state;
    unsigned refs;         /* the runtime's (until gone), calls', waiters', the stats stream's */
    uint16_t port;         /* host networking: the port we reserved */
    int pid;               /* its init process on this host (State.Pid), once started */
    uint64_t spawn_ms;     /* uv_now() when its spawn began */
    bool adopted;          /* found running at open */
    bool exit_seen;        /* died while starting: reported once the spawn is done */
    int exit_code;
    struct list_node waiters;  /* of struct waiter */
    struct list_node deferred; /* of struct call: terminates waiting for the spawn */
    struct docker_request *stats;
    uint64_t last_emit_ms; /* uv_now() of the last metrics sample sent */
    bool emitted;
    bool have_prev;
    uint64_t prev_cpu, prev_sys;
};

/* One request chain in flight (an operation's, or our own). */
struct call {
    struct list_node node;  /* in runtime->calls */
    struct list_node wait;  /* in container->deferred while deferred */
    struct docker_runtime *drt;
    struct docker_request *req; /* in flight, or NULL */
    struct runtime_op *op;      /* borrowed until completed, or NULL */
    struct container *c;        /* a reference, or NULL */
    uv_timer_t timer;           /* for retries; initialised on first use */
    bool has_timer;
    int tries;
    bool hard;        /* terminate */
    bool frozen;      /* freeze: pause (else unpause) */
    enum pull_policy policy;
    char *image;      /* owned: prepare, spawn */
    char *auth;       /* owned: X-Registry-Auth */
    char *body;       /* owned: spawn's create request, for a retry */
    char *error;      /* owned: the first error a pull stream reported */
    const char *what; /* prune: "containers" or "images" */
    int verdict;      /* reconcile: what the listing said about k->c */
    bool has_disk_limit;
    bool recreated;   /* spawn: created again after a prune took the first one */
    bool held_wait;   /* held: a wait_ready for the address in body (else a terminate) */
};

/* The DockerExecutorConfig; strings borrowed from the JSON. */
struct docker_exec {
    const char *image;
    enum pull_policy policy;
    const char *username, *password;
    const json_t *env;     /* object or NULL */
    int64_t memory_bytes;  /* 0: none (every limit) */
    int64_t cpu_period_us;
    int64_t cpu_percent;
    int64_t cpu_time_s;
    int64_t disk_bytes;
    const json_t *mount;   /* true, false, a string, or NULL */
    const char *network;   /* network_name or NULL */
};

static struct docker_runtime *to_docker(struct runtime *rt)
{
    assert(rt->ops == &runtime_docker_ops);
    return (struct docker_runtime *)rt;
}

/* ---- executable -------------------------------------------------------- */

static bool image_name_ok(const char *s)
{
    static const char ok[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/:@";

    return *s && strlen(s) <= 512 && strspn(s, ok) == strlen(s) && s[0] != '/' && s[0] != ':';
}

static int parse_exec(const json_t *x, struct docker_exec *e, struct buf *err)
{
    const json_t *v;

    memset(e, 0, sizeof(*e));
    if (!json_is_object(x)) {
        buf_printf(err, "executable must be a DockerExecutorConfig object with an \"image\"");
        return -EINVAL;
    }
    e->image = json_string_value(json_object_get(x, "image"));
    if (!e->image || !image_name_ok(e->image)) {
        buf_printf(err, "executable.image must be an image reference such as \"name:tag\"");
        return -EINVAL;
    }
    v = json_object_get(x, "pull_policy");
    if (v && !json_is_null(v)) {
        const char *p = json_string_value(v);
        if (p && strcmp(p, "IfNotPresent") == 0)
            e->policy = PULL_IF_NOT_PRESENT;
        else if (p && strcmp(p, "Always") == 0)
            e->policy = PULL_ALWAYS;
        else if (p && strcmp(p, "Never") == 0)
            e->policy = PULL_NEVER;
        else {
            buf_printf(err, "executable.pull_policy must be \"IfNotPresent\", \"Always\" or \"Never\"");
            return -EINVAL;
        }
    }
    v = json_object_get(x, "credentials");
    if (v && !json_is_null(v)) {
        e->username = json_string_value(json_object_get(v, "username"));
        e->password = json_string_value(json_object_get(v, "password"));
        if (!e->username || !e->password) {
            buf_printf(err, "executable.credentials must be {\"username\":…, \"password\":…}");
            return -EINVAL;
        }
    }
    v = json_object_get(x, "env");
    if (v && !json_is_null(v)) {
        const char *k;
        json_t *s;
        if (!json_is_object(v)) {
            buf_printf(err, "executable.env must be an object of strings");
            return -EINVAL;
        }
        json_object_foreach((json_t *)v, k, s) {
            if (!json_is_string(s) || !*k || strchr(k, '=') ||
                strlen(json_string_value(s)) != json_string_length(s)) {
                buf_printf(err, "executable.env.%s must be a string (and the name non-empty, without '=')", k);
                return -EINVAL;
            }
        }
        e->env = v;
    }
    v = json_object_get(x, "resource_limits");
    if (v && !json_is_null(v)) {
        if (!json_is_object(v)) {
            buf_printf(err, "executable.resource_limits must be an object");
            return -EINVAL;
        }
        if (runtime_limit(v, "memory_limit_bytes", INT64_MAX, &e->memory_bytes, err) < 0 ||
            runtime_limit(v, "cpu_period", 1000000, &e->cpu_period_us, err) < 0 ||
            runtime_limit(v, "cpu_period_percent", 255, &e->cpu_percent, err) < 0 ||
            runtime_limit(v, "cpu_time_limit", INT64_MAX, &e->cpu_time_s, err) < 0 ||
            runtime_limit(v, "disk_limit_bytes", INT64_MAX, &e->disk_bytes, err) < 0)
            return -EINVAL;
    }
    v = json_object_get(x, "mount");
    if (v && !json_is_null(v)) {
        if (!json_is_boolean(v) && !json_is_string(v)) {
            buf_printf(err, "executable.mount must be true, false or a relative path");
            return -EINVAL;
        }
        e->mount = v;
    }
    v = json_object_get(x, "network_name");
    if (v && !json_is_null(v)) {
        e->network = json_string_value(v);
        if (!e->network || !*e->network) {
            buf_printf(err, "executable.network_name must be a non-empty string");
            return -EINVAL;
        }
    }
    return 0;
}

/* X-Registry-Auth: base64url (padded, as Docker's decoder wants) of the auth JSON. */
static char *registry_auth(const struct docker_exec *e)
{
    const char *slash = strchr(e->image, '/');
    char *server = NULL;
    json_t *j;
    char *raw, *out;
    size_t n, o;

    if (!e->username)
        return NULL;
    /* The registry is the first component if it looks like a host (§ Docker reference grammar). */
    if (slash) {
        char *first = xstrndup(e->image, (size_t)(slash - e->image));
        if (strchr(first, '.') || strchr(first, ':') || strcmp(first, "localhost") == 0)
            server = first;
        else
            free(first);
    }
    j = json_pack("{s:s, s:s, s:s}", "username", e->username, "password", e->password, "serveraddress",
                  server ? server : "https://index.docker.io/v1/");
    raw = json_dumps(j, JSON_COMPACT);
    n = strlen(raw);
    out = xmalloc(4 * (n / 3 + 2) + 4);
    o = base64url_encode((const unsigned char *)raw, n, out);
    while (o % 4)
        out[o++] = '=';
    out[o] = '\0';
    free(raw);
    free(server);
    json_decref(j);
    return out;
}

/* "tag=latest" is needed when the reference names neither a tag nor a digest (else all tags are pulled). */
static bool image_has_tag(const char *image)
{
    const char *last = strrchr(image, '/');

    last = last ? last + 1 : image;
    return strchr(last, ':') || strchr(image, '@');
}

/* ---- containers and calls ---------------------------------------------- */

static struct container *container_find(struct docker_runtime *drt, const char *backend_id)
{
    struct list_node *pos, *tmp;

    list_for_each_safe(pos, tmp, &drt->containers) {
        struct container *c = list_entry(pos, struct container, node);
        if (c->state != CONTAINER_GONE && strcmp(c->backend_id, backend_id) == 0)
            return c;
    }
    return NULL;
}

static struct container *container_by_docker_id(struct docker_runtime *drt, const char *id)
{
    struct list_node *pos, *tmp;

    list_for_each_safe(pos, tmp, &drt->containers) {
        struct container *c = list_entry(pos, struct container, node);
        if (c->state != CONTAINER_GONE && c->container_id && strcmp(c->container_id, id) == 0)
            return c;
    }
    return NULL;
}

static struct container *container_new(struct docker_runtime *drt, const char *backend_id)
{
    struct container *c = xcalloc(1, sizeof(*c));

    c->drt = drt;
    c->backend_id = xstrdup(backend_id);
    c->refs = 1; /* the runtime's, until gone */
    list_init(&c->waiters);
    list_init(&c->deferred);
    list_insert_tail(&drt->containers, &c->node);
    return c;
}

static void container_free(struct container *c)
{
    list_remove(&c->node);
    free(c->backend_id);
    free(c->container_id);
    free(c);
}

static struct container *container_get(struct container *c)
{
    if (c)
        c->refs++;
    return c;
}

static void container_put(struct container *c)
{
    if (c && --c->refs == 0)
        container_free(c);
}

static struct call *call_new(struct docker_runtime *drt, struct runtime_op *op, struct container *c)
{
    struct call *k = xcalloc(1, sizeof(*k));

    k->drt = drt;
    k->op = op;
    k->c = container_get(c);
    list_init(&k->wait);
    list_insert_tail(&drt->calls, &k->node);
    return k;
}

static void call_free(void *ptr)
{
    struct call *k = ptr;

    container_put(k->c);
    free(k->image);
    free(k->auth);
    free(k->body);
    free(k->error);
    free(k);
}

/* k is finished: no request in flight, its operation (if any) completed. */
static void call_end(struct call *k)
{
    if (k->drt->base.closing)
        return; /* docker_close closed its timer; docker_free frees it */
    list_remove(&k->node);
    list_remove(&k->wait);
    if (k->has_timer)
        runtime_close_handle(&k->drt->base, (uv_handle_t *)&k->timer, call_free, k);
    else
        call_free(k);
}

static void call_request(struct call *k, const char *method, const char *path, const char *body,
                         long timeout_ms, docker_done_fn *done)
{
    struct docker_request_spec s = {
        .method = method, .path = path, .body = body, .timeout_ms = timeout_ms, .on_done = done, .arg = k,
    };

    k->req = docker_request_start(k->drt->client, &s);
}

static void call_after(struct call *k, unsigned ms, uv_timer_cb cb)
{
    if (!k->has_timer) {
        uv_timer_init(k->drt->base.loop, &k->timer);
        k->has_timer = true;
    }
    uv_timer_start(&k->timer, cb, ms, 0);
}

/* Fails k's operation with the printf-style message, and ends k. */
__attribute__((format(printf, 3, 4))) static void call_fail(struct call *k, int status, const char *fmt, ...)
{
    va_list ap;
    char *msg;

    va_start(ap, fmt);
    msg = xvasprintf(fmt, ap);
    va_end(ap);
    if (k->op)
        runtime_op_complete(k->op, status, "%s", msg);
    free(msg);
    call_end(k);
}

/* The error of a response in one line: the transport's or Docker's message. */
static const char *response_error(const struct docker_response *res)
{
    if (res->message)
        return res->message;
    return "unexpected response";
}

static int response_status(const struct docker_response *res)
{
    if (res->error < 0)
        return res->error;
    if (res->status == 404)
        return -ENOENT;
    if (res->status == 409)
        return -EEXIST;
    return -EIO;
}

static void stats_start(struct container *c);
static void run_terminate(struct call *k);
static void docker_wait_ready(struct runtime *rt, struct runtime_op *op, const char *address);

static void waiter_done(void *arg, int status, const char *error)
{
    struct waiter *w = arg;

    list_remove(&w->node);
    w->op->impl = NULL;
    if (status < 0)
        runtime_op_complete(w->op, status, "%s", error ? error : strerror(-status));
    else
        runtime_op_complete(w->op, 0, NULL);
    container_put(w->c);
    free(w);
}

/* Runs terminates that waited for the spawn to finish. */
static void run_deferred(struct container *c)
{
    struct list_node *pos, *tmp;

    list_for_each_safe(pos, tmp, &c->deferred) {
        struct call *k = list_entry(pos, struct call, wait);
        list_remove(&k->wait);
        run_terminate(k);
    }
}

/*
 * c is gone: end its streams and waits, and report its exit if asked to.
 * Callers must not start anything on the runtime afterwards if it is closing
 * (the exit callback may have closed it).
 */
static void container_gone(struct container *c, int code, bool report)
{
    struct docker_runtime *drt = c->drt;
    struct list_node *pos, *tmp;
    char msg[96];

    if (c->state == CONTAINER_GONE)
        return;
    c->state = CONTAINER_GONE;
    container_get(c); /* for the rest of this function */
    if (c->stats) {
        docker_request_cancel(c->stats);
        c->stats = NULL;
        c->refs--; /* the stream's reference; ours keeps c */
    }
    if (code == RUNTIME_EXIT_UNKNOWN)
        snprintf(msg, sizeof(msg), "backend exited before it was ready");
    else
        snprintf(msg, sizeof(msg), "backend exited with code %d before it was ready", code);
    list_for_each_safe(pos, tmp, &c->waiters)
        ready_probe_stop(list_entry(pos, struct waiter, node)->probe, -ECHILD, msg);
    run_deferred(c);
    if (report) {
        if (code == RUNTIME_EXIT_UNKNOWN)
            log_info("backend %s: container %.12s is gone", c->backend_id, c->container_id ? c->container_id : "-");
        else
            log_info("backend %s: container %.12s exited with code %d", c->backend_id,
                     c->container_id ? c->container_id : "-", code);
        runtime_emit_exit(&drt->base, c->backend_id, code);
    }
    c->refs--; /* the runtime's; ours keeps c */
    container_put(c);
}

/* Docker says c exited (first word wins); one still starting reports it when its spawn is done. */
static void container_exited(struct container *c, int code)
{
    if (c->state == CONTAINER_STARTING) {
        if (!c->exit_seen) {
            c->exit_seen = true;
            c->exit_code = code;
        }
        return;
    }
    container_gone(c, code, true);
}

/* ---- prepare ------------------------------------------------------------ */

static void pull_line(void *arg, int status, const char *line, size_t len)
{
    struct call *k = arg;
    json_t *j;

    (void)status;
    if (!line || k->error)
        return;
    j = json_loadb(line, len, 0, NULL);
    const char *e = json_string_value(json_object_get(j, "error"));
    if (!e)
        e = json_string_value(json_object_get(json_object_get(j, "errorDetail"), "message"));
    if (e)
        k->error = xstrdup(e);
    json_decref(j);
}

static void pull_done(void *arg, const struct docker_response *res)
{
    struct call *k = arg;

    k->req = NULL;
    if (res->error < 0 || res->status != 200 || k->error) {
        const char *why = res->error < 0 || res->status != 200 ? response_error(res) : k->error;
        log_warn("image %s: cannot pull: %s", k->image, why);
        call_fail(k, res->error < 0 ? res->error : -EIO, "cannot pull image '%s': %s", k->image, why);
    } else {
        log_info("image %s: pulled", k->image);
        runtime_op_complete(k->op, 0, NULL);
        call_end(k);
    }
}

static void pull_start(struct call *k)
{
    struct buf path = BUF_INIT;
    struct docker_request_spec s = {
        .method = "POST", .auth = k->auth, .on_line = pull_line, .on_done = pull_done, .arg = k,
    };

    buf_append_str(&path, "/images/create?fromImage=");
    docker_url_escape(&path, k->image);
    if (!image_has_tag(k->image))
        buf_append_str(&path, "&tag=latest");
    s.path = buf_cstr(&path);
    log_info("image %s: pulling", k->image);
    k->req = docker_request_start(k->drt->client, &s);
    buf_release(&path);
}

static void image_inspect_done(void *arg, const struct docker_response *res)
{
    struct call *k = arg;

    k->req = NULL;
    if (res->error == 0 && res->status == 200) {
        runtime_op_complete(k->op, 0, NULL);
        call_end(k);
    } else if (res->error == 0 && res->status == 404) {
        if (k->policy == PULL_NEVER)
            call_fail(k, -ENOENT, "image '%s' is not present and pull_policy is Never", k->image);
        else
            pull_start(k);
    } else {
        call_fail(k, response_status(res), "cannot inspect image '%s': %s", k->image, response_error(res));
    }
}

static void docker_prepare(struct runtime *rt, struct runtime_op *op, const json_t *executable)
{
    struct docker_runtime *drt = to_docker(rt);
    struct docker_exec e;
    struct buf err = BUF_INIT;
    struct call *k;

    if (parse_exec(executable, &e, &err) < 0) {
        runtime_op_complete(op, -EINVAL, "%s", buf_cstr(&err));
        buf_release(&err);
        return;
    }
    k = call_new(drt, op, NULL);
    k->image = xstrdup(e.image);
    k->auth = registry_auth(&e);
    k->policy = e.policy;
    if (e.policy == PULL_ALWAYS) {
        pull_start(k);
    } else {
        /* Never: still look, so a missing image fails here, in `loading`, with a clear message. */
        char *path = xasprintf("/images/%s/json", e.image);
        call_request(k, "GET", path, NULL, REQUEST_TIMEOUT_MS, image_inspect_done);
        free(path);
    }
}

/* ---- spawn -------------------------------------------------------------- */

static bool port_taken(struct docker_runtime *drt, uint16_t port)
{
    struct list_node *pos, *tmp;

    list_for_each_safe(pos, tmp, &drt->containers) {
        struct container *c = list_entry(pos, struct container, node);
        if (c->state != CONTAINER_GONE && c->port == port)
            return true;
    }
    return false;
}

/* A free port for a host-networked backend: not ours already, and bindable on every address. */
static int pick_port(struct docker_runtime *drt)
{
    for (int tries = 0; tries <= HOST_PORT_MAX - HOST_PORT_MIN; tries++) {
        uint16_t port = drt->next_port;
        drt->next_port = port >= HOST_PORT_MAX ? HOST_PORT_MIN : port + 1;
        if (!port_taken(drt, port) && net_pick_free_port("0.0.0.0", port) == (int)port)
            return port;
    }
    return -EADDRINUSE;
}

/* The host directory to mount at /plane-data (§14.4); 0 with *out NULL for none. */
static int mount_dir(struct docker_runtime *drt, const struct docker_exec *e, const struct spawn_spec *spec,
                     char **out, struct buf *err)
{
    struct buf dir = BUF_INIT;
    int rc = 0;

    *out = NULL;
    if (!e->mount || json_is_false(e->mount))
        return 0;
    if (!drt->mount_base) {
        log_warn("backend %s: asks for a mount but the drone has no --mount-base; not mounting", spec->backend_id);
        return 0;
    }
    buf_append_str(&dir, drt->mount_base);
    if (json_is_true(e->mount)) {
        const char *key = spec->key ? spec->key->name : NULL;
        if (!key || !*key || strchr(key, '/') || strcmp(key, ".") == 0 || strcmp(key, "..") == 0) {
            buf_printf(err, "mount: true needs a key that is a plain file name");
            rc = -EINVAL;
            goto out;
        }
        buf_printf(&dir, "/%s", key);
    } else {
        const char *p = json_string_value(e->mount);
        char *copy = xstrdup(p);
        char *save = NULL;
        if (p[0] == '/' || strcmp(p, ".") == 0 || strncmp(p, "./", 2) == 0) {
            rc = -EINVAL;
        } else {
            for (char *part = strtok_r(copy, "/", &save); part; part = strtok_r(NULL, "/", &save)) {
                if (strcmp(part, "..") == 0) {
                    rc = -EINVAL;
                    break;
                }
                if (strcmp(part, ".") != 0) /* interior "." is dropped, as path normalisation does */
                    buf_printf(&dir, "/%s", part);
            }
        }
        free(copy);
        if (rc < 0) {
            buf_printf(err, "mount path '%s' is not under the mount base", p);
            goto out;
        }
    }
    if (strchr(buf_cstr(&dir), ':')) {
        buf_printf(err, "mount path '%s' contains ':'", buf_cstr(&dir));
        rc = -EINVAL;
        goto out;
    }
    *out = buf_detach(&dir);
out:
    buf_release(&dir);
    return rc;
}

/* The body of POST /containers/create (§14.3). */
static json_t *create_body(struct docker_runtime *drt, const struct docker_exec *e, const struct spawn_spec *spec,
                           const char *network, uint16_t host_port, const char *mount)
{
    json_t *env = json_array();
    json_t *hc = json_object();
    json_t *body;
    const char *k;
    json_t *v;

    if (e->env) {
        json_object_foreach((json_t *)e->env, k, v) {
            /* Ours win (§14.3): skip user values we are about to set. */
            if (strcmp(k, "PORT") == 0 || strncmp(k, "SESSION_BACKEND_", 16) == 0)
                continue;
            json_array_append_new(env, json_sprintf("%s=%s", k, json_string_value(v)));
        }
    }
    if (host_port)
        json_array_append_new(env, json_sprintf("PORT=%u", host_port));
    else
        json_array_append_new(env, json_string("PORT=" CONTAINER_PORT));
    json_array_append_new(env, json_sprintf("SESSION_BACKEND_ID=%s", spec->backend_id));
    if (spec->key) {
        json_array_append_new(env, json_sprintf("SESSION_BACKEND_KEY=%s", spec->key->name ? spec->key->name : ""));
        json_array_append_new(env, json_sprintf("SESSION_BACKEND_FENCING_TOKEN=%" PRId64, spec->key->token));
    }
    if (spec->static_token)
        json_array_append_new(env, json_sprintf("SESSION_BACKEND_STATIC_TOKEN=%s", spec->static_token));

    if (network)
        json_object_set_new(hc, "NetworkMode", json_string(network));
    if (!host_port)
        json_object_set_new(hc, "PortBindings",
                            json_pack("{s:[{s:s, s:s}]}", CONTAINER_PORT "/tcp", "HostIp", "", "HostPort", ""));
    if (e->memory_bytes > 0)
        json_object_set_new(hc, "Memory", json_integer(e->memory_bytes));
    if (e->cpu_period_us > 0)
        json_object_set_new(hc, "CpuPeriod", json_integer(e->cpu_period_us));
    if (e->cpu_percent > 0) {
        int64_t period = e->cpu_period_us > 0 ? e->cpu_period_us : 100000;
        json_object_set_new(hc, "CpuQuota", json_integer(period * e->cpu_percent / 100));
    }
    if (e->cpu_time_s > 0)
        json_object_set_new(hc, "Ulimits",
                            json_pack("[{s:s, s:I, s:I}]", "Name", "cpu", "Soft", (json_int_t)e->cpu_time_s, "Hard",
                                      (json_int_t)e->cpu_time_s));
    if (e->disk_bytes > 0)
        json_object_set_new(hc, "StorageOpt", json_pack("{s:o}", "size", json_sprintf("%" PRId64, e->disk_bytes)));
    if (mount)
        json_object_set_new(hc, "Binds", json_pack("[o]", json_sprintf("%s:/plane-data", mount)));
    if (drt->oci_runtime)
        json_object_set_new(hc, "Runtime", json_string(drt->oci_runtime));
    if (drt->log_config)
        json_object_set(hc, "LogConfig", drt->log_config);

    body = json_pack("{s:s, s:o, s:{s:s, s:s}, s:o}", "Image", e->image, "Env", env, "Labels", LABEL, "true",
                     LABEL_ID, spec->backend_id, "HostConfig", hc);
    if (!host_port)
        json_object_set_new(body, "ExposedPorts", json_pack("{s:{}}", CONTAINER_PORT "/tcp"));
    return body;
}

static void spawn_create(struct call *k);
static void forget_done(void *arg, const struct docker_response *res);

/* The spawn failed: forget the container (removing it if it was created) and fail the operation. */
__attribute__((format(printf, 3, 4))) static void spawn_fail(struct call *k, int status, const char *fmt, ...)
{
    struct docker_runtime *drt = k->drt;
    struct container *c = k->c;
    va_list ap;
    char *msg;

    va_start(ap, fmt);
    msg = xvasprintf(fmt, ap);
    va_end(ap);
    log_warn("backend %s: spawn failed: %s", c->backend_id, msg);
    runtime_op_complete(k->op, status, "%s", msg);
    free(msg);
    if (c->container_id && !drt->base.closing) {
        /* Nobody will terminate it: remove it now (fire and forget). */
        struct call *rm = call_new(drt, NULL, NULL);
        char *path = xasprintf("/containers/%s?force=1", c->container_id);
        call_request(rm, "DELETE", path, NULL, REQUEST_TIMEOUT_MS, forget_done);
        free(path);
    }
    container_gone(c, 0, false); /* a failed spawn reports no exit */
    call_end(k);
}

/* Done callback of requests whose answer does not matter. */
static void forget_done(void *arg, const struct docker_response *res)
{
    struct call *k = arg;

    k->req = NULL;
    if (res->error < 0 || res->status >= 400)
        log_debug("docker: ignored error: %s", response_error(res));
    call_end(k);
}

static void spawn_done(struct call *k, uint16_t port)
{
    struct container *c = k->c;
    struct docker_runtime *drt = k->drt;

    c->state = CONTAINER_RUNNING;
    if (!c->port)
        c->port = port;
    log_info("backend %s: started container %.12s on port %u", c->backend_id, c->container_id, port);
    k->op->res.port = port;
    k->op->res.pid = c->pid;
    k->op->res.container_id = xstrdup(c->container_id);
    runtime_op_complete(k->op, 0, NULL);
    k->op = NULL;
    /* The events stream may have started it before we knew its id. */
    if (drt->events_up && !c->exit_seen)
        stats_start(c);
    run_deferred(c);
    if (c->exit_seen)
        container_gone(c, c->exit_code, true);
    call_end(k);
}

static void port_inspect(struct call *k);

static void port_retry(uv_timer_t *t)
{
    port_inspect(container_of(t, struct call, timer));
}

static void port_inspect_done(void *arg, const struct docker_response *res)
{
    struct call *k = arg;
    json_t *j = NULL;
    int port = 0;

    k->req = NULL;
    if (res->error == 0 && res->status == 200) {
        j = json_loads(res->body, 0, NULL);
        json_t *pid = json_object_get(json_object_get(j, "State"), "Pid");
        if (json_is_integer(pid) && json_integer_value(pid) > 0 && json_integer_value(pid) <= INT32_MAX)
            k->c->pid = (int)json_integer_value(pid);
        json_t *ports = json_object_get(json_object_get(j, "NetworkSettings"), "Ports");
        json_t *first = json_array_get(json_object_get(ports, CONTAINER_PORT "/tcp"), 0);
        const char *hp = json_string_value(json_object_get(first, "HostPort"));
        if (hp && !k->c->port)
            port = atoi(hp);
        json_decref(j);
    } else if (res->error < 0 || res->status != 404) {
        spawn_fail(k, response_status(res), "cannot inspect container %.12s: %s", k->c->container_id,
                   response_error(res));
        return;
    }
    if (!port && k->c->port)
        port = k->c->port; /* host networking: ours, whatever the inspect said */
    if (port > 0 && port <= 65535) {
        spawn_done(k, (uint16_t)port);
    } else if (++k->tries < PORT_TRIES && res->status == 200) {
        call_after(k, PORT_RETRY_MS, port_retry);
    } else {
        spawn_fail(k, -EIO, "container %.12s has no host port for " CONTAINER_PORT "/tcp%s", k->c->container_id,
                   k->c->exit_seen ? " (it exited)" : "");
    }
}

static void port_inspect(struct call *k)
{
    char *path = xasprintf("/containers/%s/json", k->c->container_id);

    call_request(k, "GET", path, NULL, REQUEST_TIMEOUT_MS, port_inspect_done);
    free(path);
}

static void start_done(void *arg, const struct docker_response *res)
{
    struct call *k = arg;

    k->req = NULL;
    if (res->error == 0 && res->status == 404 && !k->recreated) {
        /* A prune removed it between create and start (it was not running yet): once more. */
        log_info("backend %s: container %.12s vanished before it started; creating it again", k->c->backend_id,
                 k->c->container_id);
        k->recreated = true;
        free(k->c->container_id);
        k->c->container_id = NULL;
        spawn_create(k);
        return;
    }
    if (res->error < 0 || (res->status != 204 && res->status != 304)) {
        spawn_fail(k, response_status(res), "cannot start container for backend %s: %s", k->c->backend_id,
                   response_error(res));
        return;
    }
    /* One inspect for its process (the lease fence's handle) and, with a bridge, its port. */
    k->tries = 0;
    port_inspect(k);
}

static void remove_stale_done(void *arg, const struct docker_response *res)
{
    struct call *k = arg;

    k->req = NULL;
    if (res->error < 0 || (res->status >= 400 && res->status != 404)) {
        spawn_fail(k, response_status(res), "cannot remove the old container " NAME_PREFIX "%s: %s",
                   k->c->backend_id, response_error(res));
        return;
    }
    spawn_create(k);
}

static void stale_inspect_done(void *arg, const struct docker_response *res)
{
    struct call *k = arg;
    json_t *j;

    k->req = NULL;
    if (res->error == 0 && res->status == 404) {
        spawn_create(k); /* gone meanwhile */
        return;
    }
    if (res->error < 0 || res->status != 200) {
        spawn_fail(k, response_status(res), "cannot inspect the old container " NAME_PREFIX "%s: %s",
                   k->c->backend_id, response_error(res));
        return;
    }
    j = json_loads(res->body, 0, NULL);
    bool running = json_is_true(json_object_get(json_object_get(j, "State"), "Running"));
    char *path = xasprintf("/containers/%s?force=1", json_string_value(json_object_get(j, "Id")));
    json_decref(j);
    if (running) {
        free(path);
        spawn_fail(k, -EEXIST, "a container named " NAME_PREFIX "%s is already running", k->c->backend_id);
        return;
    }
    /* An exited container of an earlier backend with this id: it only holds the name. */
    log_info("backend %s: removing the exited container that holds the name " NAME_PREFIX "%s", k->c->backend_id,
             k->c->backend_id);
    call_request(k, "DELETE", path, NULL, REQUEST_TIMEOUT_MS, remove_stale_done);
    free(path);
}

static void create_done(void *arg, const struct docker_response *res)
{
    struct call *k = arg;
    struct container *c = k->c;

    k->req = NULL;
    if (res->error == 0 && res->status == 201) {
        json_t *j = json_loads(res->body, 0, NULL);
        const char *id = json_string_value(json_object_get(j, "Id"));
        if (!id) {
            json_decref(j);
            spawn_fail(k, -EIO, "docker's create answer has no Id");
            return;
        }
        c->container_id = xstrdup(id);
        json_decref(j);
        char *path = xasprintf("/containers/%s/start", c->container_id);
        call_request(k, "POST", path, NULL, REQUEST_TIMEOUT_MS, start_done);
        free(path);
        return;
    }
    if (res->error == 0 && res->status == 409 && k->tries++ == 0) {
        char *path = xasprintf("/containers/" NAME_PREFIX "%s/json", c->backend_id);
        call_request(k, "GET", path, NULL, REQUEST_TIMEOUT_MS, stale_inspect_done);
        free(path);
        return;
    }
    if (res->error == 0 && res->status == 404)
        spawn_fail(k, -ENOENT, "image '%s' is not present (prepare pulls it unless pull_policy is Never): %s",
                   k->image, response_error(res));
    else if (res->error == 0 && k->has_disk_limit && res->message && strstr(res->message, "storage-opt"))
        spawn_fail(k, -ENOTSUP, "resource_limits.disk_limit_bytes cannot be applied here: %s", res->message);
    else
        spawn_fail(k, response_status(res), "cannot create container for backend %s: %s", c->backend_id,
                   response_error(res));
}

static void spawn_create(struct call *k)
{
    char *path = xasprintf("/containers/create?name=" NAME_PREFIX "%s", k->c->backend_id);

    call_request(k, "POST", path, k->body, REQUEST_TIMEOUT_MS, create_done);
    free(path);
}

static void docker_spawn(struct runtime *rt, struct runtime_op *op, const struct spawn_spec *spec)
{
    struct docker_runtime *drt = to_docker(rt);
    struct docker_exec e;
    struct buf err = BUF_INIT;
    char *dir = NULL;
    const char *network;
    json_t *body = NULL;
    struct container *c;
    struct call *k;
    int port = 0;
    int rc;

    rc = parse_exec(spec->executable, &e, &err);
    if (rc < 0)
        goto fail;
    if (container_find(drt, spec->backend_id)) {
        rc = -EEXIST;
        buf_printf(&err, "backend %s is already running here", spec->backend_id);
        goto fail;
    }
    network = e.network ? e.network : drt->network;
    if (network && strcmp(network, "host") == 0) {
        port = pick_port(drt);
        if (port < 0) {
            rc = port;
            buf_printf(&err, "no free port in %d-%d: %s", HOST_PORT_MIN, HOST_PORT_MAX, strerror(-rc));
            goto fail;
        }
    }
    rc = mount_dir(drt, &e, spec, &dir, &err);
    if (rc < 0)
        goto fail;
    body = create_body(drt, &e, spec, network, (uint16_t)port, dir);
    c = container_new(drt, spec->backend_id);
    c->state = CONTAINER_STARTING;
    c->spawn_ms = uv_now(rt->loop);
    c->port = (uint16_t)port;
    k = call_new(drt, op, c); /* k and the runtime hold c */
    k->image = xstrdup(e.image);
    k->has_disk_limit = e.disk_bytes > 0;
    k->body = json_dumps(body, JSON_COMPACT);
    spawn_create(k);
    goto out;
fail:
    runtime_op_complete(op, rc, "%s", buf_cstr(&err));
out:
    json_decref(body);
    free(dir);
    buf_release(&err);
}

/* ---- wait_ready and terminate ------------------------------------------ */

static void docker_wait_ready(struct runtime *rt, struct runtime_op *op, const char *address)
{
    struct docker_runtime *drt = to_docker(rt);
    struct container *c = container_find(drt, op->backend_id);
    struct buf err = BUF_INIT;
    struct waiter *w;

    if (!c && !drt->released) {
        /* Maybe a container a previous drone left running, not adopted yet: ask once we know. */
        struct call *k = call_new(drt, op, NULL);
        k->held_wait = true;
        k->body = xstrdup(address ? address : "");
        list_insert_tail(&drt->held, &k->wait);
        return;
    }
    if (!c) {
        runtime_op_complete(op, -ESRCH, "backend %s is not running", op->backend_id);
        return;
    }
    w = xcalloc(1, sizeof(*w));
    w->op = op;
    w->c = container_get(c);
    list_insert_tail(&c->waiters, &w->node);
    op->impl = w;
    w->probe = ready_probe_start(rt->loop, address, rt->ready_timeout_ms, waiter_done, w, &err);
    if (!w->probe)
        waiter_done(w, -EINVAL, buf_cstr(&err));
    buf_release(&err);
}

static void docker_cancel(struct runtime *rt, struct runtime_op *op)
{
    struct waiter *w = op->impl;

    (void)rt;
    if (op->kind == RUNTIME_OP_WAIT_READY && w)
        ready_probe_stop(w->probe, -ECANCELED, "cancelled");
}

static void terminate_done(void *arg, const struct docker_response *res)
{
    struct call *k = arg;

    k->req = NULL;
    if (res->error == 0 && res->status == 204) {
        k->op->res.was_running = true;
        runtime_op_complete(k->op, 0, NULL);
    } else if (res->error == 0 && (res->status == 304 || res->status == 404 || res->status == 409)) {
        /* Already stopped, never there, or not running: nothing was delivered (§14.5). */
        k->op->res.was_running = false;
        runtime_op_complete(k->op, 0, NULL);
    } else {
        runtime_op_complete(k->op, response_status(res), "cannot %s backend %s: %s", k->hard ? "kill" : "stop",
                            k->op->backend_id, response_error(res));
    }
    call_end(k);
}

static void run_terminate(struct call *k)
{
    struct docker_runtime *drt = k->drt;
    const char *id = k->c && k->c->container_id ? k->c->container_id : NULL;
    char *target = id ? xstrdup(id) : xasprintf(NAME_PREFIX "%s", k->op->backend_id);
    char *path;
    long timeout;

    if (k->hard) {
        path = xasprintf("/containers/%s/kill", target);
        timeout = REQUEST_TIMEOUT_MS;
    } else {
        /* The Engine sends SIGTERM, then SIGKILL after t whole seconds. */
        unsigned t = (drt->base.grace_ms + 999) / 1000;
        path = xasprintf("/containers/%s/stop?t=%u", target, t);
        timeout = (long)t * 1000 + REQUEST_TIMEOUT_MS;
    }
    log_info("backend %s: %s container %.12s", k->op->backend_id, k->hard ? "killing" : "stopping", target);
    call_request(k, "POST", path, NULL, timeout, terminate_done);
    free(path);
    free(target);
}

static void docker_terminate(struct runtime *rt, struct runtime_op *op, bool hard)
{
    struct docker_runtime *drt = to_docker(rt);
    struct container *c = container_find(drt, op->backend_id);
    struct call *k = call_new(drt, op, c);

    k->hard = hard;
    if (!c && !drt->released) {
        /* Maybe not adopted yet: terminate once we know, so its exit is reported too. */
        list_insert_tail(&drt->held, &k->wait);
        return;
    }
    if (c && c->state == CONTAINER_STARTING) {
        /* A stop now could beat the start: run it once the spawn is done. */
        list_insert_tail(&c->deferred, &k->wait);
        return;
    }
    run_terminate(k);
}

/* ---- freeze: the Engine's pause, the cgroup freezer underneath ---------- */

static void freeze_done(void *arg, const struct docker_response *res)
{
    struct call *k = arg;

    k->req = NULL;
    if (res->error == 0 && res->status == 204)
        runtime_op_complete(k->op, 0, NULL);
    else
        runtime_op_complete(k->op, response_status(res), "cannot %s backend %s: %s", k->frozen ? "pause" : "unpause",
                            k->op->backend_id, response_error(res));
    call_end(k);
}

/* A stop or kill of a paused container needs nothing more: the Engine unpauses it first. */
static void docker_freeze(struct runtime *rt, struct runtime_op *op, bool frozen)
{
    struct docker_runtime *drt = to_docker(rt);
    struct container *c = container_find(drt, op->backend_id);
    struct call *k;
    char *path;

    if (!c || c->state != CONTAINER_RUNNING || !c->container_id) {
        runtime_op_complete(op, -ESRCH, "backend %s is not running", op->backend_id);
        return;
    }
    k = call_new(drt, op, c);
    k->frozen = frozen;
    path = xasprintf("/containers/%s/%s", c->container_id, frozen ? "pause" : "unpause");
    call_request(k, "POST", path, NULL, REQUEST_TIMEOUT_MS, freeze_done);
    free(path);
}

/* ---- metrics ------------------------------------------------------------ */

static uint64_t get_u64(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);

    if (json_is_integer(v))
        return json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
    if (json_is_real(v))
        return json_real_value(v) > 0 ? (uint64_t)json_real_value(v) : 0;
    return 0;
}

static uint64_t sub0(uint64_t a, uint64_t b)
{
    return a > b ? a - b : 0;
}

/* One sample of the stats stream (§14.7), at most one per metrics interval. */
static void stats_line(void *arg, int status, const char *line, size_t len)
{
    struct container *c = arg;
    struct docker_runtime *drt = c->drt;
    uint64_t now = uv_now(drt->base.loop);
    json_t *j;

    (void)status;
    if (!line || c->state == CONTAINER_GONE)
        return;
    if (c->emitted && now - c->last_emit_ms + 50 < drt->base.metrics_interval_ms)
        return; /* the 50 ms slack keeps a 1 s interval from skipping Docker's 1 s samples */
    j = json_loadb(line, len, 0, NULL);
    if (!j) /* an integer beyond int64 (some kernels' "unlimited"): take numbers as reals */
        j = json_loadb(line, len, JSON_DECODE_INT_AS_REAL, NULL);
    const json_t *mem = json_object_get(j, "memory_stats");
    const json_t *cpu = json_object_get(j, "cpu_stats");
    const json_t *pre = json_object_get(j, "precpu_stats");
    const json_t *ms = json_object_get(mem, "stats");
    if (!json_object_get(mem, "usage") || !json_object_get(cpu, "system_cpu_usage")) {
        json_decref(j); /* no memory stats: not running, or not yet */
        return;
    }
    uint64_t cpu_now = get_u64(json_object_get(cpu, "cpu_usage"), "total_usage");
    uint64_t sys_now = get_u64(cpu, "system_cpu_usage");
    if (!c->have_prev) {
        /* The first sample: against Docker's previous one, which the very first lacks. */
        if (!json_object_get(pre, "system_cpu_usage")) {
            json_decref(j);
            return;
        }
        c->prev_cpu = get_u64(json_object_get(pre, "cpu_usage"), "total_usage");
        c->prev_sys = get_u64(pre, "system_cpu_usage");
    }
    if (cpu_now < c->prev_cpu || sys_now < c->prev_sys) {
        /* Counters went back (a restarted container): start over. */
        c->prev_cpu = cpu_now;
        c->prev_sys = sys_now;
        c->have_prev = true;
        json_decref(j);
        return;
    }
    struct backend_metrics m = {.backend_id = c->backend_id};
    uint64_t usage = get_u64(mem, "usage");
    m.cpu_used = cpu_now - c->prev_cpu;
    m.sys_cpu = sys_now - c->prev_sys;
    m.mem_limit = get_u64(mem, "limit");
    if (json_object_get(ms, "total_inactive_file")) { /* cgroup v1 */
        m.mem_active = get_u64(ms, "total_active_anon") + get_u64(ms, "total_active_file");
        m.mem_total = get_u64(ms, "total_rss") + get_u64(ms, "total_cache");
        m.mem_unevictable = get_u64(ms, "total_unevictable");
        m.mem_inactive = get_u64(ms, "total_inactive_anon") + get_u64(ms, "total_inactive_file");
        m.mem_used = sub0(usage, get_u64(ms, "total_inactive_file"));
    } else { /* cgroup v2 */
        m.mem_active = get_u64(ms, "active_anon") + get_u64(ms, "active_file");
        m.mem_total = get_u64(ms, "file") + get_u64(ms, "anon") + get_u64(ms, "kernel_stack") +
                      get_u64(ms, "sock") + get_u64(ms, "slab");
        m.mem_unevictable = get_u64(ms, "unevictable");
        m.mem_inactive = get_u64(ms, "inactive_anon") + get_u64(ms, "inactive_file");
        m.mem_used = sub0(usage, get_u64(ms, "inactive_file"));
    }
    json_decref(j);
    c->prev_cpu = cpu_now;
    c->prev_sys = sys_now;
    c->have_prev = true;
    c->emitted = true;
    c->last_emit_ms = now;
    runtime_emit_metrics(&drt->base, &m);
}

static void stats_done(void *arg, const struct docker_response *res)
{
    struct container *c = arg;

    if (res->error < 0 || res->status != 200)
        log_debug("backend %s: stats stream ended: %s", c->backend_id, response_error(res));
    c->stats = NULL; /* a reconcile starts it again if the container still runs */
    container_put(c);
}

static void stats_start(struct container *c)
{
    struct docker_runtime *drt = c->drt;
    struct docker_request_spec s = {
        .method = "GET", .on_line = stats_line, .on_done = stats_done, .arg = c,
    };

    if (c->stats || !c->container_id || c->state == CONTAINER_GONE || drt->base.closing || !drt->base.on_metrics)
        return;
    char *path = xasprintf("/containers/%s/stats?stream=1", c->container_id);
    s.path = path;
    c->stats = docker_request_start(drt->client, &s);
    container_get(c);
    free(path);
}

/* ---- events and reconciliation ----------------------------------------- */

/* The first reconcile is over (or cannot happen now): run what waited for it. */
static void release_held(struct docker_runtime *drt)
{
    struct list_node *pos, *tmp;

    drt->released = true;
    list_for_each_safe(pos, tmp, &drt->held) {
        struct call *k = list_entry(pos, struct call, wait);
        list_remove(&k->wait);
        if (drt->base.closing)
            return;
        if (k->held_wait) {
            struct runtime_op *op = k->op;
            char *address = k->body;
            k->body = NULL;
            k->op = NULL;
            call_end(k);
            docker_wait_ready(&drt->base, op, address);
            free(address);
        } else {
            container_put(k->c);
            k->c = container_get(container_find(drt, k->op->backend_id));
            run_terminate(k);
        }
    }
}

static void events_start(struct docker_runtime *drt);
static void reconcile_start(struct docker_runtime *drt);

static void events_timer_cb(uv_timer_t *t)
{
    events_start(container_of(t, struct docker_runtime, events_timer));
}

static void events_line(void *arg, int status, const char *line, size_t len)
{
    struct docker_runtime *drt = arg;
    json_t *j;

    if (!line) {
        if (status != 200)
            return; /* the done callback says why */
        if (drt->events_warned)
            log_info("docker: events stream is back");
        drt->events_up = true;
        drt->events_warned = false;
        drt->events_backoff_ms = EVENTS_BACKOFF_MIN_MS;
        /* Now that no event can be missed, catch up with what happened meanwhile. */
        reconcile_start(drt);
        return;
    }
    j = json_loadb(line, len, 0, NULL);
    const char *type = json_string_value(json_object_get(j, "Type"));
    const char *action = json_string_value(json_object_get(j, "Action"));
    const json_t *actor = json_object_get(j, "Actor");
    const char *id = json_string_value(json_object_get(actor, "ID"));
    const json_t *attrs = json_object_get(actor, "Attributes");
    struct container *c = id ? container_by_docker_id(drt, id) : NULL;

    if (!c || !type || strcmp(type, "container") != 0 || !action) {
        json_decref(j);
        return; /* not one of ours (or not yet: create has not answered, so it has not started) */
    }
    if (strcmp(action, "start") == 0) {
        stats_start(c);
    } else if (strcmp(action, "die") == 0 || strcmp(action, "stop") == 0) {
        const char *code = json_string_value(json_object_get(attrs, "exitCode"));
        container_exited(c, code ? atoi(code) : RUNTIME_EXIT_UNKNOWN);
    }
    json_decref(j);
}

static void events_done(void *arg, const struct docker_response *res)
{
    struct docker_runtime *drt = arg;

    drt->events = NULL;
    drt->events_up = false;
    if (!drt->events_warned) {
        log_warn("docker: events stream ended (%s); reconnecting",
                 res->message ? res->message : res->status == 200 ? "engine closed it" : "no answer");
        drt->events_warned = true;
    }
    uv_timer_start(&drt->events_timer, events_timer_cb, drt->events_backoff_ms, 0);
    if (!drt->released && !drt->reconciling)
        release_held(drt); /* no engine to ask: let them fail or succeed on their own */
    drt->events_backoff_ms = drt->events_backoff_ms * 2 > EVENTS_BACKOFF_MAX_MS ? EVENTS_BACKOFF_MAX_MS
                                                                                : drt->events_backoff_ms * 2;
}

static void events_start(struct docker_runtime *drt)
{
    struct buf path = BUF_INIT;
    struct docker_request_spec s = {
        .method = "GET", .on_line = events_line, .on_done = events_done, .arg = drt,
    };

    if (drt->base.closing || drt->events)
        return;
    buf_append_str(&path, "/events?filters=");
    docker_url_escape(&path, "{\"type\":[\"container\"],\"event\":[\"die\",\"stop\",\"start\"],\"label\":[\"" LABEL
                             "\"]}");
    s.path = buf_cstr(&path);
    drt->events = docker_request_start(drt->client, &s);
    buf_release(&path);
}

static void exit_inspect_done(void *arg, const struct docker_response *res)
{
    struct call *k = arg;
    struct container *c = k->c;

    k->req = NULL;
    if (res->error == 0 && res->status == 200) {
        json_t *j = json_loads(res->body, 0, NULL);
        const json_t *state = json_object_get(j, "State");
        bool running = json_is_true(json_object_get(state, "Running"));
        const json_t *code = json_object_get(state, "ExitCode");
        if (!running) {
            log_info("backend %s: container %.12s stopped while the events stream was down", c->backend_id,
                     c->container_id);
            container_exited(c, json_is_integer(code) ? (int)json_integer_value(code) : RUNTIME_EXIT_UNKNOWN);
        }
        json_decref(j);
    } else if (res->error == 0 && res->status == 404) {
        container_exited(c, RUNTIME_EXIT_UNKNOWN);
    } else {
        log_warn("backend %s: cannot inspect container %.12s: %s", c->backend_id, c->container_id,
                 response_error(res));
    }
    call_end(k);
}

static void reconcile_retry(uv_timer_t *t);

static void reconcile_done(void *arg, const struct docker_response *res)
{
    struct call *k = arg;
    struct docker_runtime *drt = k->drt;
    struct list_node *pos, *tmp;
    struct list_node todo;
    json_t *list;
    size_t i;

    k->req = NULL;
    if (res->error < 0 || res->status != 200 || !(list = json_loads(res->body, 0, NULL)) || !json_is_array(list)) {
        log_warn("docker: cannot list containers: %s", response_error(res));
        if (++k->tries < RECONCILE_TRIES && drt->events_up) {
            call_after(k, 200u << k->tries, reconcile_retry);
            return;
        }
        drt->reconciling = false;
        call_end(k);
        release_held(drt);
        return;
    }
    drt->reconciling = false;
    /* Find what changed first, act after: exit callbacks may reenter the runtime. */
    list_init(&todo);
    list_for_each_safe(pos, tmp, &drt->containers) {
        struct container *c = list_entry(pos, struct container, node);
        const json_t *found = NULL;
        if (c->state == CONTAINER_GONE || !c->container_id)
            continue;
        for (i = 0; i < json_array_size(list) && !found; i++) {
            const char *id = json_string_value(json_object_get(json_array_get(list, i), "Id"));
            if (id && strcmp(id, c->container_id) == 0)
                found = json_array_get(list, i);
        }
        const char *state = json_string_value(json_object_get(found, "State"));
        struct call *x = call_new(drt, NULL, c);
        list_remove(&x->node);
        list_insert_tail(&todo, &x->node);
        if (!found)
            x->verdict = VERDICT_GONE;
        else if (state && (strcmp(state, "exited") == 0 || strcmp(state, "dead") == 0))
            x->verdict = VERDICT_EXITED;
        else
            x->verdict = VERDICT_ALIVE;
    }
    /* At open: adopt what a previous drone left running, so terminate and exits work for it. */
    if (!drt->adopted) {
        drt->adopted = true;
        for (i = 0; i < json_array_size(list); i++) {
            const json_t *it = json_array_get(list, i);
            const char *id = json_string_value(json_object_get(it, "Id"));
            const char *state = json_string_value(json_object_get(it, "State"));
            const char *name = json_string_value(json_array_get(json_object_get(it, "Names"), 0));
            if (!id || !state || strcmp(state, "running") != 0 || !name ||
                strncmp(name, "/" NAME_PREFIX, strlen(NAME_PREFIX) + 1) != 0)
                continue;
            const char *bid = name + strlen(NAME_PREFIX) + 1;
            if (container_find(drt, bid) || container_by_docker_id(drt, id))
                continue;
            struct container *c = container_new(drt, bid);
            c->container_id = xstrdup(id);
            c->state = CONTAINER_RUNNING;
            c->adopted = true;
            log_info("backend %s: adopted running container %.12s", bid, id);
            stats_start(c);
        }
    }
    json_decref(list);
    call_end(k);
    release_held(drt);
    list_for_each_safe(pos, tmp, &todo) {
        struct call *x = list_entry(pos, struct call, node);
        list_remove(&x->node);
        list_insert_tail(&drt->calls, &x->node);
        if (drt->base.closing || x->c->state == CONTAINER_GONE) {
            call_end(x);
        } else if (x->verdict == VERDICT_GONE) {
            /* Removed while we were not looking: its exit code is lost with it. */
            container_exited(x->c, RUNTIME_EXIT_UNKNOWN);
            call_end(x);
        } else if (x->verdict == VERDICT_EXITED) {
            char *path = xasprintf("/containers/%s/json", x->c->container_id);
            call_request(x, "GET", path, NULL, REQUEST_TIMEOUT_MS, exit_inspect_done);
            free(path);
        } else {
            if (x->c->state == CONTAINER_RUNNING)
                stats_start(x->c);
            call_end(x);
        }
    }
}

static void reconcile_list(struct call *k)
{
    struct buf path = BUF_INIT;

    buf_append_str(&path, "/containers/json?all=1&filters=");
    docker_url_escape(&path, "{\"label\":[\"" LABEL "\"]}");
    call_request(k, "GET", buf_cstr(&path), NULL, REQUEST_TIMEOUT_MS, reconcile_done);
    buf_release(&path);
}

static void reconcile_retry(uv_timer_t *t)
{
    struct call *k = container_of(t, struct call, timer);

    if (k->drt->events_up) {
        reconcile_list(k);
    } else {
        struct docker_runtime *drt = k->drt;
        drt->reconciling = false; /* the next reconnect starts over */
        call_end(k);
        release_held(drt);
    }
}

static void reconcile_start(struct docker_runtime *drt)
{
    if (drt->reconciling || drt->base.closing)
        return;
    drt->reconciling = true;
    reconcile_list(call_new(drt, NULL, NULL));
}

/* ---- cleanup ------------------------------------------------------------ */

static void prune_done(void *arg, const struct docker_response *res)
{
    struct call *k = arg;

    k->req = NULL;
    if (res->error < 0 || res->status != 200) {
        log_warn("docker: cannot prune %s: %s", k->what, response_error(res));
    } else {
        json_t *j = json_loads(res->body, 0, NULL);
        size_t n = json_array_size(json_object_get(j, strcmp(k->what, "images") == 0 ? "ImagesDeleted"
                                                                                     : "ContainersDeleted"));
        if (n)
            log_info("docker: pruned %zu %s, %" PRIu64 " bytes reclaimed", n, k->what,
                     get_u64(j, "SpaceReclaimed"));
        json_decref(j);
    }
    if (strcmp(k->what, "containers") == 0)
        k->drt->pruning = false;
    call_end(k);
}

static void docker_cleanup(struct runtime *rt, int64_t min_age_ms)
{
    struct docker_runtime *drt = to_docker(rt);
    char until[64];
    struct buf path = BUF_INIT;
    char *filters;
    struct call *k;
    struct list_node *pos, *tmp;
    uint64_t now = uv_now(rt->loop);

    if (drt->pruning)
        return;
    drt->pruning = true;
    if (min_age_ms < 0)
        min_age_ms = 0;
    /*
     * The engine counts a created, not yet started container as stopped:
     * never let a prune take one of our spawns between create and start.
     */
    list_for_each_safe(pos, tmp, &drt->containers) {
        struct container *c = list_entry(pos, struct container, node);
        if (c->state == CONTAINER_STARTING && (int64_t)(now - c->spawn_ms) + 1000 > min_age_ms)
            min_age_ms = (int64_t)(now - c->spawn_ms) + 1000;
    }
    /* A duration: the engine subtracts it from its own clock, so clock skew cannot matter. */
    snprintf(until, sizeof(until), "%" PRId64 "ms", min_age_ms);
    filters = xasprintf("{\"label\":[\"" LABEL "\"],\"until\":[\"%s\"]}", until);
    buf_append_str(&path, "/containers/prune?filters=");
    docker_url_escape(&path, filters);
    k = call_new(drt, NULL, NULL);
    k->what = "containers";
    call_request(k, "POST", buf_cstr(&path), NULL, REQUEST_TIMEOUT_MS, prune_done);
    free(filters);
    buf_reset(&path);
    if (drt->prune_images) {
        filters = xasprintf("{\"dangling\":[\"false\"],\"until\":[\"%s\"]}", until);
        buf_append_str(&path, "/images/prune?filters=");
        docker_url_escape(&path, filters);
        k = call_new(drt, NULL, NULL);
        k->what = "images";
        call_request(k, "POST", buf_cstr(&path), NULL, REQUEST_TIMEOUT_MS, prune_done);
        free(filters);
    }
    buf_release(&path);
}

/* ---- open and close ----------------------------------------------------- */

static void close_hook(void *ctx, uv_handle_t *h, void (*done)(void *ptr), void *ptr)
{
    runtime_close_handle(ctx, h, done, ptr);
}

static int docker_open(struct runtime **out, const struct runtime_config *cfg, struct buf *err)
{
    struct docker_runtime *drt;
    json_t *log_config = NULL;
    json_error_t jerr;
    uint16_t r;

    if (cfg->docker_log_config && *cfg->docker_log_config) {
        log_config = json_loads(cfg->docker_log_config, 0, &jerr);
        if (!json_is_object(log_config) || !json_is_string(json_object_get(log_config, "Type"))) {
            buf_printf(err, "--log-config must be a JSON object like {\"Type\":\"json-file\",\"Config\":{}}%s%s",
                       log_config ? "" : ": ", log_config ? "" : jerr.text);
            json_decref(log_config);
            return -EINVAL;
        }
    }
    if (cfg->mount_base && cfg->mount_base[0] != '/') {
        buf_printf(err, "--mount-base must be an absolute path");
        json_decref(log_config);
        return -EINVAL;
    }
    drt = xcalloc(1, sizeof(*drt));
    drt->socket_path = xstrdup(cfg->docker_socket && *cfg->docker_socket ? cfg->docker_socket : DEFAULT_SOCKET);
    drt->network = cfg->docker_network && *cfg->docker_network ? xstrdup(cfg->docker_network) : NULL;
    drt->oci_runtime = cfg->docker_runtime && *cfg->docker_runtime ? xstrdup(cfg->docker_runtime) : NULL;
    drt->log_config = log_config;
    drt->mount_base = cfg->mount_base ? xstrdup(cfg->mount_base) : NULL;
    if (drt->mount_base) {
        size_t n = strlen(drt->mount_base);
        while (n > 1 && drt->mount_base[n - 1] == '/')
            drt->mount_base[--n] = '\0';
    }
    drt->prune_images = cfg->prune_images;
    list_init(&drt->containers);
    list_init(&drt->calls);
    list_init(&drt->held);
    random_bytes(&r, sizeof(r));
    drt->next_port = (uint16_t)(HOST_PORT_MIN + r % (HOST_PORT_MAX - HOST_PORT_MIN + 1));
    drt->events_backoff_ms = EVENTS_BACKOFF_MIN_MS;
    if (access(drt->socket_path, F_OK) != 0)
        log_warn("docker: no engine socket at '%s' yet; will keep trying", drt->socket_path);
    /* runtime_open fills in the base after we return; everything below completes later, from the loop. */
    drt->client = docker_client_new(cfg->loop, drt->socket_path, close_hook, drt);
    uv_timer_init(cfg->loop, &drt->events_timer);
    events_start(drt);
    *out = &drt->base;
    return 0;
}

static void docker_close(struct runtime *rt)
{
    struct docker_runtime *drt = to_docker(rt);
    struct list_node *pos, *tmp, *wpos, *wtmp;

    /* Containers keep running (Plane leaves them to the next drone); only our waits end. */
    list_for_each_safe(pos, tmp, &drt->containers) {
        struct container *c = list_entry(pos, struct container, node);
        container_get(c);
        list_for_each_safe(wpos, wtmp, &c->waiters)
            ready_probe_stop(list_entry(wpos, struct waiter, node)->probe, -ESHUTDOWN, "runtime closed");
        c->stats = NULL; /* cancelled with the client below; its reference goes in free */
        container_put(c);
    }
    /* Every request is cancelled: no callback of ours runs from here on. */
    docker_client_close(drt->client);
    drt->client = NULL;
    drt->events = NULL;
    list_for_each_safe(pos, tmp, &drt->calls) {
        struct call *k = list_entry(pos, struct call, node);
        k->req = NULL;
        if (k->has_timer)
            runtime_close_handle(rt, (uv_handle_t *)&k->timer, NULL, NULL);
    }
    uv_timer_stop(&drt->events_timer);
    runtime_close_handle(rt, (uv_handle_t *)&drt->events_timer, NULL, NULL);
}

static void docker_free(struct runtime *rt)
{
    struct docker_runtime *drt = to_docker(rt);
    struct list_node *pos, *tmp;

    /* Calls and containers may still hold each other: free them all, ignoring counts. */
    list_for_each_safe(pos, tmp, &drt->calls) {
        struct call *k = list_entry(pos, struct call, node);
        list_remove(&k->node);
        k->c = NULL;
        call_free(k);
    }
    list_for_each_safe(pos, tmp, &drt->containers)
        container_free(list_entry(pos, struct container, node));
    json_decref(drt->log_config);
    free(drt->socket_path);
    free(drt->network);
    free(drt->oci_runtime);
    free(drt->mount_base);
    free(drt);
}

const struct runtime_ops runtime_docker_ops = {
    .name = "docker",
    .caps = RUNTIME_CAP_METRICS | RUNTIME_CAP_LIMITS | RUNTIME_CAP_FREEZE,
    .open = docker_open,
    .close = docker_close,
    .free = docker_free,
    .prepare = docker_prepare,
    .spawn = docker_spawn,
    .wait_ready = docker_wait_ready,
    .terminate = docker_terminate,
    .freeze = docker_freeze,
    .cancel = docker_cancel,
    .cleanup = docker_cleanup,
};
