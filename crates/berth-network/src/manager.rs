//! The network manager: networks, endpoints and published ports, their state on disk and in the kernel.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Mutex;

use berth_api::container::PortBinding;
use berth_api::network::{
    EndpointSettings, Ipam as ApiIpam, IpamConfig, NetworkContainer, NetworkCreateRequest,
    NetworkCreateResponse, NetworkResource,
};
use serde::{Deserialize, Serialize};

use crate::dns::{DnsEntry, DnsService, NetworkNames};
use crate::error::{NetworkError, Result};
use crate::etc::ResolvConf;
use crate::ipam::{AddressPool, Ipam, Ipv4Net, format_mac, mac_from_ip, parse_mac};
use crate::link::{self, VethSpec};
use crate::netns;
use crate::nft::{self, FwNetwork, PortMapping, Proto, Ruleset};

/// Option naming a bridge network's Linux bridge.
pub const OPT_BRIDGE_NAME: &str = "com.docker.network.bridge.name";
/// Option setting a bridge network's MTU.
pub const OPT_MTU: &str = "com.docker.network.driver.mtu";
/// Option setting the default host address of published ports.
pub const OPT_HOST_BINDING: &str = "com.docker.network.bridge.host_binding_ipv4";
/// First port of the range random host ports come from.
pub const EPHEMERAL_FIRST: u16 = 49153;
/// Last port of the range random host ports come from.
pub const EPHEMERAL_LAST: u16 = 65535;

/// Daemon-level network settings (`bridge`, `bip`, `default-address-pools`, ...).
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// State lives under `<data_root>/network/`.
    pub data_root: PathBuf,
    /// Where container network namespaces are bind-mounted (`<exec-root>/netns`).
    pub netns_dir: PathBuf,
    /// Linux bridge of the default `bridge` network.
    pub bridge_name: String,
    /// `bip`: the default bridge's gateway address and prefix.
    pub bip: Ipv4Net,
    /// `default-address-pools`: where user networks get subnets from.
    pub default_address_pools: Vec<AddressPool>,
    /// Prefix of user networks' bridge names (`br-` + 12 hex of the network ID, 15 chars at most).
    pub bridge_prefix: String,
    /// nftables table (`ip` family) holding all of Berth's rules.
    pub nft_table: String,
    /// MTU of bridges and veths (kernel default when none).
    pub mtu: Option<u32>,
    /// Create the predefined `bridge`, `host` and `none` networks.
    pub predefined_networks: bool,
    /// Port of the embedded DNS servers.
    pub dns_port: u16,
    /// Default upstream resolvers (the host's non-loopback ones when `None`).
    pub upstream_dns: Option<Vec<IpAddr>>,
    /// nftables, or iptables when `nft` is missing.
    pub firewall: Firewall,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            data_root: "/var/lib/berth".into(),
            netns_dir: "/run/berth/netns".into(),
            bridge_name: "berth0".into(),
            bip: Ipv4Net::new(Ipv4Addr::new(172, 29, 0, 1), 16),
            default_address_pools: vec![
                AddressPool {
                    base: Ipv4Net::new(Ipv4Addr::new(172, 30, 0, 0), 15),
                    size: 16,
                },
                AddressPool {
                    base: Ipv4Net::new(Ipv4Addr::new(10, 229, 0, 0), 16),
                    size: 24,
                },
            ],
            bridge_prefix: "br-".into(),
            nft_table: "berth".into(),
            mtu: None,
            predefined_networks: true,
            dns_port: 53,
            upstream_dns: None,
            firewall: Firewall::Auto,
        }
    }
}

/// A network as persisted in `<data-root>/network/networks/<id>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NetworkRecord {
    id: String,
    name: String,
    created: String,
    driver: String,
    #[serde(default)]
    internal: bool,
    #[serde(default)]
    attachable: bool,
    #[serde(default)]
    enable_ipv6: bool,
    #[serde(default)]
    default_bridge: bool,
    #[serde(default)]
    options: BTreeMap<String, String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    bridge: Option<String>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    ipam: Option<Ipam>,
    #[serde(default)]
    endpoints: BTreeMap<String, EndpointRecord>,
}

impl NetworkRecord {
    fn is_bridge(&self) -> bool {
        self.driver == "bridge"
    }
    fn has_dns(&self) -> bool {
        self.is_bridge() && !self.default_bridge
    }
}

/// One container's endpoint on a network.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EndpointRecord {
    container_id: String,
    name: String,
    endpoint_id: String,
    #[serde(default)]
    ip: Option<Ipv4Addr>,
    #[serde(default)]
    mac: String,
    #[serde(default)]
    veth: String,
    #[serde(default)]
    ifname: String,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    links: Vec<String>,
    #[serde(default)]
    static_ip: bool,
    #[serde(default)]
    upstreams: Vec<IpAddr>,
}

/// The endpoints and allocations of one network, `<data-root>/network/endpoints/<id>.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct EndpointsFile {
    #[serde(default)]
    endpoints: BTreeMap<String, EndpointRecord>,
    #[serde(default)]
    allocated: BTreeMap<Ipv4Addr, String>,
    #[serde(default)]
    last: Option<Ipv4Addr>,
}

/// A container with network state, `<data-root>/network/containers/<id>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ContainerRecord {
    id: String,
    name: String,
    #[serde(default)]
    netns: Option<PathBuf>,
    /// Network IDs, in attach order.
    #[serde(default)]
    networks: Vec<String>,
    #[serde(default)]
    ports: Vec<PortMapping>,
}

#[derive(Debug, Default)]
struct State {
    networks: BTreeMap<String, NetworkRecord>,
    containers: BTreeMap<String, ContainerRecord>,
}

/// What a container asks for when it starts (from its config and host config).
#[derive(Debug, Clone, Default)]
pub struct ContainerNetworkRequest {
    /// Full container ID.
    pub id: String,
    /// Container name, without the leading `/`.
    pub name: String,
    /// Networks by name or ID with the endpoint config (`NetworkingConfig.EndpointsConfig`); the
    /// `NetworkMode` first. `host` and `none` are networks too. Empty = `none`.
    pub networks: Vec<(String, EndpointSettings)>,
    /// `HostConfig.PortBindings` (`"80/tcp"` → bindings; `HostPort` may be empty or a range).
    pub port_bindings: BTreeMap<String, Vec<PortBinding>>,
    /// `-P`: publish every exposed port on a random host port.
    pub publish_all_ports: bool,
    /// `Config.ExposedPorts` keys (`"80/tcp"`).
    pub exposed_ports: Vec<String>,
    /// `--dns`: the embedded DNS forwards this container's other queries there.
    pub dns: Vec<IpAddr>,
}

/// What [`NetworkManager::setup`] did, for the OCI spec, the /etc files and `NetworkSettings`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerNetwork {
    /// The namespace file for `linux.namespaces[type=network].path`; `None` for `--network host`
    /// (then the spec has no network namespace at all).
    pub netns_path: Option<PathBuf>,
    /// `NetworkSettings.Networks`, by network name.
    pub endpoints: BTreeMap<String, EndpointSettings>,
    /// `NetworkSettings.Ports`: every exposed/published port, with the host ports actually bound.
    pub ports: BTreeMap<String, Option<Vec<PortBinding>>>,
    /// The container's address on its first network (for its /etc/hosts line).
    pub primary_ip: Option<Ipv4Addr>,
    /// Gateway of the first bridge network: what `host-gateway` in `--add-host` means.
    pub host_gateway: Option<Ipv4Addr>,
    /// The embedded DNS server to write as the only nameserver (user-defined networks), else `None`.
    pub embedded_dns: Option<Ipv4Addr>,
    /// `--network host`.
    pub host_network: bool,
}

