package readmodel_test

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/onceflow/onceflow/actor"
	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/internal/testenv"
	"github.com/onceflow/onceflow/projection"
	"github.com/onceflow/onceflow/samples/inventory/readmodel"
	"github.com/onceflow/onceflow/samples/inventory/stock"
)

// The read models against a real Postgres, without Kafka: the tests play
// the runtime's part, calling each projection's Apply with the events of
// one source partition in seq order, a batch per transaction, and compare
// what the queries return with the fold of the same events (stock.Evolve).

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

const (
	topic      = "inventory.commands"
	partitions = 3
)

// env is a fresh database with the read models installed.
type env struct {
	t      *testing.T
	pool   *pgxpool.Pool
	store  *projection.Store
	reader *readmodel.Reader
	reg    *eventsource.Registry
	projs  []actor.Projection

	states   map[string]stock.State // aggregate id -> folded state
	versions map[string]int64
	seqs     [partitions]int64
	pending  [partitions][]actor.Event // events not yet applied, per source partition
}

func newEnv(t *testing.T) *env {
	t.Helper()
	pool := testenv.Pool(t)
	store := projection.NewStore(pool)
	if err := readmodel.Install(context.Background(), pool, store, topic); err != nil {
		t.Fatal(err)
	}
	reg, err := stock.NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, pool: pool, store: store, reader: readmodel.NewReader(pool, ""), reg: reg,
		projs: readmodel.Projections(topic, reg), states: map[string]stock.State{}, versions: map[string]int64{}}
}

// do decides cmd against the folded state and records its events, as the
// aggregate's runtime would store them; it returns the rejection, if any.
func (e *env) do(cmd stock.Command) error {
	id := cmd.AggregateID()
	st, ok := e.states[id]
	if !ok {
		st = stock.Initial()
	}
	evs, err := stock.Decide(st, cmd)
	if err != nil {
		return err
	}
	h := fnv.New32a()
	h.Write([]byte(id))
	p := int32(h.Sum32() % partitions)
	for _, ev := range evs {
		st = stock.Evolve(st, ev)
		e.versions[id]++
		e.seqs[p]++
		e.pending[p] = append(e.pending[p], e.event(p, e.seqs[p], id, e.versions[id], ev))
	}
	e.states[id] = st
	return nil
}

// event is a stored event as a projection receives it: the payload
// encoded and decoded by the registry, like the runtime does.
func (e *env) event(p int32, seq int64, id string, version int64, ev stock.Event) actor.Event {
	name, data, err := e.reg.Encode(ev)
	if err != nil {
		e.t.Fatal(err)
	}
	payload, err := e.reg.Decode(name, data)
	if err != nil {
		e.t.Fatal(err)
	}
	return actor.Event{StoredEvent: eventsource.StoredEvent{Topic: topic, Partition: p, Seq: seq, AggregateType: stock.AggregateType,
		AggregateID: id, Version: version, Type: name, Data: data}, Payload: payload}
}

func (e *env) must(cmds ...stock.Command) {
	e.t.Helper()
	for _, c := range cmds {
		if err := e.do(c); err != nil {
			e.t.Fatalf("%#v: %v", c, err)
		}
	}
}

// apply applies the pending events to every projection, batches of at most
// batch events of one partition per transaction.
func (e *env) apply(batch int) {
	e.t.Helper()
	for p := range e.pending {
		evs := e.pending[p]
		for len(evs) > 0 {
			n := min(batch, len(evs))
			for _, proj := range e.projs {
				if err := applyOnce(e.pool, proj, evs[:n]); err != nil {
					e.t.Fatalf("%s: %v", proj.Name, err)
				}
			}
			evs = evs[n:]
		}
		e.pending[p] = nil
	}
}

func applyOnce(pool *pgxpool.Pool, p actor.Projection, evs []actor.Event) error {
	return pgx.BeginFunc(context.Background(), pool, func(tx pgx.Tx) error { return p.Apply(context.Background(), tx, evs) })
}

