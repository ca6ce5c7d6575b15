/* SPDX-License-Identifier: MIT */
/*
 * tls.h - TLS termination for the proxy with OpenSSL (spec §16.5): the
 * certificate file ({"cert": PEM chain, "key": PEM key}), one server
 * context shared by every worker thread, and per-connection sessions that
 * work on memory buffers, so the event loop owns every socket operation:
 * ciphertext read from the socket is fed in, plaintext comes out, and
 * plaintext written goes in with its ciphertext taken out to send.
 */
#ifndef PLANE_PROXY_TLS_H
#define PLANE_PROXY_TLS_H

#include <stdbool.h>
#include <stddef.h>

struct buf;
struct tls_ctx;
struct tls_conn;

enum { TLS_WANT = 0, TLS_EOF = -1, TLS_ERROR = -2 };

/* A context without a certificate yet; every worker thread shares it. */
struct tls_ctx *tls_ctx_new(void);
/*
 * Serves chain (PEM, leaf first) with key (PEM) for every SNI from now on;
 * any thread. On error (unusable PEM, a key that does not fit) nothing
 * changes: -EINVAL with one line in err.
 */
int tls_ctx_use(struct tls_ctx *ctx, const char *chain, const char *key, struct buf *err);
/* Whether a certificate is installed. Any thread. */
bool tls_ctx_ready(struct tls_ctx *ctx);
void tls_ctx_free(struct tls_ctx *ctx);

/* A server-side session (owned by the caller; tls_conn_free). */
struct tls_conn *tls_conn_new(struct tls_ctx *ctx);
void tls_conn_free(struct tls_conn *t);
/* Hands ciphertext from the peer to the session. */
void tls_conn_feed(struct tls_conn *t, const char *data, size_t n);
/*
 * Decrypts into out: > 0 bytes of plaintext, TLS_WANT (more ciphertext is
 * needed; check tls_conn_take() for handshake output), TLS_EOF (the peer
 * sent close_notify) or TLS_ERROR.
 */
int tls_conn_read(struct tls_conn *t, char *out, size_t cap);
/* Encrypts plaintext; 0, or TLS_ERROR if the session is broken. */
int tls_conn_write(struct tls_conn *t, const char *data, size_t n);
/* Ciphertext to send: copies up to cap bytes into out and returns how many (0: none). */
size_t tls_conn_take(struct tls_conn *t, char *out, size_t cap);
/* Queues our close_notify (then take() it). */
void tls_conn_shutdown(struct tls_conn *t);

#endif
