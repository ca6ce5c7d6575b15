/* SPDX-License-Identifier: MIT */
/*
 * run_config.c - `plane run-config FILE.json` (see run_config.h). The file
 * is read with jansson, checked field by field into the same config structs
 * the flags fill (controller_config, drone_config, proxy_options), and the
 * components are started on one loop, as `plane dev` does; SIGINT/SIGTERM
 * stops them all. Nothing starts unless the whole file is valid.
 *
 * Plane's serde accepts unknown fields silently; here they are errors,
 * because a misspelt optional field would otherwise just vanish. Fields
 * Plane lacks but our flags have (the drone's process and mock runtimes,
 * the proxy's listen address, several controller URLs, ...) are accepted
 * under names documented in README.md and docs/compat.md.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/controller_urls.h"
#include "../common/log.h"
#include "../common/names.h"
#include "../common/net.h"
#include "../common/run_loop.h"
#include "../common/url.h"
#include "../common/xalloc.h"
#include "../dns/dns.h"
#include "../proxy/proxy.h"
#include "../proxy/route_cache.h"
#include "../proxy/rules.h"
#include "run_config.h"

#define PATH_LEN 256
#define MAX_FILE_BYTES (1 << 20) /* a config file is a few hundred bytes */

/* ---- reading fields ---- */

static const char *type_name(int type)
{
    switch (type) {
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_TRUE: return "true or false";
    case JSON_OBJECT: return "an object";
    default: return "a value";
    }
}

/*
 * The field key of obj: *out is the value, or NULL when it is absent or
 * null (Plane's Option fields), which is an error if required. 0 or -EINVAL.
 */
static int field(const json_t *obj, const char *path, const char *key, int type, bool required,
                 const json_t **out, struct buf *err)
{
    const json_t *v = json_object_get(obj, key);

    *out = NULL;
    if (!v || json_is_null(v)) {
        if (!required)
            return 0;
        buf_printf(err, "%s.%s: required (%s)", path, key, type_name(type));
        return -EINVAL;
    }
    if ((type == JSON_TRUE && !json_is_boolean(v)) || (type != JSON_TRUE && (int)json_typeof(v) != type)) {
        buf_printf(err, "%s.%s: expected %s", path, key, type_name(type));
        return -EINVAL;
    }
    *out = v;
    return 0;
}

static int str_field(const json_t *obj, const char *path, const char *key, bool required, const char **out,
                     struct buf *err)
{
    const json_t *v;
    int rc = field(obj, path, key, JSON_STRING, required, &v, err);

    if (rc == 0 && v && strlen(json_string_value(v)) != json_string_length(v)) {
        buf_printf(err, "%s.%s: contains a NUL character", path, key);
        return -EINVAL;
    }
    *out = v ? json_string_value(v) : NULL;
    return rc;
}

/* An integer in [min, max]; *out is left alone when the field is absent. */
static int int_field(const json_t *obj, const char *path, const char *key, bool required, json_int_t min,
                     json_int_t max, json_int_t *out, struct buf *err)
{
    const json_t *v;
    int rc = field(obj, path, key, JSON_INTEGER, required, &v, err);

    if (rc < 0 || !v)
        return rc;
    if (json_integer_value(v) < min || json_integer_value(v) > max) {
        buf_printf(err, "%s.%s: %" JSON_INTEGER_FORMAT " is out of range (%" JSON_INTEGER_FORMAT
                   "-%" JSON_INTEGER_FORMAT ")", path, key, json_integer_value(v), min, max);
        return -EINVAL;
    }
    *out = json_integer_value(v);
    return 0;
}

/* A boolean; *out is left alone when the field is absent or null. */
static int bool_field(const json_t *obj, const char *path, const char *key, bool *out, struct buf *err)
{
    const json_t *v;
    int rc = field(obj, path, key, JSON_TRUE, false, &v, err);

    if (rc == 0 && v)
        *out = json_is_true(v);
    return rc;
}

/* Refuses any key of obj not in known (NULL-terminated). */
static int check_keys(const json_t *obj, const char *path, const char *const *known, struct buf *err)
{
    const char *key;
    const json_t *v;

    json_object_foreach((json_t *)obj, key, v) {
        size_t i;
        for (i = 0; known[i] && strcmp(known[i], key) != 0; i++)
            ;
        if (known[i])
            continue;
        buf_printf(err, "%s: unknown field '%s' (known:", path, key);
        for (i = 0; known[i]; i++)
            buf_printf(err, "%s %s", i ? "," : "", known[i]);
        buf_printf(err, ")");
        return -EINVAL;
    }
    return 0;
}

