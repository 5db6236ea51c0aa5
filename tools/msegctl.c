/* SPDX-License-Identifier: MIT */
/*
 * msegctl — the command line for msegd's segments.
 *
 *   msegctl [--socket PATH] [--json] COMMAND [ARGS]
 *     list                       every segment: name, sizes, mode, owner, clients
 *     stat NAME                  one segment
 *     status                     msegd's use against its limits (and the caller's
 *                                uid's against the per-uid quotas)
 *     create NAME --size SIZE [--max-size SIZE] [--mode MODE] [--persistent]
 *                                create a segment (it stays until removed, unless
 *                                --remove-on-last-close, which removes it when
 *                                msegctl exits)
 *     remove NAME                remove the name (mappings in use stay valid)
 *     check NAME                 deep check of the segment's structures
 *     objects NAME               the named and unique objects: type, sizes, count
 *     grant NAME --read|--write [--ttl TTL]
 *                                a capability token for the segment (printed
 *                                alone on stdout); TTL takes s, m, h, d suffixes,
 *                                default 1h, at most 30d
 *     rotate-key                 a new token key: every token so far is void
 *   check and objects take --token TOKEN to open with a token.
 *
 * It goes through libmseg like any client (mseg_list, mseg_stat, mseg_open,
 * ...). Human output is a table on stdout; with --json, stdout gets exactly
 * one JSON document, also on failure ({"error": {"code", "message"}}).
 * Diagnostics go to stderr.
 *
 * Exit status: 0 success; 1 the operation failed (no such segment, refused,
 * msegd not running, check found damage, ...); 2 usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "internal.h"
#include "mseg.h"
#include "proto.h"

#define EXIT_USAGE 2

static bool json;
static struct mseg_options opts;

/* ------------------------------------------------------------ output */

/* A JSON string from arbitrary bytes: valid UTF-8 passes, each invalid byte
 * becomes \u00XX (so it reads as Latin-1). */
static void json_str(const char *s, size_t len) {
        const unsigned char *p = (const unsigned char *) s, *end = p + len;

        putchar('"');
        while (p < end) {
                unsigned c = *p;
                if (c == '"' || c == '\\') {
                        printf("\\%c", c);
                        p++;
                } else if (c < 0x20 || c == 0x7f) {
                        printf("\\u%04x", c);
                        p++;
                } else if (c < 0x80) {
                        putchar((int) c);
                        p++;
                } else {
                        size_t n = (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
                        if (n && (size_t) (end - p) >= n && mseg_proto_utf8_ok((const char *) p, n)) {
                                fwrite(p, 1, n, stdout);
                                p += n;
                        } else {
                                printf("\\u%04x", c);
                                p++;
                        }
                }
        }
        putchar('"');
}

static void json_cstr(const char *s) {
        json_str(s, strlen(s));
}

/* Text for a terminal: control characters escaped. */
static void text_str(const char *s, size_t len) {
        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char) s[i];
                if (c < 0x20 || c == 0x7f)
                        printf("\\x%02x", c);
                else
                        putchar(c);
        }
}

static const char *human(uint64_t v, char *buf, size_t cap) {
        static const char units[] = "BKMGTP";
        double d = (double) v;
        int u = 0;

        while (d >= 1024 && u < 5) {
                d /= 1024;
                u++;
        }
        if (u == 0)
                snprintf(buf, cap, "%" PRIu64, v);
        else
                snprintf(buf, cap, "%.1f%c", d, units[u]);
        return buf;
}

static int fail(int code, const char *what) {
        if (json) {
                printf("{\"error\":{\"code\":");
                json_cstr(mseg_proto_code_name(code));
                printf(",\"message\":");
                json_cstr(mseg_last_error());
                printf("}}\n");
        }
        fprintf(stderr, "msegctl: %s: %s (%s)\n", what, mseg_strerror(code), mseg_last_error());
        return EXIT_FAILURE;
}

