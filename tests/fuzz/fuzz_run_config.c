/* SPDX-License-Identifier: MIT */
/*
 * fuzz_run_config.c - libFuzzer target for the config file reader of
 * `plane run-config`: any bytes are either a set of plans or one error line
 * (never empty, never a line break in it), and parsing leaks nothing.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/cli/run_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct run_config rc;
    struct buf err = BUF_INIT;
    int r = run_config_parse(&rc, (const char *)data, size, &err);

    if (r == 0 && (rc.nplans == 0 || err.len != 0))
        abort();
    if (r < 0 && (err.len == 0 || strchr(buf_cstr(&err), '\n')))
        abort();
    run_config_release(&rc);
    buf_release(&err);
    return 0;
}
