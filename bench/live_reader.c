/* Live readers of the HTTP benchmark's live tests, in one epoll loop.
 *
 * A Python client spends several microseconds of CPU per SSE event or long-poll answer;
 * at 1,000 readers and 100 messages/s that is most of a core of the 2 the server runs
 * on, and the client's own queueing ends up in the latency it reports. This reader
 * costs well under a microsecond per delivery above the kernel's own work, so the
 * latencies are the server's. Both targets are read by it in the same run.
 *
 *   live_reader MODE PORT PATH_AND_QUERY_PREFIX OFFSET READERS MESSAGES TIMEOUT_S
 *
 * MODE is sse or long-poll. Each reader opens its own connection to 127.0.0.1:PORT and
 * requests PATH?offset=OFFSET&live=MODE (plus &cursor= once it has one), following the
 * returned offset and cursor: a long-poll reader re-polls on the same keep-alive
 * connection, an SSE reader reconnects from its last control event when the server ends
 * the stream. Messages are the harness's tags "<SEQ8:T_NS>" (T_NS is the writer's
 * CLOCK_MONOTONIC, Python's perf_counter_ns) and "<END>", which stops a reader.
 *
 * Prints "READY" once every reader is waiting (SSE: its first control event arrived;
 * long-poll: its first request is sent), then, when every reader saw <END> or
 * TIMEOUT_S passed after READY, one JSON line: deliveries, missing, errors, reconnects,
 * p50_ms, p99_ms, max_ms (over first arrivals of (reader, seq < MESSAGES)) and cpu_s
 * (this process's CPU since READY).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { BUF = 1 << 16, LINE = 1 << 16 };
enum body_kind { BODY_NONE, BODY_LENGTH, BODY_CHUNKED, BODY_UNTIL_EOF };
enum chunk_state { CH_SIZE, CH_EXT, CH_SIZE_LF, CH_DATA, CH_DATA_CR, CH_DATA_LF, CH_TRAILER };

struct reader {
    int fd;
    int armed, done;
    char offset[96], cursor[48];
    /* response parsing */
    char in[BUF];
    size_t in_len;
    int in_head; /* 1 while reading a response head */
    int status, close_after;
    enum body_kind kind;
    long long remaining; /* BODY_LENGTH: bytes left; chunked: bytes left in chunk */
    enum chunk_state ch;
    int trailer_blank; /* CH_TRAILER: bytes seen on the current trailer line */
    /* body: long-poll accumulates it, SSE parses it line by line */
    char line[LINE];
    size_t line_len;
    int event_is_data, event_is_control;
    char control[LINE];
    size_t control_len;
    char *body; /* long-poll: the answer's body so far */
    size_t body_len, body_cap;
    float *latency_ms; /* per seq, < 0 until it arrives */
};

static const char *g_mode, *g_path;
static int g_port, g_sse, g_readers, g_messages;
static long long g_errors, g_reconnects;
static struct reader *g_r;
static int g_epoll;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void scan_tags(struct reader *r, const char *p, size_t n, int64_t now) {
    const char *end = p + n;
    while ((p = memchr(p, '<', (size_t)(end - p))) != NULL) {
        p++;
        if (end - p >= 4 && memcmp(p, "END>", 4) == 0) {
            r->done = 1;
            p += 4;
            continue;
        }
        long seq = 0;
        int digits = 0;
        while (p < end && *p >= '0' && *p <= '9') seq = seq * 10 + (*p++ - '0'), digits++;
        if (digits != 8 || p >= end || *p != ':') continue;
        p++;
        int64_t sent = 0;
        while (p < end && *p >= '0' && *p <= '9') sent = sent * 10 + (*p++ - '0');
        if (p >= end || *p != '>') continue;
        if (seq < g_messages && r->latency_ms[seq] < 0) r->latency_ms[seq] = (float)((now - sent) / 1e6);
    }
}

/* Copies the value of `"key":"..."` (or a bare true) from a flat JSON object. */
static int json_string(const char *json, const char *key, char *out, size_t size) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\":\"", key);
    const char *at = strstr(json, pattern);
    if (!at) return 0;
    at += strlen(pattern);
    const char *stop = strchr(at, '"');
    if (!stop || (size_t)(stop - at) >= size) return 0;
    memcpy(out, at, (size_t)(stop - at));
    out[stop - at] = 0;
    return 1;
}

