//! `cohort-certs`: creates a cluster CA and issues member certificates as PEM files.
//!
//! Arguments are parsed by hand into a [`Command`], which is then run against the
//! `cohort_certs` library. Exit status: 0 on success, 1 when generating or writing failed
//! (the message names the file), 2 when the command line is wrong.

use std::env;
use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use cohort_certs::{
    CA_CERTIFICATE_FILE, CA_PRIVATE_KEY_FILE, CertError, CertificateAuthority, MemberRequest,
};

const USAGE: &str = "\
cohort-certs: create a cohort cluster CA and issue member certificates (PEM files)

USAGE:
    cohort-certs ca --out DIR [--name CN] [--days N]
    cohort-certs member --ca-dir DIR --name NAME [--ip ADDR]... [--dns NAME]...
                        [--days N] [--out DIR]
    cohort-certs --help

ca: writes DIR/ca.pem and DIR/ca-key.pem (the key readable by its owner only).
    Existing CA files are never overwritten.
    --out DIR      directory to write into (created if missing)
    --name CN      common name of the CA [default: cohort cluster CA]
    --days N       validity in days, from one hour ago [default: 3650]

member: issues NAME.pem and NAME-key.pem, signed by the CA in --ca-dir. The certificate
    is valid for both TLS server and client use. Existing files of that name are replaced.
    --ca-dir DIR   directory holding ca.pem and ca-key.pem
    --name NAME    member name: certificate common name and file name
    --ip ADDR      IP address the certificate covers (repeatable)
                   [default: 127.0.0.1 when neither --ip nor --dns is given]
    --dns NAME     DNS name the certificate covers (repeatable)
    --days N       validity in days, from one hour ago [default: 365]
    --out DIR      directory to write into [default: the --ca-dir directory]

Flags also accept the --flag=VALUE form.
";

const DEFAULT_CA_NAME: &str = "cohort cluster CA";
const DEFAULT_CA_DAYS: u32 = 3650;
const DEFAULT_MEMBER_DAYS: u32 = 365;
const SECONDS_PER_DAY: u64 = 24 * 60 * 60;

fn main() -> ExitCode {
    let command = match parse(env::args_os().skip(1)) {
        Ok(command) => command,
        Err(error) => {
            eprintln!("cohort-certs: {error}");
            eprintln!("Run 'cohort-certs --help' for usage.");
            return ExitCode::from(2);
        }
    };
    match run(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cohort-certs: {error}");
            ExitCode::from(1)
        }
    }
}

/// A parsed command line.
#[derive(Debug)]
enum Command {
    Help,
    Ca {
        out: PathBuf,
        name: String,
        days: u32,
    },
    Member {
        ca_dir: PathBuf,
        name: String,
        ips: Vec<IpAddr>,
        dns_names: Vec<String>,
        days: u32,
        out: PathBuf,
    },
}

/// A command line that cannot be run; the message says what is wrong.
#[derive(Debug)]
struct UsageError(String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn usage_error(message: impl Into<String>) -> UsageError {
    UsageError(message.into())
}

/// Flags seen so far; each single-valued flag may be given once.
#[derive(Default)]
struct Flags {
    out: Option<PathBuf>,
    ca_dir: Option<PathBuf>,
    name: Option<String>,
    days: Option<u32>,
    ips: Vec<IpAddr>,
    dns_names: Vec<String>,
}

fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, UsageError> {
    let mut args = args.into_iter();
    let Some(subcommand) = args.next() else {
        return Err(usage_error("missing subcommand (ca or member)"));
    };
    let subcommand = subcommand.to_string_lossy().into_owned();
    let allowed: &[&str] = match subcommand.as_str() {
        "-h" | "--help" | "help" => return Ok(Command::Help),
        "ca" => &["--out", "--name", "--days"],
        "member" => &["--ca-dir", "--name", "--ip", "--dns", "--days", "--out"],
        other => {
            return Err(usage_error(format!(
                "unknown subcommand {other:?} (expected ca or member)"
            )));
        }
    };

    let mut flags = Flags::default();
    while let Some(arg) = args.next() {
        // Values given as --flag=VALUE must be UTF-8; a non-UTF-8 path can still be passed
        // as a separate argument, which is kept as an OsString.
        let (flag, inline_value) = match arg.to_str() {
            Some(text) => match text.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => {
                    (flag.to_owned(), Some(OsString::from(value)))
                }
                _ => (text.to_owned(), None),
            },
            None => (arg.to_string_lossy().into_owned(), None),
        };
        if flag == "-h" || flag == "--help" {
            return Ok(Command::Help);
        }
        if !allowed.contains(&flag.as_str()) {
            return Err(usage_error(if flag.starts_with('-') {
                format!("unknown flag {flag} for {subcommand}")
            } else {
                format!("unexpected argument {flag:?} for {subcommand}")
            }));
        }
        let value = match inline_value {
            Some(value) => value,
            None => args
                .next()
                .ok_or_else(|| usage_error(format!("{flag} needs a value")))?,
        };
        apply(&mut flags, &flag, value)?;
    }

    match subcommand.as_str() {
        "ca" => Ok(Command::Ca {
            out: flags.out.ok_or_else(|| usage_error("ca needs --out DIR"))?,
            name: flags.name.unwrap_or_else(|| DEFAULT_CA_NAME.to_owned()),
            days: flags.days.unwrap_or(DEFAULT_CA_DAYS),
        }),
        _ => {
            let ca_dir = flags
                .ca_dir
                .ok_or_else(|| usage_error("member needs --ca-dir DIR"))?;
            let name = flags
                .name
                .ok_or_else(|| usage_error("member needs --name NAME"))?;
            let mut ips = flags.ips;
            if ips.is_empty() && flags.dns_names.is_empty() {
                ips.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
            }
            let out = flags.out.unwrap_or_else(|| ca_dir.clone());
            // NAME.pem for a member called "ca" is the CA certificate's own file name.
            if name == "ca" && same_dir(&out, &ca_dir) {
                return Err(usage_error(format!(
                    "a member named \"ca\" would overwrite the CA files in {}; \
                     choose another --name or --out",
                    ca_dir.display()
                )));
            }
            Ok(Command::Member {
                ca_dir,
                name,
                ips,
                dns_names: flags.dns_names,
                days: flags.days.unwrap_or(DEFAULT_MEMBER_DAYS),
                out,
            })
        }
    }
}

