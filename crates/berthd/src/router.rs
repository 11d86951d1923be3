//! The API server: version handling, routing, and the endpoint handlers' HTTP side.

use std::sync::Arc;

use berth_api::ApiVersion;
use berth_api::container::CreateRequest;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, CONTENT_TYPE, HeaderValue, UPGRADE};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;

use crate::container::{self, attach, delete, list, logs, stop, wait};
use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::http::{Body, Query, Resp, empty, error_response, json, read_json, text};

/// The `Server` header value.
pub fn server_header() -> String {
    format!("Berth/{} (linux)", crate::system::ENGINE_VERSION)
}

/// Serves one connection's requests.
pub async fn serve_conn(d: Arc<Daemon>, stream: tokio::net::UnixStream) {
    let svc = hyper::service::service_fn(move |req| {
        let d = d.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(d, req).await) }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(crate::linger::LingerIo::new(stream)), svc)
        .with_upgrades()
        .await
    {
        tracing::debug!("connection ended: {e}");
    }
}

/// Handles one request: version check, routing, common headers.
pub async fn handle(d: Arc<Daemon>, req: Request<Incoming>) -> Resp {
    let method = req.method().clone();
    let raw_path = req.uri().path().to_string();
    tracing::debug!("{method} {}", req.uri());
    let (ver, path) = berth_api::version::split_versioned_path(&raw_path);
    let path = percent_decode(path);
    let mut resp = match ver.map(check_version).transpose() {
        Err(e) => error_response(&e),
        Ok(_) => match route(&d, method, &path, req).await {
            Ok(r) => r,
            Err(e) => error_response(&e),
        },
    };
    let h = resp.headers_mut();
    h.insert("Api-Version", HeaderValue::from_static("1.44"));
    if let Ok(v) = HeaderValue::from_str(&server_header()) {
        h.insert("Server", v);
    }
    resp
}

fn check_version(v: &str) -> Result<ApiVersion> {
    let parsed =
        ApiVersion::parse(v).ok_or_else(|| Error::invalid(format!("invalid API version: {v}")))?;
    parsed.check().map_err(Error::Invalid)
}

fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn not_found() -> Resp {
    json(404, &berth_api::ErrorBody::new("page not found"))
}

