/* SPDX-License-Identifier: MIT */
/*
 * cert_file.c - reading and writing the certificate file (see cert_file.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "../common/buf.h"
#include "../common/file_util.h"
#include "../common/json_util.h"
#include "../common/xalloc.h"
#include "cert_file.h"

int cert_file_read(const char *path, char **chain, char **key, struct buf *err)
{
    json_error_t jerr;
    json_t *j = json_load_file(path, 0, &jerr);
    const char *c = json_get_str(j, "cert"), *k = json_get_str(j, "key");

    *chain = *key = NULL;
    if (!j) {
        if (access(path, F_OK) == -1) {
            buf_printf(err, "no certificate file '%s'", path);
            return -ENOENT;
        }
        buf_printf(err, "cannot load certificate file '%s': %s", path, jerr.text);
        return -EINVAL;
    }
    if (!c || !k) {
        buf_printf(err, "certificate file '%s' lacks \"cert\" or \"key\"", path);
        json_decref(j);
        return -EINVAL;
    }
    *chain = xstrdup(c);
    *key = xstrdup(k);
    json_decref(j);
    return 0;
}

int cert_file_write(const char *path, const char *chain, const char *key, struct buf *err)
{
    json_t *j = json_pack("{s:s, s:s}", "cert", chain, "key", key);
    char *text = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
    int rc;

    json_decref(j);
    if (!text) {
        buf_printf(err, "cannot encode the certificate file");
        return -EINVAL;
    }
    rc = file_write_atomic(path, text, strlen(text), 0600, err);
    free(text);
    return rc;
}

static int asn1_ms(const ASN1_TIME *t, int64_t *out)
{
    struct tm tm;

    if (ASN1_TIME_to_tm(t, &tm) != 1)
        return -EINVAL;
    *out = (int64_t)timegm(&tm) * 1000;
    return 0;
}

int cert_validity(const char *chain, int64_t *not_before, int64_t *not_after, struct buf *err)
{
    BIO *bio = BIO_new_mem_buf(chain, -1);
    X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    int rc = -EINVAL;

    BIO_free(bio);
    ERR_clear_error();
    if (!x) {
        buf_printf(err, "no PEM certificate in the chain");
        return rc;
    }
    if (asn1_ms(X509_get0_notBefore(x), not_before) == 0 && asn1_ms(X509_get0_notAfter(x), not_after) == 0)
        rc = 0;
    else
        buf_printf(err, "the certificate's validity cannot be read");
    X509_free(x);
    return rc;
}

int64_t cert_renew_at(int64_t not_before, int64_t not_after, int64_t window_ms)
{
    int64_t third = (not_after - not_before) / 3;

    return not_after - (third < window_ms ? third : window_ms);
}