static void send_request(struct reader *r) {
    char request[512];
    int n = snprintf(request, sizeof request,
                     "GET %s?offset=%s&live=%s%s%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                     "Accept-Encoding: identity\r\n\r\n",
                     g_path, r->offset, g_mode, r->cursor[0] ? "&cursor=" : "", r->cursor, g_port);
    if (send(r->fd, request, (size_t)n, MSG_NOSIGNAL) != n) die("send");
    r->in_head = 1;
    if (!g_sse) r->armed = 1;
}

static void open_connection(struct reader *r) {
    r->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (r->fd < 0) die("socket");
    int one = 1;
    setsockopt(r->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(r->fd, (struct sockaddr *)&addr, sizeof addr) != 0) die("connect");
    r->in_len = 0;
    send_request(r);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = r};
    if (epoll_ctl(g_epoll, EPOLL_CTL_ADD, r->fd, &ev) != 0) die("epoll_ctl");
}

static void reconnect(struct reader *r) {
    epoll_ctl(g_epoll, EPOLL_CTL_DEL, r->fd, NULL);
    close(r->fd);
    r->fd = -1;
    if (r->done) return;
    g_reconnects++;
    open_connection(r);
}

static void sse_line(struct reader *r, const char *line, size_t n, int64_t now) {
    if (n == 0) { /* end of event */
        if (r->event_is_control) {
            r->control[r->control_len] = 0;
            json_string(r->control, "streamNextOffset", r->offset, sizeof r->offset);
            json_string(r->control, "streamCursor", r->cursor, sizeof r->cursor);
            if (strstr(r->control, "\"streamClosed\":true")) r->done = 1;
            r->armed = 1;
        }
        r->event_is_data = r->event_is_control = 0;
        r->control_len = 0;
        return;
    }
    if (n >= 6 && memcmp(line, "event:", 6) == 0) {
        const char *value = line + 6;
        size_t len = n - 6;
        if (len && *value == ' ') value++, len--;
        r->event_is_data = len == 4 && memcmp(value, "data", 4) == 0;
        r->event_is_control = len == 7 && memcmp(value, "control", 7) == 0;
    } else if (n >= 5 && memcmp(line, "data:", 5) == 0) {
        if (r->event_is_data) {
            scan_tags(r, line + 5, n - 5, now);
        } else if (r->event_is_control && r->control_len + n < LINE) {
            memcpy(r->control + r->control_len, line + 5, n - 5);
            r->control_len += n - 5;
        }
    }
}

/* Body bytes of the current response. */
static void body_bytes(struct reader *r, const char *p, size_t n, int64_t now) {
    if (!g_sse) { /* a long-poll answer is scanned whole (response_done) */
        if (r->body_len + n > r->body_cap) {
            r->body_cap = (r->body_len + n) * 2;
            r->body = realloc(r->body, r->body_cap);
            if (!r->body) die("realloc");
        }
        memcpy(r->body + r->body_len, p, n);
        r->body_len += n;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\n') {
            size_t len = r->line_len;
            if (len && r->line[len - 1] == '\r') len--;
            sse_line(r, r->line, len, now);
            r->line_len = 0;
        } else if (r->line_len < LINE) {
            r->line[r->line_len++] = c;
        }
    }
}

static int header_is(const char *line, size_t n, const char *name, const char **value) {
    size_t k = strlen(name);
    if (n <= k || strncasecmp(line, name, k) != 0 || line[k] != ':') return 0;
    const char *v = line + k + 1;
    while (*v == ' ') v++;
    *value = v;
    return 1;
}

static void copy_value(const char *v, const char *eol, char *out, size_t size) {
    size_t len = (size_t)(eol - v);
    if (len >= size) len = size - 1;
    memcpy(out, v, len);
    out[len] = 0;
}

