#!/usr/bin/env bash
# Builds the local test images for machines that cannot pull from a registry:
#
#   onceflow/postgres:15-local   Postgres 15 from Debian packages (debootstrap +
#                                docker import); its entrypoint honours the
#                                official image's POSTGRES_* variables
#   onceflow/devbroker:local     FROM scratch + a static onceflow-devbroker
#                                (the embedded Kafka-protocol broker, kfake)
#
# An image that already exists is kept (a second run takes seconds); pass
# --force to rebuild both. Then point testkit at them:
#
#   export ONCEFLOW_TEST_POSTGRES_IMAGE=onceflow/postgres:15-local
#   export ONCEFLOW_TEST_KAFKA_IMAGE=onceflow/devbroker:local
#
# Needs: docker (a running engine), go, and as root debootstrap (installed
# with apt-get if missing). DEBIAN_MIRROR overrides the mirror, which
# defaults to the one apt uses on this machine. Image names can be changed
# with POSTGRES_IMAGE and DEVBROKER_IMAGE.
set -euo pipefail
cd "$(dirname "$0")/.."

POSTGRES_IMAGE="${POSTGRES_IMAGE:-onceflow/postgres:15-local}"
DEVBROKER_IMAGE="${DEVBROKER_IMAGE:-onceflow/devbroker:local}"
SUITE="${DEBIAN_SUITE:-bookworm}"
force=0
case "${1:-}" in
--force) force=1 ;;
"") ;;
*) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

log() { echo "build-test-images: $*" >&2; }
die() { log "$*"; exit 1; }

docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed): start dockerd (or Docker Desktop), or set DOCKER_HOST"

have() { [ "$force" = 0 ] && docker image inspect "$1" >/dev/null 2>&1; }

# The mirror apt uses here (deb822 .sources first, then sources.list).
apt_mirror() {
	local m=""
	if ls /etc/apt/sources.list.d/*.sources >/dev/null 2>&1; then
		m=$(awk '/^URIs:/ && $2 ~ /debian\/?$/ {print $2; exit}' /etc/apt/sources.list.d/*.sources)
	fi
	if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
		m=$(awk '$1=="deb" && $3 ~ /^'"$SUITE"'$/ {print $2; exit}' /etc/apt/sources.list)
	fi
	echo "${m:-http://deb.debian.org/debian}"
}

build_devbroker() {
	if have "$DEVBROKER_IMAGE"; then
		log "$DEVBROKER_IMAGE exists, kept"
		return
	fi
	local ctx
	ctx=$(mktemp -d)
	trap 'rm -rf "$ctx"' RETURN
	log "building $DEVBROKER_IMAGE (static onceflow-devbroker, FROM scratch)"
	CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$ctx/onceflow-devbroker" ./cmd/onceflow-devbroker
	cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY onceflow-devbroker /onceflow-devbroker
EXPOSE 9092
LABEL org.onceflow.kafka-flavor=devbroker
ENTRYPOINT ["/onceflow-devbroker"]
DOCKERFILE
	docker build -q -t "$DEVBROKER_IMAGE" "$ctx" >/dev/null
	log "built $DEVBROKER_IMAGE"
}

build_postgres() {
	if have "$POSTGRES_IMAGE"; then
		log "$POSTGRES_IMAGE exists, kept"
		return
	fi
	[ "$(id -u)" = 0 ] || die "building $POSTGRES_IMAGE needs root (debootstrap); run as root or build it elsewhere"
	if ! command -v debootstrap >/dev/null 2>&1; then
		log "installing debootstrap"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null ||
			{ DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
	fi
	local mirror rootfs
	mirror="${DEBIAN_MIRROR:-$(apt_mirror)}"
	rootfs=$(mktemp -d /var/tmp/onceflow-pg-rootfs.XXXXXX)
	trap 'rm -rf "$rootfs"' RETURN
	log "debootstrap $SUITE with postgresql-15 from $mirror (about a minute)"
	if ! debootstrap --variant=minbase --include=postgresql-15 "$SUITE" "$rootfs" "$mirror" >"$rootfs.log" 2>&1; then
		tail -20 "$rootfs.log" >&2
		die "debootstrap failed (full log $rootfs.log): check that $mirror is reachable, or set DEBIAN_MIRROR"
	fi
	rm -f "$rootfs.log"
	# The package's own cluster and caches are not part of the image.
	rm -rf "$rootfs"/var/lib/postgresql/15 "$rootfs"/etc/postgresql/15 \
		"$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
		"$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
	install -m 0755 scripts/postgres-image/docker-entrypoint.sh "$rootfs/usr/local/bin/docker-entrypoint.sh"
	mkdir -p "$rootfs/docker-entrypoint-initdb.d"
	tar -C "$rootfs" -c . | docker import \
		-c 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
		-c 'CMD ["postgres"]' \
		-c 'ENV PGDATA=/var/lib/postgresql/data' \
		-c 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
		-c 'EXPOSE 5432' \
		- "$POSTGRES_IMAGE" >/dev/null
	log "built $POSTGRES_IMAGE"
}

build_devbroker
build_postgres
docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E "^(${DEVBROKER_IMAGE}|${POSTGRES_IMAGE})  " || true
