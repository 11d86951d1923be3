//! Unix socket paths longer than `sockaddr_un` holds (108 bytes).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Paths at least this long go through their directory's descriptor (sun_path is 108 bytes
/// including the terminating NUL).
const MAX_DIRECT: usize = 100;

/// A path to bind or connect a unix socket at `path`, even a long one: the socket is then
/// reached as `/proc/self/fd/<dir>/<name>` through a descriptor of its directory, which the
/// returned handle keeps open (hold it until `bind`/`connect` returned).
pub fn unix_socket_path(path: &Path) -> io::Result<(PathBuf, Option<File>)> {
    if path.as_os_str().len() < MAX_DIRECT {
        return Ok((path.to_path_buf(), None));
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok((path.to_path_buf(), None));
    };
    let d = File::open(dir)?;
    let short = Path::new("/proc/self/fd")
        .join(d.as_raw_fd().to_string())
        .join(name);
    Ok((short, Some(d)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::{UnixListener, UnixStream};

    #[test]
    fn long_paths_bind_and_connect() {
        let t = tempfile::tempdir().unwrap();
        let deep = t.path().join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        let sock = deep.join("shim.sock");
        assert!(sock.as_os_str().len() > 108);
        let (p, _dir) = unix_socket_path(&sock).unwrap();
        let l = UnixListener::bind(&p).unwrap();
        assert!(sock.exists());
        let (p, _dir) = unix_socket_path(&sock).unwrap();
        let _c = UnixStream::connect(&p).unwrap();
        l.accept().unwrap();
        let short = t.path().join("s.sock");
        assert_eq!(unix_socket_path(&short).unwrap().0, short);
    }
}
