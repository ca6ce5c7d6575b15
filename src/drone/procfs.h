/* SPDX-License-Identifier: MIT */
/*
 * procfs.h - what the process runtime reads from /proc: a process's start
 * time (to tell a live process from a reused pid), its CPU time and memory,
 * and the host's CPU time, for the metrics of spec §13.3/§14.7.
 */
#ifndef PLANE_PROCFS_H
#define PLANE_PROCFS_H

#include <stdint.h>

struct backend_metrics;

/* Start time of pid in clock ticks since boot (field 22 of stat); 0 if gone. */
unsigned long long procfs_start_time(int pid);
/* User + system CPU time of pid and its reaped children, in ns; 0 if gone. */
uint64_t procfs_cpu_ns(int pid);
/* CPU time of the whole host in ns (the "cpu" line of /proc/stat), as Docker's system_cpu_usage. */
uint64_t procfs_host_cpu_ns(void);
/* Memory fields of m from pid's status (RSS) and the host's total as the limit. */
void procfs_memory(int pid, struct backend_metrics *m);

#endif
