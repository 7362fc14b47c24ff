//! One shipped event: what happened, when, how severe, and its structured data.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Syslog severities (RFC 5424 section 6.2.1), most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Emergency = 0,
    Alert = 1,
    Critical = 2,
    Error = 3,
    Warning = 4,
    Notice = 5,
    Info = 6,
    Debug = 7,
}

impl Severity {
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn name(self) -> &'static str {
        match self {
            Severity::Emergency => "emerg",
            Severity::Alert => "alert",
            Severity::Critical => "crit",
            Severity::Error => "err",
            Severity::Warning => "warning",
            Severity::Notice => "notice",
            Severity::Info => "info",
            Severity::Debug => "debug",
        }
    }
}

/// What an event is about. Its name is the RFC 5424 MSGID and the `kind` SD parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A packet dropped by the firewall (from NFLOG).
    Drop,
    /// A packet accepted by a rule or forward with `log = true` (from NFLOG).
    Accept,
    /// A drop burst, port scan or sensitive port from one source.
    Alert,
    /// An apply (or reload, or drift repair) and its result.
    Apply,
    Rollback,
    Confirm,
    /// A link appeared, disappeared, went up or down.
    Link,
    /// A DHCP lease was bound, released, declined or expired.
    Lease,
    /// A firmware upgrade: the new slot booted and was marked good, or it failed and the
    /// box is back on the old slot.
    Upgrade,
    /// Any other record of Bulkhead's own log.
    Log,
    /// A change asked for by someone (API token, local user): who, what, the result.
    Audit,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Drop => "drop",
            Kind::Accept => "accept",
            Kind::Alert => "alert",
            Kind::Apply => "apply",
            Kind::Rollback => "rollback",
            Kind::Confirm => "confirm",
            Kind::Link => "link",
            Kind::Lease => "lease",
            Kind::Upgrade => "upgrade",
            Kind::Log => "log",
            Kind::Audit => "audit",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in this daemon's event stream (from 1), assigned when the event is emitted.
    pub seq: u64,
    /// Microseconds since the Unix epoch (UTC).
    pub time_us: u64,
    pub severity: Severity,
    pub kind: Kind,
    pub msg: String,
    /// Structured data: (name, value), in order; names are SD-PARAM names.
    pub fields: Vec<(String, String)>,
}

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Event {
    pub fn new(kind: Kind, severity: Severity, msg: impl Into<String>) -> Self {
        Event {
            seq: 0,
            time_us: now_us(),
            severity,
            kind,
            msg: msg.into(),
            fields: Vec::new(),
        }
    }

    /// Add a structured data field (builder style).
    pub fn with(mut self, name: &str, value: impl ToString) -> Self {
        self.fields.push((name.to_string(), value.to_string()));
        self
    }

    /// Add a field when there is a value.
    pub fn with_opt(self, name: &str, value: Option<impl ToString>) -> Self {
        match value {
            Some(v) => self.with(name, v),
            None => self,
        }
    }

    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// (year, month, day, hour, minute, second, microsecond) in UTC of a time in microseconds.
pub fn civil(time_us: u64) -> (i64, u32, u32, u32, u32, u32, u32) {
    let secs = (time_us / 1_000_000) as i64;
    let micros = (time_us % 1_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400) as u32;
    // Howard Hinnant's civil_from_days
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = if m <= 2 { y + 1 } else { y };
    (y, m, d, rem / 3600, rem / 60 % 60, rem % 60, micros)
}

/// RFC 3339 time with microseconds, UTC: `2026-12-02T10:14:27.123456Z`.
pub fn rfc3339(time_us: u64) -> String {
    let (y, mo, d, h, mi, s, us) = civil(time_us);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{us:06}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        // 2024-02-29T23:59:59.5Z, a leap day
        assert_eq!(
            rfc3339(1_709_251_199_500_000),
            "2024-02-29T23:59:59.500000Z"
        );
        assert_eq!(
            rfc3339(1_796_119_200_000_001),
            "2026-12-01T10:00:00.000001Z"
        );
    }
}
