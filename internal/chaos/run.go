package chaos

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/onceflow/onceflow/internal/pgcluster"
)

// Config configures a harness run. DefaultConfig fills in the defaults.
type Config struct {
	// Dir holds everything of the run: the Postgres cluster and broker data
	// (removed at the end unless Keep), every process's log, the load
	// generator's log (load.jsonl), the faults (faults.json) and the report
	// (report.json). Required.
	Dir string
	// Duration of the load and fault phase. The drain and the check come
	// after it and are bounded by DrainTimeout.
	Duration time.Duration
	// Seed drives the fault schedule, the load and the command ids.
	Seed int64
	// Instances at the start (>= 2) and slots in all (MaxInstances, <= 5
	// on a 2-core machine).
	Instances, MaxInstances int
	// Partitions of the command topic.
	Partitions int
	// Rate of new commands per second.
	Rate int
	// SKUs per warehouse (two warehouses): the aggregates the load spreads
	// over. Default 8 (16 aggregates).
	SKUs int
	// PassivateAfter is the instances' passivation timeout (0: the
	// sample's default). A short one makes aggregates leave memory and
	// reload all the time.
	PassivateAfter time.Duration
	// Workers bounds the commands in flight (0: 48, or rate/2 when more).
	Workers int
	// SessionTimeout of the instances' consumer group sessions; a paused
	// instance is held past it.
	SessionTimeout time.Duration
	// InventoryBin and OnceflowBin are the built binaries of
	// samples/inventory and cmd/onceflow.
	InventoryBin, OnceflowBin string
	// Service is the sample under test: ServiceInventory (default) or
	// ServicePayments (PaymentsBin, the built samples/payments; its
	// transfer process resends a step's commands after RetryAfter).
	Service     string
	PaymentsBin string
	RetryAfter  time.Duration
	// Faults to inject (default AllFaults). RequireAllFaults makes a run
	// that did not inject each of them at least once a violation.
	Faults           []string
	RequireAllFaults bool
	// DrainTimeout bounds the resolve and drain phase after the load stops.
	DrainTimeout time.Duration
	// Keep the Postgres and broker data after the run.
	Keep bool
	// Logger gets the harness's progress.
	Logger *slog.Logger
}

// DefaultConfig returns the configuration of the CI run, without Dir and
// binaries.
func DefaultConfig() Config {
	return Config{
		Duration: 2 * time.Minute, Seed: 1, Instances: 3, MaxInstances: 5, Partitions: 12, Rate: 30, SKUs: 8,
		SessionTimeout: 3 * time.Second, Faults: AllFaults, RequireAllFaults: true, DrainTimeout: 3 * time.Minute,
	}
}

func (c *Config) validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("Dir is required"))
	}
	switch c.Service {
	case "", ServiceInventory:
		if c.InventoryBin == "" || c.OnceflowBin == "" {
			errs = append(errs, errors.New("InventoryBin and OnceflowBin are required"))
		}
	case ServicePayments:
		if c.PaymentsBin == "" || c.OnceflowBin == "" {
			errs = append(errs, errors.New("PaymentsBin and OnceflowBin (the broker process) are required for the payments service"))
		}
		if slices.Contains(c.Faults, FaultMalformedInput) {
			errs = append(errs, errors.New("the payments run injects no malformed records"))
		}
	default:
		errs = append(errs, fmt.Errorf("unknown service %q (want %q or %q)", c.Service, ServiceInventory, ServicePayments))
	}
	if c.Duration < 10*time.Second {
		errs = append(errs, fmt.Errorf("duration must be at least 10s, got %v", c.Duration))
	}
	if c.Instances < 2 || c.MaxInstances < c.Instances || c.MaxInstances > 8 {
		errs = append(errs, fmt.Errorf("instances: want 2 <= instances (%d) <= max (%d) <= 8", c.Instances, c.MaxInstances))
	}
	if c.Partitions < 1 || c.Partitions > 256 {
		errs = append(errs, fmt.Errorf("partitions must be in [1, 256], got %d", c.Partitions))
	}
	if c.Rate < 1 || c.Rate > 20000 {
		errs = append(errs, fmt.Errorf("rate must be in [1, 20000], got %d", c.Rate))
	}
	if c.SKUs < 1 || c.SKUs > 100_000 {
		errs = append(errs, fmt.Errorf("SKUs must be in [1, 100000], got %d", c.SKUs))
	}
	if c.PassivateAfter < 0 || c.Workers < 0 {
		errs = append(errs, errors.New("passivation and workers must be >= 0"))
	}
	if c.SessionTimeout < time.Second {
		errs = append(errs, fmt.Errorf("session timeout must be at least 1s, got %v", c.SessionTimeout))
	}
	for _, f := range c.Faults {
		if !slices.Contains(AllFaults, f) {
			errs = append(errs, fmt.Errorf("unknown fault kind %q (known: %v)", f, AllFaults))
		}
	}
	if c.DrainTimeout <= 0 {
		errs = append(errs, errors.New("drain timeout must be > 0"))
	}
	return errors.Join(errs...)
}

