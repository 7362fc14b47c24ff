//! Bulkhead: a network-segmentation gateway.
//!
//! `config` (wire types) → `model` (validated) → `plan` (pure, deterministic desired state)
//! → `apply` (side effects) → `supervisor` (the daemon).

pub mod apply;
pub mod cli;
pub mod config;
pub mod diag;
pub mod lab;
pub mod model;
pub mod plan;
pub mod supervisor;
