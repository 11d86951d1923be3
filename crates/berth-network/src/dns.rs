//! The embedded DNS server of user-defined networks.
//!
//! Docker answers on 127.0.0.11 inside each container's namespace (with NAT tricks there). Berth instead
//! runs one resolver per user-defined bridge network in the daemon, bound on that network's gateway address
//! (UDP and TCP port 53), and writes `nameserver <gateway>` into the containers' resolv.conf. It answers
//! A (and empty AAAA) for container names, aliases and short IDs on that network, PTR for their addresses,
//! and forwards everything else to the host's non-loopback resolvers (or the container's `--dns` servers);
//! containers on `--internal` networks get no forwarding, as with dockerd.
//!
//! The wire format is handled by hand: only a single question is read, and answers point back at it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::error::{NetworkError, Result};

/// Record type A.
pub const TYPE_A: u16 = 1;
/// Record type PTR.
pub const TYPE_PTR: u16 = 12;
/// Record type AAAA.
pub const TYPE_AAAA: u16 = 28;
/// Response code: no error.
pub const RCODE_NOERROR: u8 = 0;
/// Response code: server failure.
pub const RCODE_SERVFAIL: u8 = 2;
/// Response code: name does not exist.
pub const RCODE_NXDOMAIN: u8 = 3;
/// TTL of local answers (dockerd's).
pub const TTL: u32 = 600;

/// The question of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// Query ID.
    pub id: u16,
    /// Lower-cased name without the trailing dot.
    pub name: String,
    /// QTYPE.
    pub qtype: u16,
    /// QCLASS.
    pub qclass: u16,
    /// Offset just past the question section.
    pub end: usize,
}

/// Parses a standard query with exactly one question (no compression in the question).
pub fn parse_query(buf: &[u8]) -> Option<Question> {
    if buf.len() < 12 {
        return None;
    }
    let id = u16::from_be_bytes([buf[0], buf[1]]);
    let flags = u16::from_be_bytes([buf[2], buf[3]]);
    let qdcount = u16::from_be_bytes([buf[4], buf[5]]);
    if flags & 0x8000 != 0 || (flags >> 11) & 0xf != 0 || qdcount != 1 {
        return None;
    }
    let mut pos = 12;
    let mut labels = Vec::new();
    loop {
        let len = *buf.get(pos)? as usize;
        pos += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        let label = buf.get(pos..pos + len)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        pos += len;
    }
    let qtype = u16::from_be_bytes([*buf.get(pos)?, *buf.get(pos + 1)?]);
    let qclass = u16::from_be_bytes([*buf.get(pos + 2)?, *buf.get(pos + 3)?]);
    Some(Question {
        id,
        name: labels.join("."),
        qtype,
        qclass,
        end: pos + 4,
    })
}

/// One answer record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// An IPv4 address.
    A(Ipv4Addr),
    /// A name (for PTR).
    Ptr(String),
}

fn encode_name(name: &str, out: &mut Vec<u8>) {
    for l in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        let l = &l.as_bytes()[..l.len().min(63)];
        out.push(l.len() as u8);
        out.extend_from_slice(l);
    }
    out.push(0);
}

/// Builds the response to `query` (whose question is `q`) with `answers` and `rcode`.
pub fn build_response(query: &[u8], q: &Question, answers: &[Answer], rcode: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(q.end + answers.len() * 32);
    out.extend_from_slice(&query[0..2]);
    let rd = query[2] & 0x01;
    out.push(0x80 | 0x04 | rd); // QR, AA, RD as asked
    out.push(0x80 | (rcode & 0x0f)); // RA
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&query[12..q.end]);
    for a in answers {
        out.extend_from_slice(&[0xc0, 0x0c]);
        let (ty, rdata) = match a {
            Answer::A(ip) => (TYPE_A, ip.octets().to_vec()),
            Answer::Ptr(n) => {
                let mut v = Vec::new();
                encode_name(n, &mut v);
                (TYPE_PTR, v)
            }
        };
        out.extend_from_slice(&ty.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&TTL.to_be_bytes());
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
    }
    out
}

