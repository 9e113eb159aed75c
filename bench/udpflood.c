/* udpflood: bounded UDP load for labelgate's benchmark (loopback or
 * 198.18.0.0/15 only; the caller picks the address).
 *
 *   udpflood send DST PORT COUNT SECONDS [PPS [NPORTS [NADDRS [SIZE]]]]
 *       Send at most COUNT datagrams within SECONDS with sendmmsg (batches
 *       of 64), paced to PPS when PPS > 0. Destination ports cycle over
 *       PORT..PORT+NPORTS-1 and addresses over NADDRS consecutive IPv4
 *       addresses from DST (distinct flows). SIZE is the IP packet size
 *       (default 64: 20 IP + 8 UDP + 36 payload bytes).
 *       Prints "sent N errors E seconds S".
 *   udpflood sink ADDR PORT IDLE SECONDS
 *       Count datagrams (recvmmsg) until IDLE seconds pass without one after
 *       the first, or SECONDS in all. Prints "received N seconds S" (first
 *       to last datagram).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int do_send(int argc, char **argv) {
    if (argc < 6)
        return 2;
    struct in_addr base;
    if (inet_pton(AF_INET, argv[2], &base) != 1) {
        fprintf(stderr, "bad address %s\n", argv[2]);
        return 2;
    }
    int port = atoi(argv[3]);
    long long count = atoll(argv[4]);
    double seconds = atof(argv[5]);
    double pps = argc > 6 ? atof(argv[6]) : 0;
    int nports = argc > 7 ? atoi(argv[7]) : 1;
    int naddrs = argc > 8 ? atoi(argv[8]) : 1;
    int size = argc > 9 ? atoi(argv[9]) : 64;
    if (nports < 1) nports = 1;
    if (naddrs < 1) naddrs = 1;
    if (size < 28) size = 28;
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0) {
        perror("socket");
        return 1;
    }
    int sndbuf = 4 << 20;
    setsockopt(s, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof sndbuf);
    static char payload[65536];
    memset(payload, 'x', sizeof payload);
    struct sockaddr_in dst[BATCH];
    struct iovec iov[BATCH];
    struct mmsghdr msgs[BATCH];
    memset(msgs, 0, sizeof msgs);
    long long sent = 0, errors = 0, seq = 0;
    double start = now(), end = start + seconds;
    while (sent < count) {
        double t = now();
        if (t >= end)
            break;
        if (pps > 0) {
            double due = start + sent / pps;
            if (due > t) {
                double d = due - t;
                struct timespec ts = {(time_t)d, (long)((d - (time_t)d) * 1e9)};
                nanosleep(&ts, NULL);
            }
        }
        int n = BATCH;
        if (count - sent < n)
            n = (int)(count - sent);
        for (int i = 0; i < n; i++) {
            long long k = seq + i;
            dst[i].sin_family = AF_INET;
            dst[i].sin_port = htons((uint16_t)(port + k % nports));
            dst[i].sin_addr.s_addr = htonl(ntohl(base.s_addr) + (uint32_t)((k / nports) % naddrs));
            iov[i].iov_base = payload;
            iov[i].iov_len = (size_t)(size - 28);
            msgs[i].msg_hdr.msg_name = &dst[i];
            msgs[i].msg_hdr.msg_namelen = sizeof dst[i];
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int r = sendmmsg(s, msgs, (unsigned)n, 0);
        if (r < 0) {
            /* A dropped packet (queue full, fail-closed) or no buffer: count and skip it. */
            errors++;
            sent++;
            seq++;
            continue;
        }
        sent += r;
        seq += r;
    }
    printf("sent %lld errors %lld seconds %.6f\n", sent - errors, errors, now() - start);
    return 0;
}

static int do_sink(int argc, char **argv) {
    if (argc < 6)
        return 2;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[3]))};
    if (inet_pton(AF_INET, argv[2], &a.sin_addr) != 1)
        return 2;
    double idle = atof(argv[4]), seconds = atof(argv[5]);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    int rcvbuf = 256 << 20;
    setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf);
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) {
        perror("bind");
        return 1;
    }
    struct timeval tv = {0, 100000};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    printf("ready\n");
    fflush(stdout);
    static char bufs[BATCH][2048];
    struct iovec iov[BATCH];
    struct mmsghdr msgs[BATCH];
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = sizeof bufs[i];
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    long long got = 0;
    double start = now(), first = 0, last = 0;
    while (now() - start < seconds) {
        int r = recvmmsg(s, msgs, BATCH, 0, NULL);
        double t = now();
        if (r > 0) {
            if (got == 0)
                first = t;
            got += r;
            last = t;
        } else if (got > 0 && t - last > idle) {
            break;
        }
    }
    printf("received %lld seconds %.6f\n", got, got ? last - first : 0.0);
    return 0;
}

int main(int argc, char **argv) {
    int rc = 2;
    if (argc > 1 && !strcmp(argv[1], "send"))
        rc = do_send(argc, argv);
    else if (argc > 1 && !strcmp(argv[1], "sink"))
        rc = do_sink(argc, argv);
    if (rc == 2)
        fprintf(stderr, "usage: udpflood send DST PORT COUNT SECONDS [PPS [NPORTS [NADDRS [SIZE]]]]\n"
                        "       udpflood sink ADDR PORT IDLE SECONDS\n");
    return rc;
}
