//! Where mecctl sends its requests: the endpoint and signing region from flags, environment, a
//! config file, or — only when asked (`--local`, `--env-file`) — the local stack's env file, in
//! that order of precedence. Nothing is read from the working directory unasked.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::exit::Failure;

/// The sources, as read (each optional).
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// `--endpoint` or `MECCTL_ENDPOINT`.
    pub flag_endpoint: Option<String>,
    /// `--api-region`.
    pub flag_region: Option<String>,
    /// `AWS_REGION` / `AWS_DEFAULT_REGION`.
    pub env_region: Option<String>,
    /// The config file's `endpoint` and `region`.
    pub file: Option<FileConfig>,
    /// The local stack's env file (`KEY=VALUE` lines).
    pub local: Option<HashMap<String, String>>,
}

/// `~/.config/mecctl/config.json`.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub endpoint: Option<String>,
    pub region: Option<String>,
}

/// What mecctl talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The API's base URL, without a trailing slash.
    pub endpoint: String,
    pub region: String,
    /// The local stack's credentials, used only when the endpoint came from its env file and the
    /// environment has none.
    pub local_credentials: Option<(String, String)>,
}

impl Sources {
    /// Reads the config file, the local env file when one is named, and the environment.
    pub fn load(
        flag_endpoint: Option<String>,
        flag_region: Option<String>,
        config: Option<PathBuf>,
        env_file: Option<PathBuf>,
    ) -> Result<Sources, Failure> {
        let config = config.or_else(default_config_path);
        let file = match config {
            Some(path) if path.exists() => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| Failure::other(format!("{}: {e}", path.display())))?;
                Some(serde_json::from_str(&text).map_err(|e| {
                    Failure::other(format!("{}: not a mecctl config: {e}", path.display()))
                })?)
            }
            _ => None,
        };
        let local = match env_file {
            Some(path) => Some(read_env_file(&path)?),
            None => None,
        };
        let env_region = std::env::var("AWS_REGION")
            .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
            .ok()
            .filter(|r| !r.is_empty());
        Ok(Sources {
            flag_endpoint,
            flag_region,
            env_region,
            file,
            local,
        })
    }

    /// Applies the precedence: flag/`MECCTL_ENDPOINT` > config file > local env file.
    pub fn resolve(&self, has_env_credentials: bool) -> Result<Target, Failure> {
        let file = self.file.clone().unwrap_or_default();
        let local = self.local.clone().unwrap_or_default();
        let (endpoint, from_local) = if let Some(e) = &self.flag_endpoint {
            (e.clone(), false)
        } else if let Some(e) = &file.endpoint {
            (e.clone(), false)
        } else if let Some(e) = local.get("MECPLANE_API_URL") {
            (e.clone(), true)
        } else {
            return Err(Failure::new(
                2,
                "no endpoint: pass --endpoint, set MECCTL_ENDPOINT, write ~/.config/mecctl/config.json, or pass --local with the local stack up (make up)",
            ));
        };
        // The API answers only in the region it is deployed in: a flag names it, else an
        // execute-api URL does, else the config file, else the local stack, else AWS_REGION.
        let region = self
            .flag_region
            .clone()
            .or_else(|| region_of_endpoint(&endpoint))
            .or(file.region)
            .or_else(|| {
                from_local
                    .then(|| local.get("AWS_REGION").cloned())
                    .flatten()
            })
            .or_else(|| self.env_region.clone())
            .ok_or_else(|| Failure::new(2, "no region: pass --api-region or set AWS_REGION"))?;
        let local_credentials = match (
            from_local && !has_env_credentials,
            local.get("AWS_ACCESS_KEY_ID"),
            local.get("AWS_SECRET_ACCESS_KEY"),
        ) {
            (true, Some(id), Some(secret)) => Some((id.clone(), secret.clone())),
            _ => None,
        };
        Ok(Target {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            region,
            local_credentials,
        })
    }
}

