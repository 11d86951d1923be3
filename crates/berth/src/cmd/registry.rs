//! `login`, `logout` and `push`, and the credentials in docker's `config.json` that pull and push send
//! as `X-Registry-Auth`, so docker and berth share logins: a credential helper
//! (`credHelpers[registry]`, else `credsStore`: `docker-credential-<name> get|store|erase`), else
//! `auths` (base64 `user:pass`).

use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};

use super::image::{show_progress, split_tag};
use super::{CliError, CmdResult, Ctx};
use crate::cli::{Command, Matches, b, v};
use crate::client::{ClientError, decode, json_body, q};
use crate::value::Value;

/// Docker Hub's key in `auths`.
pub const INDEX_SERVER: &str = "https://index.docker.io/v1/";

static CONFIG_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Sets the client config directory from the global `--config` flag.
pub fn set_config_dir(dir: Option<&str>) {
    if let Some(d) = dir {
        let _ = CONFIG_DIR.set(PathBuf::from(d));
    }
}

/// `--config`, else `$DOCKER_CONFIG`, else `~/.docker`, as the docker CLI.
pub fn config_dir() -> PathBuf {
    if let Some(d) = CONFIG_DIR.get() {
        return d.clone();
    }
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".docker")
}

fn config_file() -> PathBuf {
    config_dir().join("config.json")
}

fn load_config() -> Result<Value, CliError> {
    let path = config_file();
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => Value::from_json(&t)
            .map_err(|e| CliError::Msg(format!("loading config file: {}: {e}", path.display()), 1)),
        Ok(_) => Ok(Value::Object(Vec::new())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Value::Object(Vec::new())),
        Err(e) => Err(e.into()),
    }
}

/// Writes the config like docker: tab-indented JSON, via a temp file and rename, mode 0600.
fn save_config(cfg: &Value) -> Result<(), CliError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = config_dir();
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!(".config.json.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(cfg.to_json_indent("\t").as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, config_file())?;
    Ok(())
}

fn object_mut<'a>(v: &'a mut Value, key: &str) -> &'a mut Vec<(String, Value)> {
    if !matches!(v, Value::Object(_)) {
        *v = Value::Object(Vec::new());
    }
    let Value::Object(m) = v else { unreachable!() };
    if !m.iter().any(|(k, _)| k == key) {
        m.push((key.to_string(), Value::Object(Vec::new())));
    }
    let slot = &mut m.iter_mut().find(|(k, _)| k == key).expect("inserted").1;
    if !matches!(slot, Value::Object(_)) {
        *slot = Value::Object(Vec::new());
    }
    let Value::Object(inner) = slot else {
        unreachable!()
    };
    inner
}

/// The `auths` key for a server argument: Docker Hub's names become its index URL, others lose their
/// scheme and path (`http://127.0.0.1:5000/v2/` → `127.0.0.1:5000`).
pub fn server_key(server: &str) -> String {
    let host = server
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host);
    match host {
        "" | "docker.io" | "index.docker.io" | "registry-1.docker.io" => INDEX_SERVER.into(),
        h => h.to_string(),
    }
}

/// The registry of an image reference, as an `auths` key.
pub fn registry_of(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            server_key(first)
        }
        _ => INDEX_SERVER.into(),
    }
}

/// The fully qualified reference docker prints after a pull (`docker.io/library/busybox:latest`).
pub fn full_ref(image: &str) -> String {
    if registry_of(image) != INDEX_SERVER {
        image.to_string()
    } else {
        let bare = image
            .strip_prefix("docker.io/")
            .or_else(|| image.strip_prefix("index.docker.io/"))
            .unwrap_or(image);
        if bare.split(['@', ':']).next().unwrap_or(bare).contains('/') {
            format!("docker.io/{bare}")
        } else {
            format!("docker.io/library/{bare}")
        }
    }
}

