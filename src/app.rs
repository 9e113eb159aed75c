//! The commands behind the binary: validated configuration, start-up,
//! signal handling and shutdown. The only place errors become exit codes.

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
        Command::Check { file } => check(&file),
        Command::Rules(args) => rules(args),
        Command::Explain(args) => explain(args),
        Command::Audit2rules { files } => read_audit(&files).map(|e| print!("{}", crate::auditlog::audit2rules(&e))),
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
    fn resolve(
        &self,
        pkt: &crate::packet::PacketInfo,
        meta: &crate::labels::QueueMeta,
        payload: &[u8],
    ) -> crate::labels::Labels {
        if self.left.fetch_sub(1, Ordering::SeqCst) == 1 {
            panic!("injected fault (LABELGATE_FAULT_PANIC_AFTER)");
        }
        self.inner.resolve(pkt, meta, payload)
    }

    fn metrics(&self) -> Vec<crate::labels::MetricFamily> {
        self.inner.metrics()
    }
}

/// `flow`: flow mode (TCP flows are not cached at their SYN, see
/// [`ResolverConfig::cache_syn_flows`](crate::resolve::ResolverConfig::cache_syn_flows)).
fn resolver_factory(udp_recheck: Duration, flow: bool) -> crate::engine::ResolverFactory {
    let cfg = crate::resolve::ResolverConfig {
        owner_revalidate_after: udp_recheck,
        cache_syn_flows: !flow,
        ..Default::default()
    };
    let real = crate::resolver_factory_with(cfg);
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

fn check(file: &std::path::Path) -> anyhow::Result<()> {
    let p = Policy::load(file)?;
    print!("{}", summary(&p));
    let findings = crate::lint::lint(&p);
    for f in &findings {
        println!("{}:{}: warning: {}", file.display(), f.line, f.message);
    }
    match crate::lint::unknown_types(&p) {
        None => {
            println!("SELinux is not active here: types were not checked against a loaded policy")
        }
        Some(unknown) if unknown.is_empty() => {
            println!("all types are known to the loaded SELinux policy")
        }
        Some(unknown) => {
            for t in unknown {
                println!("{}: warning: type {t} is not known to the loaded SELinux policy", file.display());
            }
        }
    }
    println!("{}: OK ({} warning(s))", file.display(), findings.len());
    Ok(())
}

fn rules(args: cli::RulesArgs) -> anyhow::Result<()> {
    use crate::rules::{self as r, RuleSpec};
    if args.remove {
        r::remove(args.backend)?;
        println!("labelgate rules removed");
        return Ok(());
    }
    let p = Policy::load(&args.policy)?;
    let queues = cli::parse_queues(&args.queues).map_err(anyhow::Error::msg).context("--queues")?;
    let bypass = args.fail.map_or(!args.no_bypass, |f| f == cli::Fail::Open);
    let mut spec = RuleSpec::for_policy(&p, queues, args.flow, bypass);
    spec.new_only = !args.all_packets;
    if args.install {
        r::install(args.backend, &spec)?;
        println!("labelgate rules installed");
    } else {
        match args.backend {
            r::Backend::Iptables => print!("{}", r::iptables_install(&spec)),
            r::Backend::Nft => print!("{}", r::nft_install(&spec)),
        }
    }
    Ok(())
}

fn context_arg(s: &str) -> anyhow::Result<crate::context::SecurityContext> {
    let full = if s.contains(':') { s.to_string() } else { format!("system_u:system_r:{s}:s0") };
    full.parse().with_context(|| format!("bad context {s:?}"))
}

fn explain(a: cli::ExplainArgs) -> anyhow::Result<()> {
    use crate::labels::Hook;
    use crate::packet::Proto;
    let p = Policy::load(&a.policy)?;
    let hook = match a.hook.as_str() {
        "input" => Hook::Input,
        "output" => Hook::Output,
        "forward" => Hook::Forward,
        other => bail!("--hook {other:?}: expected input, output or forward"),
    };
    let proto = match a.proto.as_str() {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        "icmp" => Proto::Icmp,
        "icmpv6" => Proto::Icmpv6,
        "sctp" => Proto::Sctp,
        other => bail!("--proto {other:?}: expected tcp, udp, icmp, icmpv6 or sctp"),
    };
    let q = crate::explain::Question {
        hook,
        source: context_arg(&a.source)?,
        dest: context_arg(&a.dest)?,
        secmark: a.secmark.as_deref().map(context_arg).transpose()?,
        peer: a.peer.as_deref().map(context_arg).transpose()?,
        uid: a.uid,
        gid: a.gid,
        proto,
        sport: a.sport,
        dport: a.dport,
        saddr: a.saddr,
        daddr: a.daddr,
        iif: a.iif,
        oif: a.oif,
    };
    print!("{}", crate::explain::explain(&p, &q, a.mode.unwrap_or(p.mode)));
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

fn run(args: RunArgs) -> anyhow::Result<()> {
    let policy = Policy::load(&args.policy)?;
    crate::sys::release_free_heap();
    let queues = match (&args.queue, &args.queues) {
        (Some(q), _) => vec![*q],
        (None, Some(r)) => cli::parse_queues(r).map_err(anyhow::Error::msg).context("--queues")?,
        (None, None) => vec![0],
    };
    let mode = args.mode.unwrap_or(policy.mode);
    let fail_open = match args.fail {
        Some(Fail::Open) => true,
        Some(Fail::Closed) => false,
        None => mode == Mode::Permissive,
    };
    if args.workers > 256 {
        bail!("--workers {} is more than 256", args.workers);
    }

    // Least privilege, before any thread exists (threads inherit it).
    if args.no_confine {
        log::warn!("--no-confine: keeping every capability");
    } else {
        let low_port = matches!(&args.metrics, Some(crate::metrics::Endpoint::Tcp(a)) if a.port() < 1024);
        let needs = crate::confine::Needs { audit_write: args.audit_kernel, low_port };
        let r = crate::confine::apply(&needs).context("cannot drop privileges (use --no-confine to run without)")?;
        log::info!("confined: {r}");
    }

    let counters = Arc::new(Counters::default());
    let target =
        args.audit.as_deref().map(|t| if t == "-" { audit::Target::Stdout } else { audit::Target::File(t.into()) });
    let (sink, writer) = if target.is_none() && !args.audit_kernel {
        (AuditSink::disabled(counters.clone()), None)
    } else {
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

    let stop = Arc::new(AtomicBool::new(false));
    let dump = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // A second signal while shutting down exits at once.
        signal_hook::flag::register_conditional_shutdown(sig, 1, stop.clone())?;
        signal_hook::flag::register(sig, stop.clone())?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, dump.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())?;

    let engine = Arc::new(Engine::new(
        policy,
        resolver_factory(Duration::from_millis(args.udp_recheck_ms), args.flow),
        args.mode,
        counters.clone(),
        sink,
    ));
    let cfg = RuntimeConfig {
        queues,
        copy_range: args.copy_range,
        max_len: args.queue_maxlen,
        rcvbuf: args.rcvbuf,
        fail_open,
        batch: 64,
        flow: args.flow,
        workers: args.workers,
    };
    let runtime = Runtime::start(&cfg, engine.clone(), stop.clone())?;
    if let Some(ep) = &args.metrics {
        crate::metrics::serve(ep, engine.clone(), cfg.queues.clone()).context("cannot serve metrics")?;
        log::info!("metrics on {ep:?}");
    }
    log::info!("labelgate running: policy {} mode {:?}", args.policy.display(), mode);
    // Ready only now that every queue is bound (Type=notify in the unit).
    let notify = crate::notify::Notifier::from_env()?;
    let status = |what: &str| format!("{what}: policy {} mode {mode:?}", args.policy.display());
    crate::notify::log_err(notify.ready(&status("running")));

    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if dump.swap(false, Ordering::Relaxed) {
            print_counters(&engine);
        }
        if reload.swap(false, Ordering::Relaxed) {
            crate::notify::log_err(notify.reloading());
            match Policy::load(&args.policy) {
                Ok(p) => {
                    let n = p.rules.len();
                    engine.replace(p);
                    crate::sys::release_free_heap();
                    log::info!("reloaded {} ({n} rules)", args.policy.display());
                }
                Err(e) => log::error!("reload refused, keeping the running policy: {e}"),
            }
            crate::notify::log_err(notify.ready(&status("running")));
        }
    }
    crate::notify::log_err(notify.stopping());
    log::info!("stopping: answering queued packets");
    runtime.join();
    print_counters(&engine);
    drop(engine);
    if let Some(w) = writer {
        w.finish();
    }
    Ok(())
}

fn print_counters(engine: &Engine) {
    let loaded = engine.current();
    eprintln!("labelgate counters: {}", engine.counters.summary());
    for (_, _, rows) in loaded.resolver.metrics() {
        let line: Vec<String> = rows
            .iter()
            .map(|(labels, v)| format!("{}={v}", labels.trim_start_matches("{event=\"").trim_end_matches("\"}")))
            .collect();
        eprintln!("labelgate resolver: {}", line.join(" "));
    }
    for r in &loaded.policy.rules {
        eprintln!("labelgate rule {}: hits={}", r.name, r.hits.load(Ordering::Relaxed));
    }
}