// Report is the JSON report of a run.
type Report struct {
	Passed     bool      `json:"passed"`
	Service    string    `json:"service"`
	Seed       int64     `json:"seed"`
	Duration   string    `json:"duration"`
	Instances  int       `json:"instances"`
	Partitions int       `json:"partitions"`
	Rate       int       `json:"rate_per_second"`
	StartedAt  time.Time `json:"started_at"`
	WallTime   string    `json:"wall_time"`
	Dir        string    `json:"dir"`

	CommandsGenerated int   `json:"commands_generated"`
	DroppedTicks      int64 `json:"dropped_ticks"` // load ticks skipped because every worker was busy
	Unresolved        int   `json:"unresolved_after_drain"`

	Check       CheckResult    `json:"check"`
	Faults      map[string]int `json:"faults_injected"`
	FaultErrors int            `json:"fault_errors"`
	Ownership   LogStats       `json:"ownership"`

	ViolationCount int         `json:"violation_count"`
	Violations     []Violation `json:"violations"` // at most 20 of each kind
	Error          string      `json:"error,omitempty"`
}

// Run runs the harness and checks the result. The returned error is about
// the harness itself (could not start Postgres, ...); violations are in
// the report. The report is written to Dir/report.json in both cases when
// possible.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("chaos: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// Postgres runs as the postgres OS user when we are root: it must be
	// able to enter dir (os.MkdirTemp makes it 0700).
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	rep := &Report{Service: cmp.Or(cfg.Service, ServiceInventory), Seed: cfg.Seed, Duration: cfg.Duration.String(), Instances: cfg.Instances, Partitions: cfg.Partitions,
		Rate: cfg.Rate, StartedAt: time.Now().UTC(), Dir: dir, Faults: map[string]int{}}
	err = run(ctx, &cfg, dir, rep)
	if err != nil {
		rep.Error = err.Error()
	}
	rep.WallTime = time.Since(rep.StartedAt).Round(time.Second).String()
	rep.Passed = err == nil && rep.ViolationCount == 0
	if werr := writeJSON(filepath.Join(dir, "report.json"), rep); werr != nil && err == nil {
		err = werr
	}
	return rep, err
}

