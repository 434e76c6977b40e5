//! `cohort-member`: runs one member or locator of a cohort cluster as a process.
//!
//! ```text
//! cohort-member --config member.toml [--key value ...]
//!   config file + flags ─► MemberConfig ─► Member::start (exits 1 naming the problem)
//!   ─► prints each view installed (who joined, left, crashed)
//!   ─► with metrics-address: serves GET /metrics (http), answered by this loop from
//!      the member's counters (cohort_membership::metrics::prometheus)
//!   ─► SIGTERM or SIGINT ─► leave gracefully ─► exit 0
//!      forced out of the cluster (removed while alive, or a network partition) ─► logged;
//!      the member rejoins by itself as a new member ("reconnected as ...") and runs on;
//!      with disable-auto-reconnect = true ─► exit 1
//! cohort-member status --config member.toml [--locator ADDR]
//!   ─► a one-shot discovery query (mutual TLS, the config's certificate) to the locator
//!   ─► prints its view: members, kind, version, address, coordinator, elder
//! ```
//!
//! Logs go to stderr through tracing, filtered by `RUST_LOG` (default `warn`); views go to
//! stdout.

mod http;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use std::net::SocketAddr;

use cohort_member::config;
use cohort_membership::{Member, MembershipEvent};
use cohort_transport::{MemberId, View};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

const USAGE: &str = "\
usage: cohort-member --config FILE [--KEY VALUE ...]
       cohort-member status --config FILE [--locator ADDR]

