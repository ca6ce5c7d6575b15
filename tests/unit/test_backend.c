/* SPDX-License-Identifier: MIT */
/*
 * test_backend.c - the drone's backend state machine (spec §11.2) driven
 * through the mock runtime with an in-memory state store: every transition
 * and conversion rule, terminate during loading/starting/waiting, exits on
 * their own and during terminating; plus the state store and the wire form
 * of states.
 */
#include <errno.h>
#include <sys/stat.h>

#include "../../src/common/backend_state.h"
#include "../../src/drone/backend.h"
#include "../../src/drone/state_store.h"
#include "../../src/common/xalloc.h"
#include "runtime_harness.h"

/* ---- pure conversions and the wire form ---- */

static struct backend_state st(enum backend_status s)
{
    return backend_state_simple(s);
}

TEST(state_conversion_rules)
{
    struct backend_state ready = backend_state_at(BACKEND_READY, "1.2.3.4:5");
    struct backend_state t = backend_state_terminating(&ready, REASON_SWEPT);

    ASSERT_EQ(t.status, BACKEND_TERMINATING);
    ASSERT_EQ(t.last_status, BACKEND_READY);
    ASSERT_EQ(t.reason, REASON_SWEPT);
    /* terminating again, or from anything later: unchanged */
    ASSERT_EQ(backend_state_terminating(&t, REASON_EXTERNAL).reason, REASON_SWEPT);
    struct backend_state h = backend_state_hard_terminating(&t, REASON_EXTERNAL);
    ASSERT_EQ(h.status, BACKEND_HARD_TERMINATING);
    ASSERT_EQ(h.last_status, BACKEND_READY); /* keeps terminating's last_status */
    ASSERT_EQ(h.reason, REASON_EXTERNAL);
    ASSERT_EQ(backend_state_terminating(&h, REASON_LOST).status, BACKEND_HARD_TERMINATING);
    ASSERT_EQ(backend_state_hard_terminating(&h, REASON_LOST).reason, REASON_EXTERNAL);
    struct backend_state loading = st(BACKEND_LOADING);
    ASSERT_EQ(backend_state_hard_terminating(&loading, REASON_KEYEXPIRED).last_status, BACKEND_LOADING);

    struct backend_state d = backend_state_terminated(&h, true, 137);
    ASSERT_EQ(d.termination, TERMINATION_HARD);
    ASSERT_EQ(d.reason, REASON_EXTERNAL);
    ASSERT_EQ(d.last_status, BACKEND_READY);
    ASSERT_TRUE(d.has_exit_code && d.exit_code == 137);
    d = backend_state_terminated(&t, false, 0);
    ASSERT_EQ(d.termination, TERMINATION_SOFT);
    ASSERT_EQ(d.reason, REASON_SWEPT);
    d = backend_state_terminated(&ready, true, 3);
    ASSERT_EQ(d.termination, TERMINATION_NONE);
    ASSERT_EQ(d.reason, REASON_NONE);
    ASSERT_EQ(d.last_status, BACKEND_READY);
    struct backend_state again = backend_state_terminated(&d, true, 9);
    ASSERT_EQ(again.exit_code, 3); /* terminated is final */
    ASSERT_EQ(backend_state_terminating(&d, REASON_LOST).status, BACKEND_TERMINATED);
}

static void expect_json(const struct backend_state *s, const char *want)
{
    json_t *j = backend_state_to_json(s);
    char *text = json_dumps(j, JSON_COMPACT);
    struct backend_state back;
    struct buf err = BUF_INIT;

    ASSERT_STR_EQ(text, want);
    ASSERT_OK(backend_state_from_json(j, &back, &err));
    json_t *j2 = backend_state_to_json(&back);
    ASSERT_TRUE(json_equal(j, j2));
    json_decref(j2);
    json_decref(j);
    free(text);
    buf_release(&err);
}

