//! `godel-sandbox-init`: the per-sandbox init started by the daemon (see
//! `godel_sandbox::init`). It reads its configuration on stdin, sets up the
//! namespaces, prints one JSON line and exits, leaving the sandbox's PID 1
//! running.

fn main() {
    godel_sandbox::init::stage1_main()
}
