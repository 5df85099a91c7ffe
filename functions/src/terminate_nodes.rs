//! Lambda `terminate-nodes`: [`mecplane::stages::terminate_nodes`] terminates the cluster's instances.

use mecplane::stages::terminate_nodes;

use crate::runtime::{Cloud, Error};

/// Builds the clients once, then serves invocations.
pub async fn serve() -> Result<(), Error> {
    Cloud::load().await?.serve(terminate_nodes::run).await
}
