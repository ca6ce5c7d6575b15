/* SPDX-License-Identifier: MIT */
/*
 * wire.h - pieces of the typed WebSocket protocol between the controller
 * and drones/proxies (spec §6): the handshake, and Rust/serde shapes that
 * both sides build.
 */
#ifndef PLANE_WIRE_H
#define PLANE_WIRE_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

/* {"version":{"version":V,"git_hash":H},"name":NAME}. New reference. */
json_t *wire_handshake(const char *name);
/* The name of a handshake, or NULL if j is not one. Borrowed from j. */
const char *wire_handshake_name(const json_t *j);
/* {tag: payload}: an externally tagged enum variant; steals payload. */
json_t *wire_variant(const char *tag, json_t *payload);
/* The single key of a one-member object (the variant tag), or NULL; *payload borrows. */
const char *wire_variant_of(const json_t *j, json_t **payload);
/* Compact JSON text of j, owned by caller. */
char *wire_text(const json_t *j);

#endif
