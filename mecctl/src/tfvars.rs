//! `mecctl create --from-tf-vars`: the move from the Akraino IEC Type 2 Terraform blueprint
//! (`src/foundation/microk8s` of akraino-edge-stack/iec). Its `variable.tf` declares
//! `aws_region`, `aws_instance` (the instance type), `aws_ami`, `aws_subnet_id` and `vpc_id`
//! (plus `access_key`/`secret_key`, which are credentials, never read here: mecctl signs with the
//! standard AWS chain). Its `main.tf` builds one master and exactly one worker, with no variable
//! for their number: `TF_VAR_worker_count` is mecplane's own (default 1, the blueprint's one
//! worker), and the README says so.
//!
//! [`spec_from_tf_vars`] reads those variables, as Terraform would from the environment, into a
//! cluster request; the command-line flags go on top.

use serde_json::{json, Map, Value};

/// The blueprint's variables, as Terraform reads them from the environment, and the request
/// field each becomes.
pub const REGION: &str = "TF_VAR_aws_region";
pub const INSTANCE_TYPE: &str = "TF_VAR_aws_instance";
pub const AMI: &str = "TF_VAR_aws_ami";
pub const SUBNET: &str = "TF_VAR_aws_subnet_id";
pub const VPC: &str = "TF_VAR_vpc_id";
/// mecplane's own: the blueprint has no worker count (it builds one worker).
pub const WORKERS: &str = "TF_VAR_worker_count";
/// The workers when [`WORKERS`] is unset: the blueprint's one.
pub const DEFAULT_WORKERS: u32 = 1;

/// The request fields that say where the nodes go: a flag naming any of them replaces the
/// variables' placement as a whole (a subnet from the command line, not the blueprint's VPC).
const PLACEMENT: &[&str] = &["subnet_id", "subnet_ids", "worker_subnet_ids", "vpc_id"];

