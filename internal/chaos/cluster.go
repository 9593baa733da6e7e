package chaos

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/onceflow/onceflow/internal/pgcluster"
)

const (
	commandTopic = "inventory.commands"
	replyTopic   = commandTopic + ".replies"
	database     = "chaos"
)

// deployment is the system under test: Postgres, the broker process and the
// instance slots, each with its own proxies to Postgres and Kafka.
type deployment struct {
	cfg *Config
	log *slog.Logger
	dir string

	pgPort int
	pg     *pgcluster.Cluster

	brokerPort int
	broker     *proc
	brokerGen  int

	mu    sync.Mutex
	slots []*slot
}

type slot struct {
	i        int
	httpPort int
	pgProxy  *Proxy
	kProxy   *Proxy
	proc     *proc // nil when the slot is not running
	gen      int
	logs     []string // every incarnation's log file
}

func (d *deployment) adminDSN() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", d.pgPort, database)
}

func (d *deployment) brokerAddr() string { return fmt.Sprintf("127.0.0.1:%d", d.brokerPort) }

func (d *deployment) startPostgres(ctx context.Context) error {
	pg, err := pgcluster.Start(ctx, pgcluster.Options{Dir: filepath.Join(d.dir, "pg"), Port: d.pgPort, Logger: d.log})
	if err != nil {
		return err
	}
	d.pg, d.pgPort = pg, pg.Port()
	return nil
}

func (d *deployment) stopPostgres(ctx context.Context) error {
	if d.pg == nil {
		return nil
	}
	return d.pg.Stop(ctx)
}

