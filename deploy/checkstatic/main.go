// Command checkstatic exits non-zero unless every ELF binary named on the
// command line is statically linked (deploy.CheckStatic). deploy/ci.sh runs
// it on the binary deploy/build.sh builds, as the Dockerfile does.
package main

import (
	"fmt"
	"os"

	"github.com/twc-auth-proxy/twc-auth-proxy/deploy"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: checkstatic BINARY...")
		os.Exit(2)
	}
	for _, path := range os.Args[1:] {
		if err := deploy.CheckStatic(path); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(path + ": statically linked")
	}
}
