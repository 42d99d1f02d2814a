// Cross-check of lessor::concurrency against etcd's own Go package (clientv3/concurrency) on a
// real server: the scenarios of tests/conformance/concurrency.rs, with their observable
// outcomes printed one per line. See tests/go/README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/concurrency"
)

var cli *clientv3.Client
var ctx = context.Background()

func check(err error) {
	if err != nil {
		fmt.Println("FATAL:", err)
		os.Exit(1)
	}
}

func session(ttl int) *concurrency.Session {
	s, err := concurrency.NewSession(cli, concurrency.WithTTL(ttl))
	check(err)
	return s
}

func count(prefix string) int64 {
	r, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	check(err)
	return r.Count
}

func main() {
	endpoint := flag.String("endpoint", "127.0.0.1:2379", "etcd endpoint")
	flag.Parse()
	var err error
	cli, err = clientv3.New(clientv3.Config{Endpoints: []string{*endpoint}, DialTimeout: 5 * time.Second})
	check(err)
	defer cli.Close()
	root := fmt.Sprintf("/crosscheck/%d", time.Now().UnixNano())

	// Keys: prefix + "/" + lease id in hex, "/" appended even after a trailing "/".
	a, b := session(30), session(30)
	for _, p := range []string{root + "/keys", root + "/keys2/", ""} {
		m := concurrency.NewMutex(a, p)
		check(m.Lock(ctx))
		fmt.Printf("key for prefix %q: %q (lease %x)\n", p, m.Key(), a.Lease())
		check(m.Unlock(ctx))
	}

	// TryLock on a held lock: ErrLocked at once, no key left; the fencing token.
	ma, mb := concurrency.NewMutex(a, root+"/try"), concurrency.NewMutex(b, root+"/try")
	check(ma.Lock(ctx))
	kv, _ := cli.Get(ctx, ma.Key())
	fmt.Printf("token: header revision %d, key create revision %d\n", ma.Header().Revision, kv.Kvs[0].CreateRevision)
	// Debian's package is etcd 3.4, which has no TryLock (3.5 added it): the lock_until case
	// below is the nearest.
	// Lock with a deadline: context error, no key left.
	tctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	err = mb.Lock(tctx)
	cancel()
	fmt.Printf("lock_until timeout: err=%v keys=%d\n", err, count(root+"/try/"))
	// A second Mutex on the holder's session: the same key, "acquired" at once.
	ma2 := concurrency.NewMutex(a, root+"/try")
	err = ma2.Lock(ctx)
	fmt.Printf("second mutex, same session: err=%v same key=%v\n", err, ma2.Key() == ma.Key())
	// Unlock of a mutex never locked.
	err = concurrency.NewMutex(b, root+"/never").Unlock(ctx)
	fmt.Printf("unlock never locked: err=%v\n", err)
	check(ma.Unlock(ctx))

	// FIFO: 4 waiters queued one after the other behind a holder.
	check(ma.Lock(ctx))
	var mu sync.Mutex
	order := []int{}
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			s := session(30)
			m := concurrency.NewMutex(s, root+"/try")
			check(m.Lock(ctx))
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			check(m.Unlock(ctx))
			s.Close()
		}(i)
		for count(root+"/try/") != int64(i+2) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	check(ma.Unlock(ctx))
	wg.Wait()
	fmt.Printf("fifo order: %v\n", order)

	// Holder's session revoked: Done() closes; a lock attempt on it afterwards.
	check(ma.Lock(ctx))
	_, err = cli.Revoke(ctx, a.Lease())
	check(err)
	select {
	case <-a.Done():
		fmt.Println("done after revoke: closed")
	case <-time.After(10 * time.Second):
		fmt.Println("done after revoke: not closed within 10 s")
	}
	err = ma.Lock(ctx)
	fmt.Printf("lock on a revoked session: err=%v\n", err)

	// Election: proclaim by a non-leader, resign hands over, observe.
	c, d := session(30), session(30)
	ec, ed := concurrency.NewElection(c, root+"/elect"), concurrency.NewElection(d, root+"/elect")
	octx, ocancel := context.WithCancel(ctx)
	obs := ec.Observe(octx)
	_, err = ec.Leader(ctx)
	fmt.Printf("leader with no campaigner: err=%v\n", err)
	check(ec.Campaign(ctx, "a"))
	fmt.Printf("proclaim by non-leader: err=%v\n", ed.Proclaim(ctx, "b"))
	check(ec.Proclaim(ctx, "a2"))
	done := make(chan error)
	go func() { done <- ed.Campaign(ctx, "b") }()
	for count(root+"/elect/") != 2 {
		time.Sleep(10 * time.Millisecond)
	}
	check(ec.Resign(ctx))
	check(<-done)
	fmt.Printf("proclaim after resign: err=%v\n", ec.Proclaim(ctx, "late"))
	// A leader elected and resigned before the observer looks again.
	e := session(30)
	ee := concurrency.NewElection(e, root+"/elect")
	go func() { done <- ee.Campaign(ctx, "c") }()
	for count(root+"/elect/") != 2 {
		time.Sleep(10 * time.Millisecond)
	}
	check(ed.Resign(ctx))
	check(<-done)
	check(ee.Resign(ctx))
	check(ec.Campaign(ctx, "d"))
	seen := []string{}
	timeout := time.After(3 * time.Second)
loop:
	for {
		select {
		case r := <-obs:
			seen = append(seen, string(r.Kvs[0].Value))
		case <-timeout:
			break loop
		}
	}
	ocancel()
	fmt.Printf("observe saw: %v\n", seen)
}