async fn route(
    d: &Arc<Daemon>,
    method: Method,
    path: &str,
    req: Request<Incoming>,
) -> Result<Resp> {
    let q = Query::parse(req.uri().query());
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (&method, segs.as_slice()) {
        (&Method::GET | &Method::HEAD, ["_ping"]) => Ok(ping()),
        (&Method::GET, ["version"]) => Ok(json(200, &crate::system::version())),
        (&Method::GET, ["info"]) => Ok(json(200, &crate::system::info(d).await)),
        (&Method::GET, ["events"]) => events(d, &q),
        (&Method::GET, ["system", "df"]) => system_df(d).await,
        (&Method::POST, ["auth"]) => crate::auth::handle(d, req).await,
        (&Method::POST, ["build"]) => crate::build::build(d, req).await,
        (&Method::POST, ["build", "prune"]) => Ok(json(200, &crate::build::prune(d, &q).await?)),
        (&Method::POST, ["berth", "build", "context"]) => {
            Ok(json(200, &crate::build::context_session(d, req).await?))
        }
        (_, ["exec", id, rest @ ..]) => exec_route(d, &method, id, rest, &q, req).await,
        (&Method::GET, ["networks"]) => {
            Ok(json(200, &crate::networks::list(d, &q.filters()?).await?))
        }
        (&Method::POST, ["networks", "create"]) => {
            let body = read_json(req).await?;
            Ok(json(201, &crate::networks::create(d, body).await?))
        }
        (&Method::POST, ["networks", "prune"]) => {
            Ok(json(200, &crate::networks::prune(d, &q.filters()?).await?))
        }
        (&Method::GET, ["networks", id]) => Ok(json(200, &crate::networks::inspect(d, id).await?)),
        (&Method::DELETE, ["networks", id]) => {
            crate::networks::remove(d, id).await?;
            Ok(empty(204))
        }
        (&Method::POST, ["networks", id, "connect"]) => {
            crate::networks::connect(d, id, read_json(req).await?).await?;
            Ok(empty(200))
        }
        (&Method::POST, ["networks", id, "disconnect"]) => {
            crate::networks::disconnect(d, id, read_json(req).await?).await?;
            Ok(empty(200))
        }
        (&Method::GET, ["volumes"]) => {
            let v = crate::volumes::list(d, &q.filters()?)?;
            Ok(json(
                200,
                &berth_api::volume::VolumeList {
                    volumes: v,
                    warnings: None,
                },
            ))
        }
        (&Method::POST, ["volumes", "create"]) => {
            let body: berth_api::volume::VolumeCreateRequest = read_json(req).await?;
            Ok(json(201, &crate::volumes::create(d, body)?))
        }
        (&Method::POST, ["volumes", "prune"]) => {
            Ok(json(200, &crate::volumes::prune(d, &q.filters()?)?))
        }
        (&Method::GET, ["volumes", name]) => Ok(json(200, &crate::volumes::inspect(d, name)?)),
        (&Method::DELETE, ["volumes", name]) => {
            crate::volumes::remove(d, name, q.bool("force"))?;
            Ok(empty(204))
        }
        (&Method::POST, ["containers", "create"]) => {
            let body: CreateRequest = read_json(req).await?;
            let r = container::create::create(d, q.get("name"), body).await?;
            Ok(json(201, &r))
        }
        (&Method::GET, ["containers", "json"]) => list::handle(d, &q).await,
        (&Method::POST, ["containers", "prune"]) => containers_prune(d, &q).await,
        (&Method::POST, ["images", "prune"]) => {
            let r = d.images.prune(&q.filters()?, in_use_fn(d)).await?;
            Ok(json(200, &r))
        }
        (&Method::POST, ["commit"]) => commit(d, &q, req).await,
        (_, ["containers", id, rest @ ..]) => container_route(d, &method, id, rest, q, req).await,
        (&Method::GET, ["images", "json"]) => {
            let l = d.images.list(q.bool("all"), &q.filters()?).await?;
            Ok(json(200, &l))
        }
        (&Method::POST, ["images", "create"]) => images_create(d, &q, req).await,
        (&Method::POST, ["images", "load"]) => {
            let out = d.images.load(req.into_body()).await?;
            let mut r = hyper::Response::new(crate::http::full(out));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(r)
        }
        (&Method::GET, ["images", "get"]) => {
            let names: Vec<String> =
                form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                    .filter(|(k, _)| k == "names")
                    .map(|(_, v)| v.into_owned())
                    .collect();
            images_save(d, names).await
        }
        (_, ["images", ..]) => {
            let creds = crate::distribution::credentials(req.headers().get("X-Registry-Auth"));
            image_route(d, &method, path, &q, creds).await
        }
        _ => Ok(not_found()),
    }
}