static char *keep(struct run_config *rc, char *s)
{
    rc->owned = xrealloc(rc->owned, (rc->nowned + 1) * sizeof(*rc->owned));
    rc->owned[rc->nowned++] = s;
    return s;
}

/* path.key in out[PATH_LEN], cut short with "..." if it does not fit (keys come from the file). */
static void subpath(char *out, const char *path, const char *key)
{
    if (snprintf(out, PATH_LEN, "%s.%s", path, key) >= PATH_LEN)
        memcpy(out + PATH_LEN - 4, "...", 4);
}

/* A name of §3.2 with prefix ("dr", "px", ...). */
static int name_field(const json_t *obj, const char *path, const char *key, const char *prefix, const char **out,
                      struct buf *err)
{
    int rc = str_field(obj, path, key, true, out, err);

    if (rc == 0 && !name_is_valid(*out, prefix)) {
        buf_printf(err, "%s.%s: invalid name '%s' (%s-..., [a-z0-9-], at most %d chars)", path, key, *out, prefix,
                   NAME_MAX_LEN);
        return -EINVAL;
    }
    return rc;
}

static int cluster_field(const json_t *obj, const char *path, const char *key, bool required, const char **out,
                         struct buf *err)
{
    int rc = str_field(obj, path, key, required, out, err);

    if (rc == 0 && *out && !cluster_valid(*out)) {
        buf_printf(err, "%s.%s: invalid cluster name '%s' (host[:port])", path, key, *out);
        return -EINVAL;
    }
    return rc;
}

/*
 * controller_url: a URL as in Plane, or (ours) an array of them, tried in
 * turn like --controller-url given more than once. *out is the list the
 * flags would have made.
 */
static int urls_field(struct run_config *rc, const json_t *obj, const char *path, const char **out,
                      struct buf *err)
{
    const json_t *v = json_object_get(obj, "controller_url"), *one;
    struct controller_urls check;
    struct buf why = BUF_INIT;
    char *list = NULL;
    size_t i;
    int r;

    if (json_is_array(v) && json_array_size(v) > 0) {
        json_array_foreach(v, i, one) {
            if (!json_is_string(one) || !*json_string_value(one) || strchr(json_string_value(one), ',')) {
                buf_printf(err, "%s.controller_url[%zu]: expected a URL", path, i);
                free(list);
                return -EINVAL;
            }
            list = controller_urls_append(list, json_string_value(one));
        }
    } else if (json_is_string(v) && *json_string_value(v)) {
        list = xstrdup(json_string_value(v));
    } else {
        buf_printf(err, "%s.controller_url: required (a URL, or an array of URLs)", path);
        return -EINVAL;
    }
    r = controller_urls_parse(&check, list, "/", &why);
    if (r < 0) {
        buf_printf(err, "%s.controller_url: %s", path, buf_cstr(&why));
        buf_release(&why);
        free(list);
        return r;
    }
    controller_urls_release(&check);
    *out = keep(rc, list);
    return 0;
}

/* An absolute http(s) URL. */
static int http_url_field(const json_t *obj, const char *path, const char *key, const char **out, struct buf *err)
{
    struct url u;
    int rc = str_field(obj, path, key, false, out, err);

    if (rc < 0 || !*out)
        return rc;
    if (url_parse(*out, &u) < 0) {
        buf_printf(err, "%s.%s: invalid URL '%s'", path, key, *out);
        return -EINVAL;
    }
    rc = strcmp(u.scheme, "http") == 0 || strcmp(u.scheme, "https") == 0 ? 0 : -EINVAL;
    if (rc < 0)
        buf_printf(err, "%s.%s: '%s' is not an http:// or https:// URL", path, key, *out);
    url_release(&u);
    return rc;
}

static int ip_field(const json_t *obj, const char *path, const char *key, bool required, const char **out,
                    struct buf *err)
{
    unsigned char a[sizeof(struct in6_addr)];
    int rc = str_field(obj, path, key, required, out, err);

    if (rc == 0 && *out && inet_pton(AF_INET, *out, a) != 1 && inet_pton(AF_INET6, *out, a) != 1) {
        buf_printf(err, "%s.%s: '%s' is not an IP address", path, key, *out);
        return -EINVAL;
    }
    return rc;
}

/* ---- Controller ---- */

static int parse_controller(struct run_config *rc, const json_t *o, const char *path, struct controller_config *c,
                            struct buf *err)
{
    static const char *const known[] = {
        "db_url", "bind_addr", "id", "controller_url", "default_cluster", "cleanup_min_age_days",
        "cleanup_batch_size", "forward_auth", "best_of",
        "lost_drone_seconds", "key_lease_seconds", /* ours, as the flags */
        NULL,
    };
    struct sockaddr_storage ss;
    char host[INET6_ADDRSTRLEN];
    const char *bind, *url;
    json_int_t v = 0;
    int r;

