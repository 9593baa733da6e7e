package chaos

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// runBroken runs the harness against the inventory service built with a
// protocol-breaking build tag, with the run configured by set, and returns
// the report. The self-tests only run with ONCEFLOW_CHAOS_BITE=1 (`make
// chaos-bite`, which CI runs): each takes one to two minutes.
func runBroken(t *testing.T, tag string, set func(*Config)) *Report {
	t.Helper()
	if os.Getenv("ONCEFLOW_CHAOS_BITE") == "" {
		t.Skip("set ONCEFLOW_CHAOS_BITE=1 (make chaos-bite): runs the fault harness against a protocol-breaking build")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	// Not t.TempDir(): Postgres runs as the postgres user and must be able
	// to enter the directory's parents.
	dir, err := os.MkdirTemp("", "onceflow-chaos-bite-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "bin")
	build := func(out, pkg string, tags ...string) string {
		t.Helper()
		args := append([]string{"build", "-o", filepath.Join(bin, out)}, tags...)
		cmd := exec.CommandContext(ctx, "go", append(args, pkg)...)
		cmd.Dir = "../.." // the module root
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, b)
		}
		return filepath.Join(bin, out)
	}
	cfg := DefaultConfig()
	cfg.Dir = filepath.Join(dir, "run")
	cfg.RequireAllFaults = false
	// A broken build may never drain (a publisher stuck at a gap in the
	// store): the checker reports what is missing, no need to wait 3m.
	cfg.DrainTimeout = 45 * time.Second
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	set(&cfg)
	cfg.OnceflowBin = build("onceflow", "./cmd/onceflow") // the broker process
	if cfg.Service == ServicePayments {
		cfg.PaymentsBin = build("payments", "./samples/payments", "-tags", tag)
	} else {
		cfg.InventoryBin = build("inventory", "./samples/inventory", "-tags", tag)
	}
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	t.Logf("\n%s", rep.Summary())
	return rep
}

// TestUnsafeBuildIsCaught is the checker's self-test: it runs the whole
// harness against the inventory service built with the
// onceflow_unsafe_offset_first tag (txn commits the offset in its own
// transaction before the batch's state) and requires the checker to find
// violations. If it ever passes that build, the harness has gone blind.
func TestUnsafeBuildIsCaught(t *testing.T) {
	rep := runBroken(t, "onceflow_unsafe_offset_first", func(cfg *Config) {
		cfg.Duration = time.Minute
		cfg.Seed = 2
		// The faults that fall between the two transactions of the broken
		// commit: crashes, Postgres going away, connections cut.
		cfg.Faults = []string{FaultKill, FaultPostgres, FaultCutPostgres, FaultRestart}
	})
	if rep.ViolationCount == 0 {
		t.Fatalf("the checker found no violation in a build that commits the offset before the state: it is blind (report %s)", filepath.Join(rep.Dir, "report.json"))
	}
	caught := rep.Check.ViolationsByKind[VLost] + rep.Check.ViolationsByKind[VSkipped] + rep.Check.ViolationsByKind[VSeq]
	if caught == 0 {
		t.Fatalf("violations %v, but none of the kinds this break causes (lost, skipped_record, seq_gap)", rep.Check.ViolationsByKind)
	}
}

// TestSkippedPublishIsCaught is the checker's self-test for events out: the
// inventory service built with the onceflow_unsafe_skip_publish tag skips
// one event whenever a publisher resumes after an earlier owner (a crash, a
// rebalance). The checker must report the gap in the history topic.
func TestSkippedPublishIsCaught(t *testing.T) {
	rep := runBroken(t, "onceflow_unsafe_skip_publish", func(cfg *Config) {
		cfg.Duration = 45 * time.Second
		cfg.Seed = 3
		// Faults that hand partitions to a new owner.
		cfg.Faults = []string{FaultKill, FaultRestart}
	})
	if rep.Check.ViolationsByKind[VHistoryGap] == 0 {
		t.Fatalf("violations %v: no history_gap in a build that skips a publish after a new owner takes over: the checker is blind (report %s)", rep.Check.ViolationsByKind, filepath.Join(rep.Dir, "report.json"))
	}
}

// TestRandomCommandIDsAreCaught is the self-test of the payments check: the
// payments sample built with the onceflow_unsafe_random_command_id tag,
// whose process manager sends every command under a random id instead of
// the deterministic one of its step. Resends of a step (a short retry
// interval makes them frequent) then carry new ids; the ledger's accounts
// refuse a second effect for the same transfer, so the money balances, but
// ledger.Check must report effects not made under their step's id.
func TestRandomCommandIDsAreCaught(t *testing.T) {
	rep := runBroken(t, "onceflow_unsafe_random_command_id", func(cfg *Config) {
		cfg.Service = ServicePayments
		cfg.Duration = 45 * time.Second
		cfg.Seed = 5
		cfg.Rate = 15
		cfg.RetryAfter = 300 * time.Millisecond
		cfg.Faults = []string{FaultKill, FaultRestart}
	})
	if rep.Check.ViolationsByKind[VLedger] == 0 {
		t.Fatalf("violations %v: no ledger violation in a build whose process manager sends random command ids: the check is blind (report %s)", rep.Check.ViolationsByKind, filepath.Join(rep.Dir, "report.json"))
	}
}
