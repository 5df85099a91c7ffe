//! Stage `resolve-ami`: the image the nodes boot. Either the one the spec names (`ami_id`), checked
//! before anything is made — it exists in the region, is available, fits the instance type's
//! architecture and is of an owner the deployment allows (the launch role's `ec2:Owner` would
//! refuse it later, with less to say) — or the Ubuntu AMI for the cluster's release and
//! architecture in the public SSM parameters Canonical publishes. Updates that launch nodes run it
//! again on the record's spec, so scaling and replacements boot the same image.

use super::Ports;
use crate::error::StageError;
use crate::ports::{ClusterStore, Image, Images, Parameters};
use crate::record::Phase;
use crate::spec::{Arch, ClusterSpec, ValidationError};
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

/// Whether the image the spec names may be booted: `image` is what `DescribeImages` answered for
/// it (`None`: no such image in the region), `owners` the deployment's allowed owners (empty:
/// any). A refusal names `ami_id` and says why.
pub fn check_chosen(
    spec: &ClusterSpec,
    ami_id: &str,
    image: Option<&Image>,
    owners: &[String],
) -> Result<(), ValidationError> {
    let refuse = |message: String| ValidationError {
        field: "ami_id".into(),
        message,
    };
    let image = image.ok_or_else(|| {
        refuse(format!(
            "{ami_id} does not exist in {} (or is not shared with this account)",
            spec.region
        ))
    })?;
    if image.state != "available" {
        return Err(refuse(format!(
            "{ami_id} is {}, not available",
            if image.state.is_empty() {
                "in no known state"
            } else {
                &image.state
            }
        )));
    }
    let wanted = spec.arch.ec2_name();
    if image.architecture != wanted {
        return Err(refuse(format!(
            "{ami_id} is a {} image but {} is {wanted}: choose a {wanted} image or another instance type",
            image.architecture, spec.instance_type
        )));
    }
    let owned_by =
        |o: &String| *o == image.owner_id || image.owner_alias.as_deref() == Some(o.as_str());
    if !owners.is_empty() && !owners.iter().any(owned_by) {
        return Err(refuse(format!(
            "{ami_id} is owned by {}, not by one of this deployment's AMI owners ({})",
            image.owner_id,
            owners.join(", ")
        )));
    }
    Ok(())
}

