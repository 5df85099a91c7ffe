//! Support for the mecplane end-to-end tests: `moto` (a bare moto server, for the adapter tests)
//! and `stack` (a whole local stack with the function binaries and the node simulator).

pub mod moto;
pub mod stack;
