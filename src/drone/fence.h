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
 * a pidfd of each backend, taken when it is armed (so a recycled pid is
 * never hit), waits in boot time (a suspended host's deadlines pass while it
 * sleeps), and SIGKILLs the backend's process group when a deadline passes.
 * It runs in a session of its own, so signals to the drone's process group
 * (a terminal's Ctrl-Z or Ctrl-C, a kill of the group) leave it alone. It
 * outlives the drone, however the drone ends: backends a runtime leaves
 * running when the drone stops (docker, executor) are still fenced; it
 * exits once nothing it holds is alive. It shares the drone's cgroup: a
 * supervisor that kills that cgroup kills it too (and the process
 * runtime's backends with it).
 */
#ifndef PLANE_FENCE_H
#define PLANE_FENCE_H

#include <stdint.h>

#include "../common/buf.h"

struct fence;

/* Starts the keeper process. NULL, with a line in err, if it cannot. */
struct fence *fence_start(struct buf *err);
/* Arms backend_id's deadline (boot-time ms); pid (> 1) is its main process, leading its group. */
void fence_arm(struct fence *f, const char *backend_id, int pid, int64_t deadline);
/* Moves an armed deadline (a renewal); nothing happens if the keeper no longer holds it. */
void fence_move(struct fence *f, const char *backend_id, int64_t deadline);
/* backend_id is gone: nothing to enforce for it. */
void fence_disarm(struct fence *f, const char *backend_id);
/* The drone is stopping: it lets go of the keeper, which goes on enforcing what it holds. Frees f. */
void fence_detach(struct fence *f);
/* The keeper: `plane fence-keeper`, started by fence_start() with its socket as fd 3. */
int fence_keeper_main(int argc, char **argv);

#endif
