//! Installing and removing the rules: the rendered text piped to
//! `iptables-restore`, `ip6tables-restore` or `nft`, and removal of
//! labelgate's own chains and table only.

use super::iptables::iptables_restore;
use super::nft::nft_install;
use super::spec::{Backend, Chain, Family, RuleSpec};
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
/// family asked for gets one `iptables-restore --noflush` run that
/// declares labelgate's chains (which empties a chain that exists) and
/// fills them, one `COMMIT` per table (`security`, and `mangle` for
/// PREROUTING and POSTROUTING), so a table's queue rules are replaced at
/// once and never absent in between (a reload must not let packets pass
/// unqueued). With iptables-nft the whole run is one transaction: a run
/// that fails leaves that family's previous rules in place. With
/// iptables-legacy each table is committed on its own: a failure in
/// `mangle` leaves the new `security` rules with the previous `mangle`
/// ones.
/// Chains the new rules no longer use, and the families not asked for, are
/// removed afterwards. nft: its `inet` table, both families, atomically.
pub fn install(backend: Backend, family: Family, spec: &RuleSpec) -> Result<(), RulesError> {
    match backend {
        Backend::Iptables => {
            for (v6, tool, restore) in
                [(false, "iptables", "iptables-restore"), (true, "ip6tables", "ip6tables-restore")]
            {
                if !(family == Family::Both || v6 == (family == Family::Ipv6)) {
                    for c in Chain::ALL {
                        remove_chain(tool, c)?;
                    }
                    continue;
                }
                let text = iptables_restore(spec, v6);
                let mut input = String::with_capacity(text.len());
                for line in text.lines() {
                    // A jump that is already there is not added twice.
                    let present = Chain::ALL.into_iter().find(|c| {
                        let (builtin, chain, _) = c.names();
                        line == format!("-A {builtin} -j {chain}")
                    });
                    if let Some(c) = present {
                        let (builtin, chain, _) = c.names();
                        if run(tool, &["-t", c.table(), "-C", builtin, "-j", chain])? {
                            continue;
                        }
                    }
                    input.push_str(line);
                    input.push('\n');
                }
                pipe(restore, &["--noflush"], &input)?;
                for c in Chain::ALL {
                    if !text.contains(&format!("\n:{} - [0:0]\n", c.names().1)) {
                        remove_chain(tool, c)?;
                    }
                }
            }
            Ok(())
        }
        Backend::Nft => pipe("nft", &["-f", "-"], &nft_install(spec)),
    }
}

/// Remove one of labelgate's chains and every jump to it (`tool`: iptables
/// or ip6tables); a chain that is not there is not an error.
fn remove_chain(tool: &str, c: Chain) -> Result<(), RulesError> {
    let (builtin, chain, _) = c.names();
    let table = c.table();
    while run(tool, &["-t", table, "-C", builtin, "-j", chain])? {
        run(tool, &["-t", table, "-D", builtin, "-j", chain])?;
    }
    if run(tool, &["-t", table, "-L", chain, "-n"])? {
        run(tool, &["-t", table, "-F", chain])?;
        if !run(tool, &["-t", table, "-X", chain])? {
            return Err(RulesError::Failed {
                cmd: format!("{tool} -t {table} -X {chain}"),
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
                for c in Chain::ALL {
                    remove_chain(tool, c)?;
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
