//! Networks: the `/networks` API on top of `berth-network`, the daemon's network settings, and the hooks
//! the container lifecycle calls (create, start, exit, remove, daemon start and shutdown).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;

use berth_api::Filters;
use berth_api::container::{Port, PortBinding};
use berth_api::network::{EndpointSettings, NetworkCreateRequest, NetworkResource};
use berth_network::etc::{HostsSpec, ResolvConf, ResolvSpec};
use berth_network::{AddressPool, ContainerNetwork, NetworkConfig, NetworkError, NetworkManager};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::container::{Ctr, CtrPaths, Record};
use crate::daemon::Daemon;
use crate::error::{Error, Result};

/// Daemon config keys about networking (`bridge`, `bip`, `default-address-pools`, `nft-table`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetSettings {
    /// `bridge`: Linux bridge of the default network.
    pub bridge: Option<String>,
    /// `bip`: gateway address/prefix of the default network.
    pub bip: Option<String>,
    /// `default-address-pools`: `(base CIDR, size)`.
    pub pools: Option<Vec<(String, u8)>>,
    /// `nft-table` (berth's own): the nftables table of this daemon.
    pub nft_table: Option<String>,
}

/// The daemon.json keys [`NetSettings::from_config`] reads.
pub const CONFIG_KEYS: &[&str] = &["bridge", "bip", "default-address-pools", "nft-table"];

impl NetSettings {
    /// Reads the network keys of a daemon.json object.
    pub fn from_config(obj: &Map<String, Value>) -> std::result::Result<NetSettings, String> {
        let s = |k: &str| -> std::result::Result<Option<String>, String> {
            match obj.get(k) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(format!("invalid {k:?}: not a string")),
            }
        };
        let pools = match obj.get("default-address-pools") {
            None => None,
            Some(v) => {
                #[derive(Deserialize)]
                struct P {
                    base: String,
                    size: u8,
                }
                let list: Vec<P> = serde_json::from_value(v.clone())
                    .map_err(|e| format!("invalid \"default-address-pools\": {e}"))?;
                Some(list.into_iter().map(|p| (p.base, p.size)).collect())
            }
        };
        let n = NetSettings {
            bridge: s("bridge")?,
            bip: s("bip")?,
            pools,
            nft_table: s("nft-table")?,
        };
        if let Some(b) = &n.bridge {
            if b.is_empty() || b.len() > 15 {
                return Err(format!("invalid bridge name {b:?}"));
            }
        }
        if let Some(b) = &n.bip {
            b.parse::<berth_network::Ipv4Net>()
                .map_err(|e| format!("invalid bip: {e}"))?;
        }
        Ok(n)
    }
}

/// The persisted automatic choice of a non-default data root (see [`network_config`]).
#[derive(Debug, Serialize, Deserialize)]
struct AutoChoice {
    slot: u8,
}

/// The manager's configuration. The default data root gets Docker-like names (`berth0`, table
/// `berth`); any other data root gets names and subnets of its own, so that several daemons (tests)
/// can run side by side without sharing a bridge, a subnet or a table.
pub fn network_config(data_root: &Path, exec_root: &Path, ns: &NetSettings) -> NetworkConfig {
    let mut cfg = NetworkConfig {
        data_root: data_root.to_path_buf(),
        netns_dir: exec_root.join("netns"),
        ..Default::default()
    };
    if data_root != Path::new("/var/lib/berth") {
        let h = fnv(data_root.as_os_str().as_encoded_bytes());
        let tag = format!("{:06x}", h & 0xff_ffff);
        let slot = auto_slot(data_root, (h >> 24) as u8);
        cfg.bridge_name = format!("bt{tag}0");
        cfg.bridge_prefix = format!("b{tag}-");
        cfg.nft_table = format!("berth_{tag}");
        cfg.bip = berth_network::Ipv4Net::new(Ipv4Addr::new(10, 213, slot, 1), 24);
        cfg.default_address_pools = vec![AddressPool {
            base: berth_network::Ipv4Net::new(Ipv4Addr::new(10, 214, slot, 0), 24),
            size: 27,
        }];
    }
    if let Some(b) = &ns.bridge {
        cfg.bridge_name = b.clone();
    }
    if let Some(b) = ns.bip.as_ref().and_then(|b| b.parse().ok()) {
        cfg.bip = b;
    }
    if let Some(p) = &ns.pools {
        cfg.default_address_pools = p
            .iter()
            .filter_map(|(b, s)| {
                Some(AddressPool {
                    base: b.parse().ok()?,
                    size: *s,
                })
            })
            .collect();
    }
    if let Some(t) = &ns.nft_table {
        cfg.nft_table = t.clone();
    }
    cfg
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        (h ^ u64::from(*x)).wrapping_mul(0x100_0000_01b3)
    })
}

