// Command onceflow-chaos runs the exactly-once fault harness: the inventory
// sample as several OS processes in one consumer group, a broker process, a
// Postgres cluster, steady load through the HTTP API with retries, and a
// seeded nemesis (kill -9, SIGSTOP past the session timeout, graceful
// restarts, scale up and down, Postgres and broker restarts, connections cut
// through per-instance proxies). At the end it checks, from Postgres, the
// command topic and the load log, that every command was handled exactly
// once; see internal/chaos and docs/guarantees.md.
//
//	onceflow-chaos -duration 2m -seed 7        # what `make chaos` runs
//	onceflow-chaos -duration 20m -seed 7       # before a release
//
//	onceflow-chaos -service payments -duration 90s -seed 7   # make chaos-payments
//
// With -service payments it runs the payments sample instead (accounts and
// transfers moved by a process manager): the load opens and funds accounts,
// then sends single-phase, two-phase (posted, voided, expired) and refused
// transfers; the check is ledger.Check (balances, flags, every transfer
// settled once, deadlines once, deterministic command ids) and every
// answer a client got against the ledger's final state.
//
// It builds the binaries it runs (go build -o) unless -inventory-bin and
// -onceflow-bin are given. It prints a summary; the last line of its output
// is the path of the JSON report. Exit status: 0 no violation, 1
// violations, 2 the harness itself failed or bad usage. With
// -expect-violations (used with -unsafe, a build that breaks the protocol
// on purpose) the meaning of 0 and 1 is swapped.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/onceflow/onceflow/internal/chaos"
)

func main() { os.Exit(run()) }