TEST(state_json_shapes)
{
    struct backend_state ready = backend_state_at(BACKEND_READY, "10.0.0.1:8080");
    struct backend_state t = backend_state_terminating(&ready, REASON_EXTERNAL);
    struct backend_state h = backend_state_hard_terminating(&t, REASON_KEYEXPIRED);

    expect_json(&(struct backend_state){.status = BACKEND_SCHEDULED}, "{\"status\":\"scheduled\"}");
    expect_json(&ready, "{\"status\":\"ready\",\"address\":\"10.0.0.1:8080\"}");
    expect_json(&t, "{\"status\":\"terminating\",\"last_status\":\"ready\",\"termination\":\"soft\",\"reason\":\"external\"}");
    expect_json(&h, "{\"status\":\"hard-terminating\",\"last_status\":\"ready\",\"reason\":\"keyexpired\"}");
    struct backend_state d = backend_state_terminated(&h, true, 137);
    expect_json(&d, "{\"status\":\"terminated\",\"last_status\":\"ready\",\"termination\":\"hard\","
                    "\"reason\":\"keyexpired\",\"exit_code\":137}");
    struct backend_state lost = {.status = BACKEND_TERMINATED, .last_status = BACKEND_READY, .reason = REASON_LOST};
    expect_json(&lost, "{\"status\":\"terminated\",\"last_status\":\"ready\",\"termination\":null,\"reason\":\"lost\","
                       "\"exit_code\":null}");

    json_t *e = backend_status_entry(&d, 5);
    char *text = json_dumps(e, JSON_COMPACT);
    ASSERT_STR_EQ(text, "{\"status\":\"terminated\",\"termination_reason\":\"keyexpired\",\"termination_kind\":\"hard\","
                        "\"exit_error\":true,\"time\":5}");
    free(text);
    json_decref(e);
    struct backend_state clean = backend_state_terminated(&ready, true, 0);
    e = backend_status_entry(&clean, 6);
    text = json_dumps(e, JSON_COMPACT);
    ASSERT_STR_EQ(text, "{\"status\":\"terminated\",\"exit_error\":false,\"time\":6}");
    free(text);
    json_decref(e);

    /* Frozen (our extension): ready with "frozen": true, both ways; gone from what follows it. */
    struct backend_state frozen = ready;
    frozen.frozen = true;
    expect_json(&frozen, "{\"status\":\"ready\",\"address\":\"10.0.0.1:8080\",\"frozen\":true}");
    e = backend_status_entry(&frozen, 7);
    text = json_dumps(e, JSON_COMPACT);
    ASSERT_STR_EQ(text, "{\"status\":\"ready\",\"frozen\":true,\"time\":7}");
    free(text);
    json_decref(e);
    struct backend_state ended = backend_state_terminating(&frozen, REASON_SWEPT);
    ASSERT_FALSE(ended.frozen);
    ASSERT_EQ(ended.last_status, BACKEND_READY);

    struct buf err = BUF_INIT;
    struct backend_state out;
    json_t *fj = json_loads("{\"status\":\"ready\",\"address\":\"10.0.0.1:1\",\"frozen\":true}", 0, NULL);
    ASSERT_OK(backend_state_from_json(fj, &out, &err));
    ASSERT_TRUE(out.frozen);
    json_decref(fj);
    fj = json_loads("{\"status\":\"waiting\",\"address\":\"10.0.0.1:1\",\"frozen\":true}", 0, NULL);
    ASSERT_OK(backend_state_from_json(fj, &out, &err));
    ASSERT_FALSE(out.frozen); /* only a ready backend can be frozen */
    json_decref(fj);
    static const char *const bad[] = {"{}", "{\"status\":\"Ready\"}", "{\"status\":\"ready\"}",
                                      "{\"status\":\"ready\",\"address\":\"nope\"}",
                                      "{\"status\":\"terminating\",\"last_status\":\"ready\"}",
                                      "{\"status\":\"terminated\",\"last_status\":\"x\"}", "[]"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *j = json_loads(bad[i], JSON_DECODE_ANY, NULL);
        if (backend_state_from_json(j, &out, &err) != -EINVAL)
            test_fail(__FILE__, __LINE__, "accepted %s", bad[i]);
        json_decref(j);
    }
    buf_release(&err);
}

static void collect(void *arg, int64_t id, const char *backend, const struct backend_state *x, int64_t ts)
{
    (void)backend;
    (void)x;
    (void)ts;
    json_array_append_new(arg, json_integer(id));
}

TEST(state_store_records_acks_and_replays)
{
    struct state_store *s;
    struct buf err = BUF_INIT;
    char *dir = test_tmpdir();
    char *path = xasprintf("%s/state.db", dir);
    struct backend_state ready = backend_state_at(BACKEND_READY, "1.1.1.1:1");
    struct backend_state got;

    ASSERT_OK(state_store_open(&s, path, &err));
    int64_t e1 = state_store_record(s, "b1", &(struct backend_state){.status = BACKEND_LOADING}, 100);
    int64_t e2 = state_store_record(s, "b1", &ready, 200);
    int64_t e3 = state_store_record(s, "b2", &(struct backend_state){.status = BACKEND_STARTING}, 150);
    ASSERT_EQ(e1, 1); /* ids start at 1 in a fresh store */
    ASSERT_TRUE(e2 > e1 && e3 > e2);
    ASSERT_OK(state_store_ack(s, e1));
    state_store_close(s);

    /* A restart: unacked events come back oldest first; latest states too. */
    ASSERT_OK(state_store_open(&s, path, &err));
    ASSERT_OK(state_store_get(s, "b1", &got));
    ASSERT_EQ(got.status, BACKEND_READY);
    ASSERT_EQ(state_store_get(s, "nope", &got), -ENOENT);
    json_t *seen = json_array();
    ASSERT_OK(state_store_each_event(s, collect, seen));
    ASSERT_EQ(json_array_size(seen), 2);
    ASSERT_EQ(json_integer_value(json_array_get(seen, 0)), e3); /* timestamp 150 before 200 */
    ASSERT_EQ(json_integer_value(json_array_get(seen, 1)), e2);
    json_decref(seen);
    state_store_close(s);
    struct stat sb;
    ASSERT_OK(stat(path, &sb));
    ASSERT_EQ(sb.st_mode & 0777, 0600);
    free(path);
    free(dir);
    buf_release(&err);
}

