//! The endpoints (documented in `openapi.json` and docs/api.md). Every one needs a token
//! (`Authorization: Bearer TOKEN`, else 401); the calls that change something need an `admin`
//! token (a `read` one gets 403, recorded as an audit event). Changes go to the daemon's engine
//! as control-socket requests, so they behave exactly as `bulkhead apply/confirm/...` do, and
//! the engine records who asked. Errors are `{"error": "..."}`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{self, Role};
use super::server::{BODY_TIMEOUT, MAX_BODY};
use crate::control::Request;
use crate::supervisor::{Submit, Who};

pub struct AppState {
    pub state_dir: PathBuf,
    /// The daemon's config file (what `GET config` shows, where a confirmed apply is saved).
    pub config: PathBuf,
    submit: Submit,
    lab: Option<crate::model::LabMode>,
    limiter: auth::Limiter,
    full_logged: Mutex<Option<Instant>>,
    seq: AtomicU64,
}

impl AppState {
    pub fn new(
        state_dir: PathBuf,
        config: PathBuf,
        submit: Submit,
        lab: Option<crate::model::LabMode>,
    ) -> Arc<Self> {
        Arc::new(AppState {
            state_dir,
            config,
            submit,
            lab,
            limiter: auth::Limiter::default(),
            full_logged: Mutex::new(None),
            seq: AtomicU64::new(0),
        })
    }

    /// A connection was refused: all places taken (logged at most once a minute).
    pub fn refused_full(&self) {
        let mut g = self.full_logged.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            *g = Some(Instant::now());
            tracing::warn!(
                "management API: {} connections open: refusing new ones",
                super::server::MAX_CONNECTIONS
            );
        }
    }
}

type St = State<Arc<AppState>>;
type Peer = ConnectInfo<SocketAddr>;

/// An error answer: a status and `{"error": message, ...}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: Value,
}

impl ApiError {
    fn new(status: StatusCode, msg: impl std::fmt::Display) -> Self {
        ApiError {
            status,
            body: json!({ "error": msg.to_string() }),
        }
    }

    fn bad(msg: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, msg)
    }

    fn with(mut self, k: &str, v: Value) -> Self {
        self.body[k] = v;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

type Res<T> = Result<T, ApiError>;

/// The token of the request, checked: who it is. `change` names a changing call (an admin
/// token is needed, and a refusal is audited).
fn authorize(
    st: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    change: Option<&str>,
) -> Res<Who> {
    let ip: IpAddr = peer.ip();
    if let Some(left) = st.limiter.blocked(ip) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many failed attempts from {ip}: try again in {left} s"),
        ));
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let fail = |msg: &str| {
        if st.limiter.fail(ip) {
            tracing::warn!(source = %ip, "management API: {} failed attempts within {} s: refusing this source for a while", auth::MAX_FAILURES, auth::FAILURE_WINDOW.as_secs());
        }
        ApiError::new(StatusCode::UNAUTHORIZED, msg)
    };
    let Some(token) = token else {
        return Err(fail(
            "missing token: send `Authorization: Bearer TOKEN` (`bulkhead api-token add NAME`)",
        ));
    };
    let tokens = auth::load(&st.state_dir).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the token store: {e}"),
        )
    })?;
    let Some(t) = auth::find(&tokens, token) else {
        return Err(fail("wrong token"));
    };
    let who = Who {
        name: format!("token {}", t.name),
        via: "api",
    };
    if let Some(what) = change
        && t.role != Role::Admin
    {
        let why = format!("forbidden: token `{}` has the read role", t.name);
        crate::logship::audit_event(&who.name, who.via, what, Some(&why));
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{why}; `{what}` needs an admin token"),
        ));
    }
    Ok(who)
}

/// Run a request through the daemon's engine.
async fn call(st: &AppState, req: Request, who: Who) -> Res<Value> {
    match st.submit.call(req, who).await {
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is stopping",
        )),
        Ok(r) if r.ok => Ok(r.data),
        Ok(r) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            r.error.unwrap_or_default(),
        )),
    }
}

/// The body, at most [`MAX_BODY`] bytes, within [`BODY_TIMEOUT`].
async fn read_body(headers: &HeaderMap, body: Body) -> Res<Bytes> {
    let too_big = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {MAX_BODY} bytes"),
        )
    };
    if let Some(n) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && n > MAX_BODY as u64
    {
        return Err(too_big());
    }
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ),
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_big()),
        Ok(Err(e)) => Err(ApiError::bad(format!("reading the body: {e}"))),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

