//! `version` and `info`.

use serde_json::Value as J;

use super::{CliError, CmdResult, Ctx};
use crate::cli::{Command, Matches, v};
use crate::client::CLIENT_API_VERSION;
use crate::format::bytes_size;
use crate::template::Template;
use crate::value::Value;

/// The CLI's version.
pub const VERSION_STR: &str = env!("CARGO_PKG_VERSION");
/// The build identifier (set `BERTH_BUILD` at build time to stamp a commit).
pub const BUILD: &str = match option_env!("BERTH_BUILD") {
    Some(b) => b,
    None => "dev",
};

/// `version`'s grammar.
pub const VERSION: Command = Command {
    path: "version",
    usage: "[OPTIONS]",
    about: "Show the Berth version information",
    flags: &[v(
        "format",
        Some('f'),
        "Format output using a custom template",
    )],
    interspersed: true,
    min_args: 0,
    max_args: Some(0),
};

/// `info`'s grammar.
pub const INFO: Command = Command {
    path: "info",
    usage: "[OPTIONS]",
    about: "Display system-wide information",
    flags: &[v(
        "format",
        Some('f'),
        "Format output using a custom template",
    )],
    interspersed: true,
    min_args: 0,
    max_args: Some(0),
};

fn client_value(host: &str) -> Value {
    Value::object([
        ("Platform", Value::object([("Name", Value::from("Berth"))])),
        ("Version", Value::from(VERSION_STR)),
        ("ApiVersion", Value::from(CLIENT_API_VERSION)),
        ("DefaultAPIVersion", Value::from(CLIENT_API_VERSION)),
        ("GitCommit", Value::from(BUILD)),
        ("GoVersion", Value::from("rust")),
        ("Os", Value::from(std::env::consts::OS)),
        ("Arch", Value::from(go_arch())),
        ("BuildTime", Value::from("")),
        ("Context", Value::from("default")),
        ("Host", Value::from(host)),
    ])
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn s<'a>(v: &'a J, k: &str) -> &'a str {
    v.get(k).and_then(J::as_str).unwrap_or("")
}

/// `berth version`.
pub async fn version(ctx: &Ctx, m: Matches) -> CmdResult {
    let client_v = client_value(&ctx.host);
    let mut api = CLIENT_API_VERSION.to_string();
    let server = match ctx.client().await {
        Ok(c) => {
            api = c.api_version().to_string();
            c.get::<J>("/version").await
        }
        Err(e) => Err(e),
    };
    if let Some(f) = m.value("format") {
        let t = Template::parse(f)?;
        let sv = server
            .as_ref()
            .map(Value::from_serde)
            .unwrap_or(Value::Null);
        let doc = Value::object([("Client", client_v), ("Server", sv)]);
        println!("{}", t.execute(&doc)?);
        return match server {
            Ok(_) => Ok(0),
            Err(e) => Err(e.into()),
        };
    }
    println!("Client:");
    println!(" Version:           {VERSION_STR}");
    println!(" API version:       {api}");
    println!(
        " Rust version:      {}",
        option_env!("CARGO_PKG_RUST_VERSION").unwrap_or("")
    );
    println!(" Git commit:        {BUILD}");
    println!(" OS/Arch:           {}/{}", std::env::consts::OS, go_arch());
    println!(" Context:           default");
    let sv = match server {
        Ok(v) => v,
        Err(e) => {
            println!();
            return Err(e.into());
        }
    };
    println!();
    let platform = sv["Platform"]["Name"].as_str().unwrap_or("Berth Engine");
    println!("Server: {platform}");
    println!(" Engine:");
    println!("  Version:          {}", s(&sv, "Version"));
    println!(
        "  API version:      {} (minimum version {})",
        s(&sv, "ApiVersion"),
        s(&sv, "MinAPIVersion")
    );
    println!("  Rust version:     {}", s(&sv, "GoVersion"));
    println!("  Git commit:       {}", s(&sv, "GitCommit"));
    if !s(&sv, "BuildTime").is_empty() {
        println!("  Built:            {}", s(&sv, "BuildTime"));
    }
    println!("  OS/Arch:          {}/{}", s(&sv, "Os"), s(&sv, "Arch"));
    println!(
        "  Experimental:     {}",
        sv["Experimental"].as_bool().unwrap_or(false)
    );
    if let Some(comps) = sv["Components"].as_array() {
        for c in comps {
            let name = s(c, "Name");
            if name == "Engine" {
                continue;
            }
            println!(" {name}:");
            println!("  Version:          {}", s(c, "Version"));
            if let Some(d) = c["Details"].as_object() {
                for (k, v) in d {
                    if let Some(v) = v.as_str() {
                        println!("  {:<18}{v}", format!("{k}:"));
                    }
                }
            }
        }
    }
    Ok(0)
}

