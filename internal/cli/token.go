package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tally-mesh/tally/internal/control"
)

func init() { commands = append(commands, newTokenCmd) }

// tokenFlags are the flags every token subcommand shares.
type tokenFlags struct {
	control   string // control plane URL
	adminFile string
	dataDir   string
}

func newTokenCmd() *cobra.Command {
	var tf tokenFlags
	cmd := &cobra.Command{
		Use:   "token create [--ttl DURATION] | list | revoke ID  --control URL",
		Short: "Create, list and revoke the join tokens of a control plane",
		Long: `Create, list and revoke join tokens. The control plane's default token
(DIR/join-token) never expires; tokens created here do, and any token can be
revoked. These calls need the admin token: --admin-token-file FILE, or
--data DIR for DIR/admin-token.`,
		Args: cobra.NoArgs,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&tf.control, "control", "", "control plane URL, its --http-addr (default with --data: the address in DIR/http-addr)")
	pf.StringVar(&tf.adminFile, "admin-token-file", "", "file holding the admin token (default with --data: DIR/admin-token)")
	pf.StringVar(&tf.dataDir, "data", "", "the control plane's data directory")
	cmd.AddCommand(newTokenCreateCmd(&tf), newTokenListCmd(&tf), newTokenRevokeCmd(&tf))
	return cmd
}

func newTokenCreateCmd(tf *tokenFlags) *cobra.Command {
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "create [--ttl DURATION]",
		Short: "Create a join token and print it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := tf.client()
			if err != nil {
				return err
			}
			var out control.CreatedToken
			body, _ := json.Marshal(map[string]string{"ttl": ttl.String()})
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/tokens", body, &out); err != nil {
				return fmt.Errorf("token create: %w", err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), out.Token)
			return nil
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token may be used to join")
	return cmd
}

func newTokenListCmd(tf *tokenFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the join tokens: id, creation, expiry, state",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := tf.client()
			if err != nil {
				return err
			}
			var all []control.TokenInfo
			cursor := ""
			for {
				path := "/api/v1/tokens?limit=1000"
				if cursor != "" {
					path += "&cursor=" + url.QueryEscape(cursor)
				}
				var page struct {
					Items []control.TokenInfo `json:"items"`
					Next  string              `json:"next"`
				}
				if err := c.do(cmd.Context(), http.MethodGet, path, nil, &page); err != nil {
					return fmt.Errorf("token list: %w", err)
				}
				all = append(all, page.Items...)
				if page.Next == "" {
					break
				}
				cursor = page.Next
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tCREATED\tEXPIRES\tSTATE")
			now := time.Now()
			for _, t := range all {
				expires, state := "never", "active"
				if t.ExpiresAt != nil {
					expires = t.ExpiresAt.Local().Format(time.RFC3339)
					if !now.Before(*t.ExpiresAt) {
						state = "expired"
					}
				}
				if t.Revoked {
					state = "revoked"
				}
				if t.Default {
					state += " (default)"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", t.ID, t.CreatedAt.Local().Format(time.RFC3339), expires, state)
			}
			return w.Flush()
		},
	}
}

func newTokenRevokeCmd(tf *tokenFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a join token: sidecars can no longer join with it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := tf.client()
			if err != nil {
				return err
			}
			if err := c.do(cmd.Context(), http.MethodDelete, "/api/v1/tokens/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return fmt.Errorf("token revoke: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked %s\n", args[0])
			return nil
		},
	}
}

// apiClient calls a control plane's REST API with the admin token.
type apiClient struct {
	base  string // scheme://host:port, no trailing slash
	token string
	http  *http.Client
}

// client resolves the control plane URL and reads the admin token.
func (tf *tokenFlags) client() (*apiClient, error) {
	base := tf.control
	if base == "" && tf.dataDir != "" {
		p := filepath.Join(tf.dataDir, control.HTTPAddrFile)
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("no --control URL, and reading %s (is the control plane running?): %w", p, err)
		}
		base = strings.TrimSpace(string(b))
	}
	if base == "" {
		return nil, errors.New("no control plane: give --control URL (or --data DIR of a running control plane)")
	}
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--control %q: want a URL such as http://127.0.0.1:7401", tf.control)
	}
	file := tf.adminFile
	if file == "" && tf.dataDir != "" {
		file = filepath.Join(tf.dataDir, control.AdminTokenFile)
	}
	if file == "" {
		return nil, errors.New("no admin token: give --admin-token-file FILE (or --data DIR for DIR/admin-token)")
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("admin token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return nil, fmt.Errorf("admin token: %s is empty", file)
	}
	return &apiClient{
		base:  strings.TrimSuffix(u.Scheme+"://"+u.Host+u.Path, "/"),
		token: tok,
		http:  &http.Client{Timeout: 10 * time.Second},
	}, nil
}

// do sends a request with a JSON body (if any) and decodes a JSON answer
// into out (if not nil). A non-2xx answer is an error carrying the API's
// message.
func (c *apiClient) do(ctx context.Context, method, path string, body []byte, out any) error {
	u := c.base + path
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, r)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return err // already names method and URL
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s %s: reading answer: %w", method, u, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return fmt.Errorf("%s %s: %s: %s", method, u, resp.Status, msg)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: decoding answer: %w", method, u, err)
		}
	}
	return nil
}
