/* SPDX-License-Identifier: MIT */
/*
 * names.h - random strings, entity names and tokens (spec §3). Randomness
 * comes from getrandom(2); strings over an alphabet are drawn uniformly by
 * rejection sampling.
 */
#ifndef PLANE_NAMES_H
#define PLANE_NAMES_H

#include <stdbool.h>
#include <stddef.h>

#define NAME_RANDOM_LEN 14 /* §3.1 */
#define NAME_MAX_LEN 45    /* §3.2 */
#define TOKEN_LEN 43       /* base64url, no padding, of 32 bytes (§3.3) */

/* Fills buf with n random bytes; aborts if the kernel cannot supply them. */
void random_bytes(void *buf, size_t n);
/* Writes n random chars of [a-z0-9] and a NUL: out must hold n + 1 bytes. */
void random_alnum(char *out, size_t n);
/* "<prefix>-<14 random>", or 14 random chars for a NULL prefix. Owned by caller. */
char *name_random(const char *prefix);
/* §3.2: starts with prefix, at most 45 chars, every char in [a-z0-9-]. */
bool name_is_valid(const char *name, const char *prefix);
/* Base64url without padding; out must hold 4 * ceil(n / 3) + 1 bytes. Returns length. */
size_t base64url_encode(const unsigned char *in, size_t n, char *out);
/* Decodes base64url (padding optional) into a new buffer (owned) of *len bytes; NULL if s is not base64url. */
unsigned char *base64url_decode(const char *s, size_t *len);
/* A fresh connection/secret/request token: 43 chars of base64url. Owned by caller. */
char *token_random(void);
/* "s." + a fresh token. Owned by caller. */
char *token_static_random(void);
bool token_is_static(const char *token);

#endif
