//! API tokens: `STATE_DIR/api-tokens.json` holds, for each token, its name, its role and the
//! SHA-256 of the token (the token itself is printed once, when made, and kept nowhere).
//! A request's token is hashed and compared with every stored hash in constant time.
//! Failed attempts are counted per source address: after [`MAX_FAILURES`] within
//! [`FAILURE_WINDOW`] the source is refused (429) until the window ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub const TOKENS: &str = "api-tokens.json";
/// Failed attempts a source may make within [`FAILURE_WINDOW`].
pub const MAX_FAILURES: u32 = 10;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Sources tracked at once (the oldest window is forgotten first when full).
const MAX_SOURCES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Every endpoint.
    Admin,
    /// Only the calls that change nothing.
    Read,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Read => "read",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub name: String,
    pub role: Role,
    /// SHA-256 of the token, hex.
    pub sha256: String,
    /// Unix seconds.
    pub created: u64,
}

pub fn tokens_path(state_dir: &Path) -> PathBuf {
    state_dir.join(TOKENS)
}

/// The stored tokens (none when the file does not exist).
pub fn load(state_dir: &Path) -> Result<Vec<Token>, String> {
    let p = tokens_path(state_dir);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

fn save(state_dir: &Path, v: &[Token]) -> Result<(), String> {
    let p = tokens_path(state_dir);
    let body = serde_json::to_vec_pretty(v).expect("serializes");
    crate::sys::fs::write_atomic(&p, &body, 0o600).map_err(|e| format!("{}: {e}", p.display()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn hash(token: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

/// A token name: 1 to 64 of letters, digits, `-`, `_`, `.`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "`{name}`: a token name is 1 to 64 letters, digits, `-`, `_` or `.`"
        ));
    }
    Ok(())
}

/// Make a new token `name` with `role`: returns the token (shown once).
pub fn add(state_dir: &Path, name: &str, role: Role) -> Result<String, String> {
    check_name(name)?;
    let mut v = load(state_dir)?;
    if v.iter().any(|t| t.name == name) {
        return Err(format!(
            "a token named `{name}` exists (delete it first: `bulkhead api-token del {name}`)"
        ));
    }
    let mut raw = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
        .map_err(|_| "no random numbers from the system".to_string())?;
    let token = format!("bh_{}", hex(&raw));
    v.push(Token {
        name: name.to_string(),
        role,
        sha256: hash(&token),
        created: crate::supervisor::gateway::now_unix(),
    });
    save(state_dir, &v)?;
    Ok(token)
}

/// Delete the token `name`.
pub fn del(state_dir: &Path, name: &str) -> Result<(), String> {
    let mut v = load(state_dir)?;
    let n = v.len();
    v.retain(|t| t.name != name);
    if v.len() == n {
        return Err(format!("no token named `{name}`"));
    }
    save(state_dir, &v)
}

/// The stored token whose hash is the hash of `token`: every entry is compared, each in
/// constant time.
pub fn find<'a>(tokens: &'a [Token], token: &str) -> Option<&'a Token> {
    let h = hash(token);
    let mut found = None;
    for t in tokens {
        if constant_eq(t.sha256.as_bytes(), h.as_bytes()) && found.is_none() {
            found = Some(t);
        }
    }
    found
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Failed attempts per source.
pub struct Limiter {
    inner: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter {
            inner: Mutex::new(HashMap::new()),
        }
    }
}

impl Limiter {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (u32, Instant)>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Seconds until `ip` may try again, when it is refused now.
    pub fn blocked(&self, ip: IpAddr) -> Option<u64> {
        let g = self.lock();
        let (n, start) = g.get(&ip)?;
        let left = FAILURE_WINDOW.checked_sub(start.elapsed())?;
        (*n >= MAX_FAILURES).then(|| left.as_secs().max(1))
    }

    /// Count a failed attempt of `ip`: true when it is now refused.
    pub fn fail(&self, ip: IpAddr) -> bool {
        let mut g = self.lock();
        let now = Instant::now();
        if g.len() >= MAX_SOURCES && !g.contains_key(&ip) {
            g.retain(|_, (_, s)| now - *s < FAILURE_WINDOW);
            if g.len() >= MAX_SOURCES
                && let Some(oldest) = g.iter().min_by_key(|(_, (_, s))| *s).map(|(k, _)| *k)
            {
                g.remove(&oldest);
            }
        }
        let e = g.entry(ip).or_insert((0, now));
        if now - e.1 >= FAILURE_WINDOW {
            *e = (0, now);
        }
        e.0 += 1;
        e.0 == MAX_FAILURES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stored_hashed_and_found_by_value() {
        let d = tempfile::tempdir().unwrap();
        let t = add(d.path(), "ops", Role::Admin).unwrap();
        let r = add(d.path(), "grafana", Role::Read).unwrap();
        assert!(t.starts_with("bh_") && t.len() == 67);
        let text = std::fs::read_to_string(tokens_path(d.path())).unwrap();
        assert!(!text.contains(&t) && !text.contains(&r), "{text}");
        assert!(add(d.path(), "ops", Role::Read).is_err());
        assert!(add(d.path(), "bad name", Role::Read).is_err());
        let v = load(d.path()).unwrap();
        assert_eq!(find(&v, &t).unwrap().name, "ops");
        assert_eq!(find(&v, &r).unwrap().role, Role::Read);
        assert!(find(&v, "bh_nope").is_none());
        del(d.path(), "ops").unwrap();
        assert!(find(&load(d.path()).unwrap(), &t).is_none());
        assert!(del(d.path(), "ops").is_err());
    }

    #[test]
    fn a_source_is_refused_after_too_many_failures() {
        let l = Limiter::default();
        let a: IpAddr = "198.18.0.2".parse().unwrap();
        let b: IpAddr = "198.18.0.3".parse().unwrap();
        for _ in 0..MAX_FAILURES - 1 {
            assert!(!l.fail(a));
            assert!(l.blocked(a).is_none());
        }
        assert!(l.fail(a));
        assert!(l.blocked(a).is_some());
        assert!(l.blocked(b).is_none());
    }
}
