/* SPDX-License-Identifier: MIT */
/*
 * runtime_flags.h - the command-line flags that configure a runtime, the
 * same for `plane drone`, `plane executor` and `plane dev`: one table of
 * options, one parser, one usage text.
 */
#ifndef PLANE_RUNTIME_FLAGS_H
#define PLANE_RUNTIME_FLAGS_H

#include <getopt.h>

#include "runtime.h"

/* Usage lines of the runtime flags, for a command's --help. */
extern const char runtime_flags_usage[];

/*
 * A getopt_long table: the command's own options (own, ending in {0})
 * followed by the runtime flags. Free it with free().
 */
struct option *runtime_flags_options(const struct option *own);
/*
 * Handles opt if it is a runtime flag: 1 if it was (cfg updated), 0 if it
 * is not a runtime flag, -1 if its value is bad (a line went to stderr,
 * naming cmd).
 */
int runtime_flag_parse(int opt, const char *arg, struct runtime_config *cfg, const char *cmd);
/* Seconds, fractions allowed, to milliseconds; -1 if not a sane duration. */
long runtime_flags_secs(const char *s);

#endif
