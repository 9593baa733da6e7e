package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/onceflow/onceflow/internal/pgschema"
	"github.com/onceflow/onceflow/projection"
)

// projectionsCommands are the subcommands of onceflow projections.
var projectionsCommands = []command{
	{"list", "list versions: state, pause, and progress per source partition", runProjectionsList},
	{"pause", "pause a version at its next batch, until resume", runProjectionsPause},
	{"resume", "resume a paused version and clear its partitions' halts", runProjectionsResume},
	{"reset", "move a paused version's position on one source partition", runProjectionsReset},
	{"skip", "move a paused or halted version past one (poison) event", runProjectionsSkip},
	{"switch", "make a version the active one and retire the active one", runProjectionsSwitch},
	{"watch", "follow a (re)building version until it has caught up", runProjectionsWatch},
}

func projectionsUsage(w io.Writer) {
	fmt.Fprintf(w, "Usage: onceflow projections <subcommand> [flags]\n\n"+
		"Manage the versions of the projections (read models) that actor.NewProjection\n"+
		"feeds: their registry and their positions per source partition.\n\nSubcommands:\n")
	for _, c := range projectionsCommands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'onceflow projections <subcommand> -h' for the flags of a subcommand.\n")
}

func runProjections(ctx context.Context, args []string, e env) error {
	if len(args) == 0 {
		projectionsUsage(e.stderr)
		return usagef("missing subcommand: one of %s", projectionsNames())
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		projectionsUsage(e.stdout)
		return flag.ErrHelp
	}
	for _, c := range projectionsCommands {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:], e)
		var ue *usageError
		switch {
		case err == nil, errors.Is(err, flag.ErrHelp):
			return err
		case errors.As(err, &ue):
			return usagef("%s: %s", c.name, ue.msg)
		default:
			return fmt.Errorf("%s: %w", c.name, err)
		}
	}
	return usagef("unknown subcommand %q: want one of %s", args[0], projectionsNames())
}

func projectionsNames() string {
	names := make([]string, len(projectionsCommands))
	for i, c := range projectionsCommands {
		names[i] = c.name
	}
	return strings.Join(names, ", ")
}

// projFlags are the flags that name a projection version.
type projFlags struct {
	db      dbFlags
	name    string
	version int
}

func (p *projFlags) register(fs *flag.FlagSet, e env) {
	p.db.register(fs, e)
	fs.StringVar(&p.name, "name", "", "projection name (required; onceflow projections list shows them)")
	fs.IntVar(&p.version, "version", 0, "projection version (required, >= 1)")
}

// check reports a missing name or version.
func (p *projFlags) check() error {
	switch {
	case p.name == "":
		return usagef("--name is required (onceflow projections list shows the projections)")
	case p.version == 0:
		return usagef("--version is required (onceflow projections list shows the versions)")
	case p.version < 0:
		return usagef("--version must be >= 1, got %d", p.version)
	}
	return nil
}

// partitionFlag checks --partition: required, an int32 >= 0.
func partitionFlag(p int) (int32, error) {
	switch {
	case p == -1:
		return 0, usagef("--partition is required (onceflow projections list shows the partitions)")
	case p < 0 || p > math.MaxInt32:
		return 0, usagef("--partition must be in [0, %d], got %d", math.MaxInt32, p)
	}
	return int32(p), nil
}

// openStore opens the database and the registry in --schema.
func (d *dbFlags) openStore(ctx context.Context) (context.Context, *projection.Store, func(), error) {
	ctx, pool, closeDB, err := d.open(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	return ctx, projection.NewStore(pool, projection.WithSchema(d.schema)), closeDB, nil
}

// registryError says what to do about a store error: a missing registry
// table (SQLSTATE 42P01, undefined_table) or an unknown version.
func registryError(err error, schema string) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" {
		migrate := "onceflow migrate"
		if schema != pgschema.Default {
			migrate += " --schema " + schema
		}
		return fmt.Errorf("no projection registry in schema %s: start a projection runtime or run %s (%s)", schema, migrate, pgErr.Message)
	}
	if errors.Is(err, projection.ErrNotFound) {
		return fmt.Errorf("%w (onceflow projections list shows the versions and their partitions)", err)
	}
	return err
}

