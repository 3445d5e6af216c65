package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/genimg/genimg/job"
)

// pubsubEmulator finds Google's own Pub/Sub emulator in the gcloud SDK.
func pubsubEmulator() (string, error) {
	gcloud, err := exec.LookPath("gcloud")
	if err != nil {
		return "", fmt.Errorf("gcloud is not installed")
	}
	real, err := filepath.EvalSymlinks(gcloud)
	if err != nil {
		return "", err
	}
	bin := filepath.Join(filepath.Dir(filepath.Dir(real)), "platform", "pubsub-emulator", "bin", "cloud-pubsub-emulator")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("gcloud has no Pub/Sub emulator component (%s)", bin)
	}
	if _, err := exec.LookPath("java"); err != nil {
		return "", fmt.Errorf("the Pub/Sub emulator needs java")
	}
	return bin, nil
}

// The functions behind the real Pub/Sub emulator's push delivery: a push
// subscription POSTs the raw push body to OnMessage, as the subscription
// genimg's Terraform owns does in production.
func TestRealPubSubEmulatorPush(t *testing.T) {
	bin, err := pubsubEmulator()
	if err != nil {
		t.Skipf("skipping the real push-delivery test: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()

	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	cmd := exec.Command(bin, "--host=127.0.0.1", "--port="+strconv.Itoa(port))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // the script starts java
		cmd.Wait()
	})
	started := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "Server started") {
				close(started)
				for sc.Scan() {
				}
				return
			}
		}
	}()
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("the Pub/Sub emulator did not start within 90 s")
	}

	conn, err := grpc.NewClient("127.0.0.1:"+strconv.Itoa(port), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client, err := pubsub.NewClient(ctx, project, option.WithGRPCConn(conn))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	topic := "projects/" + project + "/topics/real-requests"
	if _, err := client.TopicAdminClient.CreateTopic(ctx, &pb.Topic{Name: topic}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.SubscriptionAdminClient.CreateSubscription(ctx, &pb.Subscription{
		Name: "projects/" + project + "/subscriptions/real-requests-push", Topic: topic, AckDeadlineSeconds: 60,
		PushConfig: &pb.PushConfig{PushEndpoint: stack.functions + "/OnMessage"},
	}); err != nil {
		t.Fatal(err)
	}

	id := uniq(t)
	msgID, err := client.Publisher(topic).Publish(ctx, &pubsub.Message{
		Data: []byte(fmt.Sprintf(`{"id": %q, "prompt": "a tram in the rain", "aspectRatio": "3:4"}`, id)),
	}).Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e := stack.events.waitJob(t, id)
	checkSucceeded(t, e, job.PubSub, 864, 1184)
	if e.Record.Trigger.Source != msgID {
		t.Errorf("trigger source %q, want the emulator's message id %q", e.Record.Trigger.Source, msgID)
	}
}
