/* SPDX-License-Identifier: MIT */
/*
 * test_certs.c - unit tests of the proxy's certificate pieces: base64url
 * decoding (EAB keys), the certificate file, expiry, and swapping the TLS
 * context's certificate.
 */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "../../src/common/buf.h"
#include "../../src/common/names.h"
#include "../../src/common/xalloc.h"
#include "../../src/proxy/cert_file.h"
#include "../../src/proxy/tls.h"
#include "test.h"

TEST(base64url_decode_accepts_padding_and_refuses_junk)
{
    size_t n = 0;
    unsigned char *d = base64url_decode("aGVsbG8_-w", &n);

    ASSERT_NOT_NULL(d);
    ASSERT_EQ(n, 7);
    ASSERT_TRUE(memcmp(d, "hello\x3f\xfb", 7) == 0);
    free(d);
    d = base64url_decode("aGk=", &n);
    ASSERT_NOT_NULL(d);
    ASSERT_EQ(n, 2);
    free(d);
    d = base64url_decode("", &n);
    ASSERT_NOT_NULL(d);
    ASSERT_EQ(n, 0);
    free(d);
    ASSERT_NULL(base64url_decode("a+b/", &n)); /* standard alphabet */
    ASSERT_NULL(base64url_decode("abcde", &n)); /* a length no encoding has */
    ASSERT_NULL(base64url_decode("ab c", &n));
    ASSERT_NULL(base64url_decode("=abc", &n));
}

/* A self-signed certificate for name, valid for days, and its key, as PEM. */
static void make_cert(const char *name, int days, char **chain, char **key)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    BIO *b = BIO_new(BIO_s_mem());
    char *data;
    long n;

    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), (long)days * 86400);
    X509_set_pubkey(x, k);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_UTF8, (const unsigned char *)name, -1, -1,
                               0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_sign(x, k, EVP_sha256());
    PEM_write_bio_X509(b, x);
    n = BIO_get_mem_data(b, &data);
    *chain = xstrndup(data, (size_t)n);
    BIO_reset(b);
    PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
    n = BIO_get_mem_data(b, &data);
    *key = xstrndup(data, (size_t)n);
    BIO_free(b);
    X509_free(x);
    EVP_PKEY_free(k);
}

TEST(cert_file_round_trip_mode_and_expiry)
{
    char dir[] = "/tmp/plane-test-certs-XXXXXX";
    char *path, *chain, *key, *c2 = NULL, *k2 = NULL;
    struct buf err = BUF_INIT;
    struct stat st;
    int64_t not_before = 0, not_after = 0;
    DIR *d;
    struct dirent *e;
    int files = 0;

    ASSERT_NOT_NULL(mkdtemp(dir));
    path = xasprintf("%s/cert.json", dir);
    ASSERT_EQ(cert_file_read(path, &c2, &k2, &err), -ENOENT);
    make_cert("plane.test", 10, &chain, &key);
    ASSERT_OK(cert_file_write(path, chain, key, &err));
    ASSERT_OK(cert_file_write(path, chain, key, &err)); /* replaces */
    ASSERT_OK(stat(path, &st));
    ASSERT_EQ(st.st_mode & 0777, 0600);
    ASSERT_OK(cert_file_read(path, &c2, &k2, &err));
    ASSERT_STR_EQ(c2, chain);
    ASSERT_STR_EQ(k2, key);
    ASSERT_OK(cert_validity(chain, &not_before, &not_after, &err));
    ASSERT_TRUE(not_before <= (int64_t)time(NULL) * 1000);
    ASSERT_TRUE(not_after > (int64_t)time(NULL) * 1000 + 9LL * 86400 * 1000);
    ASSERT_TRUE(not_after < (int64_t)time(NULL) * 1000 + 11LL * 86400 * 1000);
    ASSERT_EQ(cert_validity("not a certificate", &not_before, &not_after, &err), -EINVAL);
    /* Renewal: 30 days before the end, or a third of a short life before it. */
    const int64_t day = 86400000;
    ASSERT_EQ(cert_renew_at(0, 90 * day, 30 * day), 60 * day);
    ASSERT_EQ(cert_renew_at(0, 365 * day, 30 * day), 335 * day);
    ASSERT_EQ(cert_renew_at(0, 6 * day, 30 * day), 4 * day);
    d = opendir(dir);
    while ((e = readdir(d)))
        files += e->d_name[0] != '.';
    closedir(d);
    ASSERT_EQ(files, 1); /* no temporary file left behind */
    free(c2);
    free(k2);
    /* Not the JSON we write. */
    FILE *f = fopen(path, "w");
    fputs("{\"cert\": 1}", f);
    fclose(f);
    buf_reset(&err);
    ASSERT_EQ(cert_file_read(path, &c2, &k2, &err), -EINVAL);
    ASSERT_CONTAINS(buf_cstr(&err), "lacks");
    unlink(path);
    rmdir(dir);
    free(path);
    free(chain);
    free(key);
    buf_release(&err);
}

TEST(tls_ctx_swaps_certificates_and_keeps_a_good_one)
{
    struct tls_ctx *t = tls_ctx_new();
    char *c1, *k1, *c2, *k2;
    struct buf err = BUF_INIT;
    struct tls_conn *before, *after;

    make_cert("one.test", 5, &c1, &k1);
    make_cert("two.test", 5, &c2, &k2);
    ASSERT_FALSE(tls_ctx_ready(t));
    ASSERT_EQ(tls_ctx_use(t, c1, k2, &err), -EINVAL); /* a key that does not fit */
    ASSERT_CONTAINS(buf_cstr(&err), "does not fit");
    ASSERT_FALSE(tls_ctx_ready(t));
    ASSERT_OK(tls_ctx_use(t, c1, k1, &err));
    ASSERT_TRUE(tls_ctx_ready(t));
    before = tls_conn_new(t);
    ASSERT_OK(tls_ctx_use(t, c2, k2, &err));
    ASSERT_EQ(tls_ctx_use(t, "junk", k2, &err), -EINVAL);
    ASSERT_TRUE(tls_ctx_ready(t));
    after = tls_conn_new(t);
    /* The session made before the swap outlives the context it came from. */
    tls_ctx_free(t);
    tls_conn_free(before);
    tls_conn_free(after);
    free(c1);
    free(k1);
    free(c2);
    free(k2);
    buf_release(&err);
}
