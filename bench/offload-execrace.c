/* The exec race of labelgate run --offload (docs/OFFLOAD.md), measured.
 *
 *   offload-execrace QUEUE PORT NEXT
 *
 * Connects to 127.0.0.1:PORT until a connection is accepted without being
 * queued (the offload element is in; at most 40 tries), then execs NEXT
 * (another path to this binary) as `NEXT QUEUE PORT`, which connects at
 * once and prints `ok|fail QUEUED`: "ok 0" is a connection let through by
 * the element before labelgate removed it. Loopback only, bounded.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static long seq(const char *queue) {
    FILE *f = fopen("/proc/net/netfilter/nfnetlink_queue", "r");
    char line[256];
    long v = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f)) {
        char q[32];
        long a, b, c, d, e, g, h;
        if (sscanf(line, "%31s %ld %ld %ld %ld %ld %ld %ld", q, &a, &b, &c, &d, &e, &g, &h) == 8 && !strcmp(q, queue))
            v = h;
    }
    fclose(f);
    return v;
}

static int conn(int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {1, 0};
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    int ok;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    ok = connect(s, (struct sockaddr *)&a, sizeof a) == 0;
    close(s);
    return ok;
}

int main(int argc, char **argv) {
    int port;
    if (argc < 3)
        return 2;
    port = atoi(argv[2]);
    if (argc == 3) {
        long before = seq(argv[1]);
        int ok = conn(port);
        printf("%s %ld\n", ok ? "ok" : "fail", seq(argv[1]) - before);
        return 0;
    }
    for (int i = 0; i < 40; i++) {
        long before = seq(argv[1]);
        int ok = conn(port);
        if (ok && seq(argv[1]) == before) {
            execl(argv[3], argv[3], argv[1], argv[2], (char *)NULL);
            return 3;
        }
        usleep(50000);
    }
    printf("noelement\n");
    return 0;
}