Runs one member (or locator) of a cohort cluster until SIGTERM or SIGINT, then leaves
the cluster gracefully. Every key of the config file can be given (or overridden) as a
flag: --name node-2, --member-timeout 2s, --locators 10.0.0.1:10334,10.0.0.2:10334,
--ssl-certificate node.pem (the [ssl] table's keys take the prefix ssl-).

config keys (Geode's names where Geode has one):
  name, kind (member | locator | admin), bind-address, advertise-address, locators,
  preset (lan | lan-fast | wan: member-, final-check- and removal-timeout together),
  member-timeout, final-check-timeout, removal-timeout, join-timeout, leave-timeout
  (e.g. 500ms, 5s, 2m; removal-timeout may be 0s),
  enable-network-partition-detection, disable-auto-reconnect (true: exit once forced
  out instead of rejoining), working-dir, transport (quic | legacy | bridge),
  security-username, security-password,
  metrics-address (serve Prometheus metrics at http://ADDRESS/metrics),
  [ssl] ca, certificate, private-key, require-authentication,
        endpoint-identification-enabled

status asks a locator (the config's first, or --locator) for its current view over
QUIC with the config's certificate, and prints it.

exit status: 0 after a graceful leave (or a status printed), 1 when the member could not
start, or was forced out with disable-auto-reconnect (or the locator did not answer), 2 for
a bad command line or configuration.
";

/// What the command line asks for.
enum Command {
    Run {
        config: Option<PathBuf>,
        flags: Vec<String>,
    },
    Status {
        config: Option<PathBuf>,
        flags: Vec<String>,
        locator: Option<SocketAddr>,
    },
    Help,
}

fn parse(args: Vec<String>) -> Result<Command, String> {
    let mut config = None;
    let mut flags = Vec::new();
    let mut locator = None;
    let mut status = false;
    let mut rest = args.into_iter().peekable();
    if rest.peek().map(String::as_str) == Some("status") {
        rest.next();
        status = true;
    }
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--locator" if status => {
                let value = rest.next().ok_or("--locator needs an address")?;
                let address = value
                    .parse()
                    .map_err(|_| format!("--locator {value:?}: expected an IP address and port"))?;
                locator = Some(address);
            }
            "--config" => {
                let path = rest.next().ok_or("--config needs a file")?;
                config = Some(PathBuf::from(path));
            }
            _ if arg.starts_with("--config=") => {
                config = Some(PathBuf::from(&arg["--config=".len()..]));
            }
            _ if arg.starts_with("--") => {
                let has_value = arg.contains('=');
                flags.push(arg);
                if !has_value {
                    flags.push(
                        rest.next()
                            .ok_or_else(|| format!("{} needs a value", flags[flags.len() - 1]))?,
                    );
                }
            }
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    if config.is_none() && flags.is_empty() {
        return Err("nothing to run: give --config FILE (and flags)".into());
    }
    Ok(match status {
        true => Command::Status {
            config,
            flags,
            locator,
        },
        false => Command::Run { config, flags },
    })
}

fn main() -> ExitCode {
    let command = match parse(std::env::args().skip(1).collect()) {
        Ok(command) => command,
        Err(error) => {
            eprintln!("cohort-member: {error}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let (path, flags, status_of) = match command {
        Command::Help => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Command::Run { config, flags } => (config, flags, None),
        Command::Status {
            config,
            flags,
            locator,
        } => (config, flags, Some(locator)),
    };
    init_logging();
    let settings = match config::load(path.as_deref(), &flags) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("cohort-member: invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cohort-member: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match status_of {
        Some(locator) => runtime.block_on(status(settings.member, locator)),
        None => runtime.block_on(run(settings)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cohort-member: {error}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

async fn run(settings: config::Settings) -> Result<(), String> {
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
    // The metrics address is taken before joining, so a bad one fails before the cluster
    // sees this member.
    let (scrape_requests, mut scrapes) = mpsc::channel::<http::Scrape>(4);
    let metrics_server = match settings.metrics_address {
        Some(address) => {
            let listener = TcpListener::bind(address)
                .await
                .map_err(|e| format!("cannot serve metrics on {address}: {e}"))?;
            let bound = listener.local_addr().unwrap_or(address);
            println!("metrics at http://{bound}/metrics");
            Some(AbortOnDrop(tokio::spawn(http::serve(
                listener,
                scrape_requests,
            ))))
        }
        None => None,
    };
    let auto_reconnect = settings.member.auto_reconnect;
    let member = Member::start(settings.member)
        .await
        .map_err(|e| format!("could not join the cluster: {e}"))?;
    let mut events = member.events();
    println!("{} ({}) is in the cluster", member.id(), member.address());
    let mut printed = member.view().id();
    println!("{}", describe(&member.view(), None));
    loop {
        tokio::select! {
            Some(scrape) = scrapes.recv() => {
                // The scraper may have given up meanwhile; nothing to do then.
                let _ = scrape.send(cohort_membership::metrics::prometheus::render(&member));
            }
            event = events.recv() => match event {
                // The view current at start may also arrive as an event: print it once.
                Ok(MembershipEvent::ViewInstalled { view, left, crashed, .. })
                    if view.id() > printed =>
                {
                    printed = view.id();
                    println!("{}", describe(&view, Some((&left, &crashed))));
                }
                Ok(MembershipEvent::ForcedDisconnect { reason }) if !auto_reconnect => {
                    println!("forced out of the cluster: {reason}");
                    return Err(format!("forced out of the cluster: {reason}"));
                }
                Ok(MembershipEvent::ForcedDisconnect { reason }) => {
                    // The member rejoins by itself once it reaches the cluster again.
                    println!("forced out of the cluster: {reason}; reconnecting");
                }
                Ok(MembershipEvent::Reconnected { old, new, .. }) => {
                    // The name stays; the uuid says it is a new member.
                    println!(
                        "reconnected as {new} ({}), a new member in place of {}",
                        new.uuid(),
                        old.uuid()
                    );
                }
                Ok(MembershipEvent::Suspect { member, reason }) => {
                    println!("suspect: {member} ({reason})");
                }
                Ok(MembershipEvent::Unreachable { member }) => {
                    println!("unreachable: {}", member.name());
                }
                Ok(MembershipEvent::Reachable { member }) => {
                    println!("reachable again: {}", member.name());
                }
                Ok(MembershipEvent::LinkProblem { member, reached_by }) => {
                    println!(
                        "link problem: cannot reach {}, which {} reaches",
                        member.name(),
                        reached_by.name()
                    );
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    return Err("the member stopped".into());
                }
            },
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    println!("leaving the cluster");
    drop(metrics_server);
    if member.leave().await {
        println!("left");
    } else {
        println!("left without confirmation: the view without this member did not arrive");
    }
    Ok(())
}

/// Asks `locator` (or the configuration's first locator) for its view and prints it.
async fn status(
    config: cohort_membership::MemberConfig,
    locator: Option<SocketAddr>,
) -> Result<(), String> {
    let locator = locator
        .or_else(|| config.locators.first().copied())
        .ok_or("no locator to ask: give --locator ADDR or locators in the config")?;
    let answer = cohort_membership::ask_locator(locator, &config.tls)
        .await
        .map_err(|e| e.to_string())?;
    match answer.view {
        Some(view) => println!(
            "{} at {locator} reports {}",
            answer.responder.name(),
            describe(&view, None)
        ),
        None => println!(
            "{} at {locator} is starting and has no view yet",
            answer.responder.name()
        ),
    }
    Ok(())
}

/// One view on a few lines: id, coordinator, elder, members, and what changed.
fn describe(view: &View, changes: Option<(&Vec<MemberId>, &Vec<MemberId>)>) -> String {
    let name = |m: Option<&MemberId>| m.map_or_else(|| "none".to_owned(), |m| m.name().to_owned());
    let mut out = format!(
        "view {}: {} member(s), coordinator {}, elder {}",
        view.id(),
        view.len(),
        name(view.coordinator()),
        name(view.elder())
    );
    for m in view.members() {
        out.push_str(&format!(
            "\n  {:<16} {:<8} {:<4} {}",
            m.name(),
            m.kind().to_string(),
            m.version().to_string(),
            m.address()
        ));
    }
    if let Some((left, crashed)) = changes {
        for m in left {
            out.push_str(&format!("\n  left: {}", m.name()));
        }
        for m in crashed {
            out.push_str(&format!("\n  crashed: {}", m.name()));
        }
    }
    out
}

/// Aborts a task when dropped: the metrics server ends with the run loop.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