/* ---- the machine, with the mock runtime ---- */

struct machine {
    struct harness h;
    struct state_store *store;
    struct backend_env env;
    struct backend *b;
    char trail[512]; /* "scheduled loading ..." */
    struct backend_state last;
    bool terminated;
};

static void on_state(void *arg, struct backend *b, int64_t event_id, const struct backend_state *s, int64_t ts)
{
    struct machine *m = arg;

    (void)b;
    (void)ts;
    ASSERT_TRUE(event_id > 0); /* persisted before it is reported */
    snprintf(m->trail + strlen(m->trail), sizeof(m->trail) - strlen(m->trail), "%s%s", m->trail[0] ? " " : "",
             backend_status_name(s->status));
    m->last = *s;
    m->terminated = s->status == BACKEND_TERMINATED;
}

static void machine_exit(struct machine *m)
{
    /* The harness records exits; feed them to the backend like the drone does. */
    (void)m;
}

static struct machine *machine_open(const struct runtime_config *cfg)
{
    struct machine *m = xcalloc(1, sizeof(*m));
    struct buf err = BUF_INIT;

    harness_open(&m->h, "mock", cfg);
    ASSERT_OK(state_store_open(&m->store, NULL, &err));
    m->env.loop = &m->h.loop;
    m->env.rt = m->h.rt;
    m->env.store = m->store;
    m->env.ip = "127.0.0.1";
    m->env.on_state = on_state;
    m->env.arg = m;
    buf_release(&err);
    return m;
}

static bool is_terminated(void *arg)
{
    struct machine *m = arg;

    /* Forward runtime exits to the machine, as the drone does. */
    if (m->h.nexits > 0 && m->b && !m->terminated) {
        m->h.nexits = 0;
        backend_exited(m->b, m->h.exit_codes[0] != RUNTIME_EXIT_UNKNOWN, m->h.exit_codes[0]);
    }
    return m->terminated;
}

static bool reached(void *arg)
{
    struct machine *m = arg;

    is_terminated(m);
    return m->last.status >= BACKEND_READY;
}

static void run_backend(struct machine *m, const char *hooks)
{
    json_t *x = json_pack("{s:s, s:o}", "image", "mock", "mock", json_loads(hooks, 0, NULL));
    struct acquired_key key = {.name = "k", .namespace = "", .tag = "", .token = 1};

    m->b = backend_new(&m->env, "b1", x, &key, NULL);
    backend_start(m->b);
    json_decref(x);
}

static void machine_close(struct machine *m)
{
    backend_free(m->b);
    machine_exit(m);
    harness_close(&m->h);
    state_store_close(m->store);
    free(m);
}

TEST(machine_runs_to_ready_and_terminates)
{
    struct machine *m = machine_open(NULL);

    run_backend(m, "{}");
    ASSERT_TRUE(test_run_until(&m->h.loop, 3000, reached, m));
    ASSERT_STR_EQ(m->trail, "scheduled loading starting waiting ready");
    ASSERT_CONTAINS(m->last.address, "127.0.0.1:");
    backend_terminate(m->b, TERMINATION_SOFT, REASON_EXTERNAL);
    ASSERT_TRUE(test_run_until(&m->h.loop, 3000, is_terminated, m));
    ASSERT_STR_EQ(m->trail, "scheduled loading starting waiting ready terminating terminated");
    ASSERT_EQ(m->last.termination, TERMINATION_SOFT);
    ASSERT_EQ(m->last.reason, REASON_EXTERNAL);
    ASSERT_TRUE(m->last.has_exit_code && m->last.exit_code == 0);
    machine_close(m);
}

