package actor

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Collector exposes a Runtime's counters as Prometheus metrics, labelled with
// the group, topic and instance. Register it with a prometheus.Registerer:
//
//	prometheus.MustRegister(actor.NewCollector(rt))
//
// Metrics (counters since start, except the gauges onceflow_owned_partitions,
// onceflow_halted_partitions, onceflow_publish_lag and
// onceflow_live_aggregates):
//
//	onceflow_batches_total             committed batch transactions
//	onceflow_records_total             records committed (any outcome)
//	onceflow_events_total              events stored
//	onceflow_commands_total{outcome}   accepted, rejected, dead_lettered, duplicate
//	onceflow_fenced_commits_total      commits rejected by the fence (a newer owner)
//	onceflow_halted_partitions_total   partitions halted on an unrecoverable error: alert on it
//	onceflow_partition_assignments_total, onceflow_partition_revocations_total{lost}
//	onceflow_aggregate_loads_total, onceflow_aggregate_passivations_total
//	onceflow_aggregate_evictions_total aggregates passivated because their partition was over its
//	                                   WithMaxAggregates share: loads growing with it mean the cap is
//	                                   below the working set
//	onceflow_live_aggregates           aggregates held in memory now
//	onceflow_reply_errors_total        replies not delivered (clients fall back to Postgres)
//	onceflow_commit_seconds_total      time spent in batch commits
//	onceflow_owned_partitions          partitions this instance owns now
//	onceflow_halted_partitions         owned partitions halted now: alert on it
//	onceflow_misrouted_records_total   records whose key maps to another partition (dead-lettered):
//	                                   a producer uses another partitioner (WithPartitioner)
//	onceflow_version_conflicts_total   commits that met an aggregate version written by another
//	                                   writer (reloaded and decided again): alert on it
//	onceflow_snapshot_errors_total     snapshots refused (state does not survive the codec)
//	onceflow_rebalance_seconds_max     longest rebalance callback (claims/stops inside Poll)
//	onceflow_published_events_total    events published to the history topic (repeats included)
//	onceflow_publish_errors_total      failed publish attempts (retried)
//	onceflow_publish_lag               events stored but not yet published, owned partitions: alert if it grows
type Collector struct {
	rt    *Runtime
	descs map[string]*prometheus.Desc
}

// NewCollector returns a Collector for rt.
func NewCollector(rt *Runtime) *Collector {
	labels := prometheus.Labels{"group": rt.cfg.group, "topic": rt.cfg.topic, "instance": rt.cfg.instanceID}
	d := func(name, help string, variable ...string) *prometheus.Desc {
		return prometheus.NewDesc("onceflow_"+name, help, variable, labels)
	}
	return &Collector{rt: rt, descs: map[string]*prometheus.Desc{
		"batches":      d("batches_total", "Committed batch transactions."),
		"records":      d("records_total", "Records committed, any outcome."),
		"events":       d("events_total", "Events stored."),
		"commands":     d("commands_total", "Commands by outcome.", "outcome"),
		"fenced":       d("fenced_commits_total", "Batch commits rejected by the fence (the partition has a newer owner)."),
		"halted":       d("halted_partitions_total", "Partitions halted on an unrecoverable error."),
		"assigned":     d("partition_assignments_total", "Partitions claimed."),
		"revoked":      d("partition_revocations_total", "Partitions revoked, by whether they were lost.", "lost"),
		"loads":        d("aggregate_loads_total", "Aggregates loaded from Postgres."),
		"passivations": d("aggregate_passivations_total", "Idle aggregates passivated."),
		"evictions":    d("aggregate_evictions_total", "Aggregates passivated because their partition was over its share of WithMaxAggregates."),
		"live":         d("live_aggregates", "Aggregates held in memory now."),
		"replyErrors":  d("reply_errors_total", "Replies that could not be produced."),
		"commitTime":   d("commit_seconds_total", "Time spent in batch commits."),
		"owned":        d("owned_partitions", "Partitions this instance owns."),
		"haltedNow":    d("halted_partitions", "Owned partitions halted now."),
		"misrouted":    d("misrouted_records_total", "Records dead-lettered because their key maps to another partition."),
		"conflicts":    d("version_conflicts_total", "Commits that found an aggregate version already written by another writer."),
		"snapErrors":   d("snapshot_errors_total", "Snapshots refused: the state does not survive the codec round trip."),
		"rebalanceMax": d("rebalance_seconds_max", "Longest time spent in one rebalance callback."),
		"published":    d("published_events_total", "Events published to the history topic (repeats after a crash included)."),
		"publishErrs":  d("publish_errors_total", "Failed publish attempts (retried with backoff)."),
		"publishLag":   d("publish_lag", "Events stored but not yet published, over the owned partitions."),
	}}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.rt.Stats()
	counter := func(name string, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(c.descs[name], prometheus.CounterValue, v, lv...)
	}
	counter("batches", float64(s.Batches))
	counter("records", float64(s.Records))
	counter("events", float64(s.Events))
	counter("commands", float64(s.Accepted), "accepted")
	counter("commands", float64(s.Rejected), "rejected")
	counter("commands", float64(s.DeadLetters), "dead_lettered")
	counter("commands", float64(s.Duplicates), "duplicate")
	counter("fenced", float64(s.Fenced))
	counter("halted", float64(s.Halted))
	counter("assigned", float64(s.Assigned))
	counter("revoked", float64(s.Revoked-s.Lost), "false")
	counter("revoked", float64(s.Lost), "true")
	counter("loads", float64(s.Loads))
	counter("passivations", float64(s.Passivations))
	counter("evictions", float64(s.Evictions))
	counter("replyErrors", float64(s.ReplyErrors))
	counter("commitTime", s.CommitTimeSum.Seconds())
	counter("misrouted", float64(s.Misrouted))
	counter("conflicts", float64(s.VersionConflicts))
	counter("snapErrors", float64(s.SnapshotErrors))
	counter("published", float64(s.Published))
	counter("publishErrs", float64(s.PublishErrors))
	ch <- prometheus.MustNewConstMetric(c.descs["publishLag"], prometheus.GaugeValue, float64(s.PublishLag))
	ch <- prometheus.MustNewConstMetric(c.descs["owned"], prometheus.GaugeValue, float64(s.OwnedPartitions))
	ch <- prometheus.MustNewConstMetric(c.descs["live"], prometheus.GaugeValue, float64(s.LiveAggregates))
	ch <- prometheus.MustNewConstMetric(c.descs["haltedNow"], prometheus.GaugeValue, float64(s.HaltedNow))
	ch <- prometheus.MustNewConstMetric(c.descs["rebalanceMax"], prometheus.GaugeValue, s.RebalanceMax.Seconds())
}