static void print_info_json(const struct mseg_segment_info *i) {
        char hex[33];

        mseg_proto_id_to_hex(i->id, hex);
        printf("{\"name\":");
        json_cstr(i->name);
        printf(",\"id\":\"%s\",\"size\":%" PRIu64 ",\"max_size\":%" PRIu64 ",\"mode\":%u,\"uid\":%u,\"gid\":%u,"
               "\"persistent\":%s,\"remove_on_last_close\":%s,\"clients\":%u}",
               hex, i->size, i->max_size, i->mode, i->uid, i->gid, i->flags & MSEG_PERSISTENT ? "true" : "false",
               i->flags & MSEG_REMOVE_ON_LAST_CLOSE ? "true" : "false", i->clients);
}

static const char *flags_text(uint32_t f) {
        if (f & MSEG_PERSISTENT)
                return "persistent";
        if (f & MSEG_REMOVE_ON_LAST_CLOSE)
                return "remove-on-last-close";
        return "-";
}

/* ------------------------------------------------------------ commands */

struct list_state {
        unsigned n;
};

static int list_one(const struct mseg_segment_info *i, void *arg) {
        struct list_state *st = arg;
        char a[32], b[32];

        if (json) {
                if (st->n)
                        putchar(',');
                print_info_json(i);
        } else {
                if (st->n == 0)
                        printf("%-24s %10s %10s %5s %6s %6s %7s  %s\n", "NAME", "SIZE", "MAX", "MODE", "UID", "GID",
                               "CLIENTS", "FLAGS");
                text_str(i->name, strlen(i->name));
                printf("%*s %10s %10s %05o %6u %6u %7u  %s\n", (int) (strlen(i->name) < 24 ? 24 - strlen(i->name) : 0),
                       "", human(i->size, a, sizeof(a)), human(i->max_size, b, sizeof(b)), i->mode, i->uid, i->gid,
                       i->clients, flags_text(i->flags));
        }
        st->n++;
        return 0;
}

static int cmd_list(void) {
        struct list_state st = { 0 };
        int r;

        if (json)
                printf("{\"segments\":[");
        r = mseg_list(&opts, list_one, &st);
        if (r < 0) {
                if (json) {
                        /* Close the partial document: one document, with the error. */
                        printf("],\"error\":{\"code\":");
                        json_cstr(mseg_proto_code_name(r));
                        printf(",\"message\":");
                        json_cstr(mseg_last_error());
                        printf("}}\n");
                        json = false;
                }
                return fail(r, "list");
        }
        if (json)
                printf("]}\n");
        else if (st.n == 0)
                printf("no segments\n");
        return 0;
}

static int cmd_stat(const char *name) {
        struct mseg_segment_info i;
        char hex[33], a[32], b[32];
        int r;

        r = mseg_stat(name, &opts, &i);
        if (r < 0)
                return fail(r, name);
        if (json) {
                print_info_json(&i);
                putchar('\n');
                return 0;
        }
        mseg_proto_id_to_hex(i.id, hex);
        printf("name:     ");
        text_str(i.name, strlen(i.name));
        printf("\nid:       %s\nsize:     %" PRIu64 " (%s)\nmax size: %" PRIu64 " (%s)\nmode:     %04o\n"
               "owner:    uid %u gid %u\nclients:  %u\nflags:    %s\n",
               hex, i.size, human(i.size, a, sizeof(a)), i.max_size, human(i.max_size, b, sizeof(b)), i.mode, i.uid,
               i.gid, i.clients, flags_text(i.flags));
        return 0;
}