    *c = (struct controller_config){.best_of = 2, .lost_after_ms = 120000};
    if ((r = check_keys(o, path, known, err)) < 0 || (r = str_field(o, path, "db_url", true, &c->db, err)) < 0 ||
        (r = str_field(o, path, "bind_addr", true, &bind, err)) < 0)
        return r;
    if (!*c->db) {
        buf_printf(err, "%s.db_url: empty (a SQLite file or a postgres:// URL)", path);
        return -EINVAL;
    }
    if (net_addr_parse(bind, &ss) < 0) {
        buf_printf(err, "%s.bind_addr: '%s' is not IP:PORT", path, bind);
        return -EINVAL;
    }
    if (ss.ss_family == AF_INET) {
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof(host));
        c->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    } else {
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof(host));
        c->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    c->host = keep(rc, xstrdup(host));
    if ((r = name_field(o, path, "id", "co", &c->id, err)) < 0)
        return r;
    if ((r = str_field(o, path, "controller_url", true, &url, err)) < 0 ||
        (r = http_url_field(o, path, "controller_url", &c->controller_url, err)) < 0 ||
        (r = cluster_field(o, path, "default_cluster", false, &c->default_cluster, err)) < 0 ||
        (r = int_field(o, path, "cleanup_min_age_days", false, 0, INT32_MAX, &v, err)) < 0 ||
        (r = int_field(o, path, "cleanup_batch_size", false, 1, INT32_MAX, &v, err)) < 0 ||
        (r = http_url_field(o, path, "forward_auth", &c->forward_auth, err)) < 0)
        return r;
    /* Accepted as --cleanup-min-age-days is: expired tokens are always cleaned, nothing else is deleted. */
    if (c->forward_auth && strncmp(c->forward_auth, "http://", 7) != 0) {
        buf_printf(err, "%s.forward_auth: must be an http:// URL (https is not supported)", path);
        return -EINVAL;
    }
    v = 2;
    if ((r = int_field(o, path, "best_of", true, 1, 1000000, &v, err)) < 0)
        return r;
    c->best_of = (int)v;
    v = -1;
    if ((r = int_field(o, path, "lost_drone_seconds", false, 0, 1000000, &v, err)) < 0)
        return r;
    if (v > 0 && v < 10) {
        buf_printf(err, "%s.lost_drone_seconds: must be 0 or at least 10 (drones send a heartbeat every 7 s)", path);
        return -EINVAL;
    }
    if (v >= 0)
        c->lost_after_ms = v * 1000;
    v = 0;
    if ((r = int_field(o, path, "key_lease_seconds", false, 1, 1000000, &v, err)) < 0)
        return r;
    c->key_lease_ms = v * 1000;
    return 0;
}

/* ---- Drone ---- */

/* Plane's DockerRuntimeConfig, plus our --docker-socket and --docker-network. */
static int parse_docker(struct run_config *rc, const json_t *o, const char *path, struct drone_config *d,
                        bool *prune, json_int_t *min_age, struct buf *err)
{
    static const char *const known[] = {
        "runtime", "log_config", "mount_base", "auto_prune", "cleanup_min_age", "socket", "network", NULL,
    };
    struct runtime_config *rt = &d->runtime_config;
    const json_t *log;
    char sub[PATH_LEN];
    int r;

    if ((r = check_keys(o, path, known, err)) < 0 || (r = str_field(o, path, "runtime", false, &rt->docker_runtime, err)) < 0 ||
        (r = field(o, path, "log_config", JSON_OBJECT, false, &log, err)) < 0 ||
        (r = str_field(o, path, "mount_base", false, &rt->mount_base, err)) < 0 ||
        (r = bool_field(o, path, "auto_prune", prune, err)) < 0 ||
        (r = int_field(o, path, "cleanup_min_age", false, 0, INT32_MAX, min_age, err)) < 0 ||
        (r = str_field(o, path, "socket", false, &rt->docker_socket, err)) < 0 ||
        (r = str_field(o, path, "network", false, &rt->docker_network, err)) < 0)
        return r;
    if (log) {
        /* Docker's HostConfig.LogConfig: {"Type": "...", "Config": {"k": "v"}}. */
        static const char *const log_known[] = {"Type", "Config", NULL};
        const json_t *type, *config, *val;
        const char *k;

        subpath(sub, path, "log_config");
        if ((r = check_keys(log, sub, log_known, err)) < 0 || (r = field(log, sub, "Type", JSON_STRING, true, &type, err)) < 0 ||
            (r = field(log, sub, "Config", JSON_OBJECT, false, &config, err)) < 0)
            return r;
        json_object_foreach((json_t *)config, k, val) {
            if (!json_is_string(val)) {
                buf_printf(err, "%s.Config.%s: expected a string", sub, k);
                return -EINVAL;
            }
        }
        rt->docker_log_config = keep(rc, json_dumps(log, JSON_COMPACT));
    }
    return 0;
}

