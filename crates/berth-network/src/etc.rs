//! `/etc/hosts` and `/etc/resolv.conf` contents as dockerd writes them.

use std::net::{IpAddr, Ipv4Addr};

use crate::error::{NetworkError, Result};

/// dockerd's default `/etc/hosts` lines.
pub const DEFAULT_HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n";

/// Inputs of [`hosts_file`].
#[derive(Debug, Clone, Default)]
pub struct HostsSpec<'a> {
    /// `--hostname` (default: the short container ID).
    pub hostname: &'a str,
    /// `--domainname`, empty for none.
    pub domainname: &'a str,
    /// The container's own address on its first network (none for `--network none`).
    pub ip: Option<IpAddr>,
    /// `--add-host` entries as given: `name:ip`, `name=ip`, or `name:host-gateway`.
    pub extra_hosts: &'a [String],
    /// The address `host-gateway` stands for (the gateway of the container's bridge network).
    pub host_gateway: Option<IpAddr>,
    /// Legacy `--link`s on the default bridge: `(child IP, "alias child-hostname child-name")` (dockerd
    /// leaves out the name when it equals the alias), written after the `--add-host` lines.
    pub links: &'a [(IpAddr, String)],
    /// For `--network host`: the host's `/etc/hosts` content, used instead of the defaults and own line.
    pub host_hosts: Option<&'a str>,
}

/// Parses one `--add-host` value into `(name, ip)`; `host-gateway` becomes `host_gateway`.
pub fn parse_extra_host(s: &str, host_gateway: Option<IpAddr>) -> Result<(String, IpAddr)> {
    let bad = || NetworkError::InvalidArgument(format!("invalid IP address in add-host: {s:?}"));
    // `name=ip` (docker 26+) or `name:ip`; an IPv6 address contains ':' so split at the first one only.
    let (name, ip) = s
        .split_once('=')
        .or_else(|| s.split_once(':'))
        .ok_or_else(bad)?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    let ip = if ip == "host-gateway" {
        host_gateway.ok_or_else(|| {
            NetworkError::InvalidArgument("unable to derive the IP value for host-gateway".into())
        })?
    } else {
        ip.parse().map_err(|_| bad())?
    };
    if name.is_empty() {
        return Err(bad());
    }
    Ok((name.to_string(), ip))
}

/// The `/etc/hosts` of a container: defaults, `--add-host` lines, then its own address with its hostname.
pub fn hosts_file(spec: &HostsSpec<'_>) -> Result<String> {
    let mut out = match spec.host_hosts {
        Some(h) => {
            let mut h = h.to_string();
            if !h.is_empty() && !h.ends_with('\n') {
                h.push('\n');
            }
            h
        }
        None => DEFAULT_HOSTS.to_string(),
    };
    for e in spec.extra_hosts {
        let (name, ip) = parse_extra_host(e, spec.host_gateway)?;
        out.push_str(&format!("{ip}\t{name}\n"));
    }
    for (ip, names) in spec.links {
        out.push_str(&format!("{ip}\t{names}\n"));
    }
    if spec.host_hosts.is_none() {
        if let Some(ip) = spec.ip {
            if spec.domainname.is_empty() {
                out.push_str(&format!("{ip}\t{}\n", spec.hostname));
            } else {
                out.push_str(&format!(
                    "{ip}\t{}.{} {}\n",
                    spec.hostname, spec.domainname, spec.hostname
                ));
            }
        }
    }
    Ok(out)
}

/// The parts of a resolv.conf that matter here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` lines.
    pub nameservers: Vec<IpAddr>,
    /// `search` domains.
    pub search: Vec<String>,
    /// `options`.
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Parses resolv.conf text (last `search` wins, as in glibc; options accumulate).
    pub fn parse(text: &str) -> ResolvConf {
        let mut rc = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    if let Some(ip) = words.next().and_then(|w| w.split('%').next()?.parse().ok()) {
                        rc.nameservers.push(ip);
                    }
                }
                Some("search") | Some("domain") => rc.search = words.map(String::from).collect(),
                Some("options") => rc.options.extend(words.map(String::from)),
                _ => {}
            }
        }
        rc
    }

    /// Reads the host's `/etc/resolv.conf` (empty when absent).
    pub fn host() -> ResolvConf {
        std::fs::read_to_string("/etc/resolv.conf")
            .map(|t| Self::parse(&t))
            .unwrap_or_default()
    }

    /// Nameservers that a container can reach (loopback ones removed).
    pub fn non_loopback_nameservers(&self) -> Vec<IpAddr> {
        self.nameservers
            .iter()
            .copied()
            .filter(|ip| !ip.is_loopback())
            .collect()
    }
}

/// dockerd's fallback nameservers when the host has only loopback ones.
pub const DEFAULT_NAMESERVERS: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)),
    IpAddr::V4(Ipv4Addr::new(8, 8, 4, 4)),
];

static EMPTY_RESOLV: ResolvConf = ResolvConf {
    nameservers: Vec::new(),
    search: Vec::new(),
    options: Vec::new(),
};

/// Inputs of [`resolv_conf`].
#[derive(Debug, Clone)]
pub struct ResolvSpec<'a> {
    /// The host's resolv.conf (see [`ResolvConf::host`]).
    pub host: &'a ResolvConf,
    /// `--dns`.
    pub dns: &'a [IpAddr],
    /// `--dns-search`.
    pub dns_search: &'a [String],
    /// `--dns-option`.
    pub dns_options: &'a [String],
    /// The embedded DNS server's address (user-defined networks): the container's only nameserver.
    pub embedded_dns: Option<IpAddr>,
    /// `--network host`: the host's file is used as is (with `--dns*` overrides).
    pub host_network: bool,
}

