// A load program on etcd's Go client (clientv3) for one endpoint: a real etcd or `lessor
// serve`. benches/go/run.sh runs it against both and compares. For each client count given,
// it measures, over -ops calls split among the clients (goroutines, one shared connection
// each, as clientv3 users do): Grant, KeepAliveOnce, Put with a lease, Revoke; then the
// lateness of expiries as a watcher sees them: leases of -ttl seconds with one key each, and
// the time from each lease's deadline (its grant's response plus the TTL) to its key's delete
// event. One line per measure: "name clients ops seconds rate p50_us p99_us client_cpu_us
// server_cpu_us": the last two are CPU time (user + system) per call of this program and, given
// -server-pid, of the server's process (from /proc/<pid>/stat, in 10 ms ticks: use enough -ops
// for the figure to mean something); "-" when unknown, and for expiry lateness.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/clientv3"
)

var ctx = context.Background()

func fail(what string, err error) {
	fmt.Fprintf(os.Stderr, "FATAL: %s: %v\n", what, err)
	os.Exit(1)
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p * float64(len(sorted)-1))
	return sorted[i]
}

// serverPid is the server's process id, if given: its CPU time is read around each measure.
var serverPid = flag.Int("server-pid", 0, "the server's process id, to report its CPU time per call (0: not reported)")

// cpu is the CPU time (user + system) used so far by this program and by the server (-1 if
// unknown).
type cpu struct{ self, server time.Duration }

func cpuNow() cpu {
	var ru syscall.Rusage
	self := time.Duration(-1)
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return cpu{self, procCPU(*serverPid)}
}

// procCPU reads utime + stime of a process from /proc/<pid>/stat, assuming 100 ticks a second
// (Linux's USER_HZ everywhere that matters); -1 if it cannot.
func procCPU(pid int) time.Duration {
	if pid <= 0 {
		return -1
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	// The command name, field 2, is in parentheses and may hold spaces: count from after it.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return -1
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// perCall is the CPU time between two readings per call, in µs, or "-".
func perCall(before, after time.Duration, calls int) string {
	if before < 0 || after < 0 || calls == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", float64((after-before).Microseconds())/float64(calls))
}

// report prints one measure's line; before is the CPU reading taken as it started, or nil
// for a measure whose CPU time means nothing per call.
func report(name string, clients int, took time.Duration, lat []time.Duration, before *cpu) {
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	client, server := "-", "-"
	if before != nil {
		after := cpuNow()
		client = perCall(before.self, after.self, len(lat))
		server = perCall(before.server, after.server, len(lat))
	}
	fmt.Printf("%s %d %d %.3f %.0f %d %d %s %s\n", name, clients, len(lat), took.Seconds(),
		float64(len(lat))/took.Seconds(), percentile(lat, 0.5).Microseconds(),
		percentile(lat, 0.99).Microseconds(), client, server)
}

// measure is run followed by report, with the CPU time per call.
func measure(name string, clients, n int, op func(i int) error) {
	before := cpuNow()
	took, lat := run(name, clients, n, op)
	report(name, clients, took, lat, &before)
}

// run calls op(i) for i in [0, n) from `clients` goroutines; the latency of each call.
func run(name string, clients, n int, op func(i int) error) (time.Duration, []time.Duration) {
	lat := make([]time.Duration, n)
	var wg sync.WaitGroup
	start := time.Now()
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			for i := c; i < n; i += clients {
				t := time.Now()
				if err := op(i); err != nil {
					fail(fmt.Sprintf("%s #%d", name, i), err)
				}
				lat[i] = time.Since(t)
			}
		}(c)
	}
	wg.Wait()
	return time.Since(start), lat
}

func main() {
	endpoint := flag.String("endpoint", "127.0.0.1:2379", "the endpoint")
	clientsFlag := flag.String("clients", "1,8", "client counts, comma-separated")
	ops := flag.Int("ops", 2000, "calls per measure")
	expiring := flag.Int("expiring", 200, "leases left to expire, per client count (0: no expiry measure)")
	ttl := flag.Int64("ttl", 2, "TTL of the leases left to expire, seconds")
	flag.Parse()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{*endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		fail("connect", err)
	}
	defer cli.Close()
	run0 := time.Now().UnixNano()

	for _, field := range strings.Split(*clientsFlag, ",") {
		clients, err := strconv.Atoi(field)
		if err != nil || clients < 1 {
			fail("-clients", fmt.Errorf("bad count %q", field))
		}
		ids := make([]clientv3.LeaseID, *ops)
		measure("grant", clients, *ops, func(i int) error {
			r, err := cli.Grant(ctx, 600)
			if err == nil {
				ids[i] = r.ID
			}
			return err
		})
		measure("keepalive_once", clients, *ops, func(i int) error {
			_, err := cli.KeepAliveOnce(ctx, ids[i])
			return err
		})
		prefix := fmt.Sprintf("/load/%d/%d/", run0, clients)
		measure("put_with_lease", clients, *ops, func(i int) error {
			_, err := cli.Put(ctx, prefix+strconv.Itoa(i), "value", clientv3.WithLease(ids[i]))
			return err
		})
		measure("revoke", clients, *ops, func(i int) error {
			_, err := cli.Revoke(ctx, ids[i])
			return err
		})

		if *expiring == 0 {
			continue
		}
		// Expiry lateness: a watcher on the prefix sees each key deleted when its lease expires.
		xprefix := fmt.Sprintf("/expire/%d/%d/", run0, clients)
		wctx, cancel := context.WithCancel(ctx)
		watch := cli.Watch(wctx, xprefix, clientv3.WithPrefix())
		deadlines := make([]time.Time, *expiring)
		seen := make([]time.Time, *expiring)
		done := make(chan struct{})
		go func() {
			got := 0
			for resp := range watch {
				now := time.Now()
				for _, ev := range resp.Events {
					if ev.Type != clientv3.EventTypeDelete {
						continue
					}
					i, _ := strconv.Atoi(strings.TrimPrefix(string(ev.Kv.Key), xprefix))
					seen[i] = now
					got++
				}
				if got == *expiring {
					close(done)
					return
				}
			}
		}()
		run("expiring", clients, *expiring, func(i int) error {
			r, err := cli.Grant(ctx, *ttl)
			if err != nil {
				return err
			}
			deadlines[i] = time.Now().Add(time.Duration(*ttl) * time.Second)
			_, err = cli.Put(ctx, xprefix+strconv.Itoa(i), "x", clientv3.WithLease(r.ID))
			return err
		})
		select {
		case <-done:
		case <-time.After(time.Duration(*ttl)*time.Second + 30*time.Second):
			fail("expiry", fmt.Errorf("not every key expired within the TTL + 30 s"))
		}
		cancel()
		late := make([]time.Duration, *expiring)
		for i := range late {
			late[i] = seen[i].Sub(deadlines[i])
			if late[i] < 0 {
				late[i] = 0 // seen before the client's estimate of the deadline
			}
		}
		report("expiry_lateness", clients, time.Duration(*ttl)*time.Second, late, nil)
	}
}
