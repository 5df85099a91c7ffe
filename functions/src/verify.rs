//! Lambda `verify`: [`mecplane::stages::verify`] checks that every node of the cluster is `Ready`.

use mecplane::stages::verify;

use crate::runtime::{Cloud, Error};

/// Builds the clients once, then serves invocations.
pub async fn serve() -> Result<(), Error> {
    Cloud::load().await?.serve(verify::run).await
}