/// `berth info`.
pub async fn info(ctx: &Ctx, m: Matches) -> CmdResult {
    let client = ctx.client().await;
    if let Some(f) = m.value("format") {
        let t = Template::parse(f)?;
        let v: J = client?.get("/info").await?;
        println!("{}", t.execute(&Value::from_serde(&v))?);
        return Ok(0);
    }
    println!("Client:");
    println!(" Version:    {VERSION_STR}");
    println!(" Context:    default");
    println!(" Debug Mode: {}", ctx.debug);
    println!();
    println!("Server:");
    let i: J = match client {
        Ok(c) => c.get("/info").await.map_err(CliError::from)?,
        Err(e) => return Err(e.into()),
    };
    let n = |k: &str| i[k].as_i64().unwrap_or(0);
    println!(" Containers: {}", n("Containers"));
    println!("  Running: {}", n("ContainersRunning"));
    println!("  Paused: {}", n("ContainersPaused"));
    println!("  Stopped: {}", n("ContainersStopped"));
    println!(" Images: {}", n("Images"));
    println!(" Server Version: {}", s(&i, "ServerVersion"));
    println!(" Storage Driver: {}", s(&i, "Driver"));
    if let Some(ds) = i["DriverStatus"].as_array() {
        for pair in ds {
            if let (Some(k), Some(v)) = (pair[0].as_str(), pair[1].as_str()) {
                println!("  {k}: {v}");
            }
        }
    }
    println!(" Logging Driver: {}", s(&i, "LoggingDriver"));
    println!(" Cgroup Driver: {}", s(&i, "CgroupDriver"));
    println!(" Cgroup Version: {}", s(&i, "CgroupVersion"));
    if let Some(r) = i["Runtimes"].as_object() {
        let names: Vec<&str> = r.keys().map(String::as_str).collect();
        println!(" Runtimes: {}", names.join(" "));
    }
    println!(" Default Runtime: {}", s(&i, "DefaultRuntime"));
    if !s(&i, "InitBinary").is_empty() {
        println!(" Init Binary: {}", s(&i, "InitBinary"));
    }
    if let Some(so) = i["SecurityOptions"].as_array()
        && !so.is_empty()
    {
        println!(" Security Options:");
        for o in so.iter().filter_map(J::as_str) {
            let mut parts = o.split(',');
            if let Some(first) = parts.next() {
                println!("  {}", first.trim_start_matches("name="));
                for p in parts {
                    if let Some((k, v)) = p.split_once('=') {
                        let mut k = k.to_string();
                        if let Some(c) = k.get_mut(0..1) {
                            c.make_ascii_uppercase();
                        }
                        println!("   {k}: {v}");
                    }
                }
            }
        }
    }
    println!(" Kernel Version: {}", s(&i, "KernelVersion"));
    println!(" Operating System: {}", s(&i, "OperatingSystem"));
    println!(" OSType: {}", s(&i, "OSType"));
    println!(" Architecture: {}", s(&i, "Architecture"));
    println!(" CPUs: {}", n("NCPU"));
    println!(" Total Memory: {}", bytes_size(n("MemTotal") as f64));
    println!(" Name: {}", s(&i, "Name"));
    println!(" ID: {}", s(&i, "ID"));
    println!(" Berth Root Dir: {}", s(&i, "DockerRootDir"));
    println!(" Debug Mode: {}", i["Debug"].as_bool().unwrap_or(false));
    println!(
        " Experimental: {}",
        i["ExperimentalBuild"].as_bool().unwrap_or(false)
    );
    println!(
        " Live Restore Enabled: {}",
        i["LiveRestoreEnabled"].as_bool().unwrap_or(false)
    );
    println!();
    if let Some(w) = i["Warnings"].as_array() {
        for x in w.iter().filter_map(J::as_str) {
            eprintln!("{x}");
        }
    }
    Ok(0)
}
