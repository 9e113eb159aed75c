//! Generation, installation and removal of the firewall rules that divert
//! packets to labelgate's queues, for iptables and nftables.
//!
//! labelgate only ever touches its own chains (iptables: `LABELGATE_*` in the
//! `security` table, jumped to from the built-in chains) or its own table
//! (nftables: `inet labelgate`); other rules are left as they are.

use crate::policy::{HookSel, Policy};
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};

/// Packet/connection mark bits reserved for flow mode. Drops are not
/// remembered: a dropped first packet never confirms its connection, so a
/// retry is decided afresh.
pub const FLOW_MARK_MASK: u32 = 0x0060_0000;
/// Mark of a flow labelgate accepted.
pub const FLOW_MARK_ACCEPT: u32 = 0x0020_0000;

/// Which firewall to generate for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    Iptables,
    Nft,
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct RuleSpec {
    pub queues: Vec<u16>,
    /// Connmark fast path: queue only new and related packets, let the rest
    /// of an accepted flow pass (and drop the rest of a dropped one) in the kernel.
    pub flow: bool,
    /// Queue only the first packet of each connection (ignored in flow mode,
    /// which does that and more). Off: every packet is queued.
    pub new_only: bool,
    /// Let packets pass when no labelgate is bound to the queue.
    pub bypass: bool,
    pub input: bool,
    pub output: bool,
    pub forward: bool,
}

impl RuleSpec {
    /// Hooks to queue, from the hooks the policy's rules name (`any` or an
    /// empty policy queue input and output).
    pub fn for_policy(p: &Policy, queues: Vec<u16>, flow: bool, bypass: bool) -> RuleSpec {
        let mut s = RuleSpec { queues, flow, new_only: true, bypass, input: false, output: false, forward: false };
        for r in &p.rules {
            match r.hook {
                HookSel::Input => s.input = true,
                HookSel::Output => s.output = true,
                HookSel::Forward => s.forward = true,
                HookSel::Any => {
                    s.input = true;
                    s.output = true;
                }
            }
        }
        if !(s.input || s.output || s.forward) {
            s.input = true;
            s.output = true;
        }
        s
    }

    fn hooks(&self) -> Vec<(&'static str, &'static str, &'static str)> {
        // (built-in chain, labelgate chain, nft hook)
        let mut v = Vec::new();
        if self.input {
            v.push(("INPUT", "LABELGATE_IN", "input"));
        }
        if self.output {
            v.push(("OUTPUT", "LABELGATE_OUT", "output"));
        }
        if self.forward {
            v.push(("FORWARD", "LABELGATE_FWD", "forward"));
        }
        v
    }

    fn iptables_target(&self) -> String {
        let mut t = match self.queues.as_slice() {
            [q] => format!("-j NFQUEUE --queue-num {q}"),
            [first, .., last] => {
                format!("-j NFQUEUE --queue-balance {first}:{last} --queue-cpu-fanout")
            }
            [] => "-j NFQUEUE --queue-num 0".to_string(),
        };
        if self.bypass {
            t.push_str(" --queue-bypass");
        }
        t
    }

    fn nft_queue(&self) -> String {
        let mut flags = Vec::new();
        let num = match self.queues.as_slice() {
            [q] => q.to_string(),
            [first, .., last] => {
                flags.push("fanout");
                format!("{first}-{last}")
            }
            [] => "0".to_string(),
        };
        if self.bypass {
            flags.push("bypass");
        }
        if flags.is_empty() {
            format!("queue num {num}")
        } else {
            format!("queue flags {} to {num}", flags.join(","))
        }
    }
}

/// The iptables-restore text that installs labelgate's chains (for
/// `iptables-restore --noflush` and `ip6tables-restore --noflush`).
pub fn iptables_install(spec: &RuleSpec) -> String {
    let mut s = String::from(
        "# labelgate queue rules (security table: after SECMARK labelling in mangle and security)\n*security\n",
    );
    for (_, chain, _) in spec.hooks() {
        let _ = writeln!(s, ":{chain} - [0:0]");
    }
    for (builtin, chain, _) in spec.hooks() {
        let _ = writeln!(s, "-A {builtin} -j {chain}");
    }
    let target = spec.iptables_target();
    for (_, chain, _) in spec.hooks() {
        if spec.flow {
            let (acc, mask) = (FLOW_MARK_ACCEPT, FLOW_MARK_MASK);
            // An accepted connection bypasses the queue.
            let _ = writeln!(s, "-A {chain} -m connmark --mark {acc:#x}/{mask:#x} -j RETURN");
            // A packet labelgate accepted comes back (NF_REPEAT) with the
            // accept bit in its mark: remember it on the connection.
            let _ = writeln!(
                s,
                "-A {chain} -m mark --mark {acc:#x}/{mask:#x} -j CONNMARK --save-mark --nfmask {mask:#x} --ctmask {mask:#x}"
            );
            let _ = writeln!(s, "-A {chain} -m mark --mark {acc:#x}/{mask:#x} -j RETURN");
            let _ = writeln!(s, "-A {chain} -m conntrack --ctstate NEW,RELATED {target}");
        } else if spec.new_only {
            let _ = writeln!(s, "-A {chain} -m conntrack --ctstate NEW {target}");
        } else {
            let _ = writeln!(s, "-A {chain} {target}");
        }
    }
    s.push_str("COMMIT\n");
    s
}

