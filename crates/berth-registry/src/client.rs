//! The HTTP side: registry endpoints (HTTPS, or HTTP for insecure registries), sessions per repository,
//! and authentication (anonymous, basic, bearer tokens from a `WWW-Authenticate` challenge).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::error::{Error, RegistryError, Result, parse_registry_error};

/// Docker Hub's API host, which `docker.io` references talk to.
pub const DOCKER_HUB_REGISTRY: &str = "registry-1.docker.io";

/// Settings of a [`RegistryClient`] (the daemon's `insecure-registries`, `max-concurrent-downloads`, ...).
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Insecure registries (`host:port` or `host`): HTTPS without certificate checks, then plain HTTP;
    /// 127.0.0.0/8, ::1 and `localhost` always are.
    pub insecure_registries: Vec<String>,
    /// Layers downloaded at once per pull (dockerd's default 3).
    pub max_concurrent_downloads: usize,
    /// Layers uploaded at once per push (dockerd's default 5).
    pub max_concurrent_uploads: usize,
    /// `User-Agent` header.
    pub user_agent: String,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Pull-through mirrors of Docker Hub (`registry-mirrors`, e.g. `https://mirror.example`), tried in
    /// order before `registry-1.docker.io` for `docker.io` pulls.
    pub mirrors: Vec<String>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            insecure_registries: Vec::new(),
            max_concurrent_downloads: 3,
            max_concurrent_uploads: 5,
            user_agent: concat!("berth/", env!("CARGO_PKG_VERSION")).to_string(),
            connect_timeout: Duration::from_secs(30),
            mirrors: Vec::new(),
        }
    }
}

/// Credentials for one registry, as the daemon decodes them from `X-Registry-Auth`.
#[derive(Clone, Default, Deserialize)]
pub struct Credentials {
    /// User name.
    #[serde(default)]
    pub username: String,
    /// Password.
    #[serde(default)]
    pub password: String,
    /// A bearer token to send as is (`registrytoken`).
    #[serde(default, rename = "registrytoken")]
    pub registry_token: Option<String>,
    /// An OAuth2 refresh token from `docker login` (`identitytoken`), exchanged at the token endpoint.
    #[serde(default, rename = "identitytoken")]
    pub identity_token: Option<String>,
}

/// `X-Registry-Auth`'s JSON (Docker's `AuthConfig`).
#[derive(Deserialize)]
struct AuthConfig {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    auth: String,
    #[serde(default, rename = "identitytoken")]
    identity_token: String,
    #[serde(default, rename = "registrytoken")]
    registry_token: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// User name and password.
    pub fn basic(username: &str, password: &str) -> Self {
        Credentials {
            username: username.into(),
            password: password.into(),
            registry_token: None,
            identity_token: None,
        }
    }

    /// Decodes an `X-Registry-Auth` header: base64url (padded or not, or standard) JSON with
    /// `username`/`password`, or `auth` (base64 `user:pass`), `identitytoken`, `registrytoken`.
    /// An empty header or `{}` is anonymous (`None`). Errors: InvalidArgument.
    pub fn from_registry_auth(header: &str) -> Result<Option<Credentials>> {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
        let h = header.trim();
        if h.is_empty() {
            return Ok(None);
        }
        let raw = URL_SAFE
            .decode(h)
            .or_else(|_| URL_SAFE_NO_PAD.decode(h))
            .or_else(|_| STANDARD.decode(h))
            .map_err(|e| Error::InvalidArgument(format!("invalid X-Registry-Auth header: {e}")))?;
        let a: AuthConfig = serde_json::from_slice(&raw)
            .map_err(|e| Error::InvalidArgument(format!("invalid X-Registry-Auth header: {e}")))?;
        let (mut username, mut password) = (a.username, a.password);
        if username.is_empty() && password.is_empty() && !a.auth.is_empty() {
            let pair = STANDARD
                .decode(a.auth.trim())
                .map_err(|e| Error::InvalidArgument(format!("invalid auth field: {e}")))?;
            let pair = String::from_utf8_lossy(&pair).into_owned();
            let (u, p) = pair.split_once(':').unwrap_or((&pair, ""));
            username = u.to_string();
            password = p.to_string();
        }
        let c = Credentials {
            username,
            password,
            registry_token: Some(a.registry_token).filter(|t| !t.is_empty()),
            identity_token: Some(a.identity_token).filter(|t| !t.is_empty()),
        };
        if !c.has_basic() && c.registry_token.is_none() && c.identity_token.is_none() {
            return Ok(None);
        }
        Ok(Some(c))
    }

    fn has_basic(&self) -> bool {
        !self.username.is_empty() || !self.password.is_empty()
    }

    fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// A registry client (cheap to clone; share one per daemon). Pull and push live in `pull.rs`/`push.rs`.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    pub(crate) http: reqwest::Client,
    /// For HTTPS to insecure registries: certificates not verified (as dockerd).
    http_insecure: reqwest::Client,
    pub(crate) cfg: RegistryConfig,
}

impl RegistryClient {
    /// A client with these settings (rustls with the webpki roots; no OpenSSL).
    pub fn new(cfg: RegistryConfig) -> Result<RegistryClient> {
        let build = |insecure: bool| {
            reqwest::Client::builder()
                .user_agent(cfg.user_agent.clone())
                .connect_timeout(cfg.connect_timeout)
                .danger_accept_invalid_certs(insecure)
                .build()
                .map_err(|e| Error::Internal(format!("http client: {e}")))
        };
        Ok(RegistryClient {
            http: build(false)?,
            http_insecure: build(true)?,
            cfg,
        })
    }

    /// True if `domain` is an insecure registry: HTTPS without certificate checks, else plain HTTP.
    pub fn is_insecure(&self, domain: &str) -> bool {
        let host = host_of(domain);
        if host == "localhost" {
            return true;
        }
        if let Ok(ip) = host.parse::<IpAddr>()
            && ip.is_loopback()
        {
            return true;
        }
        self.cfg
            .insecure_registries
            .iter()
            .any(|r| r == domain || r == host)
    }

    /// The base URLs tried for a reference's domain, in order (`docker.io` → `https://registry-1.docker.io`;
    /// an insecure registry: HTTPS, then HTTP).
    pub fn endpoints(&self, domain: &str) -> Vec<String> {
        let host = if domain == "docker.io" {
            DOCKER_HUB_REGISTRY
        } else {
            domain
        };
        if self.is_insecure(domain) {
            vec![format!("https://{host}"), format!("http://{host}")]
        } else {
            vec![format!("https://{host}")]
        }
    }

    /// A session against one base URL (no request sent yet).
    pub(crate) fn session_at(
        &self,
        base: &str,
        path: &str,
        actions: &str,
        creds: Option<&Credentials>,
    ) -> Session {
        let host = base.split_once("://").map_or(base, |(_, h)| h);
        let http = if base.starts_with("https://") && self.is_insecure(host) {
            self.http_insecure.clone()
        } else {
            self.http.clone()
        };
        Session {
            http,
            base: base.to_string(),
            path: path.to_string(),
            scopes: vec![format!("repository:{path}:{actions}")],
            creds: creds.cloned(),
            auth: Mutex::new(None),
        }
    }

