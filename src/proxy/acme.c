/* SPDX-License-Identifier: MIT */
/*
 * acme.c - the ACME client (see acme.h).
 *
 * Every request but the directory and the first nonce is a JWS POST (RFC
 * 8555 §6.2) signed with the account key: ES256 over P-256, the key itself
 * in the "jwk" header for newAccount and the account URL as "kid" after.
 * A badNonce answer is retried with the nonce it carries (servers reject
 * good nonces on purpose to test clients, §6.5). Reads are POST-as-GET.
 *
 * Polling waits 250 ms at first and doubles up to 5 s (Plane polls every
 * 5 s, §16.5), up to a minute per step; a server's Retry-After is
 * honoured within that.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "../common/buf.h"
#include "../common/file_util.h"
#include "../common/json_util.h"
#include "../common/log.h"
#include "../common/names.h"
#include "../common/xalloc.h"
#include "acme.h"

#define HTTP_TIMEOUT_S 30
#define HTTP_CONNECT_TIMEOUT_S 10
#define POLL_FIRST_MS 250
#define POLL_MAX_MS 5000
#define POLL_LIMIT_MS 60000
#define NONCE_RETRIES 5
#define CERT_KEY_BITS 4096 /* §16.5 */
#define MAX_BODY (1 << 20)

struct acme_client {
    struct acme_config cfg; /* strings owned */
    struct acme_hooks hooks;
    CURL *curl;
    EVP_PKEY *key;          /* the account key */
    char *jwk;              /* its JWK, members in thumbprint order (RFC 7638) */
    char *thumbprint;       /* base64url SHA-256 of jwk */
    char *kid;              /* the account URL, once registered */
    json_t *dir;            /* the directory */
    char nonce[256];        /* a fresh nonce, or "" */
};

struct response {
    long status;
    struct buf body;
    char *location;
    unsigned retry_after_ms;
};

static void response_release(struct response *r)
{
    buf_release(&r->body);
    free(r->location);
    memset(r, 0, sizeof(*r));
}

/* ---- encodings ---- */

static char *b64u(const unsigned char *in, size_t n)
{
    char *out = xmalloc(4 * ((n + 2) / 3) + 1);

    base64url_encode(in, n, out);
    return out;
}

static char *b64u_str(const char *s)
{
    return b64u((const unsigned char *)s, strlen(s));
}

static void ssl_fail(struct buf *err, const char *what)
{
    unsigned long e = ERR_get_error();
    char text[256] = "";

    if (e)
        ERR_error_string_n(e, text, sizeof(text));
    buf_printf(err, "%s%s%s", what, e ? ": " : "", text);
    ERR_clear_error();
}

/* ---- the account key ---- */

static int key_save(const char *path, EVP_PKEY *key, struct buf *err)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *pem;
    long n;
    int rc;

    if (!bio || !PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL)) {
        BIO_free(bio);
        ssl_fail(err, "cannot encode the account key");
        return -EINVAL;
    }
    n = BIO_get_mem_data(bio, &pem);
    rc = file_write_atomic(path, pem, (size_t)n, 0600, err);
    BIO_free(bio);
    return rc;
}

/* The account key: loaded from cfg.account_key_path, else made (and saved there). */
static int key_setup(struct acme_client *c, struct buf *err)
{
    const char *path = c->cfg.account_key_path;
    FILE *f = path ? fopen(path, "re") : NULL;
    BIGNUM *x = NULL, *y = NULL;
    unsigned char xb[32], yb[32], digest[32];
    char *xs, *ys;
    int rc = 0;

    if (f) {
        c->key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
        if (!c->key || !EVP_PKEY_is_a(c->key, "EC")) {
            ssl_fail(err, "the ACME account key is not a P-256 PEM key");
            buf_printf(err, " ('%s')", path);
            return -EINVAL;
        }
    } else {
        c->key = EVP_EC_gen("P-256");
        if (!c->key) {
            ssl_fail(err, "cannot make an account key");
            return -ENOMEM;
        }
        if (path && (rc = key_save(path, c->key, err)) < 0)
            return rc;
        if (path)
            log_info("acme: new account key in '%s'", path);
    }
    if (!EVP_PKEY_get_bn_param(c->key, OSSL_PKEY_PARAM_EC_PUB_X, &x) ||
        !EVP_PKEY_get_bn_param(c->key, OSSL_PKEY_PARAM_EC_PUB_Y, &y) || BN_bn2binpad(x, xb, 32) != 32 ||
        BN_bn2binpad(y, yb, 32) != 32) {
        BN_free(x);
        BN_free(y);
        ssl_fail(err, "the ACME account key is not a P-256 key");
        return -EINVAL;
    }
    BN_free(x);
    BN_free(y);
    xs = b64u(xb, 32);
    ys = b64u(yb, 32);
    c->jwk = xasprintf("{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", xs, ys);
    free(xs);
    free(ys);
    EVP_Digest(c->jwk, strlen(c->jwk), digest, NULL, EVP_sha256(), NULL);
    c->thumbprint = b64u(digest, sizeof(digest));
    return 0;
}