/// The nft script that atomically (re)creates labelgate's table.
pub fn nft_install(spec: &RuleSpec) -> String {
    let mut s = String::from(
        "# labelgate queue rules: own table, priority after the security table (SECMARK)\n\
         table inet labelgate {}\ndelete table inet labelgate\ntable inet labelgate {\n",
    );
    let queue = spec.nft_queue();
    for (_, chain, hook) in spec.hooks() {
        let chain = chain.to_lowercase();
        let _ = writeln!(s, "  chain {chain} {{\n    type filter hook {hook} priority security + 10; policy accept;");
        if spec.flow {
            let (acc, mask, keep) = (FLOW_MARK_ACCEPT, FLOW_MARK_MASK, !FLOW_MARK_MASK);
            let _ = writeln!(s, "    ct mark and {mask:#x} == {acc:#x} return");
            let _ = writeln!(
                s,
                "    meta mark and {mask:#x} == {acc:#x} ct mark set ct mark and {keep:#x} or {acc:#x} return"
            );
            let _ = writeln!(s, "    ct state new,related {queue}");
        } else if spec.new_only {
            let _ = writeln!(s, "    ct state new {queue}");
        } else {
            let _ = writeln!(s, "    {queue}");
        }
        s.push_str("  }\n");
    }
    s.push_str("}\n");
    s
}

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

/// Install the rules: removes labelgate's previous rules first, then applies
/// the new set in one transaction per address family.
pub fn install(backend: Backend, spec: &RuleSpec) -> Result<(), RulesError> {
    match backend {
        Backend::Iptables => {
            remove(backend)?;
            let text = iptables_install(spec);
            pipe("iptables-restore", &["--noflush"], &text)?;
            if let Err(e) = pipe("ip6tables-restore", &["--noflush"], &text) {
                // Keep the two families consistent: undo IPv4 if IPv6 failed.
                let _ = remove(backend);
                return Err(e);
            }
            Ok(())
        }
        Backend::Nft => pipe("nft", &["-f", "-"], &nft_install(spec)),
    }
}

/// Remove labelgate's rules (and only those). Removing what is not there is
/// not an error.
pub fn remove(backend: Backend) -> Result<(), RulesError> {
    match backend {
        Backend::Iptables => {
            for tool in ["iptables", "ip6tables"] {
                for (builtin, chain) in
                    [("INPUT", "LABELGATE_IN"), ("OUTPUT", "LABELGATE_OUT"), ("FORWARD", "LABELGATE_FWD")]
                {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(queues: Vec<u16>, flow: bool) -> RuleSpec {
        RuleSpec { queues, flow, new_only: true, bypass: true, input: true, output: true, forward: false }
    }

    #[test]
    fn iptables_text() {
        let t = iptables_install(&spec(vec![0], false));
        assert!(t.contains("*security\n:LABELGATE_IN - [0:0]\n:LABELGATE_OUT - [0:0]\n"));
        assert!(t.contains("-A OUTPUT -j LABELGATE_OUT\n"));
        assert!(t.contains("-A LABELGATE_IN -m conntrack --ctstate NEW -j NFQUEUE --queue-num 0 --queue-bypass\n"));
        assert!(t.ends_with("COMMIT\n"));
        assert!(!t.contains("FORWARD"));
        let t = iptables_install(&spec(vec![2, 3], true));
        assert!(t.contains("-A LABELGATE_OUT -m connmark --mark 0x200000/0x600000 -j RETURN\n"));
        assert!(t.contains("-A LABELGATE_OUT -m mark --mark 0x200000/0x600000 -j CONNMARK --save-mark --nfmask 0x600000 --ctmask 0x600000\n"));
        assert!(t.contains("--ctstate NEW,RELATED -j NFQUEUE --queue-balance 2:3 --queue-cpu-fanout --queue-bypass\n"));
    }

    #[test]
    fn nft_text() {
        let t = nft_install(&spec(vec![0, 1], true));
        assert!(t.starts_with("# labelgate"));
        assert!(t.contains("table inet labelgate {}\ndelete table inet labelgate\n"));
        assert!(t.contains("type filter hook output priority security + 10; policy accept;"));
        assert!(t.contains("ct state new,related queue flags fanout,bypass to 0-1\n"));
        assert!(
            t.contains("meta mark and 0x600000 == 0x200000 ct mark set ct mark and 0xff9fffff or 0x200000 return\n")
        );
        let t = nft_install(&RuleSpec { bypass: false, ..spec(vec![4], false) });
        assert!(t.contains("ct state new queue num 4\n"));
    }

    #[test]
    fn hooks_follow_the_policy() {
        let p = Policy::from_toml("[[rule]]\nname = \"a\"\nhook = \"forward\"\nverdict = \"drop\"\n", "t").unwrap();
        let s = RuleSpec::for_policy(&p, vec![0], false, true);
        assert!((s.forward, s.input, s.output) == (true, false, false));
        let p = Policy::from_toml("", "t").unwrap();
        let s = RuleSpec::for_policy(&p, vec![0], false, true);
        assert!(s.input && s.output && !s.forward);
    }
}
