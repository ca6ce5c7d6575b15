/* SPDX-License-Identifier: MIT */
/*
 * names.c - random names and tokens (see names.h, spec §3).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/evp.h>

#include "log.h"
#include "names.h"
#include "xalloc.h"

static const char alnum[] = "abcdefghijklmnopqrstuvwxyz0123456789";

void random_bytes(void *buf, size_t n)
{
    unsigned char *p = buf;

    while (n > 0) {
        ssize_t got = getrandom(p, n, 0);
        if (got == -1) {
            if (errno == EINTR)
                continue;
            fatal("getrandom");
        }
        p += got;
        n -= (size_t)got;
    }
}

void random_alnum(char *out, size_t n)
{
    unsigned char pool[64];
    size_t used = sizeof(pool);
    size_t i = 0;

    while (i < n) {
        if (used == sizeof(pool)) {
            random_bytes(pool, sizeof(pool));
            used = 0;
        }
        unsigned char c = pool[used++];
        /* 252 = 7 * 36: reject the tail so every char is equally likely. */
        if (c < 252)
            out[i++] = alnum[c % 36];
    }
    out[n] = '\0';
}

char *name_random(const char *prefix)
{
    char r[NAME_RANDOM_LEN + 1];

    random_alnum(r, NAME_RANDOM_LEN);
    return prefix ? xasprintf("%s-%s", prefix, r) : xstrdup(r);
}

bool name_is_valid(const char *name, const char *prefix)
{
    size_t n = strlen(name);

    if (n == 0 || n > NAME_MAX_LEN)
        return false;
    if (prefix && strncmp(name, prefix, strlen(prefix)) != 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
            return false;
    }
    return true;
}

size_t base64url_encode(const unsigned char *in, size_t n, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    size_t i;

    for (i = 0; i + 2 < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        out[o++] = tab[v >> 18 & 63];
        out[o++] = tab[v >> 12 & 63];
        out[o++] = tab[v >> 6 & 63];
        out[o++] = tab[v & 63];
    }
    if (n - i == 1) {
        unsigned v = (unsigned)in[i] << 16;
        out[o++] = tab[v >> 18 & 63];
        out[o++] = tab[v >> 12 & 63];
    } else if (n - i == 2) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8;
        out[o++] = tab[v >> 18 & 63];
        out[o++] = tab[v >> 12 & 63];
        out[o++] = tab[v >> 6 & 63];
    }
    out[o] = '\0';
    return o;
}

char *token_random(void)
{
    unsigned char raw[32];
    char out[TOKEN_LEN + 2];

    random_bytes(raw, sizeof(raw));
    base64url_encode(raw, sizeof(raw), out);
    return xstrdup(out);
}

char *token_static_random(void)
{
    char *t = token_random();
    char *s = xasprintf("s.%s", t);

    free(t);
    return s;
}

bool token_is_static(const char *token)
{
    return strncmp(token, "s.", 2) == 0;
}

unsigned char *base64url_decode(const char *s, size_t *len)
{
    size_t n = strlen(s), padded = (n + 3) / 4 * 4, pad = 0;
    char *std = xmalloc(padded + 1);
    unsigned char *out;
    int got;

    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '-')
            ch = '+';
        else if (ch == '_')
            ch = '/';
        else if (ch == '=' && i >= n - 2)
            ch = '=';
        else if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9'))) {
            free(std);
            return NULL;
        }
        std[i] = ch;
    }
    for (size_t i = n; i < padded; i++)
        std[i] = '=';
    std[padded] = '\0';
    for (size_t i = padded; i > 0 && std[i - 1] == '='; i--)
        pad++;
    if (n % 4 == 1 || pad > 2) {
        free(std);
        return NULL;
    }
    out = xmalloc(padded / 4 * 3 + 1);
    got = EVP_DecodeBlock(out, (const unsigned char *)std, (int)padded);
    free(std);
    if (got < 0) {
        free(out);
        return NULL;
    }
    *len = (size_t)got - pad;
    return out;
}