/// The reverse name of an address: `4.3.2.1.in-addr.arpa` → 1.2.3.4.
pub fn parse_reverse(name: &str) -> Option<Ipv4Addr> {
    let rest = name.strip_suffix(".in-addr.arpa")?;
    let parts: Vec<u8> = rest
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    (parts.len() == 4).then(|| Ipv4Addr::new(parts[3], parts[2], parts[1], parts[0]))
}

/// A container as the resolver of one network knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsEntry {
    /// Names it answers to (container name, aliases, short ID), any case.
    pub names: Vec<String>,
    /// Its address on the network.
    pub ip: Ipv4Addr,
    /// The PTR answer, `name.network`.
    pub ptr: String,
    /// Upstreams for queries coming from this container (its `--dns`), empty for the defaults.
    pub upstreams: Vec<IpAddr>,
}

/// The names of one network.
#[derive(Debug, Clone, Default)]
pub struct NetworkNames {
    /// The entries.
    pub entries: Vec<DnsEntry>,
    /// Forward unknown names (false on `--internal` networks).
    pub forward: bool,
}

/// What the resolver does with a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Answer locally with these records and this rcode.
    Local(Vec<Answer>, u8),
    /// Forward to these upstreams.
    Forward(Vec<IpAddr>),
}

/// Decides how to answer `q` from `client` on a network with `names`; `default_upstreams` are the host's.
pub fn resolve(
    q: &Question,
    client: IpAddr,
    names: &NetworkNames,
    default_upstreams: &[IpAddr],
) -> Resolution {
    if q.qclass == 1 {
        let hits: Vec<&DnsEntry> = names
            .entries
            .iter()
            .filter(|e| e.names.iter().any(|n| n.eq_ignore_ascii_case(&q.name)))
            .collect();
        if !hits.is_empty() {
            return match q.qtype {
                TYPE_A => Resolution::Local(
                    hits.iter().map(|e| Answer::A(e.ip)).collect(),
                    RCODE_NOERROR,
                ),
                _ => Resolution::Local(vec![], RCODE_NOERROR),
            };
        }
        if q.qtype == TYPE_PTR {
            if let Some(ip) = parse_reverse(&q.name) {
                if let Some(e) = names.entries.iter().find(|e| e.ip == ip) {
                    return Resolution::Local(vec![Answer::Ptr(e.ptr.clone())], RCODE_NOERROR);
                }
            }
        }
    }
    if !names.forward {
        return Resolution::Local(vec![], RCODE_NXDOMAIN);
    }
    let own = names
        .entries
        .iter()
        .find(|e| IpAddr::V4(e.ip) == client)
        .map(|e| e.upstreams.clone());
    let ups = match own {
        Some(u) if !u.is_empty() => u,
        _ => default_upstreams.to_vec(),
    };
    if ups.is_empty() {
        Resolution::Local(vec![], RCODE_SERVFAIL)
    } else {
        Resolution::Forward(ups)
    }
}

type Table = Arc<RwLock<HashMap<String, NetworkNames>>>;
type ServerMap = HashMap<String, (Vec<tokio::task::AbortHandle>, SocketAddr)>;

/// The resolvers of all user-defined networks, on one small runtime thread of their own.
pub struct DnsService {
    rt: Option<tokio::runtime::Runtime>,
    table: Table,
    upstreams: Arc<Vec<IpAddr>>,
    servers: Mutex<ServerMap>,
}

impl std::fmt::Debug for DnsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsService")
            .field("upstreams", &self.upstreams)
            .finish_non_exhaustive()
    }
}

