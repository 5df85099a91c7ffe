//! Lambda `apply-addons`: [`mecplane::stages::apply_addons`] disables and enables a cluster's add-ons on a control plane.

use mecplane::stages::apply_addons;

use crate::runtime::{Cloud, Error};

/// Builds the clients once, then serves invocations.
pub async fn serve() -> Result<(), Error> {
    Cloud::load().await?.serve(apply_addons::run).await
}
