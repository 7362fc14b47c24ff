//! Bulkhead: a network-segmentation gateway.
//!
//! `config` (wire types) → `model` (validated) → `plan` (pure, deterministic desired state)
//! → `apply` (side effects) → `supervisor` (the daemon). Beside them: `dhcp` (a sans-IO
//! DHCPv4 core, its lease store and socket layer), `lab`, `cli`, and `control` (the control
//! socket's protocol, spoken by the CLI and served by the daemon).

#![deny(unsafe_code)]

pub mod api;
pub mod apply;
pub mod cli;
pub mod config;
pub mod control;
pub mod dhcp;
pub mod dhcp6;
pub mod diag;
pub mod lab;
pub mod logship;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod ra;
pub mod supervisor;
#[allow(unsafe_code)]
pub mod sys;
pub mod upgrade;