/* Ours: the process runtime (backends as child processes), as `plane drone --runtime process`. */
static int parse_local(const json_t *o, const char *path, bool mock, struct drone_config *d, struct buf *err)
{
    static const char *const process_known[] = {"data_dir", "bind_ip", NULL};
    static const char *const mock_known[] = {"port", "bind_ip", NULL};
    struct runtime_config *rt = &d->runtime_config;
    json_int_t port = 0;
    int r;

    if ((r = check_keys(o, path, mock ? mock_known : process_known, err)) < 0 ||
        (r = ip_field(o, path, "bind_ip", false, &rt->bind_ip, err)) < 0)
        return r;
    if (mock) {
        if ((r = int_field(o, path, "port", false, 1, 65535, &port, err)) < 0)
            return r;
        rt->mock_port = (unsigned)port;
        return 0;
    }
    return str_field(o, path, "data_dir", false, &rt->data_dir, err);
}

/*
 * executor_config: exactly one of {"docker":{...}} and {"unix_socket":
 * {"socket_path":"..."}} as in Plane, or ours: {"process":{...}},
 * {"mock":{...}}.
 */
static int parse_executor(struct run_config *rc, const json_t *o, const char *path, struct drone_config *d,
                          bool *prune, json_int_t *min_age, struct buf *err)
{
    static const char *const socket_known[] = {"socket_path", NULL};
    const char *kind;
    const json_t *body;
    char sub[PATH_LEN];
    int r;

    if (json_object_size(o) != 1) {
        buf_printf(err, "%s: expected one of {\"docker\":{...}}, {\"unix_socket\":{...}}, {\"process\":{...}}, "
                        "{\"mock\":{...}}", path);
        return -EINVAL;
    }
    kind = json_object_iter_key(json_object_iter((json_t *)o));
    body = json_object_iter_value(json_object_iter((json_t *)o));
    subpath(sub, path, kind);
    if (!json_is_object(body)) {
        buf_printf(err, "%s: expected an object", sub);
        return -EINVAL;
    }
    if (strcmp(kind, "docker") == 0) {
        d->runtime = runtime_find("docker");
        return parse_docker(rc, body, sub, d, prune, min_age, err);
    }
    if (strcmp(kind, "unix_socket") == 0) {
        d->runtime = runtime_find("executor");
        if ((r = check_keys(body, sub, socket_known, err)) < 0 ||
            (r = str_field(body, sub, "socket_path", true, &d->runtime_config.executor_socket, err)) < 0)
            return r;
        return 0;
    }
    if (strcmp(kind, "process") == 0 || strcmp(kind, "mock") == 0) {
        d->runtime = runtime_find(kind);
        return parse_local(body, sub, kind[0] == 'm', d, err);
    }
    buf_printf(err, "%s: unknown executor '%s' (docker, unix_socket, process or mock)", path, kind);
    return -EINVAL;
}

static int parse_drone(struct run_config *rc, const json_t *o, const char *path, struct drone_config *d,
                       struct buf *err)
{
    static const char *const known[] = {
        "name", "executor_config", "docker_config", "controller_url", "cluster", "pool", "ip", "db_path",
        "auto_prune", "cleanup_min_age",
        "metrics_port", /* ours */
        NULL,
    };
    const json_t *exec, *docker;
    char sub[PATH_LEN];
    bool prune = false, top_prune = false;
    json_int_t min_age = -1, top_min_age = 0, metrics = 0;
    int r;