/// `https://<id>.execute-api.<region>.amazonaws.com` names its region.
fn region_of_endpoint(endpoint: &str) -> Option<String> {
    let host = endpoint.split("://").nth(1)?.split(['/', ':']).next()?;
    let mut parts = host.split('.');
    parts.next()?;
    (parts.next()? == "execute-api").then_some(())?;
    parts.next().map(str::to_string)
}

fn default_config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("mecctl").join("config.json"))
}

/// The local stack's env file (`KEY=VALUE` lines, as `make up` writes it).
fn read_env_file(path: &Path) -> Result<HashMap<String, String>, Failure> {
    let entries = dotenvy::from_path_iter(path)
        .map_err(|e| Failure::other(format!("{}: {e}", path.display())))?;
    entries
        .map(|entry| entry.map_err(|e| Failure::other(format!("{}: {e}", path.display()))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> HashMap<String, String> {
        [
            ("MECPLANE_API_URL", "http://127.0.0.1:47500/api"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn flag_beats_config_file_beats_local_stack() {
        let mut s = Sources {
            local: Some(local()),
            ..Default::default()
        };
        let t = s.resolve(false).unwrap();
        assert_eq!(t.endpoint, "http://127.0.0.1:47500/api");
        assert_eq!(t.region, "us-east-1");
        assert_eq!(
            t.local_credentials,
            Some(("testing".into(), "testing".into()))
        );
        assert_eq!(s.resolve(true).unwrap().local_credentials, None);

        s.file = Some(FileConfig {
            endpoint: Some("https://abc.execute-api.eu-west-1.amazonaws.com/".into()),
            region: None,
        });
        let t = s.resolve(false).unwrap();
        assert_eq!(
            t.endpoint,
            "https://abc.execute-api.eu-west-1.amazonaws.com"
        );
        assert_eq!(t.local_credentials, None, "never the local keys for AWS");
        // an execute-api URL names the API's region: neither the local stack's nor
        // AWS_REGION (the user's default for other things) changes what is signed for
        assert_eq!(t.region, "eu-west-1");
        s.local = None;
        s.env_region = Some("ap-south-1".into());
        assert_eq!(s.resolve(false).unwrap().region, "eu-west-1");

        // a custom domain names no region: the file's, else AWS_REGION
        s.file = Some(FileConfig {
            endpoint: Some("https://mec.example.com".into()),
            region: Some("eu-central-1".into()),
        });
        assert_eq!(s.resolve(false).unwrap().region, "eu-central-1");
        s.file.as_mut().unwrap().region = None;
        assert_eq!(s.resolve(false).unwrap().region, "ap-south-1");
        s.flag_endpoint = Some("http://localhost:9/api".into());
        s.flag_region = Some("us-west-2".into());
        let t = s.resolve(false).unwrap();
        assert_eq!(
            (t.endpoint.as_str(), t.region.as_str()),
            ("http://localhost:9/api", "us-west-2")
        );
    }

    #[test]
    fn nothing_configured_is_a_usage_error() {
        let err = Sources::default().resolve(false).unwrap_err();
        assert_eq!(err.code, 2);
        assert!(err.message.contains("--endpoint"));
        let no_region = Sources {
            flag_endpoint: Some("http://127.0.0.1:1/api".into()),
            ..Default::default()
        };
        assert_eq!(no_region.resolve(false).unwrap_err().code, 2);
    }

    #[test]
    fn the_local_env_file_is_read_with_dotenv_rules() {
        let dir = std::env::temp_dir().join(format!("mecctl-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("local.env");
        std::fs::write(
            &path,
            "# the local stack\nMECPLANE_API_URL=http://127.0.0.1:47500/api\nexport AWS_REGION='us-east-1'\n",
        )
        .unwrap();
        let env = read_env_file(&path).unwrap();
        assert_eq!(env["MECPLANE_API_URL"], "http://127.0.0.1:47500/api");
        assert_eq!(env["AWS_REGION"], "us-east-1");
        assert!(read_env_file(&dir.join("missing.env")).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
