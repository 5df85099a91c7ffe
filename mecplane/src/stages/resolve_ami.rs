//! Stage `resolve-ami`: finds the Ubuntu AMI for the cluster's release and architecture in the
//! public SSM parameters Canonical publishes.

use super::Ports;
use crate::error::StageError;
use crate::ports::{ClusterStore, Parameters};
use crate::record::Phase;
use crate::spec::{Arch, ClusterSpec};
use crate::state::CreateState;

use super::records;

/// The stage's name in events and the record.
pub const STAGE: &str = "resolve-ami";

/// The parameter holding the AMI id: `<prefix>/<release>/stable/current/<arch>/hvm/<volume>/ami-id`.
/// Canonical publishes gp3-backed images from 23.10 on and gp2-backed ones before.
pub fn ami_parameter(prefix: &str, spec: &ClusterSpec) -> String {
    let volume = if spec.ubuntu_release.as_str() >= "23.10" {
        "ebs-gp3"
    } else {
        "ebs-gp2"
    };
    let arch = match spec.arch {
        Arch::Arm64 => "arm64",
        Arch::Amd64 => "amd64",
    };
    format!(
        "{prefix}/{}/stable/current/{arch}/hvm/{volume}/ami-id",
        spec.ubuntu_release
    )
}

/// Runs the stage.
pub async fn run<E, R: Parameters, P, S: ClusterStore>(
    ports: &Ports<'_, E, R, P, S>,
    mut state: CreateState,
) -> Result<CreateState, StageError> {
    let (params, store, config) = (ports.ssm, ports.store, ports.config);
    records::enter(store, &state.cluster_id, STAGE).await?;
    let path = ami_parameter(&config.ami_parameter_prefix, &state.spec);
    let ami = params.get(&path).await?.ok_or_else(|| {
        StageError::AmiNotFound(format!(
            "no Ubuntu {} {} image is published at {path}",
            state.spec.ubuntu_release,
            state.spec.arch.as_str()
        ))
    })?;
    records::note(
        store,
        &state.cluster_id,
        STAGE,
        Phase::Finished,
        format!(
            "Ubuntu {} {}: {ami}",
            state.spec.ubuntu_release,
            state.spec.arch.as_str()
        ),
    )
    .await?;
    state.ami_id = Some(ami);
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::{FakeCloud, FakeStore};
    use crate::stages::fixtures;

    #[tokio::test]
    async fn finds_the_image_for_release_and_arch() {
        let (cloud, store, state) = fixtures::registered(1, 0).await;
        let config = fixtures::config();
        let path = ami_parameter(&config.ami_parameter_prefix, &state.spec);
        assert_eq!(
            path,
            "/aws/service/canonical/ubuntu/server/24.04/stable/current/arm64/hvm/ebs-gp3/ami-id"
        );
        cloud.put_public(&path, "ami-0123");
        let out = run(&fixtures::ports(&cloud, &store), state).await.unwrap();
        assert_eq!(out.ami_id.as_deref(), Some("ami-0123"));
    }

    #[tokio::test]
    async fn a_missing_image_is_a_named_failure() {
        let (cloud, store, state) = fixtures::registered(1, 0).await;
        let err = run(&fixtures::ports(&cloud, &store), state)
            .await
            .unwrap_err();
        assert_eq!(err.name(), "AmiNotFound");
        let _: (&FakeCloud, &FakeStore) = (&cloud, &store);
    }
}
