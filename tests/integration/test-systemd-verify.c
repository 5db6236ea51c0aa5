/* SPDX-License-Identifier: MIT */
/*
 * test-systemd-verify.c — msegd's units are valid and say what issue 5
 * asks, they install under the build's prefix, and libmseg does not link
 * libsystemd.
 *
 *   - `systemd-analyze verify` accepts msegd.socket and msegd.service (with
 *     ExecStart= pointed at the built msegd, since verify checks that the
 *     binary exists) and prints nothing: unknown keys are only warnings
 *     there, so any output fails the test. Skips (77) without
 *     systemd-analyze or when it cannot run here.
 *   - The socket listens with SOCK_SEQPACKET at /run/msegd/socket with a
 *     FileDescriptorName=; the service is Type=notify with a watchdog, a
 *     descriptor store for two descriptors per segment, its own user, a
 *     runtime and a state directory, and the hardening the issue lists.
 *   - meson's install plan puts the units in PREFIX/lib/systemd/system (or
 *     -Dsystemdunitdir), never in systemd.pc's /lib/systemd/system for a
 *     prefix elsewhere.
 *   - libmseg.so's NEEDED entries do not include libsystemd.
 */
#include <limits.h>

#include "sd-harness.h"

static char *slurp(const char *path) {
        static char buf[4][1 << 16];
        static int next;
        char *b = buf[next++ % 4];
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t n;

        if (fd < 0)
                FAIL("cannot read %s: %s", path, strerror(errno));
        n = read(fd, b, sizeof(buf[0]) - 1);
        close(fd);
        ASSERT(n > 0);
        b[n] = '\0';
        return b;
}

static void spit(const char *path, const char *text) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        ASSERT(fd >= 0);
        ASSERT_EQ(write(fd, text, strlen(text)), (ssize_t) strlen(text));
        close(fd);
}

/* Does @unit have the line @line (exactly, as a whole line)? */
static bool has_line(const char *unit, const char *line) {
        size_t len = strlen(line);

        for (const char *p = unit; (p = strstr(p, line)); p += len)
                if ((p == unit || p[-1] == '\n') && (p[len] == '\n' || p[len] == '\0'))
                        return true;
        return false;
}