static int cmd_status(void) {
        struct mseg_proto_status s;
        char a[32], b[32], c[32];
        int r;

        r = mseg__broker_status(&opts, &s);
        if (r < 0)
                return fail(r, "status");
        if (json) {
                printf("{\"server\":");
                json_cstr(s.server);
                printf(",\"segments\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"clients\":%" PRIu64
                       ",\"uid_segments\":%" PRIu64 ",\"uid_bytes\":%" PRIu64 ",\"limits\":{\"max_segments\":%" PRIu64
                       ",\"max_segments_per_uid\":%" PRIu64 ",\"max_bytes\":%" PRIu64 ",\"max_bytes_per_uid\":%" PRIu64
                       ",\"max_clients\":%" PRIu64 ",\"max_message_size\":%" PRIu64 ",\"max_segment_size\":%" PRIu64
                       "}}\n",
                       s.segments, s.bytes, s.clients, s.uid_segments, s.uid_bytes, s.max_segments,
                       s.max_segments_per_uid, s.max_bytes, s.max_bytes_per_uid, s.max_clients, s.max_message_size,
                       s.max_segment_size);
                return 0;
        }
        printf("server:    %s\n", s.server);
        printf("segments:  %" PRIu64 " of %" PRIu64 " (yours %" PRIu64 " of %" PRIu64 ")\n", s.segments,
               s.max_segments, s.uid_segments, s.max_segments_per_uid);
        printf("bytes:     %s of %s (yours %s of ", human(s.bytes, a, sizeof(a)), human(s.max_bytes, b, sizeof(b)),
               human(s.uid_bytes, c, sizeof(c)));
        printf("%s)\n", human(s.max_bytes_per_uid, a, sizeof(a)));
        printf("clients:   %" PRIu64 " of %" PRIu64 "\n", s.clients, s.max_clients);
        printf("messages:  at most %" PRIu64 " bytes\nsegments:  at most %s each\n", s.max_message_size,
               human(s.max_segment_size, a, sizeof(a)));
        return 0;
}

static int cmd_create(const char *name) {
        struct mseg_segment_info i;
        mseg *seg;
        int r;

        r = mseg_open(&seg, name, MSEG_CREATE_ONLY, &opts);
        if (r < 0)
                return fail(r, name);
        mseg_close(seg);
        if (opts.flags & MSEG_REMOVE_ON_LAST_CLOSE) {
                if (json)
                        printf("{\"created\":null}\n");
                else
                        printf("created %s (removed again: it was remove-on-last-close)\n", name);
                return 0;
        }
        r = mseg_stat(name, &opts, &i);
        if (r < 0)
                return fail(r, name);
        if (json) {
                printf("{\"created\":");
                print_info_json(&i);
                printf("}\n");
        } else {
                printf("created ");
                text_str(name, strlen(name));
                printf(": %" PRIu64 " bytes (max %" PRIu64 "), mode %04o\n", i.size, i.max_size, i.mode);
        }
        return 0;
}

static int cmd_remove(const char *name) {
        int r = mseg_remove(name, &opts);

        if (r < 0)
                return fail(r, name);
        if (json) {
                printf("{\"removed\":");
                json_cstr(name);
                printf("}\n");
        } else {
                printf("removed ");
                text_str(name, strlen(name));
                putchar('\n');
        }
        return 0;
}

/* Open for inspection: read-write if allowed (a deep check may take the
 * segment's locks), read-only otherwise. */
static int open_existing(mseg **ret, const char *name, bool prefer_rw) {
        struct mseg_options o = opts;
        int r;

        o.size = o.max_size = 0;
        o.mode = 0;
        o.flags = prefer_rw ? 0 : MSEG_READ_ONLY;
        r = mseg_open(ret, name, MSEG_OPEN_ONLY, &o);
        if (r == -EACCES && prefer_rw) {
                o.flags = MSEG_READ_ONLY;
                r = mseg_open(ret, name, MSEG_OPEN_ONLY, &o);
        }
        return r;
}

