//! The warm moto the tests run under (`local/moto_zygote.py`, `make test`): a stack's moto and its
//! provision.py run are forks of it, the moto with the zone catalogue's patches; a fork ends with
//! its stack, and a stack whose zygote is gone starts its own moto.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::moto::Moto;
use crate::support::stack::{repo_root, Stack, RECONCILE_OFF};

/// A zygote in `serve` mode on its own socket, logging to `log`; killed when dropped.
struct Zygote {
    child: Child,
    socket: std::path::PathBuf,
    log: std::path::PathBuf,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Zygote {
    async fn start() -> Zygote {
        let dir = std::env::temp_dir().join(format!("zygote-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("zygote dir");
        let socket = dir.join("z.sock");
        let log = dir.join("zygote.log");
        let root = repo_root();
        let child = Command::new(root.join(".venv/bin/python"))
            .arg(root.join("local/moto_zygote.py"))
            .arg("serve")
            .arg("--socket")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("zygote log"))
            .spawn()
            .expect("start local/moto_zygote.py");
        // Made before the wait, so that a panic in it still kills the zygote.
        let zygote = Zygote {
            child,
            socket,
            log,
            _dir: TempDir(dir),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !zygote.socket.exists() {
            assert!(
                Instant::now() < deadline,
                "the zygote made no socket in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        zygote
    }

    /// What the zygote forked, as its log says (`moto`, `provision`), in order.
    fn forked(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .expect("zygote log")
            .lines()
            .filter(|l| l.starts_with("moto zygote: forked "))
            .filter_map(|l| l.rsplit(" for ").next().map(str::to_string))
            .collect()
    }

    /// The zygote's live children (its forks).
    fn forks(&self) -> Vec<u32> {
        let pid = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .expect("/proc children of the zygote");
        children
            .split_whitespace()
            .map(|p| p.parse().expect("a pid"))
            .filter(|p| !is_zombie(*p))
            .collect()
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Whether moto answers DescribeAvailabilityZones with the catalogue's Boston Local Zone.
fn has_the_catalogue(moto: &Moto) -> bool {
    let (status, body) = moto.query(
        "ec2",
        &[
            ("Action", "DescribeAvailabilityZones"),
            ("Version", "2016-11-15"),
        ],
    );
    status == 200 && body.contains("us-east-1-bos-1a")
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "not within 15 s: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stacks_moto_is_a_fork_of_the_zygote_ends_with_its_stack_and_starts_alone_without_it() {
    let zygote = Zygote::start().await;
    let socket = zygote.socket.to_str().expect("a UTF-8 path").to_string();
    assert!(zygote.forks().is_empty(), "a fresh zygote has no forks");

    let moto = Moto::start_with(&[("MECPLANE_MOTO_ZYGOTE", &socket)]).await;
    let forks = zygote.forks();
    assert_eq!(forks.len(), 1, "one fork for the one stack: {forks:?}");
    assert!(
        has_the_catalogue(&moto),
        "the forked moto serves with the catalogue's patches"
    );
    // Two stacks at once get a fork each, with state of their own.
    let other = Moto::start_with(&[("MECPLANE_MOTO_ZYGOTE", &socket)]).await;
    assert_eq!(zygote.forks().len(), 2);
    moto.create_instance_profile("only-in-the-first");
    let (_, profiles) = other.query(
        "iam",
        &[
            ("Action", "ListInstanceProfiles"),
            ("Version", "2010-05-08"),
        ],
    );
    assert!(
        !profiles.contains("only-in-the-first"),
        "forks share no state: {profiles}"
    );

    drop(moto);
    drop(other);
    wait_until("the forks end with their stacks", || {
        zygote.forks().is_empty()
    })
    .await;
    assert_eq!(zygote.forked(), ["moto", "moto"]);

    // A whole stack: its moto, then its provision.py run, both forked; provisioned as without.
    let mut gateway_env = RECONCILE_OFF.to_vec();
    gateway_env.push(("MECPLANE_MOTO_ZYGOTE", &socket));
    let stack = Stack::start_with(0, &[], &gateway_env).await;
    assert_eq!(zygote.forked(), ["moto", "moto", "moto", "provision"]);
    for name in [
        "MECPLANE_TABLE",
        "MECPLANE_CREATE_STATE_MACHINE_ARN",
        "MECPLANE_DELETE_STATE_MACHINE_ARN",
    ] {
        assert!(
            stack.env.get(name).is_some_and(|v| !v.is_empty()),
            "{name} provisioned: {:?}",
            stack.env
        );
    }
    drop(stack);
    wait_until("the stack's moto ends with it", || {
        zygote.forks().is_empty()
    })
    .await;

    // No zygote behind the path (a socket file left by one that was killed): a stack still gets
    // a moto, its own.
    drop(zygote);
    let dir =
        TempDir(std::env::temp_dir().join(format!("zygote-{}", uuid::Uuid::new_v4().simple())));
    std::fs::create_dir_all(&dir.0).expect("dir");
    let stale = dir.0.join("z.sock");
    std::os::unix::net::UnixListener::bind(&stale).expect("bind, then close: a dead socket");
    let alone = Moto::start_with(&[("MECPLANE_MOTO_ZYGOTE", stale.to_str().expect("UTF-8"))]).await;
    assert!(has_the_catalogue(&alone), "a moto of its own, patched");
}
