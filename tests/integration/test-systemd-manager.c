/* SPDX-License-Identifier: MIT */
/*
 * test-systemd-manager.c — msegd under a real systemd 252 service manager
 * (issue 5; linux-facts.md 3.5): msegd.socket and msegd.service as built,
 * run by `systemd --user` inside a private mount namespace, with a tmpfs on
 * /run/systemd holding /run/systemd/system so that sd_booted() is true.
 *
 *   - Socket activation: nothing runs until the first client connects; its
 *     request is served.
 *   - READY=1 and STATUS= reach the manager (ActiveState, StatusText), the
 *     store holds two descriptors per segment (NFileDescriptorStore).
 *   - `systemctl --user restart msegd` and a `kill -9` of the main process
 *     (Restart=on-failure) keep every segment with its contents; a client
 *     attached across both keeps its mapping and works on.
 *   - Removing a segment takes it out of the store (FDSTOREREMOVE=1).
 *   - `systemctl --user stop msegd.service` discards the store (systemd
 *     252), so the next activation starts empty.
 *
 * The units get a drop-in for what a user manager cannot do or hide: a
 * socket in the test's directory, the built msegd, no User= (a user manager
 * cannot switch users), and no ProtectHome/ProtectKernelTunables/
 * ProtectKernelLogs/ProtectControlGroups/ProtectProc/ProcSubset, which fail
 * or hide the notify socket in this nested setup (linux-facts.md 3.4). The
 * rest of the hardening stays on.
 *
 * Runs only as root where unshare(CLONE_NEWNS), tmpfs mounts and
 * /lib/systemd/systemd are available; otherwise it skips (77). It is bounded
 * by alarm(), and the manager, msegd and anything else it started are
 * killed on every exit path (the test is their subreaper).
 */
#include <dirent.h>
#include <limits.h>
#include <sys/mount.h>
#include <sys/prctl.h>

#include "sd-harness.h"

#define MANAGER "/lib/systemd/systemd"
#define RUNTIME "/run/user/0"
#define HOME "/run/user/home"

static char dir[64];
static char sock_path[128];
static pid_t manager;
static struct mseg_options opts;

/* Kill and reap every descendant: we are their subreaper. */
static void kill_all(void) {
        for (int round = 0; round < 50; round++) {
                bool any = false;
                DIR *d = opendir("/proc");
                struct dirent *e;

                while (d && (e = readdir(d))) {
                        char path[300], buf[512], *pp;
                        int fd;
                        ssize_t n;
                        pid_t pid = (pid_t) strtol(e->d_name, NULL, 10);
                        if (pid <= 0)
                                continue;
                        snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);
                        fd = open(path, O_RDONLY | O_CLOEXEC);
                        if (fd < 0)
                                continue;
                        n = read(fd, buf, sizeof(buf) - 1);
                        close(fd);
                        if (n <= 0)
                                continue;
                        buf[n] = '\0';
                        pp = strstr(buf, "\nPPid:");
                        if (pp && strtol(pp + 6, NULL, 10) == (long) getpid()) {
                                kill(pid, SIGKILL);
                                any = true;
                        }
                }
                if (d)
                        closedir(d);
                while (waitpid(-1, NULL, WNOHANG) > 0)
                        any = true;
                if (!any)
                        break;
                usleep(20000);
        }
}

static void teardown(void) {
        static bool done;

        if (done)
                return;
        done = true;
        if (manager > 0) {
                /* Stop the units first so msegd exits cleanly, then the manager. */
                if (system("timeout 10 systemctl --user stop msegd.service msegd.socket >/dev/null 2>&1") != 0)
                        (void) 0;
                kill(manager, SIGTERM);
                for (int i = 0; i < 100 && waitpid(manager, NULL, WNOHANG) == 0; i++)
                        usleep(50000);
                manager = 0;
        }
        kill_all();
        if (dir[0] && !getenv("MSEG_SD_KEEP")) {
                char cmd[128];
                snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
                if (system(cmd) != 0)
                        (void) 0;
        }
}

