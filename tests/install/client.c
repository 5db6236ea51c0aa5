/* SPDX-License-Identifier: MIT */
/* An out-of-tree program built against the installed mseg.h and mseg.pc
 * (scripts/check-install.sh): public API only. */
#include <mseg.h>
#include <stdio.h>
#include <string.h>

int main(void) {
        mseg *seg;
        int r = mseg_heap_create(&seg, 1 << 20);

        if (r < 0) {
                fprintf(stderr, "mseg_heap_create: %s\n", mseg_strerror(r));
                return 1;
        }
        char *s = mseg_construct(seg, "greeting", MSEG_TYPE(char), 32, NULL, NULL);
        if (!s)
                return 1;
        strcpy(s, "installed");
        size_t n;
        char *t = mseg_find(seg, "greeting", MSEG_TYPE(char), &n);
        if (t != s || n != 32 || mseg_check(seg) != 0)
                return 1;
        printf("libmseg %s from the installed tree: %s\n", mseg_version(), t);
        mseg_close(seg);
        return 0;
}