/// Runs the stage.
pub async fn run<E: Images, R: Parameters, P, S: ClusterStore>(
    ports: &Ports<'_, E, R, P, S>,
    mut state: CreateState,
) -> Result<CreateState, StageError> {
    let (params, store, config) = (ports.ssm, ports.store, ports.config);
    records::enter(store, &state.cluster_id, STAGE).await?;
    let spec = &state.spec;
    let (ami, detail) = match &spec.ami_id {
        Some(chosen) => {
            let image = ports.ec2.image(chosen).await?;
            check_chosen(spec, chosen, image.as_ref(), &config.ami_owners)?;
            let detail = format!("{chosen} as the spec names ({})", spec.arch.as_str());
            (chosen.clone(), detail)
        }
        None => {
            let path = ami_parameter(&config.ami_parameter_prefix, spec);
            let ami = params.get(&path).await?.ok_or_else(|| {
                StageError::AmiNotFound(format!(
                    "no Ubuntu {} {} image is published at {path}",
                    spec.ubuntu_release,
                    spec.arch.as_str()
                ))
            })?;
            let detail = format!(
                "Ubuntu {} {}: {ami}",
                spec.ubuntu_release,
                spec.arch.as_str()
            );
            (ami, detail)
        }
    };
    records::note(store, &state.cluster_id, STAGE, Phase::Finished, detail).await?;
    state.ami_id = Some(ami);
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StageConfig;
    use crate::fakes::{FakeCloud, FakeStore};
    use crate::stages::fixtures;

    const CHOSEN: &str = "ami-0123456789abcdef0";
    const CANONICAL: &str = "099720109477";

    fn image(architecture: &str, owner_id: &str, owner_alias: Option<&str>) -> Image {
        Image {
            image_id: CHOSEN.into(),
            architecture: architecture.into(),
            owner_id: owner_id.into(),
            owner_alias: owner_alias.map(str::to_string),
            state: "available".into(),
        }
    }

    /// A registered 1+0 arm64 cluster whose spec names [`CHOSEN`].
    async fn choosing() -> (FakeCloud, FakeStore, CreateState) {
        let (cloud, store, mut state) = fixtures::registered(1, 0).await;
        state.spec.ami_id = Some(CHOSEN.into());
        (cloud, store, state)
    }

    fn owners_config(owners: &[&str]) -> StageConfig {
        StageConfig {
            ami_owners: owners.iter().map(|o| o.to_string()).collect(),
            ..fixtures::config()
        }
    }

    async fn run_with(
        cloud: &FakeCloud,
        store: &FakeStore,
        config: &StageConfig,
        state: CreateState,
    ) -> Result<CreateState, StageError> {
        let ports = Ports {
            ec2: cloud,
            ssm: cloud,
            secrets: cloud,
            store,
            config,
        };
        run(&ports, state).await
    }

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

    #[tokio::test]
    async fn the_chosen_image_is_used_as_given_twice_over() {
        let (cloud, store, state) = choosing().await;
        // The Ubuntu parameter says otherwise: the spec's image wins, without the lookup.
        let config = owners_config(&[CANONICAL]);
        cloud.put_public(
            &ami_parameter(&config.ami_parameter_prefix, &state.spec),
            "ami-0000000000ubuntu",
        );
        cloud.add_image(image("arm64", CANONICAL, None));
        let first = run_with(&cloud, &store, &config, state.clone())
            .await
            .unwrap();
        let again = run_with(&cloud, &store, &config, first.clone())
            .await
            .unwrap();
        assert_eq!(first.ami_id.as_deref(), Some(CHOSEN));
        assert_eq!(again, first, "the same state however often it runs");
        assert_eq!(cloud.mutating_calls(), 0, "nothing made");
        let finished: Vec<String> = store
            .all_events()
            .iter()
            .filter(|e| e.stage == STAGE && e.phase == Phase::Finished)
            .map(|e| e.detail.clone())
            .collect();
        assert_eq!(finished.len(), 2);
        assert!(finished[0].contains(CHOSEN), "{finished:?}");
        // An owner named by its alias (`amazon`) is allowed too.
        cloud.add_image(image("arm64", "137112412989", Some("amazon")));
        let aliased = run_with(&cloud, &store, &owners_config(&["amazon"]), state)
            .await
            .unwrap();
        assert_eq!(aliased.ami_id.as_deref(), Some(CHOSEN));
    }

    /// Runs the stage on a chosen image and returns its refusal (as Step Functions sees it).
    async fn refusal(image: Option<Image>, owners: &[&str]) -> (StageError, FakeCloud) {
        let (cloud, store, state) = choosing().await;
        if let Some(i) = image {
            cloud.add_image(i);
        }
        let config = owners_config(owners);
        let err = run_with(&cloud, &store, &config, state.clone())
            .await
            .unwrap_err();
        let again = run_with(&cloud, &store, &config, state).await.unwrap_err();
        assert_eq!(err, again, "the same refusal twice");
        assert_eq!(
            cloud.mutating_calls(),
            0,
            "nothing made, nothing to clean up"
        );
        (err, cloud)
    }

    fn field_and_message(err: &StageError) -> (&str, &str) {
        match err {
            StageError::Validation(v) => (v.field.as_str(), v.message.as_str()),
            other => panic!("not a ValidationError: {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_unknown_image_fails_early_naming_ami_id() {
        let (err, _) = refusal(None, &[]).await;
        assert_eq!(err.name(), "ValidationError");
        let (field, message) = field_and_message(&err);
        assert_eq!(field, "ami_id");
        assert!(
            message.contains(CHOSEN) && message.contains("does not exist in us-east-1"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn an_image_of_the_wrong_architecture_is_refused() {
        let (err, _) = refusal(Some(image("x86_64", CANONICAL, None)), &[]).await;
        let (field, message) = field_and_message(&err);
        assert_eq!(field, "ami_id");
        assert!(
            message.contains("x86_64") && message.contains("t4g.medium is arm64"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn an_image_of_an_owner_not_allowed_is_refused() {
        let (err, _) = refusal(Some(image("arm64", "123456789012", None)), &[CANONICAL]).await;
        let (field, message) = field_and_message(&err);
        assert_eq!(field, "ami_id");
        assert!(
            message.contains("123456789012") && message.contains(CANONICAL),
            "{message}"
        );
    }

    /// A scale of a cluster created on its own image: the update's state comes from the record's
    /// spec, so the new worker boots that image too.
    #[tokio::test]
    async fn a_scale_launches_the_spec_image_again() {
        use crate::ports::ClusterStore;
        use crate::record::{Role, Status};
        use crate::stages::{begin_update, launch_nodes};
        let (cloud, store, state) = fixtures::online(1, 0).await;
        let id = state.cluster_id.clone();
        let mut record = store.get(&id).await.unwrap().unwrap();
        record.spec.ami_id = Some(CHOSEN.into());
        store.update(&record).await.unwrap();
        fixtures::set_status(&store, &id, Status::Active).await;
        begin_update::tests::start_update(&store, &id, 0, 1).await;
        let state = begin_update::run(&fixtures::records(&store), begin_update::tests::event(&id))
            .await
            .unwrap();
        cloud.add_image(image("arm64", CANONICAL, None));
        let ports = fixtures::ports(&cloud, &store);
        let mut state = run(&ports, state).await.unwrap();
        assert_eq!(state.ami_id.as_deref(), Some(CHOSEN));
        state.target = Some(Role::Worker);
        launch_nodes::run(&ports, state).await.unwrap();
        let worker: Vec<String> = cloud
            .live_instances()
            .iter()
            .filter(|i| i.instance.role == Some(Role::Worker))
            .map(|i| i.request.ami_id.clone())
            .collect();
        assert_eq!(worker, [CHOSEN]);
    }

    #[tokio::test]
    async fn an_image_not_available_is_refused() {
        let pending = Image {
            state: "pending".into(),
            ..image("arm64", CANONICAL, None)
        };
        let (err, _) = refusal(Some(pending), &[]).await;
        let (field, message) = field_and_message(&err);
        assert_eq!(field, "ami_id");
        assert!(message.contains("pending"), "{message}");
    }
}
