//! The policy file as written (serde's view of the TOML), before
//! validation.

use crate::policy::rule::{HookSel, MlsRelation, Mode, RuleVerdict, Verdict};
use serde::Deserialize;
use serde_spanned::Spanned;
use std::collections::BTreeMap;

/// The file as written, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub(super) mode: Option<Mode>,
    pub(super) default: Option<RuleVerdict>,
    pub(super) malformed: Option<Verdict>,
    #[serde(default)]
    pub(super) permissive_domains: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) sets: BTreeMap<String, Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub(super) rule: Vec<Spanned<RawRule>>,
    #[serde(default)]
    pub(super) address_label: Vec<Spanned<RawAddressLabel>>,
    #[serde(default)]
    pub(super) doi: Vec<Spanned<RawDoi>>,
    pub(super) scope: Option<Spanned<Vec<Spanned<RawScope>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub(super) name: Spanned<String>,
    pub(super) hook: Option<HookSel>,
    pub(super) source: Option<Spanned<String>>,
    pub(super) dest: Option<Spanned<String>>,
    pub(super) secmark: Option<Spanned<String>>,
    pub(super) peer: Option<Spanned<String>>,
    pub(super) source_level: Option<Spanned<String>>,
    pub(super) dest_level: Option<Spanned<String>>,
    pub(super) peer_level: Option<Spanned<String>>,
    pub(super) mls: Option<MlsRelation>,
    pub(super) uid: Option<Spanned<toml::Value>>,
    pub(super) gid: Option<Spanned<toml::Value>>,
    pub(super) proto: Option<Spanned<String>>,
    pub(super) sport: Option<Spanned<toml::Value>>,
    pub(super) dport: Option<Spanned<toml::Value>>,
    pub(super) saddr: Option<Spanned<toml::Value>>,
    pub(super) daddr: Option<Spanned<toml::Value>>,
    pub(super) iif: Option<Spanned<String>>,
    pub(super) oif: Option<Spanned<String>>,
    pub(super) source_exe: Option<Spanned<String>>,
    pub(super) source_unit: Option<Spanned<String>>,
    pub(super) source_cgroup: Option<Spanned<String>>,
    pub(super) source_container: Option<Spanned<String>>,
    pub(super) dest_exe: Option<Spanned<String>>,
    pub(super) dest_unit: Option<Spanned<String>>,
    pub(super) dest_cgroup: Option<Spanned<String>>,
    pub(super) dest_container: Option<Spanned<String>>,
    pub(super) verdict: RuleVerdict,
    #[serde(default)]
    pub(super) permissive: bool,
    #[serde(default)]
    pub(super) audit: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAddressLabel {
    pub(super) address: Spanned<String>,
    pub(super) context: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDoi {
    pub(super) doi: u32,
    #[serde(default = "pass")]
    pub(super) map: Spanned<String>,
}

pub(super) fn pass() -> Spanned<String> {
    Spanned::new(0..0, "pass".to_string())
}

/// Items of a value that may be a scalar or a list of scalars, as strings.
pub(super) fn scalar_items(v: &toml::Value) -> Option<Vec<String>> {
    let one = |v: &toml::Value| match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        _ => None,
    };
    match v {
        toml::Value::Array(a) => a.iter().map(one).collect(),
        v => one(v).map(|s| vec![s]),
    }
}

/// One `[[rule]]` section parsed on its own.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleSection {
    pub(super) rule: Vec<Spanned<RawRule>>,
}

/// A `[[scope]]` entry as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScope {
    pub(super) hook: Option<HookSel>,
    pub(super) proto: Option<Spanned<String>>,
    pub(super) dport: Option<Spanned<toml::Value>>,
    pub(super) saddr: Option<Spanned<toml::Value>>,
    pub(super) daddr: Option<Spanned<toml::Value>>,
}
