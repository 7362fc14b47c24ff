//! A `tracing` layer that puts Bulkhead's own log records into the event stream, so every
//! `tracing::info!` (and warn, error...) of the daemon is shipped with its fields as
//! structured data. Records of the shipping code itself (target `bulkhead::logship...`)
//! stay on the console: a target that cannot be reached must not log into itself.

use std::cell::Cell;
use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::{Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use super::{Event, Kind, Severity};

pub struct ShipLayer;

thread_local! {
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

struct Visitor {
    msg: String,
    fields: Vec<(String, String)>,
}

impl Visit for Visitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.msg.push_str(value);
        } else {
            self.fields
                .push((field.name().to_string(), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.msg, "{value:?}");
        } else {
            self.fields
                .push((field.name().to_string(), format!("{value:?}")));
        }
    }
}

pub fn severity(l: &Level) -> Severity {
    match *l {
        Level::ERROR => Severity::Error,
        Level::WARN => Severity::Warning,
        Level::INFO => Severity::Info,
        _ => Severity::Debug,
    }
}

impl<S: Subscriber> Layer<S> for ShipLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if !super::is_active() {
            return;
        }
        let meta = event.metadata();
        if meta.target().starts_with("bulkhead::logship") {
            return;
        }
        if INSIDE.with(|c| c.replace(true)) {
            return;
        }
        let mut v = Visitor {
            msg: String::new(),
            fields: Vec::new(),
        };
        event.record(&mut v);
        let mut ev = Event::new(Kind::Log, severity(meta.level()), v.msg);
        ev.fields = v.fields;
        ev.fields.push(("module".into(), meta.target().to_string()));
        super::emit(ev);
        INSIDE.with(|c| c.set(false));
    }
}