/* ES256 (RFC 7518 §3.4): the raw 64-byte r || s of an ECDSA signature over data. */
static char *sign_es256(EVP_PKEY *key, const char *data, struct buf *err)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char der[128], raw[64];
    const unsigned char *p = der;
    size_t len = sizeof(der);
    ECDSA_SIG *sig = NULL;
    const BIGNUM *r, *s;
    char *out = NULL;

    if (md && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
        EVP_DigestSign(md, der, &len, (const unsigned char *)data, strlen(data)) == 1 &&
        (sig = d2i_ECDSA_SIG(NULL, &p, (long)len))) {
        ECDSA_SIG_get0(sig, &r, &s);
        if (BN_bn2binpad(r, raw, 32) == 32 && BN_bn2binpad(s, raw + 32, 32) == 32)
            out = b64u(raw, sizeof(raw));
    }
    if (!out)
        ssl_fail(err, "cannot sign an ACME request");
    ECDSA_SIG_free(sig);
    EVP_MD_CTX_free(md);
    return out;
}

/* ---- HTTP ---- */

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    struct response *r = arg;

    return buf_append(&r->body, data, size * n) == 0 ? size * n : 0;
}

static void header_value(const char *line, size_t len, const char *name, char **out)
{
    size_t k = strlen(name);

    if (len > k + 1 && strncasecmp(line, name, k) == 0 && line[k] == ':') {
        const char *v = line + k + 1;
        size_t vn = len - k - 1;
        while (vn && (*v == ' ' || *v == '\t'))
            v++, vn--;
        while (vn && (v[vn - 1] == '\r' || v[vn - 1] == '\n' || v[vn - 1] == ' '))
            vn--;
        free(*out);
        *out = xstrndup(v, vn);
    }
}

struct header_ctx {
    struct acme_client *c;
    struct response *r;
};

static size_t on_header(char *line, size_t size, size_t n, void *arg)
{
    struct header_ctx *h = arg;
    size_t len = size * n;
    char *nonce = NULL, *retry = NULL;

    header_value(line, len, "Location", &h->r->location);
    header_value(line, len, "Replay-Nonce", &nonce);
    header_value(line, len, "Retry-After", &retry);
    if (nonce && strlen(nonce) < sizeof(h->c->nonce))
        strcpy(h->c->nonce, nonce);
    if (retry) {
        long s = strtol(retry, NULL, 10);
        h->r->retry_after_ms = s > 0 && s < 3600 ? (unsigned)s * 1000 : 0;
    }
    free(nonce);
    free(retry);
    return len;
}

static int on_progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c2, curl_off_t d)
{
    struct acme_client *c = arg;

    (void)a, (void)b, (void)c2, (void)d;
    return c->hooks.cancelled(c->hooks.arg) ? 1 : 0;
}

/* One request: GET (body NULL), HEAD (head), or a JOSE POST. -EIO with a line in err when no answer came. */
static int http(struct acme_client *c, const char *url, const char *body, bool head, struct response *r,
                struct buf *err)
{
    struct curl_slist *hdrs = NULL;
    struct header_ctx hc = {c, r};
    CURLcode cc;

