// Package pgschema places onceflow's tables in a configurable Postgres
// schema: the SQL of the stores and the migrations is written against
// "onceflow." and rewritten to the configured schema.
package pgschema

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Default is the schema onceflow's tables live in unless configured.
const Default = "onceflow"

var valid = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// Check reports whether name can be used as the schema: 1-63 characters of
// [a-z0-9_], not starting with a digit (so it never needs quoting).
func Check(name string) error {
	if !valid.MatchString(name) {
		return fmt.Errorf("schema name %q: want 1-63 characters of [a-z0-9_], not starting with a digit", name)
	}
	if strings.HasPrefix(name, "pg_") || name == "information_schema" {
		return fmt.Errorf("schema name %q is reserved by Postgres", name)
	}
	return nil
}

// Rewrite returns sql with its references to the default schema
// ("onceflow.", and the schema name in CREATE SCHEMA) pointed at schema,
// quoted as an identifier: whatever schema holds, it cannot change the
// statement (Check is the policy for names; this is the safety).
func Rewrite(schema, sql string) string {
	if schema == "" || schema == Default {
		return sql
	}
	id := pgx.Identifier{schema}.Sanitize()
	sql = strings.ReplaceAll(sql, Default+".", id+".")
	return strings.ReplaceAll(sql, "SCHEMA IF NOT EXISTS "+Default, "SCHEMA IF NOT EXISTS "+id)
}