/* Parses a response head at r->in; returns its length, or 0 if incomplete. */
static size_t parse_head(struct reader *r) {
    char *end = memmem(r->in, r->in_len, "\r\n\r\n", 4);
    if (!end) return 0;
    size_t head = (size_t)(end - r->in) + 4;
    *end = 0;
    r->status = atoi(r->in + 9);
    r->kind = g_sse ? BODY_UNTIL_EOF : BODY_NONE;
    r->close_after = 0;
    char *line = strstr(r->in, "\r\n");
    while (line && line < end) {
        line += 2;
        char *eol = strstr(line, "\r\n");
        if (!eol) eol = end;
        const char *v;
        size_t n = (size_t)(eol - line);
        if (header_is(line, n, "content-length", &v)) {
            r->kind = BODY_LENGTH;
            r->remaining = atoll(v);
        } else if (header_is(line, n, "transfer-encoding", &v)) {
            if (strncasecmp(v, "chunked", 7) == 0) r->kind = BODY_CHUNKED, r->ch = CH_SIZE, r->remaining = 0;
        } else if (header_is(line, n, "connection", &v)) {
            if (strncasecmp(v, "close", 5) == 0) r->close_after = 1;
        } else if (!g_sse && header_is(line, n, "stream-next-offset", &v)) {
            copy_value(v, eol, r->offset, sizeof r->offset);
        } else if (!g_sse && header_is(line, n, "stream-cursor", &v)) {
            copy_value(v, eol, r->cursor, sizeof r->cursor);
        }
        line = eol;
    }
    if (r->status != 200 && r->status != 204) g_errors++;
    r->line_len = r->body_len = 0;
    r->event_is_data = r->event_is_control = 0;
    r->control_len = 0;
    return head;
}

/* The response ended: re-poll or reconnect. */
static void response_done(struct reader *r, int64_t now) {
    if (!g_sse && r->status == 200) scan_tags(r, r->body, r->body_len, now);
    r->body_len = 0;
    if (g_sse || r->close_after) {
        reconnect(r);
    } else if (!r->done) {
        send_request(r);
    }
}

/* Consumes body bytes from r->in[pos..]; returns the new position. */
static size_t parse_body(struct reader *r, size_t pos, int64_t now, int *finished) {
    char *p = r->in;
    size_t n = r->in_len;
    *finished = 0;
    if (r->kind == BODY_NONE) {
        *finished = 1;
        return pos;
    }
    if (r->kind == BODY_UNTIL_EOF) {
        body_bytes(r, p + pos, n - pos, now);
        return n;
    }
    if (r->kind == BODY_LENGTH) {
        size_t take = (size_t)r->remaining < n - pos ? (size_t)r->remaining : n - pos;
        body_bytes(r, p + pos, take, now);
        r->remaining -= (long long)take;
        *finished = r->remaining == 0;
        return pos + take;
    }
    while (pos < n) {
        char c = p[pos];
        switch (r->ch) {
        case CH_SIZE:
            if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')) {
                r->remaining = r->remaining * 16 + (c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
                pos++;
            } else {
                r->ch = c == '\r' ? CH_SIZE_LF : CH_EXT;
                pos++;
            }
            break;
        case CH_EXT:
            pos++;
            if (c == '\r') r->ch = CH_SIZE_LF;
            break;
        case CH_SIZE_LF:
            pos++;
            if (r->remaining == 0) {
                r->ch = CH_TRAILER;
                r->trailer_blank = 0;
            } else {
                r->ch = CH_DATA;
            }
            break;
        case CH_DATA: {
            size_t take = (size_t)r->remaining < n - pos ? (size_t)r->remaining : n - pos;
            body_bytes(r, p + pos, take, now);
            r->remaining -= (long long)take;
            pos += take;
            if (r->remaining == 0) r->ch = CH_DATA_CR;
            break;
        }
        case CH_DATA_CR:
            pos++;
            r->ch = CH_DATA_LF;
            break;
        case CH_DATA_LF:
            pos++;
            r->ch = CH_SIZE;
            r->remaining = 0;
            break;
        case CH_TRAILER: /* lines until an empty one */
            pos++;
            if (c == '\n') {
                if (r->trailer_blank == 0) {
                    *finished = 1;
                    return pos;
                }
                r->trailer_blank = 0;
            } else if (c != '\r') {
                r->trailer_blank++;
            }
            break;
        }
    }
    return pos;
}

static void on_readable(struct reader *r) {
    if (r->in_len == BUF) { /* a head larger than the buffer */
        g_errors++;
        r->in_len = 0;
    }
    ssize_t got = recv(r->fd, r->in + r->in_len, BUF - r->in_len, 0);
    int64_t now = now_ns();
    if (got <= 0) {
        if (got < 0 && (errno == EAGAIN || errno == EINTR)) return;
        if (!(g_sse && !r->in_head)) g_errors += !r->done; /* EOF mid long-poll answer */
        reconnect(r);
        return;
    }
    r->in_len += (size_t)got;
    size_t pos = 0;
    while (pos < r->in_len && r->fd >= 0) {
        if (r->in_head) {
            memmove(r->in, r->in + pos, r->in_len - pos);
            r->in_len -= pos;
            pos = 0;
            size_t head = parse_head(r);
            if (!head) return;
            pos = head;
            r->in_head = 0;
        }
        int finished;
        pos = parse_body(r, pos, now, &finished);
        if (finished) {
            memmove(r->in, r->in + pos, r->in_len - pos);
            r->in_len -= pos;
            pos = 0;
            response_done(r, now);
            if (r->fd < 0) return;
        }
    }
    if (!r->in_head) r->in_len = 0; /* body bytes are consumed as they come */
}

