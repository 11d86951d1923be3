//! Test helpers: a real `docker-registry` (Debian's distribution 2.8) on a free loopback port, killed on
//! drop; a tiny bearer-token server; busybox images; a progress recorder.
#![allow(dead_code)]

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_api::progress::JsonMessage;
use berth_image::ImageStore;
use berth_registry::ProgressSink;

pub fn have(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How the registry authenticates.
pub enum Auth {
    None,
    Htpasswd { user: String, password: String },
    Token { realm: String, cert: PathBuf },
}

/// A running registry; killed (and its storage removed) on drop.
pub struct Registry {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start(auth: Auth) -> Registry {
        Registry::start_with(auth, false)
    }

    /// With `tls`, the registry serves HTTPS with a self-signed certificate for 127.0.0.1.
    pub fn start_with(auth: Auth, tls: bool) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let tls_yaml = if tls {
            let (key, cert) = (dir.path().join("tls.key"), dir.path().join("tls.crt"));
            let out = Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=127.0.0.1",
                    "-addext",
                    "subjectAltName=IP:127.0.0.1",
                    "-keyout",
                ])
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            )
        } else {
            String::new()
        };
        let port = free_port();
        let auth_yaml = match auth {
            Auth::None => String::new(),
            Auth::Htpasswd { user, password } => {
                let file = dir.path().join("htpasswd");
                let out = Command::new("htpasswd")
                    .args(["-Bbn", &user, &password])
                    .output()
                    .expect("htpasswd (apt-get install apache2-utils)");
                assert!(out.status.success());
                std::fs::write(&file, out.stdout).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: basic-realm\n    path: {}\n",
                    file.display()
                )
            }
            Auth::Token { realm, cert } => format!(
                "auth:\n  token:\n    realm: {realm}\n    service: berth-test\n    issuer: berth-test-issuer\n    rootcertbundle: {}\n",
                cert.display()
            ),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{tls_yaml}{auth_yaml}",
            dir.path().join("data").display()
        );
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry (apt-get install docker-registry)");
        let reg = Registry {
            child,
            port,
            _dir: dir,
        };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "registry did not start: {}",
                std::fs::read_to_string(reg._dir.path().join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    /// The registry's storage root.
    pub fn data_dir(&self) -> PathBuf {
        self._dir.path().join("data")
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A store with busybox imported as `tag` (one layer: /bin/busybox and a few links).
pub fn busybox_store(tag: &str) -> (tempfile::TempDir, Arc<ImageStore>) {
    let d = tempfile::tempdir().unwrap();
    let s = ImageStore::open(d.path()).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let bin = std::fs::read("/bin/busybox").unwrap();
    let mut h = hdr();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    b.append_data(&mut h, "bin/", &[][..]).unwrap();
    let mut h = hdr();
    h.set_mode(0o755);
    h.set_size(bin.len() as u64);
    b.append_data(&mut h, "bin/busybox", &bin[..]).unwrap();
    for l in ["sh", "echo", "ls"] {
        let mut h = hdr();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, format!("bin/{l}"), "busybox")
            .unwrap();
    }
    let tar = b.into_inner().unwrap();
    let opts = berth_image::ImportOptions {
        changes: vec!["CMD [\"sh\"]".into()],
        ..Default::default()
    };
    s.import(&tar[..], Some(tag), &opts).unwrap();
    (d, Arc::new(s))
}

fn hdr() -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

/// Adds a second image `tag` = the image `base` plus one small layer.
pub fn add_layer_on(s: &ImageStore, base: &str, tag: &str, content: &[u8]) {
    let id = s.resolve(base).unwrap();
    let mut cfg = s.config(&id).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = hdr();
    h.set_mode(0o644);
    h.set_size(content.len() as u64);
    b.append_data(&mut h, "etc/motd", content).unwrap();
    let layer = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&layer).unwrap();
    let layer_gz = gz.finish().unwrap();
    cfg.rootfs
        .diff_ids
        .push(berth_image::Digest::of_bytes(&layer));
    cfg.history.push(Default::default());
    let bytes = serde_json::to_vec(&cfg).unwrap();
    let lower: Vec<berth_image::BlobDescriptor> = s.layer_blobs(&id).unwrap();
    s.add_image(
        &bytes,
        &mut |i| {
            assert_eq!(i, lower.len());
            Ok(Box::new(std::io::Cursor::new(layer_gz.clone())))
        },
        &[tag],
    )
    .unwrap();
}

/// Records progress lines.
#[derive(Clone, Default)]
pub struct Recorder(pub Arc<Mutex<Vec<JsonMessage>>>);

impl Recorder {
    pub fn sink(&self) -> ProgressSink {
        let r = self.0.clone();
        Arc::new(move |m| r.lock().unwrap().push(m))
    }

