/* SPDX-License-Identifier: MIT */
/*
 * engine_api.h - blocking Docker Engine API calls for tests and benchmarks,
 * which may block (the docker runtime itself never does: docker_client.c).
 * Talks to /var/run/docker.sock at the API version the runtime uses.
 */
#ifndef PLANE_TESTS_ENGINE_API_H
#define PLANE_TESTS_ENGINE_API_H

#include <jansson.h>

#define ENGINE_SOCK "/var/run/docker.sock"

/* method path [body] -> HTTP status (0 if no answer); *out (may be NULL) gets the body (free it). */
int engine_api(const char *method, const char *path, const char *body, char **out);
/* GET path -> the JSON body of a 200, else NULL. */
json_t *engine_api_json(const char *path);

#endif
