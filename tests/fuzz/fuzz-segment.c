/* SPDX-License-Identifier: MIT */
/*
 * fuzz-segment — any bytes as a segment image: attach, check, find, allocate
 * and free must return errors, never crash, hang or touch memory outside
 * the image. The input is copied into a page-aligned buffer; short inputs
 * are expanded to a minimum-size segment (input bytes over a zeroed or
 * freshly formatted image), so the fuzzer reaches past the header checks:
 * the first byte of the input chooses how.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

#define IMG (512u * 1024)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static uint8_t *buf, *pristine;
        mseg *seg;
        size_t count;

        if (!buf) {
                /* Scribbled lock words look held: give up on them quickly. */
                setenv("MSEG_LOCK_TIMEOUT_MS", "20", 1);
                buf = mmap(NULL, IMG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                pristine = mmap(NULL, IMG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (buf == MAP_FAILED || pristine == MAP_FAILED)
                        abort();
                /* A valid image with objects, for mode 1 to mutate. */
                if (mseg_buffer_create(&seg, pristine, IMG) < 0)
                        abort();
                for (int i = 0; i < 40; i++) {
                        char name[16];
                        snprintf(name, sizeof(name), "obj%d", i);
                        if (!mseg_construct(seg, name, MSEG_TYPE(uint64_t), (size_t) i + 1, NULL, NULL))
                                abort();
                        if (!mseg_alloc(seg, (size_t) (16 + i * 97)))
                                abort();
                }
                mseg_close(seg);
        }
        if (size == 0)
                return 0;
        uint8_t mode = data[0] % 3;
        data++;
        size--;
        switch (mode) {
        case 0:                 /* raw bytes as the whole image */
                memset(buf, 0, IMG);
                memcpy(buf, data, size < IMG ? size : IMG);
                break;
        case 1:                 /* patches over a valid image: (offset16, byte) pairs, scaled */
                memcpy(buf, pristine, IMG);
                for (size_t i = 0; i + 3 <= size; i += 3) {
                        size_t off = ((size_t) data[i] << 8 | data[i + 1]) * (IMG / 65536);
                        buf[off % IMG] = data[i + 2];
                }
                break;
        default:                /* bytes written over the valid image after its header */
                memcpy(buf, pristine, IMG);
                memcpy(buf + MSEG_HEADER_SIZE, data, size < IMG - MSEG_HEADER_SIZE ? size : IMG - MSEG_HEADER_SIZE);
                break;
        }
        if (mseg_buffer_attach(&seg, buf, IMG) < 0)
                return 0;
        if (mseg_check(seg) < 0) { /* expected for damaged images */ }
        (void) mseg_find(seg, "obj3", MSEG_TYPE(uint64_t), &count);
        (void) mseg_find(seg, "missing", MSEG_TYPE(uint64_t), &count);
        void *p = mseg_alloc(seg, 100);
        void *q = mseg_alloc(seg, 20000);
        (void) mseg_free(seg, p);
        (void) mseg_free(seg, q);
        (void) mseg_destroy(seg, "obj5", MSEG_TYPE(uint64_t));
        (void) mseg_free_memory(seg);
        mseg_close(seg);
        return 0;
}