fn ping() -> Resp {
    let mut r = text(200, "OK");
    let h = r.headers_mut();
    h.insert("Ostype", HeaderValue::from_static("linux"));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    h.insert(
        "Cache-Control",
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert("Pragma", HeaderValue::from_static("no-cache"));
    r
}

async fn container_route(
    d: &Arc<Daemon>,
    method: &Method,
    key: &str,
    rest: &[&str],
    q: Query,
    mut req: Request<Incoming>,
) -> Result<Resp> {
    // Check the route before the container, so unknown routes are 404 "page not found".
    let known = matches!(
        (method, rest),
        (&Method::GET, ["json"])
            | (&Method::GET, ["logs"])
            | (&Method::GET, ["top"])
            | (&Method::GET | &Method::HEAD | &Method::PUT, ["archive"])
            | (&Method::GET, ["export"])
            | (&Method::GET, ["changes"])
            | (&Method::GET, ["stats"])
            | (&Method::DELETE, [])
            | (
                &Method::POST,
                ["start"]
                    | ["stop"]
                    | ["restart"]
                    | ["kill"]
                    | ["wait"]
                    | ["attach"]
                    | ["resize"]
                    | ["rename"]
                    | ["exec"]
                    | ["pause"]
                    | ["unpause"]
                    | ["update"]
            )
    );
    if !known {
        return Ok(not_found());
    }
    let c = d.find(key)?;
    match (method, rest) {
        (&Method::GET, ["json"]) => {
            let rec = c.snapshot();
            let vr = d.settings.data_root.join("volumes");
            Ok(json(200, &list::inspect(&rec, &d.paths(&rec.id), &vr)))
        }
        (&Method::POST, ["start"]) => {
            // dockerd counts a container waiting for its restart as running: 304.
            if c.snapshot().state.restarting {
                return Err(Error::NotModified("container already started".into()));
            }
            container::restart::user_start(d, &c).await?;
            Ok(empty(204))
        }
        (&Method::POST, ["stop"]) => {
            stop::stop(d, &c, q.int("t")?, q.get("signal")).await?;
            Ok(empty(204))
        }
        (&Method::POST, ["restart"]) => {
            stop::restart(d, &c, q.int("t")?, q.get("signal")).await?;
            Ok(empty(204))
        }
        (&Method::POST, ["kill"]) => {
            let sig = match q.get("signal").filter(|s| !s.is_empty()) {
                Some(s) => crate::signal::parse(s)?,
                None => 9,
            };
            stop::kill(d, &c, sig).await?;
            Ok(empty(204))
        }
        (&Method::POST, ["resize"]) => {
            let h = q.int("h")?.unwrap_or(0);
            let w = q.int("w")?.unwrap_or(0);
            stop::resize(d, &c, h, w).await?;
            Ok(empty(200))
        }
        (&Method::POST, ["update"]) => {
            let body: serde_json::Value = read_json(req).await?;
            let warnings = container::update::update(d, &c, body).await?;
            Ok(json(200, &json!({"Warnings": warnings})))
        }
        (&Method::POST, ["pause"]) => {
            container::top::pause(d, &c).await?;
            Ok(empty(204))
        }
        (&Method::POST, ["unpause"]) => {
            container::top::unpause(d, &c).await?;
            Ok(empty(204))
        }
        (&Method::GET, ["top"]) => Ok(json(200, &container::top::top(&c).await?)),
        (&Method::GET, ["changes"]) => {
            let layer = c.snapshot().layer;
            let ch = tokio::task::spawn_blocking(move || container::archive::changes(&layer))
                .await
                .map_err(|e| Error::internal(e.to_string()))?;
            Ok(json(200, &ch))
        }
        (&Method::GET, ["export"]) => {
            let rx = container::archive::export(d, &c).await?;
            let mut r = hyper::Response::new(Body::Chan(rx));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
            Ok(r)
        }
        (&Method::HEAD, ["archive"]) => {
            let path = q.get("path").unwrap_or("").to_string();
            if path.is_empty() {
                return Err(Error::invalid("path is required"));
            }
            let hdr = container::archive::stat(d, &c, path).await?;
            let mut r = empty(200);
            if let Ok(v) = HeaderValue::from_str(&hdr) {
                r.headers_mut().insert("X-Docker-Container-Path-Stat", v);
            }
            Ok(r)
        }
        (&Method::GET, ["archive"]) => {
            let path = q.get("path").unwrap_or("").to_string();
            if path.is_empty() {
                return Err(Error::invalid("path is required"));
            }
            let (hdr, rx) = container::archive::get(d, &c, path).await?;
            let mut r = hyper::Response::new(Body::Chan(rx));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
            if let Ok(v) = HeaderValue::from_str(&hdr) {
                r.headers_mut().insert("X-Docker-Container-Path-Stat", v);
            }
            Ok(r)
        }
        (&Method::PUT, ["archive"]) => {
            let path = q.get("path").unwrap_or("").to_string();
            if path.is_empty() {
                return Err(Error::invalid("path is required"));
            }
            container::archive::put(d, &c, path, req.into_body()).await?;
            Ok(empty(200))
        }
        (&Method::GET, ["stats"]) => {
            let stream = q
                .get("stream")
                .is_none_or(|v| crate::util::bool_value(Some(v)));
            let one_shot = q.bool("one-shot");
            let (tx, body) = Body::channel();
            tokio::spawn(container::top::stats(c.clone(), stream, one_shot, tx));
            let mut r = hyper::Response::new(body);
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(r)
        }
        (&Method::POST, ["exec"]) => {
            let cfg: berth_api::exec::ExecConfig = read_json(req).await?;
            let id = crate::exec::create(d, &c, cfg)?;
            Ok(json(201, &json!({"Id": id})))
        }
        (&Method::POST, ["rename"]) => {
            rename(d, &c, q.get("name").unwrap_or(""))?;
            Ok(empty(204))
        }
        (&Method::DELETE, []) => {
            delete::remove(d, &c, q.bool("force"), q.bool("v")).await?;
            Ok(empty(204))
        }
        (&Method::POST, ["wait"]) => {
            let cond = wait::Condition::parse(q.get("condition"))?;
            let (tx, body) = Body::channel();
            let c2 = c.clone();
            tokio::spawn(async move {
                // Give up when the client goes away, so abandoned waits do not pile up.
                tokio::select! {
                    code = wait::wait(&c2, cond) => {
                        let line = json!({"StatusCode": code, "Error": null}).to_string() + "\n";
                        let _ = tx.send(Bytes::from(line)).await;
                    }
                    _ = tx.closed() => {}
                }
            });
            let mut r = hyper::Response::new(body);
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(r)
        }
        (&Method::GET, ["logs"]) => {
            let rec = c.snapshot();
            container::logcfg::check_readable(&rec.host_config.log_config)?;
            let o = logs::LogOptions {
                follow: q.bool("follow"),
                stdout: q.bool("stdout"),
                stderr: q.bool("stderr"),
                since: logs::parse_timestamp(q.get("since").unwrap_or(""))?,
                until: logs::parse_timestamp(q.get("until").unwrap_or(""))?,
                timestamps: q.bool("timestamps"),
                tail: logs::parse_tail(q.get("tail"))?,
                tty: rec.config.tty,
                details: q.bool("details"),
            };
            if !o.stdout && !o.stderr {
                return Err(Error::invalid(
                    "Bad parameters: you must choose at least one stream",
                ));
            }
            let (tx, body) = Body::channel();
            let path = d.paths(&c.id).log();
            let rx = c.events.subscribe();
            tokio::spawn(async move { logs::stream(&path, o, rx, tx).await });
            let mut r = hyper::Response::new(body);
            r.headers_mut()
                .insert(CONTENT_TYPE, stream_type(rec.config.tty));
            Ok(r)
        }
        (&Method::POST, ["attach"]) => {
            let rec = c.snapshot();
            let keys = match q.get("detachKeys").filter(|s| !s.is_empty()) {
                Some(k) => attach::parse_detach_keys(k)?,
                None => attach::DEFAULT_DETACH.to_vec(),
            };
            let stdin = q.bool("stdin");
            let (stdout, stderr) = (q.bool("stdout"), q.bool("stderr"));
            let want_logs = q.bool("logs");
            let want_stream = q.bool("stream");
            let source = if want_stream {
                Some(attach::open(d, &c, stdin, stdout, stderr).await?)
            } else {
                None
            };
            let log_opts = logs::LogOptions {
                stdout,
                stderr,
                tty: rec.config.tty,
                ..Default::default()
            };
            let log_path = d.paths(&c.id).log();
            let upgrade = req
                .headers()
                .get(UPGRADE)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"tcp"));
            if upgrade {
                let on = hyper::upgrade::on(&mut req);
                let events = c.events.subscribe();
                tokio::spawn(async move {
                    let Ok(up) = on.await else { return };
                    let mut io = TokioIo::new(up);
                    if want_logs {
                        replay_logs(&log_path, log_opts, events, &mut io).await;
                    }
                    if let Some(src) = source {
                        if let Some(shim) = src.connect().await {
                            attach::splice(io, shim, stdin, keys, None).await;
                        }
                    }
                });
                let mut r = empty(101);
                let h = r.headers_mut();
                h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
                h.insert(UPGRADE, HeaderValue::from_static("tcp"));
                h.insert(CONTENT_TYPE, stream_type(rec.config.tty));
                Ok(r)
            } else {
                let (tx, body) = Body::channel();
                let events = c.events.subscribe();
                tokio::spawn(async move {
                    if want_logs {
                        let (ltx, mut lrx) = tokio::sync::mpsc::channel(16);
                        let lp = log_path.clone();
                        let h =
                            tokio::spawn(
                                async move { logs::stream(&lp, log_opts, events, ltx).await },
                            );
                        while let Some(b) = lrx.recv().await {
                            if tx.send(b).await.is_err() {
                                return;
                            }
                        }
                        let _ = h.await;
                    }
                    if let Some(src) = source {
                        if let Some(mut shim) = src.connect().await {
                            use tokio::io::AsyncReadExt;
                            let mut buf = vec![0u8; 32 * 1024];
                            while let Ok(n) = shim.read(&mut buf).await {
                                if n == 0
                                    || tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err()
                                {
                                    break;
                                }
                            }
                        }
                    }
                });
                let mut r = hyper::Response::new(body);
                *r.status_mut() = StatusCode::OK;
                r.headers_mut()
                    .insert(CONTENT_TYPE, stream_type(rec.config.tty));
                Ok(r)
            }
        }
        _ => Ok(not_found()),
    }
}