static int cmd_check(const char *name) {
        mseg *seg;
        int r;

        r = open_existing(&seg, name, true);
        if (r < 0)
                return fail(r, name);
        r = mseg_check(seg);
        struct mseg_stats st;
        bool have_stats = r == 0 && mseg_stats(seg, &st) == 0;
        if (json) {
                printf("{\"name\":");
                json_cstr(name);
                printf(",\"ok\":%s,\"size\":%" PRIu64 ",\"free\":%" PRIu64 ",\"named\":%zu,\"unique\":%zu",
                       r == 0 ? "true" : "false", mseg_size(seg), r == 0 ? mseg_free_memory(seg) : 0,
                       r == 0 ? mseg_named_count(seg) : 0, r == 0 ? mseg_unique_count(seg) : 0);
                if (have_stats)
                        printf(",\"allocated\":%" PRIu64 ",\"allocated_blocks\":%" PRIu64 ",\"cached\":%" PRIu64
                               ",\"lock_repairs\":%" PRIu64 ",\"slots_live\":%u,\"slots_dead\":%u"
                               ",\"slots_reclaimed\":%" PRIu64 ",\"poisoned\":%s",
                               st.allocated_bytes, st.allocated_blocks, st.cached_bytes, st.lock_repairs,
                               st.slots_live, st.slots_dead, st.slots_reclaimed, st.poisoned ? "true" : "false");
                if (r < 0) {
                        printf(",\"error\":{\"code\":");
                        json_cstr(mseg_proto_code_name(r));
                        printf(",\"message\":");
                        json_cstr(mseg_last_error());
                        printf("}");
                }
                printf("}\n");
        } else if (r == 0) {
                char a[32], b[32];
                printf("segment ");
                text_str(name, strlen(name));
                printf(": ok (%s usable, %s free, %zu named, %zu unique objects)\n",
                       human(mseg_size(seg), a, sizeof(a)), human(mseg_free_memory(seg), b, sizeof(b)),
                       mseg_named_count(seg), mseg_unique_count(seg));
                /* What dead processes left: allocated bytes nobody may
                 * reference any more show up here, next to the repairs. */
                if (have_stats)
                        printf("  allocated %s in %" PRIu64 " blocks, %s in caches; %" PRIu64 " lock repairs, "
                               "%u live and %u dead attachments, %" PRIu64 " reclaimed\n",
                               human(st.allocated_bytes, a, sizeof(a)), st.allocated_blocks,
                               human(st.cached_bytes, b, sizeof(b)), st.lock_repairs, st.slots_live,
                               st.slots_dead, st.slots_reclaimed);
        } else {
                printf("segment ");
                text_str(name, strlen(name));
                printf(": DAMAGED: %s\n", mseg_last_error());
        }
        mseg_close(seg);
        return r == 0 ? 0 : EXIT_FAILURE;
}

struct objects_state {
        unsigned n;
};

static const char *kind_name(int k) {
        return k == MSEG_KIND_NAMED ? "named" : k == MSEG_KIND_UNIQUE ? "unique" : "anonymous";
}

static int object_one(const struct mseg_object_info *o, void *arg) {
        struct objects_state *st = arg;
        const char *name = o->name ? o->name : "";
        size_t name_len = o->name ? o->name_len : 0;

        if (json) {
                if (st->n)
                        putchar(',');
                printf("{\"name\":");
                json_str(name, name_len);
                printf(",\"kind\":\"%s\",\"type\":", kind_name(o->kind));
                json_cstr(o->type_name ? o->type_name : "");
                printf(",\"elem_size\":%zu,\"align\":%zu,\"count\":%zu,\"bytes\":%zu,\"handle\":%" PRIu64 "}",
                       o->elem_size, o->align, o->count, o->elem_size * o->count, (uint64_t) o->handle);
        } else {
                if (st->n == 0)
                        printf("%-8s %-24s %-20s %10s %10s %12s\n", "KIND", "NAME", "TYPE", "ELEM", "COUNT", "HANDLE");
                printf("%-8s ", kind_name(o->kind));
                text_str(name, name_len);
                printf("%*s ", (int) (name_len < 24 ? 24 - name_len : 0), "");
                text_str(o->type_name ? o->type_name : "", o->type_name ? strlen(o->type_name) : 0);
                printf("%*s %10zu %10zu %#12" PRIx64 "\n",
                       (int) (o->type_name && strlen(o->type_name) < 20 ? 20 - strlen(o->type_name) : 0), "",
                       o->elem_size, o->count, (uint64_t) o->handle);
        }
        st->n++;
        return 0;
}

