package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/onceflow/onceflow/samples/inventory/api"
	"github.com/onceflow/onceflow/samples/inventory/stock"
)

// command is one logical command of the load generator: an operation on an
// aggregate with a unique Idempotency-Key, sent until its outcome is known.
type command struct {
	key, op, warehouse, sku, body string
	reservation                   string // reserve: the id it opens; release/ship: the id it closes
}

func (c *command) aggregate() string { return stock.AggregateID(c.warehouse, c.sku) }
func (c *command) id() string        { return api.CommandID(c.op, c.aggregate(), c.key) }

// loadGen sends commands through the HTTP API of the running instances at
// a steady rate and logs every attempt. A command whose outcome is unknown
// (timeout, reset, 5xx) is resent with the same Idempotency-Key, to any
// instance, a few times; what is still unknown at the end is resolved by
// resolve(), after the faults stop.
type loadGen struct {
	seed    int64
	rate    int
	targets func() []targetURL // the instances to send to now
	client  *http.Client

	log *jsonLog

	mu         sync.Mutex
	rng        *rand.Rand
	n          int
	open       map[string][]string // aggregate -> reservation ids believed open
	unresolved map[string]*command
	skus       []string
	whs        []string
	sent       atomic.Int64
	dropped    atomic.Int64
}

type targetURL struct {
	slot int
	url  string
}

func newLoadGen(path string, seed int64, rate, skus int, targets func() []targetURL) (*loadGen, error) {
	log, err := createJSONLog(path)
	if err != nil {
		return nil, err
	}
	g := &loadGen{
		seed: seed, rate: rate, targets: targets, log: log,
		client: &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 32, IdleConnTimeout: 30 * time.Second}},
		rng:    rand.New(rand.NewPCG(uint64(seed), 0x10ad)), open: map[string][]string{}, unresolved: map[string]*command{},
		whs: []string{"ams-1", "ber-2"},
	}
	for i := range skus {
		g.skus = append(g.skus, fmt.Sprintf("SKU-%02d", i))
	}
	return g, nil
}

func (g *loadGen) close() error { return g.log.Close() }

// jsonLog writes one JSON line per value to a file, from any goroutine.
type jsonLog struct {
	mu   sync.Mutex
	enc  *json.Encoder
	file *os.File
}

func createJSONLog(path string) (*jsonLog, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	return &jsonLog{enc: json.NewEncoder(f), file: f}, nil
}

// write appends v as a line (best effort: the log is for reading a run
// afterwards, not for the checks).
func (l *jsonLog) write(v any) {
	l.mu.Lock()
	_ = l.enc.Encode(v)
	l.mu.Unlock()
}

func (l *jsonLog) Close() error { return l.file.Close() }

// next picks the next command. Receives keep stock flowing; reserves,
// releases and ships exercise the reservation invariants; adjusts move
// on-hand arbitrarily (and are rejected below the reserved quantity).
func (g *loadGen) next() *command {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.n++
	c := &command{key: fmt.Sprintf("s%d-c%06d", g.seed, g.n), warehouse: g.whs[g.rng.IntN(len(g.whs))], sku: g.skus[g.rng.IntN(len(g.skus))]}
	agg := c.aggregate()
	open := g.open[agg]
	switch x := g.rng.IntN(100); {
	case x < 30:
		c.op, c.body = "receive", fmt.Sprintf(`{"qty": %d}`, 1+g.rng.IntN(20))
	case x < 65:
		c.op, c.reservation = "reserve", fmt.Sprintf("r%d-%d", g.seed, g.n)
		c.body = fmt.Sprintf(`{"reservation_id": %q, "qty": %d}`, c.reservation, 1+g.rng.IntN(12))
	case x < 95 && len(open) > 0:
		i := g.rng.IntN(len(open))
		c.reservation = open[i]
		g.open[agg] = append(open[:i:i], open[i+1:]...)
		c.op = "ship"
		if x < 80 {
			c.op = "release"
		}
		c.body = fmt.Sprintf(`{"reservation_id": %q}`, c.reservation)
	case x < 95:
		// Nothing believed open: releasing an unknown reservation is a
		// rejection, which is an outcome worth checking too.
		c.op, c.body = "release", fmt.Sprintf(`{"reservation_id": "never-%d"}`, g.n)
	default:
		c.op, c.body = "adjust", fmt.Sprintf(`{"counted": %d, "reason": "cycle count"}`, g.rng.IntN(60))
	}
	return c
}

func (g *loadGen) pick(exclude int) (targetURL, bool) {
	ts := g.targets()
	if len(ts) == 0 {
		return targetURL{}, false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	t := ts[g.rng.IntN(len(ts))]
	if t.slot == exclude && len(ts) > 1 {
		t = ts[g.rng.IntN(len(ts))]
	}
	return t, true
}

// run sends commands at the configured rate until ctx ends.
func (g *loadGen) run(ctx context.Context, workers int) {
	dropped := runAtRate(ctx, g.rate, workers, g.next, func(c *command) { g.sendUntilKnown(ctx, c, 4) })
	g.dropped.Add(dropped) // every worker was busy (faults): never sent, never logged
}

// runAtRate takes next() rate times a second until ctx ends and hands each
// to one of workers goroutines running handle; an item no worker is free
// for is dropped, not queued (an open-loop schedule: a slow service does
// not slow the load down). It returns when every handed item is handled,
// with the number dropped.
func runAtRate[T any](ctx context.Context, rate, workers int, next func() T, handle func(T)) int64 {
	work := make(chan T, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for x := range work {
				handle(x)
			}
		}()
	}
	var dropped int64
	t := time.NewTicker(time.Second / time.Duration(rate))
	defer t.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-t.C:
			select {
			case work <- next():
			default:
				dropped++
			}
		}
	}
	close(work)
	wg.Wait()
	return dropped
}

