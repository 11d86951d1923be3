//! `network create|ls|inspect|rm|prune|connect|disconnect`, with docker's flags and output.

use std::io::{BufRead as _, Write as _};

use serde_json::{Value as J, json};

use super::{CliError, CmdResult, Ctx, for_each};
use crate::cli::{Command, Matches, b, l, v};
use crate::client::{decode, q};
use crate::format::{Formatter, short_id};
use crate::value::Value;

/// `network create`'s grammar.
pub const CREATE: Command = Command {
    path: "network create",
    usage: "[OPTIONS] NETWORK",
    about: "Create a network",
    flags: &[
        b("attachable", None, "Enable manual container attachment"),
        l(
            "aux-address",
            None,
            "Auxiliary IPv4 or IPv6 addresses used by Network driver",
        ),
        v(
            "config-from",
            None,
            "The network from which to copy the configuration",
        ),
        b("config-only", None, "Create a configuration only network"),
        v("driver", Some('d'), "Driver to manage the Network"),
        l(
            "gateway",
            None,
            "IPv4 or IPv6 Gateway for the master subnet",
        ),
        b("ingress", None, "Create swarm routing-mesh network"),
        b("internal", None, "Restrict external access to the network"),
        l("ip-range", None, "Allocate container ip from a sub-range"),
        v("ipam-driver", None, "IP Address Management Driver"),
        l("ipam-opt", None, "Set IPAM driver specific options"),
        b("ipv6", None, "Enable or disable IPv6 networking"),
        l("label", None, "Set metadata on a network"),
        l("opt", Some('o'), "Set driver specific options"),
        v("scope", None, "Control the network's scope"),
        l(
            "subnet",
            None,
            "Subnet in CIDR format that represents a network segment",
        ),
    ],
    interspersed: true,
    min_args: 1,
    max_args: Some(1),
};

/// `network ls`'s grammar.
pub const LS: Command = Command {
    path: "network ls",
    usage: "[OPTIONS]",
    about: "List networks",
    flags: &[
        l(
            "filter",
            Some('f'),
            "Provide filter values (e.g. \"driver=bridge\")",
        ),
        v("format", None, "Format output using a custom template"),
        b("no-trunc", None, "Do not truncate the output"),
        b("quiet", Some('q'), "Only display network IDs"),
    ],
    interspersed: true,
    min_args: 0,
    max_args: Some(0),
};

/// `network inspect`'s grammar.
pub const INSPECT: Command = Command {
    path: "network inspect",
    usage: "[OPTIONS] NETWORK [NETWORK...]",
    about: "Display detailed information on one or more networks",
    flags: &[
        v("format", Some('f'), "Format output using a custom template"),
        b("verbose", Some('v'), "Verbose output for diagnostics"),
    ],
    interspersed: true,
    min_args: 1,
    max_args: None,
};

/// `network rm`'s grammar.
pub const RM: Command = Command {
    path: "network rm",
    usage: "NETWORK [NETWORK...]",
    about: "Remove one or more networks",
    flags: &[b(
        "force",
        Some('f'),
        "Do not error if the network does not exist",
    )],
    interspersed: true,
    min_args: 1,
    max_args: None,
};

/// `network prune`'s grammar.
pub const PRUNE: Command = Command {
    path: "network prune",
    usage: "[OPTIONS]",
    about: "Remove all unused networks",
    flags: &[
        l(
            "filter",
            None,
            "Provide filter values (e.g. \"until=<timestamp>\")",
        ),
        b("force", Some('f'), "Do not prompt for confirmation"),
    ],
    interspersed: true,
    min_args: 0,
    max_args: Some(0),
};

/// `network connect`'s grammar.
pub const CONNECT: Command = Command {
    path: "network connect",
    usage: "[OPTIONS] NETWORK CONTAINER",
    about: "Connect a container to a network",
    flags: &[
        l("alias", None, "Add network-scoped alias for the container"),
        l("driver-opt", None, "driver options for the network"),
        v("ip", None, "IPv4 address (e.g., \"172.30.100.104\")"),
        v("ip6", None, "IPv6 address (e.g., \"2001:db8::33\")"),
        l("link", None, "Add link to another container"),
        l(
            "link-local-ip",
            None,
            "Add a link-local address for the container",
        ),
    ],
    interspersed: true,
    min_args: 2,
    max_args: Some(2),
};