static int cmd_objects(const char *name) {
        struct objects_state st = { 0 };
        mseg *seg;
        int r;

        r = open_existing(&seg, name, false);
        if (r < 0)
                return fail(r, name);
        if (json)
                printf("{\"objects\":[");
        r = mseg_foreach_named(seg, object_one, &st);
        if (r >= 0)
                r = mseg_foreach_unique(seg, object_one, &st);
        if (json) {
                printf("]");
                if (r < 0) {
                        printf(",\"error\":{\"code\":");
                        json_cstr(mseg_proto_code_name(r));
                        printf(",\"message\":");
                        json_cstr(mseg_last_error());
                        printf("}");
                }
                printf("}\n");
        } else if (st.n == 0 && r >= 0) {
                printf("no named or unique objects\n");
        }
        if (r < 0) {
                bool j = json;
                json = false;
                fail(r, name);
                json = j;
        }
        mseg_close(seg);
        return r < 0 ? EXIT_FAILURE : 0;
}

static int cmd_grant(const char *name, bool write, uint64_t ttl) {
        char token[MSEG_TOKEN_MAX + 1], when[64];
        uint64_t expires;
        time_t t;
        struct tm tm;
        int r;

        r = mseg_grant(name, write ? 0 : MSEG_READ_ONLY, ttl, &opts, token, sizeof(token), &expires);
        if (r < 0)
                return fail(r, name);
        t = (time_t) expires;
        if (!localtime_r(&t, &tm) || !strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S %Z", &tm))
                snprintf(when, sizeof(when), "%" PRIu64, expires);
        if (json) {
                printf("{\"name\":");
                json_cstr(name);
                printf(",\"rights\":\"%s\",\"expires\":%" PRIu64 ",\"token\":\"%s\"}\n", write ? "write" : "read",
                       expires, token);
        } else {
                printf("%s\n", token);
                fprintf(stderr, "msegctl: %s token for segment ", write ? "read-write" : "read-only");
                for (const char *p = name; *p; p++)
                        fputc((unsigned char) *p < 0x20 || *p == 0x7f ? '?' : *p, stderr);
                fprintf(stderr, ", valid until %s\n", when);
        }
        sodium_memzero(token, sizeof(token));
        return 0;
}

static int cmd_rotate_key(void) {
        uint32_t generation;
        int r;

        r = mseg__broker_rotate_key(&opts, &generation);
        if (r < 0)
                return fail(r, "rotate-key");
        if (json)
                printf("{\"generation\":%u}\n", generation);
        else
                printf("token key rotated: generation %u (every earlier token is void)\n", generation);
        return 0;
}

/* ------------------------------------------------------------ arguments */

static void usage(FILE *f) {
        fprintf(f,
                "Usage: msegctl [--socket PATH] [--json] COMMAND [ARGS]\n"
                "\n"
                "Commands:\n"
                "  list                    list every segment\n"
                "  stat NAME               describe one segment\n"
                "  status                  msegd's use against its limits, and your uid's\n"
                "  create NAME --size SIZE [--max-size SIZE] [--mode MODE] [--persistent]\n"
                "                          [--remove-on-last-close]\n"
                "                          create a segment\n"
                "  remove NAME             remove a segment's name (mappings stay valid)\n"
                "  check NAME              check the segment's structures\n"
                "  objects NAME            list its named and unique objects\n"
                "  grant NAME --read|--write [--ttl TTL]\n"
                "                          print a capability token for the segment\n"
                "  rotate-key              new token key: every token so far stops working\n"
                "\n"
                "Options:\n"
                "  --token TOKEN           check, objects: open with a capability token\n"
                "  --socket PATH           msegd's socket (default: $MSEG_SOCKET, else /run/msegd/socket)\n"
                "  --json                  one JSON document on stdout\n"
                "  -h, --help              this text\n"
                "  --version               print the version\n"
                "\n"
                "SIZE takes K, M, G, T suffixes (powers of 1024). TTL takes s, m, h, d\n"
                "suffixes (default 1h, at most 30d).\n"
                "Exit status: 0 success, 1 the operation failed, 2 usage error.\n");
}

/* A lifetime: N[s|m|h|d], 1 s .. 30 days. */
static int parse_ttl(const char *s, uint64_t *ret) {
        char *end;
        unsigned long long v;
        uint64_t unit = 1;

        if (*s < '0' || *s > '9')
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno)
                return -EINVAL;
        switch (*end) {
        case 's': unit = 1; end++; break;
        case 'm': unit = 60; end++; break;
        case 'h': unit = 3600; end++; break;
        case 'd': unit = 86400; end++; break;
        default: break;
        }
        if (*end || v == 0 || v > MSEG_TOKEN_TTL_MAX / unit)
                return -EINVAL;
        *ret = (uint64_t) v * unit;
        return 0;
}

