//! `run`, `create`, `start` and `attach`: building the create request from docker's flags, pulling a
//! missing image, and the attached session (hijacked stream, TTY raw mode and resize, signal proxy).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use berth_api::container::{
    CreateRequest, CreateResponse, EmptyObject, LogConfig, PortBinding, RestartPolicy, WaitResponse,
};
use berth_api::stdcopy::{Demuxer, StreamType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{CliError, CmdResult, Ctx};
use crate::cli::{Command, Flag, Matches, UsageError, b, l, v};
use crate::client::{Client, ClientError, Hijacked, decode, q};
use crate::tty;

macro_rules! container_flags {
    ($($extra:expr),* $(,)?) => {
        &[
            $($extra,)*
            l("add-host", None, "Add a custom host-to-IP mapping (host:ip)"),
            l("attach", Some('a'), "Attach to STDIN, STDOUT or STDERR"),
            l("cap-add", None, "Add Linux capabilities"),
            l("cap-drop", None, "Drop Linux capabilities"),
            v("blkio-weight", None, "Block IO (relative weight), between 10 and 1000, or 0 to disable"),
            v("cgroup-parent", None, "Optional parent cgroup for the container"),
            v("cgroupns", None, "Cgroup namespace to use (host|private)"),
            v("cidfile", None, "Write the container ID to the file"),
            v("cpu-period", None, "Limit CPU CFS (Completely Fair Scheduler) period"),
            v("cpu-quota", None, "Limit CPU CFS (Completely Fair Scheduler) quota"),
            v("cpu-shares", Some('c'), "CPU shares (relative weight)"),
            v("cpus", None, "Number of CPUs"),
            v("cpuset-cpus", None, "CPUs in which to allow execution (0-3, 0,1)"),
            v("cpuset-mems", None, "MEMs in which to allow execution (0-3, 0,1)"),
            l("device", None, "Add a host device to the container"),
            l("device-cgroup-rule", None, "Add a rule to the cgroup allowed devices list"),
            l("device-read-bps", None, "Limit read rate (bytes per second) from a device"),
            l("device-write-bps", None, "Limit write rate (bytes per second) to a device"),
            l("dns", None, "Set custom DNS servers"),
            l("dns-option", None, "Set DNS options"),
            l("dns-search", None, "Set custom DNS search domains"),
            v("domainname", None, "Container NIS domain name"),
            v("entrypoint", None, "Overwrite the default ENTRYPOINT of the image"),
            l("env", Some('e'), "Set environment variables"),
            l("env-file", None, "Read in a file of environment variables"),
            l("expose", None, "Expose a port or a range of ports"),
            l("group-add", None, "Add additional groups to join"),
            v("hostname", Some('h'), "Container host name"),
            b("init", None, "Run an init inside the container that forwards signals and reaps processes"),
            b("interactive", Some('i'), "Keep STDIN open even if not attached"),
            v("ip", None, "IPv4 address (e.g., 172.30.100.104)"),
            v("ipc", None, "IPC mode to use"),
            l("label", Some('l'), "Set meta data on a container"),
            v("log-driver", None, "Logging driver for the container"),
            l("log-opt", None, "Log driver options"),
            v("memory", Some('m'), "Memory limit"),
            v("memory-reservation", None, "Memory soft limit"),
            v("memory-swap", None, "Swap limit equal to memory plus swap: '-1' to enable unlimited swap"),
            l("mount", None, "Attach a filesystem mount to the container"),
            v("name", None, "Assign a name to the container"),
            v("mac-address", None, "Container MAC address (e.g., 92:d0:c6:0a:29:33)"),
            v("network", None, "Connect a container to a network"),
            b("oom-kill-disable", None, "Disable OOM Killer"),
            v("oom-score-adj", None, "Tune host's OOM preferences (-1000 to 1000)"),
            l("network-alias", None, "Add network-scoped alias for the container"),
            v("pid", None, "PID namespace to use"),
            v("pids-limit", None, "Tune container pids limit (set -1 for unlimited)"),
            v("platform", None, "Set platform if server is multi-platform capable"),
            b("privileged", None, "Give extended privileges to this container"),
            l("publish", Some('p'), "Publish a container's port(s) to the host"),
            b("publish-all", Some('P'), "Publish all exposed ports to random ports"),
            v("pull", None, "Pull image before running (\"always\", \"missing\", \"never\")"),
            b("quiet", Some('q'), "Suppress the pull output"),
            b("read-only", None, "Mount the container's root filesystem as read only"),
            v("restart", None, "Restart policy to apply when a container exits"),
            b("rm", None, "Automatically remove the container and its associated anonymous volumes when it exits"),
            v("runtime", None, "Runtime to use for this container"),
            l("security-opt", None, "Security Options"),
            v("shm-size", None, "Size of /dev/shm"),
            v("stop-signal", None, "Signal to stop the container"),
            v("stop-timeout", None, "Timeout (in seconds) to stop a container"),
            l("sysctl", None, "Sysctl options"),
            l("tmpfs", None, "Mount a tmpfs directory"),
            b("tty", Some('t'), "Allocate a pseudo-TTY"),
            l("ulimit", None, "Ulimit options"),
            v("user", Some('u'), "Username or UID (format: <name|uid>[:<group|gid>])"),
            v("userns", None, "User namespace to use"),
            v("uts", None, "UTS namespace to use"),
            l("volume", Some('v'), "Bind mount a volume"),
            l("volumes-from", None, "Mount volumes from the specified container(s)"),
            v("workdir", Some('w'), "Working directory inside the container"),
        ]
    };
}

const RUN_FLAGS: &[Flag] = container_flags!(
    b(
        "detach",
        Some('d'),
        "Run container in background and print container ID"
    ),
    v(
        "detach-keys",
        None,
        "Override the key sequence for detaching a container"
    ),
    b(
        "sig-proxy",
        None,
        "Proxy received signals to the process (default true)"
    ),
);
const CREATE_FLAGS: &[Flag] = container_flags!();

/// `run`'s grammar.
pub const RUN: Command = Command {
    path: "run",
    usage: "[OPTIONS] IMAGE [COMMAND] [ARG...]",
    about: "Create and run a new container from an image",
    flags: RUN_FLAGS,
    interspersed: false,
    min_args: 1,
    max_args: None,
};

/// `create`'s grammar.
pub const CREATE: Command = Command {
    path: "create",
    usage: "[OPTIONS] IMAGE [COMMAND] [ARG...]",
    about: "Create a new container",
    flags: CREATE_FLAGS,
    ..RUN
};

/// `start`'s grammar.
pub const START: Command = Command {
    path: "start",
    usage: "[OPTIONS] CONTAINER [CONTAINER...]",
    about: "Start one or more stopped containers",
    flags: &[
        b(
            "attach",
            Some('a'),
            "Attach STDOUT/STDERR and forward signals",
        ),
        v(
            "detach-keys",
            None,
            "Override the key sequence for detaching a container",
        ),
        b("interactive", Some('i'), "Attach container's STDIN"),
    ],
    interspersed: true,
    min_args: 1,
    max_args: None,
};

/// `attach`'s grammar.
pub const ATTACH: Command = Command {
    path: "attach",
    usage: "[OPTIONS] CONTAINER",
    about: "Attach local standard input, output, and error streams to a running container",
    flags: &[
        v(
            "detach-keys",
            None,
            "Override the key sequence for detaching a container",
        ),
        b("no-stdin", None, "Do not attach STDIN"),
        b(
            "sig-proxy",
            None,
            "Proxy all received signals to the process (default true)",
        ),
    ],
    interspersed: true,
    min_args: 1,
    max_args: Some(1),
};

/// Options that shape `create` beyond the body.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CreateOpts {
    /// `--name`.
    pub name: Option<String>,
    /// `--platform`.
    pub platform: Option<String>,
    /// `--pull`: missing, always or never.
    pub pull: String,
    /// `-q`.
    pub quiet: bool,
}

