package main

// Memory per live aggregate (-only memory, last in the full run): the
// runtime runs alone in a child process (this binary re-executed with
// memRoleEnv set), so its RSS is measured apart from the broker, the client
// and Postgres, which stay in this process. Phase "few" pushes commands over
// 2,000 aggregates, phase "many" touches -mem-aggregates distinct aggregates
// once each, each phase in a fresh child with its own database and topic.
// The child prints a JSON stats line every statsEvery (memStats); this
// process samples the child's VmRSS every 100ms for the peak.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/onceflow/onceflow/actor"
	"github.com/onceflow/onceflow/eventsource"
)

// memRoleEnv, when set in a child's environment, makes main run only the
// runtime (memChild) with the JSON memChildConfig it holds.
const memRoleEnv = "ONCEFLOW_BENCH_RUNTIME"

// memChildConfig is what the parent hands its runtime child.
type memChildConfig struct {
	Workload      string        `json:"workload"`
	Brokers       string        `json:"brokers"`
	DSN           string        `json:"dsn"`      // the admin DSN (DATABASE_URL or the private cluster's)
	Database      string        `json:"database"` // the phase's database on it
	Topic         string        `json:"topic"`
	Partitions    int           `json:"partitions"`
	Batch         int           `json:"batch"`
	Wait          time.Duration `json:"wait"`
	MaxAggregates int           `json:"max_aggregates"`
	Passivate     time.Duration `json:"passivate"`
	MemProfile    string        `json:"mem_profile,omitempty"`
	CPUProfile    string        `json:"cpu_profile,omitempty"`
	Verbose       bool          `json:"verbose,omitempty"`
}

// memStats is one stats line of the child.
type memStats struct {
	At           time.Time `json:"at"`
	Owned        int       `json:"owned"`
	Records      int64     `json:"records"`
	Live         int64     `json:"live"`
	Loads        int64     `json:"loads"`
	Evictions    int64     `json:"evictions"`
	Passivations int64     `json:"passivations"`
	HeapAlloc    uint64    `json:"heap_alloc"`
	HeapInuse    uint64    `json:"heap_inuse"`
	HeapSys      uint64    `json:"heap_sys"`
	HeapReleased uint64    `json:"heap_released"`
	StackInuse   uint64    `json:"stack_inuse"`
	Sys          uint64    `json:"sys"`
	NumGC        uint32    `json:"num_gc"`
	Goroutines   int       `json:"goroutines"`
	// Forced marks the line written after a forced GC (SIGUSR1): HeapAlloc
	// is then the live heap.
	Forced bool `json:"forced,omitempty"`
}

const statsEvery = 250 * time.Millisecond

// memChild runs the runtime of one memory phase until SIGTERM. On SIGUSR1
// it collects garbage, writes a heap profile (when configured) and prints a
// forced stats line. It returns the process exit code.
func memChild(raw string) int {
	var cfg memChildConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "onceflow-bench runtime:", err)
		return 2
	}
	if err := memChildRun(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "onceflow-bench runtime:", err)
		return 1
	}
	return 0
}

