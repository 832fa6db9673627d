/* The TCP benchmark's load generator and origin (tests/bench/compare, TCP runs).
 *
 * Built with gcc at bench time so that no Python sits in the data path: the
 * proxy's CPU per GiB and per connection is only comparable when the client
 * and the origin are cheap and never the bottleneck. One binary, three roles:
 *
 *   tcpload origin SINK_PORT ECHO_PORT
 *       One thread, epoll. SINK_PORT reads and discards; when the client has
 *       shut its write side (EOF) it answers "<bytes received>\n" and closes,
 *       so a stream run checks every byte passed and the half-close too.
 *       ECHO_PORT writes back what it reads (reading stops while a write is
 *       pending: backpressure) and closes on EOF.
 *   tcpload stream PORT SECONDS
 *       One connection; writes 256 KiB blocks for SECONDS, shuts its write
 *       side, reads the sink's count. Prints
 *       "bytes=N seconds=S acked=M" (acked: what the sink says it received).
 *   tcpload short PORT SECONDS CONCURRENCY [MAX]
 *       Keeps CONCURRENCY connections in flight, each: connect, send 100
 *       bytes, read the 100 echoed, close. Stops at SECONDS (or after MAX
 *       completed). Prints "conns=N errors=E seconds=S".
 *   tcpload http PORT SECONDS CONCURRENCY [MAX]
 *       The HTTP short-connection run: the same loop, each connection sending
 *       "GET / HTTP/1.1" with "Connection: close" and reading the response
 *       to the server's close (HTTP/1.1's end of a response with that header,
 *       RFC 9112 section 9.6). A connection counts as done when the answer
 *       starts "HTTP/1.1 200 " and ends with the origin's 100-byte body;
 *       anything else is an error. Same output as short.
 *
 * Every wait is bounded: blocking calls carry SO_SNDTIMEO/SO_RCVTIMEO, a
 * short connection in flight longer than 5 s counts as an error and is
 * closed, and the origin is killed by the script.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BLOCK (256 * 1024)
#define SHORT_LEN 100

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static struct sockaddr_in addr(int port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static void timeouts(int fd, int secs) {
    struct timeval tv = {secs, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

/* ---------------------------------------------------------------- origin */

enum { SINK = 1, ECHO = 2 };

struct oconn {
    int fd, kind;
    unsigned long long got;
    char *pending; /* echo: bytes read and not yet written back */
    size_t plen, poff;
};

static int listener(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    struct sockaddr_in a = addr(port);
    if (fd < 0) die("socket");
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
    if (listen(fd, 4096) < 0) die("listen");
    return fd;
}

static void oclose(int ep, struct oconn *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->pending);
    free(c);
}

/* Echo: write back what is pending; 1 when all of it went, 0 when the
 * socket is full (wait for EPOLLOUT), -1 on error. */
static int oflush(struct oconn *c) {
    while (c->poff < c->plen) {
        ssize_t n = write(c->fd, c->pending + c->poff, c->plen - c->poff);
        if (n < 0) return errno == EAGAIN ? 0 : -1;
        c->poff += n;
    }
    c->plen = c->poff = 0;
    return 1;
}

static _Noreturn void origin(int sink_port, int echo_port) {
    static char buf[BLOCK];
    int ep = epoll_create1(0), ls = listener(sink_port), le = listener(echo_port);
    struct epoll_event ev = {.events = EPOLLIN}, evs[256];
    static struct oconn lsink = {.kind = -SINK}, lecho = {.kind = -ECHO};
    lsink.fd = ls, lecho.fd = le;
    ev.data.ptr = &lsink;
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    ev.data.ptr = &lecho;
    epoll_ctl(ep, EPOLL_CTL_ADD, le, &ev);
    signal(SIGPIPE, SIG_IGN);
    printf("origin ready sink=%d echo=%d\n", sink_port, echo_port);
    fflush(stdout);
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            struct oconn *c = evs[i].data.ptr;
            if (c->kind < 0) { /* a listener */
                int fd;
                while ((fd = accept4(c->fd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    struct oconn *nc = calloc(1, sizeof *nc);
                    nc->fd = fd, nc->kind = -c->kind;
                    struct epoll_event e = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
                }
                continue;
            }
            if (c->kind == ECHO && c->plen) { /* EPOLLOUT: finish the write, then read again */
                int r = oflush(c);
                if (r < 0) { oclose(ep, c); continue; }
                if (r == 0) continue;
                struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
            }
            ssize_t r = read(c->fd, buf, sizeof buf);
            if (r < 0) {
                if (errno != EAGAIN) oclose(ep, c);
                continue;
            }
            if (r == 0) { /* EOF: the sink reports its count, then both close */
                if (c->kind == SINK) {
                    char msg[32];
                    int len = snprintf(msg, sizeof msg, "%llu\n", c->got);
                    if (write(c->fd, msg, len) != len) { /* the client went away */ }
                }
                oclose(ep, c);
                continue;
            }
            c->got += r;
            if (c->kind == ECHO) {
                c->pending = realloc(c->pending, r);
                memcpy(c->pending, buf, r);
                c->plen = r, c->poff = 0;
                int f = oflush(c);
                if (f < 0) { oclose(ep, c); continue; }
                if (f == 0) {
                    struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
                }
            }
        }
    }
}

/* ---------------------------------------------------------------- stream */

