//! Lambda `activate`: [`mecplane::stages::activate`] marks the cluster `ACTIVE` with its nodes and API endpoint.

use mecplane::stages::activate;

use crate::runtime::{Cloud, Error};

/// Builds the clients once, then serves invocations.
pub async fn serve() -> Result<(), Error> {
    Cloud::load().await?.serve(activate::run).await
}
