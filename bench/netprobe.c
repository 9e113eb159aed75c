/* netprobe: bounded connection and latency probes for labelgate's benchmark.
 *
 *   netprobe tcp-serve ADDR PORT SECONDS [ACCEPTORS]
 *       Accept and close connections until SECONDS pass: ACCEPTORS processes
 *       (default 1, at most 256) accept from the one listening socket, so
 *       that many concurrent clients on the same CPU do not starve a lone
 *       acceptor and overflow its accept queue.
 *   netprobe tcp-connect ADDR PORT COUNT SECONDS [CLIENTS]
 *       Open and close (RST, so no TIME_WAIT) at most COUNT connections
 *       within SECONDS: CLIENTS processes (default 1, at most 256) each
 *       connect one at a time, COUNT/CLIENTS connections each. Prints
 *       "conns N errors E seconds S p50_us X p99_us Y clients C" (connect()
 *       latency: SYN to established, over all clients).
 *   netprobe udp-echo ADDR PORT SECONDS
 *       Echo datagrams until SECONDS pass.
 *   netprobe udp-ping ADDR PORT COUNT SECONDS
 *       Send a 64-byte request and wait for its echo, at most COUNT times
 *       within SECONDS (timeout 200 ms each). Prints "replies N lost L
 *       p50_us X p99_us Y".
 *   netprobe hold NPROC NSOCK SECONDS
 *       Fork NPROC processes that each hold NSOCK sockets (half UDP bound
 *       to 127.0.0.1:0, half TCP listening on 127.0.0.1:0) for SECONDS,
 *       print "ready" when all hold them; they die with this process.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static struct sockaddr_in addr(const char *ip, const char *port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port))};
    if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) {
        fprintf(stderr, "bad address %s\n", ip);
        exit(2);
    }
    return a;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(double *v, long n, double p) {
    if (n == 0)
        return 0;
    long i = (long)(p * (double)(n - 1) + 0.5);
    return v[i];
}

static void timeout(int s, long usec) {
    struct timeval tv = {usec / 1000000, usec % 1000000};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static int tcp_serve(int argc, char **argv) {
    struct sockaddr_in a = addr(argv[2], argv[3]);
    double end = now() + atof(argv[4]);
    long acceptors = argc > 5 ? atol(argv[5]) : 1;
    if (acceptors < 1 || acceptors > 256) {
        fprintf(stderr, "tcp-serve: ACCEPTORS in 1..256\n");
        return 2;
    }
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0 || listen(s, 4096) < 0) {
        perror("tcp-serve");
        return 1;
    }
    timeout(s, 200000);
    int child = 0;
    for (long i = 1; i < acceptors && !child; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("tcp-serve: fork");
            return 1;
        }
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            child = 1;
        }
    }
    if (!child) {
        printf("ready\n");
        fflush(stdout);
    }
    while (now() < end) {
        int c = accept(s, NULL, NULL);
        if (c >= 0)
            close(c);
    }
    if (child)
        _exit(0);
    while (wait(NULL) > 0 || errno == EINTR)
        ;
    return 0;
}

/* One client's loop: at most count connections until end; latencies (us)
 * into lat, returns the connections made and adds failures to *errors. */
static long connect_loop(const struct sockaddr_in *a, long count, double end, double *lat, long *errors) {
    long n = 0;
    struct linger lg = {1, 0};
    while (n < count && now() < end) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0) {
            (*errors)++;
            if (*errors > 1000)
                break;
            continue;
        }
        timeout(s, 1000000);
        double t = now();
        int r = connect(s, (const struct sockaddr *)a, sizeof *a);
        double d = now() - t;
        if (r == 0)
            lat[n++] = d * 1e6;
        else
            (*errors)++;
        setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(s);
        if (*errors > 1000)
            break;
    }
    return n;
}

