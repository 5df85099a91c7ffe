//! # mecplane
//!
//! The library behind every mecplane Lambda: a serverless control plane that provisions MicroK8s
//! clusters on EC2. The map:
//!
//! - Domain: [`spec`] (what a user asks for, validated), [`record`] (the cluster record, status
//!   lifecycle, nodes, events), [`state`] (the typed state passed between Step Functions states).
//! - Facts: [`resources`] (tags, names, parameter paths), [`microk8s`] (ports, channels, add-ons),
//!   [`scripts`] (the node scripts and how a command is built from them).
//! - Ports: [`ports`] — `Instances`, `SecurityGroups`, `NodeCommands`, `Parameters`, `ClusterStore`,
//!   `Executions`.
//! - Adapters: [`aws`] implements the ports with the AWS SDK (feature `aws`); [`fakes`] implements
//!   them in memory (feature `testing`).
//! - Stages: [`stages`] — one plain async function per provisioning stage, generic over the ports.
//! - Errors: [`error`] — `CloudError` from adapters, `StageError` to Step Functions.
//! - HTTP API: [`api`] — the routes of the `api` function as plain functions over the ports.
//! - Lambda wiring: [`lambda`] — configuration and the tracing set-up each binary calls once.

pub mod api;
pub mod clock;
pub mod error;
pub mod lambda;
pub mod microk8s;
pub mod ports;
pub mod record;
pub mod resources;
pub mod scripts;
pub mod spec;
pub mod stages;
pub mod state;

#[cfg(feature = "aws")]
pub mod aws;

#[cfg(any(test, feature = "testing"))]
pub mod fakes;

pub use error::{CloudError, StageError};
