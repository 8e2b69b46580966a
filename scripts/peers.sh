#!/bin/bash
# Start/stop the real protocol peers the tests use, on 127.0.0.1 only, without systemd.
#   scripts/peers.sh install        apt packages (Debian 12, root)
#   scripts/peers.sh start|stop|status
# Idempotent: a peer whose port already answers is left alone. State under $PEERS_DIR.
set -euo pipefail
PEERS_DIR=${PEERS_DIR:-/tmp/commhub-peers}
PGBIN=/usr/lib/postgresql/15/bin
HERE=$(cd "$(dirname "$0")" && pwd)

port_open() { (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null; }
wait_port() {  # open+close a TCP connection without sending anything
  for _ in $(seq 1 ${2:-300}); do port_open "$1" && return 0; sleep 0.05; done
  echo "peers: port $1 did not open (see logs under $PEERS_DIR)" >&2; return 1
}

# A peer killed without a clean stop (a session ending, a SIGKILL) leaves its pid file behind;
# bearerbox/smsbox --daemonize then exit silently, so drop pid files of processes that are gone.
clear_stale_pidfile() {
  local f=$1; [ -f "$f" ] || return 0
  local p; p=$(head -1 "$f" | tr -d ' ')
  if [ -z "$p" ] || ! kill -0 "$p" 2>/dev/null; then rm -f "$f"; fi
}

install() {
  local pkgs="dovecot-imapd postfix kannel kannel-extras redis-server postgresql-15 chromium fonts-liberation openssl"
  # shellcheck disable=SC2086
  if dpkg -s $pkgs >/dev/null 2>&1; then echo "peers: packages present"; return 0; fi
  apt-get update -qq
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
}

start_dovecot() {
  port_open 10143 && return 0
  local D=$PEERS_DIR/dovecot; mkdir -p "$D/run" "$D/state" "$PEERS_DIR/mail"
  chown nobody:nogroup "$PEERS_DIR/mail"
  cat > "$D/dovecot.conf" <<EOF
instance_name = commhub-test-dovecot
base_dir = $D/run
state_dir = $D/state
log_path = $D/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:$PEERS_DIR/mail/%u/Maildir
mail_uid = nobody
mail_gid = nogroup
first_valid_uid = 1
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $D/users
}
userdb {
  driver = static
  args = home=$PEERS_DIR/mail/%u
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = 10143
  }
  inet_listener imaps {
    port = 0
  }
}
EOF
  printf '%s\n' 'alice@example.test:{PLAIN}secret' 'support@example.test:{PLAIN}secret' \
    'bob@example.test:{PLAIN}secret' > "$D/users"
  dovecot -c "$D/dovecot.conf" </dev/null >>"$D/start.log" 2>&1
  wait_port 10143
}

start_postfix() {
  port_open 10525 && return 0
  local P=$PEERS_DIR/postfix; mkdir -p "$P/etc" "$P/spool" "$P/data" "$PEERS_DIR/mail"
  chown postfix "$P/data"
  cat > "$P/etc/main.cf" <<EOF
compatibility_level = 3.6
meta_directory = /etc/postfix
queue_directory = $P/spool
data_directory = $P/data
maillog_file = $P/postfix.log
maillog_file_prefixes = /var, /dev/stdout, $PEERS_DIR
myhostname = mx.example.test
mydomain = example.test
myorigin = example.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
relay_domains =
alias_maps =
alias_database =
local_recipient_maps =
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtputf8_enable = no
virtual_mailbox_domains = example.test
virtual_mailbox_base = $PEERS_DIR/mail
virtual_mailbox_maps = texthash:$P/etc/vmailbox
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
default_transport = error:outbound mail disabled in tests
disable_dns_lookups = yes
smtp_dns_support_level = disabled
EOF
  cat > "$P/etc/master.cf" <<'EOF'
127.0.0.1:10525 inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
virtual   unix  - n n - - virtual
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
EOF
  printf '%s\n' 'alice@example.test alice@example.test/Maildir/' \
    'support@example.test support@example.test/Maildir/' \
    'bob@example.test bob@example.test/Maildir/' > "$P/etc/vmailbox"
  postfix -c "$P/etc" start </dev/null >>"$P/start.log" 2>&1 || { echo "peers: postfix failed, see $P/postfix.log" >&2; return 1; }
  wait_port 10525
}