/// `network disconnect`'s grammar.
pub const DISCONNECT: Command = Command {
    path: "network disconnect",
    usage: "[OPTIONS] NETWORK CONTAINER",
    about: "Disconnect a container from a network",
    flags: &[b(
        "force",
        Some('f'),
        "Force the container to disconnect from a network",
    )],
    interspersed: true,
    min_args: 2,
    max_args: Some(2),
};

/// All `network` commands.
pub const COMMANDS: &[Command] = &[CREATE, LS, INSPECT, RM, PRUNE, CONNECT, DISCONNECT];

/// The command a `network` subcommand (or alias) names.
pub fn subcommand(s: &str) -> Option<&'static str> {
    Some(match s {
        "create" => "network create",
        "ls" | "list" => "network ls",
        "inspect" => "network inspect",
        "rm" | "remove" => "network rm",
        "prune" => "network prune",
        "connect" => "network connect",
        "disconnect" => "network disconnect",
        _ => return None,
    })
}

/// Runs a `network` command.
pub async fn dispatch(ctx: &Ctx, path: &str, m: Matches) -> Option<CmdResult> {
    Some(match path {
        "network create" => create(ctx, m).await,
        "network ls" => ls(ctx, m).await,
        "network inspect" => inspect(ctx, m).await,
        "network rm" => rm(ctx, m).await,
        "network prune" => prune(ctx, m).await,
        "network connect" => connect(ctx, m).await,
        "network disconnect" => disconnect(ctx, m).await,
        _ => return None,
    })
}

fn kv(vals: &[String]) -> serde_json::Map<String, J> {
    vals.iter()
        .map(|s| {
            let (k, v) = s.split_once('=').unwrap_or((s, ""));
            (k.to_string(), J::from(v))
        })
        .collect()
}

fn msg(s: impl Into<String>) -> CliError {
    CliError::Msg(s.into(), 1)
}

/// The IPAM pools of `--subnet`/`--ip-range`/`--gateway`/`--aux-address`, paired as docker pairs them.
fn ipam_configs(m: &Matches) -> Result<Vec<J>, CliError> {
    let subnets = m.values("subnet");
    let mut pools: Vec<serde_json::Map<String, J>> = subnets
        .iter()
        .map(|s| {
            let mut o = serde_json::Map::new();
            o.insert("Subnet".into(), J::from(s.as_str()));
            o
        })
        .collect();
    // Each --ip-range / --gateway goes to the one subnet that contains it.
    for (flag, key) in [("ip-range", "IPRange"), ("gateway", "Gateway")] {
        for val in m.values(flag) {
            let addr = val.split('/').next().unwrap_or("");
            let idx = subnets.iter().position(|s| contains(s, addr));
            let Some(i) = idx else {
                return Err(msg(format!(
                    "no matching subnet for {}",
                    if flag == "gateway" {
                        "gateway"
                    } else {
                        "range"
                    }
                ) + &format!(" {val}")));
            };
            if pools[i].contains_key(key) {
                return Err(msg(format!(
                    "cannot configure multiple {} for the same subnet",
                    if flag == "gateway" {
                        "gateways"
                    } else {
                        "ranges"
                    }
                )));
            }
            pools[i].insert(key.into(), J::from(val.as_str()));
        }
    }
    for a in m.values("aux-address") {
        let (name, ip) = a
            .split_once('=')
            .ok_or_else(|| msg(format!("invalid auxiliary address {a}")))?;
        let Some(i) = subnets.iter().position(|s| contains(s, ip)) else {
            return Err(msg(format!("no matching subnet for aux-address {ip}")));
        };
        let e = pools[i]
            .entry("AuxiliaryAddresses")
            .or_insert_with(|| json!({}));
        e[name] = J::from(ip);
    }
    Ok(pools.into_iter().map(J::Object).collect())
}

