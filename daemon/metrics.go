package daemon

import (
	"fmt"
	"net"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/portcullis/portcullis/controller"
	"github.com/portcullis/portcullis/loader"
	"github.com/portcullis/portcullis/model"
	"github.com/portcullis/portcullis/overlay"
	"github.com/portcullis/portcullis/policy"
)

// metrics reads the pinned maps at every scrape: the counters live in the kernel (and
// survive the daemon), so they are exported as they are, never reset. Entries keep their
// counts by name across policy swaps and restarts. Per-source series only for the few
// sources with the most attempts (topOffenders): `top` has the rest.
type metrics struct {
	ctl        *controller.Controller // the published status
	prog       *loader.Program        // the kernel's counters
	interfaces []string               // the configured interfaces
	reg        *prometheus.Registry
	runtime    *prometheus.CounterVec // runtime entry events by kind and action
}

var (
	descPackets = prometheus.NewDesc("portcullis_packets_total",
		"Packets to governed ports judged, by deciding policy entry, outcome and family.",
		[]string{"kind", "entry", "outcome", "family"}, nil)
	descBytes = prometheus.NewDesc("portcullis_bytes_total",
		"Bytes (whole frames as received, layer 2 included) of packets to governed ports judged, by deciding policy entry, outcome and family.",
		[]string{"kind", "entry", "outcome", "family"}, nil)
	descReasons = prometheus.NewDesc("portcullis_reason_packets_total",
		"Packets seen by the XDP program, by path (every packet counts once in not_tcp, malformed, fragment, not_governed, judged, evasion, too_many_tags or no_policy) and flag (quarantine, rst_sent, rate_limited, unparseable_blocked).",
		[]string{"reason"}, nil)
	descRSTSent = prometheus.NewDesc("portcullis_rst_sent_total",
		"TCP RST+ACKs sent back in answer to SYNs whose deciding entry says reset (a range, a quarantine of the policy or a runtime quarantine).", nil, nil)
	descRSTLimited = prometheus.NewDesc("portcullis_rst_rate_limited_total",
		"SYNs whose deciding entry says reset, dropped instead of answered because the RST budget (reset.rate, reset.burst) was spent.", nil, nil)
	descUnparseable = prometheus.NewDesc("portcullis_unparseable_blocked_total",
		"IPv6 packets from blocking sources dropped because their extension-header chain was too long to reach TCP.", nil, nil)
	descPolicy = prometheus.NewDesc("portcullis_policy_info",
		"The policy in force (value 1).", []string{"hash", "file"}, nil)
	descLoaded = prometheus.NewDesc("portcullis_policy_loaded_timestamp_seconds",
		"When the policy in force went live.", nil, nil)
	descLoadFail = prometheus.NewDesc("portcullis_policy_load_failures_total",
		"Policies rejected (invalid) or that failed to install.", nil, nil)
	descProofFail = prometheus.NewDesc("portcullis_proof_failures_total",
		"Proofs of a new policy that failed (and were rolled back).", nil, nil)
	descProofOK = prometheus.NewDesc("portcullis_last_proof_ok",
		"1 if the last proof matched the reference model on every probe.", nil, nil)
	descProbes = prometheus.NewDesc("portcullis_last_proof_probes",
		"Probes run by the last proof.", nil, nil)
	descAttached = prometheus.NewDesc("portcullis_interface_attached",
		"1 if the program is attached to the interface (mode native or generic), 0 if the interface is missing.",
		[]string{"interface", "mode"}, nil)
	descOffenders = prometheus.NewDesc("portcullis_offender_sources",
		"Distinct sources the offender record holds by name (those that keep trying, from blocked or monitored attempts on governed ports; `portcullis top` lists them).", nil, nil)
	descOffenderAttempts = prometheus.NewDesc("portcullis_offender_attempts_counted",
		"Blocked or monitored attempts the offender record counts: its current and previous period (offender_period), the N of its error bound. Drops at each turn of the period.", nil, nil)
	descOffenderOvercount = prometheus.NewDesc("portcullis_offender_attempts_max_overcount",
		"Error bound of portcullis_offender_top_attempts: an estimate exceeds the true count by at most this many attempts with probability 1-e^-depth (98% at depth 4); never undercounts.", nil, nil)
	descOffenderTop = prometheus.NewDesc("portcullis_offender_top_attempts",
		fmt.Sprintf("Estimated attempts of the %d sources with the most (count-min: never below the truth, above it by at most portcullis_offender_attempts_max_overcount), with the layer 2 of the last attempt (vlan outer.inner, \"\" for none; pppoe_session \"\" for none). Bounded: %d series.", topOffenders, topOffenders),
		[]string{"source", "mac", "vlan", "pppoe_session"}, nil)
	descRuntime = prometheus.NewDesc("portcullis_runtime_entries",
		"Runtime entries in force (quarantines from the abuse desk, unblocks), by kind.", []string{"kind"}, nil)
	descStoreOK = prometheus.NewDesc("portcullis_runtime_store_ok",
		"1 if the store of runtime entries was read at start without loss or damage.", nil, nil)
	// With policy_source: etcd (docs/fleet.md).
	descEtcdConnected = prometheus.NewDesc("portcullis_etcd_connected",
		"1 if the router's etcd source reaches etcd (policy_source: etcd).", nil, nil)
	descEtcdRevision = prometheus.NewDesc("portcullis_etcd_policy_revision",
		"The etcd revision of the group's policy: in force on this router, and the latest offered (a refused one stays offered).", []string{"which"}, nil)
	descEtcdRelists = prometheus.NewDesc("portcullis_etcd_relists_total",
		"Times the etcd watch broke (etcd unreachable, compaction) and the source read the group again.", nil, nil)
)

