//! Lambda `join-nodes`: [`mecplane::stages::join_nodes`] joins further control planes one at a time, or the workers (`--worker`).

use mecplane::stages::join_nodes;

use crate::runtime::{Cloud, Error};

/// Builds the clients once, then serves invocations.
pub async fn serve() -> Result<(), Error> {
    Cloud::load().await?.serve(join_nodes::run).await
}
