//! Lambda `delete-parameters`: [`mecplane::stages::delete_parameters`] removes the cluster's parameters (join token, kubeconfig).

use mecplane::stages::delete_parameters;

use crate::runtime::{Cloud, Error};

/// Builds the clients once, then serves invocations.
pub async fn serve() -> Result<(), Error> {
    Cloud::load().await?.serve(delete_parameters::run).await
}
