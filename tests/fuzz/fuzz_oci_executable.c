/* SPDX-License-Identifier: MIT */
/*
 * fuzz_oci_executable.c - libFuzzer target for the oci runtime's executable
 * (it comes from whoever calls connect) and the bundle made from it: the
 * input is one JSON document, the executable; its "image_config" member, if
 * any, stands in for the image's config. A parsed executable yields either
 * a config.json whose process has arguments, or a line saying why not.
 */
#include <stdint.h>
#include <stdlib.h>

#include "../../src/drone/oci_bundle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct acquired_key key = {.name = "k", .namespace = "", .tag = "", .token = 7};
    struct spawn_spec spec = {.backend_id = "fuzz", .key = &key, .static_token = "s.t"};
    struct buf err = BUF_INIT;
    struct oci_exec e;
    json_t *x = json_loadb((const char *)data, size, 0, NULL);

    if (!x)
        return 0;
    spec.executable = x;
    if (oci_exec_parse(x, &e, &err) == 0) {
        json_t *config = oci_bundle_config(&e, "/nonexistent-fuzz-root", json_object_get(x, "image_config"), &spec,
                                           20000, &err);
        if (config) {
            const json_t *args = json_object_get(json_object_get(config, "process"), "args");
            char *text = json_dumps(config, JSON_COMPACT);
            if (json_array_size(args) == 0 || !text)
                abort();
            free(text);
        } else if (err.len == 0) {
            abort();
        }
        json_decref(config);
    } else if (err.len == 0) {
        abort();
    }
    json_decref(x);
    buf_release(&err);
    return 0;
}
