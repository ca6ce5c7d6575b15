/* SPDX-License-Identifier: MIT */
/*
 * fuzz_auth_status.c - libFuzzer target for the forward-auth answer: the
 * status line of whatever the auth service sends. Every prefix of the input
 * is offered as the controller would see it arrive, and the verdict must be
 * stable: once a prefix gives a status (or "not HTTP"), longer ones agree.
 */
#include <stdint.h>
#include <stdlib.h>

#include "../../src/controller/forward_auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int first = 0;

    for (size_t n = 0; n <= size; n++) {
        int s = forward_auth_status((const char *)data, n);
        if (s != 0 && !(s == -1 || (s >= 100 && s <= 999)))
            abort();
        if (first == 0)
            first = s;
        else if (s != first)
            abort();
    }
    return 0;
}
