/* SPDX-License-Identifier: MIT */
/*
 * run_loop.c - signal-driven run of a subcommand's loop (see run_loop.h).
 */
#include <signal.h>

#include "log.h"
#include "run_loop.h"

struct signal_stop {
    uv_signal_t sigint, sigterm;
    void (*stop)(void *arg);
    void *arg;
    bool stopped;
};

static void on_signal(uv_signal_t *h, int signum)
{
    struct signal_stop *s = h->data;

    if (s->stopped)
        return;
    s->stopped = true;
    log_info("%s: stopping", signum == SIGINT ? "SIGINT" : "SIGTERM");
    uv_close((uv_handle_t *)&s->sigint, NULL);
    uv_close((uv_handle_t *)&s->sigterm, NULL);
    s->stop(s->arg);
}

void run_until_signal(uv_loop_t *loop, void (*stop)(void *arg), void *arg)
{
    struct signal_stop s = {.stop = stop, .arg = arg};

    uv_signal_init(loop, &s.sigint);
    uv_signal_init(loop, &s.sigterm);
    s.sigint.data = s.sigterm.data = &s;
    uv_signal_start(&s.sigint, on_signal, SIGINT);
    uv_signal_start(&s.sigterm, on_signal, SIGTERM);
    uv_run(loop, UV_RUN_DEFAULT);
    if (!s.stopped) {
        /* The loop ran dry on its own: close what we added. */
        uv_close((uv_handle_t *)&s.sigint, NULL);
        uv_close((uv_handle_t *)&s.sigterm, NULL);
        uv_run(loop, UV_RUN_DEFAULT);
    }
    uv_loop_close(loop);
}