func runProjectionsList(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("projections list", "List every projection version: its state (active: readers use it; building:\nfills its own tables; retired: replaced), whether it is paused and why, and per\nsource partition its position (last source seq applied), the source's last\nseq, the lag between them, the claim's owner and epoch, and why it is halted.", e)
	var db dbFlags
	db.register(fs, e)
	name := fs.String("name", "", "only this projection")
	asJSON := fs.Bool("json", false, "print JSON lines (one per version) instead of a table")
	if err := parse(fs, args); err != nil {
		return err
	}
	ctx, store, closeDB, err := db.openStore(ctx)
	if err != nil {
		return err
	}
	defer closeDB()
	list, err := store.List(ctx, *name)
	if err != nil {
		return registryError(err, db.schema)
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		for _, st := range list {
			parts := make([]map[string]any, 0, len(st.Partitions))
			for _, p := range st.Partitions {
				parts = append(parts, map[string]any{
					"partition": p.Partition, "position": p.Position, "last": p.Last, "lag": p.Lag,
					"owner": p.Owner, "epoch": p.Epoch, "halted": p.Halted != "", "halt_reason": p.Halted,
				})
			}
			if err := enc.Encode(map[string]any{
				"name": st.Name, "version": st.Version, "state": st.State, "source_topic": st.SourceTopic,
				"history_topic": st.HistoryTopic, "group": st.Group(), "paused": st.Paused, "pause_reason": st.PauseReason,
				"created_at": st.CreatedAt, "activated_at": st.ActivatedAt, "lag": st.Lag, "caught_up": st.CaughtUp(),
				"partitions": parts,
			}); err != nil {
				return err
			}
		}
		return nil
	}
	if len(list) == 0 {
		fmt.Fprintln(e.stdout, "no projections")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVERSION\tSTATE\tPAUSED\tPARTITION\tPOSITION\tLAST\tLAG\tOWNER\tEPOCH\tHALTED")
	for _, st := range list {
		paused := "-"
		if st.Paused {
			paused = oneLine(st.PauseReason, 60)
		}
		if len(st.Partitions) == 0 {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t-\t-\t-\t-\t-\t-\t-\n", st.Name, st.Version, st.State, paused)
			continue
		}
		for _, p := range st.Partitions {
			halted := "-"
			if p.Halted != "" {
				// The first line: enough to act on (--json has it all).
				reason, _, _ := strings.Cut(p.Halted, "\n")
				halted = oneLine(reason, 100)
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%d\t%s\n", st.Name, st.Version, st.State, paused,
				p.Partition, p.Position, p.Last, p.Lag, orDash(p.Owner), p.Epoch, halted)
		}
	}
	return tw.Flush()
}

func runProjectionsPause(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("projections pause", "Pause a projection version: its partitions stop at their next batch (a batch\nin flight rolls back) and stay stopped, also after a restart or a rebalance,\nuntil onceflow projections resume. Readers keep reading what it has applied.", e)
	var p projFlags
	p.register(fs, e)
	reason := fs.String("reason", "", "why, shown by list and in the runtime's errors (default \"paused by an operator\")")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := p.check(); err != nil {
		return err
	}
	ctx, store, closeDB, err := p.db.openStore(ctx)
	if err != nil {
		return err
	}
	defer closeDB()
	if err := store.Pause(ctx, p.name, p.version, *reason); err != nil {
		return registryError(err, p.db.schema)
	}
	fmt.Fprintf(e.stdout, "%s v%d paused: its partitions stop at their next batch, until onceflow projections resume --name %s --version %d\n",
		p.name, p.version, p.name, p.version)
	return nil
}

func runProjectionsResume(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("projections resume", "Resume a projection version: clear its pause and the halts of its partitions\n(a poison event under the Halt policy). Their owners continue from the\ncommitted positions within a few seconds, so the event that halted a\npartition is applied again: fix the projection first, or skip the event\n(onceflow projections skip).", e)
	var p projFlags
	p.register(fs, e)
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := p.check(); err != nil {
		return err
	}
	ctx, store, closeDB, err := p.db.openStore(ctx)
	if err != nil {
		return err
	}
	defer closeDB()
	st, err := store.Get(ctx, p.name, p.version)
	if err != nil {
		return registryError(err, p.db.schema)
	}
	var halted []string
	for _, part := range st.Partitions {
		if part.Halted != "" {
			halted = append(halted, fmt.Sprint(part.Partition))
		}
	}
	if !st.Paused && len(halted) == 0 {
		fmt.Fprintf(e.stdout, "%s v%d was neither paused nor halted; nothing to do\n", p.name, p.version)
		return nil
	}
	if err := store.Resume(ctx, p.name, p.version); err != nil {
		return registryError(err, p.db.schema)
	}
	var what []string
	if st.Paused {
		what = append(what, "pause cleared")
	}
	if len(halted) > 0 {
		what = append(what, "halt cleared on partition "+strings.Join(halted, ", "))
	}
	fmt.Fprintf(e.stdout, "%s v%d resumed (%s): its partitions continue within a few seconds (onceflow projections list shows their positions)\n",
		p.name, p.version, strings.Join(what, "; "))
	return nil
}

// notPausedError says to pause first when the store refuses an operation
// on a running partition.
func notPausedError(err error, p projFlags, partition int32) error {
	if errors.Is(err, projection.ErrNotPaused) {
		return fmt.Errorf("%s v%d partition %d is running (the version is not paused and the partition is not halted): pause it first (onceflow projections pause --name %s --version %d), and resume it afterwards",
			p.name, p.version, partition, p.name, p.version)
	}
	return registryError(err, p.db.schema)
}

// position returns the version's position on partition, or -1 when it has
// none there yet.
func position(st projection.Status, partition int32) int64 {
	for _, p := range st.Partitions {
		if p.Partition == partition {
			return p.Position
		}
	}
	return -1
}

func runProjectionsReset(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("projections reset", "Move a projection version's position on one source partition: it applies seq\n--to + 1 next (--to 0 replays the partition from its first event). The version\nmust be paused, or the partition halted, first. Reset does not undo what the\nread model holds: replay only into a read model that tolerates it, or rebuild\n(a new version). Resume the version afterwards.", e)
	var p projFlags
	p.register(fs, e)
	part := fs.Int("partition", -1, "source partition (required)")
	to := fs.Int64("to", -1, "the new position: the last source seq counted as applied (required, >= 0)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := p.check(); err != nil {
		return err
	}
	partition, err := partitionFlag(*part)
	if err != nil {
		return err
	}
	switch {
	case *to == -1:
		return usagef("--to is required: the last seq counted as applied (0 replays the partition from its first event)")
	case *to < 0:
		return usagef("--to must be >= 0, got %d", *to)
	}
	ctx, store, closeDB, err := p.db.openStore(ctx)
	if err != nil {
		return err
	}
	defer closeDB()
	st, err := store.Get(ctx, p.name, p.version)
	if err != nil {
		return registryError(err, p.db.schema)
	}
	if err := store.Reset(ctx, p.name, p.version, partition, *to); err != nil {
		return notPausedError(err, p, partition)
	}
	fmt.Fprintf(e.stdout, "%s v%d partition %d reset from seq %d to seq %d: it applies seq %d next once resumed (onceflow projections resume --name %s --version %d)\n",
		p.name, p.version, partition, max(position(st, partition), 0), *to, *to+1, p.name, p.version)
	return nil
}

func runProjectionsSkip(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("projections skip", "Move a projection version past one event of a source partition without\napplying it (a poison event): --seq must be the next event it applies (list\nshows the position; the next is position + 1). The version must be paused, or\nthe partition halted, first. Resume the version afterwards.", e)
	var p projFlags
	p.register(fs, e)
	part := fs.Int("partition", -1, "source partition (required)")
	seq := fs.Int64("seq", 0, "source seq of the event to skip (required, >= 1)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := p.check(); err != nil {
		return err
	}
	partition, err := partitionFlag(*part)
	if err != nil {
		return err
	}
	switch {
	case *seq == 0:
		return usagef("--seq is required: the seq of the event to skip (the partition's position + 1)")
	case *seq < 0:
		return usagef("--seq must be >= 1, got %d", *seq)
	}
	ctx, store, closeDB, err := p.db.openStore(ctx)
	if err != nil {
		return err
	}
	defer closeDB()
	if err := store.Skip(ctx, p.name, p.version, partition, *seq); err != nil {
		return notPausedError(err, p, partition)
	}
	fmt.Fprintf(e.stdout, "%s v%d partition %d skipped seq %d without applying it: it applies seq %d next once resumed (onceflow projections resume --name %s --version %d)\n",
		p.name, p.version, partition, *seq, *seq+1, p.name, p.version)
	return nil
}

func runProjectionsSwitch(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("projections switch", "Make a projection version the active one (the one readers use) and retire the\nactive one, in one transaction, after its batch in flight: the blue/green switch\na projection's runtime does by itself when a new version has caught up. The\nretired version's runtime stops; its tables are left in place (drop them when\nnothing reads them). Switching to an older version rolls back to it.", e)
	var p projFlags
	p.register(fs, e)
	force := fs.Bool("force", false, "switch even though the version has not caught up (readers then see a read model behind the source)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := p.check(); err != nil {
		return err
	}
	ctx, store, closeDB, err := p.db.openStore(ctx)
	if err != nil {
		return err
	}
	defer closeDB()
	st, err := store.Get(ctx, p.name, p.version)
	if err != nil {
		return registryError(err, p.db.schema)
	}
	if st.State == projection.Active {
		fmt.Fprintf(e.stdout, "%s v%d is already active; nothing to do\n", p.name, p.version)
		return nil
	}
	if !st.CaughtUp() && !*force {
		return fmt.Errorf("%s v%d has not caught up (%d events behind): wait for it (onceflow projections watch --name %s --version %d) or pass --force",
			p.name, p.version, st.Lag, p.name, p.version)
	}
	old, err := store.Active(ctx, p.name)
	hadActive := err == nil
	if err != nil && !errors.Is(err, projection.ErrNotFound) {
		return registryError(err, p.db.schema)
	}
	if err := store.Switch(ctx, p.name, p.version, nil); err != nil {
		return registryError(err, p.db.schema)
	}
	if !hadActive {
		fmt.Fprintf(e.stdout, "%s v%d is active (no version was active before)\n", p.name, p.version)
		return nil
	}
	fmt.Fprintf(e.stdout, "%s v%d is active; v%d is retired and its runtime stops. The tables of v%d are left in place: drop them when nothing reads them\n",
		p.name, p.version, old.Version, old.Version)
	return nil
}

func runProjectionsWatch(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("projections watch", "Follow a projection version until it has caught up (every partition's lag is\n0), then exit 0. On a terminal it draws a progress bar; otherwise it prints one\nline per interval. It exits 1 when interrupted before.", e)
	var p projFlags
	p.register(fs, e)
	fs.Lookup("timeout").Usage = "give up connecting, or a sample, after this long (the watch itself has no limit)"
	interval := fs.Duration("interval", time.Second, "time between samples")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := p.check(); err != nil {
		return err
	}
	if *interval <= 0 {
		return usagef("--interval must be > 0, got %v", *interval)
	}
	// Not p.db.open: its --timeout bounds the whole command, and a rebuild
	// takes as long as it takes.
	cctx, cancel := context.WithTimeout(ctx, p.db.timeout)
	pool, err := p.db.connect(cctx)
	cancel()
	if err != nil {
		return err
	}
	defer pool.Close()
	store := projection.NewStore(pool, projection.WithSchema(p.db.schema))

	tty := isTerminal(e.stdout)
	ticker := time.NewTicker(*interval)
	defer ticker.Stop()
	var prev watchSample // the last sample; zero before the first
	width := 0           // of the bar drawn last
	for {
		sctx, cancel := context.WithTimeout(ctx, p.db.timeout)
		st, err := store.Get(sctx, p.name, p.version)
		cancel()
		if err != nil && ctx.Err() == nil {
			if width > 0 {
				fmt.Fprintln(e.stdout)
			}
			return registryError(err, p.db.schema)
		}
		if err == nil {
			cur := sampleOf(st, time.Now())
			pr := measure(prev, cur)
			note := watchNote(st)
			if tty {
				bar := progressBar(st.Name, st.Version, pr) + note
				fmt.Fprintf(e.stdout, "\r%s%s", bar, strings.Repeat(" ", max(width-len([]rune(bar)), 0)))
				width = len([]rune(bar))
			} else {
				fmt.Fprintln(e.stdout, progressLine(st.Name, st.Version, pr)+note)
			}
			if st.CaughtUp() {
				if tty {
					fmt.Fprintln(e.stdout)
				}
				return nil
			}
			prev = cur
		}
		select {
		case <-ctx.Done():
			if width > 0 {
				fmt.Fprintln(e.stdout)
			}
			if prev.at.IsZero() {
				return fmt.Errorf("stopped before the first sample of %s v%d: %w", p.name, p.version, ctx.Err())
			}
			return fmt.Errorf("stopped before %s v%d caught up (%d events behind at the last sample): %w", p.name, p.version, prev.lag, ctx.Err())
		case <-ticker.C:
		}
	}
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// watchSample is one reading of a version's progress.
type watchSample struct {
	at    time.Time
	total int64 // events the source had committed (sum over partitions)
	lag   int64 // of those, the ones the version had not applied
}

func sampleOf(st projection.Status, at time.Time) watchSample {
	s := watchSample{at: at, lag: st.Lag}
	for _, p := range st.Partitions {
		s.total += p.Last
	}
	return s
}

// watchProgress is what watch shows of a sample against the previous one.
type watchProgress struct {
	applied, total, lag int64
	percent             float64       // of total applied, rounded down to 0.1: 100.0 only when caught up
	rate                float64       // events applied per second since the previous sample; -1: unknown (first sample)
	eta                 time.Duration // until caught up at the rate the lag shrank; -1: unknown (first sample, or the lag did not shrink)
}

// measure derives the progress from two samples (prev zero: the first
// sample). The rate counts the events the version applied between them; the
// ETA divides the lag by the rate at which it shrank, so that a source still
// committing events counts against it.
func measure(prev, cur watchSample) watchProgress {
	lag := max(cur.lag, 0)
	total := max(cur.total, lag)
	pr := watchProgress{applied: total - lag, total: total, lag: lag, percent: 100, rate: -1, eta: -1}
	if total > 0 {
		pr.percent = math.Floor(float64(pr.applied)/float64(total)*1000) / 10
		if lag > 0 && pr.percent >= 100 {
			pr.percent = 99.9
		}
	}
	if lag == 0 {
		pr.eta = 0
	}
	dt := cur.at.Sub(prev.at).Seconds()
	if prev.at.IsZero() || dt <= 0 {
		return pr
	}
	prevApplied := max(prev.total, prev.lag) - max(prev.lag, 0)
	pr.rate = max(float64(pr.applied-prevApplied), 0) / dt // a reset moves positions back: no negative rate
	if shrink := float64(max(prev.lag, 0)-lag) / dt; lag > 0 && shrink > 0 {
		pr.eta = time.Duration(float64(lag) / shrink * float64(time.Second))
	}
	return pr
}

// progressLine is watch's line when stdout is not a terminal:
// "balances v2: 12000/50000 events (24.0%), 3100 events/s, ETA 12s".
func progressLine(name string, version int, pr watchProgress) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s v%d: %d/%d events (%.1f%%)", name, version, pr.applied, pr.total, pr.percent)
	if pr.lag == 0 {
		b.WriteString(", caught up")
		return b.String()
	}
	if pr.rate < 0 {
		b.WriteString(", measuring events/s")
		return b.String()
	}
	fmt.Fprintf(&b, ", %.0f events/s, ETA %s", pr.rate, etaString(pr.eta))
	return b.String()
}

// barWidth is the number of cells of progressBar's bar.
const barWidth = 30

// progressBar is watch's line on a terminal, rewritten in place:
// "balances v2 [=======>......................]  24.0%  3100 events/s  ETA 12s".
func progressBar(name string, version int, pr watchProgress) string {
	filled := int(pr.percent / 100 * barWidth)
	bar := strings.Repeat("=", filled)
	if filled < barWidth {
		bar += ">" + strings.Repeat(".", barWidth-filled-1)
	}
	line := fmt.Sprintf("%s v%d [%s] %5.1f%%", name, version, bar, pr.percent)
	switch {
	case pr.lag == 0:
		return line + "  caught up"
	case pr.rate < 0:
		return line + "  measuring events/s"
	}
	return line + fmt.Sprintf("  %.0f events/s  ETA %s", pr.rate, etaString(pr.eta))
}

// etaString formats an ETA to the second: "12s", "3m05s", "2h07m".
func etaString(d time.Duration) string {
	switch {
	case d < 0:
		return "unknown"
	case d < time.Second:
		return "<1s"
	}
	d = d.Round(time.Second)
	h, m, s := int64(d/time.Hour), int64(d%time.Hour/time.Minute), int64(d%time.Minute/time.Second)
	switch {
	case h > 0:
		return fmt.Sprintf("%dh%02dm", h, m)
	case m > 0:
		return fmt.Sprintf("%dm%02ds", m, s)
	}
	return fmt.Sprintf("%ds", s)
}

// watchNote says why a version may not progress: paused, halted, retired.
func watchNote(st projection.Status) string {
	var notes []string
	if st.State == projection.Retired {
		notes = append(notes, "retired")
	}
	if st.Paused {
		notes = append(notes, "paused: "+oneLine(st.PauseReason, 60))
	}
	for _, p := range st.Partitions {
		if p.Halted != "" {
			reason, _, _ := strings.Cut(p.Halted, "\n")
			notes = append(notes, fmt.Sprintf("partition %d halted: %s", p.Partition, oneLine(reason, 60)))
		}
	}
	if len(notes) == 0 {
		return ""
	}
	return " (" + strings.Join(notes, "; ") + ")"
}