/// A third octet for 10.213.X.0/24 and 10.214.X.0/24 that no host interface uses yet, remembered in
/// the data root so the daemon keeps it across restarts (its own bridge then holds it).
fn auto_slot(data_root: &Path, start: u8) -> u8 {
    let file = data_root.join("network/auto.json");
    if let Some(c) = std::fs::read(&file)
        .ok()
        .and_then(|d| serde_json::from_slice::<AutoChoice>(&d).ok())
    {
        return c.slot;
    }
    let used = std::process::Command::new("ip")
        .args(["-o", "-4", "addr"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let slot = (0..=255u16)
        .map(|i| start.wrapping_add(i as u8))
        .find(|s| {
            !used.contains(&format!(" 10.213.{s}.")) && !used.contains(&format!(" 10.214.{s}."))
        })
        .unwrap_or(start);
    let _ = std::fs::create_dir_all(data_root.join("network"));
    let _ = crate::util::write_atomic(&file, json!({"slot": slot}).to_string().as_bytes());
    slot
}

/// Opens the network manager of a daemon.
pub fn open(data_root: &Path, exec_root: &Path, ns: &NetSettings) -> Result<Arc<NetworkManager>> {
    let cfg = network_config(data_root, exec_root, ns);
    NetworkManager::open(cfg)
        .map(Arc::new)
        .map_err(|e| Error::internal(format!("opening networks: {e}")))
}

/// Maps a `berth-network` error onto the daemon's.
pub fn net_err(e: NetworkError) -> Error {
    use berth_network::ErrorKind as K;
    let m = e.to_string();
    match e.kind() {
        K::NotFound => Error::NotFound(m),
        K::Conflict => Error::Conflict(m),
        K::InvalidArgument => Error::Invalid(m),
        K::Forbidden => Error::Forbidden(m),
        K::Internal => Error::Internal(m),
    }
}

async fn blocking<T: Send + 'static>(
    d: &Arc<Daemon>,
    f: impl FnOnce(&NetworkManager) -> std::result::Result<T, NetworkError> + Send + 'static,
) -> Result<T> {
    let n = d.network.clone();
    tokio::task::spawn_blocking(move || f(&n))
        .await
        .map_err(|e| Error::internal(e.to_string()))?
        .map_err(net_err)
}

/// What a container record keeps about its networks.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct NetRecord {
    /// Endpoints asked for (create's `EndpointsConfig`, connects while stopped), by network name.
    #[serde(default)]
    pub endpoints_config: BTreeMap<String, EndpointSettings>,
    /// `NetworkSettings.Networks` of the running container.
    #[serde(default)]
    pub endpoints: BTreeMap<String, EndpointSettings>,
    /// `NetworkSettings.Ports` of the running container.
    #[serde(default)]
    pub ports: BTreeMap<String, Option<Vec<PortBinding>>>,
    /// The namespace file while it runs.
    #[serde(default)]
    pub sandbox_key: String,
}

/// The network mode's network name (`default` is `bridge`), or `None` for `container:<id>`.
fn mode_network(mode: &str) -> Option<&str> {
    match mode {
        "" | "default" => Some("bridge"),
        m if m.starts_with("container:") => None,
        m => Some(m),
    }
}

