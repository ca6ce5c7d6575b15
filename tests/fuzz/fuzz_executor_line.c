/* SPDX-License-Identifier: MIT */
/*
 * fuzz_executor_line.c - libFuzzer target for the executor protocol input
 * path: bytes from the peer go through the line reader, then the message
 * parser; whatever parses is written back out and must parse again to the
 * same kind.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/common/line_reader.h"
#include "../../src/common/log.h"
#include "../../src/drone/executor_proto.h"

static int on_line(void *arg, const char *line, size_t len)
{
    struct exec_msg m, again;
    struct buf err = BUF_INIT;
    char *out = NULL;

    (void)arg;
    if (!line)
        return 0;
    if (exec_msg_parse(line, len, &m, &err) == 0) {
        struct runtime_result res = {.status = m.status, .error = (char *)m.error,
                                     .container_id = (char *)m.container_id, .port = m.port,
                                     .was_running = m.was_running};
        switch (m.kind) {
        case EXEC_PREPARE:
            out = exec_encode_prepare(m.id ? m.id : "x", m.executable);
            break;
        case EXEC_SPAWN: {
            struct spawn_spec spec = {.backend_id = m.backend_id, .executable = m.executable,
                                      .key = m.has_key ? &m.key : NULL, .static_token = m.static_token};
            out = exec_encode_spawn(m.id ? m.id : "x", &spec);
            break;
        }
        case EXEC_TERMINATE:
            out = exec_encode_terminate(m.id ? m.id : "x", m.backend_id, m.hard);
            break;
        case EXEC_WAIT_FOR_BACKEND:
            out = exec_encode_wait(m.id ? m.id : "x", m.backend_id, m.address);
            break;
        case EXEC_PREPARE_RESULT:
        case EXEC_SPAWN_RESULT:
        case EXEC_TERMINATE_RESULT:
        case EXEC_WAIT_RESULT:
            out = exec_encode_result(m.kind, m.id ? m.id : "x", &res);
            break;
        case EXEC_METRICS:
            out = exec_encode_metrics(&m.metrics);
            break;
        case EXEC_TERMINATE_EVENT:
            out = exec_encode_exit(m.backend_id, m.exit_code);
            break;
        default:
            break;
        }
        if (out) {
            buf_reset(&err);
            if (exec_msg_parse(out, strlen(out) - 1, &again, &err) != 0 || again.kind != m.kind)
                abort();
            exec_msg_release(&again);
            free(out);
        }
    }
    exec_msg_release(&m);
    buf_release(&err);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    struct line_reader r;

    if (!init) {
        setenv("PLANE_LOG", "error", 1);
        log_init("fuzz");
        init = 1;
    }
    line_reader_init(&r, 4096);
    /* Feed in two pieces so the reader's reassembly is exercised too. */
    line_reader_feed(&r, (const char *)data, size / 2, on_line, NULL);
    line_reader_feed(&r, (const char *)data + size / 2, size - size / 2, on_line, NULL);
    line_reader_feed(&r, "\n", 1, on_line, NULL);
    line_reader_release(&r);
    return 0;
}
