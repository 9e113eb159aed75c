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
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Check { file } => check(&file),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("labelgate: {e:#}");
            1
        }
    }
}

fn init_logging(level: &str) {
    let env = env_logger::Env::default().default_filter_or(level);
    let _ = env_logger::Builder::from_env(env)
        .format_timestamp_millis()
        .try_init();
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
            show(r.dport.as_ref().map(|p| p.to_string())),
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
    println!("{}: OK", file.display());
    Ok(())
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let policy = Policy::load(&args.policy)?;
    let queues = match (&args.queue, &args.queues) {
        (Some(q), _) => vec![*q],
        (None, Some(r)) => cli::parse_queues(r)
            .map_err(anyhow::Error::msg)
            .context("--queues")?,
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

    let counters = Arc::new(Counters::default());
    let (sink, writer) = match args.audit.as_deref() {
        None => (AuditSink::disabled(counters.clone()), None),
        Some(target) => {
            let target = if target == "-" {
                audit::Target::Stdout
            } else {
                audit::Target::File(target.into())
            };
            let cfg = audit::Config {
                target,
                format: args.audit_format,
                rate: args.audit_rate,
                capacity: 65536,
            };
            let (sink, w) = audit::Writer::start(cfg, counters.clone())
                .context("cannot open the audit output")?;
            (sink, Some(w))
        }
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
        Box::new(crate::resolver_for),
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
    };
    let runtime = Runtime::start(&cfg, engine.clone(), stop.clone())?;
    log::info!(
        "labelgate running: policy {} mode {:?}",
        args.policy.display(),
        mode
    );

    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if dump.swap(false, Ordering::Relaxed) {
            print_counters(&engine);
        }
        if reload.swap(false, Ordering::Relaxed) {
            match Policy::load(&args.policy) {
                Ok(p) => {
                    let n = p.rules.len();
                    engine.replace(p);
                    log::info!("reloaded {} ({n} rules)", args.policy.display());
                }
                Err(e) => log::error!("reload refused, keeping the running policy: {e}"),
            }
        }
    }
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
    for r in &loaded.policy.rules {
        eprintln!(
            "labelgate rule {}: hits={}",
            r.name,
            r.hits.load(Ordering::Relaxed)
        );
    }
}