async fn exec_route(
    d: &Arc<Daemon>,
    method: &Method,
    id: &str,
    rest: &[&str],
    q: &Query,
    mut req: Request<Incoming>,
) -> Result<Resp> {
    let known = matches!(
        (method, rest),
        (&Method::GET, ["json"]) | (&Method::POST, ["start"] | ["resize"])
    );
    if !known {
        return Ok(not_found());
    }
    let e = crate::exec::find(d, id)?;
    match (method, rest) {
        (&Method::GET, ["json"]) => {
            crate::exec::refresh(d, &e).await;
            Ok(json(200, &crate::exec::inspect(&e)))
        }
        (&Method::POST, ["resize"]) => {
            let h = q.int("h")?.unwrap_or(0);
            let w = q.int("w")?.unwrap_or(0);
            crate::exec::resize(d, &e, h, w).await?;
            Ok(empty(200))
        }
        _ => {
            let upgrade = req
                .headers()
                .get(UPGRADE)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"tcp"));
            let on = upgrade.then(|| hyper::upgrade::on(&mut req));
            let start: berth_api::exec::ExecStartConfig = read_json(req).await?;
            let c = d.find(&e.container_id)?;
            if !c.snapshot().state.running {
                return Err(Error::Conflict(format!(
                    "Container {} is not running",
                    e.container_id
                )));
            }
            crate::exec::begin(&e)?;
            let console = start.console_size;
            let (d2, e2) = (d.clone(), e.clone());
            if start.detach {
                tokio::spawn(crate::exec::run::<tokio::io::DuplexStream>(
                    d2, e2, true, console, None,
                ));
                return Ok(empty(200));
            }
            let tty = e.config.tty;
            if let Some(on) = on {
                tokio::spawn(async move {
                    let Ok(up) = on.await else { return };
                    crate::exec::run(d2, e2, false, console, Some(TokioIo::new(up))).await;
                });
                let mut r = empty(101);
                let h = r.headers_mut();
                h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
                h.insert(UPGRADE, HeaderValue::from_static("tcp"));
                h.insert(CONTENT_TYPE, stream_type(tty));
                Ok(r)
            } else {
                // No hijack: the output goes into the response body through a pipe.
                let (near, mut far) = tokio::io::duplex(64 * 1024);
                tokio::spawn(crate::exec::run(d2, e2, false, console, Some(near)));
                let (tx, body) = Body::channel();
                tokio::spawn(async move {
                    use tokio::io::AsyncReadExt;
                    let mut buf = vec![0u8; 32 * 1024];
                    while let Ok(n) = far.read(&mut buf).await {
                        if n == 0 || tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                            break;
                        }
                    }
                });
                let mut r = hyper::Response::new(body);
                r.headers_mut().insert(CONTENT_TYPE, stream_type(tty));
                Ok(r)
            }
        }
    }
}

