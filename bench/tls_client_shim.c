/*
 * tls_client_shim.so: counts wrk's connections and TLS handshakes, and can make every
 * handshake a full one.
 *
 * Loaded with LD_PRELOAD into wrk by bench/tls_bench.py. Why it exists:
 * - wrk reuses one SSL object per connection slot and calls SSL_clear() on reconnect,
 *   which keeps the last session: over TLS 1.3 every reconnect after the first resumes
 *   with the server's session ticket (PSK + ECDHE, no certificate signature). With
 *   DS_BENCH_TLS_FULL=1 the shim drops that session before each SSL_connect, so every
 *   new connection is a full handshake, and the servers keep their default settings.
 * - wrk reports requests, not connections: the counts prove that "Connection: close"
 *   really made wrk reconnect, and how many handshakes were resumed.
 *
 * At exit it writes one JSON line to the file named by DS_BENCH_TLS_COUNTS:
 *   {"connects": N, "handshakes": N, "resumed": N, "version": "...", "cipher": "...",
 *    "group": "..."}
 * (connects: TCP connect() calls; handshakes: SSL_connect that completed; resumed: of
 * those, how many resumed a session; version/cipher/group: of the last handshake).
 *
 *     cc -O2 -shared -fPIC -o tls_client_shim.so tls_client_shim.c -ldl
 *
 * libssl's functions are looked up with dlsym, so the shim builds without OpenSSL's
 * headers and links against whichever libssl wrk itself loaded.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;

static long connects, handshakes, resumed;
static char version[32], cipher[64], group[32];

static void *next_symbol(const char *name) { return dlsym(RTLD_NEXT, name); }

int connect(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real)(int, const struct sockaddr *, socklen_t);
    if (!real)
        real = next_symbol("connect");
    if (addr && (addr->sa_family == AF_INET || addr->sa_family == AF_INET6))
        __atomic_fetch_add(&connects, 1, __ATOMIC_RELAXED);
    return real(fd, addr, len);
}

static void note_handshake(SSL *ssl) {
    static int (*reused)(SSL *);
    static const char *(*get_version)(const SSL *);
    static const void *(*current_cipher)(const SSL *);
    static const char *(*cipher_name)(const void *);
    static long (*ctrl)(SSL *, int, long, void *);
    static const char *(*group_name)(int);
    if (!reused) {
        get_version = next_symbol("SSL_get_version");
        current_cipher = next_symbol("SSL_get_current_cipher");
        cipher_name = next_symbol("SSL_CIPHER_get_name");
        ctrl = next_symbol("SSL_ctrl");
        group_name = next_symbol("OBJ_nid2sn");
        reused = next_symbol("SSL_session_reused");
    }
    __atomic_fetch_add(&handshakes, 1, __ATOMIC_RELAXED);
    if (reused && reused(ssl))
        __atomic_fetch_add(&resumed, 1, __ATOMIC_RELAXED);
    /* The last handshake's parameters; a torn write between wrk's threads only mixes
     * identical strings. */
    if (get_version)
        snprintf(version, sizeof version, "%s", get_version(ssl));
    if (current_cipher && cipher_name)
        snprintf(cipher, sizeof cipher, "%s", cipher_name(current_cipher(ssl)));
    if (ctrl && group_name) {
        long nid = ctrl(ssl, 134 /* SSL_CTRL_GET_NEGOTIATED_GROUP */, 0, NULL);
        const char *name = nid > 0 ? group_name((int)nid) : NULL;
        snprintf(group, sizeof group, "%s", name ? name : "");
    }
}

int SSL_connect(SSL *ssl) {
    static int (*real)(SSL *);
    static int (*set_session)(SSL *, SSL_SESSION *);
    static int (*in_init)(const SSL *);
    static int full = -1;
    if (!real) {
        real = next_symbol("SSL_connect");
        set_session = next_symbol("SSL_set_session");
        in_init = next_symbol("SSL_in_before");
    }
    if (full < 0) {
        const char *text = getenv("DS_BENCH_TLS_FULL");
        full = text && strcmp(text, "1") == 0;
    }
    /* wrk calls SSL_connect again while the non-blocking handshake wants more data:
     * drop the session only before the handshake's first flight. */
    if (full && set_session && in_init && in_init(ssl))
        set_session(ssl, NULL);
    int status = real(ssl);
    if (status == 1)
        note_handshake(ssl);
    return status;
}

__attribute__((destructor)) static void write_counts(void) {
    const char *path = getenv("DS_BENCH_TLS_COUNTS");
    if (!path)
        return;
    FILE *out = fopen(path, "w");
    if (!out)
        return;
    fprintf(out,
            "{\"connects\": %ld, \"handshakes\": %ld, \"resumed\": %ld, \"version\": \"%s\", "
            "\"cipher\": \"%s\", \"group\": \"%s\"}\n",
            connects, handshakes, resumed, version, cipher, group);
    fclose(out);
}
