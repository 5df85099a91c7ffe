//! Stage `register`: validates the execution input and registers the cluster record in `CREATING`.
//!
//! Two ways in: the API registered the record already and passes its id (the stage checks it and
//! binds the execution to it), or a person started the machine with just a spec (the stage
//! validates it and registers the record under an id derived from the execution ARN, so a retry
//! finds the record it wrote). A name held by another cluster fails with `NameTaken` and leaves
//! the other cluster untouched.

use super::Ports;
use crate::error::StageError;
use crate::ports::ClusterStore;
use crate::record::{ClusterRecord, Phase, Status};
use crate::resources;
use crate::state::{CreateInput, CreateState, RegisterEvent};

use super::records;

/// The stage's name in events and the record.
pub const STAGE: &str = "register";

/// Runs the stage.
pub async fn run<E, R, P, S: ClusterStore>(
    ports: &Ports<'_, E, R, P, S>,
    event: RegisterEvent,
) -> Result<CreateState, StageError> {
    let (store, policy) = (ports.store, &ports.config.policy);
    match CreateInput::parse(&event.input)? {
        CreateInput::Registered {
            cluster_id, timing, ..
        } => {
            let record = records::modify(store, &cluster_id, |r| {
                if r.status != Status::Creating {
                    return Err(StageError::InvalidState(format!(
                        "cluster {} is {}, not CREATING",
                        r.id, r.status
                    )));
                }
                if let Some(owner) = &r.execution_arn {
                    if owner != &event.execution_arn {
                        return Err(StageError::InvalidState(format!(
                            "cluster {} is being created by {owner}",
                            r.id
                        )));
                    }
                }
                let changed = r.execution_arn.is_none();
                r.execution_arn = Some(event.execution_arn.clone());
                Ok(changed)
            })
            .await?;
            records::enter(store, &record.id, STAGE).await?;
            records::note(
                store,
                &record.id,
                STAGE,
                Phase::Finished,
                "registered by the API",
            )
            .await?;
            // The stored spec is authoritative: it is what the user was shown.
            Ok(CreateState::new(record.id, record.spec, timing))
        }
        CreateInput::Request { spec, timing } => {
            let spec = spec.validate(policy)?;
            let cluster_id = resources::cluster_id_from_seed(&event.execution_arn);
            let record = ClusterRecord::new(
                cluster_id.clone(),
                spec.clone(),
                Some(event.execution_arn.clone()),
            );
            if !store.create(&record).await? {
                match store.find_by_name(&spec.name).await? {
                    Some(existing) if existing.id == cluster_id => {}
                    _ => return Err(StageError::NameTaken(spec.name)),
                }
            }
            records::enter(store, &cluster_id, STAGE).await?;
            records::note(
                store,
                &cluster_id,
                STAGE,
                Phase::Finished,
                format!("registered {} from the execution input", spec.name),
            )
            .await?;
            Ok(CreateState::new(cluster_id, spec, timing))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::FakeStore;
    use crate::spec::Policy;
    use crate::stages::fixtures;
    use serde_json::json;

    fn event(input: serde_json::Value, arn: &str) -> RegisterEvent {
        RegisterEvent {
            input,
            execution_arn: arn.into(),
        }
    }

    #[tokio::test]
    async fn console_input_registers_once_even_when_retried() {
        let store = FakeStore::default();
        let first = run(
            &fixtures::records(&store),
            event(json!({"name": "edge", "workers": 2}), "arn:e1"),
        )
        .await
        .unwrap();
        let again = run(
            &fixtures::records(&store),
            event(json!({"name": "edge", "workers": 2}), "arn:e1"),
        )
        .await
        .unwrap();
        assert_eq!(first, again);
        assert_eq!(store.records().len(), 1);
        assert_eq!(store.records()[0].status, Status::Creating);
        assert_eq!(first.spec.workers, 2);
    }

    #[tokio::test]
    async fn a_second_execution_with_the_same_name_loses() {
        let store = FakeStore::default();
        run(
            &fixtures::records(&store),
            event(json!({"name": "edge"}), "arn:e1"),
        )
        .await
        .unwrap();
        let err = run(
            &fixtures::records(&store),
            event(json!({"name": "edge"}), "arn:e2"),
        )
        .await
        .unwrap_err();
        assert_eq!(err.name(), "NameTaken");
        assert_eq!(store.records().len(), 1);
        assert_eq!(store.records()[0].execution_arn.as_deref(), Some("arn:e1"));
    }

    #[tokio::test]
    async fn bad_input_names_the_field() {
        let store = FakeStore::default();
        let err = run(
            &fixtures::records(&store),
            event(json!({"name": "edge", "workers": 99}), "arn:e1"),
        )
        .await
        .unwrap_err();
        assert_eq!(err.name(), "ValidationError");
        assert!(err.to_string().contains("workers"));
        assert!(store.records().is_empty());
    }

    #[tokio::test]
    async fn api_registered_record_is_bound_to_the_execution() {
        let store = FakeStore::default();
        let spec = crate::spec::ClusterRequest {
            name: Some("edge".into()),
            ..Default::default()
        }
        .validate(&Policy::default())
        .unwrap();
        store
            .create(&ClusterRecord::new(
                "c-0000000000000001".into(),
                spec.clone(),
                None,
            ))
            .await
            .unwrap();
        let input = json!({"cluster_id": "c-0000000000000001", "spec": spec, "timing": {"poll_seconds": 1}});
        let state = run(&fixtures::records(&store), event(input.clone(), "arn:e1"))
            .await
            .unwrap();
        assert_eq!(state.timing.poll_seconds, 1);
        assert_eq!(store.records()[0].execution_arn.as_deref(), Some("arn:e1"));
        let err = run(&fixtures::records(&store), event(input, "arn:other"))
            .await
            .unwrap_err();
        assert_eq!(err.name(), "InvalidState");
    }
}
