//! The end-to-end tests, one test binary: each module starts what it needs on free ports (a moto
//! server, or a whole local stack with the real `bootstrap` binary, state machines and node
//! simulator), drives it as a client would, and checks what the user sees and what is left behind.
//! `support` holds the harness they share.

mod support;

mod adapters;
mod api;
mod clusters;
mod concurrency;
mod dashboard;
mod day2;
mod edge;
mod endpoint;
mod faults;
mod idempotency;
mod mecctl;
mod moto_zygote;
mod ownership;
mod patch;
mod placement;
mod podsec;
mod reconcile;
mod replace;
mod schemathesis;
mod tokens;
mod updates;
