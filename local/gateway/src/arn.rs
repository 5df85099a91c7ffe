//! Lambda function references: the `FunctionName` of the Invoke API (a name, a partial ARN
//! `123456789012:function:name` or a full ARN `arn:aws:lambda:<region>:<account>:function:name`,
//! each with an optional `:qualifier`) and the ARNs the gateway reports.

/// A parsed `FunctionName` path parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRef {
    /// The function's name.
    pub name: String,
    /// The qualifier written in the ARN (`$LATEST`, a version or an alias), if any.
    pub qualifier: Option<String>,
    /// The account written in the ARN, if any.
    pub account: Option<String>,
    /// The region written in a full ARN, if any.
    pub region: Option<String>,
}

/// Why a `FunctionName` could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid function name or ARN: {0}")]
pub struct InvalidFunctionName(pub String);

/// The characters Lambda accepts in a function name.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn valid_qualifier(q: &str) -> bool {
    !q.is_empty()
        && q.len() <= 128
        && (q == "$LATEST"
            || q.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
}

impl FunctionRef {
    /// Parses a function name, partial ARN or full ARN.
    pub fn parse(input: &str) -> Result<Self, InvalidFunctionName> {
        let bad = || InvalidFunctionName(input.to_string());
        let parts: Vec<&str> = input.split(':').collect();
        let (name, qualifier, account, region) = match parts.as_slice() {
            [name] => (*name, None, None, None),
            [name, qualifier] => (*name, Some(*qualifier), None, None),
            [account, "function", name] => (*name, None, Some(*account), None),
            [account, "function", name, qualifier] => {
                (*name, Some(*qualifier), Some(*account), None)
            }
            ["arn", partition, "lambda", region, account, "function", rest @ ..]
                if partition.starts_with("aws") && (rest.len() == 1 || rest.len() == 2) =>
            {
                (rest[0], rest.get(1).copied(), Some(*account), Some(*region))
            }
            _ => return Err(bad()),
        };
        if !valid_name(name) {
            return Err(bad());
        }
        if let Some(q) = qualifier {
            if !valid_qualifier(q) {
                return Err(bad());
            }
        }
        if let Some(a) = account {
            if a.len() != 12 || !a.chars().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
        }
        Ok(Self {
            name: name.to_string(),
            qualifier: qualifier.map(str::to_string),
            account: account.map(str::to_string),
            region: region.filter(|r| !r.is_empty()).map(str::to_string),
        })
    }
}

/// `arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]`.
pub fn function_arn(region: &str, account: &str, name: &str, qualifier: Option<&str>) -> String {
    match qualifier {
        Some(q) => format!("arn:aws:lambda:{region}:{account}:function:{name}:{q}"),
        None => format!("arn:aws:lambda:{region}:{account}:function:{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, q: Option<&str>, a: Option<&str>, reg: Option<&str>) -> FunctionRef {
        FunctionRef {
            name: name.into(),
            qualifier: q.map(Into::into),
            account: a.map(Into::into),
            region: reg.map(Into::into),
        }
    }

    #[test]
    fn plain_name() {
        assert_eq!(
            FunctionRef::parse("register").unwrap(),
            r("register", None, None, None)
        );
        assert_eq!(
            FunctionRef::parse("resolve-ami").unwrap(),
            r("resolve-ami", None, None, None)
        );
    }

    #[test]
    fn name_with_qualifier() {
        assert_eq!(
            FunctionRef::parse("register:$LATEST").unwrap(),
            r("register", Some("$LATEST"), None, None)
        );
        assert_eq!(
            FunctionRef::parse("register:live").unwrap(),
            r("register", Some("live"), None, None)
        );
    }

    #[test]
    fn partial_arn() {
        assert_eq!(
            FunctionRef::parse("123456789012:function:api").unwrap(),
            r("api", None, Some("123456789012"), None)
        );
        assert_eq!(
            FunctionRef::parse("123456789012:function:api:7").unwrap(),
            r("api", Some("7"), Some("123456789012"), None)
        );
    }

    #[test]
    fn full_arn() {
        assert_eq!(
            FunctionRef::parse("arn:aws:lambda:us-east-1:123456789012:function:join-nodes")
                .unwrap(),
            r("join-nodes", None, Some("123456789012"), Some("us-east-1"))
        );
        assert_eq!(
            FunctionRef::parse("arn:aws:lambda:eu-west-1:123456789012:function:verify:$LATEST")
                .unwrap(),
            r(
                "verify",
                Some("$LATEST"),
                Some("123456789012"),
                Some("eu-west-1")
            )
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "a b",
            "arn:aws:s3:::bucket",
            "arn:aws:lambda:us-east-1:123:function:x",
            "12345678901x:function:x",
            "arn:aws:lambda:us-east-1:123456789012:layer:x",
            "x:y:z",
            "arn:aws:lambda:us-east-1:123456789012:function:x:1:2",
            "name:",
        ] {
            assert!(FunctionRef::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn builds_arns() {
        assert_eq!(
            function_arn("us-east-1", "123456789012", "api", None),
            "arn:aws:lambda:us-east-1:123456789012:function:api"
        );
        assert_eq!(
            function_arn("us-east-1", "123456789012", "api", Some("$LATEST")),
            "arn:aws:lambda:us-east-1:123456789012:function:api:$LATEST"
        );
    }
}
