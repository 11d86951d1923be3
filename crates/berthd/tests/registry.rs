//! Pull and push with the docker CLI through berthd, against Debian's `docker-registry` on loopback.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestDaemon, can_run};

struct Registry {
    child: Child,
    dir: std::path::PathBuf,
    port: u16,
}

impl Registry {
    fn start(dir: &std::path::Path) -> Option<Registry> {
        let bin = ["/usr/bin/docker-registry", "/usr/local/bin/docker-registry"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = dir.join("registry");
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let r = Registry { child, dir, port };
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if t0.elapsed() > Duration::from_secs(20) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(r)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn push_then_pull_and_run() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    let Some(reg) = Registry::start(&d.dir) else {
        eprintln!("skipping: no docker-registry (apt-get install docker-registry)");
        return;
    };
    d.import_busybox();
    let name = format!("127.0.0.1:{}/team/bb:1", reg.port);
    d.ok(&["tag", "busybox:local", &name]);
    let out = d.ok(&["push", &name]);
    assert!(out.contains("digest: sha256:"), "{out}");
    d.ok(&["rmi", &name]);
    d.ok(&["rmi", "busybox:local"]);
    let out = d.ok(&["pull", &name]);
    assert!(out.contains("Status: Downloaded newer image for"), "{out}");
    let out = d.ok(&["run", "--rm", &name, "echo", "pulled"]);
    assert_eq!(out, "pulled\n");
    let out = d.ok(&["pull", &name]);
    assert!(out.contains("Image is up to date"), "{out}");
    // Unknown repository: the CLI's "Unable to find image" then the daemon's error; exit 125.
    let missing = format!("127.0.0.1:{}/nosuch:1", reg.port);
    let o = d.docker(&["run", "--rm", &missing]);
    assert_eq!(o.code, 125, "{o:?}");
    assert!(o.stderr.contains("Unable to find image"), "{}", o.stderr);
    assert!(
        o.stderr.contains("not found") || o.stderr.contains("denied"),
        "{}",
        o.stderr
    );
}
