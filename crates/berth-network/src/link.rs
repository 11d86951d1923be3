//! Links, addresses and routes over rtnetlink (no `ip` processes).

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use futures_util::TryStreamExt;
use nix::sched::{CloneFlags, setns};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo, LinkMessage,
};
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use crate::error::{NetworkError, Result};
use crate::ipam::Ipv4Net;
use crate::netns::{on_thread, open_ns, runtime};

const ENODEV: i32 = 19;
const EEXIST: i32 = 17;

/// Opens a netlink route socket in the calling thread's network namespace and spawns its driver.
pub(crate) fn connect() -> Result<Handle> {
    let (conn, handle, _) =
        rtnetlink::new_connection().map_err(|e| NetworkError::io("open netlink socket", e))?;
    tokio::spawn(conn);
    Ok(handle)
}

/// The index of link `name`, if it exists.
pub(crate) async fn index(h: &Handle, name: &str) -> Result<Option<u32>> {
    let res = h
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await;
    match res {
        Ok(Some(m)) => Ok(Some(m.header.index)),
        Ok(None) => Ok(None),
        Err(e) => {
            let e = NetworkError::nl(format!("get link {name}"), e);
            if e.netlink_errno() == Some(ENODEV) {
                Ok(None)
            } else {
                Err(e)
            }
        }
    }
}

async fn must_index(h: &Handle, name: &str) -> Result<u32> {
    index(h, name)
        .await?
        .ok_or_else(|| NetworkError::NotFound(format!("link {name} not found")))
}

/// Sets link `name` up.
pub(crate) async fn set_up(h: &Handle, name: &str) -> Result<()> {
    let idx = must_index(h, name).await?;
    set_up_index(h, idx, name).await
}

/// Adds an address, ignoring "exists".
async fn add_addr(h: &Handle, idx: u32, ip: IpAddr, prefix: u8, what: &str) -> Result<()> {
    match h.address().add(idx, ip, prefix).execute().await {
        Ok(()) => Ok(()),
        Err(e) => {
            let e = NetworkError::nl(format!("add address {ip}/{prefix} to {what}"), e);
            if e.netlink_errno() == Some(EEXIST) {
                Ok(())
            } else {
                Err(e)
            }
        }
    }
}

/// One link as seen by [`list_links`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfoSummary {
    /// Interface name.
    pub name: String,
    /// Interface index.
    pub index: u32,
    /// Index of the bridge it is enslaved to.
    pub master: Option<u32>,
    /// `bridge`, `veth`, ...
    pub kind: Option<String>,
}

fn summarize(m: &LinkMessage) -> LinkInfoSummary {
    let mut s = LinkInfoSummary {
        name: String::new(),
        index: m.header.index,
        master: None,
        kind: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => s.name = n.clone(),
            LinkAttribute::Controller(c) => s.master = Some(*c),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        s.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    s
}

/// Runs async netlink work on a fresh thread in the host (caller's) namespace.
pub(crate) fn host_netlink<T: Send + 'static, F>(
    f: impl FnOnce(Handle) -> F + Send + 'static,
) -> Result<T>
where
    F: Future<Output = Result<T>>,
{
    on_thread("berth-netlink", move || {
        runtime()?.block_on(async move {
            let h = connect()?;
            f(h).await
        })
    })
}

/// Lists the links of the caller's network namespace.
pub fn list_links() -> Result<Vec<LinkInfoSummary>> {
    host_netlink(|h| async move {
        let mut out = Vec::new();
        let mut s = h.link().get().execute();
        while let Some(m) = s
            .try_next()
            .await
            .map_err(|e| NetworkError::nl("list links", e))?
        {
            out.push(summarize(&m));
        }
        Ok(out)
    })
}

/// Creates bridge `name` if missing, gives it `gateway/prefix`, and sets it up.
pub fn ensure_bridge(name: &str, gateway: Ipv4Addr, prefix: u8, mtu: Option<u32>) -> Result<()> {
    let name = name.to_string();
    host_netlink(move |h| async move {
        if index(&h, &name).await?.is_none() {
            let mut b = LinkBridge::new(&name);
            if let Some(m) = mtu {
                b = b.mtu(m);
            }
            match h.link().add(b.build()).execute().await {
                Ok(()) => {}
                Err(e) => {
                    let e = NetworkError::nl(format!("create bridge {name}"), e);
                    if e.netlink_errno() != Some(EEXIST) {
                        return Err(e);
                    }
                }
            }
        }
        let idx = must_index(&h, &name).await?;
        add_addr(&h, idx, IpAddr::V4(gateway), prefix, &name).await?;
        set_up(&h, &name).await
    })
}

/// Deletes link `name` (a bridge, or either end of a veth pair); absent is fine.
pub fn delete_link(name: &str) -> Result<()> {
    let name = name.to_string();
    host_netlink(move |h| async move { delete_link_async(&h, &name).await })
}

