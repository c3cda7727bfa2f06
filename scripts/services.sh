#!/usr/bin/env bash
# Make sure PostgreSQL (5432), Redis (6379) and RabbitMQ (5672) answer on 127.0.0.1,
# starting whichever is down, and installing them with apt-get if they are missing.
set -euo pipefail

WAIT_SECONDS="${SERVICES_WAIT_SECONDS:-60}"

log() { echo "services: $*" >&2; }
die() { log "$*"; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        die "need root to run: $*"
    fi
}

tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

postgres_up() { pg_isready -q -h 127.0.0.1 -p 5432; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }
rabbitmq_up() { tcp_open 5672; }

have_tools() {
    command -v pg_ctlcluster >/dev/null && command -v pg_isready >/dev/null \
        && command -v redis-server >/dev/null && command -v redis-cli >/dev/null \
        && command -v rabbitmq-server >/dev/null
}

install_tools() {
    command -v apt-get >/dev/null || die "PostgreSQL/Redis/RabbitMQ missing and no apt-get to install them; install them by hand"
    log "installing postgresql, redis-server, rabbitmq-server with apt-get"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q \
        && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            postgresql redis-server rabbitmq-server \
        || die "apt-get could not install postgresql, redis-server, rabbitmq-server"
    have_tools || die "still missing tools after apt-get install"
}

start_postgres() {
    local version
    version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1 || true)"
    [ -n "$version" ] || die "no cluster under /etc/postgresql"
    log "starting PostgreSQL $version"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
}

start_redis() {
    log "starting Redis"
    as_root mkdir -p /var/lib/redis /var/log/redis
    as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
        --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
}

start_rabbitmq() {
    log "starting RabbitMQ"
    as_root rabbitmq-server -detached
}

wait_for() {
    local name="$1" probe="$2" deadline=$((SECONDS + WAIT_SECONDS))
    until "$probe"; do
        [ "$SECONDS" -lt "$deadline" ] || die "$name did not answer within ${WAIT_SECONDS}s"
        sleep 1
    done
    log "$name is up"
}

have_tools || install_tools

postgres_up || start_postgres
redis_up || start_redis
rabbitmq_up || start_rabbitmq

wait_for PostgreSQL postgres_up
wait_for Redis redis_up
wait_for RabbitMQ rabbitmq_up
