//! Who a caller is, for ownership and quotas.
//!
//! API Gateway hands the function the signer's ARN (`authorizer.iam.userArn`). For an IAM user it
//! names the user; for an assumed role it is `arn:aws:sts::<account>:assumed-role/<role>/<session>`,
//! and the session name is whatever the caller passed to `AssumeRole`. Ownership and the
//! per-principal quota key on the role ([`Principal::arn`]), so a new session name is neither a
//! new owner nor a fresh quota; the session is kept apart for the audit trail
//! (`created_by_session`). Records written before this split hold the whole session ARN in
//! `created_by`: every comparison normalizes both sides ([`same_owner`]), so they keep matching
//! their role.

/// A caller split into the principal that owns clusters and, for a role session, its session name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The owner: an assumed role without its session
    /// (`arn:aws:sts::<account>:assumed-role/<role>`); any other ARN as it is.
    pub arn: String,
    /// The session name of an assumed role (chosen by the caller: for the audit trail only).
    pub session: Option<String>,
}

/// Splits a signer's ARN into its owner and session. Pure; an ARN of another shape (an IAM user,
/// a federated user, the account root, or something unreadable) is its own owner, without a session.
pub fn of(arn: &str) -> Principal {
    let whole = || Principal {
        arn: arn.to_string(),
        session: None,
    };
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let ["arn", partition, "sts", _, account, resource] = parts.as_slice() else {
        return whole();
    };
    let Some((role, session)) = resource
        .strip_prefix("assumed-role/")
        .and_then(|rest| rest.split_once('/'))
    else {
        return whole();
    };
    if role.is_empty() || session.is_empty() {
        return whole();
    }
    Principal {
        arn: format!("arn:{partition}:sts::{account}:assumed-role/{role}"),
        session: Some(session.to_string()),
    }
}

/// Whether two signer ARNs (or a recorded `created_by` and a caller) are the same owner.
pub fn same_owner(a: &str, b: &str) -> bool {
    of(a).arn == of(b).arn
}

/// The owner a deployment setting names: an IAM role ARN (`arn:aws:iam::<account>:role/<path>/<name>`)
/// becomes the owner its sessions sign as (`arn:aws:sts::<account>:assumed-role/<name>`: a session
/// ARN carries no path); an assumed-role ARN loses its session; any other ARN (an IAM user) is
/// kept as it is.
pub fn of_setting(arn: &str) -> String {
    let arn = arn.trim();
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if let ["arn", partition, "iam", _, account, resource] = parts.as_slice() {
        if let Some(name) = resource
            .strip_prefix("role/")
            .and_then(|path| path.rsplit('/').next())
            .filter(|n| !n.is_empty())
        {
            return format!("arn:{partition}:sts::{account}:assumed-role/{name}");
        }
    }
    of(arn).arn
}

/// Whether `caller` is one of the principals a setting lists (see [`of_setting`]).
pub fn listed(setting: &[String], caller: &str) -> bool {
    let caller = of(caller).arn;
    setting.iter().any(|entry| of_setting(entry) == caller)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: &str = "arn:aws:sts::123456789012:assumed-role/Deployer/alice@example.com";
    const ROLE: &str = "arn:aws:sts::123456789012:assumed-role/Deployer";

    #[test]
    fn a_role_session_is_owned_by_its_role() {
        assert_eq!(
            of(SESSION),
            Principal {
                arn: ROLE.into(),
                session: Some("alice@example.com".into())
            }
        );
        // Another session of the same role is the same owner; another role is not.
        assert!(same_owner(
            SESSION,
            "arn:aws:sts::123456789012:assumed-role/Deployer/mallory"
        ));
        assert!(!same_owner(
            SESSION,
            "arn:aws:sts::123456789012:assumed-role/Deployer2/alice@example.com"
        ));
        assert!(!same_owner(
            SESSION,
            "arn:aws:sts::210987654321:assumed-role/Deployer/alice@example.com"
        ));
        // Other partitions too.
        assert_eq!(
            of("arn:aws-us-gov:sts::123456789012:assumed-role/R/s").arn,
            "arn:aws-us-gov:sts::123456789012:assumed-role/R"
        );
    }

    #[test]
    fn a_record_from_before_matches_its_role() {
        // `created_by` written with the whole session ARN: still the role's.
        assert!(same_owner(SESSION, ROLE));
        assert!(same_owner(
            ROLE,
            "arn:aws:sts::123456789012:assumed-role/Deployer/bob"
        ));
    }

    #[test]
    fn users_and_other_shapes_are_their_own_owner() {
        for arn in [
            "arn:aws:iam::123456789012:user/alice",
            "arn:aws:iam::123456789012:user/team/alice",
            "arn:aws:iam::123456789012:root",
            "arn:aws:sts::123456789012:federated-user/alice",
            "arn:aws:sts::123456789012:assumed-role/NoSession",
            "arn:aws:sts::123456789012:assumed-role//s",
            "not an arn",
            "",
        ] {
            assert_eq!(
                of(arn),
                Principal {
                    arn: arn.into(),
                    session: None
                },
                "{arn}"
            );
        }
        assert!(!same_owner(
            "arn:aws:iam::123456789012:user/alice",
            "arn:aws:iam::123456789012:user/bob"
        ));
    }

    #[test]
    fn settings_name_roles_users_or_sessions() {
        let setting = vec![
            "arn:aws:iam::123456789012:role/ops/Operator".to_string(),
            " arn:aws:iam::123456789012:user/carol ".to_string(),
            "arn:aws:sts::123456789012:assumed-role/Auditor/any".to_string(),
        ];
        assert!(listed(
            &setting,
            "arn:aws:sts::123456789012:assumed-role/Operator/pager"
        ));
        assert!(listed(&setting, "arn:aws:iam::123456789012:user/carol"));
        assert!(listed(
            &setting,
            "arn:aws:sts::123456789012:assumed-role/Auditor/other"
        ));
        assert!(!listed(
            &setting,
            "arn:aws:sts::123456789012:assumed-role/Deployer/Operator"
        ));
        assert!(!listed(&setting, "arn:aws:iam::123456789012:user/dave"));
        assert!(!listed(&[], "arn:aws:iam::123456789012:user/carol"));
    }
}
