//! Berth's container networking: network namespaces prepared ahead of the container, Linux bridges and
//! veth pairs over rtnetlink, IPAM, NAT / isolation / port publishing in Berth's own nftables table,
//! an embedded DNS server per user-defined network, and the `/etc/hosts` and `/etc/resolv.conf` texts.
//!
//! # What berthd calls, and when
//!
//! All [`NetworkManager`] methods block (netlink, one `nft` run, fsync): call them from `spawn_blocking`.
//!
//! * **Daemon start**: `let net = NetworkManager::open(NetworkConfig { data_root, netns_dir:
//!   <exec-root>/netns, bridge_name, bip, default_address_pools, .. })?;` then, once the live shims are
//!   known, `net.reconcile(&running_container_ids)?`. Reconcile releases addresses/ports/DNS names of
//!   containers that are not running, deletes orphan veths, bridges (`<bridge_prefix><hex>`) and namespace
//!   files, re-creates missing bridges and veths, rewrites the nftables table and starts the DNS servers.
//!   It must run before any container starts (it also brings the bridges up).
//! * **`/networks` API**: [`NetworkManager::create_network`], [`NetworkManager::remove_network`],
//!   [`NetworkManager::inspect_network`], [`NetworkManager::list_networks`] (filters are berthd's),
//!   [`NetworkManager::connect`] / [`NetworkManager::disconnect`] for *running* containers (for a stopped
//!   one berthd only edits its `NetworkingConfig`; the endpoint is made at start). Errors carry
//!   [`NetworkError::kind`] → `berth_api::ErrorKind` (`From` provided) and dockerd's messages.
//! * **Container start**, before writing `config.json`:
//!   `let cn = net.setup(&ContainerNetworkRequest { id, name, networks: [(NetworkMode or "bridge",
//!   EndpointsConfig[..])...], port_bindings, publish_all_ports, exposed_ports, dns })?;`
//!   - `cn.netns_path`: `Some(p)` → set the OCI `linux.namespaces` entry `{type: network, path: p}`;
//!     `None` (`--network host`) → remove the network namespace entry. `--network none` → `networks:
//!     [("none", ..)]`: a namespace with only `lo` up. (`container:<id>` is berthd's: reuse that
//!     container's path and do not call `setup`.)
//!   - write `hosts` with [`etc::hosts_file`] (`ip: cn.primary_ip`, `host_gateway: cn.host_gateway`,
//!     `host_hosts: Some(host /etc/hosts)` when `cn.host_network`) and `resolv.conf` with
//!     [`etc::resolv_conf`] (`embedded_dns: cn.embedded_dns`, `host_network: cn.host_network`).
//!   - `NetworkSettings.Networks = cn.endpoints`, `NetworkSettings.Ports = cn.ports`, and the legacy
//!     top-level `IPAddress`/`Gateway`/`MacAddress` from the `bridge` endpoint.
//!   - if the container then fails to start, call `teardown(id)`.
//! * **Container stop** (the shim reported the exit, also on `kill`/`--rm`/restart):
//!   `net.teardown(id)?` — deletes its veths, releases addresses and host ports, drops DNS names,
//!   removes the namespace file. Restart = `teardown` then `setup` (dockerd also re-allocates).
//! * **Container remove**: nothing more (teardown already ran; calling it again is harmless).
//!
//! # Choices
//!
//! * Namespaces: [`netns::create_netns`] unshares in a dedicated short-lived thread and bind-mounts
//!   `/proc/thread-self/ns/net` onto the file; work inside a namespace happens on a thread that `setns`es
//!   (never on a caller's thread). No `unsafe`: `nix`'s `unshare`/`setns`/`mount` are safe functions.
//! * Netlink through `rtnetlink` (rust-netlink, maintained), each operation on its own current-thread
//!   runtime in that thread, so the caller's runtime is never involved.
//! * nftables through one `nft -f -` transaction per change that replaces `table ip <nft_table>` as a whole
//!   (see [`nft`]); only changes to networks or published ports run it, not every container start.
//!   Without `nft`, the same rules go through `iptables-restore` ([`iptables`]); `NetworkConfig::firewall`
//!   can force either.
//! * DNS: see [`dns`] — one server per user-defined network on its gateway address, port 53.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod dns;
mod error;
pub mod etc;
pub mod ipam;
pub mod iptables;
pub mod link;
mod manager;
pub mod netns;
pub mod nft;
mod spares;
mod store;

pub use error::{ErrorKind, NetworkError, Result};
pub use ipam::{AddressPool, Ipv4Net};
pub use manager::{
    ContainerNetwork, ContainerNetworkRequest, EPHEMERAL_FIRST, EPHEMERAL_LAST, Firewall,
    NetworkConfig, NetworkManager, OPT_BRIDGE_NAME, OPT_HOST_BINDING, OPT_MTU, ReconcileReport,
    parse_port,
};
pub use netns::{create_netns, in_netns, remove_netns};

/// `n` random bytes from the kernel as lower-case hex (IDs, veth names).
pub fn random_hex(n: usize) -> String {
    use std::io::Read;
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
