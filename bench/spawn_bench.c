/* SPDX-License-Identifier: MIT */
/*
 * spawn_bench.c - spawn->ready latency of the process runtime, driven
 * through the runtime interface on a libuv loop exactly as the drone drives
 * it, against a baseline measured in the same run: posix_spawn the same
 * echo backend and poll it with the same HEAD probe every 100 us until it
 * answers. Rounds alternate so drift hits both alike. Then a start/stop
 * loop checks that the runtime leaks no fds, processes or memory.
 *
 * usage: spawn_bench ECHO_BACKEND [ROUNDS] [LOOP]
 */
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "runtime_driver.h"

static double baseline_once(const char *echo, int port)
{
    char portenv[32];
    char *argv[] = {(char *)echo, NULL};
    char *envp[] = {portenv, NULL};
    posix_spawn_file_actions_t fa;
    pid_t pid;

    snprintf(portenv, sizeof(portenv), "PORT=%d", port);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    double t0 = now_ms();
    if (posix_spawn(&pid, echo, &fa, NULL, argv, envp) != 0)
        fatal("posix_spawn");
    while (!probe_once(port))
        usleep(100);
    double dt = now_ms() - t0;
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    posix_spawn_file_actions_destroy(&fa);
    return dt;
}

static int children(void)
{
    DIR *d = opendir("/proc");
    struct dirent *de;
    int n = 0;

    while ((de = readdir(d))) {
        char path[300], text[512];
        int ppid = 0;
        snprintf(path, sizeof(path), "/proc/%s/stat", de->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t len = fread(text, 1, sizeof(text) - 1, f);
        fclose(f);
        text[len] = '\0';
        char *p = strrchr(text, ')');
        if (p && sscanf(p + 2, "%*c %d", &ppid) == 1 && ppid == getpid())
            n++;
    }
    closedir(d);
    return n;
}

int main(int argc, char **argv)
{
    uv_loop_t loop;
    struct runtime_config cfg = {0};
    char dir[] = "/tmp/plane-spawn-bench-XXXXXX";

    if (argc < 2) {
        fprintf(stderr, "usage: spawn_bench ECHO_BACKEND [ROUNDS] [LOOP]\n");
        return 2;
    }
    int rounds = argc > 2 ? atoi(argv[2]) : 200;
    int loops = argc > 3 ? atoi(argv[3]) : 200;
    setenv("PLANE_LOG", "warn", 0);
    log_init("bench");
    signal(SIGPIPE, SIG_IGN);
    uv_loop_init(&loop);
    cfg.data_dir = mkdtemp(dir);
    struct bench *b = bench_open(&loop, &runtime_process_ops, &cfg, json_pack("{s:[s]}", "command", argv[1]));
    if (!b)
        return 1;

    double *base = xcalloc((size_t)rounds, sizeof(double)), *ours = xcalloc((size_t)rounds, sizeof(double));
    for (int i = 0; i < 20; i++) { /* warm up both paths */
        bench_once(b, 100000 + i);
        baseline_once(argv[1], 19000 + i);
    }
    for (int i = 0; i < rounds; i++) {
        base[i] = baseline_once(argv[1], 19100 + i % 100);
        ours[i] = bench_once(b, i);
    }
    double mb = pct(base, rounds, 0.5), mo = pct(ours, rounds, 0.5);
    printf("spawn->ready of the echo backend, %d rounds each (ms):\n", rounds);
    printf("  baseline posix_spawn + poll   p50 %6.3f  p90 %6.3f  p99 %6.3f\n", mb, pct(base, rounds, 0.9),
           pct(base, rounds, 0.99));
    printf("  process runtime               p50 %6.3f  p90 %6.3f  p99 %6.3f\n", mo, pct(ours, rounds, 0.9),
           pct(ours, rounds, 0.99));
    printf("  median ratio runtime/baseline: %.2f (target <= 1.3)\n", mo / mb);

    long rss0 = rss_kb();
    int fds0 = count_dir("/proc/self/fd"), kids0 = children();
    double t0 = now_ms();
    for (int i = 0; i < loops; i++)
        bench_once(b, 200000 + i);
    long rss1 = rss_kb();
    int fds1 = count_dir("/proc/self/fd"), kids1 = children();
    printf("%d backends started and stopped in %.0f ms:\n", loops, now_ms() - t0);
    printf("  RSS %ld kB -> %ld kB (%+.1f%%, target within 10%%), fds %d -> %d, child processes %d -> %d\n", rss0,
           rss1, (double)(rss1 - rss0) * 100.0 / (double)rss0, fds0, fds1, kids0, kids1);
    bool ok = mo / mb <= 1.3 && labs(rss1 - rss0) * 10 <= rss0 && fds1 == fds0 && kids1 == 0;
    printf("RESULT: %s\n", ok ? "targets met" : "TARGET MISSED");
    bench_close(b);
    uv_run(&loop, UV_RUN_DEFAULT);
    free(base);
    free(ours);
    return ok ? 0 : 1;
}
