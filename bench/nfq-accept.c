/* nfq-accept: the reference NFQUEUE consumer for labelgate's benchmark.
 *
 * A minimal accept-all loop on libnetfilter_queue, configured like
 * `labelgate run`: copy range 256 bytes, NFQA_CFG_F_UID_GID, NFQA_CFG_F_SECCTX
 * and NFQA_CFG_F_GSO set, fail-open off, queue length 8192 and a 16 MiB
 * receive buffer (SO_RCVBUFFORCE). One recv and one verdict per packet.
 *
 *   nfq-accept QUEUE SECONDS
 *
 * Runs at most SECONDS (or until SIGTERM/SIGINT), then prints
 * "nfq-accept: packets N" on stderr.
 *
 * Build: cc -O2 -o nfq-accept nfq-accept.c -lnetfilter_queue
 */
#include <arpa/inet.h>
#include <errno.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <linux/netfilter.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef NFQA_CFG_F_SECCTX
#define NFQA_CFG_F_SECCTX (1 << 4)
#endif

static volatile sig_atomic_t stop;
static unsigned long long packets;

static void on_signal(int sig) { (void)sig; stop = 1; }

static int cb(struct nfq_q_handle *qh, struct nfgenmsg *nfmsg, struct nfq_data *nfa, void *data) {
    (void)nfmsg;
    (void)data;
    struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
    if (!ph)
        return -1;
    packets++;
    return nfq_set_verdict(qh, ntohl(ph->packet_id), NF_ACCEPT, 0, NULL);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s QUEUE SECONDS\n", argv[0]);
        return 2;
    }
    int queue = atoi(argv[1]);
    int seconds = atoi(argv[2]);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGALRM, &sa, NULL);

    struct nfq_handle *h = nfq_open();
    if (!h) {
        perror("nfq_open");
        return 1;
    }
    struct nfq_q_handle *qh = nfq_create_queue(h, queue, cb, NULL);
    if (!qh) {
        perror("nfq_create_queue");
        return 1;
    }
    if (nfq_set_mode(qh, NFQNL_COPY_PACKET, 256) < 0) {
        perror("nfq_set_mode");
        return 1;
    }
    uint32_t flags = NFQA_CFG_F_UID_GID | NFQA_CFG_F_SECCTX | NFQA_CFG_F_GSO; /* NFQA_CFG_F_FAIL_OPEN off */
    if (nfq_set_queue_flags(qh, flags | NFQA_CFG_F_FAIL_OPEN, flags) < 0) {
        perror("nfq_set_queue_flags");
        return 1;
    }
    if (nfq_set_queue_maxlen(qh, 8192) < 0) {
        perror("nfq_set_queue_maxlen");
        return 1;
    }
    int fd = nfq_fd(h);
    int rcvbuf = 16 << 20;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0)
        perror("SO_RCVBUFFORCE");

    /* Poll the stop flag at least every 200 ms. */
    struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    alarm(seconds > 0 ? seconds : 1);
    fprintf(stderr, "nfq-accept: bound queue %d\n", queue);

    static char buf[65536] __attribute__((aligned));
    unsigned long long enobufs = 0;
    while (!stop) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n >= 0) {
            nfq_handle_packet(h, buf, (int)n);
            continue;
        }
        if (errno == ENOBUFS) {
            enobufs++;
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            continue;
        perror("recv");
        break;
    }
    /* Answer what is still waiting before unbinding, so nothing is dropped. */
    tv.tv_usec = 50000;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0)
            break;
        nfq_handle_packet(h, buf, (int)n);
    }
    nfq_destroy_queue(qh);
    nfq_close(h);
    fprintf(stderr, "nfq-accept: packets %llu enobufs %llu\n", packets, enobufs);
    return 0;
}