fn text(b: &Bytes) -> Res<&str> {
    std::str::from_utf8(b).map_err(|e| ApiError::bad(format!("the body is not UTF-8: {e}")))
}

/// A report's findings as JSON: file, line, column, key path, severity, message.
pub fn diagnostics(r: &crate::diag::Report) -> Value {
    let mut ds: Vec<&crate::diag::Diagnostic> = r.diagnostics.iter().collect();
    ds.sort_by_key(|d| (d.span.as_ref().map_or(0, |s| s.start), d.severity));
    Value::Array(
        ds.into_iter()
            .map(|d| {
                let (line, column) = d
                    .span
                    .as_ref()
                    .map_or((1, 1), |s| r.locator.line_col(s.start));
                json!({
                    "file": r.locator.file,
                    "line": line,
                    "column": column,
                    "path": d.path,
                    "severity": match d.severity {
                        crate::diag::Severity::Error => "error",
                        crate::diag::Severity::Warning => "warning",
                    },
                    "message": d.message,
                    "text": r.locator.render(d),
                })
            })
            .collect(),
    )
}

/// `bulkhead check` on a config text: (ok, the JSON answer).
fn check_text(st: &AppState, text: &str) -> (bool, Value) {
    let file = st.config.display().to_string();
    match crate::plan::load_str(&file, text) {
        Ok((m, warnings)) => {
            let rs = crate::plan::ruleset::build(&m);
            (
                true,
                json!({
                    "ok": true,
                    "diagnostics": diagnostics(&warnings),
                    "summary": format!(
                        "ok: {} segments, {} groups, {} rules, {} port forwards; {} firewall rules, {} set elements ({})",
                        m.segments.len(), m.groups.len(), m.rules.len(), m.forwards.len(),
                        rs.rule_count(), rs.element_count(), m.backend.name()
                    ),
                }),
            )
        }
        Err(report) => {
            let n = report.errors().count();
            (
                false,
                json!({
                    "ok": false,
                    "error": format!("{file}: {n} error{}", if n == 1 { "" } else { "s" }),
                    "diagnostics": diagnostics(&report),
                }),
            )
        }
    }
}

pub fn router(st: Arc<AppState>) -> Router {
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/leases", get(leases))
        .route("/api/v1/events", get(events))
        .route("/api/v1/config", get(config))
        .route("/api/v1/config/check", post(config_check))
        .route("/api/v1/apply", post(apply))
        .route("/api/v1/confirm", post(confirm))
        .route("/api/v1/rollback", post(rollback))
        .route("/api/v1/diff", get(diff))
        .route("/api/v1/explain", get(explain))
        .route(
            "/api/v1/sets/{group}",
            get(set_list).post(set_add).delete(set_del),
        )
        .route("/api/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(not_allowed)
        .with_state(st)
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {method} {}", uri.path()),
    )
}

async fn not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

async fn status(State(st): St, ConnectInfo(p): Peer, h: HeaderMap) -> Res<axum::Json<Value>> {
    let who = authorize(&st, p, &h, None)?;
    Ok(axum::Json(call(&st, Request::Status, who).await?))
}

#[derive(Deserialize)]
struct LeasesQ {
    segment: Option<String>,
}

async fn leases(
    State(st): St,
    ConnectInfo(p): Peer,
    h: HeaderMap,
    Query(q): Query<LeasesQ>,
) -> Res<axum::Json<Value>> {
    let who = authorize(&st, p, &h, None)?;
    Ok(axum::Json(
        call(&st, Request::Leases { segment: q.segment }, who).await?,
    ))
}

#[derive(Deserialize)]
struct EventsQ {
    follow: Option<String>,
}

