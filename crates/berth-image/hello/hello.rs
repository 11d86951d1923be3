// The program of Berth's built-in `hello-world` image. Compiled by build.rs into a tiny static binary.
use std::io::Write;

const MESSAGE: &str = "
Hello from Berth!
This message shows that your installation appears to be working correctly.

To generate this message, Berth took the following steps:
 1. The berth client contacted the berth daemon (berthd).
 2. The berth daemon found the \"hello-world\" image in its local store
    (it is built in, so nothing had to be pulled).
 3. The berth daemon created a new container from that image which runs the
    executable that produced the output you are currently reading.
 4. The berth daemon streamed that output to the berth client, which sent it
    to your terminal.

To try something more ambitious, import a root filesystem and run a shell in it:
 $ berth import rootfs.tar busybox:local
 $ berth run -it busybox:local sh

";

fn main() {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(MESSAGE.as_bytes());
    let _ = out.flush();
}