/// What [`NetworkManager::reconcile`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Containers whose network state was released (not running any more).
    pub released_containers: Vec<String>,
    /// Links deleted (orphan bridges and veths).
    pub removed_links: Vec<String>,
    /// Namespace files removed.
    pub removed_netns: Vec<PathBuf>,
    /// Veths re-created for running containers that had lost them.
    pub restored_endpoints: Vec<String>,
}

/// Networks, endpoints and ports of one daemon. All methods block (netlink, nft, fsync): from async code
/// call them through `spawn_blocking`. One lock serializes changes.
#[derive(Debug)]
pub struct NetworkManager {
    cfg: NetworkConfig,
    state: Mutex<State>,
    dns: DnsService,
    fw: Firewall,
    /// Network namespaces made ahead of container starts.
    spares: std::sync::Arc<crate::spares::Spares>,
}

/// Which tool programs NAT, isolation and published ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Firewall {
    /// nftables when `nft` is there, else iptables, else none (with a warning).
    #[default]
    Auto,
    /// `nft` (`table ip <nft_table>`).
    Nftables,
    /// `iptables-restore` (chains named after `nft_table`, upper-cased).
    Iptables,
    /// No rules at all (tests of other parts; a host that manages its own firewall).
    Off,
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn set_sysctl(path: &str, value: &str) {
    if let Err(e) = std::fs::write(path, value) {
        tracing::warn!("cannot set {path}={value}: {e}");
    }
}

/// IPv4 routes of the host (`/proc/net/route`), to keep new subnets off them.
fn host_routes() -> Vec<Ipv4Net> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dst = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            if mask == 0 {
                return None;
            }
            Some(Ipv4Net::new(
                Ipv4Addr::from(u32::from_be(dst)),
                u32::from_be(mask).count_ones() as u8,
            ))
        })
        .collect()
}

fn port_free(proto: Proto, ip: Option<Ipv4Addr>, port: u16) -> bool {
    let ip = ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
    match proto {
        Proto::Tcp => std::net::TcpListener::bind((ip, port)).is_ok(),
        Proto::Udp => std::net::UdpSocket::bind((ip, port)).is_ok(),
        Proto::Sctp => true,
    }
}