pub(crate) async fn delete_link_async(h: &Handle, name: &str) -> Result<()> {
    let Some(idx) = index(h, name).await? else {
        return Ok(());
    };
    match h.link().del(idx).execute().await {
        Ok(()) => Ok(()),
        Err(e) => {
            let e = NetworkError::nl(format!("delete link {name}"), e);
            if e.netlink_errno() == Some(ENODEV) {
                Ok(())
            } else {
                Err(e)
            }
        }
    }
}

/// What [`setup_veth`] puts in place.
#[derive(Debug, Clone)]
pub struct VethSpec {
    /// The bridge the host end joins.
    pub bridge: String,
    /// Host end name, `veth<7 hex>`.
    pub host_name: String,
    /// Name inside the container, `eth0`.
    pub ifname: String,
    /// MAC of the container end.
    pub mac: [u8; 6],
    /// Address and prefix of the container end.
    pub addr: Ipv4Net,
    /// Default route via this gateway (none for `--internal` networks).
    pub gateway: Option<Ipv4Addr>,
    /// MTU (the bridge's when none).
    pub mtu: Option<u32>,
}

/// Creates a veth pair whose host end joins the bridge (up) and whose other end is made directly inside
/// the namespace at `netns` with its final name and MAC (no move, no rename: moving a link between
/// namespaces waits for an RCU grace period, ~25 ms here); then, from a thread inside that namespace,
/// sets its address, brings it up and adds the default route.
pub fn setup_veth(netns: &Path, spec: &VethSpec) -> Result<()> {
    let ns = open_ns(netns)?;
    let spec = spec.clone();
    on_thread("berth-veth", move || {
        let rt = runtime()?;
        let host = rt.block_on(async {
            let h = connect()?;
            add_veth(&h, ns.as_raw_fd(), &spec).await?;
            Ok::<_, NetworkError>(h)
        })?;
        let inside = (|| {
            setns(&ns, CloneFlags::CLONE_NEWNET)
                .map_err(|e| NetworkError::io("setns(net)", e.into()))?;
            rt.block_on(async { configure_inside(&connect()?, &spec).await })
        })();
        if inside.is_err() {
            let _ = rt.block_on(delete_link_async(&host, &spec.host_name));
        }
        inside
    })
}

/// Over `host` (a socket of the host's namespace): the veth pair of `spec`, host end on the bridge
/// and up, container end made in the namespace `ns_fd` refers to; hairpin mode on the bridge port.
pub(crate) async fn add_veth(host: &Handle, ns_fd: i32, spec: &VethSpec) -> Result<()> {
    let br = must_index(host, &spec.bridge).await?;
    let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(spec.ifname.clone())
        .address(spec.mac.to_vec())
        .setns_by_fd(ns_fd);
    let mut v = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(spec.host_name.clone())
        .controller(br)
        .up();
    if let Some(m) = spec.mtu {
        peer = peer.mtu(m);
        v = v.mtu(m);
    }
    let v = v.set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())));
    host.link()
        .add(v.build())
        .execute()
        .await
        .map_err(|e| NetworkError::nl(format!("create veth {}", spec.host_name), e))?;
    // hairpin: a container reaching its own published port through the host comes back out of
    // the port it came in (what dockerd does without the userland proxy)
    let hp = format!("/sys/class/net/{}/brport/hairpin_mode", spec.host_name);
    if let Err(e) = std::fs::write(&hp, "1") {
        tracing::warn!("cannot set {hp}: {e}");
    }
    Ok(())
}

/// Over `h` (a socket of the container's namespace): the container end's address, up, default route.
pub(crate) async fn configure_inside(h: &Handle, spec: &VethSpec) -> Result<()> {
    let pi = must_index(h, &spec.ifname).await?;
    add_addr(
        h,
        pi,
        IpAddr::V4(spec.addr.addr),
        spec.addr.prefix,
        &spec.ifname,
    )
    .await?;
    h.link()
        .set(LinkUnspec::new_with_index(pi).up().build())
        .execute()
        .await
        .map_err(|e| NetworkError::nl(format!("set {} up", spec.ifname), e))?;
    if let Some(gw) = spec.gateway {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gw)
            .output_interface(pi)
            .build();
        match h.route().add(route).execute().await {
            Ok(()) => {}
            Err(e) => {
                let e = NetworkError::nl(format!("add default route via {gw}"), e);
                if e.netlink_errno() != Some(EEXIST) {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// Sets the link with index `idx` up (`lo` of a new namespace is always index 1).
pub(crate) async fn set_up_index(h: &Handle, idx: u32, name: &str) -> Result<()> {
    h.link()
        .set(LinkUnspec::new_with_index(idx).up().build())
        .execute()
        .await
        .map_err(|e| NetworkError::nl(format!("set {name} up"), e))
}

/// A fresh host-side veth name, `veth` + 7 random hex digits.
pub fn random_veth_name() -> String {
    format!("veth{}", &crate::random_hex(4)[..7])
}