fn parse_port_spec(spec: &str) -> Result<(String, PortBinding), String> {
    let (main, proto) = match spec.rsplit_once('/') {
        Some((m, p)) => (m, p),
        None => (spec, "tcp"),
    };
    // ip:host:container, host:container, container; IPv6 addresses come in brackets.
    let (ip, rest) = if let Some(r) = main.strip_prefix('[') {
        let (ip, rest) = r
            .split_once("]:")
            .ok_or_else(|| format!("invalid IP address: {main}"))?;
        (ip.to_string(), rest.to_string())
    } else {
        let parts: Vec<&str> = main.split(':').collect();
        match parts.len() {
            1 | 2 => (String::new(), main.to_string()),
            3 => (parts[0].to_string(), format!("{}:{}", parts[1], parts[2])),
            _ => return Err(format!("invalid proto: {spec}")),
        }
    };
    let (host, cport) = match rest.split_once(':') {
        Some((h, c)) => (h.to_string(), c.to_string()),
        None => (String::new(), rest),
    };
    if cport.is_empty() || !cport.chars().all(|c| c.is_ascii_digit() || c == '-') {
        return Err(format!("invalid containerPort: {cport}"));
    }
    Ok((
        format!("{cport}/{proto}"),
        PortBinding {
            host_ip: ip,
            host_port: host,
        },
    ))
}

pub(crate) fn parse_env_file(path: &str) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("open {path}: {e}"))?;
    Ok(text
        .lines()
        .map(str::trim_start)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            if l.contains('=') {
                Some(l.to_string())
            } else {
                std::env::var(l).ok().map(|v| format!("{l}={v}"))
            }
        })
        .collect())
}