func memChildRun(cfg memChildConfig) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if cfg.Verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	mk, ok := workloads[cfg.Workload]
	if !ok {
		return fmt.Errorf("unknown workload %q", cfg.Workload)
	}
	wl, err := mk()
	if err != nil {
		return err
	}
	pcfg, err := pgxpool.ParseConfig(cfg.DSN)
	if err != nil {
		return err
	}
	pcfg.ConnConfig.Database = cfg.Database
	pcfg.MaxConns = int32(cfg.Partitions + 4)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	rt, err := wl.runtime(pool,
		actor.WithBrokers(cfg.Brokers), actor.WithTopic(cfg.Topic), actor.WithCreateTopics(cfg.Partitions),
		actor.WithBatch(cfg.Batch, cfg.Wait), actor.WithLogger(logger), actor.WithInstanceID("bench-memory"),
		actor.WithMaxAggregates(cfg.MaxAggregates), actor.WithPassivateAfter(cfg.Passivate))
	if err != nil {
		return err
	}
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	runErr := make(chan error, 1)
	go func() { runErr <- rt.Run(ctx) }()

	out := json.NewEncoder(os.Stdout)
	emit := func(forced bool) error {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		st := rt.Stats()
		return out.Encode(memStats{
			At: time.Now(), Owned: st.OwnedPartitions, Records: st.Records, Live: st.LiveAggregates, Loads: st.Loads,
			Evictions: st.Evictions, Passivations: st.Passivations,
			HeapAlloc: ms.HeapAlloc, HeapInuse: ms.HeapInuse, HeapSys: ms.HeapSys, HeapReleased: ms.HeapReleased, StackInuse: ms.StackInuse, Sys: ms.Sys, NumGC: ms.NumGC,
			Goroutines: runtime.NumGoroutine(), Forced: forced,
		})
	}
	tick := time.NewTicker(statsEvery)
	defer tick.Stop()
	for {
		select {
		case err := <-runErr:
			return err
		case <-tick.C:
			if err := emit(false); err != nil {
				return err // the parent is gone
			}
		case <-usr1:
			runtime.GC()
			debug.FreeOSMemory()
			if cfg.MemProfile != "" {
				if err := writeHeapProfile(cfg.MemProfile); err != nil {
					fmt.Fprintln(os.Stderr, "onceflow-bench runtime: heap profile:", err)
				}
			}
			if err := emit(true); err != nil {
				return err
			}
		}
	}
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// memChildProc is a running runtime child, seen from the parent.
type memChildProc struct {
	cmd    *exec.Cmd
	cancel context.CancelFunc
	trace  io.Writer // -mem-trace: every stats line with the RSS then, or nil
	start  time.Time
	done   chan error // Wait's result

	mu       sync.Mutex
	last     memStats
	peakLive int64
	forced   chan memStats

	peakRSS atomic.Int64 // bytes, sampled every 100ms
	hwm     atomic.Int64 // VmHWM at the last sample
}

// startMemChild starts the runtime child. Its context is cancelled by the
// returned stop (SIGTERM, SIGKILL after 20s) or when ctx ends; Pdeathsig
// kills it if this process dies first.
func startMemChild(ctx context.Context, cfg memChildConfig, trace io.Writer) (*memChildProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	raw, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithCancel(ctx)
	cmd := exec.CommandContext(cctx, exe)
	cmd.Env = append(os.Environ(), memRoleEnv+"="+string(raw))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 20 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, err
	}
	c := &memChildProc{cmd: cmd, cancel: cancel, done: make(chan error, 1), forced: make(chan memStats, 4), trace: trace, start: time.Now()}
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var s memStats
			if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
				continue
			}
			if c.trace != nil {
				rss, _, _ := procMemory(cmd.Process.Pid)
				fmt.Fprintf(c.trace, "%.2f,%s,%d,%d,%d,%d,%d,%d,%d,%d,%d,%d\n", time.Since(c.start).Seconds(), cfg.Topic, s.Records, s.Live, rss>>20,
					s.HeapAlloc>>20, s.HeapInuse>>20, s.HeapSys>>20, s.HeapReleased>>20, s.StackInuse>>20, s.Sys>>20, s.NumGC)
			}
			c.mu.Lock()
			c.last = s
			c.peakLive = max(c.peakLive, s.Live)
			c.mu.Unlock()
			if s.Forced {
				c.forced <- s
			}
		}
	}()
	go func() {
		<-read // Wait closes the pipe: read it to the end first
		c.done <- cmd.Wait()
	}()
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-cctx.Done():
				return
			case <-t.C:
			}
			rss, hwm, err := procMemory(cmd.Process.Pid)
			if err != nil {
				continue
			}
			c.hwm.Store(hwm)
			for {
				old := c.peakRSS.Load()
				if rss <= old || c.peakRSS.CompareAndSwap(old, rss) {
					break
				}
			}
		}
	}()
	return c, nil
}

// stop ends the child (SIGTERM, then SIGKILL after WaitDelay) and waits.
func (c *memChildProc) stop() error {
	c.cancel()
	err := <-c.done
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.Exited() {
		return fmt.Errorf("runtime child: %w", err)
	}
	return nil // killed by our signal: expected
}

func (c *memChildProc) stats() (memStats, int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last, c.peakLive
}

// forceGC has the child collect garbage (and write its heap profile, if
// configured) and returns its stats right after.
func (c *memChildProc) forceGC() (memStats, error) {
	if err := c.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		return memStats{}, err
	}
	select {
	case s := <-c.forced:
		return s, nil
	case err := <-c.done:
		c.done <- err
		return memStats{}, fmt.Errorf("runtime child exited: %v", err)
	case <-time.After(60 * time.Second):
		return memStats{}, errors.New("runtime child did not answer SIGUSR1 within 60s")
	}
}

// rss returns the child's resident set now, in bytes.
func (c *memChildProc) rss() (int64, error) {
	rss, _, err := procMemory(c.cmd.Process.Pid)
	return rss, err
}

