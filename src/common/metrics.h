/* SPDX-License-Identifier: MIT */
/*
 * metrics.h - counters and histograms written out in the Prometheus text
 * exposition format (version 0.0.4). Each component keeps a registry and
 * serves it at /metrics; gauges that are cheaper to compute on demand
 * (backends by status) are added by the caller at render time.
 */
#ifndef PLANE_METRICS_H
#define PLANE_METRICS_H

#include <stdint.h>

#include "buf.h"

struct metrics;
struct metric_counter;
struct metric_histogram;

struct metrics *metrics_new(void);
void metrics_free(struct metrics *m);
/* A counter named name (with optional fixed labels "a=\"b\""), registered once. */
struct metric_counter *metrics_counter(struct metrics *m, const char *name, const char *labels, const char *help);
void metric_counter_add(struct metric_counter *c, uint64_t n);
/* A histogram of seconds with the usual latency buckets (0.5 ms ... 60 s). */
struct metric_histogram *metrics_histogram(struct metrics *m, const char *name, const char *help);
void metric_histogram_observe(struct metric_histogram *h, double seconds);
/* Appends every registered metric to out. */
void metrics_render(struct metrics *m, struct buf *out);
/* Appends one gauge sample (with its HELP/TYPE lines when help is not NULL). */
void metrics_gauge(struct buf *out, const char *name, const char *labels, double value, const char *help);

#endif
