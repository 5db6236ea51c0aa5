/* SPDX-License-Identifier: MIT */
/*
 * main.c — msegd: arguments and config file, the listening socket, signals,
 * and the event loop's life from start to a clean exit.
 *
 * Every limit can be set on the command line and in a config file (one
 * "key = value" per line, keys named like the long options; the command
 * line wins). `msegd --help` lists them with their defaults.
 *
 * Startup: configuration, logging, RLIMIT_NOFILE raised to its hard limit
 * (each client is a descriptor), the listening socket (passed by the
 * service manager through shim.h, or created here: a stale socket file is
 * replaced, a live one means another msegd and we refuse to start), the
 * persistent segments, then the loop. Without --foreground msegd detaches
 * and its first process exits 0 only once the socket is listening.
 *
 * Shutdown on SIGTERM or SIGINT (uv_signal_t): stop listening, close every
 * connection, write persistent segments to their state files, close every
 * handle, let the loop drain, free the table, and check that
 * uv_loop_close() finds nothing left open.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <sodium.h>

#include "mseg.h"
#include "msegd.h"
#include "shim.h"

#define DEFAULT_SOCKET "/run/msegd/socket"
#define DEFAULT_STATE_DIR "/var/lib/msegd"

enum opt_kind { K_STR, K_COUNT, K_SIZE, K_MS, K_MODE, K_LEVEL, K_FLAG };

struct optdef {
        const char *name;
        enum opt_kind kind;
        const char *help;
};

enum {
        OPT_SOCKET = 256, OPT_STATE_DIR, OPT_FOREGROUND, OPT_CONFIG, OPT_MAX_SEGMENTS, OPT_MAX_SEGMENTS_UID,
        OPT_MAX_BYTES, OPT_MAX_BYTES_UID, OPT_MAX_CLIENTS, OPT_MAX_CLIENTS_UID, OPT_MAX_MESSAGE,
        OPT_MAX_SEGMENT_SIZE, OPT_MAX_ATTACH, OPT_HANDSHAKE, OPT_SYNC, OPT_SOCKET_MODE, OPT_LOG_LEVEL,
        OPT_VERSION, OPT__END,
};

static const struct optdef defs[OPT__END - OPT_SOCKET] = {
        [OPT_SOCKET - OPT_SOCKET] = { "socket", K_STR, "PATH  listening socket (default " DEFAULT_SOCKET ")" },
        [OPT_STATE_DIR - OPT_SOCKET] = { "state-dir", K_STR,
                "DIR  persistent segments (default " DEFAULT_STATE_DIR "; without it, none)" },
        [OPT_FOREGROUND - OPT_SOCKET] = { "foreground", K_FLAG, "  do not detach" },
        [OPT_CONFIG - OPT_SOCKET] = { "config", K_STR, "FILE  read \"key = value\" lines, keys as these options" },
        [OPT_MAX_SEGMENTS - OPT_SOCKET] = { "max-segments", K_COUNT, "N  segments in all (default 4096)" },
        [OPT_MAX_SEGMENTS_UID - OPT_SOCKET] = { "max-segments-per-uid", K_COUNT, "N  segments per owner (default 1024)" },
        [OPT_MAX_BYTES - OPT_SOCKET] = { "max-bytes", K_SIZE, "SIZE  usable bytes of all segments (default: RAM)" },
        [OPT_MAX_BYTES_UID - OPT_SOCKET] = { "max-bytes-per-uid", K_SIZE, "SIZE  usable bytes per owner (default: max-bytes)" },
        [OPT_MAX_CLIENTS - OPT_SOCKET] = { "max-clients", K_COUNT, "N  connections at once (default 4096)" },
        [OPT_MAX_CLIENTS_UID - OPT_SOCKET] = { "max-clients-per-uid", K_COUNT, "N  connections per uid (default: max-clients)" },
        [OPT_MAX_MESSAGE - OPT_SOCKET] = { "max-message-size", K_SIZE, "SIZE  bytes per request, 4K..64K (default 64K)" },
        [OPT_MAX_SEGMENT_SIZE - OPT_SOCKET] = { "max-segment-size", K_SIZE, "SIZE  largest max_size of a segment (default 1T)" },
        [OPT_MAX_ATTACH - OPT_SOCKET] = { "max-attach-per-client", K_COUNT, "N  segments open on one connection (default 16384)" },
        [OPT_HANDSHAKE - OPT_SOCKET] = { "handshake-timeout", K_MS, "SECONDS  close connections silent this long (default 10)" },
        [OPT_SYNC - OPT_SOCKET] = { "sync-interval", K_MS, "SECONDS  save attached persistent segments this often (default 30; 0 = never)" },
        [OPT_SOCKET_MODE - OPT_SOCKET] = { "socket-mode", K_MODE, "MODE  permissions of the socket file (default 0666)" },
        [OPT_LOG_LEVEL - OPT_SOCKET] = { "log-level", K_LEVEL, "LEVEL  error, warning, notice, info or debug (default info)" },
        [OPT_VERSION - OPT_SOCKET] = { "version", K_FLAG, "  print the version and exit" },
};

static struct msegd_config cfg;
static uv_signal_t sig_term, sig_int;
static struct server server;
static struct segtable table;
static int listen_fd = -1;
static bool socket_created;

static void usage(FILE *f) {
        fprintf(f, "Usage: msegd [OPTION]...\n"
                   "Broker of named shared-memory segments (memfd over a SOCK_SEQPACKET socket).\n\n");
        for (int i = 0; i < OPT__END - OPT_SOCKET; i++) {
                const char *h = defs[i].help, *sp = strchr(h, ' ');
                int n = (int) (sp - h);
                char left[64];
                snprintf(left, sizeof(left), "--%s%s%.*s", defs[i].name, n ? " " : "", n, h);
                fprintf(f, "  %-32s %s\n", left, sp + 2);
        }
        fprintf(f, "  %-32s %s\n", "-v, --verbose", "log-level debug");
        fprintf(f, "  %-32s %s\n", "-h, --help", "this text");
        fprintf(f, "\nSIZE takes K, M, G, T suffixes (powers of 1024). Exit status: 0 after a clean\n"
                   "shutdown (SIGTERM, SIGINT), 1 on failure, 2 on a usage error.\n");
}

static int parse_u64(const char *s, uint64_t *ret) {
        char *end;
        unsigned long long v;

        if (!*s || *s == '-')
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno || *end)
                return -EINVAL;
        *ret = v;
        return 0;
}

static int parse_ms(const char *s, uint64_t *ret) {
        char *end;
        double v;

        errno = 0;
        v = strtod(s, &end);
        if (errno || end == s || *end || v < 0 || v > 1e9)
                return -EINVAL;
        *ret = (uint64_t) (v * 1000.0 + 0.5);
        return 0;
}

static int set_option(int id, const char *arg, const char *where) {
        const struct optdef *d = &defs[id - OPT_SOCKET];
        struct msegd_limits *lim = &cfg.lim;
        uint64_t v = 0;
        int r = 0;

        switch (d->kind) {
        case K_COUNT: r = parse_u64(arg, &v); break;
        case K_SIZE: r = mseg_proto_parse_size(arg, &v); break;
        case K_MS: r = parse_ms(arg, &v); break;
        case K_MODE: {
                char *end;
                errno = 0;
                v = strtoul(arg, &end, 8);
                if (errno || *end || end == arg || v > 0777)
                        r = -EINVAL;
                break;
        }
        case K_LEVEL: {
                int l = log_level_from_name(arg);
                if (l < 0)
                        r = -EINVAL;
                v = (uint64_t) l;
                break;
        }
        default: break;
        }
        if (r < 0) {
                fprintf(stderr, "msegd: %s: invalid value for %s: \"%s\"\n", where, d->name, arg);
                return -EINVAL;
        }
        switch (id) {
        case OPT_SOCKET: free(cfg.socket_path); cfg.socket_path = strdup(arg); break;
        case OPT_STATE_DIR:
                free(cfg.state_dir);
                cfg.state_dir = *arg ? strdup(arg) : NULL;
                cfg.state_dir_given = true;
                break;
        case OPT_FOREGROUND: cfg.foreground = true; break;
        case OPT_CONFIG: break;
        case OPT_MAX_SEGMENTS: lim->max_segments = v; break;
        case OPT_MAX_SEGMENTS_UID: lim->max_segments_per_uid = v; break;
        case OPT_MAX_BYTES: lim->max_bytes = v; break;
        case OPT_MAX_BYTES_UID: lim->max_bytes_per_uid = v; break;
        case OPT_MAX_CLIENTS: lim->max_clients = v; break;
        case OPT_MAX_CLIENTS_UID: lim->max_clients_per_uid = v; break;
        case OPT_MAX_MESSAGE: lim->max_message_size = v; break;
        case OPT_MAX_SEGMENT_SIZE: lim->max_segment_size = v; break;
        case OPT_MAX_ATTACH: lim->max_attach_per_client = v; break;
        case OPT_HANDSHAKE: cfg.handshake_timeout_ms = v; break;
        case OPT_SYNC: cfg.sync_interval_ms = v; break;
        case OPT_SOCKET_MODE: cfg.socket_mode = (unsigned) v; break;
        case OPT_LOG_LEVEL: cfg.log_level = (int) v; break;
        default: break;
        }
        return 0;
}

static int load_config(const char *path) {
        char line[4096], where[4200];
        unsigned lineno = 0;
        FILE *f = fopen(path, "re");
        int r = 0;

        if (!f) {
                fprintf(stderr, "msegd: cannot read config file %s: %s\n", path, strerror(errno));
                return -errno;
        }
        while (fgets(line, sizeof(line), f)) {
                char *k = line, *v, *e;
                int id = -1;

                lineno++;
                snprintf(where, sizeof(where), "%s:%u", path, lineno);
                if (!strchr(line, '\n') && !feof(f)) {
                        fprintf(stderr, "msegd: %s: line too long\n", where);
                        r = -EINVAL;
                        break;
                }
                while (*k == ' ' || *k == '\t')
                        k++;
                if (*k == '#' || *k == '\n' || *k == '\0')
                        continue;
                v = k + strcspn(k, " \t=");
                e = v;
                v += strspn(v, " \t");
                if (*v == '=')
                        v++;
                v += strspn(v, " \t");
                *e = '\0';
                for (e = v + strlen(v); e > v && (e[-1] == '\n' || e[-1] == ' ' || e[-1] == '\t'); e--)
                        e[-1] = '\0';
                for (int i = 0; i < OPT__END - OPT_SOCKET; i++)
                        if (strcmp(defs[i].name, k) == 0)
                                id = OPT_SOCKET + i;
                if (id < 0 || id == OPT_CONFIG || id == OPT_VERSION) {
                        fprintf(stderr, "msegd: %s: unknown key \"%s\"\n", where, k);
                        r = -EINVAL;
                        break;
                }
                if (defs[id - OPT_SOCKET].kind == K_FLAG) {
                        if (strcmp(v, "true") == 0 || strcmp(v, "yes") == 0 || strcmp(v, "1") == 0)
                                set_option(id, "", where);
                        else if (!(strcmp(v, "false") == 0 || strcmp(v, "no") == 0 || strcmp(v, "0") == 0)) {
                                fprintf(stderr, "msegd: %s: %s takes true or false\n", where, k);
                                r = -EINVAL;
                                break;
                        }
                        continue;
                }
                if (set_option(id, v, where) < 0) {
                        r = -EINVAL;
                        break;
                }
        }
        fclose(f);
        return r;
}

/* 0 to run, 1 to exit 0 (help, version), -1 for a usage error. */
static int parse_args(int argc, char **argv) {
        struct option longopts[OPT__END - OPT_SOCKET + 3];
        const char *config = NULL;
        int n = 0, c;

        for (int i = 0; i < OPT__END - OPT_SOCKET; i++)
                longopts[n++] = (struct option) { defs[i].name, defs[i].kind == K_FLAG ? no_argument : required_argument,
                                                  NULL, OPT_SOCKET + i };
        longopts[n++] = (struct option) { "help", no_argument, NULL, 'h' };
        longopts[n++] = (struct option) { "verbose", no_argument, NULL, 'v' };
        longopts[n] = (struct option) { 0 };

        /* First pass: only --config, so the command line can override it. */
        opterr = 0;
        while ((c = getopt_long(argc, argv, "hv", longopts, NULL)) != -1)
                if (c == OPT_CONFIG)
                        config = optarg;
        if (config && load_config(config) < 0)
                return -1;
        optind = 0;
        opterr = 1;
        while ((c = getopt_long(argc, argv, "hv", longopts, NULL)) != -1) {
                switch (c) {
                case 'h':
                        usage(stdout);
                        return 1;
                case 'v':
                        cfg.log_level = LOG_DEBUG;
                        break;
                case OPT_VERSION:
                        printf("msegd %s (protocol %u)\n", mseg_version(), MSEG_PROTO_VERSION);
                        return 1;
                case '?':
                        return -1;
                default:
                        if (set_option(c, optarg ? optarg : "", "command line") < 0)
                                return -1;
                        break;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "msegd: unexpected argument \"%s\"\n", argv[optind]);
                return -1;
        }
        return 0;
}