/// Builds the `POST /containers/create` body from `run`/`create` flags, as the docker CLI does.
pub fn build_create(m: &Matches, is_run: bool) -> Result<(CreateRequest, CreateOpts), UsageError> {
    let image = m.args[0].clone();
    let cmd: Vec<String> = m.args[1..].to_vec();
    let detach = is_run && m.flag("detach");
    let mut req = CreateRequest::default();
    let c = &mut req.config;
    c.image = image;
    if !cmd.is_empty() {
        c.cmd = Some(cmd);
    }
    c.tty = m.flag("tty");
    c.open_stdin = m.flag("interactive");
    let attach = m.values("attach");
    if !attach.is_empty() {
        if detach {
            return Err(UsageError {
                path: "run".into(),
                usage: RUN.usage.into(),
                msg: "Conflicting options: -a and -d".into(),
                args: false,
            });
        }
        for a in attach {
            match a.to_lowercase().as_str() {
                "stdin" => c.attach_stdin = true,
                "stdout" => c.attach_stdout = true,
                "stderr" => c.attach_stderr = true,
                _ => {
                    return Err(m.bad_value(
                        "attach",
                        a,
                        "valid streams are STDIN, STDOUT and STDERR",
                    ));
                }
            }
        }
    } else if !detach {
        c.attach_stdout = true;
        c.attach_stderr = true;
        c.attach_stdin = c.open_stdin;
    }
    if c.attach_stdin && c.open_stdin {
        c.stdin_once = true;
    }
    let mut env = Vec::new();
    for f in m.values("env-file") {
        env.extend(parse_env_file(f).map_err(|e| m.bad_value("env-file", f, &e))?);
    }
    for e in m.values("env") {
        if e.contains('=') {
            env.push(e.clone());
        } else if let Ok(v) = std::env::var(e) {
            env.push(format!("{e}={v}"));
        } else {
            env.push(e.clone());
        }
    }
    c.env = env;
    if let Some(w) = m.value("workdir") {
        c.working_dir = w.to_string();
    }
    if let Some(u) = m.value("user") {
        c.user = u.to_string();
    }
    if let Some(h) = m.value("hostname") {
        c.hostname = h.to_string();
    }
    if let Some(d) = m.value("domainname") {
        c.domainname = d.to_string();
    }
    if let Some(e) = m.value("entrypoint") {
        c.entrypoint = Some(vec![e.to_string()]);
    }
    for lb in m.values("label") {
        let (k, v) = lb.split_once('=').unwrap_or((lb, ""));
        c.labels.insert(k.to_string(), v.to_string());
    }
    if let Some(s) = m.value("stop-signal") {
        c.stop_signal = Some(s.to_string());
    }
    c.stop_timeout = m.int("stop-timeout")?;
    let mut exposed: BTreeMap<String, EmptyObject> = BTreeMap::new();
    for e in m.values("expose") {
        let p = if e.contains('/') {
            e.clone()
        } else {
            format!("{e}/tcp")
        };
        exposed.insert(p, EmptyObject::new());
    }
    let h = &mut req.host_config;
    for p in m.values("publish") {
        let (port, binding) = parse_port_spec(p).map_err(|e| m.bad_value("publish", p, &e))?;
        exposed.insert(port.clone(), EmptyObject::new());
        h.port_bindings
            .entry(port)
            .or_insert_with(|| Some(vec![]))
            .get_or_insert_with(Vec::new)
            .push(binding);
    }
    if !exposed.is_empty() {
        c.exposed_ports = Some(exposed);
    }
    let mut volumes: BTreeMap<String, EmptyObject> = BTreeMap::new();
    for vol in m.values("volume") {
        if vol.contains(':') {
            h.binds.push(vol.clone());
        } else {
            volumes.insert(vol.clone(), EmptyObject::new());
        }
    }
    c.volumes = Some(volumes);
    h.auto_remove = m.flag("rm");
    h.network_mode = m.value("network").unwrap_or("default").to_string();
    if m.flag("init") {
        h.init = Some(true);
    }
    h.privileged = m.flag("privileged");
    h.publish_all_ports = m.flag("publish-all");
    h.cap_add = m.values("cap-add").to_vec();
    h.cap_drop = m.values("cap-drop").to_vec();
    h.dns = m.values("dns").to_vec();
    h.dns_options = m.values("dns-option").to_vec();
    h.dns_search = m.values("dns-search").to_vec();
    h.extra_hosts = m.values("add-host").to_vec();
    h.security_opt = security_opts(m.values("security-opt"))
        .map_err(|(o, e)| m.bad_value("security-opt", &o, &e))?;
    h.readonly_rootfs = m.flag("read-only");
    h.ipc_mode = m.value("ipc").unwrap_or("").to_string();
    h.pid_mode = m.value("pid").unwrap_or("").to_string();
    h.uts_mode = m.value("uts").unwrap_or("").to_string();
    h.runtime = m.value("runtime").unwrap_or("").to_string();
    h.container_id_file = m.value("cidfile").unwrap_or("").to_string();
    h.cpuset_cpus = m.value("cpuset-cpus").unwrap_or("").to_string();
    h.cpu_shares = m.int("cpu-shares")?.unwrap_or(0);
    if let Some(mem) = m.value("memory") {
        h.memory = crate::format::ram_in_bytes(mem).map_err(|e| m.bad_value("memory", mem, &e))?;
    }
    if let Some(sw) = m.value("memory-swap") {
        h.memory_swap = if sw == "-1" {
            -1
        } else {
            crate::format::ram_in_bytes(sw).map_err(|e| m.bad_value("memory-swap", sw, &e))?
        };
    }
    if let Some(cpus) = m.value("cpus") {
        let f: f64 = cpus
            .parse()
            .map_err(|_| m.bad_value("cpus", cpus, "failed to parse as a rational number"))?;
        h.nano_cpus = (f * 1e9) as i64;
    }
    h.pids_limit = m.int("pids-limit")?;
    if let Some(s) = m.value("shm-size") {
        h.shm_size =
            Some(crate::format::ram_in_bytes(s).map_err(|e| m.bad_value("shm-size", s, &e))?);
    }
    let restart = m.value("restart").unwrap_or("no");
    let (rname, rcount) = match restart.split_once(':') {
        Some((n, c)) => (
            n,
            c.parse().map_err(|_| {
                m.bad_value("restart", restart, "maximum retry count must be an integer")
            })?,
        ),
        None => (restart, 0),
    };
    if !["no", "always", "on-failure", "unless-stopped"].contains(&rname) {
        return Err(m.bad_value(
            "restart",
            restart,
            &format!("invalid restart policy: {rname}"),
        ));
    }
    if rname != "no" && h.auto_remove {
        return Err(UsageError {
            path: "run".into(),
            usage: RUN.usage.into(),
            msg: "Conflicting options: --restart and --rm".into(),
            args: false,
        });
    }
    h.restart_policy = RestartPolicy {
        name: rname.to_string(),
        maximum_retry_count: rcount,
    };
    let mut log_opts = BTreeMap::new();
    for o in m.values("log-opt") {
        let (k, v) = o
            .split_once('=')
            .ok_or_else(|| m.bad_value("log-opt", o, "invalid key-value pair"))?;
        log_opts.insert(k.to_string(), v.to_string());
    }
    h.log_config = LogConfig {
        kind: m.value("log-driver").unwrap_or("").to_string(),
        config: log_opts,
    };
    let tmpfs: serde_json::Map<String, serde_json::Value> = m
        .values("tmpfs")
        .iter()
        .map(|t| {
            let (p, o) = t.split_once(':').unwrap_or((t, ""));
            (p.to_string(), serde_json::Value::String(o.to_string()))
        })
        .collect();
    if !tmpfs.is_empty() {
        h.extra
            .insert("Tmpfs".into(), serde_json::Value::Object(tmpfs));
    }
    let sysctls: serde_json::Map<String, serde_json::Value> = m
        .values("sysctl")
        .iter()
        .filter_map(|s| s.split_once('='))
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
        .collect();
    if !sysctls.is_empty() {
        h.extra
            .insert("Sysctls".into(), serde_json::Value::Object(sysctls));
    }
    isolation_flags(m, h)?;
    if !m.values("group-add").is_empty() {
        h.extra
            .insert("GroupAdd".into(), serde_json::json!(m.values("group-add")));
    }
    if c.tty
        && tty::stdout_is_tty()
        && let Some((rows, cols)) = tty::size()
    {
        h.console_size = Some([rows as u32, cols as u32]);
    }
    if !m.values("volumes-from").is_empty() {
        h.extra.insert(
            "VolumesFrom".into(),
            serde_json::json!(m.values("volumes-from")),
        );
    }
    req.networking_config = Some(super::network::endpoints_config(
        &h.network_mode,
        m.value("ip"),
        m.values("network-alias"),
        m.value("mac-address"),
    ));
    let pull = m.value("pull").unwrap_or("missing").to_string();
    if !["missing", "always", "never"].contains(&pull.as_str()) {
        return Err(m.bad_value(
            "pull",
            &pull,
            "invalid pull option: must be one of \"always\", \"missing\" or \"never\"",
        ));
    }
    Ok((
        req,
        CreateOpts {
            name: m.value("name").map(str::to_string),
            platform: m.value("platform").map(str::to_string),
            pull,
            quiet: m.flag("quiet"),
        },
    ))
}

