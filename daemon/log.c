/* SPDX-License-Identifier: MIT */
/*
 * log.c — msegd's log: one line per message on stderr.
 *
 * When stderr is connected to the journal, each line starts with a "<N>"
 * syslog priority that journald turns into the entry's level, and carries no
 * timestamp (journald adds its own). Whether stderr is the journal is
 * decided as systemd.exec(5) says: $JOURNAL_STREAM holds "dev:ino" of the
 * stream systemd connected, and it must match fstat(2) of our stderr (a
 * child of a logged service inherits the variable with another stderr, so
 * its mere presence proves nothing). Otherwise lines are plain, with a
 * timestamp, for a terminal or a test log.
 *
 * Messages may carry client-chosen text (segment names): log_quote()
 * escapes it so a name cannot forge a log line or smuggle escape
 * sequences, and a global token bucket keeps client-triggered messages from
 * flooding the log (log_client()).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "msegd.h"

static int max_level = LOG_INFO;
static bool journal;
static uint64_t bucket_ms;      /* token bucket: time the bucket is "full" at */
static unsigned suppressed;

static const char *const level_names[8] = {
        "emerg", "alert", "crit", "error", "warning", "notice", "info", "debug",
};

static bool stderr_is_journal(void) {
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
                return false;
        if (fstat(STDERR_FILENO, &st) < 0)
                return false;
        return (unsigned long long) st.st_dev == dev && (unsigned long long) st.st_ino == ino;
}

void log_init(int level) {
        max_level = level;
        journal = stderr_is_journal();
}

void log_set_level(int level) {
        max_level = level;
}

int log_level_from_name(const char *s) {
        for (int i = 0; i < 8; i++)
                if (strcmp(s, level_names[i]) == 0)
                        return i;
        if (strcmp(s, "err") == 0)
                return LOG_ERR;
        if (strcmp(s, "warn") == 0)
                return LOG_WARNING;
        return -1;
}

static void emit(int level, const char *fmt, va_list ap) {
        char line[1024];
        int n = 0;

        if (journal) {
                n = snprintf(line, sizeof(line), "<%d>", level);
        } else {
                struct timespec ts;
                struct tm tm;
                clock_gettime(CLOCK_REALTIME, &ts);
                localtime_r(&ts.tv_sec, &tm);
                n = (int) strftime(line, sizeof(line), "%Y-%m-%d %H:%M:%S", &tm);
                n += snprintf(line + n, sizeof(line) - (size_t) n, ".%03ld msegd[%d] %s: ",
                              ts.tv_nsec / 1000000, (int) getpid(), level_names[level & 7]);
        }
        vsnprintf(line + n, sizeof(line) - (size_t) n, fmt, ap);
        /* One message, one line: journald loses the level of continuation lines. */
        for (char *p = line + n; *p; p++)
                if (*p == '\n' || *p == '\r')
                        *p = ' ';
        fprintf(stderr, "%s\n", line);
}

void log_msg(int level, const char *fmt, ...) {
        va_list ap;

        if (level > max_level)
                return;
        va_start(ap, fmt);
        emit(level, fmt, ap);
        va_end(ap);
}

/* At most 20 client-triggered lines per second, bursts of 100. */
void log_client(int level, const char *fmt, ...) {
        uint64_t now = now_ms(), cost = 50, burst = 100 * 50;
        va_list ap;

        if (level > max_level)
                return;
        if (bucket_ms + burst < now)
                bucket_ms = now - burst;        /* credit is capped at one burst */
        if (bucket_ms >= now) {
                suppressed++;
                return;
        }
        bucket_ms += cost;
        if (suppressed) {
                log_msg(LOG_WARNING, "%u client messages suppressed (rate limit)", suppressed);
                suppressed = 0;
        }
        va_start(ap, fmt);
        emit(level, fmt, ap);
        va_end(ap);
}

const char *log_quote(const char *s, char *buf, size_t cap) {
        size_t o = 0;

        if (cap < 8)
                return "";
        buf[o++] = '"';
        for (; *s && o + 6 < cap; s++) {
                unsigned char c = (unsigned char) *s;
                if (c == '"' || c == '\\') {
                        buf[o++] = '\\';
                        buf[o++] = (char) c;
                } else if (c < 0x20 || c == 0x7f) {
                        o += (size_t) snprintf(buf + o, cap - o, "\\x%02x", c);
                } else {
                        buf[o++] = (char) c;
                }
        }
        if (*s && o + 4 < cap) {
                memcpy(buf + o, "...", 3);
                o += 3;
        }
        buf[o++] = '"';
        buf[o] = '\0';
        return buf;
}

uint64_t now_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}