static void defaults(void) {
        long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);

        cfg.log_level = LOG_INFO;
        cfg.socket_mode = 0666;
        cfg.handshake_timeout_ms = 10000;
        cfg.sync_interval_ms = 30000;
        cfg.lim.max_segments = 4096;
        cfg.lim.max_segments_per_uid = 1024;
        cfg.lim.max_bytes = pages > 0 && psize > 0 ? (uint64_t) pages * (uint64_t) psize : UINT64_C(1) << 32;
        cfg.lim.max_bytes_per_uid = UINT64_MAX;         /* = max_bytes unless set */
        cfg.lim.max_clients = 4096;
        cfg.lim.max_clients_per_uid = UINT64_MAX;       /* = max_clients unless set */
        cfg.lim.max_message_size = MSEG_PROTO_MSG_MAX;
        cfg.lim.max_segment_size = UINT64_C(1) << 40;
        cfg.lim.max_attach_per_client = 16384;
}

/* A relative path, made absolute: without --foreground msegd changes to
 * "/" when it detaches. */
static int absolute(char **path) {
        char cwd[PATH_MAX], *abs;

        if (!*path || (*path)[0] == '/')
                return 0;
        if (!getcwd(cwd, sizeof(cwd)) || asprintf(&abs, "%s/%s", cwd, *path) < 0) {
                fprintf(stderr, "msegd: cannot make %s absolute: %s\n", *path, strerror(errno));
                return -errno;
        }
        free(*path);
        *path = abs;
        return 0;
}

