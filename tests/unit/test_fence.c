/* SPDX-License-Identifier: MIT */
/*
 * test_fence.c - the lease fence (drone/fence.h): a backend is killed at its
 * deadline, not when disarmed, not before a moved deadline, and also when its
 * deadline passes after the drone died or let go of the keeper; a move never
 * arms.
 * deadline passes after the drone let go of the keeper. This runner serves
 * as the keeper (`unit_tests fence-keeper`).
 */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../src/common/clock.h"
#include "../../src/drone/fence.h"
#include "test.h"

/* A process leading its own process group, as backends do. */
static pid_t sleeper(void)
{
    pid_t p = fork();

    if (p == 0) {
        setsid();
        execl("/bin/sleep", "sleep", "30", (char *)NULL);
        _exit(127);
    }
    ASSERT_TRUE(p > 0);
    usleep(20000); /* it has called setsid() */
    return p;
}

/* Whether p ended (and was reaped) within ms. */
static bool ended_within(pid_t p, int ms)
{
    for (int i = 0; i < ms / 10; i++) {
        if (waitpid(p, NULL, WNOHANG) == p)
            return true;
        usleep(10000);
    }
    return false;
}

static void reap(pid_t p)
{
    kill(p, SIGKILL);
    waitpid(p, NULL, 0);
}

TEST(fence_kills_at_the_deadline_not_when_disarmed)
{
    struct buf err = BUF_INIT;
    struct fence *f = fence_start(&err);
    pid_t a = sleeper(), b = sleeper(), c = sleeper();
    int64_t now = clock_boot_ms();

    ASSERT_TRUE(f != NULL);
    fence_arm(f, "a", a, now + 150);
    fence_arm(f, "b", b, now + 150);
    fence_disarm(f, "b");
    fence_move(f, "b", now + 200); /* gone from the keeper: a move does not bring it back */
    fence_move(f, "z", now + 200); /* never armed */
    fence_arm(f, "c", c, now + 1000);
    fence_arm(f, "one", 1, now + 100); /* never a group kill of everything */
    ASSERT_TRUE(ended_within(a, 3000));
    ASSERT_FALSE(ended_within(b, 400));
    fence_detach(f); /* the drone stops; its backends still run, and c's deadline still holds */
    ASSERT_FALSE(ended_within(c, 300));
    ASSERT_TRUE(ended_within(c, 3000));
    reap(b);
}

TEST(fence_outlives_the_drone_and_follows_moved_deadlines)
{
    pid_t a = sleeper();
    pid_t drone = fork();

    if (drone == 0) {
        struct buf err = BUF_INIT;
        struct fence *f = fence_start(&err);
        int64_t now = clock_boot_ms();
        if (!f)
            _exit(1);
        fence_arm(f, "a", a, now + 100);
        fence_move(f, "a", now + 700); /* a renewal moved it */
        _exit(0);                      /* dies without a word to the keeper */
    }
    int status;
    ASSERT_EQ(waitpid(drone, &status, 0), drone);
    ASSERT_EQ(WEXITSTATUS(status), 0);
    ASSERT_FALSE(ended_within(a, 400));
    ASSERT_TRUE(ended_within(a, 3000));
}
