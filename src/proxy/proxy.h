/* SPDX-License-Identifier: MIT */
/*
 * proxy.h - `plane proxy` (spec §2.3, §16): the entry point, and the state
 * every worker loop shares with the control loop: configuration, the
 * route cache, the connection monitor, the controller link and the TLS
 * context.
 */
#ifndef PLANE_PROXY_PROXY_H
#define PLANE_PROXY_PROXY_H

#include <stdbool.h>

#include <uv.h>

#include "../common/buf.h"

struct cert_manager;
struct ctrl_link;
struct monitor;
struct route_cache;
struct tls_ctx;
struct worker;

/* `plane proxy [options]`; returns the process exit status. */
int proxy_main(int argc, char **argv);

/* The command line's settings. */
struct proxy_options {
    const char *name, *controller_url, *cluster, *cert_path, *root_redirect, *host;
    const char *acme_endpoint, *acme_email, *eab_kid, *eab_key;
    const char *acme_ca_cert;     /* CA file for the ACME server's TLS, or NULL */
    const char *acme_account_key; /* NULL: <cert_path>.account.pem, or none without a cert path */
    int acme_dns_wait_ms;         /* after publishing a TXT value; -1: the spec's 15 s */
    int http_port, https_port; /* -1: not given */
    bool https;
    long workers;              /* 0: one per core */
    unsigned keepalive_ms;     /* 0: the spec's 7 s */
    int metrics_port;          /* serve /metrics on 127.0.0.1:port; 0: none */
    bool no_splice;            /* tunnels copy through user space */
    const char *io;            /* "uring", "epoll", or NULL: $PLANE_PROXY_IO, else uring where the kernel allows */
};

struct proxy;
/* "uring" or "epoll" (an --io value); NULL (no choice made) is fine. */
bool proxy_io_valid(const char *io);
/*
 * Starts a proxy whose control side runs on loop (the workers get threads
 * and loops of their own). 0, or -errno with a line in err.
 */
int proxy_start(struct proxy **out, uv_loop_t *loop, const struct proxy_options *o, struct buf *err);
/* Begins the graceful shutdown (§16.7); the control loop ends once it is done. */
void proxy_stop(struct proxy *px);
/* After the control loop has returned: joins the workers and frees px. */
void proxy_free(struct proxy *px);

struct proxy {
    /* Configuration: set before the workers start, read-only afterwards. */
    char *name;             /* owned; px-... */
    char *cluster;          /* owned */
    char *server_header;    /* owned; "Plane/<version>-<hash>" */
    char *root_redirect;    /* owned; normalised --root-redirect-url, or NULL */
    char *bind_host;        /* owned; listen address */
    int http_port;          /* -1: none */
    int https_port;         /* -1: none; with it, http_port only redirects */
    unsigned nworkers;
    bool splice;            /* plain tunnels move by splice(2) (splice.c) */
    bool io_uring;          /* plain TCP streams use each worker's io_uring (stream_uring.c) */

    /* Shared services; each documents its own thread rules. */
    struct route_cache *cache;
    struct monitor *mon;
    struct ctrl_link *link;
    struct tls_ctx *tls;    /* owned; NULL without HTTPS */
    struct cert_manager *certs; /* keeps tls's certificate current; NULL without HTTPS */

    uv_loop_t *control;     /* borrowed: the main thread's loop */
    struct worker **workers;
    uv_mutex_t wake_lock;   /* serialises wakes of workers with their shutdown */
    uv_async_t worker_done; /* a worker thread has finished */
    uv_timer_t force;       /* graceful shutdown deadline */
    uv_signal_t renew;      /* SIGUSR1: renew the certificate now */
    bool workers_started;   /* with HTTPS, only once there is a certificate (§16.5) */
    struct http_server *metrics; /* /metrics on the control loop, or NULL */
    unsigned workers_left;
    bool stopping;
};

/* Wakes a worker's loop (route answers, drain, force); any thread. */
void proxy_wake_worker(struct proxy *px, unsigned idx);

#endif