func run(ctx context.Context, cfg *Config, dir string, rep *Report) error {
	log := cfg.Logger
	d := &deployment{cfg: cfg, log: log, dir: dir}
	var err error
	if d.brokerPort, err = freePort(); err != nil {
		return err
	}
	defer d.close(cfg.Keep)

	log.Info("starting postgres")
	if err := d.startPostgres(ctx); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	adminCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = pgcluster.CreateDatabase(adminCtx, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", d.pgPort), database)
	cancel()
	if err != nil {
		return fmt.Errorf("create database: %w", err)
	}
	log.Info("starting broker", "port", d.brokerPort)
	if err := d.startBroker(ctx); err != nil {
		return err
	}
	for i := range cfg.MaxInstances {
		s, err := d.newSlot(i)
		if err != nil {
			return err
		}
		d.slots = append(d.slots, s)
	}
	if err := d.startFleet(ctx); err != nil {
		return err
	}
	log.Info("deployment up", "instances", cfg.Instances, "dir", dir)
	if cfg.Service == ServicePayments {
		return runPayments(ctx, d, rep)
	}
	var wg sync.WaitGroup

	load, err := newLoadGen(filepath.Join(dir, "load.jsonl"), cfg.Seed, cfg.Rate, cfg.SKUs, d.targets)
	if err != nil {
		return err
	}
	defer load.close()
	nem := &nemesis{d: d, rng: rand.New(rand.NewPCG(uint64(cfg.Seed), 0x7e3e)), kinds: cfg.Faults, log: log}

	// Load and faults, for Duration.
	phase, stopPhase := context.WithTimeout(ctx, cfg.Duration)
	defer stopPhase()
	var injected []Injected
	var injectErr error
	wg.Add(3)
	workers := cfg.Workers
	if workers == 0 {
		workers = max(48, cfg.Rate/2)
	}
	go func() { defer wg.Done(); load.run(phase, workers) }()
	go func() { defer wg.Done(); nem.run(phase) }()
	go func() {
		defer wg.Done()
		if sleep(phase, cfg.Duration/3) {
			injected, injectErr = inject(ctx, d.brokerAddr(), cfg.Seed)
		}
	}()
	wg.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if injectErr != nil {
		return fmt.Errorf("inject malformed records: %w", injectErr)
	}
	faults := nem.faults()
	for _, f := range faults {
		rep.Faults[f.Kind]++
		if f.Err != "" {
			rep.FaultErrors++
		}
	}
	if len(injected) > 0 {
		rep.Faults[FaultMalformedInput] = len(injected)
	}
	_ = writeJSON(filepath.Join(dir, "faults.json"), faults)
	_ = writeJSON(filepath.Join(dir, "injected.json"), injected)
	log.Info("load and faults stopped; healing", "faults", len(faults))

	if err := d.heal(ctx); err != nil {
		return err
	}

	// Resolve every command whose outcome is unknown, then wait until
	// every partition is drained.
	drain, stopDrain := context.WithTimeout(ctx, cfg.DrainTimeout)
	defer stopDrain()
	rep.Unresolved = load.resolve(drain)
	load.mu.Lock()
	rep.CommandsGenerated = load.n
	load.mu.Unlock()
	rep.DroppedTicks = load.dropped.Load()
	log.Info("resolved unknown outcomes", "unresolved", rep.Unresolved)
	drainErr := waitDrained(drain, d.adminDSN(), d.brokerAddr(), cfg.Partitions)
	if drainErr != nil {
		log.Warn("drain", "err", drainErr) // the checker reports the partitions behind
	}
	if err := waitProjections(drain, d.adminDSN()); err != nil {
		log.Warn("projections", "err", err) // the checker reports the projections behind
	}

	// Stop the instances, so nothing changes while the checker reads.
	for _, s := range d.running() {
		wg.Add(1)
		go func() { defer wg.Done(); d.stopInstance(s) }()
	}
	wg.Wait()

	log.Info("collecting")
	data := &Data{Injected: injected}
	if data.Attempts, err = readAttempts(filepath.Join(dir, "load.jsonl")); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if data.HighWater, err = highWater(d.brokerAddr(), cfg.Partitions); err != nil {
		return err
	}
	if err := collectKafka(cctx, d.brokerAddr(), data.HighWater, data); err != nil {
		return err
	}
	if err := collectPostgres(cctx, d.adminDSN(), data); err != nil {
		return err
	}
	if data.History, err = collectTopic(cctx, d.brokerAddr(), commandTopic+".events", cfg.Partitions, 5*time.Second); err != nil {
		return err
	}
	if data.States, err = collectTopic(cctx, d.brokerAddr(), commandTopic+".state", cfg.Partitions, 3*time.Second); err != nil {
		return err
	}
	return d.finish(rep, Check(data))
}

// finish completes a run's report with the checker's result res: the
// ownership figures from every incarnation's log, a violation for a fault
// kind never injected (RequireAllFaults) and for partition halts, at most
// 20 violations of each kind in the report and all of them in
// violations.txt.
func (d *deployment) finish(rep *Report, res CheckResult) error {
	fail := func(kind, detail string) {
		res.Violations = append(res.Violations, Violation{Kind: kind, Detail: detail})
		res.ViolationsByKind[kind]++
	}
	var logs []string
	for _, s := range d.slots {
		logs = append(logs, s.logs...)
	}
	var err error
	if rep.Ownership, err = scanLogs(logs); err != nil {
		return err
	}
	if d.cfg.RequireAllFaults {
		for _, k := range d.cfg.Faults {
			if rep.Faults[k] == 0 {
				fail(VFaultKindNotCovered, fmt.Sprintf("fault %s was never injected: run longer", k))
			}
		}
	}
	if rep.Ownership.Halts > 0 {
		// The load sends only well-formed commands and malformed records
		// are dead-lettered: a halt is the runtime giving up on a fault it
		// should have ridden out (the records stay in Kafka, so it also
		// shows as not drained).
		fail(VHalted, fmt.Sprintf("%d partition halts in the instances' logs (grep 'partition halted' %s/inst-*.log)", rep.Ownership.Halts, d.dir))
	}
	rep.Check = res
	rep.ViolationCount = len(res.Violations)
	rep.Violations = []Violation{}
	perKind := map[string]int{}
	for _, v := range res.Violations {
		if perKind[v.Kind]++; perKind[v.Kind] <= 20 {
			rep.Violations = append(rep.Violations, v)
		}
	}
	if rep.ViolationCount > 0 {
		f, err := os.Create(filepath.Join(d.dir, "violations.txt"))
		if err == nil {
			for _, v := range res.Violations {
				fmt.Fprintf(f, "%s: %s\n", v.Kind, v.Detail)
			}
			f.Close()
		}
	}
	return nil
}

// Summary is a human-readable summary of the report.
func (r *Report) Summary() string {
	s := fmt.Sprintf("onceflow chaos (%s): seed %d, %s, %d partitions, %d instances at start, wall time %s\n", r.Service, r.Seed, r.Duration, r.Partitions, r.Instances, r.WallTime)
	s += fmt.Sprintf("  commands   %d sent (%d attempts, %d retries, %d without a definite answer), %d unresolved after the drain\n",
		r.Check.Commands, r.Check.Attempts, r.Check.Retries, r.Check.Unknown, r.Unresolved)
	s += fmt.Sprintf("  outcomes   %v (answers seen %v, %d answered as duplicates)\n", r.Check.Outcomes, r.Check.Answers, r.Check.DuplicateAnswers)
	if r.Service == ServicePayments {
		s += fmt.Sprintf("  store      %d events over %d aggregates\n", r.Check.Events, r.Check.Aggregates)
	} else {
		s += fmt.Sprintf("  store      %d records on the topic (%d duplicates), %d events over %d aggregates, %d dead letters\n",
			r.Check.Records, r.Check.DuplicateRecords, r.Check.Events, r.Check.Aggregates, r.Check.DeadLetters)
	}
	if r.DroppedTicks > 0 {
		s += fmt.Sprintf("  load       %d ticks of the %d/s schedule dropped (every worker busy): the service could not keep up\n", r.DroppedTicks, r.Rate)
	}
	if r.Service != ServicePayments {
		s += fmt.Sprintf("  published  %d history records (%d repeats of an earlier seq), latest state of %d aggregates\n",
			r.Check.HistoryRecords, r.Check.HistoryRepeats, r.Check.StateKeys)
	}
	if r.Check.ReadModels != "" {
		s += "  read       " + r.Check.ReadModels + "\n"
	}
	s += fmt.Sprintf("  faults     %v (%d failed to inject)\n", r.Faults, r.FaultErrors)
	o := r.Ownership
	s += fmt.Sprintf("  ownership  %d claims, %d revocations (%d lost), %d fenced commits, %d self-fenced, %d halts, %d transient retries, %d incarnations\n",
		o.Claims, o.Revocations, o.Lost, o.FencedCommits, o.SelfFenced, o.Halts, o.Retries, o.Incarnations)
	if r.Error != "" {
		s += "  HARNESS ERROR: " + r.Error + "\n"
	}
	if r.ViolationCount == 0 {
		s += "  result     PASS: no violations\n"
	} else {
		s += fmt.Sprintf("  result     FAIL: %d violations %v\n", r.ViolationCount, r.Check.ViolationsByKind)
		kinds := slices.Sorted(maps.Keys(r.Check.ViolationsByKind))
		for _, k := range kinds {
			n := 0
			for _, v := range r.Violations {
				if v.Kind == k && n < 3 {
					s += fmt.Sprintf("    %s: %s\n", v.Kind, v.Detail)
					n++
				}
			}
		}
	}
	return s
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// startFleet starts the first instance (it creates the topics and
// migrates), then the others.
func (d *deployment) startFleet(ctx context.Context) error {
	if err := d.startInstance(ctx, d.slots[0]); err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make([]error, d.cfg.Instances)
	for i := 1; i < d.cfg.Instances; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = d.startInstance(ctx, d.slots[i]) }()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// heal makes every instance that should run run, healthy, with its
// connections restored.
func (d *deployment) heal(ctx context.Context) error {
	for _, s := range d.slots {
		s.pgProxy.Heal()
		s.kProxy.Heal()
		if s.proc != nil {
			s.proc.resume()
			if s.proc.exited() {
				d.mu.Lock()
				s.proc = nil
				d.mu.Unlock()
				if err := d.startInstance(ctx, s); err != nil {
					return fmt.Errorf("restart after the fault phase: %w", err)
				}
			}
		}
	}
	return nil
}