    memset(r, 0, sizeof(*r));
    buf_init(&r->body, MAX_BODY);
    curl_easy_reset(c->curl);
    curl_easy_setopt(c->curl, CURLOPT_URL, url);
    curl_easy_setopt(c->curl, CURLOPT_PROTOCOLS_STR, "https,http");
    curl_easy_setopt(c->curl, CURLOPT_USERAGENT, "plane-proxy-acme");
    curl_easy_setopt(c->curl, CURLOPT_TIMEOUT, (long)HTTP_TIMEOUT_S);
    curl_easy_setopt(c->curl, CURLOPT_CONNECTTIMEOUT, (long)HTTP_CONNECT_TIMEOUT_S);
    curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c->curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c->curl, CURLOPT_HEADERDATA, &hc);
    curl_easy_setopt(c->curl, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c->curl, CURLOPT_XFERINFODATA, c);
    curl_easy_setopt(c->curl, CURLOPT_NOPROGRESS, 0L);
    if (c->cfg.ca_file)
        curl_easy_setopt(c->curl, CURLOPT_CAINFO, c->cfg.ca_file);
    if (head) {
        curl_easy_setopt(c->curl, CURLOPT_NOBODY, 1L);
    } else if (body) {
        hdrs = curl_slist_append(hdrs, "Content-Type: application/jose+json");
        curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, body);
    }
    curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, hdrs);
    cc = curl_easy_perform(c->curl);
    curl_slist_free_all(hdrs);
    if (cc != CURLE_OK) {
        buf_printf(err, "%s: %s", url, curl_easy_strerror(cc));
        response_release(r);
        return cc == CURLE_ABORTED_BY_CALLBACK ? -ECANCELED : -EIO;
    }
    curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &r->status);
    return 0;
}

/* The answer's JSON (new reference), or NULL. */
static json_t *response_json(const struct response *r)
{
    return r->body.len ? json_loadb(r->body.data, r->body.len, 0, NULL) : NULL;
}

/* One line for an ACME error answer (RFC 8555 §6.7: a problem document). */
static void problem(const char *what, const struct response *r, struct buf *err)
{
    json_t *j = response_json(r);
    const char *type = json_get_str(j, "type"), *detail = json_get_str(j, "detail");

    buf_printf(err, "%s: HTTP %ld%s%s%s%s", what, r->status, type ? " " : "", type ? type : "",
               detail ? ": " : "", detail ? detail : "");
    json_decref(j);
}

static const char *dir_url(struct acme_client *c, const char *what, struct buf *err)
{
    const char *u = json_get_str(c->dir, what);

    if (!u)
        buf_printf(err, "the ACME directory has no %s", what);
    return u;
}

static int directory(struct acme_client *c, struct buf *err)
{
    struct response r = {0};
    int rc;

    if (c->dir)
        return 0;
    if ((rc = http(c, c->cfg.directory_url, NULL, false, &r, err)) < 0)
        return rc;
    c->dir = r.status == 200 ? response_json(&r) : NULL;
    if (!json_is_object(c->dir)) {
        problem("ACME directory", &r, err);
        json_decref(c->dir);
        c->dir = NULL;
        rc = -EPROTO;
    }
    response_release(&r);
    return rc;
}

static int fresh_nonce(struct acme_client *c, struct buf *err)
{
    const char *url = dir_url(c, "newNonce", err);
    struct response r = {0};
    int rc;

    if (!url)
        return -EPROTO;
    if ((rc = http(c, url, NULL, true, &r, err)) < 0)
        return rc;
    response_release(&r);
    if (!c->nonce[0]) {
        buf_printf(err, "the ACME server gave no nonce");
        return -EPROTO;
    }
    return 0;
}

/*
 * A signed POST of payload (JSON text; NULL for POST-as-GET) to url. 0 with
 * any HTTP status in r; -errno when nothing usable came back.
 */
