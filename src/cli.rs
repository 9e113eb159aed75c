//! Command-line interface (clap derive): the raw flags, before validation.

use crate::audit::Format;
use crate::policy::Mode;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Filter network packets by SELinux security context (NFQUEUE).
#[derive(Parser, Debug)]
#[command(name = "labelgate", version, about, long_about = None)]
pub struct Cli {
    /// Log level: error, warn, info, debug, trace (RUST_LOG also works).
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Read packets from NFQUEUE and give each an accept or drop verdict.
    Run(RunArgs),
    /// Parse and compile a policy file, print a summary and lint findings; non-zero exit on error.
    Check {
        /// The policy file (TOML).
        file: PathBuf,
    },
    /// Print (or install, or remove) the iptables/nftables rules that queue packets to labelgate.
    Rules(RulesArgs),
    /// Decide a hypothetical packet and show why, rule by rule.
    Explain(ExplainArgs),
    /// Propose policy rules from labelgate's audit records (files or standard input).
    Audit2rules {
        /// Audit files (USER_AVC or JSON lines); none: standard input.
        files: Vec<PathBuf>,
    },
    /// Summarise what switching to enforcing would block, from permissive audit records.
    WouldBreak {
        /// Audit files (USER_AVC or JSON lines); none: standard input.
        files: Vec<PathBuf>,
    },
    /// Write man pages (labelgate.8 and one per subcommand) into a directory.
    Man {
        /// Output directory.
        dir: PathBuf,
    },
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Args, Debug)]
pub struct RulesArgs {
    /// The policy file: the hooks its rules name decide which chains are queued.
    #[arg(long)]
    pub policy: PathBuf,
    /// Firewall to generate for.
    #[arg(long, value_enum, default_value = "iptables")]
    pub backend: crate::rules::Backend,
    /// Queue number N or range N-M (a range spreads flows with --queue-cpu-fanout).
    #[arg(long, default_value = "0")]
    pub queues: String,
    /// Flow mode: queue new connections only and let the connection mark decide the rest in the kernel.
    #[arg(long)]
    pub flow: bool,
    /// Queue every packet, not only the first of each connection (full packet-level auditing).
    #[arg(long, conflicts_with = "flow")]
    pub all_packets: bool,
    /// Drop packets while labelgate is not running (default: let them pass).
    #[arg(long)]
    pub no_bypass: bool,
    /// Packets while labelgate is not running: open lets them pass (--queue-bypass), closed drops them.
    #[arg(long, value_enum, conflicts_with = "no_bypass")]
    pub fail: Option<Fail>,
    /// Apply the rules atomically (replacing labelgate's previous rules).
    #[arg(long, conflicts_with = "remove")]
    pub install: bool,
    /// Remove labelgate's rules, leaving every other rule alone.
    #[arg(long)]
    pub remove: bool,
}

#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// The policy file.
    #[arg(long)]
    pub policy: PathBuf,
    /// Source context (a full context, or a type alone for system_u:system_r:TYPE:s0).
    #[arg(long)]
    pub source: String,
    /// Destination context (same forms as --source).
    #[arg(long)]
    pub dest: String,
    /// Hook: input, output or forward.
    #[arg(long, default_value = "output")]
    pub hook: String,
    /// Protocol: tcp, udp, icmp, icmpv6, sctp.
    #[arg(long, default_value = "tcp")]
    pub proto: String,
    #[arg(long)]
    pub sport: Option<u16>,
    #[arg(long)]
    pub dport: Option<u16>,
    #[arg(long)]
    pub uid: Option<u32>,
    #[arg(long)]
    pub gid: Option<u32>,
    #[arg(long, default_value = "127.0.0.1")]
    pub saddr: std::net::IpAddr,
    #[arg(long, default_value = "127.0.0.1")]
    pub daddr: std::net::IpAddr,
    /// The packet's secmark context.
    #[arg(long)]
    pub secmark: Option<String>,
    /// The peer label context.
    #[arg(long)]
    pub peer: Option<String>,
    #[arg(long)]
    pub iif: Option<String>,
    #[arg(long)]
    pub oif: Option<String>,
    /// Override the policy file's mode.
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
}

