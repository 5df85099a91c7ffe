//! `bootstrap`: every mecplane Lambda in one binary, so `sam build` compiles and links once.
//!
//! Each Lambda is one small wiring file here (`api.rs`, `register.rs`, …): it builds the clients
//! it needs once per cold start and hands each event to its function in the `mecplane` library.
//! Which one a process serves comes from the function's configuration: the template's `Handler`
//! property, which Lambda passes to a custom runtime as `_HANDLER` (the local stack does the same).
//! A missing or unknown handler fails the init with a message naming the known ones.

mod activate;
mod api;
mod apply_addons;
mod await_nodes;
mod await_terminated;
mod begin_delete;
mod begin_update;
mod bootstrap;
mod delete_load_balancer;
mod delete_parameters;
mod delete_security_group;
mod fail_update;
mod finish_delete;
mod finish_update;
mod join_nodes;
mod launch_nodes;
mod load_balancer;
mod mark_failed;
mod reconcile;
mod register;
mod remove_workers;
mod resolve_ami;
mod runtime;
mod security_group;
mod store_kubeconfig;
mod terminate_nodes;
mod upgrade_nodes;
mod verify;

use std::future::Future;
use std::pin::Pin;

use runtime::Error;

/// A handler's start: builds its clients, then serves invocations until the runtime stops.
type Start = fn() -> Pin<Box<dyn Future<Output = Result<(), Error>>>>;

/// Every handler, by the name the template's `Handler` gives it.
pub const HANDLERS: &[(&str, Start)] = &[
    ("activate", || Box::pin(activate::serve())),
    ("api", || Box::pin(api::serve())),
    ("apply-addons", || Box::pin(apply_addons::serve())),
    ("await-nodes", || Box::pin(await_nodes::serve())),
    ("await-terminated", || Box::pin(await_terminated::serve())),
    ("begin-delete", || Box::pin(begin_delete::serve())),
    ("begin-update", || Box::pin(begin_update::serve())),
    ("bootstrap", || Box::pin(bootstrap::serve())),
    ("delete-load-balancer", || {
        Box::pin(delete_load_balancer::serve())
    }),
    ("delete-parameters", || Box::pin(delete_parameters::serve())),
    ("delete-security-group", || {
        Box::pin(delete_security_group::serve())
    }),
    ("fail-update", || Box::pin(fail_update::serve())),
    ("finish-delete", || Box::pin(finish_delete::serve())),
    ("finish-update", || Box::pin(finish_update::serve())),
    ("join-nodes", || Box::pin(join_nodes::serve())),
    ("launch-nodes", || Box::pin(launch_nodes::serve())),
    ("load-balancer", || Box::pin(load_balancer::serve())),
    ("mark-failed", || Box::pin(mark_failed::serve())),
    ("reconcile", || Box::pin(reconcile::serve())),
    ("register", || Box::pin(register::serve())),
    ("remove-workers", || Box::pin(remove_workers::serve())),
    ("resolve-ami", || Box::pin(resolve_ami::serve())),
    ("security-group", || Box::pin(security_group::serve())),
    ("store-kubeconfig", || Box::pin(store_kubeconfig::serve())),
    ("terminate-nodes", || Box::pin(terminate_nodes::serve())),
    ("upgrade-nodes", || Box::pin(upgrade_nodes::serve())),
    ("verify", || Box::pin(verify::serve())),
];

/// The start of the handler named `name`, or why there is none.
fn handler(name: Option<&str>) -> Result<Start, String> {
    let known = || {
        HANDLERS
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let name = name
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("_HANDLER is not set; known handlers: {}", known()))?;
    HANDLERS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, start)| *start)
        .ok_or_else(|| {
            format!(
                "unknown handler '{name}' (_HANDLER); known handlers: {}",
                known()
            )
        })
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    runtime::init_tracing();
    let start = handler(std::env::var("_HANDLER").ok().as_deref()).inspect_err(|e| {
        tracing::error!("{e}");
    })?;
    start().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_handler_is_found_and_the_names_are_unique() {
        assert!(handler(Some("register")).is_ok());
        assert!(handler(Some(" api ")).is_ok());
        let mut names: Vec<&str> = HANDLERS.iter().map(|(n, _)| *n).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), HANDLERS.len());
    }

    #[test]
    fn a_missing_or_unknown_handler_names_the_known_ones() {
        for name in [None, Some(""), Some("nope")] {
            let err = handler(name).expect_err("no handler");
            assert!(err.contains("_HANDLER"), "{err}");
            assert!(
                err.contains("api, apply-addons, await-nodes, await-terminated")
                    && err.contains("verify"),
                "{err}"
            );
        }
        assert!(handler(Some("nope"))
            .expect_err("unknown")
            .contains("'nope'"));
    }
}
