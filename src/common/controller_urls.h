/* SPDX-License-Identifier: MIT */
/*
 * controller_urls.h - the controllers a drone or proxy may connect to:
 * `--controller-url` given once or more (or one value with URLs separated
 * by commas), each turned into the WebSocket URL of one socket route and
 * the bearer token its user part carries. Connections go to one at a time
 * and move to the next when it fails.
 */
#ifndef PLANE_CONTROLLER_URLS_H
#define PLANE_CONTROLLER_URLS_H

#include <stddef.h>

#include "buf.h"

struct controller_urls {
    size_t n, at;   /* how many; the one in use */
    char **socket;  /* owned: ws://host:port<path> */
    char **bearer;  /* owned: a bearer token each, or NULL */
};

/*
 * Parses list (URLs separated by commas) into u, each with route path
 * appended ("/ctrl/c/CLUSTER/drone-socket"). 0, or -EINVAL /
 * -EPROTONOSUPPORT with one line in err naming the bad URL.
 */
int controller_urls_parse(struct controller_urls *u, const char *list, const char *path, struct buf *err);
void controller_urls_release(struct controller_urls *u);
/* Moves to the next controller (the first after the last). */
void controller_urls_next(struct controller_urls *u);
/* Appends value to *list (a comma-separated list, or NULL), for a flag given more than once. Owned. */
char *controller_urls_append(char *list, const char *value);

#define CONTROLLER_URL_SOCKET(u) ((u)->socket[(u)->at])
#define CONTROLLER_URL_BEARER(u) ((u)->bearer[(u)->at])

#endif
