package server

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"timestore/internal/jobs"
)

// NodeIDFile is the file in the data directory that holds the node's
// identity, created on the first start. Processes started on the same data
// directory (one at a time: the directory is locked) are incarnations of the
// same node: the lifecycle jobs and leases the previous one left behind are
// recognised as a dead process's and handed back at once.
const NodeIDFile = "node-id"

// loadNodeID reads the node id of the data directory dir, creating it (a
// random "node-<16 hex digits>") on the first start. Call it with the data
// directory locked. An operator may write a name of their own before the
// first start: 1 to 63 lower-case letters, digits and '-'.
func loadNodeID(dir string) (string, error) {
	path := filepath.Join(dir, NodeIDFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return createNodeID(path)
	}
	if err != nil {
		return "", fmt.Errorf("node id: %w", err)
	}
	id := strings.TrimSpace(string(b))
	if err := jobs.ValidateNodeID(id); err != nil {
		return "", fmt.Errorf("%s: %w; fix the file, or remove it to get a new identity (the jobs the old one left running are then rescued only after jobs.rescue_after)", path, err)
	}
	return id, nil
}

// createNodeID writes a fresh node id to path: a temporary file, synced,
// then renamed, so that a crash never leaves a partial id.
func createNodeID(path string) (string, error) {
	var r [8]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", fmt.Errorf("node id: %w", err)
	}
	id := "node-" + hex.EncodeToString(r[:])
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return "", fmt.Errorf("node id: %w", err)
	}
	_, err = f.WriteString(id + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("node id: %w", err)
	}
	return id, nil
}