async fn events(
    State(st): St,
    ConnectInfo(p): Peer,
    h: HeaderMap,
    Query(q): Query<EventsQ>,
) -> Res<Response> {
    authorize(&st, p, &h, None)?;
    let follow = matches!(q.follow.as_deref(), Some("1" | "true" | "yes"));
    let (recent, rx) = crate::logship::subscribe();
    if !follow {
        let v: Vec<&crate::logship::Event> = recent.iter().map(|e| &**e).collect();
        return Ok(axum::Json(v).into_response());
    }
    use axum::response::sse::{Event as Sse, KeepAlive};
    use futures_util::StreamExt;
    let new = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(ev) => return Some((ev, rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let s = futures_util::stream::iter(recent).chain(new).map(|ev| {
        Ok::<_, std::convert::Infallible>(
            Sse::default()
                .event(ev.kind.name())
                .id(ev.seq.to_string())
                .data(serde_json::to_string(&*ev).unwrap_or_default()),
        )
    });
    Ok(axum::response::Sse::new(s)
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn config(State(st): St, ConnectInfo(p): Peer, h: HeaderMap) -> Res<axum::Json<Value>> {
    authorize(&st, p, &h, None)?;
    let text = std::fs::read_to_string(&st.config).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{}: {e}", st.config.display()),
        )
    })?;
    Ok(axum::Json(
        json!({ "file": st.config.display().to_string(), "text": text }),
    ))
}

async fn config_check(
    State(st): St,
    ConnectInfo(p): Peer,
    h: HeaderMap,
    body: Body,
) -> Res<axum::Json<Value>> {
    authorize(&st, p, &h, None)?;
    let b = read_body(&h, body).await?;
    Ok(axum::Json(check_text(&st, text(&b)?).1))
}

#[derive(Deserialize)]
struct ApplyQ {
    confirm_within: Option<String>,
}

async fn apply(
    State(st): St,
    ConnectInfo(p): Peer,
    h: HeaderMap,
    Query(q): Query<ApplyQ>,
    body: Body,
) -> Res<axum::Json<Value>> {
    let who = authorize(&st, p, &h, Some("apply"))?;
    let confirm_within = match q.confirm_within.as_deref() {
        None => None,
        Some(s) => Some(
            crate::model::addr::parse_duration(s)
                .map_err(|e| ApiError::bad(format!("confirm_within: {e}")))?,
        ),
    };
    let b = read_body(&h, body).await?;
    let t = text(&b)?;
    let (ok, checked) = check_text(&st, t);
    if !ok {
        let msg = format!(
            "{}; nothing was applied",
            checked["error"].as_str().unwrap_or("the config has errors")
        );
        crate::logship::audit_event(&who.name, who.via, "apply", Some(&msg));
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, msg)
            .with("diagnostics", checked["diagnostics"].clone()));
    }
    // the text goes to the engine as a file, as `bulkhead setup` hands it over; once confirmed
    // it is saved as the daemon's config file
    let n = st.seq.fetch_add(1, Ordering::Relaxed);
    let file = st.state_dir.join("api").join(format!("apply-{n}.toml"));
    crate::sys::fs::write_atomic(&file, t.as_bytes(), 0o600).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{}: {e}", file.display()),
        )
    })?;
    let req = Request::Apply {
        confirm_within,
        config: Some(file.clone()),
        save: Some(st.config.clone()),
    };
    let r = call(&st, req, who).await;
    let _ = std::fs::remove_file(&file);
    Ok(axum::Json(r?))
}

async fn confirm(State(st): St, ConnectInfo(p): Peer, h: HeaderMap) -> Res<axum::Json<Value>> {
    let who = authorize(&st, p, &h, Some("confirm"))?;
    Ok(axum::Json(call(&st, Request::Confirm, who).await?))
}

async fn rollback(State(st): St, ConnectInfo(p): Peer, h: HeaderMap) -> Res<axum::Json<Value>> {
    let who = authorize(&st, p, &h, Some("rollback"))?;
    Ok(axum::Json(call(&st, Request::Rollback, who).await?))
}

async fn diff(State(st): St, ConnectInfo(p): Peer, h: HeaderMap) -> Res<axum::Json<Value>> {
    let who = authorize(&st, p, &h, None)?;
    Ok(axum::Json(call(&st, Request::Diff, who).await?))
}

#[derive(Deserialize)]
struct ExplainQ {
    from: Option<String>,
    to: Option<String>,
    proto: Option<String>,
    port: Option<String>,
}

