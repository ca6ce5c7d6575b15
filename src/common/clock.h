/* SPDX-License-Identifier: MIT */
/*
 * clock.h - wall-clock milliseconds (protocol timestamps, spec §0) and a
 * monotonic clock for measuring intervals.
 */
#ifndef PLANE_CLOCK_H
#define PLANE_CLOCK_H

#include <stdint.h>

/* Milliseconds since the Unix epoch (UTC). */
int64_t clock_epoch_ms(void);
/* Monotonic nanoseconds, for durations only. */
uint64_t clock_mono_ns(void);
/*
 * Milliseconds of CLOCK_BOOTTIME: monotonic, the same for every process on
 * the host, and counting through a suspend. Lease deadlines are kept in it,
 * so that neither a wall-clock step nor a suspended host extends a lease.
 */
int64_t clock_boot_ms(void);

#endif