func run() int {
	def := chaos.DefaultConfig()
	cfg := def
	fs := flag.NewFlagSet("onceflow-chaos", flag.ContinueOnError)
	fs.DurationVar(&cfg.Duration, "duration", def.Duration, "length of the load and fault phase")
	fs.Int64Var(&cfg.Seed, "seed", def.Seed, "seed of the fault schedule, the load and the command ids")
	fs.IntVar(&cfg.Instances, "instances", def.Instances, "instances at the start")
	fs.IntVar(&cfg.MaxInstances, "max-instances", def.MaxInstances, "instance slots (add_instance starts an idle one)")
	fs.IntVar(&cfg.Partitions, "partitions", def.Partitions, "partitions of the command topic")
	fs.IntVar(&cfg.Rate, "rate", def.Rate, "new commands per second")
	fs.IntVar(&cfg.SKUs, "skus", def.SKUs, "SKUs per warehouse (two warehouses): the aggregates the load spreads over")
	fs.DurationVar(&cfg.PassivateAfter, "passivate-after", 0, "the instances' passivation timeout (0: the sample's default, 2m)")
	highLoad := fs.Bool("high-load", false, "high-load mode: -rate 1500 -skus 1000 (2,000 aggregates) -passivate-after 2s unless given")
	fs.DurationVar(&cfg.SessionTimeout, "session-timeout", def.SessionTimeout, "consumer group session timeout of the instances")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", def.DrainTimeout, "bound on resolving unknown outcomes and draining after the load stops")
	faults := fs.String("faults", strings.Join(def.Faults, ","), "comma-separated fault kinds to inject")
	fs.BoolVar(&cfg.RequireAllFaults, "require-all-faults", def.RequireAllFaults, "a run that did not inject every listed fault kind fails")
	fs.StringVar(&cfg.Dir, "dir", "", "run directory (logs, report); default a new directory under $TMPDIR")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep the Postgres and broker data after the run")
	fs.StringVar(&cfg.InventoryBin, "inventory-bin", "", "prebuilt samples/inventory binary (default: build it)")
	fs.StringVar(&cfg.OnceflowBin, "onceflow-bin", "", "prebuilt cmd/onceflow binary (default: build it)")
	unsafe := fs.Bool("unsafe", false, "build the service with -tags onceflow_unsafe_offset_first, which breaks exactly-once on purpose")
	fs.StringVar(&cfg.Service, "service", chaos.ServiceInventory, "the sample under test: inventory, or payments (a ledger moved by a process manager; checked with ledger.Check and every answer)")
	fs.StringVar(&cfg.PaymentsBin, "payments-bin", "", "prebuilt samples/payments binary (default: build it)")
	fs.DurationVar(&cfg.RetryAfter, "retry-after", 2*time.Second, "payments: the transfer process resends a step's commands after this")
	expect := fs.Bool("expect-violations", false, "succeed only if the checker finds violations (the self-test of the checker)")
	verbose := fs.Bool("v", false, "log the harness's progress")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *highLoad {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["rate"] {
			cfg.Rate = 1500
		}
		if !set["skus"] {
			cfg.SKUs = 1000
		}
		if !set["passivate-after"] {
			cfg.PassivateAfter = 2 * time.Second
		}
	}
	cfg.Faults = nil
	for _, f := range strings.Split(*faults, ",") {
		if f = strings.TrimSpace(f); f != "" {
			cfg.Faults = append(cfg.Faults, f)
		}
	}
	if cfg.Service == chaos.ServicePayments {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["rate"] {
			cfg.Rate = 20
		}
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	if cfg.Dir == "" {
		d, err := os.MkdirTemp("", fmt.Sprintf("onceflow-chaos-seed%d-", cfg.Seed))
		if err != nil {
			fmt.Fprintln(os.Stderr, "onceflow-chaos:", err)
			return 2
		}
		cfg.Dir = d
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if (cfg.Service != chaos.ServicePayments && cfg.InventoryBin == "") || cfg.OnceflowBin == "" || (cfg.Service == chaos.ServicePayments && cfg.PaymentsBin == "") {
		var tags []string
		if *unsafe {
			tags = []string{"-tags", "onceflow_unsafe_offset_first"}
			if cfg.Service == chaos.ServicePayments {
				tags = []string{"-tags", "onceflow_unsafe_random_command_id"}
			}
		}
		bin := filepath.Join(cfg.Dir, "bin")
		start := time.Now()
		for _, b := range []struct {
			dst *string
			pkg string
		}{{&cfg.InventoryBin, "./samples/inventory"}, {&cfg.OnceflowBin, "./cmd/onceflow"}, {&cfg.PaymentsBin, "./samples/payments"}} {
			if (b.pkg == "./samples/payments") != (cfg.Service == chaos.ServicePayments) && b.pkg != "./cmd/onceflow" {
				continue // only the service under test (and the broker's binary)
			}
			if *b.dst != "" {
				continue
			}
			out := filepath.Join(bin, filepath.Base(b.pkg))
			args := append(append([]string{"build", "-o", out}, tags...), b.pkg)
			cmd := exec.CommandContext(ctx, "go", args...)
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			if err := cmd.Run(); err != nil {
				fmt.Fprintf(os.Stderr, "onceflow-chaos: go %s: %v (run from the repository root)\n", strings.Join(args, " "), err)
				return 2
			}
			*b.dst = out
		}
		fmt.Fprintf(os.Stderr, "built the binaries in %v\n", time.Since(start).Round(time.Second))
	}

	rep, err := chaos.Run(ctx, cfg)
	if rep != nil {
		fmt.Print(rep.Summary())
	}
	code := 0
	switch {
	case err != nil:
		fmt.Fprintln(os.Stderr, "onceflow-chaos:", err)
		code = 2
	case *expect && rep.ViolationCount == 0:
		fmt.Println("expected violations (a protocol-breaking build) but the checker found none: the checker is blind")
		code = 1
	case *expect:
		fmt.Printf("the checker caught the broken build: %d violations, as expected\n", rep.ViolationCount)
	case rep.ViolationCount > 0:
		code = 1
	}
	fmt.Println(filepath.Join(cfg.Dir, "report.json"))
	return code
}