/// The cluster request the blueprint's variables describe, with `flags` (a request built from the
/// command line alone; null fields are unset) on top: `region`, `instance_type`, `ami_id`,
/// `subnet_ids: [TF_VAR_aws_subnet_id]` — or `vpc_id` when only the VPC is given, for the API to
/// pick its subnets — and `workers`. A variable that is unset (or blank) and not given by a flag
/// either is an error naming it.
pub fn spec_from_tf_vars(
    env: &dyn Fn(&str) -> Option<String>,
    flags: &Value,
) -> Result<Value, String> {
    let var = |name: &str| {
        env(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let mut spec = Map::new();
    for (name, field) in [
        (REGION, "region"),
        (INSTANCE_TYPE, "instance_type"),
        (AMI, "ami_id"),
    ] {
        if let Some(v) = var(name) {
            spec.insert(field.into(), json!(v));
        }
    }
    match (var(SUBNET), var(VPC)) {
        // The subnet's VPC is the VPC: naming both is what the blueprint did.
        (Some(subnet), _) => {
            spec.insert("subnet_ids".into(), json!([subnet]));
        }
        (None, Some(vpc)) => {
            spec.insert("vpc_id".into(), json!(vpc));
        }
        (None, None) => {}
    }
    let workers = match var(WORKERS) {
        Some(v) => v
            .parse::<u32>()
            .map_err(|_| format!("{WORKERS} is '{v}', not a number of workers"))?,
        None => DEFAULT_WORKERS,
    };
    spec.insert("workers".into(), json!(workers));

    let flags = flags.as_object().cloned().unwrap_or_default();
    let given = |k: &str| flags.get(k).is_some_and(|v| !v.is_null());
    if PLACEMENT.iter().any(|k| given(k)) {
        for k in PLACEMENT {
            spec.remove(*k);
        }
    }
    for (k, v) in flags {
        if !v.is_null() {
            spec.insert(k, v);
        }
    }

    for (field, name, flag) in [
        ("region", REGION, "--region"),
        ("instance_type", INSTANCE_TYPE, "--instance-type"),
        ("ami_id", AMI, "--ami-id"),
    ] {
        if !spec.contains_key(field) {
            return Err(format!(
                "{name} is not set (export it as for the blueprint, or give {flag})"
            ));
        }
    }
    if !PLACEMENT.iter().any(|k| spec.contains_key(*k)) {
        return Err(format!(
            "neither {SUBNET} nor {VPC} is set (export one as for the blueprint, or give --subnet)"
        ));
    }
    Ok(Value::Object(spec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| map.get(k).cloned()
    }

    const ALL: &[(&str, &str)] = &[
        (REGION, "us-east-1"),
        (INSTANCE_TYPE, "t3.medium"),
        (AMI, "ami-0123456789abcdef0"),
        (VPC, "vpc-0123456789abcdef0"),
        (SUBNET, "subnet-0123456789abcdef0"),
    ];

    /// What `mecctl create --name edge` alone sends (every field null but the name).
    fn name_only() -> Value {
        json!({"name": "edge", "region": null, "workers": null, "ami_id": null})
    }

    #[test]
    fn every_variable_goes_into_the_spec() {
        let spec = spec_from_tf_vars(&env_of(ALL), &name_only()).unwrap();
        assert_eq!(
            spec,
            json!({
                "name": "edge",
                "region": "us-east-1",
                "instance_type": "t3.medium",
                "ami_id": "ami-0123456789abcdef0",
                "subnet_ids": ["subnet-0123456789abcdef0"],
                "workers": 1,
            })
        );
        let mut more = ALL.to_vec();
        more.push((WORKERS, " 3 "));
        let spec = spec_from_tf_vars(&env_of(&more), &name_only()).unwrap();
        assert_eq!(spec["workers"], 3);
    }

    #[test]
    fn a_vpc_without_a_subnet_is_left_to_the_api() {
        let vars: Vec<_> = ALL.iter().copied().filter(|(k, _)| *k != SUBNET).collect();
        let spec = spec_from_tf_vars(&env_of(&vars), &name_only()).unwrap();
        assert_eq!(spec["vpc_id"], "vpc-0123456789abcdef0");
        assert!(spec.get("subnet_ids").is_none(), "{spec}");
    }

    #[test]
    fn a_missing_variable_is_named() {
        for missing in [REGION, INSTANCE_TYPE, AMI] {
            let vars: Vec<_> = ALL
                .iter()
                .copied()
                .map(|(k, v)| (k, if k == missing { "  " } else { v }))
                .collect();
            let err = spec_from_tf_vars(&env_of(&vars), &name_only()).unwrap_err();
            assert!(err.starts_with(missing), "{missing}: {err}");
        }
        let vars: Vec<_> = ALL
            .iter()
            .copied()
            .filter(|(k, _)| *k != SUBNET && *k != VPC)
            .collect();
        let err = spec_from_tf_vars(&env_of(&vars), &name_only()).unwrap_err();
        assert!(err.contains(SUBNET) && err.contains(VPC), "{err}");
        let mut bad = ALL.to_vec();
        bad.push((WORKERS, "two"));
        let err = spec_from_tf_vars(&env_of(&bad), &name_only()).unwrap_err();
        assert!(err.contains(WORKERS) && err.contains("two"), "{err}");
    }

    #[test]
    fn flags_override_the_variables() {
        let flags = json!({
            "name": "edge",
            "region": "eu-west-1",
            "workers": 0,
            "ami_id": "ami-00000000000000fff",
            "subnet_ids": ["subnet-000000000000000aa", "subnet-000000000000000bb"],
            "instance_type": null,
        });
        let spec = spec_from_tf_vars(&env_of(ALL), &flags).unwrap();
        assert_eq!(
            spec,
            json!({
                "name": "edge",
                "region": "eu-west-1",
                "instance_type": "t3.medium",
                "ami_id": "ami-00000000000000fff",
                "subnet_ids": ["subnet-000000000000000aa", "subnet-000000000000000bb"],
                "workers": 0,
            })
        );
        // A flag stands in for a variable that is not set; a subnet flag replaces the VPC.
        let vars: Vec<_> = ALL
            .iter()
            .copied()
            .filter(|(k, _)| *k != AMI && *k != SUBNET)
            .collect();
        let flags = json!({"name": "edge", "ami_id": "ami-00000000000000fff", "subnet_id": "subnet-000000000000000aa"});
        let spec = spec_from_tf_vars(&env_of(&vars), &flags).unwrap();
        assert_eq!(spec["ami_id"], "ami-00000000000000fff");
        assert_eq!(spec["subnet_id"], "subnet-000000000000000aa");
        assert!(spec.get("vpc_id").is_none(), "{spec}");
    }
}
