// Command tally is the Tally service mesh: control plane, sidecar and CLI in one binary.
package main

import (
	"os"

	"github.com/tally-mesh/tally/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:]))
}
