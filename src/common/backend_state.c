/* SPDX-License-Identifier: MIT */
/*
 * backend_state.c - backend states on the wire and the §11.2 conversion
 * rules (see backend_state.h).
 */
#include <errno.h>
#include <string.h>

#include "backend_state.h"
#include "json_util.h"
#include "log.h"
#include "xalloc.h"

static const struct {
    enum backend_status s;
    const char *name;
} statuses[] = {
    {BACKEND_SCHEDULED, "scheduled"}, {BACKEND_LOADING, "loading"},
    {BACKEND_STARTING, "starting"},   {BACKEND_WAITING, "waiting"},
    {BACKEND_READY, "ready"},         {BACKEND_TERMINATING, "terminating"},
    {BACKEND_HARD_TERMINATING, "hard-terminating"}, {BACKEND_TERMINATED, "terminated"},
};

static const char *const reasons[] = {
    [REASON_NONE] = NULL,
    [REASON_SWEPT] = "swept",
    [REASON_EXTERNAL] = "external",
    [REASON_KEYEXPIRED] = "keyexpired",
    [REASON_LOST] = "lost",
    [REASON_STARTUPTIMEOUT] = "startuptimeout",
    [REASON_INTERNALERROR] = "internalerror",
};

const char *backend_status_name(enum backend_status s)
{
    for (size_t i = 0; i < ARRAY_SIZE(statuses); i++)
        if (statuses[i].s == s)
            return statuses[i].name;
    BUG("backend status %d", s);
}

int backend_status_parse(const char *name, enum backend_status *out)
{
    for (size_t i = 0; name && i < ARRAY_SIZE(statuses); i++) {
        if (strcmp(statuses[i].name, name) == 0) {
            *out = statuses[i].s;
            return 0;
        }
    }
    return -EINVAL;
}

const char *termination_reason_name(enum termination_reason r)
{
    return (size_t)r < ARRAY_SIZE(reasons) ? reasons[r] : NULL;
}

int termination_reason_parse(const char *name, enum termination_reason *out)
{
    for (size_t i = 1; name && i < ARRAY_SIZE(reasons); i++) {
        if (strcmp(reasons[i], name) == 0) {
            *out = (enum termination_reason)i;
            return 0;
        }
    }
    return -EINVAL;
}

const char *termination_kind_name(enum termination_kind k)
{
    return k == TERMINATION_SOFT ? "soft" : k == TERMINATION_HARD ? "hard" : NULL;
}

struct backend_state backend_state_simple(enum backend_status s)
{
    struct backend_state st = {.status = s};

    return st;
}

struct backend_state backend_state_at(enum backend_status s, const char *address)
{
    struct backend_state st = {.status = s};

    snprintf(st.address, sizeof(st.address), "%s", address);
    return st;
}

static json_t *name_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

json_t *backend_state_to_json(const struct backend_state *s)
{
    json_t *o = json_object();

    json_object_set_new(o, "status", json_string(backend_status_name(s->status)));
    switch (s->status) {
    case BACKEND_WAITING:
    case BACKEND_READY:
        json_object_set_new(o, "address", json_string(s->address));
        if (s->status == BACKEND_READY && s->frozen)
            json_object_set_new(o, "frozen", json_true());
        break;
    case BACKEND_TERMINATING:
        json_object_set_new(o, "last_status", json_string(backend_status_name(s->last_status)));
        json_object_set_new(o, "termination", json_string("soft"));
        json_object_set_new(o, "reason", name_or_null(termination_reason_name(s->reason)));
        break;
    case BACKEND_HARD_TERMINATING:
        json_object_set_new(o, "last_status", json_string(backend_status_name(s->last_status)));
        json_object_set_new(o, "reason", name_or_null(termination_reason_name(s->reason)));
        break;
    case BACKEND_TERMINATED:
        json_object_set_new(o, "last_status", json_string(backend_status_name(s->last_status)));
        json_object_set_new(o, "termination", name_or_null(termination_kind_name(s->termination)));
        json_object_set_new(o, "reason", name_or_null(termination_reason_name(s->reason)));
        json_object_set_new(o, "exit_code", s->has_exit_code ? json_integer(s->exit_code) : json_null());
        break;
    default:
        break;
    }
    return o;
}

static int fail(struct buf *err, const char *msg)
{
    buf_append_str(err, msg);
    return -EINVAL;
}

