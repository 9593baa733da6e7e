package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/onceflow/onceflow/internal/pgschema"
	"github.com/onceflow/onceflow/projection"
	"github.com/onceflow/onceflow/txn"
)

// dbFlags are the flags of every database command.
type dbFlags struct {
	url     string
	timeout time.Duration
	schema  string
}

func (d *dbFlags) register(fs *flag.FlagSet, e env) {
	fs.StringVar(&d.url, "database-url", e.getenv("DATABASE_URL"), "Postgres connection `URL` (default $DATABASE_URL)")
	fs.DurationVar(&d.timeout, "timeout", 30*time.Second, "give up after this long")
	fs.StringVar(&d.schema, "schema", "onceflow", "Postgres `schema` of onceflow's tables (actor.WithSchema)")
}

// open bounds ctx by --timeout and opens a pool; closeDB releases both.
func (d *dbFlags) open(ctx context.Context) (_ context.Context, _ *pgxpool.Pool, closeDB func(), _ error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	pool, err := d.connect(ctx)
	if err != nil {
		cancel()
		return nil, nil, nil, err
	}
	return ctx, pool, func() { pool.Close(); cancel() }, nil
}

// connect opens a pool. ctx bounds the connection attempt.
func (d *dbFlags) connect(ctx context.Context) (*pgxpool.Pool, error) {
	if strings.TrimSpace(d.url) == "" {
		return nil, usagef("no database: set DATABASE_URL or pass --database-url")
	}
	if d.timeout <= 0 {
		return nil, usagef("--timeout must be > 0, got %v", d.timeout)
	}
	if err := pgschema.Check(d.schema); err != nil {
		return nil, usagef("--schema: %v", err)
	}
	cfg, err := pgxpool.ParseConfig(d.url)
	if err != nil {
		return nil, usagef("bad database URL: %v", err)
	}
	cfg.MaxConns = 2
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to %s:%d/%s: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database, err)
	}
	return pool, nil
}

func runMigrate(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("migrate", "Apply the schema migrations embedded in this binary that the database does not\nhave yet (onceflow's core tables, then the projection registry), and print them.\nSafe to run concurrently with services starting.", e)
	var db dbFlags
	db.register(fs, e)
	if err := parse(fs, args); err != nil {
		return err
	}
	ctx, pool, closeDB, err := db.open(ctx)
	if err != nil {
		return err
	}
	defer closeDB()
	all, err := txn.Migrations()
	if err != nil {
		return err
	}
	applied, err := txn.Migrate(ctx, pool, txn.InSchema(db.schema))
	if err != nil {
		return err
	}
	names := map[int]string{}
	latest := 0
	for _, m := range all {
		names[m.Version] = m.Name
		latest = max(latest, m.Version)
	}
	if len(applied) == 0 {
		fmt.Fprintf(e.stdout, "schema is up to date (version %d)\n", latest)
	} else {
		for _, v := range applied {
			fmt.Fprintf(e.stdout, "applied %d  %s\n", v, names[v])
		}
		fmt.Fprintf(e.stdout, "schema is at version %d\n", latest)
	}
	// The components onceflow embeds besides the core, recorded in
	// component_migrations under their names.
	fsys, dir := projection.Migrations()
	return migrateComponent(ctx, pool, db.schema, projection.Component, fsys, dir, e)
}

// migrateComponent applies a component's migrations and prints them like
// the core's, prefixed with the component's name.
func migrateComponent(ctx context.Context, pool *pgxpool.Pool, schema, component string, fsys fs.FS, dir string, e env) error {
	files, err := fs.Glob(fsys, path.Join(dir, "*.sql"))
	if err != nil {
		return err
	}
	names := map[int]string{}
	latest := 0
	for _, f := range files {
		name := path.Base(f)
		v, err := strconv.Atoi(strings.SplitN(name, "_", 2)[0])
		if err != nil {
			continue // txn.MigrateFS rejects it
		}
		names[v] = name
		latest = max(latest, v)
	}
	applied, err := txn.MigrateFS(ctx, pool, component, fsys, dir, txn.InSchema(schema))
	if err != nil {
		return err
	}
	if len(applied) == 0 {
		fmt.Fprintf(e.stdout, "%s schema is up to date (version %d)\n", component, latest)
		return nil
	}
	for _, v := range applied {
		fmt.Fprintf(e.stdout, "applied %s %d  %s\n", component, v, names[v])
	}
	fmt.Fprintf(e.stdout, "%s schema is at version %d\n", component, latest)
	return nil
}