/// `POST /containers/create`: checks `NetworkMode` and `NetworkingConfig`, returns what the record keeps.
pub fn on_create(
    d: &Arc<Daemon>,
    config: &berth_api::container::Config,
    hc: &mut berth_api::container::HostConfig,
    networking: Option<&Value>,
) -> Result<NetRecord> {
    if hc.network_mode.is_empty() {
        hc.network_mode = "default".into();
    }
    let mut rec = NetRecord::default();
    if let Some(other) = hc.network_mode.strip_prefix("container:") {
        d.find(other)?;
        return Ok(rec);
    }
    let mode = mode_network(&hc.network_mode)
        .unwrap_or("bridge")
        .to_string();
    // Like dockerd, an unknown network fails the start, not the create (compose creates in any order).
    let net_name = d
        .network
        .inspect_network(&mode)
        .map(|n| n.name)
        .unwrap_or(mode.clone());
    if let Some(eps) = networking.and_then(|v| v.get("EndpointsConfig")) {
        let eps: BTreeMap<String, Option<EndpointSettings>> =
            serde_json::from_value(eps.clone()).map_err(|e| Error::invalid(e.to_string()))?;
        for (name, es) in eps {
            let name = mode_network(&name).unwrap_or("bridge").to_string();
            let n = d
                .network
                .inspect_network(&name)
                .map(|n| n.name)
                .unwrap_or(name);
            rec.endpoints_config.insert(n, es.unwrap_or_default());
        }
    }
    // Several networks at create (API 1.44): the mode's first, the others joined at start too.
    let mut es = rec.endpoints_config.remove(&net_name).unwrap_or_default();
    let static_ip = es
        .ipam_config
        .as_ref()
        .is_some_and(|c| !c.ipv4_address.is_empty());
    if (static_ip || es.aliases.as_ref().is_some_and(|a| !a.is_empty()))
        && (net_name == "bridge" || net_name == "host" || net_name == "none")
    {
        if static_ip {
            return Err(Error::invalid(
                "user specified IP address is supported on user defined networks only",
            ));
        }
        return Err(Error::invalid(
            "network-scoped alias is supported only for containers in user defined networks",
        ));
    }
    if es.mac_address.is_empty() {
        if let Some(m) = config.extra.get("MacAddress").and_then(Value::as_str) {
            es.mac_address = m.to_string();
        }
    }
    if hc.network_mode == "host" && !hc.port_bindings.is_empty() {
        // dockerd discards published ports in host mode (the CLI warns).
        hc.port_bindings.clear();
    }
    rec.endpoints_config.insert(net_name, es);
    Ok(rec)
}

/// What start needs after [`on_start`]: the files to write.
#[derive(Debug, Clone, Default)]
pub struct StartedNet {
    /// The network as set up (`None` for `container:<id>`).
    pub cn: Option<ContainerNetwork>,
}

/// Container start, before the spec is written: sets up the endpoints and records them; puts the
/// namespace path into `rec` (the spec reads `BerthNetNsPath`). Also mounts the container's
/// local volumes that have mount options ([`crate::volumes::acquire`]; [`on_stop`] releases them).
pub async fn on_start(d: &Arc<Daemon>, c: &Arc<Ctr>, rec: &mut Record) -> Result<StartedNet> {
    settle(Some(&c.id)).await;
    crate::volumes::acquire(d, rec).await?;
    if mode_network(&rec.host_config.network_mode).is_none() {
        return Ok(StartedNet::default());
    }
    let mut networks: Vec<(String, EndpointSettings)> = Vec::new();
    let primary = mode_network(&rec.host_config.network_mode)
        .unwrap_or("bridge")
        .to_string();
    let cfg = &rec.network.endpoints_config;
    // The mode's network first (its key may be a name or an ID given at create).
    let pkey = cfg
        .keys()
        .find(|k| {
            **k == primary
                || d.network
                    .inspect_network(&primary)
                    .is_ok_and(|n| n.name == **k)
        })
        .cloned();
    networks.push((
        primary.clone(),
        pkey.as_ref()
            .and_then(|k| cfg.get(k).cloned())
            .unwrap_or_default(),
    ));
    for (k, v) in cfg {
        if Some(k) != pkey.as_ref() {
            networks.push((k.clone(), v.clone()));
        }
    }
    let hc = &rec.host_config;
    let req = berth_network::ContainerNetworkRequest {
        id: rec.id.clone(),
        name: rec.name.trim_start_matches('/').to_string(),
        networks,
        port_bindings: hc
            .port_bindings
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().unwrap_or_default()))
            .collect(),
        publish_all_ports: hc.publish_all_ports,
        exposed_ports: rec
            .config
            .exposed_ports
            .as_ref()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default(),
        dns: hc.dns.iter().filter_map(|s| s.parse().ok()).collect(),
    };
    let t0 = std::time::Instant::now();
    let cn = blocking(d, move |n| n.setup(&req)).await?;
    let mode = &rec.host_config.network_mode;
    tracing::debug!(id = %rec.id, %mode, elapsed = ?t0.elapsed(), "network setup");
    if let Some(p) = &cn.netns_path {
        rec.host_config
            .extra
            .insert("BerthNetNsPath".into(), json!(p.display().to_string()));
    }
    let (eps, ports) = (cn.endpoints.clone(), cn.ports.clone());
    let key = cn
        .netns_path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    c.update(|r| {
        r.network.endpoints = eps.clone();
        r.network.ports = ports.clone();
        r.network.sandbox_key = key.clone();
    });
    rec.network = c.snapshot().network;
    for name in eps.keys() {
        if let Ok(n) = d.network.inspect_network(name) {
            network_event(d, "connect", &n, Some(&c.id));
        }
    }
    Ok(StartedNet { cn: Some(cn) })
}

