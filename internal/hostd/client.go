package hostd

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Client is a connection to the host service.
type Client struct {
	bulwarkv1.HostClient
	conn *grpc.ClientConn
}

// Dial connects to the host service on socket. A socket that is not there
// is an error saying how to start the service.
func Dial(socket string) (*Client, error) {
	abs, err := filepath.Abs(socket)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(abs); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no launcher daemon listens on %s: start one ('launcher daemon', or systemctl start bulwark-launcher), or give its --socket", abs)
	} else if err != nil {
		return nil, fmt.Errorf("launcher daemon socket: %w", err)
	}
	conn, err := grpc.NewClient("unix://"+abs, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	return &Client{HostClient: bulwarkv1.NewHostClient(conn), conn: conn}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }
