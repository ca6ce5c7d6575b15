/* SPDX-License-Identifier: MIT */
/*
 * json_util.h - small helpers over jansson for the wire formats.
 */
#ifndef PLANE_JSON_UTIL_H
#define PLANE_JSON_UTIL_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

/*
 * A deep copy whose objects have their keys inserted in byte order, so that
 * dumping it gives what serde_json gives for opaque values (spec §0).
 * Returns a new reference.
 */
json_t *json_sorted_copy(const json_t *v);
/* Compact dump with a trailing newline, for line-framed protocols. Owned by caller. */
char *json_dump_line(const json_t *v);
/* An integer member, or def when absent/null; false if present with another type. */
bool json_get_int(const json_t *obj, const char *key, int64_t def, int64_t *out);
/* json_string(), but bytes that are not valid UTF-8 become '?' instead of failing. */
json_t *json_string_safe(const char *s);
/* A string member or NULL (absent, null, or not a string). Borrowed. */
const char *json_get_str(const json_t *obj, const char *key);

#endif