/// The image reference as docker prints it: a missing tag becomes `:latest`.
pub fn familiar_ref(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last.contains(':') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

/// Creates the container, pulling the image when it is missing (docker's `createContainer`).
pub async fn create_container(
    client: &Client,
    req: &CreateRequest,
    opts: &CreateOpts,
) -> Result<String, CliError> {
    let mut path = String::from("/containers/create");
    let mut qs = Vec::new();
    if let Some(n) = &opts.name {
        qs.push(format!("name={}", q(n)));
    }
    if let Some(p) = &opts.platform {
        qs.push(format!("platform={}", q(p)));
    }
    if !qs.is_empty() {
        path = format!("{path}?{}", qs.join("&"));
    }
    let image = familiar_ref(&req.config.image);
    if opts.pull == "always" {
        super::image::pull_image(client, &image, opts.platform.as_deref(), true, opts.quiet)
            .await?;
    }
    let resp = match client.post(&path, Some(req)).await {
        Err(e) if e.is_not_found() && opts.pull == "missing" => {
            eprintln!("Unable to find image '{image}' locally");
            super::image::pull_image(client, &image, opts.platform.as_deref(), true, opts.quiet)
                .await?;
            client.post(&path, Some(req)).await?
        }
        r => r?,
    };
    let created: CreateResponse = decode(resp).await?;
    for w in &created.warnings {
        eprintln!("WARNING: {w}");
    }
    if !req.host_config.container_id_file.is_empty() {
        std::fs::write(&req.host_config.container_id_file, &created.id)?;
    }
    Ok(created.id)
}

/// docker's `runStartContainerErr`: 127 for a missing executable, 126 for one that cannot run, else 125.
pub fn start_error_code(message: &str) -> i32 {
    let m = message.trim_start_matches("Error response from daemon: ");
    if m.contains("executable file not found")
        || m.contains("no such file or directory")
        || m.contains("system cannot find the file specified")
    {
        127
    } else if m.contains("permission denied") || m.contains("is a directory") {
        126
    } else {
        125
    }
}

fn run_error(cmd: &Command, e: &CliError) -> CliError {
    if let CliError::Usage(_) | CliError::Exit(_) = e {
        return CliError::Exit(e.exit_code());
    }
    eprintln!(
        "berth: {e}\n\nRun 'berth {} --help' for more information",
        cmd.path
    );
    CliError::Exit(125)
}

/// `berth create`.
pub async fn create(ctx: &Ctx, cmd: &Command, m: Matches) -> CmdResult {
    let (req, opts) = build_create(&m, false)?;
    let client = ctx.client().await.map_err(|e| run_error(cmd, &e.into()))?;
    let id = create_container(&client, &req, &opts)
        .await
        .map_err(|e| run_error(cmd, &e))?;
    println!("{id}");
    Ok(0)
}

/// Which streams to attach and how.
#[derive(Debug, Clone, Default)]
pub struct AttachOpts {
    /// Send our stdin.
    pub stdin: bool,
    /// Receive stdout.
    pub stdout: bool,
    /// Receive stderr.
    pub stderr: bool,
    /// The container has a TTY (raw stream, no multiplexing).
    pub tty: bool,
    /// `--detach-keys`.
    pub detach_keys: Option<String>,
    /// Forward signals to the container (only without a TTY).
    pub sig_proxy: bool,
}

/// Parses docker's detach key spec (`ctrl-p,ctrl-q`) into bytes.
pub fn parse_detach_keys(spec: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for k in spec.split(',') {
        let lower = k.to_lowercase();
        if let Some(c) = lower.strip_prefix("ctrl-") {
            let b = match c.as_bytes() {
                [c @ b'a'..=b'z'] => c - b'a' + 1,
                [b'@'] => 0,
                [b'['] => 27,
                [b'\\'] => 28,
                [b']'] => 29,
                [b'^'] => 30,
                [b'_'] => 31,
                _ => return Err(format!("Invalid detach keys ({spec}) provided")),
            };
            out.push(b);
        } else if k.len() == 1 {
            out.push(k.as_bytes()[0]);
        } else {
            return Err(format!("Invalid detach keys ({spec}) provided"));
        }
    }
    Ok(out)
}

/// Tracks whether the detach sequence went by in the typed input.
#[derive(Debug)]
pub struct DetachMatcher {
    keys: Vec<u8>,
    pos: usize,
}

impl DetachMatcher {
    /// A matcher for `keys`.
    pub fn new(keys: Vec<u8>) -> Self {
        DetachMatcher { keys, pos: 0 }
    }

    /// Feeds typed bytes; true once the whole sequence was seen.
    pub fn feed(&mut self, data: &[u8]) -> bool {
        if self.keys.is_empty() {
            return false;
        }
        for &b in data {
            if b == self.keys[self.pos] {
                self.pos += 1;
                if self.pos == self.keys.len() {
                    self.pos = 0;
                    return true;
                }
            } else {
                self.pos = usize::from(b == self.keys[0]);
            }
        }
        false
    }
}

async fn open_attach(client: &Client, id: &str, o: &AttachOpts) -> Result<Hijacked, ClientError> {
    let mut path = format!(
        "/containers/{id}/attach?stream=1&stdin={}&stdout={}&stderr={}",
        u8::from(o.stdin),
        u8::from(o.stdout),
        u8::from(o.stderr)
    );
    if let Some(k) = &o.detach_keys {
        path.push_str(&format!("&detachKeys={}", q(k)));
    }
    client.hijack(&path).await
}

/// Starts `POST /containers/{id}/wait` and returns once the daemon has answered with headers
/// (or after a short grace period), so that the waiter is registered before the container starts.
async fn start_wait(
    client: &Client,
    id: &str,
    condition: &str,
) -> tokio::task::JoinHandle<Result<WaitResponse, ClientError>> {
    let c = client.clone();
    let path = format!("/containers/{id}/wait?condition={condition}");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let resp = c.post::<()>(&path, None).await;
        let _ = tx.send(());
        decode::<WaitResponse>(resp?).await
    });
    let _ = tokio::time::timeout(std::time::Duration::from_millis(200), rx).await;
    task
}

