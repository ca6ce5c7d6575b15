/* SPDX-License-Identifier: MIT */
/*
 * engine_api.c - blocking Docker Engine API calls (see engine_api.h).
 */
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "../../src/common/buf.h"
#include "../../src/common/xalloc.h"
#include "../../src/drone/docker_client.h"
#include "engine_api.h"

static size_t collect(char *data, size_t size, size_t n, void *arg)
{
    buf_append(arg, data, size * n);
    return size * n;
}

int engine_api(const char *method, const char *path, const char *body, char **out)
{
    CURL *e = curl_easy_init();
    struct buf b = BUF_INIT;
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    char *url = xasprintf("http://localhost/" DOCKER_API_VERSION "%s", path);
    long code = 0;

    h = curl_slist_append(h, "Expect:");
    curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, ENGINE_SOCK);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &b);
    if (body)
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    else if (strcmp(method, "POST") == 0)
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
    if (curl_easy_perform(e) == CURLE_OK)
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(e);
    curl_slist_free_all(h);
    free(url);
    if (out)
        *out = buf_detach(&b);
    buf_release(&b);
    return (int)code;
}

json_t *engine_api_json(const char *path)
{
    char *body = NULL;
    int status = engine_api("GET", path, NULL, &body);
    json_t *j = status == 200 ? json_loads(body, 0, NULL) : NULL;

    free(body);
    return j;
}
