package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/portcullis/portcullis/fleet/etcdtest"
)

// BenchmarkConvergence measures how long a push takes to reach a fleet of simulated
// routers through one etcd member (issue 14; docs/BENCHMARKS.md, "Fleet: convergence
// through etcd"):
//
//	go test -run '^$' -bench '^BenchmarkConvergence$' -benchtime 1x ./fleet/
//
// Each router is what a daemon runs against etcd, without the kernel: its own etcd
// client (its own gRPC connection), a Source on the group with both its watches (the
// policy key and the entries prefix), and a Reporter with the default TTL whose report
// carries the revision last applied. "Apply" is policy.Parse + policy.Compile of the
// offered text, at most GOMAXPROCS at a time (the routers share this machine's CPUs; a
// real router has its own); the apply=none run skips it.
//
// Per push, from Push returning: offer-* is until a router's Source offers the new
// revision, status-* until its report showing that revision reaches a watcher on the
// group's routers/ prefix (what `portcullis fleet status` reads). p50 and max are over
// every router of every push: five pushes of a small policy, then (big-*) one of
// bigPrefixes prefixes. The etcd server runs in this process and shares its CPUs with
// every router: the figures are an upper bound of etcd's cost, not a production one.
func BenchmarkConvergence(b *testing.B) {
	for _, c := range []struct {
		routers int
		apply   bool
	}{{10, true}, {100, true}, {1000, true}, {1000, false}} {
		name := fmt.Sprintf("routers=%d/apply=compile", c.routers)
		if !c.apply {
			name = fmt.Sprintf("routers=%d/apply=none", c.routers)
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				simulate(b, c.routers, c.apply)
			}
		})
	}
}

const (
	simGroup    = "dsl"
	simPushes   = 5      // small pushes per run
	bigPrefixes = 10_000 // the prefixes of the one big push
	// simWindow is how long the steady state is watched: one DefaultTTL, so that every
	// reporter's TTL/3 tick and keep-alive falls in it about three times.
	simWindow = DefaultTTL
	// simWait bounds each wait for convergence.
	simWait = 2 * time.Minute
)

// simRouter is one simulated router.
type simRouter struct {
	name   string
	etcd   *clientv3.Client
	src    *Source
	rep    *Reporter
	rev    atomic.Int64           // the revision applied
	hash   atomic.Pointer[string] // its compiled hash ("" with apply=none)
	failed atomic.Pointer[string] // the last apply error
}

// marks records when each router reached each revision.
type marks struct {
	mu sync.Mutex
	at map[int64]map[string]time.Time
}

func newMarks() *marks { return &marks{at: map[int64]map[string]time.Time{}} }

// mark notes that router reached rev at t, if it had not already.
func (m *marks) mark(rev int64, router string, t time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.at[rev]
	if r == nil {
		r = map[string]time.Time{}
		m.at[rev] = r
	}
	if _, ok := r[router]; !ok {
		r[router] = t
	}
}

// wait waits until n routers reached rev, and returns each one's time from t0 (0
// when it came first: a watcher can be told of a commit before Push has returned).
func (m *marks) wait(b *testing.B, what string, rev int64, n int, t0 time.Time) []time.Duration {
	b.Helper()
	end := time.Now().Add(simWait)
	for {
		m.mu.Lock()
		got := len(m.at[rev])
		var out []time.Duration
		if got == n {
			for _, t := range m.at[rev] {
				out = append(out, max(0, t.Sub(t0)))
			}
		}
		m.mu.Unlock()
		if out != nil {
			return out
		}
		if time.Now().After(end) {
			b.Fatalf("%s: %d of %d routers at revision %d after %s", what, got, n, rev, simWait)
		}
		time.Sleep(time.Millisecond)
	}
}

