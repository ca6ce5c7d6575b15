/* SPDX-License-Identifier: MIT */
/*
 * acme.h - the controller's part of ACME DNS-01 (spec §8.4, §9): the
 * cluster-wide certificate lease that lets one proxy at a time order a
 * certificate, the TXT value that proxy publishes for the challenge, and
 * the answers to DNS servers asking for it.
 */
#ifndef PLANE_CONTROLLER_ACME_H
#define PLANE_CONTROLLER_ACME_H

#include <stdint.h>

#include <jansson.h>

#include "messages.h"
#include "store.h"

#define CERT_LEASE_MS 60000 /* §19: a lease holds this long, even against its holder */

/*
 * Acts on a CertManagerRequest from the proxy node_id of cluster. Returns
 * the reply (a MessageToProxy, new reference), or NULL when there is none
 * (ReleaseCertLease). A store failure refuses (accepted:false).
 */
json_t *acme_proxy_request(struct store *st, const char *cluster, int64_t node_id, const struct node_msg *m,
                           int64_t now);
/* The TxtRecordResponse to a TxtRecordRequest (new reference); NULL on a store failure: no reply (§9). */
json_t *acme_dns_request(struct store *st, const struct node_msg *m);

#endif
