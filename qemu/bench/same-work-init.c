/*
 * same-work-init: a static C PID 1 that makes the system calls fledge-init makes in default
 * mode on the boot benchmark's image, in the same order, and hands off the same way - the
 * baseline `boot-bench` measures fledge-init against. No error handling beyond what changes
 * the sequence: like fledge-init, a failed optional step is passed over.
 *
 * The sequence (as `strace` shows fledge-init's):
 *   - the mount table of init/src/mounts.rs, each mount point made first (EEXIST is fine);
 *   - the /dev links (fd, stdin, stdout, stderr) and the /dev/pts/ptmx and /dev/ptmx checks;
 *   - fds 0-2 checked (the console opened onto any that is missing);
 *   - fstat of fd 2, /dev/kmsg opened, /proc/sys/kernel/printk read;
 *   - /etc/fledge-init.conf and /proc/cmdline read, the boot-rootfs marker checked, the workload
 *     spec and the module list read;
 *   - lo up (SIOCGIFFLAGS, SIOCSIFFLAGS);
 *   - /.volant_init read, else the agent is the target;
 *   - RLIMIT_NOFILE set to 1 << 20 (both limits);
 *   - execve of the target with argv [target] and the environment the kernel gave PID 1.
 *
 * Built by boot-bench with the host's `gcc -static -O2`.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <net/if.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

extern char **environ;

struct mnt {
    const char *source, *target, *fstype;
    unsigned long flags;
    const char *data;
    mode_t dir_mode;
};

static const struct mnt MOUNTS[] = {
    {"devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755", 0755},
    {"proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, 0, 0555},
    {"sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, 0, 0555},
    {"tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", 01777},
    {"tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755", 0755},
    {"devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "ptmxmode=0666,mode=0620,gid=5", 0755},
    {"shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", 01777},
    {"mqueue", "/dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, 0, 0755},
    {"cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, 0, 0555},
};

static const char *const LINKS[][2] = {
    {"/proc/self/fd", "/dev/fd"},
    {"/proc/self/fd/0", "/dev/stdin"},
    {"/proc/self/fd/1", "/dev/stdout"},
    {"/proc/self/fd/2", "/dev/stderr"},
};

/* Reads a whole file in 512-byte chunks, as fledge-init does; returns its length or -1. */
static long read_file(const char *path, char *buf, long cap)
{
    int fd = open(path, O_RDONLY | O_NOCTTY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    long len = 0;
    for (;;) {
        long room = cap - len < 512 ? cap - len : 512;
        ssize_t n = room > 0 ? read(fd, buf + len, room) : 0;
        if (n <= 0)
            break;
        len += n;
    }
    close(fd);
    return len;
}

int main(void)
{
    static char buf[64 * 1024];
    struct stat st;
    if (getpid() != 1)
        return 2;
    for (unsigned i = 0; i < sizeof MOUNTS / sizeof MOUNTS[0]; i++) {
        const struct mnt *m = &MOUNTS[i];
        mkdir(m->target, m->dir_mode);
        mount(m->source, m->target, m->fstype, m->flags, m->data);
    }
    for (unsigned i = 0; i < sizeof LINKS / sizeof LINKS[0]; i++)
        symlink(LINKS[i][0], LINKS[i][1]);
    if (lstat("/dev/pts/ptmx", &st) == 0 && lstat("/dev/ptmx", &st) != 0)
        symlink("pts/ptmx", "/dev/ptmx");

    int missing = 0;
    for (int fd = 0; fd < 3; fd++)
        missing |= (fcntl(fd, F_GETFD) == -1) << fd;
    if (missing) {
        int c = open("/dev/console", O_RDWR | O_NOCTTY);
        for (int fd = 0; fd < 3; fd++)
            if (missing & (1 << fd) && c != fd)
                dup2(c, fd);
        if (c > 2)
            close(c);
    }
    fstat(2, &st);
    open("/dev/kmsg", O_WRONLY | O_NOCTTY | O_CLOEXEC);
    read_file("/proc/sys/kernel/printk", buf, 64);

    read_file("/etc/fledge-init.conf", buf, sizeof buf);
    read_file("/proc/cmdline", buf, sizeof buf);
    lstat("/etc/fledge/boot-rootfs", &st);
    read_file("/etc/fledge/workload", buf, sizeof buf);
    read_file("/etc/fledge/modules.load", buf, sizeof buf);

    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock >= 0) {
        struct ifreq req;
        memset(&req, 0, sizeof req);
        strcpy(req.ifr_name, "lo");
        if (ioctl(sock, SIOCGIFFLAGS, &req) == 0) {
            req.ifr_flags |= IFF_UP;
            ioctl(sock, SIOCSIFFLAGS, &req);
        }
        close(sock);
    }

    char target[4096] = "/bin/kestrel";
    long n = read_file("/.volant_init", buf, sizeof buf - 1);
    if (n > 0) {
        buf[n] = 0;
        char *line = buf + strspn(buf, " \t");
        line[strcspn(line, "\n")] = 0;
        for (size_t end = strlen(line); end > 0 && strchr(" \t\r", line[end - 1]); end--)
            line[end - 1] = 0;
        if (*line && strlen(line) < sizeof target)
            strcpy(target, line);
    }

    struct rlimit nofile = {1 << 20, 1 << 20};
    setrlimit(RLIMIT_NOFILE, &nofile);

    char *argv[] = {target, 0};
    execve(target, argv, environ);
    return 127;
}