impl DnsService {
    /// Starts the service's runtime; `upstreams` are the default forwarders.
    pub fn new(upstreams: Vec<IpAddr>) -> Result<DnsService> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("berth-dns")
            .enable_all()
            .build()
            .map_err(|e| NetworkError::io("start DNS runtime", e))?;
        Ok(DnsService {
            rt: Some(rt),
            table: Arc::default(),
            upstreams: Arc::new(upstreams),
            servers: Mutex::default(),
        })
    }

    /// Replaces the names of network `id`.
    pub fn set_names(&self, id: &str, names: NetworkNames) {
        self.table
            .write()
            .expect("dns table")
            .insert(id.to_string(), names);
    }

    /// Serves network `id` on `addr:port` (UDP and TCP; port 0 picks one) and returns the bound address;
    /// a running server for `id` is kept.
    pub fn start(&self, id: &str, addr: Ipv4Addr, port: u16) -> Result<SocketAddr> {
        let mut servers = self.servers.lock().expect("dns servers");
        if let Some((_, bound)) = servers.get(id) {
            return Ok(*bound);
        }
        let rt = self.rt.as_ref().expect("runtime");
        let _g = rt.enter();
        let sa = SocketAddr::from((addr, port));
        let udp = std::net::UdpSocket::bind(sa)
            .map_err(|e| NetworkError::io(format!("bind DNS on {sa}/udp"), e))?;
        let sa = udp
            .local_addr()
            .map_err(|e| NetworkError::io("DNS socket address", e))?;
        let tcp = std::net::TcpListener::bind(sa)
            .map_err(|e| NetworkError::io(format!("bind DNS on {sa}/tcp"), e))?;
        udp.set_nonblocking(true)
            .map_err(|e| NetworkError::io("nonblocking", e))?;
        tcp.set_nonblocking(true)
            .map_err(|e| NetworkError::io("nonblocking", e))?;
        let udp = Arc::new(
            UdpSocket::from_std(udp).map_err(|e| NetworkError::io("register DNS socket", e))?,
        );
        let tcp =
            TcpListener::from_std(tcp).map_err(|e| NetworkError::io("register DNS socket", e))?;
        let ctx = Ctx {
            id: id.to_string(),
            table: self.table.clone(),
            upstreams: self.upstreams.clone(),
        };
        let c = ctx.clone();
        let u = rt.spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = udp.recv_from(&mut buf).await else {
                    continue;
                };
                let query = buf[..n].to_vec();
                let (c, udp) = (c.clone(), udp.clone());
                tokio::spawn(async move {
                    if let Some(resp) = c.answer(&query, from.ip(), false).await {
                        let _ = udp.send_to(&resp, from).await;
                    }
                });
            }
        });
        let t = rt.spawn(async move {
            loop {
                let Ok((s, from)) = tcp.accept().await else {
                    continue;
                };
                let c = ctx.clone();
                tokio::spawn(async move {
                    let _ =
                        tokio::time::timeout(Duration::from_secs(10), c.serve_tcp(s, from.ip()))
                            .await;
                });
            }
        });
        servers.insert(
            id.to_string(),
            (vec![u.abort_handle(), t.abort_handle()], sa),
        );
        Ok(sa)
    }

    /// Stops serving network `id` and forgets its names.
    pub fn stop(&self, id: &str) {
        if let Some((hs, _)) = self.servers.lock().expect("dns servers").remove(id) {
            hs.iter().for_each(|h| h.abort());
        }
        self.table.write().expect("dns table").remove(id);
    }

    /// Networks being served.
    pub fn serving(&self) -> Vec<String> {
        self.servers
            .lock()
            .expect("dns servers")
            .keys()
            .cloned()
            .collect()
    }
}

impl Drop for DnsService {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

#[derive(Clone)]
struct Ctx {
    id: String,
    table: Table,
    upstreams: Arc<Vec<IpAddr>>,
}

impl Ctx {
    async fn answer(&self, query: &[u8], client: IpAddr, tcp: bool) -> Option<Vec<u8>> {
        let q = parse_query(query)?;
        let res = {
            let table = self.table.read().ok()?;
            let names = table.get(&self.id).cloned().unwrap_or_default();
            resolve(&q, client, &names, &self.upstreams)
        };
        match res {
            Resolution::Local(ans, rcode) => Some(build_response(query, &q, &ans, rcode)),
            Resolution::Forward(ups) => {
                for up in ups {
                    let r = if tcp {
                        forward_tcp(query, up).await
                    } else {
                        forward_udp(query, up).await
                    };
                    if let Some(r) = r {
                        return Some(r);
                    }
                }
                Some(build_response(query, &q, &[], RCODE_SERVFAIL))
            }
        }
    }