func runClaims(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("claims", "List partition claims: which instance owns each partition, at which epoch,\nand the next Kafka offset and event seq it will write.", e)
	var db dbFlags
	db.register(fs, e)
	group := fs.String("group", "", "only this consumer group")
	asJSON := fs.Bool("json", false, "print JSON lines instead of a table")
	if err := parse(fs, args); err != nil {
		return err
	}
	ctx, pool, closeDB, err := db.open(ctx)
	if err != nil {
		return err
	}
	defer closeDB()
	claims, err := txn.NewStore(pool, txn.WithSchema(db.schema)).Claims(ctx, *group)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		for _, c := range claims {
			if err := enc.Encode(map[string]any{
				"group": c.Group, "topic": c.Topic, "partition": c.Partition, "epoch": c.Epoch, "owner": c.Owner,
				"next_offset": c.NextOffset, "next_seq": c.NextSeq, "claimed_at": c.ClaimedAt,
				"halted_at": c.HaltedAt, "halt_reason": c.HaltReason,
			}); err != nil {
				return err
			}
		}
		return nil
	}
	if len(claims) == 0 {
		fmt.Fprintln(e.stdout, "no claims")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tTOPIC\tPARTITION\tEPOCH\tOWNER\tNEXT_OFFSET\tNEXT_SEQ\tCLAIMED_AT\tHALTED")
	for _, c := range claims {
		halted := "-"
		if c.HaltedAt != nil {
			// The first line of the reason: enough to act on (the whole
			// reason is in --json and in the service's log).
			reason, _, _ := strings.Cut(c.HaltReason, "\n")
			halted = c.HaltedAt.UTC().Format(time.RFC3339) + " " + reason
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%d\t%d\t%s\t%s\n", c.Group, c.Topic, c.Partition, c.Epoch, orDash(c.Owner),
			c.NextOffset, c.NextSeq, c.ClaimedAt.UTC().Format(time.RFC3339), halted)
	}
	return tw.Flush()
}

func runDeadLetters(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("dead-letters", "List records the runtime could not handle (undecodable, handler panic),\nin id order, with the error and the raw record.", e)
	var db dbFlags
	db.register(fs, e)
	var q txn.DeadLetterQuery
	fs.StringVar(&q.Group, "group", "", "only this consumer group")
	fs.StringVar(&q.Topic, "topic", "", "only this topic")
	fs.Int64Var(&q.AfterID, "after-id", 0, "only ids greater than this (to page)")
	fs.IntVar(&q.Limit, "limit", 100, "at most this many (1-10000)")
	asJSON := fs.Bool("json", false, "print JSON lines (with the raw key, value and headers) instead of a table")
	if err := parse(fs, args); err != nil {
		return err
	}
	if q.Limit < 1 || q.Limit > 10_000 {
		return usagef("--limit must be in [1, 10000], got %d", q.Limit)
	}
	if q.AfterID < 0 {
		return usagef("--after-id must be >= 0, got %d", q.AfterID)
	}
	ctx, pool, closeDB, err := db.open(ctx)
	if err != nil {
		return err
	}
	defer closeDB()
	dls, err := txn.NewStore(pool, txn.WithSchema(db.schema)).DeadLetters(ctx, q)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		for _, d := range dls {
			if err := enc.Encode(map[string]any{
				"id": d.ID, "group": d.Group, "topic": d.Topic, "partition": d.Partition, "offset": d.Offset,
				"command_id": d.CommandID, "key": string(d.Key), "value": string(d.Value), "headers": d.Headers,
				"error": d.Error, "recorded_at": d.RecordedAt,
			}); err != nil {
				return err
			}
		}
		return nil
	}
	if len(dls) == 0 {
		fmt.Fprintln(e.stdout, "no dead letters")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tGROUP\tTOPIC\tPARTITION\tOFFSET\tCOMMAND_ID\tRECORDED_AT\tERROR")
	for _, d := range dls {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", d.ID, d.Group, d.Topic, d.Partition, d.Offset, orDash(d.CommandID),
			d.RecordedAt.UTC().Format(time.RFC3339), oneLine(d.Error, 100))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(dls) == q.Limit {
		fmt.Fprintf(e.stdout, "(more may follow: --after-id %d)\n", dls[len(dls)-1].ID)
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLine flattens s for a table cell and cuts it to n runes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func runResume(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("resume", "Resume a halted partition: clear the halt recorded on its claim row. The\ninstance that owns it notices within seconds, claims it again and consumes\nfrom the committed position, so the record that halted it is tried again:\nfix the cause first (deploy the fixed handler, or switch the failure policy\nto DeadLetter), or it halts again.", e)
	var db dbFlags
	db.register(fs, e)
	group := fs.String("group", "", "consumer group (required; see onceflow claims)")
	topic := fs.String("topic", "", "command topic (required)")
	partition := fs.Int("partition", -1, "partition number (required)")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *group == "":
		return usagef("--group is required (onceflow claims lists them)")
	case *topic == "":
		return usagef("--topic is required")
	case *partition < 0:
		return usagef("--partition is required (>= 0)")
	}
	ctx, pool, closeDB, err := db.open(ctx)
	if err != nil {
		return err
	}
	defer closeDB()
	key := txn.PartitionKey{Group: *group, Topic: *topic, Partition: int32(*partition)}
	was, err := txn.NewStore(pool, txn.WithSchema(db.schema)).Resume(ctx, key)
	if err != nil {
		return err
	}
	if !was {
		fmt.Fprintf(e.stdout, "%s[%d] group %s was not halted; nothing to do\n", key.Topic, key.Partition, key.Group)
		return nil
	}
	fmt.Fprintf(e.stdout, "%s[%d] group %s resumed: its owner claims it again within a few seconds (onceflow claims shows the new epoch)\n", key.Topic, key.Partition, key.Group)
	return nil
}