fn rename(d: &Arc<Daemon>, c: &Arc<container::Ctr>, new: &str) -> Result<()> {
    let new = crate::names::validate(new)?;
    {
        let mut reg = d.registry.lock().expect("registry");
        if let Some(owner) = reg.name_owner(&new) {
            if owner == c.id {
                return Err(Error::invalid(
                    "Renaming a container with the same name as its current name",
                ));
            }
            return Err(Error::Conflict(format!(
                "Conflict. The container name \"{new}\" is already in use by container \"{owner}\". You have to remove (or rename) that container to be able to reuse that name."
            )));
        }
        reg.remove(&c.id);
        let old = c.update(|r| std::mem::replace(&mut r.name, new.clone()));
        reg.insert(c.clone());
        d.events
            .container(&c.snapshot(), "rename", &[("oldName", old)]);
    }
    d.save(c)
}

async fn replay_logs<W: tokio::io::AsyncWrite + Unpin>(
    path: &std::path::Path,
    o: logs::LogOptions,
    events: tokio::sync::watch::Receiver<container::Signal>,
    w: &mut W,
) {
    use tokio::io::AsyncWriteExt;
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let p = path.to_path_buf();
    let h = tokio::spawn(async move { logs::stream(&p, o, events, tx).await });
    while let Some(b) = rx.recv().await {
        if w.write_all(&b).await.is_err() {
            break;
        }
    }
    let _ = h.await;
}

