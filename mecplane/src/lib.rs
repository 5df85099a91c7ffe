//! # mecplane
//!
//! The library behind every mecplane Lambda: a serverless control plane that provisions MicroK8s
//! clusters on EC2. The map:
//!
//! - Domain: [`spec`] (what a user asks for, validated), [`record`] (the cluster record, status
//!   lifecycle, nodes, events), [`change`] (one change to a live cluster: what an update records),
//!   [`state`] (the typed state passed between Step Functions states).
//! - Facts: [`resources`] (tags, names, parameter paths), [`microk8s`] (ports, channels, add-ons),
//!   [`scripts`] (the node scripts and how a command is built from them), [`placement`] (where a
//!   cluster's nodes may go: subnets, VPC, zones, offerings).
//! - Ports: [`ports`] — `Instances`, `SecurityGroups`, `NodeCommands`, `Parameters`, `ClusterStore`,
//!   `Executions`.
//! - Adapters: [`aws`] implements the ports with the AWS SDK (feature `aws`); [`fakes`] implements
//!   them in memory (feature `testing`).
//! - Stages: [`stages`] — one plain async function per provisioning stage, generic over the ports.
//! - Errors: [`error`] — `CloudError` from adapters, `StageError` to Step Functions.
//! - HTTP API: [`api`] — the routes of the `api` function as plain functions over the ports.
//! - Fleet: [`reconcile`] — one reconcile run: observe, plan (pure), act.
//! - Settings: [`config`] — the deployment settings the stages read from the environment.
//!
//! The Lambda wiring (one small file per function, one `bootstrap` binary) lives in `functions/`;
//! feature `lambda` adds what it needs here (`StageError` as a Lambda `Diagnostic`).

pub mod api;
pub mod change;
pub mod clock;
pub mod config;
pub mod error;
pub mod microk8s;
pub mod placement;
pub mod ports;
pub mod reconcile;
pub mod record;
pub mod redact;
pub mod resources;
pub mod scripts;
pub mod sealed;
pub mod spec;
pub mod stages;
pub mod state;

#[cfg(feature = "aws")]
pub mod aws;

#[cfg(any(test, feature = "testing"))]
pub mod fakes;

pub use error::{CloudError, StageError};
