// Command etcd is the etcd server, built from go.etcd.io/etcd/server/v3: the same one line as
// the main of etcd's own release binary.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
