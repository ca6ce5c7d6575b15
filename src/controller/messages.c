/* SPDX-License-Identifier: MIT */
/*
 * messages.c - decode MessageFromDrone, MessageFromProxy and
 * MessageFromDns (see messages.h).
 */
#include <errno.h>
#include <string.h>

#include "../common/json_util.h"
#include "../common/names.h"
#include "../common/wire.h"
#include "messages.h"

static int fail(struct buf *err, const char *what)
{
    buf_append_str(err, what);
    return -EINVAL;
}

static bool int_field(const json_t *o, const char *k, int64_t *out)
{
    const json_t *v = json_object_get(o, k);

    if (!json_is_integer(v))
        return false;
    *out = json_integer_value(v);
    return true;
}

/* A backend id as the store keeps them; anything else cannot name one of ours. */
static const char *backend_id(const json_t *v)
{
    const char *s = json_is_string(v) ? json_string_value(v) : NULL;

    return s && name_is_valid(s, NULL) ? s : NULL;
}

static int decode_drone(const char *tag, json_t *p, struct node_msg *m, struct buf *err)
{
    if (strcmp(tag, "Heartbeat") == 0) {
        m->kind = MSG_HEARTBEAT;
        return int_field(p, "local_time", &m->local_time) ? 0 : fail(err, "Heartbeat needs local_time");
    }
    if (strcmp(tag, "BackendEvent") == 0) {
        m->kind = MSG_BACKEND_EVENT;
        m->backend_id = backend_id(json_object_get(p, "backend_id"));
        if (!m->backend_id || !int_field(p, "event_id", &m->event_id))
            return fail(err, "BackendEvent needs backend_id and event_id");
        if (!int_field(p, "timestamp", &m->timestamp))
            m->timestamp = 0; /* ignored by the controller anyway */
        return backend_state_from_json(json_object_get(p, "state"), &m->state, err);
    }
    if (strcmp(tag, "BackendMetrics") == 0) {
        m->kind = MSG_BACKEND_METRICS;
        m->backend_id = backend_id(json_object_get(p, "backend_id"));
        return m->backend_id ? 0 : fail(err, "BackendMetrics needs backend_id");
    }
    if (strcmp(tag, "AckAction") == 0) {
        m->kind = MSG_ACK_ACTION;
        m->action_id = json_get_str(p, "action_id");
        return m->action_id ? 0 : fail(err, "AckAction needs action_id");
    }
    if (strcmp(tag, "RenewKey") == 0) {
        m->kind = MSG_RENEW_KEY;
        m->backend_id = backend_id(json_object_get(p, "backend"));
        if (!m->backend_id || !int_field(p, "local_time", &m->local_time))
            return fail(err, "RenewKey needs backend and local_time");
        return 0;
    }
    buf_printf(err, "unknown drone message '%.64s'", tag);
    return -EINVAL;
}

static int decode_proxy(const char *tag, json_t *p, struct node_msg *m, struct buf *err)
{
    if (strcmp(tag, "RouteInfoRequest") == 0) {
        m->kind = MSG_ROUTE_INFO_REQUEST;
        m->token = json_get_str(p, "token");
        return m->token ? 0 : fail(err, "RouteInfoRequest needs token");
    }
    if (strcmp(tag, "KeepAlive") == 0) {
        m->kind = MSG_KEEPALIVE;
        m->backend_id = backend_id(p);
        return m->backend_id ? 0 : fail(err, "KeepAlive needs a backend id");
    }
    if (strcmp(tag, "CertManagerRequest") == 0) {
        json_t *inner;
        const char *v = wire_variant_of(p, &inner);
        if (v && strcmp(v, "CertLeaseRequest") == 0 && !inner) {
            m->kind = MSG_CERT_LEASE_REQUEST;
            return 0;
        }
        if (v && strcmp(v, "ReleaseCertLease") == 0 && !inner) {
            m->kind = MSG_RELEASE_CERT_LEASE;
            return 0;
        }
        if (v && strcmp(v, "SetTxtRecord") == 0 && (m->txt_value = json_get_str(inner, "txt_value"))) {
            m->kind = MSG_SET_TXT_RECORD;
            return 0;
        }
        return fail(err, "unknown CertManagerRequest");
    }
    buf_printf(err, "unknown proxy message '%.64s'", tag);
    return -EINVAL;
}

static int decode_dns(const char *tag, json_t *p, struct node_msg *m, struct buf *err)
{
    if (strcmp(tag, "TxtRecordRequest") == 0) {
        m->kind = MSG_TXT_RECORD_REQUEST;
        m->cluster = json_get_str(p, "cluster");
        return m->cluster ? 0 : fail(err, "TxtRecordRequest needs cluster");
    }
    buf_printf(err, "unknown DNS server message '%.64s'", tag);
    return -EINVAL;
}

int node_msg_decode(const char *text, size_t len, enum node_kind kind, struct node_msg *m, struct buf *err)
{
    json_error_t jerr;
    json_t *p;
    const char *tag;

    memset(m, 0, sizeof(*m));
    m->root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!m->root) {
        buf_printf(err, "not JSON: %s", jerr.text);
        return -EINVAL;
    }
    tag = wire_variant_of(m->root, &p);
    if (!tag || !p)
        return fail(err, "not a message variant");
    switch (kind) {
    case NODE_DRONE:
        return decode_drone(tag, p, m, err);
    case NODE_PROXY:
        return decode_proxy(tag, p, m, err);
    default:
        return decode_dns(tag, p, m, err);
    }
}

void node_msg_release(struct node_msg *m)
{
    json_decref(m->root);
    memset(m, 0, sizeof(*m));
}