// model is the stock read model as the fold says it should be.
func (e *env) model() []readmodel.StockItem {
	var items []readmodel.StockItem
	for id, st := range e.states {
		w, sku, _ := stock.ParseAggregateID(id)
		items = append(items, readmodel.StockItem{Warehouse: w, SKU: sku, OnHand: st.OnHand, Reserved: st.Reserved, Available: st.Available(), Version: e.versions[id]})
	}
	slices.SortFunc(items, func(a, b readmodel.StockItem) int {
		return cmp.Or(cmp.Compare(a.Warehouse, b.Warehouse), cmp.Compare(a.SKU, b.SKU))
	})
	return items
}

// all follows the cursors of a listing to its end.
func all(t *testing.T, list func(cursor string) (readmodel.StockPage, error)) (items []readmodel.StockItem, pages int) {
	t.Helper()
	cursor := ""
	for {
		page, err := list(cursor)
		if err != nil {
			t.Fatalf("page %d (cursor %q): %v", pages+1, cursor, err)
		}
		pages++
		items = append(items, page.Items...)
		if page.Next == "" {
			return items, pages
		}
		if pages > 10_000 {
			t.Fatal("the listing does not end")
		}
		cursor = page.Next
	}
}

var ctx = context.Background()

// Random command histories over a few warehouses and SKUs, applied in
// batches of random sizes: every listing and lookup equals the fold.
func TestReadModelsEqualTheFold(t *testing.T) {
	e := newEnv(t)
	rng := rand.New(rand.NewPCG(7, 11))
	warehouses := []string{"ams-1", "ber-2", "cdg-3"}
	var skus []string
	for i := range 12 {
		skus = append(skus, fmt.Sprintf("SKU-%02d", i))
	}
	var resIDs []string
	for i := range 40 {
		resIDs = append(resIDs, fmt.Sprintf("order-%d", i))
	}
	accepted := 0
	for range 1500 {
		w, sku, rid := warehouses[rng.IntN(len(warehouses))], skus[rng.IntN(len(skus))], resIDs[rng.IntN(len(resIDs))]
		var cmd stock.Command
		switch rng.IntN(6) {
		case 0, 1:
			cmd = stock.ReceiveStock{Warehouse: w, SKU: sku, Qty: rng.Int64N(20) + 1}
		case 2:
			cmd = stock.Reserve{Warehouse: w, SKU: sku, ReservationID: rid, Qty: rng.Int64N(8) + 1}
		case 3:
			cmd = stock.Release{Warehouse: w, SKU: sku, ReservationID: rid}
		case 4:
			cmd = stock.Ship{Warehouse: w, SKU: sku, ReservationID: rid}
		case 5:
			st := e.states[stock.AggregateID(w, sku)]
			cmd = stock.Adjust{Warehouse: w, SKU: sku, Counted: st.Reserved + rng.Int64N(10), Reason: "cycle count"}
		}
		if e.do(cmd) == nil {
			accepted++
		}
		if rng.IntN(50) == 0 {
			e.apply(rng.IntN(30) + 1)
		}
	}
	e.apply(17)
	t.Logf("%d of 1500 commands accepted", accepted)
	want := e.model()

	// Every warehouse's listing, a few SKUs a page.
	var got []readmodel.StockItem
	for _, w := range append(warehouses, "empty-4") {
		items, pages := all(t, func(c string) (readmodel.StockPage, error) { return e.reader.StockOfWarehouse(ctx, w, 5, c) })
		got = append(got, items...)
		if n := len(items); pages != max(1, (n+4)/5) {
			t.Errorf("%s: %d items in %d pages of 5", w, n, pages)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("stock listing differs from the fold:\n got %v\nwant %v", got, want)
	}

	// Low stock at a few thresholds: lowest available first.
	for _, below := range []int64{1, 5, 20, stock.MaxOnHand} {
		var wantLow []readmodel.StockItem
		for _, it := range want {
			if it.Available < below {
				wantLow = append(wantLow, it)
			}
		}
		slices.SortStableFunc(wantLow, func(a, b readmodel.StockItem) int { return cmp.Compare(a.Available, b.Available) })
		gotLow, _ := all(t, func(c string) (readmodel.StockPage, error) { return e.reader.LowStock(ctx, below, 4, c) })
		if !slices.Equal(gotLow, wantLow) {
			t.Fatalf("low stock below %d:\n got %v\nwant %v", below, gotLow, wantLow)
		}
	}

	// Every reservation id: its open lines, or not found.
	open := 0
	for _, rid := range resIDs {
		var lines []readmodel.ReservationLine
		for _, it := range want {
			if q, ok := e.states[stock.AggregateID(it.Warehouse, it.SKU)].Reservations[rid]; ok {
				lines = append(lines, readmodel.ReservationLine{Warehouse: it.Warehouse, SKU: it.SKU, Qty: q})
			}
		}
		res, err := e.reader.Reservation(ctx, rid)
		if len(lines) == 0 {
			if !errors.Is(err, readmodel.ErrNotFound) {
				t.Fatalf("reservation %s: %+v %v, want not found", rid, res, err)
			}
			continue
		}
		open++
		if err != nil || res.ID != rid || res.Version != 1 || !slices.Equal(res.Lines, lines) {
			t.Fatalf("reservation %s: %+v %v, want lines %v", rid, res, err, lines)
		}
	}
	if open == 0 {
		t.Fatal("no reservation was open at the end: the history does not exercise lookups")
	}
}

// The cursor round trip: pages in SKU order, the last one without a next
// cursor, a cursor that is base64url of the last SKU; cursors and
// arguments a listing did not hand out are refused, naming the parameter.
func TestPagination(t *testing.T) {
	e := newEnv(t)
	for _, sku := range []string{"E", "A", "C", "B", "D"} {
		e.must(stock.ReceiveStock{Warehouse: "ams-1", SKU: sku, Qty: 1})
	}
	e.must(stock.ReceiveStock{Warehouse: "ams-10", SKU: "A", Qty: 1}, stock.ReceiveStock{Warehouse: "ams", SKU: "Z", Qty: 1})
	e.apply(100)

	var seen [][]string
	cursor := ""
	for {
		page, err := e.reader.StockOfWarehouse(ctx, "ams-1", 2, cursor)
		if err != nil {
			t.Fatal(err)
		}
		var skus []string
		for _, it := range page.Items {
			skus = append(skus, it.SKU)
			if it.Warehouse != "ams-1" {
				t.Fatalf("item of another warehouse: %+v", it)
			}
		}
		seen = append(seen, skus)
		if page.Next == "" {
			break
		}
		if b, err := base64.RawURLEncoding.DecodeString(page.Next); err != nil || string(b) != skus[len(skus)-1] {
			t.Fatalf("next cursor %q is not base64url of the last SKU %q", page.Next, skus[len(skus)-1])
		}
		cursor = page.Next
	}
	if fmt.Sprint(seen) != "[[A B] [C D] [E]]" {
		t.Fatalf("pages %v", seen)
	}
	// An exact fit: no empty last page.
	if page, err := e.reader.StockOfWarehouse(ctx, "ams-1", 5, ""); err != nil || len(page.Items) != 5 || page.Next != "" {
		t.Fatalf("limit 5 of 5: %+v %v", page, err)
	}

	lowCursor := func() string {
		page, err := e.reader.LowStock(ctx, 10, 1, "")
		if err != nil || page.Next == "" {
			t.Fatalf("low stock: %+v %v", page, err)
		}
		return page.Next
	}()
	b64 := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	for _, tc := range []struct {
		name  string
		call  func() error
		param string
	}{
		{"not base64", func() error { _, err := e.reader.StockOfWarehouse(ctx, "ams-1", 2, "!!"); return err }, "cursor"},
		{"padded base64", func() error { _, err := e.reader.StockOfWarehouse(ctx, "ams-1", 2, "QQ=="); return err }, "cursor"},
		{"not a SKU", func() error { _, err := e.reader.StockOfWarehouse(ctx, "ams-1", 2, b64("a b")); return err }, "cursor"},
		{"low-stock cursor on a warehouse", func() error { _, err := e.reader.StockOfWarehouse(ctx, "ams-1", 2, lowCursor); return err }, "cursor"},
		{"warehouse cursor on low stock", func() error { _, err := e.reader.LowStock(ctx, 10, 2, b64("B")); return err }, "cursor"},
		{"low-stock cursor, bad number", func() error { _, err := e.reader.LowStock(ctx, 10, 2, b64("x/ams-1/B")); return err }, "cursor"},
		{"low-stock cursor, bad sku", func() error { _, err := e.reader.LowStock(ctx, 10, 2, b64("1/ams-1/b")); return err }, "cursor"},
		{"huge cursor", func() error {
			_, err := e.reader.StockOfWarehouse(ctx, "ams-1", 2, strings.Repeat("QU", 300))
			return err
		}, "cursor"},
		{"limit 0", func() error { _, err := e.reader.StockOfWarehouse(ctx, "ams-1", 0, ""); return err }, "limit"},
		{"limit too big", func() error { _, err := e.reader.LowStock(ctx, 5, readmodel.MaxLimit+1, ""); return err }, "limit"},
		{"bad warehouse", func() error { _, err := e.reader.StockOfWarehouse(ctx, "AMS", 2, ""); return err }, "warehouse"},
		{"below 0", func() error { _, err := e.reader.LowStock(ctx, 0, 2, ""); return err }, "below"},
		{"bad reservation id", func() error { _, err := e.reader.Reservation(ctx, "a b"); return err }, "reservation_id"},
	} {
		err := tc.call()
		var ae *readmodel.ArgumentError
		if !errors.As(err, &ae) || ae.Name != tc.param {
			t.Errorf("%s: %v, want an ArgumentError for %s", tc.name, err, tc.param)
		}
	}

	// Byte order across warehouses whose names prefix each other.
	items, pages := all(t, func(c string) (readmodel.StockPage, error) { return e.reader.LowStock(ctx, 2, 1, c) })
	var keys []string
	for _, it := range items {
		keys = append(keys, it.Warehouse+"/"+it.SKU)
	}
	if pages != 7 || fmt.Sprint(keys) != "[ams/Z ams-1/A ams-1/B ams-1/C ams-1/D ams-1/E ams-10/A]" {
		t.Fatalf("low stock, one a page: %v in %d pages", keys, pages)
	}
}

// Low stock: available, not on hand, counts; lowest first; items leave the
// listing when stock arrives.
func TestLowStock(t *testing.T) {
	e := newEnv(t)
	e.must(
		stock.ReceiveStock{Warehouse: "ams-1", SKU: "MUG", Qty: 10},
		stock.Reserve{Warehouse: "ams-1", SKU: "MUG", ReservationID: "o-1", Qty: 8}, // available 2
		stock.ReceiveStock{Warehouse: "ber-2", SKU: "MUG", Qty: 3},                  // available 3
		stock.ReceiveStock{Warehouse: "ams-1", SKU: "CUP", Qty: 50},
		stock.ReceiveStock{Warehouse: "ams-1", SKU: "PLATE", Qty: 4},
		stock.Adjust{Warehouse: "ams-1", SKU: "PLATE", Counted: 0, Reason: "broken"}, // available 0
	)
	e.apply(2)
	low := func(below int64) string {
		t.Helper()
		page, err := e.reader.LowStock(ctx, below, 10, "")
		if err != nil || page.Next != "" {
			t.Fatalf("low stock below %d: %+v %v", below, page, err)
		}
		var s []string
		for _, it := range page.Items {
			s = append(s, fmt.Sprintf("%s/%s=%d", it.Warehouse, it.SKU, it.Available))
		}
		return strings.Join(s, " ")
	}
	if got := low(5); got != "ams-1/PLATE=0 ams-1/MUG=2 ber-2/MUG=3" {
		t.Fatalf("below 5: %s", got)
	}
	if got := low(3); got != "ams-1/PLATE=0 ams-1/MUG=2" {
		t.Fatalf("below 3: %s", got)
	}
	e.must(stock.ReceiveStock{Warehouse: "ams-1", SKU: "PLATE", Qty: 9}, stock.Ship{Warehouse: "ams-1", SKU: "MUG", ReservationID: "o-1"})
	e.apply(1)
	if got := low(5); got != "ams-1/MUG=2 ber-2/MUG=3" {
		t.Fatalf("below 5 after a delivery and a shipment: %s", got)
	}
	page, err := e.reader.StockOfWarehouse(ctx, "ams-1", 10, "")
	if err != nil || len(page.Items) != 3 || page.Items[1] != (readmodel.StockItem{Warehouse: "ams-1", SKU: "MUG", OnHand: 2, Reserved: 0, Available: 2, Version: 3}) {
		t.Fatalf("ams-1: %+v %v", page, err)
	}
}

// Reservations: one id across SKUs, closed lines leave, a released id can
// be reserved again.
func TestReservations(t *testing.T) {
	e := newEnv(t)
	e.must(
		stock.ReceiveStock{Warehouse: "ams-1", SKU: "MUG", Qty: 10},
		stock.ReceiveStock{Warehouse: "ber-2", SKU: "CUP", Qty: 10},
		stock.Reserve{Warehouse: "ber-2", SKU: "CUP", ReservationID: "order-7", Qty: 2},
		stock.Reserve{Warehouse: "ams-1", SKU: "MUG", ReservationID: "order-7", Qty: 3},
		stock.Reserve{Warehouse: "ams-1", SKU: "MUG", ReservationID: "order/8", Qty: 1},
	)
	e.apply(10)
	res, err := e.reader.Reservation(ctx, "order-7")
	if err != nil || fmt.Sprint(res.Lines) != "[{ams-1 MUG 3} {ber-2 CUP 2}]" {
		t.Fatalf("order-7: %+v %v", res, err)
	}
	if res, err := e.reader.Reservation(ctx, "order/8"); err != nil || len(res.Lines) != 1 {
		t.Fatalf("order/8: %+v %v", res, err)
	}
	e.must(stock.Ship{Warehouse: "ams-1", SKU: "MUG", ReservationID: "order-7"})
	e.apply(10)
	if res, err := e.reader.Reservation(ctx, "order-7"); err != nil || fmt.Sprint(res.Lines) != "[{ber-2 CUP 2}]" {
		t.Fatalf("order-7 after shipping the mug: %+v %v", res, err)
	}
	e.must(stock.Release{Warehouse: "ber-2", SKU: "CUP", ReservationID: "order-7"})
	e.apply(10)
	_, err = e.reader.Reservation(ctx, "order-7")
	if !errors.Is(err, readmodel.ErrNotFound) || !strings.Contains(err.Error(), `no open reservation "order-7"`) {
		t.Fatalf("order-7 closed: %v", err)
	}
	e.must(stock.Reserve{Warehouse: "ber-2", SKU: "CUP", ReservationID: "order-7", Qty: 5})
	e.apply(10)
	if res, err := e.reader.Reservation(ctx, "order-7"); err != nil || fmt.Sprint(res.Lines) != "[{ber-2 CUP 5}]" {
		t.Fatalf("order-7 reserved again: %+v %v", res, err)
	}
	if _, err := e.reader.Reservation(ctx, "never"); !errors.Is(err, readmodel.ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
}

// Events the read model cannot be right after (the contract broken, or an
// event without a rule) fail Apply with the event named; nothing of the
// batch is written.
func TestApplyRefusesWhatItCannotFold(t *testing.T) {
	e := newEnv(t)
	stockP, resP := e.projs[0], e.projs[1]
	released := e.event(0, 1, "ams-1/MUG", 1, stock.ReservationReleased{ReservationID: "o-1", Qty: 2})
	if err := applyOnce(e.pool, resP, []actor.Event{released}); err == nil || !strings.Contains(err.Error(), `reservation "o-1" is not open`) ||
		!strings.Contains(err.Error(), "seq 1 (inventory.ReservationReleased v1 of ams-1/MUG)") {
		t.Fatalf("release of a reservation never made: %v", err)
	}
	received := e.event(0, 1, "ams-1/MUG", 1, stock.StockReceived{Qty: 1})
	shipped := e.event(0, 2, "ams-1/MUG", 2, stock.ReservationShipped{ReservationID: "o-1", Qty: 2})
	if err := applyOnce(e.pool, stockP, []actor.Event{received, shipped}); err == nil || !strings.Contains(err.Error(), "seq 2") || !strings.Contains(err.Error(), "invariant") {
		t.Fatalf("a shipment of stock never reserved: %v", err)
	}
	alien := received
	alien.Payload = struct{ X int }{}
	if err := applyOnce(e.pool, stockP, []actor.Event{alien}); err == nil || !strings.Contains(err.Error(), "no rule for struct") {
		t.Fatalf("an event without a rule: %v", err)
	}
	if err := applyOnce(e.pool, resP, []actor.Event{alien}); err == nil || !strings.Contains(err.Error(), "no rule for struct") {
		t.Fatalf("an event without a rule: %v", err)
	}
	badID := received
	badID.AggregateID = "nope"
	if err := applyOnce(e.pool, stockP, []actor.Event{badID}); err == nil || !strings.Contains(err.Error(), `aggregate id "nope"`) {
		t.Fatalf("a bad aggregate id: %v", err)
	}
	if page, err := e.reader.StockOfWarehouse(ctx, "ams-1", 10, ""); err != nil || len(page.Items) != 0 {
		t.Fatalf("failed batches wrote rows: %+v %v", page, err)
	}
}

// Readers follow a blue/green switch: once version 2 is active they read
// its table, and version 1's is dropped in the switch.
func TestReadersFollowTheActiveVersion(t *testing.T) {
	e := newEnv(t)
	e.must(stock.ReceiveStock{Warehouse: "ams-1", SKU: "MUG", Qty: 10})
	e.apply(10)
	if page, err := e.reader.StockOfWarehouse(ctx, "ams-1", 10, ""); err != nil || page.Version != 1 || len(page.Items) != 1 || page.Items[0].OnHand != 10 {
		t.Fatalf("v1: %+v %v", page, err)
	}
	// Version 2, built by hand: the same columns, other numbers.
	if _, err := e.pool.Exec(ctx, `CREATE TABLE inventory_stock_v2 (LIKE inventory_stock_v1 INCLUDING ALL);
		INSERT INTO inventory_stock_v2 (warehouse, sku, on_hand, reserved, version) SELECT warehouse, sku, on_hand * 2, reserved, version FROM inventory_stock_v1`); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Register(ctx, projection.Def{Name: readmodel.StockName, Version: 2, SourceTopic: topic}); err != nil {
		t.Fatal(err)
	}
	if page, err := e.reader.StockOfWarehouse(ctx, "ams-1", 10, ""); err != nil || page.Version != 1 {
		t.Fatalf("while v2 builds, readers stay on v1: %+v %v", page, err)
	}
	// Readers running through the switch: each reads v1 or v2 whole, none
	// fails on a dropped table.
	stop := make(chan struct{})
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			for {
				select {
				case <-stop:
					errs <- nil
					return
				default:
				}
				page, err := e.reader.StockOfWarehouse(ctx, "ams-1", 10, "")
				if err == nil && (len(page.Items) != 1 || page.Items[0].OnHand != int64(10*page.Version)) {
					err = fmt.Errorf("v%d read %+v", page.Version, page.Items)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	err := e.store.Switch(ctx, readmodel.StockName, 2, e.projs[0].Drop)
	close(stop)
	for range 4 {
		if rerr := <-errs; rerr != nil {
			t.Errorf("a read during the switch: %v", rerr)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	page, err := e.reader.LowStock(ctx, 100, 10, "")
	if err != nil || page.Version != 2 || len(page.Items) != 1 || page.Items[0].OnHand != 20 {
		t.Fatalf("after the switch: %+v %v", page, err)
	}
	var v1 *string
	if err := e.pool.QueryRow(ctx, `SELECT to_regclass('inventory_stock_v1')::text`).Scan(&v1); err != nil || v1 != nil {
		t.Fatalf("v1's table after the switch: %v %v", v1, err)
	}
}

// Without a registered version, queries say the read model is not ready.
func TestNotReadyBeforeRegistration(t *testing.T) {
	pool := testenv.Pool(t)
	if err := projection.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	r := readmodel.NewReader(pool, "")
	if _, err := r.StockOfWarehouse(ctx, "ams-1", 10, ""); !errors.Is(err, readmodel.ErrNotReady) || !strings.Contains(err.Error(), readmodel.StockName) {
		t.Fatalf("stock: %v", err)
	}
	if _, err := r.Reservation(ctx, "o-1"); !errors.Is(err, readmodel.ErrNotReady) {
		t.Fatalf("reservation: %v", err)
	}
}
