package actor

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestShareOf(t *testing.T) {
	for _, c := range []struct{ limit, owned, want int }{
		{0, 12, 0}, {100_000, 12, 8334}, {100_000, 1, 100_000}, {100_000, 0, 100_000},
		{5, 12, 1}, {24, 12, 2}, {25, 12, 3},
	} {
		if got := shareOf(c.limit, c.owned); got != c.want {
			t.Errorf("shareOf(%d, %d) = %d, want %d", c.limit, c.owned, got, c.want)
		}
	}
	for _, c := range []struct{ share, want int }{{1, 0}, {5, 4}, {10, 9}, {8334, 7501}} {
		if got := evictTarget(c.share); got != c.want {
			t.Errorf("evictTarget(%d) = %d, want %d", c.share, got, c.want)
		}
	}
}

// leastRecentlyUsed picks exactly the n children used longest ago, with
// distinct and with heavily repeated timestamps (one per batch).
func TestLeastRecentlyUsed(t *testing.T) {
	base := time.Now()
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{0, 1, 2, 17, 100, 5000} {
		for _, distinct := range []int{1, 3, 1 << 30} {
			children := map[string]*childEntry{}
			for i := range size {
				children[fmt.Sprint("a-", i)] = &childEntry{lastUsed: base.Add(time.Duration(rng.IntN(distinct)) * time.Millisecond)}
			}
			for _, n := range []int{-1, 0, 1, size / 10, size / 2, size - 1, size, size + 3} {
				got := leastRecentlyUsed(children, n)
				want := min(max(n, 0), size)
				if len(got) != want {
					t.Fatalf("size %d, n %d: %d ids, want %d", size, n, len(got), want)
				}
				if want == 0 || want == size {
					continue
				}
				// Every picked child is used no later than every other one.
				picked := map[string]bool{}
				var latest time.Time
				for _, id := range got {
					if picked[id] {
						t.Fatalf("size %d, n %d: %s picked twice", size, n, id)
					}
					picked[id] = true
					if at := children[id].lastUsed; at.After(latest) {
						latest = at
					}
				}
				for id, c := range children {
					if !picked[id] && c.lastUsed.Before(latest) {
						t.Fatalf("size %d, distinct %d, n %d: %s (used %v) kept while one used at %v is evicted",
							size, distinct, n, id, c.lastUsed.Sub(base), latest.Sub(base))
					}
				}
			}
		}
	}
}

func TestQuickselectMatchesSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 300 {
		s := make([]int, 1+rng.IntN(300))
		span := 1 + rng.IntN(len(s)*2)
		for i := range s {
			s[i] = rng.IntN(span)
		}
		k := 1 + rng.IntN(len(s))
		if k == len(s) {
			continue
		}
		sorted := slices.Clone(s)
		slices.Sort(sorted)
		quickselect(s, k, func(a, b int) int { return a - b })
		first := slices.Clone(s[:k])
		slices.Sort(first)
		if !slices.Equal(first, sorted[:k]) {
			t.Fatalf("k=%d: first k %v, want %v", k, first, sorted[:k])
		}
	}
}

func TestWithMaxAggregatesValidation(t *testing.T) {
	c := defaultConfig()
	c.brokers, c.topic = "x:9092", "t"
	WithMaxAggregates(-1).apply(&c)
	if err := c.validateRuntime(); err == nil || !strings.Contains(err.Error(), "WithMaxAggregates: must be >= 0") {
		t.Fatalf("WithMaxAggregates(-1): %v", err)
	}
	for _, n := range []int{0, 1, 1_000_000} {
		c := defaultConfig()
		c.brokers, c.topic = "x:9092", "t"
		WithMaxAggregates(n).apply(&c)
		if err := c.validateRuntime(); err != nil {
			t.Fatalf("WithMaxAggregates(%d): %v", n, err)
		}
	}
	if defaultConfig().maxAggregates != DefaultMaxAggregates {
		t.Fatal("the default cap is not DefaultMaxAggregates")
	}
}
