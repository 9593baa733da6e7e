package actor

import (
	"slices"
	"time"

	pa "github.com/asynkron/protoactor-go/actor"
)

// Passivation: a partition actor stops the aggregate children it holds in
// memory when they have been idle for WithPassivateAfter (passivateIdle, on a
// periodic tick) and, after each batch, the least recently used ones when it
// holds more than its share of WithMaxAggregates (evictOverCap). Both run
// between batches, on the partition actor, when no child has work in flight,
// and both remove a child from the map before stopping it: no command can be
// sent to a stopping child, and the next command for that aggregate spawns a
// fresh child that reloads from Postgres (snapshot + later events).

// passivationTick is how often a partition looks for idle aggregates.
func passivationTick(after time.Duration) time.Duration {
	return min(max(after/2, time.Millisecond), 10*time.Second)
}

func (p *partitionActor) armPassivation(actx pa.Context) {
	self, root := actx.Self(), p.rt.system.Root
	time.AfterFunc(passivationTick(p.rt.cfg.passivate), func() { root.Send(self, &passivateTick{}) })
}

// passivateIdle stops the aggregates not used for the passivation timeout.
// The parent decides and stops its children itself, between batches, and
// removes them from its map first: no command can be sent to a stopping
// child, and the next command for that aggregate spawns a fresh child that
// reloads from Postgres. (A child that stopped itself on protoactor's
// ReceiveTimeout would lose the messages sent to it meanwhile; protoactor's
// receive-timeout timer also races with its own setup at short timeouts.)
func (p *partitionActor) passivateIdle(actx pa.Context) {
	cutoff := time.Now().Add(-p.rt.cfg.passivate)
	for id, c := range p.children {
		if c.lastUsed.Before(cutoff) {
			delete(p.children, id)
			actx.Stop(c.pid)
			p.rt.metrics.passivations.Add(1)
		}
	}
}

// aggregateShare is how many aggregates one partition of this Runtime may
// keep in memory: WithMaxAggregates split evenly over the partitions it owns
// now (rounded up), 0 for no cap.
func (p *partitionActor) aggregateShare() int {
	return shareOf(p.rt.cfg.maxAggregates, int(p.rt.metrics.owned.Load()))
}

// shareOf is ceil(limit / owned), at least 1; 0 when limit is 0 (no cap).
// owned may read 0 while partitions are being let go: the share is then the
// whole limit.
func shareOf(limit, owned int) int {
	if limit <= 0 {
		return 0
	}
	owned = max(owned, 1)
	return max((limit+owned-1)/owned, 1)
}

// evictTarget is how many children a partition over its share keeps: 90% of
// the share, so that eviction (a selection over the partition's children)
// runs once per ~10% of the share of new aggregates, not after every batch.
func evictTarget(share int) int {
	return share - max(share/10, 1)
}

// evictOverCap passivates the least recently used children when the
// partition holds more than its share of WithMaxAggregates, down to
// evictTarget. Called by flush after a batch: no child has work in flight,
// so stopping them is as safe as passivateIdle. Under the share it costs a
// map length and an atomic load.
func (p *partitionActor) evictOverCap(actx pa.Context) {
	share := p.aggregateShare()
	if share == 0 || len(p.children) <= share {
		return
	}
	victims := leastRecentlyUsed(p.children, len(p.children)-evictTarget(share))
	for _, id := range victims {
		c := p.children[id]
		delete(p.children, id)
		actx.Stop(c.pid)
	}
	p.rt.metrics.evictions.Add(int64(len(victims)))
}

// leastRecentlyUsed returns the ids of the n children used longest ago
// (ties in any order), all of them when n >= len(children), none when n <= 0.
// It is a partial selection (quickselect on lastUsed): linear in the number
// of children on average, whatever n.
func leastRecentlyUsed(children map[string]*childEntry, n int) []string {
	if n <= 0 {
		return nil
	}
	type used struct {
		id string
		at time.Time
	}
	all := make([]used, 0, len(children))
	for id, c := range children {
		all = append(all, used{id, c.lastUsed})
	}
	if n < len(all) {
		quickselect(all, n, func(a, b used) int { return a.at.Compare(b.at) })
		all = all[:n]
	}
	ids := make([]string, len(all))
	for i, u := range all {
		ids[i] = u.id
	}
	return ids
}

// quickselect reorders s so that its k smallest elements (by cmp) come
// first, in no particular order. 0 < k < len(s).
func quickselect[T any](s []T, k int, cmpFn func(a, b T) int) {
	lo, hi := 0, len(s) // the k-th boundary lies in s[lo:hi]
	for hi-lo > 16 {
		// Median of three as the pivot, moved to hi-1.
		mid := lo + (hi-lo)/2
		a, b, c := lo, mid, hi-1
		if cmpFn(s[b], s[a]) < 0 {
			a, b = b, a
		}
		if cmpFn(s[c], s[b]) < 0 {
			b, c = c, b
			if cmpFn(s[b], s[a]) < 0 {
				b = a
			}
		}
		s[b], s[hi-1] = s[hi-1], s[b]
		pivot := s[hi-1]
		// Three-way partition of s[lo:hi]: < pivot, == pivot, > pivot, so
		// that many equal timestamps (one per batch) do not degrade it.
		lt, i, gt := lo, lo, hi
		for i < gt {
			switch c := cmpFn(s[i], pivot); {
			case c < 0:
				s[lt], s[i] = s[i], s[lt]
				lt++
				i++
			case c > 0:
				gt--
				s[i], s[gt] = s[gt], s[i]
			default:
				i++
			}
		}
		switch {
		case k < lt:
			hi = lt
		case k > gt:
			lo = gt
		default:
			return // the boundary falls among the elements equal to the pivot
		}
	}
	slices.SortFunc(s[lo:hi], cmpFn)
}
