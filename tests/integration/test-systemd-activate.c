/* SPDX-License-Identifier: MIT */
/*
 * test-systemd-activate.c — socket activation (issue 5) with systemd's own
 * tool: `systemd-socket-activate -l PATH --seqpacket --fdname=msegd msegd`
 * binds and listens, and execs msegd only when the first client connects.
 *
 * Checks: before any client, the process is still the activator and msegd
 * has not run; the first client's request is served (create a segment, a
 * named object in it, read back by a second open); msegd serves on the
 * socket it was passed (the socket file is the activator's, unchanged, and
 * msegd logs that it took fd 3); a clean SIGTERM exits 0 and leaves the
 * socket file alone (it belongs to whoever bound it). Skips (77) without
 * systemd-socket-activate.
 */
#include <limits.h>

#include "sd-harness.h"

static const char *activator(void) {
        static const char *const paths[] = { "/usr/bin/systemd-socket-activate", "/bin/systemd-socket-activate",
                                             "/lib/systemd/systemd-socket-activate", NULL };
        for (int i = 0; paths[i]; i++)
                if (access(paths[i], X_OK) == 0)
                        return paths[i];
        return NULL;
}

static void exe_of(pid_t pid, char *buf, size_t cap) {
        char link[64];
        ssize_t n;

        snprintf(link, sizeof(link), "/proc/%d/exe", (int) pid);
        n = readlink(link, buf, cap - 1);
        buf[n > 0 ? n : 0] = '\0';
}

int main(void) {
        static struct sd_mgr mgr;       /* only for its directory and cleanup */
        const char *act = activator(), *msegd = getenv("MSEGD");
        struct mseg_options opts = { 0 };
        struct stat before, after;
        char exe[PATH_MAX], fdname[64];
        mseg *seg, *again;
        uint64_t *v;
        pid_t pid;
        int st;

        if (!act) {
                fprintf(stderr, "skip: systemd-socket-activate not found\n");
                return TEST_SKIP;
        }
        SD_REQUIRE_SYSTEMD();
        ASSERT_NOT_NULL(msegd);
        static char resolved[PATH_MAX];
        msegd = realpath(msegd, resolved);  /* compared with /proc/PID/exe */
        ASSERT_NOT_NULL(msegd);
        sd_setup(&mgr, 60);
        close(mgr.listen_fd);           /* the activator binds the path itself */
        unlink(mgr.sock_path);
        opts.socket_path = mgr.sock_path;

        pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
                int log = open(mgr.log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                snprintf(fdname, sizeof(fdname), "--fdname=msegd");
                if (log >= 0) {
                        dup2(log, 1);
                        dup2(log, 2);
                }
                unsetenv("NOTIFY_SOCKET");
                execl(act, act, "-l", mgr.sock_path, "--seqpacket", fdname, msegd, "--foreground", "--state-dir=",
                      "--log-level=debug", (char *) NULL);
                _exit(127);
        }
        mgr.pid = pid;                  /* killed by the harness's cleanup on failure */
        for (int i = 0; i < 500 && stat(mgr.sock_path, &before) < 0; i++)
                usleep(10000);
        ASSERT_OK(stat(mgr.sock_path, &before) < 0 ? -errno : 0);
        ASSERT(S_ISSOCK(before.st_mode));
        usleep(200000);
        exe_of(pid, exe, sizeof(exe));
        if (!strstr(exe, "systemd-socket-activate"))
                FAIL("before any client, pid %d runs %s, expected the activator", (int) pid, exe);
        ASSERT(!sd_log_has(&mgr, "msegd["));

        /* The first connection starts msegd, and it serves. */
        opts.size = 256 << 10;
        ASSERT_OK(mseg_open(&seg, "activated", MSEG_CREATE_ONLY, &opts));
        v = mseg_construct(seg, "answer", MSEG_TYPE(uint64_t), 1, NULL, NULL);
        ASSERT_NOT_NULL(v);
        *v = 42;
        ASSERT_OK(mseg_open(&again, "activated", MSEG_OPEN_ONLY, &opts));
        v = mseg_find(again, "answer", MSEG_TYPE(uint64_t), NULL);
        ASSERT_NOT_NULL(v);
        ASSERT_EQ(*v, 42);
        mseg_close(again);
        mseg_close(seg);
        exe_of(pid, exe, sizeof(exe));
        if (strcmp(exe, msegd) != 0)
                FAIL("after the first client, pid %d runs %s, expected %s", (int) pid, exe, msegd);
        ASSERT(sd_log_has(&mgr, "Communication attempt on fd 3"));
        ASSERT(sd_log_has(&mgr, "using the listening socket passed as fd 3 (\"msegd\")"));
        {
                char line[300];
                snprintf(line, sizeof(line), "listening on %s (pid %d", mgr.sock_path, (int) pid);
                ASSERT(sd_log_has(&mgr, line));
        }
        ASSERT_OK(stat(mgr.sock_path, &after) < 0 ? -errno : 0);
        ASSERT_EQ(after.st_ino, before.st_ino);

        ASSERT_EQ(kill(pid, SIGTERM), 0);
        ASSERT_EQ(waitpid(pid, &st, 0), pid);
        mgr.pid = 0;
        ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        ASSERT(sd_log_has(&mgr, "clean shutdown"));
        ASSERT_OK(stat(mgr.sock_path, &after) < 0 ? -errno : 0);
        ASSERT_EQ(after.st_ino, before.st_ino);
        printf("ok: msegd started on the first connection and served on the passed socket\n");
        return 0;
}
