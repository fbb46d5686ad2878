// Command mkdeb builds busylamp's Debian package (packaging.Build):
//
//	go run ./packaging/mkdeb -bin bin/busylamp -version "$(git describe --tags --always --dirty)" -arch amd64 -o bin/
//
// It runs from the repository's top directory (or give -root) and prints
// the .deb's path.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"

	"github.com/busylamp/busylamp/packaging"
)

func main() {
	var o packaging.Options
	flag.StringVar(&o.Binary, "bin", "bin/busylamp", "the busylamp `binary` to package")
	flag.StringVar(&o.Version, "version", "dev", "the `version`: git describe output or a Debian version")
	flag.StringVar(&o.Arch, "arch", runtime.GOARCH, "the binary's Go `architecture` (GOARCH)")
	flag.StringVar(&o.OutDir, "o", "bin", "output `directory`")
	flag.StringVar(&o.Root, "root", ".", "the repository's top `directory`")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "mkdeb: unexpected arguments %q\n", flag.Args())
		flag.Usage()
		os.Exit(1)
	}
	path, err := packaging.Build(o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mkdeb: %v\n", err)
		os.Exit(1)
	}
	fmt.Println(path)
}
