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
# with apt-get if missing). The Debian mirror debootstrap downloads from is
# DEBIAN_MIRROR if set, otherwise the one this machine's apt configuration
# uses for $DEBIAN_SUITE (default bookworm) main; with neither the script
# stops and says so (no mirror address is built in). Image names can be
# changed with POSTGRES_IMAGE and DEVBROKER_IMAGE.
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

# apt_mirror prints the URI of the first enabled "deb" source in this
# machine's apt configuration that carries $SUITE with component main: deb822
# stanzas in /etc/apt/sources.list.d/*.sources first, then one-line entries
# in /etc/apt/sources.list and /etc/apt/sources.list.d/*.list. It prints
# nothing if there is none.
apt_mirror() {
	local m="" f files=()
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] && files+=("$f")
	done
	if [ "${#files[@]}" -gt 0 ]; then
		m=$(awk -v suite="$SUITE" '
			function has(list, word,   n, a, i) {
				n = split(list, a, " ")
				for (i = 1; i <= n; i++) if (a[i] == word) return 1
				return 0
			}
			function flush() {
				if (uri != "" && has(types, "deb") && has(suites, suite) && has(comps, "main") && enabled != "no") {
					print uri
					done = 1
					exit
				}
				types = suites = comps = uri = enabled = ""
			}
			FNR == 1 { flush() }             # a stanza ends with its file
			/^[ \t]*#/ { next }
			/^[ \t]*$/ { flush(); next }
			/^[ \t]/ { next }                # continuation line
			{
				i = index($0, ":")
				if (i == 0) next
				key = tolower(substr($0, 1, i - 1))
				val = substr($0, i + 1)
				gsub(/[ \t]+/, " ", val)
				sub(/^ /, "", val)
				sub(/ $/, "", val)
				if (key == "types") types = val
				else if (key == "uris") { split(val, u, " "); uri = u[1] }
				else if (key == "suites") suites = val
				else if (key == "components") comps = val
				else if (key == "enabled") enabled = tolower(val)
			}
			END { if (!done) flush() }
		' "${files[@]}")
	fi
	if [ -z "$m" ]; then
		files=()
		for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
			[ -f "$f" ] && files+=("$f")
		done
		if [ "${#files[@]}" -gt 0 ]; then
			# deb [options] uri suite component...
			m=$(awk -v suite="$SUITE" '
				/^[ \t]*#/ || NF == 0 || $1 != "deb" { next }
				{
					i = 2
					if ($2 ~ /^\[/) {
						while (i <= NF && $i !~ /\]$/) i++
						i++
					}
					if ($(i + 1) != suite) next
					for (j = i + 2; j <= NF; j++) if ($j == "main") { print $i; exit }
				}
			' "${files[@]}")
		fi
	fi
	echo "$m"
}

# debian_mirror prints the mirror for debootstrap: DEBIAN_MIRROR, else the
# one apt uses here. It fails, saying what to set, if there is neither.
debian_mirror() {
	if [ -n "${DEBIAN_MIRROR:-}" ]; then
		echo "$DEBIAN_MIRROR"
		return
	fi
	local m
	m=$(apt_mirror)
	if [ -z "$m" ]; then
		log "no Debian mirror to build $POSTGRES_IMAGE from: DEBIAN_MIRROR is not set, and this machine's apt configuration (/etc/apt/sources.list.d/*.sources, /etc/apt/sources.list, /etc/apt/sources.list.d/*.list) has no enabled 'deb' source for '$SUITE' with component 'main'."
		log "set DEBIAN_MIRROR to the URL of a Debian archive mirror that carries $SUITE (the base URL that would follow 'deb' in a sources.list line), or configure such a source for apt."
		return 1
	fi
	echo "$m"
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
	local mirror rootfs
	mirror=$(debian_mirror) || exit 1
	if ! command -v debootstrap >/dev/null 2>&1; then
		log "installing debootstrap"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null ||
			{ DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
	fi
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
