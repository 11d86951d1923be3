//! A TEST backend for the builder: images come only from the local store (no pulls), rootfs mounts
//! are overlay mounts made with mount(8), and RUN steps run with `unshare -m` + an overlay mount +
//! chroot(8) — no namespaces beyond the mount namespace, no cgroups, no network isolation. The real
//! backend is the daemon's container path.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use berth_api::progress::JsonMessage;
use berth_build::builder::{BuildBackend, BuildOptions, BuildResult, Builder, RunSpec};
use berth_build::cache::CacheIndex;
use berth_build::context::BuildContext;
use berth_build::{BuildError, Result};
use berth_image::{ImageId, ImageStore, ImportOptions, RootfsMount};

pub fn is_root() -> bool {
    nix_uid() == 0
}

fn nix_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(1)
}

#[derive(Debug)]
pub struct TestBackend {
    pub store: Arc<ImageStore>,
    pub mnt: PathBuf,
    pub runs: Mutex<Vec<RunSpec>>,
    /// (start, end) of each RUN, to see parallel stages overlap.
    pub times: Mutex<Vec<(std::time::Instant, std::time::Instant)>>,
}

fn sh(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .map_err(|e| BuildError::Backend(format!("{cmd:?}: {e}")))?;
    if !out.status.success() {
        return Err(BuildError::Backend(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

impl BuildBackend for TestBackend {
    fn get_image(
        &self,
        reference: &str,
        _platform: Option<&str>,
        _always_pull: bool,
        _out: &mut dyn FnMut(JsonMessage),
    ) -> Result<ImageId> {
        Ok(self.store.resolve(reference)?)
    }

    fn mount(&self, layer_id: &str, rootfs: &RootfsMount) -> Result<PathBuf> {
        let mp = self.mnt.join(layer_id);
        std::fs::create_dir_all(&mp).map_err(|e| BuildError::Backend(e.to_string()))?;
        sh(Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(rootfs.overlay_options())
            .arg(&mp))?;
        Ok(mp)
    }

    fn unmount(&self, _layer_id: &str, mp: &Path) -> Result<()> {
        sh(Command::new("umount").arg(mp))?;
        let _ = std::fs::remove_dir(mp);
        Ok(())
    }

    fn run(&self, spec: &RunSpec, output: &mut dyn FnMut(&[u8])) -> Result<i64> {
        self.runs.lock().unwrap().push(spec.clone());
        let started = std::time::Instant::now();
        let mp = self.mnt.join(format!("run-{}", &spec.container_id[..12]));
        std::fs::create_dir_all(&mp).map_err(|e| BuildError::Backend(e.to_string()))?;
        // User: resolved inside the image (not on the host).
        let user = if spec.user.is_empty() {
            "0:0".to_string()
        } else {
            // Mount once to read /etc/passwd of the image.
            let probe = self.mount(&format!("probe-{}", &spec.container_id[..12]), &spec.rootfs)?;
            let r = berth_build::copy::resolve_chown(&probe, &spec.user);
            self.unmount("", &probe)?;
            let (u, g) = r?;
            format!("{u}:{g}")
        };
        let mut script = String::from(
            "set -e\nmount -t overlay overlay -o \"$1\" \"$2\"\nMP=\"$2\"; WD=\"$3\"; US=\"$4\"; shift 4\n",
        );
        for m in &spec.mounts {
            let t = format!("$MP{}", m.target);
            match (m.kind.as_str(), &m.source) {
                ("bind", Some(src)) => {
                    script.push_str(&format!(
                        "if [ -d '{s}' ]; then mkdir -p \"{t}\"; else mkdir -p \"$(dirname \"{t}\")\"; touch \"{t}\"; fi\nmount --bind '{s}' \"{t}\"\n",
                        s = src.display()
                    ));
                    if m.readonly {
                        script.push_str(&format!("mount -o remount,bind,ro \"{t}\"\n"));
                    }
                }
                _ => script.push_str(&format!("mkdir -p \"{t}\"\nmount -t tmpfs tmpfs \"{t}\"\n")),
            }
        }
        script.push_str(
            "exec /usr/sbin/chroot --userspec=\"$US\" \"$MP\" /bin/sh -c 'cd \"$1\" && shift && exec \"$@\"' sh \"$WD\" \"$@\" 2>&1\n",
        );
        let mut env: Vec<(String, String)> = spec
            .env
            .iter()
            .map(|e| {
                let (k, v) = e.split_once('=').unwrap_or((e, ""));
                (k.to_string(), v.to_string())
            })
            .collect();
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.push((
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ));
        }
        let wd = if spec.workdir.is_empty() {
            "/"
        } else {
            &spec.workdir
        };
        let mut child = Command::new("/usr/bin/unshare")
            .args([
                "-m",
                "--propagation",
                "private",
                "/bin/sh",
                "-c",
                &script,
                "sh",
            ])
            .arg(spec.rootfs.overlay_options())
            .arg(&mp)
            .arg(wd)
            .arg(&user)
            .args(&spec.args)
            .env_clear()
            .envs(env)
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| BuildError::Backend(e.to_string()))?;
        let mut so = child.stdout.take().unwrap();
        let mut buf = [0u8; 4096];
        loop {
            let n = so
                .read(&mut buf)
                .map_err(|e| BuildError::Backend(e.to_string()))?;
            if n == 0 {
                break;
            }
            output(&buf[..n]);
        }
        let mut err = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut err);
        let st = child
            .wait()
            .map_err(|e| BuildError::Backend(e.to_string()))?;
        self.times
            .lock()
            .unwrap()
            .push((started, std::time::Instant::now()));
        let _ = std::fs::remove_dir(&mp);
        if !err.is_empty() {
            output(err.as_bytes());
        }
        Ok(st.code().unwrap_or(128) as i64)
    }
}

/// A temp data root with a busybox image `busybox:local` imported from /bin/busybox.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub store: Arc<ImageStore>,
    pub backend: Arc<TestBackend>,
    pub builder: Builder,
}

