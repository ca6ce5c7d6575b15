/* SPDX-License-Identifier: MIT */
/*
 * fuzz_auth_status.c - libFuzzer target for the forward-auth answer: the
 * head of whatever the auth service sends. The verdict must not depend on
 * how the bytes arrive: fed whole, or split in two at any point, the answer
 * reader decides the same (a status of 100-999, -1, or still undecided).
 */
#include <stdint.h>
#include <stdlib.h>

#include "../../src/controller/forward_auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct forward_auth_answer whole, split;
    size_t cut;
    int a, b;

    if (size < 1)
        return 0;
    cut = data[0] % size;
    forward_auth_answer_init(&whole);
    a = forward_auth_answer_feed(&whole, (const char *)data + 1, size - 1);
    forward_auth_answer_init(&split);
    b = forward_auth_answer_feed(&split, (const char *)data + 1, cut > 0 ? cut - 1 : 0);
    if (b == 0)
        b = forward_auth_answer_feed(&split, (const char *)data + (cut > 0 ? cut : 1), size - (cut > 0 ? cut : 1));
    if (a != b || !(a == 0 || a == -1 || (a >= 100 && a <= 999)))
        abort();
    return 0;
}