fn stream_type(tty: bool) -> HeaderValue {
    if tty {
        HeaderValue::from_static("application/vnd.docker.raw-stream")
    } else {
        HeaderValue::from_static("application/vnd.docker.multiplexed-stream")
    }
}

async fn image_route(
    d: &Arc<Daemon>,
    method: &Method,
    path: &str,
    q: &Query,
    creds: Option<berth_registry::Credentials>,
) -> Result<Resp> {
    let rest = path
        .trim_start_matches('/')
        .strip_prefix("images/")
        .unwrap_or("");
    if method == Method::GET {
        if let Some(name) = rest.strip_suffix("/json") {
            return Ok(json(200, &d.images.inspect(name).await?));
        }
        if let Some(name) = rest.strip_suffix("/get") {
            return images_save(d, vec![name.to_string()]).await;
        }
        if let Some(name) = rest.strip_suffix("/history") {
            return Ok(json(200, &d.images.history(name).await?));
        }
    } else if method == Method::POST {
        if let Some(name) = rest.strip_suffix("/push") {
            let tag = q.get("tag").unwrap_or("");
            let reference = if tag.is_empty() {
                name.to_string()
            } else {
                format!("{name}:{tag}")
            };
            return crate::distribution::push(d, reference, creds).await;
        }
        if let Some(name) = rest.strip_suffix("/tag") {
            let (repo, tag) = (q.get("repo").unwrap_or(""), q.get("tag").unwrap_or(""));
            d.images.tag(name, repo, tag).await?;
            let id = d.images.resolve(name).await.unwrap_or_default();
            let full = if tag.is_empty() {
                format!("{repo}:latest")
            } else {
                format!("{repo}:{tag}")
            };
            d.events.image("tag", &id, &full);
            return Ok(empty(201));
        }
    } else if method == Method::DELETE && !rest.is_empty() {
        let items = d
            .images
            .remove(rest, q.bool("force"), !q.bool("noprune"), in_use_fn(d))
            .await?;
        for it in &items {
            if let Some(u) = &it.untagged {
                d.events.image("untag", u, u);
            }
            if let Some(x) = &it.deleted {
                d.events.image("delete", x, x);
            }
        }
        return Ok(json(200, &items));
    }
    Ok(not_found())
}

async fn system_df(d: &Arc<Daemon>) -> Result<Resp> {
    let images = d.images.list(true, &berth_api::Filters::default()).await?;
    let recs: Vec<_> = d.all().iter().map(|c| c.snapshot()).collect();
    let vr = d.settings.data_root.join("volumes");
    let vols = crate::volumes::list(d, &berth_api::Filters::default())?;
    let uppers: Vec<_> = recs.iter().map(|r| r.layer.upper.clone()).collect();
    let vol_dirs: Vec<_> = vols
        .iter()
        .map(|v| std::path::PathBuf::from(&v.mountpoint))
        .collect();
    let (csizes, vsizes) = tokio::task::spawn_blocking(move || {
        (
            uppers.iter().map(|u| list::dir_size(u)).collect::<Vec<_>>(),
            vol_dirs
                .iter()
                .map(|v| list::dir_size(v))
                .collect::<Vec<_>>(),
        )
    })
    .await
    .map_err(|e| Error::internal(e.to_string()))?;
    let layers_size: i64 = images.iter().map(|i| i.size).sum();
    let mut image_vals = Vec::new();
    for i in &images {
        let mut v = serde_json::to_value(i).unwrap_or_default();
        let n = recs.iter().filter(|r| r.image == i.id).count();
        v["Containers"] = json!(n);
        image_vals.push(v);
    }
    let mut containers = Vec::new();
    for (r, size) in recs.iter().zip(csizes) {
        let mut s = list::summary(r, &vr);
        let base = images
            .iter()
            .find(|i| i.id == r.image)
            .map(|i| i.size)
            .unwrap_or(0);
        s.size_rw = Some(size);
        s.size_root_fs = Some(size + base);
        containers.push(s);
    }
    let mut volumes = Vec::new();
    for (v, size) in vols.iter().zip(vsizes) {
        let mut val = serde_json::to_value(v).unwrap_or_default();
        val["UsageData"] = json!({"Size": size, "RefCount": 0});
        volumes.push(val);
    }
    Ok(json(
        200,
        &json!({
            "LayersSize": layers_size,
            "Images": image_vals,
            "Containers": containers,
            "Volumes": volumes,
            "BuildCache": crate::build::df(d),
        }),
    ))
}