// newMetrics returns the metrics of prog; ctl may be set later, before the first
// scrape (the controller counts runtime events into them from the start).
func newMetrics(ctl *controller.Controller, prog *loader.Program, interfaces []string) *metrics {
	m := &metrics{ctl: ctl, prog: prog, interfaces: interfaces, reg: prometheus.NewRegistry(),
		runtime: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "portcullis_runtime_entry_events_total",
			Help: "Runtime entries added, escalated (a repeat quarantine: a longer term), extended (added again while in force: a later expiry at most), released, expired and suspended (an unblock with no room in the data plane at a start), by kind. Counted by the daemon: starts again from 0 when it restarts."},
			[]string{"kind", "action"})}
	// Every series that can count, from the start, at 0: rate() and increase() need a
	// sample before the first event to count it. Only quarantines escalate, and only
	// unblocks are suspended (they hold the data plane's groups: applyTables).
	for _, k := range []overlay.Kind{overlay.Quarantine, overlay.Unblock} {
		for _, a := range overlay.Actions {
			if a == overlay.Escalated && k != overlay.Quarantine || a == overlay.Suspended && k != overlay.Unblock {
				continue
			}
			m.runtime.WithLabelValues(string(k), string(a))
		}
	}
	m.reg.MustRegister(m, m.runtime)
	return m
}

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPackets, descBytes, descReasons, descRSTSent, descRSTLimited,
		descUnparseable, descPolicy, descLoaded, descLoadFail, descProofFail, descProofOK, descProbes,
		descAttached, descOffenders, descOffenderAttempts, descOffenderOvercount, descOffenderTop, descRuntime, descStoreOK, descEtcdConnected, descEtcdRevision, descEtcdRelists} {
		ch <- d
	}
}

