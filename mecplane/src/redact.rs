//! What an AWS error message may not carry beyond the control plane: account ids, ARNs (which name
//! roles, accounts and resources) and AWS's encoded authorization messages. Error messages reach
//! the cluster record's `failure.reason`, the API and the Step Functions execution history, which
//! more people read than may see the account's layout; they keep the error code and the sense.

/// Replaces ARNs with `<arn>`, 12-digit account ids with `<account>` and cuts an encoded
/// authorization failure message.
pub fn aws_details(text: &str) -> String {
    const ENCODED: &str = "Encoded authorization failure message:";
    let text = match text.find(ENCODED) {
        Some(at) => format!("{}{ENCODED} <cut>", &text[..at]),
        None => text.to_string(),
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find("arn:") {
        let starts_word = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_ascii_alphanumeric());
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | ')' | ']' | '>'))
            .unwrap_or(tail.len());
        if starts_word && tail[..end].matches(':').count() >= 5 {
            out.push_str("<arn>");
            rest = &tail[end..];
        } else {
            out.push_str("arn:");
            rest = &tail[4..];
        }
    }
    out.push_str(rest);
    account_ids(&out)
}

/// Runs of exactly 12 digits (an account id's shape) become `<account>`.
fn account_ids(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        if digits.len() == 12 {
            out.push_str("<account>");
        } else {
            out.push_str(digits);
        }
        digits.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            flush(&mut digits, &mut out);
            out.push(c);
        }
    }
    flush(&mut digits, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_account_ids_and_encoded_messages_go() {
        let raw = "UnauthorizedOperation: You are not authorized to perform this operation. User: \
                   arn:aws:sts::123456789012:assumed-role/mecplane-launch-nodes-Role-1AB/mecplane-launch-nodes \
                   is not authorized to perform: ec2:RunInstances on resource: \
                   arn:aws:ec2:us-east-1:123456789012:instance/*. Encoded authorization failure \
                   message: AbCdEf0123";
        let clean = aws_details(&raw.replace("failure \n", "failure "));
        assert!(!clean.contains("123456789012"), "{clean}");
        assert!(!clean.contains("assumed-role"), "{clean}");
        assert!(!clean.contains("AbCdEf0123"), "{clean}");
        assert!(
            clean.starts_with("UnauthorizedOperation: You are not authorized"),
            "{clean}"
        );
        assert!(
            clean.contains("User: <arn> is not authorized to perform: ec2:RunInstances"),
            "{clean}"
        );
        assert!(clean.contains("on resource: <arn>"), "{clean}");
    }

    #[test]
    fn stage_errors_from_aws_carry_no_arn_or_account() {
        use crate::error::{CloudError, StageError};
        let raw =
            "AccessDenied: User: arn:aws:sts::123456789012:assumed-role/r/f is not authorized";
        for e in [
            CloudError::Rejected(raw.into()),
            CloudError::Other(raw.into()),
            CloudError::Transient(raw.into()),
            CloudError::NotFound(raw.into()),
        ] {
            let shown = StageError::from(e).to_string();
            assert!(
                !shown.contains("123456789012") && !shown.contains("assumed-role"),
                "{shown}"
            );
            assert!(
                shown.contains("AccessDenied: User: <arn> is not authorized"),
                "{shown}"
            );
        }
        let step = crate::state::StepError {
            error: "States.TaskFailed".into(),
            cause: format!("{{\"errorMessage\":\"{raw}\"}}"),
        };
        assert!(!step.reason().contains("123456789012"));
    }

    #[test]
    fn the_rest_is_kept() {
        for keep in [
            "InsufficientInstanceCapacity: no t4g.medium capacity in us-east-1a",
            "instance i-0123456789abcdef0 terminated",
            "bootstrap on i-0abc failed (Failed, exit 1): microk8s status --wait-ready timed out",
            "a 13-digit 1234567890123 and an 11-digit 12345678901 stay",
            "warn: not an arn:here and yarn:aws:a:b:c:d stays",
        ] {
            assert_eq!(aws_details(keep), keep);
        }
        assert_eq!(aws_details("account 123456789012."), "account <account>.");
    }
}
