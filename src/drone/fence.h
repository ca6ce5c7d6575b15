/* SPDX-License-Identifier: MIT */
/*
 * fence.h - the lease fence: a small process beside the drone that kills a
 * backend whose key lease has run out when the drone itself cannot, because
 * it is stopped, hung or dead (spec §12 leaves that case open: a stopped
 * drone's backends outlive their leases, and the key can start elsewhere).
 *
 * The drone arms the fence for every backend whose process it knows, with a
 * deadline shortly after the lease's hard deadline and before the key's
 * expiry at the controller, and moves it on every renewal. The keeper holds
 * a pidfd of each backend (so a recycled pid is never hit), waits in boot
 * time, and SIGKILLs the backend's process group when a deadline passes. It
 * outlives a drone that dies, enforces what it was told, and exits once
 * nothing is left; a drone that stops in good order releases it at once.
 */
#ifndef PLANE_FENCE_H
#define PLANE_FENCE_H

#include <stdint.h>

#include "../common/buf.h"

struct fence;

/* Starts the keeper process. NULL, with a line in err, if it cannot. */
struct fence *fence_start(struct buf *err);
/* Arms (or moves) backend_id's deadline (boot-time ms); pid is its main process. */
void fence_arm(struct fence *f, const char *backend_id, int pid, int64_t deadline);
/* backend_id is gone: nothing to enforce for it. */
void fence_disarm(struct fence *f, const char *backend_id);
/* The drone stops in good order: the keeper exits without killing anything. Frees f. */
void fence_release(struct fence *f);
/* The keeper: `plane fence-keeper`, started by fence_start() with its socket as fd 3. */
int fence_keeper_main(int argc, char **argv);

#endif
