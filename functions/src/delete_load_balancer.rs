//! Lambda `delete-load-balancer`: [`mecplane::stages::delete_load_balancer`] removes the cluster's API load balancer, listener and target group.

use mecplane::stages::delete_load_balancer;

use crate::runtime::{Cloud, Error};

/// Builds the clients once, then serves invocations.
pub async fn serve() -> Result<(), Error> {
    Cloud::load()
        .await?
        .serve_balanced(delete_load_balancer::run)
        .await
}