static int tcp_connect(int argc, char **argv) {
    struct sockaddr_in a = addr(argv[2], argv[3]);
    long count = atol(argv[4]);
    long clients = argc > 6 ? atol(argv[6]) : 1;
    if (count < 1 || clients < 1 || clients > 256) {
        fprintf(stderr, "tcp-connect: COUNT >= 1 and CLIENTS in 1..256\n");
        return 2;
    }
    long per = (count + clients - 1) / clients;
    /* Shared with the children: per client its connections, errors and
     * latencies (a slice of per entries each). */
    size_t len = (size_t)clients * (2 * sizeof(long) + (size_t)per * sizeof(double));
    char *shm = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shm == MAP_FAILED) {
        perror("tcp-connect: mmap");
        return 1;
    }
    long *made = (long *)shm, *errs = made + clients;
    double *lat = (double *)(errs + clients);
    double start = now(), end = start + atof(argv[5]);
    if (clients == 1) {
        made[0] = connect_loop(&a, count, end, lat, &errs[0]);
    } else {
        for (long c = 0; c < clients; c++) {
            pid_t pid = fork();
            if (pid < 0) {
                perror("tcp-connect: fork");
                return 1;
            }
            if (pid == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                made[c] = connect_loop(&a, per, end, lat + c * per, &errs[c]);
                _exit(0);
            }
        }
        while (wait(NULL) > 0 || errno == EINTR)
            ;
    }
    double el = now() - start;
    /* Gather every client's latencies at the front, then sort them all. */
    long n = 0, errors = 0;
    for (long c = 0; c < clients; c++) {
        memmove(lat + n, lat + c * per, (size_t)made[c] * sizeof *lat);
        n += made[c];
        errors += errs[c];
    }
    qsort(lat, (size_t)n, sizeof *lat, cmp);
    printf("conns %ld errors %ld seconds %.6f p50_us %.1f p99_us %.1f clients %ld\n", n, errors, el,
           pct(lat, n, 0.5), pct(lat, n, 0.99), clients);
    return 0;
}

static int udp_echo(char **argv) {
    struct sockaddr_in a = addr(argv[2], argv[3]);
    double end = now() + atof(argv[4]);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) {
        perror("udp-echo");
        return 1;
    }
    timeout(s, 200000);
    printf("ready\n");
    fflush(stdout);
    char buf[2048];
    while (now() < end) {
        struct sockaddr_in peer;
        socklen_t pl = sizeof peer;
        ssize_t r = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&peer, &pl);
        if (r >= 0)
            sendto(s, buf, (size_t)r, 0, (struct sockaddr *)&peer, pl);
    }
    return 0;
}

static int udp_ping(char **argv) {
    struct sockaddr_in a = addr(argv[2], argv[3]);
    long count = atol(argv[4]);
    double end = now() + atof(argv[5]);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) {
        perror("udp-ping");
        return 1;
    }
    timeout(s, 200000);
    double *lat = calloc((size_t)count, sizeof *lat);
    long n = 0, lost = 0;
    char buf[2048], req[36];
    memset(req, 'q', sizeof req);
    for (long i = 0; i < count && now() < end; i++) {
        double t = now();
        if (send(s, req, sizeof req, 0) < 0 || recv(s, buf, sizeof buf, 0) < 0) {
            lost++;
            continue;
        }
        lat[n++] = (now() - t) * 1e6;
    }
    qsort(lat, (size_t)n, sizeof *lat, cmp);
    printf("replies %ld lost %ld p50_us %.1f p99_us %.1f\n", n, lost, pct(lat, n, 0.5), pct(lat, n, 0.99));
    return 0;
}

static int hold(char **argv) {
    int nproc = atoi(argv[2]), nsock = atoi(argv[3]);
    int seconds = atoi(argv[4]);
    int pipefd[2];
    if (pipe(pipefd) < 0)
        return 1;
    pid_t parent = getpid();
    for (int p = 0; p < nproc; p++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            kill(0, SIGKILL);
            return 1;
        }
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent)
                _exit(0);
            close(pipefd[0]);
            struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
            for (int i = 0; i < nsock; i++) {
                int udp = i % 2 == 0;
                int s = socket(AF_INET, udp ? SOCK_DGRAM : SOCK_STREAM, 0);
                if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0 || (!udp && listen(s, 1) < 0))
                    _exit(1);
            }
            char c = 1;
            if (write(pipefd[1], &c, 1) != 1)
                _exit(1);
            alarm((unsigned)seconds);
            pause();
            _exit(0);
        }
    }
    close(pipefd[1]);
    int ready = 0;
    char c;
    while (ready < nproc && read(pipefd[0], &c, 1) == 1)
        ready++;
    if (ready < nproc) {
        fprintf(stderr, "hold: only %d of %d processes ready\n", ready, nproc);
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    alarm((unsigned)seconds);
    while (wait(NULL) > 0 || errno == EINTR)
        ;
    return 0;
}

int main(int argc, char **argv) {
    const char *cmd = argc > 1 ? argv[1] : "";
    if (!strcmp(cmd, "tcp-serve") && (argc == 5 || argc == 6))
        return tcp_serve(argc, argv);
    if (!strcmp(cmd, "tcp-connect") && (argc == 6 || argc == 7))
        return tcp_connect(argc, argv);
    if (!strcmp(cmd, "udp-echo") && argc == 5)
        return udp_echo(argv);
    if (!strcmp(cmd, "udp-ping") && argc == 6)
        return udp_ping(argv);
    if (!strcmp(cmd, "hold") && argc == 5)
        return hold(argv);
    fprintf(stderr, "usage: see the comment at the top of netprobe.c\n");
    return 2;
}
