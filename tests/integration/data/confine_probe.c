/* A RUN's view of its confinement (tests/integration/test_confinement.py): each check prints one line
 * "NAME allowed" or "NAME denied ERRNO-NAME". Arguments: directories in which to try mknod + open. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>
#include <linux/perf_event.h>

static void report(const char *name, long result) {
    if (result < 0)
        printf("%s denied %s\n", name, strerrorname_np(errno) ? strerrorname_np(errno) : "?");
    else
        printf("%s allowed\n", name);
    fflush(stdout);
}

/* In a child, so that an operation that wrongly succeeds (a new namespace, a mount) changes nothing here. */
static long in_child(long (*operation)(void)) {
    pid_t pid = fork();
    if (pid == 0)
        _exit(operation() < 0 ? errno : 0);
    int status;
    if (pid < 0 || waitpid(pid, &status, 0) < 0)
        return -1;
    errno = WIFEXITED(status) ? WEXITSTATUS(status) : EINTR;
    return errno ? -1 : 0;
}

static long try_unshare_user(void) { return unshare(CLONE_NEWUSER); }
static long try_unshare_mount(void) { return unshare(CLONE_NEWNS); }
static long try_mount(void) { return mount("none", "/tmp", "tmpfs", 0, NULL); }

static long try_perf(void) {
    struct perf_event_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.size = sizeof attr;
    attr.type = PERF_TYPE_SOFTWARE;
    attr.config = PERF_COUNT_SW_CPU_CLOCK;
    return syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0);
}

static long try_io_uring(void) {
    char params[120];
    memset(params, 0, sizeof params);
    return syscall(SYS_io_uring_setup, 1, params);
}

static long try_tiocsti(int fd) {
    char c = '#';
    return ioctl(fd, TIOCSTI, &c);
}

static long try_mknod(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/probe-null", dir);
    unlink(path);
    if (mknod(path, S_IFCHR | 0666, makedev(1, 3)) < 0)
        return -1;
    int fd = open(path, O_RDWR);
    int saved = errno;
    unlink(path);
    errno = saved;
    if (fd >= 0)
        close(fd);
    return fd;
}

static long try_loopback(void) {
    int server = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    if (server < 0 || bind(server, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(server, 1) < 0
        || getsockname(server, (struct sockaddr *)&addr, &len) < 0)
        return -1;
    int client = socket(AF_INET, SOCK_STREAM, 0);
    if (client < 0 || connect(client, (struct sockaddr *)&addr, sizeof addr) < 0)
        return -1;
    int peer = accept(server, NULL, NULL);
    char buf[4] = {0};
    if (peer < 0 || write(client, "ping", 4) != 4 || read(peer, buf, 4) != 4 || memcmp(buf, "ping", 4) != 0)
        return -1;
    close(peer), close(client), close(server);
    return 0;
}

static long try_fork_exec(void) {
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/true", "true", (char *)NULL);
        _exit(99);
    }
    int status;
    if (pid < 0 || waitpid(pid, &status, 0) < 0)
        return -1;
    errno = EINVAL;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

int main(int argc, char **argv) {
    report("unshare-user", in_child(try_unshare_user));
    report("unshare-mount", in_child(try_unshare_mount));
    report("clone3", syscall(SYS_clone3, NULL, 0));
    report("keyctl", syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -4 /* user keyring */, 0));
    report("add_key", syscall(SYS_add_key, "user", "pybuild-probe", "x", 1, -2 /* process keyring */));
    report("io_uring_setup", try_io_uring());
    report("perf_event_open", try_perf());
    report("userfaultfd", syscall(SYS_userfaultfd, 0));
    report("mount", in_child(try_mount));
    if (!getenv("PROBE_NO_PTRACE"))  /* with every capability it succeeds, and leaves PID 1 stopped */
        report("ptrace-init", ptrace(PTRACE_ATTACH, 1, NULL, NULL));
    report("open-dev-tty", open("/dev/tty", O_RDWR));
    for (int fd = 0; fd < 3; fd++) {
        char name[32];
        snprintf(name, sizeof name, "tiocsti-fd%d", fd);
        report(name, try_tiocsti(fd));
    }
    report("socket-alg", socket(38 /* AF_ALG */, SOCK_SEQPACKET, 0));
    /* open_tree_attr (Linux 6.15, the same number on every architecture): newer than docker's profile */
    report("newer-syscall", syscall(467, -1, NULL, 0, NULL, 0));
    report("loopback", try_loopback());
    report("fork-exec", try_fork_exec());
    report("chown", chown("/etc/passwd", 1000, 1000) < 0 ? -1 : chown("/etc/passwd", 0, 0));
    for (int i = 1; i < argc; i++) {
        char name[4200];
        snprintf(name, sizeof name, "mknod-open:%s", argv[i]);
        report(name, try_mknod(argv[i]));
    }
    return 0;
}
