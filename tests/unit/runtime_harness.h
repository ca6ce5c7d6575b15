/* SPDX-License-Identifier: MIT */
/*
 * runtime_harness.h - drives any runtime through the runtime_*() wrappers
 * on a private loop, recording results, exits and metrics for assertions.
 * Closing checks that the runtime left no handle open on the loop.
 */
#ifndef PLANE_RUNTIME_HARNESS_H
#define PLANE_RUNTIME_HARNESS_H

#include <stdarg.h>

#include "../../src/drone/runtime.h"
#include "test.h"

struct result {
    bool done;
    int status;
    char error[256];
    uint16_t port;
    int pid;
    bool was_running;
    char container_id[64];
};

struct harness {
    uv_loop_t loop;
    struct runtime *rt;
    char exit_ids[64][64];
    int exit_codes[64];
    int nexits;
    int nmetrics;
    struct backend_metrics last_metrics;
    char last_metrics_id[64];
    char *dir;
    bool closed;
};

void harness_open(struct harness *h, const char *runtime, const struct runtime_config *base);
/* Closes the runtime and the loop; fails the test if a handle was left open. */
void harness_close(struct harness *h);
void on_result(void *arg, const struct runtime_result *res);
/* Waits for r->done; fails the test after ms. */
void wait_result(struct harness *h, struct result *r, unsigned ms);
/* Waits until n exits were reported; fails the test after ms. */
void wait_exits(struct harness *h, int n, unsigned ms);
/* The exit code reported for id, or -1000 if none. */
int exit_code_of(struct harness *h, const char *id);
/* spawn + wait for the result; asserts success; returns the port. */
uint16_t spawn_ok(struct harness *h, const char *id, json_t *executable);
/* {"K":"V",...} from "K=V" strings: first, then ap up to a NULL. New reference. */
json_t *harness_env(const char *first, va_list ap);
/* wait_ready on 127.0.0.1:port; returns the status. */
int ready_status(struct harness *h, const char *id, uint16_t port, unsigned ms, struct result *out);

#endif