// crashPostgres stops Postgres the way a crash would: SIGQUIT to the
// postmaster (what pg_ctl stop -m immediate sends), so no shutdown
// checkpoint is written and the next start runs crash recovery. Committed
// transactions must survive (fsync on); in-flight ones vanish.
func (d *deployment) crashPostgres(ctx context.Context) error {
	b, err := os.ReadFile(filepath.Join(d.pg.DataDir(), "postmaster.pid"))
	if err != nil {
		return fmt.Errorf("postmaster.pid: %w", err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		return fmt.Errorf("postmaster.pid: %q: %w", first, err)
	}
	if err := syscall.Kill(pid, syscall.SIGQUIT); err != nil {
		return fmt.Errorf("SIGQUIT postmaster %d: %w", pid, err)
	}
	for syscall.Kill(pid, 0) == nil {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

func (d *deployment) startBroker(ctx context.Context) error {
	d.brokerGen++
	p, err := startProc(d.dir, fmt.Sprintf("broker-%d", d.brokerGen), d.cfg.OnceflowBin, []string{"dev-broker",
		"--port", strconv.Itoa(d.brokerPort), "--data-dir", filepath.Join(d.dir, "kafka"),
		"--partitions", strconv.Itoa(d.cfg.Partitions), "--topics", commandTopic + "," + replyTopic}, nil)
	if err != nil {
		return err
	}
	d.broker = p
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := waitPort(wctx, d.brokerAddr()); err != nil {
		return fmt.Errorf("broker: %w (see %s)", err, p.logPath)
	}
	return nil
}

// stopBroker stops the broker gracefully: kfake writes its state to the data
// dir on close. (A kill -9 of the broker would be a Kafka durability fault,
// outside onceflow's assumptions.)
func (d *deployment) stopBroker() {
	if d.broker != nil && !d.broker.stop(30*time.Second) {
		d.log.Warn("broker did not stop within 30s; killed")
	}
}

func (d *deployment) newSlot(i int) (*slot, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	pgp, err := NewProxy(fmt.Sprintf("127.0.0.1:%d", d.pgPort), false)
	if err != nil {
		return nil, err
	}
	kp, err := NewProxy(d.brokerAddr(), true)
	if err != nil {
		pgp.Close()
		return nil, err
	}
	return &slot{i: i, httpPort: port, pgProxy: pgp, kProxy: kp}, nil
}

func (s *slot) url() string { return fmt.Sprintf("http://127.0.0.1:%d", s.httpPort) }

// startInstance starts the inventory service in slot s and waits until its
// API is healthy.
func (d *deployment) startInstance(ctx context.Context, s *slot) error {
	s.gen++
	name := fmt.Sprintf("inst-%d-%d", s.i, s.gen)
	env := []string{
		"KAFKA_BROKERS=" + s.kProxy.Addr(),
		fmt.Sprintf("DATABASE_URL=postgres://postgres@%s/%s?sslmode=disable&connect_timeout=5", s.pgProxy.Addr(), database),
		fmt.Sprintf("HTTP_ADDR=127.0.0.1:%d", s.httpPort),
		"INSTANCE_ID=" + name,
		"TOPIC=" + commandTopic,
		"PARTITIONS=" + strconv.Itoa(d.cfg.Partitions),
		"LOG_FORMAT=json",
		"LOG_LEVEL=info",
		"PASSIVATE_AFTER=" + passivate(d.cfg.PassivateAfter),
		"ONCEFLOW_KAFKA_CONFIG=" + fmt.Sprintf("session.timeout.ms=%d,heartbeat.interval.ms=%d,max.poll.interval.ms=30000,reconnect.backoff.max.ms=1000,socket.connection.setup.timeout.ms=5000",
			d.cfg.SessionTimeout.Milliseconds(), max(d.cfg.SessionTimeout.Milliseconds()/10, 100)),
	}
	bin := d.cfg.InventoryBin
	if d.cfg.Service == ServicePayments {
		bin = d.cfg.PaymentsBin
		env = append(env, "RETRY_AFTER="+d.cfg.RetryAfter.String())
	}
	p, err := startProc(d.dir, name, bin, nil, env)
	if err != nil {
		return err
	}
	d.mu.Lock()
	s.proc = p
	s.logs = append(s.logs, p.logPath)
	d.mu.Unlock()
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		resp, err := http.Get(s.url() + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		if p.exited() {
			return fmt.Errorf("%s exited during start-up: %v (see %s)", name, p.err, p.logPath)
		}
		select {
		case <-wctx.Done():
			return fmt.Errorf("%s not healthy within 60s (see %s)", name, p.logPath)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// running returns the slots with a process, in slot order.
func (d *deployment) running() []*slot {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*slot
	for _, s := range d.slots {
		if s.proc != nil {
			out = append(out, s)
		}
	}
	return out
}

func (d *deployment) idle() []*slot {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*slot
	for _, s := range d.slots {
		if s.proc == nil {
			out = append(out, s)
		}
	}
	return out
}

func (d *deployment) targets() []targetURL {
	var out []targetURL
	for _, s := range d.running() {
		out = append(out, targetURL{slot: s.i, url: s.url()})
	}
	return out
}

// stopInstance stops slot s gracefully (SIGTERM, then SIGKILL after the
// grace period).
func (d *deployment) stopInstance(s *slot) {
	d.mu.Lock()
	p := s.proc
	s.proc = nil
	d.mu.Unlock()
	if p != nil && !p.stop(45*time.Second) {
		d.log.Warn("instance did not stop within 45s; killed", "name", p.name)
	}
}

func (d *deployment) killInstance(s *slot) {
	d.mu.Lock()
	p := s.proc
	s.proc = nil
	d.mu.Unlock()
	if p != nil {
		p.kill()
	}
}

// close stops everything; errors are logged.
func (d *deployment) close(keep bool) {
	var wg sync.WaitGroup
	for _, s := range d.running() {
		wg.Add(1)
		go func() { defer wg.Done(); d.stopInstance(s) }()
	}
	wg.Wait()
	for _, s := range d.slots {
		s.pgProxy.Close()
		s.kProxy.Close()
	}
	d.stopBroker()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := d.stopPostgres(ctx); err != nil {
		d.log.Warn("stop postgres", "err", err)
	}
	if !keep {
		_ = os.RemoveAll(filepath.Join(d.dir, "pg"))
		_ = os.RemoveAll(filepath.Join(d.dir, "kafka"))
	}
}

func passivate(d time.Duration) string {
	if d <= 0 {
		return "2m"
	}
	return d.String()
}
