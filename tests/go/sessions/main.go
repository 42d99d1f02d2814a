// Sessions, locks and elections with etcd's own Go package, clientv3/concurrency, against any
// endpoint (a real etcd, or `lessor serve`); run by lessor-cli/tests/sessions.rs. Built in GOPATH
// mode on Debian's golang-etcd-server-dev.
//
//	-mode mutex:    -workers goroutines, each with its own session, take one Mutex -rounds times
//	                each and read-modify-write a counter key while holding it; then campaign in one
//	                Election in turn. Prints the counts; exits 1 if two held the lock (or were
//	                leader) at once or an increment was lost.
//	-mode campaign: campaigns as -name with a session of -ttl seconds, prints "leader NAME"
//	                once elected, and holds it until killed.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/concurrency"
)

func fail(what string, err error) {
	fmt.Printf("FATAL: %s: %v\n", what, err)
	os.Exit(1)
}

func main() {
	endpoint := flag.String("endpoint", "127.0.0.1:2379", "the etcd endpoint")
	mode := flag.String("mode", "mutex", "mutex or campaign")
	prefix := flag.String("prefix", "/sessions", "the key prefix")
	workers := flag.Int("workers", 8, "goroutines (mutex mode)")
	rounds := flag.Int("rounds", 10, "lock rounds per goroutine (mutex mode)")
	name := flag.String("name", "candidate", "the proposal (campaign mode)")
	ttl := flag.Int("ttl", 5, "session TTL, seconds")
	flag.Parse()

	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{*endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		fail("connect", err)
	}
	defer cli.Close()
	ctx := context.Background()

	switch *mode {
	case "campaign":
		s, err := concurrency.NewSession(cli, concurrency.WithTTL(*ttl))
		if err != nil {
			fail("session", err)
		}
		e := concurrency.NewElection(s, *prefix+"/election")
		if err := e.Campaign(ctx, *name); err != nil {
			fail("campaign", err)
		}
		fmt.Println("leader", *name)
		select {} // hold the leadership (the session keeps its lease alive) until killed

	case "mutex":
		var holders, overlaps, leaders, leaderOverlaps, mismatches int32
		var wg sync.WaitGroup
		counter := *prefix + "/counter"
		for w := 0; w < *workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				s, err := concurrency.NewSession(cli, concurrency.WithTTL(*ttl))
				if err != nil {
					fail("session", err)
				}
				defer s.Close()
				m := concurrency.NewMutex(s, *prefix+"/lock")
				for r := 0; r < *rounds; r++ {
					if err := m.Lock(ctx); err != nil {
						fail("lock", err)
					}
					if atomic.AddInt32(&holders, 1) != 1 {
						atomic.AddInt32(&overlaps, 1)
					}
					// A read-modify-write that loses increments unless the lock excludes.
					resp, err := cli.Get(ctx, counter)
					if err != nil {
						fail("get", err)
					}
					n := 0
					if len(resp.Kvs) == 1 {
						n, _ = strconv.Atoi(string(resp.Kvs[0].Value))
					}
					time.Sleep(time.Millisecond)
					if _, err := cli.Put(ctx, counter, strconv.Itoa(n+1)); err != nil {
						fail("put", err)
					}
					atomic.AddInt32(&holders, -1)
					if err := m.Unlock(ctx); err != nil {
						fail("unlock", err)
					}
				}
				me := fmt.Sprintf("worker-%d", w)
				e := concurrency.NewElection(s, *prefix+"/election")
				if err := e.Campaign(ctx, me); err != nil {
					fail("campaign", err)
				}
				if atomic.AddInt32(&leaders, 1) != 1 {
					atomic.AddInt32(&leaderOverlaps, 1)
				}
				resp, err := e.Leader(ctx)
				if err != nil {
					fail("leader", err)
				}
				if string(resp.Kvs[0].Value) != me {
					atomic.AddInt32(&mismatches, 1)
				}
				time.Sleep(5 * time.Millisecond)
				atomic.AddInt32(&leaders, -1)
				if err := e.Resign(ctx); err != nil {
					fail("resign", err)
				}
			}(w)
		}
		wg.Wait()
		resp, err := cli.Get(ctx, counter)
		if err != nil || len(resp.Kvs) != 1 {
			fail("final get", err)
		}
		final, _ := strconv.Atoi(string(resp.Kvs[0].Value))
		fmt.Printf("counter %d of %d, lock overlaps %d\n", final, *workers**rounds, overlaps)
		fmt.Printf("elected %d, leader overlaps %d, wrong leaders %d\n", *workers, leaderOverlaps, mismatches)
		left, err := cli.Get(ctx, *prefix+"/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			fail("keys left", err)
		}
		fmt.Printf("keys left %d\n", len(left.Kvs))
		if final != *workers**rounds || overlaps != 0 || leaderOverlaps != 0 || mismatches != 0 {
			os.Exit(1)
		}

	default:
		fail("mode", fmt.Errorf("unknown mode %q", *mode))
	}
}
