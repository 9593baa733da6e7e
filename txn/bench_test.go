package txn_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/txn"
)

// BenchmarkCommit measures one batch transaction of 1000 commands, each with
// its result and one event (200 aggregates, 5 events each per batch), on the
// test cluster (fsync on). cmds/s is 1000 / (time per Commit).
//
//	go test -run '^$' -bench Commit -benchtime 200x ./txn/
func BenchmarkCommit(b *testing.B) {
	for _, snaps := range []int{0, 200} {
		b.Run(fmt.Sprintf("snapshots=%d", snaps), func(b *testing.B) {
			const commands = 1000
			ctx := context.Background()
			s := newStore(b)
			c := mustClaim(b, s, testKey, "bench")
			versions := map[string]int64{}
			state := make([]byte, 200)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				b.StopTimer()
				batch := makeBatch(c, batchSpec{commands: commands, aggs: 200, idPrefix: "cmd", versions: versions})
				for i := range snaps {
					id := fmt.Sprintf("a%d", i)
					batch.Snapshots = append(batch.Snapshots, eventsource.Snapshot{AggregateType: "stock", AggregateID: id, Version: versions[id], State: state})
				}
				b.StartTimer()
				got, err := s.Commit(ctx, batch)
				if err != nil {
					b.Fatal(err)
				}
				c = advance(c, got)
			}
			b.ReportMetric(float64(commands*b.N)/b.Elapsed().Seconds(), "cmds/s")
		})
	}
}

// BenchmarkCommitEmpty is the floor: BEGIN, the fenced UPDATE and a durable
// COMMIT with nothing else.
func BenchmarkCommitEmpty(b *testing.B) {
	ctx := context.Background()
	s := newStore(b)
	c := mustClaim(b, s, testKey, "bench")
	for b.Loop() {
		got, err := s.Commit(ctx, &txn.Batch{Claim: c, NextOffset: c.NextOffset + 1})
		if err != nil {
			b.Fatal(err)
		}
		c = advance(c, got)
	}
}
