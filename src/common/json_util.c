/* SPDX-License-Identifier: MIT */
/*
 * json_util.c - jansson helpers (see json_util.h).
 */
#include <stdlib.h>
#include <string.h>

#include "json_util.h"
#include "log.h"
#include "xalloc.h"

static int cmp_keys(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

json_t *json_sorted_copy(const json_t *v)
{
    if (json_is_object(v)) {
        size_t n = json_object_size(v), i = 0;
        const char **keys = xcalloc(n ? n : 1, sizeof(*keys));
        const char *k;
        json_t *val;
        json_t *out = json_object();
        json_object_foreach((json_t *)v, k, val) keys[i++] = k;
        qsort(keys, n, sizeof(*keys), cmp_keys);
        for (i = 0; i < n; i++)
            json_object_set_new(out, keys[i], json_sorted_copy(json_object_get(v, keys[i])));
        free(keys);
        return out;
    }
    if (json_is_array(v)) {
        json_t *out = json_array();
        for (size_t i = 0; i < json_array_size(v); i++)
            json_array_append_new(out, json_sorted_copy(json_array_get(v, i)));
        return out;
    }
    return json_deep_copy(v);
}

char *json_dump_line(const json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    size_t n;
    char *line;

    if (!s)
        BUG("json_dumps failed");
    n = strlen(s);
    line = xmalloc(n + 2);
    memcpy(line, s, n);
    line[n] = '\n';
    line[n + 1] = '\0';
    free(s);
    return line;
}

bool json_get_int(const json_t *obj, const char *key, int64_t def, int64_t *out)
{
    const json_t *v = json_object_get(obj, key);

    *out = def;
    if (!v || json_is_null(v))
        return true;
    if (!json_is_integer(v))
        return false;
    *out = json_integer_value(v);
    return true;
}

const char *json_get_str(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);

    return json_is_string(v) ? json_string_value(v) : NULL;
}

json_t *json_string_safe(const char *s)
{
    json_t *v = json_string(s);

    if (v)
        return v;
    char *copy = xstrdup(s);
    for (char *p = copy; *p; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    v = json_string(copy);
    free(copy);
    return v;
}
