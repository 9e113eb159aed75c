//! Installing and removing the rules: the rendered text piped to
//! `iptables-restore`, `ip6tables-restore` or `nft`, and removal of
//! labelgate's own chains and table only.

use super::iptables::iptables_restore;
use super::nft::nft_install;
use super::spec::{Backend, Family, RuleSpec};
use std::io::Write as _;
use std::process::{Command, Stdio};

/// Why installing or removing rules failed.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("cannot run {cmd}: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("{cmd} failed: {stderr}")]
    Failed { cmd: String, stderr: String },
}

fn pipe(cmd: &str, args: &[&str], input: &str) -> Result<(), RulesError> {
    let spawn_err = |source| RulesError::Spawn { cmd: cmd.to_string(), source };
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).map_err(spawn_err)?;
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    if !out.status.success() {
        return Err(RulesError::Failed {
            cmd: format!("{cmd} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

fn run(cmd: &str, args: &[&str]) -> Result<bool, RulesError> {
    let st = Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|source| RulesError::Spawn { cmd: cmd.to_string(), source })?;
    Ok(st.success())
}

/// Install the rules, replacing labelgate's previous ones. iptables: each
/// family asked for gets one `iptables-restore --noflush` transaction that
/// declares labelgate's chains (which empties a chain that exists) and
/// fills them, so a family's queue rules are replaced at once and never
/// absent in between (a reload must not let packets pass unqueued); a
/// transaction that fails leaves that family's previous rules in place.
/// Chains the new rules no longer use, and the families not asked for, are
/// removed afterwards. nft: its `inet` table, both families, atomically.
pub fn install(backend: Backend, family: Family, spec: &RuleSpec) -> Result<(), RulesError> {
    match backend {
        Backend::Iptables => {
            for (v6, tool, restore) in
                [(false, "iptables", "iptables-restore"), (true, "ip6tables", "ip6tables-restore")]
            {
                if !(family == Family::Both || v6 == (family == Family::Ipv6)) {
                    for (builtin, chain) in CHAINS {
                        remove_chain(tool, builtin, chain)?;
                    }
                    continue;
                }
                let text = iptables_restore(spec, v6);
                let mut input = String::with_capacity(text.len());
                for line in text.lines() {
                    // A jump that is already there is not added twice.
                    let present = CHAINS.iter().find(|(b, c)| line == format!("-A {b} -j {c}"));
                    if let Some((builtin, chain)) = present {
                        if run(tool, &["-t", "security", "-C", builtin, "-j", chain])? {
                            continue;
                        }
                    }
                    input.push_str(line);
                    input.push('\n');
                }
                pipe(restore, &["--noflush"], &input)?;
                for (builtin, chain) in CHAINS {
                    if !text.contains(&format!("\n:{chain} - [0:0]\n")) {
                        remove_chain(tool, builtin, chain)?;
                    }
                }
            }
            Ok(())
        }
        Backend::Nft => pipe("nft", &["-f", "-"], &nft_install(spec)),
    }
}

/// labelgate's iptables chains and the built-in chains that jump to them.
const CHAINS: [(&str, &str); 3] =
    [("INPUT", "LABELGATE_IN"), ("OUTPUT", "LABELGATE_OUT"), ("FORWARD", "LABELGATE_FWD")];

/// Remove one of labelgate's chains and every jump to it (`tool`: iptables
/// or ip6tables); a chain that is not there is not an error.
fn remove_chain(tool: &str, builtin: &str, chain: &str) -> Result<(), RulesError> {
    while run(tool, &["-t", "security", "-C", builtin, "-j", chain])? {
        run(tool, &["-t", "security", "-D", builtin, "-j", chain])?;
    }
    if run(tool, &["-t", "security", "-L", chain, "-n"])? {
        run(tool, &["-t", "security", "-F", chain])?;
        if !run(tool, &["-t", "security", "-X", chain])? {
            return Err(RulesError::Failed {
                cmd: format!("{tool} -t security -X {chain}"),
                stderr: "chain still referenced".into(),
            });
        }
    }
    Ok(())
}

/// Remove labelgate's rules (and only those). Removing what is not there is
/// not an error.
pub fn remove(backend: Backend) -> Result<(), RulesError> {
    match backend {
        Backend::Iptables => {
            for tool in ["iptables", "ip6tables"] {
                for (builtin, chain) in CHAINS {
                    remove_chain(tool, builtin, chain)?;
                }
            }
            Ok(())
        }
        Backend::Nft => {
            if run("nft", &["list", "table", "inet", "labelgate"])? {
                pipe("nft", &["-f", "-"], "delete table inet labelgate\n")?;
            }
            Ok(())
        }
    }
}
