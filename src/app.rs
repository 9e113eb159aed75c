//! The commands behind the binary: validated configuration, start-up
//! (the resolver factory included), signal handling and shutdown. The only
//! place errors become exit codes.
//!
//! Over 600 lines on purpose: one short function per command plus the
//! daemon's start-up and shutdown, kept together so that every error's exit
//! code is decided in this one file.

use crate::audit::{self, AuditSink};
use crate::cli::{self, Cli, Command, Fail, RunArgs};
use crate::counters::Counters;
use crate::engine::Engine;
use crate::policy::{Mode, Policy};
use crate::runtime::{Runtime, RuntimeConfig};
use anyhow::{bail, Context as _};
use clap::Parser;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Run the command line; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    init_logging(&cli.log_level);
    abort_on_panic();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Check { file, strict } => check(&file, strict),
        Command::Rules(args) => rules(args),
        Command::Explain(args) => explain(args),
        Command::Audit2rules { files, generalize_levels } => {
            let levels =
                if generalize_levels { crate::auditlog::Levels::Generalize } else { crate::auditlog::Levels::AsSeen };
            read_audit(&files).map(|e| print!("{}", crate::auditlog::audit2rules_with(&e, levels)))
        }
        Command::WouldBreak { files } => read_audit(&files).map(|e| print!("{}", crate::auditlog::would_break(&e))),
        Command::Man { dir } => man(&dir),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            use std::io::Write as _;
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "labelgate", &mut buf);
            std::io::stdout().write_all(&buf).context("writing the completion script")
        }
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("labelgate: {e:#}");
            1
        }
    }
}

/// A panic anywhere (a bug: input never panics) stops the whole daemon at
/// once instead of leaving a queue without its thread: the kernel then
/// applies the queue rules' bypass/fail behaviour to every packet. Release
/// builds abort on panic anyway (`panic = "abort"`); the hook makes debug
/// builds behave the same and logs the panic first.
fn abort_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        log::error!("labelgate panicked ({info}); aborting so the queue's fail behaviour applies");
        std::process::abort();
    }));
}

/// Test-only fault injection: with `LABELGATE_FAULT_PANIC_AFTER=N` in the
/// environment, the resolver panics on the N-th packet, so tests can check
/// what a crash does to traffic. Unset in normal use.
struct PanicAfter {
    inner: Box<dyn crate::labels::Resolver>,
    left: std::sync::atomic::AtomicU64,
}

impl crate::labels::Resolver for PanicAfter {
    fn resolve(&self, pkt: &crate::packet::PacketInfo, meta: &crate::labels::QueueMeta) -> crate::labels::Labels {
        if self.left.fetch_sub(1, Ordering::SeqCst) == 1 {
            panic!("injected fault (LABELGATE_FAULT_PANIC_AFTER)");
        }
        self.inner.resolve(pkt, meta)
    }

    fn metrics(&self) -> Vec<crate::labels::MetricFamily> {
        self.inner.metrics()
    }

    fn events(&self) -> Vec<(&'static str, u64)> {
        self.inner.events()
    }
}

/// `flow`: flow mode (TCP flows are not cached at their SYN, see
/// [`ResolverConfig::cache_syn_flows`](crate::resolve::ResolverConfig::cache_syn_flows)).
fn resolver_factory(udp_recheck: Duration, flow: bool, other_netns: bool) -> crate::engine::ResolverFactory {
    let cfg = crate::resolve::ResolverConfig {
        owner_revalidate_after: udp_recheck,
        cache_syn_flows: !flow,
        other_netns,
        ..Default::default()
    };
    let real = socket_resolver_factory(cfg);
    match std::env::var("LABELGATE_FAULT_PANIC_AFTER").ok().and_then(|v| v.parse::<u64>().ok()) {
        None => real,
        Some(n) => {
            log::warn!("fault injection: the resolver will panic on packet {n}");
            let left = Arc::new(std::sync::atomic::AtomicU64::new(n));
            Box::new(move |p: &Policy| {
                let left = std::sync::atomic::AtomicU64::new(left.load(Ordering::SeqCst));
                Box::new(PanicAfter { inner: real(p), left }) as Box<dyn crate::labels::Resolver>
            })
        }
    }
}

