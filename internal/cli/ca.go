package cli

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/junctionhq/junction/internal/pki"
)

// caCmd manages the CA that issues the mesh's mTLS identities.
func caCmd(stdout io.Writer) *cobra.Command {
	c := &cobra.Command{
		Use:   "ca",
		Short: "Create the mesh CA and issue service certificates (mTLS identities)",
		// A RunE makes cobra reject an unknown subcommand (through NoArgs)
		// instead of printing help and exiting 0.
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	c.AddCommand(caInitCmd(stdout), caIssueCmd(stdout))
	return c
}

const defaultCADir = "./junction-ca"

func caInitCmd(stdout io.Writer) *cobra.Command {
	var dir string
	var force bool
	c := &cobra.Command{
		Use:   "init",
		Short: "Create a CA (10 years) as DIR/ca.crt and DIR/ca.key",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if _, err := pki.InitCA(dir, force); err != nil {
				if errors.Is(err, fs.ErrExist) {
					return fmt.Errorf("%w (pass --force to replace the CA; certificates it issued stop being trusted)", err)
				}
				return err
			}
			fmt.Fprintf(stdout, "CA written to %s and %s\n", filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"))
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", defaultCADir, "CA directory")
	c.Flags().BoolVar(&force, "force", false, "replace an existing CA")
	return c
}

func caIssueCmd(stdout io.Writer) *cobra.Command {
	var dir, out string
	var hosts []string
	var valid time.Duration
	c := &cobra.Command{
		Use:   "issue SERVICE",
		Short: "Issue a certificate for SERVICE as OUT/SERVICE.crt and OUT/SERVICE.key",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			service := args[0]
			if !pki.ValidService(service) {
				return fmt.Errorf("invalid service name %q: use 1 to 100 letters, digits, '-' or '_'", service)
			}
			if valid <= 0 {
				return fmt.Errorf("--valid %v must be positive", valid)
			}
			ca, err := pki.LoadCA(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"))
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return fmt.Errorf("%w (create the CA with junction ca init --dir %s)", err, dir)
				}
				return err
			}
			certPEM, keyPEM, err := ca.Issue(service, hosts, valid)
			if err != nil {
				return err
			}
			if out == "" {
				out = dir
			}
			if err := os.MkdirAll(out, 0o700); err != nil {
				return fmt.Errorf("creating output directory: %w", err)
			}
			certFile, keyFile := filepath.Join(out, service+".crt"), filepath.Join(out, service+".key")
			if err := pki.WriteFile(keyFile, keyPEM, 0o600); err != nil {
				return err
			}
			if err := pki.WriteFile(certFile, certPEM, 0o644); err != nil {
				return err
			}
			// Reading the pair back proves what was written is usable.
			cert, err := pki.LoadKeyPair(certFile, keyFile)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "certificate for %s written to %s and %s (valid until %s)\n",
				service, certFile, keyFile, cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", defaultCADir, "CA directory (holding ca.crt and ca.key)")
	c.Flags().StringVar(&out, "out", "", "output directory (default: the CA directory)")
	c.Flags().StringArrayVar(&hosts, "host", nil, "DNS name or IP address to add as a SAN (repeatable)")
	c.Flags().DurationVar(&valid, "valid", 8760*time.Hour, "validity, capped at the CA's expiry")
	return c
}