pub fn busybox_tar() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let tar = berth_testkit::busybox_tar(dir.path(), "busybox.tar", berth_testkit::Users::Corpus);
    std::fs::read(tar).unwrap()
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("berth-build-test")
            .tempdir_in("/tmp")
            .unwrap();
        let store = Arc::new(ImageStore::open(&dir.path().join("data")).unwrap());
        store
            .import(
                &busybox_tar()[..],
                Some("busybox:local"),
                &ImportOptions {
                    changes: vec!["CMD [\"sh\"]".into()],
                    ..Default::default()
                },
            )
            .unwrap();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        let backend = Arc::new(TestBackend {
            store: store.clone(),
            mnt,
            runs: Mutex::new(Vec::new()),
            times: Mutex::new(Vec::new()),
        });
        let cache = Arc::new(CacheIndex::open(&dir.path().join("data")).unwrap());
        let builder = Builder::new(store.clone(), cache, backend.clone());
        Env {
            dir,
            store,
            backend,
            builder,
        }
    }

    /// Builds a context directory; returns the result and the stream text.
    pub fn build_dir(
        &self,
        ctx_dir: &Path,
        opts: &BuildOptions,
    ) -> (Result<BuildResult>, Vec<JsonMessage>) {
        let ctx = BuildContext::from_dir(ctx_dir, opts.dockerfile.as_deref());
        let ctx = match ctx {
            Ok(c) => c,
            Err(e) => return (Err(e), vec![]),
        };
        let mut msgs = Vec::new();
        let r = self.builder.build(&ctx, opts, &mut |m| msgs.push(m));
        (r, msgs)
    }

    /// Runs `sh -c cmd` in a container of `image`; returns (exit code, output).
    pub fn run_in(&self, image: &ImageId, cmd: &str) -> (i64, String) {
        let id = format!(
            "{:0>64}",
            format!("{}", std::process::id()) + &format!("{:x}", rand_n())
        );
        let rootfs = self.store.prepare_container_layer(&id, image).unwrap();
        let cfg = self.store.config(image).unwrap().config.unwrap_or_default();
        let spec = RunSpec {
            container_id: id.clone(),
            image: image.clone(),
            rootfs,
            args: vec!["/bin/sh".into(), "-c".into(), cmd.into()],
            env: cfg.env.clone(),
            user: cfg.user.clone(),
            workdir: cfg.working_dir.clone(),
            mounts: vec![],
            network: None,
            config: cfg,
            resources: Default::default(),
        };
        let mut out = Vec::new();
        let code = self
            .backend
            .run(&spec, &mut |b| out.extend_from_slice(b))
            .unwrap();
        self.store.remove_container_layer(&id).unwrap();
        (code, String::from_utf8_lossy(&out).into_owned())
    }
}

fn rand_n() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::Relaxed)
        ^ (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64)
}

/// The stream's `stream` text joined.
pub fn text(msgs: &[JsonMessage]) -> String {
    msgs.iter().filter_map(|m| m.stream.clone()).collect()
}

/// Writes files into a directory: (relative path, content).
pub fn write_tree(dir: &Path, files: &[(&str, &str)]) {
    for (p, c) in files {
        let f = dir.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, c).unwrap();
    }
}

pub fn opts() -> BuildOptions {
    BuildOptions::default()
}

pub fn args(kv: &[(&str, &str)]) -> BTreeMap<String, Option<String>> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), Some(v.to_string())))
        .collect()
}
