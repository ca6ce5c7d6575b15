/* SPDX-License-Identifier: MIT */
/*
 * tls.c - OpenSSL server sessions on memory BIOs (see tls.h).
 *
 * Sessions use SSL_MODE_RELEASE_BUFFERS so an idle TLS connection holds no
 * record buffers (10,000 idle WebSockets must stay small), and refuse
 * renegotiation. A context is shared read-only by the worker threads,
 * which OpenSSL 3 allows. A new certificate is a new context swapped in
 * under a mutex: new sessions use it, and sessions already running keep
 * the one they were made from (each SSL holds a reference to its context),
 * so a renewal never disturbs an open connection.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "../common/buf.h"
#include "../common/log.h"
#include "../common/xalloc.h"
#include "tls.h"

struct tls_ctx {
    uv_mutex_t lock;
    SSL_CTX *ctx;   /* under lock; NULL until a certificate is installed */
};

struct tls_conn {
    SSL *ssl;
    BIO *rbio; /* ciphertext in; owned by ssl */
    BIO *wbio; /* ciphertext out; owned by ssl */
};

static void ssl_error(struct buf *err, const char *what)
{
    unsigned long e = ERR_get_error();
    char text[256];

    if (e) {
        ERR_error_string_n(e, text, sizeof(text));
        buf_printf(err, "%s: %s", what, text);
    } else {
        buf_printf(err, "%s", what);
    }
    ERR_clear_error();
}

/* Installs the first certificate of pem as the leaf and the rest as its chain. */
static int use_chain(SSL_CTX *ctx, const char *pem, struct buf *err)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    X509 *x;
    int n = 0;

    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
        int ok = n == 0 ? SSL_CTX_use_certificate(ctx, x) : SSL_CTX_add0_chain_cert(ctx, x);
        if (n == 0 || !ok)
            X509_free(x); /* use_certificate takes its own reference; add0 took ours on success */
        if (!ok) {
            BIO_free(bio);
            ssl_error(err, "cannot use the certificate");
            return -EINVAL;
        }
        n++;
    }
    ERR_clear_error(); /* the end of the PEM stream is reported as an error */
    BIO_free(bio);
    if (n == 0) {
        buf_printf(err, "no PEM certificate in \"cert\"");
        return -EINVAL;
    }
    return 0;
}

static int use_key(SSL_CTX *ctx, const char *pem, struct buf *err)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    EVP_PKEY *key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    int rc = 0;

    BIO_free(bio);
    if (!key) {
        ssl_error(err, "no usable PEM private key in \"key\"");
        return -EINVAL;
    }
    if (!SSL_CTX_use_PrivateKey(ctx, key) || !SSL_CTX_check_private_key(ctx)) {
        ssl_error(err, "the private key does not fit the certificate");
        rc = -EINVAL;
    }
    EVP_PKEY_free(key);
    return rc;
}

/* ALPN (RFC 7301): h2 when the client offers it, else http/1.1; a client offering neither goes on without. */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                       unsigned inlen, void *arg)
{
    static const unsigned char ours[] = "\x02h2\x08http/1.1";

    (void)ssl;
    (void)arg;
    if (SSL_select_next_proto((unsigned char **)out, outlen, ours, sizeof(ours) - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    return SSL_TLSEXT_ERR_OK;
}

struct tls_ctx *tls_ctx_new(void)
{
    struct tls_ctx *t = xcalloc(1, sizeof(*t));

    uv_mutex_init(&t->lock);
    return t;
}

int tls_ctx_use(struct tls_ctx *t, const char *chain, const char *key, struct buf *err)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method()), *old;

    if (!ctx) {
        ssl_error(err, "cannot make a TLS context");
        return -ENOMEM;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    if (use_chain(ctx, chain, err) < 0 || use_key(ctx, key, err) < 0) {
        SSL_CTX_free(ctx);
        return -EINVAL;
    }
    uv_mutex_lock(&t->lock);
    old = t->ctx;
    t->ctx = ctx;
    uv_mutex_unlock(&t->lock);
    SSL_CTX_free(old); /* sessions made from it hold references of their own */
    return 0;
}

bool tls_ctx_ready(struct tls_ctx *t)
{
    bool ready;

    uv_mutex_lock(&t->lock);
    ready = t->ctx != NULL;
    uv_mutex_unlock(&t->lock);
    return ready;
}

void tls_ctx_free(struct tls_ctx *t)
{
    if (!t)
        return;
    SSL_CTX_free(t->ctx);
    uv_mutex_destroy(&t->lock);
    free(t);
}

struct tls_conn *tls_conn_new(struct tls_ctx *ctx)
{
    struct tls_conn *t = xcalloc(1, sizeof(*t));

    uv_mutex_lock(&ctx->lock);
    if (!ctx->ctx)
        BUG("TLS session before a certificate");
    t->ssl = SSL_new(ctx->ctx); /* takes its own reference to the context */
    uv_mutex_unlock(&ctx->lock);
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (!t->ssl || !t->rbio || !t->wbio)
        abort(); /* out of memory, as xmalloc would */
    BIO_set_mem_eof_return(t->rbio, -1);
    SSL_set_bio(t->ssl, t->rbio, t->wbio);
    SSL_set_accept_state(t->ssl);
    return t;
}

void tls_conn_free(struct tls_conn *t)
{
    if (!t)
        return;
    SSL_free(t->ssl); /* frees both BIOs */
    free(t);
}

void tls_conn_feed(struct tls_conn *t, const char *data, size_t n)
{
    while (n > 0) {
        int chunk = n > (1u << 30) ? 1 << 30 : (int)n;
        int w = BIO_write(t->rbio, data, chunk);
        if (w <= 0)
            abort(); /* a memory BIO only fails without memory */
        data += w;
        n -= (size_t)w;
    }
}

int tls_conn_read(struct tls_conn *t, char *out, size_t cap)
{
    int n = SSL_read(t->ssl, out, cap > (1u << 30) ? 1 << 30 : (int)cap);

    if (n > 0)
        return n;
    switch (SSL_get_error(t->ssl, n)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return TLS_WANT;
    case SSL_ERROR_ZERO_RETURN:
        return TLS_EOF;
    default:
        ERR_clear_error();
        return TLS_ERROR;
    }
}

int tls_conn_write(struct tls_conn *t, const char *data, size_t n)
{
    while (n > 0) {
        int chunk = n > (1u << 30) ? 1 << 30 : (int)n;
        int w = SSL_write(t->ssl, data, chunk);
        if (w <= 0) {
            ERR_clear_error();
            return TLS_ERROR;
        }
        data += w;
        n -= (size_t)w;
    }
    return 0;
}

size_t tls_conn_take(struct tls_conn *t, char *out, size_t cap)
{
    int n;

    if (BIO_ctrl_pending(t->wbio) == 0)
        return 0;
    n = BIO_read(t->wbio, out, cap > (1u << 30) ? 1 << 30 : (int)cap);
    return n > 0 ? (size_t)n : 0;
}

void tls_conn_shutdown(struct tls_conn *t)
{
    if (SSL_is_init_finished(t->ssl))
        SSL_shutdown(t->ssl);
    ERR_clear_error();
}
