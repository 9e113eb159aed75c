//! Command-line interface (clap derive): the raw flags, before validation.

use crate::audit::Format;
use crate::policy::Mode;
use crate::rules::{Backend, Family};
use clap::builder::{EnumValueParser, TypedValueParser};
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
    /// Parse and compile a policy file, print a summary and every warning (counted); non-zero exit on error.
    Check {
        /// The policy file (TOML).
        file: PathBuf,
        /// Exit non-zero (1) when there is any warning, not only on errors (for CI pipelines).
        #[arg(long)]
        strict: bool,
    },
    /// Print (or install, or remove) the iptables/nftables rules that queue packets to labelgate: only the
    /// traffic the policy's scope covers, for IPv4 and IPv6, fail-closed unless the operator chose fail-open.
    Rules(RulesArgs),
    /// Decide a hypothetical packet and show why, rule by rule.
    Explain(ExplainArgs),
    /// Propose policy rules from labelgate's audit records (files or standard input).
    Audit2rules {
        /// Audit files (USER_AVC or JSON lines); none: standard input.
        files: Vec<PathBuf>,
        /// Propose rules on types alone. By default a record whose contexts
        /// carry MLS levels yields a rule requiring the low levels seen
        /// (source_level/dest_level "= LEVEL").
        #[arg(long)]
        generalize_levels: bool,
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
        /// The shell to write the script for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Args, Debug)]
pub struct RulesArgs {
    /// The policy file: the hooks its rules name decide which chains are queued, and its [[scope]] (or, without
    /// one and with default = "accept", its drop and audited rules) what is queued; default = "drop" without a
    /// [[scope]] queues every new connection (see docs/POLICY.md).
    #[arg(long)]
    pub policy: PathBuf,
    /// Firewall to generate for.
    #[arg(long, default_value = "iptables", value_parser = choice::<BackendArg, Backend>())]
    pub backend: Backend,
    /// Address families (iptables): ipv4 prints iptables-restore input, ipv6 ip6tables-restore input, both a
    /// shell script (run it with sh) that feeds each family to its own tool; with --install, the families
    /// installed. --backend nft accepts only both: its inet table covers both families.
    #[arg(long, default_value = "both", value_parser = choice::<FamilyArg, Family>())]
    pub family: Family,
    /// Queue number N or range N-M (a range spreads flows with --queue-cpu-fanout).
    #[arg(long, default_value = "0")]
    pub queues: String,
    /// Flow mode: queue new connections only and let the connection mark decide the rest in the kernel.
    #[arg(long)]
    pub flow: bool,
    /// Queue every packet, not only the first of each connection (full packet-level auditing).
    #[arg(long, conflicts_with = "flow")]
    pub all_packets: bool,
    /// While no labelgate reads the queue: open lets queued packets pass (--queue-bypass, nft bypass), closed
    /// drops them. Default: closed when the policy file's mode is enforcing, open when permissive (as `run`).
    #[arg(long, value_enum)]
    pub fail: Option<Fail>,
    /// Same as --fail closed (the older spelling).
    #[arg(long, conflicts_with = "fail")]
    pub no_bypass: bool,
    /// Apply the rules, replacing labelgate's previous ones atomically per family (iptables: a family whose transaction fails keeps its previous rules; the families --family leaves out lose labelgate's rules).
    #[arg(long, conflicts_with = "remove")]
    pub install: bool,
    /// Remove labelgate's rules (both families), leaving every other rule alone.
    #[arg(long)]
    pub remove: bool,
}

#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// The policy file (TOML).
    #[arg(long)]
    pub policy: PathBuf,
    /// Context of the local socket that sent the packet: a full context, or a type alone, completed as the
    /// daemon labels: unlabeled_t is system_u:object_r:unlabeled_t:s0 (what the daemon gives every end it
    /// cannot label), netlabel_peer_t is system_u:object_r:netlabel_peer_t:s0, any other type
    /// system_u:system_r:TYPE:s0.
    #[arg(long)]
    pub source: String,
    /// Context of the local socket the packet goes to (same forms as --source).
    #[arg(long)]
    pub dest: String,
    /// Hook the packet is queued at: input, output, forward, prerouting or postrouting.
    #[arg(long, default_value = "output")]
    pub hook: String,
    /// Protocol: tcp, udp, icmp, icmpv6, sctp.
    #[arg(long, default_value = "tcp")]
    pub proto: String,
    /// Source port (tcp, udp, sctp); none: a rule with sport does not match.
    #[arg(long)]
    pub sport: Option<u16>,
    /// Destination port (tcp, udp, sctp); none: a rule with dport does not match.
    #[arg(long)]
    pub dport: Option<u16>,
    /// Owner of the sending socket: a uid or a user name (resolved as in a policy's uid); none: unknown.
    #[arg(long, value_name = "UID|NAME")]
    pub uid: Option<String>,
    /// Group of the sending socket: a gid or a group name (resolved as in a policy's gid); none: unknown.
    #[arg(long, value_name = "GID|NAME")]
    pub gid: Option<String>,
    /// Source address.
    #[arg(long, default_value = "127.0.0.1")]
    pub saddr: std::net::IpAddr,
    /// Destination address.
    #[arg(long, default_value = "127.0.0.1")]
    pub daddr: std::net::IpAddr,
    /// The packet's secmark context: a full context, or a type alone for system_u:object_r:TYPE:s0; none: no
    /// secmark.
    #[arg(long)]
    pub secmark: Option<String>,
    /// The peer label (CIPSO/CALIPSO or static address label): same forms as --source; none: no peer label.
    #[arg(long)]
    pub peer: Option<String>,
    /// Input interface name; none: unknown.
    #[arg(long)]
    pub iif: Option<String>,
    /// Output interface name; none: unknown.
    #[arg(long)]
    pub oif: Option<String>,
    /// Override the policy file's mode (default: the file's mode).
    #[arg(long, value_parser = choice::<ModeArg, Mode>())]
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
    /// The policy file (TOML, see docs/POLICY.md): a regular file of at most 64 MiB.
    #[arg(long)]
    pub policy: PathBuf,
    /// One queue number (default: queue 0 when neither --queue nor --queues is given).
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
    /// Override the policy file's mode (default: the file's mode, enforcing if it names none).
    #[arg(long, value_parser = choice::<ModeArg, Mode>())]
    pub mode: Option<Mode>,
    /// Write audit records to FILE (appended; reopened when rotated), or - for standard output (default: no
    /// audit records are written).
    #[arg(long, value_name = "FILE|-")]
    pub audit: Option<String>,
    /// Also send every audit record to the kernel audit subsystem (AUDIT_USER_AVC), beside its own AVCs.
    #[arg(long)]
    pub audit_kernel: bool,
    /// Format of audit records.
    #[arg(long, default_value = "avc", value_parser = choice::<FormatArg, Format>())]
    pub audit_format: Format,
    /// Maximum audit records per second (0: unlimited); the excess is counted and reported.
    #[arg(long, default_value_t = 0)]
    pub audit_rate: u32,
    /// Bytes of each packet copied from the kernel. The default (9328) holds the longest IPv6 header chain RFC 8200 allows (extension headers of up to 2048 bytes each) and a TCP header; a packet whose headers run past a smaller copy range is decided by the policy's `malformed` verdict with reason beyond_copy_range.
    #[arg(long, default_value_t = crate::packet::LONGEST_HEADERS, value_parser = clap::value_parser!(u32).range(64..=65535))]
    pub copy_range: u32,
    /// Kernel queue length: packets waiting for a verdict before --fail applies (at least 1).
    #[arg(long, default_value_t = 8192, value_parser = clap::value_parser!(u32).range(1..))]
    pub queue_maxlen: u32,
    /// Queue socket receive buffer in bytes (at least 1; the kernel raises tiny values to its minimum).
    #[arg(long, default_value_t = 16 << 20, value_parser = clap::value_parser!(u64).range(1..=i32::MAX as u64))]
    pub rcvbuf: u64,
    /// Behaviour when the queue is full or labelgate stops: default closed when enforcing, open when permissive.
    #[arg(long, value_enum)]
    pub fail: Option<Fail>,
    /// Flow mode: mark each decided connection (use with `labelgate rules --flow`).
    #[arg(long)]
    pub flow: bool,
    /// Prototype (needs --flow; see docs/OFFLOAD.md): let the kernel accept at OUTPUT, without queueing, the new
    /// TCP connections from sockets of the same cgroup to the same destination address and port, once labelgate
    /// accepted one by a rule whose answer depends on the sender only through its cgroup (source_unit,
    /// source_cgroup, source_container, or nothing about the process; never source_exe or uid). Creates the
    /// nftables table inet labelgate_offload (deleted at start and stop). Offloads nothing on hosts where an LSM
    /// (SELinux) labels processes; off by default.
    #[arg(long, requires = "flow")]
    pub offload: bool,
    /// With --offload: how long a kernel-side accept lasts before the next connection is queued and checked
    /// again (milliseconds, 1 to 3600000).
    #[arg(long, default_value_t = crate::offload::DEFAULT_TIMEOUT_MS, requires = "offload",
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub offload_timeout_ms: u64,
    /// Keep every capability (by default labelgate drops to the capabilities it needs and sets no_new_privs).
    #[arg(long)]
    pub no_confine: bool,
    /// Also look sockets up in the other network namespaces on this host (containers: their traffic through
    /// FORWARD, PREROUTING, INPUT and POSTROUTING gets the labels of the sockets at both ends, see docs/POLICY.md). Entering a
    /// namespace needs CAP_SYS_ADMIN, which labelgate then keeps; off by default (those ends are remote).
    #[arg(long)]
    pub other_netns: bool,
    /// Serve Prometheus metrics on unix:PATH (a socket of mode 0600, created at start and removed at exit; an
    /// existing file there that is not a socket is refused) or a loopback ADDR:PORT, where ADDR may be a host
    /// name that resolves to loopback addresses only, such as localhost (default: no metrics).
    #[arg(long, value_name = "unix:PATH|ADDR:PORT")]
    pub metrics: Option<crate::metrics::Endpoint>,
}