/// Writes `hosts` and `resolv.conf` for a started network (after the spec, before the process runs).
pub fn write_files(rec: &Record, p: &CtrPaths, net: &StartedNet) -> Result<()> {
    let Some(cn) = &net.cn else { return Ok(()) };
    let hc = &rec.host_config;
    let host_hosts = cn
        .host_network
        .then(|| std::fs::read_to_string("/etc/hosts").unwrap_or_default());
    let domain = rec
        .config
        .extra
        .get("Domainname")
        .and_then(Value::as_str)
        .unwrap_or("");
    let hosts = berth_network::etc::hosts_file(&HostsSpec {
        hostname: &rec.config.hostname,
        domainname: domain,
        ip: cn.primary_ip.map(IpAddr::V4),
        extra_hosts: &hc.extra_hosts,
        host_gateway: cn.host_gateway.map(IpAddr::V4),
        links: &[],
        host_hosts: host_hosts.as_deref(),
    })
    .map_err(net_err)?;
    let host = ResolvConf::host();
    let dns: Vec<IpAddr> = hc.dns.iter().filter_map(|s| s.parse().ok()).collect();
    let resolv = berth_network::etc::resolv_conf(&ResolvSpec {
        host: &host,
        dns: &dns,
        dns_search: &hc.dns_search,
        dns_options: &hc.dns_options,
        embedded_dns: cn.embedded_dns.map(IpAddr::V4),
        host_network: cn.host_network,
    });
    std::fs::write(p.data.join("hosts"), hosts).map_err(|e| Error::io("write hosts", e))?;
    std::fs::write(p.data.join("resolv.conf"), resolv)
        .map_err(|e| Error::io("write resolv.conf", e))?;
    Ok(())
}

/// Container exit, failed start, kill, removal: releases its endpoints and mounted volumes
/// (idempotent).
pub async fn on_stop(d: &Arc<Daemon>, c: &Arc<Ctr>) {
    crate::volumes::release(d, c).await;
    let live: Vec<String> = if c.snapshot().network.sandbox_key.is_empty() {
        Vec::new()
    } else {
        c.snapshot().network.endpoints.keys().cloned().collect()
    };
    for name in live {
        if let Ok(n) = d.network.inspect_network(&name) {
            network_event(d, "disconnect", &n, Some(&c.id));
        }
    }
    // Deleting a veth waits for the kernel's RCU grace periods (~20 ms): done off the exit/remove path.
    // Whatever needs the endpoint gone (a new start, network removal, shutdown) waits in `settle`.
    let (d2, id) = (d.clone(), c.id.clone());
    PENDING.track(&c.id, async move {
        let t0 = std::time::Instant::now();
        let id2 = id.clone();
        if let Err(e) = blocking(&d2, move |n| n.teardown(&id2)).await {
            tracing::warn!(id = %id, "network teardown: {e}");
        }
        tracing::debug!(id = %id, elapsed = ?t0.elapsed(), "network teardown");
    });
    c.update(|r| {
        for ep in r.network.endpoints.values_mut() {
            *ep = stopped_endpoint(ep);
        }
        r.network.ports.clear();
        r.network.sandbox_key.clear();
    });
}

/// What an endpoint looks like on a stopped container (dockerd keeps the network, drops addresses).
fn stopped_endpoint(ep: &EndpointSettings) -> EndpointSettings {
    EndpointSettings {
        ipam_config: ep.ipam_config.clone(),
        aliases: ep.aliases.clone(),
        network_id: ep.network_id.clone(),
        dns_names: None,
        ..Default::default()
    }
}

/// Teardowns still running in the background, by container ID.
static PENDING: Pending = Pending::new();

/// Background work by container ID that others wait for. An entry stays until its work is done
/// and only that work removes it, so every waiter sees it: a `settle(None)` (say `GET /networks`)
/// does not hide a pending teardown from a start of the same container that comes meanwhile
/// (which would then set up while the old teardown could still release the new endpoints).
struct Pending {
    map: std::sync::Mutex<Option<HashMap<String, PendingWork>>>,
    next: std::sync::atomic::AtomicU64,
}

struct PendingWork {
    generation: u64,
    done: tokio::sync::watch::Receiver<bool>,
}

