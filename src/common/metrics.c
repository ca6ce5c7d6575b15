/* SPDX-License-Identifier: MIT */
/*
 * metrics.c - Prometheus text format (see metrics.h).
 */
#include <stdlib.h>
#include <string.h>

#include "list.h"
#include "metrics.h"
#include "xalloc.h"

static const double buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                 0.25,   0.5,   1,      2.5,   5,    10,   30,    60};
#define NBUCKETS (sizeof(buckets) / sizeof(buckets[0]))

struct metric_counter {
    struct list_node node;
    char *name, *labels, *help;
    uint64_t value;
};

struct metric_histogram {
    struct list_node node;
    char *name, *help;
    uint64_t counts[NBUCKETS + 1]; /* the last is +Inf */
    double sum;
    uint64_t total;
};

struct metrics {
    struct list_node counters, histograms;
};

struct metrics *metrics_new(void)
{
    struct metrics *m = xcalloc(1, sizeof(*m));

    list_init(&m->counters);
    list_init(&m->histograms);
    return m;
}

void metrics_free(struct metrics *m)
{
    struct list_node *pos, *tmp;

    if (!m)
        return;
    list_for_each_safe(pos, tmp, &m->counters) {
        struct metric_counter *c = list_entry(pos, struct metric_counter, node);
        free(c->name);
        free(c->labels);
        free(c->help);
        free(c);
    }
    list_for_each_safe(pos, tmp, &m->histograms) {
        struct metric_histogram *h = list_entry(pos, struct metric_histogram, node);
        free(h->name);
        free(h->help);
        free(h);
    }
    free(m);
}

struct metric_counter *metrics_counter(struct metrics *m, const char *name, const char *labels, const char *help)
{
    struct metric_counter *c = xcalloc(1, sizeof(*c));

    c->name = xstrdup(name);
    c->labels = labels ? xstrdup(labels) : NULL;
    c->help = xstrdup(help);
    list_insert_tail(&m->counters, &c->node);
    return c;
}

void metric_counter_add(struct metric_counter *c, uint64_t n)
{
    c->value += n;
}

struct metric_histogram *metrics_histogram(struct metrics *m, const char *name, const char *help)
{
    struct metric_histogram *h = xcalloc(1, sizeof(*h));

    h->name = xstrdup(name);
    h->help = xstrdup(help);
    list_insert_tail(&m->histograms, &h->node);
    return h;
}

void metric_histogram_observe(struct metric_histogram *h, double seconds)
{
    size_t i = 0;

    while (i < NBUCKETS && seconds > buckets[i])
        i++;
    h->counts[i]++;
    h->sum += seconds;
    h->total++;
}

void metrics_gauge(struct buf *out, const char *name, const char *labels, double value, const char *help)
{
    if (help)
        buf_printf(out, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name);
    buf_printf(out, "%s%s%s%s %.17g\n", name, labels ? "{" : "", labels ? labels : "", labels ? "}" : "", value);
}

void metrics_render(struct metrics *m, struct buf *out)
{
    struct list_node *pos, *tmp;
    const char *last = "";

    list_for_each_safe(pos, tmp, &m->counters) {
        struct metric_counter *c = list_entry(pos, struct metric_counter, node);
        /* One HELP/TYPE per family: counters of a family are registered together. */
        if (strcmp(last, c->name) != 0)
            buf_printf(out, "# HELP %s %s\n# TYPE %s counter\n", c->name, c->help, c->name);
        last = c->name;
        buf_printf(out, "%s%s%s%s %llu\n", c->name, c->labels ? "{" : "", c->labels ? c->labels : "",
                   c->labels ? "}" : "", (unsigned long long)c->value);
    }
    list_for_each_safe(pos, tmp, &m->histograms) {
        struct metric_histogram *h = list_entry(pos, struct metric_histogram, node);
        uint64_t cum = 0;
        buf_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", h->name, h->help, h->name);
        for (size_t i = 0; i < NBUCKETS; i++) {
            cum += h->counts[i];
            buf_printf(out, "%s_bucket{le=\"%g\"} %llu\n", h->name, buckets[i], (unsigned long long)cum);
        }
        buf_printf(out, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.9g\n%s_count %llu\n", h->name,
                   (unsigned long long)h->total, h->name, h->sum, h->name, (unsigned long long)h->total);
    }
}