/// The daemon's resolver factory: one shared
/// [`SocketResolver`](crate::resolve::SocketResolver) (sock_diag, /proc,
/// socket labels, peer labels; caches kept across policy reloads), viewed
/// through each policy's peer configuration. Falls back to the NFQUEUE
/// metadata alone if the socket resolver cannot start.
///
/// Call it in the network namespace the daemon serves: its sock_diag sockets
/// belong to the namespace they are opened in.
fn socket_resolver_factory(cfg: crate::resolve::ResolverConfig) -> crate::engine::ResolverFactory {
    use crate::labels::{KernelMetaResolver, Resolver};
    use crate::resolve::{PeerConfig, SocketResolver};
    match SocketResolver::new(PeerConfig::default(), cfg) {
        Ok(core) => {
            let core = Arc::new(core);
            Box::new(move |p: &Policy| Box::new(core.for_policy(PeerConfig::from_policy(p))) as Box<dyn Resolver>)
        }
        Err(e) => {
            log::warn!("socket resolver unavailable ({e}); using NFQUEUE metadata only (secmark, uid, gid)");
            Box::new(|_: &Policy| Box::new(KernelMetaResolver) as Box<dyn Resolver>)
        }
    }
}

/// Log to stderr; under systemd (JOURNAL_STREAM set) each line carries a
/// `<N>` syslog priority prefix and no timestamp, which journald understands.
fn init_logging(level: &str) {
    use std::io::Write as _;
    let env = env_logger::Env::default().default_filter_or(level);
    let mut b = env_logger::Builder::from_env(env);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        b.format(|f, r| {
            let prio = match r.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            writeln!(f, "<{prio}>{}", r.args())
        });
    } else {
        b.format_timestamp_millis();
    }
    let _ = b.try_init();
}

fn man(dir: &std::path::Path) -> anyhow::Result<()> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cmd = Cli::command();
    let mut pages = vec![("labelgate".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands() {
        let name = format!("labelgate-{}", sub.get_name());
        let page = sub.clone().name(name.clone()).bin_name(name.clone());
        pages.push((name, page));
    }
    for (name, c) in pages {
        let path = dir.join(format!("{name}.8"));
        let mut out = Vec::new();
        clap_mangen::Man::new(c).section("8").render(&mut out)?;
        std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}

/// Print a compiled policy's summary.
pub fn summary(p: &Policy) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "mode={} default={} malformed={} rules={} sets={} address_labels={} dois={}",
        format!("{:?}", p.mode).to_lowercase(),
        p.default,
        p.malformed,
        p.rules.len(),
        p.sets.len(),
        p.address_labels.len(),
        p.dois.len()
    );
    if !p.permissive_domains.is_empty() {
        let _ = writeln!(s, "permissive domains: {}", p.permissive_domains.join(", "));
    }
    let nets = |n: &Option<crate::policy::pattern::NetSet>| {
        n.as_ref().map_or("*".to_string(), |n| n.0.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(","))
    };
    match &p.scope {
        None => {
            let _ = writeln!(s, "scope: none declared");
        }
        Some(entries) => {
            for e in entries {
                let _ = writeln!(
                    s,
                    "scope hook={} proto={} dport={} saddr={} daddr={}",
                    format!("{:?}", e.hook).to_lowercase(),
                    e.proto.map_or("*".to_string(), |p| p.to_string()),
                    e.dport.as_ref().map_or("*".to_string(), |p| p.to_string()),
                    nets(&e.saddr),
                    nets(&e.daddr),
                );
            }
        }
    }
    let mut sets: Vec<_> = p.sets.iter().collect();
    sets.sort();
    for (name, types) in sets {
        let _ = writeln!(s, "set @{name}: {}", types.join(", "));
    }
    for (i, r) in p.rules.iter().enumerate() {
        let show = |x: Option<String>| x.unwrap_or_else(|| "*".into());
        let _ = writeln!(
            s,
            "rule {:>3} line {:>4}  {:<24} hook={:<7} source={} dest={} proto={} dport={} -> {}{}{}",
            i + 1,
            r.line,
            r.name,
            format!("{:?}", r.hook).to_lowercase(),
            show(r.source.as_ref().map(|p| p.to_string())),
            show(r.dest.as_ref().map(|p| p.to_string())),
            show(r.proto.map(|p| p.to_string())),
            show(r.dport.get().map(|p| p.to_string())),
            r.verdict,
            if r.permissive { " (permissive)" } else { "" },
            if r.audit { " (audit)" } else { "" },
        );
    }
    s
}