async fn resize(client: &Client, id: &str) {
    if let Some((h, w)) = tty::size() {
        let _ = client
            .post_empty(&format!("/containers/{id}/resize?h={h}&w={w}"))
            .await;
    }
}

fn spawn_resize_monitor(client: &Client, id: &str) {
    let c = client.clone();
    let id = id.to_string();
    tokio::spawn(async move {
        resize(&c, &id).await;
        let Ok(mut sig) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        else {
            return;
        };
        while sig.recv().await.is_some() {
            resize(&c, &id).await;
        }
    });
}

pub(crate) fn spawn_signal_proxy(client: &Client, id: &str) {
    use tokio::signal::unix::{SignalKind, signal};
    for (kind, name) in [
        (SignalKind::interrupt(), "SIGINT"),
        (SignalKind::terminate(), "SIGTERM"),
        (SignalKind::hangup(), "SIGHUP"),
        (SignalKind::quit(), "SIGQUIT"),
        (SignalKind::user_defined1(), "SIGUSR1"),
        (SignalKind::user_defined2(), "SIGUSR2"),
    ] {
        let c = client.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            let Ok(mut s) = signal(kind) else { return };
            while s.recv().await.is_some() {
                let _ = c
                    .post_empty(&format!("/containers/{id}/kill?signal={name}"))
                    .await;
            }
        });
    }
}

/// Copies the hijacked stream to our stdout/stderr (and stdin to it) until the container's output ends.
/// Returns true when the user typed the detach sequence.
pub(crate) async fn pump(conn: Hijacked, o: &AttachOpts) -> Result<bool, CliError> {
    let (mut rd, mut wr) = tokio::io::split(conn);
    let detached = Arc::new(AtomicBool::new(false));
    if o.stdin {
        let keys = parse_detach_keys(o.detach_keys.as_deref().unwrap_or("ctrl-p,ctrl-q"))
            .unwrap_or_default();
        let det = detached.clone();
        tokio::spawn(async move {
            let mut matcher = DetachMatcher::new(keys);
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                let n = match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if matcher.feed(&buf[..n]) {
                    det.store(true, Ordering::SeqCst);
                }
                if wr.write_all(&buf[..n]).await.is_err() || wr.flush().await.is_err() {
                    return;
                }
            }
            let _ = wr.shutdown().await;
            // Keep the write half alive: dropping it early must not tear down the read side.
            std::future::pending::<()>().await;
        });
    } else {
        // Not sending stdin: half-close our side like docker does so the daemon knows.
        drop(wr);
    }
    let mut out = tokio::io::stdout();
    let mut err = tokio::io::stderr();
    let mut buf = vec![0u8; 32 * 1024];
    let mut demux = Demuxer::default();
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e.into()),
        };
        if o.tty {
            out.write_all(&buf[..n]).await?;
            out.flush().await?;
            continue;
        }
        demux.feed(&buf[..n]);
        while let Some((st, data)) = demux.next_frame().map_err(|e| CliError::Msg(e, 1))? {
            match st {
                StreamType::Stderr => {
                    err.write_all(&data).await?;
                    err.flush().await?;
                }
                _ => {
                    out.write_all(&data).await?;
                    out.flush().await?;
                }
            }
        }
    }
    Ok(detached.load(Ordering::SeqCst))
}

