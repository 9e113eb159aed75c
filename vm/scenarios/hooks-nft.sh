#!/bin/bash
# Extra: `labelgate rules --backend nft` queueing PREROUTING and POSTROUTING
# (nftables' native `queue`, which only this VM kernel has), new connections
# only and --flow: a policy whose one rule names that hook lets uid 0 reach
# tcp/5432 on loopback and refuses uid 65534 there (at PREROUTING the uid
# comes from the client's socket, looked up: the kernel gives none there).
# --remove must leave nothing.
set -euo pipefail
. "$(dirname "$0")/../guest/common.sh"
scenario_begin hooks-nft
lg_require
tcp_echo_server "$CTX_PG" 5432
for hook in prerouting postrouting; do
  perm=recv; [ "$hook" = postrouting ] && perm=send
  for flow in "" --flow; do
    tag="nft-$hook${flow:+-flow}"
    POL="$(write_policy "policy-$hook" <<TOML
mode = "enforcing"
default = "drop"
[[rule]]
name = "root-to-db"
hook = "$hook"
uid = 0
proto = "tcp"
dport = 5432
verdict = "accept"
TOML
)"
    AUDIT="$LG_WORK/hooks-nft-$tag-audit.log"
    if "$LG_BIN" rules --policy "$POL" --backend nft $flow --no-bypass --install >"$LG_WORK/hooks-nft-$tag-install.log" 2>&1; then
      pass "$tag-install"
    else
      fail "$tag-install" "$(tail -n3 "$LG_WORK/hooks-nft-$tag-install.log")"; continue
    fi
    nft list table inet labelgate >"$LG_WORK/hooks-nft-$tag-ruleset.txt" 2>&1 || true
    check_grep "$tag-chain" "$LG_WORK/hooks-nft-$tag-ruleset.txt" "type filter hook $hook priority mangle \+ 10;"
    check_no_grep "$tag-only-that-hook" "$LG_WORK/hooks-nft-$tag-ruleset.txt" "hook (input|output|forward) "
    lg_start "$POL" "$AUDIT" $flow || { fail "$tag-start"; continue; }
    expect_reached "$tag-root-allowed" uid=0 5432
    expect_refused "$tag-nobody-refused" uid=65534 5432 uid=0 "$LG_CONTROL_PORT"
    expect_reached "$tag-root-again" uid=0 5432
    lg_stop || fail "$tag-labelgate-exit" "non-zero exit on SIGTERM"
    check_grep "$tag-avc-nobody" "$AUDIT" "denied +\{ $perm \}.*dest=5432 .*ouid=65534 .*rule=default"
    check "$tag-remove" "$LG_BIN" rules --policy "$POL" --backend nft --remove
    check_no_grep "$tag-removed-nft" <(nft list tables 2>&1) "labelgate"
  done
done
scenario_end
