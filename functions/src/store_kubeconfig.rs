//! Lambda `store-kubeconfig`: [`mecplane::stages::store_kubeconfig`] reads the admin kubeconfig from a control plane into a SecureString.

use mecplane::stages::store_kubeconfig;

use crate::runtime::{Cloud, Error};

/// Builds the clients once, then serves invocations.
pub async fn serve() -> Result<(), Error> {
    Cloud::load().await?.serve(store_kubeconfig::run).await
}