/// Attaches, registers a waiter, starts the container and streams until it ends; returns its exit code.
async fn attach_start_wait(
    client: &Client,
    id: &str,
    o: &AttachOpts,
    auto_remove: bool,
    start: bool,
) -> Result<i32, CliError> {
    if let Some(k) = &o.detach_keys {
        parse_detach_keys(k).map_err(|e| CliError::Msg(e, 125))?;
    }
    let conn = open_attach(client, id, o).await?;
    let waiter = start_wait(
        client,
        id,
        if auto_remove { "removed" } else { "next-exit" },
    )
    .await;
    let _raw = if o.tty && o.stdin && tty::stdin_is_tty() {
        Some(tty::RawGuard::enable()?)
    } else {
        None
    };
    if start {
        client
            .post_empty(&format!("/containers/{id}/start"))
            .await?;
    }
    if o.tty && tty::stdout_is_tty() {
        spawn_resize_monitor(client, id);
    }
    if o.sig_proxy && !o.tty {
        spawn_signal_proxy(client, id);
    }
    let detached = pump(conn, o).await?;
    if detached {
        return Ok(0);
    }
    let res = waiter
        .await
        .map_err(|e| CliError::Msg(e.to_string(), 125))??;
    drop(_raw);
    if let Some(e) = res.error
        && !e.message.is_empty()
    {
        eprintln!("{}", e.message);
    }
    Ok(res.status_code as i32)
}

/// `berth run`.
pub async fn run(ctx: &Ctx, cmd: &Command, m: Matches) -> CmdResult {
    let (req, opts) = build_create(&m, true)?;
    let c = &req.config;
    if c.tty && c.attach_stdin && !tty::stdin_is_tty() {
        eprintln!("the input device is not a TTY");
        return Ok(1);
    }
    let detach = m.flag("detach");
    let client = ctx.client().await.map_err(|e| run_error(cmd, &e.into()))?;
    let id = create_container(&client, &req, &opts)
        .await
        .map_err(|e| run_error(cmd, &e))?;
    if detach {
        if let Err(e) = client.post_empty(&format!("/containers/{id}/start")).await {
            eprintln!(
                "berth: {e}\n\nRun 'berth {} --help' for more information",
                cmd.path
            );
            return Ok(start_error_code(&e.to_string()));
        }
        println!("{id}");
        return Ok(0);
    }
    let o = AttachOpts {
        stdin: c.attach_stdin,
        stdout: c.attach_stdout,
        stderr: c.attach_stderr,
        tty: c.tty,
        detach_keys: m.value("detach-keys").map(str::to_string),
        sig_proxy: !m.has("sig-proxy") || m.flag("sig-proxy"),
    };
    match attach_start_wait(&client, &id, &o, req.host_config.auto_remove, true).await {
        Ok(code) => Ok(code),
        Err(CliError::Client(e @ ClientError::Daemon { .. })) => {
            eprintln!(
                "berth: {e}\n\nRun 'berth {} --help' for more information",
                cmd.path
            );
            Ok(start_error_code(&e.to_string()))
        }
        Err(e) => Err(run_error(cmd, &e)),
    }
}

async fn inspect_config(
    client: &Client,
    id: &str,
) -> Result<berth_api::container::Config, CliError> {
    let v: serde_json::Value = client.get(&format!("/containers/{id}/json")).await?;
    Ok(serde_json::from_value(v.get("Config").cloned().unwrap_or_default()).unwrap_or_default())
}

/// `berth start`.
pub async fn start(ctx: &Ctx, m: Matches) -> CmdResult {
    let client = ctx.client().await?;
    if m.flag("attach") || m.flag("interactive") {
        if m.args.len() > 1 {
            return Err(CliError::Msg(
                "you cannot start and attach multiple containers at once".into(),
                1,
            ));
        }
        let id = &m.args[0];
        let cfg = inspect_config(&client, id).await?;
        let o = AttachOpts {
            stdin: m.flag("interactive") && cfg.open_stdin,
            stdout: true,
            stderr: true,
            tty: cfg.tty,
            detach_keys: m.value("detach-keys").map(str::to_string),
            sig_proxy: true,
        };
        return match attach_start_wait(&client, id, &o, false, true).await {
            Ok(code) => Ok(code),
            Err(CliError::Client(e @ ClientError::Daemon { .. })) => {
                eprintln!("{e}");
                Ok(1)
            }
            Err(e) => Err(e),
        };
    }
    let mut failed = Vec::new();
    for a in &m.args {
        match client
            .post_empty(&format!("/containers/{}/start", q(a)))
            .await
        {
            Ok(()) => println!("{a}"),
            Err(e @ ClientError::Connect(_)) => return Err(e.into()),
            Err(e) => {
                eprintln!("{e}");
                failed.push(a.as_str());
            }
        }
    }
    if failed.is_empty() {
        Ok(0)
    } else {
        Err(CliError::Msg(
            format!("Error: failed to start containers: {}", failed.join(", ")),
            1,
        ))
    }
}

