/* SPDX-License-Identifier: MIT */
/*
 * controller.c - start and stop the controller, its command line, and the
 * operations shared by its parts: queueing actions for drones, applying
 * state updates, and the periodic loops (lost drones, token cleanup).
 *
 * Beyond Plane (spec §10.8 leaves dead drones alone): a drone silent for
 * longer than --lost-drone-seconds has its backends marked terminated with
 * reason "lost", and a hard terminate queued for it in case it comes back.
 * Their keys are not freed then: they stay held, no longer renewable, until
 * they expire, because a drone that is only cut off still runs the backend
 * until its own key deadlines (all before the expiry) end it.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/clock.h"
#include "../common/log.h"
#include "../common/names.h"
#include "../common/run_loop.h"
#include "../common/url.h"
#include "../common/wire.h"
#include "../common/xalloc.h"
#include "controller.h"
#include "forward_auth.h"

#define TICK_MS 5000 /* clock sync and lost drones */
#define CLEANUP_MS 180000

/* The store's clock minus ours (0 for SQLite): every time the controller uses is the database's. */
static int64_t store_clock_offset;

int64_t controller_now(void)
{
    return clock_epoch_ms() + store_clock_offset;
}

/* Reads the database's clock, halfway through the round trip. */
static void sync_clock(struct controller *c)
{
    int64_t t0 = clock_epoch_ms(), db;

    if (c->store->ops->clock && STORE_CALL(c->store, clock, &db) == 0)
        store_clock_offset = db - (t0 + clock_epoch_ms()) / 2;
}

json_t *controller_action_body(const char *action_id, const char *backend_id, int64_t drone_id, json_t *action)
{
    json_t *o = json_object();

    json_object_set_new(o, "action_id", json_string(action_id));
    json_object_set_new(o, "backend_id", json_string(backend_id));
    json_object_set_new(o, "drone_id", json_integer(drone_id));
    json_object_set_new(o, "action", action);
    return o;
}

int controller_queue_action(struct controller *c, const char *backend_id, int64_t drone_id, json_t *action)
{
    char *action_id = name_random("ak");
    json_t *body = controller_action_body(action_id, backend_id, drone_id, action);
    char *text = wire_text(body);
    char key[32];
    int rc = STORE_CALL(c->store, action_create, action_id, backend_id, drone_id, text, controller_now());

    if (rc == 0) {
        snprintf(key, sizeof(key), "%lld", (long long)drone_id);
        events_publish(c->events, EVENT_BACKEND_ACTION, key, body);
    }
    json_decref(body);
    free(text);
    free(action_id);
    return rc;
}

int controller_update_state(struct controller *c, const char *backend_id, const struct backend_state *st,
                            bool release_key, bool *accepted)
{
    int64_t now = controller_now();
    int rc = STORE_CALL(c->store, backend_update_state, backend_id, st, now, release_key, accepted);

    if (rc == 0 && *accepted) {
        json_t *at = json_object_get(c->scheduled_at, backend_id);
        if (at && st->status == BACKEND_READY)
            metric_histogram_observe(c->spawn_ready, (double)(now - json_integer_value(at)) / 1000.0);
        if (at && st->status >= BACKEND_READY)
            json_object_del(c->scheduled_at, backend_id);
        json_t *payload = json_pack("{s:o, s:I}", "state", backend_state_to_json(st), "time", (json_int_t)now);
        events_publish(c->events, EVENT_BACKEND_STATE, backend_id, payload);
        json_decref(payload);
    }
    return rc;
}

/* After the bus (re)connects: what other controllers announced meanwhile is in the store. */
static void resync(void *arg)
{
    api_streams_resync(arg);
    sockets_resync(arg);
}

/* ---- lost drones ---- */

static void mark_lost(void *arg, const char *backend_id, int64_t drone_id)
{
    struct controller *c = arg;
    struct backend_row row;
    bool accepted = false;

    if (STORE_CALL(c->store, backend_get, backend_id, &row) < 0)
        return;
    struct backend_state st = {.status = BACKEND_TERMINATED,
                               .last_status = row.state.status >= BACKEND_TERMINATING ? row.state.last_status
                                                                                       : row.state.status,
                               .reason = REASON_LOST};
    /* The key stays held until it expires: the drone may only be cut off, and
     * it keeps running the backend until its own deadlines end it, which are
     * earlier than the key's expiry. Only then can the key start elsewhere. */
    if (controller_update_state(c, backend_id, &st, false, &accepted) == 0 && accepted) {
        log_warn("backend %s: drone %s silent too long, backend marked lost; its key is held until it expires",
                 backend_id, row.drone_name ? row.drone_name : "?");
        /* Should the drone come back, it must not keep running it. */
        controller_queue_action(c, backend_id, drone_id,
                                wire_variant("Terminate", json_pack("{s:s, s:s}", "kind", "hard", "reason", "lost")));
    }
    backend_row_release(&row);
}