async fn explain(
    State(st): St,
    ConnectInfo(p): Peer,
    h: HeaderMap,
    Query(q): Query<ExplainQ>,
) -> Res<axum::Json<Value>> {
    use crate::model::Proto;
    authorize(&st, p, &h, None)?;
    let addr = |k: &str, v: &Option<String>| -> Res<std::net::IpAddr> {
        let v = v
            .as_deref()
            .ok_or_else(|| ApiError::bad(format!("`{k}` is needed (an IPv4 or IPv6 address)")))?;
        v.parse()
            .map_err(|_| ApiError::bad(format!("{k}: `{v}` is not an IPv4 or IPv6 address")))
    };
    let (src, dst) = (addr("from", &q.from)?, addr("to", &q.to)?);
    if src.is_ipv4() != dst.is_ipv4() {
        return Err(ApiError::bad(
            "`from` and `to` must both be IPv4 or both IPv6",
        ));
    }
    let proto = Proto::parse(q.proto.as_deref().unwrap_or("tcp"))
        .map_err(|e| ApiError::bad(format!("proto: {e}")))?;
    if proto == Proto::Any {
        return Err(ApiError::bad("proto must be tcp, udp or icmp"));
    }
    let port = match q.port.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            s.parse::<u16>()
                .map_err(|_| ApiError::bad(format!("port: `{s}` is not a port number")))?,
        ),
    };
    if matches!(proto, Proto::Tcp | Proto::Udp) && port.is_none() {
        return Err(ApiError::bad(format!(
            "`port` is needed with proto {}",
            proto.name()
        )));
    }
    let (m, _, _) = crate::supervisor::gateway::load(&st.config, st.lab)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let rs = crate::plan::ruleset::build(&m);
    let flow = crate::plan::explain::Flow {
        src,
        dst,
        proto,
        port: if proto == Proto::Icmp { None } else { port },
    };
    let d = crate::plan::explain::explain(&m, &rs, &flow);
    Ok(axum::Json(json!({
        "flow": flow,
        "verdict": if d.allowed() { "accept" } else { "drop" },
        "decision": d,
        "text": d.describe(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Members {
    members: Vec<String>,
}

async fn members(h: &HeaderMap, body: Body) -> Res<Vec<ipnet::IpNet>> {
    let b = read_body(h, body).await?;
    let m: Members = serde_json::from_slice(&b).map_err(|e| {
        ApiError::bad(format!(
            "the body must be {{\"members\": [\"ADDR\", ...]}}: {e}"
        ))
    })?;
    if m.members.is_empty() {
        return Err(ApiError::bad("members: give at least one address"));
    }
    m.members
        .iter()
        .enumerate()
        .map(|(i, a)| {
            a.parse::<ipnet::IpNet>()
                .or_else(|_| a.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    ApiError::bad(format!(
                        "members[{i}]: `{a}` is not an IPv4 or IPv6 address or CIDR block"
                    ))
                })
        })
        .collect()
}

async fn set_list(
    State(st): St,
    ConnectInfo(p): Peer,
    h: HeaderMap,
    Path(group): Path<String>,
) -> Res<axum::Json<Value>> {
    let who = authorize(&st, p, &h, None)?;
    list_set(&st, group, who).await
}

/// The members of `group`, as `GET sets/{group}` answers (for a caller already authorized).
async fn list_set(st: &AppState, group: String, who: Who) -> Res<axum::Json<Value>> {
    let v = call(
        st,
        Request::SetList {
            group: group.clone(),
        },
        who,
    )
    .await?;
    Ok(axum::Json(json!({ "group": group, "members": v })))
}

async fn set_add(
    State(st): St,
    ConnectInfo(p): Peer,
    h: HeaderMap,
    Path(group): Path<String>,
    body: Body,
) -> Res<axum::Json<Value>> {
    change_set(st, p, h, group, body, "add").await
}

async fn set_del(
    State(st): St,
    ConnectInfo(p): Peer,
    h: HeaderMap,
    Path(group): Path<String>,
    body: Body,
) -> Res<axum::Json<Value>> {
    change_set(st, p, h, group, body, "del").await
}

/// `POST` (`verb` "add") or `DELETE` ("del") `sets/{group}`: authorized once as a change, then
/// the set's members as they now are.
async fn change_set(
    st: Arc<AppState>,
    p: SocketAddr,
    h: HeaderMap,
    group: String,
    body: Body,
    verb: &str,
) -> Res<axum::Json<Value>> {
    let who = authorize(&st, p, &h, Some(&format!("set {verb} {group}")))?;
    let addrs = members(&h, body).await?;
    let req = if verb == "add" {
        Request::SetAdd {
            group: group.clone(),
            addrs,
        }
    } else {
        Request::SetDel {
            group: group.clone(),
            addrs,
        }
    };
    call(&st, req, who.clone()).await?;
    list_set(&st, group, who).await
}

async fn openapi(State(st): St, ConnectInfo(p): Peer, h: HeaderMap) -> Res<Response> {
    authorize(&st, p, &h, None)?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response())
}

async fn metrics(State(st): St, ConnectInfo(p): Peer, h: HeaderMap) -> Res<Response> {
    let who = authorize(&st, p, &h, None)?;
    // a scraper that asks for OpenMetrics gets it; anyone else the Prometheus text 0.0.4
    let openmetrics = h
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let resp =
        st.submit.call(Request::Metrics, who).await.map_err(|_| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping")
        })?;
    let text = crate::metrics::from_response(&resp)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(if openmetrics {
        ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
    } else {
        (
            [(header::CONTENT_TYPE, crate::metrics::CLASSIC_CONTENT_TYPE)],
            crate::metrics::classic(&text),
        )
            .into_response()
    })
}
