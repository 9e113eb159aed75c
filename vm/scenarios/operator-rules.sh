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

# uid_try UID: like tcp_try, as UID (context unchanged).
uid_try() {
  local out
  out="$(timeout 20 setpriv --reuid="$1" --regid="$1" --clear-groups \
    socat -T8 -t8 - "TCP4:127.0.0.1:5432,connect-timeout=8" </dev/null 2>/dev/null)" || true
  [ "$out" = "pong-5432" ]
}

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
    check "$tag-root-allowed" uid_try 0
    check_not "$tag-nobody-refused" uid_try 65534
    check "$tag-root-again" uid_try 0
    lg_stop || fail "$tag-labelgate-exit" "non-zero exit on SIGTERM"
    check_grep "$tag-avc-nobody" "$AUDIT" "denied +\{ send \}.*dest=5432 .*ouid=65534 .*rule=default"
    check_no_grep "$tag-no-root-denial" "$AUDIT" "ouid=0 "
    check "$tag-remove" "$LG_BIN" rules --policy "$POL" --backend "$backend" --remove
    check_no_grep "$tag-removed-iptables" <(iptables -t security -S 2>&1) "LABELGATE"
    check_no_grep "$tag-removed-nft" <(nft list tables 2>&1) "labelgate"
  done
done

scenario_end
