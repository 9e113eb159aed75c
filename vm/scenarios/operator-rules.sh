#!/bin/bash
# Extra: the queue rules `labelgate rules --install` generates, for both
# backends (iptables security table; nftables' native `queue`, which only this
# VM kernel has) and both modes (new connections only; --flow with connmark).
# The policy decides by socket owner (NFQA_UID), so it needs no socket labels:
# root may reach tcp/5432, uid 65534 may not. --remove must leave nothing.
set -euo pipefail
. "$(dirname "$0")/../guest/common.sh"
scenario_begin operator-rules
lg_require

POL="$(write_policy policy <<'TOML'
mode = "enforcing"
default = "drop"
[[rule]]
name = "root-to-db"
hook = "output"
uid = 0
proto = "tcp"
dport = 5432
verdict = "accept"
TOML
)"
tcp_echo_server "$CTX_PG" 5432

for backend in iptables nft; do
  for flow in "" --flow; do
    tag="$backend${flow:+-flow}"
    AUDIT="$LG_WORK/operator-rules-$tag-audit.log"
    if "$LG_BIN" rules --policy "$POL" --backend "$backend" $flow --no-bypass --install \
         >"$LG_WORK/operator-rules-$tag-install.log" 2>&1; then
      pass "$tag-install"
    else
      fail "$tag-install" "$(tail -n3 "$LG_WORK/operator-rules-$tag-install.log")"; continue
    fi
    { iptables -t security -S; nft list ruleset; } >"$LG_WORK/operator-rules-$tag-ruleset.txt" 2>&1 || true
    lg_start "$POL" "$AUDIT" || { fail "$tag-start"; continue; }
    # Clients uid=N run as uid N in the harness's context.
    expect_reached "$tag-root-allowed" uid=0 5432
    expect_refused "$tag-nobody-refused" uid=65534 5432 uid=0 "$LG_CONTROL_PORT"
    expect_reached "$tag-root-again" uid=0 5432
    lg_stop || fail "$tag-labelgate-exit" "non-zero exit on SIGTERM"
    check_grep "$tag-avc-nobody" "$AUDIT" "denied +\{ send \}.*dest=5432 .*ouid=65534 .*rule=default"
    check_no_grep "$tag-no-root-denial" "$AUDIT" "ouid=0 "
    check "$tag-remove" "$LG_BIN" rules --policy "$POL" --backend "$backend" --remove
    check_no_grep "$tag-removed-iptables" <(iptables -t security -S 2>&1) "LABELGATE"
    check_no_grep "$tag-removed-nft" <(nft list tables 2>&1) "labelgate"
  done
done

scenario_end
