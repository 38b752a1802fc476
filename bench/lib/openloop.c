// A fixed-rate (open-loop) HTTP/1.1 load generator in C, the native counterpart of openloop.mjs
// (same options, same JSON summary). Requests are due at exact intervals (1/rate) and sent when a
// timerfd armed for the next due time fires, so they go out evenly spaced: a Node generator can
// only wake on its 1 ms timers and sends the requests due since then together (bursts of ~7 at
// 7,000 req/s), which queue behind one another in whatever they are sent to. No garbage
// collector, no JIT: the generator's own pauses stay out of the latencies.
//
// Each request goes out on an idle keep-alive connection; a new one is opened when none is idle
// (up to --max-conns; past that the request waits, which shows in the intended-time latency).
// Two latencies per request: from the write (service) and from the due time (intended,
// coordinated-omission corrected).
//
//   cc -O2 -o openloop openloop.c
//   openloop --port P --rate R --duration S [--warmup S] [--max-conns N] [--preopen N]
//            --request FILE   (the raw request: head and body, sent as is)
//            [--trace FILE]   (each measured request, a line: its write time, wall clock in µs
//                              since the epoch, and its service latency in µs — to line the slow
//                              ones up with what the server was doing then)
// Prints one JSON line. Exit status 2 on bad arguments, 1 on a setup failure.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define BUF_SIZE 65536

typedef struct {
  int fd;
  int connected;
  int busy;       // a request is outstanding
  int dead;
  int64_t due;    // when it was due (ns)
  int64_t sent;   // when it was written (ns)
  size_t have;    // bytes buffered
  char buf[BUF_SIZE];
} conn_t;

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void die(const char *what) {
  fprintf(stderr, "openloop: %s: %s\n", what, strerror(errno));
  exit(1);
}

// ---- options -----------------------------------------------------------------------------------
static int port = 0, max_conns = 256, preopen = 32;
static double rate = 0, duration = 0, warmup = 1;
static const char *request_file = NULL, *host = "127.0.0.1", *trace_file = NULL;

static void usage(void) {
  fprintf(stderr,
          "usage: openloop --port P --rate R --duration S --request FILE [--warmup S] "
          "[--max-conns N] [--preopen N] [--host 127.0.0.1]\n");
  exit(2);
}

// ---- state -------------------------------------------------------------------------------------
static char *req;
static size_t req_len;
static int ep;
static conn_t **conns;  // all open connections
static int nconns = 0;
static conn_t **idle;
static int nidle = 0;
static int64_t *queue;  // due times waiting for a connection (ring)
static size_t qcap, qhead = 0, qlen = 0;
static double *service, *intended, *gaps;  // gaps: between consecutive writes (µs)
static int64_t *sent_at;                   // --trace: each measured request's write time (ns)
static size_t ngaps = 0;
static int64_t last_send = 0;
static size_t nmeasured = 0, cap_measured;
static long long sent = 0, completed = 0, errors = 0, non2xx = 0;
static int64_t measure_from, measure_to;
static int pending_connects = 0;

static void queue_push(int64_t due) {
  if (qlen == qcap) {
    fprintf(stderr, "openloop: queue overflow\n");
    exit(1);
  }
  queue[(qhead + qlen) % qcap] = due;
  qlen++;
}

static int queue_pop(int64_t *due) {
  if (qlen == 0) return 0;
  *due = queue[qhead];
  qhead = (qhead + 1) % qcap;
  qlen--;
  return 1;
}

static void open_conn(void);

static void conn_close(conn_t *c) {
  if (c->dead) return;
  int was_connected = c->connected;
  c->dead = 1;
  if (!c->connected) pending_connects--;
  if (c->busy) errors++;
  c->busy = 0;
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  for (int i = 0; i < nidle; i++)
    if (idle[i] == c) {
      idle[i] = idle[--nidle];
      break;
    }
  for (int i = 0; i < nconns; i++)
    if (conns[i] == c) {
      conns[i] = conns[--nconns];
      break;
    }
  free(c);
  // A working connection the server closed while requests wait: one in its place. (Not after a
  // failed connect: a refused port would be retried in a loop.)
  if (was_connected && (long long)qlen > pending_connects && nconns < max_conns) open_conn();
}