int backend_state_from_json(const json_t *j, struct backend_state *out, struct buf *err)
{
    const char *status = json_get_str(j, "status");
    const char *addr, *last, *reason, *kind;
    const json_t *code;

    memset(out, 0, sizeof(*out));
    if (!json_is_object(j) || backend_status_parse(status, &out->status) < 0)
        return fail(err, "state needs a known \"status\"");
    switch (out->status) {
    case BACKEND_WAITING:
    case BACKEND_READY: {
        struct sockaddr_storage ss;
        addr = json_get_str(j, "address");
        if (!addr || strlen(addr) >= sizeof(out->address) || net_addr_parse(addr, &ss) < 0)
            return fail(err, "state needs an \"address\" IP:PORT");
        snprintf(out->address, sizeof(out->address), "%s", addr);
        out->frozen = out->status == BACKEND_READY && json_is_true(json_object_get(j, "frozen"));
        return 0;
    }
    case BACKEND_TERMINATING:
    case BACKEND_HARD_TERMINATING:
    case BACKEND_TERMINATED:
        last = json_get_str(j, "last_status");
        if (backend_status_parse(last, &out->last_status) < 0)
            return fail(err, "state needs a known \"last_status\"");
        reason = json_get_str(j, "reason");
        if (reason && termination_reason_parse(reason, &out->reason) < 0)
            return fail(err, "unknown termination \"reason\"");
        if (!reason && out->status != BACKEND_TERMINATED)
            return fail(err, "state needs a \"reason\"");
        if (out->status == BACKEND_TERMINATED) {
            kind = json_get_str(j, "termination");
            out->termination = !kind ? TERMINATION_NONE
                               : strcmp(kind, "soft") == 0 ? TERMINATION_SOFT
                               : strcmp(kind, "hard") == 0 ? TERMINATION_HARD
                                                           : (enum termination_kind)-1;
            if ((int)out->termination == -1)
                return fail(err, "unknown \"termination\" kind");
            code = json_object_get(j, "exit_code");
            if (code && !json_is_null(code)) {
                if (!json_is_integer(code) || json_integer_value(code) < INT32_MIN ||
                    json_integer_value(code) > INT32_MAX)
                    return fail(err, "\"exit_code\" must be a 32-bit integer or null");
                out->has_exit_code = true;
                out->exit_code = (int)json_integer_value(code);
            }
        } else if (out->status == BACKEND_TERMINATING) {
            out->termination = TERMINATION_SOFT;
        }
        return 0;
    default:
        return 0;
    }
}

json_t *backend_status_entry(const struct backend_state *s, int64_t time_ms)
{
    json_t *o = json_object();
    const char *reason = NULL, *kind = NULL;

    json_object_set_new(o, "status", json_string(backend_status_name(s->status)));
    if (s->status == BACKEND_TERMINATING) {
        reason = termination_reason_name(s->reason);
        kind = "soft";
    } else if (s->status == BACKEND_HARD_TERMINATING) {
        reason = termination_reason_name(s->reason);
        kind = "hard";
    } else if (s->status == BACKEND_TERMINATED) {
        reason = termination_reason_name(s->reason);
        kind = termination_kind_name(s->termination);
    }
    if (reason)
        json_object_set_new(o, "termination_reason", json_string(reason));
    if (kind)
        json_object_set_new(o, "termination_kind", json_string(kind));
    if (s->status == BACKEND_TERMINATED)
        json_object_set_new(o, "exit_error", json_boolean(s->has_exit_code && s->exit_code != 0));
    if (s->status == BACKEND_READY && s->frozen)
        json_object_set_new(o, "frozen", json_true());
    json_object_set_new(o, "time", json_integer(time_ms));
    return o;
}

struct backend_state backend_state_terminating(const struct backend_state *cur, enum termination_reason r)
{
    struct backend_state st = {0};

    if (cur->status >= BACKEND_TERMINATING)
        return *cur;
    st.status = BACKEND_TERMINATING;
    st.last_status = cur->status;
    st.termination = TERMINATION_SOFT;
    st.reason = r;
    return st;
}

struct backend_state backend_state_hard_terminating(const struct backend_state *cur, enum termination_reason r)
{
    struct backend_state st = {0};

    if (cur->status >= BACKEND_HARD_TERMINATING)
        return *cur;
    st.status = BACKEND_HARD_TERMINATING;
    /* From terminating, the original last status is kept. */
    st.last_status = cur->status == BACKEND_TERMINATING ? cur->last_status : cur->status;
    st.reason = r;
    return st;
}

struct backend_state backend_state_terminated(const struct backend_state *cur, bool has_code, int exit_code)
{
    struct backend_state st = {0};

    if (cur->status == BACKEND_TERMINATED)
        return *cur;
    st.status = BACKEND_TERMINATED;
    st.has_exit_code = has_code;
    st.exit_code = has_code ? exit_code : 0;
    if (cur->status == BACKEND_HARD_TERMINATING) {
        st.last_status = cur->last_status;
        st.termination = TERMINATION_HARD;
        st.reason = cur->reason;
    } else if (cur->status == BACKEND_TERMINATING) {
        st.last_status = cur->last_status;
        st.termination = TERMINATION_SOFT;
        st.reason = cur->reason;
    } else {
        st.last_status = cur->status;
    }
    return st;
}