/* Run @cmd, collecting its output (stdout and stderr) into @out. */
static int run(const char *cmd, char *out, size_t cap) {
        FILE *f = popen(cmd, "r");
        size_t n = 0;
        int st;

        if (!f)
                return -1;
        while (n + 1 < cap && fgets(out + n, (int) (cap - n), f))
                n += strlen(out + n);
        out[n] = '\0';
        st = pclose(f);
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int main(void) {
        static struct sd_mgr mgr;       /* for its temporary directory */
        const char *build = getenv("MSEG_BUILD_ROOT"), *msegd = getenv("MSEGD");
        const char *service_keys[] = {
                "Type=notify", "Restart=on-failure", "WatchdogSec=30s", "User=msegd", "RuntimeDirectory=msegd",
                "StateDirectory=msegd", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                "PrivateTmp=yes", "RestrictAddressFamilies=AF_UNIX", "MemoryDenyWriteExecute=yes",
                "SystemCallFilter=@system-service", "CapabilityBoundingSet=", "PrivateDevices=yes", "UMask=0077",
                NULL,
        };
        char path[PATH_MAX], cmd[PATH_MAX * 3], out[8192], *svc, *sock, *p, *installed;
        const char *analyze = NULL;
        unsigned long store_max = 0;
        int r;

        ASSERT_NOT_NULL(build);
        ASSERT_NOT_NULL(msegd);
        sd_setup(&mgr, 60);

        /* What the units say. */
        snprintf(path, sizeof(path), "%s/systemd/msegd.service", build);
        svc = slurp(path);
        snprintf(path, sizeof(path), "%s/systemd/msegd.socket", build);
        sock = slurp(path);
        ASSERT(has_line(sock, "ListenSequentialPacket=/run/msegd/socket"));
        ASSERT(has_line(sock, "FileDescriptorName=msegd"));
        for (int i = 0; service_keys[i]; i++)
                if (!has_line(svc, service_keys[i]))
                        FAIL("msegd.service lacks \"%s\"", service_keys[i]);
        p = strstr(svc, "\nFileDescriptorStoreMax=");
        ASSERT_NOT_NULL(p);
        store_max = strtoul(p + 24, NULL, 10);
        ASSERT(store_max >= 2 * 4096);          /* two per segment, msegd's default max-segments */
        ASSERT(strstr(svc, "\nExecStart=") && strstr(svc, "/msegd --foreground"));
        ASSERT(!strstr(svc, "@sbindir@"));

        /* Where they install: under the prefix msegd installs under. */
        snprintf(path, sizeof(path), "%s/meson-info/intro-installed.json", build);
        installed = slurp(path);
        {
                char sbin[PATH_MAX], unit[PATH_MAX];
                const char *s = strstr(installed, "/daemon/msegd\": \""), *u = strstr(installed, "msegd.service\": \"");
                ASSERT(s && u);
                sscanf(s + 17, "%[^\"]", sbin);
                sscanf(u + 17, "%[^\"]", unit);
                ASSERT(strlen(sbin) > 12);
                sbin[strlen(sbin) - strlen("/sbin/msegd")] = '\0';      /* the prefix */
                if (strncmp(unit, sbin, strlen(sbin)) != 0 && strcmp(sbin, "/usr") != 0)
                        FAIL("msegd.service installs to %s, outside the prefix %s", unit, sbin);
                ASSERT(strstr(installed, "msegd.socket\": \""));
        }

        /* libmseg never links libsystemd. */
        snprintf(cmd, sizeof(cmd), "readelf -d '%s/client-lib/libmseg.so' 2>&1", build);
        r = run(cmd, out, sizeof(out));
        if (r == 0) {
                ASSERT(strstr(out, "NEEDED"));
                if (strstr(out, "libsystemd"))
                        FAIL("libmseg links libsystemd:\n%s", out);
        } else {
                fprintf(stderr, "note: readelf unavailable, not checking libmseg's dependencies\n");
        }

        /* systemd-analyze verify, on copies that point at the built msegd. */
        if (access("/usr/bin/systemd-analyze", X_OK) == 0)
                analyze = "/usr/bin/systemd-analyze";
        else if (access("/bin/systemd-analyze", X_OK) == 0)
                analyze = "/bin/systemd-analyze";
        if (!analyze) {
                fprintf(stderr, "skip: systemd-analyze not found (the unit checks above passed)\n");
                return TEST_SKIP;
        }
        {
                static char copy[1 << 16];
                char *e = strstr(svc, "\nExecStart="), *nl;
                ASSERT_NOT_NULL(e);
                nl = strchr(e + 1, '\n');
                ASSERT_NOT_NULL(nl);
                snprintf(copy, sizeof(copy), "%.*s\nExecStart=%s --foreground --state-dir=${STATE_DIRECTORY}%s",
                         (int) (e - svc), svc, msegd, nl);
                snprintf(path, sizeof(path), "%s/msegd.service", mgr.dir);
                spit(path, copy);
                snprintf(path, sizeof(path), "%s/msegd.socket", mgr.dir);
                spit(path, sock);
        }
        snprintf(cmd, sizeof(cmd), "cd '%s' && SYSTEMD_LOG_COLOR=0 %s verify --man=no ./msegd.socket ./msegd.service 2>&1",
                 mgr.dir, analyze);
        r = run(cmd, out, sizeof(out));
        if (r != 0 && (strstr(out, "Failed to initialize manager") || strstr(out, "Failed to allocate manager") ||
                       strstr(out, "Operation not permitted"))) {
                fprintf(stderr, "skip: systemd-analyze cannot run here:\n%s", out);
                return TEST_SKIP;
        }
        if (r != 0 || out[0])
                FAIL("systemd-analyze verify (exit %d) says:\n%s", r, out);

        /* It does complain when something is wrong, so silence means valid. */
        snprintf(path, sizeof(path), "%s/msegd.service", mgr.dir);
        {
                static char bad[1 << 16];
                snprintf(bad, sizeof(bad), "%s\n[Service]\nNoSuchSetting=1\n", slurp(path));
                spit(path, bad);
        }
        r = run(cmd, out, sizeof(out));
        ASSERT(strstr(out, "NoSuchSetting") != NULL);
        printf("ok: units verified (FileDescriptorStoreMax=%lu), installed under the prefix, libmseg free of "
               "libsystemd\n", store_max);
        return 0;
}
