//! Command implementations and the dispatcher from docker's command names to them.

pub mod build;
pub mod container;
pub mod cp;
pub mod exec;
pub mod image;
pub mod lifecycle;
pub mod network;
pub mod registry;
pub mod run;
pub mod storage;
pub mod system;

use crate::cli::{Command, Matches, UsageError};
use crate::client::{Client, ClientError};
use crate::template::TemplateError;

/// Failures of a command, each with docker's exit status.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Misuse of flags or arguments.
    #[error("{0}")]
    Usage(#[from] UsageError),
    /// The daemon or the connection failed.
    #[error("{0}")]
    Client(#[from] ClientError),
    /// A `--format` template failed.
    #[error("{0}")]
    Template(#[from] TemplateError),
    /// A local I/O failure.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A message with an exit status.
    #[error("{0}")]
    Msg(String, i32),
    /// Everything was printed already; exit with this status.
    #[error("")]
    Exit(i32),
}

impl CliError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(u) => u.exit_code(),
            CliError::Msg(_, c) | CliError::Exit(c) => *c,
            _ => 1,
        }
    }
}

/// Result of a command: the exit status.
pub type CmdResult = Result<i32, CliError>;

/// What every command gets: where the daemon is and whether to log requests.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Daemon address.
    pub host: String,
    /// `--debug`.
    pub debug: bool,
}

impl Ctx {
    /// Connects to the daemon (negotiating the API version).
    pub async fn client(&self) -> Result<Client, ClientError> {
        Client::connect(&self.host, self.debug).await
    }
}

/// Every top-level command and management subcommand: (name, its grammar).
pub fn lookup(args: &[String]) -> Option<(Command, usize)> {
    let first = args.first()?.as_str();
    let (group, sub) = (first, args.get(1).map(String::as_str));
    let pick = |path: &str| find(path).map(|c| (c, if path.contains(' ') { 2 } else { 1 }));
    match (group, sub) {
        ("container", Some(s)) => {
            let real = match s {
                "ls" | "list" | "ps" => "container ls",
                "rm" | "remove" => "container rm",
                "run" => "container run",
                "create" => "container create",
                "start" => "container start",
                "stop" => "container stop",
                "kill" => "container kill",
                "logs" => "container logs",
                "inspect" => "container inspect",
                "attach" => "container attach",
                "wait" => "container wait",
                "restart" => "container restart",
                "exec" => "container exec",
                "pause" => "container pause",
                "unpause" => "container unpause",
                "rename" => "container rename",
                "top" => "container top",
                "port" => "container port",
                "update" => "container update",
                "stats" => "container stats",
                "cp" => "container cp",
                "diff" => "container diff",
                "export" => "container export",
                "commit" => "container commit",
                "prune" => "container prune",
                _ => return None,
            };
            pick(real)
        }
        ("image", Some(s)) => {
            let real = match s {
                "ls" | "list" => "image ls",
                "rm" | "remove" => "image rm",
                "inspect" => "image inspect",
                "tag" => "image tag",
                "import" => "image import",
                "pull" => "image pull",
                "push" => "image push",
                "save" => "image save",
                "load" => "image load",
                "history" => "image history",
                "prune" => "image prune",
                "build" => "image build",
                _ => return None,
            };
            pick(real)
        }
        ("network", Some(s)) => pick(network::subcommand(s)?),
        ("volume", Some(s)) => pick(match s {
            "create" => "volume create",
            "ls" | "list" => "volume ls",
            "inspect" => "volume inspect",
            "rm" | "remove" => "volume rm",
            "prune" => "volume prune",
            _ => return None,
        }),
        ("builder", Some("prune")) => pick("builder prune"),
        ("builder", Some("build")) => pick("builder build"),
        ("system", Some("info")) => pick("system info"),
        ("system", Some("df")) => pick("system df"),
        ("system", Some("prune")) => pick("system prune"),
        ("system", Some("events")) => pick("system events"),
        (c, _) => pick(match c {
            "run" | "create" | "start" | "stop" | "kill" | "rm" | "ps" | "logs" | "inspect"
            | "images" | "tag" | "rmi" | "import" | "pull" | "version" | "info" | "attach"
            | "wait" | "restart" | "exec" | "pause" | "unpause" | "rename" | "top" | "port"
            | "update" | "stats" | "cp" | "diff" | "export" | "commit" | "events" | "history"
            | "save" | "load" | "push" | "login" | "logout" | "build" => c,
            _ => return None,
        }),
    }
}

fn find(path: &str) -> Option<Command> {
    COMMANDS.iter().find(|c| c.path == path).copied()
}