impl Pending {
    const fn new() -> Pending {
        Pending {
            map: std::sync::Mutex::new(None),
            next: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<HashMap<String, PendingWork>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `work` for `id` on a task, unless work for `id` is pending already (it does the same).
    fn track(&'static self, id: &str, work: impl Future<Output = ()> + Send + 'static) {
        let mut g = self.lock();
        let map = g.get_or_insert_with(HashMap::new);
        if map.contains_key(id) {
            return;
        }
        let generation = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, done) = tokio::sync::watch::channel(false);
        map.insert(id.to_string(), PendingWork { generation, done });
        let id = id.to_string();
        tokio::spawn(async move {
            work.await;
            // This work's own entry only: another may have taken the ID's place since.
            if let Some(map) = self.lock().as_mut() {
                if map.get(&id).is_some_and(|w| w.generation == generation) {
                    map.remove(&id);
                }
            }
            let _ = tx.send(true);
        });
    }

    /// Waits for the pending work of `id` (or of every ID) to finish.
    async fn settle(&self, id: Option<&str>) {
        let waits: Vec<tokio::sync::watch::Receiver<bool>> = {
            let g = self.lock();
            let Some(map) = g.as_ref() else {
                return;
            };
            match id {
                Some(id) => map.get(id).map(|w| w.done.clone()).into_iter().collect(),
                None => map.values().map(|w| w.done.clone()).collect(),
            }
        };
        for mut w in waits {
            // An error means the task is gone (ended or cancelled at shutdown): nothing to wait for.
            let _ = w.wait_for(|done| *done).await;
        }
    }
}

/// Waits for the background teardown of container `id` (or of all containers) to finish.
pub async fn settle(id: Option<&str>) {
    PENDING.settle(id).await;
}

/// Daemon start: releases what dead containers held (endpoints, volume mounts), restores the live
/// ones' endpoints.
pub async fn reconcile(d: &Arc<Daemon>, running: Vec<String>) -> Result<()> {
    crate::volumes::reconcile(d, &running);
    let r = blocking(d, move |n| n.reconcile(&running)).await?;
    tracing::info!(?r, "networks reconciled");
    Ok(())
}

/// Daemon shutdown: with no container running, nothing of the daemon stays in the kernel (bridges,
/// veths, the nftables table); the next start re-creates them. Otherwise all stays for the live ones.
pub async fn on_shutdown(d: &Arc<Daemon>) {
    settle(None).await;
    // Spare namespaces go in any case (a next start would remove them too).
    let _ = blocking(d, |n| {
        n.close_spares();
        Ok(())
    })
    .await;
    if d.all().iter().any(|c| c.snapshot().state.running) {
        return;
    }
    if let Err(e) = blocking(d, |n| n.shutdown_and_clean()).await {
        tracing::warn!("network cleanup: {e}");
    }
}

/// `NetworkSettings` of a container's inspect, as dockerd writes it.
pub fn settings_json(rec: &Record) -> Value {
    let n = &rec.network;
    let networks: BTreeMap<String, EndpointSettings> = if n.endpoints.is_empty() {
        n.endpoints_config
            .iter()
            .map(|(k, v)| (k.clone(), stopped_endpoint(v)))
            .collect()
    } else {
        n.endpoints.clone()
    };
    let bridge = n.endpoints.get("bridge");
    let s = |f: fn(&EndpointSettings) -> Value| bridge.map(f).unwrap_or(json!(""));
    let mut ports: BTreeMap<String, Value> = BTreeMap::new();
    if let Some(ex) = &rec.config.exposed_ports {
        for k in ex.keys() {
            ports.insert(k.clone(), Value::Null);
        }
    }
    for (k, v) in &n.ports {
        ports.insert(k.clone(), json!(v));
    }
    if !rec.state.running {
        ports.clear();
    }
    json!({
        "Bridge": "",
        "SandboxID": if n.sandbox_key.is_empty() { String::new() } else { rec.id.clone() },
        "SandboxKey": n.sandbox_key,
        "HairpinMode": false,
        "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0,
        "Ports": ports,
        "SecondaryIPAddresses": null, "SecondaryIPv6Addresses": null,
        "EndpointID": s(|e| json!(e.endpoint_id)),
        "Gateway": s(|e| json!(e.gateway)),
        "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
        "IPAddress": s(|e| json!(e.ip_address)),
        "IPPrefixLen": bridge.map(|e| json!(e.ip_prefix_len)).unwrap_or(json!(0)),
        "IPv6Gateway": "",
        "MacAddress": s(|e| json!(e.mac_address)),
        "Networks": networks,
    })
}

/// `NetworkSettings` of a container in `GET /containers/json`.
pub fn summary_settings(rec: &Record) -> Value {
    json!({"Networks": settings_json(rec)["Networks"]})
}

/// The `Ports` of a container in `GET /containers/json`.
pub fn summary_ports(rec: &Record) -> Vec<Port> {
    let mut out = Vec::new();
    if !rec.state.running {
        return out;
    }
    let mut keys: BTreeMap<String, Option<Vec<PortBinding>>> = BTreeMap::new();
    if let Some(ex) = &rec.config.exposed_ports {
        for k in ex.keys() {
            keys.insert(k.clone(), None);
        }
    }
    for (k, v) in &rec.network.ports {
        keys.insert(k.clone(), v.clone());
    }
    for (k, v) in keys {
        let (port, proto) = k.split_once('/').unwrap_or((k.as_str(), "tcp"));
        let Ok(private) = port.parse::<u16>() else {
            continue;
        };
        match v {
            Some(bs) if !bs.is_empty() => {
                for b in bs {
                    out.push(Port {
                        ip: Some(if b.host_ip.is_empty() {
                            "0.0.0.0".into()
                        } else {
                            b.host_ip.clone()
                        }),
                        private_port: private,
                        public_port: b.host_port.parse().ok(),
                        kind: proto.into(),
                    });
                }
            }
            _ => out.push(Port {
                ip: None,
                private_port: private,
                public_port: None,
                kind: proto.into(),
            }),
        }
    }
    out
}

fn network_event(d: &Daemon, action: &str, n: &NetworkResource, container: Option<&str>) {
    let mut attrs = BTreeMap::new();
    attrs.insert("name".to_string(), n.name.clone());
    attrs.insert("type".to_string(), n.driver.clone());
    if let Some(c) = container {
        attrs.insert("container".to_string(), c.to_string());
    }
    d.events.emit("network", action, &n.id, attrs);
}

const PREDEFINED: &[&str] = &["bridge", "host", "none"];

/// `GET /networks`.
pub async fn list(d: &Arc<Daemon>, f: &Filters) -> Result<Vec<NetworkResource>> {
    settle(None).await;
    f.validate(&["name", "id", "driver", "label", "type", "dangling", "scope"])
        .map_err(Error::Invalid)?;
    for t in f.get("type") {
        if t != "custom" && t != "builtin" {
            return Err(Error::invalid(format!("invalid filter: 'type'='{t}'")));
        }
    }
    for v in f.get("dangling") {
        if !["true", "false", "1", "0"].contains(&v.as_str()) {
            return Err(Error::invalid(format!(
                "invalid filter 'dangling={v}': unsupported"
            )));
        }
    }
    let all = d.network.list_networks();
    let used = used_networks(d);
    Ok(all
        .into_iter()
        .filter(|n| {
            let names = f.get("name");
            names.is_empty() || names.iter().any(|x| n.name.contains(x.as_str()))
        })
        .filter(|n| {
            let ids = f.get("id");
            ids.is_empty() || ids.iter().any(|x| n.id.contains(x.as_str()))
        })
        .filter(|n| {
            let ds = f.get("driver");
            ds.is_empty() || ds.contains(&n.driver)
        })
        .filter(|n| f.get("scope").is_empty() || f.get("scope").contains(&n.scope))
        .filter(|n| {
            f.get("label").iter().all(|l| match l.split_once('=') {
                Some((k, v)) => n.labels.get(k).is_some_and(|x| x == v),
                None => n.labels.contains_key(l),
            })
        })
        .filter(|n| {
            let builtin = PREDEFINED.contains(&n.name.as_str());
            f.get("type").iter().all(|t| (t == "builtin") == builtin)
        })
        .filter(|n| {
            f.get("dangling").iter().all(|v| {
                let dangling = !PREDEFINED.contains(&n.name.as_str()) && !used.contains(&n.id);
                (v == "true" || v == "1") == dangling
            })
        })
        .map(|mut n| {
            n.containers.clear();
            n
        })
        .collect())
}

/// IDs of networks some container (running or not) is attached to.
fn used_networks(d: &Arc<Daemon>) -> std::collections::HashSet<String> {
    let mut out = std::collections::HashSet::new();
    for n in d.network.list_networks() {
        if !n.containers.is_empty() {
            out.insert(n.id.clone());
        }
    }
    for c in d.all() {
        let r = c.snapshot();
        for k in r.network.endpoints_config.keys() {
            if let Ok(n) = d.network.inspect_network(k) {
                out.insert(n.id);
            }
        }
    }
    out
}

/// `GET /networks/{id}`.
pub async fn inspect(d: &Arc<Daemon>, key: &str) -> Result<NetworkResource> {
    settle(None).await;
    d.network.inspect_network(key).map_err(net_err)
}

/// `POST /networks/create`.
pub async fn create(d: &Arc<Daemon>, req: NetworkCreateRequest) -> Result<Value> {
    if req.name.is_empty() {
        return Err(Error::invalid("network name must not be empty"));
    }
    let r = blocking(d, move |n| n.create_network(&req)).await?;
    if let Ok(n) = d.network.inspect_network(&r.id) {
        network_event(d, "create", &n, None);
    }
    serde_json::to_value(&r).map_err(|e| Error::internal(e.to_string()))
}

/// `DELETE /networks/{id}`.
pub async fn remove(d: &Arc<Daemon>, key: &str) -> Result<()> {
    settle(None).await;
    let n = d.network.inspect_network(key).map_err(net_err)?;
    if PREDEFINED.contains(&n.name.as_str()) {
        return Err(Error::Forbidden(format!(
            "{} is a pre-defined network and cannot be removed",
            n.name
        )));
    }
    let id = n.id.clone();
    blocking(d, move |m| m.remove_network(&id)).await?;
    // Stopped containers that named the network forget it, as dockerd's endpoint configs do.
    for c in d.all() {
        if c.snapshot().network.endpoints_config.contains_key(&n.name) {
            c.update(|r| {
                r.network.endpoints_config.remove(&n.name);
                r.network.endpoints.remove(&n.name);
            });
            let _ = d.save(&c);
        }
    }
    network_event(d, "destroy", &n, None);
    Ok(())
}

/// `POST /networks/prune`.
pub async fn prune(d: &Arc<Daemon>, f: &Filters) -> Result<Value> {
    settle(None).await;
    f.validate(&["label", "label!", "until"])
        .map_err(Error::Invalid)?;
    let mut deleted = Vec::new();
    for n in d.network.list_networks() {
        if PREDEFINED.contains(&n.name.as_str()) || !n.containers.is_empty() {
            continue;
        }
        let label_ok = f.get("label").iter().all(|l| match l.split_once('=') {
            Some((k, v)) => n.labels.get(k).is_some_and(|x| x == v),
            None => n.labels.contains_key(l),
        }) && f.get("label!").iter().all(|l| match l.split_once('=') {
            Some((k, v)) => n.labels.get(k).is_none_or(|x| x != v),
            None => !n.labels.contains_key(l),
        });
        if !label_ok {
            continue;
        }
        if remove(d, &n.id).await.is_ok() {
            deleted.push(n.name.clone());
        }
    }
    Ok(json!({ "NetworksDeleted": if deleted.is_empty() { Value::Null } else { json!(deleted) } }))
}

/// Body of `POST /networks/{id}/connect`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConnectRequest {
    /// Container ID or name.
    pub container: String,
    /// Endpoint settings.
    #[serde(default)]
    pub endpoint_config: Option<EndpointSettings>,
}

