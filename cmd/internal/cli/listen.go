package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/genimg/genimg/internal/callback"
	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/internal/webhook"
	"github.com/genimg/genimg/job"
)

// runListen is `genimg listen`: a tiny callback receiver that verifies
// each delivery's signature and prints the event, for trying callbacks:
//
//	genimg listen --addr 127.0.0.1:9000 &
//	genimg generate "a lighthouse" --callback http://127.0.0.1:9000/
//
// The secret is --secret, else GENIMG_CALLBACK_SECRET, else the local
// stack's own (callback.LocalSecret). It is never printed.
func runListen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("genimg listen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:9000", "address to listen on")
	secret := fs.String("secret", "", "callback signing secret (whsec_…); default GENIMG_CALLBACK_SECRET, else the local stack's")
	asJSON := fs.Bool("json", false, "print each delivery as a JSON line (headers that matter and the record)")
	tolerance := fs.Duration("tolerance", 5*time.Minute, "accepted clock difference of webhook-timestamp")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: genimg listen [--addr 127.0.0.1:9000] [--secret whsec_…] [--json]\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	s := *secret
	if s == "" {
		s = os.Getenv("GENIMG_CALLBACK_SECRET")
	}
	if s == "" {
		s = callback.LocalSecret
	}
	key, err := webhook.ParseKey(config.Secret(s))
	if err != nil {
		return fmt.Errorf("--secret: %w", err)
	}
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: &callback.Receiver{Key: key, Tolerance: *tolerance, Out: stdout, JSON: *asJSON}, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(stderr, "listening for callbacks on http://%s/ (Ctrl-C stops)\n", l.Addr())
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// callbackOf is the job field for `genimg generate --callback URL`: nil
// without one.
func callbackOf(url string) *job.Callback {
	if url == "" {
		return nil
	}
	return &job.Callback{URL: url}
}