    /// Opens an authenticated session to a repository on the first endpoint that answers (`GET /v2/`),
    /// asking for `actions` on it and `pull` on `extra_repos` (mount sources).
    pub(crate) async fn open_session(
        &self,
        domain: &str,
        path: &str,
        actions: &str,
        extra_repos: &[String],
        creds: Option<&Credentials>,
    ) -> Result<Session> {
        let endpoints = self.endpoints(domain);
        let mut last = None;
        for (i, base) in endpoints.iter().enumerate() {
            let mut s = self.session_at(base, path, actions, creds);
            for r in extra_repos {
                s.add_scope(format!("repository:{r}:pull"));
            }
            match s.ping().await {
                Ok(()) => return Ok(s),
                Err(e @ Error::Unavailable(_)) if i + 1 < endpoints.len() => {
                    tracing::debug!("{base}: {e}; trying the next endpoint");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Internal(format!("no endpoint for {domain}"))))
    }
}

/// `host` of `host:port` (IPv6 in brackets kept bare).
fn host_of(domain: &str) -> &str {
    if let Some(rest) = domain.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match domain.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => domain,
    }
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

/// Parses `Bearer realm="https://auth",service="registry",scope="repository:x:pull"` (or `Basic realm=..`).
pub(crate) fn parse_challenge(h: &str) -> Option<Challenge> {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = BTreeMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (key, after) = s.split_once('=')?;
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, rest) = if let Some(q) = after.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = q.char_indices();
            let mut end = q.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            out.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => out.push(c),
                }
            }
            (out, &q[end.min(q.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.insert(key, value);
        s = rest.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: String,
    #[serde(default)]
    access_token: String,
}

/// Requests to one repository of one registry, carrying the credentials the registry asked for.
#[derive(Debug)]
pub(crate) struct Session {
    pub http: reqwest::Client,
    pub base: String,
    pub path: String,
    pub scopes: Vec<String>,
    creds: Option<Credentials>,
    auth: Mutex<Option<String>>,
}

/// A request failed at the transport level: `Get "http://...": <cause>` as Go prints it.
pub(crate) fn transport_error(method: &Method, url: &str, e: reqwest::Error) -> Error {
    let mut cause = e.to_string();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(&e);
    while let Some(s) = src {
        cause = s.to_string();
        src = s.source();
    }
    let m = method.as_str();
    let m = format!("{}{}", &m[..1], m[1..].to_lowercase());
    Error::Unavailable(format!("{m} \"{url}\": {cause}"))
}

impl Session {
    /// `<base>/v2/<path>/<rest>`.
    pub fn url(&self, rest: &str) -> String {
        format!("{}/v2/{}/{}", self.base, self.path, rest)
    }

    /// An absolute URL from a `Location` header (which may be relative).
    pub fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            format!("{}/{location}", self.base)
        }
    }

    /// The `repository:<path>:pull` scope of another repository on this registry (for mounts).
    pub fn add_scope(&mut self, scope: String) {
        if !self.scopes.contains(&scope) {
            self.scopes.push(scope);
        }
    }

    /// The `Authorization` header in use, for requests that cannot be retried (streamed bodies).
    pub async fn auth_headers(&self) -> reqwest::header::HeaderMap {
        let mut h = reqwest::header::HeaderMap::new();
        if let Some(v) = self.auth.lock().await.as_deref()
            && let Ok(v) = HeaderValue::from_str(v)
        {
            h.insert(AUTHORIZATION, v);
        }
        h
    }

    /// Authenticates up front: `GET /v2/` and answer its challenge, if any.
    pub async fn ping(&self) -> Result<()> {
        let url = format!("{}/v2/", self.base);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| transport_error(&Method::GET, &url, e))?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            self.answer(&resp, false).await?;
        }
        Ok(())
    }

    /// Sends a request built by `build` (called again for the one retry after a 401 challenge).
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        build: &(dyn Fn(RequestBuilder) -> RequestBuilder + Send + Sync),
    ) -> Result<Response> {
        for attempt in 0..2 {
            let mut req = build(self.http.request(method.clone(), url));
            if let Some(h) = self.auth.lock().await.clone() {
                req = req.header(AUTHORIZATION, h);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| transport_error(&method, url, e))?;
            if resp.status() == StatusCode::UNAUTHORIZED
                && attempt == 0
                && self.answer(&resp, true).await?
            {
                continue;
            }
            return Ok(resp);
        }
        unreachable!("the loop returns")
    }

    /// Answers a 401's challenge; returns false if there is nothing new to try.
    async fn answer(&self, resp: &Response, retrying: bool) -> Result<bool> {
        let Some(ch) = resp
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(parse_challenge)
            .find(|c| c.scheme == "bearer" || c.scheme == "basic")
        else {
            return Ok(false);
        };
        let header = match ch.scheme.as_str() {
            "basic" => match &self.creds {
                Some(c) if c.has_basic() => c.basic_header(),
                _ => return Ok(false),
            },
            _ => {
                if let Some(t) = self.creds.as_ref().and_then(|c| c.registry_token.clone()) {
                    format!("Bearer {t}")
                } else {
                    let mut scopes = self.scopes.clone();
                    if retrying
                        && let Some(s) = ch.params.get("scope")
                        && !scopes.contains(s)
                    {
                        scopes.push(s.clone());
                    }
                    format!("Bearer {}", self.fetch_token(&ch, &scopes).await?)
                }
            }
        };
        let mut auth = self.auth.lock().await;
        if retrying && auth.as_deref() == Some(header.as_str()) {
            return Ok(false);
        }
        *auth = Some(header);
        Ok(true)
    }

    /// `GET realm?service=..&scope=..` with basic credentials if any; returns the token.
    async fn fetch_token(&self, ch: &Challenge, scopes: &[String]) -> Result<String> {
        let realm = ch
            .params
            .get("realm")
            .ok_or_else(|| Error::Unavailable("bearer challenge without realm".into()))?;
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(s) = ch.params.get("service") {
            query.push(("service", s));
        }
        for s in scopes {
            query.push(("scope", s));
        }
        let mut req = self.http.get(realm).query(&query);
        if let Some(refresh) = self.creds.as_ref().and_then(|c| c.identity_token.clone()) {
            let scope = scopes.join(" ");
            let service = ch.params.get("service").cloned().unwrap_or_default();
            let form = [
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.as_str()),
                ("service", service.as_str()),
                ("scope", scope.as_str()),
                ("client_id", "docker"),
            ];
            req = self.http.post(realm).form(&form);
        } else if let Some(c) = self.creds.as_ref().filter(|c| c.has_basic()) {
            req = req.header(
                AUTHORIZATION,
                HeaderValue::from_str(&c.basic_header())
                    .map_err(|e| Error::InvalidArgument(e.to_string()))?,
            );
        }
        let resp = req
            .send()
            .await
            .map_err(|e| transport_error(&Method::GET, realm, e))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| transport_error(&Method::GET, realm, e))?;
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let e = parse_registry_error(status.as_u16(), &body);
            return Err(Error::Unauthorized(
                if e.code == "UNAUTHORIZED" || e.code == "DENIED" {
                    e.render()
                } else {
                    "unauthorized: incorrect username or password".into()
                },
            ));
        }
        if !status.is_success() {
            return Err(Error::Unavailable(format!(
                "token endpoint {realm} answered {status}"
            )));
        }
        let t: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| Error::Unavailable(format!("invalid token response: {e}")))?;
        let token = if t.token.is_empty() {
            t.access_token
        } else {
            t.token
        };
        if token.is_empty() {
            return Err(Error::Unavailable("token endpoint sent no token".into()));
        }
        Ok(token)
    }
}