static int check_config(void) {
        if (!cfg.socket_path)
                cfg.socket_path = strdup(DEFAULT_SOCKET);
        if (!cfg.state_dir_given)
                cfg.state_dir = strdup(DEFAULT_STATE_DIR);
        if (absolute(&cfg.socket_path) < 0 || absolute(&cfg.state_dir) < 0)
                return -EINVAL;
        if (cfg.lim.max_bytes_per_uid == UINT64_MAX)
                cfg.lim.max_bytes_per_uid = cfg.lim.max_bytes;
        if (cfg.lim.max_clients_per_uid == UINT64_MAX)
                cfg.lim.max_clients_per_uid = cfg.lim.max_clients;
        if (cfg.lim.max_message_size < MSEG_PROTO_MSG_MIN || cfg.lim.max_message_size > MSEG_PROTO_MSG_MAX) {
                fprintf(stderr, "msegd: max-message-size must be within %u..%u\n", MSEG_PROTO_MSG_MIN,
                        MSEG_PROTO_MSG_MAX);
                return -EINVAL;
        }
        if (cfg.lim.max_segment_size < MSEG_MIN_SIZE || cfg.lim.max_segment_size > MSEG_MAX_SIZE) {
                fprintf(stderr, "msegd: max-segment-size must be within %llu..%llu\n",
                        (unsigned long long) MSEG_MIN_SIZE, (unsigned long long) MSEG_MAX_SIZE);
                return -EINVAL;
        }
        if (cfg.handshake_timeout_ms == 0) {
                fprintf(stderr, "msegd: handshake-timeout must be positive\n");
                return -EINVAL;
        }
        return 0;
}