// runtimeEvent counts one runtime entry event (nil-safe: before metrics exist).
func (m *metrics) runtimeEvent(ev overlay.Event) {
	if m != nil {
		m.runtime.WithLabelValues(string(ev.Entry.Kind), string(ev.Action)).Inc()
	}
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	// From the published status: no wait for a change in progress.
	st := m.ctl.Snapshot()
	ch <- prometheus.MustNewConstMetric(descRuntime, prometheus.GaugeValue, float64(st.Runtime.Quarantines), "quarantine")
	ch <- prometheus.MustNewConstMetric(descRuntime, prometheus.GaugeValue, float64(st.Runtime.Unblocks), "unblock")
	storeOK := 1.0
	if st.Runtime.StoreError != "" || st.Runtime.StoreLost != "" {
		storeOK = 0
	}
	ch <- prometheus.MustNewConstMetric(descStoreOK, prometheus.GaugeValue, storeOK)
	if e := st.Source.Etcd; e != nil {
		ch <- prometheus.MustNewConstMetric(descEtcdRevision, prometheus.GaugeValue, float64(e.Revision), "in_force")
		ch <- prometheus.MustNewConstMetric(descEtcdRevision, prometheus.GaugeValue, float64(e.Offered), "offered")
		if h := e.Health; h != nil {
			up := 0.0
			if h.Connected {
				up = 1
			}
			ch <- prometheus.MustNewConstMetric(descEtcdConnected, prometheus.GaugeValue, up)
			ch <- prometheus.MustNewConstMetric(descEtcdRelists, prometheus.CounterValue, float64(h.Relists))
		}
	}
	// The counters come from the kernel's maps: the loader's label table has a lock of
	// its own, so a scrape does not wait for a policy change either.
	cs, err := m.prog.Counters()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descPackets, err)
		return
	}
	for _, c := range cs {
		kind, entry := loader.SplitLabel(c.Label)
		labels := []string{kind, entry, c.Outcome.String(), c.Family.String()}
		ch <- prometheus.MustNewConstMetric(descPackets, prometheus.CounterValue, float64(c.Packets), labels...)
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(c.Bytes), labels...)
	}
	reasons, err := m.prog.Reasons()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descReasons, err)
		return
	}
	for r, c := range reasons {
		ch <- prometheus.MustNewConstMetric(descReasons, prometheus.CounterValue, float64(c.Packets), model.Reason(r).String())
	}
	ch <- prometheus.MustNewConstMetric(descRSTSent, prometheus.CounterValue, float64(reasons[model.ReasonRSTSent].Packets))
	ch <- prometheus.MustNewConstMetric(descRSTLimited, prometheus.CounterValue, float64(reasons[model.ReasonRateLimited].Packets))
	ch <- prometheus.MustNewConstMetric(descUnparseable, prometheus.CounterValue, float64(reasons[model.ReasonUnparseableBlocked].Packets))
	if st.Hash != "" {
		ch <- prometheus.MustNewConstMetric(descPolicy, prometheus.GaugeValue, 1, st.Hash, st.Policy)
		ch <- prometheus.MustNewConstMetric(descLoaded, prometheus.GaugeValue, float64(st.LoadedAt.UnixNano())/1e9)
	}
	ch <- prometheus.MustNewConstMetric(descLoadFail, prometheus.CounterValue, float64(st.Failures.PolicyLoad))
	ch <- prometheus.MustNewConstMetric(descProofFail, prometheus.CounterValue, float64(st.Failures.Proof))
	ok := 0.0
	if st.Proof.OK {
		ok = 1
	}
	ch <- prometheus.MustNewConstMetric(descProofOK, prometheus.GaugeValue, ok)
	ch <- prometheus.MustNewConstMetric(descProbes, prometheus.GaugeValue, float64(st.Proof.Probes))
	for _, name := range m.interfaces {
		if mode := st.Interfaces[name]; mode != "missing" && mode != "" {
			ch <- prometheus.MustNewConstMetric(descAttached, prometheus.GaugeValue, 1, name, mode)
		} else {
			ch <- prometheus.MustNewConstMetric(descAttached, prometheus.GaugeValue, 0, name, "none")
		}
	}
	if rec, err := m.prog.OffenderRecord(); err == nil {
		ch <- prometheus.MustNewConstMetric(descOffenders, prometheus.GaugeValue, float64(len(rec.Sources)))
		ch <- prometheus.MustNewConstMetric(descOffenderAttempts, prometheus.GaugeValue, float64(rec.Attempts))
		ch <- prometheus.MustNewConstMetric(descOffenderOvercount, prometheus.GaugeValue, float64(rec.MaxOvercount))
		for _, o := range rec.Top(topOffenders) {
			mac, session := "", ""
			if o.MAC != nil {
				mac = o.MAC.String()
			}
			if o.PPPoESession != 0 {
				session = fmt.Sprint(o.PPPoESession)
			}
			ch <- prometheus.MustNewConstMetric(descOffenderTop, prometheus.GaugeValue, float64(o.Count), o.Source.String(), mac, o.VLAN(), session)
		}
	}
}

// topOffenders is how many sources get a series of their own in
// portcullis_offender_top_attempts: a bounded label set, whatever the traffic.
const topOffenders = 10

// unready says what keeps the daemon from enforcing all it is configured for: no
// policy in force yet, or a configured interface that is not attached (with why).
// None: it is ready.
func (m *metrics) unready() []string {
	if m.ctl == nil {
		return []string{"starting: no policy in force yet"}
	}
	st := m.ctl.Snapshot()
	var out []string
	if st.Hash == "" {
		out = append(out, "no policy in force")
	}
	for _, name := range m.interfaces {
		if mode := st.Interfaces[name]; mode == "missing" || mode == "" {
			why := st.NotAttached[name]
			if why == "" {
				why = "not found"
			}
			out = append(out, fmt.Sprintf("interface %s not attached, not judged: %s", name, policy.Clip(why)))
		}
	}
	return out
}

// serveMetrics serves /metrics, /healthz (the daemon answers) and /readyz (it
// enforces a policy on every configured interface: 200 "ok", else 503 and a line for
// each thing missing) on ln (bound by Run before it touches the kernel).
func (d *Daemon) serveMetrics(ln net.Listener) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(d.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		problems := d.metrics.unready()
		if len(problems) == 0 {
			w.Write([]byte("ok\n"))
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		for _, p := range problems {
			fmt.Fprintln(w, p)
		}
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	return srv
}