/// Reads an error response into a registry error, as distribution's `HandleErrorResponse`: a bearer
/// challenge's `error="insufficient_scope"` is `denied`, `invalid_token` is `unauthorized`.
pub(crate) async fn error_of(resp: Response) -> (u16, RegistryError) {
    let status = resp.status().as_u16();
    let oauth = (400..500).contains(&status).then(|| {
        resp.headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(parse_challenge)
            .filter(|c| c.scheme == "bearer")
            .find_map(|c| {
                let code = match c.params.get("error").map(String::as_str) {
                    Some("invalid_token") => "UNAUTHORIZED",
                    Some("insufficient_scope") => "DENIED",
                    _ => return None,
                };
                let message = c
                    .params
                    .get("error_description")
                    .cloned()
                    .unwrap_or_else(|| {
                        if code == "DENIED" {
                            "requested access to the resource is denied".into()
                        } else {
                            "authentication required".into()
                        }
                    });
                Some(RegistryError {
                    code: code.into(),
                    message,
                })
            })
    });
    let body = resp.bytes().await.unwrap_or_default();
    match oauth.flatten() {
        Some(e) => (status, e),
        None => (status, parse_registry_error(status, &body)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.docker.io/token");
        assert_eq!(c.params["service"], "registry.docker.io");
        assert_eq!(c.params["scope"], "repository:library/busybox:pull");
        let c = parse_challenge(r#"Basic realm="basic-realm""#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.params["realm"], "basic-realm");
        let c = parse_challenge(r#"Bearer realm="a\"b", error="insufficient_scope""#).unwrap();
        assert_eq!(c.params["realm"], "a\"b");
        assert_eq!(c.params["error"], "insufficient_scope");
    }

    #[test]
    fn registry_auth_header() {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE};
        let enc = |s: &str| URL_SAFE.encode(s);
        assert!(Credentials::from_registry_auth("").unwrap().is_none());
        assert!(
            Credentials::from_registry_auth(&enc("{}"))
                .unwrap()
                .is_none()
        );
        let c = Credentials::from_registry_auth(&enc(
            r#"{"username":"u","password":"p?>","serveraddress":"127.0.0.1:5000"}"#,
        ))
        .unwrap()
        .unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p?>"));
        let auth = STANDARD.encode("bob:pa:ss");
        let c = Credentials::from_registry_auth(&enc(&format!(r#"{{"auth":"{auth}"}}"#)))
            .unwrap()
            .unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("bob", "pa:ss"));
        let c = Credentials::from_registry_auth(&STANDARD.encode(r#"{"identitytoken":"t"}"#))
            .unwrap()
            .unwrap();
        assert_eq!(c.identity_token.as_deref(), Some("t"));
        assert!(format!("{c:?}").contains("redacted"));
        assert_eq!(
            Credentials::from_registry_auth("!!!").unwrap_err().kind(),
            crate::ErrorKind::InvalidArgument
        );
    }

    #[test]
    fn endpoints() {
        let c = RegistryClient::new(RegistryConfig {
            insecure_registries: vec!["myreg:5000".into(), "other".into()],
            ..Default::default()
        })
        .unwrap();
        let last = |d: &str| c.endpoints(d).last().cloned().unwrap();
        assert_eq!(
            c.endpoints("docker.io"),
            vec!["https://registry-1.docker.io"]
        );
        assert_eq!(
            c.endpoints("127.0.0.1:5000"),
            vec!["https://127.0.0.1:5000", "http://127.0.0.1:5000"]
        );
        assert_eq!(last("127.9.9.9"), "http://127.9.9.9");
        assert_eq!(last("localhost:5000"), "http://localhost:5000");
        assert_eq!(last("[::1]:5000"), "http://[::1]:5000");
        assert_eq!(last("myreg:5000"), "http://myreg:5000");
        assert_eq!(last("other:443"), "http://other:443");
        assert_eq!(c.endpoints("quay.io"), vec!["https://quay.io"]);
    }
}