static void tick_cb(uv_timer_t *t)
{
    struct controller *c = t->data;

    sync_clock(c);
    int64_t now = controller_now();
    if (c->lost_after_ms <= 0)
        return;
    /* While this controller was down nobody heard the drones: silence only
     * counts from when it started, or a restart would call every drone lost
     * that has not reconnected yet. */
    if (now - c->started_at < c->lost_after_ms)
        return;
    STORE_CALL(c->store, lost_backends, now - c->lost_after_ms, mark_lost, c);
}

static void cleanup_cb(uv_timer_t *t)
{
    struct controller *c = t->data;

    STORE_CALL(c->store, cleanup_tokens, controller_now());
}

/* ---- start / stop ---- */

/* Frees what the controller owns; its handles must be closed already. */
static void controller_free(struct controller *c)
{
    forward_auth_free(c->forward_auth);
    events_free(c->events);
    metrics_free(c->metrics);
    json_decref(c->scheduled_at);
    store_close(c->store);
    free(c->status_base);
    free(c->default_cluster);
    free(c->id);
    free(c);
}

int controller_start(struct controller **out, uv_loop_t *loop, const struct controller_config *cfg, struct buf *err)
{
    struct controller *c = xcalloc(1, sizeof(*c));
    int rc;

    *out = NULL;
    c->loop = loop;
    c->id = cfg->id ? xstrdup(cfg->id) : name_random("co");
    c->default_cluster = cfg->default_cluster ? xstrdup(cfg->default_cluster) : NULL;
    c->best_of = cfg->best_of > 0 ? cfg->best_of : 2;
    c->lost_after_ms = cfg->lost_after_ms;
    c->key_lease_ms = cfg->key_lease_ms > 0 ? cfg->key_lease_ms : 60000;
    list_init(&c->sessions);
    list_init(&c->streams);
    if (cfg->controller_url) {
        struct url u;
        if (url_parse(cfg->controller_url, &u) < 0) {
            buf_printf(err, "invalid --controller-url '%s'", cfg->controller_url);
            rc = -EINVAL;
            goto fail;
        }
        char *auth = url_authority(&u);
        bool default_port = (strcmp(u.scheme, "https") == 0 && u.port == 443) ||
                            (strcmp(u.scheme, "http") == 0 && u.port == 80);
        c->status_base = default_port ? xasprintf("%s://%s", u.scheme, u.host) : xasprintf("%s://%s", u.scheme, auth);
        free(auth);
        url_release(&u);
    }
    if (cfg->forward_auth && !(c->forward_auth = forward_auth_new(loop, cfg->forward_auth, err))) {
        rc = -EINVAL;
        goto fail;
    }
    if ((rc = store_open(&c->store, cfg->db, err)) < 0)
        goto fail;
    sync_clock(c);
    c->started_at = controller_now();
    c->events = events_new();
    if (c->store->ops == &store_pg_ops)
        c->bus = pg_bus_start(loop, cfg->db, c->id, c->events, resync, c);
    c->metrics = metrics_new();
    c->connects_spawned = metrics_counter(c->metrics, "plane_connects_total", "result=\"spawned\"",
                                          "Connect requests by outcome.");
    c->connects_existing = metrics_counter(c->metrics, "plane_connects_total", "result=\"existing\"", "");
    c->connects_failed = metrics_counter(c->metrics, "plane_connects_total", "result=\"error\"", "");
    c->spawn_ready = metrics_histogram(c->metrics, "plane_backend_start_seconds",
                                       "Time from scheduling a backend to its ready state.");
    c->scheduled_at = json_object();
    c->http = http_server_new(loop, api_handle, c);
    if ((rc = http_server_listen(c->http, cfg->host, cfg->port, err)) < 0)
        goto fail;
    if (!c->status_base)
        c->status_base = xasprintf(strchr(cfg->host, ':') ? "http://[%s]:%d" : "http://%s:%d", cfg->host,
                                   http_server_port(c->http));
    uv_timer_init(loop, &c->tick_timer);
    uv_timer_init(loop, &c->cleanup_timer);
    c->tick_timer.data = c->cleanup_timer.data = c;
    connect_batch_init(c);
    c->open_handles = 3;
    uv_timer_start(&c->tick_timer, tick_cb, TICK_MS, TICK_MS);
    uv_timer_start(&c->cleanup_timer, cleanup_cb, CLEANUP_MS, CLEANUP_MS);
    log_info("controller %s: listening on %s:%d", c->id, cfg->host, http_server_port(c->http));
    *out = c;
    return 0;
fail:
    if (c->http)
        http_server_close(c->http);
    controller_free(c);
    return rc;
}