    memset(d, 0, sizeof(*d));
    if ((r = check_keys(o, path, known, err)) < 0 || (r = name_field(o, path, "name", "dr", &d->name, err)) < 0 ||
        (r = urls_field(rc, o, path, &d->controller_url, err)) < 0 ||
        (r = cluster_field(o, path, "cluster", true, &d->cluster, err)) < 0 ||
        (r = str_field(o, path, "pool", true, &d->pool, err)) < 0 ||
        (r = ip_field(o, path, "ip", true, &d->ip, err)) < 0 ||
        (r = str_field(o, path, "db_path", false, &d->db_path, err)) < 0 ||
        (r = bool_field(o, path, "auto_prune", &top_prune, err)) < 0 ||
        (r = int_field(o, path, "cleanup_min_age", false, 0, INT32_MAX, &top_min_age, err)) < 0 ||
        (r = int_field(o, path, "metrics_port", false, 1, 65535, &metrics, err)) < 0 ||
        (r = field(o, path, "executor_config", JSON_OBJECT, false, &exec, err)) < 0 ||
        (r = field(o, path, "docker_config", JSON_OBJECT, false, &docker, err)) < 0)
        return r;
    d->metrics_port = (int)metrics;
    if (!exec == !docker) {
        buf_printf(err, "%s: exactly one of executor_config and docker_config (deprecated) is required", path);
        return -EINVAL;
    }
    prune = top_prune;
    if (exec) {
        subpath(sub, path, "executor_config");
        r = parse_executor(rc, exec, sub, d, &prune, &min_age, err);
    } else {
        subpath(sub, path, "docker_config");
        d->runtime = runtime_find("docker");
        r = parse_docker(rc, docker, sub, d, &prune, &min_age, err);
    }
    if (r < 0)
        return r;
    /* The top-level auto_prune and cleanup_min_age are the fallbacks of the docker settings. */
    d->runtime_config.prune_images = prune;
    d->cleanup_min_age_ms = (int64_t)(min_age >= 0 ? min_age : top_min_age) * 1000;
    if (!d->runtime_config.bind_ip)
        d->runtime_config.bind_ip = d->ip;
    if (!d->runtime_config.data_dir)
        d->runtime_config.data_dir = "plane-data"; /* as `plane drone` */
    if (!d->runtime) {
        buf_printf(err, "%s: that runtime is not part of this build", sub);
        return -EINVAL;
    }
    return 0;
}

/* ---- Proxy ---- */

static int parse_acme(const json_t *o, const char *path, struct proxy_options *p, struct buf *err)
{
    static const char *const known[] = {
        "endpoint", "mailto_email", "acme_eab_keypair", "accept_insecure_certs_for_testing",
        "ca_cert", /* ours: --acme-ca-cert, the CA of the ACME server's TLS */
        NULL,
    };
    static const char *const eab_known[] = {"key_id", "key", NULL};
    const json_t *eab;
    char sub[PATH_LEN];
    bool insecure = false;
    int r;

    if ((r = check_keys(o, path, known, err)) < 0 || (r = str_field(o, path, "endpoint", true, &p->acme_endpoint, err)) < 0 ||
        (r = http_url_field(o, path, "endpoint", &p->acme_endpoint, err)) < 0 ||
        (r = str_field(o, path, "mailto_email", true, &p->acme_email, err)) < 0 ||
        (r = field(o, path, "acme_eab_keypair", JSON_OBJECT, false, &eab, err)) < 0 ||
        (r = bool_field(o, path, "accept_insecure_certs_for_testing", &insecure, err)) < 0 ||
        (r = str_field(o, path, "ca_cert", false, &p->acme_ca_cert, err)) < 0)
        return r;
    if (insecure)
        log_warn("%s.accept_insecure_certs_for_testing: not supported; give the test CA as ca_cert", path);
    if (eab) {
        subpath(sub, path, "acme_eab_keypair");
        if ((r = check_keys(eab, sub, eab_known, err)) < 0 || (r = str_field(eab, sub, "key_id", true, &p->eab_kid, err)) < 0 ||
            (r = str_field(eab, sub, "key", true, &p->eab_key, err)) < 0)
            return r;
        size_t n;
        unsigned char *k = base64url_decode(p->eab_key, &n);
        free(k);
        if (!k || n == 0) {
            buf_printf(err, "%s.key: not base64url without padding", sub);
            return -EINVAL;
        }
    }
    return 0;
}

static int parse_proxy(struct run_config *rc, const json_t *o, const char *path, struct proxy_options *p,
                       struct buf *err)
{
    static const char *const known[] = {
        "name", "controller_url", "cluster", "cert_path", "port_config", "acme_config", "root_redirect_url",
        "host", "workers", "metrics_port", "io", /* ours, as the flags */
        NULL,
    };
    static const char *const port_known[] = {"http_port", "https_port", NULL};
    const json_t *ports, *acme;
    char sub[PATH_LEN];
    json_int_t http = 0, https = -1, workers = 0, metrics = 0;
    char *norm;
    int r;

