/* SPDX-License-Identifier: MIT */
/*
 * acme.h - an ACME client (RFC 8555) for DNS-01 orders: the account (an
 * ES256 key, optional External Account Binding), an order for a set of
 * names, its dns-01 challenges, the CSR for a fresh RSA key, and the
 * certificate chain. Calls block: the proxy runs them on its certificate
 * thread (cert_manager.c). HTTP goes through libcurl; keys, JWS and the CSR
 * through OpenSSL.
 */
#ifndef PLANE_PROXY_ACME_H
#define PLANE_PROXY_ACME_H

#include <stdbool.h>
#include <stddef.h>

struct acme_client;
struct buf;

struct acme_config {
    const char *directory_url;    /* the ACME directory */
    const char *ca_file;          /* CA certificates for the ACME server's TLS; NULL: the system's */
    const char *email;            /* contact mailto:, or NULL */
    const char *eab_kid;          /* External Account Binding key id, or NULL */
    const char *eab_hmac_key;     /* its HMAC key, base64url */
    const char *account_key_path; /* the account key (PEM), kept across runs; NULL: a new one per run */
    unsigned txt_wait_ms;         /* after a TXT value is published, before the challenge is answered */
};

struct acme_hooks {
    /* Publishes the TXT value of a dns-01 challenge. 0, or -errno with a line in err. */
    int (*publish_txt)(void *arg, const char *value, struct buf *err);
    /* Waits ms; false if the client should stop instead. */
    bool (*sleep)(void *arg, unsigned ms);
    /* Whether to stop now (checked during transfers too). */
    bool (*cancelled)(void *arg);
    void *arg;
};

/* A client; cfg's strings are copied, hooks copied. */
struct acme_client *acme_client_new(const struct acme_config *cfg, const struct acme_hooks *hooks);
void acme_client_free(struct acme_client *c);

/*
 * Orders a certificate for names (the first is its subject), registering
 * the account first if needed. On 0, *chain (PEM, leaf first) and *key
 * (PEM "RSA PRIVATE KEY", spec §16.5) are owned by the caller; otherwise
 * -errno and one line in err.
 */
int acme_order(struct acme_client *c, const char *const *names, size_t n, char **chain, char **key,
               struct buf *err);

#endif
