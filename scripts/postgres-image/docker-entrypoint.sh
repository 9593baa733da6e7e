#!/bin/sh
# Entrypoint of onceflow/postgres:15-local, a Postgres image built from
# Debian packages by scripts/build-test-images.sh. It honours the official
# postgres image's variables, so the same test code drives either image:
#
#   POSTGRES_USER              superuser name (postgres)
#   POSTGRES_PASSWORD          its password; required unless POSTGRES_HOST_AUTH_METHOD=trust
#   POSTGRES_DB                database created at first start ($POSTGRES_USER)
#   POSTGRES_HOST_AUTH_METHOD  pg_hba method for non-local hosts (scram-sha-256,
#                              or trust when no password is set)
#   PGDATA                     data directory (/var/lib/postgresql/data)
#
# Like the official image, it initialises the cluster and creates the
# database with the server listening on the Unix socket only, so a TCP
# connection succeeds only once the final server is up. Arguments are
# passed to postgres (a leading "postgres" is dropped), e.g. -c fsync=off.
set -eu

PGBIN=/usr/lib/postgresql/15/bin
export PATH="$PGBIN:$PATH"
export PGDATA="${PGDATA:-/var/lib/postgresql/data}"
POSTGRES_USER="${POSTGRES_USER:-postgres}"
POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"
POSTGRES_PASSWORD="${POSTGRES_PASSWORD:-}"

if [ "$(id -u)" = 0 ]; then
	mkdir -p "$PGDATA" /var/run/postgresql
	chown -R postgres:postgres "$PGDATA" /var/run/postgresql
	chmod 700 "$PGDATA"
	exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ "${1:-}" = postgres ]; then
	shift
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
	method="${POSTGRES_HOST_AUTH_METHOD:-}"
	if [ -z "$POSTGRES_PASSWORD" ] && [ "$method" != trust ]; then
		cat >&2 <<-'MSG'
		Error: the database is uninitialized and the superuser password is not specified.
		       Set POSTGRES_PASSWORD to a non-empty value, or POSTGRES_HOST_AUTH_METHOD=trust
		       to allow all connections without a password (tests only).
		MSG
		exit 1
	fi
	[ -n "$method" ] || method=scram-sha-256
	pwopt=""
	if [ -n "$POSTGRES_PASSWORD" ]; then
		pwfile="$(mktemp)"
		printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
		pwopt="--pwfile=$pwfile"
	fi
	# shellcheck disable=SC2086 # pwopt is one word or none
	initdb -D "$PGDATA" --username="$POSTGRES_USER" $pwopt -E UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host="$method" >/dev/null
	[ -z "$pwopt" ] || rm -f "$pwfile"
	printf 'host all all all %s\n' "$method" >>"$PGDATA/pg_hba.conf"

	pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -k /var/run/postgresql" -w start >/dev/null
	if [ "$POSTGRES_DB" != postgres ]; then
		psql -v ON_ERROR_STOP=1 -h /var/run/postgresql -U "$POSTGRES_USER" -d postgres -q \
			-c "CREATE DATABASE \"$(printf '%s' "$POSTGRES_DB" | sed 's/"/""/g')\""
	fi
	for f in /docker-entrypoint-initdb.d/*; do
		case "$f" in
		*.sql) psql -v ON_ERROR_STOP=1 -h /var/run/postgresql -U "$POSTGRES_USER" -d "$POSTGRES_DB" -q -f "$f" ;;
		*.sh) . "$f" ;;
		esac
	done
	pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
	echo "PostgreSQL init process complete; ready for start up."
fi

exec postgres -D "$PGDATA" -c listen_addresses='*' -k /var/run/postgresql "$@"