static int post(struct acme_client *c, const char *url, const char *payload, bool use_jwk, struct response *r,
                struct buf *err)
{
    for (int attempt = 0;; attempt++) {
        json_t *prot;
        char *prot_text, *p64, *pay64, *input, *sig, *body;
        int rc;

        if (!c->nonce[0] && (rc = fresh_nonce(c, err)) < 0)
            return rc;
        prot = json_pack("{s:s, s:s, s:s}", "alg", "ES256", "nonce", c->nonce, "url", url);
        if (use_jwk)
            json_object_set_new(prot, "jwk", json_loads(c->jwk, 0, NULL));
        else
            json_object_set_new(prot, "kid", json_string(c->kid));
        c->nonce[0] = '\0'; /* each nonce is good once */
        prot_text = json_dumps(prot, JSON_COMPACT);
        json_decref(prot);
        p64 = b64u_str(prot_text);
        pay64 = payload ? b64u_str(payload) : xstrdup("");
        input = xasprintf("%s.%s", p64, pay64);
        sig = sign_es256(c->key, input, err);
        body = sig ? xasprintf("{\"protected\":\"%s\",\"payload\":\"%s\",\"signature\":\"%s\"}", p64, pay64, sig)
                   : NULL;
        free(prot_text);
        free(p64);
        free(pay64);
        free(input);
        free(sig);
        if (!body)
            return -EINVAL;
        rc = http(c, url, body, false, r, err);
        free(body);
        if (rc < 0)
            return rc;
        if (r->status == 400 && attempt < NONCE_RETRIES) {
            json_t *j = response_json(r);
            const char *type = json_get_str(j, "type");
            bool bad_nonce = type && strcmp(type, "urn:ietf:params:acme:error:badNonce") == 0;
            json_decref(j);
            if (bad_nonce) {
                log_debug("acme: badNonce from %s, again", url);
                response_release(r);
                continue;
            }
        }
        return 0;
    }
}

/*
 * POST-as-GET of an object: its JSON on 200 (new reference), else NULL with
 * a line in err. *retry_ms (if not NULL) gets the answer's Retry-After, or 0.
 */
static json_t *fetch(struct acme_client *c, const char *url, const char *what, unsigned *retry_ms, struct buf *err)
{
    struct response r = {0};
    json_t *j = NULL;

    if (post(c, url, NULL, false, &r, err) < 0)
        return NULL;
    if (retry_ms)
        *retry_ms = r.retry_after_ms;
    if (r.status == 200)
        j = response_json(&r);
    if (!json_is_object(j)) {
        problem(what, &r, err);
        json_decref(j);
        j = NULL;
    }
    response_release(&r);
    return j;
}

/* ---- account ---- */

/* RFC 8555 §7.3.4: the account key, MACed with the CA's HMAC key. */
static json_t *eab(struct acme_client *c, const char *new_account, struct buf *err)
{
    size_t klen = 0;
    unsigned char *k = base64url_decode(c->cfg.eab_hmac_key, &klen);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned maclen = 0;
    json_t *prot, *out = NULL;
    char *prot_text, *p64, *pay64, *input, *m64;

    if (!k) {
        buf_printf(err, "the EAB HMAC key is not base64url");
        return NULL;
    }
    prot = json_pack("{s:s, s:s, s:s}", "alg", "HS256", "kid", c->cfg.eab_kid, "url", new_account);
    prot_text = json_dumps(prot, JSON_COMPACT);
    json_decref(prot);
    p64 = b64u_str(prot_text);
    pay64 = b64u_str(c->jwk);
    input = xasprintf("%s.%s", p64, pay64);
    if (HMAC(EVP_sha256(), k, (int)klen, (const unsigned char *)input, strlen(input), mac, &maclen)) {
        m64 = b64u(mac, maclen);
        out = json_pack("{s:s, s:s, s:s}", "protected", p64, "payload", pay64, "signature", m64);
        free(m64);
    } else {
        ssl_fail(err, "cannot compute the EAB MAC");
    }
    free(k);
    free(prot_text);
    free(p64);
    free(pay64);
    free(input);
    return out;
}

static int account(struct acme_client *c, struct buf *err)
{
    const char *url;
    json_t *req;
    char *text;
    struct response r = {0};
    int rc;

    if (c->kid)
        return 0;
    if (!c->key && (rc = key_setup(c, err)) < 0)
        return rc;
    if ((rc = directory(c, err)) < 0)
        return rc;
    if (!(url = dir_url(c, "newAccount", err)))
        return -EPROTO;
    req = json_pack("{s:b}", "termsOfServiceAgreed", 1);
    if (c->cfg.email) {
        char *mailto = xasprintf("mailto:%s", c->cfg.email);
        json_object_set_new(req, "contact", json_pack("[s]", mailto));
        free(mailto);
    }
    if (c->cfg.eab_kid) {
        json_t *b = eab(c, url, err);
        if (!b) {
            json_decref(req);
            return -EINVAL;
        }
        json_object_set_new(req, "externalAccountBinding", b);
    }
    text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    rc = post(c, url, text, true, &r, err);
    free(text);
    if (rc < 0)
        return rc;
    if ((r.status == 200 || r.status == 201) && r.location) {
        c->kid = xstrdup(r.location);
        log_info("acme: account %s", c->kid);
    } else {
        problem("ACME newAccount", &r, err);
        rc = -EPROTO;
    }
    response_release(&r);
    return rc;
}