/// Body of `POST /networks/{id}/disconnect`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DisconnectRequest {
    /// Container ID or name.
    pub container: String,
    /// Force.
    #[serde(default)]
    pub force: bool,
}

/// `POST /networks/{id}/connect`.
pub async fn connect(d: &Arc<Daemon>, key: &str, req: ConnectRequest) -> Result<()> {
    settle(None).await;
    let n = d.network.inspect_network(key).map_err(net_err)?;
    let c = d.find(&req.container)?;
    let rec = c.snapshot();
    let mode = rec.host_config.network_mode.as_str();
    if mode == "host" || n.name == "host" {
        return Err(Error::Forbidden(
            "container cannot be disconnected from host network or connected to host network"
                .into(),
        ));
    }
    if mode == "none" || n.name == "none" || mode.starts_with("container:") {
        return Err(Error::Forbidden(
            "container sharing network namespace with another container or host cannot be connected to any other network".into(),
        ));
    }
    if rec.network.endpoints_config.contains_key(&n.name)
        || (rec.state.running && rec.network.endpoints.contains_key(&n.name))
    {
        return Err(Error::Forbidden(format!(
            "endpoint with name {} already exists in network {}",
            rec.name.trim_start_matches('/'),
            n.name
        )));
    }
    let es = req.endpoint_config.unwrap_or_default();
    if rec.state.running {
        let (id, nid, es2) = (c.id.clone(), n.id.clone(), es.clone());
        let ep = blocking(d, move |m| m.connect(&id, &nid, &es2)).await?;
        c.update(|r| {
            r.network.endpoints.insert(n.name.clone(), ep.clone());
        });
    }
    c.update(|r| {
        r.network
            .endpoints_config
            .insert(n.name.clone(), es.clone());
    });
    d.save(&c)?;
    network_event(d, "connect", &n, Some(&c.id));
    Ok(())
}