TEST(machine_freeze_without_a_freezer_is_a_sweep)
{
    struct machine *m = machine_open(NULL);

    run_backend(m, "{}");
    ASSERT_TRUE(test_run_until(&m->h.loop, 3000, reached, m));
    backend_freeze(m->b, false); /* not frozen: nothing to do */
    backend_freeze(m->b, true);  /* the mock runtime cannot freeze */
    ASSERT_TRUE(test_run_until(&m->h.loop, 3000, is_terminated, m));
    ASSERT_STR_EQ(m->trail, "scheduled loading starting waiting ready terminating terminated");
    ASSERT_EQ(m->last.reason, REASON_SWEPT);
    ASSERT_EQ(m->last.termination, TERMINATION_SOFT);
    machine_close(m);
}

TEST(machine_failures_of_each_step)
{
    struct runtime_config cfg = {.ready_timeout_ms = 200};
    static const struct {
        const char *hooks, *trail;
        enum backend_status last;
        enum termination_reason reason;
    } cases[] = {
        {"{\"prepare_error\":\"x\"}", "scheduled loading terminated", BACKEND_LOADING, REASON_NONE},
        {"{\"spawn_error\":\"x\"}", "scheduled loading starting terminated", BACKEND_STARTING, REASON_NONE},
        {"{\"ready_error\":\"x\"}", "scheduled loading starting waiting hard-terminating terminated", BACKEND_WAITING,
         REASON_INTERNALERROR},
        {"{\"never_ready\":true}", "scheduled loading starting waiting hard-terminating terminated", BACKEND_WAITING,
         REASON_STARTUPTIMEOUT},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct machine *m = machine_open(&cfg);
        run_backend(m, cases[i].hooks);
        ASSERT_TRUE(test_run_until(&m->h.loop, 3000, is_terminated, m));
        ASSERT_STR_EQ(m->trail, cases[i].trail);
        ASSERT_EQ(m->last.last_status, cases[i].last);
        ASSERT_EQ(m->last.reason, cases[i].reason);
        machine_close(m);
    }
}

TEST(machine_terminate_during_loading_starting_waiting)
{
    static const struct {
        const char *hooks;
        enum backend_status at;
        const char *trail;
    } cases[] = {
        {"{\"prepare_delay_ms\":5000}", BACKEND_LOADING, "scheduled loading terminating terminated"},
        {"{\"spawn_delay_ms\":5000}", BACKEND_STARTING, "scheduled loading starting terminating terminated"},
        {"{\"ready_delay_ms\":5000}", BACKEND_WAITING, "scheduled loading starting waiting terminating terminated"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct machine *m = machine_open(NULL);
        run_backend(m, cases[i].hooks);
        test_run_for(&m->h.loop, 50);
        ASSERT_EQ(m->last.status, cases[i].at);
        backend_terminate(m->b, TERMINATION_SOFT, REASON_EXTERNAL);
        ASSERT_TRUE(test_run_until(&m->h.loop, 2000, is_terminated, m));
        ASSERT_STR_EQ(m->trail, cases[i].trail);
        ASSERT_EQ(m->last.last_status, cases[i].at);
        ASSERT_EQ(m->last.termination, TERMINATION_SOFT);
        machine_close(m);
    }
}

TEST(machine_exits_on_its_own_and_during_terminating)
{
    struct runtime_config cfg = {.grace_ms = 300};
    struct machine *m = machine_open(NULL);

    run_backend(m, "{\"exit_after_ms\":100,\"exit_code\":3}");
    ASSERT_TRUE(test_run_until(&m->h.loop, 3000, is_terminated, m));
    ASSERT_STR_EQ(m->trail, "scheduled loading starting waiting ready terminated");
    ASSERT_EQ(m->last.termination, TERMINATION_NONE);
    ASSERT_EQ(m->last.reason, REASON_NONE);
    ASSERT_EQ(m->last.exit_code, 3);
    machine_close(m);

    /* Soft ignored; hard while terminating; the exit arrives during hard-terminating. */
    m = machine_open(&cfg);
    run_backend(m, "{\"ignore_soft_terminate\":true}");
    ASSERT_TRUE(test_run_until(&m->h.loop, 3000, reached, m));
    backend_terminate(m->b, TERMINATION_SOFT, REASON_SWEPT);
    test_run_for(&m->h.loop, 50);
    backend_terminate(m->b, TERMINATION_SOFT, REASON_SWEPT); /* again: no new state */
    backend_terminate(m->b, TERMINATION_HARD, REASON_EXTERNAL);
    ASSERT_TRUE(test_run_until(&m->h.loop, 3000, is_terminated, m));
    ASSERT_STR_EQ(m->trail, "scheduled loading starting waiting ready terminating hard-terminating terminated");
    ASSERT_EQ(m->last.termination, TERMINATION_HARD);
    ASSERT_EQ(m->last.reason, REASON_EXTERNAL); /* hard-terminating takes the new reason, keeps last_status */
    ASSERT_EQ(m->last.last_status, BACKEND_READY);
    machine_close(m);
}