func simulate(b *testing.B, n int, apply bool) {
	srv := etcdtest.Start(b)
	noc := srv.Client(b)
	cli, err := New(noc, "")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	offered, reported := newMarks(), newMarks()
	var anonymous atomic.Int64 // offers that came without the pusher's name

	// The NOC's view: every report the group's routers write, as they arrive.
	watchReports(ctx, b, noc, cli.routersKey(simGroup), reported)

	rev0, err := Push(ctx, cli, simGroup, validPolicy(0), "sim@noc", "initial", 0)
	if err != nil {
		b.Fatal(err)
	}

	start := time.Now()
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	routers := make([]*simRouter, n)
	for i := range routers {
		r := &simRouter{name: fmt.Sprintf("bng-%04d", i)}
		empty := ""
		r.hash.Store(&empty)
		r.failed.Store(&empty)
		routers[i] = r
		if r.etcd, err = clientv3.New(clientv3.Config{Endpoints: srv.Endpoints, DialTimeout: 5 * time.Second}); err != nil {
			b.Fatalf("client of router %d: %v", i, err)
		}
		fc, _ := New(r.etcd, "")
		src, err := NewSource(fc, simGroup, log)
		if err != nil {
			b.Fatal(err)
		}
		r.src = src
		if r.rep, err = StartReporter(fc, simGroup, r.name, 0, r.report, log); err != nil {
			b.Fatal(err)
		}
		go func() {
			for range src.Entries(ctx) { // the second watch; no entries are written here
			}
		}()
		go func() {
			for o := range src.Offers(ctx) {
				offered.mark(o.Revision, r.name, time.Now())
				if o.Who != "etcd:sim@noc" {
					anonymous.Add(1) // its history record was not read in time
				}
				if apply {
					sem <- struct{}{}
					comp, err := compile(o.File, o.Policy)
					<-sem
					if err != nil {
						msg := err.Error()
						r.failed.Store(&msg)
						continue
					}
					r.hash.Store(&comp.Hash)
				}
				r.rev.Store(o.Revision)
				r.rep.Changed()
			}
		}()
	}
	defer func() {
		cancel()
		for _, r := range routers {
			r.rep.Close()
			r.etcd.Close()
		}
	}()
	offered.wait(b, "start: offered", rev0, n, start)
	reported.wait(b, "start: reported", rev0, n, start)
	b.ReportMetric(time.Since(start).Seconds(), "start-s")

	// Pushes, one after another once the last has converged.
	push := func(text []byte, msg string) (offer, status []time.Duration, sent float64) {
		_, cur, err := Read(ctx, cli, simGroup)
		if err != nil {
			b.Fatal(err)
		}
		before := counter(b, "etcd_network_client_grpc_sent_bytes_total")
		rev, err := Push(ctx, cli, simGroup, text, "sim@noc", msg, cur)
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		offer = offered.wait(b, msg+": offered", rev, n, t0)
		status = reported.wait(b, msg+": reported", rev, n, t0)
		for _, r := range routers {
			if f := *r.failed.Load(); f != "" {
				b.Fatalf("%s: router %s failed to apply: %s", msg, r.name, f)
			}
		}
		sent = counter(b, "etcd_network_client_grpc_sent_bytes_total") - before
		b.Logf("%s (revision %d): all offered in %.1f ms, all reported in %.1f ms, etcd sent %.0f KiB",
			msg, rev, ms(slices.Max(offer)), ms(slices.Max(status)), sent/1024)
		return offer, status, sent
	}
	var offer, status []time.Duration
	var sentSmall float64
	for i := 1; i <= simPushes; i++ {
		o, s, sent := push(validPolicy(i), fmt.Sprintf("push %d", i))
		offer, status, sentSmall = append(offer, o...), append(status, s...), sentSmall+sent
	}
	reportLatencies(b, "offer", offer)
	reportLatencies(b, "status", status)
	big := bigPolicy(bigPrefixes)
	o, s, sentBig := push(big, "big push")
	reportLatencies(b, "big-offer", o)
	reportLatencies(b, "big-status", s)
	b.ReportMetric(sentSmall/simPushes/float64(n)/1024, "sent-KiB/router/push")
	b.ReportMetric(sentBig/float64(n)/1024, "big-sent-KiB/router")
	b.ReportMetric(float64(len(big))/1024, "big-text-KiB")
	var relists int
	for _, r := range routers {
		relists += r.src.Health().Relists
	}
	b.ReportMetric(float64(relists), "relists")
	b.ReportMetric(float64(anonymous.Load()), "offers-without-who")

	// The steady state: what the fleet costs etcd while nothing changes.
	rev1, m1 := revision(ctx, b, noc), msgCounts(b)
	time.Sleep(simWindow)
	rev2, m2 := revision(ctx, b, noc), msgCounts(b)
	secs := simWindow.Seconds()
	b.ReportMetric(float64(rev2-rev1)/secs, "writes/s")
	b.ReportMetric((m2["LeaseKeepAlive"]-m1["LeaseKeepAlive"])/secs, "keepalives/s")
	b.ReportMetric((m2["Range"]-m1["Range"])/secs, "reads/s")

	st, err := noc.Status(ctx, srv.Endpoints[0])
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(st.DbSize)/(1<<20), "db-MiB")
	keys, err := noc.Get(ctx, cli.Prefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(keys.Count), "keys")

	// One `portcullis fleet status` of the group, the best of three.
	var best time.Duration
	for i := 0; i < 3; i++ {
		t := time.Now()
		gs, err := FleetStatus(ctx, cli, simGroup)
		d := time.Since(t)
		if err != nil {
			b.Fatal(err)
		}
		if len(gs) != 1 || len(gs[0].Routers) != n {
			b.Fatalf("fleet status: %d groups, routers %d of %d", len(gs), len(gs[0].Routers), n)
		}
		if best == 0 || d < best {
			best = d
		}
	}
	b.ReportMetric(ms(best), "fleetstatus-ms")
}