/// `berth attach`.
pub async fn attach(ctx: &Ctx, m: Matches) -> CmdResult {
    let client = ctx.client().await?;
    let id = &m.args[0];
    let v: serde_json::Value = client.get(&format!("/containers/{id}/json")).await?;
    if v["State"]["Running"] != serde_json::Value::Bool(true) {
        return Err(CliError::Msg(
            "You cannot attach to a stopped container, start it first".into(),
            1,
        ));
    }
    if v["State"]["Restarting"] == serde_json::Value::Bool(true) {
        return Err(CliError::Msg(
            "You cannot attach to a restarting container, wait until it is running".into(),
            1,
        ));
    }
    let cfg: berth_api::container::Config =
        serde_json::from_value(v["Config"].clone()).unwrap_or_default();
    let o = AttachOpts {
        stdin: !m.flag("no-stdin") && cfg.open_stdin,
        stdout: true,
        stderr: true,
        tty: cfg.tty,
        detach_keys: m.value("detach-keys").map(str::to_string),
        sig_proxy: !m.has("sig-proxy") || m.flag("sig-proxy"),
    };
    attach_start_wait(&client, id, &o, false, false).await
}

/// `--security-opt`: as the docker CLI, a seccomp profile file is sent as its content.
fn security_opts(opts: &[String]) -> Result<Vec<String>, (String, String)> {
    let mut out = Vec::new();
    for o in opts {
        match o.split_once(['=', ':']) {
            Some(("seccomp", f)) if f != "unconfined" && f != "builtin" => {
                let text = std::fs::read_to_string(f).map_err(|e| {
                    (
                        o.clone(),
                        format!("opening seccomp profile ({f}) failed: {e}"),
                    )
                })?;
                let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                    (
                        o.clone(),
                        format!("compacting json for seccomp profile ({f}) failed: {e}"),
                    )
                })?;
                out.push(format!("seccomp={v}"));
            }
            _ => out.push(o.clone()),
        }
    }
    Ok(out)
}