int controller_port(const struct controller *c)
{
    return http_server_port(c->http);
}

static void timer_closed(uv_handle_t *h)
{
    struct controller *c = h->data;

    if (--c->open_handles == 0)
        controller_free(c);
}

void controller_stop(struct controller *c)
{
    if (!c || c->stopping)
        return;
    c->stopping = true;
    api_streams_close(c);
    sockets_close_all(c);
    pg_bus_stop(c->bus);
    c->bus = NULL;
    http_server_close(c->http);
    uv_close((uv_handle_t *)&c->tick_timer, timer_closed);
    uv_close((uv_handle_t *)&c->cleanup_timer, timer_closed);
    uv_close((uv_handle_t *)&c->held_idle, timer_closed);
}

/* ---- the command line ---- */

static void stop_cb(void *arg)
{
    controller_stop(arg);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: plane controller --db PATH [options]\n"
               "\n"
               "  --db PATH|URL            SQLite file (created if missing)\n"
               "  --port N                 listen port (default 8080)\n"
               "  --host IP                listen address (default 127.0.0.1)\n"
               "  --controller-url URL     base URL clients reach this controller at\n"
               "  --default-cluster NAME   cluster for spawn configs that name none\n"
               "  --best-of N              scheduler sample size (default 2)\n"
               "  --lost-drone-seconds N   mark backends of drones silent this long lost (default 120, 0: never)\n"
               "  --key-lease-seconds N    key lease: renew at N/2, soft/hard terminate at 2N/3 and 5N/6 (default 60)\n"
               "  --forward-auth URL       ask this http:// URL before serving any /ctrl request (2xx: allowed)\n");
}

int controller_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"db", required_argument, NULL, 'd'},
        {"port", required_argument, NULL, 'p'},
        {"host", required_argument, NULL, 'H'},
        {"controller-url", required_argument, NULL, 'u'},
        {"default-cluster", required_argument, NULL, 'c'},
        {"best-of", required_argument, NULL, 'b'},
        {"lost-drone-seconds", required_argument, NULL, 'l'},
        {"cleanup-min-age-days", required_argument, NULL, 'C'},
        {"forward-auth", required_argument, NULL, 'f'},
        {"key-lease-seconds", required_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    struct controller_config cfg = {.host = "127.0.0.1", .port = 8080, .best_of = 2, .lost_after_ms = 120000};
    uv_loop_t loop;
    struct controller *c = NULL;
    struct buf err = BUF_INIT;
    char *end;
    long v;
    int opt, rc;

    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'd': cfg.db = optarg; break;
        case 'H': cfg.host = optarg; break;
        case 'u': cfg.controller_url = optarg; break;
        case 'c': cfg.default_cluster = optarg; break;
        case 'C': break; /* accepted for compatibility; expired tokens are always cleaned */
        case 'f': cfg.forward_auth = optarg; break;
        case 'p':
        case 'b':
        case 'l':
        case 'k':
            v = strtol(optarg, &end, 10);
            if (*end || v < 0 || v > (opt == 'p' ? 65535 : 1000000) || ((opt == 'b' || opt == 'k') && v < 1)) {
                fprintf(stderr, "plane controller: invalid number '%s'\n", optarg);
                return 2;
            }
            if (opt == 'p') {
                cfg.port = (int)v;
            } else if (opt == 'b') {
                cfg.best_of = (int)v;
            } else if (opt == 'k') {
                cfg.key_lease_ms = v * 1000;
            } else {
                if (v > 0 && v < 10) {
                    fprintf(stderr, "plane controller: --lost-drone-seconds must be 0 or at least 10 "
                                    "(drones send a heartbeat every 7 s)\n");
                    return 2;
                }
                cfg.lost_after_ms = v * 1000;
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc || !cfg.db) {
        fprintf(stderr, "plane controller: %s\n", optind < argc ? "unexpected argument" : "--db is required");
        return 2;
    }
    uv_loop_init(&loop);
    rc = controller_start(&c, &loop, &cfg, &err);
    if (rc < 0) {
        fprintf(stderr, "plane controller: %s\n", buf_cstr(&err));
        uv_run(&loop, UV_RUN_DEFAULT); /* let what was opened close */
        uv_loop_close(&loop);
    } else {
        run_until_signal(&loop, stop_cb, c);
    }
    buf_release(&err);
    return rc < 0 ? 1 : 0;
}