static void on_alarm(int sig) {
        static const char msg[] = "FAIL: test timed out\n";

        (void) sig;
        (void) !write(2, msg, sizeof(msg) - 1);
        if (manager > 0)
                kill(manager, SIGKILL);
        kill_all();
        _exit(1);
}

static int skip(const char *why) {
        fprintf(stderr, "skip: %s\n", why);
        teardown();
        return TEST_SKIP;
}

static void write_file(const char *path, const char *text) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        ASSERT(fd >= 0);
        ASSERT_EQ(write(fd, text, strlen(text)), (ssize_t) strlen(text));
        close(fd);
}

static void copy_file(const char *from, const char *to) {
        static char buf[1 << 16];
        int fd = open(from, O_RDONLY | O_CLOEXEC);
        ssize_t n;

        if (fd < 0)
                FAIL("cannot read %s: %s", from, strerror(errno));
        n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        ASSERT(n > 0);
        buf[n] = '\0';
        write_file(to, buf);
}

/* systemctl --user @args; returns its exit status, output in @out. */
static int systemctl(char *out, size_t cap, const char *args) {
        char cmd[512], buf[4096];
        size_t n = 0;
        FILE *f;
        int st;

        snprintf(cmd, sizeof(cmd), "timeout 30 systemctl --user %s 2>&1", args);
        f = popen(cmd, "r");
        ASSERT_NOT_NULL(f);
        if (!out) {
                out = buf;
                cap = sizeof(buf);
        }
        out[0] = '\0';
        while (n + 1 < cap && fgets(out + n, (int) (cap - n), f))
                n += strlen(out + n);
        st = pclose(f);
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* One property of msegd.service, as text. */
static const char *prop(const char *name) {
        static char bufs[4][512];
        static unsigned next;
        char *out = bufs[next++ % 4], args[128];
        size_t len;

        snprintf(args, sizeof(args), "show -p %s --value msegd.service", name);
        if (systemctl(out, sizeof(bufs[0]), args) != 0)
                FAIL("systemctl --user show %s: %s", name, out);
        len = strlen(out);
        while (len && out[len - 1] == '\n')
                out[--len] = '\0';
        return out;
}

static long prop_num(const char *name) {
        return strtol(prop(name), NULL, 10);
}

/* Wait until msegd.service is active with a main pid other than @old. */
static pid_t wait_active(pid_t old) {
        for (int i = 0; i < 200; i++) {
                pid_t pid = (pid_t) prop_num("MainPID");
                if (pid > 0 && pid != old && strcmp(prop("ActiveState"), "active") == 0)
                        return pid;
                usleep(50000);
        }
        FAIL("msegd.service not active with a new main pid (ActiveState=%s, MainPID=%s)", prop("ActiveState"),
             prop("MainPID"));
}

static void make(const char *name, uint32_t mode, uint64_t value) {
        struct mseg_options o = opts;
        mseg *seg;
        uint64_t *v;

        o.size = 256 << 10;
        o.mode = mode;
        ASSERT_OK(mseg_open(&seg, name, MSEG_CREATE_ONLY, &o));
        v = mseg_construct(seg, "v", MSEG_TYPE(uint64_t), 1, NULL, NULL);
        ASSERT_NOT_NULL(v);
        *v = value;
        mseg_close(seg);
}

static void check(const char *name, uint32_t mode, uint64_t value) {
        struct mseg_segment_info info;
        mseg *seg;
        uint64_t *v;

        ASSERT_OK(mseg_stat(name, &opts, &info));
        ASSERT_EQ(info.mode, mode);
        ASSERT_EQ(info.size, 256 << 10);
        ASSERT_OK(mseg_open(&seg, name, MSEG_OPEN_ONLY, &opts));
        v = mseg_find(seg, "v", MSEG_TYPE(uint64_t), NULL);
        ASSERT_NOT_NULL(v);
        ASSERT_EQ(*v, value);
        mseg_close(seg);
}

int main(void) {
        const char *build = getenv("MSEG_BUILD_ROOT"), *msegd = getenv("MSEGD");
        char path[PATH_MAX], text[2048], out[4096];
        struct mseg_segment_info info;
        pid_t pid, pid2;
        mseg *held;
        uint64_t *hv;

        if (geteuid() != 0)
                return skip("needs root (unshare, mounts, a user manager)");
        if (access(MANAGER, X_OK) != 0)
                return skip(MANAGER " not found");
        if (system("command -v systemctl >/dev/null 2>&1") != 0)
                return skip("systemctl not found");
        ASSERT_NOT_NULL(build);
        ASSERT_NOT_NULL(msegd);
        static char resolved[PATH_MAX];
        msegd = realpath(msegd, resolved);  /* ExecStart= needs an absolute path */
        ASSERT_NOT_NULL(msegd);
        if (!sd_msegd_has_systemd())
                return skip("msegd was built without libsystemd (-Dsystemd=disabled)");
        if (getenv("MSEG_SD_MANAGER_SKIP"))
                return skip("MSEG_SD_MANAGER_SKIP is set");

        snprintf(dir, sizeof(dir), "/tmp/mseg-sdm-XXXXXX");
        ASSERT_NOT_NULL(mkdtemp(dir));
        chmod(dir, 0755);
        snprintf(sock_path, sizeof(sock_path), "%s/socket", dir);
        opts.socket_path = sock_path;
        atexit(teardown);
        signal(SIGALRM, on_alarm);
        alarm(110);

        /* A private mount namespace with sd_booted() true and the runtime
         * and home directories on tmpfs: services get PrivateTmp=, so the
         * manager's notify socket must not live under /tmp. */
        if (unshare(CLONE_NEWNS) < 0)
                return skip("unshare(CLONE_NEWNS) is not permitted here");
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
                return skip("cannot make the mounts private");
        if (mount("tmpfs", "/run/systemd", "tmpfs", 0, "mode=0755") < 0 ||
            mount("tmpfs", "/run/user", "tmpfs", 0, "mode=0755") < 0)
                return skip("cannot mount tmpfs on /run/systemd and /run/user");
        ASSERT_OK(mkdir("/run/systemd/system", 0755) < 0 ? -errno : 0);
        ASSERT_OK(mkdir(RUNTIME, 0700) < 0 ? -errno : 0);
        ASSERT_OK(mkdir(HOME, 0700) < 0 ? -errno : 0);
        ASSERT_OK(mkdir(HOME "/.config", 0700) < 0 ? -errno : 0);
        ASSERT_OK(mkdir(HOME "/.config/systemd", 0700) < 0 ? -errno : 0);
        ASSERT_OK(mkdir(HOME "/.config/systemd/user", 0700) < 0 ? -errno : 0);
        ASSERT_OK(mkdir(HOME "/.config/systemd/user/msegd.socket.d", 0700) < 0 ? -errno : 0);
        ASSERT_OK(mkdir(HOME "/.config/systemd/user/msegd.service.d", 0700) < 0 ? -errno : 0);
        setenv("XDG_RUNTIME_DIR", RUNTIME, 1);
        setenv("HOME", HOME, 1);
        setenv("XDG_CONFIG_HOME", HOME "/.config", 1);
        unsetenv("DBUS_SESSION_BUS_ADDRESS");
        unsetenv("NOTIFY_SOCKET");
        unsetenv("LISTEN_FDS");
        unsetenv("LISTEN_PID");

        /* The units as built, and the drop-ins this setup needs. */
        snprintf(path, sizeof(path), "%s/systemd/msegd.socket", build);
        copy_file(path, HOME "/.config/systemd/user/msegd.socket");
        snprintf(path, sizeof(path), "%s/systemd/msegd.service", build);
        copy_file(path, HOME "/.config/systemd/user/msegd.service");
        snprintf(text, sizeof(text), "[Socket]\nListenSequentialPacket=\nListenSequentialPacket=%s\n", sock_path);
        write_file(HOME "/.config/systemd/user/msegd.socket.d/test.conf", text);
        snprintf(text, sizeof(text),
                 "[Service]\nExecStart=\nExecStart=%s --foreground --state-dir=${STATE_DIRECTORY}\n"
                 "User=\nGroup=\nProtectHome=no\nProtectKernelTunables=no\nProtectKernelLogs=no\n"
                 "ProtectControlGroups=no\nProtectProc=default\nProcSubset=all\n"
                 /* the build tree (msegd, libmseg.so) may live under /tmp:
                  * CI clones there, and PrivateTmp= would hide it */
                 "PrivateTmp=no\n"
                 "Environment=ASAN_OPTIONS=detect_leaks=0\n", msegd);
        write_file(HOME "/.config/systemd/user/msegd.service.d/test.conf", text);

        /* The manager. */
        ASSERT_OK(prctl(PR_SET_CHILD_SUBREAPER, 1) < 0 ? -errno : 0);
        manager = fork();
        ASSERT(manager >= 0);
        if (manager == 0) {
                int log;
                snprintf(path, sizeof(path), "%s/manager.log", dir);
                log = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                if (log >= 0) {
                        dup2(log, 1);
                        dup2(log, 2);
                }
                execl(MANAGER, MANAGER, "--user", (char *) NULL);
                _exit(127);
        }
        for (int i = 0; i < 100 && access(RUNTIME "/systemd/private", F_OK) != 0; i++) {
                if (waitpid(manager, NULL, WNOHANG) == manager) {
                        manager = 0;
                        return skip("systemd --user exited at once (see its log)");
                }
                usleep(50000);
        }
        if (access(RUNTIME "/systemd/private", F_OK) != 0)
                return skip("systemd --user did not come up within 5 s");
        if (systemctl(out, sizeof(out), "is-system-running --wait") != 0 && !strstr(out, "degraded"))
                return skip("the user manager is not running");

        /* Socket activation: nothing runs until the first client. */
        if (systemctl(out, sizeof(out), "start msegd.socket") != 0)
                FAIL("systemctl --user start msegd.socket: %s", out);
        ASSERT(strcmp(prop("ActiveState"), "inactive") == 0);
        make("alpha", 0640, 1);
        pid = wait_active(0);
        make("beta", 0604, 2);
        make("gamma", 0600, 3);
        ASSERT_EQ(prop_num("NFileDescriptorStore"), 6);
        for (int i = 0; i < 40 && !strstr(prop("StatusText"), "3 segments"); i++)
                usleep(100000);
        ASSERT(strstr(prop("StatusText"), "3 segments") != NULL);

        /* A client stays attached through everything below. */
        ASSERT_OK(mseg_open(&held, "alpha", MSEG_OPEN_ONLY, &opts));
        hv = mseg_find(held, "v", MSEG_TYPE(uint64_t), NULL);
        ASSERT_NOT_NULL(hv);

        /* systemctl restart keeps every segment. */
        if (systemctl(out, sizeof(out), "restart msegd.service") != 0)
                FAIL("systemctl --user restart msegd.service: %s", out);
        pid2 = wait_active(pid);
        *hv = 11;
        check("alpha", 0640, 11);
        check("beta", 0604, 2);
        check("gamma", 0600, 3);
        ASSERT_EQ(prop_num("NFileDescriptorStore"), 6);

        /* kill -9 of the main process: Restart=on-failure brings it back
         * with every segment. */
        ASSERT_EQ(kill(pid2, SIGKILL), 0);
        pid = wait_active(pid2);
        ASSERT(prop_num("NRestarts") >= 1);
        *hv = 12;
        check("alpha", 0640, 12);
        check("beta", 0604, 2);
        check("gamma", 0600, 3);

        /* Removing one takes it out of the store. */
        ASSERT_OK(mseg_remove("gamma", &opts));
        for (int i = 0; i < 40 && prop_num("NFileDescriptorStore") != 4; i++)
                usleep(50000);
        ASSERT_EQ(prop_num("NFileDescriptorStore"), 4);

        /* stop discards the store: the next activation starts empty. */
        if (systemctl(out, sizeof(out), "stop msegd.service") != 0)
                FAIL("systemctl --user stop msegd.service: %s", out);
        ASSERT_EQ(prop_num("NFileDescriptorStore"), 0);
        ASSERT_ERR(mseg_stat("alpha", &opts, &info), -ENOENT);
        wait_active(0);
        ASSERT_EQ(*hv, 12);                     /* the mapping outlives it all */
        mseg_close(held);

        teardown();
        printf("ok: activation, restart and kill -9 kept 3 segments; stop discarded them\n");
        return 0;
}