static int stream(int port, double seconds) {
    static char block[BLOCK];
    for (size_t i = 0; i < sizeof block; i++) block[i] = (char)(i * 131 + 7);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = addr(port);
    timeouts(fd, 10);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
    signal(SIGPIPE, SIG_IGN);
    unsigned long long sent = 0;
    double t0 = now(), t1;
    while ((t1 = now()) - t0 < seconds) {
        ssize_t n = write(fd, block, sizeof block);
        if (n <= 0) die("write (stream)");
        sent += n;
    }
    shutdown(fd, SHUT_WR);
    timeouts(fd, 30);
    char msg[64];
    size_t len = 0;
    ssize_t n;
    while (len < sizeof msg - 1 && (n = read(fd, msg + len, sizeof msg - 1 - len)) > 0) len += n;
    msg[len] = 0;
    close(fd);
    printf("bytes=%llu seconds=%.3f acked=%llu\n", sent, t1 - t0, len ? strtoull(msg, NULL, 10) : 0ULL);
    return 0;
}

/* ----------------------------------------------------------------- short */

struct sconn {
    int fd, state; /* 1 connecting/sending, 2 reading */
    size_t off;
    double t0;
    char in[1024]; /* http: the response, up to its close */
};

/* What one short connection sends; for http, what its answer must hold. */
static const char *s_msg;
static size_t s_len;
static int s_http;

/* The http run's check of a whole response (read up to the server's close):
 * a 200 whose last 100 bytes are the origin's body (99 'x' and a newline). */
static int http_ok(const struct sconn *c) {
    if (c->off < 13 + SHORT_LEN || memcmp(c->in, "HTTP/1.1 200 ", 13)) return 0;
    const char *body = c->in + c->off - SHORT_LEN;
    for (int i = 0; i < SHORT_LEN - 1; i++)
        if (body[i] != 'x') return 0;
    return body[SHORT_LEN - 1] == '\n';
}

static int sstart(int ep, struct sconn *c, struct sockaddr_in *a) {
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) return -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->state = 1, c->off = 0, c->t0 = now();
    if (connect(c->fd, (struct sockaddr *)a, sizeof *a) < 0 && errno != EINPROGRESS) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e);
    return 0;
}

static void sclose(int ep, struct sconn *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
}

static int shortconns(int port, double seconds, int conc, unsigned long long max) {
    struct sockaddr_in a = addr(port);
    int ep = epoll_create1(0);
    struct sconn *cs = calloc(conc, sizeof *cs);
    struct epoll_event evs[256];
    unsigned long long done = 0, errors = 0;
    signal(SIGPIPE, SIG_IGN);
    double t0 = now(), t = t0, last_sweep = t0;
    int live = 0;
    for (int i = 0; i < conc; i++) {
        if (sstart(ep, &cs[i], &a) == 0) live++;
        else errors++;
    }
    while (live > 0) {
        int n = epoll_wait(ep, evs, 256, 100);
        t = now();
        int more = t - t0 < seconds;
        for (int i = 0; i < n; i++) {
            struct sconn *c = evs[i].data.ptr;
            int ok = 0, fail = 0;
            if (evs[i].events & (EPOLLERR | EPOLLHUP) && c->state == 1) {
                fail = 1;
            } else if (c->state == 1) {
                ssize_t w = write(c->fd, s_msg, s_len);
                if (w != (ssize_t)s_len) fail = 1;
                else {
                    c->state = 2;
                    struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
                }
            } else {
                size_t want = s_http ? sizeof c->in : SHORT_LEN;
                ssize_t r = read(c->fd, c->in + c->off, want - c->off);
                if (r > 0) {
                    c->off += r;
                    if (!s_http && c->off == want) ok = 1;
                    else if (s_http && c->off == want) fail = 1; /* longer than any answer expected */
                } else if (r == 0 && s_http) {
                    ok = http_ok(c), fail = !ok; /* the server's close ends the response */
                } else if (r == 0 || errno != EAGAIN) {
                    fail = 1;
                }
            }
            if (ok || fail) {
                sclose(ep, c);
                live--;
                if (ok) done++;
                else errors++;
                if (more && (max == 0 || done + live < max)) {
                    if (sstart(ep, c, &a) == 0) live++;
                    else errors++;
                }
            }
        }
        if (t - last_sweep > 0.5) { /* bounded: nothing stays in flight past 5 s */
            last_sweep = t;
            for (int i = 0; i < conc; i++) {
                if (cs[i].fd >= 0 && t - cs[i].t0 > 5.0) {
                    sclose(ep, &cs[i]);
                    live--;
                    errors++;
                    if (t - t0 < seconds && (max == 0 || done + live < max)) {
                        if (sstart(ep, &cs[i], &a) == 0) live++;
                        else errors++;
                    }
                }
            }
        }
        if (t - t0 > seconds + 10) break; /* never past the run by more than 10 s */
    }
    printf("conns=%llu errors=%llu seconds=%.3f\n", done, errors, t - t0);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "origin")) origin(atoi(argv[2]), atoi(argv[3]));
    if (argc == 4 && !strcmp(argv[1], "stream")) return stream(atoi(argv[2]), atof(argv[3]));
    static char echo_msg[SHORT_LEN];
    memset(echo_msg, 'x', sizeof echo_msg);
    s_msg = echo_msg, s_len = SHORT_LEN;
    if ((argc == 5 || argc == 6) && !strcmp(argv[1], "http")) {
        s_msg = "GET / HTTP/1.1\r\nHost: bench.local\r\nConnection: close\r\n\r\n";
        s_len = strlen(s_msg), s_http = 1;
        argv[1] = "short";
    }
    if ((argc == 5 || argc == 6) && !strcmp(argv[1], "short"))
        return shortconns(atoi(argv[2]), atof(argv[3]), atoi(argv[4]), argc == 6 ? strtoull(argv[5], NULL, 10) : 0);
    fprintf(stderr, "usage: tcpload origin SINK ECHO | stream PORT SECONDS | short|http PORT SECONDS CONC [MAX]\n");
    return 2;
}