    *p = (struct proxy_options){.http_port = -1, .https_port = -1, .host = "0.0.0.0", .acme_dns_wait_ms = -1};
    if ((r = check_keys(o, path, known, err)) < 0 || (r = name_field(o, path, "name", "px", &p->name, err)) < 0 ||
        (r = urls_field(rc, o, path, &p->controller_url, err)) < 0 ||
        (r = cluster_field(o, path, "cluster", true, &p->cluster, err)) < 0 ||
        (r = str_field(o, path, "cert_path", false, &p->cert_path, err)) < 0 ||
        (r = field(o, path, "port_config", JSON_OBJECT, true, &ports, err)) < 0 ||
        (r = field(o, path, "acme_config", JSON_OBJECT, false, &acme, err)) < 0 ||
        (r = http_url_field(o, path, "root_redirect_url", &p->root_redirect, err)) < 0 ||
        (r = ip_field(o, path, "host", false, &p->host, err)) < 0 ||
        (r = int_field(o, path, "workers", false, 1, ROUTE_CACHE_MAX_WORKERS, &workers, err)) < 0 ||
        (r = int_field(o, path, "metrics_port", false, 1, 65535, &metrics, err)) < 0 ||
        (r = str_field(o, path, "io", false, &p->io, err)) < 0)
        return r;
    if (!proxy_io_valid(p->io)) {
        buf_printf(err, "%s.io: '%s' is not uring or epoll", path, p->io);
        return -EINVAL;
    }
    if (!p->host)
        p->host = "0.0.0.0";
    p->workers = (long)workers;
    p->metrics_port = (int)metrics;
    if (p->root_redirect) {
        if (!(norm = rules_normalize_url(p->root_redirect))) {
            buf_printf(err, "%s.root_redirect_url: invalid URL '%s'", path, p->root_redirect);
            return -EINVAL;
        }
        free(norm);
    }
    subpath(sub, path, "port_config");
    /* Not 0: every proxy worker binds the port itself, so it must be known. */
    if ((r = check_keys(ports, sub, port_known, err)) < 0 ||
        (r = int_field(ports, sub, "http_port", true, 1, 65535, &http, err)) < 0 ||
        (r = int_field(ports, sub, "https_port", false, 1, 65535, &https, err)) < 0)
        return r;
    /* Plane's run-config has no https flag: an https_port is what turns HTTPS on (§2.3's table). */
    p->http_port = (int)http;
    p->https_port = (int)https;
    p->https = https > 0;
    if (p->https && !p->cert_path && !acme) {
        buf_printf(err, "%s.cert_path: required with port_config.https_port unless acme_config is given", path);
        return -EINVAL;
    }
    if (acme) {
        subpath(sub, path, "acme_config");
        return parse_acme(acme, sub, p, err);
    }
    return 0;
}

/* ---- Dns ---- */

static int parse_dns(struct run_config *rc, const json_t *o, const char *path, struct dns_plan *n, struct buf *err)
{
    static const char *const known[] = {"name", "controller_url", "port", "zone", "host" /* ours */, NULL};
    json_int_t port = 0;
    int r;

    memset(n, 0, sizeof(*n));
    if ((r = check_keys(o, path, known, err)) < 0 || (r = name_field(o, path, "name", "ns", &n->name, err)) < 0 ||
        (r = urls_field(rc, o, path, &n->controller_url, err)) < 0 ||
        (r = int_field(o, path, "port", true, 1, 65535, &port, err)) < 0 ||
        (r = str_field(o, path, "zone", false, &n->zone, err)) < 0 ||
        (r = ip_field(o, path, "host", false, &n->host, err)) < 0)
        return r;
    n->port = (int)port;
    return 0;
}

/* ---- the file ---- */

/* By enum plan_kind: the plan's tag in the file. */
static const char *const plan_names[] = {"Controller", "Drone", "Proxy", "Dns"};

static int parse_plan(struct run_config *rc, const json_t *v, const char *where, struct plan *p, struct buf *err)
{
    char path[PATH_LEN];
    const char *kind;
    const json_t *body;
    size_t k;

    if (!json_is_object(v) || json_object_size(v) != 1) {
        buf_printf(err, "%sexpected one of {\"Controller\":{...}}, {\"Drone\":{...}}, {\"Proxy\":{...}}, "
                        "{\"Dns\":{...}}", where);
        return -EINVAL;
    }
    kind = json_object_iter_key(json_object_iter((json_t *)v));
    body = json_object_iter_value(json_object_iter((json_t *)v));
    for (k = 0; k < ARRAY_SIZE(plan_names) && strcmp(plan_names[k], kind) != 0; k++)
        ;
    if (snprintf(path, sizeof(path), "%s%s", where, kind) >= (int)sizeof(path))
        memcpy(path + sizeof(path) - 4, "...", 4);
    if (k == ARRAY_SIZE(plan_names)) {
        buf_printf(err, "%s: unknown plan (Controller, Drone, Proxy or Dns)", path);
        return -EINVAL;
    }
    if (!json_is_object(body)) {
        buf_printf(err, "%s: expected an object", path);
        return -EINVAL;
    }
    p->kind = (enum plan_kind)k;
    switch (p->kind) {
    case PLAN_CONTROLLER: return parse_controller(rc, body, path, &p->u.controller, err);
    case PLAN_DRONE: return parse_drone(rc, body, path, &p->u.drone, err);
    case PLAN_PROXY: return parse_proxy(rc, body, path, &p->u.proxy, err);
    case PLAN_DNS: return parse_dns(rc, body, path, &p->u.dns, err);
    }
    BUG("plan kind %d", (int)p->kind);
}