/* ---- order ---- */

/*
 * Fetches url until its "status" is no longer one of the waiting ones
 * (comma-separated); the object in *out (new reference). -ETIMEDOUT after
 * a minute.
 */
static int poll_status(struct acme_client *c, const char *url, const char *waiting, const char *what, json_t **out,
                       struct buf *err)
{
    unsigned delay = POLL_FIRST_MS, waited = 0;

    for (;;) {
        unsigned retry_ms = 0;
        json_t *j = fetch(c, url, what, &retry_ms, err);
        const char *st = json_get_str(j, "status");
        char key[64];

        if (!j)
            return -EPROTO;
        snprintf(key, sizeof(key), ",%s,", st ? st : "?");
        if (!st || !strstr(waiting, key)) {
            *out = j;
            return 0;
        }
        json_decref(j);
        if (waited >= POLL_LIMIT_MS) {
            buf_printf(err, "%s still '%s' after %u s", what, st, POLL_LIMIT_MS / 1000);
            return -ETIMEDOUT;
        }
        if (retry_ms > delay) /* the server's Retry-After, within our bounds */
            delay = retry_ms > POLL_MAX_MS ? POLL_MAX_MS : retry_ms;
        if (!c->hooks.sleep(c->hooks.arg, delay))
            return -ECANCELED;
        waited += delay;
        delay = delay * 2 > POLL_MAX_MS ? POLL_MAX_MS : delay * 2;
    }
}

/* Problem details of a failed challenge, if the authorization carries them. */
static void challenge_error(const json_t *authz, struct buf *err)
{
    size_t i;
    json_t *ch;

    json_array_foreach(json_object_get(authz, "challenges"), i, ch) {
        json_t *e = json_object_get(ch, "error");
        if (e) {
            const char *detail = json_get_str(e, "detail");
            buf_printf(err, ": %s", detail ? detail : "(no detail)");
            return;
        }
    }
}

/* Satisfies one authorization through its dns-01 challenge. */
static int authorize(struct acme_client *c, const char *url, struct buf *err)
{
    json_t *authz = fetch(c, url, "ACME authorization", NULL, err), *ch, *dns01 = NULL, *done = NULL;
    const char *status = json_get_str(authz, "status"), *token, *ch_url;
    unsigned char digest[32];
    char *keyauth, *value;
    struct response r = {0};
    size_t i;
    int rc;

    if (!authz)
        return -EPROTO;
    if (status && strcmp(status, "valid") == 0) {
        json_decref(authz); /* reused from an earlier order */
        return 0;
    }
    json_array_foreach(json_object_get(authz, "challenges"), i, ch) {
        const char *type = json_get_str(ch, "type");
        if (type && strcmp(type, "dns-01") == 0)
            dns01 = ch;
    }
    token = json_get_str(dns01, "token");
    ch_url = json_get_str(dns01, "url");
    if (!status || strcmp(status, "pending") != 0 || !token || !ch_url) {
        buf_printf(err, "ACME authorization %s is '%s' without a usable dns-01 challenge", url,
                   status ? status : "?");
        json_decref(authz);
        return -EPROTO;
    }
    /* RFC 8555 §8.4: the TXT value is base64url(SHA-256(token "." thumbprint)). */
    keyauth = xasprintf("%s.%s", token, c->thumbprint);
    EVP_Digest(keyauth, strlen(keyauth), digest, NULL, EVP_sha256(), NULL);
    value = b64u(digest, sizeof(digest));
    free(keyauth);
    rc = c->hooks.publish_txt(c->hooks.arg, value, err);
    free(value);
    if (rc == 0 && c->cfg.txt_wait_ms && !c->hooks.sleep(c->hooks.arg, c->cfg.txt_wait_ms))
        rc = -ECANCELED;
    if (rc == 0 && (rc = post(c, ch_url, "{}", false, &r, err)) == 0) {
        if (r.status != 200) {
            problem("ACME challenge", &r, err);
            rc = -EPROTO;
        }
        response_release(&r);
    }
    if (rc == 0 && (rc = poll_status(c, url, ",pending,processing,", "ACME authorization", &done, err)) == 0) {
        const char *st = json_get_str(done, "status");
        if (!st || strcmp(st, "valid") != 0) {
            buf_printf(err, "ACME authorization for %s is '%s'",
                       json_get_str(json_object_get(done, "identifier"), "value") ?: "?", st ? st : "?");
            challenge_error(done, err);
            rc = -EPROTO;
        }
    }
    json_decref(done);
    json_decref(authz);
    return rc;
}

