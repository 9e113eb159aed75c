//! One audit record: the [`Record`] the packet path builds, and its
//! USER_AVC and JSON renderings (the fields ausearch, audit2allow and
//! labelgate's own readers parse).

use crate::labels::{Hook, Labels, ProcessInfo};
use crate::packet::PacketInfo;
use crate::policy::PolicyDigest;
use crate::sepolicy::{permission, CLASS};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// Output format of audit records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `type=USER_AVC msg=audit(...)` lines, read by ausearch and audit2allow.
    Avc,
    /// One JSON object per line with the same fields.
    Json,
}

/// Whether the record is for a denial or an audited grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Denied,
    Granted,
}

/// The word that opens a record's message: `avc:` for denials, which the
/// SELinux tools read as access vector denials, and `labelgate:` for
/// grants, which no tool mistakes for one (`audit2allow -w` reports every
/// `avc:` record it reads as a missing allow rule, granted or not).
pub fn message_tag(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Denied => "avc:  denied",
        Outcome::Granted => "labelgate:  granted",
    }
}

/// One decision to record.
#[derive(Clone, Debug)]
pub struct Record {
    pub time: SystemTime,
    pub outcome: Outcome,
    pub hook: Hook,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub proto: Option<u8>,
    /// Interface index (input interface on input/forward, output interface otherwise).
    pub ifindex: u32,
    /// What the decision was made on: both ends' labels and processes,
    /// the secmark, the peer label and the sending socket's owner.
    pub labels: Labels,
    pub rule: String,
    pub permissive: bool,
    /// Why a packet could not be parsed, for malformed packets.
    pub malformed: Option<&'static str>,
    /// The digest of the policy that decided.
    pub policy: PolicyDigest,
}

impl Record {
    /// Address and port facts from a parsed packet.
    pub fn set_packet(&mut self, p: &PacketInfo) {
        self.src = Some(p.src);
        self.dst = Some(p.dst);
        self.sport = p.sport;
        self.dport = p.dport;
        self.proto = Some(p.proto.number());
    }
}

/// Static facts about the writer put in every record.
#[derive(Clone, Debug)]
pub struct Identity {
    pub pid: u32,
    pub subj: String,
    pub exe: String,
}

impl Identity {
    /// labelgate's own pid, SELinux context (or `unconfined` when SELinux is
    /// off) and executable path.
    pub fn current() -> Identity {
        let subj = std::fs::read_to_string("/proc/self/attr/current")
            .ok()
            .map(|s| s.trim_end_matches(['\0', '\n']).to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unconfined".to_string());
        let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "labelgate".to_string());
        Identity { pid: std::process::id(), subj, exe }
    }
}

pub(super) fn quote_safe(s: &str) -> String {
    s.chars().map(|c| if c == '"' || c == '\'' || c.is_control() { '?' } else { c }).collect()
}

/// `unit`, `cgroup`, `container` and `netns` of one end's process, each
/// when known, their names after `prefix` (`t` for the destination). Unit
/// and cgroup are quoted with spaces also replaced by `?`, so that no
/// reader splits a field inside them; a container id is hex, the network
/// namespace its nsfs inode (decimal).
fn write_cgroup(s: &mut String, prefix: &str, p: &ProcessInfo) {
    let word = |v: &str| quote_safe(v).replace(' ', "?");
    if let Some(u) = p.unit() {
        let _ = write!(s, " {prefix}unit=\"{}\"", word(u));
    }
    if let Some(c) = p.cgroup_path() {
        let _ = write!(s, " {prefix}cgroup=\"{}\"", word(c));
    }
    if let Some(c) = p.container() {
        let _ = write!(s, " {prefix}container={c}");
    }
    if let Some(n) = p.netns {
        let _ = write!(s, " {prefix}netns={n}");
    }
}

/// One end's process as JSON: pid, comm, exe, and unit, cgroup,
/// container and netns (`null` when unknown).
fn process_json(p: &ProcessInfo) -> serde_json::Value {
    serde_json::json!({
        "pid": p.pid,
        "comm": &*p.comm,
        "exe": &*p.exe,
        "unit": p.unit(),
        "cgroup": p.cgroup_path(),
        "container": p.container(),
        "netns": p.netns,
    })
}

pub(super) fn proto_name(n: u8) -> String {
    crate::packet::Proto::from_number(n).to_string()
}

/// Render a record as a USER_AVC line. `serial` is the audit serial number,
/// `netif` the interface name.
pub fn format_avc(r: &Record, id: &Identity, serial: u64, netif: Option<&str>) -> String {
    let t = r.time.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!(
        "type=USER_AVC msg=audit({}.{:03}:{}): pid={} uid=0 auid=4294967295 ses=4294967295 subj={} msg='{}'",
        t.as_secs(),
        t.subsec_millis(),
        serial,
        id.pid,
        id.subj,
        avc_message(r, id, netif)
    )
}