static void raise_nofile(void) {
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
                return;
        if (rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                setrlimit(RLIMIT_NOFILE, &rl);
        }
        if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < cfg.lim.max_clients + 64)
                log_warning("RLIMIT_NOFILE is %llu: fewer than max-clients (%llu) connections fit",
                            (unsigned long long) rl.rlim_cur, (unsigned long long) cfg.lim.max_clients);
}

static int bind_socket(const char *path, unsigned mode) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd, r, tries = 0;

        if (strlen(path) >= sizeof(sa.sun_path)) {
                log_error("socket path too long (at most %zu bytes): %s", sizeof(sa.sun_path) - 1, path);
                return -ENAMETOOLONG;
        }
        strcpy(sa.sun_path, path);
        fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
again:
        if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                r = -errno;
                if (r == -EADDRINUSE && tries++ == 0) {
                        /* A socket file: live (another msegd) or stale? */
                        int probe = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
                        if (probe >= 0 && connect(probe, (struct sockaddr *) &sa, sizeof(sa)) == 0) {
                                close(probe);
                                log_error("another msegd is listening at %s", path);
                                goto fail;
                        }
                        if (probe >= 0)
                                close(probe);
                        struct stat st;
                        if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) && unlink(path) == 0) {
                                log_notice("replaced stale socket %s", path);
                                goto again;
                        }
                }
                if (r == -ENOENT && tries++ == 0) {
                        char dir[sizeof(sa.sun_path)], *slash;
                        snprintf(dir, sizeof(dir), "%s", path);
                        slash = strrchr(dir, '/');
                        if (slash && slash != dir) {
                                *slash = '\0';
                                if (mkdir(dir, 0755) == 0)
                                        goto again;
                        }
                }
                log_error("cannot bind %s: %s", path, strerror(-r));
                goto fail;
        }
        socket_created = true;
        if (chmod(path, mode) < 0)
                log_warning("cannot chmod %s: %s", path, strerror(errno));
        /* listen() comes in server_start(), once the segments are loaded:
         * until then a client's connect() is refused, not left waiting. */
        return fd;