static int parse(struct run_config *rc, const char *text, size_t len, struct buf *err)
{
    json_error_t je;
    char where[32];
    int r;

    memset(rc, 0, sizeof(*rc));
    rc->root = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!rc->root) {
        buf_printf(err, "line %d, column %d: %s", je.line, je.column, je.text);
        return -EINVAL;
    }
    if (!json_is_array(rc->root)) {
        rc->plans = xcalloc(1, sizeof(*rc->plans));
        rc->nplans = 1;
        return parse_plan(rc, rc->root, "", &rc->plans[0], err);
    }
    if (json_array_size(rc->root) == 0) {
        buf_printf(err, "an empty array: no plan to run");
        return -EINVAL;
    }
    rc->nplans = json_array_size(rc->root);
    rc->plans = xcalloc(rc->nplans, sizeof(*rc->plans));
    for (size_t i = 0; i < rc->nplans; i++) {
        snprintf(where, sizeof(where), "[%zu].", i);
        if ((r = parse_plan(rc, json_array_get(rc->root, i), where, &rc->plans[i], err)) < 0)
            return r;
        if (rc->plans[i].kind == PLAN_DNS) {
            buf_printf(err, "[%zu].Dns: a Dns plan runs alone (plane dns has a loop of its own)", i);
            return -EINVAL;
        }
    }
    return 0;
}

int run_config_parse(struct run_config *rc, const char *text, size_t len, struct buf *err)
{
    size_t start = err->len;
    int r = parse(rc, text, len, err);

    /* Keys and values from the file are quoted in the message: it stays one printable line. */
    for (size_t i = start; r < 0 && i < err->len; i++)
        if ((unsigned char)err->data[i] < 0x20 || err->data[i] == 0x7f)
            err->data[i] = '?';
    return r;
}

void run_config_release(struct run_config *rc)
{
    for (size_t i = 0; i < rc->nowned; i++)
        free(rc->owned[i]);
    free(rc->owned);
    free(rc->plans);
    json_decref(rc->root);
    memset(rc, 0, sizeof(*rc));
}

/* ---- running ---- */

struct running {
    struct run_config *rc;
    void **parts; /* per plan: struct controller *, struct drone * or struct proxy *; NULL if not started */
};

static void stop_all(void *arg)
{
    struct running *run = arg;

    /* In reverse: proxies and drones leave before their controller. */
    for (size_t i = run->rc->nplans; i-- > 0;) {
        if (!run->parts[i])
            continue;
        switch (run->rc->plans[i].kind) {
        case PLAN_CONTROLLER: controller_stop(run->parts[i]); break;
        case PLAN_DRONE: drone_stop(run->parts[i]); break;
        case PLAN_PROXY: proxy_stop(run->parts[i]); break;
        case PLAN_DNS: break;
        }
    }
}

/* plane dns with the flags a Dns plan stands for. */
static int run_dns(const struct dns_plan *n)
{
    char cmd[] = "dns", name_flag[] = "--name", url_flag[] = "--controller-url", port_flag[] = "--port",
         zone_flag[] = "--zone", host_flag[] = "--host";
    char port[16], *urls = xstrdup(n->controller_url), *name = xstrdup(n->name), *save = NULL;
    char *zone = n->zone ? xstrdup(n->zone) : NULL, *host = n->host ? xstrdup(n->host) : NULL;
    char **argv = xcalloc(8 + 2 * (strlen(urls) + 1), sizeof(*argv));
    int argc = 0, status;

    snprintf(port, sizeof(port), "%d", n->port);
    argv[argc++] = cmd;
    argv[argc++] = name_flag;
    argv[argc++] = name;
    for (char *u = strtok_r(urls, ",", &save); u; u = strtok_r(NULL, ",", &save)) {
        argv[argc++] = url_flag;
        argv[argc++] = u;
    }
    argv[argc++] = port_flag;
    argv[argc++] = port;
    if (zone) {
        argv[argc++] = zone_flag;
        argv[argc++] = zone;
    }
    if (host) {
        argv[argc++] = host_flag;
        argv[argc++] = host;
    }
    log_init("dns");
    optind = 0; /* getopt starts afresh */
    status = dns_main(argc, argv);
    free(argv);
    free(urls);
    free(name);
    free(zone);
    free(host);
    return status;
}

