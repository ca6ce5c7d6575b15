/* SPDX-License-Identifier: MIT */
/*
 * run_loop.h - how every long-running subcommand runs: its loop until
 * SIGINT or SIGTERM, then a graceful stop, then until nothing is left.
 */
#ifndef PLANE_RUN_LOOP_H
#define PLANE_RUN_LOOP_H

#include <uv.h>

/*
 * Runs loop until SIGINT or SIGTERM arrives, calls stop(arg) once, and keeps
 * running until the loop has no handles left; then closes the loop.
 */
void run_until_signal(uv_loop_t *loop, void (*stop)(void *arg), void *arg);

#endif
