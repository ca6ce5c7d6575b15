/* SPDX-License-Identifier: MIT */
/*
 * key_manager.h - the drone's side of key leases (spec §12). For every
 * backend holding a key it renews the lease before renew_at passes, and if
 * renewals stop succeeding it soft-terminates the backend at
 * soft_terminate_at and hard-terminates it at hard_terminate_at, so the
 * backend is gone before the controller could give the key to another.
 *
 * Deadlines arrive in the drone's wall clock (the protocol's) and are kept
 * in boot time (clock_boot_ms()) from then on: a wall-clock step after they
 * arrive moves none of them. A renewal's deadlines count from the time its
 * request was sent, so neither the network nor a stalled controller makes
 * them later than the controller meant.
 */
#ifndef PLANE_KEY_MANAGER_H
#define PLANE_KEY_MANAGER_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "../common/backend_state.h"

struct key_manager;

struct key_deadlines {
    int64_t renew_at, soft_terminate_at, hard_terminate_at; /* epoch ms, the drone's clock */
};

struct key_manager_hooks {
    /* Ask the controller to renew (only called while connected). */
    void (*renew)(void *arg, const char *backend_id, int64_t local_time);
    /* The lease is running out: terminate the backend with reason keyexpired. */
    void (*expire)(void *arg, const char *backend_id, enum termination_kind kind);
    /* Optional: the lease's deadlines are now these (boot-time ms). */
    void (*deadlines)(void *arg, const char *backend_id, int64_t soft_at, int64_t hard_at);
    void *arg;
};

struct key_manager *key_manager_new(uv_loop_t *loop, const struct key_manager_hooks *hooks);
void key_manager_free(struct key_manager *km);
/* Starts managing backend_id's lease. false if it is already registered. */
bool key_manager_register(struct key_manager *km, const char *backend_id, const struct key_deadlines *d);
/* New deadlines from a RenewKeyResponse. */
void key_manager_update(struct key_manager *km, const char *backend_id, const struct key_deadlines *d);
void key_manager_unregister(struct key_manager *km, const char *backend_id);
bool key_manager_has(const struct key_manager *km, const char *backend_id);
/* backend_id's current soft and hard deadlines in boot-time ms; false if it holds no lease. */
bool key_manager_deadlines(const struct key_manager *km, const char *backend_id, int64_t *soft_at, int64_t *hard_at);
/* Renewals are only sent while connected; reconnecting restarts every lease's loop. */
void key_manager_set_connected(struct key_manager *km, bool connected);

#endif