    pub fn take(&self) -> Vec<JsonMessage> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

pub fn statuses(msgs: &[JsonMessage]) -> Vec<String> {
    msgs.iter().filter_map(|m| m.status.clone()).collect()
}

pub fn has(msgs: &[JsonMessage], status: &str) -> bool {
    msgs.iter().any(|m| m.status.as_deref() == Some(status))
}

/// `skopeo inspect --tls-verify=false docker://<image>` (with creds if given) → JSON.
pub fn skopeo_inspect(image: &str, creds: Option<&str>) -> serde_json::Value {
    let mut cmd = Command::new("skopeo");
    cmd.args(["inspect", "--tls-verify=false"]);
    if let Some(c) = creds {
        cmd.args(["--creds", c]);
    }
    let out = cmd.arg(format!("docker://{image}")).output().unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect {image}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Keys for the token server: an RSA key and its self-signed cert (PEM for the registry, DER for x5c).
pub struct TokenKeys {
    pub dir: tempfile::TempDir,
    pub cert_der: Vec<u8>,
}

impl TokenKeys {
    pub fn new() -> TokenKeys {
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=berth-test-token",
                "-keyout",
            ])
            .arg(dir.path().join("key.pem"))
            .arg("-out")
            .arg(dir.path().join("cert.pem"))
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(dir.path().join("cert.pem"))
            .output()
            .unwrap();
        assert!(der.status.success());
        TokenKeys {
            dir,
            cert_der: der.stdout,
        }
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// An RS256 JWT with `x5c`, as distribution's token auth verifies it.
    pub fn sign(&self, access: serde_json::Value, sub: &str) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let std64 = base64::engine::general_purpose::STANDARD;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [std64.encode(&self.cert_der)]});
        let claims = serde_json::json!({
            "iss": "berth-test-issuer", "sub": sub, "aud": "berth-test",
            "exp": now + 3600, "nbf": now - 60, "iat": now - 60, "jti": format!("{now}-{}", rand_id()),
            "access": access,
        });
        let input = format!(
            "{}.{}",
            b64.encode(header.to_string()),
            b64.encode(claims.to_string())
        );
        let mut child = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(self.dir.path().join("key.pem"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        format!("{input}.{}", b64.encode(out.stdout))
    }
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// What the token server saw.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    pub basic: Option<String>,
    pub scopes: Vec<String>,
    pub service: Option<String>,
    pub refresh: Option<String>,
}

/// A bearer-token server on loopback: `GET /token?service=..&scope=..`; basic `user:password` gets the
/// scopes asked for, anyone else gets a token with no access (like an anonymous token for a private
/// repository). Returns the realm URL and the log of requests.
pub async fn token_server(
    keys: Arc<TokenKeys>,
    user: &'static str,
    password: &'static str,
) -> (String, Arc<Mutex<Vec<TokenRequest>>>) {
    use base64::Engine as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log: Arc<Mutex<Vec<TokenRequest>>> = Arc::default();
    let log2 = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let keys = keys.clone();
            let log = log2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body = String::from_utf8_lossy(&buf[head_end..]).into_owned();
                let post = head.starts_with("POST ");
                let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut req = TokenRequest::default();
                let mut refresh = None;
                if post {
                    for kv in body.split('&') {
                        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                        let v = percent_decode(v);
                        match k {
                            "scope" => req.scopes.extend(v.split(' ').map(str::to_string)),
                            "service" => req.service = Some(v),
                            "refresh_token" => refresh = Some(v),
                            _ => {}
                        }
                    }
                }
                if let Some((_, q)) = target.split_once('?') {
                    for kv in q.split('&') {
                        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                        let v = percent_decode(v);
                        match k {
                            "scope" => req.scopes.push(v),
                            "service" => req.service = Some(v),
                            _ => {}
                        }
                    }
                }
                for line in head.lines() {
                    if let Some((k, v)) = line.split_once(':')
                        && k.eq_ignore_ascii_case("authorization")
                        && let Some(b) = v.trim().strip_prefix("Basic ")
                    {
                        let raw = base64::engine::general_purpose::STANDARD
                            .decode(b.trim())
                            .unwrap_or_default();
                        req.basic = Some(String::from_utf8_lossy(&raw).into_owned());
                    }
                }
                let good = req.basic.as_deref() == Some(&format!("{user}:{password}"))
                    || refresh.as_deref() == Some("refresh-me");
                req.refresh = refresh.clone();
                let (status, body) = if (req.basic.is_some() || refresh.is_some()) && !good {
                    (
                        "401 Unauthorized",
                        r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#
                            .to_string(),
                    )
                } else {
                    let access: Vec<serde_json::Value> = if good {
                        req.scopes
                            .iter()
                            .filter_map(|s| {
                                let mut p = s.splitn(3, ':');
                                let (t, n, a) = (p.next()?, p.next()?, p.next()?);
                                Some(serde_json::json!({"type": t, "name": n, "actions": a.split(',').collect::<Vec<_>>()}))
                            })
                            .collect()
                    } else {
                        Vec::new()
                    };
                    let sub = if good { user } else { "" };
                    let token = tokio::task::spawn_blocking({
                        let keys = keys.clone();
                        move || keys.sign(serde_json::Value::Array(access), sub)
                    })
                    .await
                    .unwrap();
                    (
                        "200 OK",
                        serde_json::json!({"token": token, "expires_in": 3600}).to_string(),
                    )
                };
                log.lock().unwrap().push(req);
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (format!("http://{addr}/token"), log)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn path_exists(p: &Path) -> bool {
    p.exists()
}
