/* SPDX-License-Identifier: MIT */
/*
 * backend_state.h - a backend's status and state as the wire carries them
 * (spec §4.1-§4.3, §4.9), and the conversion rules of the drone's state
 * machine (§11.2). Shared by the controller (which orders states by their
 * status number) and the drone (which moves through them).
 */
#ifndef PLANE_BACKEND_STATE_H
#define PLANE_BACKEND_STATE_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "buf.h"
#include "net.h"

/* The values are the status numbers of §4.1: states only move to higher ones. */
enum backend_status {
    BACKEND_SCHEDULED = 10,
    BACKEND_LOADING = 20,
    BACKEND_STARTING = 30,
    BACKEND_WAITING = 40,
    BACKEND_READY = 50,
    BACKEND_TERMINATING = 60,
    BACKEND_HARD_TERMINATING = 65,
    BACKEND_TERMINATED = 70,
};

enum termination_reason {
    REASON_NONE,
    REASON_SWEPT,
    REASON_EXTERNAL,
    REASON_KEYEXPIRED,
    REASON_LOST,
    REASON_STARTUPTIMEOUT,
    REASON_INTERNALERROR,
};

enum termination_kind { TERMINATION_NONE, TERMINATION_SOFT, TERMINATION_HARD };

struct backend_state {
    enum backend_status status;
    char address[NET_ADDR_LEN];      /* waiting, ready */
    bool frozen;                     /* ready: frozen while idle; our extension, "frozen": true beside
                                        "status": "ready", so Plane's clients see it as ready */
    enum backend_status last_status; /* terminating, hard-terminating, terminated */
    enum termination_kind termination; /* terminated (terminating is always soft) */
    enum termination_reason reason;
    bool has_exit_code;              /* terminated */
    int exit_code;
};

const char *backend_status_name(enum backend_status s);
/* 0, or -EINVAL for anything but an exact lower-case status name. */
int backend_status_parse(const char *name, enum backend_status *out);
const char *termination_reason_name(enum termination_reason r); /* NULL for none */
int termination_reason_parse(const char *name, enum termination_reason *out);
const char *termination_kind_name(enum termination_kind k); /* NULL for none */

/* A state with just a status (scheduled, loading, starting). */
struct backend_state backend_state_simple(enum backend_status s);
/* waiting or ready at address. */
struct backend_state backend_state_at(enum backend_status s, const char *address);

/* The §4.2 JSON (internally tagged by "status"). New reference. */
json_t *backend_state_to_json(const struct backend_state *s);
/* 0, or -EINVAL with a line in err. */
int backend_state_from_json(const json_t *j, struct backend_state *out, struct buf *err);
/* The public §4.9 status entry for s recorded at time_ms. New reference. */
json_t *backend_status_entry(const struct backend_state *s, int64_t time_ms);

/* §11.2 conversions. Each returns the state to enter, or *cur unchanged. */
struct backend_state backend_state_terminating(const struct backend_state *cur, enum termination_reason r);
struct backend_state backend_state_hard_terminating(const struct backend_state *cur, enum termination_reason r);
/* exit_code may be RUNTIME_EXIT_UNKNOWN-like: pass has_code false for null. */
struct backend_state backend_state_terminated(const struct backend_state *cur, bool has_code, int exit_code);

#endif
