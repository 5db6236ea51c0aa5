/* SPDX-License-Identifier: MIT */
/*
 * test-systemd-notify.c — msegd's side of Type=notify (issue 5), with
 * sd-harness.h listening on $NOTIFY_SOCKET as systemd does.
 *
 *   - Started without --foreground but with $NOTIFY_SOCKET, msegd stays
 *     the process it was started as: every datagram comes from that pid
 *     (NotifyAccess=main would ignore a forked child).
 *   - READY=1 comes once, when msegd serves: here msegd binds its own
 *     socket, so a client connecting right at READY=1 would be refused if
 *     it came early. Clients hammer it from READY=1 on; none is refused
 *     before STOPPING=1 (compared with the kernel's receive timestamp of
 *     that datagram), and after SIGTERM it says STOPPING=1 once and exits 0.
 *   - STATUS= carries the segment and client counts, follows changes
 *     within a couple of seconds, is not repeated while nothing changes,
 *     and a burst of 40 creates costs a few lines, not 40.
 *   - With $WATCHDOG_USEC it pings WATCHDOG=1 at about half of it.
 */
#include "sd-harness.h"

static struct sd_mgr mgr;
static struct mseg_options opts;

/* A client that sends requests back to back from now on, until one fails;
 * it writes how many succeeded, the failing code and when (CLOCK_REALTIME)
 * to @fd. */
struct hammer_result {
        long ok;
        int code;
        struct timespec failed_at;
};

static void hammer(int fd) {
        struct hammer_result res = { 0 };
        struct mseg_segment_info info;

        for (;;) {
                int r = mseg_stat("no-such-segment", &opts, &info);
                if (r != -ENOENT) {
                        clock_gettime(CLOCK_REALTIME, &res.failed_at);
                        res.code = r;
                        break;
                }
                res.ok++;
                usleep(200);    /* steady, not a CPU hog */
        }
        (void) !write(fd, &res, sizeof(res));
        _exit(0);
}

int main(void) {
        struct hammer_result res[3];
        mseg *keep[2];
        int p[2], st;
        unsigned long long segs = 0, bytes = 0, clients = 0;
        unsigned n0, w0, nburst;
        pid_t kids[3];
        char name[32];

        SD_REQUIRE_SYSTEMD();
        sd_setup(&mgr, 100);
        mgr.pass_socket = false;        /* msegd binds mgr.sock_path itself */
        mgr.foreground = false;
        mgr.watchdog_usec = 300000;
        opts.socket_path = mgr.sock_path;
        close(mgr.listen_fd);
        unlink(mgr.sock_path);
        sd_start(&mgr, false, NULL);
        sd_wait_ready(&mgr);

        /* Clients from READY=1 on. */
        ASSERT_OK(pipe2(p, O_CLOEXEC) < 0 ? -errno : 0);
        for (int i = 0; i < 3; i++) {
                kids[i] = fork();
                ASSERT(kids[i] >= 0);
                if (kids[i] == 0)
                        hammer(p[1]);
        }

        /* STATUS= follows the counts. */
        ASSERT(SD_WAIT(&mgr, mgr.nstatus > 0, 3000));
        ASSERT_OK(mseg_open(&keep[0], "one", MSEG_CREATE_ONLY, &opts));
        ASSERT_OK(mseg_open(&keep[1], "two", MSEG_CREATE_ONLY, &opts));
        /* The hammers' connections come and go: at least the two handles. */
        if (!SD_WAIT(&mgr, sscanf(mgr.status, "%llu segments (%llu bytes), %llu clients", &segs, &bytes,
                                  &clients) == 3 && segs == 2 && bytes == 2 << 20 && clients >= 2 && clients <= 5,
                     5000))
                FAIL("STATUS= is \"%s\", expected 2 segments of 1 MiB and 2 to 5 clients", mgr.status);

        /* Watchdog: 300 ms timeout, a ping every 150 ms. */
        pthread_mutex_lock(&mgr.lock);
        w0 = mgr.nwatchdog;
        pthread_mutex_unlock(&mgr.lock);
        sd_pump(&mgr, 1500);
        pthread_mutex_lock(&mgr.lock);
        w0 = mgr.nwatchdog - w0;
        pthread_mutex_unlock(&mgr.lock);
        if (w0 < 5 || w0 > 14)
                FAIL("%u WATCHDOG=1 in 1.5 s, expected about 10", w0);

        /* A burst of creates: a few STATUS= lines, not one per change. */
        pthread_mutex_lock(&mgr.lock);
        n0 = mgr.nstatus;
        pthread_mutex_unlock(&mgr.lock);
        for (int i = 0; i < 40; i++) {
                mseg *s;
                snprintf(name, sizeof(name), "burst-%d", i);
                ASSERT_OK(mseg_open(&s, name, MSEG_CREATE_ONLY, &opts));
                mseg_close(s);
        }
        if (!SD_WAIT(&mgr, strncmp(mgr.status, "42 segments (", 13) == 0, 5000))
                FAIL("STATUS= is \"%s\", expected 42 segments", mgr.status);
        pthread_mutex_lock(&mgr.lock);
        nburst = mgr.nstatus - n0;
        pthread_mutex_unlock(&mgr.lock);
        ASSERT(nburst >= 1 && nburst <= 6);

        /* Quiet: nothing changes, nothing is said. */
        for (int i = 0; i < 3; i++) {
                kill(kids[i], SIGSTOP);         /* the hammers' connections come and go */
        }
        sd_pump(&mgr, 1200);                    /* let the last change be reported */
        pthread_mutex_lock(&mgr.lock);
        n0 = mgr.nstatus;
        pthread_mutex_unlock(&mgr.lock);
        sd_pump(&mgr, 2500);
        pthread_mutex_lock(&mgr.lock);
        ASSERT_EQ(mgr.nstatus, n0);
        pthread_mutex_unlock(&mgr.lock);
        for (int i = 0; i < 3; i++)
                kill(kids[i], SIGCONT);

        /* Stop while the hammers run: none failed before STOPPING=1. */
        sd_pump(&mgr, 300);
        st = sd_kill(&mgr, SIGTERM);
        ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        ASSERT_EQ(mgr.nstopping, 1);
        ASSERT_EQ(mgr.nready, 1);
        ASSERT_EQ(mgr.nforeign, 0);
        for (int i = 0; i < 3; i++) {
                ASSERT_EQ(read(p[0], &res[i], sizeof(res[i])), (ssize_t) sizeof(res[i]));
                ASSERT_EQ(waitpid(kids[i], &st, 0), kids[i]);
                ASSERT(res[i].ok > 10);
                if (res[i].failed_at.tv_sec < mgr.stopping_at.tv_sec ||
                    (res[i].failed_at.tv_sec == mgr.stopping_at.tv_sec &&
                     res[i].failed_at.tv_nsec < mgr.stopping_at.tv_nsec))
                        FAIL("client %d refused (%s) before STOPPING=1, after %ld requests", i,
                             mseg_strerror(res[i].code), res[i].ok);
        }
        mseg_close(keep[0]);
        mseg_close(keep[1]);
        printf("ok: %ld+%ld+%ld requests served between READY=1 and STOPPING=1; %u watchdog pings in 1.5 s; "
               "%u STATUS= lines for 40 creates\n", res[0].ok, res[1].ok, res[2].ok, w0, nburst);
        return 0;
}
