//! cohort's benchmarks, side by side with their baselines in one process, so that a noisy
//! machine cancels out of the ratios.
//!
//! ```text
//! cargo run --release -p cohort-tests --bin bench -- SUITE [--quick] [--json FILE]
//!   SUITE: transport | membership | all
//! ```
//!
//! Prints a readable table (median, min, max of at least 3 repetitions per figure), then
//! one line per figure, exactly `BENCH <name> <value> <unit>` (the median), and with
//! `--json` writes the same figures to FILE. `--quick` uses small counts (a few minutes in
//! all, most of it the one 10,000-member simulation). Exit status: 0, or 2 for a bad command line, 1 if a run failed.
//!
//! - `report`: figures, repetitions, the table, the BENCH lines and the JSON.
//! - `transport`: cohort's messenger against raw quinn and a TCP+TLS messenger.
//! - `membership`: forming, joining, crash to removal, idle traffic, and the simulation.

mod membership;
mod raw_quinn;
mod report;
mod tcp_tls;
mod transport;

use std::process::ExitCode;

use report::Report;

const USAGE: &str = "usage: bench SUITE [--quick] [--json FILE]
  SUITE   transport | membership | all
  --quick small counts (a few minutes, most of it the 10,000-member simulation)
  --json  also write the figures to FILE as JSON";

/// What the command line asked for.
struct Options {
    transport: bool,
    membership: bool,
    quick: bool,
    json: Option<std::path::PathBuf>,
}

fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
    let mut suite = None;
    let mut quick = false;
    let mut json = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--json" => {
                let file = args.next().ok_or("--json needs a file name")?;
                json = Some(file.into());
            }
            "-h" | "--help" => return Err(String::new()),
            "transport" | "membership" | "all" if suite.is_none() => suite = Some(arg),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    let suite = suite.ok_or("which suite: transport, membership or all?")?;
    Ok(Options {
        transport: suite != "membership",
        membership: suite != "transport",
        quick,
        json,
    })
}

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) if message.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("bench: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("bench: could not start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut report = Report::default();
    let outcome: Result<(), String> = runtime.block_on(async {
        if options.transport {
            transport::run(options.quick, &mut report).await?;
        }
        if options.membership {
            membership::run(options.quick, &mut report).await?;
        }
        Ok(())
    });
    report.print();
    if let Some(path) = &options.json
        && let Err(error) = std::fs::write(path, report.json())
    {
        eprintln!("bench: could not write {}: {error}", path.display());
        return ExitCode::FAILURE;
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench: {error}");
            ExitCode::FAILURE
        }
    }
}
