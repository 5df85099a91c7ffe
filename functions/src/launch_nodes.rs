//! Lambda `launch-nodes`: [`mecplane::stages::launch_nodes`] launches the missing nodes of the role the state targets.

use mecplane::stages::launch_nodes;

use crate::runtime::{Cloud, Error};

/// Builds the clients once, then serves invocations.
pub async fn serve() -> Result<(), Error> {
    Cloud::load().await?.serve(launch_nodes::run).await
}