// sendUntilKnown sends c until a definite answer or max attempts; ctx
// stops new attempts (the command then stays unresolved).
func (g *loadGen) sendUntilKnown(ctx context.Context, c *command, max int) bool {
	last := -1
	for n := 1; n <= max; n++ {
		if n > 1 {
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(250*n) * time.Millisecond):
			}
		}
		if ctx.Err() != nil {
			break
		}
		t, ok := g.pick(last)
		if !ok {
			continue
		}
		last = t.slot
		// An impatient client: one first attempt in ten gives up after a
		// few milliseconds, usually after the command was produced, and
		// retries with the same Idempotency-Key, as a client after a
		// timeout would. That puts real duplicates on the topic.
		timeout := 15 * time.Second
		g.mu.Lock()
		if n == 1 && g.rng.IntN(10) == 0 {
			timeout = time.Duration(5+g.rng.IntN(60)) * time.Millisecond
		}
		g.mu.Unlock()
		a := g.attempt(ctx, c, n, t, timeout)
		if out, ok := a.Definite(); ok {
			g.learn(c, out)
			g.mu.Lock()
			delete(g.unresolved, c.key)
			g.mu.Unlock()
			return true
		}
	}
	g.mu.Lock()
	g.unresolved[c.key] = c
	g.mu.Unlock()
	return false
}

// learn updates the generator's idea of open reservations. It only steers
// the choice of commands; the checker uses what Postgres and Kafka hold.
func (g *loadGen) learn(c *command, outcome string) {
	if c.op != "reserve" || outcome != "accepted" {
		return
	}
	g.mu.Lock()
	g.open[c.aggregate()] = append(g.open[c.aggregate()], c.reservation)
	g.mu.Unlock()
}

func (g *loadGen) attempt(ctx context.Context, c *command, n int, t targetURL, timeout time.Duration) Attempt {
	a := Attempt{Key: c.key, CommandID: c.id(), Op: c.op, Aggregate: c.aggregate(), Body: c.body, N: n, Slot: t.slot, Start: time.Now()}
	g.sent.Add(1)
	var m struct {
		Code         string `json:"code"`
		Error        string `json:"error"`
		FirstVersion int64  `json:"first_version"`
		LastVersion  int64  `json:"last_version"`
		Partition    int32  `json:"partition"`
		Offset       int64  `json:"offset"`
		Duplicate    bool   `json:"duplicate"`
	}
	a.HTTP, a.Err = postJSON(ctx, g.client, fmt.Sprintf("%s/v1/stock/%s/%s/%s", t.url, c.warehouse, c.sku, c.op), c.key, c.body, timeout, &m)
	if a.HTTP != 0 {
		a.Code, a.Reason = m.Code, m.Error
		a.FirstVersion, a.LastVersion, a.Partition, a.Offset, a.Duplicate = m.FirstVersion, m.LastVersion, m.Partition, m.Offset, m.Duplicate
		if m.Code == "dead_lettered" {
			a.Reason = m.Error
		}
	}
	a.Millis = time.Since(a.Start).Milliseconds()
	g.log.write(a)
	return a
}

// postJSON posts body to url with the Idempotency-Key key and the extra
// headers (name, value pairs) and decodes the JSON answer into answer. The
// request outlives ctx: once sent, its answer is worth waiting for (timeout
// bounds it). It returns the HTTP status (0 without a response) and what
// went wrong ("" when nothing did).
func postJSON(ctx context.Context, client *http.Client, url, key, body string, timeout time.Duration, answer any, headers ...string) (status int, failure string) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(rctx, http.MethodPost, url, bytes.NewReader([]byte(body)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err := json.Unmarshal(b, answer); err != nil {
		return resp.StatusCode, fmt.Sprintf("undecodable answer %q: %v", b, err)
	}
	return resp.StatusCode, ""
}

// resolve resends every command whose outcome is still unknown, with its
// Idempotency-Key, until each has a definite answer or ctx ends. It returns
// how many stayed unresolved.
func (g *loadGen) resolve(ctx context.Context) int {
	for ctx.Err() == nil {
		g.mu.Lock()
		var todo []*command
		for _, c := range g.unresolved {
			todo = append(todo, c)
		}
		g.mu.Unlock()
		if len(todo) == 0 {
			return 0
		}
		var wg sync.WaitGroup
		sem := make(chan struct{}, 8)
		for _, c := range todo {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				g.sendUntilKnown(ctx, c, 2)
			}()
		}
		wg.Wait()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.unresolved)
}