/* A CSR (DER, base64url) for names with a new RSA key (returned in *key). */
static char *make_csr(const char *const *names, size_t n, EVP_PKEY **key, struct buf *err)
{
    X509_REQ *req = X509_REQ_new();
    X509_NAME *subject = X509_NAME_new();
    STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
    X509_EXTENSION *san = NULL;
    struct buf alt = BUF_INIT;
    unsigned char *der = NULL;
    char *out = NULL;
    int len;

    *key = EVP_RSA_gen(CERT_KEY_BITS);
    for (size_t i = 0; i < n; i++)
        buf_printf(&alt, "%sDNS:%s", i ? "," : "", names[i]);
    if (*key && req && subject && exts &&
        X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8, (const unsigned char *)names[0], -1, -1, 0) &&
        X509_REQ_set_subject_name(req, subject) && X509_REQ_set_pubkey(req, *key) &&
        (san = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, buf_cstr(&alt))) &&
        sk_X509_EXTENSION_push(exts, san) && X509_REQ_add_extensions(req, exts) &&
        X509_REQ_sign(req, *key, EVP_sha256()) > 0 && (len = i2d_X509_REQ(req, &der)) > 0) {
        out = b64u(der, (size_t)len);
    } else {
        ssl_fail(err, "cannot make the certificate request");
    }
    OPENSSL_free(der);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_NAME_free(subject);
    X509_REQ_free(req);
    buf_release(&alt);
    return out;
}

static char *key_pem(EVP_PKEY *key)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data, *out = NULL;
    long n;

    /* "traditional": PKCS#1, labelled RSA PRIVATE KEY, as Plane writes it (§16.5). */
    if (bio && PEM_write_bio_PrivateKey_traditional(bio, key, NULL, NULL, 0, NULL, NULL)) {
        n = BIO_get_mem_data(bio, &data);
        out = xstrndup(data, (size_t)n);
    }
    BIO_free(bio);
    return out;
}

int acme_order(struct acme_client *c, const char *const *names, size_t n, char **chain, char **key,
               struct buf *err)
{
    json_t *ids = json_array(), *req, *order = NULL, *final = NULL, *a;
    const char *url, *cert_url;
    char *text = NULL, *order_url = NULL, *finalize = NULL, *csr = NULL, *payload;
    EVP_PKEY *cert_key = NULL;
    struct response r = {0};
    size_t i;
    int rc;

