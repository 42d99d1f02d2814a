// The KeepAlive seed program of ../shared/seeds/000_beb6edb6ed8c2a62.txt, in the document's
// variant that cancels the keep-alive after 5 s (its KeepAlive call, with the 5 s context, put in
// place of the first program's), copied as it is but for two edits: the import path of Debian's
// clientv3 (go.etcd.io/etcd/clientv3 for github.com/etcd-io/etcd/clientv3), and the endpoint,
// $ETCD_ENDPOINT (hence the import of "os") instead of three fixed addresses. Its own bug is
// kept: the consumer tests keepChan == nil where it means keepR == nil, so when the channel
// closes at 5 s it reads a nil response and panics, on etcd as well. Not gofmt'ed, to stay the
// document's text. lessor-cli/tests/seeds.rs runs it against a real etcd and `lessor serve`.
package main

import (
	"context"
	"fmt"
	"go.etcd.io/etcd/clientv3"
	"os"
	"time"
)

func connect() (client *clientv3.Client, err error){

	client, err = clientv3.New(clientv3.Config{
		Endpoints:   []string{os.Getenv("ETCD_ENDPOINT")},
		DialTimeout: 5 * time.Second,
	})

	if err != nil {
		fmt.Println("connect err:", err)
		return nil, err
	}

	return client, err
}

func main() {

	// 连接
	cli, err := connect()
	defer cli.Close()
	if err != nil {
		return
	}

	// 获取etcd读写对象
	kv := clientv3.NewKV(cli)

	// 申请一个10秒租约
	lease := clientv3.NewLease(cli)
	leaseR, err := lease.Grant(context.TODO(), 10)
	if err != nil {
		fmt.Println("lease err:", err)
		return
	}
	
	// 续租了5秒，然后手动停止续租，即总共有15秒生命
	ctx, _ := context.WithTimeout(context.TODO(), 5 * time.Second)
	
	// 自动续租 返回值是个只读的chan，因为写入只能是etcd实现
	keepChan, err := lease.KeepAlive(ctx, leaseR.ID )
	if err != nil {
		fmt.Println("keep err:", err)
		return
	}
	// 启动一个协程去消费chan的应答
	go func(){
		for {
			select {
			case keepR := <- keepChan:
				if keepChan == nil {		// 此时系统异常或者主动取消context
					fmt.Println("租约失效")
					goto END
				} else {		// 每秒续租一次
					fmt.Println("收到自动续租应答：", keepR.ID)
				}
			}
		}
		END:
	}()

	// 使用该租约put一个kv
	putR, err := kv.Put(context.TODO(), "/cron/lock/job1", "10001", clientv3.WithLease(leaseR.ID))
	if err != nil {
		fmt.Println("put err:", err)
		return
	}
	fmt.Println("写入成功：", putR.Header.Revision)

	// 定时查看key是否过期
	for {
		getR, err := kv.Get(context.TODO(), "/cron/lock/job1")
		if err != nil {
			fmt.Println("get err:", err)
			return
		}
		if getR.Count == 0 {
			fmt.Println("key过期")
			break
		} else {
			fmt.Println("还未过期")
			time.Sleep(2 * time.Second)
		}
	}
}
