/* SPDX-License-Identifier: MIT */
/*
 * wire.c - handshake and enum encoding of the typed protocol (see wire.h).
 */
#include <string.h>

#include "log.h"
#include "version.h"
#include "wire.h"

json_t *wire_handshake(const char *name)
{
    return json_pack("{s:{s:s, s:s}, s:s}", "version", "version", PLANE_VERSION, "git_hash", plane_git_hash(),
                     "name", name);
}

const char *wire_handshake_name(const json_t *j)
{
    const char *name = json_string_value(json_object_get(j, "name"));

    if (!json_is_object(j) || !json_is_object(json_object_get(j, "version")))
        return NULL;
    return name;
}

json_t *wire_variant(const char *tag, json_t *payload)
{
    json_t *o = json_object();

    json_object_set_new(o, tag, payload);
    return o;
}

const char *wire_variant_of(const json_t *j, json_t **payload)
{
    const char *key;
    json_t *val;

    *payload = NULL;
    if (json_is_string(j))
        return json_string_value(j); /* a unit variant */
    if (!json_is_object(j) || json_object_size(j) != 1)
        return NULL;
    json_object_foreach((json_t *)j, key, val) {
        *payload = val;
        return key;
    }
    return NULL;
}

char *wire_text(const json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);

    if (!s)
        BUG("json_dumps failed");
    return s;
}
