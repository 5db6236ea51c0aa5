/* SPDX-License-Identifier: MIT */
/*
 * fdpass.c — one SOCK_SEQPACKET packet per call, with descriptors riding
 * along as SCM_RIGHTS (linux-facts.md section 1.3).
 *
 * Receiving is where the traps are:
 *   - every descriptor arrives close-on-exec (MSG_CMSG_CLOEXEC), so a fork
 *     and exec in the receiver never leaks one;
 *   - a packet longer than the buffer is cut by the kernel and the rest is
 *     gone (MSG_TRUNC): the caller must treat the stream as broken;
 *   - descriptors that do not fit the control buffer are closed by the
 *     kernel (MSG_CTRUNC); the ones that did fit are closed here;
 *   - descriptors nobody asked for are closed here, so a peer cannot fill
 *     our descriptor table by attaching them to every packet.
 * A zero-length packet reads exactly like end of stream, which is why the
 * protocol forbids empty messages.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "proto.h"

int mseg_proto_send(int sock, const void *buf, size_t len, int fd, int flags) {
        union {
                struct cmsghdr h;
                char space[CMSG_SPACE(sizeof(int))];
        } ctl;
        struct iovec iov = { .iov_base = (void *) buf, .iov_len = len };
        struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
        ssize_t n;

        if (len == 0)
                return -EINVAL;
        if (fd >= 0) {
                memset(&ctl, 0, sizeof(ctl));
                m.msg_control = ctl.space;
                m.msg_controllen = sizeof(ctl.space);
                struct cmsghdr *c = CMSG_FIRSTHDR(&m);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int));
                memcpy(CMSG_DATA(c), &fd, sizeof(int));
        }
        do
                n = sendmsg(sock, &m, MSG_NOSIGNAL | flags);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;
        return 0;
}

ssize_t mseg_proto_recv(int sock, void *buf, size_t cap, int *ret_fd, unsigned *ret_nfds, int flags) {
        union {
                struct cmsghdr h;
                char space[CMSG_SPACE(sizeof(int) * MSEG_PROTO_FDS_MAX)];
        } ctl;
        struct iovec iov = { .iov_base = buf, .iov_len = cap };
        struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1,
                            .msg_control = ctl.space, .msg_controllen = sizeof(ctl.space) };
        unsigned nfds = 0;
        int first = -1;
        ssize_t n;

        if (ret_fd)
                *ret_fd = -1;
        if (ret_nfds)
                *ret_nfds = 0;
        do
                n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC | flags);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;

        for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                        continue;
                size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (size_t i = 0; i < k; i++) {
                        int fd;
                        memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                        nfds++;
                        if (first < 0 && ret_fd)
                                first = fd;
                        else
                                close(fd);
                }
        }
        if (ret_nfds)
                *ret_nfds = nfds;
        if (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
                if (first >= 0)
                        close(first);
                return (m.msg_flags & MSG_TRUNC) ? -EMSGSIZE : -EBADMSG;
        }
        if (ret_fd)
                *ret_fd = first;
        return n;
}
