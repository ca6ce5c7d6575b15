/* SPDX-License-Identifier: MIT */
/*
 * run_config.h - `plane run-config FILE.json` (spec §2.5): components
 * started from Plane's JSON config format instead of flags. A file holds
 * one plan ({"Controller":{...}}, {"Drone":{...}}, {"Proxy":{...}} or
 * {"Dns":{...}}) or, beyond Plane, an array of plans run in one process.
 * Every field means what the flag of the same component means; unknown
 * fields and bad values are refused with one line naming the field.
 */
#ifndef PLANE_RUN_CONFIG_H
#define PLANE_RUN_CONFIG_H

#include <stddef.h>

#include <jansson.h>

#include "../common/buf.h"
#include "../controller/controller.h"
#include "../drone/drone.h"
#include "../proxy/proxy.h"

enum plan_kind { PLAN_CONTROLLER, PLAN_DRONE, PLAN_PROXY, PLAN_DNS };

/* A Dns plan (spec §2.4): the flags of `plane dns`. */
struct dns_plan {
    const char *name;           /* ns-... */
    const char *controller_url; /* one or more, separated by commas */
    const char *zone;           /* NULL: test mode (spec §17) */
    const char *host;           /* ours: the listen address; NULL: plane dns's default */
    int port;
};

struct plan {
    enum plan_kind kind;
    union {
        struct controller_config controller;
        struct drone_config drone;
        struct proxy_options proxy;
        struct dns_plan dns;
    } u;
};

/* A parsed file. Strings in the plans borrow from root or from owned. */
struct run_config {
    json_t *root;        /* owned */
    struct plan *plans;  /* owned; nplans of them, in file order */
    size_t nplans;
    char **owned;        /* owned: strings made from the file (joined URL lists, ...) */
    size_t nowned;
};

/*
 * Parses and checks a config file's text (len bytes, not NUL-terminated).
 * 0 with rc filled, or -EINVAL with one line in err naming the field
 * ("Drone.executor_config.docker.runtime: expected a string"). Release rc
 * either way.
 */
int run_config_parse(struct run_config *rc, const char *text, size_t len, struct buf *err);
void run_config_release(struct run_config *rc);

/* `plane run-config FILE.json`: 2 for a bad file, 1 if a component cannot start, else 0. */
int run_config_main(int argc, char **argv);

#endif