// report is the router's Report, with what a daemon's would have of a similar size.
func (r *simRouter) report() Report {
	return Report{Version: "sim", PolicyHash: *r.hash.Load(), PolicyRevision: r.rev.Load(),
		LoadedAt: time.Now().UTC(), ProofOK: true, ProofAt: time.Now().UTC(),
		Interfaces: map[string]string{"bond0.100": "native", "bond0.200": "native"},
		LastError:  *r.failed.Load(), Source: SourceName}
}

// watchReports marks each router's reported revision as the reports arrive.
func watchReports(ctx context.Context, b *testing.B, cli *clientv3.Client, prefix string, m *marks) {
	wch := cli.Watch(ctx, prefix, clientv3.WithPrefix())
	go func() {
		for wr := range wch {
			now := time.Now()
			for _, ev := range wr.Events {
				if ev.Type != clientv3.EventTypePut {
					continue
				}
				var rep Report
				if err := json.Unmarshal(ev.Kv.Value, &rep); err != nil {
					continue
				}
				m.mark(rep.PolicyRevision, strings.TrimPrefix(string(ev.Kv.Key), prefix), now)
			}
		}
	}()
}

// reportLatencies reports the p50 and max of ds, in ms.
func reportLatencies(b *testing.B, what string, ds []time.Duration) {
	slices.Sort(ds)
	b.ReportMetric(ms(ds[len(ds)/2]), what+"-p50-ms")
	b.ReportMetric(ms(ds[len(ds)-1]), what+"-max-ms")
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// revision is etcd's current revision: one more for every write (a put, or a
// transaction with puts).
func revision(ctx context.Context, b *testing.B, cli *clientv3.Client) int64 {
	resp, err := cli.Get(ctx, "/", clientv3.WithCountOnly())
	if err != nil {
		b.Fatal(err)
	}
	return resp.Header.Revision
}

// counter is the sum of the embedded etcd's counter name (it registers its metrics
// with the default registry).
func counter(b *testing.B, name string) float64 {
	var sum float64
	eachCounter(b, name, func(v float64, _ map[string]string) { sum += v })
	return sum
}

// msgCounts is the messages etcd's gRPC server has received, by method.
func msgCounts(b *testing.B) map[string]float64 {
	out := map[string]float64{}
	eachCounter(b, "grpc_server_msg_received_total", func(v float64, labels map[string]string) {
		out[labels["grpc_method"]] += v
	})
	return out
}

// eachCounter calls fn with the value and labels of each counter of the family name
// in the default registry.
func eachCounter(b *testing.B, name string, fn func(v float64, labels map[string]string)) {
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			fn(m.GetCounter().GetValue(), labels)
		}
		return
	}
	b.Fatalf("etcd has no metric %s", name)
}

// bigPolicy is a policy of n /30 prefixes out of 100.64.0.0/10 in four ranges, as
// policy's own benchmarks build it.
func bigPolicy(n int) []byte {
	var s strings.Builder
	s.WriteString("version: 1\ngoverned_ports: [25]\ndefault: pass\nranges:\n")
	per := n / 4
	for r := 0; r < 4; r++ {
		fmt.Fprintf(&s, "  - name: pool%d\n    verdict: drop\n    cidrs:\n", r)
		for i := r * per; i < (r+1)*per; i++ {
			a := uint32(100)<<24 | uint32(64)<<16 | uint32(i)<<2
			fmt.Fprintf(&s, "      - %d.%d.%d.%d/30\n", a>>24, a>>16&0xff, a>>8&0xff, a&0xff)
		}
	}
	return []byte(s.String())
}