static void send_on(conn_t *c, int64_t due) {
  c->busy = 1;
  c->due = due;
  c->sent = now_ns();
  if (last_send != 0 && due >= measure_from && ngaps < cap_measured)
    gaps[ngaps++] = (double)(c->sent - last_send) / 1e3;
  last_send = c->sent;
  size_t off = 0;
  while (off < req_len) {
    ssize_t w = write(c->fd, req + off, req_len - off);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {  // loopback with an empty send buffer: not expected; wait a moment
        struct timespec ts = {0, 20000};
        nanosleep(&ts, NULL);
        continue;
      }
      conn_close(c);
      return;
    }
    off += (size_t)w;
  }
}

/** A connection is free: the next waiting request, or the idle stack. */
static void release(conn_t *c) {
  int64_t due;
  if (queue_pop(&due)) send_on(c, due);
  else idle[nidle++] = c;
}

static void dispatch(int64_t due) {
  sent++;
  if (nidle > 0) {
    send_on(idle[--nidle], due);
    return;
  }
  queue_push(due);
  // One connection on its way per waiting request, within the cap.
  if (nconns < max_conns && pending_connects < (long long)qlen) open_conn();
}

static void open_conn(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  inet_pton(AF_INET, host, &a.sin_addr);
  conn_t *c = calloc(1, sizeof *c);
  if (!c) die("calloc");
  c->fd = fd;
  conns[nconns++] = c;
  pending_connects++;
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = c};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) {
    errors++;
    conn_close(c);
  }
}

static void on_connected(conn_t *c) {
  int err = 0;
  socklen_t len = sizeof err;
  getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
  if (err != 0) {
    conn_close(c);
    return;
  }
  c->connected = 1;
  pending_connects--;
  struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
  epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
  release(c);
}

/** Length of a complete response at the start of buf (head + body), 0 if incomplete, -1 if bad. */
static long response_length(const char *buf, size_t n, int *status, int *close_after) {
  const char *end = memmem(buf, n, "\r\n\r\n", 4);
  if (!end) return n >= BUF_SIZE ? -1 : 0;
  size_t head = (size_t)(end - buf) + 4;
  if (n < 12 || memcmp(buf, "HTTP/1.", 7) != 0) return -1;
  *status = atoi(buf + 9);
  long body = 0;
  int chunked = 0;
  for (const char *p = buf; p < end;) {
    const char *eol = memmem(p, (size_t)(end - p) + 2, "\r\n", 2);
    if (!eol) break;
    size_t l = (size_t)(eol - p);
    if (l > 15 && strncasecmp(p, "content-length:", 15) == 0) body = atol(p + 15);
    if (l > 18 && strncasecmp(p, "transfer-encoding:", 18) == 0 && memmem(p, l, "chunked", 7))
      chunked = 1;
    if (l > 11 && strncasecmp(p, "connection:", 11) == 0 && memmem(p, l, "close", 5))
      *close_after = 1;
    p = eol + 2;
  }
  if (!chunked) return head + (size_t)body <= n ? (long)(head + (size_t)body) : 0;
  // Chunked: size lines and data until the last chunk and its empty trailer line.
  size_t p = head;
  for (;;) {
    const char *eol = memmem(buf + p, n - p, "\r\n", 2);
    if (!eol) return 0;
    long size = strtol(buf + p, NULL, 16);
    p = (size_t)(eol - buf) + 2;
    if (size == 0) {
      const char *t = memmem(buf + p, n - p, "\r\n", 2);  // trailer fields end with an empty line
      while (t && t != buf + p) {
        p = (size_t)(t - buf) + 2;
        t = memmem(buf + p, n - p, "\r\n", 2);
      }
      if (!t) return 0;
      return (long)(p + 2);
    }
    if (p + (size_t)size + 2 > n) return 0;
    p += (size_t)size + 2;
  }
}

