#!/bin/bash
# Scenario other-netns (issue 17): `labelgate run --other-netns` under the
# packaged unit on the reference policy. A network namespace made like a
# container's (veth pair, 198.18.20.0/24) holds a socat server; the policy
# accepts output to port 8080 only when the destination socket's process is
# /usr/bin/socat, which labelgate can tell only by looking the socket up
# inside that namespace. Without the shipped drop-in the unit's bounding set
# lacks CAP_SYS_ADMIN: labelgate warns and the connection is refused (the
# same client reaches the echo port through the same queue). With the
# drop-in (/usr/share/labelgate/systemd/labelgate-other-netns.conf) and the
# boolean labelgate_other_netns on, the kernel enforcing, the connection is
# accepted; selinux-module's final check then finds no denial for
# labelgate_t (what the boolean grants is enough).
set -uo pipefail
. /usr/local/lib/labelgate-tests/common.sh
scenario_begin other-netns
NS=lgt-c1
NSPORT=8080
DROPIN_DIR=/etc/systemd/system/labelgate.service.d

# ns_try: connect from a root login shell to the namespace's server; prints
# what it answered (empty when refused).
ns_try() {
  as_root_login "timeout 25 socat -T8 -t8 - TCP4:198.18.20.2:$NSPORT,connect-timeout=8 </dev/null" 2>/dev/null || true
}

expect_eq boolean-off-by-default "$(getsebool labelgate_other_netns 2>&1)" "labelgate_other_netns --> off" "getsebool"

# The "container": a namespace, a veth pair, a server in the namespace. The
# server runs through nsenter (bin_t, no transition): unconfined_t, as the
# runner.
ip netns add "$NS"
ip link add lgt-h1 type veth peer name lgt-c1 netns "$NS"
ip addr add 198.18.20.1/24 dev lgt-h1 && ip link set lgt-h1 up
ip -n "$NS" addr add 198.18.20.2/24 dev lgt-c1 && ip -n "$NS" link set lgt-c1 up && ip -n "$NS" link set lo up
nsenter --net=/run/netns/"$NS" socat -t8 "TCP4-LISTEN:$NSPORT,bind=198.18.20.2,reuseaddr,fork" "SYSTEM:echo pong-ns" \
  >"$LGT_OUT/other-netns-server.log" 2>&1 &
NS_PID=$!
for ((i = 0; i < 30; i++)); do
  ip netns exec "$NS" ss -Htln "sport = :$NSPORT" | grep -q . && break
  sleep 1
done
check server-in-namespace test -n "$(ip netns exec "$NS" ss -Htln "sport = :$NSPORT")"
echo_server_start || fail echo-server "socat did not listen on $ECHO_PORT"

cat >"$LGT_OUT/other-netns-policy.toml" <<'TOML'
mode = "enforcing"
default = "drop"
[[scope]]
proto = "tcp"
dport = [5433, 8080]
[[rule]]
name = "root-to-echo"
hook = "output"
proto = "tcp"
dport = 5433
verdict = "accept"
[[rule]]
name = "to-socat-in-netns"
hook = "output"
proto = "tcp"
dport = 8080
dest_exe = "/usr/bin/socat"
audit = true
verdict = "accept"
TOML
install_policy "$LGT_OUT/other-netns-policy.toml"
had_default=0
[ -f /etc/default/labelgate ] && { had_default=1; cp -p /etc/default/labelgate "$LGT_OUT/other-netns-default.orig"; }
echo 'LABELGATE_OPTS=--other-netns' >>/etc/default/labelgate
# The boolean on from the start: without the drop-in the capability check
# refuses setns() before SELinux is asked, so no denial is logged.
if setsebool labelgate_other_netns 1; then pass boolean-on; else fail boolean-on "setsebool failed"; fi

# 1. The unit alone: no CAP_SYS_ADMIN in its bounding set.
jm="$(journal_mark)"
lg_restart unit-restarts-without-drop-in
journal_wait "$jm" labelgate.service 'will not be looked up' >"$LGT_OUT/other-netns-journal-1.txt"
check warns-without-drop-in grep -q 'sockets in other network namespaces will not be looked up' "$LGT_OUT/other-netns-journal-1.txt"
expect_eq echo-reached-without-drop-in "$(tcp_try "$ECHO_PORT")" "pong-$ECHO_PORT" "socat to the echo port"
expect_eq ns-refused-without-drop-in "$(ns_try)" "" "socat to the namespace's server"

# 2. With the drop-in, the kernel enforcing.
mkdir -p "$DROPIN_DIR"
cp /usr/share/labelgate/systemd/labelgate-other-netns.conf "$DROPIN_DIR/other-netns.conf"
systemctl daemon-reload
setenforce 1
expect_eq kernel-enforcing "$(getenforce)" Enforcing
jm="$(journal_mark)"
mark="$(records_mark)"
lg_restart unit-restarts-with-drop-in
expect_eq runs-in-labelgate_t "$(lg_ctx)" system_u:system_r:labelgate_t:s0 "labelgate's context"
capeff="$(awk '/^CapEff:/ {print $2}' "/proc/$(lg_pid)/status")"
check keeps-cap-sys-admin test $(( 0x${capeff:-0} >> 21 & 1 )) = 1
expect_eq echo-reached-with-drop-in "$(tcp_try "$ECHO_PORT")" "pong-$ECHO_PORT" "socat to the echo port"
expect_eq ns-reached-with-drop-in "$(ns_try)" "pong-ns" "socat to the namespace's server"
sleep 1
records_since "$mark" >"$LGT_OUT/other-netns-records.log"
check record-granted-by-dest-exe grep -qE 'labelgate: +granted .*dest=8080 .*rule=to-socat-in-netns' "$LGT_OUT/other-netns-records.log"
journal_since "$jm" labelgate.service >"$LGT_OUT/other-netns-journal-2.txt"
check no-warning-with-drop-in test -z "$(grep 'will not be looked up' "$LGT_OUT/other-netns-journal-2.txt")"
setenforce 0
expect_eq kernel-permissive-again "$(getenforce)" Permissive

# Back to the packaged set-up for the scenarios that follow; the boolean
# off only once no labelgate with --other-netns runs (its next scan would
# be denied).
rm -f "$DROPIN_DIR/other-netns.conf"; rmdir "$DROPIN_DIR" 2>/dev/null
systemctl daemon-reload
if [ "$had_default" = 1 ]; then cp -p "$LGT_OUT/other-netns-default.orig" /etc/default/labelgate
else rm -f /etc/default/labelgate; fi
install_policy "$LGT_OUT/packaged-policy.toml"
lg_restart unit-restarts-packaged
setsebool labelgate_other_netns 0
kill "$NS_PID" 2>/dev/null
ip link del lgt-h1 2>/dev/null
ip netns del "$NS"
echo_server_stop
scenario_end