// procMemory reads VmRSS and VmHWM (bytes) from /proc/<pid>/status.
func procMemory(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, perr := strconv.ParseInt(f[1], 10, 64)
		if perr != nil {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			rss = kb * 1024
		case "VmHWM:":
			hwm = kb * 1024
		}
	}
	if rss == 0 {
		return 0, 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
	}
	return rss, hwm, nil
}

// childCPU reads a process's user+system CPU time from /proc/<pid>/stat.
func childCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which may hold spaces): state is
	// the 3rd field of the line, utime and stime the 14th and 15th.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(ut+st) * 10 * time.Millisecond, nil // USER_HZ is 100 on Linux
}

// memPhase is one phase's figures.
type memPhase struct {
	cmdsPerS          float64
	cpuPerCmd         time.Duration // the runtime child's CPU time per command during the load
	rssBefore         int64         // child RSS once it owns every partition, before the load
	rssPeak           int64         // highest sampled VmRSS (and at least VmHWM)
	rssAfter          int64         // after the load and a forced GC
	livePeak          int64
	liveEnd           int64
	heapBefore        int64 // live heap after a forced GC, before the load
	heapAfter         int64 // live heap after a forced GC, at the end of the load
	goAfter           int64 // memory the Go runtime holds from the OS then (Sys - HeapReleased)
	loads, evictions  int64
	passivations, gcs int64
}

// bytesPerLive is the RSS the load added per live aggregate at the peak.
func (m memPhase) bytesPerLive() float64 {
	return float64(m.rssPeak-m.rssBefore) / float64(max(m.livePeak, 1))
}