/// The credential helper for a registry key, as docker picks it: `credHelpers[key]`, else `credsStore`.
fn helper_for(cfg: &Value, key: &str) -> Option<String> {
    let per_registry = cfg.get("credHelpers").and_then(|h| match h {
        Value::Object(m) => m
            .iter()
            .find(|(k, _)| server_key(k) == key)
            .and_then(|(_, v)| text(v)),
        _ => None,
    });
    per_registry
        .or_else(|| cfg.get("credsStore").and_then(text))
        .filter(|n| !n.is_empty())
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// What a helper says when it has nothing for a server (docker-credential-helpers' wording).
const HELPER_NOT_FOUND: &str = "credentials not found in native keychain";

/// Runs `docker-credential-<helper> <action>` with `input` on stdin; its stdout, or its complaint.
fn run_helper(helper: &str, action: &str, input: &str) -> Result<String, String> {
    use std::process::{Command, Stdio};
    let bin = format!("docker-credential-{helper}");
    let mut child = Command::new(&bin)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("exec: \"{bin}\": {e}"))?;
    if let Some(mut si) = child.stdin.take() {
        // A helper that exits without reading is judged by its exit status below.
        let _ = si.write_all(input.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() {
        Ok(stdout)
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(if stdout.is_empty() { stderr } else { stdout })
    }
}

/// Credentials a helper holds for `key`; `None` when it has none or fails (the failure is reported,
/// as docker reports it, and the pull or push goes on anonymously).
fn helper_credentials(helper: &str, key: &str) -> Option<(String, String)> {
    match run_helper(helper, "get", key) {
        Ok(out) => {
            let v: serde_json::Value = serde_json::from_str(&out).ok()?;
            let user = v["Username"].as_str().unwrap_or("").to_string();
            let secret = v["Secret"].as_str().unwrap_or("").to_string();
            (!secret.is_empty()).then_some((user, secret))
        }
        Err(e) if e.contains(HELPER_NOT_FOUND) => None,
        Err(e) => {
            eprintln!("error getting credentials - err: {e}");
            None
        }
    }
}

/// Stored `(user, password)` for a registry key, if logged in: from its credential helper, else `auths`.
pub fn stored_credentials(key: &str) -> Option<(String, String)> {
    let cfg = load_config().ok()?;
    if let Some(helper) = helper_for(&cfg, key)
        && let Some(c) = helper_credentials(&helper, key)
    {
        return Some(c);
    }
    let auths = cfg.get("auths")?;
    let Value::Object(m) = auths else { return None };
    let entry = m
        .iter()
        .find(|(k, _)| server_key(k) == key || k == key)
        .map(|(_, v)| v)?;
    let Some(Value::String(auth)) = entry.get("auth") else {
        return None;
    };
    let raw = STANDARD.decode(auth.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// `X-Registry-Auth` for a reference: base64url of `{"username","password","serveraddress"}`, or of
/// `{}` when not logged in (as the docker CLI sends).
pub fn registry_auth_header(image: &str) -> String {
    let key = registry_of(image);
    let json = match stored_credentials(&key) {
        // A helper's `<token>` user means the secret is an identity token (docker's convention).
        Some((u, p)) if u == "<token>" => {
            serde_json::json!({"identitytoken": p, "serveraddress": key})
        }
        Some((u, p)) => serde_json::json!({"username": u, "password": p, "serveraddress": key}),
        None => serde_json::json!({}),
    };
    URL_SAFE.encode(json.to_string())
}

/// `login`'s grammar.
pub const LOGIN: Command = Command {
    path: "login",
    usage: "[OPTIONS] [SERVER]",
    about: "Authenticate to a registry",
    flags: &[
        v(
            "password",
            Some('p'),
            "Password or Personal Access Token (PAT)",
        ),
        b(
            "password-stdin",
            None,
            "Take the Password or Personal Access Token (PAT) from stdin",
        ),
        v("username", Some('u'), "Username"),
    ],
    interspersed: true,
    min_args: 0,
    max_args: Some(1),
};

/// `logout`'s grammar.
pub const LOGOUT: Command = Command {
    path: "logout",
    usage: "[SERVER]",
    about: "Log out from a registry",
    flags: &[],
    interspersed: true,
    min_args: 0,
    max_args: Some(1),
};

/// `push`'s grammar.
pub const PUSH: Command = Command {
    path: "push",
    usage: "[OPTIONS] NAME[:TAG]",
    about: "Upload an image to a registry",
    flags: &[
        b(
            "all-tags",
            Some('a'),
            "Push all tags of an image to the repository",
        ),
        b(
            "disable-content-trust",
            None,
            "Skip image signing (default true)",
        ),
        v(
            "platform",
            None,
            "Push a platform-specific manifest as a single-platform image to the registry",
        ),
        b("quiet", Some('q'), "Suppress verbose output"),
    ],
    interspersed: true,
    min_args: 1,
    max_args: Some(1),
};

fn prompt(label: &str) -> Result<String, CliError> {
    print!("{label}");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// `berth login`.
pub async fn login(ctx: &Ctx, m: Matches) -> CmdResult {
    let server = m.args.first().map(String::as_str).unwrap_or(INDEX_SERVER);
    let key = server_key(server);
    let mut user = m.value("username").unwrap_or("").trim().to_string();
    let mut pass = m.value("password").unwrap_or("").to_string();
    if m.flag("password-stdin") {
        if m.has("password") {
            return Err(CliError::Msg(
                "--password and --password-stdin are mutually exclusive".into(),
                1,
            ));
        }
        if user.is_empty() {
            return Err(CliError::Msg(
                "Must provide --username with --password-stdin".into(),
                1,
            ));
        }
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
        pass = s.trim_end_matches('\n').trim_end_matches('\r').to_string();
    } else if m.has("password") {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
    }
    if user.is_empty() || pass.is_empty() {
        let stored = stored_credentials(&key);
        if user.is_empty() {
            let def = stored.as_ref().map(|s| s.0.clone()).unwrap_or_default();
            let label = if def.is_empty() {
                "Username: ".to_string()
            } else {
                format!("Username ({def}): ")
            };
            user = prompt(&label)?;
            if user.is_empty() {
                user = def;
            }
            if user.is_empty() {
                return Err(CliError::Msg("Error: Non-null Username Required".into(), 1));
            }
        }
        if pass.is_empty() {
            pass = match stored.filter(|s| s.0 == user) {
                Some(s) => s.1,
                None => crate::tty::read_line_noecho("Password: ")?,
            };
            if pass.is_empty() {
                return Err(CliError::Msg("Error: Password Required".into(), 1));
            }
        }
    }
    let client = ctx.client().await?;
    let body = serde_json::json!({"username": user, "password": pass, "serveraddress": key});
    let resp = client.post("/auth", Some(&body)).await?;
    let ok: serde_json::Value = decode(resp).await?;
    let mut cfg = load_config()?;
    let helper = helper_for(&cfg, &key);
    if let Some(h) = &helper {
        let input = serde_json::json!({"ServerURL": key, "Username": user, "Secret": pass});
        run_helper(h, "store", &input.to_string()).map_err(|e| {
            CliError::Msg(
                format!("Error saving credentials: error storing credentials - err: {e}"),
                1,
            )
        })?;
    }
    let auths = object_mut(&mut cfg, "auths");
    // With a helper docker keeps an empty entry, so that the registry is still listed as logged in.
    let entry = match &helper {
        Some(_) => Value::object(Vec::<(String, Value)>::new()),
        None => Value::object([(
            "auth",
            Value::from(STANDARD.encode(format!("{user}:{pass}"))),
        )]),
    };
    let changed = match auths.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) if slot.1 == entry => false,
        Some(slot) => {
            slot.1 = entry;
            true
        }
        None => {
            auths.push((key.clone(), entry));
            true
        }
    };
    // Like docker, the file is written (and the warning shown) only when the stored login changes.
    if changed {
        save_config(&cfg)?;
    }
    if changed && helper.is_none() {
        eprintln!(
            "\nWARNING! Your credentials are stored unencrypted in '{}'.\nConfigure a credential helper to remove this warning. See\nhttps://docs.docker.com/go/credential-store/\n",
            config_file().display()
        );
    }
    println!("{}", ok["Status"].as_str().unwrap_or("Login Succeeded"));
    Ok(0)
}

/// `berth logout`.
pub async fn logout(_ctx: &Ctx, m: Matches) -> CmdResult {
    let server = m.args.first().map(String::as_str).unwrap_or(INDEX_SERVER);
    let key = server_key(server);
    let mut cfg = load_config()?;
    if let Some(h) = helper_for(&cfg, &key)
        && let Err(e) = run_helper(&h, "erase", &key)
        && !e.contains(HELPER_NOT_FOUND)
    {
        eprintln!(
            "WARNING: could not erase credentials:\n{key}: error erasing credentials - err: {e}"
        );
    }
    let auths = object_mut(&mut cfg, "auths");
    let before = auths.len();
    auths.retain(|(k, _)| server_key(k) != key);
    // docker 28 says this whether or not there was a login, and rewrites the file only if there was.
    println!("Removing login credentials for {key}");
    if auths.len() != before {
        save_config(&cfg)?;
    }
    Ok(0)
}

/// `berth push`.
pub async fn push(ctx: &Ctx, m: Matches) -> CmdResult {
    let reference = super::run::familiar_ref(&m.args[0]);
    let (name, tag) = split_tag(&m.args[0]);
    if m.flag("all-tags") && !tag.is_empty() {
        return Err(CliError::Msg(
            "tag can't be used with --all-tags/-a".into(),
            1,
        ));
    }
    let tag = if m.flag("all-tags") {
        ""
    } else if tag.is_empty() {
        "latest"
    } else {
        tag
    };
    let client = ctx.client().await?;
    let mut path = format!("/images/{}/push?tag={}", q(name), q(tag));
    if let Some(p) = m.value("platform") {
        path.push_str(&format!("&platform={}", q(p)));
    }
    if !m.flag("quiet") && !m.flag("all-tags") && split_tag(&m.args[0]).1.is_empty() {
        println!("Using default tag: latest");
    }
    let auth = registry_auth_header(name);
    let resp = client
        .send_headers(
            http::Method::POST,
            &path,
            json_body(&serde_json::json!({})),
            Some("application/json"),
            &[("X-Registry-Auth", auth)],
        )
        .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e @ ClientError::Daemon { .. }) => return Err(e.into()),
        Err(e) => return Err(e.into()),
    };
    let mut body = resp.into_body();
    match show_progress(&mut body, false, m.flag("quiet")).await {
        Ok(_) => {
            if m.flag("quiet") {
                println!("{reference}");
            }
            Ok(0)
        }
        Err(CliError::Msg(e, c)) => Err(CliError::Msg(e, c)),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_like_docker() {
        assert_eq!(server_key("127.0.0.1:5001"), "127.0.0.1:5001");
        assert_eq!(server_key("http://127.0.0.1:5001/v2/"), "127.0.0.1:5001");
        assert_eq!(server_key("docker.io"), INDEX_SERVER);
        assert_eq!(registry_of("busybox"), INDEX_SERVER);
        assert_eq!(registry_of("alice/app"), INDEX_SERVER);
        assert_eq!(registry_of("127.0.0.1:5000/team/app"), "127.0.0.1:5000");
        assert_eq!(registry_of("localhost/app"), "localhost");
        assert_eq!(
            full_ref("busybox:latest"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(full_ref("alice/app:1"), "docker.io/alice/app:1");
        assert_eq!(full_ref("127.0.0.1:5000/a/b:1"), "127.0.0.1:5000/a/b:1");
    }
}
