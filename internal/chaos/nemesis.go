package chaos

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"
)

// Fault kinds the nemesis injects.
const (
	FaultKill           = "kill9"            // kill -9 an instance, start it again
	FaultPause          = "pause"            // SIGSTOP an instance past its session timeout, then SIGCONT (the zombie)
	FaultRestart        = "restart"          // graceful restart of an instance (SIGTERM, start)
	FaultAdd            = "add_instance"     // start one more instance
	FaultRemove         = "remove_instance"  // stop an instance gracefully for good
	FaultPostgres       = "postgres_restart" // stop (fast shutdown or crash) and start the Postgres cluster
	FaultBroker         = "broker_restart"   // stop and start the broker process
	FaultCutPostgres    = "cut_postgres"     // cut one instance's Postgres connections for a while
	FaultCutKafka       = "cut_kafka"        // cut one instance's Kafka connections for a while
	FaultMalformedInput = "malformed_input"  // not a nemesis fault: malformed records on the command topic
)

// AllFaults lists every fault kind the nemesis knows, in a fixed order.
var AllFaults = []string{FaultKill, FaultPause, FaultRestart, FaultAdd, FaultRemove, FaultPostgres, FaultBroker, FaultCutPostgres, FaultCutKafka}

// FaultEvent is one injected fault.
type FaultEvent struct {
	Kind   string    `json:"kind"`
	Target string    `json:"target,omitempty"`
	Start  time.Time `json:"start"`
	Millis int64     `json:"ms"`
	Detail string    `json:"detail,omitempty"`
	Err    string    `json:"err,omitempty"`
}

type nemesis struct {
	d     *deployment
	rng   *rand.Rand
	kinds []string
	log   *slog.Logger

	mu     sync.Mutex
	events []FaultEvent
}

// run injects faults one at a time, each kind once per round in a seeded
// random order, with a random gap before each, until ctx ends. Every fault
// heals itself before the next starts, even when ctx ends during it.
func (n *nemesis) run(ctx context.Context) {
	for ctx.Err() == nil {
		for _, i := range n.rng.Perm(len(n.kinds)) {
			if !sleep(ctx, n.between(1500, 4000)) {
				return
			}
			n.inject(ctx, n.kinds[i])
		}
	}
}

func (n *nemesis) between(loMs, hiMs int) time.Duration {
	return time.Duration(loMs+n.rng.IntN(hiMs-loMs+1)) * time.Millisecond
}

// sleep waits d or until ctx ends; it reports whether it waited fully.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (n *nemesis) pick(slots []*slot) *slot {
	if len(slots) == 0 {
		return nil
	}
	return slots[n.rng.IntN(len(slots))]
}

func (n *nemesis) inject(ctx context.Context, kind string) {
	ev := FaultEvent{Kind: kind, Start: time.Now()}
	d := n.d
	// Faults keep going after ctx ends (they heal); only their waits are cut short.
	bg := context.WithoutCancel(ctx)
	err := func() error {
		switch kind {
		case FaultKill, FaultPause, FaultRestart, FaultCutPostgres, FaultCutKafka, FaultRemove:
			s := n.pick(d.running())
			if s == nil {
				return fmt.Errorf("no running instance")
			}
			ev.Target = s.proc.name
			switch kind {
			case FaultKill:
				d.killInstance(s)
				sleep(ctx, n.between(500, 3000))
				return d.startInstance(bg, s)
			case FaultPause:
				s.proc.pause()
				hold := d.cfg.SessionTimeout + n.between(2000, 4000)
				ev.Detail = fmt.Sprintf("stopped for %v (session timeout %v)", hold, d.cfg.SessionTimeout)
				sleep(ctx, hold)
				s.proc.resume()
			case FaultRestart:
				d.stopInstance(s)
				return d.startInstance(bg, s)
			case FaultRemove:
				if len(d.running()) <= 2 {
					return fmt.Errorf("only %d instances running", len(d.running()))
				}
				d.stopInstance(s)
			case FaultCutPostgres, FaultCutKafka:
				p := s.pgProxy
				if kind == FaultCutKafka {
					p = s.kProxy
				}
				mode := CutReset
				if n.rng.IntN(2) == 0 {
					mode = CutBlackhole
				}
				hold := n.between(3000, 8000)
				ev.Detail = fmt.Sprintf("%s for %v", mode, hold)
				p.Cut(mode)
				sleep(ctx, hold)
				p.Heal()
			}
		case FaultAdd:
			s := n.pick(d.idle())
			if s == nil {
				return fmt.Errorf("no idle slot")
			}
			ev.Target = fmt.Sprintf("slot %d", s.i)
			return d.startInstance(bg, s)
		case FaultPostgres:
			ev.Target = "postgres"
			stop := d.stopPostgres
			ev.Detail = "fast shutdown"
			if n.rng.IntN(2) == 0 {
				stop, ev.Detail = d.crashPostgres, "crash (immediate shutdown, crash recovery on start)"
			}
			sctx, cancel := context.WithTimeout(bg, time.Minute)
			err := stop(sctx)
			cancel()
			if err != nil {
				return err
			}
			sleep(ctx, n.between(500, 3000))
			return d.startPostgres(bg)
		case FaultBroker:
			ev.Target = "broker"
			d.stopBroker()
			sleep(ctx, n.between(500, 2000))
			return d.startBroker(bg)
		}
		return nil
	}()
	if err != nil {
		ev.Err = err.Error()
	}
	ev.Millis = time.Since(ev.Start).Milliseconds()
	n.log.Info("fault", "kind", ev.Kind, "target", ev.Target, "ms", ev.Millis, "detail", ev.Detail, "err", ev.Err)
	n.mu.Lock()
	n.events = append(n.events, ev)
	n.mu.Unlock()
}

func (n *nemesis) faults() []FaultEvent {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]FaultEvent(nil), n.events...)
}