// heapPerLive is the live heap the load added per aggregate live at its end.
func (m memPhase) heapPerLive() float64 {
	return float64(m.heapAfter-m.heapBefore) / float64(max(m.liveEnd, 1))
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

// memory runs the memory benchmark's phases and prints its BENCH line.
func memory(ctx context.Context, p params, brokers, adminDSN string, logger *slog.Logger) error {
	few, err := memoryPhase(ctx, p, "few", brokers, adminDSN, p.memFewN, p.aggregates, "", "", logger)
	if err != nil {
		return fmt.Errorf("memory, %d aggregates: %w", p.aggregates, err)
	}
	many, err := memoryPhase(ctx, p, "many", brokers, adminDSN, p.memAggregates, p.memAggregates, p.memProfile, p.memCPUProfile, logger)
	if err != nil {
		return fmt.Errorf("memory, %d aggregates: %w", p.memAggregates, err)
	}
	ratio := many.cmdsPerS / few.cmdsPerS
	fmt.Printf("memory: %d aggregates touched once each: runtime peak RSS %.0f MB (%.0f MB before the load), %d live at the peak (cap %d), %.0f B RSS and %.0f B live heap per live aggregate; %.0f cmds/s vs %.0f with %d aggregates (ratio %.2f; runtime CPU per command %v vs %v)\n",
		p.memAggregates, mb(many.rssPeak), mb(many.rssBefore), many.livePeak, p.memMaxAggregates, many.bytesPerLive(), many.heapPerLive(), many.cmdsPerS, few.cmdsPerS, p.aggregates, ratio, many.cpuPerCmd, few.cpuPerCmd)
	fmt.Printf("BENCH rss_mb_1m_aggregates=%.0f rss_mb_before_load=%.0f live_aggregates_peak=%d bytes_per_live_aggregate=%.0f heap_bytes_per_live_aggregate=%.0f many_aggregates_cmds_per_s=%.0f few_aggregates_cmds_per_s=%.0f many_few_ratio=%.2f\n",
		mb(many.rssPeak), mb(many.rssBefore), many.livePeak, many.bytesPerLive(), many.heapPerLive(), many.cmdsPerS, few.cmdsPerS, ratio)
	return nil
}

// memoryPhase runs n commands over aggregates distinct aggregates against a
// fresh runtime child and measures it.
func memoryPhase(ctx context.Context, p params, name, brokers, adminDSN string, n, aggregates int, profile, cpuProfile string, logger *slog.Logger) (memPhase, error) {
	var res memPhase
	pool, done, err := benchDB(ctx, adminDSN, "mem"+name, 4)
	if err != nil {
		return res, err
	}
	defer done()
	var db string
	if err := pool.QueryRow(ctx, `SELECT current_database()`).Scan(&db); err != nil {
		return res, err
	}
	topic := fmt.Sprintf("bench.mem%s.%d", name, time.Now().UnixNano())
	if err := createTopics(ctx, brokers, p.partitions, topic, topic+".replies"); err != nil {
		return res, err
	}
	var trace io.Writer
	if p.memTrace != "" {
		f, err := os.OpenFile(p.memTrace, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return res, err
		}
		defer f.Close()
		fmt.Fprintln(f, "s,topic,records,live,rss_mb,heap_alloc_mb,heap_inuse_mb,heap_sys_mb,heap_released_mb,stack_mb,sys_mb,gcs")
		trace = f
	}
	child, err := startMemChild(ctx, memChildConfig{
		Workload: p.wl.name, Brokers: brokers, DSN: adminDSN, Database: db, Topic: topic, Partitions: p.partitions,
		Batch: p.batch, Wait: p.wait, MaxAggregates: p.memMaxAggregates, Passivate: p.memPassivate,
		MemProfile: profile, CPUProfile: cpuProfile, Verbose: p.verbose,
	}, trace)
	if err != nil {
		return res, err
	}
	defer func() {
		if err := child.stop(); err != nil {
			fmt.Fprintln(os.Stderr, "onceflow-bench:", err)
		}
	}()
	client, err := actor.NewClient(ctx, p.wl.registry, actor.WithBrokers(brokers), actor.WithTopic(topic),
		actor.WithLogger(logger), actor.WithSendTimeout(5*time.Minute))
	if err != nil {
		return res, err
	}
	defer client.Close()

	deadline := time.Now().Add(60 * time.Second)
	for {
		s, _ := child.stats()
		if s.Owned >= p.partitions {
			break
		}
		select {
		case err := <-child.done:
			child.done <- err
			return res, fmt.Errorf("runtime child exited before owning its partitions: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("runtime child owns %d of %d partitions after 60s", s.Owned, p.partitions)
		}
	}
	before, err := child.forceGC()
	if err != nil {
		return res, err
	}
	time.Sleep(500 * time.Millisecond)
	if res.rssBefore, err = child.rss(); err != nil {
		return res, err
	}
	res.heapBefore = int64(before.HeapAlloc)
	child.peakRSS.Store(res.rssBefore)

	cpu0, err := childCPU(child.cmd.Process.Pid)
	if err != nil {
		return res, err
	}
	elapsed, err := sendAll(ctx, client, n, p.inflight, func(i int) (eventsource.Command, string) { return p.wl.command(i, aggregates), "" })
	if err != nil {
		return res, err
	}
	res.cmdsPerS = float64(n) / elapsed.Seconds()
	if cpu1, err := childCPU(child.cmd.Process.Pid); err == nil {
		res.cpuPerCmd = ((cpu1 - cpu0) / time.Duration(n)).Round(100 * time.Nanosecond)
	}
	time.Sleep(2 * statsEvery) // the last stats lines of the load
	end, peakLive := child.stats()
	after, err := child.forceGC()
	if err != nil {
		return res, err
	}
	if res.rssAfter, err = child.rss(); err != nil {
		return res, err
	}
	res.rssPeak = max(child.peakRSS.Load(), child.hwm.Load())
	res.livePeak, res.liveEnd = peakLive, after.Live
	res.heapAfter = int64(after.HeapAlloc)
	res.goAfter = int64(after.Sys - after.HeapReleased)
	res.loads, res.evictions, res.passivations, res.gcs = end.Loads, end.Evictions, end.Passivations, int64(end.NumGC-before.NumGC)
	var events int64
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM onceflow.events WHERE topic = $1`, topic).Scan(&events); err != nil {
		return res, err
	}
	if events != int64(n) {
		return res, fmt.Errorf("%d events stored for %d accepted commands", events, n)
	}
	fmt.Printf("memory %-4s n=%-8d aggregates=%-8d %8.0f cmds/s  elapsed %-10v runtime CPU %v per command; runtime RSS %4.0f MB before, %4.0f MB peak, %4.0f MB after a GC (Go runtime %.0f MB of it); live aggregates %d peak, %d at the end; live heap %.0f -> %.0f MB; %d loads, %d evictions, %d passivations, %d GCs\n",
		name, n, aggregates, res.cmdsPerS, elapsed.Round(time.Millisecond), res.cpuPerCmd, mb(res.rssBefore), mb(res.rssPeak), mb(res.rssAfter), mb(res.goAfter),
		res.livePeak, res.liveEnd, mb(res.heapBefore), mb(res.heapAfter), res.loads, res.evictions, res.passivations, res.gcs)
	return res, nil
}