fn check(file: &std::path::Path, strict: bool) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let p = Policy::load(file)?;
    let mut out = summary(&p);
    let unknown = crate::lint::unknown_types(&p);
    match &unknown {
        None => out.push_str("SELinux is not active here: types were not checked against a loaded policy\n"),
        Some(u) if u.is_empty() => out.push_str("all types are known to the loaded SELinux policy\n"),
        Some(_) => {}
    }
    let mut findings = crate::lint::check_findings(&p, unknown.as_deref());
    if p.asks_selinux() {
        if let Err(e) = crate::sepolicy::KernelAccess::open() {
            findings.push(crate::lint::Finding {
                severity: crate::lint::Severity::Warning,
                line: 0,
                message: format!(
                    "rules with verdict selinux cannot be decided here ({e}); `labelgate run` refuses this policy"
                ),
            });
        }
    }
    for f in &findings {
        let _ = match f.line {
            0 => writeln!(out, "{}: warning: {}", file.display(), f.message),
            line => writeln!(out, "{}:{line}: warning: {}", file.display(), f.message),
        };
    }
    let failed = strict && !findings.is_empty();
    let verdict = if failed { "FAILED" } else { "OK" };
    let strict_note = if failed { ", --strict" } else { "" };
    let _ = writeln!(out, "{}: {verdict} ({} warning(s){strict_note})", file.display(), findings.len());
    print_out(&out)?;
    if failed {
        bail!("{}: {} warning(s) with --strict", file.display(), findings.len());
    }
    Ok(())
}

/// Write command output to standard output; a closed pipe is an error, not a panic.
fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut o = std::io::stdout().lock();
    o.write_all(text.as_bytes()).and_then(|()| o.flush()).context("writing to standard output")
}

fn rules(args: cli::RulesArgs) -> anyhow::Result<()> {
    use crate::rules::{self as r, Backend, Family, RuleSpec, ScopeSource};
    if args.remove {
        r::remove(args.backend)?;
        println!("labelgate rules removed");
        return Ok(());
    }
    if args.backend == Backend::Nft && args.family != Family::Both {
        let family = format!("{:?}", args.family).to_lowercase();
        bail!("--family {family} applies to --backend iptables: nft's inet table covers both families");
    }
    let p = Policy::load(&args.policy)?;
    let queues = cli::parse_queues(&args.queues).map_err(anyhow::Error::msg).context("--queues")?;
    let fail = match (args.fail, args.no_bypass) {
        (Some(f), _) => f,
        (None, true) => Fail::Closed,
        (None, false) if p.mode == Mode::Permissive => Fail::Open,
        (None, false) => Fail::Closed,
    };
    let mut spec = RuleSpec::for_policy(&p, queues, args.flow, fail == Fail::Open);
    spec.new_only = !args.all_packets;
    if spec.source == ScopeSource::Everything {
        eprintln!(
            "labelgate: warning: {}: default = \"drop\" and no [[scope]]: these rules queue every new connection \
             on the hooks the policy names, so everything its rules do not accept is dropped when enforcing",
            args.policy.display()
        );
    }
    if args.install {
        r::install(args.backend, args.family, &spec)?;
        println!("labelgate rules installed");
    } else {
        match (args.backend, args.family) {
            (Backend::Iptables, Family::Ipv4) => print_out(&r::iptables_restore(&spec, false))?,
            (Backend::Iptables, Family::Ipv6) => print_out(&r::iptables_restore(&spec, true))?,
            (Backend::Iptables, Family::Both) => print_out(&r::iptables_script(&spec))?,
            (Backend::Nft, _) => print_out(&r::nft_install(&spec))?,
        }
    }
    Ok(())
}