fn parse_port_key(key: &str) -> Result<(u16, Proto)> {
    let (p, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    let port = p.parse().map_err(|_| {
        NetworkError::InvalidArgument(format!("invalid port specification: {key:?}"))
    })?;
    Ok((port, Proto::parse(proto)?))
}

impl NetworkManager {
    /// Loads the state under `<data-root>/network/` and creates the predefined networks' records.
    /// Touches no kernel state: call [`NetworkManager::reconcile`] next.
    pub fn open(cfg: NetworkConfig) -> Result<NetworkManager> {
        let upstreams = cfg
            .upstream_dns
            .clone()
            .unwrap_or_else(|| ResolvConf::host().non_loopback_nameservers());
        let mut st = State::default();
        for n in
            crate::store::read_dir_json::<NetworkRecord>(&cfg.data_root.join("network/networks"))?
        {
            let mut n = n;
            // the endpoints file (written without fsync) overrides what the definition holds
            let ep_path = cfg
                .data_root
                .join("network/endpoints")
                .join(format!("{}.json", n.id));
            if let Some(eps) = std::fs::read(&ep_path)
                .ok()
                .and_then(|b| serde_json::from_slice::<EndpointsFile>(&b).ok())
            {
                n.endpoints = eps.endpoints;
                if let Some(i) = n.ipam.as_mut() {
                    i.allocated = eps.allocated;
                    i.last = eps.last;
                }
            }
            st.networks.insert(n.id.clone(), n);
        }
        for c in crate::store::read_dir_json::<ContainerRecord>(
            &cfg.data_root.join("network/containers"),
        )? {
            st.containers.insert(c.id.clone(), c);
        }
        let fw = match cfg.firewall {
            Firewall::Auto if nft::available() => Firewall::Nftables,
            Firewall::Auto if crate::iptables::available() => Firewall::Iptables,
            Firewall::Auto => {
                tracing::warn!(
                    "neither nft nor iptables found: no NAT, isolation or published ports"
                );
                Firewall::Off
            }
            f => f,
        };
        let mgr = NetworkManager {
            spares: crate::spares::Spares::new(&cfg.netns_dir),
            dns: DnsService::new(upstreams)?,
            state: Mutex::new(st),
            cfg,
            fw,
        };
        if mgr.cfg.predefined_networks {
            let mut st = mgr.state.lock().expect("state");
            for (name, driver) in [("bridge", "bridge"), ("host", "host"), ("none", "null")] {
                if let Some(existing) = st.networks.values_mut().find(|n| n.name == name) {
                    // `bip` / `bridge` changed in the daemon config: follow it while nothing is attached
                    let bip = mgr.cfg.bip;
                    let stale = existing.default_bridge
                        && existing.endpoints.is_empty()
                        && (existing.ipam.as_ref().map(|i| (i.subnet, i.gateway))
                            != Some((bip.trunc(), bip.addr))
                            || existing.bridge.as_deref() != Some(mgr.cfg.bridge_name.as_str()));
                    if stale {
                        existing.ipam = Some(Ipam::new(bip.trunc(), Some(bip.addr), None)?);
                        existing.bridge = Some(mgr.cfg.bridge_name.clone());
                        existing
                            .options
                            .insert(OPT_BRIDGE_NAME.into(), mgr.cfg.bridge_name.clone());
                        let snapshot = existing.clone();
                        mgr.save_network(&snapshot)?;
                    }
                    continue;
                }
                let mut rec = NetworkRecord {
                    id: crate::random_hex(32),
                    name: name.into(),
                    created: now_rfc3339(),
                    driver: driver.into(),
                    internal: false,
                    attachable: false,
                    enable_ipv6: false,
                    default_bridge: name == "bridge",
                    options: BTreeMap::new(),
                    labels: BTreeMap::new(),
                    bridge: None,
                    mtu: mgr.cfg.mtu,
                    ipam: None,
                    endpoints: BTreeMap::new(),
                };
                if name == "bridge" {
                    let bip = mgr.cfg.bip;
                    rec.ipam = Some(Ipam::new(bip.trunc(), Some(bip.addr), None)?);
                    rec.bridge = Some(mgr.cfg.bridge_name.clone());
                    for (k, v) in [
                        ("com.docker.network.bridge.default_bridge", "true"),
                        ("com.docker.network.bridge.enable_icc", "true"),
                        ("com.docker.network.bridge.enable_ip_masquerade", "true"),
                        (OPT_HOST_BINDING, "0.0.0.0"),
                        (OPT_BRIDGE_NAME, mgr.cfg.bridge_name.as_str()),
                        (OPT_MTU, &mgr.cfg.mtu.unwrap_or(1500).to_string()),
                    ] {
                        rec.options.insert(k.into(), v.into());
                    }
                }
                mgr.save_network(&rec)?;
                st.networks.insert(rec.id.clone(), rec);
            }
        }
        Ok(mgr)
    }

    /// The settings this manager runs with.
    pub fn config(&self) -> &NetworkConfig {
        &self.cfg
    }

    /// Removes the spare network namespaces and makes no more (daemon shutdown).
    pub fn close_spares(&self) {
        self.spares.close();
    }

    /// Makes the spare network namespaces (after [`NetworkManager::reconcile`]; done again as
    /// starts use them).
    pub fn fill_spares(&self) {
        self.spares.fill();
    }

    /// Where container `id`'s namespace file goes.
    pub fn netns_path(&self, id: &str) -> PathBuf {
        self.cfg.netns_dir.join(id)
    }

    fn net_path(&self, id: &str) -> PathBuf {
        self.cfg
            .data_root
            .join("network/networks")
            .join(format!("{id}.json"))
    }

    fn ctr_path(&self, id: &str) -> PathBuf {
        self.cfg
            .data_root
            .join("network/containers")
            .join(format!("{id}.json"))
    }

    /// Saves a network definition (durable).
    fn save_network(&self, n: &NetworkRecord) -> Result<()> {
        crate::store::write_json(&self.net_path(&n.id), n, true)
    }

    fn ep_path(&self, id: &str) -> PathBuf {
        self.cfg
            .data_root
            .join("network/endpoints")
            .join(format!("{id}.json"))
    }

    /// Saves a network's endpoints and allocations in their own file (atomic, not fsynced: see
    /// `store::write_json`), so that the durable definition is never rewritten on a container start.
    fn save_endpoints(&self, n: &NetworkRecord) -> Result<()> {
        let f = EndpointsFile {
            endpoints: n.endpoints.clone(),
            allocated: n
                .ipam
                .as_ref()
                .map(|i| i.allocated.clone())
                .unwrap_or_default(),
            last: n.ipam.as_ref().and_then(|i| i.last),
        };
        crate::store::write_json(&self.ep_path(&n.id), &f, false)
    }

    fn find<'a>(st: &'a State, key: &str) -> Result<&'a NetworkRecord> {
        if let Some(n) = st.networks.get(key) {
            return Ok(n);
        }
        if let Some(n) = st.networks.values().find(|n| n.name == key) {
            return Ok(n);
        }
        let hits: Vec<&NetworkRecord> = st
            .networks
            .values()
            .filter(|n| !key.is_empty() && n.id.starts_with(key))
            .collect();
        match hits.len() {
            1 => Ok(hits[0]),
            0 => Err(NetworkError::NotFound(format!("network {key} not found"))),
            _ => Err(NetworkError::InvalidArgument(format!(
                "network {key} is ambiguous ({} matches found based on ID prefix)",
                hits.len()
            ))),
        }
    }

    fn resource(n: &NetworkRecord, with_containers: bool) -> NetworkResource {
        let config = n
            .ipam
            .as_ref()
            .map(|i| {
                vec![IpamConfig {
                    subnet: i.subnet.to_string(),
                    gateway: i.gateway.to_string(),
                    ip_range: i.ip_range.map(|r| r.to_string()).unwrap_or_default(),
                    auxiliary_addresses: BTreeMap::new(),
                }]
            })
            .unwrap_or_default();
        let prefix = n.ipam.as_ref().map(|i| i.subnet.prefix).unwrap_or(0);
        let containers = if with_containers {
            n.endpoints
                .iter()
                .map(|(cid, e)| {
                    (
                        cid.clone(),
                        NetworkContainer {
                            name: e.name.clone(),
                            endpoint_id: e.endpoint_id.clone(),
                            mac_address: e.mac.clone(),
                            ipv4_address: e
                                .ip
                                .map(|ip| format!("{ip}/{prefix}"))
                                .unwrap_or_default(),
                            ipv6_address: String::new(),
                        },
                    )
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        NetworkResource {
            name: n.name.clone(),
            id: n.id.clone(),
            created: n.created.clone(),
            scope: "local".into(),
            driver: n.driver.clone(),
            enable_ipv6: n.enable_ipv6,
            ipam: ApiIpam {
                driver: "default".into(),
                options: None,
                config,
            },
            internal: n.internal,
            attachable: n.attachable,
            ingress: false,
            config_from: Default::default(),
            config_only: false,
            containers,
            options: n.options.clone(),
            labels: n.labels.clone(),
        }
    }

    /// `GET /networks/{id}`: by full ID, name, or unique ID prefix.
    pub fn inspect_network(&self, key: &str) -> Result<NetworkResource> {
        let st = self.state.lock().expect("state");
        Ok(Self::resource(Self::find(&st, key)?, true))
    }

    /// `GET /networks` (without `Containers`, as dockerd); filters are the caller's business.
    pub fn list_networks(&self) -> Vec<NetworkResource> {
        let st = self.state.lock().expect("state");
        let mut v: Vec<NetworkResource> = st
            .networks
            .values()
            .map(|n| Self::resource(n, false))
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// `POST /networks/create`: validates, allocates the subnet, creates the bridge, rules and DNS server.
    pub fn create_network(&self, req: &NetworkCreateRequest) -> Result<NetworkCreateResponse> {
        let mut st = self.state.lock().expect("state");
        if req.name.is_empty() {
            return Err(NetworkError::InvalidArgument(
                "network name must not be empty".into(),
            ));
        }
        if st.networks.values().any(|n| n.name == req.name) {
            return Err(NetworkError::Conflict(format!(
                "network with name {} already exists",
                req.name
            )));
        }
        match req.driver.as_str() {
            "" | "bridge" => {}
            "host" | "null" => {
                return Err(NetworkError::Forbidden(format!(
                    "only one instance of \"{}\" network is allowed",
                    req.driver
                )));
            }
            d => {
                return Err(NetworkError::NotFound(format!(
                    "could not find plugin {d} in v1 plugin registry: plugin not found"
                )));
            }
        }
        if req.enable_ipv6 == Some(true) {
            return Err(NetworkError::InvalidArgument(
                "IPv6 networks are not supported by berth yet".into(),
            ));
        }
        let used: Vec<Ipv4Net> = st
            .networks
            .values()
            .filter_map(|n| n.ipam.as_ref().map(|i| i.subnet))
            .collect();
        let cfgs = req
            .ipam
            .as_ref()
            .map(|i| i.config.clone())
            .unwrap_or_default();
        if cfgs.len() > 1 {
            return Err(NetworkError::InvalidArgument(
                "berth supports one IPv4 pool per network".into(),
            ));
        }
        let ipam = match cfgs.first().filter(|c| !c.subnet.is_empty()) {
            Some(c) => {
                let subnet = Ipv4Net::parse_subnet(&c.subnet)?;
                if used.iter().any(|u| u.overlaps(&subnet)) {
                    return Err(NetworkError::InvalidArgument(
                        "invalid pool request: Pool overlaps with other one on this address space"
                            .into(),
                    ));
                }
                let gw = if c.gateway.is_empty() {
                    None
                } else {
                    Some(c.gateway.parse().map_err(|_| {
                        NetworkError::InvalidArgument(format!(
                            "invalid gateway address {}",
                            c.gateway
                        ))
                    })?)
                };
                let range = if c.ip_range.is_empty() {
                    None
                } else {
                    Some(c.ip_range.parse::<Ipv4Net>()?.trunc())
                };
                Ipam::new(subnet, gw, range)?
            }
            None => {
                if cfgs
                    .first()
                    .is_some_and(|c| !c.gateway.is_empty() || !c.ip_range.is_empty())
                {
                    return Err(NetworkError::InvalidArgument(
                        "invalid pool request: gateway or ip-range given without a subnet".into(),
                    ));
                }
                let mut avoid = used.clone();
                avoid.extend(host_routes());
                let subnet = self
                    .cfg
                    .default_address_pools
                    .iter()
                    .find_map(|p| p.next_free(&avoid))
                    .ok_or_else(|| {
                        NetworkError::Forbidden(
                            "all predefined address pools have been fully subnetted".into(),
                        )
                    })?;
                Ipam::new(subnet, None, None)?
            }
        };
        let id = crate::random_hex(32);
        let bridge = match req.options.get(OPT_BRIDGE_NAME) {
            Some(b) if !b.is_empty() => b.clone(),
            _ => {
                let room = 15usize.saturating_sub(self.cfg.bridge_prefix.len()).min(12);
                format!("{}{}", self.cfg.bridge_prefix, &id[..room])
            }
        };
        if bridge.len() > 15 || bridge.contains(['/', ' ']) {
            return Err(NetworkError::InvalidArgument(format!(
                "invalid bridge name {bridge:?}"
            )));
        }
        if st
            .networks
            .values()
            .any(|n| n.bridge.as_deref() == Some(bridge.as_str()))
        {
            return Err(NetworkError::Conflict(format!(
                "bridge name {bridge} is already in use"
            )));
        }
        let mtu = match req.options.get(OPT_MTU) {
            Some(m) => Some(
                m.parse()
                    .map_err(|_| NetworkError::InvalidArgument(format!("invalid MTU {m}")))?,
            ),
            None => self.cfg.mtu,
        };
        let rec = NetworkRecord {
            id: id.clone(),
            name: req.name.clone(),
            created: now_rfc3339(),
            driver: "bridge".into(),
            internal: req.internal,
            attachable: req.attachable,
            enable_ipv6: false,
            default_bridge: false,
            options: req.options.clone(),
            labels: req.labels.clone(),
            bridge: Some(bridge),
            mtu,
            ipam: Some(ipam),
            endpoints: BTreeMap::new(),
        };
        self.bring_up_network(&rec)?;
        if let Err(e) = self.save_network(&rec) {
            let _ = link::delete_link(rec.bridge.as_deref().unwrap_or_default());
            return Err(e);
        }
        st.networks.insert(id.clone(), rec);
        let fw = self.apply_firewall(&st);
        let rec = st.networks.get(&id).expect("just inserted").clone();
        self.start_dns(&rec);
        fw?;
        Ok(NetworkCreateResponse {
            id,
            warning: String::new(),
        })
    }

    fn bring_up_network(&self, rec: &NetworkRecord) -> Result<()> {
        let (Some(bridge), Some(ipam)) = (&rec.bridge, &rec.ipam) else {
            return Ok(());
        };
        link::ensure_bridge(bridge, ipam.gateway, ipam.subnet.prefix, rec.mtu)?;
        set_sysctl("/proc/sys/net/ipv4/ip_forward", "1");
        set_sysctl(
            &format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"),
            "1",
        );
        Ok(())
    }

    fn start_dns(&self, rec: &NetworkRecord) {
        if !rec.has_dns() {
            return;
        }
        self.dns
            .set_names(&rec.id, Self::names_of(rec, &BTreeMap::new()));
        if let Some(ipam) = &rec.ipam {
            if let Err(e) = self.dns.start(&rec.id, ipam.gateway, self.cfg.dns_port) {
                tracing::warn!("embedded DNS of network {}: {e}", rec.name);
            }
        }
    }

    fn names_of(rec: &NetworkRecord, _ctrs: &BTreeMap<String, ContainerRecord>) -> NetworkNames {
        NetworkNames {
            entries: rec
                .endpoints
                .values()
                .filter_map(|e| {
                    Some(DnsEntry {
                        names: dns_names(e),
                        ip: e.ip?,
                        ptr: format!("{}.{}", e.name, rec.name),
                        upstreams: e.upstreams.clone(),
                    })
                })
                .collect(),
            forward: !rec.internal,
        }
    }

    fn refresh_dns(&self, st: &State) {
        for n in st.networks.values().filter(|n| n.has_dns()) {
            self.dns.set_names(&n.id, Self::names_of(n, &st.containers));
        }
    }

    /// `DELETE /networks/{id}`.
    pub fn remove_network(&self, key: &str) -> Result<()> {
        let mut st = self.state.lock().expect("state");
        let n = Self::find(&st, key)?.clone();
        if self.cfg.predefined_networks && matches!(n.name.as_str(), "bridge" | "host" | "none") {
            return Err(NetworkError::Forbidden(format!(
                "{} is a pre-defined network and cannot be removed",
                n.name
            )));
        }
        if !n.endpoints.is_empty() {
            return Err(NetworkError::Forbidden(format!(
                "error while removing network: network {} id {} has active endpoints",
                n.name, n.id
            )));
        }
        self.dns.stop(&n.id);
        st.networks.remove(&n.id);
        let fw = self.apply_firewall(&st);
        if let Some(b) = &n.bridge {
            link::delete_link(b)?;
        }
        crate::store::remove(&self.net_path(&n.id))?;
        crate::store::remove(&self.ep_path(&n.id))?;
        fw
    }

    fn ruleset(&self, st: &State) -> Ruleset {
        Ruleset {
            networks: st
                .networks
                .values()
                .filter_map(|n| {
                    Some(FwNetwork {
                        id: n.id.clone(),
                        bridge: n.bridge.clone()?,
                        subnet: n.ipam.as_ref()?.subnet,
                        internal: n.internal,
                    })
                })
                .collect(),
            ports: st
                .containers
                .values()
                .flat_map(|c| c.ports.iter().cloned())
                .collect(),
        }
    }

    fn apply_firewall(&self, st: &State) -> Result<()> {
        match self.fw {
            Firewall::Nftables => nft::apply(&self.cfg.nft_table, &self.ruleset(st)),
            Firewall::Iptables => crate::iptables::apply(&self.cfg.nft_table, &self.ruleset(st)),
            _ => Ok(()),
        }
    }

    /// The firewall in use (`Auto` resolved).
    pub fn firewall(&self) -> Firewall {
        self.fw
    }

    /// The nftables script that describes the current state (what `reconcile` and every change apply).
    pub fn ruleset_script(&self) -> String {
        let st = self.state.lock().expect("state");
        nft::render(&self.cfg.nft_table, &self.ruleset(&st))
    }

    /// At container start: creates the namespace (unless `--network host`), an endpoint per network
    /// (address, MAC, veth `eth0`, `eth1`, ...), published ports and DNS names. On error nothing is left.
    pub fn setup(&self, req: &ContainerNetworkRequest) -> Result<ContainerNetwork> {
        let mut st = self.state.lock().expect("state");
        if st.containers.contains_key(&req.id) {
            return Err(NetworkError::Conflict(format!(
                "container {} already has its network set up",
                req.id
            )));
        }
        // resolve all networks first, so that an unknown name fails before any change
        let mut nets: Vec<(String, EndpointSettings)> = Vec::new();
        for (key, es) in &req.networks {
            let key = if key == "default" {
                "bridge"
            } else {
                key.as_str()
            };
            let n = Self::find(&st, key)?;
            nets.push((n.id.clone(), es.clone()));
        }
        let host = nets.iter().any(|(id, _)| st.networks[id].driver == "host");
        if host && nets.len() > 1 {
            return Err(NetworkError::InvalidArgument(
                "container cannot be connected to host network and other networks".into(),
            ));
        }
        let netns_path = (!host).then(|| self.netns_path(&req.id));
        let mut rec = ContainerRecord {
            id: req.id.clone(),
            name: req.name.clone(),
            netns: netns_path.clone(),
            networks: nets.iter().map(|(id, _)| id.clone()).collect(),
            ports: vec![],
        };
        if let Some(p) = &netns_path {
            let _ = netns::remove_netns(p);
            // A spare namespace if one is ready; else, with a bridge endpoint, the namespace is
            // made together with its veth (setup_locked).
            let spare = self.spares.take();
            self.spares.fill();
            if let Some(spare) = spare {
                self.spares.adopt(spare, p)?;
            } else if !nets.iter().any(|(id, _)| st.networks[id].is_bridge()) {
                netns::create_netns(p)?;
            }
        }
        let res = self.setup_locked(&mut st, req, &nets, &mut rec);
        match res {
            Ok(out) => Ok(out),
            Err(e) => {
                self.release_locked(&mut st, &rec);
                let _ = crate::store::remove(&self.ctr_path(&rec.id));
                Err(e)
            }
        }
    }

    fn setup_locked(
        &self,
        st: &mut State,
        req: &ContainerNetworkRequest,
        nets: &[(String, EndpointSettings)],
        rec: &mut ContainerRecord,
    ) -> Result<ContainerNetwork> {
        let mut out = ContainerNetwork {
            netns_path: rec.netns.clone(),
            ..Default::default()
        };
        let mut bridge_ifs = 0;
        let mut first_bridge: Option<(String, Ipv4Addr)> = None;
        for (nid, es) in nets {
            let n = st.networks.get_mut(nid).expect("resolved");
            let mut ep = EndpointRecord {
                container_id: req.id.clone(),
                name: req.name.clone(),
                endpoint_id: crate::random_hex(32),
                ip: None,
                mac: String::new(),
                veth: String::new(),
                ifname: String::new(),
                aliases: es.aliases.clone().unwrap_or_default(),
                links: es.links.clone().unwrap_or_default(),
                static_ip: false,
                upstreams: req.dns.clone(),
            };
            if n.is_bridge() {
                let ipam = n.ipam.as_mut().expect("bridge networks have IPAM");
                let wanted = es
                    .ipam_config
                    .as_ref()
                    .map(|c| c.ipv4_address.as_str())
                    .unwrap_or("");
                let ip = if wanted.is_empty() {
                    ipam.allocate(&req.id)?
                } else {
                    if n.default_bridge {
                        return Err(NetworkError::InvalidArgument(
                            "user specified IP address is supported on user defined networks only"
                                .into(),
                        ));
                    }
                    let ip: Ipv4Addr = wanted.parse().map_err(|_| {
                        NetworkError::InvalidArgument(format!("invalid IPv4 address: {wanted}"))
                    })?;
                    ipam.reserve(ip, &req.id)?;
                    ep.static_ip = true;
                    ip
                };
                let mac = if es.mac_address.is_empty() {
                    mac_from_ip(ip)
                } else {
                    parse_mac(&es.mac_address)?
                };
                ep.ip = Some(ip);
                ep.mac = format_mac(&mac);
                ep.veth = link::random_veth_name();
                ep.ifname = format!("eth{bridge_ifs}");
                bridge_ifs += 1;
                // persist the allocation before touching the kernel: reconcile cleans up after a crash
                n.endpoints.insert(req.id.clone(), ep.clone());
                let snapshot = n.clone();
                self.save_endpoints(&snapshot)?;
                let ipam = snapshot.ipam.as_ref().expect("bridge");
                let ns = rec.netns.as_deref().expect("bridge endpoints have a netns");
                let spec = VethSpec {
                    bridge: snapshot.bridge.clone().expect("bridge"),
                    host_name: ep.veth.clone(),
                    ifname: ep.ifname.clone(),
                    mac,
                    addr: Ipv4Net::new(ip, ipam.subnet.prefix),
                    gateway: (!snapshot.internal).then_some(ipam.gateway),
                    mtu: snapshot.mtu,
                };
                if ns.exists() {
                    link::setup_veth(ns, &spec)?;
                } else {
                    netns::create_netns_with(ns, Some(spec))?;
                }
                if first_bridge.is_none() {
                    first_bridge = Some((nid.clone(), ip));
                    out.primary_ip = Some(ip);
                    out.host_gateway = Some(ipam.gateway);
                    if snapshot.has_dns() {
                        out.embedded_dns = Some(ipam.gateway);
                    }
                }
            } else {
                n.endpoints.insert(req.id.clone(), ep.clone());
                let snapshot = n.clone();
                self.save_endpoints(&snapshot)?;
                out.host_network |= snapshot.driver == "host";
            }
            let n = &st.networks[nid];
            out.endpoints
                .insert(n.name.clone(), endpoint_settings(n, &ep, &req.id));
        }
        // published ports go to the first bridge network's address
        let mut wanted: BTreeMap<String, Vec<PortBinding>> = req.port_bindings.clone();
        if req.publish_all_ports {
            for p in &req.exposed_ports {
                wanted
                    .entry(p.clone())
                    .or_insert_with(|| vec![PortBinding::default()]);
            }
        }
        for p in &req.exposed_ports {
            out.ports.entry(p.clone()).or_insert(None);
        }
        if let Some((nid, cip)) = &first_bridge {
            let default_host_ip = st.networks[nid]
                .options
                .get(OPT_HOST_BINDING)
                .cloned()
                .unwrap_or_default();
            let mut used: BTreeSet<(Proto, u16)> = st
                .containers
                .values()
                .flat_map(|c| c.ports.iter().map(|p| (p.proto, p.host_port)))
                .collect();
            for (key, binds) in &wanted {
                let (cport, proto) = parse_port_key(key)?;
                let mut shown = Vec::new();
                for b in binds {
                    let host_ip_s = if b.host_ip.is_empty() {
                        default_host_ip.as_str()
                    } else {
                        b.host_ip.as_str()
                    };
                    let host_ip: Option<Ipv4Addr> = match host_ip_s {
                        "" | "0.0.0.0" => None,
                        s => match s.parse::<IpAddr>() {
                            Ok(IpAddr::V4(v4)) => Some(v4),
                            Ok(IpAddr::V6(_)) => continue, // ip6 table: later
                            Err(_) => {
                                return Err(NetworkError::InvalidArgument(format!(
                                    "invalid host IP: {s}"
                                )));
                            }
                        },
                    };
                    let hport = pick_host_port(proto, host_ip, &b.host_port, &mut used)?;
                    rec.ports.push(PortMapping {
                        proto,
                        host_ip,
                        host_port: hport,
                        container_ip: *cip,
                        container_port: cport,
                        container_id: req.id.clone(),
                    });
                    shown.push(PortBinding {
                        host_ip: host_ip
                            .map(|i| i.to_string())
                            .unwrap_or_else(|| "0.0.0.0".into()),
                        host_port: hport.to_string(),
                    });
                }
                out.ports.insert(key.clone(), Some(shown));
            }
        } else if !wanted.is_empty() && !out.host_network {
            tracing::debug!(
                "container {} publishes ports but has no bridge network",
                short(&req.id)
            );
        }
        crate::store::write_json(&self.ctr_path(&rec.id), &*rec, false)?;
        st.containers.insert(rec.id.clone(), rec.clone());
        if !rec.ports.is_empty() {
            self.apply_firewall(st)?;
        }
        self.refresh_dns(st);
        Ok(out)
    }

    /// Releases everything of `rec`'s container (best effort; used on failure, stop and reconcile).
    fn release_locked(&self, st: &mut State, rec: &ContainerRecord) {
        self.release_locked_with(st, rec, true)
    }

    /// [`Self::release_locked`]; `delete_veths` false where the caller deleted them already.
    fn release_locked_with(&self, st: &mut State, rec: &ContainerRecord, delete_veths: bool) {
        let had_ports = st
            .containers
            .get(&rec.id)
            .is_some_and(|c| !c.ports.is_empty())
            || !rec.ports.is_empty();
        st.containers.remove(&rec.id);
        let mut changed = Vec::new();
        for n in st.networks.values_mut() {
            if let Some(ep) = n.endpoints.remove(&rec.id) {
                if delete_veths && !ep.veth.is_empty() {
                    if let Err(e) = link::delete_link(&ep.veth) {
                        tracing::warn!("delete {}: {e}", ep.veth);
                    }
                }
                if let Some(ipam) = n.ipam.as_mut() {
                    ipam.release_owner(&rec.id);
                }
                changed.push(n.clone());
            }
        }
        for n in changed {
            if let Err(e) = self.save_endpoints(&n) {
                tracing::warn!("{e}");
            }
        }
        if had_ports {
            if let Err(e) = self.apply_firewall(st) {
                tracing::warn!("{e}");
            }
        }
        self.refresh_dns(st);
        if let Some(p) = &rec.netns {
            if let Err(e) = netns::remove_netns(p) {
                tracing::warn!("{e}");
            }
        }
    }

    /// At container stop (or when its start failed after `setup`): deletes its veths, releases addresses
    /// and ports, drops its DNS names and removes its namespace file. Unknown containers are fine.
    pub fn teardown(&self, id: &str) -> Result<()> {
        // Deleting a veth waits for the kernel's RCU grace periods (tens of ms): done without the
        // state lock, so other containers' setups do not queue behind it. The addresses are released
        // only afterwards, so none is reused while the old veth is still on its bridge.
        let veths: Vec<String> = {
            let st = self.state.lock().expect("state");
            st.networks
                .values()
                .filter_map(|n| n.endpoints.get(id))
                .map(|ep| ep.veth.clone())
                .filter(|v| !v.is_empty())
                .collect()
        };
        for v in &veths {
            if let Err(e) = link::delete_link(v) {
                tracing::warn!("delete {v}: {e}");
            }
        }
        let mut st = self.state.lock().expect("state");
        let rec = st
            .containers
            .get(id)
            .cloned()
            .unwrap_or_else(|| ContainerRecord {
                id: id.to_string(),
                name: String::new(),
                netns: None,
                networks: vec![],
                ports: vec![],
            });
        self.release_locked_with(&mut st, &rec, false);
        crate::store::remove(&self.ctr_path(id))
    }

    /// `POST /networks/{id}/connect` for a running container (set up with [`NetworkManager::setup`]):
    /// adds an endpoint `eth<N>` in its namespace. Returns the endpoint for `NetworkSettings.Networks`.
    pub fn connect(
        &self,
        container_id: &str,
        network: &str,
        es: &EndpointSettings,
    ) -> Result<EndpointSettings> {
        let mut st = self.state.lock().expect("state");
        let nid = Self::find(&st, network)?.id.clone();
        let mut rec = st.containers.get(container_id).cloned().ok_or_else(|| {
            NetworkError::NotFound(format!("container {container_id} has no network state"))
        })?;
        if st.networks[&nid].endpoints.contains_key(container_id) {
            return Err(NetworkError::Forbidden(format!(
                "endpoint with name {} already exists in network {}",
                rec.name, st.networks[&nid].name
            )));
        }
        let n = st.networks.get_mut(&nid).expect("found");
        if !n.is_bridge() || rec.netns.is_none() {
            return Err(NetworkError::InvalidArgument(format!(
                "container cannot be connected to network {} in its network mode",
                n.name
            )));
        }
        let index = st
            .networks
            .values()
            .filter(|n| n.is_bridge() && n.endpoints.contains_key(container_id))
            .count();
        let n = st.networks.get_mut(&nid).expect("found");
        let ipam = n.ipam.as_mut().expect("bridge");
        let wanted = es
            .ipam_config
            .as_ref()
            .map(|c| c.ipv4_address.clone())
            .unwrap_or_default();
        let ip = if wanted.is_empty() {
            ipam.allocate(container_id)?
        } else {
            let ip: Ipv4Addr = wanted.parse().map_err(|_| {
                NetworkError::InvalidArgument(format!("invalid IPv4 address: {wanted}"))
            })?;
            ipam.reserve(ip, container_id)?;
            ip
        };
        let mac = if es.mac_address.is_empty() {
            mac_from_ip(ip)
        } else {
            parse_mac(&es.mac_address)?
        };
        let ep = EndpointRecord {
            container_id: container_id.to_string(),
            name: rec.name.clone(),
            endpoint_id: crate::random_hex(32),
            ip: Some(ip),
            mac: format_mac(&mac),
            veth: link::random_veth_name(),
            ifname: format!("eth{index}"),
            aliases: es.aliases.clone().unwrap_or_default(),
            links: es.links.clone().unwrap_or_default(),
            static_ip: !wanted.is_empty(),
            upstreams: vec![],
        };
        n.endpoints.insert(container_id.to_string(), ep.clone());
        let snapshot = n.clone();
        let ipam = snapshot.ipam.as_ref().expect("bridge");
        let res = self.save_endpoints(&snapshot).and_then(|()| {
            link::setup_veth(
                rec.netns.as_deref().expect("checked"),
                &VethSpec {
                    bridge: snapshot.bridge.clone().expect("bridge"),
                    host_name: ep.veth.clone(),
                    ifname: ep.ifname.clone(),
                    mac,
                    addr: Ipv4Net::new(ip, ipam.subnet.prefix),
                    // only the first network gives the default route
                    gateway: None,
                    mtu: snapshot.mtu,
                },
            )
        });
        if let Err(e) = res {
            let n = st.networks.get_mut(&nid).expect("found");
            n.endpoints.remove(container_id);
            if let Some(i) = n.ipam.as_mut() {
                i.release(ip, container_id);
            }
            let snap = n.clone();
            let _ = self.save_endpoints(&snap);
            return Err(e);
        }
        rec.networks.push(nid.clone());
        crate::store::write_json(&self.ctr_path(container_id), &rec, false)?;
        st.containers.insert(container_id.to_string(), rec);
        self.refresh_dns(&st);
        Ok(endpoint_settings(&st.networks[&nid], &ep, container_id))
    }

    /// `POST /networks/{id}/disconnect`: removes one endpoint (its veth, address, DNS names).
    pub fn disconnect(&self, container_id: &str, network: &str) -> Result<()> {
        let mut st = self.state.lock().expect("state");
        let nid = Self::find(&st, network)?.id.clone();
        let n = st.networks.get_mut(&nid).expect("found");
        let Some(ep) = n.endpoints.remove(container_id) else {
            return Err(NetworkError::Forbidden(format!(
                "container {container_id} is not connected to network {}",
                n.name
            )));
        };
        if let Some(i) = n.ipam.as_mut() {
            i.release_owner(container_id);
        }
        let snap = n.clone();
        if !ep.veth.is_empty() {
            link::delete_link(&ep.veth)?;
        }
        self.save_endpoints(&snap)?;
        let mut ports_changed = false;
        if let Some(c) = st.containers.get_mut(container_id) {
            c.networks.retain(|x| *x != nid);
            if let Some(ip) = ep.ip {
                let before = c.ports.len();
                c.ports.retain(|p| p.container_ip != ip);
                ports_changed = before != c.ports.len();
            }
            let c = c.clone();
            crate::store::write_json(&self.ctr_path(container_id), &c, false)?;
        }
        if ports_changed {
            self.apply_firewall(&st)?;
        }
        self.refresh_dns(&st);
        Ok(())
    }

    /// On daemon start, with the IDs of the containers whose shims are still alive: releases the network
    /// state of every other container, deletes orphan veths/bridges/namespace files, re-creates missing
    /// bridges and veths, rewrites the nftables table from state, and starts the DNS servers.
    pub fn reconcile(&self, running: &[String]) -> Result<ReconcileReport> {
        let mut st = self.state.lock().expect("state");
        let mut report = ReconcileReport::default();
        let running: BTreeSet<&str> = running.iter().map(String::as_str).collect();
        // containers (and endpoints) that are gone
        let stale: Vec<ContainerRecord> = st
            .containers
            .values()
            .filter(|c| !running.contains(c.id.as_str()))
            .cloned()
            .collect();
        let orphan_eps: BTreeSet<String> = st
            .networks
            .values()
            .flat_map(|n| n.endpoints.keys())
            .filter(|id| !running.contains(id.as_str()) || !st.containers.contains_key(*id))
            .cloned()
            .collect();
        for id in orphan_eps
            .iter()
            .chain(stale.iter().map(|c| &c.id))
            .collect::<BTreeSet<_>>()
        {
            let rec = st
                .containers
                .get(id)
                .cloned()
                .unwrap_or_else(|| ContainerRecord {
                    id: id.clone(),
                    name: String::new(),
                    netns: None,
                    networks: vec![],
                    ports: vec![],
                });
            self.release_locked(&mut st, &rec);
            crate::store::remove(&self.ctr_path(id))?;
            report.released_containers.push(id.clone());
        }
        // bridges
        for n in st.networks.values() {
            self.bring_up_network(n)?;
        }
        let bridges: BTreeSet<String> = st
            .networks
            .values()
            .filter_map(|n| n.bridge.clone())
            .collect();
        let veths: BTreeSet<String> = st
            .networks
            .values()
            .flat_map(|n| n.endpoints.values().map(|e| e.veth.clone()))
            .collect();
        let links = link::list_links()?;
        let our_bridge_idx: BTreeSet<u32> = links
            .iter()
            .filter(|l| bridges.contains(&l.name))
            .map(|l| l.index)
            .collect();
        for l in &links {
            let orphan_bridge = l.kind.as_deref() == Some("bridge")
                && !bridges.contains(&l.name)
                && l.name
                    .strip_prefix(&self.cfg.bridge_prefix)
                    .is_some_and(|rest| {
                        rest.len() == 15usize.saturating_sub(self.cfg.bridge_prefix.len()).min(12)
                            && rest.chars().all(|c| c.is_ascii_hexdigit())
                    });
            let orphan_veth = l.kind.as_deref() == Some("veth")
                && l.master.is_some_and(|m| our_bridge_idx.contains(&m))
                && !veths.contains(&l.name);
            if orphan_bridge || orphan_veth {
                link::delete_link(&l.name)?;
                report.removed_links.push(l.name.clone());
            }
        }
        // namespace files
        let known: BTreeSet<PathBuf> = st
            .containers
            .values()
            .filter_map(|c| c.netns.clone())
            .collect();
        if let Ok(rd) = std::fs::read_dir(&self.cfg.netns_dir) {
            for ent in rd.flatten() {
                let p = ent.path();
                if !known.contains(&p) && !self.spares.holds(&p) {
                    netns::remove_netns(&p)?;
                    report.removed_netns.push(p);
                }
            }
        }
        // veths of running containers that are missing
        let present: BTreeSet<String> = links.iter().map(|l| l.name.clone()).collect();
        let ctrs: Vec<ContainerRecord> = st.containers.values().cloned().collect();
        for c in ctrs {
            let Some(ns) = c.netns.as_deref().filter(|p| p.exists()) else {
                continue;
            };
            for nid in &c.networks {
                let Some(n) = st.networks.get(nid) else {
                    continue;
                };
                let Some(ep) = n.endpoints.get(&c.id) else {
                    continue;
                };
                let (Some(ip), Some(ipam), Some(bridge)) = (ep.ip, &n.ipam, &n.bridge) else {
                    continue;
                };
                if present.contains(&ep.veth) {
                    continue;
                }
                let first = c.networks.first() == Some(nid);
                let spec = VethSpec {
                    bridge: bridge.clone(),
                    host_name: ep.veth.clone(),
                    ifname: ep.ifname.clone(),
                    mac: parse_mac(&ep.mac).unwrap_or_else(|_| mac_from_ip(ip)),
                    addr: Ipv4Net::new(ip, ipam.subnet.prefix),
                    gateway: (first && !n.internal).then_some(ipam.gateway),
                    mtu: n.mtu,
                };
                match link::setup_veth(ns, &spec) {
                    Ok(()) => {
                        report
                            .restored_endpoints
                            .push(format!("{}:{}", short(&c.id), n.name))
                    }
                    Err(e) => tracing::warn!("restore {} of {}: {e}", ep.ifname, short(&c.id)),
                }
            }
        }
        self.apply_firewall(&st)?;
        for n in st.networks.values() {
            self.start_dns(n);
        }
        self.refresh_dns(&st);
        self.spares.fill();
        Ok(report)
    }

    /// Removes all kernel state of this manager (bridges, veths, namespaces, the nftables table) and
    /// stops DNS, keeping the records on disk. For tests and `berthd` uninstall paths.
    pub fn shutdown_and_clean(&self) -> Result<()> {
        self.close_spares();
        let mut st = self.state.lock().expect("state");
        let ctrs: Vec<ContainerRecord> = st.containers.values().cloned().collect();
        for c in ctrs {
            self.release_locked(&mut st, &c);
            crate::store::remove(&self.ctr_path(&c.id))?;
        }
        for n in st.networks.values() {
            self.dns.stop(&n.id);
            if let Some(b) = &n.bridge {
                link::delete_link(b)?;
            }
        }
        match self.fw {
            Firewall::Nftables => nft::delete_table(&self.cfg.nft_table)?,
            Firewall::Iptables => crate::iptables::delete(&self.cfg.nft_table)?,
            _ => {}
        }
        Ok(())
    }
}

fn dns_names(e: &EndpointRecord) -> Vec<String> {
    let mut v = vec![e.name.clone(), short(&e.container_id).to_string()];
    v.extend(e.aliases.iter().cloned());
    v.retain(|n| !n.is_empty());
    v.dedup();
    v
}

fn endpoint_settings(n: &NetworkRecord, ep: &EndpointRecord, _cid: &str) -> EndpointSettings {
    let (gateway, prefix) = match (&n.ipam, ep.ip) {
        (Some(i), Some(_)) => (i.gateway.to_string(), i.subnet.prefix),
        _ => (String::new(), 0),
    };
    EndpointSettings {
        ipam_config: None,
        links: (!ep.links.is_empty()).then(|| ep.links.clone()),
        aliases: (!ep.aliases.is_empty()).then(|| ep.aliases.clone()),
        mac_address: ep.mac.clone(),
        driver_opts: None,
        network_id: n.id.clone(),
        endpoint_id: ep.endpoint_id.clone(),
        gateway: if n.internal { String::new() } else { gateway },
        ip_address: ep.ip.map(|i| i.to_string()).unwrap_or_default(),
        ip_prefix_len: prefix,
        dns_names: n.has_dns().then(|| dns_names(ep)),
        ..Default::default()
    }
}

fn pick_host_port(
    proto: Proto,
    host_ip: Option<Ipv4Addr>,
    spec: &str,
    used: &mut BTreeSet<(Proto, u16)>,
) -> Result<u16> {
    let bad = || NetworkError::InvalidArgument(format!("invalid hostPort: {spec}"));
    let (lo, hi, explicit) = if spec.is_empty() || spec == "0" {
        (EPHEMERAL_FIRST, EPHEMERAL_LAST, false)
    } else if let Some((a, b)) = spec.split_once('-') {
        let (a, b): (u16, u16) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
        if a == 0 || b < a {
            return Err(bad());
        }
        (a, b, false)
    } else {
        let p: u16 = spec.parse().map_err(|_| bad())?;
        (p, p, true)
    };
    let shown_ip = host_ip
        .map(|i| i.to_string())
        .unwrap_or_else(|| "0.0.0.0".into());
    if explicit {
        if used.contains(&(proto, lo)) {
            return Err(NetworkError::Conflict(format!(
                "Bind for {shown_ip}:{lo} failed: port is already allocated"
            )));
        }
        if !port_free(proto, host_ip, lo) {
            return Err(NetworkError::Conflict(format!(
                "driver failed programming external connectivity: listen {}4 {shown_ip}:{lo}: bind: address already in use",
                proto.as_str()
            )));
        }
        used.insert((proto, lo));
        return Ok(lo);
    }
    // random start inside the range, like dockerd's allocator does not: it is serial; random keeps
    // parallel daemons (tests) from colliding
    let span = u32::from(hi - lo) + 1;
    let start = u32::from_str_radix(&crate::random_hex(4), 16).unwrap_or(0) % span;
    for i in 0..span {
        let p = lo + ((start + i) % span) as u16;
        if !used.contains(&(proto, p)) && port_free(proto, host_ip, p) {
            used.insert((proto, p));
            return Ok(p);
        }
    }
    Err(NetworkError::Conflict(format!(
        "Bind for {shown_ip}:{spec} failed: port is already allocated"
    )))
}

/// Parses a port key of `PortBindings`/`ExposedPorts`: `"80/tcp"`, `"53/udp"`, `"80"` (tcp).
pub fn parse_port(key: &str) -> Result<(u16, Proto)> {
    parse_port_key(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn host_ports() {
        let mut used = BTreeSet::new();
        let p = pick_host_port(Proto::Tcp, Some(Ipv4Addr::LOCALHOST), "", &mut used).unwrap();
        assert!(p >= EPHEMERAL_FIRST);
        assert!(used.contains(&(Proto::Tcp, p)));
        let q = pick_host_port(
            Proto::Udp,
            Some(Ipv4Addr::LOCALHOST),
            "40000-40001",
            &mut used,
        )
        .unwrap();
        assert!((40000..=40001).contains(&q));
        let r = pick_host_port(
            Proto::Udp,
            Some(Ipv4Addr::LOCALHOST),
            "40000-40001",
            &mut used,
        )
        .unwrap();
        assert_ne!(q, r);
        let e = pick_host_port(
            Proto::Udp,
            Some(Ipv4Addr::LOCALHOST),
            "40000-40001",
            &mut used,
        )
        .unwrap_err();
        assert!(e.to_string().contains("port is already allocated"), "{e}");
        used.insert((Proto::Tcp, 41000));
        let e = pick_host_port(Proto::Tcp, None, "41000", &mut used).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Bind for 0.0.0.0:41000 failed: port is already allocated"
        );
        assert!(pick_host_port(Proto::Tcp, None, "x", &mut used).is_err());
        assert_eq!(parse_port("53/udp").unwrap(), (53, Proto::Udp));
        assert_eq!(parse_port("80").unwrap(), (80, Proto::Tcp));
    }

    fn mgr(dir: &Path) -> NetworkManager {
        NetworkManager::open(NetworkConfig {
            data_root: dir.to_path_buf(),
            netns_dir: dir.join("netns"),
            upstream_dns: Some(vec![]),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn records_and_validation_without_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let m = mgr(dir.path());
        let names: Vec<String> = m.list_networks().into_iter().map(|n| n.name).collect();
        assert_eq!(names, ["bridge", "host", "none"]);
        let b = m.inspect_network("bridge").unwrap();
        assert_eq!(b.ipam.config[0].subnet, "172.29.0.0/16");
        assert_eq!(b.ipam.config[0].gateway, "172.29.0.1");
        assert_eq!(b.options[OPT_BRIDGE_NAME], "berth0");
        assert_eq!(m.inspect_network(&b.id[..6]).unwrap().name, "bridge");
        let e = m.inspect_network("nope").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::NotFound);
        assert_eq!(e.to_string(), "network nope not found");
        let e = m.remove_network("host").unwrap_err();
        assert_eq!(
            e.to_string(),
            "host is a pre-defined network and cannot be removed"
        );
        let mk = |name: &str, subnet: &str| NetworkCreateRequest {
            name: name.into(),
            ipam: Some(ApiIpam {
                config: vec![IpamConfig {
                    subnet: subnet.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = m.create_network(&mk("bridge", "10.9.0.0/24")).unwrap_err();
        assert_eq!(e.to_string(), "network with name bridge already exists");
        assert_eq!(e.kind(), crate::ErrorKind::Conflict);
        let e = m.create_network(&mk("x", "172.29.3.0/24")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid pool request: Pool overlaps with other one on this address space"
        );
        assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
        let e = m.create_network(&mk("x", "10.9.0.1/24")).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
        let mut r = mk("x", "");
        r.driver = "overlay".into();
        assert_eq!(
            m.create_network(&r).unwrap_err().kind(),
            crate::ErrorKind::NotFound
        );
        // state survives reopening, with the same IDs
        drop(m);
        let m2 = mgr(dir.path());
        assert_eq!(m2.inspect_network("bridge").unwrap().id, b.id);
        assert_eq!(m2.list_networks().len(), 3);
        drop(m2);
        // a new `bip` is followed by the default network
        let m3 = NetworkManager::open(NetworkConfig {
            data_root: dir.path().to_path_buf(),
            netns_dir: dir.path().join("netns"),
            upstream_dns: Some(vec![]),
            bip: "192.168.201.1/24".parse().unwrap(),
            ..Default::default()
        })
        .unwrap();
        let b3 = m3.inspect_network("bridge").unwrap();
        assert_eq!(b3.id, b.id);
        assert_eq!(b3.ipam.config[0].subnet, "192.168.201.0/24");
        assert_eq!(b3.ipam.config[0].gateway, "192.168.201.1");
    }
}