static int run_plans(struct run_config *rc, const char *file)
{
    struct running run = {.rc = rc, .parts = xcalloc(rc->nplans, sizeof(void *))};
    struct buf err = BUF_INIT;
    uv_loop_t loop;
    size_t i;
    int r = 0;

    uv_loop_init(&loop);
    for (i = 0; i < rc->nplans && r == 0; i++) {
        struct plan *p = &rc->plans[i];
        switch (p->kind) {
        case PLAN_CONTROLLER: r = controller_start((struct controller **)&run.parts[i], &loop, &p->u.controller, &err); break;
        case PLAN_DRONE: r = drone_start((struct drone **)&run.parts[i], &loop, &p->u.drone, &err); break;
        case PLAN_PROXY: r = proxy_start((struct proxy **)&run.parts[i], &loop, &p->u.proxy, &err); break;
        case PLAN_DNS: BUG("a Dns plan among others"); /* run_config_parse refuses it */
        }
        if (r < 0 && rc->nplans > 1)
            fprintf(stderr, "plane run-config: %s: [%zu].%s: %s\n", file, i, plan_names[p->kind], buf_cstr(&err));
        else if (r < 0)
            fprintf(stderr, "plane run-config: %s: %s: %s\n", file, plan_names[p->kind], buf_cstr(&err));
    }
    if (r < 0) {
        stop_all(&run);
        uv_run(&loop, UV_RUN_DEFAULT); /* let what was opened close */
        uv_loop_close(&loop);
    } else {
        log_info("%s: %zu component%s started", file, rc->nplans, rc->nplans > 1 ? "s" : "");
        run_until_signal(&loop, stop_all, &run);
    }
    for (i = 0; i < rc->nplans; i++)
        if (run.parts[i] && rc->plans[i].kind == PLAN_PROXY)
            proxy_free(run.parts[i]); /* after its control loop has returned */
    free(run.parts);
    buf_release(&err);
    return r < 0 ? 1 : 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: plane run-config FILE.json\n"
               "\n"
               "Starts what FILE.json describes, in Plane's config format (one of {\"Controller\":{...}},\n"
               "{\"Drone\":{...}}, {\"Proxy\":{...}}, {\"Dns\":{...}}), or several of them in one process\n"
               "given as an array. The fields are listed in README.md.\n");
}

/* The file's bytes, NUL-terminated; NULL with a line in err. */
static char *read_file(const char *path, size_t *len, struct buf *err)
{
    FILE *f = fopen(path, "rb");
    char *data;
    size_t n;

    if (!f) {
        buf_printf(err, "cannot open: %s", strerror(errno));
        return NULL;
    }
    data = xmalloc(MAX_FILE_BYTES + 1);
    n = fread(data, 1, MAX_FILE_BYTES + 1, f);
    if (ferror(f) || n > MAX_FILE_BYTES) {
        if (ferror(f))
            buf_printf(err, "cannot read: %s", strerror(errno));
        else
            buf_printf(err, "larger than %d bytes", MAX_FILE_BYTES);
        fclose(f);
        free(data);
        return NULL;
    }
    fclose(f);
    data[n] = '\0';
    *len = n;
    return data;
}

int run_config_main(int argc, char **argv)
{
    struct run_config rc;
    struct buf err = BUF_INIT;
    const char *file;
    char *text;
    size_t len = 0, n;
    int status = 2;

    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc != 2) {
        usage(stderr);
        return 2;
    }
    file = argv[1];
    n = strlen(file);
    if (n < 5 || strcmp(file + n - 5, ".json") != 0) {
        fprintf(stderr, "plane run-config: %s: the file name must end in .json\n", file);
        return 2;
    }
    if (!(text = read_file(file, &len, &err))) {
        fprintf(stderr, "plane run-config: %s: %s\n", file, buf_cstr(&err));
        buf_release(&err);
        return 2;
    }
    if (run_config_parse(&rc, text, len, &err) < 0) {
        fprintf(stderr, "plane run-config: %s: %s\n", file, buf_cstr(&err));
    } else if (rc.plans[0].kind == PLAN_DNS) {
        status = run_dns(&rc.plans[0].u.dns);
    } else {
        status = run_plans(&rc, file);
    }
    run_config_release(&rc);
    free(text);
    buf_release(&err);
    return status;
}