fn explain(a: cli::ExplainArgs) -> anyhow::Result<()> {
    use crate::labels::Hook;
    use crate::packet::Proto;
    let p = Policy::load(&a.policy)?;
    let hook = match a.hook.as_str() {
        "input" => Hook::Input,
        "output" => Hook::Output,
        "forward" => Hook::Forward,
        "prerouting" => Hook::Prerouting,
        "postrouting" => Hook::Postrouting,
        other => bail!("--hook {other:?}: expected input, output, forward, prerouting or postrouting"),
    };
    let proto = match a.proto.as_str() {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        "icmp" => Proto::Icmp,
        "icmpv6" => Proto::Icmpv6,
        "sctp" => Proto::Sctp,
        other => bail!("--proto {other:?}: expected tcp, udp, icmp, icmpv6 or sctp"),
    };
    use crate::explain::{label_arg, End};
    let id = |v: &Option<String>, group: bool, flag: &str| {
        v.as_deref()
            .map(|s| crate::policy::resolve_id(s, group))
            .transpose()
            .map_err(anyhow::Error::msg)
            .with_context(|| flag.to_string())
    };
    let q = crate::explain::Question {
        hook,
        labels: crate::labels::Labels {
            source: label_arg(&a.source, End::Socket).context("--source")?,
            dest: label_arg(&a.dest, End::Socket).context("--dest")?,
            secmark: a
                .secmark
                .as_deref()
                .map(|s| label_arg(s, End::Secmark))
                .transpose()
                .context("--secmark")?
                .map(|l| l.context),
            peer: a.peer.as_deref().map(|s| label_arg(s, End::Peer)).transpose().context("--peer")?,
            uid: id(&a.uid, false, "--uid")?,
            gid: id(&a.gid, true, "--gid")?,
            source_process: None,
            dest_process: None,
        },
        proto,
        sport: a.sport,
        dport: a.dport,
        saddr: a.saddr,
        daddr: a.daddr,
        iif: a.iif,
        oif: a.oif,
    };
    let oracle = if p.asks_selinux() { crate::sepolicy::KernelAccess::cached().ok() } else { None };
    let oracle = oracle.as_ref().map(|o| o as &dyn crate::sepolicy::AccessOracle);
    print!("{}", crate::explain::explain_with(&p, &q, a.mode.unwrap_or(p.mode), oracle));
    Ok(())
}

fn read_audit(files: &[std::path::PathBuf]) -> anyhow::Result<Vec<crate::auditlog::Entry>> {
    use std::io::Read as _;
    let mut text = String::new();
    if files.is_empty() {
        std::io::stdin().read_to_string(&mut text).context("reading standard input")?;
    } else {
        for f in files {
            let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
            text.push_str(&String::from_utf8_lossy(&bytes));
            text.push('\n');
        }
    }
    let (entries, skipped) = crate::auditlog::parse_text(&text);
    if skipped > 0 {
        eprintln!("labelgate: skipped {skipped} line(s) that are not labelgate audit records");
    }
    Ok(entries)
}

/// The flags the signal handlers set; the main loop acts on them.
struct Signals {
    stop: Arc<AtomicBool>,
    dump: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
}

impl Signals {
    /// Install the handlers. `run` does this before anything slow, so that
    /// SIGHUP or SIGUSR1 during start-up (a large policy takes seconds to
    /// load) is kept for the main loop instead of killing the process with
    /// the signal's default action, and SIGTERM stops it cleanly.
    fn install() -> anyhow::Result<Signals> {
        let s = Signals {
            stop: Arc::new(AtomicBool::new(false)),
            dump: Arc::new(AtomicBool::new(false)),
            reload: Arc::new(AtomicBool::new(false)),
        };
        for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            // A second signal while shutting down exits at once.
            signal_hook::flag::register_conditional_shutdown(sig, 1, s.stop.clone())?;
            signal_hook::flag::register(sig, s.stop.clone())?;
        }
        signal_hook::flag::register(signal_hook::consts::SIGUSR1, s.dump.clone())?;
        signal_hook::flag::register(signal_hook::consts::SIGHUP, s.reload.clone())?;
        Ok(s)
    }
}

/// Policy reloads, each read and compiled on a thread of its own so that
/// the main loop (which acts on every signal) never waits for one. A
/// SIGHUP while a reload runs starts another once it is done.
#[derive(Default)]
struct Reloads {
    running: Option<crossbeam_channel::Receiver<Result<Policy, crate::policy::PolicyError>>>,
    again: bool,
    /// The policy the last reload replaced: packets decided with it just
    /// before the swap may still count hits on it, moved over once more at
    /// the next tick.
    retired: Option<Arc<crate::engine::Loaded>>,
}

