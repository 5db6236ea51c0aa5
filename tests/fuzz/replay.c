/* SPDX-License-Identifier: MIT */
/*
 * replay.c — runs a libFuzzer target over its corpus without libFuzzer, so
 * every build (gcc, ASan) replays the seeds and the regression cases of
 * crashes found earlier. Arguments: files or directories.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path) {
        FILE *f = fopen(path, "rb");
        uint8_t *buf;
        long n;

        if (!f)
                return 0;
        fseek(f, 0, SEEK_END);
        n = ftell(f);
        fseek(f, 0, SEEK_SET);
        buf = malloc(n > 0 ? (size_t) n : 1);
        if (!buf || (n > 0 && fread(buf, 1, (size_t) n, f) != (size_t) n)) {
                fclose(f);
                free(buf);
                return -1;
        }
        fclose(f);
        LLVMFuzzerTestOneInput(buf, (size_t) n);
        free(buf);
        return 1;
}

int main(int argc, char **argv) {
        int files = 0;

        for (int i = 1; i < argc; i++) {
                struct stat st;
                if (stat(argv[i], &st) < 0)
                        continue;
                if (!S_ISDIR(st.st_mode)) {
                        files += run_file(argv[i]) > 0;
                        continue;
                }
                DIR *d = opendir(argv[i]);
                struct dirent *e;
                while (d && (e = readdir(d))) {
                        char p[4096];
                        if (e->d_name[0] == '.')
                                continue;
                        snprintf(p, sizeof(p), "%s/%s", argv[i], e->d_name);
                        files += run_file(p) > 0;
                }
                if (d)
                        closedir(d);
        }
        /* A few built-in inputs so an empty corpus still exercises the target. */
        static const uint8_t zero[64];
        LLVMFuzzerTestOneInput(zero, 0);
        LLVMFuzzerTestOneInput(zero, sizeof(zero));
        printf("replayed %d corpus files\n", files);
        return 0;
}
