// A load program on etcd's Go client (clientv3) for one endpoint: a real etcd or `lessor
// serve`. benches/go/run.sh runs it against both and compares. For each client count given,
// it measures, over -ops calls split among the clients (goroutines, one shared connection
// each, as clientv3 users do): Grant, KeepAliveOnce, Put with a lease, Revoke; then the
// lateness of expiries as a watcher sees them: leases of -ttl seconds with one key each, and
// the time from each lease's deadline (its grant's response plus the TTL) to its key's delete
// event. One line per measure: "name clients ops seconds rate p50_us p99_us".
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

func report(name string, clients int, took time.Duration, lat []time.Duration) {
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	fmt.Printf("%s %d %d %.3f %.0f %d %d\n", name, clients, len(lat), took.Seconds(),
		float64(len(lat))/took.Seconds(), percentile(lat, 0.5).Microseconds(),
		percentile(lat, 0.99).Microseconds())
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
	expiring := flag.Int("expiring", 200, "leases left to expire, per client count")
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
		took, lat := run("grant", clients, *ops, func(i int) error {
			r, err := cli.Grant(ctx, 600)
			if err == nil {
				ids[i] = r.ID
			}
			return err
		})
		report("grant", clients, took, lat)
		took, lat = run("keepalive_once", clients, *ops, func(i int) error {
			_, err := cli.KeepAliveOnce(ctx, ids[i])
			return err
		})
		report("keepalive_once", clients, took, lat)
		prefix := fmt.Sprintf("/load/%d/%d/", run0, clients)
		took, lat = run("put_with_lease", clients, *ops, func(i int) error {
			_, err := cli.Put(ctx, prefix+strconv.Itoa(i), "value", clientv3.WithLease(ids[i]))
			return err
		})
		report("put_with_lease", clients, took, lat)
		took, lat = run("revoke", clients, *ops, func(i int) error {
			_, err := cli.Revoke(ctx, ids[i])
			return err
		})
		report("revoke", clients, took, lat)

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
		report("expiry_lateness", clients, time.Duration(*ttl)*time.Second, late)
	}
}