/// A flag whose spellings are the variants of the CLI enum `A` (listed in
/// `--help` with their doc comments), handed to the code as the domain type `T`.
fn choice<A, T>() -> impl TypedValueParser<Value = T>
where
    A: ValueEnum + Clone + Send + Sync + 'static,
    T: From<A> + Clone + Send + Sync + 'static,
{
    EnumValueParser::<A>::new().map(T::from)
}

/// `--mode`: the spellings of [`Mode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    Enforcing,
    Permissive,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Enforcing => Mode::Enforcing,
            ModeArg::Permissive => Mode::Permissive,
        }
    }
}

/// `--audit-format`: the spellings of [`Format`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// `type=USER_AVC msg=audit(...)` lines, read by ausearch and audit2allow.
    Avc,
    /// One JSON object per line with the same fields.
    Json,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Avc => Format::Avc,
            FormatArg::Json => Format::Json,
        }
    }
}

/// `rules --backend`: the spellings of [`Backend`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    Iptables,
    Nft,
}

impl From<BackendArg> for Backend {
    fn from(b: BackendArg) -> Self {
        match b {
            BackendArg::Iptables => Backend::Iptables,
            BackendArg::Nft => Backend::Nft,
        }
    }
}

/// `rules --family`: the spellings of [`Family`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FamilyArg {
    /// IPv4 only: iptables-restore input.
    Ipv4,
    /// IPv6 only: ip6tables-restore input.
    Ipv6,
    /// Both: a shell script feeding each family to its own tool.
    Both,
}

