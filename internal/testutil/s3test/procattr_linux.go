package s3test

import (
	"os/exec"
	"syscall"
)

// setProcAttrs makes the kernel kill versitygw if the test process dies
// without running its cleanups.
func setProcAttrs(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