fn apply(flags: &mut Flags, flag: &str, value: OsString) -> Result<(), UsageError> {
    fn once<T>(slot: &mut Option<T>, flag: &str, value: T) -> Result<(), UsageError> {
        if slot.is_some() {
            return Err(usage_error(format!("{flag} given more than once")));
        }
        *slot = Some(value);
        Ok(())
    }
    fn text(flag: &str, value: OsString) -> Result<String, UsageError> {
        value
            .into_string()
            .map_err(|value| usage_error(format!("{flag} value {value:?} is not valid UTF-8")))
    }

    match flag {
        "--out" => once(&mut flags.out, flag, PathBuf::from(value)),
        "--ca-dir" => once(&mut flags.ca_dir, flag, PathBuf::from(value)),
        "--name" => once(&mut flags.name, flag, text(flag, value)?),
        "--days" => {
            let value = text(flag, value)?;
            let days = match value.parse::<u32>() {
                Ok(days) if days > 0 => days,
                _ => {
                    return Err(usage_error(format!(
                        "--days needs a whole number of days of at least 1, not {value:?}"
                    )));
                }
            };
            once(&mut flags.days, flag, days)
        }
        "--ip" => {
            let value = text(flag, value)?;
            let ip = value
                .parse::<IpAddr>()
                .map_err(|_| usage_error(format!("--ip {value:?} is not an IP address")))?;
            flags.ips.push(ip);
            Ok(())
        }
        "--dns" => {
            let value = text(flag, value)?;
            if value.is_empty() {
                return Err(usage_error("--dns needs a non-empty name"));
            }
            flags.dns_names.push(value);
            Ok(())
        }
        other => Err(usage_error(format!("unknown flag {other}"))),
    }
}

fn run(command: Command) -> Result<(), CertError> {
    match command {
        Command::Help => {
            print!("{USAGE}");
            Ok(())
        }
        Command::Ca { out, name, days } => {
            let ca = CertificateAuthority::generate(&name, days_to_duration(days))?;
            ca.write_to_dir(&out)?;
            println!("wrote {}", out.join(CA_CERTIFICATE_FILE).display());
            println!("wrote {}", out.join(CA_PRIVATE_KEY_FILE).display());
            Ok(())
        }
        Command::Member {
            ca_dir,
            name,
            ips,
            dns_names,
            days,
            out,
        } => {
            let ca = CertificateAuthority::load_from_dir(&ca_dir)?;
            let mut request = MemberRequest::new(name.as_str(), days_to_duration(days));
            for ip in ips {
                request = request.ip(ip);
            }
            for dns_name in dns_names {
                request = request.dns(dns_name);
            }
            let issued = ca.issue(&request)?;
            let (certificate, key) = issued.write_to_dir(&out, &name)?;
            println!("wrote {}", certificate.display());
            println!("wrote {}", key.display());
            Ok(())
        }
    }
}

/// Whether two paths name the same directory; paths that do not exist yet compare as
/// given.
fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn days_to_duration(days: u32) -> Duration {
    Duration::from_secs(u64::from(days) * SECONDS_PER_DAY)
}
