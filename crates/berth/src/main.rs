//! `berth`: a docker-compatible command-line client for berthd.
#![forbid(unsafe_code)]

mod cli;
mod client;
mod cmd;
mod format;
mod template;
mod tty;
mod value;

use std::io::Write as _;

use cli::{Command, b, l, v};
use cmd::system::{BUILD, VERSION_STR};

const GLOBAL: Command = Command {
    path: "",
    usage: "[OPTIONS] COMMAND [ARG...]",
    about: "A self-sufficient runtime for containers",
    flags: &[
        v("config", None, "Location of client config files"),
        v(
            "context",
            Some('c'),
            "Name of the context to use to connect to the daemon",
        ),
        b("debug", Some('D'), "Enable debug mode"),
        l("host", Some('H'), "Daemon socket to connect to"),
        v(
            "log-level",
            Some('l'),
            "Set the logging level (\"debug\", \"info\", \"warn\", \"error\", \"fatal\")",
        ),
        b("tls", None, "Use TLS; implied by --tlsverify"),
        b("tlsverify", None, "Use TLS and verify the remote"),
        b("version", Some('v'), "Print version information and quit"),
    ],
    interspersed: false,
    min_args: 0,
    max_args: None,
};

const ROOT_HELP: &str = "
Usage:  berth [OPTIONS] COMMAND

A self-sufficient runtime for containers

Common Commands:
  run         Create and run a new container from an image
  exec        Execute a command in a running container
  ps          List containers
  images      List images
  pull        Download an image from a registry
  push        Upload an image to a registry
  login       Authenticate to a registry
  logout      Log out from a registry
  info        Display system-wide information
  version     Show the Berth version information

Management Commands:
  container   Manage containers
  image       Manage images
  network     Manage networks
  system      Manage Berth
  volume      Manage volumes

Commands:
  attach      Attach local standard input, output, and error streams to a running container
  commit      Create a new image from a container's changes
  cp          Copy files/folders between a container and the local filesystem
  create      Create a new container
  diff        Inspect changes to files or directories on a container's filesystem
  events      Get real time events from the server
  export      Export a container's filesystem as a tar archive
  history     Show the history of an image
  import      Import the contents from a tarball to create a filesystem image
  inspect     Return low-level information on Berth objects
  kill        Kill one or more running containers
  load        Load an image from a tar archive or STDIN
  logs        Fetch the logs of a container
  pause       Pause all processes within one or more containers
  port        List port mappings or a specific mapping for the container
  rename      Rename a container
  restart     Restart one or more containers
  rm          Remove one or more containers
  rmi         Remove one or more images
  save        Save one or more images to a tar archive (streamed to STDOUT by default)
  start       Start one or more stopped containers
  stats       Display a live stream of container(s) resource usage statistics
  stop        Stop one or more running containers
  tag         Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
  top         Display the running processes of a container
  unpause     Unpause all processes within one or more containers
  update      Update configuration of one or more containers
  wait        Block until one or more containers stop, then print their exit codes

Global Options:
      --config string      Location of client config files
  -c, --context string     Name of the context to use to connect to the daemon
  -D, --debug              Enable debug mode
  -H, --host list          Daemon socket to connect to
  -l, --log-level string   Set the logging level
  -v, --version            Print version information and quit

Run 'berth COMMAND --help' for more information on a command.
";

/// `-H` wins over `BERTH_HOST`, which wins over `DOCKER_HOST`, then the default socket.
fn resolve_host(flag: Option<&str>, berth: Option<String>, docker: Option<String>) -> String {
    flag.map(str::to_string)
        .or(berth.filter(|s| !s.is_empty()))
        .or(docker.filter(|s| !s.is_empty()))
        .unwrap_or_else(|| client::DEFAULT_HOST.to_string())
}

fn real_main() -> i32 {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let gm = match GLOBAL.parse(&argv) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            return e.exit_code();
        }
    };
    if gm.flag("version") {
        println!("Berth version {VERSION_STR}, build {BUILD}");
        return 0;
    }
    if gm.args.is_empty() {
        print!("{ROOT_HELP}");
        return 0;
    }
    if gm.args[0] == "help" {
        if gm.args.len() > 1
            && let Some((c, _)) = cmd::lookup(&gm.args[1..])
        {
            print!("{}", c.help_text());
        } else {
            print!("{ROOT_HELP}");
        }
        return 0;
    }
    let Some((command, used)) = cmd::lookup(&gm.args) else {
        let group = &gm.args[0];
        if ["container", "image", "network", "system", "volume"].contains(&group.as_str())
            && gm.args.len() == 1
        {
            println!(
                "\nUsage:  berth {group} COMMAND\n\nManage {group}s\n\nRun 'berth {group} COMMAND --help' for more information on a command."
            );
            return 0;
        }
        let shown =
            if ["container", "image", "network", "system", "volume"].contains(&group.as_str()) {
                gm.args[..2].join(" ")
            } else {
                group.clone()
            };
        eprintln!(
            "berth: unknown command: berth {shown}\n\nRun 'berth --help' for more information"
        );
        return 1;
    };
    let m = match command.parse(&gm.args[used..]) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            return e.exit_code();
        }
    };
    if m.help {
        print!("{}", command.help_text());
        return 0;
    }
    cmd::registry::set_config_dir(gm.value("config"));
    let ctx = cmd::Ctx {
        host: resolve_host(
            gm.value("host"),
            std::env::var("BERTH_HOST").ok(),
            std::env::var("DOCKER_HOST").ok(),
        ),
        debug: gm.flag("debug"),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth: {e}");
            return 1;
        }
    };
    let result = rt.block_on(cmd::dispatch(&ctx, &command, m));
    let code = match result {
        Ok(code) => code,
        Err(cmd::CliError::Exit(code)) => code,
        Err(cmd::CliError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => 141,
        Err(e) => {
            let _ = std::io::stdout().flush();
            eprintln!("{e}");
            e.exit_code()
        }
    };
    let _ = std::io::stdout().flush();
    rt.shutdown_background();
    code
}

fn main() {
    // Like a Go program, die quietly when the reader of our output goes away (`berth ps | head -1`).
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .unwrap_or("");
        tty::restore_saved();
        if msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default_hook(info);
    }));
    let code = real_main();
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_precedence() {
        let s = |x: &str| Some(x.to_string());
        assert_eq!(
            resolve_host(Some("unix:///a"), s("unix:///b"), s("unix:///c")),
            "unix:///a"
        );
        assert_eq!(
            resolve_host(None, s("unix:///b"), s("unix:///c")),
            "unix:///b"
        );
        assert_eq!(resolve_host(None, None, s("unix:///c")), "unix:///c");
        assert_eq!(resolve_host(None, None, None), client::DEFAULT_HOST);
    }

    #[test]
    fn global_flags_stop_at_command() {
        let argv: Vec<String> = ["-H", "unix:///x", "--debug", "ps", "-a"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let m = GLOBAL.parse(&argv).unwrap();
        assert_eq!(m.value("host"), Some("unix:///x"));
        assert!(m.flag("debug"));
        assert_eq!(m.args, ["ps", "-a"]);
        let (c, used) = cmd::lookup(&["container".into(), "ls".into()]).unwrap();
        assert_eq!((c.path, used), ("container ls", 2));
        assert!(cmd::lookup(&["nope".into()]).is_none());
    }
}