enum { OPT_SOCKET = 256, OPT_JSON, OPT_SIZE, OPT_MAX_SIZE, OPT_MODE, OPT_PERSISTENT, OPT_AUTOREMOVE, OPT_VERSION,
       OPT_READ, OPT_WRITE, OPT_TTL, OPT_TOKEN };

int main(int argc, char **argv) {
        static const struct option longopts[] = {
                { "socket", required_argument, NULL, OPT_SOCKET },
                { "json", no_argument, NULL, OPT_JSON },
                { "size", required_argument, NULL, OPT_SIZE },
                { "max-size", required_argument, NULL, OPT_MAX_SIZE },
                { "mode", required_argument, NULL, OPT_MODE },
                { "persistent", no_argument, NULL, OPT_PERSISTENT },
                { "remove-on-last-close", no_argument, NULL, OPT_AUTOREMOVE },
                { "read", no_argument, NULL, OPT_READ },
                { "write", no_argument, NULL, OPT_WRITE },
                { "ttl", required_argument, NULL, OPT_TTL },
                { "token", required_argument, NULL, OPT_TOKEN },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, OPT_VERSION },
                { 0 },
        };
        bool create_opts = false, grant_read = false, grant_write = false, ttl_given = false;
        uint64_t ttl = 3600;
        const char *cmd, *name = NULL;
        int c;

        while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
                switch (c) {
                case OPT_SOCKET:
                        opts.socket_path = optarg;
                        break;
                case OPT_JSON:
                        json = true;
                        break;
                case OPT_SIZE:
                case OPT_MAX_SIZE:
                        if (mseg_proto_parse_size(optarg, c == OPT_SIZE ? &opts.size : &opts.max_size) < 0) {
                                fprintf(stderr, "msegctl: bad size \"%s\"\n", optarg);
                                return EXIT_USAGE;
                        }
                        create_opts = true;
                        break;
                case OPT_MODE: {
                        char *end;
                        unsigned long m;
                        errno = 0;
                        m = strtoul(optarg, &end, 8);
                        if (errno || *end || end == optarg || m > 0777) {
                                fprintf(stderr, "msegctl: bad mode \"%s\" (octal, at most 0777)\n", optarg);
                                return EXIT_USAGE;
                        }
                        opts.mode = (uint32_t) m;
                        create_opts = true;
                        break;
                }
                case OPT_PERSISTENT:
                        opts.flags |= MSEG_PERSISTENT;
                        create_opts = true;
                        break;
                case OPT_AUTOREMOVE:
                        opts.flags |= MSEG_REMOVE_ON_LAST_CLOSE;
                        create_opts = true;
                        break;
                case OPT_READ:
                        grant_read = true;
                        break;
                case OPT_WRITE:
                        grant_write = true;
                        break;
                case OPT_TTL:
                        if (parse_ttl(optarg, &ttl) < 0) {
                                fprintf(stderr, "msegctl: bad ttl \"%s\" (1s to 30d: N with s, m, h or d)\n", optarg);
                                return EXIT_USAGE;
                        }
                        ttl_given = true;
                        break;
                case OPT_TOKEN:
                        opts.token = optarg;
                        break;
                case 'h':
                        usage(stdout);
                        return 0;
                case OPT_VERSION:
                        printf("msegctl %s (protocol %u)\n", mseg_version(), MSEG_PROTO_VERSION);
                        return 0;
                default:
                        usage(stderr);
                        return EXIT_USAGE;
                }
        }
        if (optind >= argc) {
                usage(stderr);
                return EXIT_USAGE;
        }
        cmd = argv[optind++];
        if (optind < argc)
                name = argv[optind++];
        if (optind < argc) {
                fprintf(stderr, "msegctl: unexpected argument \"%s\"\n", argv[optind]);
                return EXIT_USAGE;
        }
        if (create_opts && strcmp(cmd, "create") != 0) {
                fprintf(stderr, "msegctl: --size, --max-size, --mode, --persistent and --remove-on-last-close "
                                "are for create\n");
                return EXIT_USAGE;
        }
        if ((grant_read || grant_write || ttl_given) && strcmp(cmd, "grant") != 0) {
                fprintf(stderr, "msegctl: --read, --write and --ttl are for grant\n");
                return EXIT_USAGE;
        }
        if (opts.token && strcmp(cmd, "check") != 0 && strcmp(cmd, "objects") != 0) {
                fprintf(stderr, "msegctl: --token is for check and objects\n");
                return EXIT_USAGE;
        }
        if (strcmp(cmd, "list") == 0 || strcmp(cmd, "status") == 0 || strcmp(cmd, "rotate-key") == 0) {
                if (name) {
                        fprintf(stderr, "msegctl: %s takes no argument\n", cmd);
                        return EXIT_USAGE;
                }
                return cmd[0] == 'l' ? cmd_list() : cmd[0] == 'r' ? cmd_rotate_key() : cmd_status();
        }
        if (strcmp(cmd, "stat") != 0 && strcmp(cmd, "create") != 0 && strcmp(cmd, "remove") != 0 &&
            strcmp(cmd, "check") != 0 && strcmp(cmd, "objects") != 0 && strcmp(cmd, "grant") != 0) {
                fprintf(stderr, "msegctl: unknown command \"%s\"\n", cmd);
                usage(stderr);
                return EXIT_USAGE;
        }
        if (!name) {
                fprintf(stderr, "msegctl: %s needs a segment name\n", cmd);
                return EXIT_USAGE;
        }
        if (strcmp(cmd, "stat") == 0)
                return cmd_stat(name);
        if (strcmp(cmd, "create") == 0) {
                if (!opts.size) {
                        fprintf(stderr, "msegctl: create needs --size\n");
                        return EXIT_USAGE;
                }
                return cmd_create(name);
        }
        if (strcmp(cmd, "remove") == 0)
                return cmd_remove(name);
        if (strcmp(cmd, "grant") == 0) {
                if (grant_read == grant_write) {
                        fprintf(stderr, "msegctl: grant needs one of --read and --write\n");
                        return EXIT_USAGE;
                }
                return cmd_grant(name, grant_write, ttl);
        }
        if (strcmp(cmd, "check") == 0)
                return cmd_check(name);
        return cmd_objects(name);
}
