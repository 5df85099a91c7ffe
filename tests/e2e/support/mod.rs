//! Support for the mecplane end-to-end tests: `moto` (a bare moto server, for the adapter tests)
//! and `stack` (a whole local stack with the function binaries and the node simulator), and `iam`
//! (the template's roles held against the calls the functions made).

pub mod iam;
pub mod moto;
pub mod stack;