/// All command grammars.
pub static COMMANDS: std::sync::LazyLock<Vec<Command>> = std::sync::LazyLock::new(|| {
    let mut v: Vec<Command> = network::COMMANDS.to_vec();
    for (path, base) in [
        ("run", run::RUN),
        ("container run", run::RUN),
        ("create", run::CREATE),
        ("container create", run::CREATE),
        ("start", run::START),
        ("container start", run::START),
        ("attach", run::ATTACH),
        ("container attach", run::ATTACH),
        ("ps", container::PS),
        ("container ls", container::PS),
        ("stop", container::STOP),
        ("container stop", container::STOP),
        ("restart", container::RESTART),
        ("container restart", container::RESTART),
        ("kill", container::KILL),
        ("container kill", container::KILL),
        ("rm", container::RM),
        ("container rm", container::RM),
        ("logs", container::LOGS),
        ("container logs", container::LOGS),
        ("inspect", container::INSPECT),
        ("container inspect", container::CONTAINER_INSPECT),
        ("wait", container::WAIT),
        ("container wait", container::WAIT),
        ("images", image::IMAGES),
        ("image ls", image::IMAGES),
        ("rmi", image::RMI),
        ("image rm", image::RMI),
        ("image inspect", image::IMAGE_INSPECT),
        ("tag", image::TAG),
        ("image tag", image::TAG),
        ("import", image::IMPORT),
        ("image import", image::IMPORT),
        ("pull", image::PULL),
        ("image pull", image::PULL),
        ("version", system::VERSION),
        ("info", system::INFO),
        ("system info", system::INFO),
        ("exec", exec::EXEC),
        ("container exec", exec::EXEC),
        ("pause", lifecycle::PAUSE),
        ("container pause", lifecycle::PAUSE),
        ("unpause", lifecycle::UNPAUSE),
        ("container unpause", lifecycle::UNPAUSE),
        ("rename", lifecycle::RENAME),
        ("container rename", lifecycle::RENAME),
        ("top", lifecycle::TOP),
        ("container top", lifecycle::TOP),
        ("port", lifecycle::PORT),
        ("container port", lifecycle::PORT),
        ("update", lifecycle::UPDATE),
        ("container update", lifecycle::UPDATE),
        ("stats", lifecycle::STATS),
        ("container stats", lifecycle::STATS),
        ("cp", cp::CP),
        ("container cp", cp::CP),
        ("diff", lifecycle::DIFF),
        ("container diff", lifecycle::DIFF),
        ("export", lifecycle::EXPORT),
        ("container export", lifecycle::EXPORT),
        ("commit", lifecycle::COMMIT),
        ("container commit", lifecycle::COMMIT),
        ("events", lifecycle::EVENTS),
        ("system events", lifecycle::EVENTS),
        ("container prune", storage::CONTAINER_PRUNE),
        ("image prune", storage::IMAGE_PRUNE),
        ("volume prune", storage::VOLUME_PRUNE),
        ("system prune", storage::SYSTEM_PRUNE),
        ("system df", storage::SYSTEM_DF),
        ("volume create", storage::VOLUME_CREATE),
        ("volume ls", storage::VOLUME_LS),
        ("volume inspect", storage::VOLUME_INSPECT),
        ("volume rm", storage::VOLUME_RM),
        ("history", storage::HISTORY),
        ("image history", storage::HISTORY),
        ("save", storage::SAVE),
        ("image save", storage::SAVE),
        ("load", storage::LOAD),
        ("image load", storage::LOAD),
        ("push", registry::PUSH),
        ("image push", registry::PUSH),
        ("login", registry::LOGIN),
        ("logout", registry::LOGOUT),
        ("build", build::BUILD),
        ("image build", build::BUILD),
        ("builder build", build::BUILD),
        ("builder prune", build::PRUNE),
    ] {
        v.push(Command {
            path: Box::leak(path.to_string().into_boxed_str()),
            ..base
        });
    }
    v
});

