/* SPDX-License-Identifier: MIT */
/*
 * cert_manager.h - the proxy's certificate (spec §16.5): keeps the TLS
 * context serving the newest certificate of the certificate file, and with
 * ACME settings obtains and renews it: the cluster's certificate lease from
 * the controller (one proxy orders at a time), an ACME DNS-01 order whose
 * TXT value the controller publishes to `plane dns`, then the file written
 * and the new certificate served by every worker. Proxies sharing a
 * certificate file share the certificate: one orders, the others pick the
 * file up.
 *
 * It runs on a thread of its own (ACME calls block); the control loop
 * passes it the controller's answers and hears of each new certificate.
 */
#ifndef PLANE_PROXY_CERT_MANAGER_H
#define PLANE_PROXY_CERT_MANAGER_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "acme.h"

struct buf;
struct cert_manager;
struct ctrl_link;
struct tls_ctx;

#define CERT_RENEW_BEFORE_MS (30LL * 24 * 3600 * 1000) /* §19: renewal window */
#define CERT_LEASE_RETRY_MS 60000                      /* §19: lease refused */
#define CERT_FAILURE_RETRY_MS 30000                    /* §19: first retry after a failure, doubling */
#define CERT_FAILURE_RETRY_MAX_MS (10 * 60000)
#define CERT_FILE_CHECK_MS 2000                        /* how often the file is looked at */
#define CERT_REPLY_TIMEOUT_MS 10000                    /* for a controller answer */

struct cert_manager_config {
    const char *cluster;
    const char *cert_path;     /* the certificate file, or NULL */
    bool acme;                 /* obtain certificates (acme_cfg is set) */
    struct acme_config acme_cfg;
};

/* Called on the control loop after a new certificate was installed. */
typedef void cert_installed_fn(void *arg);

/*
 * Installs the certificate file's certificate if there is one, and starts
 * the certificate thread. tls, link and control are borrowed and must
 * outlive the manager. NULL with one line in err if the thread cannot
 * start, or, without ACME, the file gives no usable certificate.
 */
struct cert_manager *cert_manager_start(uv_loop_t *control, const struct cert_manager_config *cfg,
                                        struct tls_ctx *tls, struct ctrl_link *link, cert_installed_fn *installed,
                                        void *arg, struct buf *err);
/* Renews now, whatever the expiry (SIGUSR1). Any thread. */
void cert_manager_renew_now(struct cert_manager *m);
/* A CertManagerResponse from the controller: tag and its "accepted". Control loop. */
void cert_manager_response(struct cert_manager *m, const char *tag, bool accepted);
/* Stops and joins the thread, then frees the manager once its handle has closed. Control loop. NULL is fine. */
void cert_manager_stop(struct cert_manager *m);

#endif
