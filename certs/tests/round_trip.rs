//! The operator's path end to end: `cohort-certs` writes a CA and two member certificates,
//! `TlsSettings::from_files` loads them, and two members connect over QUIC with them and
//! exchange a message.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use cohort_transport::{Message, Messenger, Priority, QuicConfig, Tag, TlsSettings, View, ViewId};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Greeting(String);

impl Message for Greeting {
    const TAG: Tag = Tag(0x1_0100);
}

fn run(args: &[&str]) {
    let output = Command::new(env!("CARGO_BIN_EXE_cohort-certs"))
        .args(args)
        .output()
        .expect("run cohort-certs");
    assert!(
        output.status.success(),
        "cohort-certs {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_from_the_cli_load_and_connect_two_members() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("cohort-round-trip-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let d = dir.to_str().expect("utf-8 temp path");
    run(&["ca", "--out", d, "--name", "round trip CA", "--days", "2"]);
    for name in ["one", "two"] {
        run(&[
            "member",
            "--ca-dir",
            d,
            "--name",
            name,
            "--ip",
            "127.0.0.1",
            "--days",
            "2",
        ]);
    }
    let tls = |name: &str| {
        TlsSettings::from_files(
            dir.join("ca.pem"),
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}-key.pem")),
        )
        .load()
        .unwrap_or_else(|e| panic!("files written by cohort-certs load: {e}"))
    };
    let bind = |name: &str| {
        let identity = cohort_transport::Identity::named(name);
        Messenger::bind(&identity, QuicConfig::default(), &tls(name)).expect("bind")
    };
    let (one, two) = (bind("one"), bind("two"));
    let view = View::new(
        ViewId(1),
        [one.local_member().clone(), two.local_member().clone()],
    );
    one.install_view(view.clone());
    two.install_view(view);
    let mut received = two.subscribe::<Greeting>().expect("subscribe");
    let _ = one
        .send(
            &Greeting("hello".into()),
            Priority::Normal,
            &[two.local_member().clone()],
        )
        .expect("send");
    let envelope = tokio::time::timeout(Duration::from_secs(30), received.recv())
        .await
        .expect("the greeting arrives within 30 s")
        .expect("subscription open");
    assert_eq!(envelope.message, Greeting("hello".into()));
    assert_eq!(envelope.from.name(), "one");
    one.shutdown().await;
    two.shutdown().await;
    fs::remove_dir_all(&dir).expect("clean up");
}