start_kannel() {
  port_open 13013 && return 0
  local K=$PEERS_DIR/kannel; mkdir -p "$K"
  # The MO/DLR callbacks go to the commhub web app the SMS tests start on 127.0.0.1:18080.
  sed "s#@K@#$K#g" "$HERE/kannel.conf.in" > "$K/kannel.conf"
  clear_stale_pidfile "$K/bearerbox.pid"; clear_stale_pidfile "$K/smsbox.pid"
  # absolute paths are mandatory with --daemonize (it chdir()s to /)
  bearerbox --daemonize --pid-file "$K/bearerbox.pid" "$K/kannel.conf" </dev/null >>"$K/start.log" 2>&1
  wait_port 13001                       # smsbox panics if bearerbox is not listening yet
  smsbox --daemonize --pid-file "$K/smsbox.pid" "$K/kannel.conf" </dev/null >>"$K/start.log" 2>&1
  wait_port 13013
}

start_redis() {
  port_open 16379 && return 0
  local R=$PEERS_DIR/redis; mkdir -p "$R"
  clear_stale_pidfile "$R/redis.pid"
  redis-server --bind 127.0.0.1 --port 16379 --daemonize yes --pidfile "$R/redis.pid" \
    --dir "$R" --logfile "$R/redis.log" --save '' --appendonly no </dev/null >>"$R/start.log" 2>&1
  wait_port 16379
}

start_postgres() {
  port_open 15432 && return 0
  local G=$PEERS_DIR/pg; mkdir -p "$G/sock"; chown -R postgres:postgres "$G"
  [ -f "$G/data/PG_VERSION" ] || runuser -u postgres -- $PGBIN/initdb -D "$G/data" -U postgres \
      --auth=trust -E UTF8 --locale=C.UTF-8 > "$G/initdb.log"   # initdb refuses to run as root
  runuser -u postgres -- $PGBIN/pg_ctl -D "$G/data" -l "$G/pg.log" -w -t 30 -o \
    "-c listen_addresses=127.0.0.1 -p 15432 -c unix_socket_directories=$G/sock -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" start </dev/null >>"$G/start.log" 2>&1
  wait_port 15432
}

stop_pidfile() {  # pidfile [command...]
  local f=$1; shift; [ -f "$f" ] || return 0
  local p; p=$(head -1 "$f" | tr -d ' ')
  if [ $# -gt 0 ]; then "$@" >/dev/null 2>&1 || true; else kill "$p" 2>/dev/null || true; fi
  for _ in $(seq 1 200); do
    [ -r "/proc/$p/stat" ] || break
    [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" = Z ] && break
    sleep 0.05
  done
  rm -f "$f"
}

stop_all() {
  stop_pidfile "$PEERS_DIR/kannel/smsbox.pid"
  stop_pidfile "$PEERS_DIR/kannel/bearerbox.pid"
  stop_pidfile "$PEERS_DIR/postfix/spool/pid/master.pid" postfix -c "$PEERS_DIR/postfix/etc" stop
  stop_pidfile "$PEERS_DIR/dovecot/run/master.pid"
  stop_pidfile "$PEERS_DIR/redis/redis.pid"
  [ -f "$PEERS_DIR/pg/data/postmaster.pid" ] && runuser -u postgres -- $PGBIN/pg_ctl \
    -D "$PEERS_DIR/pg/data" -m fast -w stop >/dev/null 2>&1 || true
  return 0
}

status() {
  for p in postgres:15432 redis:16379 dovecot:10143 postfix:10525 kannel:13013; do
    if port_open "${p#*:}"; then echo "${p%%:*} up on ${p#*:}"; else echo "${p%%:*} DOWN"; fi
  done
}

case "${1:-}" in
  install) install ;;
  start) start_postgres; start_redis; start_dovecot; start_postfix; start_kannel; status ;;
  stop) stop_all ;;
  status) status ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