/// Runs a parsed command.
pub async fn dispatch(ctx: &Ctx, cmd: &Command, m: Matches) -> CmdResult {
    if build::handles(cmd.path) {
        return build::dispatch(ctx, cmd.path, m).await;
    }
    if cmd.path.starts_with("network ") {
        if let Some(r) = network::dispatch(ctx, cmd.path, m).await {
            return r;
        }
        return Err(CliError::Msg(
            format!("berth: '{}' is not a berth command.", cmd.path),
            1,
        ));
    }
    match cmd.path {
        "container prune" => return storage::prune(ctx, m, "containers").await,
        "image prune" => return storage::prune(ctx, m, "images").await,
        "volume prune" => return storage::prune(ctx, m, "volumes").await,
        "system prune" => return storage::system_prune(ctx, m).await,
        "system df" => return storage::system_df(ctx, m).await,
        "volume create" => return storage::volume_create(ctx, m).await,
        "volume ls" => return storage::volume_ls(ctx, m).await,
        "volume inspect" => return storage::volume_inspect(ctx, m).await,
        "volume rm" => return storage::volume_rm(ctx, m).await,
        _ => {}
    }
    let verb = cmd.path.rsplit(' ').next().unwrap_or(cmd.path);
    let is_image = cmd.path.starts_with("image ");
    match (verb, is_image) {
        ("exec", _) => exec::exec(ctx, m).await,
        ("pause", _) => lifecycle::pause(ctx, m, "pause").await,
        ("unpause", _) => lifecycle::pause(ctx, m, "unpause").await,
        ("rename", _) => lifecycle::rename(ctx, m).await,
        ("top", _) => lifecycle::top(ctx, m).await,
        ("port", _) => lifecycle::port(ctx, m).await,
        ("update", _) => lifecycle::update(ctx, m).await,
        ("stats", _) => lifecycle::stats(ctx, m).await,
        ("cp", _) => cp::cp(ctx, m).await,
        ("diff", _) => lifecycle::diff(ctx, m).await,
        ("export", _) => lifecycle::export(ctx, m).await,
        ("commit", _) => lifecycle::commit(ctx, m).await,
        ("events", _) => lifecycle::events(ctx, m).await,
        ("history", _) => storage::history(ctx, m).await,
        ("save", _) => storage::save(ctx, m).await,
        ("load", _) => storage::load(ctx, m).await,
        ("push", _) => registry::push(ctx, m).await,
        ("login", _) => registry::login(ctx, m).await,
        ("logout", _) => registry::logout(ctx, m).await,
        ("run", _) => run::run(ctx, cmd, m).await,
        ("create", _) => run::create(ctx, cmd, m).await,
        ("start", _) => run::start(ctx, m).await,
        ("attach", _) => run::attach(ctx, m).await,
        ("ps" | "ls", false) => container::ps(ctx, m).await,
        ("stop", _) => container::stop(ctx, m).await,
        ("restart", _) => container::restart(ctx, m).await,
        ("kill", _) => container::kill(ctx, m).await,
        ("rm", false) => container::rm(ctx, m).await,
        ("logs", _) => container::logs(ctx, m).await,
        ("inspect", false) => {
            let kind = if cmd.path == "container inspect" {
                Some("container")
            } else {
                None
            };
            container::inspect(ctx, m, kind).await
        }
        ("wait", _) => container::wait(ctx, m).await,
        ("images" | "ls", _) => image::images(ctx, m).await,
        ("rmi" | "rm", _) => image::rmi(ctx, m).await,
        ("inspect", true) => container::inspect(ctx, m, Some("image")).await,
        ("tag", _) => image::tag(ctx, m).await,
        ("import", _) => image::import(ctx, m).await,
        ("pull", _) => image::pull(ctx, m).await,
        ("version", _) => system::version(ctx, m).await,
        ("info", _) => system::info(ctx, m).await,
        _ => Err(CliError::Msg(
            format!("berth: '{}' is not a berth command.", cmd.path),
            1,
        )),
    }
}

/// Runs `f` for each argument, printing the argument on success and docker's message on failure;
/// exits 1 if any failed.
pub async fn for_each<F, Fut>(args: &[String], mut f: F) -> CmdResult
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<Option<String>, CliError>>,
{
    let mut failed = false;
    for a in args {
        match f(a.clone()).await {
            Ok(Some(out)) => println!("{out}"),
            Ok(None) => {}
            Err(e @ CliError::Client(ClientError::Connect(_))) => return Err(e),
            Err(e) => {
                eprintln!("{e}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// `inspect` of objects found at `<prefix><name>` (networks, volumes): a JSON array indented like docker's,
/// or one `--format` line per object; a name that is not found is reported and makes the exit code 1.
pub async fn inspect_each(ctx: &Ctx, m: &Matches, prefix: &str) -> CmdResult {
    let client = ctx.client().await?;
    let tmpl = match m.value("format") {
        Some(f) if !f.is_empty() && f != "json" => Some(crate::template::Template::parse(f)?),
        _ => None,
    };
    let mut found = Vec::new();
    let mut failed = false;
    for a in &m.args {
        match client
            .get_value(&format!("{prefix}{}", crate::client::q(a)))
            .await
        {
            Ok(v) => found.push(v),
            Err(e @ ClientError::Connect(_)) => return Err(e.into()),
            Err(e) => {
                eprintln!("{e}");
                failed = true;
            }
        }
    }
    match tmpl {
        Some(t) => {
            for v in &found {
                println!("{}", t.execute(v)?);
            }
        }
        None => println!(
            "{}",
            crate::value::Value::Array(found).to_json_indent("    ")
        ),
    }
    Ok(if failed { 1 } else { 0 })
}