    async fn serve_tcp(&self, mut s: TcpStream, client: IpAddr) -> std::io::Result<()> {
        loop {
            let len = s.read_u16().await? as usize;
            let mut q = vec![0u8; len];
            s.read_exact(&mut q).await?;
            let Some(resp) = self.answer(&q, client, true).await else {
                return Ok(());
            };
            s.write_u16(resp.len() as u16).await?;
            s.write_all(&resp).await?;
        }
    }
}

async fn forward_udp(query: &[u8], up: IpAddr) -> Option<Vec<u8>> {
    let bind: SocketAddr = if up.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let s = UdpSocket::bind(bind).await.ok()?;
    s.connect((up, 53)).await.ok()?;
    s.send(query).await.ok()?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), s.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    buf.truncate(n);
    Some(buf)
}

async fn forward_tcp(query: &[u8], up: IpAddr) -> Option<Vec<u8>> {
    let fut = async {
        let mut s = TcpStream::connect((up, 53)).await.ok()?;
        s.write_u16(query.len() as u16).await.ok()?;
        s.write_all(query).await.ok()?;
        let len = s.read_u16().await.ok()? as usize;
        let mut buf = vec![0u8; len];
        s.read_exact(&mut buf).await.ok()?;
        Some(buf)
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .ok()?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        encode_name(name, &mut q);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        q
    }

    fn names() -> NetworkNames {
        NetworkNames {
            entries: vec![DnsEntry {
                names: vec!["web".into(), "abc123def456".into(), "www".into()],
                ip: Ipv4Addr::new(10, 213, 1, 2),
                ptr: "web.net1".into(),
                upstreams: vec![],
            }],
            forward: true,
        }
    }

    #[test]
    fn parse_and_answer_a() {
        let qb = query("WEB.", TYPE_A);
        let q = parse_query(&qb).unwrap();
        assert_eq!(q.name, "web");
        assert_eq!(q.id, 0x1234);
        let up: Vec<IpAddr> = vec!["9.9.9.9".parse().unwrap()];
        let r = resolve(&q, "10.213.1.3".parse().unwrap(), &names(), &up);
        assert_eq!(
            r,
            Resolution::Local(vec![Answer::A(Ipv4Addr::new(10, 213, 1, 2))], RCODE_NOERROR)
        );
        let Resolution::Local(ans, rc) = r else {
            unreachable!()
        };
        let resp = build_response(&qb, &q, &ans, rc);
        assert_eq!(&resp[0..2], &[0x12, 0x34]);
        assert_eq!(resp[2] & 0x80, 0x80);
        assert_eq!(resp[3] & 0x0f, 0);
        assert_eq!(u16::from_be_bytes([resp[6], resp[7]]), 1);
        assert_eq!(&resp[resp.len() - 4..], &[10, 213, 1, 2]);
        assert_eq!(&resp[q.end..q.end + 2], &[0xc0, 0x0c]);
    }

    #[test]
    fn aaaa_ptr_forward_and_internal() {
        let up: Vec<IpAddr> = vec!["9.9.9.9".parse().unwrap()];
        let client: IpAddr = "10.213.1.3".parse().unwrap();
        let q = parse_query(&query("abc123def456", TYPE_AAAA)).unwrap();
        assert_eq!(
            resolve(&q, client, &names(), &up),
            Resolution::Local(vec![], RCODE_NOERROR)
        );
        let qb = query("2.1.213.10.in-addr.arpa", TYPE_PTR);
        let q = parse_query(&qb).unwrap();
        let r = resolve(&q, client, &names(), &up);
        assert_eq!(
            r,
            Resolution::Local(vec![Answer::Ptr("web.net1".into())], RCODE_NOERROR)
        );
        let resp = build_response(&qb, &q, &[Answer::Ptr("web.net1".into())], 0);
        assert!(resp.ends_with(&[3, b'w', b'e', b'b', 4, b'n', b'e', b't', b'1', 0]));
        let q = parse_query(&query("example.com", TYPE_A)).unwrap();
        assert_eq!(
            resolve(&q, client, &names(), &up),
            Resolution::Forward(up.clone())
        );
        let mut own = names();
        own.entries[0].upstreams = vec!["1.1.1.1".parse().unwrap()];
        let r = resolve(&q, "10.213.1.2".parse().unwrap(), &own, &up);
        assert_eq!(r, Resolution::Forward(vec!["1.1.1.1".parse().unwrap()]));
        let mut internal = names();
        internal.forward = false;
        assert_eq!(
            resolve(&q, client, &internal, &up),
            Resolution::Local(vec![], RCODE_NXDOMAIN)
        );
        assert_eq!(
            resolve(&q, client, &names(), &[]),
            Resolution::Local(vec![], RCODE_SERVFAIL)
        );
    }

    #[test]
    fn server_answers_udp_and_tcp() {
        use std::io::{Read, Write};
        let svc = DnsService::new(vec![]).unwrap();
        svc.set_names("n1", names());
        let addr = svc.start("n1", Ipv4Addr::LOCALHOST, 0).unwrap();
        assert_eq!(svc.start("n1", Ipv4Addr::LOCALHOST, 0).unwrap(), addr);
        let q = query("www", TYPE_A);
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        u.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        u.send_to(&q, addr).unwrap();
        let mut buf = [0u8; 512];
        let n = u.recv(&mut buf).unwrap();
        assert_eq!(&buf[n - 4..n], &[10, 213, 1, 2]);
        // not a local name, no upstreams: SERVFAIL
        u.send_to(&query("example.com", TYPE_A), addr).unwrap();
        let n = u.recv(&mut buf).unwrap();
        assert_eq!(buf[3] & 0x0f, RCODE_SERVFAIL);
        assert!(n >= 12);
        let mut t = std::net::TcpStream::connect(addr).unwrap();
        t.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let q = query("abc123def456", TYPE_A);
        t.write_all(&(q.len() as u16).to_be_bytes()).unwrap();
        t.write_all(&q).unwrap();
        let mut len = [0u8; 2];
        t.read_exact(&mut len).unwrap();
        let mut resp = vec![0u8; u16::from_be_bytes(len) as usize];
        t.read_exact(&mut resp).unwrap();
        assert!(resp.ends_with(&[10, 213, 1, 2]));
        assert_eq!(svc.serving(), vec!["n1".to_string()]);
        svc.stop("n1");
        assert!(svc.serving().is_empty());
    }

    #[test]
    fn forwards_other_names_upstream() {
        // the upstream must be on port 53: needs root (and a free 127.213.0.1:53)
        if !nix::unistd::Uid::effective().is_root() {
            return;
        }
        let Ok(up) = std::net::UdpSocket::bind("127.213.0.1:53") else {
            return;
        };
        let th = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let (n, from) = up.recv_from(&mut buf).unwrap();
            let q = parse_query(&buf[..n]).unwrap();
            let resp = build_response(&buf[..n], &q, &[Answer::A(Ipv4Addr::new(192, 0, 2, 7))], 0);
            up.send_to(&resp, from).unwrap();
            q.name
        });
        let svc = DnsService::new(vec!["127.213.0.1".parse().unwrap()]).unwrap();
        svc.set_names("n1", names());
        let addr = svc.start("n1", Ipv4Addr::LOCALHOST, 0).unwrap();
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        u.send_to(&query("example.com", TYPE_A), addr).unwrap();
        let mut buf = [0u8; 512];
        let n = u.recv(&mut buf).unwrap();
        assert_eq!(&buf[0..2], &[0x12, 0x34]);
        assert_eq!(&buf[n - 4..n], &[192, 0, 2, 7]);
        assert_eq!(th.join().unwrap(), "example.com");
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_query(&[0; 5]).is_none());
        let mut r = query("web", TYPE_A);
        r[2] |= 0x80; // a response, not a query
        assert!(parse_query(&r).is_none());
        let mut t = query("web", TYPE_A);
        t.truncate(t.len() - 3);
        assert!(parse_query(&t).is_none());
        assert_eq!(parse_reverse("1.2.3.in-addr.arpa"), None);
    }
}