/// The `avc:  denied  { send } for ...` text inside a USER_AVC record (what
/// the kernel's audit subsystem wraps itself when sent AUDIT_USER_AVC);
/// a grant reads `labelgate:  granted  { send } for ...`.
pub fn avc_message(r: &Record, id: &Identity, netif: Option<&str>) -> String {
    let l = &r.labels;
    let mut s = String::with_capacity(512);
    let _ = write!(s, "{}  {{ {} }} for ", message_tag(r.outcome), permission(r.hook));
    if let Some(p) = &l.source_process {
        let _ = write!(s, " pid={} comm=\"{}\" path=\"{}\"", p.pid, quote_safe(&p.comm), quote_safe(&p.exe));
        write_cgroup(&mut s, "", p);
    }
    if let Some(p) = &l.dest_process {
        let _ = write!(s, " tpid={} tcomm=\"{}\"", p.pid, quote_safe(&p.comm));
        write_cgroup(&mut s, "t", p);
    }
    // `saddr` would be read by ausearch -i as a hex sockaddr, and `proto` as a
    // number; see docs/AUDIT.md for why these names and forms were chosen.
    if let Some(a) = r.src {
        let _ = write!(s, " src_addr={a}");
    }
    if let Some(p) = r.sport {
        let _ = write!(s, " src={p}");
    }
    if let Some(a) = r.dst {
        let _ = write!(s, " dst_addr={a}");
    }
    if let Some(p) = r.dport {
        let _ = write!(s, " dest={p}");
    }
    if let Some(n) = netif {
        let _ = write!(s, " netif={}", quote_safe(n));
    }
    if let Some(p) = r.proto {
        let _ = write!(s, " proto={p}");
    }
    if let Some(u) = l.uid {
        let _ = write!(s, " ouid={u}");
    }
    if let Some(g) = l.gid {
        let _ = write!(s, " ogid={g}");
    }
    if let Some(m) = &l.secmark {
        let _ = write!(s, " secmark={m}");
    }
    if let Some(p) = &l.peer {
        let _ = write!(s, " peer={} peer_label={}", p.context, p.origin.token());
    }
    if let Some(m) = r.malformed {
        let _ = write!(s, " malformed={m}");
    }
    let _ = write!(
        s,
        " slabel={} tlabel={} scontext={} tcontext={} tclass={CLASS} permissive={} rule={} policy={} exe=\"{}\" sauid=0 hostname=? addr=? terminal=?",
        l.source.origin.token(),
        l.dest.origin.token(),
        l.source.context,
        l.dest.context,
        u8::from(r.permissive),
        quote_safe(&r.rule),
        r.policy,
        quote_safe(&id.exe),
    );
    s
}

/// Render a record as one JSON object (fields in docs/AUDIT.md). Fields
/// about labelgate itself are `labelgate_*`, those about the sending
/// socket's owner `sender_*`, so neither is taken for the other.
pub fn format_json(r: &Record, id: &Identity, serial: u64, netif: Option<&str>) -> String {
    let l = &r.labels;
    let t = r.time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let v = serde_json::json!({
        "time": format!("{}.{:03}", t.as_secs(), t.subsec_millis()),
        "serial": serial,
        "labelgate_pid": id.pid,
        "labelgate_subj": id.subj,
        "labelgate_exe": id.exe,
        "policy": r.policy.to_string(),
        "outcome": match r.outcome { Outcome::Denied => "denied", Outcome::Granted => "granted" },
        "tclass": CLASS,
        "perm": permission(r.hook),
        "hook": r.hook.to_string(),
        "process": l.source_process.as_ref().map(process_json),
        "dest_process": l.dest_process.as_ref().map(process_json),
        "saddr": r.src.map(|a| a.to_string()),
        "src": r.sport,
        "daddr": r.dst.map(|a| a.to_string()),
        "dest": r.dport,
        "netif": netif,
        "proto": r.proto.map(proto_name),
        "sender_uid": l.uid,
        "sender_gid": l.gid,
        "secmark": l.secmark.as_ref().map(|c| c.to_string()),
        "peer": l.peer.as_ref().map(|p| p.context.to_string()),
        "peer_label": l.peer.as_ref().map(|p| p.origin.token()),
        "malformed": r.malformed,
        "slabel": l.source.origin.token(),
        "tlabel": l.dest.origin.token(),
        "scontext": l.source.context.to_string(),
        "tcontext": l.dest.context.to_string(),
        "permissive": u8::from(r.permissive),
        "rule": r.rule,
    });
    v.to_string()
}