impl Reloads {
    /// Start a reload, or queue one behind the running one. False when no
    /// reload is pending afterwards (the thread could not be started).
    fn request(&mut self, path: &std::path::Path) -> bool {
        if self.running.is_some() {
            self.again = true;
            return true;
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        let path = path.to_path_buf();
        match std::thread::Builder::new().name("reload".into()).spawn(move || {
            let _ = tx.send(Policy::load(&path));
        }) {
            Ok(_) => {
                self.running = Some(rx);
                true
            }
            Err(e) => {
                log::error!("reload refused, keeping the running policy: cannot start a thread: {e}");
                false
            }
        }
    }

    /// Called every tick: finish a reload whose policy is ready. True when
    /// a reload ended (applied or refused) and none is pending.
    fn poll(&mut self, engine: &Engine, offload: Option<&crate::offload::Offload>, path: &std::path::Path) -> bool {
        if let Some(old) = self.retired.take() {
            crate::counters::carry_hits(&old.policy, &engine.current().policy);
            drop(old);
            crate::sys::release_free_heap();
        }
        let Some(rx) = &self.running else { return false };
        let result = match rx.try_recv() {
            Ok(r) => r,
            Err(crossbeam_channel::TryRecvError::Empty) => return false,
            Err(crossbeam_channel::TryRecvError::Disconnected) => Err(crate::policy::PolicyError::File {
                origin: path.display().to_string(),
                message: "the reload thread ended".into(),
            }),
        };
        self.running = None;
        match result {
            Ok(p) if p.asks_selinux() && !engine.has_oracle() => log::error!(
                "reload refused, keeping the running policy: {} has rules with verdict selinux and the loaded \
                 SELinux policy cannot be asked here",
                path.display()
            ),
            Ok(p) => {
                let n = p.rules.len();
                let old = engine.current();
                match offload {
                    // The kernel-side accepts go before the new policy answers.
                    Some(o) => o.swap(|| engine.replace(p)),
                    None => engine.replace(p),
                }
                let kept = crate::counters::carry_hits(&old.policy, &engine.current().policy);
                self.retired = Some(old);
                log::info!(
                    "reloaded {} ({n} rules; hit counts kept for {kept} rules of the same name) policy={}",
                    path.display(),
                    engine.current().policy.digest
                );
            }
            Err(e) => log::error!("reload refused, keeping the running policy: {e}"),
        }
        if std::mem::take(&mut self.again) {
            return !self.request(path);
        }
        true
    }

    /// At exit: the last hits counted on a replaced policy.
    fn finish(mut self, engine: &Engine) {
        if let Some(old) = self.retired.take() {
            crate::counters::carry_hits(&old.policy, &engine.current().policy);
        }
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let signals = Signals::install()?;
    // Checked first: without it nothing below can work, and confinement
    // would otherwise be the first thing to fail, with a misleading message.
    if !crate::confine::has_net_admin() {
        bail!("labelgate run needs CAP_NET_ADMIN to bind NFQUEUE (run it as root)");
    }
    let queues = match (&args.queue, &args.queues) {
        (Some(q), _) => vec![*q],
        (None, Some(r)) => cli::parse_queues(r).map_err(anyhow::Error::msg).context("--queues")?,
        (None, None) => vec![0],
    };
    if args.workers > 256 {
        bail!("--workers {} is more than 256", args.workers);
    }
    let policy = Policy::load(&args.policy)?;
    crate::sys::release_free_heap();
    if signals.stop.load(Ordering::Relaxed) {
        log::info!("stop requested during start-up: exiting before binding any queue");
        return Ok(());
    }
    let mode = args.mode.unwrap_or(policy.mode);
    let fail_open = match args.fail {
        Some(Fail::Open) => true,
        Some(Fail::Closed) => false,
        None => mode == Mode::Permissive,
    };
    let target =
        args.audit.as_deref().map(|t| if t == "-" { audit::Target::Stdout } else { audit::Target::File(t.into()) });

    // Before confinement: `nft` creates the table.
    let offload = if args.offload {
        Some(crate::offload::Offload::start(args.offload_timeout_ms).context("--offload")?)
    } else {
        None
    };

    // Least privilege, before any thread exists (threads inherit it).
    if args.no_confine {
        log::warn!("--no-confine: keeping every capability");
    } else {
        let low_port = matches!(&args.metrics, Some(crate::metrics::Endpoint::Tcp(a)) if a.port() < 1024);
        let audit_file = matches!(target, Some(audit::Target::File(_)));
        let needs = crate::confine::Needs {
            audit_write: args.audit_kernel,
            low_port,
            audit_file,
            other_netns: args.other_netns,
        };
        let r = crate::confine::apply(&needs).context("cannot drop privileges (use --no-confine to run without)")?;
        log::info!("confined: {r}");
    }

    if let Some(o) = &offload {
        o.spawn().context("--offload")?;
    }

    let counters = Arc::new(Counters::default());
    let (sink, writer) = if target.is_none() && !args.audit_kernel {
        (AuditSink::disabled(counters.clone()), None)
    } else {
        if let Some(audit::Target::File(p)) = &target {
            // Opened here first only to name the path in the error.
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("cannot open the audit file {}", p.display()))?;
        }
        let cfg = audit::Config {
            target,
            kernel: args.audit_kernel,
            format: args.audit_format,
            rate: args.audit_rate,
            capacity: 65536,
        };
        let (sink, w) = audit::Writer::start(cfg, counters.clone()).context("cannot open the audit output")?;
        (sink, Some(w))
    };

    // The loaded SELinux policy, for rules with verdict "selinux": a policy
    // that has such rules is refused where it cannot be asked.
    let oracle = match crate::sepolicy::KernelAccess::cached() {
        Ok(o) => Some(Arc::new(o)),
        Err(e) if policy.asks_selinux() => {
            bail!("{}: cannot ask the loaded SELinux policy: {e}", args.policy.display())
        }
        Err(_) => None,
    };
    let mut engine = Engine::new(
        policy,
        resolver_factory(Duration::from_millis(args.udp_recheck_ms), args.flow, args.other_netns),
        args.mode,
        counters.clone(),
        sink,
    );
    if let Some(o) = oracle {
        engine = engine.with_oracle(o);
    }
    if args.flow {
        engine = engine.with_input_settling();
    }
    let engine = Arc::new(engine);
    if let Some(o) = &offload {
        o.attach(&engine);
        engine.offload_to(o.clone());
    }
    // Before the queues: every UDP flow accepted is remembered, and a
    // socket closed from now on ends its flows' conntrack pass.
    let watch = Arc::new(crate::flowwatch::FlowWatch::new(crate::flowwatch::DEFAULT_CAPACITY, counters.clone()));
    let watcher = crate::flowwatch::Watcher::start(watch.clone(), signals.stop.clone())?;
    engine.watch_flows(watch);
    let cfg = RuntimeConfig {
        queues,
        copy_range: args.copy_range,
        max_len: args.queue_maxlen,
        rcvbuf: usize::try_from(args.rcvbuf).unwrap_or(usize::MAX),
        fail_open,
        batch: 64,
        flow: args.flow,
        workers: args.workers,
    };
    // Everything that can refuse start-up comes before the queues are
    // bound: a taken metrics port must not leave packets queued to a
    // daemon that is about to exit.
    let _metrics = match &args.metrics {
        Some(ep) => {
            let server =
                crate::metrics::serve(ep, engine.clone(), cfg.queues.clone()).context("cannot serve metrics")?;
            log::info!("metrics on {ep:?}");
            Some(server)
        }
        None => None,
    };
    let runtime = Runtime::start(&cfg, engine.clone(), signals.stop.clone())?;
    log::info!(
        "labelgate running: policy {} policy={} mode {:?}",
        args.policy.display(),
        engine.current().policy.digest,
        mode
    );
    // Ready only now that every queue is bound (Type=notify in the unit).
    let notify = crate::notify::Notifier::from_env()?;
    let status = |what: &str| format!("{what}: policy {} mode {mode:?}", args.policy.display());
    crate::notify::log_err(notify.ready(&status("running")));

    let mut reloads = Reloads::default();
    while !signals.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if reloads.poll(&engine, offload.as_deref(), &args.policy) {
            crate::notify::log_err(notify.ready(&status("running")));
        }
        if signals.dump.swap(false, Ordering::Relaxed) {
            print_counters(&engine);
        }
        if signals.reload.swap(false, Ordering::Relaxed) {
            crate::notify::log_err(notify.reloading());
            if !reloads.request(&args.policy) {
                // No reload runs: systemd must not wait for one.
                crate::notify::log_err(notify.ready(&status("running")));
            }
        }
    }
    crate::notify::log_err(notify.stopping());
    if let Some(o) = &offload {
        // First: no kernel-side accept outlives the daemon.
        o.shutdown();
    }
    log::info!("stopping: answering queued packets");
    runtime.join();
    watcher.join();
    reloads.finish(&engine);
    print_counters(&engine);
    if let Some(o) = &offload {
        eprintln!("labelgate offload: {}", o.stats().summary());
    }
    drop(engine);
    if let Some(w) = writer {
        w.finish();
    }
    Ok(())
}

fn print_counters(engine: &Engine) {
    let loaded = engine.current();
    eprintln!("labelgate counters: {}", engine.counters.summary());
    let events = loaded.resolver.events();
    if !events.is_empty() {
        let line: Vec<String> = events.iter().map(|(event, v)| format!("{event}={v}")).collect();
        eprintln!("labelgate resolver: {}", line.join(" "));
    }
    for r in &loaded.policy.rules {
        eprintln!("labelgate rule {}: hits={}", r.name, r.hits.load(Ordering::Relaxed));
    }
}
