/* SPDX-License-Identifier: MIT */
/*
 * acme.c - certificate leases and TXT records for ACME DNS-01 (see acme.h).
 * The rows live in the store's acme_txt_entries (one per cluster); this
 * file decides what each message does and what is answered.
 */
#include <stdbool.h>
#include <stdlib.h>

#include "../common/log.h"
#include "../common/wire.h"
#include "acme.h"

static json_t *cert_reply(const char *tag, bool accepted)
{
    return wire_variant("CertManagerResponse", wire_variant(tag, json_pack("{s:b}", "accepted", accepted)));
}

json_t *acme_proxy_request(struct store *st, const char *cluster, int64_t node_id, const struct node_msg *m,
                           int64_t now)
{
    bool ok = false;

    switch (m->kind) {
    case MSG_CERT_LEASE_REQUEST:
        if (STORE_CALL(st, cert_lease, cluster, node_id, now, CERT_LEASE_MS, &ok) < 0)
            ok = false;
        log_info("cluster %s: certificate lease %s node %lld", cluster, ok ? "granted to" : "refused to",
                 (long long)node_id);
        return cert_reply("CertLeaseResponse", ok);
    case MSG_SET_TXT_RECORD:
        if (STORE_CALL(st, txt_set, cluster, node_id, m->txt_value, &ok) < 0)
            ok = false;
        log_info("cluster %s: TXT record %s", cluster, ok ? "set" : "refused (no lease)");
        return cert_reply("SetTxtRecordResponse", ok);
    case MSG_RELEASE_CERT_LEASE:
        if (STORE_CALL(st, cert_release, cluster, node_id) == 0)
            log_info("cluster %s: certificate lease released by node %lld", cluster, (long long)node_id);
        return NULL;
    default:
        BUG("not a cert manager message: %d", (int)m->kind);
    }
}

json_t *acme_dns_request(struct store *st, const struct node_msg *m)
{
    char *value = NULL;
    json_t *reply;

    if (STORE_CALL(st, txt_get, m->cluster, &value) < 0)
        return NULL;
    reply = wire_variant("TxtRecordResponse", json_pack("{s:s, s:o}", "cluster", m->cluster, "txt_value",
                                                        value ? json_string(value) : json_null()));
    free(value);
    return reply;
}