/// `POST /networks/{id}/disconnect`.
pub async fn disconnect(d: &Arc<Daemon>, key: &str, req: DisconnectRequest) -> Result<()> {
    settle(None).await;
    let n = d.network.inspect_network(key).map_err(net_err)?;
    let c = match d.find(&req.container) {
        Ok(c) => c,
        Err(e) if req.force => {
            // A forced disconnect of a gone container still drops a stale endpoint.
            let (cid, nid) = (req.container.clone(), n.id.clone());
            let _ = blocking(d, move |m| m.disconnect(&cid, &nid)).await;
            let _ = e;
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let rec = c.snapshot();
    if rec.host_config.network_mode == "host" || n.name == "host" {
        return Err(Error::Forbidden(
            "container cannot be disconnected from host network or connected to host network"
                .into(),
        ));
    }
    let known = rec.network.endpoints_config.contains_key(&n.name)
        || rec.network.endpoints.contains_key(&n.name);
    if !known {
        return Err(Error::Forbidden(format!(
            "container {} is not connected to network {}",
            rec.id, n.name
        )));
    }
    if rec.state.running && rec.network.endpoints.contains_key(&n.name) {
        let (cid, nid) = (c.id.clone(), n.id.clone());
        blocking(d, move |m| m.disconnect(&cid, &nid)).await?;
    }
    c.update(|r| {
        r.network.endpoints_config.remove(&n.name);
        r.network.endpoints.remove(&n.name);
    });
    d.save(&c)?;
    network_event(d, "disconnect", &n, Some(&c.id));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keys() {
        let v: Value = serde_json::from_str(
            r#"{"bridge":"bx0","bip":"10.213.9.1/24","default-address-pools":[{"base":"10.214.0.0/16","size":24}],"nft-table":"t1"}"#,
        )
        .unwrap();
        let s = NetSettings::from_config(v.as_object().unwrap()).unwrap();
        assert_eq!(s.bridge.as_deref(), Some("bx0"));
        let dir = std::env::temp_dir().join(format!("berthd-netcfg-{}", std::process::id()));
        let c = network_config(&dir.join("data"), &dir.join("exec"), &s);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(c.bridge_name, "bx0");
        assert_eq!(c.nft_table, "t1");
        assert_eq!(c.bip.to_string(), "10.213.9.1/24");
        assert_eq!(c.default_address_pools[0].size, 24);
        let bad: Value = serde_json::from_str(r#"{"bip":"nope"}"#).unwrap();
        assert!(NetSettings::from_config(bad.as_object().unwrap()).is_err());
    }

    #[test]
    fn default_root_keeps_docker_like_names() {
        let c = network_config(
            Path::new("/var/lib/berth"),
            Path::new("/run/berth"),
            &NetSettings::default(),
        );
        assert_eq!(c.bridge_name, "berth0");
        assert_eq!(c.nft_table, "berth");
    }

    /// A `settle(None)` under way does not hide a pending teardown from `settle(id)` (a start of
    /// that container), and a finished piece of work removes only its own entry.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pending_work_is_seen_by_every_waiter() {
        use std::time::Duration;
        static P: Pending = Pending::new();
        let short = Duration::from_millis(100);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        P.track("x", async move {
            let _ = rx.await;
        });
        let all = tokio::spawn(P.settle(None));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!all.is_finished());
        // The start of x still waits for x's teardown.
        assert!(
            tokio::time::timeout(short, P.settle(Some("x")))
                .await
                .is_err()
        );
        // A second stop of x while its teardown runs adds nothing.
        P.track("x", async { panic!("a second teardown of x") });
        tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), P.settle(Some("x")))
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), all)
            .await
            .unwrap()
            .unwrap();
        assert!(P.lock().as_ref().unwrap().is_empty());
        // x again (stopped after a new start): tracked anew.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        P.track("x", async move {
            let _ = rx.await;
        });
        assert!(tokio::time::timeout(short, P.settle(None)).await.is_err());
        tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), P.settle(None))
            .await
            .unwrap();
        assert!(P.lock().as_ref().unwrap().is_empty());
    }
}