static void on_readable(conn_t *c) {
  for (;;) {
    ssize_t r = read(c->fd, c->buf + c->have, BUF_SIZE - c->have);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return;
      conn_close(c);
      return;
    }
    if (r == 0) {
      conn_close(c);
      return;
    }
    c->have += (size_t)r;
    int status = 0, close_after = 0;
    long len = response_length(c->buf, c->have, &status, &close_after);
    if (len < 0) {
      conn_close(c);
      return;
    }
    if (len == 0) continue;
    int64_t t = now_ns();
    completed++;
    if (status < 200 || status >= 300) non2xx++;
    if (c->busy && c->due >= measure_from && c->due < measure_to && nmeasured < cap_measured) {
      service[nmeasured] = (double)(t - c->sent) / 1e3;
      intended[nmeasured] = (double)(t - c->due) / 1e3;
      if (sent_at) sent_at[nmeasured] = c->sent;
      nmeasured++;
    }
    c->busy = 0;
    memmove(c->buf, c->buf + len, c->have - (size_t)len);
    c->have -= (size_t)len;
    if (close_after) conn_close(c);  // the server closes it: not reused
    else release(c);
    return;
  }
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/** Same percentile rule as openloop.mjs: the value at ceil(p/100 × n) − 1 of the sorted values. */
static double pct(const double *s, size_t n, double p) {
  if (n == 0) return 0;
  long i = (long)(p / 100.0 * (double)n + 0.999999999) - 1;
  if (i < 0) i = 0;
  if ((size_t)i >= n) i = (long)n - 1;
  return s[i];
}

