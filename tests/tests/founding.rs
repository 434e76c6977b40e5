//! Founding the cluster with real locators over loopback QUIC: a locator founds only with a
//! strict majority of its configured locators behind it, so a locator that starts (or
//! restarts) while the others are unreachable never founds a second cluster. Every wait is
//! a bounded condition.

use std::time::Duration;

use cohort_membership::{Member, MemberConfig, StartError};
use cohort_tests::{Cluster, PATIENCE, init_tracing};
use cohort_transport::{MemberKind, View};
use tokio::time::Instant;

/// The join timeout of a locator expected to give up: short, so the test is too.
const GIVE_UP: Duration = Duration::from_secs(2);

fn locator(cluster: &Cluster, i: usize) -> MemberConfig {
    cluster.config(&Cluster::locator_name(i), MemberKind::Locator)
}

/// The locators' names, by address (smallest first): the founding rule prefers the
/// smallest address, and the ports are picked at random.
fn by_address(cluster: &Cluster) -> Vec<String> {
    let mut locators: Vec<(std::net::SocketAddr, String)> = cluster
        .locator_addresses()
        .iter()
        .enumerate()
        .map(|(i, address)| (*address, Cluster::locator_name(i + 1)))
        .collect();
    locators.sort();
    locators.into_iter().map(|(_, name)| name).collect()
}

/// Starts the named locators at once and panics unless every one started.
async fn start_together(cluster: &mut Cluster, names: &[&str]) {
    let configs = names
        .iter()
        .map(|name| cluster.config(name, MemberKind::Locator))
        .collect();
    let outcomes = tokio::time::timeout(PATIENCE * 2, cluster.start_all(configs))
        .await
        .expect("the starts end within their join timeouts");
    for (name, outcome) in outcomes {
        if let Err(error) = outcome {
            panic!("{name} did not start: {error}");
        }
    }
}

/// Starts `config` (a locator that cannot justify founding) and returns its start error,
/// checking that it kept asking until its join timeout.
async fn start_refused(config: MemberConfig) -> StartError {
    let waited = config.join_timeout;
    let started = Instant::now();
    let outcome = tokio::time::timeout(waited + PATIENCE, Member::start(config))
        .await
        .expect("the start ends soon after its join timeout");
    let error = match outcome {
        Ok(member) => panic!(
            "{:?} founded a cluster alone: {}",
            member.id(),
            member.view()
        ),
        Err(error) => error,
    };
    let took = started.elapsed();
    assert!(
        took >= waited,
        "gave up after {took:?}, before its join timeout of {waited:?}: {error}"
    );
    error
}

/// The view every named node holds: one view, of exactly these nodes, with one coordinator.
async fn one_cluster(cluster: &Cluster, names: &[&str]) -> View {
    let view = cluster.agreed_view_of(names, PATIENCE).await;
    assert!(
        view.coordinator()
            .is_some_and(|c| c.kind() == MemberKind::Locator),
        "{view}"
    );
    view
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_locator_of_three_does_not_found_and_says_why() {
    init_tracing();
    let mut cluster = Cluster::new(3);
    let mut lone = locator(&cluster, 1);
    lone.join_timeout = GIVE_UP;
    let error = start_refused(lone).await;
    assert!(matches!(error, StartError::NotFounded { .. }), "{error}");
    let text = error.to_string();
    assert!(
        text.contains("only 1 of the 3 configured locators"),
        "the reason names how many of how many answered: {text}"
    );
    assert!(text.contains("start at least 2 of the locators"), "{text}");

    // The operator's remedy: start a majority. The two others found one cluster, and the
    // first joins it.
    start_together(&mut cluster, &["locator-2", "locator-3"]).await;
    one_cluster(&cluster, &["locator-2", "locator-3"]).await;
    start_together(&mut cluster, &["locator-1"]).await;
    one_cluster(&cluster, &["locator-1", "locator-2", "locator-3"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_locators_does_not_found() {
    init_tracing();
    let cluster = Cluster::new(2);
    // Whichever it is: the one with the smaller address would have founded alone before.
    for name in by_address(&cluster) {
        let mut lone = cluster.config(&name, MemberKind::Locator);
        lone.join_timeout = GIVE_UP;
        let text = start_refused(lone).await.to_string();
        assert!(
            text.contains("only 1 of the 2 configured locators"),
            "{name}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_three_locators_started_together_found_one_cluster() {
    init_tracing();
    // Once without the locator of the smallest address (so the founder is not the smallest
    // configured one), once without the largest.
    for down in [0, 2] {
        let mut cluster = Cluster::new(3);
        let mut up = by_address(&cluster);
        let absent = up.remove(down);
        let up: Vec<&str> = up.iter().map(String::as_str).collect();
        start_together(&mut cluster, &up).await;
        let view = one_cluster(&cluster, &up).await;
        assert_eq!(view.len(), 2, "{absent} is down: {view}");
        // The third, started later, joins the same cluster.
        start_together(&mut cluster, &[absent.as_str()]).await;
        let all = ["locator-1", "locator-2", "locator-3"];
        let grown = one_cluster(&cluster, &all).await;
        assert_eq!(grown.coordinator(), view.coordinator(), "{grown}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_locators_started_together_found_one_cluster() {
    init_tracing();
    let mut cluster = Cluster::new(3);
    start_together(&mut cluster, &["locator-1", "locator-2", "locator-3"]).await;
    let view = one_cluster(&cluster, &["locator-1", "locator-2", "locator-3"]).await;
    // The founder is the locator with the smallest address.
    assert_eq!(
        view.coordinator().map(|c| c.name().to_owned()),
        by_address(&cluster).first().cloned(),
        "{view}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_every_locator_crashed_a_lone_restart_waits_for_a_majority() {
    init_tracing();
    let mut cluster = Cluster::new(3);
    start_together(&mut cluster, &["locator-1", "locator-2", "locator-3"]).await;
    one_cluster(&cluster, &["locator-1", "locator-2", "locator-3"]).await;
    for name in ["locator-1", "locator-2", "locator-3"] {
        cluster.kill(name).await;
    }
    // Each has persisted the view of all three. The first back, alone, does not found,
    // whichever it is: its persisted view leads it to nobody.
    let first = by_address(&cluster).remove(0);
    let mut lone = cluster.config(&first, MemberKind::Locator);
    lone.join_timeout = GIVE_UP;
    let text = cluster
        .restart_with(&first, lone)
        .await
        .expect_err("a lone locator does not found")
        .to_string();
    assert!(text.contains("only 1 of the 3"), "{text}");
    // Two back together: one cluster; the third joins it.
    let others: Vec<String> = by_address(&cluster).into_iter().skip(1).collect();
    let others: Vec<&str> = others.iter().map(String::as_str).collect();
    start_together(&mut cluster, &others).await;
    one_cluster(&cluster, &others).await;
    start_together(&mut cluster, &[first.as_str()]).await;
    one_cluster(&cluster, &["locator-1", "locator-2", "locator-3"]).await;
}
