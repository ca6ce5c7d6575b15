/* SPDX-License-Identifier: MIT */
/*
 * main.c - the `plane` binary: one table of subcommands, like git's and
 * Plane's own. Each component lives in its directory and exports one
 * *_main(argc, argv) entry point.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "common/version.h"
#include "common/xalloc.h"
#include "cli/admin.h"
#include "cli/dev.h"
#include "cli/run_config.h"
#include "controller/controller.h"
#include "drone/drone.h"
#include "dns/dns.h"
#include "drone/executor_server.h"
#include "drone/fence.h"
#include "proxy/proxy.h"

static int version_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    printf("Client version: %s\nClient hash: %s\n", PLANE_VERSION, plane_git_hash());
    return 0;
}

static const struct subcommand {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} subcommands[] = {
    {"controller", controller_main, "HTTP API, scheduling, keys"},
    {"drone", drone_main, "run backends on this host"},
    {"proxy", proxy_main, "route HTTP and WebSocket traffic to backends"},
    {"dns", dns_main, "ACME DNS-01 TXT responder for proxies' certificates"},
    {"run-config", run_config_main, "start components from a JSON config file (Plane's format)"},
    {"dev", dev_main, "controller + drone in one process on localhost (the quickstart)"},
    {"admin", admin_main, "client of the controller API: connect, terminate, status, drain, ..."},
    {"executor", executor_main, "serve a runtime over the Unix-socket executor protocol"},
    {"version", version_main, "print the version"},
    {"fence-keeper", fence_keeper_main, NULL}, /* started by the drone (drone/fence.h) */
};

static void usage(FILE *f)
{
    fprintf(f, "usage: plane <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < ARRAY_SIZE(subcommands); i++)
        if (subcommands[i].help) /* internal commands have none */
            fprintf(f, "  %-11s %s\n", subcommands[i].name, subcommands[i].help);
    fprintf(f, "\n'plane <command> --help' describes a command's options.\n");
}

int main(int argc, char **argv)
{
    /* A peer that goes away mid-write is an error to handle, not a reason to die. */
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0)
        return version_main(argc - 1, argv + 1);
    for (size_t i = 0; i < ARRAY_SIZE(subcommands); i++) {
        if (strcmp(argv[1], subcommands[i].name) == 0) {
            log_init(subcommands[i].name);
            return subcommands[i].run(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "plane: unknown command '%s' (try 'plane --help')\n", argv[1]);
    return 2;
}