static void print_stats(const char *name, double *v, size_t n, int last) {
  qsort(v, n, sizeof *v, cmp_double);
  double sum = 0;
  for (size_t i = 0; i < n; i++) sum += v[i];
  printf("\"%s\":{\"mean\":%.6f,\"p50\":%.6f,\"p90\":%.6f,\"p95\":%.6f,\"p98\":%.6f,"
         "\"p99\":%.6f,\"p995\":%.6f,\"p999\":%.6f,\"max\":%.6f}%s",
         name, n ? sum / (double)n / 1e3 : 0, pct(v, n, 50) / 1e3, pct(v, n, 90) / 1e3,
         pct(v, n, 95) / 1e3, pct(v, n, 98) / 1e3, pct(v, n, 99) / 1e3, pct(v, n, 99.5) / 1e3,
         pct(v, n, 99.9) / 1e3, n ? v[n - 1] / 1e3 : 0, last ? "" : ",");
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (i + 1 >= argc) usage();
    const char *v = argv[++i];
    if (!strcmp(a, "--port")) port = atoi(v);
    else if (!strcmp(a, "--rate")) rate = atof(v);
    else if (!strcmp(a, "--duration")) duration = atof(v);
    else if (!strcmp(a, "--warmup")) warmup = atof(v);
    else if (!strcmp(a, "--max-conns")) max_conns = atoi(v);
    else if (!strcmp(a, "--preopen")) preopen = atoi(v);
    else if (!strcmp(a, "--request")) request_file = v;
    else if (!strcmp(a, "--host")) host = v;
    else if (!strcmp(a, "--trace")) trace_file = v;
    else usage();
  }
  if (port <= 0 || rate <= 0 || duration <= 0 || warmup < 0 || !request_file || max_conns < 1)
    usage();
  FILE *f = fopen(request_file, "rb");
  if (!f) die(request_file);
  fseek(f, 0, SEEK_END);
  req_len = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  req = malloc(req_len);
  if (!req || fread(req, 1, req_len, f) != req_len) die("read request");
  fclose(f);

  size_t total = (size_t)(rate * (warmup + duration)) + 16;
  qcap = total;
  queue = malloc(qcap * sizeof *queue);
  cap_measured = (size_t)(rate * duration) + 16;
  service = malloc(cap_measured * sizeof *service);
  intended = malloc(cap_measured * sizeof *intended);
  gaps = malloc(cap_measured * sizeof *gaps);
  conns = calloc((size_t)max_conns, sizeof *conns);
  idle = calloc((size_t)max_conns, sizeof *idle);
  if (!queue || !service || !intended || !gaps || !conns || !idle) die("malloc");
  if (trace_file && !(sent_at = malloc(cap_measured * sizeof *sent_at))) die("malloc");

  ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (tfd < 0) die("timerfd_create");
  struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &tev) < 0) die("epoll_ctl timer");

  for (int i = 0; i < preopen && i < max_conns; i++) open_conn();
  // Wait for the preopened connections (at most 5 s).
  int64_t setup_deadline = now_ns() + 5000000000LL;
  struct epoll_event evs[256];
  while (pending_connects > 0 && now_ns() < setup_deadline) {
    int n = epoll_wait(ep, evs, 256, 100);
    for (int i = 0; i < n; i++) {
      conn_t *c = evs[i].data.ptr;
      if (!c) continue;
      if (!c->connected && (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) on_connected(c);
    }
  }

  const int64_t interval = (int64_t)(1e9 / rate);
  const int64_t start = now_ns() + 1000000;
  const int64_t end = start + (int64_t)((warmup + duration) * 1e9);
  measure_from = start + (int64_t)(warmup * 1e9);
  measure_to = end;
  int64_t next = start;
  long long k = 0;  // requests scheduled so far: next = start + k × interval (no drift)
  struct itimerspec its = {0};
  its.it_value.tv_sec = next / 1000000000LL;
  its.it_value.tv_nsec = next % 1000000000LL;
  timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
  int scheduling = 1;
  int64_t drain_deadline = 0;
  for (;;) {
    if (!scheduling) {
      if (completed + errors >= sent && qlen == 0) break;
      if (now_ns() >= drain_deadline) break;
    }
    int n = epoll_wait(ep, evs, 256, scheduling ? -1 : 5);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    for (int i = 0; i < n; i++) {
      conn_t *c = evs[i].data.ptr;
      if (!c) {
        uint64_t expirations;
        ssize_t rr = read(tfd, &expirations, sizeof expirations);
        (void)rr;
        if (!scheduling) continue;
        int64_t t = now_ns();
        while (next <= t && next < end) {
          dispatch(next);
          k++;
          next = start + k * interval;
        }
        if (next >= end) {
          scheduling = 0;
          drain_deadline = now_ns() + 5000000000LL;
        } else {
          its.it_value.tv_sec = next / 1000000000LL;
          its.it_value.tv_nsec = next % 1000000000LL;
          timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
        }
        continue;
      }
      if (c->dead) continue;
      uint32_t e = evs[i].events;
      if (!c->connected) {
        if (e & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_connected(c);
        continue;
      }
      if (e & EPOLLIN) on_readable(c);
      else if (e & (EPOLLERR | EPOLLHUP | EPOLLRDHUP)) conn_close(c);
    }
  }
  long long lost = sent - completed - errors;
  if (lost < 0) lost = 0;
  printf("{\"rate\":%g,\"durationS\":%g,\"sent\":%lld,\"measured\":%zu,\"achievedRps\":%.3f,"
         "\"connections\":%d,\"errors\":%lld,\"non2xx\":%lld,\"generator\":\"c\",",
         rate, duration, sent, nmeasured, (double)nmeasured / duration, nconns, errors + lost,
         non2xx);
  if (trace_file) {  // before the stats sort the latencies
    FILE *tf = fopen(trace_file, "w");
    if (!tf) die(trace_file);
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    int64_t wall_minus_mono = (int64_t)rt.tv_sec * 1000000000LL + rt.tv_nsec - now_ns();
    for (size_t i = 0; i < nmeasured; i++)
      fprintf(tf, "%lld %.1f\n", (long long)((sent_at[i] + wall_minus_mono) / 1000), service[i]);
    if (fclose(tf) != 0) die(trace_file);
  }
  print_stats("serviceMs", service, nmeasured, 0);
  print_stats("intendedMs", intended, nmeasured, 0);
  print_stats("sendGapMs", gaps, ngaps, 1);
  printf("}\n");
  return 0;
}
