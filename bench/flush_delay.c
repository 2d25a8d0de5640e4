/*
 * flush_delay.so: a slower disk, simulated for benchmarks.
 *
 * Loaded with LD_PRELOAD into a server process, it lets every flush call of the C
 * library (fsync, fdatasync, syncfs, and msync with MS_SYNC) do its real work and then
 * sleep DS_BENCH_FLUSH_DELAY_US microseconds before returning. Python's os.fsync, Node's
 * fs.fsync/fdatasync (libuv) and LMDB all flush through these calls, so both servers of
 * a run see the same added latency.
 *
 * Why: this VM flushes in 0.15-0.3 ms, far faster than most disks a durable server
 * runs on (network block storage and consumer SSDs: about 1-2 ms; spinning disks: 5-10
 * ms). The sleep adds latency but not a queue: flushes issued in parallel all sleep in
 * parallel, which favours a server that flushes many files at once (Node), not one
 * that shares one flush among concurrent writes (ours).
 *
 * Built by bench/http_bench.py when --flush-delay-ms is given:
 *     cc -O2 -shared -fPIC -o flush_delay.so flush_delay.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

static long delay_us = -1;

static void sleep_after_flush(void) {
    if (delay_us < 0) {
        const char *text = getenv("DS_BENCH_FLUSH_DELAY_US");
        delay_us = text ? atol(text) : 0;
    }
    if (delay_us <= 0)
        return;
    int saved_errno = errno; /* the caller reads the real call's errno */
    struct timespec left = {delay_us / 1000000, (delay_us % 1000000) * 1000};
    while (nanosleep(&left, &left) == -1 && errno == EINTR) {
    }
    errno = saved_errno;
}

static void *real(const char *name) {
    return dlsym(RTLD_NEXT, name);
}

#define DELAYED_FLUSH(name)                                            \
    int name(int fd) {                                                 \
        static int (*call)(int);                                       \
        if (!call)                                                     \
            call = (int (*)(int))real(#name);                          \
        int rc = call(fd);                                             \
        sleep_after_flush();                                           \
        return rc;                                                     \
    }

DELAYED_FLUSH(fsync)
DELAYED_FLUSH(fdatasync)
DELAYED_FLUSH(syncfs)

int msync(void *addr, size_t length, int flags) {
    static int (*call)(void *, size_t, int);
    if (!call)
        call = (int (*)(void *, size_t, int))real("msync");
    int rc = call(addr, length, flags);
    if (flags & MS_SYNC)
        sleep_after_flush();
    return rc;
}
