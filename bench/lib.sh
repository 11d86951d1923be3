# Shared by the bench/ scripts (sourced from the repository root).

# busybox_tree DIR: a busybox root filesystem at DIR (static busybox, its applets, a root user).
busybox_tree() {
  mkdir -p "$1/bin" "$1/etc" "$1/tmp"
  cp /bin/busybox "$1/bin/busybox"
  chroot "$1" /bin/busybox --install -s /bin
  echo 'root:x:0:0:root:/root:/bin/sh' >"$1/etc/passwd"
  echo 'root:x:0:' >"$1/etc/group"
}

# wait_sock PATH: waits up to 30 s for a daemon's socket.
wait_sock() { for _ in $(seq 300); do [ -S "$1" ] && return 0; sleep 0.1; done; echo "no socket $1" >&2; return 1; }