impl Default for ResolvSpec<'_> {
    fn default() -> Self {
        ResolvSpec {
            host: &EMPTY_RESOLV,
            dns: &[],
            dns_search: &[],
            dns_options: &[],
            embedded_dns: None,
            host_network: false,
        }
    }
}

/// The `/etc/resolv.conf` of a container.
///
/// Default bridge: `--dns` or the host's non-loopback nameservers (8.8.8.8/8.8.4.4 when none are left).
/// User-defined networks: `nameserver <embedded DNS>` and `options ndots:0`, and the upstreams are the
/// embedded server's business. `search` and `options` come from the flags, else from the host.
pub fn resolv_conf(spec: &ResolvSpec<'_>) -> String {
    let search: Vec<String> = if spec.dns_search.is_empty() {
        spec.host.search.clone()
    } else {
        spec.dns_search.to_vec()
    };
    let mut options: Vec<String> = if spec.dns_options.is_empty() {
        spec.host.options.clone()
    } else {
        spec.dns_options.to_vec()
    };
    let nameservers: Vec<IpAddr> = if let Some(ip) = spec.embedded_dns {
        if !options.iter().any(|o| o.starts_with("ndots:")) {
            options.push("ndots:0".into());
        }
        vec![ip]
    } else if !spec.dns.is_empty() {
        spec.dns.to_vec()
    } else if spec.host_network {
        spec.host.nameservers.clone()
    } else {
        let ns = spec.host.non_loopback_nameservers();
        if ns.is_empty() {
            DEFAULT_NAMESERVERS.to_vec()
        } else {
            ns
        }
    };
    let mut out = String::new();
    if !search.is_empty() && search != ["."] {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    for ns in nameservers {
        out.push_str(&format!("nameserver {ns}\n"));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_default_bridge() {
        let extra = vec![
            "db:10.0.0.5".to_string(),
            "gw:host-gateway".to_string(),
            "v6=::1".to_string(),
        ];
        let text = hosts_file(&HostsSpec {
            hostname: "abc123def456",
            ip: Some("172.29.0.2".parse().unwrap()),
            extra_hosts: &extra,
            host_gateway: Some("172.29.0.1".parse().unwrap()),
            links: &[(
                "172.29.0.9".parse().unwrap(),
                "db 0123456789ab web_db".into(),
            )],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            text,
            format!(
                "{DEFAULT_HOSTS}10.0.0.5\tdb\n172.29.0.1\tgw\n::1\tv6\n172.29.0.9\tdb 0123456789ab web_db\n172.29.0.2\tabc123def456\n"
            )
        );
    }

    #[test]
    fn hosts_domain_none_and_host() {
        let t = hosts_file(&HostsSpec {
            hostname: "web",
            domainname: "example.org",
            ip: Some("10.0.0.2".parse().unwrap()),
            ..Default::default()
        })
        .unwrap();
        assert!(t.ends_with("10.0.0.2\tweb.example.org web\n"));
        let none = hosts_file(&HostsSpec {
            hostname: "x",
            ..Default::default()
        })
        .unwrap();
        assert_eq!(none, DEFAULT_HOSTS);
        let host = hosts_file(&HostsSpec {
            hostname: "x",
            host_hosts: Some("127.0.0.1 localhost myhost"),
            extra_hosts: &["a:1.2.3.4".to_string()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(host, "127.0.0.1 localhost myhost\n1.2.3.4\ta\n");
        assert!(
            hosts_file(&HostsSpec {
                extra_hosts: &["gw:host-gateway".into()],
                ..Default::default()
            })
            .is_err()
        );
        assert!(parse_extra_host("nocolon", None).is_err());
        assert!(parse_extra_host("a:notanip", None).is_err());
    }

    #[test]
    fn resolv_modes() {
        let host = ResolvConf::parse(
            "# comment\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nsearch corp.example\noptions edns0 trust-ad\n",
        );
        assert_eq!(host.nameservers.len(), 2);
        let bridge = resolv_conf(&ResolvSpec {
            host: &host,
            ..Default::default()
        });
        assert_eq!(
            bridge,
            "search corp.example\nnameserver 10.0.0.2\noptions edns0 trust-ad\n"
        );
        let dns: Vec<IpAddr> = vec!["1.1.1.1".parse().unwrap()];
        let flags = resolv_conf(&ResolvSpec {
            host: &host,
            dns: &dns,
            dns_search: &["a.example".into(), "b.example".into()],
            dns_options: &["ndots:2".into()],
            ..Default::default()
        });
        assert_eq!(
            flags,
            "search a.example b.example\nnameserver 1.1.1.1\noptions ndots:2\n"
        );
        let user = resolv_conf(&ResolvSpec {
            host: &host,
            embedded_dns: Some("10.213.1.1".parse().unwrap()),
            ..Default::default()
        });
        assert_eq!(
            user,
            "search corp.example\nnameserver 10.213.1.1\noptions edns0 trust-ad ndots:0\n"
        );
        let only_local = ResolvConf::parse("nameserver 127.0.0.53\n");
        let fallback = resolv_conf(&ResolvSpec {
            host: &only_local,
            ..Default::default()
        });
        assert_eq!(fallback, "nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
        let hostnet = resolv_conf(&ResolvSpec {
            host: &only_local,
            host_network: true,
            ..Default::default()
        });
        assert_eq!(hostnet, "nameserver 127.0.0.53\n");
    }
}