impl From<FamilyArg> for Family {
    fn from(f: FamilyArg) -> Self {
        match f {
            FamilyArg::Ipv4 => Family::Ipv4,
            FamilyArg::Ipv6 => Family::Ipv6,
            FamilyArg::Both => Family::Both,
        }
    }
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
    fn zero_queue_length_and_buffer_are_refused() {
        let run = |extra: &[&str]| {
            let mut argv = vec!["labelgate", "run", "--policy", "p.toml"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv)
        };
        assert!(run(&["--queue-maxlen", "1", "--rcvbuf", "1"]).is_ok());
        for flag in ["--queue-maxlen", "--rcvbuf"] {
            let e = run(&[flag, "0"]).unwrap_err().to_string();
            assert!(e.contains(flag) && e.contains("0 is not in 1.."), "{e}");
        }
        assert!(run(&["--rcvbuf", "4294967296"]).is_err(), "more than the kernel's int");
    }

    /// Every flag of every subcommand says what it is (and `--help` shows
    /// defaults: clap prints `[default: ...]`, the rest say it in words).
    #[test]
    fn every_flag_has_help_text() {
        use clap::CommandFactory;
        let cmd = Cli::command();
        for sub in cmd.get_subcommands() {
            for arg in sub.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                assert!(arg.get_help().is_some(), "{} --{id} has no help text", sub.get_name());
            }
        }
        let run = cmd.find_subcommand("run").unwrap();
        let queue = run.get_arguments().find(|a| a.get_id() == "queue").unwrap();
        assert!(queue.get_help().unwrap().to_string().contains("default: queue 0"));
    }

    /// The CLI's own enums reach the library as its domain types, each
    /// spelling to its own variant.
    #[test]
    fn enum_flags_map_to_domain_types() {
        let run = |extra: &[&str]| {
            let mut argv = vec!["labelgate", "run", "--policy", "p.toml"];
            argv.extend_from_slice(extra);
            match Cli::try_parse_from(argv).unwrap().command {
                Command::Run(a) => a,
                other => panic!("{other:?}"),
            }
        };
        let d = run(&[]);
        assert_eq!((d.mode, d.audit_format), (None, Format::Avc));
        let a = run(&["--mode", "permissive", "--audit-format", "json"]);
        assert_eq!((a.mode, a.audit_format), (Some(Mode::Permissive), Format::Json));
        assert_eq!(run(&["--mode", "enforcing"]).mode, Some(Mode::Enforcing));
        assert!(Cli::try_parse_from(["labelgate", "run", "--policy", "p", "--mode", "audit"]).is_err());
        let rules = |extra: &[&str]| {
            let mut argv = vec!["labelgate", "rules", "--policy", "p.toml"];
            argv.extend_from_slice(extra);
            match Cli::try_parse_from(argv).unwrap().command {
                Command::Rules(a) => (a.backend, a.family),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(rules(&[]), (Backend::Iptables, Family::Both));
        assert_eq!(rules(&["--backend", "nft", "--family", "ipv4"]), (Backend::Nft, Family::Ipv4));
        assert_eq!(rules(&["--family", "ipv6"]).1, Family::Ipv6);
        let explain =
            ["labelgate", "explain", "--policy", "p", "--source", "a_t", "--dest", "b_t", "--mode", "permissive"];
        match Cli::try_parse_from(explain).unwrap().command {
            Command::Explain(a) => assert_eq!(a.mode, Some(Mode::Permissive)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