    *chain = *key = NULL;
    if ((rc = account(c, err)) < 0)
        goto out;
    if (!(url = dir_url(c, "newOrder", err))) {
        rc = -EPROTO;
        goto out;
    }
    for (i = 0; i < n; i++)
        json_array_append_new(ids, json_pack("{s:s, s:s}", "type", "dns", "value", names[i]));
    req = json_pack("{s:O}", "identifiers", ids);
    text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    if ((rc = post(c, url, text, false, &r, err)) < 0)
        goto out;
    order = r.status == 201 ? response_json(&r) : NULL;
    if (!order || !r.location || !json_get_str(order, "finalize") ||
        !json_is_array(json_object_get(order, "authorizations"))) {
        problem("ACME newOrder", &r, err);
        rc = -EPROTO;
        goto out;
    }
    order_url = xstrdup(r.location);
    finalize = xstrdup(json_get_str(order, "finalize"));
    response_release(&r);
    /* One at a time: every challenge of a cluster shares one TXT name and one value (§8.4). */
    json_array_foreach(json_object_get(order, "authorizations"), i, a) {
        if (!json_is_string(a)) {
            buf_printf(err, "ACME order lists a bad authorization");
            rc = -EPROTO;
            goto out;
        }
        if ((rc = authorize(c, json_string_value(a), err)) < 0)
            goto out;
    }
    json_decref(order);
    order = NULL;
    if ((rc = poll_status(c, order_url, ",pending,", "ACME order", &order, err)) < 0)
        goto out;
    if (!json_get_str(order, "status") || strcmp(json_get_str(order, "status"), "ready") != 0) {
        buf_printf(err, "ACME order is '%s', not ready", json_get_str(order, "status") ?: "?");
        rc = -EPROTO;
        goto out;
    }
    if (!(csr = make_csr(names, n, &cert_key, err))) {
        rc = -EINVAL;
        goto out;
    }
    payload = xasprintf("{\"csr\":\"%s\"}", csr);
    rc = post(c, finalize, payload, false, &r, err);
    free(payload);
    if (rc < 0)
        goto out;
    if (r.status != 200) {
        problem("ACME finalize", &r, err);
        rc = -EPROTO;
        goto out;
    }
    response_release(&r);
    if ((rc = poll_status(c, order_url, ",ready,processing,", "ACME order", &final, err)) < 0)
        goto out;
    cert_url = json_get_str(final, "certificate");
    if (!cert_url || strcmp(json_get_str(final, "status") ?: "", "valid") != 0) {
        buf_printf(err, "ACME order ended '%s' without a certificate", json_get_str(final, "status") ?: "?");
        rc = -EPROTO;
        goto out;
    }
    if ((rc = post(c, cert_url, NULL, false, &r, err)) < 0)
        goto out;
    if (r.status != 200 || !r.body.len || !strstr(buf_cstr(&r.body), "-----BEGIN CERTIFICATE-----")) {
        problem("ACME certificate download", &r, err);
        rc = -EPROTO;
        goto out;
    }
    *chain = xstrdup(buf_cstr(&r.body));
    *key = key_pem(cert_key);
    if (!*key) {
        free(*chain);
        *chain = NULL;
        ssl_fail(err, "cannot encode the certificate key");
        rc = -EINVAL;
    }
out:
    response_release(&r);
    json_decref(ids);
    json_decref(order);
    json_decref(final);
    EVP_PKEY_free(cert_key);
    free(text);
    free(order_url);
    free(finalize);
    free(csr);
    return rc;
}

/* ---- life ---- */

struct acme_client *acme_client_new(const struct acme_config *cfg, const struct acme_hooks *hooks)
{
    struct acme_client *c = xcalloc(1, sizeof(*c));

    c->cfg.directory_url = xstrdup(cfg->directory_url);
    c->cfg.ca_file = cfg->ca_file ? xstrdup(cfg->ca_file) : NULL;
    c->cfg.email = cfg->email ? xstrdup(cfg->email) : NULL;
    c->cfg.eab_kid = cfg->eab_kid ? xstrdup(cfg->eab_kid) : NULL;
    c->cfg.eab_hmac_key = cfg->eab_hmac_key ? xstrdup(cfg->eab_hmac_key) : NULL;
    c->cfg.account_key_path = cfg->account_key_path ? xstrdup(cfg->account_key_path) : NULL;
    c->cfg.txt_wait_ms = cfg->txt_wait_ms;
    c->hooks = *hooks;
    c->curl = curl_easy_init();
    if (!c->curl)
        abort(); /* only without memory */
    return c;
}

void acme_client_free(struct acme_client *c)
{
    if (!c)
        return;
    curl_easy_cleanup(c->curl);
    EVP_PKEY_free(c->key);
    json_decref(c->dir);
    free(c->jwk);
    free(c->thumbprint);
    free(c->kid);
    free((char *)c->cfg.directory_url);
    free((char *)c->cfg.ca_file);
    free((char *)c->cfg.email);
    free((char *)c->cfg.eab_kid);
    free((char *)c->cfg.eab_hmac_key);
    free((char *)c->cfg.account_key_path);
    free(c);
}