/// Resource and isolation flags the daemon reads from `HostConfig` (dockerd's field names).
fn isolation_flags(
    m: &Matches,
    h: &mut berth_api::container::HostConfig,
) -> Result<(), UsageError> {
    use serde_json::{Value, json};
    let x = &mut h.extra;
    let bytes =
        |flag: &str, v: &str| crate::format::ram_in_bytes(v).map_err(|e| m.bad_value(flag, v, &e));
    let int = |flag: &str, v: &str| {
        v.parse::<i64>()
            .map_err(|_| m.bad_value(flag, v, "invalid number"))
    };
    for (flag, key) in [
        ("cgroup-parent", "CgroupParent"),
        ("cgroupns", "CgroupnsMode"),
        ("cpuset-mems", "CpusetMems"),
        ("userns", "UsernsMode"),
    ] {
        if let Some(v) = m.value(flag) {
            x.insert(key.into(), json!(v));
        }
    }
    if let Some(v) = m.value("memory-reservation") {
        x.insert(
            "MemoryReservation".into(),
            json!(bytes("memory-reservation", v)?),
        );
    }
    for (flag, key) in [
        ("blkio-weight", "BlkioWeight"),
        ("oom-score-adj", "OomScoreAdj"),
    ] {
        if let Some(v) = m.value(flag) {
            x.insert(key.into(), json!(int(flag, v)?));
        }
    }
    if let Some(v) = m.value("cpu-period") {
        h.cpu_period = int("cpu-period", v)?;
    }
    if let Some(v) = m.value("cpu-quota") {
        h.cpu_quota = int("cpu-quota", v)?;
    }
    let x = &mut h.extra;
    if m.flag("oom-kill-disable") {
        x.insert("OomKillDisable".into(), json!(true));
    }
    let mut ulimits = Vec::new();
    for u in m.values("ulimit") {
        let bad = || m.bad_value("ulimit", u, &format!("invalid ulimit argument: {u}"));
        let (name, lim) = u.split_once('=').ok_or_else(bad)?;
        let (soft, hard) = lim.split_once(':').unwrap_or((lim, lim));
        let (soft, hard): (i64, i64) = (
            soft.parse().map_err(|_| bad())?,
            hard.parse().map_err(|_| bad())?,
        );
        ulimits.push(json!({"Name": name, "Soft": soft, "Hard": hard}));
    }
    if !ulimits.is_empty() {
        x.insert("Ulimits".into(), Value::Array(ulimits));
    }
    let mut devices = Vec::new();
    for d in m.values("device") {
        let parts: Vec<&str> = d.split(':').collect();
        let (host, inside, perms) = match parts.as_slice() {
            [h] => (*h, *h, "rwm"),
            [h, p] if p.chars().all(|c| "rwm".contains(c)) => (*h, *h, *p),
            [h, c] => (*h, *c, "rwm"),
            [h, c, p] => (*h, *c, *p),
            _ => {
                return Err(m.bad_value(
                    "device",
                    d,
                    &format!("invalid device specification: {d}"),
                ));
            }
        };
        devices.push(
            json!({"PathOnHost": host, "PathInContainer": inside, "CgroupPermissions": perms}),
        );
    }
    if !devices.is_empty() {
        x.insert("Devices".into(), Value::Array(devices));
    }
    if !m.values("device-cgroup-rule").is_empty() {
        x.insert(
            "DeviceCgroupRules".into(),
            json!(m.values("device-cgroup-rule")),
        );
    }
    for (flag, key) in [
        ("device-read-bps", "BlkioDeviceReadBps"),
        ("device-write-bps", "BlkioDeviceWriteBps"),
    ] {
        let mut list = Vec::new();
        for t in m.values(flag) {
            let (path, rate) = t
                .rsplit_once(':')
                .ok_or_else(|| m.bad_value(flag, t, &format!("bad format: {t}")))?;
            let rate = crate::format::ram_in_bytes(rate).map_err(|e| m.bad_value(flag, t, &e))?;
            list.push(json!({"Path": path, "Rate": rate}));
        }
        if !list.is_empty() {
            x.insert(key.into(), Value::Array(list));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> (CreateRequest, CreateOpts) {
        let argv: Vec<String> = s.split_whitespace().map(String::from).collect();
        let m = RUN.parse(&argv).unwrap();
        build_create(&m, true).unwrap()
    }

    #[test]
    fn run_flags_stop_at_image() {
        let (r, o) =
            parse("--rm -it --name web -e A=1 -l x=y -w /tmp -u 1000 busybox:local ls -l /");
        assert_eq!(r.config.image, "busybox:local");
        assert_eq!(
            r.config.cmd,
            Some(vec!["ls".into(), "-l".into(), "/".into()])
        );
        assert!(
            r.config.tty && r.config.open_stdin && r.config.attach_stdin && r.config.stdin_once
        );
        assert!(r.host_config.auto_remove);
        assert_eq!(o.name.as_deref(), Some("web"));
        assert_eq!(r.config.env, ["A=1"]);
        assert_eq!(r.config.labels["x"], "y");
        assert_eq!(r.config.working_dir, "/tmp");
        assert_eq!(r.config.user, "1000");
        assert_eq!(r.host_config.network_mode, "default");
        assert_eq!(r.host_config.restart_policy.name, "no");
    }

    #[test]
    fn detached_run_attaches_nothing() {
        let (r, _) = parse("-d busybox sh -c x");
        assert!(!r.config.attach_stdout && !r.config.attach_stderr && !r.config.attach_stdin);
    }

    #[test]
    fn resources_ports_and_volumes() {
        let (r, _) = parse(
            "-m 512m --cpus 1.5 --pids-limit 10 -p 127.0.0.1:8080:80 -p 53/udp -v /h:/c -v /anon --restart on-failure:3 --tmpfs /run:size=1m img",
        );
        let h = &r.host_config;
        assert_eq!(h.memory, 512 << 20);
        assert_eq!(h.nano_cpus, 1_500_000_000);
        assert_eq!(h.pids_limit, Some(10));
        assert_eq!(
            h.port_bindings["80/tcp"],
            Some(vec![PortBinding {
                host_ip: "127.0.0.1".into(),
                host_port: "8080".into()
            }])
        );
        assert!(h.port_bindings.contains_key("53/udp"));
        assert_eq!(h.binds, ["/h:/c"]);
        assert!(r.config.volumes.as_ref().unwrap().contains_key("/anon"));
        assert_eq!(h.restart_policy.maximum_retry_count, 3);
        assert_eq!(h.extra["Tmpfs"]["/run"], "size=1m");
        let body = serde_json::to_value(&r).unwrap();
        assert_eq!(body["HostConfig"]["NanoCpus"], 1_500_000_000i64);
        assert_eq!(body["Image"], "img");
    }

    #[test]
    fn bad_values_are_usage_errors() {
        let argv: Vec<String> = ["--stop-timeout", "x", "img"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let m = RUN.parse(&argv).unwrap();
        let e = build_create(&m, true).unwrap_err();
        assert!(
            e.msg
                .starts_with("invalid argument \"x\" for \"--stop-timeout\" flag")
        );
        assert_eq!(e.exit_code(), 125);
        let argv: Vec<String> = ["--rm", "--restart", "always", "img"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(build_create(&RUN.parse(&argv).unwrap(), true).is_err());
    }

    #[test]
    fn exit_code_mapping() {
        assert_eq!(
            start_error_code(
                "Error response from daemon: exec: \"nope\": executable file not found in $PATH"
            ),
            127
        );
        assert_eq!(start_error_code("open /x: no such file or directory"), 127);
        assert_eq!(start_error_code("exec /etc: permission denied"), 126);
        assert_eq!(start_error_code("cannot start"), 125);
    }

    #[test]
    fn detach_keys() {
        assert_eq!(parse_detach_keys("ctrl-p,ctrl-q").unwrap(), [16, 17]);
        assert_eq!(parse_detach_keys("ctrl-a,x").unwrap(), [1, b'x']);
        assert!(parse_detach_keys("ctrl-1").is_err());
        let mut dm = DetachMatcher::new(vec![16, 17]);
        assert!(!dm.feed(b"ab\x10"));
        assert!(dm.feed(b"\x11"));
        assert!(!dm.feed(b"\x10a\x11"));
    }

    #[test]
    fn familiar_refs() {
        assert_eq!(familiar_ref("busybox"), "busybox:latest");
        assert_eq!(familiar_ref("busybox:local"), "busybox:local");
        assert_eq!(familiar_ref("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(familiar_ref("x@sha256:ab"), "x@sha256:ab");
    }
}