/// What the kernel does with packets the queue cannot take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Fail {
    /// Accept them (availability first).
    Open,
    /// Drop them (enforcement first).
    Closed,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The policy file (TOML), see docs/POLICY.md.
    #[arg(long)]
    pub policy: PathBuf,
    /// One queue number.
    #[arg(long, conflicts_with = "queues")]
    pub queue: Option<u16>,
    /// A range of queue numbers N-M (for --queue-balance / --queue-cpu-fanout); one thread each.
    #[arg(long)]
    pub queues: Option<String>,
    /// Resolver worker threads shared by all queues (at most 256). A queue thread decides a packet itself when
    /// its labels are cached; one that needs a socket lookup, /proc scan or label read goes to the worker its
    /// flow hashes to, so a slow lookup does not hold up the queue and one flow's packets keep their order.
    /// 0: every packet is resolved on its queue thread.
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// How long (ms) the process holding a cached UDP socket is trusted before it is checked again with one
    /// read of /proc/PID/fd/N. 0 checks once per batch read from the queue (a check made after a packet was
    /// read covers it, so no packet is decided on a stale holder); a few ms saves most of the rest, at the
    /// price of that long a window in which a closed UDP socket's reused 4-tuple keeps the old socket's label.
    /// (TCP needs no such check: a TCP 4-tuple changes socket only through a handshake, and SYNs are always
    /// looked up afresh.)
    #[arg(long, default_value_t = 0, value_name = "MS", value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub udp_recheck_ms: u64,
    /// Override the policy file's mode.
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Write audit records to FILE, or - for standard output.
    #[arg(long, value_name = "FILE|-")]
    pub audit: Option<String>,
    /// Also send every audit record to the kernel audit subsystem (AUDIT_USER_AVC), beside its own AVCs.
    #[arg(long)]
    pub audit_kernel: bool,
    /// Format of audit records.
    #[arg(long, value_enum, default_value = "avc")]
    pub audit_format: Format,
    /// Maximum audit records per second (0: unlimited); the excess is counted and reported.
    #[arg(long, default_value_t = 0)]
    pub audit_rate: u32,
    /// Bytes of each packet copied from the kernel (headers suffice).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(64..=65535))]
    pub copy_range: u32,
    /// Kernel queue length.
    #[arg(long, default_value_t = 8192)]
    pub queue_maxlen: u32,
    /// Socket receive buffer in bytes.
    #[arg(long, default_value_t = 16 << 20)]
    pub rcvbuf: usize,
    /// Behaviour when the queue is full or labelgate stops: default closed when enforcing, open when permissive.
    #[arg(long, value_enum)]
    pub fail: Option<Fail>,
    /// Flow mode: mark each decided connection (use with `labelgate rules --flow`).
    #[arg(long)]
    pub flow: bool,
    /// Keep every capability (by default labelgate drops to the capabilities it needs and sets no_new_privs).
    #[arg(long)]
    pub no_confine: bool,
    /// Serve Prometheus metrics on unix:PATH (mode 0600) or a loopback ADDR:PORT.
    #[arg(long, value_name = "unix:PATH|ADDR:PORT")]
    pub metrics: Option<crate::metrics::Endpoint>,
}

/// Parse `N` or `N-M` into a list of queue numbers.
pub fn parse_queues(s: &str) -> Result<Vec<u16>, String> {
    let num = |x: &str| x.trim().parse::<u16>().map_err(|_| format!("bad queue number {x:?}"));
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => {
            let n = num(s)?;
            (n, n)
        }
    };
    if a > b {
        return Err(format!("queue range {s:?} runs backwards"));
    }
    if b - a >= 64 {
        return Err(format!("queue range {s:?} has more than 64 queues"));
    }
    Ok((a..=b).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_ranges() {
        assert_eq!(parse_queues("3").unwrap(), vec![3]);
        assert_eq!(parse_queues("0-3").unwrap(), vec![0, 1, 2, 3]);
        assert!(parse_queues("3-1").is_err());
        assert!(parse_queues("x").is_err());
        assert!(parse_queues("0-100").is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