fn events(d: &Arc<Daemon>, q: &Query) -> Result<Resp> {
    let f = q.filters()?;
    crate::events::validate(&f)?;
    let since = logs::parse_timestamp(q.get("since").unwrap_or(""))?;
    let until = logs::parse_timestamp(q.get("until").unwrap_or(""))?;
    let nanos = |t: chrono::DateTime<chrono::Utc>| t.timestamp_nanos_opt().unwrap_or(0);
    let (since_n, until_n) = (since.map(nanos), until.map(nanos));
    let (past, mut rx) = d.events.subscribe();
    let (tx, body) = Body::channel();
    tokio::spawn(async move {
        let send = |e: &berth_api::events::Event| {
            let mut line = serde_json::to_vec(e).unwrap_or_default();
            line.push(b'\n');
            Bytes::from(line)
        };
        let mut last = 0;
        for item in past {
            last = item.0;
            let e = &item.1;
            if since_n.is_none_or(|s| e.time_nano < s) || until_n.is_some_and(|u| e.time_nano > u) {
                continue;
            }
            if crate::events::matches(&f, e) && tx.send(send(e)).await.is_err() {
                return;
            }
        }
        let deadline = until_n.map(|u| {
            let now = nanos(chrono::Utc::now());
            tokio::time::Instant::now()
                + std::time::Duration::from_nanos(u.saturating_sub(now).max(0) as u64)
        });
        loop {
            let next = async {
                match deadline {
                    Some(dl) => tokio::time::timeout_at(dl, rx.recv()).await.ok(),
                    None => Some(rx.recv().await),
                }
            };
            tokio::select! {
                r = next => match r {
                    None => return,
                    Some(Ok(item)) => {
                        if item.0 <= last {
                            continue;
                        }
                        if crate::events::matches(&f, &item.1) && tx.send(send(&item.1)).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
                    Some(Err(_)) => return,
                },
                _ = tx.closed() => return,
            }
        }
    });
    let mut r = hyper::Response::new(body);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(r)
}

async fn images_save(d: &Arc<Daemon>, names: Vec<String>) -> Result<Resp> {
    if names.is_empty() {
        return Err(Error::invalid("no image names given"));
    }
    let rx = d.images.save(names).await?;
    let mut r = hyper::Response::new(Body::Chan(rx));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
    Ok(r)
}

/// Tells the image store which container (running first) uses an image.
fn in_use_fn(d: &Arc<Daemon>) -> crate::images::InUse {
    let dd = d.clone();
    Arc::new(move |id: &str| {
        let mut found = None;
        for c in dd.all() {
            let r = c.snapshot();
            if r.image == id {
                if r.state.running {
                    return Some((r.id, true));
                }
                found.get_or_insert((r.id, false));
            }
        }
        found
    })
}

async fn containers_prune(d: &Arc<Daemon>, q: &Query) -> Result<Resp> {
    let f = q.filters()?;
    f.validate(&["label", "label!", "until"])
        .map_err(Error::Invalid)?;
    let until = list::prune_until(&f, chrono::Utc::now())?;
    let mut deleted = Vec::new();
    let mut reclaimed = 0i64;
    for c in d.all() {
        let r = c.snapshot();
        if r.state.running || r.state.restarting || !list::prune_labels_match(&f, &r.config.labels)
        {
            continue;
        }
        if let Some(u) = until {
            if crate::util::parse_time(&r.created).is_none_or(|t| t >= u) {
                continue;
            }
        }
        let upper = r.layer.upper.clone();
        let size = tokio::task::spawn_blocking(move || list::dir_size(&upper))
            .await
            .unwrap_or(0);
        if delete::remove(d, &c, false, false).await.is_ok() {
            deleted.push(r.id);
            reclaimed += size;
        }
    }
    Ok(json(
        200,
        &json!({
            "ContainersDeleted": if deleted.is_empty() { serde_json::Value::Null } else { json!(deleted) },
            "SpaceReclaimed": reclaimed
        }),
    ))
}

async fn commit(d: &Arc<Daemon>, q: &Query, req: Request<Incoming>) -> Result<Resp> {
    let key = q.get("container").unwrap_or("");
    let c = d.find(key)?;
    let changes: Vec<String> = form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .filter(|(k, _)| k == "changes")
        .map(|(_, v)| v.into_owned())
        .collect();
    let body: berth_api::container::Config = read_json(req).await?;
    let rec = c.snapshot();
    // The body overrides the container's config where it sets something.
    let mut cfg = rec.config.clone();
    if body.cmd.is_some() {
        cfg.cmd = body.cmd.clone();
    }
    if body.entrypoint.is_some() {
        cfg.entrypoint = body.entrypoint.clone();
    }
    if !body.env.is_empty() {
        cfg.env = body.env.clone();
    }
    cfg.hostname = String::new();
    let repo = q.get("repo").unwrap_or("");
    let tag = q.get("tag").unwrap_or("");
    let reference = match (repo.is_empty(), tag.is_empty()) {
        (true, _) => None,
        (false, true) => Some(repo.to_string()),
        (false, false) => Some(format!("{repo}:{tag}")),
    };
    let params = crate::images::CommitParams {
        changes,
        comment: q
            .get("comment")
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        author: q
            .get("author")
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        created_by: Some(container::merge::command_string(&rec.path, &rec.args)),
    };
    let id = d.images.commit(&rec.id, reference, cfg, params).await?;
    d.events.container(&rec, "commit", &[]);
    Ok(json(201, &json!({"Id": id})))
}

async fn images_create(d: &Arc<Daemon>, q: &Query, req: Request<Incoming>) -> Result<Resp> {
    if let Some(src) = q.get("fromSrc").filter(|s| !s.is_empty()) {
        if src != "-" {
            return Err(Error::invalid(
                "importing from a URL is not supported; send the tar as the request body (fromSrc=-)",
            ));
        }
        let repo = q.get("repo").unwrap_or("");
        let tag = q.get("tag").unwrap_or("");
        let reference = match (repo.is_empty(), tag.is_empty()) {
            (true, _) => None,
            (false, true) => Some(repo.to_string()),
            (false, false) => Some(format!("{repo}:{tag}")),
        };
        let changes: Vec<String> =
            form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                .filter(|(k, _)| k == "changes")
                .map(|(_, v)| v.into_owned())
                .collect();
        let opts = berth_image::ImportOptions {
            changes,
            message: q.get("message").map(str::to_string),
            source: Some(src.to_string()),
            architecture: None,
        };
        let name = reference.clone().unwrap_or_default();
        let out = d.images.import(req.into_body(), reference, opts).await?;
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out) {
            let id = v["status"].as_str().unwrap_or("");
            d.events.image("import", id, &name);
        }
        let mut r = hyper::Response::new(crate::http::full(out));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return Ok(r);
    }
    if let Some(img) = q.get("fromImage").filter(|s| !s.is_empty()) {
        let tag = q.get("tag").unwrap_or("");
        let reference = if tag.is_empty() || img.contains('@') {
            img.to_string()
        } else if tag.starts_with("sha256:") {
            format!("{img}@{tag}")
        } else {
            format!("{img}:{tag}")
        };
        let platform = q
            .get("platform")
            .filter(|p| !p.is_empty())
            .map(str::to_string);
        let creds = crate::distribution::credentials(req.headers().get("X-Registry-Auth"));
        return crate::distribution::pull(d, reference, platform, creds).await;
    }
    Err(Error::invalid("fromImage or fromSrc is required"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode() {
        assert_eq!(percent_decode("/images/a%2Fb:c/json"), "/images/a/b:c/json");
        assert_eq!(percent_decode("/x%"), "/x%");
        assert_eq!(percent_decode("/plain"), "/plain");
    }
}