/// Whether IPv4 `addr` is inside CIDR `subnet` (false for anything unparsable).
fn contains(subnet: &str, addr: &str) -> bool {
    let parse = |s: &str| s.parse::<std::net::Ipv4Addr>().ok().map(u32::from);
    let Some((net, len)) = subnet.split_once('/') else {
        return false;
    };
    let (Some(n), Some(a), Ok(len)) = (parse(net), parse(addr), len.parse::<u32>()) else {
        return false;
    };
    if len > 32 {
        return false;
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    n & mask == a & mask
}

/// `berth network create`.
pub async fn create(ctx: &Ctx, m: Matches) -> CmdResult {
    let name = m.args[0].clone();
    let configs = ipam_configs(&m)?;
    let mut body = json!({
        "Name": name,
        "Driver": m.value("driver").unwrap_or("bridge"),
        "Options": kv(m.values("opt")),
        "Labels": kv(m.values("label")),
        "Internal": m.flag("internal"),
        "Attachable": m.flag("attachable"),
        "Ingress": m.flag("ingress"),
        "ConfigOnly": m.flag("config-only"),
        "Scope": m.value("scope").unwrap_or(""),
        "IPAM": {
            "Driver": m.value("ipam-driver").unwrap_or("default"),
            "Options": kv(m.values("ipam-opt")),
            "Config": configs,
        },
    });
    if m.flag("ipv6") {
        body["EnableIPv6"] = J::Bool(true);
    }
    if let Some(c) = m.value("config-from") {
        body["ConfigFrom"] = json!({"Network": c});
    }
    let client = ctx.client().await?;
    let resp = client.post("/networks/create", Some(&body)).await?;
    let v: J = decode(resp).await?;
    println!("{}", v["Id"].as_str().unwrap_or(""));
    Ok(0)
}

fn filters_qs(m: &Matches) -> Result<String, CliError> {
    let mut f = berth_api::Filters::default();
    for s in m.values("filter") {
        let Some((k, val)) = s.split_once('=') else {
            return Err(CliError::Msg(
                format!(
                    "invalid argument \"{s}\" for \"-f, --filter\" flag: bad format of filter (expected name=value)"
                ),
                125,
            ));
        };
        f.add(k, val);
    }
    Ok(if f.is_empty() {
        String::new()
    } else {
        format!("?filters={}", q(&f.to_json()))
    })
}

/// `berth network ls`.
pub async fn ls(ctx: &Ctx, m: Matches) -> CmdResult {
    let qs = filters_qs(&m)?;
    let client = ctx.client().await?;
    let mut nets: Vec<J> = client.get(&format!("/networks{qs}")).await?;
    nets.sort_by(|a, b| a["Name"].as_str().cmp(&b["Name"].as_str()));
    let trunc = !m.flag("no-trunc");
    let id = |x: &J| {
        let i = x["Id"].as_str().unwrap_or("");
        if trunc { short_id(i) } else { i.to_string() }
    };
    if m.flag("quiet") && m.value("format").is_none() {
        for x in &nets {
            println!("{}", id(x));
        }
        return Ok(0);
    }
    let rows: Vec<Value> = nets
        .iter()
        .map(|x| {
            let labels = x["Labels"]
                .as_object()
                .map(|l| {
                    let mut kv: Vec<String> = l
                        .iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect();
                    kv.sort();
                    kv.join(",")
                })
                .unwrap_or_default();
            let s = |k: &str| Value::from(x[k].as_str().unwrap_or(""));
            Value::object([
                ("ID", Value::from(id(x))),
                ("Name", s("Name")),
                ("Driver", s("Driver")),
                ("Scope", s("Scope")),
                (
                    "IPv6",
                    Value::from(x["EnableIPv6"].as_bool().unwrap_or(false).to_string()),
                ),
                (
                    "Internal",
                    Value::from(x["Internal"].as_bool().unwrap_or(false).to_string()),
                ),
                ("Labels", Value::from(labels)),
                ("CreatedAt", s("Created")),
            ])
        })
        .collect();
    let header = Value::object(
        [
            ("ID", "NETWORK ID"),
            ("Name", "NAME"),
            ("Driver", "DRIVER"),
            ("Scope", "SCOPE"),
            ("IPv6", "IPV6"),
            ("Internal", "INTERNAL"),
            ("Labels", "LABELS"),
            ("CreatedAt", "CREATED AT"),
        ]
        .map(|(k, v)| (k, Value::from(v))),
    );
    let fmt = if m.flag("quiet") {
        Formatter::new("{{.ID}}", "")?
    } else {
        Formatter::new(
            m.value("format").unwrap_or(""),
            "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}",
        )?
    };
    print!("{}", fmt.render(&rows, &header)?);
    Ok(0)
}

/// `berth network inspect`.
pub async fn inspect(ctx: &Ctx, m: Matches) -> CmdResult {
    super::inspect_each(ctx, &m, "/networks/").await
}

/// `berth network rm`.
pub async fn rm(ctx: &Ctx, m: Matches) -> CmdResult {
    let client = ctx.client().await?;
    let c = &client;
    let force = m.flag("force");
    for_each(&m.args, |a| async move {
        let resp = c.delete(&format!("/networks/{}", q(&a))).await?;
        match crate::client::read_body(resp).await {
            Ok(_) => Ok(Some(a)),
            Err(e) if force && e.to_string().contains("not found") => Ok(None),
            Err(e) => Err(e.into()),
        }
    })
    .await
}

/// `berth network prune`.
pub async fn prune(ctx: &Ctx, m: Matches) -> CmdResult {
    let qs = filters_qs(&m)?;
    if !m.flag("force") {
        print!(
            "WARNING! This will remove all custom networks not used by at least one container.\nAre you sure you want to continue? [y/N] "
        );
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        if !matches!(line.trim().to_lowercase().as_str(), "y" | "yes") {
            return Ok(0);
        }
    }
    let client = ctx.client().await?;
    let resp = client
        .post::<()>(&format!("/networks/prune{qs}"), None)
        .await?;
    let v: J = decode(resp).await?;
    let names: Vec<&str> = v["NetworksDeleted"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(J::as_str)
        .collect();
    if !names.is_empty() {
        println!("Deleted Networks:\n{}\n", names.join("\n"));
    }
    Ok(0)
}

/// `berth network connect`.
pub async fn connect(ctx: &Ctx, m: Matches) -> CmdResult {
    let mut ipam = serde_json::Map::new();
    if let Some(ip) = m.value("ip") {
        ipam.insert("IPv4Address".into(), J::from(ip));
    }
    if let Some(ip) = m.value("ip6") {
        ipam.insert("IPv6Address".into(), J::from(ip));
    }
    if !m.values("link-local-ip").is_empty() {
        ipam.insert("LinkLocalIPs".into(), json!(m.values("link-local-ip")));
    }
    let mut ep = json!({
        "Aliases": m.values("alias"),
        "Links": m.values("link"),
        "DriverOpts": kv(m.values("driver-opt")),
    });
    if !ipam.is_empty() {
        ep["IPAMConfig"] = J::Object(ipam);
    }
    let body = json!({"Container": m.args[1], "EndpointConfig": ep});
    let client = ctx.client().await?;
    let resp = client
        .post(&format!("/networks/{}/connect", q(&m.args[0])), Some(&body))
        .await?;
    crate::client::read_body(resp).await?;
    Ok(0)
}

/// `berth network disconnect`.
pub async fn disconnect(ctx: &Ctx, m: Matches) -> CmdResult {
    let body = json!({"Container": m.args[1], "Force": m.flag("force")});
    let client = ctx.client().await?;
    let resp = client
        .post(
            &format!("/networks/{}/disconnect", q(&m.args[0])),
            Some(&body),
        )
        .await?;
    crate::client::read_body(resp).await?;
    Ok(0)
}

/// `NetworkingConfig` of `run`/`create`: `--ip`, `--network-alias` and `--mac-address` on the
/// `--network` network (what docker sends for API 1.44).
pub fn endpoints_config(
    network: &str,
    ip: Option<&str>,
    aliases: &[String],
    mac: Option<&str>,
) -> J {
    if ip.is_none() && aliases.is_empty() && mac.is_none() {
        return json!({"EndpointsConfig": {}});
    }
    let mut ep = json!({});
    if let Some(ip) = ip {
        ep["IPAMConfig"] = json!({"IPv4Address": ip});
    }
    if !aliases.is_empty() {
        ep["Aliases"] = json!(aliases);
    }
    if let Some(mac) = mac {
        ep["MacAddress"] = J::from(mac);
    }
    let mut eps = serde_json::Map::new();
    eps.insert(network.to_string(), ep);
    json!({ "EndpointsConfig": eps })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_contains() {
        assert!(contains("10.1.0.0/16", "10.1.2.3"));
        assert!(!contains("10.1.0.0/16", "10.2.0.1"));
        assert!(!contains("bad", "10.2.0.1"));
    }

    #[test]
    fn aliases() {
        assert_eq!(subcommand("list"), Some("network ls"));
        assert_eq!(subcommand("remove"), Some("network rm"));
        assert_eq!(subcommand("bogus"), None);
    }
}
