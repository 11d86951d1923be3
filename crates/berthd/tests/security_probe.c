/* A static probe run inside containers by tests/security.rs: each command tries one escape
 * and prints what happened (OK or the errno name), so the test can assert on it. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int report(long r) {
    if (r < 0) {
        printf("%s\n", strerrorname_np(errno));
        return 1;
    }
    printf("OK\n");
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *c = argv[1];
    if (!strcmp(c, "keyctl")) {
        /* KEYCTL_GET_KEYRING_ID of the session keyring: kernel keys are not namespaced. */
        return report(syscall(SYS_keyctl, 0, -3, 0));
    }
    if (!strcmp(c, "ptrace-child")) {
        pid_t p = fork();
        if (p == 0) { pause(); _exit(0); }
        long r = ptrace(PTRACE_ATTACH, p, 0, 0);
        int e = errno;
        kill(p, SIGKILL);
        waitpid(p, 0, 0);
        errno = e;
        return report(r);
    }
    if (!strcmp(c, "ptrace") && argc > 2) {
        return report(ptrace(PTRACE_ATTACH, atoi(argv[2]), 0, 0));
    }
    if (!strcmp(c, "unshare-user")) {
        return report(syscall(SYS_unshare, 0x10000000 /* CLONE_NEWUSER */));
    }
    if (!strcmp(c, "exewatch") && argc > 2) {
        /* CVE-2019-5736: look for a host binary (the shim/runtime entering the container)
         * behind any /proc/<pid>/exe and try to open it for writing. */
        time_t end = time(0) + atoi(argv[2]);
        long seen = 0;
        while (time(0) < end) {
            DIR *d = opendir("/proc");
            struct dirent *e;
            while (d && (e = readdir(d))) {
                if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
                char path[64], target[256], fdp[64];
                snprintf(path, sizeof path, "/proc/%s/exe", e->d_name);
                int fd = open(path, O_PATH | O_CLOEXEC);
                if (fd < 0) continue;
                ssize_t n = readlink(path, target, sizeof target - 1);
                target[n > 0 ? n : 0] = 0;
                if (strstr(target, "berth") || strstr(target, "runc")) {
                    printf("LEAK %s -> %s\n", path, target);
                    snprintf(fdp, sizeof fdp, "/proc/self/fd/%d", fd);
                    int w = open(fdp, O_WRONLY | O_CLOEXEC);
                    if (w >= 0) { printf("WROTE %s\n", target); close(w); }
                }
                seen++;
                close(fd);
            }
            if (d) closedir(d);
        }
        printf("DONE %ld\n", seen);
        return 0;
    }
    if (!strcmp(c, "fds")) {
        /* Every descriptor this process inherited, with what it points at. */
        for (int fd = 0; fd < 4096; fd++) {
            char p[64], t[256];
            if (fcntl(fd, F_GETFD) < 0) continue;
            snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
            ssize_t n = readlink(p, t, sizeof t - 1);
            t[n > 0 ? n : 0] = 0;
            printf("%d %s\n", fd, t);
        }
        return 0;
    }
    if (!strcmp(c, "cwd")) {
        /* CVE-2024-21626: the working directory must be inside the container's root. */
        char buf[4096];
        if (!getcwd(buf, sizeof buf)) return report(-1);
        printf("%s\n", buf);
        return 0;
    }
    return 2;
}
