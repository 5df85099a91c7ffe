//! Lambda `upgrade-nodes`: [`mecplane::stages::upgrade_nodes`] upgrades the nodes of a cluster one at a time: drain, refresh, uncordon.

use mecplane::stages::upgrade_nodes;

use crate::runtime::{Cloud, Error};

/// Builds the clients once, then serves invocations.
pub async fn serve() -> Result<(), Error> {
    Cloud::load().await?.serve(upgrade_nodes::run).await
}
