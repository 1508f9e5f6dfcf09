// Command junction runs and operates Junction; see `junction --help`.
package main

import (
	"os"

	"github.com/junctionhq/junction/internal/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) }
