/* SPDX-License-Identifier: MIT */
/*
 * stats.c - process-wide proxy counters (see stats.h).
 */
#include <stdatomic.h>

#include "../common/metrics.h"
#include "stats.h"

static const double buckets[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                 0.025,  0.05,    0.1,    0.25,  0.5,    1,     2.5, 10};
#define NBUCKETS (sizeof(buckets) / sizeof(buckets[0]))

static struct {
    atomic_uint_fast64_t responses[600]; /* by status code; [0] for anything out of range */
    atomic_uint_fast64_t up_buckets[NBUCKETS + 1];
    atomic_uint_fast64_t up_count, up_sum_ns;
    atomic_int_fast64_t tunnels_open;
    atomic_uint_fast64_t tunnels_total, tunnels_spliced, bytes_out;
} st;

void proxy_stats_response(unsigned status)
{
    atomic_fetch_add_explicit(&st.responses[status >= 100 && status < 600 ? status : 0], 1, memory_order_relaxed);
}

void proxy_stats_upstream(uint64_t ns)
{
    double s = (double)ns / 1e9;
    size_t i = 0;

    while (i < NBUCKETS && s > buckets[i])
        i++;
    atomic_fetch_add_explicit(&st.up_buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&st.up_count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&st.up_sum_ns, ns, memory_order_relaxed);
}

void proxy_stats_tunnel(int delta)
{
    atomic_fetch_add_explicit(&st.tunnels_open, delta, memory_order_relaxed);
    if (delta > 0)
        atomic_fetch_add_explicit(&st.tunnels_total, 1, memory_order_relaxed);
}

void proxy_stats_spliced(void)
{
    atomic_fetch_add_explicit(&st.tunnels_spliced, 1, memory_order_relaxed);
}

void proxy_stats_bytes_out(uint64_t n)
{
    atomic_fetch_add_explicit(&st.bytes_out, n, memory_order_relaxed);
}

void proxy_stats_render(struct buf *out)
{
    uint64_t cum = 0;

    buf_append_str(out, "# HELP plane_proxy_responses_total Responses sent to clients, by status code.\n"
                        "# TYPE plane_proxy_responses_total counter\n");
    for (int i = 0; i < 600; i++) {
        uint64_t n = atomic_load(&st.responses[i]);
        if (n == 0)
            continue;
        if (i == 0)
            buf_printf(out, "plane_proxy_responses_total{code=\"other\"} %llu\n", (unsigned long long)n);
        else
            buf_printf(out, "plane_proxy_responses_total{code=\"%d\"} %llu\n", i, (unsigned long long)n);
    }
    buf_append_str(out, "# HELP plane_proxy_upstream_seconds From the request head sent to a backend to its "
                        "response head.\n# TYPE plane_proxy_upstream_seconds histogram\n");
    for (size_t i = 0; i < NBUCKETS; i++) {
        cum += atomic_load(&st.up_buckets[i]);
        buf_printf(out, "plane_proxy_upstream_seconds_bucket{le=\"%g\"} %llu\n", buckets[i], (unsigned long long)cum);
    }
    cum += atomic_load(&st.up_buckets[NBUCKETS]);
    buf_printf(out, "plane_proxy_upstream_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    buf_printf(out, "plane_proxy_upstream_seconds_sum %.9g\nplane_proxy_upstream_seconds_count %llu\n",
               (double)atomic_load(&st.up_sum_ns) / 1e9, (unsigned long long)atomic_load(&st.up_count));
    metrics_gauge(out, "plane_proxy_websocket_tunnels", NULL, (double)atomic_load(&st.tunnels_open),
                  "WebSocket (and other upgraded) tunnels open now.");
    buf_printf(out, "# HELP plane_proxy_websocket_tunnels_total Tunnels opened.\n"
                    "# TYPE plane_proxy_websocket_tunnels_total counter\nplane_proxy_websocket_tunnels_total %llu\n",
               (unsigned long long)atomic_load(&st.tunnels_total));
    buf_printf(out, "# HELP plane_proxy_spliced_tunnels_total Tunnels handed to the kernel (splice).\n"
                    "# TYPE plane_proxy_spliced_tunnels_total counter\nplane_proxy_spliced_tunnels_total %llu\n",
               (unsigned long long)atomic_load(&st.tunnels_spliced));
    buf_printf(out, "# HELP plane_proxy_sent_bytes_total Bytes written to clients.\n"
                    "# TYPE plane_proxy_sent_bytes_total counter\nplane_proxy_sent_bytes_total %llu\n",
               (unsigned long long)atomic_load(&st.bytes_out));
}
