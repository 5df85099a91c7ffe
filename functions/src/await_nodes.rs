//! Lambda `await-nodes`: [`mecplane::stages::await_nodes`] one poll of the launched nodes: running, with the SSM agent online.

use mecplane::stages::await_nodes;

use crate::runtime::{Cloud, Error};

/// Builds the clients once, then serves invocations.
pub async fn serve() -> Result<(), Error> {
    Cloud::load().await?.serve(await_nodes::run).await
}