fail:
        close(fd);
        return r;
}

static void on_signal_closed(uv_handle_t *h) {
        (void) h;
}

static void on_signal(uv_signal_t *h, int signum) {
        (void) h;
        log_notice("%s received: shutting down (%llu segments, %llu connections)", strsignal(signum),
                   (unsigned long long) table.segments, (unsigned long long) server.nconns);
        shim_notify("STOPPING=1");
        notify_stop();
        server_stop(&server);
        persist_tick(&table);           /* connections are gone: saves what was attached */
        for (struct segment *s = table.all; s; s = s->lnext)
                if (s->persistent && s->dirty)
                        persist_save(&table, s);
        uv_signal_stop(&sig_term);
        uv_signal_stop(&sig_int);
        uv_close((uv_handle_t *) &sig_term, on_signal_closed);
        uv_close((uv_handle_t *) &sig_int, on_signal_closed);
}

static int prepare_state_dir(void) {
        if (!cfg.state_dir)
                return 0;
        if (mkdir(cfg.state_dir, 0700) < 0 && errno != EEXIST) {
                if (cfg.state_dir_given) {
                        log_error("cannot create state directory %s: %s", cfg.state_dir, strerror(errno));
                        return -errno;
                }
                log_notice("no state directory (%s: %s): persistent segments are disabled", cfg.state_dir,
                           strerror(errno));
                free(cfg.state_dir);
                cfg.state_dir = NULL;
                return 0;
        }
        if (access(cfg.state_dir, R_OK | W_OK | X_OK) < 0) {
                if (cfg.state_dir_given) {
                        log_error("state directory %s: %s", cfg.state_dir, strerror(errno));
                        return -errno;
                }
                log_notice("state directory %s not usable (%s): persistent segments are disabled",
                           cfg.state_dir, strerror(errno));
                free(cfg.state_dir);
                cfg.state_dir = NULL;
        }
        return 0;
}

/* Detach from the terminal; the first process exits once @ready_fd is
 * written (0) or closed without a byte (1). Returns the pipe's write end
 * in the daemon, -1 in foreground mode. */
static int detach(void) {
        int p[2];
        pid_t pid;
        char b;

        if (pipe2(p, O_CLOEXEC) < 0)
                return -1;
        pid = fork();
        if (pid < 0)
                return -1;
        if (pid > 0) {
                close(p[1]);
                _exit(read(p[0], &b, 1) == 1 ? 0 : 1);
        }
        close(p[0]);
        setsid();
        if (chdir("/") < 0)
                (void) 0;
        int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (nul >= 0) {
                dup2(nul, STDIN_FILENO);
                dup2(nul, STDOUT_FILENO);
                close(nul);
        }
        return p[1];
}