static double cpu_seconds(void) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 + usage.ru_stime.tv_sec +
           usage.ru_stime.tv_usec / 1e6;
}

static int by_value(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: %s sse|long-poll PORT PATH OFFSET READERS MESSAGES TIMEOUT_S\n", argv[0]);
        return 2;
    }
    g_mode = argv[1];
    g_sse = strcmp(g_mode, "sse") == 0;
    g_port = atoi(argv[2]);
    g_path = argv[3];
    g_readers = atoi(argv[5]);
    g_messages = atoi(argv[6]);
    double timeout_s = atof(argv[7]);
    struct rlimit limit;
    getrlimit(RLIMIT_NOFILE, &limit);
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);

    g_epoll = epoll_create1(0);
    if (g_epoll < 0) die("epoll_create1");
    g_r = calloc((size_t)g_readers, sizeof *g_r);
    if (!g_r) die("calloc");
    for (int i = 0; i < g_readers; i++) {
        struct reader *r = &g_r[i];
        snprintf(r->offset, sizeof r->offset, "%s", argv[4]);
        r->latency_ms = malloc(sizeof(float) * (size_t)(g_messages ? g_messages : 1));
        for (int s = 0; s < g_messages; s++) r->latency_ms[s] = -1;
        open_connection(r);
    }

    struct epoll_event events[256];
    int64_t ready_by = now_ns() + 5000000000LL, stop_at = 0;
    int ready = 0;
    double cpu_at_ready = 0;
    for (;;) {
        int n = epoll_wait(g_epoll, events, 256, 100);
        for (int i = 0; i < n; i++) on_readable(events[i].data.ptr);
        int armed = 0, done = 0;
        for (int i = 0; i < g_readers; i++) armed += g_r[i].armed, done += g_r[i].done;
        int64_t now = now_ns();
        if (!ready && (armed == g_readers || now > ready_by)) {
            ready = 1;
            cpu_at_ready = cpu_seconds();
            stop_at = now + (int64_t)(timeout_s * 1e9);
            printf("READY\n");
            fflush(stdout);
        }
        if (ready && (done == g_readers || now > stop_at)) break;
    }

    if (getenv("LIVE_READER_DEBUG")) { /* each reader's median latency, in reader order */
        float *mine = malloc(sizeof(float) * (size_t)(g_messages + 1));
        for (int i = 0; i < g_readers; i++) {
            size_t k = 0;
            for (int s = 0; s < g_messages; s++)
                if (g_r[i].latency_ms[s] >= 0) mine[k++] = g_r[i].latency_ms[s];
            qsort(mine, k, sizeof *mine, by_value);
            fprintf(stderr, "%d %.3f\n", i, k ? mine[k / 2] : -1);
        }
        free(mine);
    }
    size_t total = 0, missing = 0;
    float *all = malloc(sizeof(float) * ((size_t)g_readers * (size_t)g_messages + 1));
    float max = 0;
    for (int i = 0; i < g_readers; i++)
        for (int s = 0; s < g_messages; s++) {
            float v = g_r[i].latency_ms[s];
            if (v < 0) {
                missing++;
            } else {
                all[total++] = v;
                if (v > max) max = v;
            }
        }
    qsort(all, total, sizeof *all, by_value);
#define PCT(q) (total ? all[(size_t)(q / 100.0 * (double)(total - 1) + 0.5)] : -1)
    double cpu = cpu_seconds() - cpu_at_ready;
    printf("{\"deliveries\": %zu, \"missing\": %zu, \"errors\": %lld, \"reconnects\": %lld, "
           "\"p50_ms\": %.3f, \"p99_ms\": %.3f, \"max_ms\": %.3f, \"cpu_s\": %.3f}\n",
           total, missing, g_errors, g_reconnects, PCT(50), PCT(99), max, cpu);
    return 0;
}
