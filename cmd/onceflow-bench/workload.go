package main

import (
	"strconv"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/onceflow/onceflow/actor"
	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/samples/inventory/stock"
)

// workload is what the command benchmarks drive: any aggregate's runtime
// and registry, and the i-th command over n aggregates. The benchmark is
// generic over it; the inventory sample's stock is the default (-workload).
type workload struct {
	name     string
	registry *eventsource.Registry
	runtime  func(pool *pgxpool.Pool, opts ...actor.Option) (*actor.Runtime, error)
	command  func(i, aggregates int) eventsource.Command
}

// workloadOf makes a workload of an aggregate and a command generator.
func workloadOf[S, C, E any](name string, agg *eventsource.Aggregate[S, C, E], command func(i, aggregates int) eventsource.Command) workload {
	return workload{
		name:     name,
		registry: agg.Registry,
		runtime: func(pool *pgxpool.Pool, opts ...actor.Option) (*actor.Runtime, error) {
			return actor.NewRuntime(agg, pool, opts...)
		},
		command: command,
	}
}

// workloads are the aggregates -workload can name.
var workloads = map[string]func() (workload, error){
	"inventory": func() (workload, error) {
		agg, err := stock.NewAggregate()
		if err != nil {
			return workload{}, err
		}
		return workloadOf("inventory", agg, func(i, n int) eventsource.Command {
			return stock.ReceiveStock{Warehouse: "bench", SKU: skuName(i % n), Qty: 1}
		}), nil
	},
}

// skuName is "SKU-" and i with at least 5 digits, without fmt's cost (the
// load generator shares the CPU with what it measures).
func skuName(i int) string {
	d := strconv.Itoa(i)
	const zeros = "00000"
	if len(d) < len(zeros) {
		d = zeros[len(d):] + d
	}
	return "SKU-" + d
}