int main(int argc, char **argv) {
        uv_loop_t loop;
        int r, ready_fd = -1, status = 1;

        defaults();
        r = parse_args(argc, argv);
        if (r != 0)
                return r > 0 ? 0 : 2;
        if (check_config() < 0)
                return 2;
        log_init(cfg.log_level);
        signal(SIGPIPE, SIG_IGN);
        if (sodium_init() < 0) {
                log_error("libsodium failed to initialise");
                return 1;
        }
        raise_nofile();
        if (prepare_state_dir() < 0)
                return 1;
        if (!cfg.foreground && !shim_managed())
                ready_fd = detach();        /* a service manager tracks the process it started */
        /* After detaching: memory locks (the key's page) are not inherited
         * across fork(). */
        if (tokens_init(&cfg) < 0)
                return 1;

        r = uv_loop_init(&loop);
        if (r < 0) {
                log_error("uv_loop_init: %s", uv_strerror(r));
                return 1;
        }
        persist_init(&cfg);
        if (segtable_init(&table, &cfg, &loop) < 0)
                goto out_loop;

        listen_fd = shim_listen_fd();
        if (listen_fd < 0) {
                listen_fd = bind_socket(cfg.socket_path, cfg.socket_mode);
                if (listen_fd < 0)
                        goto out_table;
        } else {
                struct sockaddr_un sa;
                socklen_t len = sizeof(sa);
                int fl = fcntl(listen_fd, F_GETFL);
                char *path;

                if (fl >= 0 && !(fl & O_NONBLOCK))
                        fcntl(listen_fd, F_SETFL, fl | O_NONBLOCK);
                /* Log the path we really serve, not the default. */
                if (getsockname(listen_fd, (struct sockaddr *) &sa, &len) == 0 &&
                    len > offsetof(struct sockaddr_un, sun_path) && sa.sun_path[0] &&
                    (path = strndup(sa.sun_path, len - offsetof(struct sockaddr_un, sun_path)))) {
                        free(cfg.socket_path);
                        cfg.socket_path = path;
                }
        }
        r = fdstore_adopt(&table);      /* before the state files: the stored memfds are newer */
        if (r < 0)
                log_error("cannot adopt the stored segments: %s", strerror(-r));
        r = persist_load_all(&table);
        if (r < 0)
                log_error("cannot read state directory %s: %s", cfg.state_dir, strerror(-r));
        r = server_start(&server, &loop, &cfg, &table, listen_fd);
        if (r < 0) {
                log_error("cannot start serving: %s", r < -4095 ? "?" : strerror(-r));
                goto out_sock;
        }
        uv_signal_init(&loop, &sig_term);
        uv_signal_init(&loop, &sig_int);
        uv_signal_start(&sig_term, on_signal, SIGTERM);
        uv_signal_start(&sig_int, on_signal, SIGINT);

        log_notice("msegd %s listening on %s (pid %d, state dir %s, max %llu clients, %llu segments)",
                   mseg_version(), cfg.socket_path, (int) getpid(), cfg.state_dir ? cfg.state_dir : "none",
                   (unsigned long long) cfg.lim.max_clients, (unsigned long long) cfg.lim.max_segments);
        notify_start(&loop, &table, &server);
        shim_notify("READY=1");
        if (ready_fd >= 0) {
                (void) !write(ready_fd, "1", 1);
                close(ready_fd);
                ready_fd = -1;
        }

        uv_run(&loop, UV_RUN_DEFAULT);
        status = 0;
        notify_stop();
        server_stop(&server);   /* no-op after a signal; covers uv_run ending otherwise */
        uv_run(&loop, UV_RUN_DEFAULT);
out_sock:
        close(listen_fd);
        if (socket_created)
                unlink(cfg.socket_path);
out_table:
        segtable_done(&table);
out_loop:
        uv_run(&loop, UV_RUN_DEFAULT);
        r = uv_loop_close(&loop);
        if (r != 0) {
                log_error("event loop still has open handles at exit: %s", uv_strerror(r));
                status = 1;
        } else if (status == 0) {
                log_notice("clean shutdown");
        }
        tokens_done();
        free(cfg.socket_path);
        free(cfg.state_dir);
        return status;
}
